"""Exactly-once consume-transform-produce with confluent-kafka against a live two-worker broker,
with workers SIGKILLed at random points.

The application (``transform_loop``) is written as a Kafka user writes one, after
confluent-kafka's eos-transactions example and librdkafka's transactional error classes: read
keyed records of topic A (read_committed, in a group), write one output per input to B in a
transaction that also commits the group's offsets (send_offsets_to_transaction: AddOffsetsToTxn
+ TxnOffsetCommit), and abort 20% of the transactions (seeded RNG). A failed call is retried
while retriable; an abortable error aborts; a fatal one (fenced, or a lost epoch) replaces the
producer with a new one of the same transactional.id; after any abort the consumer rewinds to
the group's committed offsets. Meanwhile a killer thread SIGKILLs random workers (the
transaction coordinator's, a partition leader's, the group coordinator's) at random progress
points; the supervisor respawns them, which reload their logs, producer state, transaction and
group coordinators.

Then: a read_committed consumer of B sees each input's output exactly once and in order per
key; a read_uncommitted one sees everything acknowledged, aborted outputs included, and nothing
that was never produced; the group's committed offsets on A are A's end offsets.
The CI variant (20,000 records, 3 kills) takes ~35 s; the slow one (100,000 records, 6 kills) ~45 s.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC, partition_for
from shardbroker.broker.transaction_state_manager import TRANSACTION_STATE_TOPIC
from tests.integration.broker_process import BrokerProcess, listening_socket_owner, wait_for
from tests.integration.kafka_clients import (
    IO_TIMEOUT,
    Rec,
    create_topic,
    end_offsets,
    index_of,
    make_messages,
    produce_confluent,
)

pytestmark = pytest.mark.integration

SOURCE, SINK = "eos-in", "eos-out"
PARTITIONS = 4
KEYS = 64
BATCH = 500
GROUP = "eos-loop"
TRANSACTIONAL_ID = "eos-loop-1"
ABORT_RATIO = 0.2
#: A client's reconnect backoff and retry settings for a broker whose workers restart in ~1 s
#: (librdkafka's reconnect.backoff.max.ms default, 10 s, would dominate the run).
CLIENT_BACKOFF = {"reconnect.backoff.max.ms": 1000, "retry.backoff.max.ms": 1000}
T = TypeVar("T")


def _consumer(bootstrap: str, isolation: str, group: str) -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "isolation.level": isolation,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **CLIENT_BACKOFF,
        }
    )


def _producer(bootstrap: str) -> Any:
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": TRANSACTIONAL_ID,
            "linger.ms": 5,
            **CLIENT_BACKOFF,
        }
    )
    _retried(lambda: producer.init_transactions(IO_TIMEOUT))
    return producer


def _retried(call: Callable[[], T]) -> T:
    """``call()`` again while it fails with a retriable error (librdkafka's advice for the
    transactional calls and for committed())."""
    for _ in range(30):
        try:
            return call()
        except confluent_kafka.KafkaException as exc:
            if not exc.args[0].retriable():
                raise
            time.sleep(0.5)
    return call()


def _committed(consumer: Any) -> dict[int, int]:
    tps = [confluent_kafka.TopicPartition(SOURCE, p) for p in range(PARTITIONS)]
    found = _retried(lambda: consumer.committed(tps, timeout=IO_TIMEOUT))
    return {tp.partition: tp.offset for tp in found}


def _rewind(consumer: Any) -> None:
    """Back to the group's committed offsets (the start, where none is committed yet)."""
    for p, offset in _committed(consumer).items():
        position = offset if offset >= 0 else confluent_kafka.OFFSET_BEGINNING
        try:
            consumer.seek(confluent_kafka.TopicPartition(SOURCE, p, position))
        except confluent_kafka.KafkaException as exc:
            # Not assigned right now (a rebalance after a coordinator restart): its assignment
            # starts at the committed offset anyway.
            if exc.args[0].code() not in (
                confluent_kafka.KafkaError._STATE,
                confluent_kafka.KafkaError._UNKNOWN_PARTITION,
            ):
                raise


@dataclass
class Outcome:
    """What the application saw: outputs per transaction outcome, and every output the client
    acknowledged (so in B's log, whatever became of its transaction)."""

    committed: list[bytes] = field(default_factory=list)
    aborted: list[bytes] = field(default_factory=list)
    failed: list[bytes] = field(default_factory=list)
    acked: Counter[bytes] = field(default_factory=Counter)
    transactions: int = 0
    errors: list[str] = field(default_factory=list)
    progress: int = 0  # inputs committed so far, read by the killer thread


