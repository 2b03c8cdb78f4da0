"""One partition's log: appends, reads, offsets, rolling, retention, flushing, open and close
(Kafka's UnifiedLog + LocalLog). Opens, writes and deletes files; the directory's layout is in
file_names.py.

What it owns: appends (validated by log_validator.py, idempotence and transactions by
producer_state.py), the last stable offset and the aborted-transaction index of each segment
(transaction_index.py) that read_committed fetches need, reads for fetches, ListOffsets,
rolling, retention and DeleteRecords, flushes (group_commit.py), the
recovery-point and log-start-offset checkpoints (checkpoint.py), and the log's life: open
(recovery: log_loader.py), close with a clean-shutdown marker (clean_shutdown.py), hand-over to
another worker, delete. The segment list and its lookups are log_segments.py's.

Invariants: ``log_start_offset <= log_end_offset``; ``recovery_point <= log_end_offset`` and
every offset below it is durable; the checkpoint files only move forward; an append either
writes whole batches at the log end or leaves the log unchanged (a partial write it cannot undo
takes the log offline).

Threads: all methods may be called from any thread; one ``RLock`` guards the segment list and
offsets. ``flush`` blocks in fdatasync without that lock (group_commit.py), so the broker calls it
from an executor while its event loop keeps appending and reading. A second lock (``_io_lock``)
keeps index remaps (roll) and file closes away from a sync in progress, a third serialises
checkpoint writes. Lock order: ``_lock`` before either of the others, never the reverse.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.record_batch_header import (
    BASE_OFFSET_OFFSET,
    BATCH_HEADER_SIZE,
    CONTROL_BIT,
    HEADER,
    LOG_OVERHEAD,
    NO_TIMESTAMP,
    PARTITION_LEADER_EPOCH_OFFSET,
    TRANSACTIONAL_BIT,
)
from shardbroker.storage import clean_shutdown, fault_points
from shardbroker.storage.checkpoint import fsync_dir, write_checkpoint
from shardbroker.storage.cleaner_view import CleanerView, SegmentFile
from shardbroker.storage.errors import KafkaStorageError, LogOffsetOutOfRangeError
from shardbroker.storage.file_modes import make_dirs
from shardbroker.storage.file_names import (
    CLEAN_SHUTDOWN_FILE,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
    SWAP_SUFFIX,
    parse_partition_dir,
)
from shardbroker.storage.group_commit import GroupCommit, SyncObserver
from shardbroker.storage.log_loader import LogLoader, RecoveryStats
from shardbroker.storage.log_segment import LogSegment
from shardbroker.storage.log_segments import LogSegments
from shardbroker.storage.log_validator import (
    Buffer,
    check_single_batch,
    pack_epoch,
    pack_offset,
    set_append_time,
    validate_and_assign,
)
from shardbroker.storage.producer_state import ProducerStateManager, read_markers
from shardbroker.storage.transaction_index import AbortedTxn

__all__ = [
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_TIMESTAMP",
    "FetchDataInfo",
    "LogAppendInfo",
    "PartitionLog",
]

#: ListOffsets special timestamps (Kafka's ListOffsetsRequest).
LATEST_TIMESTAMP: Final = -1
EARLIEST_TIMESTAMP: Final = -2
MAX_TIMESTAMP: Final = -3
EARLIEST_LOCAL_TIMESTAMP: Final = -4
_INT_MAX: Final = 0x7FFFFFFF
#: A batch with either bit set goes through the general append path (producer_state.check).
_TXN: Final = TRANSACTIONAL_BIT | CONTROL_BIT


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class LogAppendInfo(NamedTuple):
    """What an append did (Kafka's LogAppendInfo), for the Produce response.

    A NamedTuple: built on every append, and a frozen dataclass took 1.5 us to construct here."""

    first_offset: int
    last_offset: int
    #: The broker's timestamp for LogAppendTime topics, else -1 (NO_TIMESTAMP), as in ProduceResponse.
    log_append_time: int
    log_start_offset: int
    max_timestamp: int
    offset_of_max_timestamp: int
    record_count: int
    valid_bytes: int
    #: flush.messages reached: the broker should wait for ``flush(last_offset + 1)`` before acking.
    flush_required: bool
    #: An idempotent retry of a batch already in the log: nothing was written, offsets are the original's.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class FetchDataInfo:
    """A byte range of one segment file, ready for ``os.sendfile(sock, fd, position, length)``.

    The fd stays open at least ``file.delete.delay.ms`` after retention deletes the segment, so a
    send in progress can finish. ``length`` 0: nothing to return (fetch at the log end).
    """

    fd: int
    path: Path
    position: int
    length: int
    segment_base_offset: int
    fetch_offset: int
    log_start_offset: int
    log_end_offset: int

    def read(self) -> bytes:
        """The bytes themselves (for transports that cannot sendfile, and tests)."""
        return os.pread(self.fd, self.length, self.position) if self.length else b""


class PartitionLog:
    """The segments of one partition. Create with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        config: LogConfig,
        topic: str,
        partition: int,
        clock: Callable[[], int],
        on_flush: SyncObserver | None = None,
    ) -> None:
        self.directory = directory
        self.config = config
        self.topic = topic
        self.partition = partition
        self._clock = clock
        self._lock = threading.RLock()
        self._io_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._segments = LogSegments()
        self._log_end_offset = 0
        self._log_start_offset = 0
        self._recovery_point = 0
        self._last_flush_ms = clock()
        self._dir_dirty = False
        self._offline: str | None = None
        self._pending_deletes: list[tuple[int, LogSegment]] = []
        self._group = GroupCommit(self._prepare_flush, on_sync=on_flush)
        self.producer_state = ProducerStateManager(directory)
        self.recovery_stats = RecoveryStats(True, 0, 0, 0, 0)
        #: Called after an append that wrote transaction markers, still under the log's lock on
        #: the appending thread: the last stable offset may have moved (the broker wakes the
        #: read_committed fetches parked on the partition, whoever appended the markers).
        self.on_markers: Callable[[], None] | None = None
        #: Held by the log cleaner for a whole clean; close, hand-over and delete set the abort
        #: flag and wait for it, so no clean writes into a directory another owner now has.
        self._cleaning = threading.Lock()
        self._cleaner_abort = threading.Event()

    # ------------------------------------------------------------------ open / close

    @classmethod
    def open(
        cls,
        directory: Path,
        config: LogConfig | None = None,
        *,
        topic: str | None = None,
        partition: int | None = None,
        clock: Callable[[], int] = _now_ms,
        on_flush: SyncObserver | None = None,
    ) -> PartitionLog:
        """Open (creating if needed) ``directory``, recovering it if it was not closed cleanly.
        ``on_flush(seconds)`` hears the duration of every flush (group_commit.py)."""
        directory = Path(directory)
        if topic is None or partition is None:
            topic, partition = parse_partition_dir(directory.name)
        make_dirs(directory)
        log = cls(directory, config or LogConfig(), topic, partition, clock, on_flush)
        log._load()
        return log

    def _load(self) -> None:
        loaded = LogLoader(self.directory, self.config, self.topic, self.partition, self._clock()).load()
        self._segments = LogSegments(loaded.segments)
        self._dir_dirty = loaded.created
        self._log_end_offset = loaded.log_end_offset
        self._log_start_offset = loaded.log_start_offset
        self._recovery_point = loaded.recovery_point
        self._group.advance(self._recovery_point)
        self.recovery_stats = loaded.stats
        self.producer_state.rebuild(
            loaded.segments, self._log_start_offset, self._log_end_offset, loaded.snapshots, loaded.scanned
        )
        # An untrusted marker goes too: it says nothing about later appends.
        (self.directory / CLEAN_SHUTDOWN_FILE).unlink(missing_ok=True)
        self._write_checkpoints()  # also fsyncs the directory: the marker's removal is durable

    def close(self) -> None:
        """Flush everything, trim indexes, checkpoint, then write the clean-shutdown marker.

        If any of that fails (or the log is offline) there is no marker, so the next open
        recovers; the files are closed either way."""
        self._stop_cleaning()
        with self._lock, self._io_lock:
            if not self._segments:
                return
            try:
                if self._offline is None:
                    self._close_cleanly()
            except OSError as exc:
                raise KafkaStorageError(f"closing {self.directory}: {exc}") from exc
            finally:
                for seg in self._segments.remove_all():
                    seg.close()
                for _, seg in self._pending_deletes:
                    seg.delete_files()
                self._pending_deletes.clear()

    def hand_over(self) -> list[LogSegment]:
        """Stop using the log and leave its directory to another process of this host (a partition
        moving to another worker): indexes trimmed, checkpoints written as by `close`, and a
        clean-shutdown marker that holds for this boot only (clean_shutdown.py), so the next owner
        opens it without a scan -- but no segment or index is synced: both processes share the
        page cache, the recovery-point checkpoint keeps saying what is durable, and after a host
        crash the log is recovered from there. Returns the
        segments with their files still open: reads already handed out (a sendfile in progress)
        stay valid until the caller closes them (`LogSegment.close`). Raises KafkaStorageError if
        the checkpoints or the marker cannot be written (the next owner then recovers)."""
        self._stop_cleaning()
        with self._lock, self._io_lock:
            if not self._segments:
                return []
            try:
                if self._offline is None:
                    self._close_cleanly(sync=False)
            except OSError as exc:
                raise KafkaStorageError(f"handing over {self.directory}: {exc}") from exc
            finally:
                self._offline = "handed over to another worker"
                segments = self._segments.remove_all() + [seg for _, seg in self._pending_deletes]
                self._pending_deletes = []
            return segments

    def _close_cleanly(self, *, sync: bool = True) -> None:
        active = self._segments.active
        if sync:
            first_unflushed = self._segments.floor(self._recovery_point).base_offset
            for seg in self._segments:
                if seg.base_offset >= first_unflushed:
                    os.fdatasync(seg.fd)
            self._recovery_point = self._log_end_offset
        active.on_become_inactive()
        if sync:  # a hand-over's indexes need no sync: if the host crashes, its marker is not
            # trusted and recovery rebuilds every index from the recovery point on
            for seg in self._segments:
                seg.txn_index.flush()
                if seg is active or not seg.indexes_flushed:
                    seg.offset_index.flush()
                    seg.time_index.flush()
        # The producer state at the log end: the next open (or owner) replays nothing.
        self.producer_state.take_snapshot(self._log_end_offset)
        self._write_checkpoints()
        clean_shutdown.write_marker(self.directory, synced=sync)

    def _write_checkpoints(self) -> None:
        """Write both checkpoint files. The values are read inside ``_checkpoint_lock`` so that
        writers (flush threads, retention) serialise and the files only move forward."""
        key = (self.topic, self.partition)
        with self._checkpoint_lock:
            recovery_point, log_start = self._recovery_point, self._log_start_offset
            try:
                write_checkpoint(self.directory / RECOVERY_POINT_CHECKPOINT, {key: recovery_point})
                write_checkpoint(self.directory / LOG_START_OFFSET_CHECKPOINT, {key: log_start})
            except OSError as exc:  # the old checkpoint is intact (write-temp-then-rename)
                raise KafkaStorageError(f"writing checkpoints in {self.directory}: {exc}") from exc

    def update_config(self, config: LogConfig) -> None:
        """AlterConfigs: new settings apply from the next append (segment.index.bytes from the next
        segment, as in Kafka)."""
        with self._lock:
            self.config = config
            for seg in self._segments:
                seg.config = config

    def delete(self) -> None:
        """DeleteTopics: close without a clean-shutdown marker and remove the directory."""
        self._stop_cleaning()
        with self._lock, self._io_lock:
            for seg in self._segments.remove_all():
                seg.close()
            for _, seg in self._pending_deletes:
                seg.close()
            self._pending_deletes = []
            self._offline = "deleted"
            shutil.rmtree(self.directory, ignore_errors=True)

    def checkpoint(self) -> None:
        """Persist the recovery point and log start offset (the broker calls this periodically,
        like Kafka's log.flush.offset.checkpoint.interval.ms; a stale one only costs scan time)."""
        with self._lock:
            if self._segments:  # closed or handed over: the files may be another owner's now
                self._write_checkpoints()

    # ------------------------------------------------------------------ facts

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def high_watermark(self) -> int:
        """One replica: every appended offset is committed, so the high watermark is the log end
        offset (as broker/partition.py says too)."""
        return self._log_end_offset

    @property
    def last_stable_offset(self) -> int:
        """Kafka's LSO: every transaction below it is decided. ``min(first offset of the earliest
        open transaction, high watermark)``, that first offset raised to the log start offset
        when retention or DeleteRecords removed it (Kafka's maybeIncrementFirstUnstableOffset).
        Derived on each call from the producer state, so appends, markers, retention,
        DeleteRecords and recovery all move it."""
        with self._lock:
            hw = self._log_end_offset
            if not self.producer_state.ongoing:  # every Fetch asks: 150 ns instead of 210 here
                return hw
            return min(max(self.producer_state.first_undecided_offset, self._log_start_offset), hw)

    def collect_aborted_transactions(
        self, start_offset: int, upper_bound_offset: int
    ) -> list[tuple[int, int]]:
        """``(producer_id, first_offset)`` of every aborted transaction overlapping
        ``[start_offset, upper_bound_offset)`` (Kafka's collectAbortedTransactions: entries whose
        marker is at or after ``start_offset`` and whose first offset is below the bound),
        scanning the ``.txnindex`` of the segment holding ``start_offset`` and the later ones
        until an entry's LSO reaches the bound: Fetch's ``aborted_transactions``."""
        with self._lock:
            return self._segments.collect_aborted_transactions(start_offset, upper_bound_offset)

    def aborted_transactions(self, info: FetchDataInfo) -> list[tuple[int, int]]:
        """The aborted transactions a read_committed Fetch returns with ``info`` (Kafka's
        LocalLog.addAbortedTransactions): :meth:`collect_aborted_transactions` from the fetch
        offset to the first offset index entry past the range, else the next segment's base,
        else the log end offset (an upper bound: a few more entries do no harm, the consumer
        only drops batches of the producers named)."""
        with self._lock:
            upper = self._segments.fetch_upper_bound_offset(
                info.segment_base_offset, info.position + info.length
            )
            return self._segments.collect_aborted_transactions(
                info.fetch_offset, self._log_end_offset if upper is None else upper
            )

    @property
    def recovery_point(self) -> int:
        return self._recovery_point

    @property
    def segments(self) -> Sequence[LogSegment]:
        return tuple(self._segments)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def size_in_bytes(self) -> int:
        return self._segments.size_in_bytes()

    @property
    def offline(self) -> bool:
        return self._offline is not None

    def _check_online(self) -> None:
        if self._offline is not None:
            raise KafkaStorageError(f"log {self.directory} is offline: {self._offline}")

    # ------------------------------------------------------------------ append

    def append(
        self,
        data: Buffer | Sequence[Buffer],
        *,
        leader_epoch: int | None = None,
        verify_crc: bool = True,
        allow_control: bool = False,
        transaction_version: int = 0,
    ) -> LogAppendInfo:
        """Validate, assign offsets in place, write in one system call, index.

        ``data``: one buffer of whole batches, or several (written with one pwritev). Writable
        buffers (a memoryview of the receive buffer) are patched in place; read-only ones are
        copied first. Raises a StorageError subclass carrying the Kafka error code; on any
        error the log is unchanged. ``allow_control``: the transaction coordinator's markers
        (control batches), checked with the rules of ``transaction_version`` (2: KIP-890's epoch
        bump on every marker); an ABORT of an open transaction adds a ``.txnindex`` entry.
        """
        # Hot path (every produce): one batch in one writable buffer goes through _append_one.
        if type(data) is bytearray or (type(data) is memoryview and not data.readonly):
            mv = memoryview(data)
            n = mv.nbytes
            if n >= BATCH_HEADER_SIZE:
                f = HEADER.unpack_from(mv, 0)
                # Transactional batches and markers take the general path: one bit test here.
                if f[1] + LOG_OVERHEAD == n and mv.ndim == 1 and mv.itemsize == 1 and not f[5] & _TXN:
                    return self._append_one(mv, n, f, leader_epoch, verify_crc, allow_control)
        # Hot path (every produce): measured per-append costs are in perf/bench_storage.py.
        with self._lock:
            if self._offline is not None:
                self._check_online()
            now = self._clock()
            cfg = self.config
            append_time = now if cfg.message_timestamp_type == "LogAppendTime" else NO_TIMESTAMP
            batches = validate_and_assign(
                data,
                self._log_end_offset,
                max_message_bytes=cfg.max_message_bytes,
                segment_bytes=cfg.segment_bytes,
                verify_crc=verify_crc,
                log_append_time_ms=None if append_time < 0 else append_time,
                leader_epoch=leader_epoch,
                allow_control=allow_control,
            )
            pids = batches.producer_ids
            if len(pids) > 1 or pids[0] >= 0:
                markers = read_markers(batches) if allow_control else None
                dup = self.producer_state.check(batches, markers, transaction_version)
                if dup is not None:
                    return self._duplicate(dup, append_time)
            seg = self._segments.active
            stamps = batches.max_timestamps
            max_ts = stamps[0] if len(stamps) == 1 else max(stamps)
            last_offset = batches.last_offsets[-1]
            if (
                seg.should_roll(batches.total_bytes, max_ts, now, len(pids))
                or last_offset - seg.base_offset > _INT_MAX
            ):
                seg = self._roll_locked(now)
            try:
                seg.append(batches)
            except KafkaStorageError as exc:
                if os.fstat(seg.fd).st_size != seg.size:
                    self._offline = str(exc)  # could not undo a partial write: stop writing
                raise
            self._log_end_offset = leo = last_offset + 1
            if len(pids) > 1 or pids[0] >= 0:
                aborted = self.producer_state.update(batches)
                if aborted:
                    self._index_aborted(seg, aborted)
                if markers and self.on_markers is not None:
                    self.on_markers()
            first_offset = batches.base_offsets[0]
            return LogAppendInfo(
                first_offset,
                last_offset,
                append_time,
                self._log_start_offset,
                max_ts,
                batches.last_offsets[stamps.index(max_ts)],
                leo - first_offset,
                batches.total_bytes,
                leo - self._recovery_point >= cfg.flush_messages,
            )

    def _append_one(
        self,
        mv: memoryview,
        size: int,
        f: tuple[int, ...],
        leader_epoch: int | None,
        verify_crc: bool,
        allow_control: bool,
    ) -> LogAppendInfo:
        """:meth:`append` of exactly one batch: the same checks (log_validator.check_single_batch), the
        same index rule (LogSegment._index_batch), fewer Python steps: 5.5 us instead of 7.0 per
        16 KiB append without I/O (docs/notes/storage.md; perf/bench_storage.py keeps the ratios)."""
        (_, _, _, _, _, attrs, _, _, max_ts, pid, epoch, seq, count) = f
        with self._lock:
            if self._offline is not None:
                self._check_online()
            cfg = self.config
            check_single_batch(mv, f, cfg.max_message_bytes, cfg.segment_bytes, verify_crc, allow_control)
            now = self._clock()
            if pid >= 0:
                dup = self.producer_state.check_one(pid, epoch, seq, count)
                if dup is not None:
                    append_time = now if cfg.message_timestamp_type == "LogAppendTime" else NO_TIMESTAMP
                    return self._duplicate(dup, append_time)
            offset = self._log_end_offset
            last_offset = offset + count - 1
            pack_offset(mv, BASE_OFFSET_OFFSET, offset)
            if leader_epoch is not None:
                pack_epoch(mv, PARTITION_LEADER_EPOCH_OFFSET, leader_epoch)
            append_time = NO_TIMESTAMP
            if cfg.message_timestamp_type == "LogAppendTime":
                set_append_time(mv, 0, size, attrs, now)
                append_time = max_ts = now
            seg = self._segments.active
            if seg.should_roll(size, max_ts, now, 1) or last_offset - seg.base_offset > _INT_MAX:
                seg = self._roll_locked(now)
            try:
                seg.append_one(mv, size, last_offset, max_ts)
            except KafkaStorageError as exc:
                if os.fstat(seg.fd).st_size != seg.size:
                    self._offline = str(exc)
                raise
            self._log_end_offset = leo = last_offset + 1
            if pid >= 0:
                self.producer_state.update_one(pid, epoch, seq, count, offset, last_offset, max_ts)
            return LogAppendInfo(
                offset,
                last_offset,
                append_time,
                self._log_start_offset,
                max_ts,
                last_offset,
                count,
                size,
                leo - self._recovery_point >= cfg.flush_messages,
            )

    def _index_aborted(self, seg: LogSegment, aborted: list[AbortedTxn]) -> None:
        """The ``.txnindex`` entries of the aborts an append's markers made. The markers are written
        already: an index that cannot follow takes the log offline (recovery rebuilds it)."""
        try:
            for txn in aborted:
                seg.txn_index.append(txn)
        except OSError as exc:
            self._offline = f"writing {seg.txn_index.path}: {exc}"
            raise KafkaStorageError(self._offline) from exc

    def _duplicate(self, offsets: tuple[int, int], append_time: int) -> LogAppendInfo:
        """The answer to an idempotent retry of the batch at ``offsets``: nothing written."""
        first, last = offsets
        return LogAppendInfo(
            first,
            last,
            append_time,
            self._log_start_offset,
            NO_TIMESTAMP,
            -1,
            last - first + 1,
            0,
            False,
            True,
        )

    # ------------------------------------------------------------------ read

    def read(
        self, offset: int, max_bytes: int, *, min_one_message: bool = True, max_offset: int | None = None
    ) -> FetchDataInfo:
        """The file range starting at the batch that holds ``offset``.

        Kafka's semantics: bytes from one segment only; ``min(rest of segment, max(max_bytes,
        size of that first batch))`` when ``min_one_message``, so at least one whole batch and
        possibly a partial last one. ``offset`` == log end offset: empty. Outside [log start,
        log end]: LogOffsetOutOfRangeError (OFFSET_OUT_OF_RANGE). ``max_offset`` (a
        read_committed Fetch passes :attr:`last_stable_offset`): nothing from the batch holding
        it on, and empty when ``offset`` is at or past it (Kafka's maxOffsetMetadata).
        """
        with self._lock:
            leo = self._log_end_offset
            if offset == leo or (max_offset is not None and max_offset <= offset <= leo):
                seg = self._segments.active
                return FetchDataInfo(
                    seg.fd, seg.log_path, seg.size, 0, seg.base_offset, offset, self._log_start_offset, leo
                )
            if offset < self._log_start_offset or offset > leo:
                raise LogOffsetOutOfRangeError(
                    f"offset {offset} outside [{self._log_start_offset}, {leo}] "
                    f"of {self.topic}-{self.partition}"
                )
            seg, position, length = self._segments.read(offset, max_bytes, min_one_message)
            if max_offset is not None and max_offset < leo and self._segments.floor(max_offset) is seg:
                found = seg.translate_offset(max_offset, position)
                if found is not None:
                    length = min(length, found[0] - position)
            return FetchDataInfo(
                seg.fd, seg.log_path, position, length, seg.base_offset, offset, self._log_start_offset, leo
            )

    def read_bytes(self, offset: int, max_bytes: int, *, min_one_message: bool = True) -> bytes:
        """:meth:`read`, then the bytes (copying; for tests and non-sendfile transports)."""
        with self._lock:
            return self.read(offset, max_bytes, min_one_message=min_one_message).read()

    # ------------------------------------------------------------------ ListOffsets

    def fetch_offset_by_timestamp(self, timestamp: int) -> tuple[int, int] | None:
        """``(timestamp, offset)`` for ListOffsets. Special values: -2 earliest, -1 latest,
        -3 the batch with the largest timestamp (its last offset), -4 earliest local (= earliest
        here). For a real timestamp: the first record at or after the log start offset whose
        timestamp is >= it; None if there is none (Kafka answers offset -1)."""
        with self._lock:
            if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
                return NO_TIMESTAMP, self._log_start_offset
            if timestamp == LATEST_TIMESTAMP:
                return NO_TIMESTAMP, self._log_end_offset
            if timestamp == MAX_TIMESTAMP:
                best = max(self._segments, key=lambda s: s.max_timestamp_so_far)
                if best.max_timestamp_so_far < 0:
                    return None
                return best.max_timestamp_so_far, max(best.offset_of_max_timestamp, self._log_start_offset)
            if timestamp < 0:
                raise ValueError(f"unsupported ListOffsets timestamp {timestamp}")
            return self._segments.find_offset_by_timestamp(
                timestamp, self._log_start_offset, self._log_end_offset
            )

    # ------------------------------------------------------------------ roll, retention

    def roll(self) -> LogSegment:
        """Start a new segment at the log end offset (if the active one is not empty)."""
        with self._lock:
            self._check_online()
            return self._roll_locked(self._clock())

    def _roll_locked(self, now: int) -> LogSegment:
        old = self._segments.active
        if old.size == 0:
            return old
        base = self._log_end_offset
        try:
            # Kafka's roll: the producer state at the new base, so recovery of the new segment
            # (the active one, after a crash) replays from here.
            self.producer_state.take_snapshot(base)
            seg = LogSegment(self.directory, base, self.config, active=True, now_ms=now)
        except OSError as exc:  # e.g. ENOSPC or EMFILE: the old segment stays active
            raise KafkaStorageError(f"rolling a segment at {base} in {self.directory}: {exc}") from exc
        with self._io_lock:
            old.on_become_inactive()
        if seg.size:  # a leftover file at that name (cannot happen after a clean load): start afresh
            os.ftruncate(seg.fd, 0)
            seg.size = 0
            seg.offset_index.reset()
            seg.time_index.reset()
            seg.txn_index.reset()
        self._segments.add(seg)
        self._dir_dirty = True
        return seg

    def delete_old_segments(self) -> int:
        """Retention (Kafka's deleteOldSegments): whole segments past retention.ms (by their
        largest timestamp), beyond retention.bytes (oldest first), or wholly below the log
        start offset. Only from the front, never the last batch. Returns how many went."""
        with self._lock:
            now = self._clock()
            deletable = self._segments.deletable(self.config, now, self._log_start_offset)
            if deletable == 0:
                return 0
            if deletable >= len(self._segments):
                self._roll_locked(now)  # keep an (empty) active segment at the log end
            return self._delete_segments(deletable, now)

    def _delete_segments(self, count: int, now: int) -> int:
        doomed = self._segments.remove_first(count)
        first = self._segments.first.base_offset
        self._log_start_offset = max(self._log_start_offset, first)
        self._recovery_point = max(self._recovery_point, first)
        self._write_checkpoints()
        for seg in doomed:
            seg.rename_to_deleted()
            self._pending_deletes.append((now + self.config.file_delete_delay_ms, seg))
        self._dir_dirty = True
        self.producer_state.remove_below(self._log_start_offset)
        self.producer_state.delete_snapshots_below(first)
        self.remove_deleted_segments()
        return count

    def remove_deleted_segments(self) -> int:
        """Close and unlink ``.deleted`` segments whose file.delete.delay.ms has passed."""
        with self._lock:
            now = self._clock()
            due = [seg for t, seg in self._pending_deletes if t <= now]
            self._pending_deletes = [(t, seg) for t, seg in self._pending_deletes if t > now]
        if due:
            with self._io_lock:
                for seg in due:
                    seg.delete_files()
        return len(due)

    # ------------------------------------------------------------------ compaction

    @contextlib.contextmanager
    def cleaning(self) -> Iterator[CleanerView | None]:
        """The log cleaner's hold on this log for one clean: the view (`_cleaner_view`), or None
        when another clean holds it, the log is offline or closing, or nothing is inactive. The
        view's fds are closed at the end."""
        if not self._cleaning.acquire(blocking=False):
            yield None
            return
        try:
            view = None if self._cleaner_abort.is_set() else self._cleaner_view()
            try:
                yield view
            finally:
                for fd in view.fds if view is not None else ():
                    os.close(fd)
        finally:
            self._cleaning.release()

    def _stop_cleaning(self) -> None:
        """Abort a clean in progress (it stops at its next chunk) and wait for it to let go."""
        self._cleaner_abort.set()
        with self._cleaning:
            pass

    def _cleaner_view(self) -> CleanerView | None:
        """What the log cleaner reads (log_cleaner.py), taken at once: the segments before the
        active one with a dup of each fd (so a retention delete or a close while it reads cannot
        hand it another file's descriptor), the offsets that bound a clean, the last data offset
        of every producer and the aborted transactions. None when offline or nothing is
        inactive."""
        with self._lock:
            if self._offline is not None or len(self._segments) < 2:
                return None
            inactive = tuple(self._segments)[:-1]
            fds = tuple(os.dup(s.fd) for s in inactive)
            producers = {
                pid: e.last_offset for pid, e in self.producer_state.producers.items() if e.last_offset >= 0
            }
            return CleanerView(
                config=self.config,
                directory=self.directory,
                segments=tuple(
                    SegmentFile(
                        s.base_offset,
                        s.size,
                        s.offset_index.size_in_bytes,
                        s.largest_timestamp(),
                        s.first_batch_timestamp(),
                        os.fstat(fd).st_ino,
                    )
                    for s, fd in zip(inactive, fds, strict=True)
                ),
                fds=fds,
                active_base=self._segments.active.base_offset,
                log_start_offset=self._log_start_offset,
                last_stable_offset=self.last_stable_offset,
                producer_last_offsets=producers,
                aborted=tuple(t for s in inactive for t in s.txn_index.all_aborted_txns()),
                abort=self._cleaner_abort,
            )

    def replace_segments(self, old: Sequence[SegmentFile], cleaned: LogSegment) -> bool:
        """Swap a cleaned group in (Kafka's replaceSegments): its ``.cleaned`` files renamed
        ``.swap`` (the commit point: recovery finishes the swap from here), the old segments
        renamed ``.deleted`` (removed after file.delete.delay.ms, so reads in flight finish),
        the swap renamed to the final names. False (and ``cleaned`` deleted) when the group is
        not in the log any more (the same files, by inode): retention, DeleteRecords, a close
        or a hand-over came first."""
        with self._lock, self._io_lock:
            current = (
                self._segments.replace([(s.base_offset, s.inode) for s in old], cleaned)
                if self._offline is None
                else None
            )
            if current is None:
                cleaned.delete_files()
                return False
            try:
                fault_points.reached("swap:cleaned")
                cleaned.change_file_suffix(SWAP_SUFFIX)
                fsync_dir(self.directory)
                fault_points.reached("swap:swap")
                now = self._clock()
                for i, seg in enumerate(current):
                    seg.rename_to_deleted()
                    self._pending_deletes.append((now + self.config.file_delete_delay_ms, seg))
                    if i == 0:
                        fault_points.reached("swap:one-deleted")
                fault_points.reached("swap:deleted")
                cleaned.change_file_suffix("")
                fsync_dir(self.directory)
                fault_points.reached("swap:done")
            except OSError as exc:  # the files are in a state recovery completes; stop using them
                self._offline = f"swapping in a cleaned segment failed: {exc}"
                raise KafkaStorageError(f"swapping cleaned segment {cleaned.log_path}: {exc}") from exc
            return True

    def delete_records(self, offset: int) -> int:
        """DeleteRecords: move the log start offset up to ``offset`` (-1: the log end offset);
        whole segments below it go at once. Returns the new log start offset (low watermark)."""
        with self._lock:
            self._check_online()
            if offset == -1:
                offset = self._log_end_offset
            if offset < 0 or offset > self._log_end_offset:
                raise LogOffsetOutOfRangeError(
                    f"cannot delete records before {offset}: log ends at {self._log_end_offset}"
                )
            if offset > self._log_start_offset:
                self._log_start_offset = offset
                self._write_checkpoints()
                self.producer_state.remove_below(offset)
                self.delete_old_segments()
            return self._log_start_offset

    # ------------------------------------------------------------------ durability

    def flush_due(self) -> bool:
        """Should the broker run :meth:`flush` now? It polls this on a timer (Kafka's
        log.flush.scheduler.interval.ms) and runs the flush in an executor. True when flush.ms
        has passed since the last flush with something unflushed, or when a rolled segment is
        still unflushed: Kafka flushes a segment when it rolls, which keeps the recovery point
        (and so the scan after a crash) within the active segment whatever flush.ms says."""
        with self._lock:
            if self._log_end_offset <= self._recovery_point:
                return False
            if self._segments.floor(self._recovery_point) is not self._segments.active:
                return True
            return self._clock() - self._last_flush_ms >= self.config.flush_ms

    def flush(self, offset: int | None = None, timeout: float | None = None) -> int:
        """Make every offset below ``offset`` (default: the log end) durable; thread-safe, blocking.

        Concurrent callers share fdatasyncs (group commit). Returns the recovery point.
        Raises KafkaStorageError if a sync fails (the log is then offline)."""
        target = self._log_end_offset if offset is None else offset
        try:
            return self._group.flush(target, timeout)
        except KafkaStorageError as exc:
            with self._lock:
                self._offline = self._offline or str(exc)
            raise

    @property
    def sync_count(self) -> int:
        return self._group.syncs

    def _prepare_flush(self) -> tuple[int, Callable[[], None]]:
        with self._lock:
            if not self._segments:
                raise KafkaStorageError(f"log {self.directory} is closed")
            target = self._log_end_offset
            start = self._segments.floor(self._recovery_point).base_offset
            segs = [
                s
                for s in self._segments
                if s.fd >= 0 and (s.base_offset >= start or not (s.active or s.indexes_flushed))
            ]
            dir_dirty, self._dir_dirty = self._dir_dirty, False

        def action() -> None:
            try:
                with self._io_lock:
                    for seg in segs:
                        if seg.fd >= 0:
                            seg.flush()
                    if dir_dirty:
                        fsync_dir(self.directory)
            except OSError as exc:
                raise KafkaStorageError(f"fdatasync in {self.directory} failed: {exc}") from exc
            with self._lock:
                old = self._segments.floor(self._recovery_point)
                self._recovery_point = max(self._recovery_point, target)
                self._last_flush_ms = self._clock()
                crossed = self._segments.floor(self._recovery_point) is not old
            if crossed:  # a rolled segment became durable: checkpoint it, outside the append lock
                self._write_checkpoints()

        return target, action
