"""The aborted-transaction index of one segment (Kafka's TransactionIndex and AbortedTxn).

Byte layout of ``NNNNNNNNNNNNNNNNNNNN.txnindex`` (Kafka's, so Kafka's tools read it): entries of
34 bytes back to back, big-endian, no header::

    0 version int16 (0) | 2 producerId int64 | 10 firstOffset int64 | 18 lastOffset int64
    26 lastStableOffset int64

One entry per aborted transaction whose ABORT marker lies in this segment: ``firstOffset`` the
transaction's first offset (possibly in an earlier segment), ``lastOffset`` the marker's offset,
``lastStableOffset`` the LSO right after the abort (ProducerStateManager.last_stable_offset_after).
Entries are in marker order, so ``lastOffset`` strictly increases. The file is created with its
first entry (most segments have none) and written with ``pwrite`` at its end; like the other
indexes it carries no checksum: recovery rebuilds it (from the producer-state replay) for every
segment it scans, and a torn or out-of-range file fails :meth:`sanity_check` so it is rebuilt.

Why read from the file on every query instead of caching: a read_committed fetch asks for the
entries of one or two segments; a ``pread`` of a few entries plus one numpy decode costs a few
microseconds, while caching every segment's entries in memory would cost ~100 B per abort forever.
"""

from __future__ import annotations

import contextlib
import os
import struct
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

from shardbroker.storage.abstract_index import CorruptIndexError
from shardbroker.storage.file_modes import FILE_MODE

__all__ = [
    "ABORTED_TXN_DTYPE",
    "ENTRY_SIZE",
    "AbortedTxn",
    "TransactionIndex",
    "collect_aborted",
    "decode_entries",
]

#: Kafka's AbortedTxn.CURRENT_VERSION.
CURRENT_VERSION: Final = 0
ENTRY_SIZE: Final = 34
_ENTRY: Final = struct.Struct(">hqqqq")
ABORTED_TXN_DTYPE: Final = np.dtype(
    [
        ("version", ">i2"),
        ("producer_id", ">i8"),
        ("first_offset", ">i8"),
        ("last_offset", ">i8"),
        ("last_stable_offset", ">i8"),
    ]
)
assert ABORTED_TXN_DTYPE.itemsize == ENTRY_SIZE == _ENTRY.size


class AbortedTxn(NamedTuple):
    """One entry (Kafka's AbortedTxn)."""

    producer_id: int
    first_offset: int
    last_offset: int
    last_stable_offset: int
    version: int = CURRENT_VERSION

    def encode(self) -> bytes:
        return _ENTRY.pack(
            self.version, self.producer_id, self.first_offset, self.last_offset, self.last_stable_offset
        )


