"""The data-plane and topic-admin handlers with a StandardAuthorizer in force: each of Kafka's
checks (KafkaApis / ControllerApis) for Produce, Fetch, ListOffsets, OffsetForLeaderEpoch,
DeleteRecords, InitProducerId, Metadata, CreateTopics, DeleteTopics, CreatePartitions and
FindCoordinator, each test failing if its check is removed.

Data-plane handlers run over a real ReplicaManager (tests/unit/replica_fakes.py) whose image
carries the ACLs; the topic-admin ones over the controller's own state machine
(tests/unit/test_handlers_admin.py), the ACLs created with its ``create_acls`` op.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.auth_helper import NOT_REQUESTED
from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.handlers.delete_records import handle_delete_records
from shardbroker.broker.handlers.fetch import handle_fetch
from shardbroker.broker.handlers.init_producer_id import handle_init_producer_id
from shardbroker.broker.handlers.list_offsets import handle_list_offsets
from shardbroker.broker.handlers.offset_for_leader_epoch import handle_offset_for_leader_epoch
from shardbroker.broker.handlers.produce import handle_produce
from shardbroker.broker.session import ConnectionSession
from shardbroker.broker.worker_state import WorkerState
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.security.acl import (
    CLUSTER_NAME,
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from tests.unit.replica_fakes import Harness, batch, image, topic
from tests.unit.test_handlers_admin import call, channel, creatable, make_state, metadata_request, run

AUTHORIZER = {"authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer"}
ALICE = ConnectionSession(principal=KafkaPrincipal.user("alice"), client_host="10.0.0.1")
TAF = ErrorCode.TOPIC_AUTHORIZATION_FAILED

Op = AclOperation
T = ResourceType


def allow(
    op: AclOperation,
    rtype: ResourceType = T.TOPIC,
    name: str = "*",
    pattern: PatternType = PatternType.LITERAL,
    permission: AclPermissionType = AclPermissionType.ALLOW,
) -> AclBinding:
    return AclBinding(
        ResourcePattern(rtype, name, pattern), AccessControlEntry("User:alice", "*", op, permission)
    )


def deny(op: AclOperation, rtype: ResourceType = T.TOPIC, name: str = "*") -> AclBinding:
    return allow(op, rtype, name, permission=AclPermissionType.DENY)


class Recorder:
    """Stands for the worker's SecurityAudit: the denials (operation, resource type, name)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def denied(
        self, principal: str, host: str, op: AclOperation, rtype: ResourceType, name: str, api: str
    ) -> None:
        self.seen.append((op.name, rtype.name, name))


def audited(state: WorkerState) -> list[tuple[str, str, str]]:
    assert isinstance(state.audit, Recorder)
    return state.audit.seen


# -- data plane: a ReplicaManager whose image carries the ACLs -----------------------------------


class Data:
    """A started Harness over topics ``t`` and ``u`` (one partition each, led here) with ACLs."""

    def __init__(self, harness: Harness) -> None:
        self.h = harness

    def ctx(self, api_key: int, version: int, session: ConnectionSession = ALICE) -> RequestContext:
        return dataclasses.replace(self.h.ctx(api_key, version), session=session)

    def hwm(self, name: str) -> int:
        p = self.h.replicas.get(name, 0)
        assert p is not None
        return p.high_watermark


def data_plane(tmp_path: Path, *acls: AclBinding) -> Harness:
    img = dataclasses.replace(image(topic("t"), topic("u")), acls=acls)
    harness = Harness(tmp_path, img, props=AUTHORIZER)
    harness.state.audit = Recorder()  # type: ignore[assignment]
    return harness


def produce(*names: str, acks: int = 1, records: Any = None, tid: str | None = None) -> m.ProduceRequest:
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=5000,
        transactional_id=tid,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=n,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=records or batch())],
            )
            for n in names
        ],
    )


def codes(response: Any, topics: str, partitions: str) -> dict[str, list[int]]:
    """{topic name: [error code per partition]} of a per-topic response."""
    out: dict[str, list[int]] = {}
    for t in getattr(response, topics):
        key = getattr(t, "name", None) or getattr(t, "topic", None) or str(t.topic_id)
        out[key] = [p.error_code for p in getattr(t, partitions)]
    return out


