"""LocalProducer and LocalConsumer against a real ``shardbroker serve`` (2 workers), with
confluent-kafka on the TCP side: byte-for-byte agreement both ways, a producer SIGKILLed
mid-frame, back-pressure from a stopped worker, a corrupt batch through the ring, segment rolls
under the consumer, wake-ups on TCP appends, the consumer following its partition across moves
between workers (AlterPartitionReassignments), group commits."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import confluent_kafka
import mmh3
import numpy as np
import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import KafkaApiError
from shardbroker.client.local_consumer import LocalConsumer, OffsetOutOfRange
from shardbroker.client.local_producer import DeliveryFuture, LocalClientError, LocalProducer
from shardbroker.ipc.local_attach import LocalBroker
from shardbroker.ipc.local_directory import worker_socket_address
from shardbroker.ipc.local_protocol import REQUEST_HEADER
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import SHM_DIR, BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, end_offsets

Row = tuple[int, int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...]]


@pytest.fixture(scope="module")
def broker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(workers=2)


def confluent_rows(bootstrap: str, topic: str, ends: dict[int, int]) -> list[Row]:
    """(partition, offset, timestamp, key, value, headers) of every record below ``ends``."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    rows: list[Row] = []
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in ends]
        )
        deadline = time.monotonic() + 60
        while len(rows) < sum(ends.values()):
            assert time.monotonic() < deadline, f"consumed {len(rows)} of {sum(ends.values())}"
            for m in consumer.consume(10_000, timeout=0.5):
                assert m.error() is None, m.error()
                headers = tuple((k, v) for k, v in (m.headers() or []))
                rows.append((m.partition(), m.offset(), m.timestamp()[1], m.key(), m.value(), headers))
    finally:
        consumer.close()
    return sorted(rows)


def local_rows(data_dir: Path, topic: str, partitions: int) -> list[Row]:
    rows: list[Row] = []
    for p in range(partitions):
        with LocalConsumer(str(data_dir), topic, p) as consumer:
            for r in consumer.records():
                key = None if r.key is None else bytes(r.key)
                value = None if r.value is None else bytes(r.value)
                headers = tuple((h.key, None if h.value is None else bytes(h.value)) for h in r.headers)
                rows.append((p, r.offset, r.timestamp, key, value, headers))
    return sorted(rows)


def test_local_producer_then_tcp_consumer_agree(broker: BrokerProcess) -> None:
    topic = "local-to-tcp"
    create_topic(broker.bootstrap, topic, 2)
    values = [i.to_bytes(4, "big") * 25 for i in range(5000)]
    keys = [f"key{i % 97:05d}".encode() for i in range(5000)]
    stamp = 1_700_000_000_000
    with LocalProducer(str(broker.data_dir)) as producer:
        futures = producer.send_batch(topic, values, keys, timestamp=stamp)
        producer.send_batch(topic, values[:300], partition=1, timestamp=stamp + 1)  # key-less
        delivered: list[Any] = []
        producer.send(
            topic,
            b"one",
            b"k1",
            headers=[("h", b"v"), ("none", None)],
            timestamp=5,
            on_delivery=delivered.append,
        )
        producer.send(topic, None, b"k2", partition=0, timestamp=6, on_delivery=delivered.append)
        producer.flush()
    assert all(f.error is None and f.base_offset >= 0 for f in futures)
    assert [d.error for d in delivered] == [None, None]
    ends = end_offsets("confluent", broker.bootstrap, topic, 2)
    assert sum(ends.values()) == 5000 + 300 + 2
    tcp = confluent_rows(broker.bootstrap, topic, ends)
    assert tcp == local_rows(broker.data_dir, topic, 2)
    # Keyed records went to murmur3(key) % 2 (the partitioner, documented as != Java's).
    by_value = {(r[3], r[4]): r for r in tcp if r[2] == stamp}
    for k, v in zip(keys, values, strict=True):
        partition = by_value[(k, v)][0]
        assert partition == mmh3.hash(k, 0, signed=False) % 2
    assert (delivered[0].partition, delivered[0].offset) in {(r[0], r[1]) for r in tcp if r[4] == b"one"}
    one = next(r for r in tcp if r[4] == b"one")
    assert one[2:] == (5, b"k1", b"one", (("h", b"v"), ("none", None)))


