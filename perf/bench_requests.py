"""Issue 18's request-rate figures: how many small requests a worker answers a second and the CPU
each costs, beside Redis answering unpipelined XADDs in the same run.

Run::

    .venv/bin/python -m perf requests [--runs 3] [--seconds 5] [--connections 1,10,100]
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf requests    # 1 s, 1 and 10 connections

Produce: ``connections`` sockets spread over the broker's workers, each to a partition its
worker leads (nothing is forwarded), each with one Produce request in flight at a time: one
record of 100 B, acks=1, pre-encoded once (idempotence off, so the same bytes can be resent: the
broker assigns the offsets). Every answer is decoded and its error code checked.

Fetch: the same sockets, each with one Fetch in flight (min_bytes=1, max_wait_ms=500, from the
high watermark the previous answer reported), while one more socket per partition keeps four
one-record Produce requests in flight, so a Fetch finds new data at once or is woken by the next
append (the path where every append wakes a parked fetch).

The driver: two processes (spawn, asyncio), the sockets split between them. They share the two
cores with the broker, as redis-benchmark shares them with Redis, so the rates are what this
machine does with client and server on it; the CPU per request counts the workers' processes
only (user + system time from /proc over the measured seconds, divided by the requests answered
in them) and does not depend on the driver.

Reported per connection count: requests/s, requests/s per worker that had sockets, CPU per
request (the feeding Produce requests of the Fetch measurement count as requests), requests per
CPU-second of the workers (what a core would answer if the driver took none), and round trips
p50/p99; and Redis' XADD rate from ``redis-benchmark -P 1 -c 50`` with 100 B values (Redis runs
commands on one thread: its rate is per core). Targets (issue 18): requests/s per worker >= 0.4x
Redis' rate, CPU per Produce <= 40 us.

First figures (2026-12-04, 3 runs, median and range; 2 workers, asyncio's loop, a task per
request): Produce over 1 / 10 / 100 connections 8,691 / 14,523 / 17,136 requests/s per worker,
CPU 76 / 47 / 40 us a request; Fetch 4,410 / 4,961 / 8,783 per worker; Redis 95,000-113,000
XADDs/s: 0.16x per worker, 0.23x per CPU-second.

After the request-path work (2026-12-05; ``--event-loop`` alternated, 3 runs each, median and
range)::

                          asyncio                        uvloop (the default)
    Produce, 1 conn       9,248/s  66.4 us (66.0-68.9)   10,047/s  60.3 us (57.6-61.0)
    Produce, 10 conns    15,266/s  44.0 us (43.5-44.6)   16,394/s  39.5 us (39.5-40.5)
    Produce, 100 conns   18,049/s  37.5 us (36.6-37.7)   19,838/s  33.9 us (33.7-35.0)
    Fetch, 1 / 10 / 100   5,043 / 5,028 / 10,025/s       5,199 / 5,125 / 9,912/s
    vs Redis, per CPU-s   0.25x (0.23-0.29)              0.31x (0.31-0.32)

(requests/s per worker and CPU per request). Both columns include eager start (no task for a
handler that does not wait: broker/connection.py) and the directly packed response header;
the asyncio column is what those alone gave (40 -> 37.5 us at 100 connections). The request
path was then ~25 us of Python plus ~9 us of kernel (user 2.55 s and system 0.7 s of a worker's
5 s at 15,400 requests/s, /proc).

Where the time went (in-process, no sockets: ``python -m perf request-path --profile generic``):
decoding the frame 22 %, the handler and the append 26 %, encoding the response 21 %, the
connection's own bookkeeping (flow control, flush scheduling) 15 %, spread over ~200 Python calls
a request with no single hot spot. py-spy on the live worker misleads here: samples in
``transport.write`` (35-40 %) are mostly the worker preempted inside the send by the driver
process it wakes on the same core, not CPU it spends. So a Produce for one partition now skips
the generic codec and message objects (protocol/single_produce.py; in-process 28.5 -> 15.5 us)::

                          single-partition path (2026-12-05, uvloop, 3 runs: median, range)
    Produce, 1 conn       11,301/s  44.7 us (44.1-49.4)
    Produce, 10 conns     20,760/s  27.0 us (26.9-27.3)
    Produce, 100 conns    25,752/s  22.4 us (22.3-22.5)
    Fetch, 1 / 10 / 100    6,302 / 5,494 / 9,110/s  (30.8 / 38.0 / 52.9 us)
    vs Redis, per CPU-s   0.49x (0.49-0.51): 44,600 requests per worker CPU-second, Redis
                          87,000-91,000 XADDs/s; per worker 0.28-0.30x (the worker is not busy:
                          the driver shares its core)

Targets (issue 18): >= 0.4x Redis per core, met per CPU-second; CPU per Produce <= 40 us, met
from 10 connections up (at 1 connection every request is a wake-up, an epoll, a recv and a send
of its own: ~45 us). What this VM charges for that, measured 2026-12-05 with the same driver
against perf/broker_load.py's plain asyncio sink (no parsing, no storage; CPU of the sink
processes from /proc): 22.3 / 18.1 / 15.1 us a request at 1 / 10 / 100 connections, so the
1-connection case costs even a server that does nothing 7 us more than 100 connections do.
``perf record -e cpu-clock -g`` on a worker at 1 connection: 14 % of its samples are the
kernel's wake-up of the driver inside the send (``sock_def_readable``, the IPI to an idle vCPU)
and 8 % its own return from idle (``finish_task_switch``): ~10 us of the 45 a request.

Profile of the workers under this load (the command to repeat it, in another shell)::

    .venv/bin/python -m perf requests --runs 1 --seconds 20 --connections 100 &
    sleep 12; pid=$(pgrep -of 'shardbroker.cli.main serve')
    py-spy record --subprocesses -d 8 -r 300 -o requests.svg -p "$pid"

and the user/system split: ``/proc/<worker pid>/stat`` fields 14 and 15 read 5 s apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from perf.broker_load import (
    BENCH_BROKER_CONFIG,
    PRODUCE_V,
    Target,
    keep_in_flight,
    produce_frame,
    running_broker,
    sinks,
    spread_targets,
)
from perf.peers import redis_available, redis_server, xadd_rate
from perf.sizes import pick, quick
from shardbroker.config.broker_properties import EVENT_LOOPS
from shardbroker.ipc.procfs import cpu_seconds
from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_response, encode_request
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess

__all__ = ["main", "measure", "run_once", "sink_rate"]

RECORD_SIZE: Final = 100
FETCH_V: Final = 12
TOPIC: Final = "requests"
#: One-record Produce requests each feeding socket keeps in flight during the Fetch measurement.
FEED_IN_FLIGHT: Final = 4
REDIS_CONNECTIONS: Final = 50
TARGET_REDIS_RATIO: Final = 0.4
TARGET_CPU_US: Final = 40.0


@dataclass(frozen=True)
class Load:
    """What one driver process does: ``kind`` requests over its ``targets`` from ``start_at``
    (wall clock) for ``seconds``; ``feed``: sockets producing to keep the fetched partitions
    growing (Fetch only)."""

    kind: str
    targets: tuple[Target, ...]
    feed: tuple[Target, ...]
    start_at: float
    seconds: float


def _one_record_batch() -> bytes:
    builder = RecordBatchBuilder()
    builder.append(b"r" * RECORD_SIZE)
    return builder.build()


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def _produce_one_at_a_time(target: Target, until: float, rtts: list[float]) -> int:
    """Produce requests, one in flight, until ``until``; the count answered (errors raise)."""
    frame = produce_frame(target.topic, target.partition, _one_record_batch(), 1)
    reader, writer = await asyncio.open_connection(target.host, target.port)
    answered = 0
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(frame)
            body = await _read_frame(reader)
            rtts.append(time.perf_counter() - started)
            _, response = decode_response(body, m.ProduceRequest.API_KEY, PRODUCE_V)
            assert isinstance(response, m.ProduceResponse)
            code = response.responses[0].partition_responses[0].error_code
            if code:
                raise RuntimeError(f"Produce to {target.topic}-{target.partition}: error {code}")
            answered += 1
    finally:
        writer.close()
    return answered


def _fetch_frame(target: Target, offset: int, correlation_id: int) -> bytes:
    partition = m.FetchRequest.FetchPartition(
        partition=target.partition,
        current_leader_epoch=-1,
        fetch_offset=offset,
        last_fetched_epoch=-1,
        log_start_offset=-1,
        partition_max_bytes=1 << 20,
    )
    request = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=500,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[m.FetchRequest.FetchTopic(topic=target.topic, partitions=[partition])],
        forgotten_topics_data=[],
        rack_id="",
    )
    header = m.RequestHeader(
        request_api_key=m.FetchRequest.API_KEY,
        request_api_version=FETCH_V,
        correlation_id=correlation_id,
        client_id="perf-requests",
    )
    return encode_request(header, request)


async def _fetch_one_at_a_time(target: Target, until: float, rtts: list[float]) -> int:
    """Fetch requests, one in flight, each from the high watermark the previous one reported."""
    reader, writer = await asyncio.open_connection(target.host, target.port)
    answered = offset = 0
    try:
        while time.monotonic() < until:
            started = time.perf_counter()
            writer.write(_fetch_frame(target, offset, answered + 1))
            body = await _read_frame(reader)
            rtts.append(time.perf_counter() - started)
            _, response = decode_response(body, m.FetchRequest.API_KEY, FETCH_V)
            assert isinstance(response, m.FetchResponse)
            part = response.responses[0].partitions[0]
            if response.error_code or part.error_code:
                raise RuntimeError(f"Fetch {target.topic}-{target.partition}: error {part.error_code}")
            offset = part.high_watermark
            answered += 1
    finally:
        writer.close()
    return answered


async def _feed(target: Target, until: float) -> int:
    """Keep FEED_IN_FLIGHT one-record Produce requests outstanding until ``until``; the count
    answered (errors raise)."""
    batch = _one_record_batch()
    frame = produce_frame(target.topic, target.partition, batch, 1)
    acked, errors = await keep_in_flight(target, frame, len(batch), FEED_IN_FLIGHT, until)
    if errors:
        raise RuntimeError(f"{errors} feeding Produce requests to {target.partition} failed")
    return acked // len(batch)


def _driver_main(load: Load, out: Any) -> None:
    """One driver process: its sockets on one event loop; sends (answered, fed, round trips)."""

    async def run() -> tuple[int, int, list[float]]:
        await asyncio.sleep(max(0.0, load.start_at - time.time()))
        until = time.monotonic() + load.seconds
        rtts: list[float] = []
        one = _produce_one_at_a_time if load.kind == "produce" else _fetch_one_at_a_time
        feeding = [asyncio.ensure_future(_feed(t, until)) for t in load.feed]
        counts = await asyncio.gather(*(one(t, until, rtts) for t in load.targets))
        fed = await asyncio.gather(*feeding)
        return sum(counts), sum(fed), rtts

    try:
        answered, fed, rtts = asyncio.run(run())
        out.send(("ok", answered, fed, rtts))
    except BaseException as exc:
        out.send(("error", repr(exc), 0, []))
    finally:
        out.close()


def measure(broker: BrokerProcess, kind: str, targets: Sequence[Target], seconds: float) -> dict[str, Any]:
    """One measurement: ``kind`` ("produce" or "fetch") over ``targets``, two driver processes;
    CPU is the broker workers'."""
    return _drive(kind, targets, seconds, [broker.worker_pid(w) for w in range(broker.workers)])


