"""read_committed consumers of every client against a real broker, over transactional data the
test writes itself: the topic is created, the broker stopped, each partition's log given
committed, aborted and one open transaction with the storage API (batches and COMMIT/ABORT
markers, as the transaction coordinator writes them), closed cleanly, and the broker started
again on it (its producer state and ``.txnindex`` reloaded). confluent-kafka, kafka-python,
aiokafka and the LocalConsumer with read_committed see exactly the committed and plain records
below the open transaction; with read_uncommitted every data record; and each client's end
offsets (ListOffsets with its isolation level) are the LSO and the high watermark."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import confluent_kafka
import pytest

from shardbroker.client.local_consumer import LocalConsumer
from shardbroker.config.log_config import LogConfig
from shardbroker.storage.file_names import partition_dir_name
from shardbroker.storage.log import PartitionLog
from tests.integration.broker_process import BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import aiokafka, create_topic, kafka
from tests.unit.storage_batches import build_batch, marker

TOPIC = "txn-data"
PARTITIONS = 2
#: After the expected records: how long to go on reading to see that nothing else comes.
SETTLE_S = 1.5


def workload(plog: PartitionLog, partition: int) -> tuple[set[bytes], set[bytes], int, int]:
    """Append the test's transactions; ``(read_committed values, all data values, LSO, HW)``."""
    now = int(time.time() * 1000)
    seqs: dict[int, int] = {}
    committed: set[bytes] = set()
    every: set[bytes] = set()

    def data(values: list[str], pid: int = -1) -> None:
        raw = [f"{partition}-{v}".encode() for v in values]
        every.update(raw)
        if pid < 0:
            plog.append(build_batch(raw, timestamp=now))
            return
        seq = seqs.get(pid, 0)
        seqs[pid] = seq + len(raw)
        batch = build_batch(
            raw, producer_id=pid, producer_epoch=0, base_sequence=seq, attributes=0x10, timestamp=now
        )
        plog.append(batch)

    def end(pid: int, *, abort: bool) -> None:
        plog.append(marker(abort, pid=pid, timestamp=now), allow_control=True)

    data(["plain-a"])
    data(["c1-a", "c1-b"], pid=101)
    data(["x2-a"], pid=102)
    data(["c1-c"], pid=101)
    end(101, abort=False)
    end(102, abort=True)
    data(["plain-b"])
    data(["x3-a", "x3-b"], pid=103)
    end(103, abort=True)
    data(["c4-a"], pid=104)
    end(104, abort=False)
    committed = {v for v in every if b"-x" not in v}
    lso = plog.log_end_offset
    data(["open-5"], pid=105)  # never decided: the LSO stays here
    data(["after-open"])
    data(["late-6"], pid=106)
    end(106, abort=False)
    assert plog.last_stable_offset == lso
    return committed, every, lso, plog.log_end_offset


@pytest.fixture(scope="module")
def txn_broker(module_broker_factory: BrokerFactory) -> Iterator[tuple[BrokerProcess, dict[int, tuple]]]:
    broker = module_broker_factory(workers=2)
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    assert broker.stop() == 0
    expected = {}
    for p in range(PARTITIONS):
        plog = PartitionLog.open(broker.data_dir / partition_dir_name(TOPIC, p), LogConfig())
        try:
            expected[p] = workload(plog, p)
        finally:
            plog.close()
    broker.start()
    yield broker, expected


def union(expected: dict[int, tuple], i: int) -> set[bytes]:
    return set().union(*(e[i] for e in expected.values()))


def confluent_consumer(bootstrap: str, isolation: str) -> confluent_kafka.Consumer:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "unused",  # required by the client; never joined (assign only)
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )


