"""End-to-end load on a real ``shardbroker serve``: client throughput and broker capacity.

Starts processes and opens sockets and files (a broker in a temporary data dir, sink servers,
load generator processes).

Run::

    . .venv/bin/activate
    python -m perf.broker_load                # full sizes, one JSON document on stdout
    python -m perf.broker_load --quick        # small sizes, a few seconds
    pytest perf/bench_broker.py               # the quick mode, as the test suite runs it

What is measured (side by side, in one run, so the ratios compare like with like on a VM whose
absolute speed swings with the neighbours)

``producer``
    confluent-kafka, ``messages`` values of ``value_size`` bytes (1,000,000 x 100 B), linger.ms=5,
    acks=1, no keys, spread over 4 partitions: delivered msgs/s from the first ``produce()`` to
    the end of ``flush()``, divided by the same client's enqueue-only rate (the same loop,
    pointed at a closed port, so nothing leaves the process; measured first, in this run).
    Target: ratio >= 0.7.
``consumer``
    confluent-kafka reading those messages back (``assign`` from the beginning, no group, batch
    ``consume()``): msgs/s from ``assign`` to the last message. Target >= 1,000,000 msgs/s.
``capacity``
    The broker without client overhead: ``loadgen_processes`` processes (multiprocessing), each
    with ``connections`` sockets, replay one pre-encoded Produce request (acks=1, one 1 MiB
    batch of 1 KiB records built once with ``RecordBatchBuilder``; idempotence off, so the same
    bytes can be resent: the broker assigns the offsets) with ``in_flight`` requests pipelined
    per connection, for ``duration`` seconds. Each connection produces to a partition its
    worker leads. MB/s of batch bytes acknowledged (every response is decoded and its error
    code checked), divided by the MB/s of a plain asyncio sink -- one process per broker
    worker, reading the same frames and answering each with a minimal Produce response --
    measured with the same load generator in the same run. Target: ratio >= 0.4.

Where things run (this machine has 2 cores): the broker's 2 workers (one pinned per core by the
supervisor) and the supervisor; the client under test (producer/consumer in this process, whose
librdkafka threads float over both cores); for capacity, 2 load generator processes (floating)
against either the broker or the 2 sink processes (floating). Client and broker share the cores
in every measurement, the references included, which is why ratios are reported rather than
absolute rates; the absolute numbers are there too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from perf.sizes import pick, quick
from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_response, encode_request, encode_response
from shardbroker.protocol.records import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, free_port_block

__all__ = [
    "LoadConfig",
    "capacity",
    "confluent_consume_rate",
    "confluent_enqueue_rate",
    "confluent_produce_rate",
    "main",
    "run",
]

PRODUCE_V = 9
TARGETS = {"producer_ratio": 0.7, "consumer_msgs_per_s": 1_000_000.0, "capacity_ratio": 0.4}


@dataclass
class LoadConfig:
    workers: int = 2
    messages: int = 1_000_000
    value_size: int = 100
    partitions: int = 4
    batch_bytes: int = 1024 * 1024
    record_size: int = 1024
    duration: float = 5.0
    loadgen_processes: int = 2
    connections: int = 2
    in_flight: int = 4

    @classmethod
    def for_mode(cls) -> LoadConfig:
        """Full sizes, or small ones when ``SHARDBROKER_PERF_QUICK`` is set (perf/sizes.py)."""
        return cls(messages=pick(1_000_000, 20_000), duration=pick(5, 1) * 1.0)


# -- broker ------------------------------------------------------------------------------------


@contextlib.contextmanager
def running_broker(
    workers: int, *, config: dict[str, Any] | None = None, name: str = "perf"
) -> Iterator[BrokerProcess]:
    """A broker on free ports in a temporary data dir (``shardbroker-<name>-*``); drained and
    removed afterwards. ``config``: broker settings (default: this benchmark's)."""
    if config is None:
        config = {"message.max.bytes": 4 * 1024 * 1024, "num.partitions": 4}
    root = Path(tempfile.mkdtemp(prefix=f"shardbroker-{name}-"))
    logs = root / "logs"
    logs.mkdir()
    broker = BrokerProcess(root / "data", logs, workers=workers, config=config, name=name)
    try:
        broker.start()
        yield broker
    except BaseException:
        print(broker.output(), file=sys.stderr)
        raise
    finally:
        with contextlib.suppress(AssertionError):
            if broker.proc is not None and broker.proc.poll() is None:
                broker.stop()
        broker.kill()
        broker.remove_shm_leftovers()
        shutil.rmtree(root, ignore_errors=True)


def create_topic(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """Create ``topic``; return partition -> leader once Metadata has them all."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(60)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        t = admin.list_topics(topic, timeout=10).topics.get(topic)
        if t is not None and t.error is None and len(t.partitions) == partitions:
            leaders = {p.id: p.leader for p in t.partitions.values()}
            if all(leader >= 0 for leader in leaders.values()):
                return leaders
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} not in metadata")


# -- client: producer and consumer -------------------------------------------------------------


def _producer_conf(bootstrap: str, messages: int) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "acks": 1,
        "enable.idempotence": False,
        "queue.buffering.max.messages": max(messages + 1, 100_000),
        "queue.buffering.max.kbytes": 2 * 1024 * 1024,
    }


def _produce_loop(producer: Any, topic: str, messages: int, value: bytes) -> None:
    produce = producer.produce
    for _ in range(messages):
        try:
            produce(topic, value)
        except BufferError:
            producer.poll(0.01)
            produce(topic, value)


def confluent_enqueue_rate(messages: int, value_size: int) -> float:
    """msgs/s of ``produce()`` alone: the producer points at a closed port, nothing is sent."""
    closed = free_port_block(1)  # free = nothing listens there
    producer = confluent_kafka.Producer(
        {**_producer_conf(f"127.0.0.1:{closed}", messages), "message.timeout.ms": 600_000, "log_level": 0}
    )
    value = b"x" * value_size
    started = time.perf_counter()
    _produce_loop(producer, "enqueue-only", messages, value)
    elapsed = time.perf_counter() - started
    producer.purge()
    producer.flush(0)
    return messages / elapsed


def confluent_produce_rate(
    bootstrap: str, topic: str, partitions: int, messages: int, value_size: int
) -> float:
    """Delivered msgs/s: first ``produce()`` to the end of ``flush()``, which returns once the broker
    has acknowledged every message.

    Delivery reports are requested for failures only (``delivery.report.only.error``): a Python
    callback per message costs the client ~1 us of the same core that runs the produce loop, and
    the enqueue-only reference runs no callbacks either, so a callback per message would measure
    the Python callback rather than the broker. Delivery is proven instead: no failure reported,
    nothing left in the queue, and the partitions' end offsets grew by exactly ``messages``.
    """
    errors = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal errors
        if err is not None:
            errors += 1

    before = _end_offsets_total(bootstrap, topic, partitions)
    producer = confluent_kafka.Producer(
        {
            **_producer_conf(bootstrap, messages),
            "on_delivery": on_delivery,
            "delivery.report.only.error": True,
        }
    )
    value = b"x" * value_size
    started = time.perf_counter()
    _produce_loop(producer, topic, messages, value)
    left = producer.flush(300)
    elapsed = time.perf_counter() - started
    appended = _end_offsets_total(bootstrap, topic, partitions) - before
    if left or errors or appended != messages:
        raise RuntimeError(f"produce: {appended} appended, {errors} failed, {left} left of {messages}")
    return messages / elapsed


def _end_offsets_total(bootstrap: str, topic: str, partitions: int) -> int:
    """Sum of the partitions' high watermarks (ListOffsets through a throwaway consumer)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "perf-watermarks"})
    try:
        return sum(
            consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)[1]
            for p in range(partitions)
        )
    finally:
        consumer.close()


def confluent_consume_rate(bootstrap: str, topic: str, partitions: int, messages: int) -> dict[str, float]:
    """Reading ``messages`` back from the beginning (assign, no group).

    Two rates: ``msgs_per_s`` from the first message to the last (the steady state the target is
    about), and ``msgs_per_s_with_startup`` from ``assign()`` on, which also holds librdkafka's
    start-up (bootstrap, metadata, an offset lookup for OFFSET_BEGINNING: ~0.5 s of its timers
    whatever the broker does).
    """
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "perf-unused",  # required by the client; never joined (assign only)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 8 * 1024 * 1024,
            "queued.min.messages": 1_000_000,
        }
    )
    try:
        started = time.perf_counter()
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        got = 0
        first_at = 0.0
        deadline = time.monotonic() + 300
        while got < messages:
            if time.monotonic() > deadline:
                raise RuntimeError(f"consume: {got} of {messages} after 300 s")
            batch = consumer.consume(100_000, timeout=1.0)
            if batch and not got:
                first_at = time.perf_counter()
            for msg in batch:
                if msg.error() is not None:
                    raise RuntimeError(f"consume error: {msg.error()}")
            got += len(batch)
        finished = time.perf_counter()
    finally:
        consumer.close()
    if got != messages:
        raise RuntimeError(f"consume: read {got}, produced {messages}")
    return {
        "msgs_per_s": messages / max(finished - first_at, 1e-9),
        "msgs_per_s_with_startup": messages / (finished - started),
    }