def sink_rate(connections: int, seconds: float) -> float:
    """The reference of ``python -m perf run``'s request figures: the same Produce driver, one
    request in flight on each of ``connections`` sockets, against two plain asyncio servers
    (perf/broker_load.py's sink: read a frame, answer a pre-encoded Produce response) in place
    of the two workers. Requests/s per server process."""
    with sinks(2) as ports:
        targets = [Target("127.0.0.1", ports[i % 2], "sink", 0) for i in range(connections)]
        result = _drive("produce", targets, seconds, [])
    return float(result["requests_per_s_per_worker"])


def _drive(
    kind: str, targets: Sequence[Target], seconds: float, server_pids: Sequence[int]
) -> dict[str, Any]:
    """Run the two driver processes over ``targets``; ``server_pids``: whose CPU to count."""
    ctx = mp.get_context("spawn")
    feed = tuple({(t.port, t.partition): t for t in targets}.values()) if kind == "fetch" else ()
    start_at = time.time() + 1.5  # every process imported and connected before the clock starts
    halves = [tuple(targets[i::2]) for i in range(2)]
    procs, pipes = [], []
    for i, mine in enumerate(halves):
        if not mine:
            continue
        parent, child = ctx.Pipe(duplex=False)
        load = Load(kind, mine, feed if i == 0 else (), start_at, seconds)
        proc = ctx.Process(target=_driver_main, args=(load, child))
        proc.start()
        child.close()
        procs.append(proc)
        pipes.append(parent)
    time.sleep(max(0.0, start_at - time.time()))
    cpu_before = cpu_seconds(*server_pids)
    time.sleep(seconds)
    cpu = cpu_seconds(*server_pids) - cpu_before
    results = []
    try:
        for pipe in pipes:
            if not pipe.poll(seconds + 60):
                raise RuntimeError("a driver process did not report")
            results.append(pipe.recv())
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    failed = [r[1] for r in results if r[0] != "ok"]
    if failed:
        raise RuntimeError(f"driver failed: {failed}")
    answered = sum(r[1] for r in results)
    fed = sum(r[2] for r in results)
    rtts = np.array([x for r in results for x in r[3]])
    rate = answered / seconds
    used = len({t.port for t in targets})  # servers (workers) that had sockets
    return {
        "connections": len(targets),
        "requests_per_s": round(rate),
        "requests_per_s_per_worker": round(rate / used),
        # The feeding Produce requests of the Fetch measurement count as requests here.
        "cpu_us_per_request": round(cpu / (answered + fed) * 1e6, 1),
        "requests_per_cpu_s": round((answered + fed) / cpu) if cpu else None,
        "feed_requests_per_s": round(fed / seconds),
        "rtt_p50_ms": round(float(np.percentile(rtts, 50)) * 1000, 3),
        "rtt_p99_ms": round(float(np.percentile(rtts, 99)) * 1000, 3),
    }


