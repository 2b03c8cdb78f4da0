"""Producer state of one partition (Kafka's ProducerStateManager, ProducerAppendInfo and
ProducerStateEntry): idempotence, and the transactions open in this partition.

Byte layout: the ``NNN.snapshot`` files of producer_snapshot.py (Kafka's). The state is rebuilt on
open from the newest usable snapshot plus the batch headers after it (``producerId`` int64 at 43,
``producerEpoch`` int16 at 51, ``baseSequence`` int32 at 53, attributes at 21; a control batch's
one record for the marker type: protocol/control_records.py).

Idempotence (Kafka's checkSequence and findDuplicateBatch): batches with producerId < 0 are not
tracked; a batch whose (epoch, first, last sequence) equals one of the producer's last 5 is a
retry, answered with the original offsets and not written; an older epoch: INVALID_PRODUCER_EPOCH
(47); a new epoch starts at sequence 0 unless the producer had none: OUT_OF_ORDER (45); same
epoch: first sequence = last + 1 (wrapping at 2^31-1), else 45; a producer with no state (new,
or its batches deleted by retention) may start anywhere.

Transactions (Kafka's ProducerAppendInfo.appendDataBatch/appendEndTxnMarker): a transactional
data batch opens a transaction at its first offset if its producer has none open; a
non-transactional batch while one is open: INVALID_TXN_STATE (48). A marker (control batch)
checks the epoch (older: 47; with transaction version 2, not newer either, except the retry of a
marker already written) and the coordinator epoch (older than the producer's:
TRANSACTION_COORDINATOR_FENCED, 52), then ends the open transaction -- or completes nothing when
none is open (an empty transaction, or a producer this partition never saw: the marker is still
written). `ongoing` holds the open transactions by first offset; the LSO is derived from it.

Snapshots, decided by measurement (median of 5 ``PartitionLog.open`` of a cleanly closed log of
256 MiB of 1 KiB idempotent batches: 255,410 batches, 1,000 producers, 17 segments): replaying
every header took 1,460 ms before (a per-batch recomputation of all last offsets made it
quadratic in batches per segment) and 337 ms once that was fixed (~1.3 us per batch: ~1.3 s per
GiB of small batches at every open, clean or not); reading the snapshot written at close
instead: 6 ms. With 10,000 producers (64 MiB): 74 ms vs 132 ms. So snapshots are written at
every roll (the state at the new segment's base) and at close and hand-over (at the log end); an
unclean open replays from the newest snapshot at or below the first segment recovery scans, as
Kafka's LogLoader does.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

import numpy as np

from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches
from shardbroker.protocol.control_records import ControlRecordType, control_record
from shardbroker.protocol.record_batch import InvalidRecordBatch, RecordBatch
from shardbroker.protocol.record_batch_header import CONTROL_BIT, NO_PRODUCER_EPOCH, TRANSACTIONAL_BIT
from shardbroker.storage.errors import (
    InvalidProducerEpochError,
    InvalidRecordError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from shardbroker.storage.file_names import producer_snapshot_file
from shardbroker.storage.log_validator import AppendBatches
from shardbroker.storage.producer_snapshot import (
    CorruptSnapshotError,
    SnapshotEntry,
    read_snapshot,
    write_snapshot,
)
from shardbroker.storage.transaction_index import AbortedTxn

if TYPE_CHECKING:
    from shardbroker.storage.log_segment import LogSegment

__all__ = [
    "BatchMetadata",
    "CompletedTxn",
    "Marker",
    "ProducerStateEntry",
    "ProducerStateManager",
    "read_marker",
    "read_markers",
]

#: Kafka's ProducerStateEntry.NUM_BATCH_METADATA_TO_RETAIN (and the client's max in-flight 5).
NUM_BATCHES_TO_RETAIN: Final = 5
_INT_MAX: Final = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


class Marker(NamedTuple):
    """What producer state needs of a transaction marker (Kafka's EndTransactionMarker)."""

    is_abort: bool
    coordinator_epoch: int


class CompletedTxn(NamedTuple):
    """A transaction a marker ended (Kafka's CompletedTxn)."""

    producer_id: int
    first_offset: int
    last_offset: int
    is_aborted: bool


@dataclass(slots=True)
class ProducerStateEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))
    #: The epoch of the last coordinator that wrote a marker for this producer (-1: none).
    coordinator_epoch: int = -1
    #: maxTimestamp of the last data batch, or the last marker's timestamp.
    last_timestamp: int = -1
    #: First offset of the transaction open in this partition (-1: none).
    current_txn_first_offset: int = -1

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    @property
    def last_offset(self) -> int:
        return self.batches[-1].last_offset if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for b in self.batches:
            if b.first_seq == first_seq and b.last_seq == last_seq:
                return b
        return None

    def set_epoch(self, epoch: int) -> None:
        """Kafka's maybeUpdateProducerEpoch: a new epoch forgets the batches of the old one."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.batches.clear()

    def to_snapshot(self) -> SnapshotEntry:
        b = self.batches[-1] if self.batches else None
        return SnapshotEntry(
            self.producer_id,
            self.epoch,
            -1 if b is None else b.last_seq,
            -1 if b is None else b.last_offset,
            0 if b is None else b.last_offset - b.first_offset,
            self.last_timestamp,
            self.coordinator_epoch,
            self.current_txn_first_offset,
        )

    @classmethod
    def from_snapshot(cls, s: SnapshotEntry) -> ProducerStateEntry:
        entry = cls(s.producer_id, s.epoch, coordinator_epoch=s.coordinator_epoch, last_timestamp=s.timestamp)
        entry.current_txn_first_offset = s.current_txn_first_offset
        if s.last_offset >= 0:
            first_seq = (s.last_sequence - s.offset_delta) % (_INT_MAX + 1) if s.last_sequence >= 0 else -1
            entry.batches.append(
                BatchMetadata(first_seq, s.last_sequence, s.last_offset - s.offset_delta, s.last_offset)
            )
        return entry


def _last_seq(first_seq: int, count: int) -> int:
    return (first_seq + count - 1) % (_INT_MAX + 1)


def _check_sequence(pid: int, epoch: int, first: int, cur_epoch: int, cur_last: int) -> None:
    """Kafka's checkSequence against the producer's current (epoch, last sequence)."""
    if epoch < cur_epoch:
        raise InvalidProducerEpochError(f"producer {pid}: epoch {epoch} is older than {cur_epoch}")
    if epoch != cur_epoch:
        if first != 0 and cur_epoch != -1:
            raise OutOfOrderSequenceError(
                f"producer {pid}: new epoch {epoch} must start at sequence 0, not {first}"
            )
    elif (cur_last >= 0 or cur_epoch != NO_PRODUCER_EPOCH) and first != (cur_last + 1) % (_INT_MAX + 1):
        # (an entry left by a marker alone has an epoch but no batch: its next batch starts at 0)
        raise OutOfOrderSequenceError(
            f"producer {pid}: expected sequence {(cur_last + 1) % (_INT_MAX + 1)}, got {first}"
        )


def _check_marker(
    pid: int, epoch: int, marker: Marker, cur_epoch: int, cur_coordinator: int, txn_open: bool, tv: int
) -> None:
    """Kafka's checkProducerEpoch (for markers) and checkCoordinatorEpoch."""
    stale = epoch <= cur_epoch if tv >= 2 else epoch < cur_epoch
    if stale and not (tv >= 2 and epoch == cur_epoch and not txn_open):  # TV2: a marker retry
        raise InvalidProducerEpochError(
            f"marker for producer {pid}: epoch {epoch} {'<=' if tv >= 2 else '<'} current {cur_epoch}"
        )
    if cur_coordinator > marker.coordinator_epoch:
        raise TransactionCoordinatorFencedError(
            f"marker for producer {pid}: coordinator epoch {marker.coordinator_epoch} is older than "
            f"{cur_coordinator}"
        )


