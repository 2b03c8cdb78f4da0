"""Produce validation on compacted topics against a real ``shardbroker serve`` (2 workers): a
record without a key refuses its whole batch with INVALID_RECORD (87), as Kafka's LogValidator
does, seen by librdkafka's delivery reports, kafka-python's futures, the LocalProducer and raw
Produce requests (KIP-467 ``record_errors`` from v8), the owner's worker or a forwarding one; and
the rule follows ``cleanup.policy`` when IncrementalAlterConfigs changes it at run time."""

from __future__ import annotations

import warnings
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from shardbroker.client.connection import BrokerConnection, KafkaApiError
from shardbroker.client.local_producer import LocalProducer
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, end_offsets

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.errors

pytestmark = pytest.mark.integration

COMPACT = {"cleanup.policy": "compact"}
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def broker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(workers=2)


def why(topic: str) -> str:
    return f"Compacted topic cannot accept message without key in topic partition {topic}-0"


def leader(broker: BrokerProcess, topic: str) -> int:
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(topic=topic, timeout=10)
    return int(md.topics[topic].partitions[0].leader)


def raw_produce(broker: BrokerProcess, node: int, topic: str, records: bytes, version: int) -> Any:
    """One Produce of ``records`` to partition 0, sent to worker ``node``; its partition answer."""
    with BrokerConnection(broker.host, broker.ports[node], timeout=TIMEOUT).connect() as conn:
        answer: m.ProduceResponse = conn.send(
            m.ProduceRequest(
                acks=-1,
                timeout_ms=10_000,
                topic_data=[
                    m.ProduceRequest.TopicProduceData(
                        name=topic,
                        partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=records)],
                    )
                ],
            ),
            version,
        )
    ((p,),) = [t.partition_responses for t in answer.responses]
    return p


def batch(keys: list[bytes | None]) -> bytes:
    builder = RecordBatchBuilder()
    for k in keys:
        builder.append(b"value", key=k)
    return builder.build()


def confluent_reports(bootstrap: str, topic: str, keys: list[bytes | None], linger_ms: int) -> list[Any]:
    """librdkafka's delivery report errors (None: delivered) for one record per key, in order."""
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms})
    reports: list[Any] = [...] * len(keys)
    for i, k in enumerate(keys):

        def report(err: Any, _msg: Any, i: int = i) -> None:
            reports[i] = err

        producer.produce(topic, b"value", key=k, partition=0, on_delivery=report)
    assert producer.flush(TIMEOUT) == 0
    return reports


def test_librdkafka_gets_invalid_record_in_its_delivery_report(broker: BrokerProcess) -> None:
    topic = "compacted-confluent"
    create_topic(broker.bootstrap, topic, 1, COMPACT)
    (err,) = confluent_reports(broker.bootstrap, topic, [None], linger_ms=0)
    assert err is not None and err.code() == KafkaError.INVALID_RECORD
    assert confluent_reports(broker.bootstrap, topic, [b"k"], linger_ms=0) == [None]
    # One batch of two keyless records around a keyed one: librdkafka reads record_errors
    # (KIP-467), failing the named records with INVALID_RECORD and the other with
    # _INVALID_DIFFERENT_RECORD (with a single record error, 2.16 fails the whole batch with
    # INVALID_RECORD); none of them is written.
    reports = confluent_reports(broker.bootstrap, topic, [None, b"b", None], linger_ms=200)
    assert [e.code() for e in reports] == [
        KafkaError.INVALID_RECORD,
        KafkaError._INVALID_DIFFERENT_RECORD,
        KafkaError.INVALID_RECORD,
    ]
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 1}


def test_kafka_python_future_raises_invalid_record(broker: BrokerProcess) -> None:
    topic = "compacted-kafka-python"
    create_topic(broker.bootstrap, topic, 1, COMPACT)
    producer = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, retries=0)
    try:
        with pytest.raises(kafka.errors.InvalidRecordError):
            producer.send(topic, b"value", partition=0).get(timeout=TIMEOUT)
        assert producer.send(topic, b"value", key=b"k", partition=0).get(timeout=TIMEOUT).offset == 0
    finally:
        producer.close()


@pytest.mark.parametrize("version", [3, 7, 8, 9, 10, 11])
def test_raw_produce_names_the_keyless_records_from_v8(broker: BrokerProcess, version: int) -> None:
    topic = f"compacted-raw-v{version}"
    create_topic(broker.bootstrap, topic, 1, COMPACT)
    owner = leader(broker, topic)
    p = raw_produce(broker, owner, topic, batch([b"a", None, b"c", None, b"e"]), version)
    assert (p.error_code, p.base_offset) == (ErrorCode.INVALID_RECORD, -1)
    if version >= 8:
        assert [(e.batch_index, e.batch_index_error_message) for e in p.record_errors] == [
            (1, why(topic)),
            (3, why(topic)),
        ]
        assert p.error_message == (
            "One or more records have been rejected due to 2 record errors in total, and only "
            f"showing the first three errors at most: [RecordError(batchIndex=1, message='{why(topic)}'), "
            f"RecordError(batchIndex=3, message='{why(topic)}')]"
        )
    else:
        assert p.record_errors == [] and p.error_message is None
    # Sent to the other worker, the batch is forwarded to the owner, which refuses it the same;
    # its ack carries only the code.
    forwarded = raw_produce(broker, 1 - owner, topic, batch([None]), version)
    assert (forwarded.error_code, forwarded.base_offset) == (ErrorCode.INVALID_RECORD, -1)
    assert raw_produce(broker, owner, topic, batch([b"a", b"b"]), version).base_offset == 0
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 2}


def test_local_producer_gets_invalid_record(broker: BrokerProcess) -> None:
    topic = "compacted-local"
    create_topic(broker.bootstrap, topic, 1, COMPACT)
    with LocalProducer(str(broker.data_dir)) as producer:
        (refused,) = producer.send_batch(topic, [b"v1", b"v2"], partition=0)
        with pytest.raises(KafkaApiError) as err:
            refused.result(TIMEOUT)
        assert err.value.error_code == ErrorCode.INVALID_RECORD
        (keyed,) = producer.send_batch(topic, [b"v1", b"v2"], [b"k1", b"k2"], partition=0)
        assert keyed.result(TIMEOUT) == 0


def test_the_rule_follows_cleanup_policy_changes_at_run_time(broker: BrokerProcess) -> None:
    topic = "compacted-later"
    create_topic(broker.bootstrap, topic, 1, {"cleanup.policy": "delete"})
    owner = leader(broker, topic)
    assert raw_produce(broker, owner, topic, batch([None]), 11).error_code == 0
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})

    def set_policy(policy: str) -> None:
        entry = ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[entry])
        admin.incremental_alter_configs([res])[res].result(TIMEOUT)

    # The owner applies the change with its next metadata image: until then a keyless batch
    # may still be written, so each step waits for the answer it expects.
    def keyless_answer(refused: bool) -> Any:
        p = raw_produce(broker, owner, topic, batch([None]), 11)
        return p if bool(p.error_code) == refused else None

    set_policy("compact,delete")
    refused = wait_for(lambda: keyless_answer(True), TIMEOUT, "a refusal after cleanup.policy=compact,delete")
    assert refused.error_code == ErrorCode.INVALID_RECORD
    assert [e.batch_index for e in refused.record_errors] == [0]
    set_policy("delete")
    wait_for(lambda: keyless_answer(False), TIMEOUT, "an append after cleanup.policy=delete")