def decode_entries(data: bytes) -> npt.NDArray[np.void]:
    """The whole entries of ``data`` as a structured array (a torn tail is left out)."""
    whole = len(data) - len(data) % ENTRY_SIZE
    return np.frombuffer(data, dtype=ABORTED_TXN_DTYPE, count=whole // ENTRY_SIZE)


def collect_aborted(
    entries: npt.NDArray[np.void], fetch_offset: int, upper_bound_offset: int
) -> tuple[npt.NDArray[np.void], bool]:
    """:meth:`TransactionIndex.collect_aborted_txns` over decoded ``entries`` (also the
    LocalConsumer's, which reads the files itself): the overlapping entries, and whether the
    search is complete."""
    if entries.shape[0] == 0:
        return entries, False
    done = np.flatnonzero(entries["last_stable_offset"] >= upper_bound_offset)
    head = entries[: int(done[0]) + 1] if done.size else entries
    hits = head[(head["last_offset"] >= fetch_offset) & (head["first_offset"] < upper_bound_offset)]
    return hits, bool(done.size)


def _txn(row: np.void) -> AbortedTxn:
    return AbortedTxn(
        int(row["producer_id"]),
        int(row["first_offset"]),
        int(row["last_offset"]),
        int(row["last_stable_offset"]),
        int(row["version"]),
    )


class TransactionIndex:
    """The ``.txnindex`` of the segment based at ``base_offset``. Not thread-safe: PartitionLog
    serialises access. The file is opened lazily: ``fd`` is -1 until it exists."""

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.fd = -1
        self.size = 0
        self._last_offset = -1
        self.flushed = True
        with contextlib.suppress(FileNotFoundError):
            self.fd = os.open(path, os.O_RDWR)
            self.size = os.fstat(self.fd).st_size
            if self.size >= ENTRY_SIZE:
                last = self.size - self.size % ENTRY_SIZE - ENTRY_SIZE
                self._last_offset = _ENTRY.unpack(os.pread(self.fd, ENTRY_SIZE, last))[3]

    def append(self, txn: AbortedTxn) -> None:
        """Add an entry at the end; its ``last_offset`` must be above every earlier one."""
        if txn.last_offset <= self._last_offset:
            raise ValueError(
                f"{self.path}: aborted transaction ending at {txn.last_offset} is not after "
                f"{self._last_offset}"
            )
        if self.fd < 0:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        data = txn.encode()
        if os.pwrite(self.fd, data, self.size) != len(data):
            os.ftruncate(self.fd, self.size)
            raise OSError(f"short write to {self.path}")
        self.size += ENTRY_SIZE
        self._last_offset = txn.last_offset
        self.flushed = False

    def _entries(self) -> npt.NDArray[np.void]:
        if self.fd < 0 or self.size < ENTRY_SIZE:
            return decode_entries(b"")
        return decode_entries(os.pread(self.fd, self.size, 0))

    def all_aborted_txns(self) -> list[AbortedTxn]:
        return [_txn(row) for row in self._entries()]

    def collect_aborted_txns(
        self, fetch_offset: int, upper_bound_offset: int
    ) -> tuple[list[AbortedTxn], bool]:
        """Kafka's collectAbortedTxns: the entries overlapping ``[fetch_offset,
        upper_bound_offset)`` (``last_offset >= fetch_offset`` and ``first_offset <
        upper_bound_offset``), and whether the search is complete: an entry whose LSO reached
        the upper bound proves that no later segment holds an abort of an earlier transaction."""
        if self.size < ENTRY_SIZE:  # most segments: no file, no numpy (1.5 us a read_committed Fetch)
            return [], False
        hits, done = collect_aborted(self._entries(), fetch_offset, upper_bound_offset)
        return [_txn(row) for row in hits], done

    def truncate_to(self, offset: int) -> None:
        """Drop the entries whose marker is at or after ``offset`` (Kafka's truncateTo)."""
        e = self._entries()
        keep = int(np.searchsorted(e["last_offset"].astype(np.int64), offset, side="left"))
        if keep == e.shape[0] and self.size == keep * ENTRY_SIZE:
            return
        os.ftruncate(self.fd, keep * ENTRY_SIZE)
        self.size = keep * ENTRY_SIZE
        self._last_offset = int(e["last_offset"][keep - 1]) if keep else -1
        self.flushed = False

    def reset(self) -> None:
        """Remove every entry (recovery rebuilds them)."""
        if self.fd >= 0 and self.size:
            os.ftruncate(self.fd, 0)
            self.flushed = False
        self.size = 0
        self._last_offset = -1

    def sanity_check(self) -> None:
        """Kafka's sanityCheck (every entry ends at or after the segment's base offset) plus what
        its iterator refuses: a torn entry, an unknown version, markers not increasing."""
        if self.size % ENTRY_SIZE:
            raise CorruptIndexError(f"{self.path}: {self.size} bytes is not whole {ENTRY_SIZE}-byte entries")
        e = self._entries()
        last = e["last_offset"].astype(np.int64)
        if e.shape[0] and (
            int(last[0]) < self.base_offset
            or bool((e["version"] > CURRENT_VERSION).any())
            or bool((np.diff(last) <= 0).any())
        ):
            raise CorruptIndexError(f"{self.path}: entries out of order or before the segment")

    def flush(self) -> None:
        if self.fd >= 0 and not self.flushed:
            os.fdatasync(self.fd)
        self.flushed = True

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def rename_to(self, path: Path) -> None:
        if self.fd >= 0:
            os.rename(self.path, path)
        self.path = path

    def delete(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
