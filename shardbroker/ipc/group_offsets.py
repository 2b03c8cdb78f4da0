"""Committed offsets of consumer groups in POSIX shared memory, for ``shardbroker_consumergroup_lag``.

Opens and unlinks a POSIX shared-memory segment (ipc/shm.py's ``SharedSegment``, object name
``groupoffsets``). Each worker's GroupCoordinator copies its groups' committed offsets here on the
worker's 1 s publish tick (ReplicaManager.publish_metrics); the supervisor's collector
(observability/group_lag.py, `GroupLagSource`) reads them and subtracts them from the log end offsets of the
counter table's partition rows (ipc/counters.py).

Same rules as counters.py, which this mirrors: the supervisor creates the segment before the
first fork and never writes it again; worker w writes only its own 64-byte misc block and its own
rows ``[w * R, (w + 1) * R)``, ``R = rows // workers``; 8-byte aligned stores are atomic; a row's
label is written under the same seqlock (``state`` odd while being labelled, then a new even
generation), so a scrape never names one row's offset with another's key.

Layout (native byte order; every section starts on a 64-byte boundary)::

    [0, 32)      ipc/shm.py preamble: kind b"GOFF", version 1, owner pid and start time
    [32, 96)     header, 8 x int64: workers, rows, rows per worker, MAX_TOPIC, MAX_GROUP, 0, 0, 0
    worker blocks, 64 bytes per worker: int64 overflow, int64 rows_in_use, 6 spare
    state        int64[rows]        0 free, odd: being (re)labelled, even > 0: live (generation)
    rows         bytes[rows, 512]   int64 committed offset, int64 partition, int64 topic length,
                                    int64 group length, topic (<= 256 B), group (<= 224 B)

Capacity. ``DEFAULT_ROWS`` = 65,536 (group, topic, partition) rows in total, split evenly between
workers (each worker coordinates the groups of its ``__consumer_offsets`` partitions); a live
row costs 520 bytes of /dev/shm, untouched pages nothing (the segment is 34 MiB of address
space). Past a worker's R rows, or for a group id longer than ``MAX_GROUP`` bytes (UTF-8; a
truncated id could name two groups alike), the offset is not exported and the worker's
``overflow`` cell counts it (``shardbroker_consumergroup_offsets_overflow{worker}``): it never
fails. Topic names fit (Kafka's limit is 249 characters).

Hot path: none. An OffsetCommit only updates the coordinator's in-memory ``Group.offsets``
(as before); `WorkerGroupOffsets.publish`, on the tick, walks every committed offset of the
worker's groups, stores the offsets that changed (one 8-byte store each), labels rows for new
keys and frees the rows of keys it did not see: a group deleted (DeleteGroups), expired
(offset retention), whose offsets were deleted (OffsetDelete), or unloaded (the coordinator lost
its ``__consumer_offsets`` partition) loses its rows on the next tick, so its series disappear.
Measured on this 2-core VM (timeit, best of 5, with a generator like the coordinator's): 10,000
committed offsets cost 3.0 ms per tick when none moved (0.3 us each: 0.3% of a core at one tick
a second), under 6 ms when all of them moved. A worker zeroes its block and rows when it starts (a
restart republishes what its coordinator loaded), and clears them on drain.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable
from typing import Final

import numpy as np
import numpy.typing as npt

from shardbroker.ipc.shm import SharedSegment
from shardbroker.ipc.table import (
    TableLayout,
    attach_segment,
    close_table,
    create_segment,
    read_header,
)

__all__ = ["DEFAULT_ROWS", "MAX_GROUP", "MAX_TOPIC", "GroupOffsetTable", "OffsetRow", "WorkerGroupOffsets"]

KIND: Final = int.from_bytes(b"GOFF", "little")
VERSION: Final = 1
OBJECT_NAME: Final = "groupoffsets"

#: Total (group, topic, partition) rows, all workers together.
DEFAULT_ROWS: Final = 65_536
ROW_BYTES: Final = 512
_TOPIC_AT: Final = 32
MAX_TOPIC: Final = 256  # Kafka topic names are at most 249 characters
_GROUP_AT: Final = _TOPIC_AT + MAX_TOPIC
MAX_GROUP: Final = ROW_BYTES - _GROUP_AT  # 224 bytes

OVERFLOW: Final = 0
ROWS_IN_USE: Final = 1

_BLOCK: Final = 64

#: One published row: (group, topic, partition, committed offset).
OffsetRow = tuple[str, str, int, int]
_Key = tuple[str, str, int]


class _Layout(TableLayout):
    BLOCK = _BLOCK

    @property
    def rows_at(self) -> int:
        return self.data_at

    @property
    def size(self) -> int:
        return self.rows_at + ROW_BYTES * self.rows


class GroupOffsetTable:
    """The mapped segment: the supervisor `create`\\ s it before forking and reads it
    (`snapshot`); each worker writes through `worker`."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        mm = segment.mmap
        workers, rows, _, max_topic, max_group = read_header(segment)[:5]
        if (max_topic, max_group) != (MAX_TOPIC, MAX_GROUP) or workers < 1:
            raise ValueError(f"{segment.name}: group offsets layout does not match this build")
        self.layout = lay = _Layout(workers, rows)
        self.workers = workers
        self.rows = rows
        self.rows_per_worker = lay.rows_per_worker
        self.misc: npt.NDArray[np.int64] = np.ndarray(
            (workers, _BLOCK // 8), dtype=np.int64, buffer=mm, offset=lay.blocks_at
        )
        self.state: npt.NDArray[np.int64] = np.ndarray(
            (rows,), dtype=np.int64, buffer=mm, offset=lay.state_at
        )
        self.data: npt.NDArray[np.uint8] = np.ndarray(
            (rows, ROW_BYTES), dtype=np.uint8, buffer=mm, offset=lay.rows_at
        )
        #: The committed-offset column (a strided int64 view of ``data``).
        self.offsets: npt.NDArray[np.int64] = np.ndarray(
            (rows,), dtype=np.int64, buffer=mm, offset=lay.rows_at, strides=(ROW_BYTES,)
        )
        #: row -> (generation, (group, topic, partition)): labels decoded once per row use.
        self._labels: dict[int, tuple[int, _Key]] = {}

    @classmethod
    def create(cls, instance: str, workers: int, rows: int = DEFAULT_ROWS) -> GroupOffsetTable:
        """Create ``/shardbroker-<instance>-groupoffsets`` (the caller reclaimed stale segments)."""
        if workers < 1 or rows < workers:
            raise ValueError(f"need workers >= 1 and rows >= workers, got {workers}, {rows}")
        lay = _Layout(workers, rows)
        header = [workers, rows, lay.rows_per_worker, MAX_TOPIC, MAX_GROUP]
        return cls(create_segment(instance, OBJECT_NAME, lay.size, KIND, VERSION, header))

    @classmethod
    def attach(cls, instance: str) -> GroupOffsetTable:
        return cls(attach_segment(instance, OBJECT_NAME, KIND, VERSION))

    def worker(self, slot: int) -> WorkerGroupOffsets:
        """The writer of worker ``slot`` (in that worker, after the fork): zeroes its cells."""
        if not 0 <= slot < self.workers:
            raise IndexError(f"worker {slot} out of range 0..{self.workers - 1}")
        return WorkerGroupOffsets(self.segment.mmap, self.layout, slot)

    def label(self, row: int) -> _Key:
        """(group, topic, partition) written in ``row`` (check `state` around the call)."""
        raw = self.data[row]
        partition, topic_len, group_len = (int(x) for x in raw[8:32].view(np.int64))
        topic_len = max(0, min(topic_len, MAX_TOPIC))
        group_len = max(0, min(group_len, MAX_GROUP))
        topic = bytes(raw[_TOPIC_AT : _TOPIC_AT + topic_len]).decode("utf-8", "replace")
        group = bytes(raw[_GROUP_AT : _GROUP_AT + group_len]).decode("utf-8", "replace")
        return group, topic, partition

    def snapshot(self) -> list[OffsetRow]:
        """Every live row as (group, topic, partition, committed offset); rows relabelled while
        they were read are left out (the seqlock)."""
        state = self.state.copy()
        live = np.flatnonzero((state > 0) & (state % 2 == 0))
        offsets = self.offsets[live].tolist()
        gens = state[live].tolist()
        stable = (self.state[live] == state[live]).tolist()
        cache = self._labels
        out: list[OffsetRow] = []
        rows = live.tolist()
        for row, gen, ok, offset in zip(rows, gens, stable, offsets, strict=True):
            if not ok:
                continue
            hit = cache.get(row)
            if hit is None or hit[0] != gen:
                key = self.label(row)
                if self.state[row] != gen:
                    continue
                hit = cache[row] = (gen, key)
            group, topic, partition = hit[1]
            out.append((group, topic, partition, offset))
        if len(cache) > 2 * len(rows) + 1024:  # forget rows freed long ago
            alive = set(rows)
            self._labels = {r: v for r, v in cache.items() if r in alive}
        return out

    def close(self) -> None:
        """Unmap (and unlink, in the creating process)."""
        close_table(self, ("misc", "state", "data", "offsets"))


class WorkerGroupOffsets:
    """One worker's writer. ``WorkerGroupOffsets.private()`` writes private memory (unit tests,
    a coordinator run without a supervisor): the same code path, nobody reads it."""

    def __init__(self, buf: mmap.mmap | bytearray, layout: _Layout, slot: int) -> None:
        mv = memoryview(buf)
        self.slot = slot
        self.layout = layout
        block = layout.blocks_at + _BLOCK * slot
        mv[block : block + _BLOCK] = bytes(_BLOCK)
        self._misc = mv[block : block + _BLOCK].cast("q")
        self._state = mv[layout.state_at : layout.state_at + 8 * layout.rows].cast("q")
        self._data = mv[layout.rows_at : layout.rows_at + ROW_BYTES * layout.rows]
        self._words = self._data.cast("q")  # row r's offset is word r * ROW_BYTES // 8
        rows = range(slot * layout.rows_per_worker, (slot + 1) * layout.rows_per_worker)
        for r in rows:
            self._state[r] = 0
        self._data[ROW_BYTES * rows.start : ROW_BYTES * rows.stop] = bytes(ROW_BYTES * len(rows))
        self._free: list[int] = list(reversed(rows))  # pop() hands out the lowest row first
        self._gen = 0
        #: key -> [row, last stored offset]; row -1: not exported (counted in overflow).
        self._rows: dict[_Key, list[int]] = {}

    @classmethod
    def private(cls, workers: int = 1, rows: int = 1024, slot: int = 0) -> WorkerGroupOffsets:
        lay = _Layout(workers, rows)
        return cls(bytearray(lay.size), lay, slot)

    def misc(self, field: int) -> int:
        return int(self._misc[field])

    def __len__(self) -> int:
        return len(self._rows)

    def publish(self, offsets: Iterable[OffsetRow]) -> None:
        """Make this worker's rows exactly ``offsets`` (every committed offset of its groups):
        store what changed, label rows for new keys, free the rows of keys not given."""
        old = self._rows
        new: dict[_Key, list[int]] = {}
        words = self._words
        stride = ROW_BYTES // 8
        for group, topic, partition, offset in offsets:
            key = (group, topic, partition)
            entry = old.pop(key, None)
            if entry is None:
                entry = [self._open(group, topic, partition, offset), offset]
            elif entry[1] != offset:
                entry[1] = offset
                if entry[0] >= 0:
                    words[entry[0] * stride] = offset
            new[key] = entry
        for entry in old.values():
            self._free_row(entry[0])
        self._rows = new

    def clear(self) -> None:
        """Free every row (the coordinator stops: drain)."""
        self.publish(())

    def _open(self, group: str, topic: str, partition: int, offset: int) -> int:
        g = group.encode("utf-8")
        t = topic.encode("utf-8")
        if not self._free or len(g) > MAX_GROUP or len(t) > MAX_TOPIC:
            self._misc[OVERFLOW] += 1
            return -1
        row = self._free.pop()
        self._gen += 2
        self._state[row] = self._gen - 1  # odd: being labelled
        at = ROW_BYTES * row
        label = self._data[at : at + ROW_BYTES]
        struct.pack_into("=qqqq", label, 0, offset, partition, len(t), len(g))
        label[_TOPIC_AT : _TOPIC_AT + len(t)] = t
        label[_GROUP_AT : _GROUP_AT + len(g)] = g
        self._state[row] = self._gen
        self._misc[ROWS_IN_USE] += 1
        return row

    def _free_row(self, row: int) -> None:
        if row < 0:
            self._misc[OVERFLOW] -= 1
            return
        self._state[row] = 0
        self._free.append(row)
        self._misc[ROWS_IN_USE] -= 1
