"""Sparse timestamp -> offset index of one segment (opens and maps ``NNN.timeindex``).

Byte layout (Kafka's TimeIndex), 12-byte entries, big-endian, both fields non-decreasing::

    0 timestamp      int64   (largest batch maxTimestamp seen so far in the segment)
    8 relativeOffset int32   (last offset of the batch that carried that timestamp - base offset)

An entry is added alongside each offset-index entry, but only if its timestamp is larger than
the last entry's (Kafka's maybeAppend), and once more when the segment becomes inactive (roll),
so the last entry of an inactive segment holds the segment's largest timestamp (retention.ms
reads it). Lookup by timestamp gives the last entry at or below the target; ListOffsets then
scans batch headers from that offset for the first batch whose maxTimestamp >= target.
"""

from __future__ import annotations

import struct
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from shardbroker.protocol.record_batch_header import NO_TIMESTAMP
from shardbroker.storage.abstract_index import AbstractIndex, CorruptIndexError

__all__ = ["TimeIndex"]

_ENTRY_DTYPE = np.dtype([("timestamp", ">i8"), ("relative_offset", ">i4")])


class TimeIndex(AbstractIndex):
    entry_size: ClassVar[int] = 12
    _entry: ClassVar[struct.Struct] = struct.Struct(">qi")

    @staticmethod
    def _decode(raw: npt.NDArray[np.uint8]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        e = raw.view(_ENTRY_DTYPE)
        return e["timestamp"].astype(np.int64), e["relative_offset"].astype(np.int64)

    @staticmethod
    def _valid_prefix(cols: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]) -> int:
        zero = np.flatnonzero((cols[0] == 0) & (cols[1] == 0))
        return int(zero[0]) if zero.size else int(cols[0].shape[0])

    def has_room(self, count: int) -> bool:
        """Kafka's TimeIndex keeps the last slot for the entry written when the segment rolls."""
        return self._entries + count <= self._max_entries - 1

    def is_full(self) -> bool:
        return self._entries >= self._max_entries - 1

    def _entries_changed(self) -> None:
        if self._entries:
            ts, rel = self._entry_at(self._entries - 1)
            self._last = (ts, self.base_offset + rel)
        else:
            self._last = (NO_TIMESTAMP, self.base_offset)

    def last_entry(self) -> tuple[int, int]:
        """``(timestamp, offset)`` of the last entry; ``(NO_TIMESTAMP, base)`` when empty."""
        return self._last

    def maybe_append(self, timestamp: int, offset: int, skip_full_check: bool = False) -> None:
        if not skip_full_check and self._entries >= self._max_entries - 1:
            raise OverflowError(f"time index {self.path} is full")
        last_ts, last_off = self._last
        if self._entries and offset < last_off:
            raise ValueError(f"offset {offset} below last time-indexed offset {last_off} in {self.path}")
        if timestamp > last_ts:
            self._write_entry(timestamp, offset - self.base_offset, timestamp)
            self._last = (timestamp, offset)

    def append_many(self, timestamps: npt.NDArray[np.int64], offsets: npt.NDArray[np.int64]) -> None:
        """Append entries in bulk (recovery). The caller passes only entries ``maybe_append``
        would have kept: timestamps strictly increasing and above the last entry's."""
        if timestamps.shape[0] == 0:
            return
        if int(timestamps[0]) <= self._last[0] or (
            timestamps.shape[0] > 1 and bool(np.any(np.diff(timestamps) <= 0))
        ):
            raise ValueError(f"timestamps not increasing in {self.path}")
        entries = np.empty(timestamps.shape[0], dtype=_ENTRY_DTYPE)
        entries["timestamp"] = timestamps
        entries["relative_offset"] = offsets - self.base_offset
        self._write_entries(entries.tobytes(), timestamps)

    def entry(self, i: int) -> tuple[int, int]:
        ts, rel = self._entry_at(i)
        return ts, self.base_offset + rel

    def lookup(self, timestamp: int) -> tuple[int, int]:
        """``(timestamp, offset)`` of the last entry with timestamp <= target; ``(NO_TIMESTAMP, base)``."""
        slot = self._floor_slot(timestamp)
        if slot < 0:
            return NO_TIMESTAMP, self.base_offset
        return self.entry(slot)

    def truncate_to(self, offset: int) -> None:
        """Remove entries with offset >= ``offset``."""
        keep = 0
        for i in range(self._entries - 1, -1, -1):
            if self.entry(i)[1] < offset:
                keep = i + 1
                break
        self._truncate_entries(keep)

    def sanity_check(self, log_size: int) -> None:
        if self.short:
            raise CorruptIndexError(f"{self.path}: length is not a whole number of entries")
        if self._entries == 0:
            return
        keys = self._keys[: self._entries]
        if self._entries > 1 and bool(np.any(np.diff(keys) <= 0)):
            raise CorruptIndexError(f"{self.path}: timestamps not increasing")
        offsets = [self.entry(i)[1] for i in (0, self._entries - 1)]
        if offsets[0] < self.base_offset or offsets[1] < offsets[0]:
            raise CorruptIndexError(f"{self.path}: offsets out of order")