def _transaction(producer: Any, consumer: Any, msgs: list[Any], abort: bool, on_delivery: Any) -> None:
    """One transaction: an output per input, the inputs' next offsets for the group, then commit
    (or abort, after the outputs are in the log). A KafkaException is the caller's to handle."""
    producer.begin_transaction()
    offsets: dict[int, int] = {}
    for m in msgs:
        producer.produce(SINK, b"out-" + m.value(), m.key(), partition=m.partition(), on_delivery=on_delivery)
        offsets[m.partition()] = m.offset() + 1
    positions = [confluent_kafka.TopicPartition(SOURCE, p, o) for p, o in offsets.items()]
    group = consumer.consumer_group_metadata()
    _retried(lambda: producer.send_offsets_to_transaction(positions, group, IO_TIMEOUT))
    if abort:
        assert producer.flush(IO_TIMEOUT) == 0  # in the log (an abort purges unsent ones)
        _retried(lambda: producer.abort_transaction(IO_TIMEOUT))
    else:
        _retried(lambda: producer.commit_transaction(IO_TIMEOUT))


def _recover(producer: Any, bootstrap: str, error: Any) -> Any:
    """After a failed transaction: the producer to go on with (librdkafka's error classes: an
    abortable error is aborted; a fatal one, also from that abort, needs a new producer)."""
    if error.txn_requires_abort():
        try:
            _retried(lambda: producer.abort_transaction(IO_TIMEOUT))
            return producer
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0]
    if error.fatal():  # the old producer is unusable (flush() too raises the fatal error)
        return _producer(bootstrap)  # bumps the epoch: fences the old one, aborts what it left
    raise confluent_kafka.KafkaException(error)


def transform_loop(bootstrap: str, ends: dict[int, int], seed: int, deadline: float, out: Outcome) -> None:
    """Run until the group's committed offsets on A reach ``ends``; what happened goes to ``out``."""
    rng = random.Random(seed)
    consumer = _consumer(bootstrap, "read_committed", GROUP)
    producer = _producer(bootstrap)

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            out.acked[msg.value()] += 1

    try:
        consumer.subscribe([SOURCE])
        while True:
            assert time.monotonic() < deadline, f"{out.progress} of {sum(ends.values())} committed"
            msgs = [m for m in consumer.consume(BATCH, timeout=0.5) if m.error() is None]
            if not msgs:
                if _committed(consumer) == ends:
                    return
                continue
            out.transactions += 1
            outputs = [b"out-" + m.value() for m in msgs]
            abort = rng.random() < ABORT_RATIO
            try:
                _transaction(producer, consumer, msgs, abort, on_delivery)
            except confluent_kafka.KafkaException as exc:
                error = exc.args[0]
                out.errors.append(f"{error.name()}: {error.str()}")
                print(f"transaction {out.transactions} failed: {out.errors[-1]}")
                out.failed += outputs
                producer = _recover(producer, bootstrap, error)
            else:
                if not abort:
                    out.committed += outputs
                    out.progress += len(msgs)
                    continue
                out.aborted += outputs
            _rewind(consumer)
    finally:
        consumer.close()


