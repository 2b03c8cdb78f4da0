"""The worker's data plane (Kafka's ReplicaManager, for one worker): the registry of the
partitions this worker leads, kept equal to the metadata image, and the entry points handlers
use: append, read, long poll, lookups, producer ids, metrics publishing, start and drain.

It subscribes to the controller channel, so a new image opens new partitions, applies changed
topic configs and leader epochs, hands over partitions led elsewhere and deletes those of deleted
topics (log_manager.py) before the worker acks the image. A partition leaves ``partitions`` at
once when the image says another worker (or, mid-move, nobody) leads it, so appends answer
NOT_LEADER_OR_FOLLOWER (or are forwarded) and parked fetches wake to answer with the new state.

The parts: partition.py (one led partition), leader_append.py (the append path),
log_flusher.py (flushes and acks=-1 waits), log_manager.py (directories, files and timers).
Metrics: every housekeeping tick (1 s) copies the partitions whose counters moved into this
worker's rows of the shared counter table (ipc/counters.py explains the trade and its figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from shardbroker.broker.leader_append import (
    AppendResult,
    append_batches_to_leader,
    append_marker_to_leader,
    append_to_leader,
)
from shardbroker.broker.log_cleaner_service import LogCleanerService
from shardbroker.broker.log_flusher import LogFlusher
from shardbroker.broker.log_manager import LogManager
from shardbroker.broker.partition import FetchWaiter, Partition
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.ipc.counters import WorkerCounters
from shardbroker.metadata.image import MetadataImage, PartitionImage, TopicImage
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.errors import StorageError
from shardbroker.storage.log import FetchDataInfo

if TYPE_CHECKING:
    from shardbroker.supervision.worker import Worker

__all__ = ["ReplicaManager"]

log = logging.getLogger(__name__)

#: Producer ids asked of the controller at a time (Kafka's ProducerIdManager block size is 1000).
PRODUCER_ID_BLOCK: Final = 1000

_UNKNOWN: Final = AppendResult(
    int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), error_message="This server does not host this topic-partition."
)
_NOT_LEADER: Final = AppendResult(
    int(ErrorCode.NOT_LEADER_OR_FOLLOWER),
    error_message="Another worker leads this partition: send it there (see current_leader or Metadata).",
)


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
        self._clock = clock
        self.flusher = LogFlusher(node_id)
        self.logs = LogManager(node_id, config, self.flusher, clock=clock, on_flush=self.counters.flush)
        #: Compacts this worker's compacted partitions in its own threads.
        self.cleaner = LogCleanerService(node_id, config, self._partition_snapshot)
        #: topic -> partition index -> Partition (nested: handlers look up a topic once per request).
        self.partitions: dict[str, dict[int, Partition]] = {}
        self._image: MetadataImage | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._image_applied: asyncio.Future[None] | None = None
        self._closed = False
        self._pid_lock = asyncio.Lock()
        self._pid_next = self._pid_end = 0
        self._names_by_id: tuple[MetadataImage | None, dict[uuid.UUID, str]] = (None, {})
        #: Told of every marker written here (the group coordinator completes the transactional
        #: offset commits of ``__consumer_offsets`` with it).
        self.marker_listener: Callable[[str, int, bytes | bytearray], None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def image(self) -> MetadataImage:
        image: MetadataImage = self.channel.image
        return image

    async def start(self, worker: Worker | None = None) -> None:
        """Open (recovering if needed) every partition this worker leads, then follow the image."""
        self.logs.startup()
        image = self.channel.image
        started = time.monotonic()
        self._apply(None, image)
        count = sum(len(p) for p in self.partitions.values())
        log.info("worker %d: %d partitions opened in %.3f s", self.node_id, count, time.monotonic() - started)
        self.channel.subscribe(self._on_image)
        self.cleaner.start()
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
        parts = list(self.iter_partitions())
        self.partitions = {}
        for p in parts:
            p.wake()
        await self.logs.shutdown(parts)  # aborts a clean in progress
        await asyncio.get_running_loop().run_in_executor(None, self.cleaner.stop)
        self.flusher.shutdown()

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
            await self.logs.hand_over(moved)

    def _apply(self, old: MetadataImage | None, new: MetadataImage) -> list[Partition]:
        """Open, reconfigure, close and delete partitions so that they match ``new``; returns the
        partitions now led elsewhere (or by nobody: a move in progress), to hand over."""
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
                    self.logs.delete(p)
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
                        cur.log.update_config(self.logs.log_config(topic))
                        if cur.log.config.compact:
                            self.cleaner.wake()  # a new ratio or lag, or newly compacted
                if part.leader_epoch != cur.leader_epoch:
                    self.logs.new_epoch(cur, part.leader_epoch)
        return moved

    def _open_partition(self, topic: TopicImage, part: PartitionImage) -> Partition:
        p = self.logs.open(topic, part)
        p.metrics = self.counters.open_partition(topic.name, part.partition)
        p.refresh_log_gauges()
        self._publish_partition(p)  # a row's log end offset is never the zero of a fresh row
        return p

    # ------------------------------------------------------------------ metrics

    def add_publisher(self, publish: Callable[[], None]) -> None:
        """Run ``publish`` after the partitions on every `publish_metrics` (the 1 s tick)."""
        self._publishers.append(publish)

    def publish_metrics(self) -> None:
        """Copy every changed partition's counters and the request accumulators to the shared
        counter table (each housekeeping tick, 1 s; ipc/counters.py says why not per append),
        then run the other publishers (`add_publisher`)."""
        self.counters.publish()
        self.cleaner.publish(self.counters.publish_cleaner)
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
            plog.last_stable_offset,
        )

    # ------------------------------------------------------------------ lookups

    def get(self, topic: str, index: int) -> Partition | None:
        by_index = self.partitions.get(topic)
        return None if by_index is None else by_index.get(index)

    def _partition_snapshot(self) -> list[Partition]:
        """The partitions led here, from another thread (the log cleaner's): each ``list()`` of a
        dict runs without releasing the GIL, so an image applied meanwhile cannot break it."""
        return [p for by_index in list(self.partitions.values()) for p in list(by_index.values())]

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
        """Append one Produce partition's records (exactly one v2 batch): leader_append.py."""
        by_index = self.partitions.get(topic)
        p = None if by_index is None else by_index.get(index)
        if p is None:
            return _NOT_LEADER if self.not_here_error(topic, index) == _NOT_LEADER.error_code else _UNKNOWN
        return append_to_leader(p, records, self.flusher)

    def append_marker(
        self, topic: str, index: int, batch: bytes | bytearray, transaction_version: int = 0
    ) -> AppendResult:
        """Append a transaction marker (control batch) of the transaction coordinator, checked
        with the rules of its ``transaction_version``."""
        p = self.get(topic, index)
        if p is None:
            return _NOT_LEADER if self.not_here_error(topic, index) == _NOT_LEADER.error_code else _UNKNOWN
        result = append_marker_to_leader(p, batch, self.flusher, transaction_version)
        if result.error_code == 0 and self.marker_listener is not None:
            self.marker_listener(topic, index, batch)
        return result

    def append_batches(self, topic: str, index: int, batches: list[memoryview]) -> list[AppendResult]:
        """Append several whole batches of one partition in one write (a local producer's ring
        drain: broker/local_clients.py), one result per batch."""
        p = self.get(topic, index)
        if p is None:
            return [self.append(topic, index, b) for b in batches]
        return append_batches_to_leader(p, batches, self.flusher)

    # ------------------------------------------------------------------ read

    def read(
        self, p: Partition, offset: int, max_bytes: int, min_one_message: bool, max_offset: int | None = None
    ) -> FetchDataInfo:
        """The file range to send, below ``max_offset`` if given (a read_committed fetch passes
        the LSO); raises LogOffsetOutOfRangeError, KafkaStorageError."""
        return p.log.read(offset, max_bytes, min_one_message=min_one_message, max_offset=max_offset)

    async def wait_for_data(self, partitions: Iterable[Partition], timeout: float, needed: int = 1) -> bool:
        """Park until appends to ``partitions`` add ``needed`` bytes in all, or any of them changes
        otherwise, markers included (True: the caller reads again, up to the LSO for
        read_committed), or ``timeout`` seconds (False). See ``FetchWaiter``."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiter = FetchWaiter(fut, needed)
        parked = list(partitions)
        for p in parked:
            p.waiters.add(waiter)
        self.counters.add_fetch_waiters(1)
        try:
            done, _ = await asyncio.wait((fut,), timeout=timeout)
            return bool(done)
        finally:
            self.counters.add_fetch_waiters(-1)
            if not fut.done():
                fut.cancel()
            for p in parked:
                p.waiters.discard(waiter)

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
        tick = self.logs.tick_s
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
        self.logs.tick(now, self.iter_partitions())
