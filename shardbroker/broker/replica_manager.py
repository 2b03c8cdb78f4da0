"""The worker's data plane: the partitions this worker leads, their appends, reads, long polls,
flushes, retention and shutdown (Kafka's ReplicaManager + LogManager, for one worker). Opens,
renames and deletes the partition directories under ``data_dir``.

What it owns
    One `Partition` per partition the metadata image says this worker leads: its
    `PartitionLog` (``<data_dir>/<topic>-<partition>/``, Kafka's layout), the fetch waiters, the
    leader-epoch history and the flush state. It subscribes to the controller channel, so a new
    image opens new partitions, applies changed topic configs, closes partitions led elsewhere
    and deletes the data of deleted topics before the worker acks the image.

Deleting a topic (Kafka's LogManager.asyncDelete)
    The directory is renamed at once to ``<topic>-<partition>.<uuid hex>-delete`` (so the name is
    free for a topic created again with the same name), its files stay open for
    ``file.delete.delay.ms`` (a sendfile of a fetch in progress still reads valid bytes) and are
    then closed and removed. Leftover ``*-delete`` directories of a crash are removed at start.
    Each partition directory holds Kafka's ``partition.metadata`` (``version: 0`` / ``topic_id:
    <base64url>``): a directory of an older incarnation of the topic (deleted while this worker
    was down) is recognised by its topic id and deleted instead of being served as the new one.

Append path (Produce)
    Per partition: leader check against the image, then one `PartitionLog.append` of the client's
    single batch (Kafka requires exactly one batch per partition from Produce v3): header checks,
    CRC-32C (hardware), ``max.message.bytes``, offsets and leader epoch patched in place, one
    write. Records are never decoded. Idempotence is the log's ProducerStateManager (rebuilt from
    the batch headers when a log opens): a retried batch is answered with its original offsets
    and NONE; OUT_OF_ORDER_SEQUENCE_NUMBER (45) and INVALID_PRODUCER_EPOCH (47) come from there.
    One rule is added here: a producer id the partition has no state for must start at sequence
    0, else UNKNOWN_PRODUCER_ID (59). That is Kafka before 2.5 and again Kafka's transactions-v2
    rule (KAFKA-18202); Kafka 2.5-3.x accepts any first sequence from an unknown producer. We
    refuse because a gap we cannot check would otherwise be accepted silently, and Java (>= 2.5)
    and librdkafka (>= 1.4) clients answer UNKNOWN_PRODUCER_ID by bumping their epoch (KIP-360,
    InitProducerId with their id and epoch) and starting again at sequence 0.

High watermark, last stable offset
    Single replica: an append is committed once it is written to the log, so the high watermark
    is the log end offset and fetch waiters are woken by the append itself. No transactions yet:
    the last stable offset is the high watermark.

Durability (``flush.messages``, ``flush.ms``; default: never forced, as in Kafka)
    Written data is in the page cache, which survives a worker crash (SIGKILL) but not a host
    crash. When an append brings the unflushed count to ``flush.messages``, a flush (the log's
    group commit: concurrent requests share fdatasyncs) starts in an executor thread, so the
    event loop keeps serving. ``flush.ms`` is polled on a timer (``log.flush.scheduler.interval.ms``,
    1 s here; Kafka's default never polls). What ``acks`` means on this single-replica broker:

    - ``acks=0``: no response at all.
    - ``acks=1``: answered once the batch is written to the log (page cache). A flush the policy
      asks for is started but not waited for.
    - ``acks=-1`` (all): the in-sync replicas are this one, so the same as 1, except that when
      the policy says a flush is due after this append, the answer waits for that flush (bounded
      by the request's ``timeout_ms``: REQUEST_TIMED_OUT otherwise). A failed flush takes the
      log offline: KAFKA_STORAGE_ERROR (56) for that request and every later append.

Leader epochs
    Batches are stamped with the image's ``leader_epoch`` on append. Each partition keeps Kafka's
    ``leader-epoch-checkpoint`` (``0`` / count / ``epoch startOffset`` lines): when a log is opened
    with an epoch newer than its last entry, ``(epoch, log end offset)`` is added, entries starting
    beyond the log end (recovery truncated the log) are dropped. OffsetForLeaderEpoch answers
    from it as Kafka's LeaderEpochFileCache.endOffsetFor: the log end offset for the current
    epoch, the start offset of the next known epoch for an older one.

Timers (one housekeeping task; all on the loop, each step a few system calls)
    retention (``log.retention.check.interval.ms``, default 300000, Kafka's), removal of
    ``.deleted`` segments whose ``file.delete.delay.ms`` passed, recovery-point checkpoints
    (``log.flush.offset.checkpoint.interval.ms``, default 60000, Kafka's), time-based flushes,
    delayed removal of deleted topics' directories.

Drain
    Flush and close every log (in executor threads, in parallel) with its clean-shutdown marker,
    so the next start skips recovery.

Timers (continued): the periodic checkpoint only rewrites partitions whose recovery point or
log start offset moved (with the default flush policy that is none: the recovery point moves on
flushes and clean closes), and writes them from an executor thread (two fsync'ed files each).

Partition moves (controller.py)
    When the image says another worker (or, mid-move, nobody) leads a partition, it leaves
    ``partitions`` at once (so appends answer NOT_LEADER_OR_FOLLOWER or are forwarded), its
    flushes finish, and `PartitionLog.hand_over` writes checkpoints and the clean-shutdown marker
    without an fdatasync (same host, same page cache) -- all before the image is acked, which is
    what lets the controller give the partition to its next owner, who opens it without a scan.
    Its files stay open a few seconds more (``file.delete.delay.ms``, at most ``HANDOVER_HOLD_S``)
    for fetch responses still being sent: a region is read when its response is written, which
    waits at most for the responses before it on its connection (a long poll: max.wait.ms). Not
    the full 60 s default: 15 moves a second then held ~2,700 descriptors and reached the fd limit.

Known limits: directories of topics deleted while every worker was down stay on disk (their next
incarnation is recognised by ``partition.metadata`` and not served).

Metrics
    Each Partition counts in plain attributes (messages_in, bytes_in, bytes_out, produce and fetch
    requests: 76 ns per append together); `publish_metrics`, on every housekeeping tick (1 s),
    copies the partitions that moved into this worker's rows of the shared counter table, with
    the log end/start offsets, size, segment count and offline flag (ipc/counters.py explains
    the trade and its figures). Every log reports its flush durations to
    ``WorkerCounters.flush`` (the ``on_flush`` callable of storage/group_commit.py), and a failed
    flush republishes its partition so the offline flag shows at the next tick.

Costs on the hot path (no per-record work, no copy of batch bytes besides the one write).
Measured in-process on this 2-core VM, one-record batches so that the write is negligible,
best of 5 x 20,000: ``PartitionLog.append`` 5.2 us; ``ReplicaManager.append`` 6.5 us (+1.3 us:
a dict lookup, one ``struct.unpack_from`` of the 61-byte header, the leader/format/producer
checks); the whole Produce handler for one partition 9.7 us (+3.2 us: the response objects).
Waking fetch waiters costs nothing when there are none. End to end (perf/broker_load.py, 2
workers, full sizes): confluent-kafka producer of 100 B values 0.52 M msgs/s delivered = 0.71 of
its enqueue-only rate in the same run; 1 MiB-batch ingest 526 MB/s = 0.43 of a plain asyncio
sink.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    LOG_FLUSH_OFFSET_CHECKPOINT_INTERVAL_MS,
    LOG_FLUSH_SCHEDULER_INTERVAL_MS,
    LOG_RETENTION_CHECK_INTERVAL_MS,
)
from shardbroker.config.config_def import ConfigError
from shardbroker.config.log_config import LogConfig
from shardbroker.ipc.counters import PartitionRow, WorkerCounters
from shardbroker.metadata.image import MetadataImage, PartitionImage, TopicImage
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_header import (
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    HEADER,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_OFFSET,
    TRANSACTIONAL_BIT,
)
from shardbroker.storage.errors import KafkaStorageError, StorageError
from shardbroker.storage.file_names import delete_dir, is_delete_dir
from shardbroker.storage.leader_epoch_checkpoint import read_leader_epochs, write_leader_epochs
from shardbroker.storage.log import FetchDataInfo, LogAppendInfo, PartitionLog
from shardbroker.storage.log_segment import LogSegment
from shardbroker.storage.partition_metadata import read_partition_metadata, write_partition_metadata

if TYPE_CHECKING:
    from shardbroker.supervision.worker import Worker

__all__ = [
    "AppendResult",
    "Partition",
    "ReplicaManager",
]

log = logging.getLogger(__name__)

#: Housekeeping tick: the finest of the housekeeping intervals (log.*.interval.ms) it honours.
MAX_TICK_S: Final = 1.0
#: Flush threads: fdatasync releases the GIL; group commit merges a partition's concurrent flushes.
FLUSH_THREADS: Final = 4
#: Producer ids asked of the controller at a time (Kafka's ProducerIdManager block size is 1000).
PRODUCER_ID_BLOCK: Final = 1000

_MAX_CODEC: Final = int(CompressionType.ZSTD)  # 5-7 are not codecs

_NONE: Final = int(ErrorCode.NONE)
#: Largest single write of ``append_batches`` (one pwritev; bounds the iovec and the lock hold).
_MAX_LOT_BYTES: Final = 64 << 20


#: Longest a handed-over partition's files stay open here (see "Partition moves" above).
HANDOVER_HOLD_S: Final = 5.0


class AppendResult(NamedTuple):
    """One partition's answer to a Produce, before any durability wait."""

    error_code: int
    base_offset: int = -1
    log_append_time: int = -1
    log_start_offset: int = -1
    error_message: str | None = None
    #: acks=-1 must wait until this offset is durable (-1: nothing to wait for).
    flush_offset: int = -1


