"""The group coordinator over a real ReplicaManager and real logs in a tmp dir (fake clocks)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from shardbroker.broker import group_records as gr
from shardbroker.broker.group_coordinator import CommitItem, GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC, partition_for
from shardbroker.broker.group_state import GroupState, JoinRequest
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import iter_batches
from shardbroker.storage.log_cleaner import Cleaner, Throttler
from shardbroker.storage.log_cleaner_manager import clean_partition
from tests.unit.replica_fakes import Harness, image, run, topic

NONE = int(ErrorCode.NONE)
PROPS = {
    "offsets.topic.num.partitions": "4",
    "group.initial.rebalance.delay.ms": "0",
    "group.min.session.timeout.ms": "1000",
    "offsets.retention.minutes": "1",
}


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def img(leaders: list[int] | None = None) -> MetadataImage:
    return image(
        topic(OFFSETS_TOPIC, 4, leaders=leaders or [0, 0, 0, 0], configs={"cleanup.policy": "compact"}),
        topic("t", 2),
    )


@contextlib.asynccontextmanager
async def started(
    data_dir: Path, *, leaders: list[int] | None = None, clock: Clock | None = None, wall: Clock | None = None
) -> AsyncIterator[tuple[Harness, GroupCoordinator]]:
    h = Harness(data_dir, img(leaders), props=PROPS)
    gc = GroupCoordinator(
        0, h.config, h.channel, h.replicas, clock=clock or Clock(), wall_clock=wall or Clock()
    )
    async with h:
        await gc.start(None)
        try:
            yield h, gc
        finally:
            await gc.drain()


def group_on(partition_wanted: int, prefix: str = "g") -> str:
    """A group id that hashes to ``partition_wanted`` of 4."""
    i = 0
    while partition_for(f"{prefix}{i}", 4) != partition_wanted:
        i += 1
    return f"{prefix}{i}"


def join_request(*, session: int = 5000, require_known: bool = True) -> JoinRequest:
    """A new dynamic member's JoinGroup."""
    return JoinRequest(
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=[("range", b"sub")],
        session_timeout_ms=session,
        rebalance_timeout_ms=5000,
        client_id="c",
        client_host="/127.0.0.1",
        require_known_member_id=require_known,
    )


async def join_one(gc: GroupCoordinator, group_id: str, *, session: int = 5000) -> tuple[str, int]:
    """One member joins and syncs a new group: (member id, generation)."""
    r = await gc.join(group_id, join_request(session=session, require_known=False))
    assert r.error_code == NONE, r
    s = await gc.sync(
        group_id,
        member_id=r.member_id,
        group_instance_id=None,
        generation_id=r.generation_id,
        protocol_type=None,
        protocol_name=None,
        assignments=[(r.member_id, b"assignment")],
    )
    assert s.error_code == NONE and s.assignment == b"assignment"
    return r.member_id, r.generation_id


def stored_records(data_dir: Path, partition: int) -> list[tuple[object, object]]:
    out: list[tuple[object, object]] = []
    for seg in sorted((data_dir / f"{OFFSETS_TOPIC}-{partition}").glob("*.log")):
        for batch in iter_batches(seg.read_bytes(), allow_partial_tail=True):
            for rec in batch.records():
                assert rec.key is not None
                key = gr.decode_key(rec.key)
                assert key is not None
                out.append((key, gr.decode_value(key, None if rec.value is None else bytes(rec.value))))
    return out


def test_commit_is_on_disk_and_survives_a_restart(tmp_path: Path) -> None:
    group = group_on(2)

    async def scenario() -> None:
        async with started(tmp_path) as (_, gc):
            codes = await gc.commit(
                group,
                member_id="",
                group_instance_id=None,
                generation_id=-1,
                retention_ms=-1,
                items=[CommitItem("t", 0, 5, 1, "meta"), CommitItem("t", 1, 9)],
            )
            assert codes == [NONE, NONE]
            code, found = gc.fetch(group, [("t", [0, 1]), ("other", [0])])
            assert code == NONE
            om = found["t"][0]
            assert om is not None and (om.offset, om.leader_epoch, om.metadata) == (5, 1, "meta")
            assert found["other"][0] is None
        records = stored_records(tmp_path, 2)
        assert (gr.OffsetCommitKey(group, "t", 0), gr.OffsetCommitValue(5, "meta", 1000_000, 1)) in records
        async with started(tmp_path) as (_, gc):
            code, found = gc.fetch(group, None)
            assert code == NONE
            assert {p: o.offset for p, o in found["t"].items() if o is not None} == {0: 5, 1: 9}

    run(scenario())


