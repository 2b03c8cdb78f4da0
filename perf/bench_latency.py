"""Issue 18's end-to-end latency figures: produce->ack and produce->consume at fixed fractions of
the measured capacity (10 %, 50 %, 80 %) and at 8,000 records/s, one record per Produce request,
with a consumer attached.

Run::

    .venv/bin/python -m perf latency [--rounds 3] [--seconds 10] [--out latency.json]
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf latency     # 1 round, short points

Each round starts a broker (2 workers, the perf harness's settings) and, on a fresh 4-partition
topic per point, runs one producer process and one consumer process (shardbroker/loadgen's e2e:
the consumer assigned at the end offsets before the producer starts, the producer writing its
``time.time_ns()`` into each value). First the **capacity**: the producer as fast as it can for
the point's seconds, records/s delivered to the consumer; then each point at a fixed rate (the
fraction of that round's capacity). Per point: p50/p99/p99.9/max of produce->ack (librdkafka's
own ``Message.latency()``, from ``produce()`` to the acknowledgement) and of produce->consume
(consumer's wall clock at receipt minus the stamp), the rate reached, and the workers' CPU per
record (/proc, over the point), and how busy the whole host was (``host_busy``: the 90th
percentile of its CPU use over half-second samples, /proc/stat; 1.0 = both cores; clients,
broker and neighbours together).

The client, and why: librdkafka through confluent-kafka, so a C client puts the records on the
wire and the Python around it only calls ``produce()`` at the pace (~2 us a record) and reads
delivery reports. Settings: ``linger.ms=0`` and ``batch.num.messages=1`` (batching off: every
record is a Produce request of its own, what the issue's small-request path is about; with
batching on, librdkafka packs whatever queued during a round trip into one request and the
figure would measure batching), ``acks=1``, ``socket.nagle.disable=true`` on both clients (the
Java client sets TCP_NODELAY; librdkafka's default leaves Nagle on, which holds a small request
back until the previous one is acknowledged). The consumer keeps librdkafka's fetch defaults
(fetch.min.bytes=1, fetch.wait.max.ms=500): a fetch parks at the broker until the next append.
A pre-encoded request driver (perf/bench_requests.py) would show less client cost but has no
consumer-side clock of a real client; the request-rate figures come from it instead.

Figures (2026-12-05, after the single-partition Produce path; 3 rounds x 10 s, median of the
rounds, e2e = produce->consume)::

    point       records/s   workers' CPU/record  host busy  ack p50/p99/p99.9 ms  e2e p50/p99/p99.9 ms
    capacity    73,200      11.2 us              100 %      (queue: ~1.3 s)
    10 %         7,250      137 us                89 %      0.29 / 1.17 / 4.5     0.42 / 1.56 / 5.1
    50 %        36,200      23.8 us              100 %      1.14 / 26 / 41        1.51 / 31 / 50
    80 %        56,000      13.2 us              100 %      51 / 348 / 363        62 / 375 / 405
    8,000/s      7,920      126 us                93 %      0.35 / 1.12 / 2.9     0.46 / 1.41 / 3.3

Average produce->ack at 8,000 records/s with the consumer attached: 0.38 ms (target <= 2 ms: met).
At 50 % of capacity p99 26-33 ms and p99.9 39-56 ms: the targets (5 / 20 ms) are not met, and
the host column says why: at capacity librdkafka keeps many requests in flight per connection,
so the workers read and answer them in batches (11 us of CPU a record), while at a fixed rate
each record is a request, a wake-up and a fetch of its own (24-137 us a record); so half the
capacity's rate already keeps both cores busy all the time, and the tail is queueing.

Whose CPU that is (``others``: the host's busy CPU minus the workers', i.e. the two client
processes; 2026-12-05 09:16, 3 rounds x 10 s, median (range))::

    point       records/s   workers/record      others/record       host   e2e p50/p99/p99.9 ms
    capacity    72,800      13.3 (12.9-14.2)    15.0 (14.8-17.0)    100 %
    10 %         7,210      146 (144-164)       118 (114-129)        96 %  0.66 / 4.1 / 7.4
    50 %        36,000      24.7 (23.4-26.3)    32.3 (31.5-36.0)    100 %  4.6 / 308 / 374
    80 %        54,900      15.7 (15.3-16.6)    21.3 (20.8-24.4)    100 %  322 / 1,202 / 1,247
    8,000/s      7,920      134 (133-134)       108 (107-110)        96 %  0.70 / 5.3 / 11.0

(avg produce->ack at 8,000/s: 0.77 ms, 0.65-0.84.) At 50 % the clients alone take 1.16 cores
of the 2 and the workers 0.89: the host has no idle core left, and with the clients costing
more per record than the broker, no broker-side change can give this 2-core host the idle
capacity the targets need. The tail swings with the VM's day (yesterday p99 31 ms, today
308 ms, same code); a sweep of finer fractions (``--fractions 0.15,0.2,0.25,0.3,0.4``, 2 rounds)
found the host >= 98 % busy from 15 % of capacity up, and p99 <= 5 ms held only at 20-25 % on
a quiet round. At low rates each record costs the workers ~135 us: every record is a wake-up
of an idle vCPU for the Produce, the parked Fetch and the next Fetch (perf record: ~22 % of a
worker's samples are the kernel waking the peer in ``sock_def_readable`` and the worker's own
return from idle in ``finish_task_switch``).
Before the single-partition path (same sitting, 2026-12-05 04:51): capacity 48,000-51,500
records/s, 50 %: p99 15-320 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from perf.broker_load import BENCH_BROKER_CONFIG, running_broker
from perf.sizes import quick
from shardbroker.ipc.procfs import cpu_seconds, host_cpu_seconds
from shardbroker.loadgen.clients import ConsumerSettings, ProducerSettings
from shardbroker.loadgen.runner import Result, ensure_topic, run_e2e
from shardbroker.loadgen.stats import latency_percentiles
from tests.integration.broker_process import BrokerProcess

__all__ = ["FIXED_RATE", "FRACTIONS", "Point", "main", "sweep"]

FRACTIONS: Final = (0.1, 0.5, 0.8)
#: The issue's fixed point: 8,000 records/s with a consumer attached (average produce latency).
FIXED_RATE: Final = 8000.0
RECORD_SIZE: Final = 100
PARTITIONS: Final = 4
PRODUCER_CONFIG: Final = {
    "acks": "1",
    "linger.ms": "0",
    "batch.num.messages": "1",
    "socket.nagle.disable": "true",
}
CONSUMER_CONFIG: Final = {"socket.nagle.disable": "true"}
#: Targets (issue 18) at 50 % of capacity, and the average at FIXED_RATE.
TARGET_E2E_P99_MS: Final = 5.0
TARGET_E2E_P999_MS: Final = 20.0
TARGET_FIXED_AVG_ACK_MS: Final = 2.0


@dataclass
class Point:
    """One load point of one round: ``label`` ("capacity", "load=0.5", "rate=8000")."""

    label: str
    asked_per_s: float  # the producer's fixed rate; 0 for the capacity run
    records: int
    records_per_s: float  # delivered to the consumer over the run
    cpu_us_per_record: float  # the workers', user + system
    others_cpu_us_per_record: float  # the rest of the host's busy CPU (the clients, mostly)
    host_busy: float  # p90 of the host's CPU use (fraction of all cores) in 0.5 s samples
    ack_latencies: npt.NDArray[np.float64] = field(repr=False)  # produce -> acknowledgement, s
    e2e_latencies: npt.NDArray[np.float64] = field(repr=False)  # produce -> consume, s

    @property
    def ack_ms(self) -> dict[str, float] | None:
        return latency_percentiles(self.ack_latencies)

    @property
    def e2e_ms(self) -> dict[str, float] | None:
        return latency_percentiles(self.e2e_latencies)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        del out["ack_latencies"], out["e2e_latencies"]
        return {**out, "ack_ms": self.ack_ms, "e2e_ms": self.e2e_ms}


class _HostBusy:
    """Samples the host's CPU use every ``SAMPLE_S`` in a thread while in a ``with``."""

    SAMPLE_S: Final = 0.5

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="host-busy", daemon=True)

    def _run(self) -> None:
        busy, every = host_cpu_seconds()
        while not self._stop.wait(self.SAMPLE_S):
            b, e = host_cpu_seconds()
            if e > every:
                self.samples.append((b - busy) / (e - every))
            busy, every = b, e

    def __enter__(self) -> _HostBusy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def p90(self) -> float:
        return float(np.percentile(self.samples, 90)) if self.samples else 0.0


