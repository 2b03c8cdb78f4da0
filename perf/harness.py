"""``python -m perf run [--quick] [--out REPORT.json] [--check]``: the macro benchmark. Starts
brokers, a Redis server and load processes; opens sockets and files.

One run measures, side by side so the ratios compare like with like:

- ``produce.record_size=S`` and ``consume.record_size=S`` (S = 100 B to 1 MB, by 10x): one
  confluent-kafka producer (acks=1, linger.ms=5, librdkafka's batch size) then one consumer
  reading the same records back, against a 2-worker broker, 4 partitions, ~100 MB per run;
- ``produce.partitions=P`` (P = 1, 4, 16; 1 KB records);
- ``produce.workers=W`` (W = 1, 2, 4 broker workers; 2 producer processes, 8 partitions, 1 KB);
- latency (perf/bench_latency.py's sweep, under ``latency``): ``ack.<point>`` (produce->ack) and
  ``e2e.<point>`` (produce->consume) of 100 B records, one per Produce request, consumer
  attached, at 10/50/80 % of the capacity measured first and at 8,000 records/s (points
  ``load=0.1`` ... ``rate=8000``); and ``produce``, the 1 KB records' latency at full speed;
- ``requests.produce.connections=N`` and ``requests.fetch.connections=N`` (N = 1, 10, 100):
  small requests, one in flight per connection (perf/bench_requests.py), requests/s per worker
  over the same driver against plain asyncio servers (``request_sink``), with the workers' CPU
  per request and, for Produce, ``vs_redis``: per worker over Redis' XADD -P 1 -c 50;
- ``capacity``: the broker without client overhead (perf/broker_load.py) over its Kafka-shaped
  sink;
- ``append`` (PartitionLog, 1 MiB batches), ``crc32c`` and ``batch_build`` (RecordBatchBuilder,
  100 B records): the hot paths in-process;
- ``redis.record_size=S``: Redis Streams XADD with the same record size and count (perf/peers.py);
  each ``produce.record_size=S`` carries ``vs_redis``, our records/s over Redis' in the same
  repeat.

The load is ``shardbroker perf``'s own engine (shardbroker/loadgen), called in-process so the
harness keeps every latency for the CDFs. Every throughput is divided by a reference measured just
before and after it (the geometric mean of the two samples; perf/references.py: ``socket_sink``
for whatever crosses loopback, ``file_write`` for appends, ``memcpy`` for CPU-bound work; capacity
by its own sink), and the median of the ``repeats`` ratios is what ``python -m perf check``
compares with the baseline (perf/report.py). Repeats go round the whole plan rather than back to
back, so a slow minute on the shared host lands in one sample of each figure rather than in every
sample of one. A full run takes ~7 minutes here.

Quick mode (``--quick``, the test suite's) runs every part once on small sizes (35-50 s here):
it proves the harness works; its ratios are not comparable with a full run's.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from perf import bench_latency, bench_requests, peers, report
from perf.broker_load import CAPACITY_TARGET, CapacityConfig, capacity, running_broker, spread_targets
from perf.references import REFERENCES
from shardbroker.config.log_config import LogConfig
from shardbroker.loadgen.clients import ConsumerSettings, ProducerSettings
from shardbroker.loadgen.runner import LoadError, Result, ensure_topic, run_consume, run_produce
from shardbroker.loadgen.stats import latency_cdf, latency_percentiles
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.storage.log import PartitionLog
from tests.integration.broker_process import BrokerProcess
from tests.unit.storage_batches import batch_of_size

__all__ = ["FULL", "QUICK", "Plan", "main", "run"]

T = TypeVar("T")
MB = 1e6
MIB = 1 << 20
#: The producer settings of every produce run (the session-1 harness's: acks=1, linger.ms=5).
PRODUCER_CONFIG = {"acks": "1", "linger.ms": "5"}
BROKER_CONFIG: dict[str, str | int | bool] = {"message.max.bytes": 4 * MIB, "num.partitions": 4}


@dataclass(frozen=True)
class Plan:
    quick: bool
    repeats: int
    bytes_per_run: int  # records per produce run = bytes_per_run / record size, capped
    max_records: int
    record_sizes: tuple[int, ...] = (100, 1000, 10_000, 100_000, 1_000_000)
    partitions: tuple[int, ...] = (1, 4, 16)
    workers: tuple[int, ...] = (1, 2, 4)
    sweep_record_size: int = 1000
    default_partitions: int = 4
    workers_partitions: int = 8
    workers_producers: int = 2
    latency_seconds: float = 10.0  # each point of the latency sweep
    latency_fixed_rate: float = bench_latency.FIXED_RATE
    request_connections: tuple[int, ...] = (1, 10, 100)
    request_seconds: float = 3.0
    request_sink_connections: int = 10
    redis_p1_xadds: int = 100_000
    capacity_seconds: float = 5.0
    reference_bytes: int = 256 * MIB
    memcpy_bytes: int = 64 * MIB
    append_bytes: int = 256 * MIB
    peers: bool = True

    def records(self, record_size: int) -> int:
        return max(1, min(self.max_records, self.bytes_per_run // record_size))


FULL = Plan(quick=False, repeats=3, bytes_per_run=100_000_000, max_records=1_000_000)
QUICK = Plan(
    quick=True,
    repeats=1,
    bytes_per_run=2_000_000,
    max_records=20_000,
    partitions=(1, 4),
    workers=(1, 2),
    latency_seconds=1.0,
    latency_fixed_rate=1000.0,
    request_connections=(1, 4),
    request_seconds=0.5,
    redis_p1_xadds=10_000,
    capacity_seconds=1.0,
    reference_bytes=32 * MIB,
    memcpy_bytes=16 * MIB,
    append_bytes=32 * MIB,
)


class HarnessError(Exception):
    """A measurement that did not do what it should (lost records, client errors)."""


@dataclass
class _Figures:
    """What a run collects; :meth:`document` makes the report (schema: perf/report.py)."""

    plan: Plan
    log: Callable[[str], None]
    references: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    latencies: dict[str, list[np.ndarray]] = field(default_factory=dict)
    latency_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    peers: dict[str, Any] = field(default_factory=dict)

    def reference(self, name: str, value: float | None = None) -> float:
        """Measure reference ``name`` now (or record ``value`` measured elsewhere)."""
        if value is None:
            fn, _ = REFERENCES[name]
            value = fn(self.plan.memcpy_bytes if name == "memcpy" else self.plan.reference_bytes)
        ref = self.references.setdefault(name, {"unit": _REFERENCE_UNITS.get(name, "MB/s"), "samples": []})
        ref["samples"].append(value)
        return value

    def bracketed(self, reference: str, measure: Callable[[], T]) -> tuple[T, float]:
        """Run ``measure`` between two samples of ``reference``; return its result and the
        geometric mean of the two samples (the reference over the time the measurement took)."""
        before = self.reference(reference)
        result = measure()
        return result, math.sqrt(before * self.reference(reference))

    def add(
        self,
        name: str,
        group: str,
        x: float | None,
        value: float,
        reference: str,
        reference_value: float,
        unit: str = "MB/s",
        **extra: Any,
    ) -> None:
        entry = self.metrics.setdefault(
            name, {"group": group, "x": x, "unit": unit, "reference": reference, "values": [], "ratios": []}
        )
        entry["values"].append(value)
        entry["ratios"].append(value / reference_value)
        for key, v in extra.items():
            entry.setdefault(key + "_samples", []).append(v)
        ratio = value / reference_value
        self.log(
            f"{name}: {value:,.2f} {unit}, {ratio:.4f} x {reference} ({reference_value:,.0f} "
            f"{self.references[reference]['unit']})" + "".join(f", {k} {v:,.4g}" for k, v in extra.items())
        )

    def document(self, started: float) -> dict[str, Any]:
        metrics = {}
        for name, entry in self.metrics.items():
            out = {k: v for k, v in entry.items() if not k.endswith("_samples")}
            out["value"] = statistics.median(entry["values"])
            out["ratio"] = statistics.median(entry["ratios"])
            for key in [k for k in entry if k.endswith("_samples")]:
                out[key.removesuffix("_samples")] = statistics.median(entry[key])
            metrics[name] = out
        references = {
            name: {**ref, "median": statistics.median(ref["samples"]), "what": _reference_what(name)}
            for name, ref in self.references.items()
        }
        latency = {}
        for name, arrays in self.latencies.items():
            all_ = np.concatenate(arrays) if arrays else np.zeros(0)
            latency[name] = {
                "percentiles": latency_percentiles(all_),
                "cdf": latency_cdf(all_),
                "count": int(all_.size),
                "params": self.latency_params[name],
            }
        return {
            "schema": report.SCHEMA,
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "command": "python -m perf run" + (" --quick" if self.plan.quick else ""),
            "quick": self.plan.quick,
            "seconds": round(time.monotonic() - started, 1),
            "host": _host(),
            "plan": asdict(self.plan),
            "references": references,
            "metrics": metrics,
            "latency": latency,
            "peers": self.peers,
        }


#: References measured by the benchmarks themselves (recorded with ``_Figures.reference(name, value)``).
_OTHER_REFERENCES = {
    "kafka_sink": "the capacity load generator against a plain asyncio sink answering minimal Produce "
    "responses",
    "request_sink": "perf/bench_requests.py's Produce driver, one request in flight per connection, "
    "against two plain asyncio servers answering pre-encoded Produce responses; requests/s per server",
}
_REFERENCE_UNITS = {"request_sink": "requests/s"}


def _reference_what(name: str) -> str:
    return _OTHER_REFERENCES.get(name) or REFERENCES[name][1]


def _host() -> dict[str, Any]:
    commit = dirty = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    return {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": commit,
        "git_dirty": dirty,
    }


# -- client measurements -----------------------------------------------------------------------


def _checked(result: Result, expected: int, what: str) -> Result:
    if result.errors or result.summary.errors or result.summary.records != expected:
        raise HarnessError(
            f"{what}: {result.summary.records} of {expected} records, {result.summary.errors} errors "
            f"{result.errors}"
        )
    return result


#: The largest value librdkafka's default ``message.max.bytes`` (1,000,000 with the record's
#: framing) lets through, with room to spare.
CLIENT_DEFAULT_MAX_VALUE = 990_000


def producer_config(record_size: int) -> dict[str, str]:
    """PRODUCER_CONFIG, with the client's ``message.max.bytes`` raised (to the broker's) only for
    values its default refuses: it also caps librdkafka's requests, so smaller sizes keep it."""
    if record_size <= CLIENT_DEFAULT_MAX_VALUE:
        return PRODUCER_CONFIG
    return {**PRODUCER_CONFIG, "message.max.bytes": str(BROKER_CONFIG["message.max.bytes"])}


