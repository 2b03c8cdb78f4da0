"""``shardbroker mirror`` throughput: 100 B records between two local shardbroker instances.

Setup: two brokers (``--workers`` each, default 1: on 2 cores, two brokers of 2 workers and the
mirror fight for the CPU), a source topic of ``--partitions`` partitions preloaded with
``--records`` 100 B records by confluent-kafka in large batches (``batch.size`` 1 MiB,
``linger.ms`` 50, no compression).

Per run, in the same process and on the same data:

- (a) *fetch only*: :class:`~shardbroker.mirror.source_fetcher.SourceFetcher` reads every
  partition from offset 0 to its end (the same fetch code the mirror runs, nothing produced);
- (b) *mirror*: ``shardbroker mirror`` (the CLI, a subprocess) with a fresh source alias, so a
  fresh target topic, timed from its start until the target holds every record.

Reported: median and spread (min-max) over ``--runs`` of records/s for both, their ratio
(target >= 0.6, and >= 1 M records/s), and CPU seconds per mirrored MB of the mirror process
and of each broker (``/proc/<pid>/stat`` utime + stime of the process tree).

Run under the bench lock: ``flock /tmp/shardbroker-bench.lock .venv/bin/python -m perf mirror``.
Profile: ``py-spy record -o /tmp/mirror.svg --subprocesses -- .venv/bin/python -m
shardbroker.cli.main mirror --config mirror.toml`` during (b).
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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient as KafkaAdmin
from confluent_kafka.admin import NewTopic

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import LATEST
from shardbroker.mirror.source_fetcher import SourceFetcher
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


def _pid(broker: BrokerProcess) -> int:
    assert broker.proc is not None
    return broker.proc.pid


def _preload(bootstrap: str, partitions: int, records: int) -> int:
    KafkaAdmin({"bootstrap.servers": bootstrap}).create_topics([NewTopic(TOPIC, partitions, 1)])[
        TOPIC
    ].result(30)
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
    try:
        with AdminClient(target.bootstrap) as admin:
            while True:
                try:
                    if sum(admin.list_offsets(dict.fromkeys(remote, LATEST)).values()) >= total:
                        break
                except Exception:  # the topic is not created yet
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"the mirror exited {proc.returncode}: {(work / f'{alias}.log').read_text()}"
                    )
                time.sleep(0.02)
        elapsed = time.perf_counter() - start
        mirror_cpu = _tree_cpu(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        log.close()
    mb = total * 100 / 1e6
    return {
        "records_per_s": total / elapsed,
        "mirror_cpu_s_per_mb": mirror_cpu / mb,
        "source_cpu_s_per_mb": (_tree_cpu(_pid(source)) - cpu0["source"]) / mb,
        "target_cpu_s_per_mb": (_tree_cpu(_pid(target)) - cpu0["target"]) / mb,
    }


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
        fetch, mirrored, cpu = [], [], []
        for i in range(runs):
            fetch.append(_fetch_only(source.bootstrap, partitions, total))
            result = _mirror(work, source, target, f"run{i}", partitions, total)
            mirrored.append(result["records_per_s"])
            cpu.append(result)
            print(
                f"run {i}: fetch {fetch[-1]:,.0f} records/s, mirror {mirrored[-1]:,.0f} records/s",
                file=sys.stderr,
            )
        ratios = [m / f for m, f in zip(mirrored, fetch, strict=True)]
        return {
            "records": total,
            "partitions": partitions,
            "workers_per_broker": workers,
            "fetch_only_records_per_s": _summary(fetch),
            "mirror_records_per_s": _summary(mirrored),
            "ratio": _summary(ratios),
            "cpu_s_per_mirrored_mb": {
                k: _summary([c[k] for c in cpu]) for k in cpu[0] if k != "records_per_s"
            },
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