def _e2e(
    broker: BrokerProcess, topic: str, rate: float, seconds: float
) -> tuple[Result, float, float, float]:
    """One e2e run; ``rate`` <= 0: as fast as the producer goes, for ``seconds``. Returns the
    result, the workers' CPU seconds over it, the rest of the host's busy CPU seconds (client
    processes and anything else) and the host's busy fraction (p90)."""
    ensure_topic(broker.bootstrap, topic, PARTITIONS, timeout=60)
    producer = ProducerSettings(
        bootstrap=broker.bootstrap,
        topic=topic,
        record_size=RECORD_SIZE,
        records=int(rate * seconds) if rate > 0 else None,
        duration=None if rate > 0 else seconds,
        throughput=rate if rate > 0 else -1.0,
        config=PRODUCER_CONFIG,
        stamp=True,
        connect_timeout=30.0,
    )
    consumer = ConsumerSettings(
        bootstrap=broker.bootstrap,
        topic=topic,
        records=None,
        duration=None,
        idle_timeout=30.0,
        from_end=True,
        stamped=True,
        config=CONSUMER_CONFIG,
        connect_timeout=30.0,
    )
    workers = [broker.worker_pid(w) for w in range(broker.workers)]
    before, host_before = cpu_seconds(*workers), host_cpu_seconds()[0]
    with _HostBusy() as host:
        result = run_e2e(producer, consumer, {"rate": rate})
    # Both include the clients' start, connect and metadata: small beside the point's seconds.
    cpu = cpu_seconds(*workers) - before
    others = host_cpu_seconds()[0] - host_before - cpu
    if result.errors:
        raise RuntimeError(f"e2e {topic}: {result.errors[0]}")
    if producer.records is not None and result.summary.records < producer.records:
        raise RuntimeError(f"e2e {topic}: {result.summary.records:,} of {producer.records:,} records arrived")
    return result, cpu, others, host.p90()


