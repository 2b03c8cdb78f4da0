"""Log compaction against a real ``shardbroker serve`` (2 workers, each with its log cleaner):
Kafka Connect-style usage (a compacted topic read from the beginning by confluent-kafka,
kafka-python and aiokafka yields exactly the latest value of every live key), tombstones removed
after ``delete.retention.ms``, ``cleanup.policy`` changed at run time in both directions, and
``__consumer_offsets`` compacted by the same cleaner, with the committed offsets intact across a
restart."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import confluent_kafka
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
)

from shardbroker.broker.cleaner_process import CleanerProcess
from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.record_batch import iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import CleanAbortedError, Cleaner, CleanStats, Throttler
from shardbroker.storage.log_cleaner_manager import clean_partition
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, consume, consume_confluent, create_topic, end_offsets
from tests.integration.test_transactions import transactional_producer

pytestmark = pytest.mark.integration

BROKER = {"log.cleaner.backoff.ms": 100}
#: Small segments so records leave the active segment quickly; cleaned whenever anything is dirty.
COMPACTED = {
    "cleanup.policy": "compact",
    "segment.bytes": "16384",
    "min.cleanable.dirty.ratio": "0.01",
    "delete.retention.ms": "500",
}
Model = dict[bytes, bytes]


def produce(bootstrap: str, topic: str, records: Sequence[tuple[bytes, bytes | None]]) -> None:
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 20}
    )
    failed: list[object] = []

    def on_delivery(err: object, _msg: object) -> None:
        if err is not None:
            failed.append(err)

    for key, value in records:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=on_delivery)
    assert producer.flush(IO_TIMEOUT) == 0 and not failed, failed


def latest(bootstrap: str, topic: str, client: str = "confluent") -> tuple[Model, int]:
    """Reading the whole partition as a Connect worker does: key -> latest value (a tombstone
    removes its key), and how many records that took."""
    ends = end_offsets("confluent", bootstrap, topic, 1)
    model: Model = {}
    records = consume(client, bootstrap, topic, ends)
    offsets = [r.offset for r in records]
    assert offsets == sorted(set(offsets)), "offsets repeat or go back"
    for r in records:
        assert r.key is not None
        if r.value is None:
            model.pop(r.key, None)
        else:
            model[r.key] = r.value
    return model, len(records)


def until_compacted(bootstrap: str, topic: str, expected: Model, done: Callable[[int], bool]) -> int:
    """Keep rolling segments (a record of a new key each round: the cleaner never touches the
    active segment) until ``done(records read)``; the model must hold throughout."""
    filler = 0
    deadline = time.monotonic() + 60
    while True:
        model, count = latest(bootstrap, topic)
        assert model == expected
        if done(count):
            return count
        assert time.monotonic() < deadline, f"not compacted: {count} records for {len(expected)} keys"
        key = f"filler-{filler}".encode()
        value = b"f" * 500
        produce(bootstrap, topic, [(key, value)] * 8)
        expected[key] = value
        filler += 1
        time.sleep(0.2)


def set_policy(bootstrap: str, topic: str, policy: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    entry = ConfigEntry("cleanup.policy", policy, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource("TOPIC", topic, incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    return broker_factory(workers=2, config=BROKER)


def test_every_client_reads_the_latest_value_of_every_live_key(broker: BrokerProcess) -> None:
    topic = "connect-configs"
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    expected: Model = {}
    writes: list[tuple[bytes, bytes | None]] = []
    for round_ in range(10):
        for k in range(20):
            key, value = f"connector-{k}".encode(), f"config-{round_}-{k}".encode() * 5
            writes.append((key, value))
            expected[key] = value
    for k in range(0, 20, 4):  # five connectors deleted
        writes.append((f"connector-{k}".encode(), None))
        expected.pop(f"connector-{k}".encode())
    produce(broker.bootstrap, topic, writes)
    # Compacted: every superseded record and, after delete.retention.ms, every tombstone gone.
    count = until_compacted(broker.bootstrap, topic, expected, lambda n: n <= len(expected) + 40)
    assert count < len(writes)
    for client in ("kafka-python", "aiokafka"):
        model, _ = latest(broker.bootstrap, topic, client)
        assert model == expected, client
    partition_dir = broker.data_dir / f"{topic}-0"
    assert (partition_dir / "cleaner-offset-checkpoint").exists()


def test_the_cleaner_processes_may_take_idle_time_on_every_core(broker: BrokerProcess) -> None:
    """A worker is pinned to one core; its cleaner process (SCHED_IDLE) is not, so a clean runs
    on whatever core is idle instead of always preempting its own worker."""
    topic = "pinned"
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    produce(broker.bootstrap, topic, [(b"k%d" % (i % 10), b"v" * 100) for i in range(400)])
    wait_for(lambda: (broker.data_dir / f"{topic}-0" / "cleaner-offset-checkpoint").exists(), 30, "a clean")
    everything = os.sched_getaffinity(broker.pid)
    processes = broker.worker_pids()
    cleaners = [p for p in processes if os.sched_getscheduler(p) == os.SCHED_IDLE]
    assert cleaners and all(os.sched_getaffinity(p) == everything for p in cleaners)
    if len(everything) > 1:  # the workers are pinned, so the assertion above means something
        assert all(len(os.sched_getaffinity(broker.worker_pid(i))) == 1 for i in range(2))


def test_cleanup_policy_changes_at_run_time_in_both_directions(broker: BrokerProcess) -> None:
    topic = "policy-flip"
    create_topic(broker.bootstrap, topic, 1, {**COMPACTED, "cleanup.policy": "delete"})
    writes = [(f"k{k % 5}".encode(), f"v{k}".encode() * 30) for k in range(200)]
    produce(broker.bootstrap, topic, writes)
    expected = {f"k{k}".encode(): f"v{195 + k}".encode() * 30 for k in range(5)}
    time.sleep(1.0)  # a delete topic is never cleaned: everything stays
    assert latest(broker.bootstrap, topic)[1] == 200
    set_policy(broker.bootstrap, topic, "compact")
    until_compacted(broker.bootstrap, topic, expected, lambda n: n < 100)
    set_policy(broker.bootstrap, topic, "delete")
    before = latest(broker.bootstrap, topic)[1]
    produce(broker.bootstrap, topic, [(b"k0", b"again" * 30)] * 100)
    time.sleep(1.0)
    assert latest(broker.bootstrap, topic)[1] == before + 100  # not compacted any more


def test_consumer_offsets_is_compacted_by_the_log_cleaner(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(
        workers=2, config={**BROKER, "offsets.topic.segment.bytes": 16384, "offsets.topic.num.partitions": 1}
    )
    create_topic(broker.bootstrap, "tracked", 1)
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": "committer", "enable.auto.commit": False}
    )
    try:
        tp = confluent_kafka.TopicPartition("tracked", 0, 0)
        for i in range(400):
            tp.offset = i
            consumer.commit(offsets=[tp], asynchronous=False)
    finally:
        consumer.close()
    offsets_dir = broker.data_dir / "__consumer_offsets-0"

    def records() -> list[int]:
        """Offsets of the records in the partition's segment files."""
        found = []
        for seg in sorted(offsets_dir.glob("*.log")):
            for batch in iter_batches(seg.read_bytes(), allow_partial_tail=True):
                found += [r.offset for r in batch.records()]
        return found

    # 400 commits (and the group's metadata) cleaned down to the latest one and the records still
    # in the active segment, which the cleaner never touches.
    wait_for(lambda: len(records()) < 200, 30, "a clean of __consumer_offsets")
    assert max(records()) >= 399
    assert (offsets_dir / "cleaner-offset-checkpoint").exists()
    broker.stop()
    broker.start()
    check = confluent_kafka.Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "committer"})
    try:
        (committed,) = check.committed([confluent_kafka.TopicPartition("tracked", 0)], timeout=IO_TIMEOUT)
        assert committed.offset == 399
    finally:
        check.close()


