"""What the offset and time indexes share: a preallocated, memory-mapped file of fixed-size
big-endian entries, sorted by a key, binary-searched with numpy (opens and maps files).

Byte layout: ``entries * entry_size`` bytes of entries from byte 0 (see offset_index.py and
time_index.py), then, while the segment is active, zeros up to ``segment.index.bytes`` rounded
down to a whole entry (Kafka preallocates so appends never extend the file; the file is trimmed
to its entries when the segment rolls or the log closes). No header, no checksum: an index that
looks wrong is rebuilt from the log.

Why a native-endian copy of the key column: ``np.searchsorted`` over the big-endian mmap view
byte-swaps the whole column first; measured here (262,144 entries, numpy 2.4) 62 us per lookup
on the ``>i4`` strided view vs 2.0 us on a contiguous native ``int64`` array (a bisect in Python
over ``struct.unpack_from`` was 3.4 us). So each index keeps its keys in a growable native array
(8 bytes per entry: 2 MiB for a full 1 GiB segment at the default interval), filled from the mmap
once on open and appended to with each entry; the mmap stays the durable copy.

Why a writable index's map is advised ``MADV_RANDOM``: the preallocated file is sparse, and the
first store into it faults with the kernel's default readahead, which zero-fills a large folio of
holes around the page (``filemap_fault`` -> ``page_cache_ra_order`` -> ``zero_user_segments``).
Measured here: 1.8-3.2 ms for the first 8-byte entry of a fresh 10 MiB index (0.01 ms advised
random), and under a broker at 1,000 one-record Produce requests/s with fresh partitions, 25 % of
a worker's samples were that memset (a 10-20 ms stall per new segment). Entries are appended
sequentially, so reading ahead through the map buys nothing; the keys are loaded with one
``pread`` (the file's own readahead), not through the map.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from shardbroker.storage.file_modes import FILE_MODE

__all__ = ["AbstractIndex", "CorruptIndexError", "IndexEntries"]


_RESERVE_STEP = 64 * 1024


class CorruptIndexError(Exception):
    """An index that fails its sanity check: the log rebuilds it from the segment."""


class IndexEntries(NamedTuple):
    """An index file's entries as columns (see :meth:`AbstractIndex.read_entries`)."""

    #: The sort key of each whole entry: relative offset (offset index) or timestamp (time index).
    keys: npt.NDArray[np.int64]
    #: The other field: position (offset index) or relative offset (time index).
    values: npt.NDArray[np.int64]
    #: Entries before the zero-filled preallocated tail (what the broker loads).
    valid: int
    #: The file's length in bytes (not a whole number of entries: a torn index).
    file_bytes: int