def test_produce_needs_write_on_each_topic_checked_before_existence(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.WRITE, name="t")) as h:
            d = Data(h)
            resp = await handle_produce(d.ctx(0, 9), produce("t", "u", "missing"))
            assert resp is not None
            assert codes(resp, "responses", "partition_responses") == {"t": [0], "u": [TAF], "missing": [TAF]}
            assert (d.hwm("t"), d.hwm("u")) == (3, 0)
            assert ("WRITE", "TOPIC", "missing") in audited(h.state)
            # the same request from another principal (anonymous): no ACL, no write
            resp = await handle_produce(d.ctx(0, 9, ConnectionSession()), produce("t"))
            assert resp is not None and codes(resp, "responses", "partition_responses") == {"t": [TAF]}

    run(main())


def test_produce_acks_0_refused_batches_are_dropped(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.WRITE, name="t")) as h:
            d = Data(h)
            assert await handle_produce(d.ctx(0, 9), produce("t", "u", acks=0)) is None
            assert (d.hwm("t"), d.hwm("u")) == (3, 0)

    run(main())


def transactional_batch() -> bytearray:
    builder = RecordBatchBuilder(producer_id=7, producer_epoch=0, base_sequence=0, is_transactional=True)
    builder.append(b"v")
    return bytearray(builder.build())


@pytest.mark.parametrize("tid", [None, "tx"])
def test_produce_transactional_records_need_write_on_the_transactional_id(
    tmp_path: Path, tid: str | None
) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.WRITE, name="t")) as h:
            d = Data(h)
            resp = await handle_produce(
                d.ctx(0, 9), produce("t", "u", records=transactional_batch(), tid=tid)
            )
            assert resp is not None
            code = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            assert codes(resp, "responses", "partition_responses") == {"t": [code], "u": [code]}
            assert all(p.error_message for t in resp.responses for p in t.partition_responses)
            # acks=0: nothing answered, nothing appended
            assert (
                await handle_produce(d.ctx(0, 9), produce("t", acks=0, records=transactional_batch())) is None
            )
            assert d.hwm("t") == 0

    run(main())


def test_produce_transactional_records_with_write_on_the_transactional_id_reach_the_log(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        async with data_plane(
            tmp_path, allow(Op.WRITE, name="t"), allow(Op.WRITE, T.TRANSACTIONAL_ID, "tx")
        ) as h:
            resp = await handle_produce(
                Data(h).ctx(0, 9), produce("t", records=transactional_batch(), tid="tx")
            )
            assert resp is not None  # past authorization, the log takes the transactional batch
            assert codes(resp, "responses", "partition_responses") == {"t": [ErrorCode.NONE]}
            assert Data(h).hwm("t") > 0

    run(main())


def fetch(*names: str, replica_id: int = -1, ids: tuple[uuid.UUID, ...] = ()) -> m.FetchRequest:
    """A Fetch of partition 0 of each topic, by name (v12-) or by id (v13+: ``ids`` given)."""

    def part() -> list[m.FetchRequest.FetchPartition]:
        return [m.FetchRequest.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 16)]

    topics = [m.FetchRequest.FetchTopic(topic=n, partitions=part()) for n in names]
    topics += [m.FetchRequest.FetchTopic(topic_id=i, partitions=part()) for i in ids]
    return m.FetchRequest(
        replica_id=replica_id,
        replica_state=m.FetchRequest.ReplicaState(replica_id=replica_id),
        max_wait_ms=0,
        min_bytes=1,
        topics=topics,
    )


def test_fetch_needs_read_on_each_topic(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.READ, name="t"), allow(Op.WRITE, name="u")) as h:
            d = Data(h)
            h.replicas.append("t", 0, batch())
            h.replicas.append("u", 0, batch())
            resp = await handle_fetch(d.ctx(1, 12), fetch("t", "u", "missing"))
            assert codes(resp, "responses", "partitions") == {"t": [0], "u": [TAF], "missing": [TAF]}
            got = {t.topic: t.partitions[0] for t in resp.responses}
            assert got["t"].records != b"" and got["u"].records == b""

    run(main())


def test_fetch_by_topic_id_unknown_id_before_authorization(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.READ, name="t")) as h:
            d = Data(h)
            t_id, u_id, unknown = topic("t").topic_id, topic("u").topic_id, uuid.uuid4()
            resp = await handle_fetch(d.ctx(1, 13), fetch(ids=(t_id, u_id, unknown)))
            assert {t.topic_id: t.partitions[0].error_code for t in resp.responses} == {
                t_id: 0,
                u_id: TAF,
                unknown: ErrorCode.UNKNOWN_TOPIC_ID,
            }

    run(main())


