"""Issue 17's cleaning-throughput figure: compacting a log of 100 B keyed records in which 10 % of
the keys are live, as a ratio to a plain sequential read + write of the same bytes, same run.

Writes partition logs under a temporary directory (storage API, no broker).

Run::

    .venv/bin/python -m perf cleaner [--runs 3] [--mib 1024]     # one JSON line per run, then medians
    SHARDBROKER_PERF_QUICK=1 .venv/bin/python -m perf cleaner    # 64 MiB

The log: ``--mib`` MiB of batches of 160 records, each a 16-byte key and an 84-byte value (100 B),
uncompressed, ``segment.bytes`` 128 MiB; the keys are drawn at random from ``records / 10``
distinct keys, so a full clean keeps ~10 % of the records (every key's latest). The reference
reads every segment sequentially in 4 MiB chunks and writes the bytes to a new file with one
fdatasync at the end (what the cleaner's I/O would cost if it kept everything and did no work;
the cleaner syncs what it writes too); ``ratio_nosync`` is the same without the fdatasync (page
cache only: a memory copy, the harshest reference). Every step starts after an ``os.sync()``:
without it the reference ran while the built log's 1 GiB of dirty pages were written back
and varied 0.8-1.8 s from run to run.
The clean is `clean_partition` with ``force``: key map, rewrite and swap of every segment, one
fdatasync per cleaned segment. Both find the log in the page cache (it was just written). The
figure is ``reference seconds / clean seconds`` (target >= 0.3), with MB/s of each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import numpy as np

from perf.broker_load import running_broker
from perf.sizes import pick
from shardbroker.client.connection import BrokerConnection
from shardbroker.config.log_config import LogConfig
from shardbroker.loadgen.runner import ensure_topic
from shardbroker.protocol import messages as m
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.uniform_batch import encode_uniform_batch, uniform_records_size
from shardbroker.storage.file_names import CLEANER_OFFSET_CHECKPOINT
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import Cleaner, Throttler
from shardbroker.storage.log_cleaner_manager import clean_partition
from shardbroker.storage.offset_map import max_keys_for

TARGET_RATIO: Final = 0.3
TARGET_LATENCY_RATIO: Final = 1.5
BATCH_RECORDS: Final = 160
KEY_SIZE: Final = 16
VALUE_SIZE: Final = 84
LIVE_SHARE: Final = 0.1
CHUNK: Final = 4 << 20
CONFIG: Final = LogConfig().overrides({"cleanup.policy": "compact", "segment.bytes": str(128 << 20)})


def build_log(directory: Path, mib: int, seed: int) -> tuple[PartitionLog, int]:
    """A dirty compacted log of ``mib`` MiB; returns it (rolled: nothing active but an empty
    segment) and its record count."""
    log = PartitionLog.open(directory, CONFIG)
    size = 61 + uniform_records_size(BATCH_RECORDS, KEY_SIZE, VALUE_SIZE)
    batches = (mib << 20) // size
    records = batches * BATCH_RECORDS
    rng = np.random.default_rng(seed)
    distinct = max(1, int(records * LIVE_SHARE))
    ids = rng.integers(0, distinct, size=records)
    digits = np.char.zfill(ids.astype("U15"), 15)
    keys = np.frombuffer(np.char.add("k", digits).astype("S16").tobytes(), np.uint8).reshape(
        records, KEY_SIZE
    )
    values = rng.integers(0, 256, size=(BATCH_RECORDS, VALUE_SIZE), dtype=np.uint8)
    buf = bytearray(size)
    now = int(time.time() * 1000)
    for b in range(batches):
        n = encode_uniform_batch(buf, values, keys[b * BATCH_RECORDS : (b + 1) * BATCH_RECORDS], now)
        log.append(memoryview(buf)[:n])
    log.roll()
    return log, records


def reference(log: PartitionLog, target: Path, *, sync: bool = True) -> float:
    """Seconds to read every inactive segment sequentially and write the bytes to ``target``
    (then fdatasync it, as the cleaner syncs what it writes, unless ``sync`` is false)."""
    started = time.perf_counter()
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        written = 0
        for seg in log.segments[:-1]:
            pos = 0
            while pos < seg.size:
                data = os.pread(seg.fd, min(CHUNK, seg.size - pos), pos)
                pos += len(data)
                written += os.pwrite(out, data, written)
        if sync:
            os.fdatasync(out)
    finally:
        os.close(out)
    return time.perf_counter() - started


def run_once(mib: int, seed: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="sb-bench-cleaner-"))
    try:
        log, records = build_log(root / "bench-0", mib, seed)
        try:
            size = sum(s.size for s in log.segments)
            os.sync()  # each step starts with nothing dirty: no writeback of an earlier one in it
            ref_s = reference(log, root / "copy.bin")
            (root / "copy.bin").unlink()
            nosync_s = reference(log, root / "copy.bin", sync=False)
            (root / "copy.bin").unlink()
            os.sync()
            cleaner = Cleaner(max_keys_for(128 << 20, 0.9, 1), Throttler(float("inf")))
            started = time.perf_counter()
            _, stats = clean_partition(log, cleaner, int(time.time() * 1000), force=True)
            clean_s = time.perf_counter() - started
            assert stats is not None and stats.records_read == records
        finally:
            log.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return {
        "mib": mib,
        "records": records,
        "kept": stats.records_retained,
        "reference_s": round(ref_s, 3),
        "clean_s": round(clean_s, 3),
        "reference_mb_s": round(size / 1e6 / ref_s, 1),
        "clean_mb_s": round(size / 1e6 / clean_s, 1),
        "ratio": round(ref_s / clean_s, 3),
        "reference_nosync_s": round(nosync_s, 3),
        "ratio_nosync": round(nosync_s / clean_s, 3),
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf cleaner", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=pick(1024, 64))
    args = parser.parse_args(argv)
    rows = []
    for i in range(args.runs):
        row = run_once(args.mib, seed=i)
        print(json.dumps(row), flush=True)
        rows.append(row)
    ratios = [r["ratio"] for r in rows]
    summary = {
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "ratio_nosync_median": statistics.median(r["ratio_nosync"] for r in rows),
        "clean_mb_s_median": statistics.median(r["clean_mb_s"] for r in rows),
        "reference_mb_s_median": statistics.median(r["reference_mb_s"] for r in rows),
        "target": TARGET_RATIO,
    }
    print(json.dumps(summary))
    return 0


# ---------------------------------------------------------------------- produce latency


def _produce_rtts(conn: BrokerConnection, until: Callable[[], bool], max_s: float) -> list[float]:
    """Round trips of one-record Produce requests (acks=1) to ``probe``, one in flight, until
    ``until()`` or ``max_s``; 1 ms apart (a steady trickle, not a load test)."""
    batch = RecordBatchBuilder()
    batch.append(b"x" * VALUE_SIZE, key=b"probe")
    records = batch.build()
    request = m.ProduceRequest(
        acks=1,
        timeout_ms=30_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name="probe", partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=records)]
            )
        ],
    )
    rtts: list[float] = []
    deadline = time.monotonic() + max_s
    while not until() and time.monotonic() < deadline:
        started = time.perf_counter()
        answer = conn.send(request)
        rtts.append(time.perf_counter() - started)
        if answer.responses[0].partition_responses[0].error_code:
            raise RuntimeError(f"produce to probe: {answer.responses[0].partition_responses[0].error_code}")
        time.sleep(0.001)
    return rtts


#: Two references for what any process at SCHED_IDLE (as the cleaner's) on the other core costs
#: the worker: one that only spins in Python (touching no memory, making no system call), one
#: that only reads the dirty log's files from the page cache, 64 KiB a pread into one buffer
#: (what every clean must do, twice, without the decoding or any write).
SPINNER: Final = """
import os, sys, time
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
"""
READER: Final = """
import os, sys, time
os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
end = time.monotonic() + float(sys.argv[1])
buf = memoryview(bytearray(64 << 10))
while time.monotonic() < end:
    for path in sys.argv[2:]:
        fd = os.open(path, os.O_RDONLY)
        pos = 0
        while time.monotonic() < end and (n := os.preadv(fd, [buf], pos)):
            pos += n
        os.close(fd)