def test_tcp_producer_then_local_consumer_agree(broker: BrokerProcess) -> None:
    topic = "tcp-to-local"
    create_topic(broker.bootstrap, topic, 2)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "linger.ms": 5, "enable.idempotence": True}
    )
    for i in range(3000):
        headers = [("i", str(i).encode())] if i % 3 else None
        producer.produce(
            topic, b"v" * (i % 200), f"k{i % 13}".encode(), timestamp=1_600_000_000_000 + i, headers=headers
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    ends = end_offsets("confluent", broker.bootstrap, topic, 2)
    assert sum(ends.values()) == 3000
    assert local_rows(broker.data_dir, topic, 2) == confluent_rows(broker.bootstrap, topic, ends)
    # Raw batches: every record counted once, offsets dense.
    with LocalConsumer(str(broker.data_dir), topic, 0) as consumer:
        batches = list(consumer.batches())
    assert sum(b.record_count for b in batches) == ends[0]
    assert [b.base_offset for b in batches[1:]] == [b.last_offset + 1 for b in batches[:-1]]
    # From an offset inside a batch: the columns start there (the batch's earlier records left out).
    inside = next(b.base_offset + 1 for b in batches if b.record_count > 1)
    with LocalConsumer(str(broker.data_dir), topic, 0, offset=inside) as consumer:
        columns = consumer.poll_columns()
    assert columns is not None and columns.offsets.tolist() == list(range(inside, ends[0]))


def test_consumer_is_woken_by_tcp_appends_and_follows_rolls(broker: BrokerProcess) -> None:
    topic = "wake-and-roll"
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "65536"})
    with LocalConsumer(str(broker.data_dir), topic, 0, offset="latest") as consumer:
        assert consumer.poll_batches() == []
        producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
        producer.produce(topic, b"wake up")
        assert producer.flush(30) == 0
        # The owner wrote a wake-up frame into the consumer's ring (no polling of the watermark).
        wait_for(
            lambda: consumer.wake is not None and consumer.wake._ring.used_bytes > 0, 10, "a wake-up frame"
        )
        got = consumer.poll_batches(timeout=10)
        assert [r.value for b in got for r in b.records()] == [b"wake up"]
        with LocalProducer(str(broker.data_dir), batch_size=8192) as local:
            local.send_batch(topic, [b"x" * 100] * 20_000)  # ~2 MiB: ~30 segments of 64 KiB
        seen = sum(b.record_count for b in consumer.batches(timeout=1))
    assert seen == 20_000
    logs = list((broker.data_dir / f"{topic}-0").glob("*.log"))
    assert len(logs) > 10


def test_consumer_rewatches_the_new_owner_after_a_move(broker: BrokerProcess) -> None:
    """A move closes the old owner's watch (it lets go of the partition); the consumer finds the
    new owner in the directory, watches it, and is woken by its appends."""
    topic = "moved-watch"
    create_topic(broker.bootstrap, topic, 1)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    with (
        LocalConsumer(str(broker.data_dir), topic, 0) as consumer,
        AdminClient(broker.bootstrap) as admin,
    ):
        values = []
        for i in range(4):
            assert consumer.session is not None
            target = 1 - consumer.session.node_id
            assert admin.alter_partition_reassignments({(topic, 0): target}) == {(topic, 0): None}

            def rewatched(target: int = target) -> bool:
                assert consumer.poll_columns() is None  # a poll without data looks for the owner
                return consumer.session is not None and consumer.session.node_id == target

            wait_for(rewatched, 10, f"the watch on worker {target}")
            producer.produce(topic, f"after move {i}".encode())
            assert producer.flush(30) == 0
            wait_for(
                lambda: consumer.wake is not None and consumer.wake._ring.used_bytes > 0, 10, "a wake-up"
            )
            got = consumer.poll_columns(timeout=10)
            assert got is not None
            values += [bytes(v or b"") for v in map(got.value, range(len(got)))]
    assert values == [f"after move {i}".encode() for i in range(4)]