def test_membership_is_reloaded_stable_and_keeps_heartbeating(tmp_path: Path) -> None:
    group = group_on(1)

    async def scenario() -> None:
        async with started(tmp_path) as (_, gc):
            member, generation = await join_one(gc, group)
            codes = await gc.commit(
                group,
                member_id=member,
                group_instance_id=None,
                generation_id=generation,
                retention_ms=-1,
                items=[CommitItem("t", 0, 3)],
            )
            assert codes == [NONE]
            stale = await gc.commit(
                group,
                member_id=member,
                group_instance_id=None,
                generation_id=generation + 1,
                retention_ms=-1,
                items=[CommitItem("t", 0, 4)],
            )
            assert stale == [ErrorCode.ILLEGAL_GENERATION]
        kinds = [type(k).__name__ for k, _ in stored_records(tmp_path, 1)]
        assert kinds == ["GroupMetadataKey", "OffsetCommitKey"]
        async with started(tmp_path) as (_, gc):
            code, g = gc.describe(group)
            assert code == NONE and g is not None
            assert g.state == GroupState.STABLE and g.generation_id == generation
            assert g.members[member].assignment == b"assignment"
            assert gc.heartbeat(group, member, None, generation) == NONE
            again = await gc.sync(
                group,
                member_id=member,
                group_instance_id=None,
                generation_id=generation,
                protocol_type=None,
                protocol_name=None,
                assignments=[],
            )
            assert again.assignment == b"assignment"

    run(scenario())


def test_session_expiry_empties_the_group_and_persists_it(tmp_path: Path) -> None:
    group = group_on(0)
    clock = Clock()

    async def scenario() -> None:
        async with started(tmp_path, clock=clock) as (_, gc):
            member, generation = await join_one(gc, group, session=2000)
            clock.t += 1.5
            gc.tick()
            assert gc.heartbeat(group, member, None, generation) == NONE
            clock.t += 2.1
            gc.tick()
            assert gc.group_manager.groups[group].state == GroupState.EMPTY
            assert gc.heartbeat(group, member, None, generation) == ErrorCode.UNKNOWN_MEMBER_ID
        async with started(tmp_path, clock=clock) as (_, gc):
            assert gc.group_manager.groups[group].state == GroupState.EMPTY
            assert gc.group_manager.groups[group].generation_id == 2

    run(scenario())


def test_not_coordinator_and_load_in_progress(tmp_path: Path) -> None:
    elsewhere = group_on(1)
    here = group_on(0)

    async def scenario() -> None:
        async with started(tmp_path, leaders=[0, 1, 0, 1]) as (h, gc):
            assert gc.check(elsewhere) == ErrorCode.NOT_COORDINATOR
            assert gc.coordinator_of(elsewhere) == (NONE, 1)
            r = await gc.join(elsewhere, join_request(session=5000))
            assert r.error_code == ErrorCode.NOT_COORDINATOR
            assert gc.check(here) == NONE
            # A coordinator whose partitions are not open yet answers LOAD_IN_PROGRESS.
            other = Harness(tmp_path / "other", img(), props=PROPS)
            cold = GroupCoordinator(0, other.config, other.channel, other.replicas)
            assert cold.check(here) == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            assert cold.check("") == ErrorCode.INVALID_GROUP_ID
            # The partition moves to worker 1: its groups are unloaded.
            await gc.commit(
                here,
                member_id="",
                group_instance_id=None,
                generation_id=-1,
                retention_ms=-1,
                items=[CommitItem("t", 0, 1)],
            )
            assert here in gc.group_manager.groups
            await h.channel.push(img([1, 1, 0, 1]))
            assert here not in gc.group_manager.groups and gc.check(here) == ErrorCode.NOT_COORDINATOR

    run(scenario())


def test_session_timeout_bounds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (_, gc):
            r = await gc.join("g", join_request(session=999))
            assert r.error_code == ErrorCode.INVALID_SESSION_TIMEOUT

    run(scenario())


def test_delete_group_and_offsets(tmp_path: Path) -> None:
    group = group_on(3)

    async def scenario() -> None:
        async with started(tmp_path) as (_, gc):
            member, generation = await join_one(gc, group)
            await gc.commit(
                group,
                member_id=member,
                group_instance_id=None,
                generation_id=generation,
                retention_ms=-1,
                items=[CommitItem("t", 0, 3), CommitItem("t", 1, 4), CommitItem("u", 0, 1)],
            )
            assert await gc.delete_group(group) == ErrorCode.NON_EMPTY_GROUP
            # "u" is not subscribed ("sub" is not a parseable subscription: unknown -> refused).
            code, per = await gc.delete_offsets(group, [("u", [0])])
            assert code == NONE and per[("u", 0)] == ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC
            assert gc.leave(group, [(member, None)]) == (NONE, [NONE])
            code, per = await gc.delete_offsets(group, [("u", [0])])
            assert code == NONE and per[("u", 0)] == NONE
            assert ("u", 0) not in gc.group_manager.groups[group].offsets
            assert [g.group_id for g in gc.list_groups()] == [group]
            assert await gc.delete_group(group) == NONE
            assert await gc.delete_group(group) == ErrorCode.GROUP_ID_NOT_FOUND
        async with started(tmp_path) as (_, gc):
            assert group not in gc.group_manager.groups
            assert gc.fetch(group, [("t", [0])]) == (NONE, {"t": {0: None}})

    run(scenario())


