"""KIP-848's online migration between the classic and the consumer group protocols (Kafka 4.0's
``group.consumer.migration.policy``), through the real handlers and coordinator over real
``__consumer_offsets`` logs in a tmp dir: a classic group upgraded in place when a
ConsumerGroupHeartbeat joins it, its classic members served by the consumer group (JoinGroup,
SyncGroup, Heartbeat, LeaveGroup, OffsetCommit), the downgrade when the last consumer-protocol
member leaves, both persisted across a restart, the ClassicMemberMetadata record field and the
config property. Every request and answer is encoded and decoded at the version asked."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker.consumer_group import ConsumerGroup, ConsumerGroupState, MemberState
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC, replay_records
from shardbroker.broker.group_records import RecordFormatError
from shardbroker.broker.group_state import Group, GroupState
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import GROUP_CONSUMER_MIGRATION_POLICY
from shardbroker.config.config_def import ConfigError
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.consumer_protocol import (
    decode_consumer_assignment,
    decode_consumer_subscription,
    encode_consumer_assignment,
)
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.messages import ConsumerProtocolSubscription
from tests.unit.replica_fakes import Harness, image, run, topic
from tests.unit.test_consumer_group_handlers import (
    PROPS,
    T_ID,
    Clock,
    beat,
    call,
    commit,
    commit_codes,
    fetch_v9,
    join,
    snapshot,
)

NONE = int(ErrorCode.NONE)
REBALANCING = int(ErrorCode.REBALANCE_IN_PROGRESS)
ILLEGAL_GENERATION = int(ErrorCode.ILLEGAL_GENERATION)
UNKNOWN_MEMBER = int(ErrorCode.UNKNOWN_MEMBER_ID)
INCONSISTENT = int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
FENCED_INSTANCE = int(ErrorCode.FENCED_INSTANCE_ID)
NOT_FOUND = int(ErrorCode.GROUP_ID_NOT_FOUND)

TOPIC = "t"  # replica_fakes.topic's id for it is T_ID
PARTITIONS = 6
ALL = frozenset(range(PARTITIONS))
CLASSIC_SESSION_MS = 10_000
CLASSIC_REBALANCE_MS = 20_000
JOIN_V, SYNC_V, HEARTBEAT_V, LEAVE_V = 7, 5, 4, 4
NOT_A_CONSUMER_GROUP = "Group g is not a consumer group."

JG = m.JoinGroupRequest
SG = m.SyncGroupRequest


def make_image() -> MetadataImage:
    return image(topic(OFFSETS_TOPIC, 1, configs={"cleanup.policy": "compact"}), topic(TOPIC, PARTITIONS))


@contextlib.asynccontextmanager
async def started(
    data_dir: Path,
    *,
    policy: str | None = None,
    clock: Clock | None = None,
    props: Mapping[str, str] | None = None,
) -> AsyncIterator[tuple[Harness, GroupCoordinator]]:
    """A started coordinator over ``data_dir`` with both protocols enabled (a second one over
    the same dir is a restart: the ``__consumer_offsets`` partition is loaded again)."""
    props = {**PROPS, **(props or {})}
    if policy is not None:
        props["group.consumer.migration.policy"] = policy
    h = Harness(data_dir, make_image(), props=props)
    gc = GroupCoordinator(0, h.config, h.channel, h.replicas, clock=clock or Clock(), wall_clock=Clock())
    h.state.groups = gc
    async with h:
        await gc.start(None)
        try:
            yield h, gc
        finally:
            await gc.drain()


# -- clients ------------------------------------------------------------------------------------


@dataclasses.dataclass
class Classic:
    """What a classic consumer knows: its member id, generation and the partitions it owns
    (cooperative: it keeps them across a rejoin and lists them in its subscription)."""

    member_id: str
    instance_id: str | None = None
    generation: int = -1
    owned: frozenset[int] = frozenset()


@dataclasses.dataclass
class Consumer:
    """What a consumer-protocol consumer knows."""

    member_id: str
    epoch: int
    owned: frozenset[int] = frozenset()


def subscription(owned: Iterable[int] = ()) -> bytes:
    """A ConsumerProtocolSubscription v1 for TOPIC, with the partitions the member owns."""
    cps = ConsumerProtocolSubscription
    parts = sorted(owned)
    tps = [cps.TopicPartition(topic=TOPIC, partitions=parts)] if parts else []
    return cps(topics=[TOPIC], owned_partitions=tps).encode_versioned(1)


def join_request(
    member_id: str = "",
    *,
    instance_id: str | None = None,
    owned: Iterable[int] = (),
    protocol_type: str = "consumer",
    protocols: Sequence[tuple[str, bytes]] | None = None,
    session_timeout_ms: int = CLASSIC_SESSION_MS,
    group: str = "g",
) -> JG:
    chosen = protocols if protocols is not None else [("range", subscription(owned))]
    return JG(
        group_id=group,
        member_id=member_id,
        group_instance_id=instance_id,
        session_timeout_ms=session_timeout_ms,
        rebalance_timeout_ms=CLASSIC_REBALANCE_MS,
        protocol_type=protocol_type,
        protocols=[JG.JoinGroupRequestProtocol(name=n, metadata=meta) for n, meta in chosen],
    )


def partitions(assignment: bytes) -> frozenset[int]:
    """The TOPIC partitions of a ConsumerProtocolAssignment."""
    return frozenset(decode_consumer_assignment(assignment).partitions.get(TOPIC, []))


def hb_partitions(r: Any) -> frozenset[int] | None:
    """The TOPIC partitions of a ConsumerGroupHeartbeat answer (None: unchanged)."""
    if r.assignment is None:
        return None
    return frozenset(p for tp in r.assignment.topic_partitions if tp.topic_id == T_ID for p in tp.partitions)


async def member_id_required(h: Harness, group: str = "g") -> str:
    r = await call(h, join_request(group=group), JOIN_V)
    assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED, r
    return str(r.member_id)


async def rejoin(h: Harness, c: Classic, **kw: Any) -> Any:
    """JoinGroup with the member's id (and instance id), listing what it owns."""
    return await call(h, join_request(c.member_id, instance_id=c.instance_id, owned=c.owned, **kw), JOIN_V)


