"""The consumer group protocol (KIP-848) through the handlers, over a real coordinator and real
``__consumer_offsets`` logs in a tmp dir: ConsumerGroupHeartbeat validation, joins, ACLs, the
classic/consumer protocol conflicts, ConsumerGroupDescribe / DescribeGroups / ListGroups, the
member-epoch checks of OffsetCommit / OffsetFetch, reloading after a restart, session expiry,
the start-up config checks and the rebalance counter. Every request and answer is encoded and
decoded at the version asked."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.consumer_group import ConsumerGroup, MemberState
from shardbroker.broker.dispatch import RequestContext, discover
from shardbroker.broker.group_coordinator import GroupCoordinator, disabled_apis
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.broker.session import ConnectionSession
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.config_def import ConfigError
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import codec
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.principal import KafkaPrincipal
from tests.unit.replica_fakes import Harness, image, run, topic

NONE = int(ErrorCode.NONE)
INVALID = int(ErrorCode.INVALID_REQUEST)
PROPS = {
    "offsets.topic.num.partitions": "1",
    "group.initial.rebalance.delay.ms": "0",
    "group.coordinator.rebalance.protocols": "classic,consumer",
}
AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"}
SESSION_MS = 45_000  # group.consumer.session.timeout.ms's default
INTERVAL_MS = 5_000  # group.consumer.heartbeat.interval.ms's default
REGISTRY = discover()
ALICE = ConnectionSession(principal=KafkaPrincipal.user("alice"), client_host="10.0.0.1")
T_ID = uuid.uuid5(uuid.NAMESPACE_DNS, "t")  # replica_fakes.topic's id for "t"

HB = m.ConsumerGroupHeartbeatRequest
TP = m.ConsumerGroupHeartbeatRequest.TopicPartitions


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_image(acls: Sequence[AclBinding] = ()) -> MetadataImage:
    img = image(topic(OFFSETS_TOPIC, 1, configs={"cleanup.policy": "compact"}), topic("t", 3))
    return dataclasses.replace(img, acls=tuple(acls))


@contextlib.asynccontextmanager
async def started(
    data_dir: Path,
    *,
    acls: Sequence[AclBinding] = (),
    clock: Clock | None = None,
    rebalances: list[str] | None = None,
    props: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Harness, GroupCoordinator]]:
    """A started coordinator over ``data_dir`` (a second one over the same dir is a restart)."""
    h = Harness(data_dir, make_image(acls), props={**PROPS, **(props or {})})
    seen = rebalances if rebalances is not None else []
    gc = GroupCoordinator(
        0,
        h.config,
        h.channel,
        h.replicas,
        clock=clock or Clock(),
        wall_clock=Clock(),
        on_rebalance=seen.append,
    )
    h.state.groups = gc
    async with h:
        await gc.start(None)
        try:
            yield h, gc
        finally:
            await gc.drain()


async def call(h: Harness, request: Any, version: int, session: ConnectionSession | None = None) -> Any:
    """Dispatch ``request`` at ``version`` (after a codec round trip), round-trip the answer."""
    api_key = type(request).API_KEY
    request = codec.decode(type(request), codec.encode(request, version), version)
    ctx = h.ctx(api_key, version)
    ctx.peer = "127.0.0.1:5555"
    if session is not None:
        ctx.session = session
    response = await REGISTRY.dispatch(ctx, request)
    assert response is not None
    return codec.decode(type(response), codec.encode(response, version), version)


def join(group: str = "g", member_id: str = "", names: list[str] | None = None, **kw: Any) -> HB:
    fields: dict[str, Any] = {
        "group_id": group,
        "member_id": member_id,
        "member_epoch": 0,
        "rebalance_timeout_ms": 30_000,
        "subscribed_topic_names": ["t"] if names is None else names,
        "topic_partitions": [],
    }
    fields.update(kw)
    return HB(**fields)


def beat(member_id: str, epoch: int, owned: dict[uuid.UUID, list[int]] | None = None, group: str = "g") -> HB:
    tps = None if owned is None else [TP(topic_id=tid, partitions=ps) for tid, ps in owned.items()]
    return HB(group_id=group, member_id=member_id, member_epoch=epoch, topic_partitions=tps)


def assigned(r: Any) -> dict[uuid.UUID, list[int]] | None:
    if r.assignment is None:
        return None
    return {tp.topic_id: list(tp.partitions) for tp in r.assignment.topic_partitions}


async def joined(h: Harness, group: str = "g", version: int = 0) -> Any:
    r = await call(h, join(group), version)
    assert r.error_code == NONE, r
    return r


async def classic_member(h: Harness, group: str) -> str:
    """One classic member joins and syncs ``group``: its member id."""
    proto = [m.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x00meta")]
    req = m.JoinGroupRequest(
        group_id=group,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=proto,
    )
    r = await call(h, req, 4)
    assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED
    req.member_id = r.member_id
    r = await call(h, req, 5)
    assert r.error_code == NONE and r.generation_id >= 1, r
    s = await call(
        h,
        m.SyncGroupRequest(
            group_id=group,
            generation_id=r.generation_id,
            member_id=req.member_id,
            assignments=[
                m.SyncGroupRequest.SyncGroupRequestAssignment(member_id=req.member_id, assignment=b"A")
            ],
        ),
        3,
    )
    assert s.error_code == NONE
    return str(req.member_id)


OC = m.OffsetCommitRequest


def commit(group: str, member_id: str, epoch: int, offset: int = 5, partition: int = 0) -> OC:
    return OC(
        group_id=group,
        generation_id_or_member_epoch=epoch,
        member_id=member_id,
        topics=[
            OC.OffsetCommitRequestTopic(
                name="t",
                partitions=[
                    OC.OffsetCommitRequestPartition(
                        partition_index=partition, committed_offset=offset, committed_metadata="md"
                    )
                ],
            )
        ],
    )


def commit_codes(r: Any) -> list[int]:
    return [p.error_code for t in r.topics for p in t.partitions]


F = m.OffsetFetchRequest


def fetch_v9(group: str, member_id: str | None, epoch: int) -> F:
    return F(
        groups=[
            F.OffsetFetchRequestGroup(
                group_id=group,
                member_id=member_id,
                member_epoch=epoch,
                topics=[F.OffsetFetchRequestTopics(name="t", partition_indexes=[0, 1])],
            )
        ]
    )


def acl(op: AclOperation, rtype: ResourceType, name: str) -> AclBinding:
    return AclBinding(
        ResourcePattern(rtype, name, PatternType.LITERAL),
        AccessControlEntry("User:alice", "*", op, AclPermissionType.ALLOW),
    )


# -- 1. request validation --------------------------------------------------------------------

UNSUPPORTED = int(ErrorCode.UNSUPPORTED_ASSIGNOR)
INVALID_CASES: list[tuple[str, int, HB, int, str]] = [
    ("empty group id", 0, join(group=""), INVALID, "GroupId can't be empty."),
    ("empty instance id", 0, join(instance_id=""), INVALID, "InstanceId can't be empty."),
    ("empty rack id", 0, join(rack_id=""), INVALID, "RackId can't be empty."),
    ("epoch 1 without member id", 0, beat("", 1, {}), INVALID, "MemberId can't be empty."),
    (
        "join without rebalance timeout",
        0,
        join(rebalance_timeout_ms=-1),
        INVALID,
        "RebalanceTimeoutMs must be provided in first request.",
    ),
    (
        "join with null owned partitions",
        0,
        join(topic_partitions=None),
        INVALID,
        "TopicPartitions must be empty when (re-)joining.",
    ),
    (
        "join owning partitions",
        0,
        join(topic_partitions=[TP(topic_id=T_ID, partitions=[0])]),
        INVALID,
        "TopicPartitions must be empty when (re-)joining.",
    ),
    (
        "join without subscription",
        1,
        join(subscribed_topic_names=None),
        INVALID,
        "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
    ),
    (
        "a regex that does not compile",
        1,
        join(subscribed_topic_regex="t(.*"),
        int(ErrorCode.INVALID_REGULAR_EXPRESSION),
        "SubscribedTopicRegex `t(.*` is not a valid regular expression: missing closing ).",
    ),
    ("static leave without instance id", 0, beat("m", -2), INVALID, "InstanceId can't be null."),
    (
        "unknown server assignor",
        0,
        join(server_assignor="sticky"),
        UNSUPPORTED,
        "ServerAssignor sticky is not supported. Supported assignors: uniform, range.",
    ),
]


@pytest.mark.parametrize(
    ("version", "request_", "code", "message"),
    [case[1:] for case in INVALID_CASES],
    ids=[case[0] for case in INVALID_CASES],
)
def test_heartbeat_request_validation(
    tmp_path: Path, version: int, request_: HB, code: int, message: str
) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            r = await call(h, request_, version)
            assert (r.error_code, r.error_message) == (code, message)
            assert r.assignment is None
            assert gc.group_manager.consumer_groups == {}  # refused before any group changes

    run(scenario())


def test_heartbeat_epoch_below_minus_two_is_invalid(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            r = await call(h, beat("m", -3, {}), 0)
            assert r.error_code == INVALID
            assert r.error_message is not None and r.error_message.startswith("MemberEpoch is invalid")

    run(scenario())


def test_heartbeat_epoch_below_minus_two_has_kafkas_message(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            r = await call(h, beat("m", -3, {}), 0)
            assert (r.error_code, r.error_message) == (INVALID, "MemberEpoch is invalid.")

    run(scenario())


def test_heartbeat_blank_group_id_is_empty(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            r = await call(h, join(group="  "), 0)
            assert (r.error_code, r.error_message) == (INVALID, "GroupId can't be empty.")

    run(scenario())


def test_empty_regex_beside_names_is_accepted_at_v1(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            r = await call(h, join(subscribed_topic_regex=""), 1)
            assert (r.error_code, r.member_epoch) == (NONE, 1)
            assert assigned(r) == {T_ID: [0, 1, 2]}
            (member,) = gc.group_manager.consumer_groups["g"].members.values()
            assert member.subscribed_topic_regex is None

    run(scenario())


# -- 2. a join ----------------------------------------------------------------------------------


_INTERVAL_1S = {
    "group.consumer.heartbeat.interval.ms": "1000",
    "group.consumer.min.heartbeat.interval.ms": "1000",
}


def test_full_join_through_the_handler(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path, props=_INTERVAL_1S) as (h, _):
            r = await call(h, join(), 0)
            assert r.error_code == NONE and r.error_message is None
            assert r.member_id and len(r.member_id) >= 16  # generated
            # group.consumer.heartbeat.interval.ms, as the group's grid places it (consumer_group.py)
            assert r.member_epoch == 1 and 250 <= r.heartbeat_interval_ms < 1250  # not the default 5000
            assert assigned(r) == {T_ID: [0, 1, 2]}
            again = await call(h, beat(r.member_id, 1), 0)
            assert (again.error_code, again.member_id, again.member_epoch) == (NONE, r.member_id, 1)
            assert 250 <= again.heartbeat_interval_ms < 1250
            assert again.assignment is None
            # A second join gets a different id.
            other = await call(h, join(), 0)
            assert other.error_code == NONE and other.member_id != r.member_id

    run(scenario())


# -- 3. authorization ---------------------------------------------------------------------------


def test_heartbeat_needs_read_on_the_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        acls = [acl(AclOperation.DESCRIBE, ResourceType.TOPIC, "t")]
        async with started(tmp_path, acls=acls, props=AUTHORIZER) as (h, gc):
            r = await call(h, join(), 0, ALICE)
            assert r.error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED
            assert gc.group_manager.consumer_groups == {}

    run(scenario())


def test_heartbeat_needs_describe_on_each_subscribed_topic(tmp_path: Path) -> None:
    async def scenario() -> None:
        acls = [acl(AclOperation.READ, ResourceType.GROUP, "g")]
        async with started(tmp_path, acls=acls, props=AUTHORIZER) as (h, gc):
            r = await call(h, join(), 0, ALICE)
            assert r.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
            assert gc.group_manager.consumer_groups == {}

    run(scenario())


def test_heartbeat_with_both_acls_joins(tmp_path: Path) -> None:
    async def scenario() -> None:
        acls = [
            acl(AclOperation.READ, ResourceType.GROUP, "g"),
            acl(AclOperation.DESCRIBE, ResourceType.TOPIC, "t"),
        ]
        async with started(tmp_path, acls=acls, props=AUTHORIZER) as (h, _):
            r = await call(h, join(), 0, ALICE)
            assert (r.error_code, r.member_epoch) == (NONE, 1)

    run(scenario())


# -- 4. protocol conflicts ----------------------------------------------------------------------


def test_classic_group_with_members_refuses_consumer_heartbeat(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            await classic_member(h, "g")
            r = await call(h, join(), 0)
            assert r.error_code == ErrorCode.GROUP_ID_NOT_FOUND
            assert "g" not in gc.group_manager.consumer_groups

    run(scenario())


def test_consumer_group_with_members_refuses_join_group_of_another_protocol_type(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            await joined(h)
            proto = [m.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"x")]
            for protocol_type in ("connect", ""):
                r = await call(
                    h,
                    m.JoinGroupRequest(
                        group_id="g",
                        session_timeout_ms=10_000,
                        rebalance_timeout_ms=10_000,
                        protocol_type=protocol_type,
                        protocols=proto,
                    ),
                    5,
                )
                assert r.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL

    run(scenario())


def test_empty_classic_group_is_taken_over_with_its_offsets(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            member = await classic_member(h, "g")
            c = await call(h, commit("g", member, 1, offset=42), 8)
            assert commit_codes(c) == [NONE]
            lv = await call(h, m.LeaveGroupRequest(group_id="g", member_id=member), 0)
            assert lv.error_code == NONE
            r = await joined(h)
            assert "g" in gc.group_manager.consumer_groups
            f = await call(h, fetch_v9("g", r.member_id, r.member_epoch), 9)
            (group,) = f.groups
            assert group.error_code == NONE
            assert [(p.partition_index, p.committed_offset) for p in group.topics[0].partitions] == [
                (0, 42),
                (1, -1),
            ]
        # And after a restart: still a consumer group, the offset still there.
        async with started(tmp_path) as (h, gc):
            assert "g" in gc.group_manager.consumer_groups
            f = await call(h, fetch_v9("g", None, -1), 9)
            assert f.groups[0].topics[0].partitions[0].committed_offset == 42

    run(scenario())


# -- 5. describe / list -------------------------------------------------------------------------


def test_describe_and_list(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            first = await joined(h)
            await classic_member(h, "classic")
            dg = await call(h, m.DescribeGroupsRequest(groups=["g"]), 5)
            (d,) = dg.groups
            assert (d.error_code, d.group_state) == (ErrorCode.GROUP_ID_NOT_FOUND, "Dead")
            cd = await call(h, m.ConsumerGroupDescribeRequest(group_ids=["classic", "missing", "g"]), 0)
            classic, missing, g = cd.groups
            assert classic.error_code == ErrorCode.GROUP_ID_NOT_FOUND
            assert (missing.error_code, missing.error_message) == (
                ErrorCode.GROUP_ID_NOT_FOUND,
                "Group missing not found.",
            )
            assert g.error_code == NONE
            assert (g.group_state, g.group_epoch, g.assignment_epoch, g.assignor_name) == (
                "Stable",
                1,
                1,
                "uniform",
            )
            (mem,) = g.members
            assert (mem.member_id, mem.member_epoch) == (first.member_id, 1)
            assert (mem.client_id, mem.client_host) == ("test", "/127.0.0.1")
            assert mem.subscribed_topic_names == ["t"]
            for a in (mem.assignment, mem.target_assignment):
                assert [(tp.topic_id, tp.topic_name, tp.partitions) for tp in a.topic_partitions] == [
                    (T_ID, "t", [0, 1, 2])
                ]
            # A second member: the target moves on before the assignment.
            await joined(h)
            cd = await call(h, m.ConsumerGroupDescribeRequest(group_ids=["g"]), 0)
            (g,) = cd.groups
            assert (g.group_state, g.group_epoch, g.assignment_epoch) == ("Reconciling", 2, 2)
            # ListGroups v5.
            lg = await call(h, m.ListGroupsRequest(types_filter=["consumer"]), 5)
            assert [(x.group_id, x.group_type, x.protocol_type, x.group_state) for x in lg.groups] == [
                ("g", "consumer", "consumer", "Reconciling")
            ]
            lg = await call(h, m.ListGroupsRequest(types_filter=["Classic"]), 5)
            assert [(x.group_id, x.group_type, x.group_state) for x in lg.groups] == [
                ("classic", "classic", "Stable")
            ]
            lg = await call(h, m.ListGroupsRequest(), 5)
            assert sorted((x.group_id, x.group_type) for x in lg.groups) == [
                ("classic", "classic"),
                ("g", "consumer"),
            ]

    run(scenario())


# -- 6. offsets ---------------------------------------------------------------------------------


def test_offset_commit_and_fetch_check_the_member_epoch(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, _):
            r = await joined(h)
            mid, epoch = r.member_id, r.member_epoch
            c = await call(h, commit("g", mid, epoch, offset=7), 9)
            assert commit_codes(c) == [NONE]
            c = await call(h, commit("g", mid, epoch + 1, offset=8), 9)
            assert commit_codes(c) == [ErrorCode.STALE_MEMBER_EPOCH]
            c = await call(h, commit("g", mid, epoch, offset=8), 8)
            assert commit_codes(c) == [ErrorCode.UNSUPPORTED_VERSION]
            c = await call(h, commit("g", "stranger", epoch, offset=8), 9)
            assert commit_codes(c) == [ErrorCode.UNKNOWN_MEMBER_ID]
            c = await call(h, commit("g", "", -1, offset=8), 9)  # admin commit: the group has members
            assert commit_codes(c) == [ErrorCode.UNKNOWN_MEMBER_ID]
            f = await call(h, fetch_v9("g", mid, epoch + 1), 9)
            (group,) = f.groups
            assert (group.error_code, group.topics) == (ErrorCode.STALE_MEMBER_EPOCH, [])
            f = await call(h, fetch_v9("g", "stranger", epoch), 9)
            assert f.groups[0].error_code == ErrorCode.UNKNOWN_MEMBER_ID
            f = await call(h, fetch_v9("g", mid, epoch), 9)
            (group,) = f.groups
            assert group.error_code == NONE
            parts = [(p.partition_index, p.committed_offset, p.metadata) for p in group.topics[0].partitions]
            assert parts == [(0, 7, "md"), (1, -1, "")]

    run(scenario())


# -- 7. persistence -----------------------------------------------------------------------------


def snapshot(cg: ConsumerGroup) -> dict[str, Any]:
    """What a reload must give back of a consumer group."""
    return {
        "epochs": (cg.group_epoch, cg.assignment_epoch),
        "target": {k: dict(v) for k, v in cg.target.items()},
        "static": dict(cg.static_members),
        "members": {
            mid: (
                mem.member_epoch,
                mem.previous_member_epoch,
                mem.state,
                dict(mem.assigned),
                dict(mem.pending_revocation),
                mem.subscribed_topic_names,
                mem.rebalance_timeout_ms,
                mem.instance_id,
                mem.client_id,
                mem.classic,
            )
            for mid, mem in cg.members.items()
        },
        "owners": dict(cg.owners),
    }


def test_consumer_group_survives_a_restart_mid_reconciliation(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a = await joined(h)
            assert assigned(a) == {T_ID: [0, 1, 2]}
            b = await joined(h)
            assert (b.member_epoch, assigned(b)) == (2, {})  # its partitions are still a's
            # a is told to revoke (it still owns all three): it stays at epoch 1.
            ra = await call(h, beat(a.member_id, 1, {T_ID: [0, 1, 2]}), 0)
            assert ra.error_code == NONE and ra.member_epoch == 1
            kept = assigned(ra)
            assert kept is not None and 0 < len(kept[T_ID]) < 3
            cg = gc.group_manager.consumer_groups["g"]
            before = snapshot(cg)
            ma = cg.members[a.member_id]
            assert ma.state == MemberState.UNREVOKED_PARTITIONS and ma.pending_revocation
            assert cg.members[b.member_id].state == MemberState.UNRELEASED_PARTITIONS
            assert (cg.group_epoch, cg.assignment_epoch) == (2, 2)
        async with started(tmp_path) as (h, gc):
            cg = gc.group_manager.consumer_groups["g"]
            assert snapshot(cg) == before
            # a acknowledges the revocation with its old epoch: no FENCED_MEMBER_EPOCH.
            ra = await call(h, beat(a.member_id, 1, kept), 0)
            assert (ra.error_code, ra.member_epoch) == (NONE, 2)
            # b now gets the partitions a gave up.
            rb = await call(h, beat(b.member_id, 2, {}), 0)
            assert rb.error_code == NONE and rb.member_epoch == 2
            got = assigned(rb)
            assert got is not None and sorted(got[T_ID] + kept[T_ID]) == [0, 1, 2]
            assert gc.group_manager.consumer_groups["g"].state.value == "Stable"

    run(scenario())


# -- 8. timers ----------------------------------------------------------------------------------


def test_session_timeout_fences_the_member_for_good(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = Clock()
        async with started(tmp_path, clock=clock) as (h, gc):
            a = await joined(h)
            b = await joined(h)
            cg = gc.group_manager.consumer_groups["g"]
            epoch = cg.group_epoch
            now = clock.t * 1000
            gc.tick(now + SESSION_MS - 1)
            assert set(cg.members) == {a.member_id, b.member_id}
            # a keeps heartbeating; b goes silent.
            clock.t += (SESSION_MS - 1) / 1000
            assert (await call(h, beat(a.member_id, 1), 0)).error_code == NONE
            gc.tick(now + SESSION_MS + 1)
            assert set(cg.members) == {a.member_id}
            assert cg.group_epoch == epoch + 1
            assert all(owner == a.member_id for owner in cg.owners.values())
            assert b.member_id not in cg.target
            r = await call(h, beat(b.member_id, b.member_epoch), 0)
            assert r.error_code == ErrorCode.UNKNOWN_MEMBER_ID
            # a is given the whole topic again.
            r = await call(h, beat(a.member_id, cg.members[a.member_id].member_epoch, {}), 0)
            assert r.error_code == NONE and assigned(r) == {T_ID: [0, 1, 2]}
        async with started(tmp_path) as (h, gc):
            cg = gc.group_manager.consumer_groups["g"]
            assert set(cg.members) == {a.member_id}
            assert b.member_id not in cg.target
            assert cg.group_epoch == epoch + 1

    run(scenario())


# -- 9. config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "props",
    [
        {"group.coordinator.rebalance.protocols": "consumer"},
        {"group.consumer.session.timeout.ms": "44999"},
        {"group.consumer.session.timeout.ms": "60001"},
        {"group.consumer.heartbeat.interval.ms": "4999"},
        {"group.consumer.heartbeat.interval.ms": "15001"},
        {
            "group.consumer.max.heartbeat.interval.ms": "60000",
            "group.consumer.heartbeat.interval.ms": "45000",
        },
    ],
    ids=[
        "no-classic",
        "session-below-min",
        "session-above-max",
        "hb-below-min",
        "hb-above-max",
        "hb>=session",
    ],
)
def test_group_coordinator_config_refused(tmp_path: Path, props: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"group\.co"):
        BrokerConfig(data_dir=tmp_path, properties=props)


def test_heartbeat_interval_must_be_below_session_timeout(tmp_path: Path) -> None:
    props = {
        "group.consumer.max.heartbeat.interval.ms": "60000",
        "group.consumer.heartbeat.interval.ms": "45000",
    }
    with pytest.raises(
        ConfigError,
        match=r"group\.consumer\.heartbeat\.interval\.ms must be less than "
        r"group\.consumer\.session\.timeout\.ms",
    ):
        BrokerConfig(data_dir=tmp_path, properties=props)
    ok = {**props, "group.consumer.heartbeat.interval.ms": "44999"}
    assert BrokerConfig(data_dir=tmp_path, properties=ok).properties["group.consumer.heartbeat.interval.ms"]


def test_disabled_apis_and_api_versions(tmp_path: Path) -> None:
    assert disabled_apis(BrokerConfig(data_dir=tmp_path)) == frozenset()  # Kafka 4's default
    classic = BrokerConfig(data_dir=tmp_path, properties={"group.coordinator.rebalance.protocols": "classic"})
    assert disabled_apis(classic) == {68, 69}
    assert {68: (0, 1), 69: (0, 0)}.items() <= REGISTRY.versions.items()
    registry = discover(exclude=disabled_apis(classic))

    async def scenario() -> None:
        h = Harness(tmp_path, make_image())
        ctx = RequestContext(api_key=18, api_version=3, correlation_id=1, client_id="c", worker=h.state)
        ctx.registry = registry
        request = m.ApiVersionsRequest(client_software_name="x", client_software_version="1")
        r = await registry.dispatch(ctx, request)
        assert isinstance(r, m.ApiVersionsResponse) and r.error_code == NONE
        keys = {k.api_key for k in r.api_keys}
        assert 68 not in keys and 69 not in keys
        assert {8, 9, 11, 14, 15, 16, 18}.issubset(keys)
        ctx.registry = REGISTRY
        r = await REGISTRY.dispatch(ctx, request)
        assert isinstance(r, m.ApiVersionsResponse) and {68, 69}.issubset({k.api_key for k in r.api_keys})

    run(scenario())


# -- 10. rebalance counting ---------------------------------------------------------------------


def test_rebalances_are_counted_by_protocol_not_on_load(tmp_path: Path) -> None:
    async def scenario() -> None:
        seen: list[str] = []
        async with started(tmp_path, rebalances=seen) as (h, _):
            a = await joined(h)
            assert seen == ["consumer"]
            assert (await call(h, beat(a.member_id, 1), 0)).error_code == NONE
            assert seen == ["consumer"]  # no new target
            await joined(h)
            assert seen == ["consumer", "consumer"]
            await classic_member(h, "classic")
            assert seen == ["consumer", "consumer", "classic"]
        reloaded: list[str] = []
        async with started(tmp_path, rebalances=reloaded) as (h, gc):
            assert set(gc.group_manager.consumer_groups) == {"g"}
            assert "classic" in gc.group_manager.groups
            assert (await call(h, beat(a.member_id, 1, {T_ID: list(range(3))}), 0)).error_code == NONE
            assert reloaded == []

    run(scenario())


def test_rebalance_of_a_recreated_consumer_group_is_counted(tmp_path: Path) -> None:
    async def scenario() -> None:
        seen: list[str] = []
        async with started(tmp_path, rebalances=seen) as (h, _):
            a = await joined(h)
            left = await call(h, beat(a.member_id, -1), 0)
            assert left.error_code == NONE and left.member_epoch == -1
            member = await classic_member(h, "g")  # the empty consumer group becomes classic
            lv = await call(h, m.LeaveGroupRequest(group_id="g", member_id=member), 0)
            assert lv.error_code == NONE
            seen.clear()
            r = await joined(h)  # a consumer group again, epoch 1
            assert r.member_epoch == 1
            assert seen == ["consumer"]

    run(scenario())


def test_a_huge_regex_is_refused_at_once_and_nothing_is_stored(tmp_path: Path) -> None:
    """The longest regex a request can carry (a string is at most 32,767 bytes, as Kafka's; a
    1 MiB one does not decode); topic_regex.py refuses it by its length, before parsing."""
    with pytest.raises(ProtocolError, match="at most 32767"):
        codec.decode(HB, codec.encode(join(names=[], subscribed_topic_regex="a" * (1 << 20)), 1), 1)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            r = await call(h, join(names=[], subscribed_topic_regex="(a" * 16383 + "b"), 1)
            assert r.error_code == ErrorCode.INVALID_REGULAR_EXPRESSION
            assert r.error_message.startswith("SubscribedTopicRegex `(a(a")
            assert r.error_message.endswith("longer than the 8192 this broker accepts.")
            assert len(r.error_message) < 1000
            assert "g" not in gc.group_manager.consumer_groups and "g" not in gc.group_manager.groups

    run(scenario())


def test_a_subscription_to_100000_topics(tmp_path: Path) -> None:
    """40,000 names (one of them real) are taken: the member gets the real topic's partitions and
    the group remembers only topics that exist. 100,000 make a member record larger than
    ``__consumer_offsets`` takes (1 MiB): UNKNOWN_SERVER_ERROR, as Kafka answers a too large
    write, nothing written, and the group as it was before."""

    def names(n: int) -> list[str]:
        return [f"missing-{i:06d}" for i in range(n)] + ["t"]

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            r = await call(h, join(names=names(40_000)), 0)
            assert r.error_code == NONE and assigned(r) == {T_ID: [0, 1, 2]}
            cg = gc.group_manager.consumer_groups["g"]
            assert set(cg.subscription_metadata) == {"t"}
            assert len(cg.members[r.member_id].subscribed_topic_names) == 40_001
            log = h.replicas.get(OFFSETS_TOPIC, 0)
            assert log is not None
            end = log.log.log_end_offset
            big = await call(h, join(names=names(100_000)), 0)
            assert big.error_code == ErrorCode.UNKNOWN_SERVER_ERROR
            assert log.log.log_end_offset == end
            again = await call(h, beat(r.member_id, r.member_epoch), 0)
            assert again.error_code == NONE and again.member_epoch == r.member_epoch
            reloaded = gc.group_manager.consumer_groups["g"]
            assert list(reloaded.members) == [r.member_id]

    run(scenario())


def test_heartbeat_flood_writes_nothing_and_changes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a = await joined(h)
            cg = gc.group_manager.consumer_groups["g"]
            log = h.replicas.get(OFFSETS_TOPIC, 0)
            assert log is not None
            end = log.log.log_end_offset
            for _ in range(2_000):
                r = await call(h, beat(a.member_id, a.member_epoch, {T_ID: [0, 1, 2]}), 0)
                assert r.error_code == NONE and r.member_epoch == a.member_epoch
            assert log.log.log_end_offset == end  # a heartbeat that changes nothing persists nothing
            assert cg.group_epoch == a.member_epoch and not cg.records

    run(scenario())


def test_a_member_claiming_partitions_it_does_not_own_gets_nothing_more(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            a = await joined(h)
            b = await call(h, join(), 0)
            # a gives up what the target takes from it; b then claims all three as its own.
            r = await call(h, beat(a.member_id, a.member_epoch, {T_ID: [0, 1, 2]}), 0)
            keep = assigned(r) or {T_ID: [0, 1, 2]}
            await call(h, beat(a.member_id, r.member_epoch, keep), 0)
            claim = await call(h, beat(b.member_id, b.member_epoch, {T_ID: [0, 1, 2]}), 0)
            assert claim.error_code == NONE
            cg = gc.group_manager.consumer_groups["g"]
            mine = set(cg.members[b.member_id].assigned.get(T_ID, frozenset()))
            theirs = set(cg.members[a.member_id].assigned.get(T_ID, frozenset()))
            assert not mine & theirs and mine | theirs <= {0, 1, 2}
            assert all(cg.owners[(T_ID, p)] == a.member_id for p in theirs)

    run(scenario())