def moving_while_producing(broker: BrokerProcess, topic: str, moves: int) -> None:
    """Moves the partition back and forth ``moves`` times while a producer sends sequence
    numbers and a LocalConsumer (in its own thread) reads them, records arriving under every
    owner: the consumer reads exactly the log (as a TCP consumer reads it), which holds every
    acknowledged record exactly once and in order (an idempotent producer: the broker keeps one
    partition's batches in arrival order across moves and forwarding, broker/forwarding.py)."""
    create_topic(broker.bootstrap, topic, 1)
    stop, flushed = threading.Event(), threading.Event()
    produced: list[int] = []
    read: list[int] = []
    failures: list[BaseException] = []

    def produce() -> None:
        producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": broker.bootstrap,
                "linger.ms": 2,
                "acks": "all",
                "enable.idempotence": True,
            }
        )
        try:
            i = 0
            while not stop.is_set():
                producer.produce(topic, str(i).encode())
                producer.poll(0.002)
                i += 1
            assert producer.flush(60) == 0
            produced.extend(range(i))
        except BaseException as exc:
            failures.append(exc)
        finally:
            flushed.set()

    def consume(consumer: LocalConsumer) -> None:
        try:
            deadline = None
            while not flushed.is_set() or len(read) < len(produced):
                if flushed.is_set():
                    deadline = deadline or time.monotonic() + 30
                    assert time.monotonic() < deadline, f"read {len(read)} of {len(produced)}"
                got = consumer.poll_columns(timeout=0.2)
                if got is not None:
                    read.extend(int(bytes(got.value(j) or b"")) for j in range(len(got)))
        except BaseException as exc:
            failures.append(exc)

    with (
        LocalConsumer(str(broker.data_dir), topic, 0) as consumer,
        AdminClient(broker.bootstrap) as admin,
    ):
        assert consumer.session is not None
        owner = consumer.session.node_id
        threads = [threading.Thread(target=produce), threading.Thread(target=consume, args=(consumer,))]
        for t in threads:
            t.start()
        try:
            for _ in range(moves):
                seen = len(read)
                wait_for(
                    lambda seen=seen: len(read) > seen + 20 or bool(failures),
                    30,
                    "records read under this owner",
                )
                owner = 1 - owner
                assert admin.alter_partition_reassignments({(topic, 0): owner}) == {(topic, 0): None}
            seen = len(read)
            wait_for(lambda: len(read) > seen + 20 or bool(failures), 30, "records read after the last move")
        finally:
            stop.set()
            for t in threads:
                t.join(90)
        assert not failures, failures
        assert consumer.session is not None and consumer.session.node_id == owner
    end = end_offsets("confluent", broker.bootstrap, topic, 1)
    logged = [int(row[4] or b"") for row in confluent_rows(broker.bootstrap, topic, end)]
    assert read == logged
    assert read == produced and len(produced) > 20 * (moves + 1)


def test_consumer_reads_everything_across_moves_under_load(broker: BrokerProcess) -> None:
    moving_while_producing(broker, "moving-load", 4)


@pytest.mark.slow
def test_consumer_reads_everything_across_20_moves_under_load(broker: BrokerProcess) -> None:
    moving_while_producing(broker, "moving-load-20", 20)


def test_local_producer_keeps_going_while_its_partition_moves(broker: BrokerProcess) -> None:
    """A LocalProducer's batches for a partition that moves away are forwarded (or held while it
    is between owners) by the worker it attached to: no batch fails, and the log holds every
    record once, in the order sent, across 6 moves."""
    create_topic(broker.bootstrap, "local-moving", 1)
    futures: list[DeliveryFuture] = []
    stop = threading.Event()
    failures: list[BaseException] = []
    sent = [0]

    def produce() -> None:
        try:
            with LocalProducer(str(broker.data_dir)) as producer:
                while not stop.is_set():
                    values = [b"%d" % (sent[0] + k) for k in range(50)]
                    futures.extend(producer.send_batch("local-moving", values, partition=0))
                    sent[0] += 50
                    time.sleep(0.002)
                producer.flush()
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        with AdminClient(broker.bootstrap) as admin:
            owner = admin.topic("local-moving").partitions[0]
            for _ in range(6):
                before = sent[0]
                wait_for(lambda before=before: sent[0] > before + 500 or bool(failures), 30, "batches sent")
                owner = 1 - owner
                assert admin.alter_partition_reassignments({("local-moving", 0): owner}) == {
                    ("local-moving", 0): None
                }
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    assert [f.error for f in futures if f.error is not None] == []
    logged = confluent_rows(
        broker.bootstrap, "local-moving", end_offsets("confluent", broker.bootstrap, "local-moving", 1)
    )
    assert [int(row[4] or b"") for row in logged] == list(range(sent[0]))


