"""Opening a log: clean shutdown, crash recovery (torn and corrupt tails), index rebuilds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import read_checkpoint
from shardbroker.storage.log import PartitionLog
from tests.unit.storage_batches import Clock, batch_offsets, build_batch

CFG = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, segment_index_bytes=4096)


def fill(log: PartitionLog, count: int) -> list[tuple[int, int]]:
    out = []
    for i in range(count):
        info = log.append(build_batch(1 + i % 3, value_size=90 + i % 50, timestamp=1000 + i))
        out.append((info.first_offset, info.last_offset))
    return out


def crash(log: PartitionLog) -> None:
    """Drop the log without close(): no marker, no trimming, no checkpoint (as if killed)."""
    for seg in log.segments:
        seg.close()


def reopen(path: Path, config: LogConfig = CFG) -> PartitionLog:
    return PartitionLog.open(path, config, clock=Clock())


def all_batches(log: PartitionLog) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for seg in log.segments:
        out += batch_offsets(os.pread(seg.fd, seg.size, 0))
    return out


def test_clean_shutdown_skips_recovery(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 400)
    log.close()
    assert (d / fn.CLEAN_SHUTDOWN_FILE).exists()
    assert read_checkpoint(d / fn.RECOVERY_POINT_CHECKPOINT) == {("t", 0): batches[-1][1] + 1}
    log = reopen(d)
    assert log.recovery_stats.clean_shutdown and log.recovery_stats.segments_recovered == 0
    assert not (d / fn.CLEAN_SHUTDOWN_FILE).exists()  # a crash from now on must recover
    assert log.log_end_offset == batches[-1][1] + 1
    assert all_batches(log) == batches
    log.append(build_batch(1))
    log.close()


@pytest.mark.parametrize("cut", [1, 12, 30, 61, 100])
def test_torn_tail_is_cut_and_earlier_batches_survive(tmp_path: Path, cut: int) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 300)
    last_seg = log.segments[-1]
    path, size = last_seg.log_path, last_seg.size
    crash(log)
    os.truncate(path, size - cut)  # the last batch was written partially
    log = reopen(d)
    assert not log.recovery_stats.clean_shutdown
    assert log.recovery_stats.bytes_truncated > 0
    assert log.log_end_offset == batches[-1][0]
    assert all_batches(log) == batches[:-1]
    assert log.append(build_batch(1)).first_offset == batches[-1][0]  # offsets stay dense
    for first, last in batches[:-1:13]:
        assert batch_offsets(log.read_bytes(last, 1))[0] == (first, last)
    log.close()


def test_flipped_byte_cuts_there_and_drops_later_segments(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 500)
    assert len(log.segments) >= 3
    victim = log.segments[-2]
    vbatches = batch_offsets(os.pread(victim.fd, victim.size, 0))
    k = len(vbatches) // 2
    pos = sum(1 for _ in range(0))  # position of batch k
    data = os.pread(victim.fd, victim.size, 0)
    p = 0
    for _ in range(k):
        p += 12 + int.from_bytes(data[p + 8 : p + 12], "big")
    pos = p + 70  # inside batch k's records: the CRC catches it
    later = [s.log_path for s in log.segments[-1:]]
    crash(log)
    with open(victim.log_path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x40]))
    log = reopen(d)
    assert log.log_end_offset == vbatches[k][0]
    assert all(not p.exists() for p in later)
    assert all_batches(log) == [b for b in batches if b[1] < vbatches[k][0]]
    assert log.recovery_stats.segments_deleted == 1
    log.close()


def test_recovery_point_checkpoint_limits_the_scan(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    fill(log, 500)
    n = len(log.segments)
    log.flush()
    log.checkpoint()
    fill(log, 10)
    crash(log)
    log = reopen(d)
    assert log.recovery_stats.segments_recovered == 1  # only the segment holding the recovery point
    assert n >= 3
    log.close()


def test_garbage_after_flush_in_trusted_segment_is_not_scanned(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    fill(log, 500)
    log.flush()
    log.checkpoint()
    first = log.segments[0]
    crash(log)
    # A flipped byte in a trusted (flushed, below the recovery point) segment is not looked for.
    with open(first.log_path, "r+b") as f:
        f.seek(200)
        f.write(b"\xff")
    log = reopen(d)
    assert log.recovery_stats.bytes_truncated == 0
    log.close()


def index_bytes(d: Path, base: int) -> tuple[bytes, bytes]:
    return fn.index_file(d, base).read_bytes(), fn.time_index_file(d, base).read_bytes()


@pytest.mark.parametrize("which", ["index", "timeindex", "both"])
def test_deleted_index_is_rebuilt_byte_equal(tmp_path: Path, which: str) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    fill(log, 500)
    bases = [s.base_offset for s in log.segments]
    log.close()
    before = {b: index_bytes(d, b) for b in bases}
    assert all(len(v[0]) > 0 and len(v[1]) > 0 for v in before.values())
    for b in (bases[0], bases[-1]):
        if which in ("index", "both"):
            fn.index_file(d, b).unlink()
        if which in ("timeindex", "both"):
            fn.time_index_file(d, b).unlink()
    log = reopen(d)
    assert log.recovery_stats.indexes_rebuilt == 2
    log.close()
    assert {b: index_bytes(d, b) for b in bases} == before


def test_unclean_rebuild_of_all_indexes_matches_appends(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    fill(log, 500)
    bases = [s.base_offset for s in log.segments]
    log.roll()
    log.close()
    before = {b: index_bytes(d, b) for b in bases}
    (d / fn.CLEAN_SHUTDOWN_FILE).unlink()
    (d / fn.RECOVERY_POINT_CHECKPOINT).unlink()  # recover every segment
    log = reopen(d)
    assert log.recovery_stats.segments_recovered == len(bases) + 1
    log.close()
    assert {b: index_bytes(d, b) for b in bases} == before


@pytest.mark.parametrize("damage", ["short", "garbage", "past_end"])
def test_index_that_disagrees_with_the_log_is_rebuilt(tmp_path: Path, damage: str) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 500)
    log.close()
    path = fn.index_file(d, 0)
    good = path.read_bytes()
    if damage == "short":
        path.write_bytes(good[:-3])
    elif damage == "garbage":
        path.write_bytes(good[:-8] + (int.from_bytes(good[-8:-4], "big") + 1).to_bytes(4, "big") + good[-4:])
    else:
        path.write_bytes(good + (10**6).to_bytes(4, "big") + (10**7).to_bytes(4, "big"))
    log = reopen(d)
    assert log.recovery_stats.indexes_rebuilt == 1
    assert all_batches(log) == batches
    log.close()
    assert path.read_bytes() == good


def test_leftover_files_are_cleaned_up(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    fill(log, 10)
    leo = log.log_end_offset
    log.close()
    for name in [
        "00000000000000000005.log.deleted",
        "x.tmp",
        "00000000000000000099.index",
        "00000000000000000007.log.cleaned",
        "00000000000000000008.log.swap",
    ]:
        (d / name).write_bytes(b"junk")
    log = reopen(d)
    names = sorted(os.listdir(d))
    assert names == sorted(
        [
            "00000000000000000000.log",
            "00000000000000000000.index",
            "00000000000000000000.timeindex",
            fn.producer_snapshot_file(d, leo).name,  # written at close: the next open replays nothing
            fn.RECOVERY_POINT_CHECKPOINT,
            fn.LOG_START_OFFSET_CHECKPOINT,
        ]
    )
    log.close()


def test_torn_first_batch_of_a_new_segment(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 300)
    log.roll()
    log.append(build_batch(3))
    seg = log.segments[-1]
    crash(log)
    os.truncate(seg.log_path, 40)
    log = reopen(d)
    assert log.log_end_offset == batches[-1][1] + 1
    assert log.append(build_batch(1)).first_offset == batches[-1][1] + 1
    log.close()


@pytest.mark.parametrize("garbage", [b"garbage", b"\xff\xfe\x00 not utf-8"])
def test_bad_checkpoint_means_full_recovery(tmp_path: Path, garbage: bytes) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG)
    batches = fill(log, 300)
    n = len(log.segments)
    crash(log)
    (d / fn.RECOVERY_POINT_CHECKPOINT).write_bytes(garbage)
    log = reopen(d)
    assert log.recovery_stats.segments_recovered == n
    assert all_batches(log) == batches
    log.close()