def test_aborted_transactions_leave_a_compacted_topic(broker: BrokerProcess) -> None:
    """Kafka's rules for transactions in a compacted log: aborted data removed, committed data
    compacted like any other; read_uncommitted and read_committed readers then agree."""
    topic = "txn-compacted"
    create_topic(broker.bootstrap, topic, 1, COMPACTED)
    producer = transactional_producer(broker.bootstrap, "compactor")
    producer.init_transactions(IO_TIMEOUT)
    expected: Model = {}
    for tag, commit, keys in (("committed", True, 10), ("aborted", False, 10), ("final", True, 5)):
        producer.begin_transaction()
        for k in range(keys):
            producer.produce(topic, key=f"t{k}".encode(), value=tag.encode() * 20, partition=0)
        if commit:
            producer.commit_transaction(IO_TIMEOUT)
            expected.update({f"t{k}".encode(): tag.encode() * 20 for k in range(keys)})
        else:
            producer.abort_transaction(IO_TIMEOUT)
    del producer
    # A plain record last: readers stop at the log end, and a marker is never delivered to them.
    produce(broker.bootstrap, topic, [(b"plain", b"p")])
    expected[b"plain"] = b"p"
    until_compacted(broker.bootstrap, topic, dict(expected), lambda n: n <= 40)
    ends = end_offsets("confluent", broker.bootstrap, topic, 1)
    # A read_uncommitted reader does not see the aborted values any more: they are gone.
    assert not [r for r in consume("confluent", broker.bootstrap, topic, ends) if r.value == b"aborted" * 20]
    committed = consume_confluent(broker.bootstrap, topic, ends, {"isolation.level": "read_committed"})
    transactional = {k: v for k, v in expected.items() if k.startswith(b"t")}
    assert {
        r.key: r.value for r in committed if r.key is not None and r.key.startswith(b"t")
    } == transactional


