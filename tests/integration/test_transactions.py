"""Kafka transactions against a live two-worker broker, with real clients: the transaction
coordinator (broker/transaction_coordinator.py), its markers on both workers, fencing, and its
state reloaded after a restart or a kill -9.

A read_uncommitted consumer sees committed and aborted records alike (read_committed Fetch is
built elsewhere); the markers are checked in the segment files with ``shardbroker dump-log``,
as an operator would.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import aiokafka
import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from shardbroker.client.connection import KafkaApiError
from shardbroker.client.local_producer import LocalProducer
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import IO_TIMEOUT, consume_confluent, create_topic, kafka

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]
TOPICS = ("txn-a", "txn-b")
PARTITIONS = 2
UNCOMMITTED = {"isolation.level": "read_uncommitted"}


def transactional_producer(bootstrap: str, tid: str) -> Any:
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": tid,
            "transaction.timeout.ms": 60000,
            "linger.ms": 5,
            "message.timeout.ms": 60000,  # at most transaction.timeout.ms
        }
    )


def leaders(bootstrap: str, topic: str) -> set[int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=30)
    return {p.leader for p in md.topics[topic].partitions.values()}


def send_each(producer: Any, tag: str, per_partition: int) -> None:
    """``per_partition`` records into every partition of both topics, then wait for the acks."""
    for topic in TOPICS:
        for p in range(PARTITIONS):
            for i in range(per_partition):
                producer.produce(topic, value=f"{tag}-{topic}-{p}-{i}".encode(), partition=p)
    assert producer.flush(IO_TIMEOUT) == 0


def dump(broker: BrokerProcess, topic: str, partition: int) -> str:
    segment = broker.data_dir / f"{topic}-{partition}" / "00000000000000000000.log"
    out = subprocess.run(
        [sys.executable, "-m", "shardbroker.cli.main", "dump-log", "--deep-iteration", str(segment)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def markers(broker: BrokerProcess, topic: str, partition: int) -> list[tuple[str, int, int]]:
    """(COMMIT|ABORT, producer id, epoch) of each marker of a partition, in log order."""
    found = []
    batch: tuple[int, int] = (-1, -1)
    for line in dump(broker, topic, partition).splitlines():
        header = re.search(r"producerId: (-?\d+) producerEpoch: (-?\d+)", line)
        if header and line.startswith("baseOffset"):
            batch = (int(header.group(1)), int(header.group(2)))
        marker = re.search(r"endTxnMarker: (COMMIT|ABORT)", line)
        if marker:
            found.append((marker.group(1), *batch))
    return found


def values(broker: BrokerProcess, topic: str, partition: int) -> list[bytes]:
    """Every data record of the partition, read_uncommitted (up to its last data batch: a
    client never sees the markers)."""
    last = [
        int(m.group(1))
        for line in dump(broker, topic, partition).splitlines()
        if (m := re.match(r"baseOffset: \d+ lastOffset: (\d+) .*isControl: false", line))
    ]
    records = consume_confluent(broker.bootstrap, topic, {partition: max(last) + 1}, UNCOMMITTED)
    return [r.value for r in sorted(records, key=lambda r: r.offset)]


def test_commit_and_abort_over_both_workers_with_markers_in_the_log(broker: BrokerProcess) -> None:
    for topic in TOPICS:
        create_topic(broker.bootstrap, topic, PARTITIONS)
    assert set().union(*(leaders(broker.bootstrap, t) for t in TOPICS)) == {0, 1}, "both workers lead"
    producer = transactional_producer(broker.bootstrap, "it-commit-abort")
    producer.init_transactions(IO_TIMEOUT)
    producer.begin_transaction()
    send_each(producer, "c", 10)
    producer.commit_transaction(IO_TIMEOUT)
    producer.begin_transaction()
    send_each(producer, "a", 5)
    producer.abort_transaction(IO_TIMEOUT)

    for topic in TOPICS:
        for p in range(PARTITIONS):
            got = values(broker, topic, p)
            assert got == [f"c-{topic}-{p}-{i}".encode() for i in range(10)] + [
                f"a-{topic}-{p}-{i}".encode() for i in range(5)
            ], f"{topic}-{p}"
            found = markers(broker, topic, p)
            assert [m[0] for m in found] == ["COMMIT", "ABORT"], f"{topic}-{p}: {found}"
            assert len({m[1:] for m in found}) == 1  # one producer id and epoch
    # the coordinator's records are Kafka's: one key per record, in __transaction_state
    state_dirs = [d for d in broker.data_dir.iterdir() if d.name.startswith("__transaction_state-")]
    assert len(state_dirs) == 50


def test_the_older_producer_is_fenced(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "txn-fence", 1)
    old = transactional_producer(broker.bootstrap, "it-fence")
    old.init_transactions(IO_TIMEOUT)
    old.begin_transaction()
    old.produce("txn-fence", value=b"zombie")
    assert old.flush(IO_TIMEOUT) == 0
    new = transactional_producer(broker.bootstrap, "it-fence")
    new.init_transactions(IO_TIMEOUT)  # aborts the zombie's transaction, bumps the epoch
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        old.produce("txn-fence", value=b"late")
        old.commit_transaction(IO_TIMEOUT)
    error = raised.value.args[0]
    assert error.fatal() or error.code() in (
        confluent_kafka.KafkaError._FENCED,
        confluent_kafka.KafkaError.PRODUCER_FENCED,
        confluent_kafka.KafkaError.INVALID_PRODUCER_EPOCH,
    ), error
    new.begin_transaction()
    new.produce("txn-fence", value=b"fresh")
    new.commit_transaction(IO_TIMEOUT)
    (zombie_abort, fresh_commit) = markers(broker, "txn-fence", 0)
    assert zombie_abort[0] == "ABORT" and fresh_commit[0] == "COMMIT"
    assert zombie_abort[1] == fresh_commit[1] and fresh_commit[2] > 0  # same id, bumped epoch
    assert values(broker, "txn-fence", 0) == [b"zombie", b"fresh"]


@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_the_coordinator_reloads_after_a_restart(broker_factory: Factory, how: str) -> None:
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "txn-restart", 2)
    first = transactional_producer(broker.bootstrap, "it-restart")
    first.init_transactions(IO_TIMEOUT)
    first.begin_transaction()
    for p in range(2):
        first.produce("txn-restart", value=b"before", partition=p)
    first.commit_transaction(IO_TIMEOUT)
    del first
    if how == "sigterm":
        assert broker.stop() == 0
    else:
        broker.kill()
    broker.start()
    second = transactional_producer(broker.bootstrap, "it-restart")
    second.init_transactions(IO_TIMEOUT)
    second.begin_transaction()
    for p in range(2):
        second.produce("txn-restart", value=b"after", partition=p)
    second.commit_transaction(IO_TIMEOUT)
    for p in range(2):
        # A restart right after the commit may find it prepared and write its markers again (as
        # Kafka's coordinator would): a second COMMIT of the same epoch, harmless.
        found = markers(broker, "txn-restart", p)
        before, after = found[0], found[-1]
        assert {m[0] for m in found} == {"COMMIT"} and set(found[:-1]) == {before}, found
        assert after[1] == before[1] and after[2] == before[2] + 1, found  # epoch bumped
        assert values(broker, "txn-restart", p) == [b"before", b"after"]


def test_kafka_python_and_aiokafka_transactional_producers(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "txn-clients", 1)
    kp = kafka.KafkaProducer(bootstrap_servers=broker.bootstrap, transactional_id="it-kafka-python")
    try:
        kp.init_transactions()
        kp.begin_transaction()
        kp.send("txn-clients", b"kafka-python", partition=0)
        kp.commit_transaction()
        kp.begin_transaction()
        kp.send("txn-clients", b"kafka-python-aborted", partition=0).get(timeout=IO_TIMEOUT)
        kp.abort_transaction()
    finally:
        kp.close()

    async def aio() -> None:
        producer = aiokafka.AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap, transactional_id="it-aiokafka"
        )
        await producer.start()
        try:
            async with producer.transaction():
                await producer.send_and_wait("txn-clients", b"aiokafka", partition=0)
        finally:
            await producer.stop()

    asyncio.run(aio())
    assert [m[0] for m in markers(broker, "txn-clients", 0)] == ["COMMIT", "ABORT", "COMMIT"]
    assert values(broker, "txn-clients", 0) == [b"kafka-python", b"kafka-python-aborted", b"aiokafka"]


def test_a_local_producer_cannot_open_a_transaction(broker: BrokerProcess) -> None:
    create_topic(broker.bootstrap, "txn-local", 1)
    builder = RecordBatchBuilder(producer_id=77, producer_epoch=0, base_sequence=0, is_transactional=True)
    builder.append(b"no coordinator would ever end this")
    with LocalProducer(str(broker.data_dir)) as producer:
        refused = producer._write_bytes("txn-local", 0, 1, builder.build())
        with pytest.raises(KafkaApiError) as raised:
            refused.result(IO_TIMEOUT)
        assert raised.value.error_code == ErrorCode.INVALID_TXN_STATE
        (plain,) = producer.send_batch("txn-local", [b"plain"], partition=0)
        assert plain.result(IO_TIMEOUT) == 0  # nothing was written before
