"""``shardbroker mirror`` throughput: 100 B records between two local shardbroker instances.

Setup: two brokers (``--workers`` each, default 1: on 2 cores, two brokers of 2 workers and the
mirror fight for the CPU), a source topic of ``--partitions`` partitions preloaded with
``--records`` 100 B records by confluent-kafka in large batches (``batch.size`` 1 MiB,
``linger.ms`` 50, no compression).

Per run, in the same process and on the same data:

- (a) *fetch only*: :class:`~shardbroker.mirror.source_fetcher.SourceFetcher` reads every
  partition from offset 0 to its end (the same fetch code the mirror runs, nothing produced);
- (c) *produce only*: the mirror's :class:`~shardbroker.mirror.target_producer.TargetProducer`
  with ``MAX_IN_FLIGHT`` requests in flight, writing the first fetched batch of each partition
  again and again to a fresh target topic (the target's ceiling for these batches, no fetch);
- (b) *mirror*: ``shardbroker mirror`` (the CLI, a subprocess) with a fresh source alias, so a
  fresh target topic, timed from its start until the target holds every record.

Reported: median and spread (min-max) over ``--runs`` of records/s for both, their ratio
(target >= 0.6, and >= 1 M records/s), CPU seconds per mirrored MB of the mirror process and
of each broker (``/proc/<pid>/stat`` utime + stime of the process tree; for the mirror also
*running*: from its first records on the target to the end, without its start-up, mostly
imports, ~0.5-0.8 s of CPU), and the mirror's peak resident memory (VmHWM).

Run under the bench lock: ``flock /tmp/shardbroker-bench.lock .venv/bin/python -m perf mirror
--records 8000000 --runs 3``. Profile during (b): ``py-spy record -r 200 --threads -f raw -o
/tmp/mirror.txt --pid $(pgrep -f "shardbroker.cli.main mirror --config")``.

Figures (that command, 2026-12-05, this 2-core VM shared with other work; median and min-max
of 3 runs): fetch only 23.3 M records/s (21.6-27.8), produce only 3.25 M (3.14-14.2: the first
run, on fresh brokers, is the fast one), mirror 2.12 M (2.06-2.29): ratio 0.091 to fetch only
(target 0.6: not met), 0.65 to produce only; >= 1 M records/s: met. CPU per mirrored MB: mirror
1.88 ms (1.70-1.91; running 1.02 ms, 1.00-1.07), source worker 0.54 ms, target worker 3.0 ms;
mirror peak RSS 138 MB. Before the reused receive buffers, in-place rewrite and gathered
Produce (same command and day): mirror 2.05 M, mirror CPU 3.3 ms/MB (running 2.41), peak RSS
443 MB. The target's appends (first touch of page cache here) bound the mirror: see
mirror_maker.py's docstring.
One worker per broker (the default), measured against 2 (``--workers 2``, same command): one
run gave 2.49 M records/s, the next three 1.51 M (1.34-1.85) with fetch only down to 5.1 M
(4.5-6.2; each worker is a node of its own, so a fetch round is two Fetches in turn) and the
spread 3x wider; on 2 cores the two brokers' workers and the mirror's threads (~1.3 cores at
2 M records/s with 1 worker each, at the time) then contend for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient as KafkaAdmin
from confluent_kafka.admin import NewTopic

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import LATEST
from shardbroker.client.admin_topics import NewTopic as NewTopicSpec
from shardbroker.mirror.mirror_maker import MAX_IN_FLIGHT
from shardbroker.mirror.source_fetcher import SourceFetcher
from shardbroker.mirror.target_producer import InFlight, OutBatch, Outcome, TargetProducer
from tests.integration.broker_process import REPO, BrokerProcess

TOPIC = "bench"
_TICK = os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants so far."""
    total = 0.0
    pids = [pid]
    while pids:
        p = pids.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICK
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids += [int(c) for c in children]
    return total


