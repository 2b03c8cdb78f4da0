"""Idempotent-producer state of one partition (Kafka's ProducerStateManager), in memory.

Byte layout: none on disk yet. The state is rebuilt on open from the batch headers of the log
(``producerId`` int64 at 43, ``producerEpoch`` int16 at 51, ``baseSequence`` int32 at 53 of each
v2 batch header; see shardbroker/protocol/record_batch_header.py). Kafka also writes ``NNN.snapshot`` files
at each roll so that a restart scans only the segments after the last snapshot; that is left for
the issue that needs fast restarts of logs with many producers (see the storage README notes).

Rules (Kafka's ProducerAppendInfo.checkSequence and ProducerStateEntry.findDuplicateBatch):
- batches with producerId < 0 are not tracked;
- a batch whose (epoch, first sequence, last sequence) equals one of the producer's last 5
  batches is a duplicate (a retry): the append is answered with the original offsets, unwritten;
- an epoch below the producer's current one: INVALID_PRODUCER_EPOCH (47);
- a new epoch must start at sequence 0 (unless the producer had no epoch): OUT_OF_ORDER (45);
- same epoch: first sequence = last sequence + 1 (wrapping at 2^31-1), else OUT_OF_ORDER (45);
  a producer with no state (new, or its batches deleted by retention) may start anywhere.
"""

from __future__ import annotations

import mmap
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches
from shardbroker.storage.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from shardbroker.storage.log_validator import AppendBatches

if TYPE_CHECKING:
    from shardbroker.storage.log_segment import LogSegment

__all__ = ["BatchMetadata", "ProducerStateEntry", "ProducerStateManager"]

#: Kafka's ProducerStateEntry.NUM_BATCH_METADATA_TO_RETAIN (and the client's max in-flight 5).
NUM_BATCHES_TO_RETAIN: Final = 5
_INT_MAX: Final = 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass(slots=True)
class ProducerStateEntry:
    producer_id: int
    epoch: int
    batches: deque[BatchMetadata] = field(default_factory=lambda: deque(maxlen=NUM_BATCHES_TO_RETAIN))

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
    elif cur_last >= 0 and first != (cur_last + 1) % (_INT_MAX + 1):
        raise OutOfOrderSequenceError(
            f"producer {pid}: expected sequence {(cur_last + 1) % (_INT_MAX + 1)}, got {first}"
        )


class ProducerStateManager:
    def __init__(self) -> None:
        self.producers: dict[int, ProducerStateEntry] = {}
        self._pending: list[tuple[int, int, BatchMetadata]] = []

    def check(self, batches: AppendBatches) -> tuple[int, int] | None:
        """Validate the append's sequences; ``(first, last)`` offsets of the original if it is a
        retry, else None. Raises before anything is written; ``update`` commits afterwards."""
        if self._pending:
            self._pending = []
        if max(batches.producer_ids) < 0:
            return None
        seen: dict[int, tuple[int, int]] = {}  # pid -> (epoch, last seq) as this append goes
        for i, pid in enumerate(batches.producer_ids):
            if pid < 0:
                continue
            epoch = batches.producer_epochs[i]
            first = batches.base_sequences[i]
            last = _last_seq(first, batches.record_counts[i])
            entry = self.producers.get(pid)
            if pid not in seen:
                dup = self._check_first(pid, entry, epoch, first, last)
                if dup is not None:
                    return dup
            else:
                _check_sequence(pid, epoch, first, *seen[pid])
            seen[pid] = (epoch, last)
            self._pending.append((pid, epoch, BatchMetadata(first, last, -1, -1)))
        return None

    def check_one(self, pid: int, epoch: int, first_seq: int, count: int) -> tuple[int, int] | None:
        """:meth:`check` for an append of one batch with ``pid >= 0``; commit with :meth:`update_one`."""
        return self._check_first(pid, self.producers.get(pid), epoch, first_seq, _last_seq(first_seq, count))

    def update_one(self, pid: int, epoch: int, first_seq: int, count: int, base: int, last: int) -> None:
        self._record(pid, epoch, BatchMetadata(first_seq, _last_seq(first_seq, count), base, last))

    @staticmethod
    def _check_first(
        pid: int, entry: ProducerStateEntry | None, epoch: int, first: int, last: int
    ) -> tuple[int, int] | None:
        if entry is None:
            return None  # unknown producer (new, or its batches are gone): any sequence
        dup = entry.find_duplicate(epoch, first, last)
        if dup is not None:
            return dup.first_offset, dup.last_offset
        _check_sequence(pid, epoch, first, entry.epoch, entry.last_seq)
        return None

    def update(self, batches: AppendBatches) -> None:
        """Commit the batches of a successful append (offsets are assigned by now)."""
        if not self._pending:
            return
        j = 0
        for i, pid in enumerate(batches.producer_ids):
            if pid < 0:
                continue
            _, epoch, meta = self._pending[j]
            j += 1
            self._record(
                pid,
                epoch,
                BatchMetadata(
                    meta.first_seq, meta.last_seq, batches.base_offsets[i], batches.last_offsets[i]
                ),
            )
        self._pending = []

    def _record(self, pid: int, epoch: int, meta: BatchMetadata) -> None:
        entry = self.producers.get(pid)
        if entry is None or epoch != entry.epoch:
            entry = ProducerStateEntry(pid, epoch)
            self.producers[pid] = entry
        entry.batches.append(meta)

    def load_headers(self, h: BatchHeaders, count: int | None = None, start_offset: int = 0) -> None:
        """Replay batch headers read from the log (recovery)."""
        n = len(h) if count is None else count
        if n == 0:
            return
        pids = h.producer_ids[:n]
        rows = (pids >= 0) & (h.last_offsets[:n] >= start_offset)
        if not rows.any():
            return
        for i in rows.nonzero()[0].tolist():
            first = int(h.base_sequences[i])
            last = first + int(h.last_offset_deltas[i])
            self._record(
                int(pids[i]),
                int(h.producer_epochs[i]),
                BatchMetadata(first, last % (_INT_MAX + 1), int(h.base_offsets[i]), int(h.last_offsets[i])),
            )

    def rebuild(
        self,
        segments: Sequence[LogSegment],
        log_start_offset: int,
        scanned: dict[int, tuple[BatchHeaders, int]] | None = None,
    ) -> None:
        """Forget everything and replay every segment's headers from ``log_start_offset``.

        ``scanned``: headers recovery already read, by segment base offset (saves a second pass).
        Other segments are mapped without MAP_POPULATE: only the pages holding headers are read.
        """
        self.producers.clear()
        for seg in segments:
            if scanned is not None and seg.base_offset in scanned:
                h, n = scanned[seg.base_offset]
                self.load_headers(h, n, log_start_offset)
                continue
            if seg.size == 0:
                continue
            mm = mmap.mmap(seg.fd, seg.size, prot=mmap.PROT_READ)
            try:
                h = scan_batches(mm)
            finally:
                mm.close()
            self.load_headers(h, None, log_start_offset)

    def remove_below(self, log_start_offset: int) -> None:
        """Drop producers whose last batch is below the log start offset (retention, DeleteRecords)."""
        gone = [pid for pid, e in self.producers.items() if e.last_offset < log_start_offset]
        for pid in gone:
            del self.producers[pid]
