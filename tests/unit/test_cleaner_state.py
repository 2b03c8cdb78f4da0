"""storage/verify/cleaner_state.py: the log cleaner's numbers for a partition, read from its files,
equal to what the cleaner computes on the open log (PartitionLog.cleaning + cleanable_offsets)
under each compaction setting, while the broker has the log open, and without changing a file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner_manager import cleanable_offsets, write_cleaner_checkpoint
from shardbroker.storage.verify.cleaner_state import read_cleaner_state
from tests.unit.storage_batches import Clock, build_batch

TS = 1_700_000_000_000
MINUTE = 60_000
BASE = LogConfig(segment_bytes=8 * 1024, index_interval_bytes=256, segment_index_bytes=4096)


@pytest.mark.parametrize(
    "settings",
    [
        {"cleanup.policy": "compact"},
        {"cleanup.policy": "compact,delete", "min.compaction.lag.ms": str(100 * MINUTE)},
        {"cleanup.policy": "compact", "max.compaction.lag.ms": str(10 * MINUTE)},
    ],
)
@pytest.mark.parametrize("checkpoint", [None, "second segment", "active segment", 10**9])
def test_the_files_give_the_cleaners_own_numbers(
    tmp_path: Path, settings: dict[str, str], checkpoint: str | int | None
) -> None:
    config = BASE.overrides(settings)
    clock = Clock(TS)
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, config, clock=clock)
    try:
        for i in range(300):  # a minute apart: min/max.compaction.lag.ms fall inside the log
            log.append(build_batch(2, value_size=60, timestamp=TS + i * MINUTE, key=b"k%d" % (i % 7)))
        assert len(log.segments) > 3
        bases = [s.base_offset for s in log.segments]
        at = {"second segment": bases[1], "active segment": bases[-1] + 1}.get(str(checkpoint), checkpoint)
        if isinstance(at, int):
            write_cleaner_checkpoint(d, "t", 0, at)
        before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()}
        now = TS + 320 * MINUTE

        state = read_cleaner_state(d, config, now)

        assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()} == before
        with log.cleaning() as view:
            assert view is not None
            expected = cleanable_offsets(view, at if isinstance(at, int) else None, now)
        assert state is not None
        assert state.offsets == expected
        assert (state.log_start_offset, state.log_end_offset) == (log.log_start_offset, log.log_end_offset)
        assert state.checkpoint == at
        assert state.due == expected.due(config.min_cleanable_dirty_ratio)
        assert (state.last_clean_ms is None) == (at is None)
    finally:
        log.close()


def test_a_directory_without_segments_and_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "t-0").mkdir()
    assert read_cleaner_state(tmp_path / "t-0", BASE, TS) is None
    with pytest.raises(FileNotFoundError):
        read_cleaner_state(tmp_path / "t-1", BASE, TS)


def test_the_log_end_is_read_from_the_last_index_entry_on(tmp_path: Path) -> None:
    """A garbled start of the active segment is not read: only its tail, after the last entry."""
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, BASE, clock=Clock(TS))
    for _ in range(40):
        log.append(build_batch(2, value_size=60))
    leo = log.log_end_offset
    log.close()
    path = fn.log_file(d, 0)
    data = bytearray(path.read_bytes())
    data[8:12] = b"\xff\xff\xff\xff"  # the first batch's length: a scan from 0 would stop here
    path.write_bytes(bytes(data))
    state = read_cleaner_state(d, BASE.overrides({"cleanup.policy": "compact"}), TS)
    assert state is not None and state.log_end_offset == leo