# -- capacity: pre-encoded Produce requests ----------------------------------------------------


def build_batch(batch_bytes: int, record_size: int) -> bytes:
    """One uncompressed v2 batch of ``record_size``-byte values, at most ``batch_bytes`` long."""
    builder = RecordBatchBuilder()
    value = b"r" * record_size
    overhead = 61 + 16  # batch header, and a generous per-record header bound
    while builder.records_size + record_size + overhead <= batch_bytes:
        builder.append(value)
    return builder.build()


def produce_frame(topic: str, partition: int, records: bytes, correlation_id: int) -> bytes:
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=partition, records=records)],
            )
        ],
    )
    header = m.RequestHeader(
        request_api_key=0, request_api_version=PRODUCE_V, correlation_id=correlation_id, client_id="loadgen"
    )
    return encode_request(header, request)


@dataclass
class Target:
    host: str
    port: int
    topic: str
    partition: int


async def _drive(
    target: Target, frame: bytes, batch_len: int, in_flight: int, until: float
) -> tuple[int, int]:
    """Keep ``in_flight`` copies of ``frame`` outstanding on one connection until ``until``;
    return (batch bytes acknowledged, errors)."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    acked = errors = outstanding = 0
    try:
        for _ in range(in_flight):
            writer.write(frame)
            outstanding += 1
        while outstanding:
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            body = await reader.readexactly(size)
            outstanding -= 1
            _, response = decode_response(body, 0, PRODUCE_V)
            assert isinstance(response, m.ProduceResponse)
            code = response.responses[0].partition_responses[0].error_code
            if code:
                errors += 1
            else:
                acked += batch_len
            if time.monotonic() < until:
                writer.write(frame)
                outstanding += 1
                await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return acked, errors


def _loadgen_main(
    targets: Sequence[Target], batch: bytes, in_flight: int, start_at: float, duration: float, out: Any
) -> None:
    """One load generator process: its connections, concurrently, on one event loop."""

    async def run() -> tuple[int, int]:
        delay = start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        until = time.monotonic() + duration
        frames = [produce_frame(t.topic, t.partition, batch, i + 1) for i, t in enumerate(targets)]
        results = await asyncio.gather(
            *(_drive(t, f, len(batch), in_flight, until) for t, f in zip(targets, frames, strict=True))
        )
        return sum(r[0] for r in results), sum(r[1] for r in results)

    try:
        started = time.time()
        acked, errors = asyncio.run(run())
        out.send(("ok", acked, errors, max(start_at, started), time.time()))
    except BaseException as exc:
        out.send(("error", repr(exc), 0, 0.0, 0.0))
    finally:
        out.close()


def replay(targets: Sequence[Target], batch: bytes, cfg: LoadConfig) -> dict[str, float]:
    """Run the load generator processes against ``targets`` (split among them); MB/s acked."""
    ctx = mp.get_context("spawn")  # no inherited librdkafka threads or broker state
    per_process: list[list[Target]] = [[] for _ in range(cfg.loadgen_processes)]
    for i, target in enumerate(targets):
        per_process[i % cfg.loadgen_processes].append(target)
    start_at = time.time() + 1.5  # let every process import and connect before the clock starts
    procs, pipes = [], []
    for mine in per_process:
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_loadgen_main, args=(mine, batch, cfg.in_flight, start_at, cfg.duration, child)
        )
        proc.start()
        child.close()
        procs.append(proc)
        pipes.append(parent)
    results = []
    for pipe, proc in zip(pipes, procs, strict=True):
        if not pipe.poll(cfg.duration + 120):
            proc.kill()
            raise RuntimeError("load generator did not report")
        results.append(pipe.recv())
        proc.join(30)
    failed = [r for r in results if r[0] != "ok"]
    if failed:
        raise RuntimeError(f"load generator failed: {failed}")
    acked = sum(r[1] for r in results)
    errors = sum(r[2] for r in results)
    if errors:
        raise RuntimeError(f"{errors} Produce requests answered with an error")
    elapsed = max(r[4] for r in results) - min(r[3] for r in results)
    return {"mb_per_s": acked / elapsed / 1e6, "bytes": float(acked), "seconds": elapsed}


def _sink_main(port: int, ready: Any) -> None:
    """A plain asyncio server: read each size-prefixed frame, answer a minimal Produce response."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cache: dict[int, bytes] = {}
        try:
            while True:
                (size,) = struct.unpack(">i", await reader.readexactly(4))
                body = await reader.readexactly(size)
                correlation = struct.unpack_from(">i", body, 4)[0]
                response = cache.get(correlation)
                if response is None:
                    msg = m.ProduceResponse(
                        responses=[
                            m.ProduceResponse.TopicProduceResponse(
                                name="sink",
                                partition_responses=[m.ProduceResponse.PartitionProduceResponse(index=0)],
                            )
                        ]
                    )
                    response = cache[correlation] = encode_response(correlation, 0, PRODUCE_V, msg)
                writer.write(response)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.send(True)
        ready.close()
        async with server:
            await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


