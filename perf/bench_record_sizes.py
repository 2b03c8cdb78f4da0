"""Issue 18's large-records figures: produce MB/s by record size, 100 B to 1 MB. Starts brokers
and client processes; opens sockets and files; reads ``/proc``.

Run::

    .venv/bin/python -m perf record-sizes [--rounds 5] [--mb 100] [--sizes 100,1000,...]
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf record-sizes    # one round, 2 MB a size

What is measured: ``python -m perf run``'s ``produce.record_size=S`` (perf/harness.py: one
confluent-kafka producer through shardbroker/loadgen, acks=1, linger.ms=5, librdkafka's batch
size, a 2-worker broker, 4 partitions), for S = 100 B, 1 KB, 10 KB, 100 KB and 1 MB, ~``--mb`` MB
of acknowledged values each. For 1 MB records only, the producer's ``message.max.bytes`` is
raised to the broker's (4 MiB): librdkafka's default (1,000,000) counts the record's framing, so
it refuses a 1,000,000 B value at ``produce()``; the other sizes run with the harness's settings
unchanged (the setting also bounds librdkafka's ProduceRequest size).

Fair conditions for every size, because on this VM the cost of an append depends on the page
cache, not on the record size: writing into page cache that grows into memory the host has
taken back (virtio free page reporting) costs ~2.3 ms of kernel time per MB (76 % of pwrite in
``copy_folio_from_iter_atomic``; a plain ``os.pwrite`` loop of 1 MiB chunks: 1,742 MB/s for the
first 300 MB, then 309-403 MB/s), against 0.17 ms/MB (4,453-6,125 MB/s) into pages just freed.
So whatever ran first in a broker's life was fast and whatever ran after ~300-600 MB was slow:
with the sizes in ascending order (as the harness runs them) 1 KB / 10 KB / 100 KB / 1 MB gave
780 / 971 / 487 / 440 MB/s, and backwards 491 / 821 / 1,716 / 1,494 MB/s. Hence: each round has
its own broker and starts at the next size (over ``len(SIZES)`` rounds each size is measured once
in each position), and each topic is deleted (``log.segment.delete.delay.ms`` 0) as soon as it
is measured, so that the next size can append into the page cache just freed rather than into
ever more memory. That works only while the freed memory has not been handed back to the host
yet (the guest reports freed memory ~2 s after it is freed; the next producer starts 1-2 s
later), so a run is still either "warm" (the workers' CPU ~0.5-0.8 ms/MB) or "cold" (~2-2.7
ms/MB, every size at ~370-510 MB/s): the CPU column says which; compare the medians.

The broker does not depend on the record size: librdkafka closes a batch at ``batch.size``
(1,000,000), so from 1 KB up the broker receives the same ~1 MB batches, one per ProduceRequest
(strace of a worker: 1 KB and 1 MB records alike, two reads per request, 256 KiB then the rest,
and one ~1,000,000 B pwrite). perf/broker_load.py's pre-encoded driver (no client library) with
one ~1 MB batch of 1 KB, 10 KB or one 1 MB record, topics recycled as here, took 2,245 / 2,481
/ 2,398 MB/s at 0.69 / 0.61 / 0.67 ms of worker CPU per MB (warm): twice what confluent-kafka
delivers warm, so warm figures are the client's. ``perf record -a`` over 4 GB of 1 MB records
(cold): the workers spent 86 % of their time in pwrite (``copy_folio_from_iter_atomic``: the
first touch of the new page cache), 3 % in recv, 4 % in memmove (likely the 256 KiB that
reached the default receive buffer, moved to the frame's own buffer); the producer process spent
22 % of a core in ``clear_page_erms``, zeroing fresh memory for librdkafka's copy of each value.

Reported per size: MB/s and records/s (median and range over the rounds) and the broker
workers' CPU per MB acknowledged (user + system from ``/proc``, from just before the producer
process starts to its last acknowledgement, so it includes its connection set-up: ~1 ms of
worker CPU). Target (issue 18): 10 KB and 1 MB records >= 1 KB records in MB/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from typing import Any, Final

from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from perf.broker_load import running_broker
from perf.harness import BROKER_CONFIG, FULL, _produce
from perf.sizes import pick, quick
from shardbroker.ipc.procfs import cpu_seconds
from tests.integration.broker_process import BrokerProcess

__all__ = ["SIZES", "main", "measure", "run_round", "summarise"]

SIZES: Final = (100, 1000, 10_000, 100_000, 1_000_000)
MB: Final = 1_000_000
#: The broker: the harness's, with a deleted topic's files removed at once (see the docstring).
BROKER: Final = {**BROKER_CONFIG, "log.segment.delete.delay.ms": 0}


def measure(broker: BrokerProcess, topic: str, size: int, total_bytes: int) -> dict[str, Any]:
    """One producer sending ``total_bytes`` of ``size``-byte records to a new ``topic``, which is
    deleted afterwards."""
    records = max(1, min(FULL.max_records, total_bytes // size))
    workers = [broker.worker_pid(w) for w in range(broker.workers)]
    cpu = cpu_seconds(*workers)
    result = _produce(broker, topic, size, records, FULL.default_partitions)
    cpu = cpu_seconds(*workers) - cpu
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 2})
    admin.delete_topics([topic])[topic].result(60)
    summary = result.summary
    return {
        "record_size": size,
        "records": summary.records,
        "seconds": round(summary.seconds, 3),
        "mb_per_s": round(summary.mb_per_s, 1),
        "records_per_s": round(summary.records_per_s),
        "worker_cpu_ms_per_mb": round(cpu * 1000 / (summary.bytes / MB), 3),
    }


def run_round(index: int, sizes: Sequence[int], total_bytes: int) -> list[dict[str, Any]]:
    """Every size once on a fresh broker, starting at ``sizes[index % len(sizes)]``."""
    start = index % len(sizes)
    order = [*sizes[start:], *sizes[:start]]
    with running_broker(2, config=BROKER, name="record-sizes") as broker:
        return [measure(broker, f"size{size}-r{index}", size, total_bytes) for size in order]


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median and range per size of every round's rows; whether the issue's target is met."""
    by_size: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_size.setdefault(row["record_size"], []).append(row)
    sizes: dict[str, Any] = {}
    for size in sorted(by_size):
        sizes[str(size)] = {
            name: [statistics.median(vs := [r[name] for r in by_size[size]]), min(vs), max(vs)]
            for name in ("mb_per_s", "records_per_s", "worker_cpu_ms_per_mb")
        }
    medians = [sizes[str(s)]["mb_per_s"][0] for s in sorted(by_size)]
    out: dict[str, Any] = {"sizes": sizes, "non_decreasing": medians == sorted(medians)}
    if all(str(s) in sizes for s in (1000, 10_000, 1_000_000)):
        base = sizes["1000"]["mb_per_s"][0]
        out["target_met"] = all(sizes[str(s)]["mb_per_s"][0] >= base for s in (10_000, 1_000_000))
    return out


