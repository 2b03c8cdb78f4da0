"""Consumer groups, offsets, configs, reassignments and SCRAM admin under ACLs, with real clients
(confluent-kafka, kafka-python, aiokafka and our own ``shardbroker partitions``) against a broker
with the authorizer on: Kafka's errors where Kafka refuses, and the same calls passing once the
ACLs Kafka would require are granted.

Consuming also needs READ on the topic (and Metadata DESCRIBE on it): the tests grant what Kafka
requires, so they hold with or without the data-path checks. Opens loopback sockets and runs a
broker (tests/integration/acl_broker.py) and the ``shardbroker`` CLI.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from tests.integration.acl_broker import (
    TIMEOUT,
    AclBroker,
    acl_broker,
    admin_client,
    allow,
    clean_acls,
    confluent_config,
    deny,
    grant,
    new_topic,
    python_config,
)

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.errors
    from kafka.admin import KafkaAdminClient

import aiokafka
import aiokafka.errors

GROUP, TOPIC, CLUSTER = ResourceType.GROUP, ResourceType.TOPIC, ResourceType.BROKER
PREFIXED = ResourcePatternType.PREFIXED


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    yield from acl_broker(tmp_path_factory, "acl-groups")


@pytest.fixture(autouse=True)
def _clean(broker: AclBroker) -> Iterator[None]:
    yield
    clean_acls(broker)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def filled_topic(broker: AclBroker, count: int = 4) -> str:
    """A new topic with ``count`` records, produced by the super user."""
    topic = new_topic(broker)
    producer = Producer(confluent_config(broker, "admin"))
    for i in range(count):
        producer.produce(topic, value=f"v{i}".encode(), partition=i % 2)
    assert producer.flush(TIMEOUT) == 0
    return topic


def may_consume(user: str, topic: str, groups: str) -> list[Any]:
    """What Kafka requires to consume ``topic``, except READ on the group: READ on the topic
    (implies DESCRIBE, for Metadata and ListOffsets) and DESCRIBE on the groups prefixed ``groups``
    (FindCoordinator), so that JoinGroup is the call refused."""
    return [
        allow(user, AclOperation.READ, TOPIC, topic),
        allow(user, AclOperation.DESCRIBE, GROUP, groups, PREFIXED),
    ]


# -- joining a group -------------------------------------------------------------------------------


def confluent_consume(broker: AclBroker, user: str, group: str, topic: str, want: int) -> list[bytes]:
    """Subscribe in ``group`` and read ``want`` records; a consumer error is raised as KafkaException."""
    consumer = Consumer(
        {
            **confluent_config(broker, user),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        values: list[bytes] = []
        deadline = time.monotonic() + TIMEOUT
        while len(values) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                raise KafkaException(msg.error())
            values.append(msg.value())
        consumer.commit(asynchronous=False)
        return sorted(values)
    finally:
        consumer.close()


def test_confluent_group_needs_read_on_the_group_prefixed_and_deny_wins(broker: AclBroker) -> None:
    topic = filled_topic(broker)
    grant(broker, *may_consume("alice", topic, "team-"))
    group = unique("team")
    with pytest.raises(KafkaException) as refused:
        confluent_consume(broker, "alice", group, topic, 4)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    grant(broker, allow("alice", AclOperation.READ, GROUP, "team-", PREFIXED))
    assert confluent_consume(broker, "alice", group, topic, 4) == [b"v0", b"v1", b"v2", b"v3"]

    grant(broker, deny("alice", AclOperation.READ, GROUP, group))
    with pytest.raises(KafkaException) as refused:
        confluent_consume(broker, "alice", group, topic, 1)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert confluent_consume(broker, "alice", unique("team"), topic, 4) == [b"v0", b"v1", b"v2", b"v3"]


def test_kafka_python_group_needs_read_on_the_group(broker: AclBroker) -> None:
    topic = filled_topic(broker)
    grant(broker, *may_consume("bob", topic, "kp-"))

    def consume(group: str) -> list[bytes]:
        consumer = kafka.KafkaConsumer(
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(TIMEOUT * 1000),
            **python_config(broker, "bob"),
        )
        try:
            values: list[bytes] = []
            for record in consumer:
                values.append(record.value)
                if len(values) == 4:
                    break
            return sorted(values)
        finally:
            consumer.close()

    with pytest.raises(kafka.errors.GroupAuthorizationFailedError):
        consume(unique("kp"))
    grant(broker, allow("bob", AclOperation.READ, GROUP, "kp-", PREFIXED))
    assert consume(unique("kp")) == [b"v0", b"v1", b"v2", b"v3"]


def test_aiokafka_group_consumer_needs_read_on_the_group(broker: AclBroker) -> None:
    topic = filled_topic(broker)
    grant(broker, *may_consume("eve", topic, "aio-"))

    async def consume(group: str) -> list[bytes]:
        consumer = aiokafka.AIOKafkaConsumer(
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            **python_config(broker, "eve"),
        )
        try:
            await consumer.start()
            values: list[bytes] = []
            async with asyncio.timeout(TIMEOUT):
                while len(values) < 4:
                    batches = await consumer.getmany(timeout_ms=500)
                    values += [r.value for records in batches.values() for r in records]
            await consumer.commit()
            return sorted(values)
        finally:
            await consumer.stop()

    with pytest.raises(aiokafka.errors.GroupAuthorizationFailedError):
        asyncio.run(consume(unique("aio")))
    grant(broker, allow("eve", AclOperation.READ, GROUP, "aio-", PREFIXED))
    assert asyncio.run(consume(unique("aio"))) == [b"v0", b"v1", b"v2", b"v3"]


# -- offsets and group administration ----------------------------------------------------------------


def _code(error: KafkaError | None) -> int | None:
    return None if error is None else int(error.code())


def test_offsets_commit_and_fetch_as_kafka(broker: AclBroker) -> None:
    readable, hidden = new_topic(broker), new_topic(broker)
    group = unique("offs")
    admin = admin_client(broker, "alice")

    def commit(user_admin: Any, offset: int, *topics: str) -> dict[str, int | None]:
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, 0, offset) for t in topics])
        (future,) = user_admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT).values()
        return {tp.topic: _code(tp.error) for tp in future.result(timeout=TIMEOUT).topic_partitions}

    def fetch(*topics: str) -> dict[str, tuple[int, int | None]]:
        partitions = [TopicPartition(t, 0) for t in topics] or None
        request = ConsumerGroupTopicPartitions(group, partitions)
        (future,) = admin.list_consumer_group_offsets([request], request_timeout=TIMEOUT).values()
        result = future.result(timeout=TIMEOUT).topic_partitions
        return {tp.topic: (tp.offset, _code(tp.error)) for tp in result}

    group_denied, topic_denied = KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED
    grant(broker, allow("alice", AclOperation.DESCRIBE, GROUP, group))  # FindCoordinator's; not READ
    assert commit(admin, 3, readable, hidden) == {readable: group_denied, hidden: group_denied}
    grant(
        broker,
        allow("alice", AclOperation.READ, GROUP, group),
        allow("alice", AclOperation.READ, TOPIC, readable),
    )
    # READ on the group, then on each topic
    assert commit(admin, 3, readable, hidden) == {readable: None, hidden: topic_denied}

    # the super user commits to both; alice sees only the topic she may describe
    super_admin = admin_client(broker)
    assert commit(super_admin, 7, hidden) == {hidden: None}
    assert fetch() == {readable: (3, None)}
    assert fetch(readable, hidden) == {readable: (3, None), hidden: (-1001, topic_denied)}

    # kafka-python raises the group's error
    python_admin = KafkaAdminClient(**python_config(broker, "bob"))
    try:
        with pytest.raises(kafka.errors.GroupAuthorizationFailedError):
            python_admin.list_group_offsets(group)
    finally:
        python_admin.close()


@pytest.mark.kafka_api("ListGroups", "DescribeGroups", client="confluent-kafka")
@pytest.mark.kafka_api("DescribeCluster", client="kafka-python")
def test_list_and_describe_groups_show_only_described_groups(broker: AclBroker) -> None:
    topic = filled_topic(broker, 2)
    seen, unseen = unique("seen"), unique("unseen")
    super_admin = admin_client(broker)
    for group in (seen, unseen):
        request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 1)])
        (future,) = super_admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT).values()
        future.result(timeout=TIMEOUT)
    grant(broker, allow("alice", AclOperation.DESCRIBE, GROUP, "seen-", PREFIXED))

    admin = admin_client(broker, "alice")
    listed = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    ids = {g.group_id for g in listed.valid}
    assert seen in ids and unseen not in ids
    everything = {g.group_id for g in super_admin.list_consumer_groups().result(timeout=TIMEOUT).valid}
    assert {seen, unseen} <= everything

    python_admin = KafkaAdminClient(**python_config(broker, "alice"))
    try:
        names = {g["group_id"] for g in python_admin.list_groups()}
        assert seen in names and unseen not in names
    finally:
        python_admin.close()

    futures = admin.describe_consumer_groups([seen, unseen], include_authorized_operations=True)
    described = futures[seen].result(timeout=TIMEOUT)
    assert set(described.authorized_operations) == {AclOperation.DESCRIBE}
    with pytest.raises(KafkaException) as refused:
        futures[unseen].result(timeout=TIMEOUT)
    assert refused.value.args[0].code() == KafkaError.GROUP_AUTHORIZATION_FAILED

    # DescribeCluster through kafka-python (librdkafka asks Metadata for a cluster's operations)
    def cluster_operations() -> Any:
        python_admin = KafkaAdminClient(**python_config(broker, "alice"))
        try:
            return python_admin.describe_cluster()["authorized_operations"]
        finally:
            python_admin.close()

    assert cluster_operations() == []  # no DESCRIBE on the cluster: none shown
    grant(broker, allow("alice", AclOperation.DESCRIBE, CLUSTER, "kafka-cluster"))
    assert cluster_operations() == ["DESCRIBE"]
    listed = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=TIMEOUT)
    assert {seen, unseen} <= {g.group_id for g in listed.valid}  # DESCRIBE on the cluster: every group


# -- configs -------------------------------------------------------------------------------------


def _error_code(future: Any) -> int | None:
    try:
        future.result(timeout=TIMEOUT)
    except KafkaException as exc:
        return int(exc.args[0].code())
    return None


def test_topic_and_broker_configs_need_describe_and_alter_configs(broker: AclBroker) -> None:
    topic = new_topic(broker)
    admin = admin_client(broker, "alice")
    topic_res, broker_res = ConfigResource("TOPIC", topic), ConfigResource("BROKER", "0")

    def describe() -> list[int | None]:
        futures = admin.describe_configs([topic_res, broker_res], request_timeout=TIMEOUT)
        return [_error_code(futures[topic_res]), _error_code(futures[broker_res])]

    def alter_topic(value: str) -> int | None:
        entry = ConfigEntry("retention.ms", value, incremental_operation=AlterConfigOpType.SET)
        res = ConfigResource("TOPIC", topic, incremental_configs=[entry])
        return _error_code(admin.incremental_alter_configs([res], request_timeout=TIMEOUT)[res])

    assert describe() == [KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED]
    assert alter_topic("1000") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    legacy = ConfigResource("BROKER", "0", set_config={"log.retention.ms": "1"})
    with warnings.catch_warnings():  # the legacy AlterConfigs API, deprecated by confluent-kafka
        warnings.simplefilter("ignore", DeprecationWarning)
        refused = admin.alter_configs([legacy], request_timeout=TIMEOUT)[legacy]
    assert _error_code(refused) == KafkaError.CLUSTER_AUTHORIZATION_FAILED

    grant(broker, allow("alice", AclOperation.DESCRIBE_CONFIGS, TOPIC, topic))
    assert describe() == [None, KafkaError.CLUSTER_AUTHORIZATION_FAILED]
    assert (
        alter_topic("1000") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    )  # DESCRIBE_CONFIGS is not ALTER_CONFIGS
    grant(
        broker,
        allow("alice", AclOperation.ALTER_CONFIGS, TOPIC, topic),
        allow("alice", AclOperation.DESCRIBE_CONFIGS, CLUSTER, "kafka-cluster"),
    )
    assert describe() == [None, None]
    assert alter_topic("123456") is None
    configs = admin.describe_configs([topic_res])[topic_res].result(timeout=TIMEOUT)
    assert configs["retention.ms"].value == "123456"


# -- partition reassignments and SCRAM credentials: the CLUSTER ---------------------------------------


def _cli(broker: AclBroker, *args: str) -> subprocess.CompletedProcess[str]:
    """``shardbroker partitions ...`` over the PLAINTEXT listener (User:ANONYMOUS)."""
    command = [sys.executable, "-m", "shardbroker", "partitions", *args]
    command += ["--bootstrap-server", broker.plaintext_bootstrap]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT * 2, check=False)


def test_partition_reassignments_need_alter_and_describe_on_the_cluster(broker: AclBroker) -> None:
    topic = new_topic(broker)
    python_admin = KafkaAdminClient(**python_config(broker, "alice"))
    try:
        with pytest.raises(kafka.errors.ClusterAuthorizationFailedError):
            python_admin.list_partition_reassignments()
        with pytest.raises(kafka.errors.ClusterAuthorizationFailedError):
            python_admin.alter_partition_reassignments({kafka.TopicPartition(topic, 0): [1]})
    finally:
        python_admin.close()

    # our CLI, as User:ANONYMOUS (it reads Metadata, which needs DESCRIBE on the topic)
    grant(broker, allow("ANONYMOUS", AclOperation.DESCRIBE, TOPIC, topic))
    refused = _cli(broker, "reassignments")
    assert refused.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr
    refused = _cli(broker, "move", topic, "0", "--to-worker", "1")
    assert refused.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in refused.stderr
    grant(broker, allow("ANONYMOUS", AclOperation.ALTER, CLUSTER, "kafka-cluster"))  # implies DESCRIBE
    assert _cli(broker, "reassignments").returncode == 0
    moved = _cli(broker, "move", topic, "0", "--to-worker", "1")
    assert moved.returncode == 0, moved.stderr
    assert "worker 1" in moved.stdout

    # the super user needs no ACL
    super_admin = KafkaAdminClient(**python_config(broker, "admin"))
    try:
        super_admin.alter_partition_reassignments({kafka.TopicPartition(topic, 0): [0]})
        assert super_admin.list_partition_reassignments() is not None
    finally:
        super_admin.close()


@pytest.mark.kafka_api("DescribeUserScramCredentials", client="kafka-python")
def test_scram_credentials_admin_needs_the_cluster(broker: AclBroker) -> None:
    user = unique("scram")
    upsert = UserScramCredentialUpsertion(
        user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), b"pw"
    )
    admin = admin_client(broker, "alice")
    (future,) = admin.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT).values()
    assert _error_code(future) == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    # (librdkafka 2.16 corrupts its heap on DescribeUserScramCredentials' error answer, Kafka's as
    # ours: kafka-python asks instead)
    python_admin = KafkaAdminClient(**python_config(broker, "alice"))
    try:
        with pytest.raises(kafka.errors.ClusterAuthorizationFailedError):
            python_admin.describe_user_scram_credentials([user])
    finally:
        python_admin.close()

    super_admin = admin_client(broker)
    (future,) = super_admin.alter_user_scram_credentials([upsert], request_timeout=TIMEOUT).values()
    assert _error_code(future) is None
    grant(broker, allow("alice", AclOperation.DESCRIBE, CLUSTER, "kafka-cluster"))
    described = admin.describe_user_scram_credentials([user], request_timeout=TIMEOUT)
    assert described[user].result(timeout=TIMEOUT).user == user