def test_offsets_of_an_empty_group_expire_after_retention(tmp_path: Path) -> None:
    group, simple = group_on(0), group_on(0, "simple")
    wall = Clock(1000.0)

    async def scenario() -> None:
        async with started(tmp_path, wall=wall) as (_, gc):
            member, generation = await join_one(gc, group)
            await gc.commit(
                group,
                member_id=member,
                group_instance_id=None,
                generation_id=generation,
                retention_ms=-1,
                items=[CommitItem("t", 0, 3)],
            )
            await gc.commit(
                simple,
                member_id="",
                group_instance_id=None,
                generation_id=-1,
                retention_ms=-1,
                items=[CommitItem("t", 1, 8)],
            )
            wall.t += 30
            gc.leave(group, [(member, None)])  # Empty from now on (retention: 1 minute)
            assert gc.group_manager.expire_offsets() == 0
            wall.t += 31  # the simple group's commit is 61 s old; the group is Empty for 31 s
            assert gc.group_manager.expire_offsets() == 1
            assert simple not in gc.group_manager.groups and group in gc.group_manager.groups
            wall.t += 30
            assert gc.group_manager.expire_offsets() == 1
            assert group not in gc.group_manager.groups
        async with started(tmp_path, wall=wall) as (_, gc):
            assert not gc.group_manager.groups

    run(scenario())


def clean(h: Harness, partition: int) -> None:
    """Roll the partition's log and run the log cleaner over it (what the worker's cleaner does)."""
    p = h.replicas.get(OFFSETS_TOPIC, partition)
    assert p is not None
    p.log.roll()
    _, stats = clean_partition(
        p.log, Cleaner(10_000, Throttler(float("inf"))), int(time.time() * 1000), force=True
    )
    assert stats is not None


def test_the_log_cleaner_keeps_the_latest_record_of_each_live_key(tmp_path: Path) -> None:
    group, gone = group_on(2), group_on(2, "gone")

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            for i in range(50):
                await gc.commit(
                    group,
                    member_id="",
                    group_instance_id=None,
                    generation_id=-1,
                    retention_ms=-1,
                    items=[CommitItem("t", 0, i), CommitItem("t", 1, 100 + i)],
                )
            await gc.commit(
                gone,
                member_id="",
                group_instance_id=None,
                generation_id=-1,
                retention_ms=-1,
                items=[CommitItem("t", 0, 1)],
            )
            assert await gc.delete_group(gone) == NONE
            assert len(stored_records(tmp_path, 2)) == 50 * 2 + 1 + 2
            clean(h, 2)
            records = stored_records(tmp_path, 2)
            # The deleted group's tombstones stay for delete.retention.ms (consumers of the topic
            # must see the deletion); everything superseded is gone.
            assert sorted(records, key=repr) == sorted(
                [
                    (gr.OffsetCommitKey(group, "t", 0), gr.OffsetCommitValue(49, "", 1000_000)),
                    (gr.OffsetCommitKey(group, "t", 1), gr.OffsetCommitValue(149, "", 1000_000)),
                    *((k, None) for k, v in records if v is None),
                ],
                key=repr,
            )
            assert {type(k) for k, v in records if v is None} == {gr.OffsetCommitKey, gr.GroupMetadataKey}
            # Commits after the clean land after it.
            await gc.commit(
                group,
                member_id="",
                group_instance_id=None,
                generation_id=-1,
                retention_ms=-1,
                items=[CommitItem("t", 0, 77)],
            )
        async with started(tmp_path) as (_, gc):
            assert gone not in gc.group_manager.groups
            assert gc.fetch(group, None)[0] == NONE
            _, found = gc.fetch(group, None)
            assert {p: o.offset for p, o in found["t"].items() if o is not None} == {0: 77, 1: 149}

    run(scenario())


def test_the_log_cleaner_keeps_group_metadata(tmp_path: Path) -> None:
    group = group_on(1)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            member, generation = await join_one(gc, group)
            clean(h, 1)
            metadata = [v for _, v in stored_records(tmp_path, 1) if isinstance(v, gr.GroupMetadataValue)]
            assert [v.generation for v in metadata] == [generation]
        async with started(tmp_path) as (_, gc):
            assert gc.heartbeat(group, member, None, generation) == NONE

    run(scenario())
