"""Transactional offset commits (TxnOffsetCommit) in the group coordinator: pending until the
transaction's marker lands on the group's ``__consumer_offsets`` partition, then committed or
dropped; the same after a reload from the log; the generation checks of v3+."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from shardbroker.broker.group_coordinator import CommitItem, GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.broker.handlers.txn_offset_commit import handle_txn_offset_commit
from shardbroker.broker.txn_markers import TxnMarker
from shardbroker.broker.txn_offset_commits import UNSTABLE
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, run
from tests.unit.test_authz_data import ALICE, AUTHORIZER, Op, Recorder, T, allow
from tests.unit.test_group_coordinator import NONE, PROPS, group_on, join_one, started
from tests.unit.test_group_coordinator import img as started_image

PID, EPOCH = 4000, 0


async def txn_commit(
    gc: GroupCoordinator, group: str, offset: int, *, pid: int = PID, epoch: int = EPOCH
) -> list[int]:
    return await gc.txn_commit(
        group,
        (pid, epoch),
        member_id="",
        group_instance_id=None,
        generation_id=-1,
        items=[CommitItem("t", 0, offset)],
    )


def marker(h: Harness, partition: int, commit: bool, *, pid: int = PID, epoch: int = EPOCH) -> None:
    r = h.replicas.append_marker(OFFSETS_TOPIC, partition, TxnMarker(pid, epoch, 0, commit).batch())
    assert r.error_code == NONE, r


def committed(gc: GroupCoordinator, group: str, *, stable: bool = False) -> object:
    code, found = gc.fetch(group, [("t", [0])], stable)
    assert code == NONE
    om = found["t"][0]
    return "unstable" if om is UNSTABLE else (None if om is None else om.offset)


def test_pending_until_commit_marker(tmp_path: Path) -> None:
    group = group_on(1)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            assert await txn_commit(gc, group, 7) == [NONE]
            assert committed(gc, group) is None
            assert committed(gc, group, stable=True) == "unstable"
            marker(h, 0, True)  # another partition's marker changes nothing
            assert committed(gc, group, stable=True) == "unstable"
            marker(h, 1, True)
            assert committed(gc, group) == 7
            assert committed(gc, group, stable=True) == 7

    run(scenario())


def test_abort_marker_drops_them(tmp_path: Path) -> None:
    group = group_on(1)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            await txn_commit(gc, group, 3)
            marker(h, 1, True)
            await txn_commit(gc, group, 9)
            marker(h, 1, False)
            assert committed(gc, group, stable=True) == 3

    run(scenario())


def test_reload_replays_markers_and_keeps_open_ones_pending(tmp_path: Path) -> None:
    group = group_on(2)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            await txn_commit(gc, group, 5)
            marker(h, 2, True)
            await txn_commit(gc, group, 8)
            marker(h, 2, False)
            await txn_commit(gc, group, 11)  # open at the restart
        async with started(tmp_path) as (h, gc):
            assert committed(gc, group) == 5
            assert committed(gc, group, stable=True) == "unstable"
            marker(h, 2, True)
            assert committed(gc, group) == 11
        async with started(tmp_path) as (_, gc):
            assert committed(gc, group, stable=True) == 11

    run(scenario())


def test_older_producer_epoch_is_refused(tmp_path: Path) -> None:
    group = group_on(0)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            assert await txn_commit(gc, group, 1, epoch=3) == [NONE]
            marker(h, 0, True, epoch=3)
            assert await txn_commit(gc, group, 2, epoch=2) == [int(ErrorCode.INVALID_PRODUCER_EPOCH)]
            assert committed(gc, group, stable=True) == 1

    run(scenario())


def test_generation_checks(tmp_path: Path) -> None:
    group = group_on(3)

    async def scenario() -> None:
        async with started(tmp_path) as (_, gc):
            member, generation = await join_one(gc, group)

            async def commit(member_id: str, gen: int, instance: str | None = None) -> int:
                codes = await gc.txn_commit(
                    group,
                    (PID, EPOCH),
                    member_id=member_id,
                    group_instance_id=instance,
                    generation_id=gen,
                    items=[CommitItem("t", 0, 1)],
                )
                return codes[0]

            assert await commit(member, generation + 1) == int(ErrorCode.ILLEGAL_GENERATION)
            assert await commit("someone-else", generation) == int(ErrorCode.UNKNOWN_MEMBER_ID)
            assert await commit(member, generation) == NONE

    run(scenario())


def test_handler_authorization(tmp_path: Path) -> None:
    """KafkaApis' order: WRITE on the transactional id, READ on the group, READ on each topic
    (before its existence)."""
    acls = (
        allow(Op.WRITE, T.TRANSACTIONAL_ID, "tx"),
        allow(Op.READ, T.GROUP, "g"),
        allow(Op.READ, T.TOPIC, "t"),
        allow(Op.READ, T.TOPIC, "gone"),
    )
    img = dataclasses.replace(started_image(), acls=acls)
    Rq = m.TxnOffsetCommitRequest

    def request(tid: str, group: str, *names: str) -> Rq:
        return Rq(
            transactional_id=tid,
            group_id=group,
            producer_id=PID,
            producer_epoch=EPOCH,
            topics=[
                Rq.TxnOffsetCommitRequestTopic(name=n, partitions=[Rq.TxnOffsetCommitRequestPartition()])
                for n in names
            ],
        )

    async def scenario() -> None:
        async with Harness(tmp_path, img, props={**PROPS, **AUTHORIZER}) as h:
            h.state.audit = Recorder()  # type: ignore[assignment]
            gc = GroupCoordinator(0, h.config, h.channel, h.replicas)
            await gc.start(None)
            h.state.groups = gc

            async def codes(r: Rq) -> dict[str, int]:
                ctx = dataclasses.replace(h.ctx(28, 3), session=ALICE)
                out = await handle_txn_offset_commit(ctx, r)
                return {t.name: t.partitions[0].error_code for t in out.topics}

            denied = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            assert await codes(request("other", "g", "t")) == {"t": denied}
            assert await codes(request("tx", "h", "t")) == {"t": int(ErrorCode.GROUP_AUTHORIZATION_FAILED)}
            assert await codes(request("tx", "g", "t", "r", "gone")) == {
                "t": NONE,
                "r": int(ErrorCode.TOPIC_AUTHORIZATION_FAILED),
                "gone": int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            }
            assert committed(gc, "g", stable=True) == "unstable"
            await gc.drain()

    run(scenario())
