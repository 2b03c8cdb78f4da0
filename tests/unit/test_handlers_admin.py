"""Control-plane handlers against a fake ControllerChannel and real MetadataImages: every error path.

The fake channel answers ops with the controller's own pure state machine
(``controller_state.handle``), so the answers have the real shape and codes, and it applies the
resulting image before answering, as the real channel does (every worker acks first).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar, cast

import pytest

from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import RequestContext, discover
from shardbroker.broker.session import ConnectionSession
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import BROKER_CONFIGS, NUM_PARTITIONS
from shardbroker.config.config_def import UpdateMode
from shardbroker.control import controller_state
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message, encode
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID

T = TypeVar("T")

BROKERS = (BrokerEndpoint(0, "127.0.0.1", 9092), BrokerEndpoint(1, "127.0.0.1", 9093))
REGISTRY = discover()


class FakeChannel:
    """The ControllerChannel surface handlers use: ``image`` and ``request``."""

    def __init__(self, config: BrokerConfig) -> None:
        self.state = controller_state.ControllerState()
        self.ctx = controller_state.OpContext(
            workers=len(BROKERS), num_partitions=config.get(NUM_PARTITIONS), log_defaults=config.log_defaults
        )
        self.image = self.state.image("test-cluster", BROKERS)
        self.requests: list[tuple[str, dict[str, Any], float]] = []
        self.fail: Exception | None = None
        self.answer: dict[str, Any] | None = None

    def subscribe(self, callback: Callable[[MetadataImage, MetadataImage], Awaitable[None]]) -> None:
        pass

    async def request(self, op: str, args: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self.requests.append((op, args, timeout))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer
        outcome = controller_state.handle(self.state, op, args, self.ctx)
        self.state = outcome.state
        self.image = self.state.image("test-cluster", BROKERS)
        return outcome.result


def make_state(tmp_path: Path, **props: str) -> WorkerState:
    config = BrokerConfig.from_properties({"log.dirs": str(tmp_path), "workers": "2", **props})
    return WorkerState(
        node_id=0, config=config, channel=cast(Any, FakeChannel(config)), replicas=cast(Any, None)
    )


def channel(state: WorkerState) -> FakeChannel:
    return cast(FakeChannel, state.channel)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


async def call(
    state: WorkerState, request: Message, version: int, session: ConnectionSession | None = None
) -> Any:
    """Dispatch like a connection does (on ``session``'s listener if given), and check the
    response encodes at that version."""
    ctx = RequestContext(
        api_key=request.API_KEY,
        api_version=version,
        correlation_id=1,
        client_id="test",
        worker=state,
        registry=REGISTRY,
        session=session or ConnectionSession(),
    )
    response = await REGISTRY.dispatch(ctx, request)
    assert response is not None
    encode(response, version)
    return response


def call_sync(state: WorkerState, request: Message, version: int) -> Any:
    return run(call(state, request, version))


def create(state: WorkerState, name: str, partitions: int = 3, **configs: str) -> None:
    req = m.CreateTopicsRequest(
        topics=[
            m.CreateTopicsRequest.CreatableTopic(
                name=name,
                num_partitions=partitions,
                replication_factor=1,
                configs=[
                    m.CreateTopicsRequest.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()
                ],
            )
        ]
    )
    (result,) = call_sync(state, req, 7).topics
    assert result.error_code == 0, result


def metadata_request(
    *names: str | None, ids: tuple[uuid.UUID, ...] = (), auto: bool = True
) -> m.MetadataRequest:
    topics = [m.MetadataRequest.MetadataRequestTopic(name=n) for n in names]
    topics += [m.MetadataRequest.MetadataRequestTopic(name=None, topic_id=i) for i in ids]
    return m.MetadataRequest(topics=topics, allow_auto_topic_creation=auto)


# -- ApiVersions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(0, 5))
def test_api_versions_lists_the_registry(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    req = m.ApiVersionsRequest(client_software_name="test-client", client_software_version="1.0.0")
    response = call_sync(state, req, version)
    assert response.error_code == 0
    assert {k.api_key: (k.min_version, k.max_version) for k in response.api_keys} == REGISTRY.versions


def test_api_versions_refuses_bad_software_names(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    req = m.ApiVersionsRequest(client_software_name="bad name!", client_software_version="1")
    assert call_sync(state, req, 3).error_code == ErrorCode.INVALID_REQUEST
    assert call_sync(state, req, 2).error_code == 0  # v0-2 carry no software name


# -- Metadata ------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(0, 13))
def test_metadata_every_version(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 4)
    topics = None if version >= 1 else []
    response = call_sync(state, m.MetadataRequest(topics=topics), version)
    assert [(b.node_id, b.host, b.port) for b in response.brokers] == [
        (0, "127.0.0.1", 9092),
        (1, "127.0.0.1", 9093),
    ]
    (t,) = response.topics
    assert t.name == "a" and t.error_code == 0
    assert sorted(p.leader_id for p in t.partitions) == [0, 0, 1, 1]
    for p in t.partitions:
        assert p.replica_nodes == p.isr_nodes == [p.leader_id]
    if version >= 10:
        assert t.topic_id == state.image.topics["a"].topic_id
    if version >= 2:
        assert response.cluster_id == "test-cluster"
    if version >= 7:
        assert all(p.leader_epoch == 0 for p in t.partitions)


def test_metadata_empty_list_is_no_topics_from_v1(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 1)
    assert call_sync(state, m.MetadataRequest(topics=[]), 1).topics == []


def test_metadata_unknown_topic_without_auto_creation(tmp_path: Path) -> None:
    state = make_state(tmp_path, **{"auto.create.topics.enable": "false"})
    (t,) = call_sync(state, metadata_request("nope"), 12).topics
    assert t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert channel(state).requests == []


def test_metadata_unknown_topic_not_allowed_by_the_request(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    (t,) = call_sync(state, metadata_request("nope", auto=False), 12).topics
    assert t.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


def test_metadata_invalid_name(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    (t,) = call_sync(state, metadata_request("bad/name"), 12).topics
    assert t.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert channel(state).requests == []


def test_metadata_auto_creates_with_num_partitions(tmp_path: Path) -> None:
    state = make_state(tmp_path, **{"num.partitions": "3"})

    async def scenario() -> tuple[Any, Any]:
        first = await call(state, metadata_request("fresh"), 12)
        again = await call(state, metadata_request("fresh"), 12)  # not a second creation
        for task in list(state.background.values()):
            await task
        later = await call(state, metadata_request("fresh"), 12)
        return first, (again, later)

    first, (again, later) = run(scenario())
    assert first.topics[0].error_code == ErrorCode.LEADER_NOT_AVAILABLE
    assert again.topics[0].error_code == ErrorCode.LEADER_NOT_AVAILABLE
    ops = [(op, args["topics"][0]["num_partitions"]) for op, args, _ in channel(state).requests]
    assert ops == [("create_topics", -1)]
    (t,) = later.topics
    assert t.error_code == 0 and len(t.partitions) == 3


def test_metadata_auto_creation_failure_is_logged_not_raised(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    channel(state).fail = ControllerUnavailable("gone")

    async def scenario() -> Any:
        response = await call(state, metadata_request("fresh"), 9)
        for task in list(state.background.values()):
            await task
        return response

    assert run(scenario()).topics[0].error_code == ErrorCode.LEADER_NOT_AVAILABLE


def test_metadata_by_topic_id(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    topic_id = state.image.topics["a"].topic_id
    unknown = uuid.uuid4()
    known, missing = call_sync(state, metadata_request(ids=(topic_id, unknown)), 12).topics
    assert (known.name, known.error_code, len(known.partitions)) == ("a", 0, 2)
    assert (missing.name, missing.error_code, missing.topic_id) == (None, ErrorCode.UNKNOWN_TOPIC_ID, unknown)


def test_metadata_partition_of_a_missing_worker(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    fake = channel(state)
    fake.image = MetadataImage(
        version=fake.image.version,
        cluster_id="c",
        controller_id=0,
        brokers=BROKERS[:1],
        topics=fake.image.topics,
    )
    (t,) = call_sync(state, metadata_request("a"), 12).topics
    errors = {p.leader_id: p.error_code for p in t.partitions}
    assert errors == {0: 0, -1: ErrorCode.LEADER_NOT_AVAILABLE}


def test_metadata_authorized_operations(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 1)
    req = m.MetadataRequest(
        topics=None, include_topic_authorized_operations=True, include_cluster_authorized_operations=True
    )
    response = call_sync(state, req, 10)
    assert response.topics[0].topic_authorized_operations > 0
    assert response.cluster_authorized_operations > 0


# -- CreateTopics --------------------------------------------------------------------------------


def creatable(name: str, partitions: int = 1, rf: int = 1, **configs: str | None) -> Any:
    return m.CreateTopicsRequest.CreatableTopic(
        name=name,
        num_partitions=partitions,
        replication_factor=rf,
        configs=[m.CreateTopicsRequest.CreatableTopicConfig(name=k, value=v) for k, v in configs.items()],
    )


@pytest.mark.parametrize("version", range(0, 8))
def test_create_topics_every_version(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    req = m.CreateTopicsRequest(topics=[creatable("t", 2, **{"retention.ms": "1000"})], timeout_ms=5000)
    (r,) = call_sync(state, req, version).topics
    assert r.error_code == 0 and r.name == "t"
    assert len(state.image.topics["t"].partitions) == 2
    assert channel(state).requests[0][2] == 5.0
    if version >= 5:
        assert (r.num_partitions, r.replication_factor) == (2, 1)
        configs = {c.name: (c.value, c.config_source) for c in r.configs}
        assert configs["retention.ms"] == ("1000", 1)
        assert configs["segment.bytes"][1] == 5
    if version >= 7:
        assert r.topic_id == state.image.topics["t"].topic_id


def test_create_topics_validate_only(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    req = m.CreateTopicsRequest(topics=[creatable("t", 2)], validate_only=True)
    (r,) = call_sync(state, req, 7).topics
    assert r.error_code == 0 and r.num_partitions == 2 and r.configs
    assert "t" not in state.image.topics


@pytest.mark.parametrize(
    ("topic", "code"),
    [
        (creatable("bad name"), ErrorCode.INVALID_TOPIC_EXCEPTION),
        (creatable("t", partitions=0), ErrorCode.INVALID_PARTITIONS),
        (creatable("t", rf=3), ErrorCode.INVALID_REPLICATION_FACTOR),
        (creatable("t", **{"retention.ms": "soon"}), ErrorCode.INVALID_CONFIG),
        (creatable("t", **{"no.such.config": "1"}), ErrorCode.INVALID_CONFIG),
        (creatable("t", **{"retention.ms": None}), ErrorCode.INVALID_CONFIG),
        (
            m.CreateTopicsRequest.CreatableTopic(
                name="t",
                num_partitions=-1,
                replication_factor=-1,
                assignments=[
                    m.CreateTopicsRequest.CreatableReplicaAssignment(partition_index=0, broker_ids=[0])
                ],
            ),
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        ),
    ],
)
def test_create_topics_errors(tmp_path: Path, topic: Any, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    (r,) = call_sync(state, m.CreateTopicsRequest(topics=[topic]), 7).topics
    assert r.error_code == code and r.error_message
    assert r.num_partitions == -1 and r.replication_factor == -1
    assert "t" not in state.image.topics
    (r0,) = call_sync(state, m.CreateTopicsRequest(topics=[topic]), 0).topics
    assert r0.error_code == code and r0.error_message is None


def test_create_topics_already_exists_and_duplicates(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "t")
    req = m.CreateTopicsRequest(topics=[creatable("t"), creatable("u"), creatable("u"), creatable("v")])
    codes = [(r.name, r.error_code) for r in call_sync(state, req, 4).topics]
    assert codes == [
        ("t", ErrorCode.TOPIC_ALREADY_EXISTS),
        ("u", ErrorCode.INVALID_REQUEST),
        ("u", ErrorCode.INVALID_REQUEST),
        ("v", 0),
    ]


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (ControllerUnavailable("no answer"), ErrorCode.REQUEST_TIMED_OUT),
        (ControllerRequestError(42, "malformed"), ErrorCode.INVALID_REQUEST),
    ],
)
def test_create_topics_controller_failures(tmp_path: Path, failure: Exception, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    channel(state).fail = failure
    req = m.CreateTopicsRequest(topics=[creatable("t"), creatable("u", rf=9)])
    assert [r.error_code for r in call_sync(state, req, 7).topics] == [code, code]


def test_create_topics_unexpected_controller_answer(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    channel(state).answer = {"version": 3}
    (r,) = call_sync(state, m.CreateTopicsRequest(topics=[creatable("t")]), 7).topics
    assert r.error_code == ErrorCode.UNKNOWN_SERVER_ERROR


# -- DeleteTopics --------------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(0, 7))
def test_delete_topics_by_name(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    if version >= 6:
        topics = [m.DeleteTopicsRequest.DeleteTopicState(name=n) for n in ("a", "b")]
        req = m.DeleteTopicsRequest(topics=topics)
    else:
        req = m.DeleteTopicsRequest(topic_names=["a", "b"])
    results = call_sync(state, req, version).responses
    assert [(r.name, r.error_code) for r in results] == [
        ("a", 0),
        ("b", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
    ]
    assert "a" not in state.image.topics


def test_delete_topics_by_id(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    topic_id = state.image.topics["a"].topic_id
    unknown = uuid.uuid4()
    topics = [
        m.DeleteTopicsRequest.DeleteTopicState(name=None, topic_id=topic_id),
        m.DeleteTopicsRequest.DeleteTopicState(name=None, topic_id=unknown),
        m.DeleteTopicsRequest.DeleteTopicState(name=None, topic_id=ZERO_UUID),
    ]
    ok, missing, neither = call_sync(state, m.DeleteTopicsRequest(topics=topics), 6).responses
    assert (ok.name, ok.topic_id, ok.error_code) == ("a", topic_id, 0)
    assert (missing.topic_id, missing.error_code) == (unknown, ErrorCode.UNKNOWN_TOPIC_ID)
    assert neither.error_code == ErrorCode.INVALID_REQUEST
    assert state.image.topics == {}


# -- CreatePartitions ----------------------------------------------------------------------------


def test_create_partitions(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    P = m.CreatePartitionsRequest.CreatePartitionsTopic
    req = m.CreatePartitionsRequest(
        topics=[
            P(name="a", count=5),
            P(name="b", count=5),
            P(
                name="c",
                count=1,
                assignments=[m.CreatePartitionsRequest.CreatePartitionsAssignment(broker_ids=[0])],
            ),
        ],
        timeout_ms=0,
    )
    results = call_sync(state, req, 3).results
    assert [(r.name, r.error_code) for r in results] == [
        ("a", 0),
        ("b", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        ("c", ErrorCode.INVALID_REPLICA_ASSIGNMENT),
    ]
    assert len(state.image.topics["a"].partitions) == 5
    shrink = m.CreatePartitionsRequest(topics=[P(name="a", count=3)])
    (r,) = call_sync(state, shrink, 0).results
    assert r.error_code == ErrorCode.INVALID_PARTITIONS and r.error_message


# -- DescribeConfigs -----------------------------------------------------------------------------


def describe(name: str, rtype: int = 2, keys: list[str] | None = None) -> Any:
    return m.DescribeConfigsRequest.DescribeConfigsResource(
        resource_type=rtype, resource_name=name, configuration_keys=keys
    )


@pytest.mark.parametrize("version", range(0, 5))
def test_describe_topic_configs_sources(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path, **{"log.segment.bytes": "1048576", "log.retention.hours": "2"})
    create(state, "a", 1, **{"cleanup.policy": "compact"})
    req = m.DescribeConfigsRequest(resources=[describe("a")], include_synonyms=True)
    (result,) = call_sync(state, req, version).results
    assert result.error_code == 0
    entries = {c.name: c for c in result.configs}
    assert set(entries) == set(state.config.log_defaults.to_properties())
    policy, segment, retention, index = (
        entries[n] for n in ("cleanup.policy", "segment.bytes", "retention.ms", "index.interval.bytes")
    )
    assert (policy.value, segment.value, retention.value, index.value) == (
        "compact",
        "1048576",
        "7200000",
        "4096",
    )
    assert not any(c.read_only or c.is_sensitive for c in result.configs)
    if version == 0:
        assert (policy.is_default, segment.is_default, index.is_default) == (False, False, True)
        return
    assert (policy.config_source, segment.config_source, index.config_source) == (1, 4, 5)
    assert retention.config_source == 4
    assert [(s.name, s.value, s.source) for s in segment.synonyms] == [
        ("log.segment.bytes", "1048576", 4),
        ("log.segment.bytes", str(1024**3), 5),
    ]
    assert [s.source for s in policy.synonyms] == [1, 5]
    if version >= 3:
        assert segment.config_type == 3 and retention.config_type == 5 and policy.config_type == 7


def test_describe_configs_without_synonyms_and_with_keys(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    req = m.DescribeConfigsRequest(resources=[describe("a", keys=["retention.ms", "no.such"])])
    (result,) = call_sync(state, req, 4).results
    assert [(c.name, c.synonyms) for c in result.configs] == [("retention.ms", [])]


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (describe("nope"), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        (describe("bad name"), ErrorCode.INVALID_TOPIC_EXCEPTION),
        (describe("7", rtype=4), ErrorCode.INVALID_REQUEST),
        (describe("x", rtype=8), ErrorCode.INVALID_REQUEST),
        (describe("g", rtype=32), ErrorCode.INVALID_REQUEST),
    ],
)
def test_describe_configs_errors(tmp_path: Path, resource: Any, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    (result,) = call_sync(state, m.DescribeConfigsRequest(resources=[resource]), 4).results
    assert result.error_code == code and result.error_message and result.configs == []


@pytest.mark.parametrize("name", ["0", "1", ""])
def test_describe_broker_configs(tmp_path: Path, name: str) -> None:
    state = make_state(tmp_path, **{"num.partitions": "3"})
    req = m.DescribeConfigsRequest(resources=[describe(name, rtype=4)], include_synonyms=True)
    (result,) = call_sync(state, req, 4).results
    assert result.error_code == 0
    entries = {c.name: c for c in result.configs}
    assert (entries["num.partitions"].value, entries["num.partitions"].config_source) == ("3", 4)
    assert (entries["message.max.bytes"].value, entries["message.max.bytes"].config_source) == ("1048588", 5)
    assert entries["auto.create.topics.enable"].config_type == 1
    assert all(c.read_only for c in result.configs if BROKER_CONFIGS[c.name].mode is UpdateMode.READ_ONLY)
    assert not entries["ssl.keystore.location"].read_only  # per-broker: AlterConfigs reloads it


def test_describe_broker_configs_answers_every_row_of_the_table(tmp_path: Path) -> None:
    state = make_state(tmp_path, **{"group.initial.rebalance.delay.ms": "0"})
    req = m.DescribeConfigsRequest(resources=[describe("1", rtype=4)], include_synonyms=True)
    (result,) = call_sync(state, req, 4).results
    entries = {c.name: c for c in result.configs}
    assert set(entries) == set(BROKER_CONFIGS)
    for name, key in BROKER_CONFIGS.items():
        entry = entries[name]
        assert entry.config_type == key.type, name
        assert entry.read_only == (key.mode is UpdateMode.READ_ONLY), name
        set_here = name in state.config.properties
        assert entry.config_source == (4 if set_here else 5), name
        if key.default is not None or set_here:
            assert entry.value is not None, f"{name} answers null"
            key.parse(entry.value)  # a value the row accepts
    assert entries["group.initial.rebalance.delay.ms"].value == "0"
    assert entries["offsets.retention.minutes"].value == "10080"
    assert entries["advertised.listeners"].value == "PLAINTEXT://127.0.0.1:9093"


# -- AlterConfigs, IncrementalAlterConfigs -------------------------------------------------------


def alter(name: str, rtype: int = 2, **configs: str | None) -> Any:
    return m.AlterConfigsRequest.AlterConfigsResource(
        resource_type=rtype,
        resource_name=name,
        configs=[m.AlterConfigsRequest.AlterableConfig(name=k, value=v) for k, v in configs.items()],
    )


def incremental(name: str, *ops: tuple[str, int, str | None], rtype: int = 2) -> Any:
    return m.IncrementalAlterConfigsRequest.AlterConfigsResource(
        resource_type=rtype,
        resource_name=name,
        configs=[
            m.IncrementalAlterConfigsRequest.AlterableConfig(name=n, config_operation=op, value=v)
            for n, op, v in ops
        ],
    )


@pytest.mark.parametrize("version", range(0, 3))
def test_alter_configs_replaces_the_override_set(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 1, **{"retention.ms": "1000", "max.message.bytes": "5000"})
    req = m.AlterConfigsRequest(resources=[alter("a", **{"retention.ms": "2000"})])
    (r,) = call_sync(state, req, version).responses
    assert (r.error_code, r.resource_name, r.resource_type) == (0, "a", 2)
    assert state.image.topics["a"].configs == {"retention.ms": "2000"}


def test_alter_configs_validate_only(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    req = m.AlterConfigsRequest(resources=[alter("a", **{"retention.ms": "2000"})], validate_only=True)
    assert call_sync(state, req, 2).responses[0].error_code == 0
    assert state.image.topics["a"].configs == {}


@pytest.mark.parametrize(
    ("resource", "code"),
    [
        (alter("nope", **{"retention.ms": "1"}), ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
        (alter("a", **{"retention.ms": "soon"}), ErrorCode.INVALID_CONFIG),
        (alter("a", **{"no.such": "1"}), ErrorCode.INVALID_CONFIG),
        (alter("a", **{"retention.ms": None}), ErrorCode.INVALID_REQUEST),
        (alter("0", rtype=4, **{"num.partitions": "3"}), ErrorCode.INVALID_CONFIG),  # read-only, as Kafka
        (alter("x", rtype=8, **{"root": "DEBUG"}), ErrorCode.INVALID_REQUEST),
    ],
)
def test_alter_configs_errors(tmp_path: Path, resource: Any, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    (r,) = call_sync(state, m.AlterConfigsRequest(resources=[resource]), 1).responses
    assert r.error_code == code and r.error_message
    assert state.image.topics["a"].configs == {}


def test_alter_configs_duplicate_resources(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    req = m.AlterConfigsRequest(
        resources=[alter("a", **{"retention.ms": "1"}), alter("a", **{"retention.ms": "2"})]
    )
    assert [r.error_code for r in call_sync(state, req, 1).responses] == [ErrorCode.INVALID_REQUEST] * 2


def test_broker_refusal_message_is_clear(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    req = m.IncrementalAlterConfigsRequest(resources=[incremental("0", ("num.partitions", 0, "3"), rtype=4)])
    (r,) = call_sync(state, req, 1).responses
    assert r.error_code == ErrorCode.INVALID_CONFIG and "restart" in r.error_message
    assert "Cannot update these configs dynamically: num.partitions" in r.error_message


@pytest.mark.parametrize("version", range(0, 2))
def test_incremental_alter_configs(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 1, **{"retention.ms": "1000", "segment.ms": "5000"})
    req = m.IncrementalAlterConfigsRequest(
        resources=[
            incremental(
                "a",
                ("max.message.bytes", 0, "500000"),
                ("segment.ms", 1, None),
                ("cleanup.policy", 2, "compact"),
            )
        ]
    )
    (r,) = call_sync(state, req, version).responses
    assert r.error_code == 0
    assert state.image.topics["a"].configs == {
        "retention.ms": "1000",
        "max.message.bytes": "500000",
        "cleanup.policy": "compact,delete",
    } or state.image.topics["a"].configs == {
        "retention.ms": "1000",
        "max.message.bytes": "500000",
        "cleanup.policy": "delete,compact",
    }


@pytest.mark.parametrize(
    ("ops", "code"),
    [
        ((("retention.ms", 9, "1"),), ErrorCode.INVALID_REQUEST),
        ((("retention.ms", 0, "1"), ("retention.ms", 1, None)), ErrorCode.INVALID_REQUEST),
        ((("retention.ms", 0, None),), ErrorCode.INVALID_REQUEST),
        ((("retention.ms", 2, "5"),), ErrorCode.INVALID_CONFIG),
        ((("retention.ms", 0, "-7"),), ErrorCode.INVALID_CONFIG),
    ],
)
def test_incremental_alter_configs_errors(
    tmp_path: Path, ops: tuple[tuple[str, int, str | None], ...], code: ErrorCode
) -> None:
    state = make_state(tmp_path)
    create(state, "a")
    (r,) = call_sync(state, m.IncrementalAlterConfigsRequest(resources=[incremental("a", *ops)]), 1).responses
    assert r.error_code == code and r.error_message
    assert state.image.topics["a"].configs == {}


# -- DescribeCluster -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", range(0, 2))
def test_describe_cluster(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    response = call_sync(state, m.DescribeClusterRequest(include_cluster_authorized_operations=True), version)
    assert response.error_code == 0
    assert (response.cluster_id, response.controller_id) == ("test-cluster", 0)
    assert [(b.broker_id, b.port) for b in response.brokers] == [(0, 9092), (1, 9093)]
    assert response.cluster_authorized_operations > 0


@pytest.mark.parametrize(
    ("endpoint", "code"), [(2, ErrorCode.MISMATCHED_ENDPOINT_TYPE), (9, ErrorCode.UNSUPPORTED_ENDPOINT_TYPE)]
)
def test_describe_cluster_endpoint_types(tmp_path: Path, endpoint: int, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    response = call_sync(state, m.DescribeClusterRequest(endpoint_type=endpoint), 1)
    assert response.error_code == code and response.brokers == []


# -- a handler that fails ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "version", "where"),
    [
        (m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="a")]), 12, "topics"),
        (m.CreateTopicsRequest(topics=[creatable("a")]), 7, "topics"),
        (m.DeleteTopicsRequest(topics=[m.DeleteTopicsRequest.DeleteTopicState(name="a")]), 6, "responses"),
        (m.DeleteTopicsRequest(topic_names=["a"]), 3, "responses"),
        (
            m.CreatePartitionsRequest(
                topics=[m.CreatePartitionsRequest.CreatePartitionsTopic(name="a", count=2)]
            ),
            3,
            "results",
        ),
        (m.DescribeConfigsRequest(resources=[describe("a")]), 4, "results"),
        (m.AlterConfigsRequest(resources=[alter("a", **{"retention.ms": "1"})]), 2, "responses"),
        (
            m.IncrementalAlterConfigsRequest(resources=[incremental("a", ("retention.ms", 0, "1"))]),
            1,
            "responses",
        ),
    ],
)
def test_handler_crash_answers_unknown_server_error_per_item(
    tmp_path: Path, request_: Message, version: int, where: str
) -> None:
    state = make_state(tmp_path)
    broken = cast(Any, state.channel)
    broken.request = None  # any use of the channel's request now raises TypeError
    broken.image = None  # and any use of the image
    response = call_sync(state, request_, version)
    items = getattr(response, where)
    assert items and all(i.error_code == ErrorCode.UNKNOWN_SERVER_ERROR for i in items)


def test_describe_cluster_crash_uses_the_top_level_error(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    cast(Any, state.channel).image = None
    response = call_sync(state, m.DescribeClusterRequest(), 1)
    assert response.error_code == ErrorCode.UNKNOWN_SERVER_ERROR


def test_properties_mapping_is_read_only(tmp_path: Path) -> None:
    assert isinstance(make_state(tmp_path).config.properties, MappingProxyType)
