"""The TCP consumer (shardbroker.client.consumer): Kafka's range assignor, and against the fake
broker: fetch positions (whole batches, control batches, max_records), topic ids for Fetch v13+,
OFFSET_OUT_OF_RANGE resets, and the group protocol (JoinGroup's MEMBER_ID_REQUIRED round, the
leader's assignment, committed start offsets, commit with the generation, LeaveGroup). Opens
loopback sockets and the fake broker's threads."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.connection import BrokerUnreachable
from shardbroker.client.consumer import ConsumerRecord, TcpConsumer, range_assign
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.consumer_protocol import (
    decode_consumer_assignment,
    decode_consumer_subscription,
)
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.unit.kafka_fake import FakeBroker, closed_port, coordinator_at, running_fake

F = m.FetchResponse
TOPIC_ID = uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

# -- range assignor --------------------------------------------------------------------------------


def test_range_assign_splits_each_topic_in_member_order() -> None:
    plan = range_assign({"m2": ["t"], "m1": ["t"]}, {"t": 3})
    assert plan == {"m1": {"t": [0, 1]}, "m2": {"t": [2]}}
    plan = range_assign({"a": ["t", "u"], "b": ["t", "u"], "c": ["u"]}, {"t": 4, "u": 5})
    assert plan == {"a": {"t": [0, 1], "u": [0, 1]}, "b": {"t": [2, 3], "u": [2, 3]}, "c": {"u": [4]}}


def test_range_assign_edge_cases() -> None:
    # more members than partitions: the last get nothing, but still an entry
    assert range_assign({"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 2}) == {
        "a": {"t": [0]},
        "b": {"t": [1]},
        "c": {},
    }
    # unknown topics are left out
    assert range_assign({"a": ["t", "gone"]}, {"t": 1}) == {"a": {"t": [0]}}
    # static members (group.instance.id) come first, by instance id
    plan = range_assign({"a": ["t"], "b": ["t"], "c": ["t"]}, {"t": 3}, {"c": "i-1", "b": "i-2", "a": None})
    assert plan == {"c": {"t": [0]}, "b": {"t": [1]}, "a": {"t": [2]}}


# -- fetching --------------------------------------------------------------------------------------


def batch(base: int, values: list[bytes], key: bytes | None = None) -> bytes:
    b = RecordBatchBuilder(base_offset=base)
    for i, v in enumerate(values):
        b.append(v, key, 1000 + base + i, [("i", b"%d" % (base + i))])
    return b.build()


class FetchFake:
    """Fetch answers from a fixed log per partition: every batch that ends after the offset."""

    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        fake.versions.update({1: (4, 16)})
        fake.topics = {"t": 2}
        self.logs: dict[int, list[tuple[int, int, bytes]]] = {0: [], 1: []}  # (base, next, bytes)
        self.errors: dict[int, int] = {}
        fake.handlers[1] = self.fetch
        fake.handlers[2] = self.list_offsets
        plain_metadata = fake.handlers[3]

        def metadata(version: int, request: Any) -> Message | None:
            response = plain_metadata(version, request)
            for t in getattr(response, "topics", []):
                t.topic_id = TOPIC_ID
            return response

        fake.handlers[3] = metadata

    def fetch(self, version: int, request: Any) -> Message:
        out = []
        for t in request.topics:
            parts = []
            for p in t.partitions:
                code = self.errors.pop(p.partition, 0)
                blob = b"".join(data for base, nxt, data in self.logs[p.partition] if nxt > p.fetch_offset)
                parts.append(
                    F.PartitionData(partition_index=p.partition, error_code=code, records=blob or None)
                )
            out.append(F.FetchableTopicResponse(topic=t.topic, topic_id=t.topic_id, partitions=parts))
        return F(responses=out)

    def list_offsets(self, version: int, request: Any) -> Message:
        R = m.ListOffsetsResponse
        topics = []
        for t in request.topics:
            parts = []
            for p in t.partitions:
                log = self.logs[p.partition_index]
                offset = 0 if p.timestamp == EARLIEST else (log[-1][1] if log else 0)
                parts.append(R.ListOffsetsPartitionResponse(partition_index=p.partition_index, offset=offset))
            topics.append(R.ListOffsetsTopicResponse(name=t.name, partitions=parts))
        return R(topics=topics)

    def add(self, partition: int, data: bytes, count: int) -> None:
        log = self.logs[partition]
        base = log[-1][1] if log else 0
        log.append((base, base + count, data))


@pytest.fixture
def ffake() -> Iterator[FetchFake]:
    with running_fake() as broker:
        yield FetchFake(broker)


def values(records: list[ConsumerRecord]) -> list[bytes | None]:
    return [r.value for r in records]


def test_fetch_skips_records_before_the_position_and_control_batches(ffake: FetchFake) -> None:
    ffake.add(0, batch(0, [b"a", b"b", b"c"], key=b"k"), 3)
    ffake.add(
        0,
        build_control_batch(
            ControlRecordType.COMMIT, producer_id=1, producer_epoch=0, coordinator_epoch=0, base_offset=3
        ),
        1,
    )
    ffake.add(0, batch(4, [b"e"]), 1)
    with TcpConsumer(ffake.fake.address, timeout=5) as consumer:
        consumer.assign({("t", 0): 1})
        got = consumer.poll(2)
        assert values(got) == [b"b", b"c", b"e"]
        assert [r.offset for r in got] == [1, 2, 4]
        assert got[0] == ConsumerRecord("t", 0, 1, 1001, 0, b"k", b"b", (("i", b"1"),))
        assert consumer.positions == {("t", 0): 5}


def test_max_records_moves_the_position_only_past_what_was_returned(ffake: FetchFake) -> None:
    ffake.add(1, batch(0, [b"a", b"b", b"c", b"d"]), 4)
    ffake.add(
        1,
        build_control_batch(
            ControlRecordType.ABORT, producer_id=1, producer_epoch=0, coordinator_epoch=0, base_offset=4
        ),
        1,
    )
    with TcpConsumer(ffake.fake.address, timeout=5) as consumer:
        consumer.assign({("t", 1): EARLIEST})
        assert values(consumer.poll(2, max_records=3)) == [b"a", b"b", b"c"]
        assert consumer.positions == {("t", 1): 3}
        fetches = len(ffake.fake.apis(1))
        assert values(consumer.poll(2, max_records=3)) == [b"d"]
        assert len(ffake.fake.apis(1)) == fetches  # served from what was already fetched
        assert consumer.positions == {("t", 1): 5}  # past the control batch once all is returned


@pytest.mark.parametrize("fetch_max", [12, 16])
def test_fetch_by_name_or_topic_id(ffake: FetchFake, fetch_max: int) -> None:
    ffake.fake.versions[1] = (4, fetch_max)
    ffake.add(0, batch(0, [b"x"]), 1)
    with TcpConsumer(ffake.fake.address, timeout=5) as consumer:
        consumer.assign({("t", 0): 0})
        assert values(consumer.poll(2)) == [b"x"]
    version, request = ffake.fake.apis(1)[0]
    assert version == fetch_max
    assert request.session_id == 0 and request.session_epoch == -1 and request.isolation_level == 0
    if fetch_max >= 13:
        assert request.topics[0].topic_id == TOPIC_ID
    else:
        assert request.topics[0].topic == "t"


def test_offset_out_of_range_resets(ffake: FetchFake) -> None:
    ffake.add(0, batch(0, [b"a", b"b"]), 2)
    ffake.errors[0] = ErrorCode.OFFSET_OUT_OF_RANGE
    with TcpConsumer(ffake.fake.address, timeout=5, auto_offset_reset="earliest") as consumer:
        consumer.assign({("t", 0): 7})
        got: list[ConsumerRecord] = []
        while len(got) < 2:
            got += consumer.poll(2)
        assert values(got) == [b"a", b"b"]
    _, request = ffake.fake.apis(2)[0]
    assert request.topics[0].partitions[0].timestamp == EARLIEST


def test_assign_latest_and_unknown_partition(ffake: FetchFake) -> None:
    ffake.add(0, batch(0, [b"a", b"b"]), 2)
    with TcpConsumer(ffake.fake.address, timeout=5) as consumer:
        consumer.assign({("t", 0): LATEST})
        assert consumer.positions == {("t", 0): 2}
        assert consumer.poll(0.1) == []
        with pytest.raises(Exception, match="UNKNOWN_TOPIC_OR_PARTITION: topic 't' has no partition 5"):
            consumer.assign({("t", 5): 0})
        with pytest.raises(Exception, match="topic 'nope' does not exist"):
            consumer.assign({("nope", 0): 0})


# -- groups ----------------------------------------------------------------------------------------


class GroupFake(FetchFake):
    """A coordinator for one member: MEMBER_ID_REQUIRED first (JoinGroup v4+), then this member
    leads generation 7; SyncGroup hands back what the leader assigned it."""

    def __init__(self, fake: FakeBroker) -> None:
        super().__init__(fake)
        fake.versions.update({11: (0, 9), 12: (0, 4), 13: (0, 5), 14: (0, 5)})
        fake.handlers.update(
            {
                10: coordinator_at(fake),
                11: self.join,
                14: self.sync,
                12: lambda v, r: m.HeartbeatResponse(),
                13: lambda v, r: m.LeaveGroupResponse(),
                9: self.offset_fetch,
                8: self.offset_commit,
            }
        )
        self.committed: dict[tuple[str, int], int] = {("t", 1): 1}
        self.commits: list[Any] = []

    def join(self, version: int, request: Any) -> Message:
        if not request.member_id:
            return m.JoinGroupResponse(error_code=ErrorCode.MEMBER_ID_REQUIRED, member_id="member-1")
        member = m.JoinGroupResponse.JoinGroupResponseMember(
            member_id=request.member_id, metadata=request.protocols[0].metadata
        )
        return m.JoinGroupResponse(
            generation_id=7,
            protocol_type="consumer",
            protocol_name=request.protocols[0].name,
            leader=request.member_id,
            member_id=request.member_id,
            members=[member],
        )

    def sync(self, version: int, request: Any) -> Message:
        mine = next(a.assignment for a in request.assignments if a.member_id == request.member_id)
        return m.SyncGroupResponse(assignment=mine)

    def offset_fetch(self, version: int, request: Any) -> Message:
        G = m.OffsetFetchResponse
        group = request.groups[0]
        topics = [
            G.OffsetFetchResponseTopics(
                name=t.name,
                partitions=[
                    G.OffsetFetchResponsePartitions(
                        partition_index=p, committed_offset=self.committed.get((t.name, p), -1)
                    )
                    for p in t.partition_indexes
                ],
            )
            for t in group.topics
        ]
        return G(groups=[G.OffsetFetchResponseGroup(group_id=group.group_id, topics=topics)])

    def offset_commit(self, version: int, request: Any) -> Message:
        self.commits.append(request)
        C = m.OffsetCommitResponse
        return C(
            topics=[
                C.OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=[
                        C.OffsetCommitResponsePartition(partition_index=p.partition_index)
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )


def test_group_member_joins_consumes_commits_and_leaves() -> None:
    with running_fake() as broker:
        g = GroupFake(broker)
        g.add(0, batch(0, [b"p0-a", b"p0-b"]), 2)
        g.add(1, batch(0, [b"p1-a", b"p1-b", b"p1-c"]), 3)
        consumer = TcpConsumer(broker.address, group_id="g", auto_offset_reset="earliest", timeout=5)
        consumer.subscribe(["t"])
        got: list[ConsumerRecord] = []
        while len(got) < 4:
            got += consumer.poll(2)
        consumer.close()
    assert sorted(values(got)) == sorted([b"p0-a", b"p0-b", b"p1-b", b"p1-c"])  # p1 from its commit
    joins = [r for _, r in broker.apis(11)]
    assert [j.member_id for j in joins] == ["", "member-1"]
    assert joins[0].protocol_type == "consumer" and joins[0].protocols[0].name == "range"
    assert decode_consumer_subscription(joins[0].protocols[0].metadata).topics == ["t"]
    sync = broker.apis(14)[0][1]
    assert sync.generation_id == 7 and sync.member_id == "member-1"
    assert decode_consumer_assignment(sync.assignments[0].assignment).partitions == {"t": [0, 1]}
    commit = g.commits[-1]
    assert commit.generation_id_or_member_epoch == 7 and commit.member_id == "member-1"
    assert {(t.name, p.partition_index): p.committed_offset for t in commit.topics for p in t.partitions} == {
        ("t", 0): 2,
        ("t", 1): 3,
    }
    leave_version, leave = broker.apis(13)[0]
    assert leave_version == 5 and [mm.member_id for mm in leave.members] == ["member-1"]


def test_unreachable_leader_is_looked_up_again(ffake: FetchFake) -> None:
    """A leader that cannot be reached (a restarting worker) sends the consumer back to Metadata;
    once the partition is led by a reachable node, records come."""
    ffake.add(0, batch(0, [b"a"]), 1)
    dead = closed_port()
    answered = ffake.fake.handlers[3]
    calls = {"n": 0}

    def metadata(version: int, request: Any) -> Message | None:
        response: Any = answered(version, request)
        calls["n"] += 1
        if calls["n"] <= 2:  # the first answers name a node nobody listens on as the leader
            response.brokers.append(
                m.MetadataResponse.MetadataResponseBroker(node_id=1, host="127.0.0.1", port=dead)
            )
            for t in response.topics:
                for part in t.partitions:
                    part.leader_id = 1
        return response

    ffake.fake.handlers[3] = metadata
    with TcpConsumer(ffake.fake.address, timeout=5) as consumer:
        consumer.assign({("t", 0): 0})
        got: list[ConsumerRecord] = []
        while not got:
            got = consumer.poll(2)
    assert values(got) == [b"a"] and calls["n"] > 2


def test_unreachable_leader_gives_up_after_the_timeout(ffake: FetchFake) -> None:
    dead = closed_port()
    answered = ffake.fake.handlers[3]

    def metadata(version: int, request: Any) -> Message | None:
        response: Any = answered(version, request)
        response.brokers.append(
            m.MetadataResponse.MetadataResponseBroker(node_id=1, host="127.0.0.1", port=dead)
        )
        for t in response.topics:
            for part in t.partitions:
                part.leader_id = 1
        return response

    ffake.fake.handlers[3] = metadata
    with TcpConsumer(ffake.fake.address, timeout=0.5) as consumer:
        consumer.assign({("t", 0): 0})
        with pytest.raises(BrokerUnreachable, match=f"127.0.0.1:{dead}"):
            for _ in range(100):
                consumer.poll(0.2)
