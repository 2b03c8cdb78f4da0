"""Which part of a compacted log is cleanable, and whether it is due (Kafka's LogCleanerManager
decisions), plus the per-partition cleaner checkpoint.

Offsets (Kafka's cleanableOffsets): the dirty part starts at the cleaner checkpoint (where the last
clean's key map ended), or at the log start offset when there is none or it is out of the log.
It ends at the first uncleanable offset: the active segment's base, the segment holding the last
stable offset (an open transaction's data is not compacted), and the first segment holding a
record newer than ``min.compaction.lag.ms`` -- whichever comes first, always at a segment base.

Due (Kafka's grabFilthiestCompactedLog): the dirty ratio ``dirty bytes / (clean + dirty bytes)``
reaches ``min.cleanable.dirty.ratio``, or a dirty record is older than ``max.compaction.lag.ms``
(the max compaction delay is positive: then the partition is cleaned whatever its ratio).
Among due partitions the cleaner takes the one with the largest delay, then the dirtiest.

The checkpoint is ``cleaner-offset-checkpoint`` in the partition directory, in Kafka's checkpoint
format (checkpoint.py: one file per partition directory, like the recovery point).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from shardbroker.storage.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from shardbroker.storage.cleaner_view import CleanerView, SegmentFile
from shardbroker.storage.file_names import CLEANER_OFFSET_CHECKPOINT
from shardbroker.storage.log_cleaner import CleanStats

if TYPE_CHECKING:
    from shardbroker.storage.log import PartitionLog
    from shardbroker.storage.log_segment import LogSegment

__all__ = [
    "CleanRunner",
    "CleanableOffsets",
    "clean_partition",
    "cleanable_offsets",
    "read_cleaner_checkpoint",
    "write_cleaner_checkpoint",
]

_LONG_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class CleanableOffsets:
    first_dirty: int
    first_uncleanable: int
    clean_bytes: int
    dirty_bytes: int
    #: Milliseconds past ``max.compaction.lag.ms`` of the oldest dirty record (0: not overdue).
    max_compaction_delay_ms: int

    @property
    def dirty_ratio(self) -> float:
        total = self.clean_bytes + self.dirty_bytes
        return self.dirty_bytes / total if total else 0.0

    def due(self, min_cleanable_ratio: float) -> bool:
        if self.dirty_bytes <= 0 or self.first_dirty >= self.first_uncleanable:
            return False
        return self.max_compaction_delay_ms > 0 or self.dirty_ratio >= min_cleanable_ratio


def cleanable_offsets(view: CleanerView, checkpoint: int | None, now_ms: int) -> CleanableOffsets:
    """The dirty part of ``view`` (module docstring) and its sizes."""
    config = view.config
    segs = view.segments
    bases = [s.base_offset for s in segs] + [view.active_base]
    start = view.log_start_offset
    first_dirty = checkpoint if checkpoint is not None and start <= checkpoint <= view.active_base else start
    uncleanable = view.active_base
    lso = view.last_stable_offset
    if lso < uncleanable:
        uncleanable = max(b for b in bases if b <= lso) if lso >= bases[0] else bases[0]
    if config.min_compaction_lag_ms > 0:
        too_new = now_ms - config.min_compaction_lag_ms
        for i, seg in enumerate(segs):
            if bases[i + 1] > first_dirty and seg.largest_timestamp > too_new:
                uncleanable = min(uncleanable, seg.base_offset)
                break
    clean = dirty = 0
    earliest_dirty = _LONG_MAX
    for i, seg in enumerate(segs):
        nxt = bases[i + 1]
        if nxt <= first_dirty:
            clean += seg.size
        elif seg.base_offset < uncleanable:
            dirty += seg.size
            first_ts = seg.first_batch_timestamp
            if first_ts > 0:
                earliest_dirty = min(earliest_dirty, first_ts)
    delay = 0
    if config.max_compaction_lag_ms < _LONG_MAX and earliest_dirty < _LONG_MAX:
        delay = max(0, now_ms - config.max_compaction_lag_ms - earliest_dirty)
    return CleanableOffsets(first_dirty, max(uncleanable, first_dirty), clean, dirty, delay)


def read_cleaner_checkpoint(directory: Path, topic: str, partition: int) -> int | None:
    """The partition's cleaner checkpoint; None when there is none or it does not parse (the
    next clean starts at the log start offset: slower, never wrong)."""
    try:
        return read_checkpoint(directory / CLEANER_OFFSET_CHECKPOINT).get((topic, partition))
    except (CheckpointError, OSError):
        return None


def write_cleaner_checkpoint(directory: Path, topic: str, partition: int, offset: int) -> None:
    write_checkpoint(directory / CLEANER_OFFSET_CHECKPOINT, {(topic, partition): offset})


class CleanRunner(Protocol):
    """What runs a clean: a `Cleaner` in this thread, or broker/cleaner_process.py's child."""

    def clean(
        self, view: CleanerView, first_dirty: int, first_uncleanable: int, now_ms: int, stats: CleanStats
    ) -> Generator[tuple[list[SegmentFile], LogSegment], None, None]: ...


def clean_partition(
    log: PartitionLog,
    cleaner: CleanRunner,
    now_ms: int,
    *,
    force: bool = False,
    progress: Callable[[], None] | None = None,
) -> tuple[CleanableOffsets, CleanStats | None]:
    """One clean of ``log`` if it is due (or ``force``): map, rewrite, swap each group (then
    ``progress()``), then move the checkpoint to where the map ended. Returns the offsets found
    and the clean's stats (None when nothing was cleaned). Raises UncleanableLogError or
    OSError; the log is then as before (groups already swapped in stay: each swap is complete on
    its own)."""
    with log.cleaning() as view:
        if view is None:
            return CleanableOffsets(log.log_start_offset, log.log_start_offset, 0, 0, 0), None
        checkpoint = read_cleaner_checkpoint(log.directory, log.topic, log.partition)
        offsets = cleanable_offsets(view, checkpoint, now_ms)
        if offsets.first_dirty >= offsets.first_uncleanable or not (
            force or offsets.due(view.config.min_cleanable_dirty_ratio)
        ):
            return offsets, None
        stats = CleanStats()
        groups = cleaner.clean(view, offsets.first_dirty, offsets.first_uncleanable, now_ms, stats)
        with contextlib.closing(groups):  # a runner in another process hears that it must stop
            for old, cleaned in groups:
                if not log.replace_segments(old, cleaned):
                    return offsets, None  # the log changed under the clean: the next one goes on
                if progress is not None:
                    progress()
        write_cleaner_checkpoint(log.directory, log.topic, log.partition, stats.end_offset)
        return offsets, stats