def test_consumer_follows_retention_deleting_segments_under_it(broker_factory: BrokerFactory) -> None:
    """Segments vanish the way retention removes them (renamed to ``.deleted``, then unlinked):
    done by the test itself, since the broker checks retention every 5 minutes (Kafka's default;
    ``log.retention.check.interval.ms`` is not a settable key yet). A broker of its own: the
    files of its partition are pulled from under it."""
    broker = broker_factory(workers=1)
    topic = "retained"
    create_topic(broker.bootstrap, topic, 1, {"segment.bytes": "65536"})
    data_dir = str(broker.data_dir)
    directory = broker.data_dir / f"{topic}-0"
    with (
        LocalConsumer(data_dir, topic, 0) as reset,
        LocalConsumer(data_dir, topic, 0, auto_offset_reset="none") as strict,
        LocalProducer(data_dir, batch_size=8192) as producer,
    ):
        producer.send_batch(topic, [b"a" * 100] * 1000)
        producer.flush()
        first = reset.poll_batches()  # maps the first segment and reads what is there
        assert first[0].base_offset == 0
        del first
        producer.send_batch(topic, [b"b" * 100] * 20_000)  # ~2 MiB: ~35 segments of 64 KiB
        producer.flush()
        segments = sorted(directory.glob("*.log"), key=lambda p: int(p.stem))
        assert len(segments) > 10
        for path in segments[:-3]:
            deleted = path.with_name(path.name + ".deleted")
            path.rename(deleted)
            deleted.unlink()
        start = int(segments[-3].stem)
        offsets = [b.base_offset for b in reset.batches()]
        assert offsets[0] == start and offsets == sorted(offsets)  # finished its mapped segment, jumped
        assert reset.position == 21_000
        with pytest.raises(OffsetOutOfRange, match="OFFSET_OUT_OF_RANGE"):
            strict.poll_batches()


def test_corrupt_batch_is_refused_in_its_ack(broker: BrokerProcess) -> None:
    topic = "corrupt"
    create_topic(broker.bootstrap, topic, 1)
    builder = RecordBatchBuilder()
    builder.append(b"good value", timestamp=1)
    good = builder.build()
    bad = bytearray(good)
    bad[-3] ^= 0xFF  # a record byte: the CRC no longer matches
    with LocalProducer(str(broker.data_dir)) as producer:
        before = producer.send_batch(topic, [b"a", b"b"], partition=0)
        refused = producer._write_bytes(topic, 0, 1, bytes(bad))
        after = producer.send_batch(topic, [b"c"], partition=0)
        producer.flush()
        with pytest.raises(KafkaApiError) as err:
            refused.result()
        assert err.value.error_code == ErrorCode.CORRUPT_MESSAGE
        assert [before[0].result(), after[0].result()] == [0, 2]
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 3}


def test_oversized_batch_is_refused_in_its_ack(broker: BrokerProcess) -> None:
    topic = "oversized"
    create_topic(broker.bootstrap, topic, 1, {"max.message.bytes": "2000"})
    with LocalProducer(str(broker.data_dir)) as producer:
        small, big = (
            producer.send_batch(topic, [b"s"] * 5, partition=0),
            producer.send_batch(topic, [b"b" * 100] * 50, partition=0),
        )
        producer.flush()
        assert small[0].result() == 0
        with pytest.raises(KafkaApiError) as err:
            big[0].result()
        assert err.value.error_code == ErrorCode.MESSAGE_TOO_LARGE
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 5}


CHILD = textwrap.dedent(
    """
    import sys, time
    from shardbroker.client.local_producer import LocalProducer
    producer = LocalProducer(sys.argv[1])
    for f in producer.send_batch(sys.argv[2], [b"v" * 100] * 1000, partition=0):
        pass
    producer.flush()
    session = producer._sessions[producer.broker.partition(sys.argv[2], 0)[1]]
    view = session.writer.reserve(4096)
    view[: 2048] = b"x" * 2048  # half a frame, never committed
    print("reserved", flush=True)
    time.sleep(60)
    """
)