def _peak_rss_kb(pid: int) -> int:
    """The process's peak resident memory (VmHWM), KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _pid(broker: BrokerProcess) -> int:
    assert broker.proc is not None
    return broker.proc.pid


def _preload(bootstrap: str, partitions: int, records: int) -> int:
    admin = KafkaAdmin({"bootstrap.servers": bootstrap})  # kept alive until the answer
    admin.create_topics([NewTopic(TOPIC, partitions, 1)])[TOPIC].result(30)
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "batch.size": 1024 * 1024,
            "linger.ms": 50,
            "queue.buffering.max.kbytes": 512 * 1024,
            "message.max.bytes": 2 * 1024 * 1024,
        }
    )
    value = b"x" * 100
    for i in range(records):
        while True:
            try:
                p.produce(TOPIC, value=value, partition=i % partitions)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(120)
    with AdminClient(bootstrap) as admin:
        ends = admin.list_offsets({(TOPIC, q): LATEST for q in range(partitions)})
    return sum(ends.values())


def _fetch_only(bootstrap: str, partitions: int, total: int) -> float:
    with AdminClient(bootstrap) as admin:
        fetcher = SourceFetcher(admin)
        positions = {(TOPIC, q): 0 for q in range(partitions)}
        seen = 0
        start = time.perf_counter()
        while seen < total:
            for answer in fetcher.fetch(positions):
                if answer.selection is not None:
                    seen += answer.selection.records
                    positions[answer.tp] = answer.selection.next_position
        return total / (time.perf_counter() - start)


def _produce_only(
    source: BrokerProcess, target: BrokerProcess, partitions: int, total: int, run: int
) -> float:
    """Records/s of the mirror's own produce code (TargetProducer, MAX_IN_FLIGHT requests in
    flight) writing the source's first batch of each partition again and again to a fresh target
    topic: the target's ceiling for the mirror's batches, without fetching."""
    with AdminClient(source.bootstrap) as admin:
        answers = SourceFetcher(admin).fetch({(TOPIC, q): 0 for q in range(partitions)})
        first = {a.partition: a.selection.batches[0] for a in answers if a.selection and a.selection.batches}
    topic = f"produce-only-{run}"
    with AdminClient(target.bootstrap) as admin:
        admin.create_topics([NewTopicSpec(topic, partitions, 1)])
        producer = TargetProducer(admin)
        producer.reset()
        inflight: deque[InFlight] = deque()
        written, start = 0, time.perf_counter()
        while written < total or inflight:
            if written < total and len(inflight) < MAX_IN_FLIGHT:
                batches = [OutBatch((topic, q), b, (TOPIC, q), 0.0) for q, b in first.items()]
                inflight.append(producer.send(batches))
                written += sum(b.source.records for b in batches)
                continue
            results = producer.receive(inflight.popleft())
            if any(r.outcome is not Outcome.WRITTEN for r in results):
                raise RuntimeError(f"produce-only: {[r.error for r in results]}")
        return written / (time.perf_counter() - start)


def _mirror(
    work: Path, source: BrokerProcess, target: BrokerProcess, alias: str, partitions: int, total: int
) -> dict[str, float]:
    config = work / f"{alias}.toml"
    config.write_text(
        f'"source.cluster.alias" = "{alias}"\n"target.cluster.alias" = "target"\n'
        f'"source.cluster.bootstrap.servers" = "{source.bootstrap}"\n'
        f'"target.cluster.bootstrap.servers" = "{target.bootstrap}"\ntopics = "{TOPIC}"\n'
    )
    cpu0 = {"source": _tree_cpu(_pid(source)), "target": _tree_cpu(_pid(target))}
    log = (work / f"{alias}.log").open("wb")
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shardbroker.cli.main", "mirror", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=log,
    )
    remote = [(f"{alias}.{TOPIC}", q) for q in range(partitions)]
    first: tuple[float, int] | None = None  # mirror CPU and records mirrored when records first land
    try:
        with AdminClient(target.bootstrap) as admin:
            while True:
                try:
                    mirrored = sum(admin.list_offsets(dict.fromkeys(remote, LATEST)).values())
                except Exception:  # the topic is not created yet
                    mirrored = 0
                if mirrored >= total:
                    break
                if mirrored and first is None:
                    first = (_tree_cpu(proc.pid), mirrored)
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the mirror exited {proc.returncode}: {(work / f'{alias}.log').read_text()}"
                    )
                time.sleep(0.02)
        elapsed = time.perf_counter() - start
        mirror_cpu = _tree_cpu(proc.pid)
        peak_rss_kb = _peak_rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    mb = total * 100 / 1e6
    return {
        "records_per_s": total / elapsed,
        "mirror_cpu_s_per_mb": mirror_cpu / mb,
        "mirror_running_cpu_s_per_mb": _running(mirror_cpu, first, total),
        "source_cpu_s_per_mb": (_tree_cpu(_pid(source)) - cpu0["source"]) / mb,
        "target_cpu_s_per_mb": (_tree_cpu(_pid(target)) - cpu0["target"]) / mb,
        "mirror_peak_rss_mb": peak_rss_kb / 1024,
    }


def _running(cpu: float, first: tuple[float, int] | None, total: int) -> float:
    """CPU seconds per MB from the first mirrored records (``first``: CPU, records) on."""
    return float("nan") if first is None else (cpu - first[0]) / ((total - first[1]) * 100 / 1e6)


def _summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def run(records: int, partitions: int, workers: int, runs: int) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="shardbroker-bench-mirror-"))
    brokers: list[BrokerProcess] = []
    try:
        for name in ("source", "target"):
            (work / f"{name}-logs").mkdir()
            brokers.append(
                BrokerProcess(work / name, work / f"{name}-logs", workers=workers, name=name).start()
            )
        source, target = brokers
        total = _preload(source.bootstrap, partitions, records)
        print(f"preloaded {total} records of 100 B", file=sys.stderr)
        fetch, produce, mirrored, cpu = [], [], [], []
        for i in range(runs):
            fetch.append(_fetch_only(source.bootstrap, partitions, total))
            produce.append(_produce_only(source, target, partitions, total, i))
            result = _mirror(work, source, target, f"run{i}", partitions, total)
            mirrored.append(result["records_per_s"])
            cpu.append(result)
            print(
                f"run {i}: fetch {fetch[-1]:,.0f}, produce {produce[-1]:,.0f}, "
                f"mirror {mirrored[-1]:,.0f} records/s",
                file=sys.stderr,
            )
        ratios = [m / f for m, f in zip(mirrored, fetch, strict=True)]
        return {
            "records": total,
            "partitions": partitions,
            "workers_per_broker": workers,
            "fetch_only_records_per_s": _summary(fetch),
            "produce_only_records_per_s": _summary(produce),
            "mirror_records_per_s": _summary(mirrored),
            "ratio": _summary(ratios),
            "ratio_to_produce_only": _summary([m / p for m, p in zip(mirrored, produce, strict=True)]),
            "cpu_s_per_mirrored_mb": {
                k: _summary([c[k] for c in cpu]) for k in cpu[0] if k.endswith("_cpu_s_per_mb")
            },
            "mirror_peak_rss_mb": _summary([c["mirror_peak_rss_mb"] for c in cpu]),
        }
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf mirror", description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    print(json.dumps(run(args.records, args.partitions, args.workers, args.runs), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