async def sync(
    h: Harness,
    c: Classic,
    *,
    generation: int | None = None,
    member_id: str | None = None,
    assignments: Mapping[str, bytes] | None = None,
    protocol_type: str = "consumer",
    protocol_name: str = "range",
) -> Any:
    return await call(
        h,
        SG(
            group_id="g",
            generation_id=c.generation if generation is None else generation,
            member_id=c.member_id if member_id is None else member_id,
            group_instance_id=c.instance_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments=[
                SG.SyncGroupRequestAssignment(member_id=mid, assignment=a)
                for mid, a in (assignments or {}).items()
            ],
        ),
        SYNC_V,
    )


async def heartbeat(
    h: Harness,
    c: Classic,
    *,
    generation: int | None = None,
    member_id: str | None = None,
    instance_id: str | None = None,
) -> int:
    r = await call(
        h,
        m.HeartbeatRequest(
            group_id="g",
            generation_id=c.generation if generation is None else generation,
            member_id=c.member_id if member_id is None else member_id,
            group_instance_id=c.instance_id if instance_id is None else instance_id,
        ),
        HEARTBEAT_V,
    )
    return int(r.error_code)


async def leave(h: Harness, *members: tuple[str, str | None]) -> Any:
    mi = m.LeaveGroupRequest.MemberIdentity
    return await call(
        h,
        m.LeaveGroupRequest(
            group_id="g", members=[mi(member_id=mid, group_instance_id=iid) for mid, iid in members]
        ),
        LEAVE_V,
    )


def range_assignment(member_ids: Iterable[str]) -> dict[str, bytes]:
    """What a leader's range assignor gives: consecutive halves of TOPIC, by member id."""
    ids = sorted(member_ids)
    per = PARTITIONS // len(ids)
    return {
        mid: encode_consumer_assignment({TOPIC: list(range(i * per, (i + 1) * per))}, 1)
        for i, mid in enumerate(ids)
    }


async def classic_group(
    h: Harness,
    gc: GroupCoordinator,
    *,
    instance_ids: Sequence[str | None] = (None, None),
    protocol_type: str = "consumer",
) -> list[Classic]:
    """A classic group "g" of ``len(instance_ids)`` members (dynamic ones through
    MEMBER_ID_REQUIRED; at least one of them), one generation, TOPIC range-assigned by the
    leader, Stable."""
    assert any(iid is None for iid in instance_ids)
    members = [
        Classic(await member_id_required(h)) if iid is None else Classic("", iid) for iid in instance_ids
    ]
    joins = await asyncio.gather(
        *(
            call(h, join_request(c.member_id, instance_id=c.instance_id, protocol_type=protocol_type), JOIN_V)
            for c in members
        )
    )
    for c, j in zip(members, joins, strict=True):
        assert j.error_code == NONE, j
        c.member_id, c.generation = j.member_id, j.generation_id
    generation = joins[0].generation_id
    assert all(j.generation_id == generation for j in joins)
    (leader,) = [j for j in joins if j.leader == j.member_id]
    assert sorted(x.member_id for x in leader.members) == sorted(c.member_id for c in members)
    given = range_assignment(c.member_id for c in members)
    syncs = await asyncio.gather(
        *(
            sync(
                h,
                c,
                assignments=given if c.member_id == leader.member_id else None,
                protocol_type=protocol_type,
            )
            for c in members
        )
    )
    for c, s in zip(members, syncs, strict=True):
        assert s.error_code == NONE, s
        c.owned = partitions(s.assignment)
    group = gc.group_manager.get_group("g")
    assert group is not None and group.state == GroupState.STABLE
    assert_owned_once(members)
    return members


async def consumer_joins(h: Harness) -> Consumer:
    r = await call(h, join(), 0)
    assert r.error_code == NONE and r.error_message is None, r
    got = hb_partitions(r)
    assert got is not None
    return Consumer(r.member_id, r.member_epoch, got)


async def consumer_beat(h: Harness, c: Consumer) -> bool:
    """One ConsumerGroupHeartbeat listing what ``c`` owns; True if its partitions changed."""
    r = await call(h, beat(c.member_id, c.epoch, {T_ID: sorted(c.owned)}), 0)
    assert r.error_code == NONE, r
    c.epoch = r.member_epoch
    got = hb_partitions(r)
    if got is None or got == c.owned:
        return False
    c.owned = got
    return True


def assert_owned_once(members: Iterable[Classic | Consumer]) -> None:
    """No partition is owned by two members at once (as the clients see it)."""
    seen: dict[int, str] = {}
    for c in members:
        for p in c.owned:
            assert p not in seen, f"partition {p} owned by both {seen[p]} and {c.member_id}"
            seen[p] = c.member_id


def consumer_group(gc: GroupCoordinator) -> ConsumerGroup:
    cg = gc.group_manager.get_consumer_group("g")
    assert cg is not None
    return cg


def classic_entry(gc: GroupCoordinator) -> Group:
    group = gc.group_manager.get_group("g")
    assert group is not None
    return group


