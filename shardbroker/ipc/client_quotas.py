"""Client quota usage shared by the workers, in POSIX shared memory (broker/client_quota_manager.py).

Opens and unlinks one segment (ipc/shm.py's ``SharedSegment``, object name ``clientquotas``),
created by the supervisor before the first fork. A quota is per host, and a client's traffic may
land on any worker: each worker writes the usage of its sensors into its own column, and reads
the other columns (numpy) to know what the whole host used.

Layout (native byte order; every section on a 64-byte boundary)::

    [0, 32)      ipc/shm.py preamble: kind b"CQUO", version 1, owner pid and start time
    [32, 96)     header, 8 x int64: workers, SLOTS, slices per cell
    per worker w, one column:
      keys       int64[SLOTS]             the budget a cell holds (``budget_key``), 0: free
      current    int64[SLOTS]             the cell's newest slice (absolute index: monotonic
                                          seconds x slices per second, the same on every worker)
      values     float64[SLOTS, slices]   usage per slice, a ring indexed by absolute slice % slices

Invariants: one writer per cell, the worker of the column: no lock. A budget's cells are found by
probing ``PROBES`` slots from its key's hash; each worker takes the first free one of its own
column, so the workers of one budget may sit in different slots of the probe run, and a reader
sums every column's cells of that key among the probes. A slot's values are meaningful only
where the ring position's slice is within the reader's horizon (``others`` masks the rest), so a
reader never needs a writer to have cleared an idle cell. A worker zeroes its keys when it starts
(a restarted worker forgets its predecessor's usage: at most one horizon of one worker's share).
Aligned 8-byte stores are atomic; a reader may see a slice a few stores old, never a torn one.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shardbroker.ipc.shm import SharedSegment
from shardbroker.ipc.table import aligned, attach_segment, close_table, create_segment, read_header

__all__ = ["PROBES", "SLOTS", "ClientQuotaTable", "UsageCell", "WorkerQuotaUsage", "budget_key"]

KIND: Final = int.from_bytes(b"CQUO", "little")
VERSION: Final = 1
OBJECT_NAME: Final = "clientquotas"
#: Cells per worker column: budgets (quota type x matched entity) sharing usage at once; a
#: budget that finds no free cell among its probes is enforced per worker (the caller divides).
SLOTS: Final = 4096
#: Slots a budget may sit in (linear probing from its hash).
PROBES: Final = 8
_COLUMNS_AT: Final = aligned(96)


def budget_key(*parts: str) -> int:
    """A budget's 63-bit key, the same in every process (Python's ``hash`` is salted), never 0."""
    digest = hashlib.blake2b("\0".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1 or 1


def _column_bytes(slices: int) -> int:
    return aligned(8 * SLOTS) * 2 + aligned(8 * SLOTS * slices)


class ClientQuotaTable:
    """The mapped segment: the supervisor `create`\\ s it before forking; each worker writes
    through `worker`."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        workers, slots, slices = read_header(segment)[:3]
        if slots != SLOTS or workers < 1 or slices < 1:
            raise ValueError(f"{segment.name}: client quota layout does not match this build")
        self.workers = workers
        self.slices = slices

    @classmethod
    def create(cls, instance: str, workers: int, slices: int) -> ClientQuotaTable:
        if workers < 1 or slices < 1:
            raise ValueError(f"need workers >= 1 and slices >= 1, got {workers}, {slices}")
        size = _COLUMNS_AT + workers * _column_bytes(slices)
        return cls(create_segment(instance, OBJECT_NAME, size, KIND, VERSION, [workers, SLOTS, slices]))

    @classmethod
    def attach(cls, instance: str) -> ClientQuotaTable:
        return cls(attach_segment(instance, OBJECT_NAME, KIND, VERSION))

    def worker(self, slot: int) -> WorkerQuotaUsage:
        """The writer of worker ``slot`` (in that worker, after the fork): zeroes its keys."""
        if not 0 <= slot < self.workers:
            raise IndexError(f"worker {slot} out of range 0..{self.workers - 1}")
        return WorkerQuotaUsage(self.segment.mmap, self.workers, self.slices, slot)

    def close(self) -> None:
        """Unmap (and unlink, in the creating process)."""
        close_table(self, ())