@pytest.mark.parametrize("version", [12, 15])
def test_follower_fetch_needs_cluster_action(tmp_path: Path, version: int) -> None:
    """``replica_id`` >= 0 (the field up to v14, ``replica_state`` from v15)."""

    def req(*names: str) -> m.FetchRequest:
        if version < 13:
            return fetch(*names, replica_id=1)
        return fetch(ids=tuple(topic(n).topic_id for n in names), replica_id=1)

    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.READ)) as h:
            resp = await handle_fetch(Data(h).ctx(1, version), req("t", "u"))
            assert [t.partitions[0].error_code for t in resp.responses] == [TAF, TAF]
        # CLUSTER_ACTION alone (no READ) lets a replica fetch
        async with data_plane(tmp_path / "2", allow(Op.CLUSTER_ACTION, T.CLUSTER, CLUSTER_NAME)) as h2:
            resp = await handle_fetch(Data(h2).ctx(1, version), req("t"))
            assert [t.partitions[0].error_code for t in resp.responses] == [0]

    run(main())


def list_offsets(*names: str) -> m.ListOffsetsRequest:
    P = m.ListOffsetsRequest.ListOffsetsPartition
    return m.ListOffsetsRequest(
        topics=[
            m.ListOffsetsRequest.ListOffsetsTopic(name=n, partitions=[P(partition_index=0, timestamp=-1)])
            for n in names
        ]
    )


def test_list_offsets_needs_describe(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.READ, name="t")) as h:  # READ implies DESCRIBE
            resp = await handle_list_offsets(Data(h).ctx(2, 7), list_offsets("t", "u", "missing"))
            assert codes(resp, "topics", "partitions") == {"t": [0], "u": [TAF], "missing": [TAF]}
            (u,) = [t for t in resp.topics if t.name == "u"]
            assert (u.partitions[0].offset, u.partitions[0].timestamp) == (-1, -1)

    run(main())


def epochs(*names: str) -> m.OffsetForLeaderEpochRequest:
    P = m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition
    return m.OffsetForLeaderEpochRequest(
        topics=[
            m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                topic=n, partitions=[P(partition=0, leader_epoch=0)]
            )
            for n in names
        ]
    )


def test_offset_for_leader_epoch_needs_describe_or_cluster_action(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.DESCRIBE, name="t")) as h:
            resp = await handle_offset_for_leader_epoch(Data(h).ctx(23, 4), epochs("t", "u"))
            assert codes(resp, "topics", "partitions") == {"t": [0], "u": [TAF]}
        async with data_plane(tmp_path / "2", allow(Op.CLUSTER_ACTION, T.CLUSTER, CLUSTER_NAME)) as h2:
            resp = await handle_offset_for_leader_epoch(Data(h2).ctx(23, 4), epochs("t", "u"))
            assert codes(resp, "topics", "partitions") == {"t": [0], "u": [0]}

    run(main())


def test_delete_records_needs_delete(tmp_path: Path) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, allow(Op.DELETE, name="t"), allow(Op.ALTER, name="u")) as h:
            h.replicas.append("t", 0, batch())
            h.replicas.append("u", 0, batch())
            P = m.DeleteRecordsRequest.DeleteRecordsPartition
            req = m.DeleteRecordsRequest(
                topics=[
                    m.DeleteRecordsRequest.DeleteRecordsTopic(
                        name=n, partitions=[P(partition_index=0, offset=2)]
                    )
                    for n in ("t", "u", "missing")
                ]
            )
            resp = await handle_delete_records(Data(h).ctx(21, 2), req)
            assert codes(resp, "topics", "partitions") == {"t": [0], "u": [TAF], "missing": [TAF]}
            starts = {n: h.replicas.get(n, 0).log.log_start_offset for n in ("t", "u")}  # type: ignore[union-attr]
            assert starts == {"t": 2, "u": 0}

    run(main())


