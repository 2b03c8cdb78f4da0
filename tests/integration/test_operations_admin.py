"""The operators' APIs through real clients against a 2-worker broker: DescribeLogDirs,
AlterReplicaLogDirs, DescribeTopicPartitions, ElectLeaders, ApiVersions' features and
UpdateFeatures, and DescribeQuorum's absence.

Clients: kafka-python's KafkaAdminClient exposes every one of them. confluent-kafka (librdkafka)
exposes only ElectLeaders (its describe_topics uses Metadata, not DescribeTopicPartitions, and
it has no log-dir or feature calls), so the second client for the others is shardbroker's own
admin client (shardbroker/client/admin_operations.py), which encodes with the generated codec
from Kafka's specs, not with kafka-python's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ElectionType
from confluent_kafka import TopicPartition as CTopicPartition
from confluent_kafka.admin import AdminClient as ConfluentAdmin  # type: ignore[attr-defined]

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import KafkaApiError
from shardbroker.protocol.errors import ErrorCode
from tests.integration.broker_process import BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, make_messages, produce_confluent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.admin
    import kafka.errors

pytestmark = pytest.mark.integration

TOPICS = {"ops-a": 3, "ops-b": 2, "ops-c": 1}


@pytest.fixture(scope="module")
def ops_broker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    broker = module_broker_factory(workers=2)
    for name, n in TOPICS.items():
        create_topic(broker.bootstrap, name, n)
    produce_confluent(broker.bootstrap, "ops-a", make_messages(300, 30, "ops"))
    return broker


@pytest.fixture
def kp_admin(ops_broker: BrokerProcess) -> Iterator[Any]:
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=ops_broker.bootstrap, request_timeout_ms=20000)
    yield admin
    admin.close()


@pytest.fixture
def sb_admin(ops_broker: BrokerProcess) -> Iterator[AdminClient]:
    with AdminClient(ops_broker.bootstrap, timeout=20) as admin:
        yield admin


def on_disk(data_dir: Path, topic: str, index: int) -> int:
    return sum(f.stat().st_size for f in (data_dir / f"{topic}-{index}").glob("*.log"))


def every_partition() -> set[tuple[str, int]]:
    return {(t, i) for t, n in TOPICS.items() for i in range(n)}


# -- DescribeLogDirs / AlterReplicaLogDirs ---------------------------------------------------------


@pytest.mark.kafka_api("DescribeLogDirs", client="kafka-python")
def test_describe_log_dirs_kafka_python(ops_broker: BrokerProcess, kp_admin: Any) -> None:
    answers = kp_admin.describe_log_dirs()
    assert sorted(a["broker"] for a in answers) == [0, 1]
    seen: dict[tuple[str, int], int] = {}
    for answer in answers:
        (log_dir,) = answer["log_dirs"]
        assert log_dir["error_code"] == 0 and log_dir["log_dir"] == os.path.abspath(ops_broker.data_dir)
        assert 0 < log_dir["usable_bytes"] <= log_dir["total_bytes"]
        for t in log_dir["topics"]:
            for p in t["partitions"]:
                key = (t["name"], p["partition_index"])
                assert key not in seen, f"{key} reported by two workers"
                seen[key] = p["partition_size"]
    assert every_partition() <= set(seen)
    for t, i in every_partition():
        assert seen[t, i] == on_disk(ops_broker.data_dir, t, i)
    assert sum(seen["ops-a", i] for i in range(3)) > 300 * 100


@pytest.mark.kafka_api("DescribeLogDirs", client="shardbroker")
def test_describe_log_dirs_shardbroker_client(ops_broker: BrokerProcess, sb_admin: AdminClient) -> None:
    dirs = sb_admin.describe_log_dirs({"ops-b": [0, 1, 9]})
    assert sorted(d.broker for d in dirs) == [0, 1]
    sizes = {tp: size for d in dirs for tp, size in d.sizes.items()}
    assert sizes == {("ops-b", 0): 0, ("ops-b", 1): 0}  # ops-b-9 does not exist
    assert all(d.path == os.path.abspath(ops_broker.data_dir) and d.total_bytes > 0 for d in dirs)


@pytest.mark.kafka_api("AlterReplicaLogDirs", client="kafka-python")
def test_alter_replica_log_dirs_kafka_python(ops_broker: BrokerProcess, kp_admin: Any) -> None:
    md = ConfluentAdmin({"bootstrap.servers": ops_broker.bootstrap}).list_topics(timeout=20)
    leaders = {(t, p): md.topics[t].partitions[p].leader for t, p in every_partition()}
    assert set(leaders.values()) == {0, 1}
    ours = os.path.abspath(ops_broker.data_dir)
    TPR = kafka.TopicPartitionReplica
    moved = kp_admin.alter_replica_log_dirs({TPR(t, p, leader): ours for (t, p), leader in leaders.items()})
    assert set(moved.values()) == {kafka.errors.NoError}  # each replica is already there
    elsewhere = kp_admin.alter_replica_log_dirs({TPR("ops-a", 0, leaders["ops-a", 0]): "/mnt/other-disk"})
    assert list(elsewhere.values()) == [kafka.errors.LogDirNotFoundError]
    assert not list(ops_broker.data_dir.glob("*-future"))


@pytest.mark.kafka_api("AlterReplicaLogDirs", client="shardbroker")
def test_alter_replica_log_dirs_shardbroker_client(ops_broker: BrokerProcess, sb_admin: AdminClient) -> None:
    ours = os.path.abspath(ops_broker.data_dir)
    answers = {
        w: sb_admin.alter_replica_log_dirs(w, ours, [("ops-b", 0), ("ops-b", 1), ("nope", 0)]) for w in (0, 1)
    }
    for w in (0, 1):
        assert answers[w]["nope", 0] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    codes = sorted((answers[0][tp], answers[1][tp]) for tp in (("ops-b", 0), ("ops-b", 1)))
    for pair in codes:  # its leader answers NONE, the other worker NOT_LEADER_OR_FOLLOWER
        assert sorted(pair) == [ErrorCode.NONE, ErrorCode.NOT_LEADER_OR_FOLLOWER]
    assert set(sb_admin.alter_replica_log_dirs(0, "relative/dir", [("ops-b", 0)]).values()) == {
        ErrorCode.LOG_DIR_NOT_FOUND
    }


# -- DescribeTopicPartitions -----------------------------------------------------------------------


@pytest.mark.kafka_api("DescribeTopicPartitions", client="kafka-python")
def test_describe_topic_partitions_kafka_python_pages(ops_broker: BrokerProcess, kp_admin: Any) -> None:
    names = sorted(TOPICS)
    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(10):
        answer = kp_admin.describe_topic_partitions(names, response_partition_limit=2, cursor=cursor)
        got = [(t["name"], p["partition_index"]) for t in answer["topics"] for p in t["partitions"]]
        assert len(got) <= 2 and all(t["error_code"] == 0 for t in answer["topics"])
        seen += got
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(every_partition())
    zero = kp_admin.describe_topic_partitions(["ops-a"], response_partition_limit=0)
    assert [p["partition_index"] for t in zero["topics"] for p in t["partitions"]] == [0]  # 0 means 1
    unknown = kp_admin.describe_topic_partitions(["ops-zz", "ops-a"])
    assert [(t["name"], t["error_code"]) for t in unknown["topics"]] == [("ops-a", 0), ("ops-zz", 3)]


@pytest.mark.kafka_api("DescribeTopicPartitions", client="shardbroker")
def test_describe_topic_partitions_shardbroker_client_cursor_to_a_deleted_topic(
    module_broker_factory: BrokerFactory, ops_broker: BrokerProcess, sb_admin: AdminClient
) -> None:
    create_topic(ops_broker.bootstrap, "ops-b2", 2)
    pages = sb_admin.describe_topic_partitions(page_limit=2)
    first = next(pages)
    assert first.next_cursor is not None
    # walk to the page that ends inside ops-b2, then delete it before asking for the next one
    while first.next_cursor is not None and first.next_cursor.topic_name != "ops-b2":
        first = next(pages)
    assert first.next_cursor is not None and (
        first.next_cursor.topic_name,
        first.next_cursor.partition_index,
    ) == (
        "ops-b2",
        1,
    )
    sb_admin.delete_topics(["ops-b2"])
    rest = [(t.name, p.partition_index) for page in pages for t in page.topics for p in t.partitions]
    assert rest == [("ops-c", 0)]  # on from the next name, as Kafka


def test_describe_quorum_is_not_offered(kp_admin: Any) -> None:
    """No KRaft quorum here: DescribeQuorum is not in ApiVersions, as on a ZooKeeper-mode Kafka
    broker, and a client refuses to send it."""
    assert 55 not in {int(k) for k in kp_admin.api_versions()}
    with pytest.raises(kafka.errors.IncompatibleBrokerVersion):
        kp_admin.describe_metadata_quorum()


# -- ElectLeaders ----------------------------------------------------------------------------------


@pytest.mark.kafka_api("ElectLeaders", client="confluent-kafka")
def test_elect_leaders_confluent(ops_broker: BrokerProcess) -> None:
    admin = ConfluentAdmin({"bootstrap.servers": ops_broker.bootstrap})
    asked = [CTopicPartition("ops-a", i) for i in range(3)] + [CTopicPartition("ops-zz", 0)]
    for kind in (ElectionType.PREFERRED, ElectionType.UNCLEAN):
        result = admin.elect_leaders(kind, asked).result(timeout=30)
        codes = {(tp.topic, tp.partition): (e.code() if e is not None else 0) for tp, e in result.items()}
        assert codes == {("ops-a", 0): 84, ("ops-a", 1): 84, ("ops-a", 2): 84, ("ops-zz", 0): 3}


@pytest.mark.kafka_api("ElectLeaders", client="kafka-python")
def test_elect_leaders_kafka_python(kp_admin: Any) -> None:
    response = kp_admin.elect_leaders(0, {"ops-b": [0, 1]})  # ELECTION_NOT_NEEDED is not raised
    codes = {
        (r.topic, p.partition_id): p.error_code
        for r in response.replica_election_results
        for p in r.partition_result
    }
    assert codes == {("ops-b", 0): 84, ("ops-b", 1): 84}
    every = kp_admin.elect_leaders(1)  # kafka-python names every partition itself
    assert {p.error_code for r in every.replica_election_results for p in r.partition_result} == {84}


@pytest.mark.kafka_api("ElectLeaders", client="shardbroker")
def test_elect_leaders_shardbroker_client(sb_admin: AdminClient) -> None:
    assert sb_admin.elect_leaders([("ops-c", 0), ("ops-c", 4)]) == {
        ("ops-c", 0): ErrorCode.ELECTION_NOT_NEEDED,
        ("ops-c", 4): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    assert sb_admin.elect_leaders(None) == {}  # all partitions: those already led are left out


# -- features --------------------------------------------------------------------------------------


@pytest.mark.kafka_api("ApiVersions", "UpdateFeatures", client="kafka-python")
def test_features_kafka_python(kp_admin: Any) -> None:
    described = kp_admin.describe_features()
    assert described.keys() == {"group.version"}
    group = described["group.version"]
    assert (group["supported"], group["finalized"]) == ((0, 1), (1, 1)) and group["finalized_epoch"] >= 0
    assert kp_admin.update_features({"group.version": 1}, validate_only=True) == {"group.version": "OK"}
    with pytest.raises(kafka.errors.InvalidUpdateVersionError):
        kp_admin.update_features({"group.version": ("SAFE_DOWNGRADE", 0)})
    with pytest.raises(kafka.errors.InvalidUpdateVersionError):
        kp_admin.update_features({"metadata.version": 20})
    assert kp_admin.describe_features()["group.version"]["finalized"] == (1, 1)


@pytest.mark.kafka_api("ApiVersions", "UpdateFeatures", client="shardbroker")
def test_features_shardbroker_client(sb_admin: AdminClient) -> None:
    features = sb_admin.describe_features()
    assert (features.supported, features.finalized) == ({"group.version": (0, 1)}, {"group.version": 1})
    sb_admin.update_features({"group.version": (1, 1)})
    with pytest.raises(KafkaApiError) as refused:
        sb_admin.update_features({"group.version": (0, 2)}, validate_only=True)
    assert refused.value.error_code == ErrorCode.INVALID_UPDATE_VERSION
    assert "group.coordinator.rebalance.protocols" in str(refused.value)


def test_features_without_the_consumer_protocol(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=1, config={"group.coordinator.rebalance.protocols": "classic"})
    with AdminClient(broker.bootstrap, timeout=20) as admin:
        features = admin.describe_features()
        assert (features.supported, features.finalized) == ({"group.version": (0, 1)}, {})
        with pytest.raises(KafkaApiError) as refused:
            admin.update_features({"group.version": (1, 1)})
        assert "It is at 0" in str(refused.value)
