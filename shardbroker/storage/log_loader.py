"""Opening a partition's log: leftovers removed, segments listed, recovery where the data is not
known to be durable (Kafka's LogLoader). Opens, truncates and deletes files.

What it owns: the decisions of an open, returned as a `LoadedLog` for PartitionLog to adopt.

- An interrupted swap of a cleaned segment is completed (:meth:`LogLoader.complete_swaps`).
- Leftovers (file_names.LEFTOVER_SUFFIXES, index files without a ``.log``) are removed.
- With a trusted clean-shutdown marker (clean_shutdown.py), segments are trusted and only their
  indexes get a cheap sanity check. Without it, segments wholly below the segment holding the
  recovery point are trusted the same way, and that segment and all later ones are scanned
  batch by batch (length, magic, CRC-32C, offsets increasing: log_segment.batch_checks).
- The log is cut at the first bad or torn batch and every later segment is deleted: nothing
  after a cut survives, so offsets stay dense and the log end offset is where recovery stopped.
- Any index that is missing, torn or fails the sanity check is rebuilt from its segment; the
  rebuild follows the append rule, so it is byte-equal to what appends wrote. A rebuilt
  segment's ``.txnindex`` is emptied here and refilled by the producer-state replay
  (producer_state.py), which also picks the snapshot to start from.
- An unreadable checkpoint reads as 0: recover everything, start from the first segment.

Invariants of the result: at least one segment (an empty one at the log start offset for a new
log), the last one active; ``log_start_offset <= log_end_offset`` and ``recovery_point <=
log_end_offset``.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.batch_scan import BatchHeaders
from shardbroker.storage import clean_shutdown
from shardbroker.storage.abstract_index import CorruptIndexError
from shardbroker.storage.checkpoint import CheckpointError, fsync_dir, read_checkpoint
from shardbroker.storage.file_names import (
    INDEX_SUFFIX,
    LOG_START_OFFSET_CHECKPOINT,
    LOG_SUFFIX,
    RECOVERY_POINT_CHECKPOINT,
    SWAP_SUFFIX,
    TIME_INDEX_SUFFIX,
    list_segment_files,
    offset_from_file_name,
)
from shardbroker.storage.log_segment import LogSegment

__all__ = ["LoadedLog", "LogLoader", "RecoveryStats"]


@dataclass(frozen=True, slots=True)
class RecoveryStats:
    clean_shutdown: bool
    segments_recovered: int
    bytes_truncated: int
    segments_deleted: int
    indexes_rebuilt: int


@dataclass(frozen=True, slots=True)
class LoadedLog:
    """What an open found (Kafka's LoadedLogOffsets, with the segments)."""

    segments: list[LogSegment]
    log_start_offset: int
    log_end_offset: int
    recovery_point: int
    stats: RecoveryStats
    #: Headers of the segments recovery scanned (base offset -> headers, valid batches), so the
    #: producer state is rebuilt without reading them again.
    scanned: dict[int, tuple[BatchHeaders, int]]
    #: A segment file was created: the directory needs an fsync.
    created: bool
    #: Offsets of the producer state snapshot files (producer_state.py chooses and prunes).
    snapshots: list[int]


class LogLoader:
    """Loads the segments of ``directory`` (Kafka's LogLoader); one `load` per open."""

    def __init__(self, directory: Path, config: LogConfig, topic: str, partition: int, now_ms: int) -> None:
        self.directory = directory
        self.config = config
        self.topic = topic
        self.partition = partition
        self.now_ms = now_ms

    def _checkpoint_value(self, name: str) -> int:
        try:
            entries = read_checkpoint(self.directory / name)
        except CheckpointError:
            return 0  # unreadable: recover everything / start from the first segment
        return entries.get((self.topic, self.partition), 0)

    def complete_swaps(self) -> int:
        """Finish the swaps a crash interrupted (Kafka's LogLoader.completeSwapOperations): a
        ``<base>.log.swap`` is a cleaned group made durable before the old segments were touched
        (log_cleaner.py, PartitionLog.replace_segments), so the old segments whose base offsets
        lie in its range ``[base, its next offset)`` are deleted and the swap gets the final
        names. A cleaned segment always ends at its group's last offset, so that range is the
        group's. Index ``.swap`` files without their log are leftovers, removed with the others.
        Returns how many swaps were completed."""
        d = self.directory
        swaps = sorted(
            base
            for base, kind, suffix in filter(None, (offset_from_file_name(e.name) for e in os.scandir(d)))
            if kind == LOG_SUFFIX and suffix == SWAP_SUFFIX
        )
        if not swaps:
            return 0
        bases = list_segment_files(d).bases
        for base in swaps:
            swap = LogSegment(d, base, self.config, active=False, now_ms=self.now_ms, file_suffix=SWAP_SUFFIX)
            scan = swap.scan()
            if scan.truncated_bytes or not scan.valid_batches:
                swap.delete_files()  # not a swap the cleaner made (it checks and syncs them whole)
                continue
            try:
                end = scan.headers.next_offset or base
                for old in bases:
                    if base <= old < end:
                        LogSegment(d, old, self.config, active=False).delete_files()
                swap.change_file_suffix("")
            finally:
                swap.close()
        fsync_dir(d)
        return len(swaps)

    def load(self) -> LoadedLog:
        d = self.directory
        clean = clean_shutdown.trusted(d)
        swapped = self.complete_swaps()
        if swapped:
            clean = False  # the indexes of a swapped-in segment are checked like any other
        listing = list_segment_files(d)
        for path in listing.leftovers + listing.orphan_indexes:
            os.unlink(path)  # an interrupted write, delete or compaction; an index without its log
        bases, index_files = listing.bases, listing.index_files
        recovery_point = self._checkpoint_value(RECOVERY_POINT_CHECKPOINT)
        log_start = self._checkpoint_value(LOG_START_OFFSET_CHECKPOINT)
        now = self.now_ms

        recovered = truncated = deleted = rebuilt = 0
        # First segment that must be scanned: the one holding the recovery point.
        first_unflushed = len(bases)
        if not clean:
            first_unflushed = max(0, bisect.bisect_right(bases, recovery_point) - 1)
        segments: list[LogSegment] = []
        scanned: dict[int, tuple[BatchHeaders, int]] = {}
        for i, base in enumerate(bases):
            last = i == len(bases) - 1
            seg = LogSegment(d, base, self.config, active=False, now_ms=now)
            result = None
            if i >= first_unflushed:
                result = seg.recover(closed=not last)
                recovered += 1
                rebuilt += 1
            else:
                try:
                    if (base, INDEX_SUFFIX) not in index_files or (
                        base,
                        TIME_INDEX_SUFFIX,
                    ) not in index_files:
                        raise CorruptIndexError("index file missing")
                    seg.sanity_check()
                    seg.indexes_flushed = True
                except CorruptIndexError:
                    # Trusted segments were closed (rolled, or the log closed cleanly).
                    result = seg.recover(closed=True)
                    rebuilt += 1
            segments.append(seg)
            if result is not None:
                scanned[base] = (result.headers, result.valid_batches)
                if result.truncated_bytes:
                    truncated += result.truncated_bytes
                    for later in bases[i + 1 :]:  # nothing after a cut survives
                        LogSegment(d, later, self.config, active=False).delete_files()
                        deleted += 1
                    break
        created = not segments
        if created:
            segments.append(LogSegment(d, log_start, self.config, active=True, now_ms=now))
        active = segments[-1]
        active.make_active()
        log_end = active.read_next_offset()
        return LoadedLog(
            segments=segments,
            log_start_offset=min(max(log_start, segments[0].base_offset), log_end),
            log_end_offset=log_end,
            # A clean close leaves recovery point = log end; a hand-over leaves the real one.
            recovery_point=min(recovery_point, log_end),
            stats=RecoveryStats(clean, recovered, truncated, deleted, rebuilt),
            scanned=scanned,
            created=created,
            snapshots=listing.snapshots,
        )