def read_marker(batch: memoryview | bytes) -> Marker:
    """The marker a control batch carries; InvalidRecordError (87) if it has none."""
    try:
        rec = control_record(RecordBatch(batch))
    except InvalidRecordBatch as exc:
        raise InvalidRecordError(f"bad control batch: {exc}") from exc
    if rec.type not in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
        raise InvalidRecordError(f"control record type {rec.type} is not a transaction marker")
    return Marker(rec.type == ControlRecordType.ABORT, rec.coordinator_epoch)


def read_markers(batches: AppendBatches) -> dict[int, Marker] | None:
    """The marker of each control batch of an append, by batch number (None: no control batch)."""
    found: dict[int, Marker] = {}
    for i, attrs in enumerate(batches.attributes):
        if attrs & CONTROL_BIT:
            pos = batches.positions[i]
            for chunk in batches.chunks:  # positions run on across the append's chunks
                if pos < chunk.nbytes:
                    found[i] = read_marker(chunk[pos : pos + batches.sizes[i]])
                    break
                pos -= chunk.nbytes
    return found or None


class _Working:
    """One producer's state as an append's batches are checked (Kafka's ProducerAppendInfo)."""

    __slots__ = ("coordinator", "epoch", "last_seq", "txn_first")

    def __init__(self, entry: ProducerStateEntry | None) -> None:
        if entry is None:
            self.epoch, self.last_seq, self.coordinator, self.txn_first = NO_PRODUCER_EPOCH, -1, -1, -1
        else:
            self.epoch, self.last_seq = entry.epoch, entry.last_seq
            self.coordinator, self.txn_first = entry.coordinator_epoch, entry.current_txn_first_offset


