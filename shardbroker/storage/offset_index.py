"""Sparse offset -> file position index of one segment (opens and maps ``NNN.index``).

Byte layout (Kafka's OffsetIndex), 8-byte entries, big-endian, sorted by both fields::

    0 relativeOffset int32   (offset - segment base offset)
    4 position       int32   (byte position of a batch in the segment's .log)

An entry ``(o, p)`` says: the batch starting at ``p`` has last offset ``base + o`` (Kafka >= 3.7
indexes each batch by its last offset). Entries are added by LogSegment exactly when the bytes
since the previous entry exceed ``index.interval.bytes`` (default 4096), on append and recovery
alike, so the first batch of a segment never has one and no entry has position 0. Lookups
return the last entry at or below a target offset; the reader scans batch headers from there.
"""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from shardbroker.storage.abstract_index import AbstractIndex, CorruptIndexError

__all__ = ["OffsetIndex"]

_ENTRY_DTYPE = np.dtype([("relative_offset", ">i4"), ("position", ">i4")])


class OffsetIndex(AbstractIndex):
    entry_size: ClassVar[int] = 8
    _entry: ClassVar[struct.Struct] = struct.Struct(">ii")

    @staticmethod
    def _decode(raw: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        e = raw.view(_ENTRY_DTYPE)
        return e["relative_offset"].astype(np.int64), e["position"].astype(np.int64)

    @staticmethod
    def _valid_prefix(cols: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> int:
        zero = np.flatnonzero(cols[1] == 0)  # no real entry has position 0
        return int(zero[0]) if zero.size else int(cols[1].shape[0])

    def _entries_changed(self) -> None:
        self._last_rel = int(self._keys[self._entries - 1]) if self._entries else -1

    def append(self, offset: int, position: int) -> None:
        rel = offset - self.base_offset
        if rel <= self._last_rel:
            raise ValueError(f"offset {offset} not above last indexed offset in {self.path}")
        if rel > 0x7FFFFFFF:
            raise ValueError(f"offset {offset} out of range of segment {self.base_offset}")
        self._write_entry(rel, position, rel)
        self._last_rel = rel

    def append_many(self, offsets: npt.NDArray[np.int64], positions: npt.NDArray[np.int64]) -> None:
        """Append entries in bulk (recovery); same checks as :meth:`append`."""
        if offsets.shape[0] == 0:
            return
        rel = offsets - self.base_offset
        if int(rel[0]) <= self._last_rel or (rel.shape[0] > 1 and bool(np.any(np.diff(rel) <= 0))):
            raise ValueError(f"offsets not increasing in {self.path}")
        if int(rel[-1]) > 0x7FFFFFFF:
            raise ValueError(f"offset out of range of segment {self.base_offset}")
        entries = np.empty(rel.shape[0], dtype=_ENTRY_DTYPE)
        entries["relative_offset"] = rel
        entries["position"] = positions
        self._write_entries(entries.tobytes(), rel)

    @property
    def last_offset(self) -> int:
        """Last indexed offset (the base offset when empty)."""
        return self.base_offset + (int(self._keys[self._entries - 1]) if self._entries else 0)

    def entry(self, i: int) -> tuple[int, int]:
        rel, pos = self._entry_at(i)
        return self.base_offset + rel, pos

    def lookup(self, offset: int) -> tuple[int, int]:
        """``(offset, position)`` of the last entry with offset <= ``offset``; ``(base, 0)`` if none."""
        slot = self._floor_slot(offset - self.base_offset)
        if slot < 0:
            return self.base_offset, 0
        return self.entry(slot)

    def fetch_upper_bound_offset(self, position: int) -> int | None:
        """Kafka's fetchUpperBoundOffset: the offset of the first entry at or after ``position``
        (None if none). Its batch starts at or after ``position``, so every offset of a fetch
        ending there is below it: the upper bound for the fetch's aborted transactions."""
        lo, hi = 0, self._entries
        while lo < hi:  # positions increase with offsets: a binary search on the value
            mid = (lo + hi) // 2
            if self._entry_at(mid)[1] < position:
                lo = mid + 1
            else:
                hi = mid
        return None if lo == self._entries else self.entry(lo)[0]

    def truncate_to(self, offset: int) -> None:
        """Remove entries with offset >= ``offset`` (Kafka's truncateTo)."""
        n = int(
            np.searchsorted(self._keys[: self._entries], np.int64(offset - self.base_offset), side="left")
        )
        self._truncate_entries(n)

    def sanity_check(self, log_size: int) -> None:
        if self.short:
            raise CorruptIndexError(f"{self.path}: length is not a whole number of entries")
        if self._entries == 0:
            return
        rel, pos = self._entry_at(self._entries - 1)
        keys = self._keys[: self._entries]
        if (
            rel <= 0
            or pos <= 0
            or pos >= log_size
            or (self._entries > 1 and bool(np.any(np.diff(keys) <= 0)))
        ):
            raise CorruptIndexError(
                f"{self.path}: entries out of order or past the log end ({log_size} bytes)"
            )
