"""Retention by time and size, DeleteRecords, delayed file deletion."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import read_checkpoint
from shardbroker.storage.errors import KafkaStorageError, LogOffsetOutOfRangeError
from shardbroker.storage.log import EARLIEST_TIMESTAMP, PartitionLog
from tests.unit.storage_batches import Clock, batch_of_size, batch_offsets

T0 = 1_700_000_000_000


def segmented_log(tmp_path: Path, clock: Clock, **cfg: object) -> PartitionLog:
    """Five segments of four 500-byte batches; segment k's batches have timestamps T0 + 1000 k + i."""
    config = LogConfig(segment_bytes=2000, file_delete_delay_ms=0, **cfg)  # type: ignore[arg-type]
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    for k in range(5):
        for i in range(4):
            log.append(batch_of_size(500, timestamp=T0 + 1000 * k + i))
    assert [s.base_offset for s in log.segments] == [0, 4, 8, 12, 16]
    return log


def test_retention_ms_deletes_exactly_the_expired_segments(tmp_path: Path) -> None:
    clock = Clock(T0 + 2003 + 10_000)
    log = segmented_log(tmp_path, clock, retention_ms=10_000)
    # Segment 2's largest timestamp is T0 + 2003: exactly 10 s old, not older: kept.
    assert log.delete_old_segments() == 2
    assert [s.base_offset for s in log.segments] == [8, 12, 16]
    assert log.log_start_offset == 8
    assert not fn.log_file(log.directory, 0).exists()
    assert not fn.log_file(log.directory, 0, fn.DELETED_SUFFIX).exists()
    assert read_checkpoint(log.directory / fn.LOG_START_OFFSET_CHECKPOINT) == {("t", 0): 8}
    with pytest.raises(LogOffsetOutOfRangeError):
        log.read(7, 100)
    assert batch_offsets(log.read_bytes(8, 1))[0] == (8, 8)
    assert log.fetch_offset_by_timestamp(EARLIEST_TIMESTAMP) == (-1, 8)
    clock.advance(1)
    assert log.delete_old_segments() == 1
    log.close()


def test_retention_of_everything_keeps_an_empty_active_segment(tmp_path: Path) -> None:
    clock = Clock(T0 + 10**9)
    log = segmented_log(tmp_path, clock, retention_ms=1000)
    assert log.delete_old_segments() == 5
    assert [s.base_offset for s in log.segments] == [20]
    assert log.log_start_offset == log.log_end_offset == 20
    assert log.append(batch_of_size(100)).first_offset == 20
    log.close()
    log = PartitionLog.open(tmp_path / "t-0", log.config, clock=clock)
    assert (log.log_start_offset, log.log_end_offset) == (20, 21)
    log.close()


def test_retention_bytes_deletes_oldest_beyond_the_limit(tmp_path: Path) -> None:
    clock = Clock(T0)
    log = segmented_log(tmp_path, clock, retention_bytes=6500, retention_ms=-1)
    # Kafka's rule: a segment goes only if the log stays >= retention.bytes without it.
    # 10000 bytes: without segment 0, 8000 >= 6500: goes; without segment 1 too, 6000 < 6500: stays.
    assert log.delete_old_segments() == 1
    assert log.size_in_bytes == 8000 and log.log_start_offset == 4
    log.config = LogConfig(segment_bytes=2000, file_delete_delay_ms=0, retention_bytes=6000, retention_ms=-1)
    assert log.delete_old_segments() == 1  # 8000 - 2000 = 6000 >= 6000
    assert log.size_in_bytes == 6000 and log.log_start_offset == 8
    log.close()


def test_compact_only_topics_are_not_deleted_by_retention(tmp_path: Path) -> None:
    clock = Clock(T0 + 10**9)
    log = segmented_log(tmp_path, clock, retention_ms=1, cleanup_policy=frozenset({"compact"}))
    assert log.delete_old_segments() == 0
    log.close()


def test_delete_records_moves_the_log_start_offset(tmp_path: Path) -> None:
    clock = Clock(T0)
    log = segmented_log(tmp_path, clock)
    assert log.delete_records(6) == 6
    assert [s.base_offset for s in log.segments] == [4, 8, 12, 16]  # segment 0 wholly below 6
    with pytest.raises(LogOffsetOutOfRangeError):
        log.read(5, 100)
    assert batch_offsets(log.read_bytes(6, 1))[0] == (6, 6)
    assert log.delete_records(3) == 6  # never backwards
    with pytest.raises(LogOffsetOutOfRangeError):
        log.delete_records(21)
    assert log.delete_records(-1) == 20  # -1: up to the high watermark
    log.close()
    log = PartitionLog.open(tmp_path / "t-0", log.config, clock=clock)
    assert log.log_start_offset == 20
    log.close()


def test_deleted_files_wait_for_file_delete_delay(tmp_path: Path) -> None:
    clock = Clock(T0 + 10**9)
    config = LogConfig(segment_bytes=2000, retention_ms=1000, file_delete_delay_ms=60_000)
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    for _ in range(8):
        log.append(batch_of_size(500, timestamp=T0))
    fetch = log.read(0, 10_000)  # a reader holding a range of segment 0
    assert log.delete_old_segments() == 2
    renamed = fn.log_file(log.directory, 0, fn.DELETED_SUFFIX)
    assert renamed.exists() and not fn.log_file(log.directory, 0).exists()
    assert len(fetch.read()) == 2000  # the fd still serves the in-flight fetch
    clock.advance(59_999)
    assert log.remove_deleted_segments() == 0
    clock.advance(1)
    assert log.remove_deleted_segments() == 2
    assert not renamed.exists()
    assert sorted(p for p in os.listdir(log.directory) if p.endswith(".deleted")) == []
    log.close()


def test_update_config_applies_to_the_next_append(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), clock=Clock(T0))
    log.append(batch_of_size(500))
    log.update_config(LogConfig(segment_bytes=600, max_message_bytes=2000))
    log.append(batch_of_size(500))  # 1000 > 600: rolls under the new setting
    assert [s.base_offset for s in log.segments] == [0, 1]
    log.close()


def test_delete_removes_the_partition_directory(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", LogConfig(), clock=Clock(T0))
    log.append(batch_of_size(500))
    log.delete()
    assert not (tmp_path / "t-0").exists()
    with pytest.raises(KafkaStorageError):
        log.append(batch_of_size(500))