def _produce(
    broker: BrokerProcess, topic: str, record_size: int, records: int, partitions: int, producers: int = 1
) -> Result:
    ensure_topic(broker.bootstrap, topic, partitions, timeout=60)
    settings = ProducerSettings(
        bootstrap=broker.bootstrap,
        topic=topic,
        record_size=record_size,
        records=records,
        duration=None,
        throughput=-1.0,
        config=producer_config(record_size),
        connect_timeout=30.0,
    )
    result = run_produce(settings, producers, {"record_size": record_size, "partitions": partitions})
    return _checked(result, records, f"produce {topic}")


def _consume(broker: BrokerProcess, topic: str, records: int) -> Result:
    settings = ConsumerSettings(
        bootstrap=broker.bootstrap,
        topic=topic,
        records=records,
        duration=None,
        idle_timeout=30.0,
        connect_timeout=30.0,
    )
    return _checked(run_consume(settings, {}), records, f"consume {topic}")


# -- in-process hot paths ----------------------------------------------------------------------


def _append_mb_per_s(total: int) -> float:
    """PartitionLog.append of 1 MiB batches into one segment (no flush), in a temp dir."""
    root = Path(tempfile.mkdtemp(prefix="shardbroker-perf-append-"))
    try:
        log = PartitionLog.open(root / "append-0", LogConfig(segment_bytes=2**31 - 1))
        chunks = [batch_of_size(MIB) for _ in range(4)]  # patched in place by each append
        log.append(chunks[0])  # first index entry of a fresh segment, untimed (bench_storage.py)
        count = total // MIB
        started = time.perf_counter()
        for i in range(count):
            log.append(chunks[i % 4])
        elapsed = time.perf_counter() - started
        for segment in log.segments:  # no close(): it would fdatasync, the reference never does
            segment.close()
        return count * len(chunks[0]) / elapsed / MB
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _crc_mb_per_s(total: int) -> float:
    data = os.urandom(total)
    crc32c(data)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        crc32c(data)
        best = min(best, time.perf_counter() - started)
    return total / best / MB