def test_record_sizes_quick() -> None:
    """Every size is produced whole (1 MB records included) with its CPU accounted (figures not
    judged here)."""
    rows = run_round(1, SIZES, pick(100 * MB, 2 * MB))
    assert sorted(r["record_size"] for r in rows) == sorted(SIZES)
    # CPU time is counted in 10 ms ticks: 2 MB of 1 MB records may cost no whole tick here.
    assert all(r["mb_per_s"] > 0 and r["worker_cpu_ms_per_mb"] >= 0 for r in rows)
    assert sum(r["worker_cpu_ms_per_mb"] for r in rows) > 0
    assert set(summarise(rows)["sizes"]) == {str(s) for s in SIZES}


def _sizes(text: str) -> list[int]:
    """``--sizes``: positive integers, comma-separated."""
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: want positive integers, comma-separated (100,1000)")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf record-sizes",
        description="produce MB/s by record size (100 B - 1 MB), median and range over rounds, and "
        "the workers' CPU per MB (perf/bench_record_sizes.py)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1 if quick() else len(SIZES), help=f"[{len(SIZES)}; quick 1]"
    )
    parser.add_argument("--mb", type=float, default=pick(100, 2), help="MB of values per size [100; quick 2]")
    parser.add_argument("--sizes", type=_sizes, default=list(SIZES), help="record sizes, comma-separated")
    args = parser.parse_args(argv)
    rows = []
    for index in range(args.rounds):
        for row in run_round(index, args.sizes, int(args.mb * MB)):
            print(json.dumps({"round": index, **row}), flush=True)
            rows.append(row)
    result = summarise(rows)
    for size, figures in result["sizes"].items():
        mbs, rps, cpu = (figures[k] for k in ("mb_per_s", "records_per_s", "worker_cpu_ms_per_mb"))
        print(
            f"{int(size):>9,} B  {mbs[0]:7.1f} MB/s ({mbs[1]:.1f}-{mbs[2]:.1f})  "
            f"{rps[0]:>9,} records/s  worker CPU {cpu[0]:.2f} ms/MB ({cpu[1]:.2f}-{cpu[2]:.2f})"
        )
    print(json.dumps(result))
    return 0
