"""The load processes: a confluent-kafka producer or consumer loop that reports a
:class:`~shardbroker.loadgen.stats.Window` ten times a second. Opens sockets (Kafka clients).

Each function here is the ``target`` of a spawned process (see runner.py), so everything it gets
is picklable and it talks back only through the queue: ``("ready", i, None)`` once connected,
``("window", i, Window)`` every ``WINDOW_SECONDS``, then ``("done", i, Done)`` or ``("error", i, text)``.
The clock starts when the runner sets ``go`` (after every process is ready), so process start-up,
imports and the first metadata round trip are not in the figures. SIGINT is ignored here: the
runner asks for a stop through ``stop`` and still collects what was acknowledged.

Producer latency is librdkafka's own (``Message.latency()``: from ``produce()`` to the broker's
acknowledgement), read in a delivery callback per record, as Kafka's producer-perf-test does; that
callback costs the producing process about 1 us per record, which Kafka's tool pays too.
End-to-end latency is the consumer's wall clock on receipt minus the ``time.time_ns()`` the
producer wrote into the first 8 bytes of the value, so both ends must share a clock: run e2e on
one host (or hosts synchronised well below the latencies measured).
"""

from __future__ import annotations

import os
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from shardbroker.loadgen.stats import Window

__all__ = ["ConsumerSettings", "Done", "ProducerSettings", "consumer_main", "producer_main"]

STAMP = struct.Struct(">q")
#: Seconds between windows: ten per progress line, so a line printed on the runner's own clock
#: is off by about one window (a tenth of its records) of the children's.
WINDOW_SECONDS = 0.1
#: Consumer defaults for throughput (overridable with --consumer-prop): fetch up to 64 MiB per
#: request and keep a deep local queue, so the Python loop rather than fetch round trips sets
#: the pace. Reading 450,000 x 100 B here: 0.57 M records/s with these, 0.19 M with librdkafka's
#: 100,000 queued.min.messages (the loop stalled between fetches).
CONSUMER_DEFAULTS = {
    "fetch.max.bytes": str(64 * 1024 * 1024),
    "max.partition.fetch.bytes": str(8 * 1024 * 1024),
    "queued.min.messages": "1000000",
}
#: After a stop, how long a producer still waits for acknowledgements of what it had sent.
STOP_GRACE = 1.0
#: How often (records) the producing loop looks at the clock, the stop flag and librdkafka's
#: delivery queue when it is not rate-limited: rarely enough to stay off the per-record path.
CHECK_EVERY = 256
#: librdkafka's poll timeout is in whole milliseconds.
POLL_RESOLUTION = 0.001


@dataclass(frozen=True)
class ProducerSettings:
    bootstrap: str
    topic: str
    record_size: int
    records: int | None  # this process's share; None = until ``duration``
    duration: float | None
    throughput: float  # records/s for this process; <= 0: as fast as possible
    config: dict[str, str] = field(default_factory=dict)  # librdkafka properties
    stamp: bool = False  # e2e: the value starts with the send time (ns)
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class ConsumerSettings:
    bootstrap: str
    topic: str
    records: int | None
    duration: float | None
    idle_timeout: float  # stop after this long without a record
    group: str | None = None  # None: assign every partition, no group
    from_end: bool = False  # e2e: start at the end offsets taken before the producer starts
    stamped: bool = False  # e2e: measure latency from the value's send time
    config: dict[str, str] = field(default_factory=dict)
    connect_timeout: float = 10.0


@dataclass(frozen=True)
class Done:
    records: int
    first_error: str | None


def _purge_codes() -> frozenset[int]:
    from confluent_kafka import KafkaError

    return frozenset((KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT))


def payload(size: int) -> bytes:
    """Random bytes (incompressible, as Kafka's perf tool's random payload)."""
    return os.urandom(size)


class _Deliveries:
    """Delivery reports since the last window (called on librdkafka's poll, in this thread)."""

    def __init__(self, record_size: int) -> None:
        self.purged = _purge_codes()
        self.record_size = record_size
        self.records = self.errors = self.total = 0
        self.latencies: list[float] = []
        self.first_error: str | None = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is not None:
            if err.code() in self.purged:  # left unsent or unacknowledged on purpose (a stop)
                return
            self.errors += 1
            if self.first_error is None:
                self.first_error = str(err)
            return
        self.records += 1
        latency = msg.latency()
        if latency is not None:
            self.latencies.append(latency)

    def take(self) -> Window:
        window = Window.of(self.records, self.records * self.record_size, self.latencies, self.errors)
        self.total += self.records
        self.records = self.errors = 0
        self.latencies = []
        return window


def _metadata(client: Any, topic: str, timeout: float, bootstrap: str) -> Any:
    from confluent_kafka import KafkaException

    try:
        md = client.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise RuntimeError(f"no answer from {bootstrap} within {timeout:g} s ({exc.args[0]})") from None
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic!r} not usable: {t.error if t is not None else 'not in metadata'}")
    return t