async def classic_rejoin_consumer_group(
    h: Harness,
    gc: GroupCoordinator,
    c: Classic,
    between: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """A classic member told to rebalance rejoins the consumer group and syncs (``between``
    the two: what the others do meanwhile, while it still owns what it listed)."""
    j = await rejoin(h, c)
    assert j.error_code == NONE, j
    member = consumer_group(gc).members[c.member_id]
    assert (j.member_id, j.generation_id) == (c.member_id, member.member_epoch)
    assert (j.leader, j.protocol_type, j.protocol_name, j.members) == ("", "consumer", "range", [])
    c.generation = j.generation_id
    if between is not None:
        await between()
    s = await sync(h, c)
    assert (s.error_code, s.protocol_type, s.protocol_name) == (NONE, "consumer", "range"), s
    c.owned = partitions(s.assignment)


async def converge(
    h: Harness, gc: GroupCoordinator, classics: Sequence[Classic], consumers: Sequence[Consumer]
) -> None:
    """Every member heartbeats (classic ones rejoin when told to) until the consumer group is
    Stable and quiet, checking after every answer that no partition has two owners."""
    everyone: list[Classic | Consumer] = [*classics, *consumers]

    async def consumers_beat() -> None:
        for k in consumers:
            await consumer_beat(h, k)
            assert_owned_once(everyone)

    for _ in range(10):
        quiet = True
        for c in classics:
            code = await heartbeat(h, c)
            assert code in (NONE, REBALANCING), code
            if code == REBALANCING:
                quiet = False
                await classic_rejoin_consumer_group(h, gc, c, consumers_beat)
            assert_owned_once(everyone)
        for k in consumers:
            if await consumer_beat(h, k):
                quiet = False
            assert_owned_once(everyone)
        if quiet and consumer_group(gc).state == ConsumerGroupState.STABLE:
            break
    else:
        pytest.fail(f"no convergence: {consumer_group(gc)}")
    assert frozenset().union(*(c.owned for c in everyone)) == ALL
    assert sum(len(c.owned) for c in everyone) == PARTITIONS


async def upgraded(
    h: Harness, gc: GroupCoordinator, *, instance_ids: Sequence[str | None] = (None, None)
) -> tuple[list[Classic], Consumer]:
    """A Stable classic group upgraded by a joining ConsumerGroupHeartbeat."""
    classics = await classic_group(h, gc, instance_ids=instance_ids)
    consumer = await consumer_joins(h)
    assert "g" in gc.group_manager.consumer_groups
    return classics, consumer


def owned_on_broker(cg: ConsumerGroup, member_id: str) -> frozenset[int]:
    return frozenset(cg.members[member_id].assigned.get(T_ID, frozenset()))


# -- 1. upgrade ---------------------------------------------------------------------------------


def test_upgrade_moves_classic_members_into_a_consumer_group_without_double_ownership(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a, b = await classic_group(h, gc)
            generation = a.generation
            assert {a.owned, b.owned} == {frozenset({0, 1, 2}), frozenset({3, 4, 5})}
            c = await call(h, commit("g", a.member_id, generation, offset=42, partition=0), 8)
            assert commit_codes(c) == [NONE]

            r = await call(h, join(), 0)
            assert (r.error_code, r.error_message) == (NONE, None)
            assert r.member_epoch == generation + 1
            k = Consumer(r.member_id, r.member_epoch, hb_partitions(r) or frozenset())
            assert k.owned == frozenset()  # everything is still a's or b's
            assert_owned_once([a, b, k])

            cg = consumer_group(gc)
            assert classic_entry(gc).state == GroupState.EMPTY and not classic_entry(gc).members
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert [(x.group_id, x.group_type, x.protocol_type) for x in lg.groups] == [
                ("g", "consumer", "consumer")
            ]
            cd = await call(h, m.ConsumerGroupDescribeRequest(group_ids=["g"]), 0)
            (d,) = cd.groups
            assert (d.error_code, d.group_epoch) == (NONE, generation + 1)
            epochs = {mem.member_id: mem.member_epoch for mem in d.members}
            assert epochs == {a.member_id: generation, b.member_id: generation, k.member_id: generation + 1}
            for x in (a, b):
                assert owned_on_broker(cg, x.member_id) == x.owned
                assert cg.members[x.member_id].classic is not None

            # The classic members are told to rebalance, then converge with the newcomer.
            assert await heartbeat(h, a) == REBALANCING
            assert await heartbeat(h, b) == REBALANCING
            await converge(h, gc, [a, b], [k])
            assert sorted(len(x.owned) for x in (a, b, k)) == [2, 2, 2]
            assert a.generation == b.generation == k.epoch == cg.group_epoch
            for x in (a, b):
                assert await heartbeat(h, x) == NONE
            assert not await consumer_beat(h, k)

            # The offset committed before the upgrade is still there.
            f = await call(h, fetch_v9("g", None, -1), 9)
            (group,) = f.groups
            assert group.error_code == NONE
            assert [(p.partition_index, p.committed_offset) for p in group.topics[0].partitions] == [
                (0, 42),
                (1, -1),
            ]

    run(scenario())


def test_upgrade_of_a_static_member_group_keeps_the_instance_ids(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc, instance_ids=("instance-a", None))
            cg = consumer_group(gc)
            assert cg.static_members == {"instance-a": a.member_id}
            assert cg.members[a.member_id].instance_id == "instance-a"
            await converge(h, gc, [a, b], [k])

    run(scenario())


def test_upgrade_answers_parked_join_group_with_rebalance_in_progress(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a, b = await classic_group(h, gc)
            # a rejoins listing its partitions (new metadata: a rebalance starts) and waits for b.
            parked = asyncio.create_task(rejoin(h, a))
            for _ in range(100):  # let the task run up to its wait (no time passes)
                if classic_entry(gc).state == GroupState.PREPARING_REBALANCE:
                    break
                await asyncio.sleep(0)
            assert classic_entry(gc).state == GroupState.PREPARING_REBALANCE and not parked.done()
            await consumer_joins(h)
            j = await parked
            assert j.error_code == REBALANCING
            # Both are members of the consumer group now, and rejoin it.
            assert set(consumer_group(gc).members) >= {a.member_id, b.member_id}
            await classic_rejoin_consumer_group(h, gc, a)
            assert await heartbeat(h, b) == REBALANCING

    run(scenario())


def test_new_classic_member_joins_an_upgraded_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            mid = await member_id_required(h)
            d = Classic(mid)
            cg = consumer_group(gc)
            epoch = cg.group_epoch
            await classic_rejoin_consumer_group(h, gc, d)
            assert cg.group_epoch == epoch + 1
            assert cg.members[mid].classic is not None
            await converge(h, gc, [a, b, d], [k])
            assert sorted(len(x.owned) for x in (a, b, d, k)) == [1, 1, 2, 2]

    run(scenario())


# -- 2. upgrade refused -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["disabled", "downgrade", "DISABLED"])
def test_upgrade_refused_by_the_policy(tmp_path: Path, policy: str) -> None:
    async def scenario() -> None:
        async with started(tmp_path, policy=policy) as (h, gc):
            a, b = await classic_group(h, gc)
            r = await call(h, join(), 0)
            assert (r.error_code, r.error_message) == (NOT_FOUND, NOT_A_CONSUMER_GROUP)
            assert r.assignment is None
            await assert_classic_group_untouched(h, gc, [a, b])

    run(scenario())


def test_upgrade_refused_for_another_protocol_type(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a, b = await classic_group(h, gc, protocol_type="connect")
            r = await call(h, join(), 0)
            assert (r.error_code, r.error_message) == (NOT_FOUND, NOT_A_CONSUMER_GROUP)
            await assert_classic_group_untouched(h, gc, [a, b])

    run(scenario())


def test_upgrade_refused_when_the_embedded_protocol_is_malformed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            mid = await member_id_required(h)
            j = await call(h, join_request(mid, protocols=[("range", b"\x00\x00garbage")]), JOIN_V)
            assert j.error_code == NONE
            a = Classic(mid, generation=j.generation_id)
            s = await sync(h, a, assignments={mid: b"not an assignment"})
            assert s.error_code == NONE
            r = await call(h, join(), 0)
            assert r.error_code == NOT_FOUND
            assert r.error_message == (
                "Cannot upgrade the classic group g to consumer group because the embedded consumer "
                "protocol is malformed."
            )
            await assert_classic_group_untouched(h, gc, [a])

    run(scenario())


def test_upgrade_refused_when_the_group_is_larger_than_a_consumer_group_may_be(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path, props={"group.consumer.max.size": "1"}) as (h, gc):
            a, b = await classic_group(h, gc)
            r = await call(h, join(), 0)
            assert (r.error_code, r.error_message) == (NOT_FOUND, NOT_A_CONSUMER_GROUP)
            await assert_classic_group_untouched(h, gc, [a, b])

    run(scenario())


def test_upgrade_whose_joining_member_is_refused_leaves_the_group_classic(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path, props={"group.consumer.max.size": "2"}) as (h, gc):
            a, b = await classic_group(h, gc)
            r = await call(h, join(), 0)
            assert r.error_code == ErrorCode.GROUP_MAX_SIZE_REACHED
            await assert_classic_group_untouched(h, gc, [a, b])

    run(scenario())


def test_heartbeat_with_an_epoch_to_a_classic_group_is_not_an_upgrade(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a, b = await classic_group(h, gc)
            r = await call(h, beat("someone", 3, {}), 0)
            assert (r.error_code, r.error_message) == (NOT_FOUND, NOT_A_CONSUMER_GROUP)
            await assert_classic_group_untouched(h, gc, [a, b])

    run(scenario())


async def assert_classic_group_untouched(
    h: Harness, gc: GroupCoordinator, members: Sequence[Classic]
) -> None:
    assert "g" not in gc.group_manager.consumer_groups
    group = classic_entry(gc)
    assert group.state == GroupState.STABLE
    assert set(group.members) == {c.member_id for c in members}
    assert group.generation_id == members[0].generation
    for c in members:
        assert await heartbeat(h, c) == NONE
    lg = await call(h, m.ListGroupsRequest(), 5)
    assert [(x.group_id, x.group_type, x.group_state) for x in lg.groups] == [("g", "classic", "Stable")]


# -- 3. offset commits of classic members ------------------------------------------------------


@pytest.mark.parametrize("version", [2, 8, 9])
def test_classic_member_commits_with_its_member_epoch(tmp_path: Path, version: int) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, _), k = await upgraded(h, gc)
            epoch = consumer_group(gc).members[a.member_id].member_epoch
            assert epoch == a.generation
            c = await call(h, commit("g", a.member_id, epoch, offset=7), version)
            assert commit_codes(c) == [NONE]
            c = await call(h, commit("g", a.member_id, epoch + 1, offset=8), version)
            assert commit_codes(c) == [ILLEGAL_GENERATION]
            c = await call(h, commit("g", a.member_id, epoch - 1, offset=8), version)
            assert commit_codes(c) == [ILLEGAL_GENERATION]
            c = await call(h, commit("g", "stranger", epoch, offset=8), version)
            assert commit_codes(c) == [UNKNOWN_MEMBER]
            f = await call(h, fetch_v9("g", None, -1), 9)
            assert f.groups[0].topics[0].partitions[0].committed_offset == 7
            # A member of the consumer protocol still needs v9 and its epoch (not a generation).
            c = await call(h, commit("g", k.member_id, k.epoch, offset=9), version)
            assert commit_codes(c) == [NONE if version >= 9 else ErrorCode.UNSUPPORTED_VERSION]

    run(scenario())


def test_classic_member_commits_at_its_new_epoch_after_rejoining(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            old = a.generation
            await converge(h, gc, [a, b], [k])
            assert a.generation > old
            c = await call(h, commit("g", a.member_id, old, offset=3), 8)
            assert commit_codes(c) == [ILLEGAL_GENERATION]
            c = await call(h, commit("g", a.member_id, a.generation, offset=3), 8)
            assert commit_codes(c) == [NONE]

    run(scenario())


# -- 4. SyncGroup / Heartbeat / JoinGroup errors for classic members ----------------------------


def test_sync_and_heartbeat_errors_of_classic_members(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc, instance_ids=("instance-a", None))
            # Wrong generation.
            assert await heartbeat(h, b, generation=b.generation + 1) == ILLEGAL_GENERATION
            assert await heartbeat(h, b, generation=b.generation - 1) == ILLEGAL_GENERATION
            s = await sync(h, b, generation=b.generation + 1)
            assert s.error_code == ILLEGAL_GENERATION
            # Protocol mismatch (SyncGroup v5 names both).
            s = await sync(h, b, protocol_name="roundrobin")
            assert s.error_code == INCONSISTENT
            s = await sync(h, b, protocol_type="connect")
            assert s.error_code == INCONSISTENT
            # A consumer-protocol member's id, or no member at all.
            assert await heartbeat(h, b, member_id=k.member_id, generation=k.epoch) == UNKNOWN_MEMBER
            s = await sync(h, b, member_id=k.member_id, generation=k.epoch)
            assert s.error_code == UNKNOWN_MEMBER
            assert await heartbeat(h, b, member_id="stranger") == UNKNOWN_MEMBER
            # A static member under another member id; an unknown instance.
            assert await heartbeat(h, a, member_id=b.member_id) == FENCED_INSTANCE
            s = await sync(h, a, member_id="not-a")
            assert s.error_code == FENCED_INSTANCE
            assert await heartbeat(h, a, instance_id="instance-z") == UNKNOWN_MEMBER
            # Right generation: told to rejoin (the group epoch moved on), and still members.
            assert await heartbeat(h, a) == REBALANCING
            assert await heartbeat(h, b) == REBALANCING
            s = await sync(h, b)
            assert s.error_code == REBALANCING
            assert set(consumer_group(gc).members) == {a.member_id, b.member_id, k.member_id}
            await converge(h, gc, [a, b], [k])

    run(scenario())


def test_join_group_refused_by_a_consumer_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), _ = await upgraded(h, gc, instance_ids=("instance-a", None))
            cg = consumer_group(gc)
            epoch = cg.group_epoch
            # A protocol no classic member of the group has, or another protocol type.
            j = await rejoin(h, b, protocols=[("roundrobin", subscription())])
            assert j.error_code == INCONSISTENT
            j = await rejoin(h, b, protocol_type="connect")
            assert j.error_code == INCONSISTENT
            # A static member under another member id.
            j = await call(h, join_request("not-a", instance_id="instance-a"), JOIN_V)
            assert j.error_code == FENCED_INSTANCE
            assert cg.group_epoch == epoch
            assert set(cg.members[b.member_id].subscribed_topic_names) == {TOPIC}
            assert cg.members[a.member_id].member_id == a.member_id

    run(scenario())


# -- 5. LeaveGroup ------------------------------------------------------------------------------


def test_classic_member_leaves_a_consumer_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (_, b), k = await upgraded(h, gc, instance_ids=("instance-a", None))
            cg = consumer_group(gc)
            epoch = cg.group_epoch
            lv = await leave(h, (b.member_id, None))
            assert lv.error_code == NONE
            assert [(x.member_id, x.error_code) for x in lv.members] == [(b.member_id, NONE)]
            assert b.member_id not in cg.members and b.member_id not in cg.target
            assert cg.group_epoch == epoch + 1
            assert all(owner != b.member_id for owner in cg.owners.values())
            # Unknown members, and a consumer-protocol member, are not classic members here.
            lv = await leave(h, ("stranger", None), (k.member_id, None), (b.member_id, None))
            assert lv.error_code == NONE
            assert [x.error_code for x in lv.members] == [UNKNOWN_MEMBER] * 3
            assert k.member_id in cg.members and cg.group_epoch == epoch + 1
            # A static member may be named by its instance id alone.
            lv = await leave(h, ("", "instance-a"))
            assert [x.error_code for x in lv.members] == [NONE]
            assert set(cg.members) == {k.member_id} and cg.group_epoch == epoch + 2
            assert "g" in gc.group_manager.consumer_groups  # a consumer group still
            # The consumer-protocol member now gets the whole topic.
            for _ in range(3):
                await consumer_beat(h, k)
            assert k.owned == ALL

    run(scenario())


def test_leave_group_v0_of_a_classic_member(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, _), _ = await upgraded(h, gc)
            lv = await call(h, m.LeaveGroupRequest(group_id="g", member_id="stranger"), 0)
            assert lv.error_code == UNKNOWN_MEMBER
            lv = await call(h, m.LeaveGroupRequest(group_id="g", member_id=a.member_id), 0)
            assert lv.error_code == NONE
            assert a.member_id not in consumer_group(gc).members

    run(scenario())


# -- 5b. timers and a rolling upgrade ------------------------------------------------------------


def test_classic_member_session_is_its_own_session_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with started(tmp_path, clock=clock) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            await converge(h, gc, [a, b], [k])
            cg = consumer_group(gc)
            epoch = cg.group_epoch
            # b goes silent; a and k go on: b is fenced after its JoinGroup's session timeout
            # (10 s), not group.consumer.session.timeout.ms (45 s).
            start = clock.t * 1000
            clock.t += (CLASSIC_SESSION_MS - 1) / 1000
            gc.tick(clock.t * 1000)
            assert b.member_id in cg.members
            assert await heartbeat(h, a) == NONE
            await consumer_beat(h, k)
            clock.t = (start + CLASSIC_SESSION_MS + 1) / 1000
            gc.tick(clock.t * 1000)
            assert set(cg.members) == {a.member_id, k.member_id}
            assert cg.group_epoch == epoch + 1
            assert await heartbeat(h, b) == UNKNOWN_MEMBER
            assert await heartbeat(h, a) == REBALANCING
            await converge(h, gc, [a], [k])
        # After a restart, the classic member's session is its own again.
        async with started(tmp_path, clock=clock) as (h, gc):
            cg = consumer_group(gc)
            assert set(cg.members) == {a.member_id, k.member_id}
            assert cg.members[a.member_id].session_deadline == clock.t * 1000 + CLASSIC_SESSION_MS
            clock.t += (CLASSIC_SESSION_MS + 1) / 1000
            await consumer_beat(h, k)
            gc.tick(clock.t * 1000)
            assert set(consumer_group(gc).members) == {k.member_id}

    run(scenario())


def test_classic_member_silent_since_the_upgrade_times_out_on_its_session(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with started(tmp_path, clock=clock) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            cg = consumer_group(gc)
            start = clock.t * 1000
            clock.t += (CLASSIC_SESSION_MS - 1) / 1000
            gc.tick(clock.t * 1000)
            assert {a.member_id, b.member_id} <= set(cg.members)
            await classic_rejoin_consumer_group(h, gc, a)
            await consumer_beat(h, k)
            clock.t = (start + CLASSIC_SESSION_MS + 1) / 1000
            gc.tick(clock.t * 1000)
            assert set(cg.members) == {a.member_id, k.member_id}

    run(scenario())


def test_classic_member_told_to_rejoin_is_fenced_after_its_rebalance_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with started(tmp_path, clock=clock) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            cg = consumer_group(gc)
            # b heartbeats (told to rebalance each time: that does not extend its deadline) but
            # never rejoins; a and k carry on.
            assert await heartbeat(h, b) == REBALANCING
            start = clock.t * 1000
            while clock.t * 1000 < start + CLASSIC_REBALANCE_MS - 1:
                assert b.member_id in cg.members
                assert await heartbeat(h, b) == REBALANCING
                if await heartbeat(h, a) == REBALANCING:
                    await classic_rejoin_consumer_group(h, gc, a)
                await consumer_beat(h, k)
                assert_owned_once([a, b, k])
                clock.t += CLASSIC_SESSION_MS / 2000
                gc.tick(clock.t * 1000)
            clock.t = (start + CLASSIC_REBALANCE_MS + 1) / 1000
            gc.tick(clock.t * 1000)
            assert set(cg.members) == {a.member_id, k.member_id}
            assert await heartbeat(h, b) == UNKNOWN_MEMBER
            await converge(h, gc, [a], [k])

    run(scenario())


def test_rolling_upgrade_to_the_consumer_protocol(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            await converge(h, gc, [a, b], [k])
            # One by one, each classic consumer restarts on the consumer protocol.
            lv = await leave(h, (a.member_id, None))
            assert [x.error_code for x in lv.members] == [NONE]
            k2 = await consumer_joins(h)
            await converge(h, gc, [b], [k, k2])
            lv = await leave(h, (b.member_id, None))
            assert [x.error_code for x in lv.members] == [NONE]
            k3 = await consumer_joins(h)
            await converge(h, gc, [], [k, k2, k3])
            cg = consumer_group(gc)
            assert set(cg.members) == {k.member_id, k2.member_id, k3.member_id}
            assert all(mem.classic is None for mem in cg.members.values())
            assert sorted(len(x.owned) for x in (k, k2, k3)) == [2, 2, 2]
            # A classic JoinGroup now has no classic member to agree with: any consumer
            # protocol is accepted (Kafka's supportsClassicProtocols).
            d = Classic(await member_id_required(h))
            await classic_rejoin_consumer_group(h, gc, d)

    run(scenario())


# -- 6. downgrade -------------------------------------------------------------------------------


async def downgraded(h: Harness, gc: GroupCoordinator) -> tuple[list[Classic], int]:
    """Upgrade, converge, then the consumer-protocol member leaves: the classic members and the
    consumer group's epoch just before it left."""
    (a, b), k = await upgraded(h, gc)
    await converge(h, gc, [a, b], [k])
    epoch = consumer_group(gc).group_epoch
    r = await call(h, beat(k.member_id, -1), 0)
    assert (r.error_code, r.member_epoch) == (NONE, -1)
    return [a, b], epoch


def test_downgrade_when_the_last_consumer_protocol_member_leaves(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), epoch = await downgraded(h, gc)
            assert "g" not in gc.group_manager.consumer_groups
            group = classic_entry(gc)
            assert group.state == GroupState.PREPARING_REBALANCE
            assert set(group.members) == {a.member_id, b.member_id}
            assert group.generation_id >= epoch
            for x in (a, b):
                assert partitions(group.members[x.member_id].assignment) == x.owned
                assert group.members[x.member_id].session_timeout_ms == CLASSIC_SESSION_MS
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert [(x.group_id, x.group_type, x.protocol_type, x.group_state) for x in lg.groups] == [
                ("g", "classic", "consumer", "PreparingRebalance")
            ]
            dg = await call(h, m.DescribeGroupsRequest(groups=["g"]), 5)
            (d,) = dg.groups
            assert (d.error_code, d.protocol_type, d.group_state) == (NONE, "consumer", "PreparingRebalance")
            assert sorted(x.member_id for x in d.members) == sorted([a.member_id, b.member_id])
            cd = await call(h, m.ConsumerGroupDescribeRequest(group_ids=["g"]), 0)
            assert cd.groups[0].error_code == NOT_FOUND
            # A rebalance is on: a heartbeat at the classic group's generation is told so (the
            # generation the members know: see the test below).
            for x in (a, b):
                assert await heartbeat(h, x, generation=group.generation_id) == REBALANCING

            # Both rejoin under the classic protocol and sync to a new generation.
            joins = await asyncio.gather(rejoin(h, a), rejoin(h, b))
            assert [j.error_code for j in joins] == [NONE, NONE]
            generation = joins[0].generation_id
            assert generation > epoch and joins[1].generation_id == generation
            assert joins[0].protocol_name == "range" and joins[0].leader == joins[1].leader != ""
            (leader,) = [j for j in joins if j.leader == j.member_id]
            assert {x.member_id for x in leader.members} == {a.member_id, b.member_id}
            owned = {
                x.member_id: decode_consumer_subscription(bytes(x.metadata)).owned_partitions.get(TOPIC, [])
                for x in leader.members
            }
            assert {mid: frozenset(ps) for mid, ps in owned.items()} == {
                a.member_id: a.owned,
                b.member_id: b.owned,
            }
            a.generation = b.generation = generation
            given = range_assignment([a.member_id, b.member_id])
            syncs = await asyncio.gather(
                *(sync(h, x, assignments=given if x.member_id == leader.member_id else None) for x in (a, b))
            )
            assert [s.error_code for s in syncs] == [NONE, NONE]
            assert classic_entry(gc).state == GroupState.STABLE and group.generation_id == generation
            for x in (a, b):
                assert await heartbeat(h, x) == NONE
            # Offsets commit with the classic generation again.
            c = await call(h, commit("g", a.member_id, generation, offset=11), 8)
            assert commit_codes(c) == [NONE]

    run(scenario())


def test_downgrade_keeps_the_members_generation_so_heartbeats_say_rebalance(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), epoch = await downgraded(h, gc)
            assert a.generation == b.generation == epoch
            assert await heartbeat(h, a) == REBALANCING
            assert await heartbeat(h, b) == REBALANCING
            assert classic_entry(gc).generation_id == epoch

    run(scenario())


def test_downgrade_refused_by_the_upgrade_only_policy(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path, policy="upgrade") as (h, gc):
            (a, b), k = await upgraded(h, gc)
            await converge(h, gc, [a, b], [k])
            r = await call(h, beat(k.member_id, -1), 0)
            assert r.error_code == NONE
            cg = consumer_group(gc)
            assert set(cg.members) == {a.member_id, b.member_id}
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert [(x.group_id, x.group_type) for x in lg.groups] == [("g", "consumer")]
            # The classic members go on in the consumer group and take k's partitions.
            await converge(h, gc, [a, b], [])
            assert sorted(len(x.owned) for x in (a, b)) == [3, 3]

    run(scenario())


def test_no_downgrade_while_a_consumer_protocol_member_remains(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            k2 = await consumer_joins(h)
            await converge(h, gc, [a, b], [k, k2])
            r = await call(h, beat(k.member_id, -1), 0)
            assert r.error_code == NONE
            assert set(consumer_group(gc).members) == {a.member_id, b.member_id, k2.member_id}
            await converge(h, gc, [a, b], [k2])

    run(scenario())


def test_downgrade_when_the_last_consumer_protocol_member_times_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with started(tmp_path, clock=clock) as (h, gc):
            (a, b), k = await upgraded(h, gc)
            await converge(h, gc, [a, b], [k])
            # The classic members keep heartbeating; k goes silent past its session timeout.
            silent_since = clock.t * 1000
            while clock.t * 1000 < silent_since + gc.consumer_config.session_timeout_ms - 1:
                assert "g" in gc.group_manager.consumer_groups
                for x in (a, b):
                    assert await heartbeat(h, x) == NONE
                clock.t += CLASSIC_SESSION_MS / 2000
                gc.tick(clock.t * 1000)
            clock.t += 0.002
            gc.tick(clock.t * 1000)
            assert "g" not in gc.group_manager.consumer_groups
            group = classic_entry(gc)
            assert group.state == GroupState.PREPARING_REBALANCE
            assert set(group.members) == {a.member_id, b.member_id}

    run(scenario())


# -- 7. persistence -----------------------------------------------------------------------------


def consumer_records_left(h: Harness) -> dict[object, object]:
    """The latest value of every consumer-group record key in the log (None: tombstoned)."""
    p = h.replicas.get(OFFSETS_TOPIC, 0)
    assert p is not None
    latest: dict[object, object] = {}
    for _, key, value in replay_records(p.log, OFFSETS_TOPIC):
        ckey = cgr.decode_key(bytes(key))
        if ckey is not None:
            latest[ckey] = cgr.decode_value(ckey, None if value is None else bytes(value))
    return latest


def test_upgraded_group_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), k = await upgraded(h, gc, instance_ids=("instance-a", None))
            c = await call(h, commit("g", a.member_id, a.generation, offset=42), 8)
            assert commit_codes(c) == [NONE]
            # Mid-reconciliation: a has rejoined once (told what to revoke), b not yet.
            assert await heartbeat(h, a) == REBALANCING
            sub_a = subscription(a.owned)  # what a rejoins with
            await classic_rejoin_consumer_group(h, gc, a)
            cg = consumer_group(gc)
            assert cg.members[a.member_id].state == MemberState.UNREVOKED_PARTITIONS
            before = snapshot(cg)
        async with started(tmp_path) as (h, gc):
            cg = consumer_group(gc)
            assert snapshot(cg) == before
            classic_a = cg.members[a.member_id].classic
            assert classic_a == cgr.ClassicMemberMetadata(
                CLASSIC_SESSION_MS, (cgr.ClassicProtocol("range", sub_a),)
            )
            classic_b = cg.members[b.member_id].classic
            assert classic_b is not None and classic_b.session_timeout_ms == CLASSIC_SESSION_MS
            assert cg.members[k.member_id].classic is None
            assert classic_entry(gc).state == GroupState.EMPTY and not classic_entry(gc).members
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert [(x.group_id, x.group_type) for x in lg.groups] == [("g", "consumer")]
            # The classic members go on where they were.
            await converge(h, gc, [a, b], [k])
            f = await call(h, fetch_v9("g", None, -1), 9)
            assert f.groups[0].topics[0].partitions[0].committed_offset == 42

    run(scenario())


def test_upgrade_tombstones_the_classic_group_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            await upgraded(h, gc)
            assert classic_entry(gc).persisted is None
            cg = consumer_group(gc)
            left = consumer_records_left(h)
            assert cgr.ConsumerGroupMetadataKey("g") in left
            for mid, mem in cg.members.items():
                value = left[cgr.ConsumerGroupMemberMetadataKey("g", mid)]
                assert isinstance(value, cgr.ConsumerGroupMemberMetadataValue)
                raw = value.classic_member_metadata
                decoded = None if raw is None else cgr.decode_classic_member_metadata(raw)
                assert decoded == mem.classic
        async with started(tmp_path) as (h, gc):
            # No classic metadata came back: a consumer group with an Empty classic entry.
            assert classic_entry(gc).state == GroupState.EMPTY
            assert "g" in gc.group_manager.consumer_groups

    run(scenario())


def test_downgraded_group_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            (a, b), _ = await downgraded(h, gc)
            group = classic_entry(gc)
            generation = group.generation_id
            left = consumer_records_left(h)
            assert left and all(v is None for v in left.values()), left
        async with started(tmp_path) as (h, gc):
            assert "g" not in gc.group_manager.consumer_groups
            group = classic_entry(gc)
            assert group.state == GroupState.STABLE and group.generation_id == generation
            assert (group.protocol_type, group.protocol_name) == ("consumer", "range")
            assert set(group.members) == {a.member_id, b.member_id}
            for x in (a, b):
                mem = group.members[x.member_id]
                assert partitions(mem.assignment) == x.owned
                assert mem.session_timeout_ms == CLASSIC_SESSION_MS
                assert mem.rebalance_timeout_ms == CLASSIC_REBALANCE_MS
            assert consumer_records_left(h) == left
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert [(x.group_id, x.group_type) for x in lg.groups] == [("g", "classic")]

    run(scenario())


# -- 8. the ClassicMemberMetadata field ---------------------------------------------------------

CLASSIC = cgr.ClassicMemberMetadata(
    5000, (cgr.ClassicProtocol("range", b"\x01\x02"), cgr.ClassicProtocol("cooperative-sticky", b""))
)


def test_classic_member_metadata_bytes() -> None:
    one = cgr.ClassicMemberMetadata(5000, (cgr.ClassicProtocol("range", b"\x01\x02"),))
    # session_timeout_ms int32, compact array (n+1), compact string, compact bytes, tags, tags.
    assert cgr.encode_classic_member_metadata(one) == b"\x00\x00\x13\x88\x02\x06range\x03\x01\x02\x00\x00"


@pytest.mark.parametrize(
    "value",
    [
        CLASSIC,
        cgr.ClassicMemberMetadata(45_000, ()),
        cgr.ClassicMemberMetadata(-1, (cgr.ClassicProtocol("", b""),)),
    ],
    ids=["two-protocols", "none", "empty-name"],
)
def test_classic_member_metadata_round_trip(value: cgr.ClassicMemberMetadata) -> None:
    raw = cgr.encode_classic_member_metadata(value)
    assert cgr.decode_classic_member_metadata(raw) == value
    assert cgr.decode_classic_member_metadata(memoryview(raw)) == value
    # And inside the member metadata record (tagged field 0).
    key = cgr.ConsumerGroupMemberMetadataKey("g", "m")
    record = cgr.ConsumerGroupMemberMetadataValue(
        instance_id=None,
        rack_id=None,
        client_id="c",
        client_host="/h",
        subscribed_topic_names=("t",),
        subscribed_topic_regex=None,
        rebalance_timeout_ms=1,
        server_assignor=None,
        classic_member_metadata=raw,
    )
    decoded = cgr.decode_value(key, cgr.encode_value(record))
    assert isinstance(decoded, cgr.ConsumerGroupMemberMetadataValue)
    assert decoded.classic_member_metadata is not None
    assert cgr.decode_classic_member_metadata(decoded.classic_member_metadata) == value


@pytest.mark.parametrize("cut", [0, 3, 4, 5, 8, -3, -1])
def test_malformed_classic_member_metadata_is_refused(cut: int) -> None:
    raw = cgr.encode_classic_member_metadata(CLASSIC)
    with pytest.raises(RecordFormatError):
        cgr.decode_classic_member_metadata(raw[:cut])


def test_classic_member_metadata_with_a_null_name_is_refused() -> None:
    # A compact string of length 0 is null: a protocol must have a name.
    with pytest.raises(RecordFormatError):
        cgr.decode_classic_member_metadata(b"\x00\x00\x13\x88\x02\x00\x01\x00\x00")


# -- 9. config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("BIDIRECTIONAL", "bidirectional"),
        ("Upgrade", "upgrade"),
        (" downgrade ", "downgrade"),
        ("disabled", "disabled"),
    ],
)
def test_migration_policy_is_read_in_any_case(tmp_path: Path, raw: str, value: str) -> None:
    config = BrokerConfig(data_dir=tmp_path, properties={"group.consumer.migration.policy": raw})
    assert config.get(GROUP_CONSUMER_MIGRATION_POLICY) == value


def test_migration_policy_default_is_bidirectional(tmp_path: Path) -> None:
    assert BrokerConfig(data_dir=tmp_path).get(GROUP_CONSUMER_MIGRATION_POLICY) == "bidirectional"


def test_migration_policy_refuses_other_values(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Invalid value 'sideways' for configuration group\.consumer\.migration\.policy: "
        r"must be one of disabled, upgrade, downgrade, bidirectional",
    ):
        BrokerConfig(data_dir=tmp_path, properties={"group.consumer.migration.policy": "sideways"})


def test_migration_policy_in_any_case_reaches_the_coordinator(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path, policy="Upgrade") as (_, gc):
            assert gc.migration_policy.value == "upgrade"
            assert gc.migration_policy.upgrades and not gc.migration_policy.downgrades

    run(scenario())