def _build_mb_per_s(total: int) -> float:
    """RecordBatchBuilder, 1,000 records of 100 B per batch: MB/s of record values."""
    value = bytes(range(100))
    batches = max(1, total // (100 * 1000))
    started = time.perf_counter()
    for _ in range(batches):
        builder = RecordBatchBuilder()
        for _ in range(1000):
            builder.append(value, None, 1_700_000_000_000)
        builder.build()
    return batches * 1000 * 100 / (time.perf_counter() - started) / MB


# -- the plan ------------------------------------------------------------------------------------


def _clients_round(f: _Figures, broker: BrokerProcess, repeat: int, redis: peers.RedisServer | None) -> None:
    plan = f.plan
    # Each repeat starts at the next size: a size measured late in a round finds the page cache
    # grown into fresh VM memory, ~4x dearer per MB here (perf/bench_record_sizes.py), and would
    # always be the one that pays it.
    start = repeat % len(plan.record_sizes)
    for size in (*plan.record_sizes[start:], *plan.record_sizes[:start]):
        records = plan.records(size)
        topic = f"size{size}-r{repeat}"
        produced, ref = f.bracketed(
            "socket_sink", partial(_produce, broker, topic, size, records, plan.default_partitions)
        )
        extra: dict[str, float] = {"records_per_s": produced.summary.records_per_s}
        peer_redis = redis if size <= peers.XADD_MAX_VALUE else None
        if peer_redis is not None:
            peer, peer_ref = f.bracketed(
                "socket_sink", partial(peers.xadd_rate, peer_redis, topic, size, records)
            )
            extra["vs_redis"] = produced.summary.records_per_s / peer["records_per_s"]
        f.add(
            f"produce.record_size={size}",
            "record_size",
            size,
            produced.summary.mb_per_s,
            "socket_sink",
            ref,
            **extra,
        )
        if peer_redis is not None:
            f.add(
                f"redis.record_size={size}",
                "redis",
                size,
                peer["mb_per_s"],
                "socket_sink",
                peer_ref,
                records_per_s=peer["records_per_s"],
            )
        if size == plan.sweep_record_size:
            f.latencies.setdefault("produce", []).append(produced.latencies)
            f.latency_params["produce"] = {
                "record_size": size,
                "records": records,
                "partitions": plan.default_partitions,
                "what": "produce() to acknowledgement at full speed (librdkafka's Message.latency)",
                **PRODUCER_CONFIG,
            }
        consumed, ref = f.bracketed("socket_sink", partial(_consume, broker, topic, records))
        f.add(
            f"consume.record_size={size}",
            "consume",
            size,
            consumed.summary.mb_per_s,
            "socket_sink",
            ref,
            records_per_s=consumed.summary.records_per_s,
        )
    size = plan.sweep_record_size
    for partitions in plan.partitions:
        topic = f"parts{partitions}-r{repeat}"
        produced, ref = f.bracketed(
            "socket_sink", partial(_produce, broker, topic, size, plan.records(size), partitions)
        )
        f.add(
            f"produce.partitions={partitions}",
            "partitions",
            partitions,
            produced.summary.mb_per_s,
            "socket_sink",
            ref,
            records_per_s=produced.summary.records_per_s,
        )
    _latency_round(f, broker, repeat)
    cap = capacity(broker, CapacityConfig(duration=plan.capacity_seconds))
    sink = f.reference("kafka_sink", cap["sink_mb_per_s"])
    f.add("capacity", "capacity", None, cap["broker_mb_per_s"], "kafka_sink", sink, target=CAPACITY_TARGET)


def _latency_round(f: _Figures, broker: BrokerProcess, repeat: int) -> None:
    """perf/bench_latency.py's sweep: ``ack.<point>`` and ``e2e.<point>`` latencies (CDFs)."""
    plan = f.plan
    points = bench_latency.sweep(
        broker, f"lat-r{repeat}", plan.latency_seconds, fixed_rate=plan.latency_fixed_rate, log=f.log
    )
    capacity_per_s = points[0].records_per_s
    for p in points[1:]:  # the capacity run's latencies are its queue's, not the broker's
        for side, latencies, what in (
            ("ack", p.ack_latencies, "produce() to acknowledgement (librdkafka's Message.latency)"),
            ("e2e", p.e2e_latencies, "producer's time.time_ns() in the value to the consumer's receipt"),
        ):
            name = f"{side}.{p.label}"
            f.latencies.setdefault(name, []).append(latencies)
            params = f.latency_params.setdefault(
                name,
                {
                    "what": what,
                    "record_size": bench_latency.RECORD_SIZE,
                    "partitions": bench_latency.PARTITIONS,
                    "seconds": plan.latency_seconds,
                    "producer": bench_latency.PRODUCER_CONFIG,
                    "consumer": bench_latency.CONSUMER_CONFIG,
                    "rates": [],
                    "capacities": [],
                    "host_busy": [],
                    "workers_cpu_us_per_record": [],
                    "others_cpu_us_per_record": [],
                },
            )
            params["rates"].append(p.records_per_s)
            params["capacities"].append(capacity_per_s)
            params["host_busy"].append(p.host_busy)
            params["workers_cpu_us_per_record"].append(round(p.cpu_us_per_record, 1))
            params["others_cpu_us_per_record"].append(round(p.others_cpu_us_per_record, 1))
            params["records_per_s"] = statistics.median(params["rates"])


def _requests_round(f: _Figures, repeat: int, redis: peers.RedisServer | None) -> None:
    """perf/bench_requests.py's figures against a fresh broker, bracketed by ``request_sink``."""
    plan = f.plan
    conns = plan.request_sink_connections
    before = f.reference("request_sink", bench_requests.sink_rate(conns, plan.request_seconds))
    rows: dict[str, list[dict[str, Any]]] = {"produce": [], "fetch": []}
    with running_broker(2, config=BROKER_CONFIG, name=f"requests-r{repeat}") as broker:
        leaders = ensure_topic(broker.bootstrap, bench_requests.TOPIC, 2 * broker.workers, timeout=60)
        for kind, n in itertools.product(rows, plan.request_connections):
            targets = spread_targets(broker, bench_requests.TOPIC, leaders, n)
            rows[kind].append(bench_requests.measure(broker, kind, targets, plan.request_seconds))
    after = f.reference("request_sink", bench_requests.sink_rate(conns, plan.request_seconds))
    redis_rate = None
    if redis is not None:
        xadd = peers.xadd_rate(
            redis,
            f"requests-r{repeat}",
            bench_requests.RECORD_SIZE,
            plan.redis_p1_xadds,
            connections=bench_requests.REDIS_CONNECTIONS,
            pipeline=1,
        )
        redis_rate = xadd["records_per_s"]
    ref = math.sqrt(before * after)
    for kind, results in rows.items():
        for r in results:
            extra = {"cpu_us_per_request": r["cpu_us_per_request"], "rtt_p99_ms": r["rtt_p99_ms"]}
            if kind == "produce" and redis_rate is not None:
                extra["vs_redis"] = r["requests_per_s_per_worker"] / redis_rate
                extra["per_cpu_s_vs_redis"] = r["requests_per_cpu_s"] / redis_rate
            f.add(
                f"requests.{kind}.connections={r['connections']}",
                f"requests_{kind}",
                r["connections"],
                r["requests_per_s_per_worker"],
                "request_sink",
                ref,
                unit="requests/s",
                **extra,
            )


def _workers_round(f: _Figures, repeat: int) -> None:
    plan = f.plan
    size = plan.sweep_record_size
    for workers in plan.workers:
        with running_broker(workers, config=BROKER_CONFIG, name=f"perf{workers}w") as broker:
            produce = partial(
                _produce,
                broker,
                f"workers-r{repeat}",
                size,
                plan.records(size),
                plan.workers_partitions,
                producers=plan.workers_producers,
            )
            produced, ref = f.bracketed("socket_sink", produce)
            f.add(
                f"produce.workers={workers}",
                "workers",
                workers,
                produced.summary.mb_per_s,
                "socket_sink",
                ref,
                records_per_s=produced.summary.records_per_s,
            )


def _in_process_round(f: _Figures) -> None:
    plan = f.plan
    value, ref = f.bracketed("file_write", lambda: _append_mb_per_s(plan.append_bytes))
    f.add("append", "storage", None, value, "file_write", ref)
    value, ref = f.bracketed("memcpy", lambda: _crc_mb_per_s(plan.memcpy_bytes))
    f.add("crc32c", "cpu", None, value, "memcpy", ref)
    value, ref = f.bracketed("memcpy", lambda: _build_mb_per_s(plan.memcpy_bytes // 8))
    f.add("batch_build", "cpu", None, value, "memcpy", ref)


@contextlib.contextmanager
def _redis(f: _Figures) -> Iterator[peers.RedisServer | None]:
    why = None if f.plan.peers else "not asked for (--no-peers)"
    why = why or peers.redis_available()
    if why is not None:
        f.peers["redis"] = {"skipped": why}
        f.log(f"redis peer skipped: {why}")
        yield None
        return
    with peers.redis_server() as server:
        f.peers["redis"] = {
            "version": server.version,
            "settings": "appendonly yes, appendfsync everysec, no RDB snapshots, no automatic AOF rewrite",
            "load": f"redis-benchmark, {peers.CONNECTIONS} connection, {peers.PIPELINE} XADDs pipelined",
        }
        yield server


def run(plan: Plan, log: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Run ``plan``; return the report document (it validates: perf/report.py)."""
    started = time.monotonic()
    f = _Figures(plan, log)
    with _redis(f) as redis:
        for repeat in range(plan.repeats):
            log(f"== repeat {repeat + 1} of {plan.repeats}")
            with running_broker(2, config=BROKER_CONFIG) as broker:
                _clients_round(f, broker, repeat, redis)
            _requests_round(f, repeat, redis)
            _workers_round(f, repeat)
            _in_process_round(f)
    doc = f.document(started)
    problems = report.validate(doc)
    if problems:
        raise HarnessError("the report does not validate: " + "; ".join(problems))
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat (what the tests run)")
    parser.add_argument("--out", type=Path, default=Path("perf-report.json"), help="[perf-report.json]")
    parser.add_argument("--repeats", type=int, help=f"rounds of the whole plan [{FULL.repeats}; quick 1]")
    parser.add_argument("--no-peers", action="store_true", help="leave Redis out")
    parser.add_argument("--check", action="store_true", help="then compare with the baseline (perf check)")
    parser.add_argument("--baseline", type=Path, help="for --check [perf/baselines/full.json or quick.json]")
    parser.add_argument("--tolerance", type=float, default=report.DEFAULT_TOLERANCE, help="for --check")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error(f"--repeats must be at least 1, got {args.repeats}")
        plan = replace(plan, repeats=args.repeats)
    if args.no_peers:
        plan = replace(plan, peers=False)

    def log(line: str) -> None:
        print(f"[perf {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    try:
        doc = run(plan, log)
    except (HarnessError, LoadError, RuntimeError) as exc:
        print(f"python -m perf run: error: {exc}", file=sys.stderr)
        return 1
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(report.summary_table(doc))
    print(f"report written to {args.out}")
    if args.check:
        return report.check_command(doc, args.baseline, args.tolerance)
    return 0