def measure(broker: BrokerProcess, topic: str, label: str, rate: float, seconds: float) -> Point:
    result, cpu, others, busy = _e2e(broker, topic, rate, seconds)
    s = result.summary
    return Point(
        label=label,
        asked_per_s=max(rate, 0.0),
        records=s.records,
        records_per_s=s.records_per_s,
        cpu_us_per_record=cpu / s.records * 1e6 if s.records else 0.0,
        others_cpu_us_per_record=others / s.records * 1e6 if s.records else 0.0,
        host_busy=busy,
        ack_latencies=result.ack_latencies,
        e2e_latencies=result.latencies,
    )


def sweep(
    broker: BrokerProcess,
    prefix: str,
    seconds: float,
    fractions: Sequence[float] = FRACTIONS,
    fixed_rate: float | None = FIXED_RATE,
    log: Callable[[str], None] = lambda line: None,
) -> list[Point]:
    """Capacity, then each fraction of it, then ``fixed_rate``: topics ``<prefix>-<label>``."""
    cap = measure(broker, f"{prefix}-capacity", "capacity", 0.0, seconds)
    log(_line(cap))
    points = [cap]
    rates = [(f"load={f:g}", f * cap.records_per_s) for f in fractions]
    if fixed_rate is not None:
        rates.append((f"rate={fixed_rate:g}", fixed_rate))
    for label, rate in rates:
        point = measure(broker, f"{prefix}-{label.replace('=', '')}", label, rate, seconds)
        log(_line(point))
        points.append(point)
    return points


def _line(p: Point) -> str:
    def pct(d: dict[str, float] | None) -> str:
        if d is None:
            return "-"
        return " ".join(f"{k} {d[k]:.2f}" for k in ("avg", "p50", "p99", "p99.9", "max"))

    return (
        f"{p.label:<10} {p.records_per_s:9,.0f} records/s  CPU/record: workers "
        f"{p.cpu_us_per_record:6.1f} us, others {p.others_cpu_us_per_record:6.1f} us  "
        f"host busy {p.host_busy:4.0%}  "
        f"ack ms: {pct(p.ack_ms)}  e2e ms: {pct(p.e2e_ms)}"
    )


