"""Compaction of one partition's log (Kafka's Cleaner): the latest record of every key survives.

One clean, as in Kafka: build a key map (offset_map.py) over the dirty part of the log, from the
cleaner checkpoint to the first uncleanable offset, then rewrite every segment from the log start
up to where the map ends, group by group (consecutive segments whose sizes add up to at most
``segment.bytes`` become one), keeping a record when no later record of its key is in the map.
Each group is written to ``<base>.log.cleaned`` (+ indexes), made durable and swapped into the log
(PartitionLog.replace_segments: ``.cleaned`` -> ``.swap`` -> old segments ``.deleted`` -> the
swap renamed to the final names; log_loader.py completes an interrupted swap).

Kafka's rules, all here:

- records keep their offsets (gaps appear); a batch keeps its base offset, last offset delta,
  producer id, epoch, base sequence, leader epoch, compression and timestamp type; a batch that
  lost records is re-encoded (compressed again with its codec), an untouched one is copied;
- a record without a key is removed (a topic that was ``delete`` before);
- a tombstone (null value) is kept until its batch's delete horizon passed: the first clean that
  keeps it sets the horizon (``now + delete.retention.ms``, KIP-534: the batch's baseTimestamp with
  attribute bit 6; record timestamps are re-based so they read the same);
- data of aborted transactions is removed; markers go once their transaction has no data left
  and their delete horizon passed (cleaned_transactions.py);
- the last batch of every producer stays, emptied if need be (its sequence numbers keep
  idempotence working), and so does the last batch of each group (so a cleaned segment ends
  where its group ended, which is what recovery of an interrupted swap reads).

Memory: the map holds at most ``max_keys`` keys (24 bytes each); when the dirty part has more,
the map stops early and the clean ends there: the next clean goes on from that offset (several
passes, bounded memory). Reads are in 4 MiB chunks of whole batches (the record column decoder's
best size: record_columns.py).

One thread: a clean reads, checks and decodes in the thread that calls it. A reader thread one
chunk ahead made the clean ~5 % faster (386 vs 362 MB/s, ``python -m perf cleaner``) but the two
threads' GIL hand-offs, even in a SCHED_IDLE process of their own, cost a broker on the same two
cores its produce p99: x9-10 against x1.3-3 for the same clean single-threaded (an outside
process cleaning a 512 MiB copy while one-record Produce round trips run; a two-thread
pure-Python SCHED_IDLE spinner alone costs x10, one thread x1.0).

Faults: a batch whose CRC or records do not check raises :class:`UncleanableLogError` (the
caller marks the partition uncleanable); an OSError (disk full) abandons the group's ``.cleaned``
files and leaves the log as it was.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
from crc32c import crc32c

from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches, verify_crcs
from shardbroker.protocol.compression import CompressionType, compress
from shardbroker.protocol.control_records import control_record
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.record_batch import InvalidRecordBatch, RecordBatch
from shardbroker.protocol.record_batch_builder import encode_record
from shardbroker.protocol.record_batch_header import (
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CONTROL_BIT,
    CRC_COVERED_HEADER,
    DELETE_HORIZON_BIT,
    HEADER_PREFIX,
    LENGTH_OFFSET,
    LOG_OVERHEAD,
    MAGIC,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
)
from shardbroker.protocol.record_columns import RecordColumns, record_columns
from shardbroker.storage import fault_points
from shardbroker.storage.cleaned_transactions import CleanedTransactions
from shardbroker.storage.cleaner_view import CleanerView, SegmentFile
from shardbroker.storage.file_names import CLEANED_SUFFIX
from shardbroker.storage.log_segment import LogSegment, write_fully
from shardbroker.storage.offset_map import OffsetMap, OffsetMapBuilder, murmur3_x64_128

__all__ = ["CleanAbortedError", "CleanStats", "Cleaner", "CleanerView", "Throttler", "UncleanableLogError"]

#: Bytes read at a time (whole batches; a bigger batch is read whole).
READ_CHUNK: Final = 4 << 20
#: Bytes of cleaned output gathered before a write.
WRITE_CHUNK: Final = 4 << 20
#: Bytes copied by one read or write system call (`_pread`, `Cleaner._write`): the kernel here
#: (preempt=none) lets a worker woken onto the cleaner's CPU run only between such copies
#: (perf sched, a worker's wait for the CPU behind the cleaner: p99 0.84 ms with 4 MiB reads,
#: 0.31 ms with 256 KiB; the rest is page faults). 64 KiB: 64 system calls per 4 MiB chunk.
SYSCALL_BYTES: Final = 64 << 10
_INT_MAX: Final = 0x7FFFFFFF
_I64 = npt.NDArray[np.int64]
_BOOL = npt.NDArray[np.bool_]


class UncleanableLogError(Exception):
    """The log holds something the cleaner cannot read (a bad CRC, undecodable records)."""


class CleanAbortedError(Exception):
    """The log was closed, handed over or deleted during the clean (Kafka's LogCleaningAbortedException)."""


class Throttler:
    """``log.cleaner.io.max.bytes.per.second`` (Kafka's Throttler): after each chunk read or
    written, sleep as long as the bytes so far are ahead of the allowed rate."""

    def __init__(
        self,
        bytes_per_second: float,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = bytes_per_second
        self._monotonic = monotonic
        self._sleep = sleep
        self._start = monotonic()
        self._bytes = 0
        #: Seconds slept so far (a metric, and what the throttle test reads).
        self.slept = 0.0

    def maybe_throttle(self, nbytes: int) -> None:
        if self.rate >= 1.7e308:  # Kafka's default, Double.MAX_VALUE: no limit
            return
        self._bytes += nbytes
        elapsed = self._monotonic() - self._start
        ahead = self._bytes / self.rate - elapsed
        if ahead > 0.001:
            self._sleep(ahead)
            self.slept += ahead
        if elapsed > 1.0:  # a fresh window, so an idle spell does not become a burst allowance
            self._start, self._bytes = self._monotonic(), 0


@dataclass(slots=True)
class CleanStats:
    """One clean's work (Kafka's CleanerStats): the metrics and the log line."""

    bytes_read: int = 0
    bytes_written: int = 0
    records_read: int = 0
    records_retained: int = 0
    invalid_records: int = 0
    segments_cleaned: int = 0
    groups: int = 0
    map_keys: int = 0
    map_records: int = 0
    #: The offset the next clean's dirty part starts at (the cleaner checkpoint).
    end_offset: int = 0


@dataclass(frozen=True, slots=True)
class Dedupe:
    """Which records a clean keeps, by key: the map of the dirty part ``[first_dirty, end)``.

    A record of the dirty part is the latest of its key exactly when its offset is one the map
    holds (offsets are unique, and the map holds the latest offset of every key of that part),
    so those records need no hashing in the second pass: a membership test of sorted offsets.
    A record below the dirty part survives when its key is not in the map; one at or after
    ``end`` (past a full map) when nothing later is: always, since the map ends before it."""

    offset_map: OffsetMap
    first_dirty: int
    end: int

    def newest(self, cols: RecordColumns, rows: _I64) -> _BOOL:
        offsets = cols.offsets[rows]
        keep = np.ones(rows.size, np.bool_)
        dirty = (offsets >= self.first_dirty) & (offsets < self.end)
        if dirty.any():
            keep[dirty] = self.offset_map.holds(offsets[dirty])
        clean = offsets < self.first_dirty
        if clean.any():
            keep[clean] = self.offset_map.latest(_hash_keys(cols, rows[clean])) < 0
        return keep


class Cleaner:
    """Cleans logs one at a time with a key map of at most ``max_keys`` keys."""

    def __init__(self, max_keys: int, throttler: Throttler) -> None:
        if max_keys < 1:
            raise ValueError("the key map must hold at least one key")
        self.max_keys = max_keys
        self.throttler = throttler

    # ------------------------------------------------------------------ the clean

    def clean(
        self, view: CleanerView, first_dirty: int, first_uncleanable: int, now_ms: int, stats: CleanStats
    ) -> Generator[tuple[list[SegmentFile], LogSegment], None, None]:
        """Clean ``view`` (its dirty part: ``[first_dirty, first_uncleanable)``, segment-aligned
        at the end): yields ``(old segments, cleaned segment)`` per group, in order, for the
        caller to swap in before the next group is written (so at most one group's output is on
        disk twice). The cleaned segment's files end in ``.cleaned``; a group that fails is
        deleted before the exception leaves."""
        verified: dict[int, int] = {}
        offset_map, end = self._build_map(view, first_dirty, first_uncleanable, stats, verified)
        stats.end_offset = end
        dedupe = Dedupe(offset_map, first_dirty, end)
        txns = CleanedTransactions(t for t in view.aborted if t.last_offset >= view.log_start_offset)
        for group in group_segments(view, end):
            cleaned = self._clean_group(view, group, dedupe, txns, now_ms, stats, verified)
            yield [view.segments[i] for i in group], cleaned

    def _build_map(
        self,
        view: CleanerView,
        first_dirty: int,
        first_uncleanable: int,
        stats: CleanStats,
        verified: dict[int, int],
    ) -> tuple[OffsetMap, int]:
        """The key map of the dirty part and where it ends (``first_uncleanable`` unless full).
        ``verified`` gets, per segment base offset, the bytes whose CRCs this pass checked (the
        second pass does not check them again)."""
        builder = OffsetMapBuilder(self.max_keys)
        txns = CleanedTransactions(t for t in view.aborted if t.last_offset >= first_dirty)
        end = first_uncleanable
        for seg, fd, next_base in _with_next_base(view):
            if next_base <= first_dirty:
                continue
            if seg.base_offset >= first_uncleanable:
                break
            for buf, h, chunk_end in _read_chunks(fd, seg.size, self.throttler, stats, view.abort, 0):
                verified[seg.base_offset] = chunk_end
                data = _data_records(buf, h, txns)
                if data is None:
                    continue
                cols, keep = data
                keep &= cols.offsets >= first_dirty
                keep &= cols.key_lengths >= 0
                rows = np.flatnonzero(keep)
                if not rows.size:
                    continue
                hashes = _hash_keys(cols, rows)
                offsets = cols.offsets[rows]
                taken = builder.add(hashes, offsets)
                stats.map_records += taken
                if taken < rows.size:
                    end = int(offsets[taken])
                    stats.map_keys = builder.distinct
                    return builder.build(), end
        stats.map_keys = builder.distinct
        return builder.build(), end

    def _clean_group(
        self,
        view: CleanerView,
        group: range,
        dedupe: Dedupe,
        txns: CleanedTransactions,
        now_ms: int,
        stats: CleanStats,
        verified: dict[int, int],
    ) -> LogSegment:
        base = view.segments[group[0]].base_offset
        directory = view.directory
        _remove_stale_cleaned(directory, base)
        cleaned = LogSegment(directory, base, view.config, active=True, file_suffix=CLEANED_SUFFIX)
        try:
            kept_before = len(txns.kept_aborted)
            pending: list[bytes | memoryview] = []
            pending_bytes = 0
            for i in group:
                seg, fd = view.segments[i], view.fds[i]
                last_seg = i == group[-1]
                chunks = _read_chunks(
                    fd, seg.size, self.throttler, stats, view.abort, verified.get(seg.base_offset, 0)
                )
                for buf, h, chunk_end in chunks:
                    last = last_seg and chunk_end >= seg.size
                    out = filter_batches(buf, h, dedupe, txns, view, now_ms, stats, keep_last=last)
                    for piece in out:
                        pending.append(piece)
                        pending_bytes += len(piece)
                    if pending_bytes >= WRITE_CHUNK:
                        self._write(cleaned, pending, pending_bytes, stats)
                        pending, pending_bytes = [], 0
            if pending:
                self._write(cleaned, pending, pending_bytes, stats)
            result = cleaned.recover(closed=True)  # indexes by the append rule; checks our output
            if result.truncated_bytes:
                raise UncleanableLogError(f"{cleaned.log_path}: the cleaner wrote a bad batch")
            cleaned.on_become_inactive()
            for txn in txns.kept_aborted[kept_before:]:
                cleaned.txn_index.append(txn)
            cleaned.flush()
            stats.segments_cleaned += len(group)
            stats.groups += 1
            return cleaned
        except BaseException:
            cleaned.delete_files()
            raise

    def _write(
        self, seg: LogSegment, pieces: list[bytes | memoryview], total: int, stats: CleanStats
    ) -> None:
        data = memoryview(b"".join(pieces))  # a copy of <= 4 MiB, in user space: preemptible
        for start in range(0, total, SYSCALL_BYTES):
            write_fully(seg.fd, [data[start : start + SYSCALL_BYTES]], seg.size + start)
        seg.size += total
        stats.bytes_written += total
        fault_points.reached("clean:writing")
        self.throttler.maybe_throttle(total)


# ---------------------------------------------------------------------- groups


def group_segments(view: CleanerView, end: int) -> list[range]:
    """Kafka's groupSegmentsBySize over the segments holding offsets below ``end``, as ranges of
    indexes into ``view.segments``: consecutive segments while their sizes add up to at most
    ``segment.bytes``, their offset indexes to at most ``segment.index.bytes`` and their offsets
    span less than 2^31."""
    config = view.config
    segs = view.segments
    bases = [s.base_offset for s in segs] + [view.active_base]
    count = sum(1 for s in segs if s.base_offset < end)
    groups: list[range] = []
    first = 0
    while first < count:
        size, index = segs[first].size, segs[first].index_bytes
        stop = first + 1
        while (
            stop < count
            and size + segs[stop].size <= config.segment_bytes
            and index + segs[stop].index_bytes <= config.segment_index_bytes
            and bases[stop + 1] - 1 - bases[first] <= _INT_MAX
        ):
            size += segs[stop].size
            index += segs[stop].index_bytes
            stop += 1
        groups.append(range(first, stop))
        first = stop
    return groups


def _with_next_base(view: CleanerView) -> Iterator[tuple[SegmentFile, int, int]]:
    segs = view.segments
    for i, seg in enumerate(segs):
        nxt = segs[i + 1].base_offset if i + 1 < len(segs) else view.active_base
        yield seg, view.fds[i], nxt


def _remove_stale_cleaned(directory: Path, base: int) -> None:
    """A ``.cleaned`` set left by an abandoned clean of this group (open removes them too)."""
    prefix = f"{base:020d}."
    for entry in os.scandir(directory):
        if entry.name.startswith(prefix) and entry.name.endswith(CLEANED_SUFFIX):
            os.unlink(entry.path)


# ---------------------------------------------------------------------- reading


def _read_chunks(
    fd: int, size: int, throttler: Throttler, stats: CleanStats, abort: threading.Event, verified: int
) -> Iterator[tuple[memoryview, BatchHeaders, int]]:
    """Whole batches of the segment file ``fd`` in chunks of about READ_CHUNK bytes, their CRCs
    checked (but for the first ``verified`` bytes: checked earlier in this clean), and the file
    position where each chunk ends."""
    pos = 0
    want = READ_CHUNK
    while pos < size:
        if abort.is_set():
            raise CleanAbortedError("the log was closed during the clean")
        buf = _pread(fd, min(want, size - pos), pos)
        if not buf:
            raise UncleanableLogError(f"segment ends at {pos}, expected {size} bytes")
        h = scan_batches(buf)
        if not len(h):
            if len(buf) >= LENGTH_OFFSET + 4:
                need = int.from_bytes(buf[LENGTH_OFFSET : LENGTH_OFFSET + 4], "big", signed=True)
                if need > 0 and LOG_OVERHEAD + need > len(buf) and pos + LOG_OVERHEAD + need <= size:
                    want = LOG_OVERHEAD + need
                    continue
            raise UncleanableLogError(f"no whole batch at position {pos}")
        checked = pos + h.end <= verified  # in the map's pass of this clean
        bad = np.zeros(0, np.int64) if checked else np.flatnonzero(~verify_crcs(buf, h))
        if bad.size or (h.magics != MAGIC).any():
            where = int(h.positions[int(bad[0])]) if bad.size else pos
            raise UncleanableLogError(f"corrupt batch at position {pos + where}")
        stats.bytes_read += h.end
        throttler.maybe_throttle(h.end)
        pos += h.end
        want = READ_CHUNK
        yield memoryview(buf)[: h.end], h, pos


def _pread(fd: int, n: int, pos: int) -> bytearray:
    """``n`` bytes of ``fd`` at ``pos`` (fewer at its end), SYSCALL_BYTES per system call."""
    buf = bytearray(n)
    with memoryview(buf) as view:
        got = 0
        while got < n:
            k = os.preadv(fd, [view[got : got + SYSCALL_BYTES]], pos + got)
            if not k:
                break
            got += k
    del buf[got:]
    return buf


def _decode(buf: memoryview, h: BatchHeaders) -> RecordColumns:
    try:
        return record_columns(buf, h)
    except (InvalidRecordBatch, ProtocolError) as exc:
        raise UncleanableLogError(f"undecodable records: {exc}") from exc


def _hash_keys(cols: RecordColumns, rows: _I64) -> npt.NDArray[np.uint64]:
    u8 = np.frombuffer(cols.data, dtype=np.uint8)
    return murmur3_x64_128(u8, cols.key_starts[rows], cols.key_lengths[rows])


def _record_batches(h: BatchHeaders) -> _I64:
    """The batch index of every record ``record_columns`` decodes (batches with records only)."""
    counts = np.maximum(h.record_counts.astype(np.int64), 0)
    return np.repeat(np.arange(len(h), dtype=np.int64), counts)


def _data_records(
    buf: memoryview, h: BatchHeaders, txns: CleanedTransactions
) -> tuple[RecordColumns, _BOOL] | None:
    """For the map: the records of the chunk and which belong to data batches not aborted."""
    skip = _walk_transactions(buf, h, txns)[0] | ((h.attributes & CONTROL_BIT) != 0)
    if skip.all() or not int(h.record_counts.sum()):
        return None
    cols = _decode(buf, h)
    return cols, ~skip[_record_batches(h)]


def _walk_transactions(buf: memoryview, h: BatchHeaders, txns: CleanedTransactions) -> tuple[_BOOL, _BOOL]:
    """Per batch: aborted data (to remove), and a marker whose transaction has no data left."""
    n = len(h)
    aborted = np.zeros(n, np.bool_)
    removable_marker = np.zeros(n, np.bool_)
    attrs = h.attributes
    last = h.last_offsets
    for i in np.flatnonzero((attrs & (TRANSACTIONAL_BIT | CONTROL_BIT)) != 0).tolist():
        pid, last_offset = int(h.producer_ids[i]), int(last[i])
        if attrs[i] & CONTROL_BIT:
            marker: int | None = None
            if h.record_counts[i] > 0:
                p = int(h.positions[i]) - h.base_position
                try:
                    marker = control_record(RecordBatch(memoryview(buf)[p : p + int(h.sizes[i])])).type
                except InvalidRecordBatch as exc:
                    raise UncleanableLogError(f"undecodable control batch: {exc}") from exc
            removable_marker[i] = txns.control_batch(pid, last_offset, marker)
        else:
            aborted[i] = txns.data_batch(pid, last_offset, bool(h.record_counts[i] > 0))
    return aborted, removable_marker


# ---------------------------------------------------------------------- filtering


def filter_batches(
    buf: memoryview,
    h: BatchHeaders,
    dedupe: Dedupe,
    txns: CleanedTransactions,
    view: CleanerView,
    now_ms: int,
    stats: CleanStats,
    *,
    keep_last: bool,
) -> list[bytes | memoryview]:
    """The cleaned bytes of the whole batches ``h`` of ``buf``, as pieces to write in order:
    runs of untouched batches as views of ``buf``, rebuilt and emptied batches as new bytes."""
    n = len(h)
    aborted, removable_marker = _walk_transactions(buf, h, txns)
    attrs = h.attributes.astype(np.int64)
    control = (attrs & CONTROL_BIT) != 0
    horizon_set = (attrs & DELETE_HORIZON_BIT) != 0
    horizon_passed = horizon_set & (h.base_timestamps <= now_ms)
    counts = np.maximum(h.record_counts.astype(np.int64), 0)
    drop_batch = aborted | (control & removable_marker & horizon_passed)
    stats.records_read += int(counts.sum())

    cols: RecordColumns | None = None
    tombstone_kept = np.zeros(n, np.bool_)
    retain = np.zeros(0, np.bool_)
    rb = np.zeros(0, np.int64)
    data_rows_exist = bool((~control & (counts > 0) & ~drop_batch).any())
    if data_rows_exist:
        cols = _decode(buf, h)
        rb = _record_batches(h)
        data = ~control[rb]
        keyed = cols.key_lengths >= 0
        retain = ~drop_batch[rb]
        rows = np.flatnonzero(data & keyed & retain)
        newest = dedupe.newest(cols, rows)
        tombstone = cols.value_lengths[rows] < 0
        keep_tombstone = ~horizon_passed[rb[rows]]
        ok = newest & (~tombstone | keep_tombstone)
        stats.invalid_records += int((data & ~keyed & retain).sum())
        retain[data & ~keyed] = False
        retain[rows] = ok
        retain_batch_rows = np.bincount(rb, weights=retain, minlength=n).astype(np.int64)
        kept_tombstones = rows[ok & tombstone]
        tombstone_kept[np.unique(rb[kept_tombstones])] = True
    else:
        retain_batch_rows = np.where(drop_batch, 0, counts)
    retain_batch_rows[drop_batch] = 0
    # Batches that hold something whose removal waits for a delete horizon they do not have yet.
    needs_horizon = ~horizon_set & (tombstone_kept | (control & removable_marker & (retain_batch_rows > 0)))
    untouched = (retain_batch_rows == counts) & ~needs_horizon & ~drop_batch
    stats.records_retained += int(retain_batch_rows.sum())
    keep_empty = _last_of_producer(h, view.producer_last_offsets)
    if keep_last and n:
        keep_empty[n - 1] = True

    horizon = now_ms + view.config.delete_retention_ms
    copied = _RetainedRecords(h, cols, retain, rb, ~untouched & ~control & ~needs_horizon)
    out: list[bytes | memoryview] = []
    mv = memoryview(buf)
    rel = h.positions - h.base_position
    i = 0
    untouched_list = untouched.tolist()
    while i < n:
        if untouched_list[i]:
            j = i
            while j < n and untouched_list[j]:
                j += 1
            out.append(mv[int(rel[i]) : int(rel[j - 1] + h.sizes[j - 1])])
            i = j
            continue
        if retain_batch_rows[i] > 0:
            if control[i]:
                out.append(_with_horizon(mv, h, i, horizon))
            elif needs_horizon[i]:
                assert cols is not None
                out.append(_rebuild(h, i, cols, copied.rows(i), horizon))
            else:
                out.append(copied.batch(i))
        elif keep_empty[i]:
            out.append(_empty_batch(h, i))
        i += 1
    return out


class _RetainedRecords:
    """The kept records of the batches to rewrite, gathered as written in one numpy step: their
    bytes are copied, not re-encoded (offset and timestamp deltas stay valid because the batch
    keeps its base offset and base timestamp), so a batch is its new header, its kept records'
    bytes and, when compressed, one call of its codec."""

    def __init__(
        self, h: BatchHeaders, cols: RecordColumns | None, retain: _BOOL, rb: _I64, rewrite: _BOOL
    ) -> None:
        self.h = h
        n = len(h)
        kept = np.flatnonzero(retain) if cols is not None else np.zeros(0, np.int64)
        self.kept = kept
        self.bounds = np.searchsorted(rb[kept], np.arange(n + 1))
        self.data = b""
        self.byte_bounds = np.zeros(n + 1, np.int64)
        self.max_ts = h.max_timestamps
        if cols is None or not kept.size:
            return
        rows = kept[rewrite[rb[kept]]]
        if not rows.size:
            return
        starts = cols.record_starts[rows]
        lengths = cols.record_ends[rows] - starts
        ends = np.cumsum(lengths)
        index = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - lengths - starts, lengths)
        self.data = np.frombuffer(cols.data, np.uint8)[index].tobytes()
        batch_of = rb[rows]
        row_bounds = np.searchsorted(batch_of, np.arange(n + 1))
        self.byte_bounds = np.concatenate(([0], ends))[row_bounds]
        stamps = h.base_timestamps[batch_of] + cols.timestamp_deltas[rows]
        has = np.flatnonzero(row_bounds[1:] > row_bounds[:-1])
        self.max_ts = h.max_timestamps.copy()
        create_time = (h.attributes[has] & TIMESTAMP_TYPE_BIT) == 0
        maxima = np.maximum.reduceat(stamps, row_bounds[has])
        self.max_ts[has[create_time]] = maxima[create_time]

    def rows(self, i: int) -> _I64:
        return self.kept[self.bounds[i] : self.bounds[i + 1]]

    def batch(self, i: int) -> bytes:
        h = self.h
        records: bytes | memoryview = memoryview(self.data)[self.byte_bounds[i] : self.byte_bounds[i + 1]]
        attrs = int(h.attributes[i])
        codec = attrs & COMPRESSION_MASK
        if codec != CompressionType.NONE:
            records = compress(codec, bytes(records))
        count = int(self.bounds[i + 1] - self.bounds[i])
        return _header(h, i, attrs, int(h.base_timestamps[i]), int(self.max_ts[i]), count, records)


def _last_of_producer(h: BatchHeaders, last_offsets: dict[int, int]) -> _BOOL:
    pids = h.producer_ids
    keep = np.zeros(len(h), np.bool_)
    if not last_offsets:
        return keep
    last = h.last_offsets
    for i in np.flatnonzero(pids >= 0).tolist():
        if last_offsets.get(int(pids[i])) == int(last[i]):
            keep[i] = True
    return keep


def _header(
    h: BatchHeaders,
    i: int,
    attributes: int,
    base_ts: int,
    max_ts: int,
    count: int,
    records: bytes | memoryview,
) -> bytes:
    covered = CRC_COVERED_HEADER.pack(
        attributes,
        int(h.last_offset_deltas[i]),
        base_ts,
        max_ts,
        int(h.producer_ids[i]),
        int(h.producer_epochs[i]),
        int(h.base_sequences[i]),
        count,
    )
    crc = crc32c(records, crc32c(covered))
    prefix = HEADER_PREFIX.pack(
        int(h.base_offsets[i]),
        BATCH_HEADER_SIZE - LOG_OVERHEAD + len(records),
        int(h.partition_leader_epochs[i]),
        MAGIC,
    )
    return b"".join((prefix, crc.to_bytes(4, "big"), covered, records))


def _empty_batch(h: BatchHeaders, i: int) -> bytes:
    """Kafka's writeEmptyHeader: no records, the batch's offsets, producer and max timestamp."""
    attrs = int(h.attributes[i]) & (TIMESTAMP_TYPE_BIT | TRANSACTIONAL_BIT | CONTROL_BIT)
    ts = int(h.max_timestamps[i])
    return _header(h, i, attrs, ts, ts, 0, b"")


def _with_horizon(mv: memoryview, h: BatchHeaders, i: int, horizon: int) -> bytes:
    """A batch kept whole (a marker) with its delete horizon set: only the header changes (its
    one control record's timestamp delta is re-based, so it is rebuilt from its records)."""
    p = int(h.positions[i]) - h.base_position
    batch = RecordBatch(mv[p : p + int(h.sizes[i])])
    parts: list[bytes | bytearray | memoryview] = []
    base_ts = int(h.base_timestamps[i])
    for rec in batch.records():
        stamp = base_ts + rec.timestamp_delta
        encode_record(rec.offset_delta, stamp - horizon, rec.key, rec.value, rec.headers, parts)
    records = b"".join(parts)
    attrs = int(h.attributes[i]) | DELETE_HORIZON_BIT
    return _header(h, i, attrs, horizon, int(h.max_timestamps[i]), int(h.record_counts[i]), records)


def _rebuild(h: BatchHeaders, i: int, cols: RecordColumns, rows: _I64, horizon: int) -> bytes:
    """Batch ``i`` with only the records ``rows`` and its delete horizon set (Kafka's
    buildRetainedRecordsInto with a deleteHorizonMs): the horizon becomes the base timestamp, so
    every record's timestamp delta is re-based and the records are encoded again."""
    attrs = int(h.attributes[i]) | DELETE_HORIZON_BIT
    stamps = (int(h.base_timestamps[i]) + cols.timestamp_deltas[rows]).tolist()  # also LogAppendTime's
    parts: list[bytes | bytearray | memoryview] = []
    headers = cols.headers
    for row, stamp in zip(rows.tolist(), stamps, strict=True):
        encode_record(
            int(cols.offset_deltas[row]),
            stamp - horizon,
            cols.key(row),
            cols.value(row),
            headers[row] if headers is not None else (),
            parts,
        )
    records = b"".join(parts)
    codec = attrs & COMPRESSION_MASK
    if codec != CompressionType.NONE:
        records = compress(codec, records)
    max_ts = int(h.max_timestamps[i]) if attrs & TIMESTAMP_TYPE_BIT else max(stamps)
    return _header(h, i, attrs, horizon, max_ts, len(rows), records)
