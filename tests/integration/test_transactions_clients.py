"""Transactions across the three Python Kafka clients against a live two-worker broker: the
transactional producers of confluent-kafka, kafka-python (3.x: init/begin/commit/abort) and
aiokafka write committed and aborted transactions into one topic, open at the same time so their
records interleave in the log (an aborted range of one producer around committed records of the
others, on both workers' partitions); then every client's read_committed consumer reads exactly
the committed records of all three, and its read_uncommitted consumer reads everything.

A reader stops when its position (which moves past markers and aborted records too) reaches
the partitions' end offsets: no wait for silence.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import aiokafka
import confluent_kafka
import pytest

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic, end_offsets, kafka

pytestmark = pytest.mark.integration

TOPIC = "txn-cross"
PARTITIONS = 2
PER_SEND = 40
CLIENTS = ("confluent", "kafka-python", "aiokafka")
ISOLATIONS = ("read_committed", "read_uncommitted")
#: kafka-python's and aiokafka's consumers: no group, from the start of the assigned partitions.
ASSIGNED: dict[str, Any] = {"group_id": None, "enable_auto_commit": False, "auto_offset_reset": "earliest"}


class TxnProducer(Protocol):
    def begin(self) -> None: ...
    def send(self, values: Sequence[bytes], partition: int) -> None:
        """Write ``values`` to ``partition`` and wait for the acknowledgements."""

    def end(self, commit: bool) -> None: ...
    def close(self) -> None: ...


class ConfluentTxn:
    def __init__(self, bootstrap: str) -> None:
        self.producer = confluent_kafka.Producer(
            {"bootstrap.servers": bootstrap, "transactional.id": "cross-confluent", "linger.ms": 5}
        )
        self.producer.init_transactions(IO_TIMEOUT)

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, values: Sequence[bytes], partition: int) -> None:
        for value in values:
            self.producer.produce(TOPIC, value, partition=partition)
        assert self.producer.flush(IO_TIMEOUT) == 0

    def end(self, commit: bool) -> None:
        if commit:
            self.producer.commit_transaction(IO_TIMEOUT)
        else:
            self.producer.abort_transaction(IO_TIMEOUT)

    def close(self) -> None:
        self.producer.flush(0)


class KafkaPythonTxn:
    def __init__(self, bootstrap: str) -> None:
        self.producer = kafka.KafkaProducer(
            bootstrap_servers=bootstrap, transactional_id="cross-kafka-python"
        )
        self.producer.init_transactions()

    def begin(self) -> None:
        self.producer.begin_transaction()

    def send(self, values: Sequence[bytes], partition: int) -> None:
        for future in [self.producer.send(TOPIC, value, partition=partition) for value in values]:
            future.get(timeout=IO_TIMEOUT)

    def end(self, commit: bool) -> None:
        if commit:
            self.producer.commit_transaction()
        else:
            self.producer.abort_transaction()

    def close(self) -> None:
        self.producer.close(timeout=10)


class AiokafkaTxn:
    """aiokafka on a loop of its own, run for each step (the transaction stays open between)."""

    def __init__(self, bootstrap: str) -> None:
        async def start() -> aiokafka.AIOKafkaProducer:
            producer = aiokafka.AIOKafkaProducer(
                bootstrap_servers=bootstrap, transactional_id="cross-aiokafka"
            )
            await producer.start()
            return producer

        self.loop = asyncio.new_event_loop()
        try:
            self.producer = self.loop.run_until_complete(start())
        except BaseException:
            self.loop.close()
            raise

    def begin(self) -> None:
        self.loop.run_until_complete(self.producer.begin_transaction())

    def send(self, values: Sequence[bytes], partition: int) -> None:
        async def send() -> None:
            futures = [await self.producer.send(TOPIC, value, partition=partition) for value in values]
            await asyncio.wait_for(asyncio.gather(*futures), IO_TIMEOUT)

        self.loop.run_until_complete(send())

    def end(self, commit: bool) -> None:
        ending = self.producer.commit_transaction() if commit else self.producer.abort_transaction()
        self.loop.run_until_complete(ending)

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.producer.stop())
        finally:
            self.loop.close()


def _values(client: str, txn: int, partition: int, part: int) -> list[bytes]:
    return [f"{client}:{txn}:{partition}:{part * PER_SEND + i:04d}".encode() for i in range(PER_SEND)]


def write_interleaved(bootstrap: str) -> tuple[list[bytes], list[bytes]]:
    """Two rounds; in each, the three producers' transactions are open together, each writes to
    both partitions in two parts, then they end in another order. Round 0: confluent and aiokafka
    commit, kafka-python aborts; round 1 the opposite. (committed values, aborted values)."""
    producers: dict[str, TxnProducer] = {}
    committed: list[bytes] = []
    aborted: list[bytes] = []
    try:
        producers["confluent"] = ConfluentTxn(bootstrap)
        producers["kafka-python"] = KafkaPythonTxn(bootstrap)
        producers["aiokafka"] = AiokafkaTxn(bootstrap)
        for txn in range(2):
            for producer in producers.values():
                producer.begin()
            for part in range(2):
                for client, producer in producers.items():
                    for partition in range(PARTITIONS):
                        producer.send(_values(client, txn, partition, part), partition)
            for client in ("kafka-python", "aiokafka", "confluent"):
                commit = (client == "kafka-python") == (txn == 1)
                producers[client].end(commit)
                written = [
                    v for p in range(PARTITIONS) for part in range(2) for v in _values(client, txn, p, part)
                ]
                (committed if commit else aborted).extend(written)
    finally:
        for producer in producers.values():
            producer.close()
    return committed, aborted


def _pending(ends: Mapping[int, int], positions: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    return {p: (positions.get(p, -1), end) for p, end in ends.items() if positions.get(p, -1) < end}


def _deadline(who: str) -> Iterator[None]:
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"{who}: not at the end offsets after {IO_TIMEOUT} s"
        yield


def read_confluent(bootstrap: str, isolation: str, ends: Mapping[int, int]) -> list[tuple[int, bytes]]:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "cross-unused",  # required by the client; never joined
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    tps = [confluent_kafka.TopicPartition(TOPIC, p, confluent_kafka.OFFSET_BEGINNING) for p in ends]
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign(tps)
        positions: dict[int, int] = {}
        for _ in _deadline(f"confluent-kafka {isolation}"):
            for m in consumer.consume(10_000, timeout=0.2):
                assert m.error() is None, m.error()
                got.append((m.partition(), m.value()))
            positions = {tp.partition: tp.offset for tp in consumer.position(tps)}
            if not _pending(ends, positions):
                return got
    finally:
        consumer.close()
    raise AssertionError("unreachable")


def read_kafka_python(bootstrap: str, isolation: str, ends: Mapping[int, int]) -> list[tuple[int, bytes]]:
    consumer = kafka.KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, **ASSIGNED)
    tps = [kafka.TopicPartition(TOPIC, p) for p in ends]
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        for _ in _deadline(f"kafka-python {isolation}"):
            for tp, records in consumer.poll(timeout_ms=200, max_records=10_000).items():
                got += [(tp.partition, r.value) for r in records]
            if not _pending(ends, {tp.partition: consumer.position(tp) for tp in tps}):
                return got
    finally:
        consumer.close()
    raise AssertionError("unreachable")


async def read_aiokafka(bootstrap: str, isolation: str, ends: Mapping[int, int]) -> list[tuple[int, bytes]]:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation, **ASSIGNED)
    await consumer.start()
    tps = [aiokafka.TopicPartition(TOPIC, p) for p in ends]
    got: list[tuple[int, bytes]] = []
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for _ in _deadline(f"aiokafka {isolation}"):
            for tp, records in (await consumer.getmany(timeout_ms=200, max_records=10_000)).items():
                got += [(tp.partition, r.value) for r in records]
            if not _pending(ends, {tp.partition: await consumer.position(tp) for tp in tps}):
                return got
    finally:
        await consumer.stop()
    raise AssertionError("unreachable")


def read(client: str, bootstrap: str, isolation: str, ends: Mapping[int, int]) -> list[tuple[int, bytes]]:
    """(partition, value) of every record ``client`` reads with ``isolation``, in read order."""
    if client == "confluent":
        return read_confluent(bootstrap, isolation, ends)
    if client == "kafka-python":
        return read_kafka_python(bootstrap, isolation, ends)
    return asyncio.run(read_aiokafka(bootstrap, isolation, ends))


def check_order(who: str, records: Sequence[tuple[int, bytes]]) -> None:
    """Each transaction's records on their partition, in the order they were written."""
    runs: dict[bytes, list[int]] = defaultdict(list)
    for partition, value in records:
        client, txn, written_to, index = value.rsplit(b":", 3)
        assert int(written_to) == partition, f"{who}: {value!r} on partition {partition}"
        runs[b":".join((client, txn, written_to))].append(int(index))
    for run, indexes in runs.items():
        assert indexes == sorted(indexes), f"{who}: {run!r} out of order"