def _summary(rounds: list[list[Point]]) -> dict[str, Any]:
    """Per label: median [median, min, max] over rounds of the rate and of each percentile."""
    out: dict[str, Any] = {}
    for label in [p.label for p in rounds[0]]:
        points = [p for r in rounds for p in r if p.label == label]
        entry: dict[str, Any] = {}
        for name, values in (
            ("records_per_s", [p.records_per_s for p in points]),
            ("cpu_us_per_record", [p.cpu_us_per_record for p in points]),
            ("others_cpu_us_per_record", [p.others_cpu_us_per_record for p in points]),
            ("host_busy", [p.host_busy for p in points]),
        ):
            entry[name] = _spread(values)
        for side in ("ack_ms", "e2e_ms"):
            pcts = [getattr(p, side) for p in points if getattr(p, side) is not None]
            if pcts:
                entry[side] = {k: _spread([d[k] for d in pcts]) for k in pcts[0]}
        out[label] = entry
    return out


def _spread(values: list[float]) -> list[float]:
    return [round(statistics.median(values), 3), round(min(values), 3), round(max(values), 3)]


def _verdict(summary: dict[str, Any]) -> dict[str, Any]:
    """[median, target, met] of each of the issue's targets that was measured."""
    half = summary.get("load=0.5", {}).get("e2e_ms")
    fixed = summary.get(f"rate={FIXED_RATE:g}", {}).get("ack_ms")
    wanted = []
    if half is not None:
        wanted += [("e2e_p99_at_half_ms", half["p99"], TARGET_E2E_P99_MS)]
        wanted += [("e2e_p99.9_at_half_ms", half["p99.9"], TARGET_E2E_P999_MS)]
    if fixed is not None:
        wanted += [("avg_ack_at_8000_ms", fixed["avg"], TARGET_FIXED_AVG_ACK_MS)]
    return {name: [spread[0], target, spread[0] <= target] for name, spread, target in wanted}


def test_latency_sweep_quick() -> None:
    """Every point delivers every record with both latencies measured (figures not judged)."""
    with running_broker(2, config=BENCH_BROKER_CONFIG, name="latency") as broker:
        points = sweep(broker, "lat", 0.5, fractions=(0.1,), fixed_rate=500.0)
    assert [p.label for p in points] == ["capacity", "load=0.1", "rate=500"]
    for p in points:
        assert p.records > 0 and p.ack_ms is not None and p.e2e_ms is not None
        assert 0 < p.ack_ms["p50"] <= p.ack_ms["max"] and 0 < p.e2e_ms["p50"] <= p.e2e_ms["max"]
    assert points[2].records == 250  # a fixed-rate point sends rate x seconds, all delivered


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf latency",
        description="produce->ack and produce->consume latency at 10/50/80 %% of capacity and at "
        "8,000 records/s, one record per request, consumer attached (perf/bench_latency.py)",
    )
    parser.add_argument("--rounds", type=int, default=1 if quick() else 3, help="brokers, each a sweep [3]")
    parser.add_argument(
        "--seconds", type=float, default=2.0 if quick() else 10.0, help="each point's length [10]"
    )
    parser.add_argument(
        "--fractions",
        default=",".join(f"{f:g}" for f in FRACTIONS),
        help="fractions of the capacity to run at, comma-separated [0.1,0.5,0.8]",
    )
    parser.add_argument("--out", help="write every point and the summary as JSON here")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be at least 1 and --seconds more than 0")
    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
    except ValueError:
        parser.error(f"--fractions: not a comma-separated list of numbers: {args.fractions!r}")
    if not all(0 < f < 1 for f in fractions):
        parser.error("--fractions: each must be more than 0 and less than 1")

    def log(line: str) -> None:
        print(f"[latency {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)

    rounds = []
    for i in range(args.rounds):
        log(f"== round {i + 1} of {args.rounds}")
        with running_broker(2, config=BENCH_BROKER_CONFIG, name="latency") as broker:
            rounds.append(sweep(broker, f"lat-r{i}", args.seconds, fractions, log=log))
    summary = _summary(rounds)
    doc = {
        "rounds": [[p.as_json() for p in r] for r in rounds],
        "summary": summary,
        "targets": _verdict(summary),
        "producer": PRODUCER_CONFIG,
        "consumer": CONSUMER_CONFIG,
        "record_size": RECORD_SIZE,
        "partitions": PARTITIONS,
        "seconds": args.seconds,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
    print(json.dumps({"summary": summary, "targets": doc["targets"]}, indent=1))
    return 0