def confluent_values(bootstrap: str, isolation: str, want: int) -> list[bytes]:
    consumer = confluent_consumer(bootstrap, isolation)
    got: list[bytes] = []
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(TOPIC, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(PARTITIONS)
            ]
        )
        deadline = time.monotonic() + 60
        settle = None
        while settle is None or time.monotonic() < settle:
            assert time.monotonic() < deadline, f"confluent-kafka {isolation}: got {sorted(got)}"
            for msg in consumer.consume(1000, timeout=0.2):
                assert msg.error() is None, msg.error()
                got.append(msg.value())
            if settle is None and len(got) >= want:
                settle = time.monotonic() + SETTLE_S
    finally:
        consumer.close()
    return got


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_confluent(txn_broker: tuple[BrokerProcess, dict[int, tuple]], isolation: str) -> None:
    broker, expected = txn_broker
    want = union(expected, 0 if isolation == "read_committed" else 1)
    got = confluent_values(broker.bootstrap, isolation, len(want))
    assert sorted(got) == sorted(want)  # each once: no aborted, no marker, nothing past the LSO
    consumer = confluent_consumer(broker.bootstrap, isolation)
    try:
        for p, (_, _, lso, hw) in expected.items():
            low, high = consumer.get_watermark_offsets(confluent_kafka.TopicPartition(TOPIC, p), timeout=30)
            assert (low, high) == (0, lso if isolation == "read_committed" else hw)
    finally:
        consumer.close()


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_kafka_python(txn_broker: tuple[BrokerProcess, dict[int, tuple]], isolation: str) -> None:
    broker, expected = txn_broker
    want = union(expected, 0 if isolation == "read_committed" else 1)
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=broker.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=isolation,
    )
    got: list[bytes] = []
    try:
        tps = [kafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + 60
        settle = None
        while settle is None or time.monotonic() < settle:
            assert time.monotonic() < deadline, f"kafka-python {isolation}: got {sorted(got)}"
            for records in consumer.poll(timeout_ms=200).values():
                got += [r.value for r in records]
            if settle is None and len(got) >= len(want):
                settle = time.monotonic() + SETTLE_S
        ends = consumer.end_offsets(tps)
    finally:
        consumer.close()
    assert sorted(got) == sorted(want)
    assert {tp.partition: o for tp, o in ends.items()} == {
        p: (e[2] if isolation == "read_committed" else e[3]) for p, e in expected.items()
    }


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_aiokafka(txn_broker: tuple[BrokerProcess, dict[int, tuple]], isolation: str) -> None:
    broker, expected = txn_broker
    want = union(expected, 0 if isolation == "read_committed" else 1)

    async def main() -> tuple[list[bytes], dict[int, int]]:
        consumer = aiokafka.AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level=isolation,
        )
        await consumer.start()
        got: list[bytes] = []
        try:
            tps = [aiokafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            deadline = time.monotonic() + 60
            settle = None
            while settle is None or time.monotonic() < settle:
                assert time.monotonic() < deadline, f"aiokafka {isolation}: got {sorted(got)}"
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    got += [r.value for r in records]
                if settle is None and len(got) >= len(want):
                    settle = time.monotonic() + SETTLE_S
            ends = await consumer.end_offsets(tps)
        finally:
            await consumer.stop()
        return got, {tp.partition: o for tp, o in ends.items()}

    got, ends = asyncio.run(main())
    assert sorted(got) == sorted(want)
    assert ends == {p: (e[2] if isolation == "read_committed" else e[3]) for p, e in expected.items()}


@pytest.mark.parametrize("isolation", ["read_committed", "read_uncommitted"])
def test_local_consumer(txn_broker: tuple[BrokerProcess, dict[int, tuple]], isolation: str) -> None:
    broker, expected = txn_broker
    for p, (committed, every, lso, hw) in expected.items():
        with LocalConsumer(str(broker.data_dir), TOPIC, p, isolation_level=isolation) as consumer:  # type: ignore[arg-type]
            assert (consumer.last_stable_offset, consumer.high_watermark) == (lso, hw)
            values = [bytes(r.value or b"") for r in consumer.records(timeout=0.2)]
            assert sorted(values) == sorted(committed if isolation == "read_committed" else every)
            assert consumer.position == (lso if isolation == "read_committed" else hw)
        with LocalConsumer(str(broker.data_dir), TOPIC, p, isolation_level=isolation) as consumer:  # type: ignore[arg-type]
            batches = list(consumer.batches())
            assert sum(b.record_count for b in batches) == len(values)  # markers never returned
        with LocalConsumer(str(broker.data_dir), TOPIC, p, offset="latest", isolation_level=isolation) as c:  # type: ignore[arg-type]
            assert c.position == (lso if isolation == "read_committed" else hw)