_UNKNOWN: Final = AppendResult(
    int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), error_message="This server does not host this topic-partition."
)
_NOT_LEADER: Final = AppendResult(
    int(ErrorCode.NOT_LEADER_OR_FOLLOWER),
    error_message="Another worker leads this partition: send it there (see current_leader or Metadata).",
)


@dataclass(slots=True)
class _FlushState:
    """At most one flush job per partition in an executor thread, plus one follow-up."""

    running: asyncio.Future[None] | None = None
    running_target: int = 0
    follow_up: asyncio.Future[None] | None = None


class Partition:
    """A partition this worker leads: its log and the state the broker keeps beside it."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "checkpointed",
        "directory",
        "epochs",
        "fetch_requests",
        "flush",
        "index",
        "leader_epoch",
        "log",
        "messages_in",
        "metrics",
        "produce_requests",
        "published",
        "size_base",
        "topic",
        "topic_id",
        "waiters",
    )

    def __init__(
        self, topic: str, index: int, topic_id: uuid.UUID, leader_epoch: int, plog: PartitionLog
    ) -> None:
        self.topic = topic
        self.index = index
        self.topic_id = topic_id
        self.leader_epoch = leader_epoch
        self.log = plog
        self.directory = plog.directory
        #: Futures of fetches parked on this partition; an append resolves them all.
        self.waiters: set[asyncio.Future[None]] = set()
        #: Leader-epoch history: (epoch, start offset), ascending.
        self.epochs: list[tuple[int, int]] = []
        self.flush = _FlushState()
        #: (recovery point, log start offset) last written by the periodic checkpoint.
        self.checkpointed = (plog.recovery_point, plog.log_start_offset)
        # Counters since this worker opened the partition, published to its row of the shared
        # counter table (``metrics``) by ReplicaManager.publish_metrics (ipc/counters.py: why).
        self.messages_in = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.produce_requests = 0
        self.fetch_requests = 0
        #: log size = size_base + bytes_in (reset on open, retention and DeleteRecords).
        self.size_base = 0
        #: (produce_requests, fetch_requests) last published; None: publish at the next tick.
        self.published: tuple[int, int] | None = None
        self.metrics = PartitionRow(-1)

    def __repr__(self) -> str:
        return f"Partition({self.topic}-{self.index}, epoch {self.leader_epoch})"

    @property
    def high_watermark(self) -> int:
        """Single replica: everything written is committed."""
        return self.log.log_end_offset

    @property
    def last_stable_offset(self) -> int:
        return self.log.log_end_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    def wake(self) -> None:
        """Resolve every parked fetch (they re-read and decide whether they have enough)."""
        waiters = self.waiters
        if waiters:
            self.waiters = set()
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def check_leader_epoch(self, current_leader_epoch: int) -> int:
        """Kafka's fencing of a client's ``current_leader_epoch`` (-1: not checked)."""
        if current_leader_epoch < 0 or current_leader_epoch == self.leader_epoch:
            return _NONE
        if current_leader_epoch < self.leader_epoch:
            return int(ErrorCode.FENCED_LEADER_EPOCH)
        return int(ErrorCode.UNKNOWN_LEADER_EPOCH)

    def end_offset_for_epoch(self, requested: int) -> tuple[int, int]:
        """``(epoch, end offset)`` as Kafka's LeaderEpochFileCache.endOffsetFor."""
        epochs = self.epochs
        if requested < 0 or not epochs:
            return -1, -1
        if requested == epochs[-1][0]:
            return requested, self.log.log_end_offset
        higher = next((e for e in epochs if e[0] > requested), None)
        if higher is None:
            return -1, -1  # newer than anything we know
        floor = None
        for e in epochs:
            if e[0] <= requested:
                floor = e
        return (requested if floor is None else floor[0]), higher[1]

    def epoch_of_offset(self, offset: int) -> int:
        """The leader epoch of the batch at ``offset`` (ListOffsets v4+), -1 if unknown."""
        found = -1
        for epoch, start in self.epochs:
            if start <= offset:
                found = epoch
            else:
                break
        return found


