"""The group API handlers over a real coordinator and logs: every answer is encoded and decoded
at the version asked, so a field a version cannot carry fails here, not in a client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shardbroker.broker.dispatch import discover
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.protocol import codec
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, image, run, topic

NONE = int(ErrorCode.NONE)
PROPS = {"offsets.topic.num.partitions": "1", "group.initial.rebalance.delay.ms": "0"}
REGISTRY = discover()


def setup(tmp_path: Path) -> tuple[Harness, GroupCoordinator]:
    img = image(topic(OFFSETS_TOPIC, 1, configs={"cleanup.policy": "compact"}), topic("t", 2))
    h = Harness(tmp_path, img, props=PROPS)
    gc = GroupCoordinator(0, h.config, h.channel, h.replicas)
    h.state.groups = gc
    return h, gc


async def call(h: Harness, request: Any, version: int) -> Any:
    """Dispatch ``request`` at ``version`` (after a codec round trip), round-trip the answer."""
    api_key = type(request).API_KEY
    request = codec.decode(type(request), codec.encode(request, version), version)
    ctx = h.ctx(api_key, version)
    ctx.peer = "127.0.0.1:5555"
    response = await REGISTRY.dispatch(ctx, request)
    assert response is not None
    return codec.decode(type(response), codec.encode(response, version), version)


def test_advertised_versions() -> None:
    want = {10: (0, 5), 11: (0, 9), 12: (0, 4), 13: (0, 5), 14: (0, 5), 8: (0, 9), 9: (0, 9)}
    want |= {15: (0, 5), 16: (0, 5), 42: (0, 2), 47: (0, 0)}
    for key, versions in want.items():
        assert REGISTRY.versions[key] == versions, key


def test_find_coordinator_forms_and_key_types(tmp_path: Path) -> None:
    async def scenario() -> None:
        h, gc = setup(tmp_path)
        async with h:
            await gc.start(None)
            r = await call(h, m.FindCoordinatorRequest(key="g"), 0)
            assert (r.error_code, r.node_id, r.host, r.port) == (NONE, 0, "127.0.0.1", 9092)
            r = await call(h, m.FindCoordinatorRequest(key_type=0, coordinator_keys=["a", "b", ""]), 4)
            assert [(c.key, c.error_code, c.node_id) for c in r.coordinators] == [
                ("a", NONE, 0),
                ("b", NONE, 0),
                ("", ErrorCode.INVALID_REQUEST, -1),
            ]
            r = await call(h, m.FindCoordinatorRequest(key="txn", key_type=1), 3)
            assert r.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE  # no transaction coordinator here
            r = await call(h, m.FindCoordinatorRequest(key="x", key_type=7), 2)
            assert r.error_code == ErrorCode.INVALID_REQUEST
            await gc.drain()

    run(scenario())


def test_find_coordinator_creates_the_topic(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, image(topic("t", 1)), props=PROPS)
        gc = GroupCoordinator(1, h.config, h.channel, h.replicas)  # not worker 0: no creation at start
        h.state.groups = gc
        asked: list[tuple[str, dict[str, Any]]] = []

        async def request(op: str, args: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
            asked.append((op, args))
            return {"topics": [{"error_code": 0}]}

        h.channel.request = request  # type: ignore[method-assign]
        async with h:
            await gc.start(None)
            r = await call(h, m.FindCoordinatorRequest(key="g"), 1)
            # The fake controller does not publish the topic: not available yet, but asked for.
            assert r.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
            ((op, args),) = asked
            (item,) = args["topics"]
            assert op == "create_topics" and item["name"] == OFFSETS_TOPIC and item["num_partitions"] == 1
            assert item["configs"]["cleanup.policy"] == "compact"
            await gc.drain()

    run(scenario())


def test_membership_and_offsets_through_the_handlers(tmp_path: Path) -> None:
    async def scenario() -> None:
        h, gc = setup(tmp_path)
        async with h:
            await gc.start(None)
            proto = [m.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x00meta")]
            join = m.JoinGroupRequest(
                group_id="g",
                session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000,
                protocol_type="consumer",
                protocols=proto,
            )
            r = await call(h, join, 4)
            assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED and r.member_id
            join.member_id = r.member_id
            r = await call(h, join, 9)
            assert (r.error_code, r.generation_id, r.leader, r.protocol_name) == (
                NONE,
                1,
                join.member_id,
                "range",
            )
            assert [(x.member_id, x.metadata) for x in r.members] == [(join.member_id, b"\x00\x00meta")]
            member = join.member_id
            s = await call(
                h,
                m.SyncGroupRequest(
                    group_id="g",
                    generation_id=1,
                    member_id=member,
                    protocol_type="consumer",
                    protocol_name="range",
                    assignments=[
                        m.SyncGroupRequest.SyncGroupRequestAssignment(member_id=member, assignment=b"A")
                    ],
                ),
                5,
            )
            assert (s.error_code, s.assignment, s.protocol_name) == (NONE, b"A", "range")
            hb = await call(h, m.HeartbeatRequest(group_id="g", generation_id=1, member_id=member), 4)
            assert hb.error_code == NONE
            hb = await call(h, m.HeartbeatRequest(group_id="g", generation_id=0, member_id=member), 0)
            assert hb.error_code == ErrorCode.ILLEGAL_GENERATION
            P = m.OffsetCommitRequest.OffsetCommitRequestPartition
            T = m.OffsetCommitRequest.OffsetCommitRequestTopic
            c = await call(
                h,
                m.OffsetCommitRequest(
                    group_id="g",
                    generation_id_or_member_epoch=1,
                    member_id=member,
                    topics=[
                        T(
                            name="t",
                            partitions=[P(partition_index=0, committed_offset=5, committed_metadata="x")],
                        ),
                        T(name="nope", partitions=[P(partition_index=0, committed_offset=1)]),
                    ],
                ),
                8,
            )
            assert [[p.error_code for p in t.partitions] for t in c.topics] == [
                [NONE],
                [ErrorCode.UNKNOWN_TOPIC_OR_PARTITION],
            ]
            stale = await call(
                h,
                m.OffsetCommitRequest(
                    group_id="g",
                    generation_id_or_member_epoch=2,
                    member_id=member,
                    topics=[T(name="t", partitions=[P(partition_index=1, committed_offset=5)])],
                ),
                2,
            )
            assert stale.topics[0].partitions[0].error_code == ErrorCode.ILLEGAL_GENERATION
            # OffsetFetch: v1 (per-partition errors), v5 (all topics), v8 (several groups).
            F = m.OffsetFetchRequest
            f = await call(
                h, F(group_id="g", topics=[F.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 1])]), 1
            )
            assert [(p.partition_index, p.committed_offset, p.metadata) for p in f.topics[0].partitions] == [
                (0, 5, "x"),
                (1, -1, ""),
            ]
            f = await call(h, F(group_id="g", topics=None), 5)
            assert f.error_code == NONE and [(t.name, len(t.partitions)) for t in f.topics] == [("t", 1)]
            f = await call(
                h,
                F(
                    groups=[
                        F.OffsetFetchRequestGroup(group_id="g", topics=None),
                        F.OffsetFetchRequestGroup(
                            group_id="other",
                            topics=[F.OffsetFetchRequestTopics(name="t", partition_indexes=[0])],
                        ),
                    ]
                ),
                8,
            )
            assert [(g.group_id, g.error_code) for g in f.groups] == [("g", NONE), ("other", NONE)]
            assert f.groups[0].topics[0].partitions[0].committed_offset == 5
            assert f.groups[1].topics[0].partitions[0].committed_offset == -1
            # ListGroups / DescribeGroups while Stable.
            lg = await call(h, m.ListGroupsRequest(states_filter=["Stable"]), 4)
            assert [(g.group_id, g.group_state, g.protocol_type) for g in lg.groups] == [
                ("g", "Stable", "consumer")
            ]
            lg = await call(h, m.ListGroupsRequest(states_filter=["Empty"]), 4)
            assert lg.groups == []
            lg = await call(h, m.ListGroupsRequest(types_filter=["consumer"]), 5)
            assert lg.groups == []  # every group here is "classic"
            dg = await call(
                h, m.DescribeGroupsRequest(groups=["g", "unknown"], include_authorized_operations=True), 5
            )
            described, unknown = dg.groups
            assert (described.group_state, described.protocol_data) == ("Stable", "range")
            (mem,) = described.members
            assert (mem.member_id, mem.member_assignment, mem.client_host) == (member, b"A", "/127.0.0.1")
            assert (unknown.error_code, unknown.group_state) == (NONE, "Dead")
            # Deleting a live group fails; OffsetDelete of a subscribed-to topic too.
            dl = await call(h, m.DeleteGroupsRequest(groups_names=["g"]), 2)
            assert dl.results[0].error_code == ErrorCode.NON_EMPTY_GROUP
            OD = m.OffsetDeleteRequest
            od = await call(
                h,
                OD(
                    group_id="g",
                    topics=[
                        OD.OffsetDeleteRequestTopic(name="t", partitions=[OD.OffsetDeleteRequestPartition()])
                    ],
                ),
                0,
            )
            assert od.error_code == NONE
            assert od.topics[0].partitions[0].error_code == ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC  # unparseable
            # LeaveGroup v3+ with several members; then the group is Empty and can go.
            lv = await call(
                h,
                m.LeaveGroupRequest(
                    group_id="g",
                    members=[
                        m.LeaveGroupRequest.MemberIdentity(member_id=member),
                        m.LeaveGroupRequest.MemberIdentity(member_id="stranger"),
                    ],
                ),
                5,
            )
            assert lv.error_code == NONE
            assert [x.error_code for x in lv.members] == [NONE, ErrorCode.UNKNOWN_MEMBER_ID]
            lv = await call(h, m.LeaveGroupRequest(group_id="g", member_id=member), 0)
            assert lv.error_code == ErrorCode.UNKNOWN_MEMBER_ID
            od = await call(
                h,
                OD(
                    group_id="g",
                    topics=[
                        OD.OffsetDeleteRequestTopic(name="t", partitions=[OD.OffsetDeleteRequestPartition()])
                    ],
                ),
                0,
            )
            assert od.topics[0].partitions[0].error_code == NONE
            dl = await call(h, m.DeleteGroupsRequest(groups_names=["g", "g"]), 0)
            assert [r.error_code for r in dl.results] == [NONE, ErrorCode.GROUP_ID_NOT_FOUND]
            await gc.drain()

    run(scenario())


def test_group_apis_without_a_coordinator(tmp_path: Path) -> None:
    async def scenario() -> None:
        h = Harness(tmp_path, image(topic("t", 1)))
        async with h:
            r = await call(h, m.HeartbeatRequest(group_id="g", member_id="m"), 1)
            assert r.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
            f = await call(h, m.FindCoordinatorRequest(key="g"), 1)
            assert f.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE

    run(scenario())
