"""Exactly-once consume-transform-produce with confluent-kafka against a live two-worker broker:
a transactional producer commits its consumer group's offsets in its transactions
(AddOffsetsToTxn + TxnOffsetCommit, broker/txn_offset_commits.py), every 5th transaction is
aborted and its input processed again. A read_committed consumer of the output sees each input
once; a read_uncommitted one sees the aborted copies too; the group's committed offsets end at
the input's end offsets (aborted transactions' offsets never became committed ones).
"""

from __future__ import annotations

import time
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic, produce_confluent

pytestmark = pytest.mark.integration

RECORDS = 10_000
PARTITIONS = 2
BATCH = 250
GROUP = "eos-loop"


def _consumer(bootstrap: str, isolation: str, group: str) -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
        }
    )


def transform_loop(bootstrap: str, source: str, sink: str) -> tuple[list[bytes], list[bytes]]:
    """Run the loop until every input is committed; ``(committed outputs, aborted outputs)``."""
    consumer = _consumer(bootstrap, "read_committed", GROUP)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": "eos-loop-1", "linger.ms": 5}
    )
    committed: list[bytes] = []
    aborted: list[bytes] = []
    try:
        producer.init_transactions(IO_TIMEOUT)
        consumer.subscribe([source])
        deadline = time.monotonic() + 180
        txn = 0
        while len(committed) < RECORDS:
            assert time.monotonic() < deadline, f"{len(committed)} of {RECORDS} committed"
            msgs = consumer.consume(BATCH, timeout=1.0)
            if not msgs:
                continue
            assert all(m.error() is None for m in msgs), [m.error() for m in msgs if m.error()]
            txn += 1
            producer.begin_transaction()
            outputs = [b"out-" + m.value() for m in msgs]
            for m, out in zip(msgs, outputs, strict=True):
                producer.produce(sink, value=out, partition=m.partition())
            producer.send_offsets_to_transaction(
                consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), IO_TIMEOUT
            )
            if txn % 5 == 0:
                assert producer.flush(IO_TIMEOUT) == 0  # in the log (an abort purges unsent ones)
                producer.abort_transaction(IO_TIMEOUT)
                aborted += outputs
                first: dict[int, int] = {}
                for m in msgs:
                    first.setdefault(m.partition(), m.offset())
                for p, offset in first.items():
                    consumer.seek(confluent_kafka.TopicPartition(source, p, offset))
            else:
                producer.commit_transaction(IO_TIMEOUT)
                committed += outputs
        positions = consumer.committed(
            [confluent_kafka.TopicPartition(source, p) for p in range(PARTITIONS)], timeout=IO_TIMEOUT
        )
        assert {tp.partition: tp.offset for tp in positions} == dict.fromkeys(range(PARTITIONS), RECORDS // 2)
    finally:
        consumer.close()
    return committed, aborted


def read_all(bootstrap: str, topic: str, isolation: str, expected: int) -> list[bytes]:
    """Every value of ``topic`` ``isolation`` shows: until ``expected`` were read, then 2 s more
    (anything beyond ``expected`` is then a failure the caller sees)."""
    consumer = _consumer(bootstrap, isolation, f"reader-{isolation}")
    out: list[bytes] = []
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(PARTITIONS)
            ]
        )
        deadline = time.monotonic() + IO_TIMEOUT
        quiet_until = None
        while quiet_until is None or time.monotonic() < quiet_until:
            assert time.monotonic() < deadline, f"{len(out)} of {expected} read ({isolation})"
            for m in consumer.consume(10_000, timeout=0.5):
                assert m.error() is None, m.error()
                out.append(m.value())
            if quiet_until is None and len(out) >= expected:
                quiet_until = time.monotonic() + 2.0
    finally:
        consumer.close()
    return out


def test_consume_transform_produce_with_aborts(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "eos-in", PARTITIONS)
    create_topic(broker.bootstrap, "eos-out", PARTITIONS)
    inputs = [str(i).encode() for i in range(RECORDS)]
    produce_confluent(
        broker.bootstrap,
        "eos-in",
        [(b"k", v) for v in inputs],
        partition_of={i: i % PARTITIONS for i in range(RECORDS)},
    )
    committed, aborted = transform_loop(broker.bootstrap, "eos-in", "eos-out")
    assert aborted, "some transactions were aborted"
    expected = sorted(b"out-" + v for v in inputs)
    assert sorted(committed) == expected
    assert sorted(read_all(broker.bootstrap, "eos-out", "read_committed", RECORDS)) == expected
    uncommitted = read_all(broker.bootstrap, "eos-out", "read_uncommitted", RECORDS + len(aborted))
    assert sorted(uncommitted) == sorted(expected + aborted)