"""


def _beside(conn: BrokerConnection, code: str, seconds: float, *args: str) -> list[float]:
    """Produce round trips while the program ``code`` runs for ``seconds``."""
    other = subprocess.Popen([sys.executable, "-c", code, str(seconds), *args])
    try:
        return _produce_rtts(conn, lambda: other.poll() is not None, seconds + 30)
    finally:
        other.kill()
        other.wait()


def _p(rtts: list[float], q: float) -> float:
    ordered = sorted(rtts)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def latency_once(mib: int, seed: int, io_rate: float | None = None) -> dict[str, Any]:
    """Produce round trips on a one-worker broker while its cleaner compacts ``mib`` MiB, and
    while it is idle, 5 s before and 5 s after (same broker, same connection, the cleaner's
    process already started by the clean of a 1 MiB warm-up topic), and while `SPINNER` runs;
    ``io_rate``: log.cleaner.io.max.bytes.per.second."""
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AdminClient,
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        NewTopic,
    )

    config: dict[str, Any] = {"log.cleaner.backoff.ms": 100, "num.partitions": 1}
    if io_rate is not None:
        config["log.cleaner.io.max.bytes.per.second"] = io_rate
    with running_broker(1, config=config, name="cleaner") as broker:
        admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 2})
        topics = [
            NewTopic("dirty", 1, 1, config={"segment.bytes": str(128 << 20)}),
            NewTopic("probe", 1, 1),
            NewTopic("warm", 1, 1, config={"cleanup.policy": "compact"}),
        ]
        for future in admin.create_topics(topics).values():
            future.result(30)
        ensure_topic(broker.bootstrap, "probe", 1)
        broker.stop()
        log, records = build_log(broker.data_dir / "dirty-0", mib, seed)
        log.close()
        build_log(broker.data_dir / "warm-0", 1, seed)[0].close()
        broker.start()
        ensure_topic(broker.bootstrap, "probe", 1)
        # The steady state: the worker's cleaner process is up (its first clean, of "warm",
        # started it) before anything is measured.
        warm = broker.data_dir / "warm-0" / CLEANER_OFFSET_CHECKPOINT
        deadline = time.monotonic() + 60
        while not warm.exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up clean did not happen in 60 s")
            time.sleep(0.05)
        conn = BrokerConnection(broker.host, broker.ports[0]).connect()
        try:
            _produce_rtts(conn, lambda: False, 1.0)  # warm up
            idle = _produce_rtts(conn, lambda: False, 5.0)
            spinning = _beside(conn, SPINNER, 5.0)
            segments = sorted(str(f) for f in (broker.data_dir / "dirty-0").glob("*.log"))
            reading = _beside(conn, READER, 5.0, *segments)
            checkpoint = broker.data_dir / "dirty-0" / CLEANER_OFFSET_CHECKPOINT
            resource = ConfigResource(
                "TOPIC",
                "dirty",
                incremental_configs=[
                    ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET)
                ],
            )
            started = time.monotonic()
            for future in admin.incremental_alter_configs([resource]).values():
                future.result(30)
            cleaning = _produce_rtts(conn, checkpoint.exists, 600.0)
            clean_s = time.monotonic() - started
            idle += _produce_rtts(conn, lambda: False, 5.0)  # the reference brackets the clean
        finally:
            conn.close()
    return {
        "mib": mib,
        "records": records,
        "io_max_bytes_per_second": io_rate,
        "clean_s": round(clean_s, 2),
        "idle_p50_ms": round(_p(idle, 0.5), 3),
        "idle_p99_ms": round(_p(idle, 0.99), 3),
        "cleaning_p50_ms": round(_p(cleaning, 0.5), 3),
        "cleaning_p99_ms": round(_p(cleaning, 0.99), 3),
        "spinner_p50_ms": round(_p(spinning, 0.5), 3),
        "spinner_p99_ms": round(_p(spinning, 0.99), 3),
        "reader_p50_ms": round(_p(reading, 0.5), 3),
        "reader_p99_ms": round(_p(reading, 0.99), 3),
        "samples": [len(idle), len(spinning), len(reading), len(cleaning)],
        "p99_ratio": round(_p(cleaning, 0.99) / _p(idle, 0.99), 3),
        "spinner_p99_ratio": round(_p(spinning, 0.99) / _p(idle, 0.99), 3),
        "reader_p99_ratio": round(_p(reading, 0.99) / _p(idle, 0.99), 3),
    }


def latency_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf cleaner-latency",
        description="produce p99 on a worker while its log cleaner runs vs idle (target <= 1.5x)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=pick(1024, 64))
    parser.add_argument(
        "--io-max-bytes-per-second", type=float, default=None, help="the cleaner's throttle (default: none)"
    )
    args = parser.parse_args(argv)
    rows = []
    for i in range(args.runs):
        row = latency_once(args.mib, seed=i, io_rate=args.io_max_bytes_per_second)
        print(json.dumps(row), flush=True)
        rows.append(row)
    ratios = [r["p99_ratio"] for r in rows]
    floors = [r["spinner_p99_ratio"] for r in rows]
    reads = [r["reader_p99_ratio"] for r in rows]
    print(
        json.dumps(
            {
                "p99_ratio_median": statistics.median(ratios),
                "p99_ratio_min": min(ratios),
                "p99_ratio_max": max(ratios),
                "spinner_p99_ratio_median": statistics.median(floors),
                "spinner_p99_ratio_min": min(floors),
                "spinner_p99_ratio_max": max(floors),
                "reader_p99_ratio_median": statistics.median(reads),
                "reader_p99_ratio_min": min(reads),
                "reader_p99_ratio_max": max(reads),
                "target": TARGET_LATENCY_RATIO,
            }
        )
    )
    return 0
