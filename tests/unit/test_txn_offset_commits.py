"""Transactional offset commits (TxnOffsetCommit) in the group coordinator: pending until the
transaction's marker lands on the group's ``__consumer_offsets`` partition, then committed or
dropped; the same after a reload from the log; the generation checks of v3+."""

from __future__ import annotations

from pathlib import Path

from shardbroker.broker.group_coordinator import CommitItem, GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.broker.txn_markers import TxnMarker
from shardbroker.broker.txn_offset_commits import UNSTABLE
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, run
from tests.unit.test_group_coordinator import NONE, group_on, join_one, started

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
