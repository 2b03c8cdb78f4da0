"""Faults of the data dir: a full disk, a read-only data dir at start, a torn final batch and
truncated index files left by a crash.

- Disk full (a small tmpfs as the data dir, filled by a file beside it): a produce gets Kafka's
  KAFKA_STORAGE_ERROR, the worker lives on, what was acknowledged stays readable, and produces
  succeed again, at the next offset, once space returns. Skipped (with the reason) where this
  process may not mount.
- Read-only data dir at start: a one-line message naming the data dir and a non-zero exit.
- Torn tail and truncated indexes (the storage unit tests, tests/unit/test_storage_recovery.py,
  cover each case on one log; here, through ``shardbroker serve``): the start recovers, every
  acknowledged record is there, and appends continue at the right offset.
- Stale shared memory of a crashed run: tests/faults/test_process_kills.py (the supervisor kill).
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from shardbroker.protocol.errors import ErrorCode
from tests.faults.conftest import Mount
from tests.faults.logs import check_acked_exactly_once, read_data_dir
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import (
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce_confluent,
)
from tests.integration.test_broker_protocol import batch, connect, leaders, produce

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]

#: Small index files so that a few MiB of tmpfs hold the segments (Kafka's 10 MiB default
#: would not fit twice).
SMALL_INDEXES = {"log.index.size.max.bytes": 65536, "log.segment.bytes": 262144}
#: Producer batches that fit 64 KiB segments (librdkafka's default batch.size is 1 MB).
SMALL_BATCHES = {"batch.size": 16384}


def fill(directory: Path) -> Path:
    """Write a file into ``directory`` until its file system is full (ENOSPC, nothing else)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for chunk in (bytes(1 << 20), bytes(4096), bytes(1)):
            try:
                while True:
                    os.write(fd, chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(fd)
    return filler


def test_disk_full_is_a_storage_error_and_recovers_when_space_returns(
    broker_factory: Factory, tmpfs: Mount
) -> None:
    mount = tmpfs(16 * 1024 * 1024)
    broker = broker_factory(workers=2, config=SMALL_INDEXES, data_dir=mount / "data")
    create_topic(broker.bootstrap, "full", 1)
    node = leaders(broker, "full")[0]
    workers = broker.worker_pids()
    with connect(broker, node) as conn:
        first = produce(conn, "full", 0, batch(5))
        assert first.error_code == 0, first
        filler = fill(mount)
        refused = [produce(conn, "full", 0, batch(5, value_size=2000)) for _ in range(3)]
        assert {p.error_code for p in refused} == {ErrorCode.KAFKA_STORAGE_ERROR}, refused

        filler.unlink()  # space returns
        again = produce(conn, "full", 0, batch(5))
        assert again.error_code == 0, again
        assert again.base_offset == 5, "offsets must continue right after the last acknowledged batch"
    assert broker.worker_pids() == workers, "a worker died on a full disk"
    ends = end_offsets("confluent", broker.bootstrap, "full", 1)
    assert ends == {0: 10}
    assert len(consume("confluent", broker.bootstrap, "full", ends)) == 10

    assert broker.stop() == 0
    records = read_data_dir(broker.data_dir)["full"][0]
    assert [r.offset for r in records] == list(range(10))


def run_serve(broker: BrokerProcess, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        broker.command(), cwd=broker.log_dir, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_read_only_data_dir_at_start_is_refused_with_a_message(broker_factory: Factory, tmpfs: Mount) -> None:
    mount = tmpfs(8 * 1024 * 1024)
    broker = broker_factory(workers=1, data_dir=mount / "data")
    create_topic(broker.bootstrap, "ro", 2)
    assert broker.stop() == 0
    remount = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True, text=True)
    if remount.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {remount.stderr.strip()}")
    try:
        done = run_serve(broker)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=False)
    assert done.returncode != 0, f"serve on a read-only data dir exited 0\n{done.stderr}"
    lines = [line for line in done.stderr.splitlines() if line.startswith("shardbroker serve:")]
    assert lines, f"no 'shardbroker serve:' message on stderr:\n{done.stderr[-3000:]}"
    assert str(mount / "data") in lines[-1] and ("read-only" in lines[-1] or "not writable" in lines[-1]), (
        lines
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]


def test_torn_final_batch_and_truncated_indexes_are_recovered_at_start(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2, config={"log.segment.bytes": 65536, "log.index.interval.bytes": 512})
    create_topic(broker.bootstrap, "torn", 3)
    messages = make_messages(3_000, keys=97, tag="torn")
    acked = produce_confluent(broker.bootstrap, "torn", messages, extra=SMALL_BATCHES)
    assert broker.stop() == 0

    damaged = 0
    for directory in sorted(broker.data_dir.glob("torn-*")):
        logs = sorted(directory.glob("*.log"))
        assert len(logs) > 1, f"{directory.name}: expected rolled segments, got {logs}"
        (directory / ".kafka_cleanshutdown").unlink()  # a crash leaves no clean-shutdown marker
        last = logs[-1]
        good = last.read_bytes()
        with last.open("ab") as f:  # a torn final batch: the start of a copy of the first batch
            f.write(good[: max(20, len(good) // 3)])
        for index, cut in ((last.with_suffix(".index"), 3), (logs[0].with_suffix(".timeindex"), 5)):
            size = index.stat().st_size
            os.truncate(index, max(0, size - cut))
        damaged += 1
    assert damaged == 3

    broker.start()
    assert "recovered" in broker.output(tail=400)
    ends = end_offsets("confluent", broker.bootstrap, "torn", 3)
    assert sum(ends.values()) == len(acked), "recovery lost or kept too much"
    more = produce_confluent(
        broker.bootstrap, "torn", make_messages(300, keys=97, tag="more"), extra=SMALL_BATCHES
    )
    assert all(r.offset >= ends[r.partition] for r in more)
    assert broker.stop() == 0
    recovered = read_data_dir(broker.data_dir)["torn"]
    check_acked_exactly_once(recovered, acked + more, "after recovering torn tails")
    assert sum(len(recs) for recs in recovered.values()) == len(acked) + len(more)