def test_the_cleaner_process_cleans_as_a_cleaner_in_this_thread_does(tmp_path: Path) -> None:
    """broker/cleaner_process.py on its own (no broker): the same log cleaned in the child and by
    a Cleaner here gives the same bytes; closing the log mid-clean aborts it and ends the child."""
    config = LogConfig().overrides({"cleanup.policy": "compact", "segment.bytes": "2000"})
    logs = [PartitionLog.open(tmp_path / f"t-{i}", config) for i in range(3)]
    process = CleanerProcess("test-cleaner", 10_000, float("inf"))
    try:
        for log in logs:
            for round_ in range(20):
                builder = RecordBatchBuilder()
                for k in range(5):
                    builder.append(f"v{round_}-{k}".encode() * 5, key=f"k{k}".encode(), timestamp=1000)
                log.append(bytearray(builder.build()))
            log.roll()
        now = int(time.time() * 1000)
        _, here = clean_partition(logs[0], Cleaner(10_000, Throttler(float("inf"))), now, force=True)
        _, there = clean_partition(logs[1], process, now, force=True)
        assert here is not None and there is not None
        assert (
            (there.records_read, there.records_retained)
            == (here.records_read, here.records_retained)
            == (100, 5)
        )
        assert [s.size for s in logs[1].segments] == [s.size for s in logs[0].segments]
        child = process._proc
        assert child is not None and child.is_alive()
        logs[2]._cleaner_abort.set()  # what close() does first
        with logs[2].cleaning() as view:
            assert view is None  # a closing log hands out no view
        with logs[2]._cleaning:
            view = logs[2]._cleaner_view()
        assert view is not None
        view.abort.set()
        with pytest.raises(CleanAbortedError):
            for _ in process.clean(view, 0, view.active_base, now, CleanStats()):
                pass
        child.join(10)
        assert not child.is_alive()
        for fd in view.fds:
            os.close(fd)
    finally:
        process.stop()
        for log in logs:
            log.close()