def producer_main(s: ProducerSettings, index: int, queue: Any, go: Any, stop: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        queue.put(("done", index, _produce(s, index, queue, go, stop)))
    except BaseException as exc:
        queue.put(("error", index, f"producer {index}: {exc}"))


def _produce(s: ProducerSettings, index: int, queue: Any, go: Any, stop: Any) -> Done:
    import confluent_kafka

    deliveries = _Deliveries(s.record_size)
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": s.bootstrap, "log_level": 2, **s.config, "on_delivery": deliveries}
    )
    _metadata(producer, s.topic, s.connect_timeout, s.bootstrap)
    queue.put(("ready", index, None))
    go.wait()
    produce, poll, topic = producer.produce, producer.poll, s.topic
    value = payload(s.record_size)
    pad = value[STAMP.size :]
    interval = 1.0 / s.throughput if s.throughput > 0 else 0.0
    start = time.perf_counter()
    deadline = start + s.duration if s.duration else float("inf")
    next_window = start + WINDOW_SECONDS
    limit = s.records if s.records is not None else -1
    sent = 0
    while sent != limit:
        if s.stamp:
            value = STAMP.pack(time.time_ns()) + pad
        try:
            produce(topic, value)
        except BufferError:  # librdkafka's queue is full: serve delivery reports, then retry
            poll(0.005)
            continue
        sent += 1
        if interval or sent % CHECK_EVERY == 0:
            poll(0)
            now = time.perf_counter()
            if now >= next_window:
                queue.put(("window", index, deliveries.take()))
                next_window = now + WINDOW_SECONDS
            if now >= deadline or stop.is_set():
                break
            if interval:
                # Wait for the next send time inside poll() while a report is due, not in
                # sleep(): Message.latency() is read when the delivery callback runs, so a report
                # left for the next poll would carry up to one interval more (1 ms at 1,000
                # records/s). poll()'s timeout is whole milliseconds (a shorter one returns at
                # once: a busy loop), so under half a millisecond ahead is slept (a report may
                # wait that long), and a poll may send up to half a millisecond late (the
                # schedule catches up: the rate holds).
                ahead = start + sent * interval - now
                while ahead > 0:
                    if ahead >= POLL_RESOLUTION / 2 and len(producer):
                        poll(max(ahead, POLL_RESOLUTION))
                    else:
                        time.sleep(ahead)
                    ahead = start + sent * interval - time.perf_counter()
    grace_until = 0.0
    while len(producer):  # the last acknowledgements; after a stop, for STOP_GRACE at most
        if stop.is_set():
            grace_until = grace_until or time.perf_counter() + STOP_GRACE
            if time.perf_counter() >= grace_until:
                break
        producer.flush(max(next_window - time.perf_counter(), 0.01))
        if time.perf_counter() >= next_window:
            queue.put(("window", index, deliveries.take()))
            next_window = time.perf_counter() + WINDOW_SECONDS
    producer.purge()
    producer.flush(0)
    queue.put(("window", index, deliveries.take()))
    return Done(deliveries.total, deliveries.first_error)


def consumer_main(s: ConsumerSettings, index: int, queue: Any, go: Any, stop: Any, expected: Any) -> None:
    """``expected`` (a shared int, -1 until known): stop once this many records arrived (e2e)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        queue.put(("done", index, _consume(s, index, queue, go, stop, expected)))
    except BaseException as exc:
        queue.put(("error", index, f"consumer {index}: {exc}"))


def _consume(s: ConsumerSettings, index: int, queue: Any, go: Any, stop: Any, expected: Any) -> Done:
    import confluent_kafka

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": s.bootstrap,
            "group.id": s.group or "shardbroker-perf",  # required by the client; joined only with a group
            "enable.auto.commit": s.group is not None,
            "auto.offset.reset": "earliest",
            "log_level": 2,
            **CONSUMER_DEFAULTS,
            **s.config,
        }
    )
    try:
        return _consume_with(consumer, s, index, queue, go, stop, expected)
    finally:
        consumer.close()


def _consume_with(
    consumer: Any, s: ConsumerSettings, index: int, queue: Any, go: Any, stop: Any, expected: Any
) -> Done:
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    partitions = sorted(_metadata(consumer, s.topic, s.connect_timeout, s.bootstrap).partitions)
    if s.group is not None:
        consumer.subscribe([s.topic])
    elif s.from_end:
        ends = [
            consumer.get_watermark_offsets(TopicPartition(s.topic, p), timeout=s.connect_timeout)[1]
            for p in partitions
        ]
        consumer.assign([TopicPartition(s.topic, p, end) for p, end in zip(partitions, ends, strict=True)])
    else:
        consumer.assign([TopicPartition(s.topic, p, OFFSET_BEGINNING) for p in partitions])
    queue.put(("ready", index, None))
    go.wait()
    start = last_record = time.perf_counter()
    deadline = start + s.duration if s.duration else float("inf")
    next_window = start + WINDOW_SECONDS
    limit = s.records if s.records is not None else -1
    got = nbytes = errors = total = 0
    first_error: str | None = None
    latencies: list[float] = []
    while True:
        # e2e reads one record at a time: consume(n) waits for n records or its timeout, which
        # would add up to that timeout to every latency at a fixed low rate.
        batch = (
            ([m] if (m := consumer.poll(0.1)) is not None else [])
            if s.stamped
            else consumer.consume(10_000, timeout=0.1)
        )
        now = time.perf_counter()
        received_ns = time.time_ns()
        for msg in batch:
            if total + got == limit:  # consume() may hand over more than was asked for
                break
            if msg.error() is not None:
                errors += 1
                first_error = first_error or str(msg.error())
                continue
            got += 1
            nbytes += len(msg)  # the value's length
            if s.stamped and len(msg) >= STAMP.size:
                latencies.append((received_ns - STAMP.unpack_from(msg.value())[0]) / 1e9)
        if batch:
            last_record = now
        done = total + got
        if now >= next_window:
            queue.put(("window", index, Window.of(got, nbytes, latencies, errors)))
            total, got, nbytes, errors, latencies = done, 0, 0, 0, []
            next_window = now + WINDOW_SECONDS
        want = expected.value
        if (
            done == limit
            or (want >= 0 and done >= want)
            or now >= deadline
            or now - last_record >= s.idle_timeout
            or stop.is_set()
        ):
            break
    queue.put(("window", index, Window.of(got, nbytes, latencies, errors)))
    return Done(total + got, first_error)