def test_producer_killed_mid_frame(broker: BrokerProcess) -> None:
    topic = "killed"
    create_topic(broker.bootstrap, topic, 1)
    workers = broker.worker_pids()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(broker.data_dir), topic],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"reserved\n"
        rings = [p.name for p in SHM_DIR.iterdir() if f"-lc{child.pid}-" in p.name]
        assert rings, "the child's rings should exist while it runs"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    # The worker saw the connection close and unlinked the dead client's rings and FIFOs.
    wait_for(lambda: not [p for p in SHM_DIR.iterdir() if f"-lc{child.pid}-" in p.name], 10, "ring reclaim")
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 1000}
    assert broker.worker_pids() == workers
    with LocalProducer(str(broker.data_dir)) as producer:
        assert producer.send_batch(topic, [b"after"], partition=0)[0].result(10) == 1000


def test_back_pressure_blocks_then_times_out_without_dropping(broker: BrokerProcess) -> None:
    topic = "pressure"
    create_topic(broker.bootstrap, topic, 1)
    with LocalProducer(
        str(broker.data_dir), ring_capacity=64 * 1024, batch_size=8 * 1024, timeout=1.0
    ) as producer:
        owner = producer.broker.partition(topic, 0)[1]
        producer.send_batch(topic, [b"warm"], partition=0)[0].result(10)  # attached
        worker = broker.worker_pid(owner)
        os.kill(worker, signal.SIGSTOP)  # the drain stops (well under the 10 s heartbeat timeout)
        sent = 1
        try:
            started = time.monotonic()
            with pytest.raises(LocalClientError, match=r"stayed full for 1\.0 s"):
                for _ in range(1000):
                    producer.send_batch(topic, [b"z" * 100] * 50, partition=0)
                    sent += 50
            assert time.monotonic() - started >= 1.0
        finally:
            os.kill(worker, signal.SIGCONT)
        producer.flush(30)
    assert sent > 1
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: sent}


def test_commit_through_the_group_coordinator(broker: BrokerProcess) -> None:
    topic = "commit"
    create_topic(broker.bootstrap, topic, 1)
    with LocalProducer(str(broker.data_dir)) as producer:
        producer.send_batch(topic, [b"r"] * 10, partition=0)
    with LocalConsumer(str(broker.data_dir), topic, 0, group_id="local-group") as consumer:
        assert sum(b.record_count for b in consumer.batches()) == 10
        consumer.commit()
    with AdminClient(broker.bootstrap) as admin:
        assert admin.committed_offsets("local-group")[(topic, 0)] == 10


def test_local_traffic_in_the_partition_metrics(broker: BrokerProcess) -> None:
    topic = "metered"
    create_topic(broker.bootstrap, topic, 1)
    with LocalProducer(str(broker.data_dir)) as producer:
        producer.send_batch(topic, [b"m" * 10] * 1234, partition=0)
    line = f'shardbroker_partition_messages_in_total{{topic="{topic}",partition="0",'

    def scraped() -> str | None:
        url = f"http://{broker.host}:{broker.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text: str = response.read().decode()
        found = [x for x in text.splitlines() if x.startswith(line)]
        return found[0] if found and float(found[0].rsplit(" ", 1)[1]) == 1234 else None

    wait_for(scraped, 15, "the local producer's records in the per-partition counter")


def test_malformed_frames_never_reach_the_log(broker: BrokerProcess) -> None:
    """A frame whose header points past its end is answered CORRUPT_MESSAGE; a frame too short
    for a header closes that client's session (its in-flight batches fail); the worker lives."""
    topic = "malformed"
    create_topic(broker.bootstrap, topic, 1)
    workers = broker.worker_pids()
    with LocalProducer(str(broker.data_dir)) as producer:
        producer.send_batch(topic, [b"x"], partition=0)[0].result(10)
        session = producer._sessions[producer.broker.partition(topic, 0)[1]]
        frame = REQUEST_HEADER.pack(77, 0, 500, 1, 0)  # a 500-byte topic name in a 16-byte frame
        future = DeliveryFuture(producer, topic, 0, 1, session.attached.node_id)
        session.pending[77] = future
        assert session.writer.try_write(frame)
        with pytest.raises(KafkaApiError) as err:
            future.result(10)
        assert err.value.error_code == ErrorCode.CORRUPT_MESSAGE
        # The next batch must go into the same ring, behind the short frame: without this the
        # producer's liveness check may notice the closed session first and attach anew.
        session.next_check = float("inf")
        assert session.writer.try_write(b"short")  # not even a header: the session is closed
        later = producer.send_batch(topic, [b"y"], partition=0)  # behind it: never drained
        with pytest.raises(KafkaApiError) as gone:
            later[0].result(10)
        assert gone.value.error_code == ErrorCode.NETWORK_EXCEPTION
    assert broker.worker_pids() == workers
    with LocalProducer(str(broker.data_dir)) as producer:
        assert producer.send_batch(topic, [b"z"], partition=0)[0].result(10) == 1
    assert end_offsets("confluent", broker.bootstrap, topic, 1) == {0: 2}  # "x" and "z" only