@pytest.mark.parametrize(
    ("acls", "code"),
    [
        ((), ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
        ((deny(Op.WRITE, name="t"), allow(Op.WRITE, name="t")), ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
        ((allow(Op.WRITE, name="t"),), 0),  # WRITE on some topic (authorize_by_resource_type)
        ((allow(Op.WRITE, name="t", pattern=PatternType.PREFIXED),), 0),
        ((allow(Op.IDEMPOTENT_WRITE, T.CLUSTER, CLUSTER_NAME),), 0),
        ((allow(Op.READ),), ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
    ],
)
def test_init_producer_id_idempotent(tmp_path: Path, acls: tuple[AclBinding, ...], code: ErrorCode) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, *acls) as h:
            resp = await handle_init_producer_id(
                Data(h).ctx(22, 4), m.InitProducerIdRequest(transactional_id=None)
            )
            assert resp.error_code == code
            assert (resp.producer_id >= 0) == (code == 0)
            # a KIP-360 re-initialisation is checked too
            bump = m.InitProducerIdRequest(transactional_id=None, producer_id=5, producer_epoch=1)
            assert (await handle_init_producer_id(Data(h).ctx(22, 4), bump)).error_code == code

    run(main())


@pytest.mark.parametrize(
    ("acls", "code"),
    [
        ((), ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
        (
            (allow(Op.IDEMPOTENT_WRITE, T.CLUSTER, CLUSTER_NAME),),
            ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ),
        # allowed: on to the coordinator (none in this data plane)
        ((allow(Op.WRITE, T.TRANSACTIONAL_ID, "tx"),), ErrorCode.COORDINATOR_NOT_AVAILABLE),
    ],
)
def test_init_producer_id_transactional(
    tmp_path: Path, acls: tuple[AclBinding, ...], code: ErrorCode
) -> None:
    async def main() -> None:
        async with data_plane(tmp_path, *acls) as h:
            req = m.InitProducerIdRequest(transactional_id="tx")
            assert (await handle_init_producer_id(Data(h).ctx(22, 4), req)).error_code == code

    run(main())


# -- topic admin and Metadata: the controller's state machine -----------------------------------


@pytest.fixture
def state(tmp_path: Path) -> Iterator[WorkerState]:
    s = make_state(tmp_path, **AUTHORIZER)
    s.audit = Recorder()  # type: ignore[assignment]
    create(s, "a", 2)
    create(s, "b", 1)
    yield s


def create(state: WorkerState, name: str, partitions: int) -> None:
    """A topic made by the controller directly (as the super user would)."""
    topics = [{"name": name, "num_partitions": partitions, "replication_factor": 1, "configs": {}}]
    result = run(channel(state).request("create_topics", {"topics": topics, "validate_only": False}))
    assert result["topics"][0]["error_code"] == 0, result


def grant(state: WorkerState, *acls: AclBinding) -> None:
    result = run(channel(state).request("create_acls", {"creations": [b.to_record() for b in acls]}))
    assert all(r["error_code"] == 0 for r in result["results"]), result


def ask(state: WorkerState, request: Any, version: int, session: ConnectionSession = ALICE) -> Any:
    return run(call(state, request, version, session))


def test_metadata_all_topics_lists_only_describable_ones(state: WorkerState) -> None:
    grant(state, allow(Op.WRITE, name="a"))
    assert [t.name for t in ask(state, m.MetadataRequest(topics=None), 12).topics] == ["a"]
    assert [t.name for t in ask(state, m.MetadataRequest(topics=[]), 0).topics] == ["a"]
    anonymous = ConnectionSession(principal=ANONYMOUS)
    assert ask(state, m.MetadataRequest(topics=None), 12, anonymous).topics == []
    assert audited(state) == []  # hiding is expected: not audited, as Kafka
    ask(state, metadata_request("b", auto=False), 12)
    assert audited(state) == [("DESCRIBE", "TOPIC", "b")]  # asking by name is


def test_metadata_named_topics_without_describe(state: WorkerState) -> None:
    grant(state, allow(Op.DESCRIBE, name="a"))
    a, b, missing = ask(state, metadata_request("a", "b", "missing", auto=False), 12).topics
    assert (a.error_code, len(a.partitions)) == (0, 2)
    assert (b.name, b.error_code, b.partitions, b.topic_id) == ("b", TAF, [], uuid.UUID(int=0))
    assert (missing.error_code, missing.partitions) == (TAF, [])


def test_metadata_by_topic_id_without_describe(state: WorkerState) -> None:
    grant(state, allow(Op.DESCRIBE, name="a"))
    a_id, b_id, unknown = state.image.topics["a"].topic_id, state.image.topics["b"].topic_id, uuid.uuid4()
    a, b, missing = ask(state, metadata_request(ids=(a_id, b_id, unknown)), 12).topics
    assert (a.name, a.error_code) == ("a", 0)
    assert (b.name, b.error_code, b.topic_id, b.partitions) == (None, TAF, b_id, [])
    assert (missing.error_code, missing.topic_id) == (ErrorCode.UNKNOWN_TOPIC_ID, unknown)


LNA, INVALID = ErrorCode.LEADER_NOT_AVAILABLE, ErrorCode.INVALID_TOPIC_EXCEPTION


@pytest.mark.parametrize(
    ("acls", "fresh_code", "bad_code"),
    [
        ((allow(Op.DESCRIBE),), TAF, TAF),  # the CREATE check comes before the name's validity
        ((allow(Op.DESCRIBE), allow(Op.CREATE, name="fr", pattern=PatternType.PREFIXED)), LNA, TAF),
        ((allow(Op.DESCRIBE), allow(Op.CREATE, T.CLUSTER, CLUSTER_NAME)), LNA, INVALID),
    ],
)
def test_metadata_auto_creation_needs_create(
    state: WorkerState, acls: tuple[AclBinding, ...], fresh_code: ErrorCode, bad_code: ErrorCode
) -> None:
    grant(state, *acls)

    async def scenario() -> Any:
        response = await call(state, metadata_request("fresh", "bad/name"), 12, ALICE)
        for task in list(state.background.values()):
            await task
        return response

    fresh, bad = run(scenario()).topics
    assert (fresh.error_code, bad.error_code) == (fresh_code, bad_code)
    assert ("fresh" in state.image.topics) == (fresh_code == LNA)
    assert fresh.is_internal is False


def test_metadata_authorized_operations_are_the_principals(state: WorkerState) -> None:
    grant(state, allow(Op.READ, name="a"), allow(Op.ALTER_CONFIGS, name="a"))
    req = m.MetadataRequest(
        topics=None, include_topic_authorized_operations=True, include_cluster_authorized_operations=True
    )
    response = ask(state, req, 10)
    (a,) = response.topics
    bits = {Op.READ, Op.DESCRIBE, Op.ALTER_CONFIGS, Op.DESCRIBE_CONFIGS}
    assert a.topic_authorized_operations == sum(1 << op for op in bits)
    assert response.cluster_authorized_operations == 0  # no DESCRIBE on the cluster
    grant(state, allow(Op.ALTER, T.CLUSTER, CLUSTER_NAME))
    response = ask(state, req, 10)
    assert response.cluster_authorized_operations == (1 << Op.ALTER) | (1 << Op.DESCRIBE)
    grant(state, deny(Op.DESCRIBE, T.CLUSTER, CLUSTER_NAME))  # ALTER is left, but no DESCRIBE: 0
    assert ask(state, req, 10).cluster_authorized_operations == 0
    # not asked: Kafka's Int.MinValue
    plain = ask(state, m.MetadataRequest(topics=None), 10)
    assert plain.cluster_authorized_operations == plain.topics[0].topic_authorized_operations == NOT_REQUESTED


def test_create_topics_needs_create(state: WorkerState) -> None:
    grant(
        state,
        allow(Op.CREATE, name="ok-", pattern=PatternType.PREFIXED),
        allow(Op.DESCRIBE_CONFIGS, name="ok-1"),
    )
    req = m.CreateTopicsRequest(
        topics=[creatable("ok-1"), creatable("ok-2"), creatable("no"), creatable("dup"), creatable("dup")]
    )
    results = {r.name: r for r in ask(state, req, 7).topics}
    assert results["ok-1"].error_code == results["ok-2"].error_code == 0
    assert (results["no"].error_code, results["no"].error_message) == (TAF, "Authorization failed.")
    assert results["dup"].error_code == ErrorCode.INVALID_REQUEST  # duplicates first, as Kafka
    assert {"ok-1", "ok-2"} <= set(state.image.topics) and "no" not in state.image.topics
    # configs only with DESCRIBE_CONFIGS
    assert results["ok-1"].topic_config_error_code == 0 and results["ok-1"].configs
    assert results["ok-1"].num_partitions == 1
    ok2 = results["ok-2"]
    assert (ok2.topic_config_error_code, ok2.configs, ok2.num_partitions) == (TAF, [], -1)
    # validation comes after authorization
    bad = m.CreateTopicsRequest.CreatableTopic(name="no-assign", num_partitions=-1, replication_factor=-1)
    bad.assignments = [m.CreateTopicsRequest.CreatableReplicaAssignment(partition_index=0, broker_ids=[0])]
    (r,) = ask(state, m.CreateTopicsRequest(topics=[bad]), 7).topics
    assert r.error_code == TAF


def test_create_topics_with_create_on_the_cluster(state: WorkerState) -> None:
    grant(state, allow(Op.CREATE, T.CLUSTER, CLUSTER_NAME))
    (r,) = ask(state, m.CreateTopicsRequest(topics=[creatable("any")]), 7).topics
    assert r.error_code == 0 and "any" in state.image.topics


def deletions(*items: str | uuid.UUID) -> m.DeleteTopicsRequest:
    S = m.DeleteTopicsRequest.DeleteTopicState
    return m.DeleteTopicsRequest(
        topics=[S(name=i) if isinstance(i, str) else S(name=None, topic_id=i) for i in items]
    )


def test_delete_topics_needs_delete(state: WorkerState) -> None:
    create(state, "c", 1)
    grant(state, allow(Op.DELETE, name="a"), allow(Op.DESCRIBE, name="c"))
    b_id, c_id, unknown = state.image.topics["b"].topic_id, state.image.topics["c"].topic_id, uuid.uuid4()
    a, missing, b, c, unk = ask(state, deletions("a", "missing", b_id, c_id, unknown), 6).responses
    assert (a.name, a.error_code) == ("a", 0)
    assert (missing.name, missing.error_code) == ("missing", TAF)  # before existence
    assert (b.name, b.topic_id, b.error_code) == (None, b_id, TAF)  # no DESCRIBE: no name
    assert (c.name, c.topic_id, c.error_code) == ("c", c_id, TAF)  # DESCRIBE: named
    assert (unk.topic_id, unk.error_code) == (unknown, ErrorCode.UNKNOWN_TOPIC_ID)
    assert set(state.image.topics) == {"b", "c"}
    (old,) = ask(state, m.DeleteTopicsRequest(topic_names=["b"]), 3).responses
    assert (old.name, old.error_code) == ("b", TAF)


def test_delete_topics_with_delete_on_the_cluster(state: WorkerState) -> None:
    grant(state, allow(Op.DELETE, T.CLUSTER, CLUSTER_NAME))
    (r,) = ask(state, deletions(state.image.topics["b"].topic_id), 6).responses
    assert (r.name, r.error_code) == ("b", 0)


def test_create_partitions_needs_alter(state: WorkerState) -> None:
    grant(state, allow(Op.ALTER, name="a"))
    P = m.CreatePartitionsRequest.CreatePartitionsTopic
    req = m.CreatePartitionsRequest(
        topics=[P(name="a", count=3), P(name="b", count=3), P(name="missing", count=3)], timeout_ms=5000
    )
    results = {r.name: r.error_code for r in ask(state, req, 3).results}
    assert results == {"a": 0, "b": TAF, "missing": TAF}
    assert len(state.image.topics["a"].partitions) == 3 and len(state.image.topics["b"].partitions) == 1


@pytest.mark.parametrize("version", [3, 4])
def test_find_coordinator_needs_describe_on_the_group_or_transactional_id(
    state: WorkerState, version: int
) -> None:
    grant(state, allow(Op.READ, T.GROUP, "mine"), allow(Op.DESCRIBE, T.TRANSACTIONAL_ID, "tx"))

    def find(key: str, key_type: int) -> tuple[int, str | None]:
        if version >= 4:
            (c,) = ask(
                state, m.FindCoordinatorRequest(key_type=key_type, coordinator_keys=[key]), version
            ).coordinators
            return c.error_code, c.error_message
        r = ask(state, m.FindCoordinatorRequest(key_type=key_type, key=key), version)
        return r.error_code, r.error_message

    assert find("theirs", 0) == (ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed.")
    no_tx = (ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, "Transactional Id authorization failed.")
    assert find("other-tx", 1) == no_tx
    # allowed: past the check (no coordinator in this state, no transactions here)
    assert find("mine", 0)[0] == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert find("tx", 1)[0] == ErrorCode.COORDINATOR_NOT_AVAILABLE