@pytest.mark.kafka_api(
    "FindCoordinator",
    "InitProducerId",
    "AddPartitionsToTxn",
    "Produce",
    "EndTxn",
    "Fetch",
    client=("confluent-kafka", "kafka-python", "aiokafka"),
)
def test_each_clients_consumers_over_each_clients_transactions(
    broker: BrokerProcess,
) -> None:
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    committed, aborted = write_interleaved(broker.bootstrap)
    assert len(committed) == len(aborted) == 3 * PARTITIONS * 2 * PER_SEND  # 3 transactions each
    ends = end_offsets("confluent", broker.bootstrap, TOPIC, PARTITIONS)
    # Each producer ended two transactions: a marker in each partition for each.
    assert sum(ends.values()) == len(committed) + len(aborted) + 3 * 2 * PARTITIONS
    expected = {"read_committed": Counter(committed), "read_uncommitted": Counter(committed + aborted)}
    for client in CLIENTS:
        for isolation in ISOLATIONS:
            who = f"{client} {isolation}"
            got = read(client, broker.bootstrap, isolation, ends)
            check_order(who, got)
            values = Counter(v for _, v in got)
            assert values == expected[isolation], (
                f"{who}: {sum(values.values())} records; missing {list(expected[isolation] - values)[:3]}, "
                f"unexpected {list(values - expected[isolation])[:3]}"
            )