@contextlib.contextmanager
def sinks(count: int) -> Iterator[list[int]]:
    """``count`` sink processes (as many as broker workers), on consecutive free ports."""
    ctx = mp.get_context("spawn")
    base = free_port_block(count)
    procs = []
    try:
        for i in range(count):
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_sink_main, args=(base + i, child), daemon=True)
            proc.start()
            child.close()
            procs.append(proc)
            if not parent.poll(60):
                raise RuntimeError("sink did not start")
            parent.recv()
        yield [base + i for i in range(count)]
    finally:
        for proc in procs:
            if proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.join(10)


def capacity(broker: BrokerProcess, cfg: LoadConfig) -> dict[str, Any]:
    """Broker MB/s and sink MB/s with the same load generator; their ratio."""
    topic = "capacity"
    connections = cfg.loadgen_processes * cfg.connections
    leaders = create_topic(broker.bootstrap, topic, max(connections, 2 * broker.workers))
    by_worker: dict[int, list[int]] = {}
    for partition, leader in sorted(leaders.items()):
        by_worker.setdefault(leader, []).append(partition)
    workers = sorted(by_worker)
    broker_targets = []
    for i in range(connections):  # connections spread over the workers, one partition each
        worker = workers[i % len(workers)]
        partitions = by_worker[worker]
        partition = partitions[(i // len(workers)) % len(partitions)]
        broker_targets.append(Target(broker.host, broker.base_port + worker, topic, partition))
    batch = build_batch(cfg.batch_bytes, cfg.record_size)
    broker_result = replay(broker_targets, batch, cfg)
    with sinks(broker.workers) as ports:
        sink_targets = [
            Target("127.0.0.1", ports[t.port - broker.base_port], t.topic, t.partition)
            for t in broker_targets
        ]
        sink_result = replay(sink_targets, batch, cfg)
    return {
        "batch_bytes": len(batch),
        "connections": connections,
        "in_flight": cfg.in_flight,
        "broker_mb_per_s": broker_result["mb_per_s"],
        "sink_mb_per_s": sink_result["mb_per_s"],
        "ratio": broker_result["mb_per_s"] / sink_result["mb_per_s"],
        "workers_used": workers,
    }


# -- all of it ---------------------------------------------------------------------------------


@dataclass
class Report:
    config: dict[str, Any]
    quick: bool
    producer: dict[str, float] = field(default_factory=dict)
    consumer: dict[str, float] = field(default_factory=dict)
    capacity: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, float] = field(default_factory=lambda: dict(TARGETS))
    met: dict[str, bool] = field(default_factory=dict)


def run(cfg: LoadConfig | None = None, parts: Sequence[str] = ("clients", "capacity")) -> Report:
    cfg = cfg or LoadConfig.for_mode()
    report = Report(config=asdict(cfg), quick=quick())
    with running_broker(cfg.workers) as broker:
        if "clients" in parts:
            enqueue = confluent_enqueue_rate(cfg.messages, cfg.value_size)
            create_topic(broker.bootstrap, "load", cfg.partitions)
            delivered = confluent_produce_rate(
                broker.bootstrap, "load", cfg.partitions, cfg.messages, cfg.value_size
            )
            report.producer = {
                "messages": cfg.messages,
                "enqueue_msgs_per_s": enqueue,
                "delivered_msgs_per_s": delivered,
                "ratio": delivered / enqueue,
            }
            rates = confluent_consume_rate(broker.bootstrap, "load", cfg.partitions, cfg.messages)
            report.consumer = {"messages": cfg.messages, **rates}
            rate = rates["msgs_per_s"]
            report.met["producer_ratio"] = report.producer["ratio"] >= TARGETS["producer_ratio"]
            report.met["consumer_msgs_per_s"] = rate >= TARGETS["consumer_msgs_per_s"]
        if "capacity" in parts:
            report.capacity = capacity(broker, cfg)
            report.met["capacity_ratio"] = report.capacity["ratio"] >= TARGETS["capacity_ratio"]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf.broker_load", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (as in the test suite)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--messages", type=int, help="producer/consumer messages (default 1,000,000)")
    parser.add_argument("--duration", type=float, help="capacity run seconds (default 5)")
    parser.add_argument("--loadgen-processes", type=int, default=2)
    parser.add_argument("--connections", type=int, default=2, help="per load generator process")
    parser.add_argument("--in-flight", type=int, default=4, help="pipelined requests per connection")
    parser.add_argument("--only", choices=("clients", "capacity"), help="run one part")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["SHARDBROKER_PERF_QUICK"] = "1"
    cfg = LoadConfig.for_mode()
    cfg.workers = args.workers
    cfg.loadgen_processes = args.loadgen_processes
    cfg.connections = args.connections
    cfg.in_flight = args.in_flight
    if args.messages:
        cfg.messages = args.messages
    if args.duration:
        cfg.duration = args.duration
    report = run(cfg, (args.only,) if args.only else ("clients", "capacity"))
    json.dump(asdict(report), sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