# ---------------------------------------------------------------------------------- manager


class ReplicaManager:
    """The partitions this worker leads (a worker Service: start, then drain)."""

    def __init__(
        self,
        node_id: int,
        config: BrokerConfig,
        channel: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        counters: WorkerCounters | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.channel = channel
        #: Shared per-partition counters (ipc/counters.py); private memory when nobody reads them.
        self.counters = counters if counters is not None else WorkerCounters.private()
        #: More publishers run on the same tick (GroupCoordinator.publish_offsets: group lag).
        self._publishers: list[Callable[[], None]] = []
        self.data_dir = Path(config.data_dir)
        self._clock = clock
        #: topic -> partition index -> Partition (nested: handlers look up a topic once per request).
        self.partitions: dict[str, dict[int, Partition]] = {}
        self._image: MetadataImage | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._pending_dir_deletes: list[tuple[float, Partition, Path]] = []
        #: Files of handed-over partitions, closed once file.delete.delay.ms has passed (due, segments).
        self._pending_closes: list[tuple[float, list[LogSegment]]] = []
        self._image_applied: asyncio.Future[None] | None = None
        self._closed = False
        self._pid_lock = asyncio.Lock()
        self._pid_next = self._pid_end = 0
        self._names_by_id: tuple[MetadataImage | None, dict[uuid.UUID, str]] = (None, {})
        self.retention_check_interval_s = config.get(LOG_RETENTION_CHECK_INTERVAL_MS) / 1000
        self.checkpoint_interval_s = config.get(LOG_FLUSH_OFFSET_CHECKPOINT_INTERVAL_MS) / 1000
        self.flush_interval_s = config.get(LOG_FLUSH_SCHEDULER_INTERVAL_MS) / 1000
        now = clock()
        self._next_retention = now + self.retention_check_interval_s
        self._next_checkpoint = now + self.checkpoint_interval_s
        self._next_flush_check = now + self.flush_interval_s

    # ------------------------------------------------------------------ lifecycle

    @property
    def image(self) -> MetadataImage:
        image: MetadataImage = self.channel.image
        return image

    async def start(self, worker: Worker | None = None) -> None:
        """Open (recovering if needed) every partition this worker leads, then follow the image."""
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=FLUSH_THREADS, thread_name_prefix=f"flush-{self.node_id}"
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_delete_dirs()
        image = self.channel.image
        started = time.monotonic()
        self._apply(None, image)
        count = sum(len(p) for p in self.partitions.values())
        log.info("worker %d: %d partitions opened in %.3f s", self.node_id, count, time.monotonic() - started)
        self.channel.subscribe(self._on_image)
        self.publish_metrics()
        self._housekeeping = asyncio.get_running_loop().create_task(
            self._housekeeping_loop(), name=f"replica-housekeeping-{self.node_id}"
        )

    async def drain(self) -> None:
        """Flush and close every log cleanly (clean-shutdown marker: the next start skips recovery)."""
        if self._closed:
            return
        self._closed = True
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        parts = [p for by_index in self.partitions.values() for p in by_index.values()]
        self.partitions = {}
        for p in parts:
            p.wake()
        loop = asyncio.get_running_loop()
        await self._flushes_done(parts)  # before their files close
        closes = [loop.run_in_executor(self._executor, self._close_partition, p) for p in parts]
        closes += [
            loop.run_in_executor(self._executor, self._finish_dir_delete, p, d)
            for _, p, d in self._pending_dir_deletes
        ]
        self._pending_dir_deletes = []
        self._close_handed_over(float("inf"))
        await asyncio.gather(*closes, return_exceptions=True)
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _close_partition(self, p: Partition) -> None:
        try:
            p.log.close()
        except StorageError as exc:
            log.error("closing %s: %s (the next start recovers it)", p, exc)

    # ------------------------------------------------------------------ image changes

    async def next_image(self, timeout: float) -> bool:
        """Wait for the next metadata image to be applied here; False after ``timeout`` s (a
        request for a partition that is between the two steps of a move waits for its placement)."""
        if self._image_applied is None or self._image_applied.done():
            self._image_applied = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._image_applied), timeout)
        except TimeoutError:
            return False
        return True

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        try:
            await self._follow_image(old, new)
        finally:
            if self._image_applied is not None and not self._image_applied.done():
                self._image_applied.set_result(None)

    async def _follow_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if self._closed:
            return
        moved = self._apply(old, new)
        if moved:
            # Before this image is acked: the controller gives a moved partition to its next
            # owner only once this worker has let go of it (controller.py, partition moves).
            await self._flushes_done(moved)
            loop = asyncio.get_running_loop()
            handed = await asyncio.gather(
                *(loop.run_in_executor(self._executor, self._hand_over, p) for p in moved)
            )
            for p, segments in zip(moved, handed, strict=True):
                hold = min(p.log.config.file_delete_delay_ms / 1000, HANDOVER_HOLD_S)
                self._pending_closes.append((self._clock() + hold, segments))

    @staticmethod
    async def _flushes_done(parts: list[Partition]) -> None:
        """Wait for the flush jobs of ``parts`` (before their files close or change hands)."""
        for p in parts:
            for fut in (p.flush.running, p.flush.follow_up):
                if fut is not None:
                    with contextlib.suppress(Exception):
                        await fut

    def _apply(self, old: MetadataImage | None, new: MetadataImage) -> list[Partition]:
        """Open, reconfigure, close and delete partitions so that they match ``new``; returns the
        partitions now led elsewhere (or by nobody: a move in progress), for `_hand_over`."""
        self._image = new
        moved: list[Partition] = []
        led: dict[str, dict[int, tuple[TopicImage, PartitionImage]]] = {}
        for topic, part in new.partitions_led_by(self.node_id):
            led.setdefault(topic.name, {})[part.partition] = (topic, part)
        # Partitions no longer led here: deleted topics lose their data, moved ones are closed.
        for name, by_index in list(self.partitions.items()):
            topic_now = new.topics.get(name)
            for index, p in list(by_index.items()):
                keep = name in led and index in led[name] and led[name][index][0].topic_id == p.topic_id
                if keep:
                    continue
                del by_index[index]
                p.wake()  # parked fetches re-check and answer with the new state
                self.counters.close_partition(p.metrics)
                if topic_now is None or topic_now.topic_id != p.topic_id:
                    self._delete_partition(p)
                else:
                    moved.append(p)
            if not by_index:
                del self.partitions[name]
        # New partitions, changed configs and epochs.
        for name, by_index_img in led.items():
            for index, (topic, part) in by_index_img.items():
                cur = self.partitions.get(name, {}).get(index)
                if cur is None:
                    try:
                        cur = self._open_partition(topic, part)
                    except (StorageError, OSError) as exc:
                        log.error("cannot open %s-%d: %s", name, index, exc)
                        continue
                    self.partitions.setdefault(name, {})[index] = cur
                    continue
                if old is not None:
                    old_topic = old.topics.get(name)
                    if old_topic is None or old_topic.configs != topic.configs:
                        cur.log.update_config(self._log_config(topic))
                if part.leader_epoch != cur.leader_epoch:
                    self._new_epoch(cur, part.leader_epoch)
        return moved

    def _hand_over(self, p: Partition) -> list[LogSegment]:
        """Let go of a partition that moves to another worker (an executor thread, once its
        flushes are done): `PartitionLog.hand_over` (checkpoints and the clean-shutdown marker, no
        fdatasync). Its files stay open for ``file.delete.delay.ms``, at most `HANDOVER_HOLD_S`
        (`_close_handed_over`), so that fetch responses already holding a file region still send
        valid bytes."""
        try:
            segments = p.log.hand_over()
        except StorageError as exc:
            log.error("handing over %s: %s (its next owner recovers it)", p, exc)
            return []
        log.info("worker %d handed over %s at log end offset %d", self.node_id, p, p.log.log_end_offset)
        return segments

    def _log_config(self, topic: TopicImage) -> LogConfig:
        try:
            return self.config.log_defaults.overrides(topic.configs)
        except ConfigError as exc:  # the controller validated them; a newer config name, say
            log.error("topic %s: %s; using the broker defaults", topic.name, exc)
            return self.config.log_defaults

    def _open_partition(self, topic: TopicImage, part: PartitionImage) -> Partition:
        directory = self.data_dir / f"{topic.name}-{part.partition}"
        if directory.exists():
            on_disk = read_partition_metadata(directory)
            if on_disk is not None and on_disk != topic.topic_id:
                # A deleted incarnation of this topic (deleted while this worker was down).
                stale = delete_dir(directory)
                os.rename(directory, stale)
                shutil.rmtree(stale, ignore_errors=True)
                log.info("removed %s: topic id %s, not %s", directory, on_disk, topic.topic_id)
        plog = PartitionLog.open(
            directory,
            self._log_config(topic),
            topic=topic.name,
            partition=part.partition,
            on_flush=self.counters.flush,
        )
        if read_partition_metadata(directory) != topic.topic_id:
            write_partition_metadata(directory, topic.topic_id)
        p = Partition(topic.name, part.partition, topic.topic_id, part.leader_epoch, plog)
        p.metrics = self.counters.open_partition(topic.name, part.partition)
        self.refresh_log_gauges(p)
        self._publish_partition(p)  # a row's log end offset is never the zero of a fresh row
        stored = read_leader_epochs(directory)
        p.epochs = [e for e in stored if e[1] <= plog.log_end_offset]  # truncated away: forgotten
        if not p.epochs or p.epochs[-1][0] < part.leader_epoch:
            self._new_epoch(p, part.leader_epoch)
        elif p.epochs != stored:
            write_leader_epochs(directory, p.epochs)
        stats = plog.recovery_stats
        if not stats.clean_shutdown and stats.segments_recovered:
            log.warning(
                "recovered %s: %d segments scanned, %d bytes truncated, %d segments deleted",
                directory,
                stats.segments_recovered,
                stats.bytes_truncated,
                stats.segments_deleted,
            )
        return p

    @staticmethod
    def refresh_log_gauges(p: Partition) -> None:
        """After the log's size or start offset changed other than by an append (open, retention,
        DeleteRecords): recompute the size base and publish at the next tick."""
        p.size_base = p.log.size_in_bytes - p.bytes_in
        p.published = None

    def add_publisher(self, publish: Callable[[], None]) -> None:
        """Run ``publish`` after the partitions on every `publish_metrics` (the 1 s tick)."""
        self._publishers.append(publish)

    def publish_metrics(self) -> None:
        """Copy every changed partition's counters and the request accumulators to the shared
        counter table (each housekeeping tick, 1 s; ipc/counters.py says why not per append),
        then run the other publishers (`add_publisher`)."""
        self.counters.publish()
        for by_index in self.partitions.values():
            for p in by_index.values():
                mark = p.published
                if mark is not None and mark[0] == p.produce_requests and mark[1] == p.fetch_requests:
                    continue  # idle: nothing moved
                self._publish_partition(p)
        for publish in self._publishers:
            try:
                publish()
            except Exception:  # one bad publisher must not stop the partitions' tick
                log.exception("metrics publisher")

    def _publish_partition(self, p: Partition) -> None:
        p.published = (p.produce_requests, p.fetch_requests)
        plog = p.log
        self.counters.publish_partition(
            p.metrics,
            p.messages_in,
            p.bytes_in,
            p.bytes_out,
            plog.log_end_offset,
            plog.log_start_offset,
            p.size_base + p.bytes_in,
            p.produce_requests,
            p.fetch_requests,
            plog.segment_count,
            plog.offline,
        )

    def _new_epoch(self, p: Partition, epoch: int) -> None:
        p.leader_epoch = epoch
        if not p.epochs or p.epochs[-1][0] < epoch:
            # The first entry covers what the log already holds (written before histories were kept).
            start = p.log.log_end_offset if p.epochs else p.log.log_start_offset
            p.epochs.append((epoch, start))
            try:
                write_leader_epochs(p.directory, p.epochs)
            except OSError as exc:
                log.error("writing the leader epochs of %s: %s", p, exc)

    def _delete_partition(self, p: Partition) -> None:
        """Rename now (the name is free again), close and remove after file.delete.delay.ms."""
        target = delete_dir(p.directory)
        try:
            os.rename(p.directory, target)
        except OSError as exc:
            log.error("renaming %s for deletion: %s", p.directory, exc)
            target = p.directory
        delay = p.log.config.file_delete_delay_ms / 1000
        self._pending_dir_deletes.append((self._clock() + delay, p, target))

    def _close_handed_over(self, now: float) -> None:
        keep = []
        for due, segments in self._pending_closes:
            if due > now:
                keep.append((due, segments))
                continue
            for seg in segments:
                seg.close()
        self._pending_closes = keep

    @staticmethod
    def _checkpoint(parts: list[Partition]) -> None:
        for p in parts:
            try:
                p.log.checkpoint()
            except StorageError as exc:
                log.error("checkpoint of %s: %s", p, exc)

    @staticmethod
    def _finish_dir_delete(p: Partition, target: Path) -> None:
        p.log.delete()  # closes the files; its rmtree of the old name finds nothing
        shutil.rmtree(target, ignore_errors=True)

    def _remove_stale_delete_dirs(self) -> None:
        for entry in os.scandir(self.data_dir):
            if entry.is_dir() and is_delete_dir(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)

    # ------------------------------------------------------------------ lookups

    def get(self, topic: str, index: int) -> Partition | None:
        by_index = self.partitions.get(topic)
        return None if by_index is None else by_index.get(index)

    def iter_partitions(self) -> Iterable[Partition]:
        for by_index in self.partitions.values():
            yield from by_index.values()

    def topic_name(self, topic_id: uuid.UUID) -> str | None:
        """The name of the topic with this id (Fetch v13+), from a per-image cache."""
        image = self.image
        if self._names_by_id[0] is not image:
            self._names_by_id = (image, {t.topic_id: t.name for t in image.topics.values()})
        return self._names_by_id[1].get(topic_id)

    def not_here_error(self, topic: str, index: int) -> int:
        """The error for a partition this worker does not serve: unknown, or led elsewhere."""
        t = self.image.topics.get(topic)
        if t is None or t.partition(index) is None:
            return int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
        return int(ErrorCode.NOT_LEADER_OR_FOLLOWER)

    def leader_of(self, topic: str, index: int) -> tuple[int, int]:
        """``(leader id, leader epoch)`` from the image, ``(-1, -1)`` if unknown."""
        t = self.image.topics.get(topic)
        part = None if t is None else t.partition(index)
        return (-1, -1) if part is None else (part.leader, part.leader_epoch)

    # ------------------------------------------------------------------ append

    def append(self, topic: str, index: int, records: Any) -> AppendResult:
        """Append one Produce partition's records (exactly one v2 batch). Never raises for bad
        input: the error code is in the result."""
        by_index = self.partitions.get(topic)
        p = None if by_index is None else by_index.get(index)
        if p is None:
            return _NOT_LEADER if self.not_here_error(topic, index) == _NOT_LEADER.error_code else _UNKNOWN
        p.produce_requests += 1
        if records is None:
            return AppendResult(int(ErrorCode.INVALID_RECORD), error_message="null records")
        n = len(records)
        if n < BATCH_HEADER_SIZE:
            if n > MAGIC_OFFSET and records[MAGIC_OFFSET] in (0, 1):
                return AppendResult(
                    int(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT),
                    error_message=f"message format v{records[MAGIC_OFFSET]} is not supported: "
                    "use record batch v2",
                )
            return AppendResult(
                int(ErrorCode.CORRUPT_MESSAGE) if n else int(ErrorCode.INVALID_RECORD),
                error_message=f"{n} bytes cannot hold a record batch",
            )
        (_, length, _, magic, _, attrs, _, _, _, pid, epoch, seq, _) = HEADER.unpack_from(records, 0)
        if magic != MAGIC:
            if magic in (0, 1):
                return AppendResult(
                    int(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT),
                    error_message=f"message format v{magic} is not supported: use record batch v2",
                )
            return AppendResult(int(ErrorCode.CORRUPT_MESSAGE), error_message=f"invalid magic {magic}")
        if length + LOG_OVERHEAD != n:
            if length + LOG_OVERHEAD < n and length >= BATCH_HEADER_SIZE - LOG_OVERHEAD:
                # Kafka's ProduceRequest rule from v3: exactly one batch per partition.
                return AppendResult(
                    int(ErrorCode.INVALID_RECORD),
                    error_message="Produce v3+ must carry exactly one record batch per partition",
                )
            return AppendResult(
                int(ErrorCode.CORRUPT_MESSAGE),
                error_message=f"batch declares {length + LOG_OVERHEAD} bytes but {n} were sent",
            )
        if attrs & COMPRESSION_MASK > _MAX_CODEC:
            return AppendResult(
                int(ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
                error_message=f"unknown compression type id {attrs & COMPRESSION_MASK}",
            )
        if attrs & TRANSACTIONAL_BIT:
            return AppendResult(
                int(ErrorCode.INVALID_TXN_STATE), error_message="transactions are not supported"
            )
        plog = p.log
        if pid >= 0 and seq != 0 and pid not in plog.producer_state.producers:
            return AppendResult(
                int(ErrorCode.UNKNOWN_PRODUCER_ID),
                error_message=f"no state for producer {pid} (epoch {epoch}): first sequence must be 0",
            )
        try:
            info = plog.append(records, leader_epoch=p.leader_epoch)
        except StorageError as exc:
            return AppendResult(exc.error_code, error_message=str(exc))
        if info.duplicate:
            return AppendResult(_NONE, info.first_offset, info.log_append_time, info.log_start_offset)
        flush_offset = self._appended(p, info, n)
        return AppendResult(
            _NONE, info.first_offset, info.log_append_time, info.log_start_offset, None, flush_offset
        )

    def _appended(self, p: Partition, info: LogAppendInfo, size: int) -> int:
        """Bookkeeping after a write: counters, long-poll wake-up, flush policy. Returns the offset
        an acks=all answer waits to be durable (-1: none)."""
        p.messages_in += info.record_count
        p.bytes_in += size
        if p.waiters:
            p.wake()
        if not info.flush_required:
            return -1
        flush_offset = info.last_offset + 1
        self.request_flush(p, flush_offset)
        return flush_offset

    def append_batches(self, topic: str, index: int, batches: list[memoryview]) -> list[AppendResult]:
        """Append several whole batches of one partition in one write (a local producer's ring
        drain: broker/local_clients.py), one result per batch, same checks and bookkeeping as
        :meth:`append`. Idempotent, transactional or unknown-codec batches, and any lot that one
        bad batch makes the log refuse, go through :meth:`append` one by one instead, so each
        batch gets its own error and the good ones are still written, in order."""
        p = self.get(topic, index)
        if p is None or len(batches) == 1:
            return [self.append(topic, index, b) for b in batches]
        counts = []
        for b in batches:
            if len(b) < BATCH_HEADER_SIZE:
                return [self.append(topic, index, b) for b in batches]
            f = HEADER.unpack_from(b, 0)
            if (
                f[1] + LOG_OVERHEAD != len(b)
                or f[5] & (COMPRESSION_MASK | TRANSACTIONAL_BIT) > _MAX_CODEC
                or f[9] >= 0
            ):
                return [self.append(topic, index, b) for b in batches]
            counts.append(f[12])
        # Lots of at most segment.bytes: the log refuses a larger single append.
        limit = min(p.log.config.segment_bytes, _MAX_LOT_BYTES)
        if sum(len(b) for b in batches) > limit:
            out: list[AppendResult] = []
            lot: list[memoryview] = []
            size = 0
            for b in batches:
                if lot and size + len(b) > limit:
                    out += self.append_batches(topic, index, lot)
                    lot, size = [], 0
                lot.append(b)
                size += len(b)
            return out + self.append_batches(topic, index, lot)
        try:
            info = p.log.append(batches, leader_epoch=p.leader_epoch)
        except StorageError:
            return [self.append(topic, index, b) for b in batches]
        p.produce_requests += 1
        flush_offset = self._appended(p, info, info.valid_bytes)
        results = []
        base = info.first_offset
        for count in counts:
            results.append(
                AppendResult(_NONE, base, info.log_append_time, info.log_start_offset, None, flush_offset)
            )
            base += count
        return results

    # ------------------------------------------------------------------ durability

    def request_flush(self, p: Partition, offset: int) -> asyncio.Future[None]:
        """A future resolved once every offset below ``offset`` is durable (group commit in an
        executor thread; at most one job per partition runs, one more is queued behind it)."""
        loop = asyncio.get_running_loop()
        st = p.flush
        if p.log.recovery_point >= offset:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        if st.running is None:
            return self._start_flush(p, loop)
        if st.running_target >= offset:
            return st.running
        if st.follow_up is None:
            st.follow_up = loop.create_future()
        return st.follow_up

    def _start_flush(self, p: Partition, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        st = p.flush
        target = p.log.log_end_offset
        fut: asyncio.Future[None] = loop.create_future()
        st.running, st.running_target = fut, target
        job = loop.run_in_executor(self._executor, p.log.flush, target)

        def finished(job: asyncio.Future[int]) -> None:
            exc = job.exception()
            if exc is not None:
                log.error("flush of %s failed: %s", p, exc)
                p.published = None  # the row's offline flag goes up at the next tick
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: fire-and-forget flushes (acks=1) need no reader
            else:
                fut.set_result(None)
            st.running = None
            follow = st.follow_up
            if follow is not None:
                st.follow_up = None
                if exc is not None:
                    follow.set_exception(exc)
                    follow.exception()
                else:
                    nxt = self._start_flush(p, loop)
                    nxt.add_done_callback(lambda f: _chain(f, follow))

        job.add_done_callback(finished)
        return fut

    async def wait_durable(self, p: Partition, offset: int, timeout: float) -> int:
        """acks=-1: wait for the flush the policy asked for; the error code to answer with."""
        fut = self.request_flush(p, offset)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return int(ErrorCode.REQUEST_TIMED_OUT)
        except KafkaStorageError:
            return int(ErrorCode.KAFKA_STORAGE_ERROR)
        except StorageError as exc:
            return exc.error_code
        return _NONE

    # ------------------------------------------------------------------ read

    def read(self, p: Partition, offset: int, max_bytes: int, min_one_message: bool) -> FetchDataInfo:
        """The file range to send (raises LogOffsetOutOfRangeError, KafkaStorageError)."""
        return p.log.read(offset, max_bytes, min_one_message=min_one_message)

    async def wait_for_data(self, partitions: Iterable[Partition], timeout: float) -> bool:
        """Park until an append to any of ``partitions`` (True) or ``timeout`` seconds (False)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        parked = list(partitions)
        for p in parked:
            p.waiters.add(fut)
        self.counters.add_fetch_waiters(1)
        try:
            done, _ = await asyncio.wait((fut,), timeout=timeout)
            return bool(done)
        finally:
            self.counters.add_fetch_waiters(-1)
            if not fut.done():
                fut.cancel()
            for p in parked:
                p.waiters.discard(fut)

    # ------------------------------------------------------------------ producer ids

    async def allocate_producer_id(self) -> int:
        """A producer id never handed out before (InitProducerId), from blocks of
        ``PRODUCER_ID_BLOCK`` that the controller persists (ControllerUnavailable propagates)."""
        async with self._pid_lock:
            if self._pid_next >= self._pid_end:
                block = await self.channel.request("allocate_producer_ids", {"count": PRODUCER_ID_BLOCK})
                first, count = int(block["first"]), int(block["count"])
                if count <= 0:
                    raise RuntimeError(f"the controller allocated an empty producer id block: {block}")
                self._pid_next, self._pid_end = first, first + count
            pid = self._pid_next
            self._pid_next += 1
            return pid

    # ------------------------------------------------------------------ housekeeping

    async def _housekeeping_loop(self) -> None:
        tick = min(
            MAX_TICK_S, self.retention_check_interval_s, self.checkpoint_interval_s, self.flush_interval_s
        )
        while True:
            await asyncio.sleep(tick)
            try:
                self.housekeeping()
            except Exception:  # a timer must outlive one bad partition
                log.exception("replica housekeeping")

    def housekeeping(self, now: float | None = None) -> None:
        """One tick of the timers (public for tests: pass ``now`` to jump the clock)."""
        now = self._clock() if now is None else now
        self.publish_metrics()
        if now >= self._next_flush_check:
            self._next_flush_check = now + self.flush_interval_s
            for p in self.iter_partitions():
                if p.log.config.flush_ms < (1 << 62) and p.log.flush_due():
                    self.request_flush(p, p.log.log_end_offset)
        for p in self.iter_partitions():
            p.log.remove_deleted_segments()
        if now >= self._next_retention:
            self._next_retention = now + self.retention_check_interval_s
            for p in self.iter_partitions():
                try:
                    deleted = p.log.delete_old_segments()
                except StorageError as exc:
                    log.error("retention of %s: %s", p, exc)
                    continue
                if deleted:
                    log.info("retention deleted %d segments of %s", deleted, p)
                    self.refresh_log_gauges(p)
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.checkpoint_interval_s
            moved = []
            for p in self.iter_partitions():
                mark = (p.log.recovery_point, p.log.log_start_offset)
                if mark != p.checkpointed:  # the log itself rewrites them on retention/DeleteRecords
                    p.checkpointed = mark
                    moved.append(p)
            if moved:
                # Two fsync'ed files per partition: off the loop.
                asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint, moved)
        if self._pending_closes:
            self._close_handed_over(now)
        if self._pending_dir_deletes:
            due = [(t, p, d) for t, p, d in self._pending_dir_deletes if t <= now]
            if due:
                self._pending_dir_deletes = [e for e in self._pending_dir_deletes if e[0] > now]
                for _, p, d in due:
                    self._finish_dir_delete(p, d)


def _chain(src: asyncio.Future[None], dst: asyncio.Future[None]) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
        dst.exception()
    else:
        dst.set_result(None)