def _leader(bootstrap: str, topic: str, partition: Callable[[int], int]) -> int:
    """The leader of ``topic``'s partition ``partition(number of partitions)``, now."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=30)
    partitions = md.topics[topic].partitions
    return int(partitions[partition(len(partitions))].leader)


def _roles(rng: random.Random) -> dict[str, tuple[str, Callable[[int], int]]]:
    """Role -> (topic, partition of that topic) whose leader holds it."""
    p_in, p_out = rng.randrange(PARTITIONS), rng.randrange(PARTITIONS)
    return {
        "transaction coordinator": (TRANSACTION_STATE_TOPIC, lambda n: partition_for(TRANSACTIONAL_ID, n)),
        "group coordinator": (OFFSETS_TOPIC, lambda n: partition_for(GROUP, n)),
        f"leader of {SOURCE}-{p_in}": (SOURCE, lambda _: p_in),
        f"leader of {SINK}-{p_out}": (SINK, lambda _: p_out),
    }


class Killer(threading.Thread):
    """SIGKILLs ``kills`` workers at random points: after a random share of the inputs is
    committed, plus a random 0-400 ms (a transaction takes ~150-400 ms: so into any phase of
    one). The victims: the transaction coordinator's worker, a partition leader's, the group
    coordinator's, then any of these. Each kill waits for the supervisor's respawn, and 2 s more,
    before the next: one worker is always up for the clients. (With every broker down at once,
    librdkafka 2.16 re-bootstraps and its transactional producer can hang for good in
    send_offsets_to_transaction: the decommissioned broker handle never terminates. Seen with
    seed 7 and 10 kills; a client bug, not the broker's.)"""

    def __init__(self, broker: BrokerProcess, out: Outcome, total: int, kills: int, seed: int) -> None:
        super().__init__(name="eos-killer", daemon=True)
        self.broker, self.out, self.stop = broker, out, threading.Event()
        self.rng = random.Random(seed)
        self.points = sorted(int(total * self.rng.uniform(0.05, 0.8)) for _ in range(kills))
        self.killed: list[tuple[str, int, int, int]] = []  # (role, node, pid, progress)
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            roles = _roles(self.rng)
            names = list(roles)
            order = [names[0], self.rng.choice(names[2:]), names[1]]
            for point in self.points:
                while self.out.progress < point:
                    if self.stop.wait(0.02):
                        return
                time.sleep(self.rng.uniform(0, 0.4))
                role = order.pop(0) if order else self.rng.choice(names)
                node = _leader(self.broker.bootstrap, *roles[role])
                pid = self.broker.worker_pid(node)
                os.kill(pid, signal.SIGKILL)
                self.killed.append((role, node, pid, self.out.progress))
                # The supervisor's backoff grows with each restart within 30 s (0.1 s ... 10 s).
                port = self.broker.base_port + node
                wait_for(
                    lambda p=pid, port=port: (
                        listening_socket_owner(port, self.broker.worker_pids()) not in ([], [p])
                    ),
                    60,
                    f"worker {node} respawned",
                )
                time.sleep(2.0)  # the clients reconnect before another worker may go down
        except BaseException as exc:  # re-raised by the test's thread
            self.failure = exc


def read_all(bootstrap: str, topic: str, isolation: str, expected: int) -> list[Rec]:
    """Every record of ``topic`` that ``isolation`` shows: until ``expected`` were read, then 2 s
    more (anything beyond ``expected`` is then a failure the caller sees)."""
    consumer = _consumer(bootstrap, isolation, f"reader-{isolation}")
    got: list[Rec] = []
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
            assert time.monotonic() < deadline, f"{len(got)} of {expected} read ({isolation})"
            for m in consumer.consume(10_000, timeout=0.5):
                assert m.error() is None, m.error()
                got.append(Rec(m.partition(), m.offset(), m.key(), m.value()))
            if quiet_until is None and len(got) >= expected:
                quiet_until = time.monotonic() + 2.0
    finally:
        consumer.close()
    return got


def per_key(records: Sequence[tuple[bytes, bytes]]) -> dict[bytes, list[bytes]]:
    """key -> its values in the order given."""
    found: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value in records:
        found[key].append(value)
    return found


def run_exactly_once(broker: BrokerProcess, records: int, kills: int, seed: int) -> None:
    create_topic(broker.bootstrap, SOURCE, PARTITIONS)
    create_topic(broker.bootstrap, SINK, PARTITIONS)
    inputs = make_messages(records, KEYS, "in", value_size=40)
    produce_confluent(broker.bootstrap, SOURCE, inputs)
    ends = end_offsets("confluent", broker.bootstrap, SOURCE, PARTITIONS)
    assert sum(ends.values()) == records

    started = time.monotonic()
    out = Outcome()
    killer = Killer(broker, out, records, kills, seed)
    killer.start()
    try:
        transform_loop(broker.bootstrap, ends, seed, started + 60 + records / 200, out)
    finally:
        killer.stop.set()
        killer.join(60)
    took = time.monotonic() - started
    print(
        f"{records} records, {out.transactions} transactions ({len(out.aborted)} outputs aborted, "
        f"{len(out.failed)} in failed ones) in {took:.1f} s; kills {killer.killed}; errors {out.errors}"
    )
    if killer.failure is not None:
        raise killer.failure
    assert len(killer.killed) == kills, killer.killed
    assert out.aborted, "some transactions were aborted"

    expected = {k: [b"out-" + v for v in vs] for k, vs in per_key(inputs).items()}
    committed = read_all(broker.bootstrap, SINK, "read_committed", records)
    got = per_key([(r.key or b"", r.value) for r in committed])
    for key, values in expected.items():
        seen = [index_of(v) for v in got.get(key, [])]
        assert got.get(key) == values, (
            f"key {key!r}: {len(seen)} outputs, {len(values)} inputs; "
            f"duplicates {[i for i, n in Counter(seen).items() if n > 1][:5]}, "
            f"missing {sorted({index_of(v) for v in values} - set(seen))[:5]}, "
            f"in order {seen == sorted(seen)}"
        )
    assert set(got) == set(expected)

    acked = sum(out.acked.values())
    uncommitted = Counter(r.value for r in read_all(broker.bootstrap, SINK, "read_uncommitted", acked))
    assert not out.acked - uncommitted, "every acknowledged output is in B, aborted ones included"
    produced = Counter(out.committed + out.aborted + out.failed)
    assert not uncommitted - produced, "nothing in B that the loop did not produce"
    assert sum(uncommitted.values()) >= len(out.committed) + len(out.aborted)

    consumer = _consumer(broker.bootstrap, "read_committed", GROUP)
    try:
        assert _committed(consumer) == ends == end_offsets("confluent", broker.bootstrap, SOURCE, PARTITIONS)
    finally:
        consumer.close()


@pytest.mark.kafka_api(
    "InitProducerId",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "TxnOffsetCommit",
    "EndTxn",
    "JoinGroup",
    "SyncGroup",
    "OffsetFetch",
    "Fetch",
    "Produce",
    client="confluent-kafka",
)
def test_consume_transform_produce_with_aborts_and_kills(broker: BrokerProcess) -> None:
    run_exactly_once(broker, records=20_000, kills=3, seed=16)


@pytest.mark.slow
def test_consume_transform_produce_soak(broker: BrokerProcess) -> None:
    run_exactly_once(broker, records=100_000, kills=6, seed=1600)
