"""The log cleaner's view of one partition directory, read from its files only: what
``shardbroker topics describe --data-dir`` prints per partition of a compacted topic (first dirty
offset, first uncleanable offset, dirty ratio, whether a clean is due, the last clean).

The numbers are the cleaner's own: storage/log_cleaner_manager.py's `cleanable_offsets` runs on
what the files say, so the dirty ratio shown is the one the cleaner compares with
``min.cleanable.dirty.ratio``. It reads four facts of each segment (base offset, size, largest
and first batch timestamp: a `SegmentFile`), taken from the files read-only (a LogSegment would
open them for writing: ``O_RDWR|O_CREAT``, index preallocation). What the files cannot say:

- an open transaction (the cleaner stops at the segment holding the last stable offset): the
  last stable offset is taken to be the log end offset;
- whether the cleaner gave up on the partition (marked uncleanable after unreadable data, until
  the worker restarts): that is in the worker's memory (its log, and
  ``shardbroker_log_cleaner_uncleanable_partitions``); ``shardbroker check`` finds the data.

"Last clean" is the time the cleaner last wrote ``cleaner-offset-checkpoint`` (the end of every
clean). Safe on a running broker's data dir: a segment removed while read (retention, a clean's
swap) makes it read the directory again.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE, MAX_TIMESTAMP_OFFSET, NO_TIMESTAMP
from shardbroker.storage.checkpoint import read_checkpoint
from shardbroker.storage.cleaner_view import CleanerView, SegmentFile
from shardbroker.storage.file_names import (
    CLEANER_OFFSET_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    index_file,
    list_segment_files,
    log_file,
    parse_partition_dir,
    time_index_file,
)
from shardbroker.storage.log_cleaner_manager import CleanableOffsets, cleanable_offsets
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.time_index import TimeIndex
from shardbroker.storage.verify.segments import read_log_chunks

__all__ = ["CleanerState", "read_cleaner_state"]

#: Reads of a directory whose files keep vanishing (a running broker's retention and swaps).
_ATTEMPTS: Final = 3


@dataclass(frozen=True, slots=True)
class CleanerState:
    """A compacted partition as the log cleaner sees it, from its directory."""

    log_start_offset: int
    log_end_offset: int
    #: The cleaner-offset-checkpoint entry (None: never cleaned, or it does not parse).
    checkpoint: int | None
    offsets: CleanableOffsets
    min_cleanable_dirty_ratio: float
    #: Milliseconds since the epoch of the last clean's end (None: never cleaned).
    last_clean_ms: int | None

    @property
    def due(self) -> bool:
        """The cleaner would clean it at its next look (LogCleanerManager's rule)."""
        return self.offsets.due(self.min_cleanable_dirty_ratio)

    def to_dict(self) -> dict[str, Any]:
        o = self.offsets
        return {
            "log_start_offset": self.log_start_offset,
            "log_end_offset": self.log_end_offset,
            "cleaner_checkpoint": self.checkpoint,
            "first_dirty_offset": o.first_dirty,
            "first_uncleanable_offset": o.first_uncleanable,
            "clean_bytes": o.clean_bytes,
            "dirty_bytes": o.dirty_bytes,
            "dirty_ratio": o.dirty_ratio,
            "min_cleanable_dirty_ratio": self.min_cleanable_dirty_ratio,
            "max_compaction_delay_ms": o.max_compaction_delay_ms,
            "due": self.due,
            "last_clean_ms": self.last_clean_ms,
        }


def _segment_file(directory: Path, base_offset: int) -> SegmentFile:
    """What `cleanable_offsets` reads of a segment, from its files (read-only), by LogSegment's
    rules: the largest timestamp from the time index (a rolled segment's last entry holds it),
    else the file's mtime; the first batch's max timestamp."""
    path = log_file(directory, base_offset)
    st = os.stat(path)
    entries = TimeIndex.read_entries(time_index_file(directory, base_offset))
    largest = int(entries.keys[entries.valid - 1]) if entries.valid else NO_TIMESTAMP
    first = NO_TIMESTAMP
    if st.st_size >= BATCH_HEADER_SIZE:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            first = int.from_bytes(os.pread(fd, 8, MAX_TIMESTAMP_OFFSET), "big", signed=True)
        finally:
            os.close(fd)
    return SegmentFile(
        base_offset, st.st_size, 0, largest if largest >= 0 else st.st_mtime_ns // 1_000_000, first, st.st_ino
    )


def _log_end_offset(directory: Path, active_base: int) -> int:
    """The offset after the active segment's last whole batch, read from its last offset index
    entry on (as LogSegment.read_next_offset does), not from the start of the segment."""
    path = log_file(directory, active_base)
    try:
        entries = OffsetIndex.read_entries(index_file(directory, active_base))
    except FileNotFoundError:
        start = 0
    else:
        start = int(entries.values[entries.valid - 1]) if entries.valid else 0
    if start >= os.stat(path).st_size:
        start = 0  # an index the broker would rebuild: walk the whole segment
    leo = active_base
    _, chunks, _ = read_log_chunks(path, start=start)
    for chunk in chunks:
        leo = int(chunk.headers.last_offsets[-1]) + 1
    return leo


def _checkpoint_entry(path: Path, key: tuple[str, int]) -> int | None:
    """``key``'s entry of a checkpoint file; None when there is none or the file does not parse
    (the broker then falls back: the cleaner to the log start, the log to its first segment)."""
    try:
        return read_checkpoint(path).get(key)
    except ValueError:  # CheckpointError, UnicodeDecodeError
        return None


def _read(directory: Path, config: LogConfig, now_ms: int) -> CleanerState | None:
    key = parse_partition_dir(directory.name)
    bases = list_segment_files(directory).bases
    if not bases:
        return None
    segments = [_segment_file(directory, b) for b in bases[:-1]]
    leo = _log_end_offset(directory, bases[-1])
    checkpoint = _checkpoint_entry(directory / CLEANER_OFFSET_CHECKPOINT, key)
    try:
        last_clean: int | None = (directory / CLEANER_OFFSET_CHECKPOINT).stat().st_mtime_ns // 1_000_000
    except FileNotFoundError:
        last_clean = None
    # log_loader.py's rule: the checkpoint, within the first segment and the log end.
    log_start = min(max(_checkpoint_entry(directory / LOG_START_OFFSET_CHECKPOINT, key) or 0, bases[0]), leo)
    view = CleanerView(
        config=config,
        directory=directory,
        segments=tuple(segments),
        fds=(),
        active_base=bases[-1],
        log_start_offset=log_start,
        last_stable_offset=leo,
        producer_last_offsets={},
        aborted=(),
        abort=threading.Event(),
    )
    offsets = cleanable_offsets(view, checkpoint, now_ms)
    return CleanerState(log_start, leo, checkpoint, offsets, config.min_cleanable_dirty_ratio, last_clean)


def read_cleaner_state(directory: Path, config: LogConfig, now_ms: int) -> CleanerState | None:
    """The cleaner's numbers for the partition in ``directory`` under ``config`` (its topic's
    compaction settings) at ``now_ms``; None when the directory holds no segment. Raises OSError
    (FileNotFoundError: no such directory, or files that kept vanishing)."""
    attempt = 1
    while True:
        try:
            return _read(directory, config, now_ms)
        except FileNotFoundError:
            if attempt == _ATTEMPTS or not directory.is_dir():
                raise
            attempt += 1