class WorkerQuotaUsage:
    """One worker's side: claims cells of its column (`claim`), whose `UsageCell` its sensors
    write and read through. ``WorkerQuotaUsage.private(workers, slices)`` gives every worker's
    side of one table in private memory (tests, benchmarks): the same code path."""

    def __init__(self, buf: Any, workers: int, slices: int, slot: int) -> None:
        self.slot = slot
        self.slices = slices
        column = _column_bytes(slices)
        self._keys: npt.NDArray[np.int64] = np.ndarray(
            (workers, SLOTS), np.int64, buffer=buf, offset=_COLUMNS_AT, strides=(column, 8)
        )
        self._current: npt.NDArray[np.int64] = np.ndarray(
            (workers, SLOTS),
            np.int64,
            buffer=buf,
            offset=_COLUMNS_AT + aligned(8 * SLOTS),
            strides=(column, 8),
        )
        self._values: npt.NDArray[np.float64] = np.ndarray(
            (workers, SLOTS, slices),
            np.float64,
            buffer=buf,
            offset=_COLUMNS_AT + 2 * aligned(8 * SLOTS),
            strides=(column, 8 * slices, 8),
        )
        self._keys[slot] = 0
        self._mine = memoryview(buf)[_COLUMNS_AT + slot * column : _COLUMNS_AT + (slot + 1) * column]
        self._ring = np.arange(slices, dtype=np.int64)

    @classmethod
    def private(cls, workers: int, slices: int) -> list[WorkerQuotaUsage]:
        buf = bytearray(_COLUMNS_AT + workers * _column_bytes(slices))
        return [cls(buf, workers, slices, slot) for slot in range(workers)]

    def probes(self, key: int) -> npt.NDArray[np.int64]:
        return (key + np.arange(PROBES, dtype=np.int64)) % SLOTS

    def claim(self, key: int, now_slice: int, idle: bool = False) -> UsageCell | None:
        """A free cell of this worker's column for ``key``, zeroed, its newest slice
        ``now_slice``; None when every probe is taken (with ``idle``: also cells whose usage has
        all left the horizon, which the caller must have taken back from their sensors first:
        `idle_cells`)."""
        own = self._keys[self.slot]
        for pos in self.probes(key).tolist():
            if own[pos] == 0 or (idle and self._current[self.slot, pos] <= now_slice - self.slices):
                self._values[self.slot, pos] = 0.0
                self._current[self.slot, pos] = now_slice
                own[pos] = key  # last: a reader never sees the key over old values
                return UsageCell(self, key, pos)
        return None

    def idle_cells(self, key: int, now_slice: int) -> list[int]:
        """Slots among ``key``'s probes whose usage (this worker's) has all left the horizon."""
        current = self._current[self.slot]
        return [p for p in self.probes(key).tolist() if current[p] <= now_slice - self.slices]

    def release(self, pos: int) -> None:
        self._keys[self.slot, pos] = 0

    def others(self, key: int, pos: int, now_slice: int) -> npt.NDArray[np.float64]:
        """The other workers' usage of ``key`` per ring position, as of slice ``now_slice``
        (slices older than the horizon masked out)."""
        n = self.slices
        probes = self.probes(key)
        found = self._keys[:, probes] == key
        found[self.slot] = False
        workers, at = np.nonzero(found)
        if len(workers) == 0:
            return np.zeros(n)
        slots = probes[at]
        newest = self._current[workers, slots][:, None]
        absolute = newest - (newest - self._ring) % n  # each position's slice
        return np.where(absolute > now_slice - n, self._values[workers, slots], 0.0).sum(axis=0)  # type: ignore[no-any-return]

    def cell_values(self, pos: int) -> memoryview[float]:
        """This worker's values of slot ``pos`` as doubles (Python floats on indexing: cheaper
        than numpy scalars on the sensor's path)."""
        n = self.slices
        at = 2 * aligned(8 * SLOTS) + 8 * n * pos
        return self._mine[at : at + 8 * n].cast("d")

    def set_current(self, pos: int, index: int) -> None:
        self._current[self.slot, pos] = index


class UsageCell:
    """One budget's cell in this worker's column: its sensor's slices live in ``values``."""

    __slots__ = ("key", "pos", "usage", "values")

    def __init__(self, usage: WorkerQuotaUsage, key: int, pos: int) -> None:
        self.usage = usage
        self.key = key
        self.pos = pos
        self.values = usage.cell_values(pos)

    def others(self, now_slice: int) -> list[float]:
        return self.usage.others(self.key, self.pos, now_slice).tolist()  # type: ignore[no-any-return]

    def set_current(self, index: int) -> None:
        self.usage.set_current(self.pos, index)
