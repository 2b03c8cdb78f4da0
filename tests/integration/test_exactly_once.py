"""Exactly-once consume-transform-produce with confluent-kafka against a live two-worker broker:
a transactional producer commits its consumer group's offsets in its transactions
(AddOffsetsToTxn + TxnOffsetCommit, broker/txn_offset_commits.py), every 5th transaction is
aborted and its input processed again. A read_committed consumer of the output sees each input
once; a read_uncommitted one sees the aborted copies too; the group's committed offsets end at
the input's end offsets (aborted transactions' offsets never became committed ones).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC, partition_for
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


def _producer(bootstrap: str) -> Any:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "transactional.id": "eos-loop-1", "linger.ms": 5}
    )
    producer.init_transactions(IO_TIMEOUT)
    return producer


def _committed(consumer: Any, source: str) -> dict[int, int]:
    tps = [confluent_kafka.TopicPartition(source, p) for p in range(PARTITIONS)]
    return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=IO_TIMEOUT)}


def _retried(call: Callable[[float], None]) -> None:
    """``call(timeout)`` again while it fails with a retriable error (librdkafka's advice)."""
    for _ in range(20):
        try:
            call(IO_TIMEOUT)
            return
        except confluent_kafka.KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            time.sleep(0.5)
    call(IO_TIMEOUT)


def transform_loop(
    bootstrap: str, source: str, sink: str, kill: Callable[[], None] | None = None
) -> tuple[list[bytes], list[bytes]]:
    """Run the loop until the group's committed offsets reach the input's end; ``(committed
    outputs, aborted outputs)`` as the client saw them. ``kill`` runs before the 10th
    transaction; a transaction that fails is aborted (or its producer replaced, if fenced or
    fatal) and its input read again from the committed offsets."""
    consumer = _consumer(bootstrap, "read_committed", GROUP)
    producer = _producer(bootstrap)
    committed: list[bytes] = []
    aborted: list[bytes] = []
    done = dict.fromkeys(range(PARTITIONS), RECORDS // PARTITIONS)
    try:
        consumer.subscribe([source])
        deadline = time.monotonic() + 180
        txn = 0
        while True:
            assert time.monotonic() < deadline, f"{len(committed)} of {RECORDS} committed"
            msgs = [m for m in consumer.consume(BATCH, timeout=1.0) if m.error() is None]
            if not msgs:
                if _committed(consumer, source) == done:
                    break
                continue
            txn += 1
            if kill is not None and txn == 10:
                kill()
            outputs = [b"out-" + m.value() for m in msgs]
            try:
                producer.begin_transaction()
                for m, out in zip(msgs, outputs, strict=True):
                    producer.produce(sink, value=out, partition=m.partition())
                producer.send_offsets_to_transaction(
                    consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), IO_TIMEOUT
                )
                if txn % 5 == 0:
                    assert producer.flush(IO_TIMEOUT) == 0  # in the log (an abort purges unsent ones)
                    _retried(producer.abort_transaction)
                    aborted += outputs
                else:
                    _retried(producer.commit_transaction)
                    committed += outputs
                    continue
            except confluent_kafka.KafkaException as exc:
                assert kill is not None, exc  # no failure without a kill
                if exc.args[0].txn_requires_abort():
                    _retried(producer.abort_transaction)
                else:
                    producer = _producer(bootstrap)  # fenced or fatal: a new one aborts the old
            for p, offset in _committed(consumer, source).items():
                position = offset if offset >= 0 else confluent_kafka.OFFSET_BEGINNING
                consumer.seek(confluent_kafka.TopicPartition(source, p, position))
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


def _inputs(broker: BrokerProcess) -> list[bytes]:
    create_topic(broker.bootstrap, "eos-in", PARTITIONS)
    create_topic(broker.bootstrap, "eos-out", PARTITIONS)
    inputs = [str(i).encode() for i in range(RECORDS)]
    produce_confluent(
        broker.bootstrap,
        "eos-in",
        [(b"k", v) for v in inputs],
        partition_of={i: i % PARTITIONS for i in range(RECORDS)},
    )
    return sorted(b"out-" + v for v in inputs)


def test_consume_transform_produce_with_aborts(broker: BrokerProcess) -> None:
    expected = _inputs(broker)
    committed, aborted = transform_loop(broker.bootstrap, "eos-in", "eos-out")
    assert aborted, "some transactions were aborted"
    assert sorted(committed) == expected
    assert sorted(read_all(broker.bootstrap, "eos-out", "read_committed", RECORDS)) == expected
    uncommitted = read_all(broker.bootstrap, "eos-out", "read_uncommitted", RECORDS + len(aborted))
    assert sorted(uncommitted) == sorted(expected + aborted)


def test_the_group_coordinators_worker_killed_mid_run(broker: BrokerProcess) -> None:
    """SIGKILL the worker leading the group's ``__consumer_offsets`` partition before the 10th
    transaction (the supervisor restarts it; it reloads the offsets, pending ones included)."""
    expected = _inputs(broker)
    partition = partition_for(GROUP, 50)
    killed: list[tuple[int, int]] = []

    def kill() -> None:
        md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=30)
        leader = md.topics[OFFSETS_TOPIC].partitions[partition].leader
        killed.append((leader, broker.worker_pid(leader)))
        os.kill(killed[0][1], signal.SIGKILL)

    transform_loop(broker.bootstrap, "eos-in", "eos-out", kill)
    ((leader, pid),) = killed
    assert broker.worker_pid(leader) != pid, "the supervisor restarted the killed worker"
    assert sorted(read_all(broker.bootstrap, "eos-out", "read_committed", RECORDS)) == expected
