"""The admin client (shardbroker.client) against a tiny fake broker on a loopback socket, built with
our own codec: version negotiation, request layouts per version, error mapping, retries, timeouts,
unreachable addresses; and the consumer protocol layouts. Opens loopback sockets and threads (the
fake broker's; the client itself has none)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import parse_bootstrap
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.connection import (
    BrokerConnection,
    BrokerUnreachable,
    KafkaApiError,
    UnsupportedApi,
    parse_address,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.consumer_protocol import (
    encode_consumer_assignment,
    encode_consumer_subscription,
)
from shardbroker.protocol.errors import ErrorCode
from tests.unit.kafka_fake import FULL_VERSIONS, FakeBroker, closed_port, coordinator_at, running_fake


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with running_fake() as broker:
        yield broker


# -- addresses -------------------------------------------------------------------------------------


def test_parse_addresses() -> None:
    assert parse_address("localhost:9092") == ("localhost", 9092)
    assert parse_address("broker") == ("broker", 9092)
    assert parse_address("[::1]:9093") == ("::1", 9093)
    assert parse_bootstrap("a:1, b:2,") == [("a", 1), ("b", 2)]
    for bad in ("", "a:b", "a:0", "a:70000", ":9092", "a:1:2", "[::1]x"):
        with pytest.raises(ValueError):
            parse_bootstrap(bad)


# -- negotiation -----------------------------------------------------------------------------------


def test_picks_highest_common_version(fake: FakeBroker) -> None:
    fake.versions[3] = (0, 5)  # an old broker's Metadata
    fake.topics = {"t": 2}
    with AdminClient(fake.address, timeout=5) as admin:
        md = admin.metadata(["t"])
    assert md.topics["t"].partitions == {0: 0, 1: 0}
    assert md.brokers[0].port == fake.port
    assert [v for v, _ in fake.apis(18)] == [4]
    assert [v for v, _ in fake.apis(3)] == [5]
    request = fake.apis(3)[0][1]
    assert request.allow_auto_topic_creation is False


def test_client_caps_at_its_own_versions(fake: FakeBroker) -> None:
    fake.versions[3] = (0, 99)
    with AdminClient(fake.address, timeout=5) as admin:
        admin.metadata([])
    assert [v for v, _ in fake.apis(3)] == [12]


def test_api_versions_downgrade_after_unsupported_version() -> None:
    fake = FakeBroker({**FULL_VERSIONS, 18: (0, 2)})
    try:
        with BrokerConnection("127.0.0.1", fake.port, timeout=5) as conn:
            assert conn.broker_versions[3] == (0, 12)
        assert [v for v, _ in fake.apis(18)] == [4, 2]
    finally:
        fake.close()


def test_no_common_version_is_unsupported_api(fake: FakeBroker) -> None:
    fake.versions[3] = (0, 0)  # Metadata v0 only: this client needs v1+
    with AdminClient(fake.address, timeout=5) as admin, pytest.raises(UnsupportedApi) as err:
        admin.metadata()
    assert err.value.error_code == ErrorCode.UNSUPPORTED_VERSION
    assert fake.address in str(err.value) and "Metadata" in str(err.value)
    fake.versions[3] = (0, 12)
    del fake.versions[16]
    with AdminClient(fake.address, timeout=5) as admin, pytest.raises(UnsupportedApi, match="ListGroups"):
        admin.list_groups()


@pytest.mark.parametrize("fc_max", [3, 6])
def test_find_coordinator_layouts(fake: FakeBroker, fc_max: int) -> None:
    fake.versions[10] = (0, fc_max)

    def answer(version: int, request: Any) -> Message:
        if version >= 4:
            assert request.coordinator_keys == ["g"]
            c = m.FindCoordinatorResponse.Coordinator(key="g", node_id=0, host="127.0.0.1", port=fake.port)
            return m.FindCoordinatorResponse(coordinators=[c])
        assert request.key == "g"
        return m.FindCoordinatorResponse(node_id=0, host="127.0.0.1", port=fake.port)

    fake.handlers[10] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        info = admin.find_coordinator("g")
    assert (info.node_id, info.port) == (0, fake.port)
    assert [v for v, _ in fake.apis(10)] == [fc_max]


@pytest.mark.parametrize("of_max", [7, 9])
def test_offset_fetch_layouts(fake: FakeBroker, of_max: int) -> None:
    fake.versions[9] = (0, of_max)
    fake.handlers[10] = coordinator_at(fake)
    R = m.OffsetFetchResponse

    def answer(version: int, request: Any) -> Message:
        if version >= 8:
            assert request.groups[0].group_id == "g" and request.groups[0].topics is None
            parts8 = [
                R.OffsetFetchResponsePartitions(partition_index=0, committed_offset=5),
                R.OffsetFetchResponsePartitions(partition_index=1, committed_offset=-1),
            ]
            group = R.OffsetFetchResponseGroup(
                group_id="g", topics=[R.OffsetFetchResponseTopics(name="t", partitions=parts8)]
            )
            return R(groups=[group])
        assert request.group_id == "g" and request.topics is None
        parts = [
            R.OffsetFetchResponsePartition(partition_index=0, committed_offset=5),
            R.OffsetFetchResponsePartition(partition_index=1, committed_offset=-1),
        ]
        return R(topics=[R.OffsetFetchResponseTopic(name="t", partitions=parts)])

    fake.handlers[9] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        assert admin.committed_offsets("g") == {("t", 0): 5}
    assert [v for v, _ in fake.apis(9)] == [of_max]


# -- errors ----------------------------------------------------------------------------------------


def test_unreachable_address_is_named() -> None:
    port = closed_port()
    with pytest.raises(BrokerUnreachable) as err:
        AdminClient(f"127.0.0.1:{port}", timeout=2).metadata()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert err.value.address == f"127.0.0.1:{port}"


def test_unreachable_bootstrap_list_names_every_address(fake: FakeBroker) -> None:
    dead = closed_port()
    with AdminClient(f"127.0.0.1:{dead},{fake.address}", timeout=5) as admin:
        admin.metadata([])  # the second address answers
    dead2 = closed_port()
    with pytest.raises(BrokerUnreachable) as err:
        AdminClient(f"127.0.0.1:{dead},127.0.0.1:{dead2}", timeout=2).metadata()
    assert f"127.0.0.1:{dead}" in str(err.value) and f"127.0.0.1:{dead2}" in str(err.value)


def test_silent_broker_times_out(fake: FakeBroker) -> None:
    fake.handlers[3] = lambda version, request: None
    start = time.monotonic()
    with AdminClient(fake.address, timeout=0.5) as admin, pytest.raises(BrokerUnreachable) as err:
        admin.metadata()
    assert time.monotonic() - start < 5
    assert fake.address in str(err.value) and "Metadata" in str(err.value) and "0.5 s" in str(err.value)


def test_broker_closing_the_connection(fake: FakeBroker) -> None:
    def close_all(version: int, request: Any) -> None:
        for c in fake._conns:
            c.shutdown(socket.SHUT_RDWR)

    fake.handlers[3] = close_all
    with AdminClient(fake.address, timeout=5) as admin, pytest.raises(BrokerUnreachable, match="closed"):
        admin.metadata()


def test_error_codes_map_to_kafka_api_error(fake: FakeBroker) -> None:
    fake.handlers[10] = lambda version, request: m.FindCoordinatorResponse(
        error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED, error_message="no"
    )
    fake.versions[10] = (0, 3)
    with AdminClient(fake.address, timeout=5) as admin, pytest.raises(KafkaApiError) as err:
        admin.find_coordinator("g")
    assert err.value.error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED
    assert str(err.value).startswith("GROUP_AUTHORIZATION_FAILED")
    assert "'g'" in str(err.value)
    odd = KafkaApiError(32000, "what")
    assert odd.error_code == 32000 and str(odd) == "ERROR_32000: what"


def test_retriable_coordinator_errors_are_retried(fake: FakeBroker) -> None:
    fake.versions[10] = (0, 3)
    answers = [ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, ErrorCode.NONE]

    def answer(version: int, request: Any) -> Message:
        code = answers.pop(0)
        return m.FindCoordinatorResponse(error_code=code, node_id=0, host="127.0.0.1", port=fake.port)

    fake.handlers[10] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        assert admin.find_coordinator("g").node_id == 0
    assert answers == []


def test_retriable_errors_give_up_at_the_timeout(fake: FakeBroker) -> None:
    fake.versions[10] = (0, 3)
    fake.handlers[10] = lambda version, request: m.FindCoordinatorResponse(
        error_code=ErrorCode.COORDINATOR_NOT_AVAILABLE
    )
    start = time.monotonic()
    with AdminClient(fake.address, timeout=0.5) as admin, pytest.raises(KafkaApiError) as err:
        admin.find_coordinator("g")
    assert err.value.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    assert time.monotonic() - start < 5


def test_unknown_topic_in_list_offsets(fake: FakeBroker) -> None:
    fake.topics = {"t": 1}
    with AdminClient(fake.address, timeout=5) as admin:
        with pytest.raises(KafkaApiError, match="topic 'nope' does not exist") as err:
            admin.list_offsets({("nope", 0): LATEST})
        assert err.value.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        with pytest.raises(KafkaApiError, match="no partition 3"):
            admin.list_offsets({("t", 3): LATEST})


# -- group calls -----------------------------------------------------------------------------------


def test_list_offsets_request_and_answer(fake: FakeBroker) -> None:
    fake.topics = {"t": 2}
    R = m.ListOffsetsResponse

    def answer(version: int, request: Any) -> Message:
        parts = [
            R.ListOffsetsPartitionResponse(partition_index=p.partition_index, offset=100 + p.timestamp)
            for p in request.topics[0].partitions
        ]
        return R(topics=[R.ListOffsetsTopicResponse(name="t", partitions=parts)])

    fake.handlers[2] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        got = admin.list_offsets({("t", 0): EARLIEST, ("t", 1): LATEST})
    assert got == {("t", 0): 98, ("t", 1): 99}
    version, request = fake.apis(2)[0]
    assert version == 10 and request.replica_id == -1


def test_describe_group_decodes_consumer_protocol(fake: FakeBroker) -> None:
    fake.handlers[10] = coordinator_at(fake)
    D = m.DescribeGroupsResponse
    member = D.DescribedGroupMember(
        member_id="m-1",
        client_id="c",
        client_host="/127.0.0.1",
        member_metadata=encode_consumer_subscription(["t", "u"]),
        member_assignment=encode_consumer_assignment({"t": [0, 2], "u": [1]}),
    )
    fake.handlers[15] = lambda version, request: D(
        groups=[
            D.DescribedGroup(
                group_id="g",
                group_state="Stable",
                protocol_type="consumer",
                protocol_data="range",
                members=[member],
            )
        ]
    )
    with AdminClient(fake.address, timeout=5) as admin:
        desc = admin.describe_group("g")
    assert (desc.state, desc.protocol, desc.coordinator.node_id) == ("Stable", "range", 0)
    (mem,) = desc.members
    assert mem.subscription is not None and mem.subscription.topics == ["t", "u"]
    assert mem.assigned == [("t", 0), ("t", 2), ("u", 1)]


def test_commit_offsets_as_admin_and_per_partition_errors(fake: FakeBroker) -> None:
    fake.handlers[10] = coordinator_at(fake)
    R = m.OffsetCommitResponse
    code = ErrorCode.NONE

    def answer(version: int, request: Any) -> Message:
        return R(
            topics=[
                R.OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=[
                        R.OffsetCommitResponsePartition(partition_index=p.partition_index, error_code=code)
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )

    fake.handlers[8] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        admin.commit_offsets("g", {("t", 1): 7, ("t", 0): 3})
        _, request = fake.apis(8)[0]
        assert request.generation_id_or_member_epoch == -1 and request.member_id == ""
        assert [(p.partition_index, p.committed_offset) for p in request.topics[0].partitions] == [
            (0, 3),
            (1, 7),
        ]
        code = ErrorCode.UNKNOWN_MEMBER_ID
        with pytest.raises(KafkaApiError) as err:
            admin.commit_offsets("g", {("t", 0): 1})
        assert err.value.error_code == ErrorCode.UNKNOWN_MEMBER_ID and "t-0" in str(err.value)


def test_list_groups_and_delete_groups(fake: FakeBroker) -> None:
    L = m.ListGroupsResponse
    fake.handlers[16] = lambda version, request: L(
        groups=[
            L.ListedGroup(group_id="b", protocol_type="consumer", group_state="Empty"),
            L.ListedGroup(group_id="a"),
        ]
    )
    fake.handlers[10] = coordinator_at(fake)
    fake.handlers[42] = lambda version, request: m.DeleteGroupsResponse(
        results=[
            m.DeleteGroupsResponse.DeletableGroupResult(
                group_id=g, error_code=ErrorCode.NON_EMPTY_GROUP if g == "busy" else ErrorCode.NONE
            )
            for g in request.groups_names
        ]
    )
    with AdminClient(fake.address, timeout=5) as admin:
        groups = admin.list_groups()
        assert [(g.group_id, g.state, g.coordinator) for g in groups] == [("a", "", 0), ("b", "Empty", 0)]
        result = admin.delete_groups(["old", "busy"])
    assert result["old"] is None
    busy = result["busy"]
    assert busy is not None and busy.error_code == ErrorCode.NON_EMPTY_GROUP


# -- topic calls -----------------------------------------------------------------------------------


def test_create_topics_layout_and_not_controller_retry(fake: FakeBroker) -> None:
    fake.versions.update({19: (0, 7)})
    answers = [ErrorCode.NOT_CONTROLLER, ErrorCode.NONE]
    R = m.CreateTopicsResponse

    def answer(version: int, request: Any) -> Message:
        code = answers.pop(0)
        results = [R.CreatableTopicResult(name=t.name, error_code=code) for t in request.topics]
        results.append(R.CreatableTopicResult(name="dup", error_code=ErrorCode.TOPIC_ALREADY_EXISTS))
        return R(topics=results)

    fake.handlers[19] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        got = admin.create_topics([NewTopic("t", 3, 1, {"retention.ms": "1000"}), NewTopic("dup")])
    assert got["t"] is None
    dup = got["dup"]
    assert dup is not None and dup.name == "TOPIC_ALREADY_EXISTS" and "'dup'" in str(dup)
    assert answers == []
    version, request = fake.apis(19)[-1]
    assert version == 7 and request.timeout_ms == 5000 and not request.validate_only
    t = request.topics[0]
    assert (t.name, t.num_partitions, t.replication_factor) == ("t", 3, 1)
    assert [(c.name, c.value) for c in t.configs] == [("retention.ms", "1000")]
    assert (request.topics[1].num_partitions, request.topics[1].replication_factor) == (-1, -1)


def test_create_topics_missing_answer_is_an_error(fake: FakeBroker) -> None:
    fake.versions.update({19: (0, 7)})
    fake.handlers[19] = lambda version, request: m.CreateTopicsResponse(topics=[])
    with AdminClient(fake.address, timeout=5) as admin, pytest.raises(KafkaApiError, match="did not answer"):
        admin.create_topics([NewTopic("t")])


@pytest.mark.parametrize("dt_max", [5, 6])
def test_delete_topics_layouts(fake: FakeBroker, dt_max: int) -> None:
    fake.versions[20] = (0, dt_max)
    R = m.DeleteTopicsResponse

    def answer(version: int, request: Any) -> Message:
        names = [t.name for t in request.topics] if version >= 6 else request.topic_names
        return R(
            responses=[
                R.DeletableTopicResult(
                    name=n, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION if n == "gone" else ErrorCode.NONE
                )
                for n in names
            ]
        )

    fake.handlers[20] = answer
    with AdminClient(fake.address, timeout=5) as admin:
        got = admin.delete_topics(["t", "gone"])
    assert got["t"] is None
    gone = got["gone"]
    assert gone is not None and gone.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert fake.apis(20)[0][0] == dt_max


def test_create_partitions(fake: FakeBroker) -> None:
    fake.versions[37] = (0, 3)
    R = m.CreatePartitionsResponse
    fake.handlers[37] = lambda version, request: R(
        results=[
            R.CreatePartitionsTopicResult(
                name=t.name,
                error_code=ErrorCode.INVALID_PARTITIONS if t.count < 3 else ErrorCode.NONE,
                error_message="fewer" if t.count < 3 else None,
            )
            for t in request.topics
        ]
    )
    with AdminClient(fake.address, timeout=5) as admin:
        got = admin.create_partitions({"t": 6, "u": 2})
    assert got["t"] is None
    u = got["u"]
    assert u is not None and str(u) == "INVALID_PARTITIONS: topic 'u': fewer"
    request = fake.apis(37)[0][1]
    assert [(t.name, t.count, t.assignments) for t in request.topics] == [("t", 6, None), ("u", 2, None)]


def test_describe_and_alter_topic_configs(fake: FakeBroker) -> None:
    fake.versions.update({32: (0, 4), 44: (0, 1)})
    D = m.DescribeConfigsResponse

    def describe(version: int, request: Any) -> Message:
        results = []
        for r in request.resources:
            if r.resource_name == "gone":
                results.append(
                    D.DescribeConfigsResult(
                        resource_type=2, resource_name="gone", error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    )
                )
                continue
            entries = [
                D.DescribeConfigsResourceResult(name="segment.bytes", value="1024", config_source=1),
                D.DescribeConfigsResourceResult(name="cleanup.policy", value="delete", config_source=5),
                D.DescribeConfigsResourceResult(name="retention.ms", value="5", config_source=4),
            ]
            results.append(
                D.DescribeConfigsResult(resource_type=2, resource_name=r.resource_name, configs=entries)
            )
        return D(results=results)

    fake.handlers[32] = describe
    fake.handlers[44] = lambda version, request: m.IncrementalAlterConfigsResponse(
        responses=[
            m.IncrementalAlterConfigsResponse.AlterConfigsResourceResponse(
                resource_type=2,
                resource_name="t",
                error_code=ErrorCode.INVALID_CONFIG,
                error_message="bad value",
            )
        ]
    )
    with AdminClient(fake.address, timeout=5) as admin:
        configs = admin.describe_topic_configs(["t"])["t"]
        assert [(c.name, c.value, c.source, c.is_default) for c in configs] == [
            ("cleanup.policy", "delete", "DEFAULT_CONFIG", True),
            ("retention.ms", "5", "STATIC_BROKER_CONFIG", False),
            ("segment.bytes", "1024", "DYNAMIC_TOPIC_CONFIG", False),
        ]
        with pytest.raises(KafkaApiError, match="UNKNOWN_TOPIC_OR_PARTITION: configs of topic 'gone'"):
            admin.describe_topic_configs(["t", "gone"])
        with pytest.raises(KafkaApiError, match="INVALID_CONFIG: configs of topic 't': bad value"):
            admin.alter_topic_configs("t", {"retention.ms": "9"}, ["segment.bytes"])
    request = fake.apis(44)[0][1]
    resource = request.resources[0]
    assert (resource.resource_type, resource.resource_name) == (2, "t")
    assert [(c.name, c.config_operation, c.value) for c in resource.configs] == [
        ("retention.ms", 0, "9"),
        ("segment.bytes", 1, None),
    ]
    assert fake.apis(32)[0][1].resources[0].configuration_keys is None


def test_metadata_carries_ids_replicas_and_auto_creation_flag(fake: FakeBroker) -> None:
    fake.topics = {"t": 2}
    with AdminClient(fake.address, timeout=5) as admin:
        info = admin.metadata(["t"], allow_auto_topic_creation=True).topics["t"]
        assert info.topic_id is not None and not info.internal
        assert set(info.replicas) == set(info.isr) == {0, 1}
        with pytest.raises(KafkaApiError, match="topic 'nope' does not exist"):
            admin.topic("nope")
    assert fake.apis(3)[0][1].allow_auto_topic_creation is True