class AbstractIndex:
    entry_size: ClassVar[int]
    _entry: ClassVar[struct.Struct]

    def __init__(self, path: Path, base_offset: int, max_index_size: int, writable: bool) -> None:
        self.path = path
        self.base_offset = base_offset
        self._max_size = max(self.entry_size, max_index_size - max_index_size % self.entry_size)
        self._max_entries = self._max_size // self.entry_size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        self._mmap: mmap.mmap | None = None
        self._writable = writable
        self._length = 0
        length = os.fstat(self._fd).st_size
        #: A length that is not a whole number of entries: a torn index, rebuilt by the log.
        self.short = length % self.entry_size != 0
        self._entries = length // self.entry_size
        if writable:
            self._resize_file(self._max_size)
        else:
            self._resize_file(self._entries * self.entry_size)
        self._keys = np.zeros(0, dtype=np.int64)
        self._load_keys()
        self._entries_changed()
        #: Entries whose bytes have disk blocks behind them (written, or fallocate'd by reserve()).
        self.reserved_entries = self._entries

    # ---- file and map ----

    def _resize_file(self, size: int) -> None:
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if os.fstat(self._fd).st_size != size:
            os.ftruncate(self._fd, size)
        self._length = size
        self._capacity = size // self.entry_size
        if size > 0:
            self._mmap = mmap.mmap(self._fd, size)
            if self._writable:
                self._mmap.madvise(mmap.MADV_RANDOM)

    def _load_keys(self) -> None:
        """Fill the native key column from the mapped entries; drop a zero-filled tail."""
        n = self._entries
        keys = np.zeros(max(16, n), dtype=np.int64)
        if n:
            raw = np.frombuffer(os.pread(self._fd, n * self.entry_size, 0), dtype=np.uint8)
            cols = self._decode(raw)
            n = self._valid_prefix(cols)
            keys[:n] = cols[0][:n]
        self._entries = n
        self._keys = keys

    @staticmethod
    def _decode(raw: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(key column, value column) of the raw entries, native int64."""
        raise NotImplementedError

    @staticmethod
    def _valid_prefix(cols: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> int:
        """Entries before a zero-filled preallocated tail (a crash before trimming)."""
        raise NotImplementedError

    @classmethod
    def read_entries(cls, path: Path) -> IndexEntries:
        """The entries of an index file, read without opening it for writing, mapping it or
        changing its size (an instance preallocates or trims the file): what dump-log and check
        use, also on the files of a running broker. Same decoding and zero-tail rule as the
        broker's own open.

        Reads up to the file's first hole only: an open segment's index is preallocated sparse
        (10 MiB by default), its entries are written from the start, and a hole reads as zeros,
        where the zero-tail rule ends the entries anyway. Reading whole preallocated files made
        ``check`` of a live broker's data dir with 53 empty partitions take 2.8 s instead of 0.1 s.
        """
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            try:
                data_end = os.lseek(f.fileno(), 0, os.SEEK_HOLE)
            except OSError:  # no SEEK_HOLE here: read it all
                data_end = size
            f.seek(0)
            data = f.read(-(-data_end // cls.entry_size) * cls.entry_size)
        whole = len(data) - len(data) % cls.entry_size
        keys, values = cls._decode(np.frombuffer(data, dtype=np.uint8, count=whole))
        return IndexEntries(keys, values, cls._valid_prefix((keys, values)), size)

    @property
    def entries(self) -> int:
        return self._entries

    @property
    def max_entries(self) -> int:
        return self._max_entries

    def reserve(self, count: int) -> None:
        """Give disk blocks to the next ``count`` entries before they are stored through the map.

        The preallocated file is sparse (as Kafka's), and a store into a sparse page of a shared
        mapping on a full disk is a SIGBUS that kills the process; ``posix_fallocate`` turns it
        into an OSError (ENOSPC) raised here, before the segment writes anything. Reserves 64 KiB
        at a time (one call per 8,192 offset entries; 8-33 us each, measured here on ext4)."""
        need = self._entries + count
        if need <= self.reserved_entries:
            return
        start = self.reserved_entries * self.entry_size
        end = min(max(need * self.entry_size, start + _RESERVE_STEP), self._max_size)
        if end <= start:
            return  # full: the store itself will refuse
        if end > self._length:
            self._resize_file(self._max_size)
        os.posix_fallocate(self._fd, start, end - start)
        self.reserved_entries = end // self.entry_size

    def has_room(self, count: int) -> bool:
        return self._entries + count <= self._max_entries

    def is_full(self) -> bool:
        return self._entries >= self._max_entries

    @property
    def size_in_bytes(self) -> int:
        return self._entries * self.entry_size

    def _entries_changed(self) -> None:
        """Entries were loaded or truncated: subclasses refresh what they cache about the last one."""

    def _write_entry(self, a: int, b: int, key: int) -> None:
        if self._entries >= self.reserved_entries:
            self.reserve(1)  # LogSegment reserves before writing data; this is the safety net
        if self._entries >= self._capacity:
            if self._entries >= self.max_entries:
                raise OverflowError(f"index {self.path} is full ({self._entries} entries)")
            self._resize_file(self._max_size)
        assert self._mmap is not None
        self._entry.pack_into(self._mmap, self._entries * self.entry_size, a, b)
        if self._entries >= self._keys.shape[0]:
            grown = np.zeros(self._keys.shape[0] * 2, dtype=np.int64)
            grown[: self._entries] = self._keys[: self._entries]
            self._keys = grown
        self._keys[self._entries] = key
        self._entries += 1

    def _write_entries(self, raw: bytes, keys: npt.NDArray[np.int64]) -> None:
        """Append many encoded entries at once (index rebuilds): one copy into the map."""
        count = keys.shape[0]
        if count == 0:
            return
        self.reserve(count)
        if self._entries + count > self._capacity:
            if self._entries + count > self._max_entries:
                raise OverflowError(f"index {self.path} cannot hold {self._entries + count} entries")
            self._resize_file(self._max_size)
        assert self._mmap is not None
        start = self._entries * self.entry_size
        self._mmap[start : start + len(raw)] = raw
        need = self._entries + count
        if need > self._keys.shape[0]:
            grown = np.zeros(max(need, self._keys.shape[0] * 2), dtype=np.int64)
            grown[: self._entries] = self._keys[: self._entries]
            self._keys = grown
        self._keys[self._entries : need] = keys
        self._entries = need
        self._entries_changed()

    def _entry_at(self, i: int) -> tuple[int, int]:
        assert self._mmap is not None
        a, b = self._entry.unpack_from(self._mmap, i * self.entry_size)
        return int(a), int(b)

    def _floor_slot(self, key: int) -> int:
        """Index of the last entry whose key <= ``key`` (-1 if none)."""
        return int(np.searchsorted(self._keys[: self._entries], np.int64(key), side="right")) - 1

    def _truncate_entries(self, n: int) -> None:
        n = max(0, min(n, self._entries))
        if n < self._entries and self._mmap is not None:
            start = n * self.entry_size
            end = self._entries * self.entry_size
            self._mmap[start:end] = bytes(end - start)
        self._entries = n
        self._entries_changed()

    def reset(self) -> None:
        """Drop every entry (before a rebuild)."""
        self._truncate_entries(0)

    def trim_to_valid_size(self) -> None:
        """Shrink the file to its entries (Kafka does this on roll and close)."""
        self._resize_file(self._entries * self.entry_size)
        self.reserved_entries = self._entries

    def make_writable(self) -> None:
        """Re-extend to ``segment.index.bytes`` (the segment became the active one again)."""
        self._resize_file(self._max_size)

    def flush(self) -> None:
        if self._mmap is not None:
            self._mmap.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def rename_to(self, path: Path) -> None:
        os.rename(self.path, path)
        self.path = path

    def contents(self) -> bytes:
        """The entries as stored (tests compare rebuilt indexes byte for byte)."""
        if self._mmap is None:
            return b""
        return bytes(self._mmap[: self._entries * self.entry_size])
