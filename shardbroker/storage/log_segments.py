"""The segments of one partition's log in base-offset order (Kafka's LogSegments), and the
lookups over them: the segment holding an offset, the byte range a fetch sends (Kafka's
LocalLog.read), the first offset at or after a timestamp (ListOffsets) and how many segments
retention may delete (Kafka's UnifiedLog.deletableSegments). No file I/O of its own.

Invariants: base offsets strictly increase; while the log is open there is at least one
segment and the last one is the active one (appends go there, nowhere else). Segments leave
only from the front (retention, DeleteRecords) or all at once (close, hand-over, delete). Not
thread-safe: PartitionLog's lock guards every call.

Why a parallel list of base offsets: ``bisect`` over plain ints finds a segment without a Python
call per step, on every fetch.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Sequence

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.log_segment import LogSegment

__all__ = ["LogSegments"]


class LogSegments:
    """The segments of a log, ordered by base offset."""

    __slots__ = ("_bases", "_segments")

    def __init__(self, segments: list[LogSegment] | None = None) -> None:
        self._segments: list[LogSegment] = segments or []
        self._bases = [s.base_offset for s in self._segments]

    def __len__(self) -> int:
        return len(self._segments)

    def __iter__(self) -> Iterator[LogSegment]:
        return iter(self._segments)

    @property
    def active(self) -> LogSegment:
        """The last segment, the one appends go to."""
        return self._segments[-1]

    @property
    def first(self) -> LogSegment:
        return self._segments[0]

    def floor(self, offset: int) -> LogSegment:
        """The segment whose base offset is the largest at or below ``offset`` (the first one
        for an offset below every base)."""
        i = bisect.bisect_right(self._bases, offset) - 1
        return self._segments[max(0, i)]

    def from_offset(self, offset: int) -> list[LogSegment]:
        """The segment holding ``offset`` (as :meth:`floor`) and every later one."""
        return self._segments[max(0, bisect.bisect_right(self._bases, offset) - 1) :]

    def next_base(self, base_offset: int) -> int | None:
        """The base offset of the segment after the one based at ``base_offset`` (None: last)."""
        i = bisect.bisect_right(self._bases, base_offset)
        return self._bases[i] if i < len(self._bases) else None

    def collect_aborted_transactions(
        self, start_offset: int, upper_bound_offset: int
    ) -> list[tuple[int, int]]:
        """``(producer_id, first_offset)`` of the aborted transactions overlapping ``[start_offset,
        upper_bound_offset)``, from the ``.txnindex`` of the segment holding ``start_offset`` on,
        until an entry's LSO reaches the bound (Kafka's LocalLog.collectAbortedTransactions)."""
        found: list[tuple[int, int]] = []
        for seg in self.from_offset(start_offset):
            txns, complete = seg.txn_index.collect_aborted_txns(start_offset, upper_bound_offset)
            found += [(t.producer_id, t.first_offset) for t in txns]
            if complete:
                break
        return found

    def fetch_upper_bound_offset(self, base_offset: int, end_position: int) -> int | None:
        """An offset above every offset of a read of the segment based at ``base_offset`` ending at
        ``end_position``: its offset index's first entry from there, else the next segment's base
        (None: the log end offset). Kafka's LocalLog.addAbortedTransactions bound."""
        seg = self.floor(base_offset)
        upper = None
        if seg.base_offset == base_offset:
            upper = seg.offset_index.fetch_upper_bound_offset(end_position)
        return self.next_base(base_offset) if upper is None else upper

    def add(self, segment: LogSegment) -> None:
        """A new active segment, based above every other."""
        self._segments.append(segment)
        self._bases.append(segment.base_offset)

    def remove_first(self, count: int) -> list[LogSegment]:
        doomed = self._segments[:count]
        del self._segments[:count]
        del self._bases[:count]
        return doomed

    def replace(self, files: Sequence[tuple[int, int]], new: LogSegment) -> list[LogSegment] | None:
        """Put ``new`` where the consecutive segments whose (base offset, inode) are ``files``
        are (a cleaned group) and return them; None, and no change, when they are not all there
        any more (retention deleted some meanwhile) or would include the active segment."""
        if not files:
            return None
        i = bisect.bisect_left(self._bases, files[0][0])
        run = self._segments[i : i + len(files)]
        if (
            len(run) != len(files)
            or i + len(files) >= len(self._segments)
            or any(
                s.base_offset != base or os.fstat(s.fd).st_ino != inode
                for s, (base, inode) in zip(run, files, strict=True)
            )
        ):
            return None
        self._segments[i : i + len(files)] = [new]
        self._bases[i : i + len(files)] = [new.base_offset]
        return run

    def remove_all(self) -> list[LogSegment]:
        doomed, self._segments, self._bases = self._segments, [], []
        return doomed

    def size_in_bytes(self) -> int:
        return sum(s.size for s in self._segments)

    def read(self, offset: int, max_bytes: int, min_one_message: bool) -> tuple[LogSegment, int, int]:
        """``(segment, position, length)`` of the bytes to send for ``offset`` (at or above the
        first segment's base): from the segment holding it, or the next one when ``offset`` falls
        in a gap after a segment's last batch; the active segment's end, length 0, past them all."""
        i = bisect.bisect_right(self._bases, offset) - 1
        while i < len(self._segments):
            seg = self._segments[i]
            found = seg.read(offset, max_bytes, min_one_message)
            if found is not None:
                return seg, found[0], found[1]
            i += 1  # offset beyond this segment's batches (a gap): the next segment has it
        seg = self._segments[-1]
        return seg, seg.size, 0

    def find_offset_by_timestamp(
        self, timestamp: int, log_start_offset: int, log_end_offset: int
    ) -> tuple[int, int] | None:
        """``(timestamp, offset)`` of the first record at or after ``log_start_offset`` whose
        timestamp is >= ``timestamp``; None if there is none."""
        for i, seg in enumerate(self._segments):
            next_base = self._bases[i + 1] if i + 1 < len(self._bases) else log_end_offset
            if next_base <= log_start_offset or seg.max_timestamp_so_far < timestamp:
                continue
            found = seg.find_offset_by_timestamp(timestamp, log_start_offset)
            if found is not None:
                return found
        return None

    def deletable(self, config: LogConfig, now: int, log_start_offset: int) -> int:
        """How many segments from the front retention deletes: those wholly below the log start
        offset, past ``retention.ms`` (by their largest timestamp) or beyond ``retention.bytes``
        (oldest first). All of them when every one qualifies: the caller rolls first."""
        segs = self._segments
        deletable = 0
        # Segments whose every offset is below the log start offset.
        while deletable < len(segs) - 1 and self._bases[deletable + 1] <= log_start_offset:
            deletable += 1
        if "delete" in config.cleanup_policy:
            if config.retention_ms >= 0:
                n = 0
                while (
                    n < len(segs)
                    and segs[n].size > 0
                    and now - segs[n].largest_timestamp() > config.retention_ms
                ):
                    n += 1
                deletable = max(deletable, n)
            if config.retention_bytes >= 0:
                excess = self.size_in_bytes() - config.retention_bytes
                n = 0
                while n < len(segs) and excess - segs[n].size >= 0 and segs[n].size > 0:
                    excess -= segs[n].size
                    n += 1
                deletable = max(deletable, n)
        return deletable
