"""The broker the perf harness runs, and its capacity without client overhead.

Starts processes and opens sockets and files (a broker in a temporary data dir, sink servers,
load generator processes). Used by perf/harness.py (``python -m perf run``), which measures the
clients' side with ``shardbroker perf``'s engine (shardbroker/loadgen); this module adds what no
Kafka client can show:

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

Where things run (this machine has 2 cores): the broker's workers (one pinned per core by the
supervisor) and the supervisor; 2 load generator processes (floating) against either the broker
or the sink processes (floating). Client and broker share the cores in every measurement, the
references included, which is why ratios are reported rather than absolute rates; the absolute
numbers are there too.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import shutil
import signal
import struct
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_response, encode_request, encode_response
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, free_port_block

__all__ = [
    "CAPACITY_TARGET",
    "CapacityConfig",
    "capacity",
    "keep_in_flight",
    "produce_frame",
    "running_broker",
    "spread_targets",
]

PRODUCE_V = 9
CAPACITY_TARGET = 0.4


@dataclass
class CapacityConfig:
    duration: float = 5.0
    batch_bytes: int = 1024 * 1024
    record_size: int = 1024
    loadgen_processes: int = 2
    connections: int = 2
    in_flight: int = 4


# -- broker ------------------------------------------------------------------------------------


#: The broker settings of this benchmark (and running_broker's default).
BENCH_BROKER_CONFIG: dict[str, Any] = {"message.max.bytes": 4 * 1024 * 1024, "num.partitions": 4}


@contextlib.contextmanager
def running_broker(
    workers: int,
    *,
    config: dict[str, Any] | None = None,
    name: str = "perf",
    listeners: tuple[str, ...] = ("PLAINTEXT",),
) -> Iterator[BrokerProcess]:
    """A broker on free ports in a temporary data dir (``shardbroker-<name>-*``); drained and
    removed afterwards. ``config``: broker settings (default: this benchmark's); ``listeners``:
    Kafka listener names (tests/integration/broker_process.py)."""
    if config is None:
        config = BENCH_BROKER_CONFIG
    root = Path(tempfile.mkdtemp(prefix=f"shardbroker-{name}-"))
    logs = root / "logs"
    logs.mkdir()
    broker = BrokerProcess(
        root / "data", logs, workers=workers, config=config, name=name, listeners=listeners
    )
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


async def keep_in_flight(
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
            *(
                keep_in_flight(t, f, len(batch), in_flight, until)
                for t, f in zip(targets, frames, strict=True)
            )
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


def replay(targets: Sequence[Target], batch: bytes, cfg: CapacityConfig) -> dict[str, float]:
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


def spread_targets(
    broker: BrokerProcess, topic: str, leaders: dict[int, int], connections: int
) -> list[Target]:
    """``connections`` targets spread over the workers (round robin), each a partition of
    ``topic`` its worker leads (``leaders``: partition -> worker), so nothing is forwarded."""
    by_worker: dict[int, list[int]] = {}
    for partition, leader in sorted(leaders.items()):
        by_worker.setdefault(leader, []).append(partition)
    workers = sorted(by_worker)
    targets = []
    for i in range(connections):
        worker = workers[i % len(workers)]
        partitions = by_worker[worker]
        partition = partitions[(i // len(workers)) % len(partitions)]
        targets.append(Target(broker.host, broker.base_port + worker, topic, partition))
    return targets


def capacity(broker: BrokerProcess, cfg: CapacityConfig) -> dict[str, Any]:
    """Broker MB/s and sink MB/s with the same load generator; their ratio."""
    topic = "capacity"
    connections = cfg.loadgen_processes * cfg.connections
    leaders = ensure_topic(broker.bootstrap, topic, max(connections, 2 * broker.workers), timeout=60)
    broker_targets = spread_targets(broker, topic, leaders, connections)
    workers = sorted({t.port - broker.base_port for t in broker_targets})
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