class ProducerStateManager:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory
        self.producers: dict[int, ProducerStateEntry] = {}
        #: Open transactions: first offset -> producer id, in first-offset order (a transaction
        #: opens at the log end, so insertion order is offset order).
        self.ongoing: dict[int, int] = {}
        self._pending: list[tuple[int, int, BatchMetadata | Marker, int, int]] = []
        #: Offsets of the snapshot files on disk, ascending.
        self.snapshots: list[int] = []

    # ------------------------------------------------------------------ transactions

    @property
    def first_undecided_offset(self) -> int:
        """First offset of the earliest open transaction; -1 if none (Kafka's firstUndecidedOffset)."""
        for first in self.ongoing:
            return first
        return -1

    def last_stable_offset_after(self, txn: CompletedTxn) -> int:
        """The LSO once ``txn`` completes (Kafka's lastStableOffset(completedTxn)): the first
        offset of the earliest open transaction of another producer, else the marker's offset + 1."""
        for first, pid in self.ongoing.items():
            if pid != txn.producer_id:
                return first
        return txn.last_offset + 1

    def _complete(self, txn: CompletedTxn) -> AbortedTxn | None:
        """Close ``txn``; the index entry to write if it was aborted."""
        lso = self.last_stable_offset_after(txn)
        del self.ongoing[txn.first_offset]
        if not txn.is_aborted:
            return None
        return AbortedTxn(txn.producer_id, txn.first_offset, txn.last_offset, lso)

    # ------------------------------------------------------------------ appends

    def check(
        self, batches: AppendBatches, markers: dict[int, Marker] | None = None, transaction_version: int = 0
    ) -> tuple[int, int] | None:
        """Validate the append's batches (offsets already assigned); ``(first, last)`` offsets of
        the original if it is a retry, else None. Raises before anything is written;
        :meth:`update` commits afterwards. ``markers``: the marker of each control batch, by
        batch number."""
        self._pending = []
        if max(batches.producer_ids) < 0:
            return None
        work: dict[int, _Working] = {}
        pending: list[tuple[int, int, BatchMetadata | Marker, int, int]] = []
        for i, pid in enumerate(batches.producer_ids):
            if pid < 0:
                continue
            epoch = batches.producer_epochs[i]
            attrs = batches.attributes[i]
            base = batches.base_offsets[i]
            w = work.get(pid)
            first_in_append = w is None
            entry = self.producers.get(pid) if w is None else None
            if w is None:
                w = work[pid] = _Working(entry)
            ts = batches.max_timestamps[i]
            if attrs & CONTROL_BIT:
                marker = markers[i] if markers is not None else None
                if marker is None:
                    raise InvalidRecordError(f"control batch at {base} without a marker")
                txn_open = w.txn_first >= 0
                _check_marker(pid, epoch, marker, w.epoch, w.coordinator, txn_open, transaction_version)
                if epoch != w.epoch:
                    w.epoch, w.last_seq = epoch, -1
                w.coordinator, w.txn_first = marker.coordinator_epoch, -1
                pending.append((pid, epoch, marker, base, ts))
                continue
            first = batches.base_sequences[i]
            last = _last_seq(first, batches.record_counts[i])
            if first_in_append and entry is not None:
                dup = entry.find_duplicate(epoch, first, last)
                if dup is not None:
                    return dup.first_offset, dup.last_offset
            if not (first_in_append and entry is None):
                _check_sequence(pid, epoch, first, w.epoch, w.last_seq)
            transactional = attrs & TRANSACTIONAL_BIT
            if w.txn_first >= 0 and not transactional:
                raise InvalidTxnStateError(
                    f"producer {pid}: non-transactional batch at {base} while its transaction is open"
                )
            if transactional and w.txn_first < 0:
                w.txn_first = base
            if epoch != w.epoch:
                w.epoch = epoch
            w.last_seq = last
            meta = BatchMetadata(first, last, base, batches.last_offsets[i])
            pending.append((pid, epoch, meta, -1 if not transactional else base, ts))
        self._pending = pending
        return None

    def update(self, batches: AppendBatches) -> list[AbortedTxn]:
        """Commit what :meth:`check` validated, after a successful write; the aborted
        transactions' index entries to write, in marker order."""
        pending, self._pending = self._pending, []
        completed: list[CompletedTxn] = []
        for pid, epoch, what, base, ts in pending:
            if isinstance(what, Marker):
                done = self._apply_marker(pid, epoch, what, base, ts)
                if done is not None:
                    completed.append(done)
            else:
                self._apply_data(pid, epoch, what, ts, base >= 0)
        aborted = []
        for txn in completed:
            entry = self._complete(txn)
            if entry is not None:
                aborted.append(entry)
        return aborted

    def check_one(self, pid: int, epoch: int, first_seq: int, count: int) -> tuple[int, int] | None:
        """:meth:`check` for an append of one non-transactional batch with ``pid >= 0``;
        commit with :meth:`update_one`."""
        entry = self.producers.get(pid)
        if entry is None:
            return None  # unknown producer (new, or its batches are gone): any sequence
        last = _last_seq(first_seq, count)
        dup = entry.find_duplicate(epoch, first_seq, last)
        if dup is not None:
            return dup.first_offset, dup.last_offset
        _check_sequence(pid, epoch, first_seq, entry.epoch, entry.last_seq)
        if entry.current_txn_first_offset >= 0:
            raise InvalidTxnStateError(
                f"producer {pid}: non-transactional batch while its transaction is open"
            )
        return None

    def update_one(
        self, pid: int, epoch: int, first_seq: int, count: int, base: int, last: int, timestamp: int
    ) -> None:
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerStateEntry(pid, epoch)
        elif epoch != entry.epoch:
            entry.set_epoch(epoch)
        entry.batches.append(BatchMetadata(first_seq, _last_seq(first_seq, count), base, last))
        entry.last_timestamp = timestamp

    def _entry(self, pid: int, epoch: int) -> ProducerStateEntry:
        entry = self.producers.get(pid)
        if entry is None:
            entry = self.producers[pid] = ProducerStateEntry(pid, epoch)
        else:
            entry.set_epoch(epoch)
        return entry

    def _apply_data(self, pid: int, epoch: int, meta: BatchMetadata, ts: int, transactional: bool) -> None:
        entry = self._entry(pid, epoch)
        entry.batches.append(meta)
        entry.last_timestamp = ts
        if transactional and entry.current_txn_first_offset < 0:
            entry.current_txn_first_offset = meta.first_offset
            self.ongoing[meta.first_offset] = pid

    def _apply_marker(
        self, pid: int, epoch: int, marker: Marker, offset: int, ts: int
    ) -> CompletedTxn | None:
        entry = self._entry(pid, epoch)
        first = entry.current_txn_first_offset
        entry.coordinator_epoch = marker.coordinator_epoch
        entry.current_txn_first_offset = -1
        entry.last_timestamp = ts
        # Only a non-empty transaction completes (Kafka: an empty one changes neither LSO nor index).
        return None if first < 0 else CompletedTxn(pid, first, offset, marker.is_abort)

    # ------------------------------------------------------------------ replay (open)

    def load_headers(
        self,
        h: BatchHeaders,
        count: int | None,
        start_offset: int,
        fd: int,
        on_abort: Callable[[AbortedTxn], None] | None = None,
    ) -> None:
        """Replay batch headers read from the log (recovery): no checks, as Kafka replays with
        origin REPLICATION. Control batches are read from ``fd`` for their marker; an
        unreadable one is skipped (recovery already vouched for its CRC). ``on_abort`` hears
        each aborted transaction's index entry (recovery rebuilds the segment's ``.txnindex``)."""
        n = len(h) if count is None else count
        if n == 0:
            return
        pids = h.producer_ids[:n]
        last = h.last_offsets[:n]
        rows = np.flatnonzero((pids >= 0) & (last >= start_offset))
        if not rows.size:
            return
        cols = zip(
            pids[rows].tolist(),
            h.producer_epochs[:n][rows].tolist(),
            h.base_sequences[:n][rows].tolist(),
            h.base_offsets[:n][rows].tolist(),
            last[rows].tolist(),
            h.max_timestamps[:n][rows].tolist(),
            h.attributes[:n][rows].tolist(),
            h.positions[:n][rows].tolist(),
            h.sizes[:n][rows].tolist(),
            strict=True,
        )
        for pid, epoch, first, base, last_offset, ts, attrs, pos, size in cols:
            if attrs & CONTROL_BIT:
                try:
                    marker = read_marker(os.pread(fd, size, pos))
                except InvalidRecordError:
                    continue
                done = self._apply_marker(pid, epoch, marker, base, ts)
                if done is not None:
                    aborted = self._complete(done)
                    if aborted is not None and on_abort is not None:
                        on_abort(aborted)
                continue
            meta = BatchMetadata(first, (first + last_offset - base) % (_INT_MAX + 1), base, last_offset)
            self._apply_data(pid, epoch, meta, ts, bool(attrs & TRANSACTIONAL_BIT))

    def rebuild(
        self,
        segments: Sequence[LogSegment],
        log_start_offset: int,
        log_end_offset: int,
        snapshots: list[int],
        scanned: dict[int, tuple[BatchHeaders, int]] | None = None,
    ) -> None:
        """Forget everything; load the newest usable snapshot, then replay the headers after it.

        ``scanned``: headers recovery already read, by segment base offset (saves a second pass);
        those segments' ``.txnindex`` (reset by recovery) is rebuilt by the replay, so the replay
        must start at or below the first of them. Snapshots above the log end (data that
        recovery cut away) and strays (neither at a segment base nor the newest) are deleted."""
        self.producers.clear()
        self.ongoing.clear()
        scanned = scanned or {}
        limit = min(scanned, default=log_end_offset)
        bases = {seg.base_offset for seg in segments}
        first_base = segments[0].base_offset if segments else 0
        kept: list[int] = []
        for off in snapshots:
            if off > log_end_offset:
                self._delete_snapshot(off)
            else:
                kept.append(off)
        start = log_start_offset
        for off in sorted(kept, reverse=True):
            if not first_base <= off <= limit:
                continue
            try:
                entries = read_snapshot(self._snapshot_path(off))
            except (CorruptSnapshotError, OSError):
                self._delete_snapshot(off)
                kept.remove(off)
                continue
            self._load_snapshot(entries)
            start = max(off, log_start_offset)
            break
        for i, seg in enumerate(segments):
            end = segments[i + 1].base_offset if i + 1 < len(segments) else log_end_offset
            if end <= start:
                continue
            on_abort = seg.txn_index.append if seg.base_offset in scanned else None
            if seg.base_offset in scanned:
                h, n = scanned[seg.base_offset]
                self.load_headers(h, n, start, seg.fd, on_abort)
                continue
            if seg.size == 0:
                continue
            mm = mmap.mmap(seg.fd, seg.size, prot=mmap.PROT_READ)
            try:
                h = scan_batches(mm)
            finally:
                mm.close()
            self.load_headers(h, None, start, seg.fd, on_abort)
        self.remove_below(log_start_offset)
        newest = max(kept, default=-1)
        for off in list(kept):
            if off not in bases and not (off == newest and off > max(bases, default=-1)):
                self._delete_snapshot(off)
                kept.remove(off)
        self.snapshots = kept

    def _load_snapshot(self, entries: list[SnapshotEntry]) -> None:
        for s in entries:
            self.producers[s.producer_id] = ProducerStateEntry.from_snapshot(s)
        for first, pid in sorted((s.current_txn_first_offset, s.producer_id) for s in entries):
            if first >= 0:
                self.ongoing[first] = pid

    def remove_below(self, log_start_offset: int) -> None:
        """Drop producers whose last batch is below the log start offset (retention,
        DeleteRecords), unless they have a transaction open: that keeps holding the LSO (at
        the log start offset) until its marker arrives, as in Kafka."""
        gone = [
            pid
            for pid, e in self.producers.items()
            if e.last_offset < log_start_offset and e.current_txn_first_offset < 0
        ]
        for pid in gone:
            del self.producers[pid]

    # ------------------------------------------------------------------ snapshots

    def _snapshot_path(self, offset: int) -> Path:
        assert self.directory is not None
        return producer_snapshot_file(self.directory, offset)

    def _delete_snapshot(self, offset: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._snapshot_path(offset))

    def take_snapshot(self, offset: int) -> None:
        """Write the state as of ``offset`` (the log end now) to ``offset``'s snapshot file,
        unless the newest snapshot is already there (Kafka's takeSnapshot)."""
        if self.directory is None or (self.snapshots and self.snapshots[-1] >= offset):
            return
        write_snapshot(self._snapshot_path(offset), [e.to_snapshot() for e in self.producers.values()])
        self.snapshots.append(offset)

    def delete_snapshots_below(self, offset: int) -> None:
        """Retention: the snapshots of deleted segments go with them (Kafka's deleteProducerSnapshots)."""
        while self.snapshots and self.snapshots[0] < offset:
            self._delete_snapshot(self.snapshots.pop(0))