def test_worker_refuses_foreign_rings_and_junk(broker: BrokerProcess) -> None:
    """A handshake naming the broker's own rings, or junk, is answered with a reason and closed."""
    local = LocalBroker(str(broker.data_dir))
    try:
        for hello, reason in (
            (b'{"op":"produce","requests":"ctl-w0-in","acks":"ctl-w0-out"}', "not a local client's"),
            (b"not json", "not a JSON"),
            (b'{"op":"launch"}', "unknown op"),
        ):
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
                conn.settimeout(10)
                conn.connect(worker_socket_address(local.instance, 0))
                conn.send(hello)
                reply = json.loads(conn.recv(4096))
                assert reply["ok"] is False and reason in reply["error"]
                assert conn.recv(4096) == b""  # closed after the refusal
    finally:
        local.close()
    workers = broker.worker_pids()
    with LocalProducer(str(broker.data_dir)) as producer:  # still serving
        producer.send_batch("corrupt", [b"ok"], partition=0)[0].result(10)
    assert broker.worker_pids() == workers


def test_attach_refusals(broker: BrokerProcess, tmp_path: Path) -> None:
    with pytest.raises(LocalClientError, match="no broker serves"):
        LocalProducer(str(tmp_path))
    with pytest.raises(LocalClientError, match="UNKNOWN_TOPIC_OR_PARTITION"):
        LocalConsumer(str(broker.data_dir), "no-such-topic", 0)
    with (
        LocalProducer(str(broker.data_dir)) as producer,
        pytest.raises(LocalClientError, match="UNKNOWN_TOPIC"),
    ):
        producer.send_batch("no-such-topic", np.zeros((1, 1), np.uint8))


def test_producer_notices_a_killed_worker_and_attaches_to_its_successor(
    broker_factory: BrokerFactory,
) -> None:
    """kill -9 of the owning worker while a LocalProducer keeps sending (and never polls): the
    producer notices within its liveness check instead of writing on into the dead worker's ring,
    fails what that worker never acked (NETWORK_EXCEPTION, none stays pending) and attaches to the
    restarted worker by itself, which then takes the batches; every batch acked is in the log."""
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "survivor", 1)
    with LocalProducer(str(broker.data_dir), acks=1) as producer:
        owner = producer.broker.partition("survivor", 0)[1]
        futures = producer.send_batch("survivor", [b"before"] * 10, partition=0)
        producer.flush()
        before = set(broker.worker_pids())
        os.kill(broker.worker_pid(owner), signal.SIGKILL)
        deadline = time.monotonic() + 60
        restarted = None
        while time.monotonic() < deadline:
            try:
                futures += producer.send_batch("survivor", [b"after"] * 10, partition=0)
            except LocalClientError:  # the successor is not serving yet
                time.sleep(0.05)
                continue
            time.sleep(0.01)
            if restarted is None and len(now := set(broker.worker_pids())) == 2 and now != before:
                restarted = time.monotonic()
            if restarted is not None and time.monotonic() - restarted > 2:
                break
        producer.flush(30)
    failed = [f for f in futures if f.error is not None]
    acked = [f for f in futures if f.error is None]
    assert all(f.done for f in futures)
    assert all(f.error.error_code == ErrorCode.NETWORK_EXCEPTION for f in failed if f.error is not None)
    assert futures[-1].error is None and futures[-1].base_offset >= 10  # the successor took them
    assert end_offsets("confluent", broker.bootstrap, "survivor", 1) == {0: 10 * len(acked)}