def run_once(
    connections: Sequence[int], seconds: float, redis_count: int, event_loop: str | None = None
) -> dict[str, Any]:
    """Every measurement once, on one broker (2 workers; ``event_loop``: its ``event.loop``, None
    for the default) and one Redis."""
    out: dict[str, Any] = {"produce": [], "fetch": []}
    config = BENCH_BROKER_CONFIG if event_loop is None else {**BENCH_BROKER_CONFIG, "event.loop": event_loop}
    with running_broker(2, config=config, name="requests") as broker:
        leaders = ensure_topic(broker.bootstrap, TOPIC, 2 * broker.workers, timeout=60)
        for kind in ("produce", "fetch"):
            for n in connections:
                out[kind].append(measure(broker, kind, spread_targets(broker, TOPIC, leaders, n), seconds))
    why_not = redis_available()
    if why_not is None:
        with redis_server() as server:
            redis = xadd_rate(
                server, "requests", RECORD_SIZE, redis_count, connections=REDIS_CONNECTIONS, pipeline=1
            )
        out["redis_xadd_per_s"] = round(redis["records_per_s"])
        best = max(r["requests_per_s_per_worker"] for r in out["produce"])
        out["produce_per_worker_vs_redis"] = round(best / redis["records_per_s"], 3)
        per_core = max(r["requests_per_cpu_s"] for r in out["produce"])
        out["produce_per_cpu_s_vs_redis"] = round(per_core / redis["records_per_s"], 3)
    else:
        out["redis_xadd_per_s"] = None
        out["redis_skipped"] = why_not
    return out


