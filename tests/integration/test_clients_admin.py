"""Admin operations with each client: create, describe, describe configs, delete topics.

confluent-kafka also covers the rest of this step's admin APIs: CreatePartitions,
IncrementalAlterConfigs, AlterConfigs, DescribeCluster, DeleteRecords, ListOffsets (earliest,
latest, by timestamp), and auto-creation on Metadata. kcat's part is metadata (``-L``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import warnings
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from aiokafka.admin.config_resource import ConfigResource as ConfigResourceAio
from aiokafka.admin.config_resource import ConfigResourceType as ConfigResourceTypeAio
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import (
    consume_confluent,
    create_topic,
    kcat,
    make_messages,
    produce_confluent,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

import aiokafka.admin

pytestmark = pytest.mark.integration

RETENTION = "3600000"
OFFSET_SPEC: Any = OffsetSpec  # untyped classmethods
#: What kafka-python's and aiokafka's admin tests send (tools/gen_compatibility.py).
PYTHON_ADMIN_APIS = ("ApiVersions", "CreateTopics", "Metadata", "DescribeConfigs", "DeleteTopics")


def confluent_topic_names(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return set(admin.list_topics(timeout=10).topics)


def wait_topic_gone(bootstrap: str, topic: str) -> None:
    wait_for(lambda: topic not in confluent_topic_names(bootstrap), 30, f"{topic} gone from metadata")


def config_value(configs: dict[str, Any], name: str) -> str:
    return str(configs[name].value)


@pytest.mark.kafka_api(
    "CreateTopics", "Metadata", "DescribeConfigs", "DeleteTopics", client="confluent-kafka"
)
@pytest.mark.kafka_api(
    "IncrementalAlterConfigs", "AlterConfigs", "CreatePartitions", client="confluent-kafka"
)
def test_confluent_admin(broker: BrokerProcess) -> None:
    bootstrap = broker.bootstrap
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "admin-confluent"
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=3, replication_factor=1, config={"retention.ms": RETENTION})]
    )
    futures[topic].result(30)
    # creating it again is refused with TOPIC_ALREADY_EXISTS
    again = admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    with pytest.raises(confluent_kafka.KafkaException) as exc:
        again[topic].result(30)
    assert exc.value.args[0].code() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS

    desc = admin.describe_topics(confluent_kafka.TopicCollection([topic]))[topic].result(30)
    assert len(desc.partitions) == 3
    assert {p.leader.id for p in desc.partitions} <= set(range(broker.workers))
    assert desc.topic_id is not None and str(desc.topic_id) != "AAAAAAAAAAAAAAAAAAAAAA", "no topic id"

    cluster = admin.describe_cluster().result(30)
    assert sorted(n.id for n in cluster.nodes) == list(range(broker.workers))
    assert sorted(n.port for n in cluster.nodes) == broker.ports

    resource = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert config_value(configs, "retention.ms") == RETENTION
    assert configs["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    # a default, with its source: the broker's log.segment.bytes from the test config
    assert config_value(configs, "segment.bytes") == str(1024 * 1024)
    assert configs["segment.bytes"].is_default or configs["segment.bytes"].source in (
        ConfigSource.STATIC_BROKER_CONFIG.value,
        ConfigSource.DEFAULT_CONFIG.value,
    )

    alter = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("max.message.bytes", "500000", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([alter])[alter].result(30)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert config_value(configs, "retention.ms") == "7200000"
    assert config_value(configs, "max.message.bytes") == "500000"

    # AlterConfigs (non-incremental) replaces the whole set of overrides. confluent-kafka marks
    # it deprecated in favour of the incremental form, but clients still send it.
    replace = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "1800000"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        admin.alter_configs([replace])[replace].result(30)
    configs = admin.describe_configs([resource])[resource].result(30)
    assert config_value(configs, "retention.ms") == "1800000"
    assert config_value(configs, "max.message.bytes") != "500000"

    bad = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "not-a-number"})
    with pytest.raises(confluent_kafka.KafkaException), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        admin.alter_configs([bad])[bad].result(30)

    admin.create_partitions([NewPartitions(topic, 5)])[topic].result(30)
    wait_for(
        lambda: len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 5,
        30,
        "5 partitions in metadata",
    )

    admin.delete_topics([topic])[topic].result(30)
    wait_topic_gone(bootstrap, topic)
    # and a deleted name can be created afresh, empty
    create_topic(bootstrap, topic, 2)
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "unused"})
    try:
        watermarks = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=30)
    finally:
        consumer.close()
    assert tuple(watermarks) == (0, 0)


@pytest.mark.kafka_api("Produce", "ListOffsets", "DeleteRecords", "Fetch", client="confluent-kafka")
def test_confluent_list_offsets_and_delete_records(broker: BrokerProcess) -> None:
    bootstrap = broker.bootstrap
    topic = "offsets"
    create_topic(bootstrap, topic, 1)
    t0 = int(time.time() * 1000) - 100_000
    messages = make_messages(100, keys=1, tag="ts")
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all"})
    for i, (key, value) in enumerate(messages):
        producer.produce(topic, value, key, partition=0, timestamp=t0 + 1000 * i)
        producer.flush(30)  # one batch per message: timestamps are looked up per batch too
    assert producer.flush(30) == 0

    admin = AdminClient({"bootstrap.servers": bootstrap})
    tp = confluent_kafka.TopicPartition(topic, 0)

    def list_offset(spec: Any) -> int:
        return int(admin.list_offsets({tp: spec})[tp].result(30).offset)

    assert list_offset(OFFSET_SPEC.earliest()) == 0
    assert list_offset(OFFSET_SPEC.latest()) == 100
    assert list_offset(OFFSET_SPEC.for_timestamp(t0 + 1000 * 42)) == 42
    assert list_offset(OFFSET_SPEC.for_timestamp(t0 + 1000 * 42 - 500)) == 42
    assert list_offset(OFFSET_SPEC.for_timestamp(t0 + 1000 * 200)) == -1  # past the last: no offset

    deleted = admin.delete_records([confluent_kafka.TopicPartition(topic, 0, 30)])
    low = next(iter(deleted.values())).result(30)
    assert low.low_watermark == 30
    assert list_offset(OFFSET_SPEC.earliest()) == 30
    # reading from the beginning now starts at 30
    records = consume_confluent(bootstrap, topic, {0: 100})
    assert [r.offset for r in records] == list(range(30, 100))


def test_metadata_auto_creates_topics_when_enabled(broker_factory: Callable[..., BrokerProcess]) -> None:
    on = broker_factory(config={"auto.create.topics.enable": True, "num.partitions": 3})
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": on.bootstrap, "group.id": "unused", "allow.auto.create.topics": True}
    )
    try:
        wait_for(
            lambda: len(consumer.list_topics("auto-made", timeout=10).topics["auto-made"].partitions) == 3,
            30,
            "auto-created topic with num.partitions=3",
        )
    finally:
        consumer.close()

    off = broker_factory(config={"auto.create.topics.enable": False})
    md = AdminClient({"bootstrap.servers": off.bootstrap}).list_topics("not-made", timeout=10)
    assert md.topics["not-made"].error is not None
    assert md.topics["not-made"].error.code() == confluent_kafka.KafkaError.UNKNOWN_TOPIC_OR_PART
    assert "not-made" not in confluent_topic_names(off.bootstrap)


@pytest.mark.kafka_api(*PYTHON_ADMIN_APIS, client="kafka-python")
def test_kafka_python_admin(broker: BrokerProcess) -> None:
    topic = "admin-kafka-python"
    admin = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        admin.create_topics(
            [kafka.admin.NewTopic(topic, 3, 1, topic_configs={"retention.ms": RETENTION})], timeout_ms=30_000
        )
        assert topic in admin.list_topics()
        (desc,) = admin.describe_topics([topic])
        assert desc["error_code"] == 0 and len(desc["partitions"]) == 3
        assert {p["leader_id"] for p in desc["partitions"]} <= set(range(broker.workers))
        resource = kafka.admin.ConfigResource(kafka.admin.ConfigResourceType.TOPIC, topic)
        # kafka-python 3 answers {resource_type: {resource_name: {config_key: {config data}}}}
        described = admin.describe_configs([resource], config_filter="all")
        (by_name,) = described.values()
        text = repr(by_name[topic]["retention.ms"])
        assert RETENTION in text, text[:2000]
        admin.delete_topics([topic], timeout_ms=30_000)
        wait_topic_gone(broker.bootstrap, topic)
        assert topic not in admin.list_topics()
    finally:
        admin.close()


@pytest.mark.kafka_api(*PYTHON_ADMIN_APIS, client="aiokafka")
def test_aiokafka_admin(broker: BrokerProcess) -> None:
    topic = "admin-aiokafka"

    async def run() -> None:
        admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            await admin.create_topics(
                [aiokafka.admin.NewTopic(topic, 3, 1, topic_configs={"retention.ms": RETENTION})]
            )
            assert topic in await admin.list_topics()
            (desc,) = await admin.describe_topics([topic])
            assert desc["error_code"] == 0 and len(desc["partitions"]) == 3
            resource = ConfigResourceAio(ConfigResourceTypeAio.TOPIC, topic)
            (response,) = await admin.describe_configs([resource])
            resources = response.to_object()["resources"]
            configs = {c["config_names"]: c["config_value"] for c in resources[0]["config_entries"]}
            assert configs["retention.ms"] == RETENTION
            await admin.delete_topics([topic])
        finally:
            await admin.close()

    asyncio.run(run())
    wait_topic_gone(broker.bootstrap, topic)


@pytest.mark.kafka_api("ApiVersions", "Metadata", "ListOffsets", "Fetch", client="kcat")
def test_kcat_metadata_produce_consume(broker: BrokerProcess) -> None:
    topic = "kcat-md"
    create_topic(broker.bootstrap, topic, 4)
    md = json.loads(
        subprocess.run(
            [kcat(), "-L", "-J", "-b", broker.bootstrap, "-t", topic],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
    )
    brokers = sorted((b["id"], b["name"]) for b in md["brokers"])
    assert brokers == [(i, f"{broker.host}:{port}") for i, port in enumerate(broker.ports)]
    (t,) = md["topics"]
    assert t["topic"] == topic and "error" not in t
    assert sorted(p["partition"] for p in t["partitions"]) == [0, 1, 2, 3]
    assert all(p["leader"] in range(broker.workers) for p in t["partitions"])
    produce_confluent(broker.bootstrap, topic, make_messages(10, keys=10, tag="kcat"))
    out = subprocess.run(
        [kcat(), "-C", "-b", broker.bootstrap, "-t", topic, "-o", "beginning", "-e", "-q", "-f", "%s\n"],
        capture_output=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    assert sorted(out) == sorted(v for _, v in make_messages(10, keys=10, tag="kcat"))
