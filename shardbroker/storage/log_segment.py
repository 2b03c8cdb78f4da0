"""One segment: a ``.log`` file of record batches plus its offset, time and transaction indexes
(opens files).

Byte layout of ``NNNNNNNNNNNNNNNNNNNN.log`` (Kafka's FileRecords): record batches (magic v2,
header layout in shardbroker/protocol/record_batch_header.py) back to back from byte 0, nothing else: no
file header, no padding. The file name is the base offset; the first batch's baseOffset is at
least that. The segment's size is the file size (a torn tail is cut off by recovery).

Index rule (Kafka >= 3.7 LogSegment.append/recover, the same on both paths): walking the batches
in order with ``bytes_since`` = bytes from the last indexed batch's start (or from byte 0), a batch
gets an offset-index entry ``(its last offset, its position)`` exactly when ``bytes_since >
index.interval.bytes``; the time index then gets ``(largest maxTimestamp so far, last offset of
the batch that carried it)`` if that timestamp is new. When the segment stops being active
(roll, or close of the log), the time index gets that pair once more, so the last entry of an
inactive segment holds its largest timestamp. Hence a rebuilt index equals the original.

The ``.txnindex`` (transaction_index.py) is not derived from this segment alone (an aborted
transaction may start in an earlier one): :meth:`recover` empties it and the producer-state replay
that follows refills it (Kafka's LogSegment.recover, which replays producer state as it scans).

Writes are positional (``pwrite``/``pwritev`` at the known end), so a failed or partial write is
undone with ``ftruncate`` to the old size and never leaves a gap or a torn batch behind.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches, verify_crcs
from shardbroker.protocol.record_batch import InvalidRecordBatch, RecordBatch
from shardbroker.protocol.record_batch_header import (
    HEADER,
    LAST_OFFSET_DELTA_OFFSET,
    LOG_OVERHEAD,
    MAX_TIMESTAMP_OFFSET,
    NO_TIMESTAMP,
)
from shardbroker.storage.abstract_index import CorruptIndexError
from shardbroker.storage.errors import KafkaStorageError
from shardbroker.storage.file_modes import FILE_MODE
from shardbroker.storage.file_names import (
    DELETED_SUFFIX,
    index_file,
    log_file,
    time_index_file,
    txn_index_file,
    with_suffix,
)
from shardbroker.storage.log_validator import AppendBatches
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.time_index import TimeIndex
from shardbroker.storage.transaction_index import TransactionIndex

__all__ = ["LogSegment", "ScanResult", "batch_checks", "index_entry_slots", "write_fully"]

_INT_MAX: Final = 0x7FFFFFFF
#: Bytes read per pread while walking batch headers from an index entry: a default index interval
#: plus a header, so walking small batches costs one system call.
_WALK_CHUNK: Final = 8192
_IOV_MAX: Final = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
_unpack_walk = struct.Struct(">qi").unpack_from  # baseOffset, batchLength
_unpack_lod = struct.Struct(">i").unpack_from
_unpack_ts = struct.Struct(">q").unpack_from
#: Header bytes through lastOffsetDelta: what finding a batch's last offset reads.
_THROUGH_LAST_OFFSET_DELTA = LAST_OFFSET_DELTA_OFFSET + 4


def write_fully(fd: int, chunks: list[memoryview], position: int) -> None:
    """Write ``chunks`` at ``position``, continuing after short writes. One system call when the
    kernel takes it all (pwrite for one chunk, pwritev for several)."""
    if len(chunks) == 1:
        view = chunks[0]
        while view.nbytes:
            n = os.pwrite(fd, view, position)
            if n <= 0:
                raise OSError(errno.EIO, "pwrite wrote nothing")
            position += n
            view = view[n:]
        return
    pending = [c for c in chunks if c.nbytes]
    while pending:
        batch = pending[:_IOV_MAX]
        n = os.pwritev(fd, batch, position)
        if n <= 0:
            raise OSError(errno.EIO, "pwritev wrote nothing")
        position += n
        while n and pending:
            first = pending[0]
            if n >= first.nbytes:
                n -= first.nbytes
                pending.pop(0)
            else:
                pending[0] = first[n:]
                n = 0


def index_entry_slots(
    positions: npt.NDArray[np.int64], bytes_since: int, interval: int
) -> npt.NDArray[np.int64]:
    """Which batches get an index entry (see the module docstring).

    ``positions`` are batch starts (increasing) and ``bytes_since`` the bytes from the last
    indexed batch to ``positions[0]``. Batch ``j`` gets an entry when ``positions[j] - ref >
    interval``, ``ref`` being the last indexed batch's start: so from an entry at ``i`` the next
    is at ``searchsorted(positions, positions[i] + interval, 'right')``. That jump is computed for
    every batch in one numpy call; following the chain is then a Python loop over list items
    (~0.1 us per entry; a ``searchsorted`` call per entry cost ~2 us, a quarter of the recovery
    time of a 1 GiB segment of 16 KiB batches).
    """
    n = positions.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    first = int(np.searchsorted(positions, int(positions[0]) - bytes_since + interval, side="right"))
    if first >= n:
        return np.zeros(0, dtype=np.int64)
    jumps = np.searchsorted(positions, positions + interval, side="right").tolist()
    slots = []
    i = first
    while i < n:
        slots.append(i)
        i = jumps[i]
    return np.array(slots, dtype=np.int64)


def batch_checks(
    h: BatchHeaders, crc_ok: npt.NDArray[np.bool_], base_offset: int
) -> dict[str, npt.NDArray[np.bool_]]:
    """What recovery demands of each scanned batch of a segment named ``base_offset``, one
    boolean array per rule (True: the batch passes it), so that recovery can cut at the first
    batch failing any and dump-log/check can say which rule it failed."""
    last = h.last_offsets
    increasing = np.ones(len(h), dtype=np.bool_)
    increasing[1:] = h.base_offsets[1:] > last[:-1]
    return {
        "crc": crc_ok,
        "magic": h.magics == 2,
        "last_offset_delta": h.last_offset_deltas >= 0,
        "base_offset": h.base_offsets >= base_offset,
        "offset_range": (last - base_offset) <= _INT_MAX,
        "offsets_increasing": increasing,
    }


@dataclass(slots=True)
class ScanResult:
    """What recovery found in a segment."""

    headers: BatchHeaders
    valid_batches: int
    valid_bytes: int
    truncated_bytes: int


class LogSegment:
    """A ``.log`` file and its three indexes. Not thread-safe: PartitionLog serialises access."""

    def __init__(
        self,
        directory: Path,
        base_offset: int,
        config: LogConfig,
        *,
        active: bool,
        now_ms: int | None = None,
        file_suffix: str = "",
    ) -> None:
        self.directory = directory
        self.base_offset = base_offset
        self.config = config
        self.log_path = log_file(directory, base_offset, file_suffix)
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        self.size = os.fstat(self.fd).st_size
        self.offset_index = OffsetIndex(
            index_file(directory, base_offset, file_suffix), base_offset, config.segment_index_bytes, active
        )
        self.time_index = TimeIndex(
            time_index_file(directory, base_offset, file_suffix),
            base_offset,
            config.segment_index_bytes,
            active,
        )
        self.txn_index = TransactionIndex(txn_index_file(directory, base_offset, file_suffix), base_offset)
        self.created_ms = int(time.time() * 1000) if now_ms is None else now_ms
        self.active = active
        self.max_timestamp_so_far, self.offset_of_max_timestamp = self.time_index.last_entry()
        self._first_batch_timestamp: int | None = None
        self.bytes_since_last_index_entry = self.size - (
            self.offset_index.entry(self.offset_index.entries - 1)[1] if self.offset_index.entries else 0
        )
        self.indexes_flushed = False

    # ---- facts ----

    def first_batch_timestamp(self) -> int:
        """maxTimestamp of the first batch (what segment.ms counts from); NO_TIMESTAMP if empty."""
        if self._first_batch_timestamp is None:
            if self.size < HEADER.size:
                return NO_TIMESTAMP
            self._first_batch_timestamp = int(_unpack_ts(os.pread(self.fd, 8, MAX_TIMESTAMP_OFFSET), 0)[0])
        return self._first_batch_timestamp

    def largest_timestamp(self) -> int:
        """Largest batch timestamp, or the file's mtime if none has one (Kafka's rule)."""
        if self.max_timestamp_so_far >= 0:
            return self.max_timestamp_so_far
        return int(os.fstat(self.fd).st_mtime * 1000)

    def read_next_offset(self) -> int:
        """Offset after the last batch, found from the last index entry and a short walk."""
        _, pos = self.offset_index.lookup(1 << 62)
        nxt = self.base_offset
        for _, _, _, last, _ in self.walk(pos):
            nxt = last + 1
        return nxt

    def should_roll(self, append_bytes: int, max_timestamp: int, now_ms: int, batch_count: int = 1) -> bool:
        """Kafka's LogSegment.shouldRoll, without jitter. Index room is checked for every batch of
        the append (each may add an entry), so a multi-batch append cannot overflow an index after
        its bytes are written."""
        if self.size > self.config.segment_bytes - append_bytes:
            return True
        if self.size > 0:
            first = self._first_batch_timestamp
            if first is None:
                first = self.first_batch_timestamp()
            waited = max_timestamp - first if first >= 0 and max_timestamp >= 0 else now_ms - self.created_ms
            if waited > self.config.max_segment_ms:
                return True
        return not (self.offset_index.has_room(batch_count) and self.time_index.has_room(batch_count))

    # ---- append ----

    def append(self, batches: AppendBatches) -> None:
        """Write the batches at the end, then index them. On an OSError, cut the file back."""
        start = self.size
        self._reserve_index_room(len(batches.sizes))
        self._write(batches.chunks, batches.total_bytes, start)
        if start == 0:
            self._first_batch_timestamp = batches.max_timestamps[0]
        positions = batches.positions
        sizes = batches.sizes
        last_offsets = batches.last_offsets
        stamps = batches.max_timestamps
        for i in range(len(positions)):
            self._index_batch(last_offsets[i], start + positions[i], stamps[i], sizes[i])
        self.size = start + batches.total_bytes

    def append_one(self, batch: memoryview, size: int, last_offset: int, max_timestamp: int) -> None:
        """:meth:`append` for a single batch: the same write and the same index rule, fewer steps
        (one produce request usually carries one batch per partition)."""
        start = self.size
        if (
            self.offset_index._entries >= self.offset_index.reserved_entries
            or self.time_index._entries + 1 >= self.time_index.reserved_entries
        ):
            self._reserve_index_room(1)
        self._write([batch], size, start)
        if start == 0:
            self._first_batch_timestamp = max_timestamp
        self._index_batch(last_offset, start, max_timestamp, size)
        self.size = start + size

    def _index_batch(self, last_offset: int, position: int, max_timestamp: int, size: int) -> None:
        """The index rule (module docstring) for one batch just written at ``position``; the
        vectorised rebuild in :meth:`rebuild_indexes` must agree (tests compare the bytes)."""
        if max_timestamp > self.max_timestamp_so_far:
            self.max_timestamp_so_far = max_timestamp
            self.offset_of_max_timestamp = last_offset
        if self.bytes_since_last_index_entry > self.config.index_interval_bytes:
            # A full index (only possible when one append into an empty segment has more batches
            # than the index has slots: rolling cannot help) skips entries; the rebuild does too.
            if not self.offset_index.is_full():
                self.offset_index.append(last_offset, position)
                if not self.time_index.is_full():
                    self.time_index.maybe_append(self.max_timestamp_so_far, self.offset_of_max_timestamp)
            self.bytes_since_last_index_entry = size
        else:
            self.bytes_since_last_index_entry += size

    def _reserve_index_room(self, batches: int) -> None:
        """Disk blocks for the index entries this append may add (each batch may add one to each
        index; +1 time entry for the closing one), before any byte of data is written."""
        try:
            self.offset_index.reserve(batches)
            self.time_index.reserve(batches + 1)
        except OSError as exc:
            raise KafkaStorageError(f"reserving index space for {self.log_path}: {exc}") from exc

    def _write(self, chunks: list[memoryview], total: int, start: int) -> None:
        try:
            if len(chunks) != 1 or os.pwrite(self.fd, chunks[0], start) != total:
                write_fully(self.fd, chunks, start)  # several buffers, or a short write to finish
        except BaseException as exc:  # also KeyboardInterrupt mid-write: never leave a torn batch
            try:
                os.ftruncate(self.fd, start)
            except OSError as exc2:
                raise KafkaStorageError(
                    f"write to {self.log_path} failed ({exc}); truncate failed ({exc2})"
                ) from exc
            if isinstance(exc, OSError):
                raise KafkaStorageError(f"write to {self.log_path} failed: {exc}") from exc
            raise

    # ---- read ----

    def walk(self, position: int, end: int | None = None) -> list[tuple[int, int, int, int, int]]:
        """``(position, size, base_offset, last_offset, max_timestamp)`` of each batch from
        ``position`` to ``end`` (the segment end by default). Reads in 8 KiB chunks."""
        return list(self._walk(position, self.size if end is None else end))

    def _walk(self, position: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
        fd = self.fd
        header = HEADER.size
        while position + header <= end:
            chunk = os.pread(fd, min(_WALK_CHUNK, end - position), position)
            p = 0
            n = len(chunk)
            while p + header <= n:
                base, length = _unpack_walk(chunk, p)
                size = length + LOG_OVERHEAD
                if size < header:
                    raise KafkaStorageError(f"{self.log_path}: bad batch length at {position + p}")
                last = base + _unpack_lod(chunk, p + LAST_OFFSET_DELTA_OFFSET)[0]
                yield position + p, size, base, last, _unpack_ts(chunk, p + MAX_TIMESTAMP_OFFSET)[0]
                p += size
            position += p

    def translate_offset(self, offset: int, start_position: int = 0) -> tuple[int, int, int] | None:
        """``(position, size, last_offset)`` of the first batch whose last offset >= ``offset``."""
        _, pos = self.offset_index.lookup(offset)
        pos = max(pos, start_position)
        end = self.size
        fd = self.fd
        header = HEADER.size
        while pos + header <= end:
            chunk = os.pread(fd, min(_WALK_CHUNK, end - pos), pos)
            p = 0
            n = len(chunk)
            while p + _THROUGH_LAST_OFFSET_DELTA <= n:
                base, length = _unpack_walk(chunk, p)
                last = base + _unpack_lod(chunk, p + LAST_OFFSET_DELTA_OFFSET)[0]
                if last >= offset:
                    return pos + p, length + LOG_OVERHEAD, last
                if length + LOG_OVERHEAD < header:
                    raise KafkaStorageError(f"{self.log_path}: bad batch length at {pos + p}")
                p += length + LOG_OVERHEAD
            pos += p
        return None

    def read(self, offset: int, max_size: int, min_one_message: bool = True) -> tuple[int, int] | None:
        """``(position, length)`` from the batch holding ``offset``; Kafka's LogSegment.read sizing:
        ``min(bytes to segment end, max(max_size, first batch size))``, so the range may end in a
        partial batch (clients drop it) but always holds one whole batch. None if past the end."""
        found = self.translate_offset(offset)
        if found is None:
            return None
        pos, size, _ = found
        limit = max(max_size, size) if min_one_message else max_size
        return pos, min(self.size - pos, limit)

    def find_offset_by_timestamp(self, timestamp: int, start_offset: int) -> tuple[int, int] | None:
        """``(timestamp, offset)`` of the first record at or after ``start_offset`` whose timestamp
        is >= ``timestamp`` (Kafka's LogSegment.findOffsetByTimestamp): the time index narrows the
        start, batch headers (maxTimestamp) pick the batch, and only that batch's records are
        decoded (decompressing if needed). A batch whose records do not decode answers with its
        maxTimestamp and first offset rather than failing the ListOffsets."""
        _, indexed = self.time_index.lookup(timestamp)
        found = self.translate_offset(max(indexed, start_offset))
        if found is None:
            return None
        for pos, size, base, last, max_ts in self._walk(found[0], self.size):
            if max_ts < timestamp or last < start_offset:
                continue
            try:
                for rec in RecordBatch(memoryview(os.pread(self.fd, size, pos))).records():
                    if rec.timestamp >= timestamp and rec.offset >= start_offset:
                        return int(rec.timestamp), int(rec.offset)
            except InvalidRecordBatch:
                return int(max_ts), max(base, start_offset)
        return None

    # ---- recovery ----

    def scan(self) -> ScanResult:
        """Find the valid prefix: whole batches, magic 2, CRC right, offsets increasing and in range.

        Maps the file with MAP_POPULATE (the kernel wires the pages in one call instead of one
        fault per 4 KiB page), lets ``scan_batches`` find the headers and the hardware CRC check
        every batch. Raises nothing for bad data: that is what the result reports."""
        size = self.size
        if size == 0:
            empty = scan_batches(b"")
            return ScanResult(empty, 0, 0, 0)
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(self.fd, size, flags=flags, prot=mmap.PROT_READ)
        try:
            h = scan_batches(mm)
            ok = verify_crcs(mm, h)
        finally:
            with contextlib.suppress(BufferError):  # a view outlived the scan: GC closes it
                mm.close()
        n = len(h)
        valid_end = h.end
        if n:
            ok = np.logical_and.reduce(list(batch_checks(h, ok, self.base_offset).values()))
            bad = np.flatnonzero(~ok)
            if bad.size:
                n = int(bad[0])
                valid_end = int(h.positions[n])
        return ScanResult(h, n, valid_end, size - valid_end)

    def recover(self, closed: bool) -> ScanResult:
        """Scan, cut the file at the end of the valid prefix, rebuild both indexes.

        ``closed``: the segment was rolled or the log closed cleanly, so its time index ends with
        the closing entry (see the module docstring); the rebuild adds it too."""
        result = self.scan()
        if result.truncated_bytes:
            try:
                os.ftruncate(self.fd, result.valid_bytes)
            except OSError as exc:
                raise KafkaStorageError(f"truncating {self.log_path}: {exc}") from exc
            self.size = result.valid_bytes
            self._first_batch_timestamp = None
        self.rebuild_indexes(result.headers, result.valid_batches, closed)
        return result

    def rebuild_indexes(self, h: BatchHeaders, n: int, closed: bool) -> None:
        self.offset_index.make_writable()
        self.time_index.make_writable()
        self.offset_index.reset()
        self.time_index.reset()
        self.txn_index.reset()  # the producer-state replay refills it
        self.max_timestamp_so_far, self.offset_of_max_timestamp = NO_TIMESTAMP, self.base_offset
        if n == 0:
            self.bytes_since_last_index_entry = 0
        else:
            positions = h.positions[:n]
            last = h.last_offsets[:n]
            ts = h.max_timestamps[:n]
            running = np.maximum.accumulate(np.maximum(ts, NO_TIMESTAMP))
            prev = np.concatenate(([NO_TIMESTAMP], running[:-1]))
            where_new = np.where(ts > prev, np.arange(n), -1)
            holder = np.maximum.accumulate(where_new)  # batch that holds the running max (-1: none)
            slots = index_entry_slots(positions, 0, self.config.index_interval_bytes)
            slots = slots[: self.offset_index.max_entries]  # a full index skips entries (_index_batch)
            self.offset_index.append_many(last[slots], positions[slots])
            # Time entries: at the same slots, only where the running max grew (maybe_append's rule),
            # and only into the slots before the one kept for the closing entry.
            ts_at = running[slots]
            grew = ts_at > np.concatenate(([NO_TIMESTAMP], ts_at[:-1]))
            keep = slots[grew & (holder[slots] >= 0)]
            keep = keep[: max(0, self.time_index.max_entries - 1)]
            self.time_index.append_many(running[keep], last[holder[keep]])
            j = int(holder[-1])
            if j >= 0:
                self.max_timestamp_so_far, self.offset_of_max_timestamp = int(running[-1]), int(last[j])
            ends = positions[-1] + h.sizes[n - 1]
            entries = self.offset_index.entries
            last_entry_pos = self.offset_index.entry(entries - 1)[1] if entries else 0
            self.bytes_since_last_index_entry = int(ends) - last_entry_pos
        if closed:
            self.close_time_index()
        if not self.active:
            self.offset_index.trim_to_valid_size()
            self.time_index.trim_to_valid_size()

    def sanity_check(self) -> None:
        """Cheap checks of a trusted segment's indexes (Kafka's sanityCheck plus one read): the
        last offset-index entry must point at a batch whose last offset it names."""
        self.offset_index.sanity_check(self.size)
        self.time_index.sanity_check(self.size)
        self.txn_index.sanity_check()
        if self.offset_index.entries:
            off, pos = self.offset_index.entry(self.offset_index.entries - 1)
            hdr = os.pread(self.fd, _THROUGH_LAST_OFFSET_DELTA, pos)
            if (
                len(hdr) < _THROUGH_LAST_OFFSET_DELTA
                or _unpack_walk(hdr, 0)[0] + _unpack_lod(hdr, LAST_OFFSET_DELTA_OFFSET)[0] != off
            ):
                raise CorruptIndexError(f"{self.offset_index.path}: last entry disagrees with the log")

    # ---- lifecycle ----

    def close_time_index(self) -> None:
        """The closing time-index entry: the segment's largest timestamp (Kafka does it on roll
        and on close)."""
        if self.max_timestamp_so_far >= 0:
            self.time_index.maybe_append(self.max_timestamp_so_far, self.offset_of_max_timestamp, True)

    def on_become_inactive(self) -> None:
        self.close_time_index()
        self.offset_index.trim_to_valid_size()
        self.time_index.trim_to_valid_size()
        self.active = False

    def make_active(self) -> None:
        self.offset_index.make_writable()
        self.time_index.make_writable()
        self.active = True

    def flush(self) -> None:
        """fdatasync the log; the indexes too once the segment is inactive (they are then trusted
        on restart; the active segment's are always rebuilt by recovery)."""
        os.fdatasync(self.fd)
        self.txn_index.flush()  # written when a marker lands: durable with the marker, like the log
        if not self.active and not self.indexes_flushed:
            self.offset_index.flush()
            self.time_index.flush()
            self.indexes_flushed = True

    def truncate_to(self, offset: int) -> int:
        """Drop batches from the one holding ``offset`` on; returns bytes removed."""
        found = self.translate_offset(offset)
        if found is None:
            return 0
        pos = found[0]
        removed = self.size - pos
        os.ftruncate(self.fd, pos)
        self.size = pos
        self.offset_index.truncate_to(offset)
        self.time_index.truncate_to(offset)
        self.txn_index.truncate_to(offset)
        self._first_batch_timestamp = None
        return removed

    def close(self) -> None:
        self.offset_index.close()
        self.time_index.close()
        self.txn_index.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def rename_to_deleted(self) -> None:
        """Step one of deletion: files renamed ``*.deleted``; fds stay open for readers."""
        for path in (self.log_path,):
            os.rename(path, Path(str(path) + DELETED_SUFFIX))
        self.log_path = Path(str(self.log_path) + DELETED_SUFFIX)
        for idx in (self.offset_index, self.time_index, self.txn_index):
            idx.rename_to(Path(str(idx.path) + DELETED_SUFFIX))

    def change_file_suffix(self, suffix: str) -> None:
        """Rename every file to ``<base><kind><suffix>`` ("" for the final names; Kafka's
        changeFileSuffixes), the indexes first and the log last: a log file with the new suffix
        means its indexes were renamed before it (what recovery of a swap relies on). The fds
        stay open."""
        for idx in (self.offset_index, self.time_index, self.txn_index):
            idx.rename_to(with_suffix(idx.path, suffix))
        new = with_suffix(self.log_path, suffix)
        os.rename(self.log_path, new)
        self.log_path = new

    def delete_files(self) -> None:
        """Step two: close and unlink."""
        self.close()
        for path in (self.log_path, self.offset_index.path, self.time_index.path, self.txn_index.path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def __repr__(self) -> str:
        return f"LogSegment(base_offset={self.base_offset}, size={self.size}, active={self.active})"