def test_request_rates_quick() -> None:
    """Every connection count answers Produce and Fetch requests, with CPU accounted (figures
    not judged here)."""
    result = run_once((1, 4), 0.5, 2_000)
    for kind in ("produce", "fetch"):
        assert [r["connections"] for r in result[kind]] == [1, 4]
        assert all(r["requests_per_s"] > 0 and r["cpu_us_per_request"] > 0 for r in result[kind])


def _counts(text: str) -> list[int]:
    """``--connections``: positive integers, comma-separated."""
    try:
        counts = [int(c) for c in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want positive integers, comma-separated (1,10,100)")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf requests",
        description="small Produce and Fetch requests, one in flight per connection: requests/s per "
        "worker and the workers' CPU per request, beside Redis XADD -P 1 -c 50 (perf/bench_requests.py)",
    )
    parser.add_argument("--runs", type=int, default=1 if quick() else 3, help="repeats (default 3)")
    parser.add_argument(
        "--seconds", type=float, default=1.0 if quick() else 5.0, help="each measurement (default 5)"
    )
    parser.add_argument(
        "--connections",
        type=_counts,
        default="1,10" if quick() else "1,10,100",
        help="counts, comma-separated",
    )
    parser.add_argument(
        "--redis-count", type=int, default=pick(200_000, 20_000), help="XADDs redis-benchmark sends"
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default=None,
        help="the broker's event.loop (default: the broker's default, uvloop)",
    )
    args = parser.parse_args(argv)
    connections: list[int] = args.connections
    rows = []
    for _ in range(args.runs):
        row = run_once(connections, args.seconds, args.redis_count, args.event_loop)
        print(json.dumps(row), flush=True)
        rows.append(row)
    summary: dict[str, Any] = {}
    for kind in ("produce", "fetch"):
        for i, n in enumerate(connections):
            for field in ("requests_per_s_per_worker", "cpu_us_per_request", "rtt_p50_ms", "rtt_p99_ms"):
                values = [r[kind][i][field] for r in rows]
                summary[f"{kind}_{n}_{field}"] = [statistics.median(values), min(values), max(values)]
    for name in ("produce_per_worker_vs_redis", "produce_per_cpu_s_vs_redis"):
        ratios = [r[name] for r in rows if name in r]
        if ratios:
            summary[name] = [statistics.median(ratios), min(ratios), max(ratios)]
    summary["targets"] = {
        "produce_per_worker_vs_redis": TARGET_REDIS_RATIO,
        "cpu_us_per_produce": TARGET_CPU_US,
    }
    print(json.dumps(summary))
    return 0
