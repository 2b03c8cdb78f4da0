"""The partition directories under ``data_dir`` and their timers (Kafka's LogManager, for the
partitions one worker leads): opens, hands over, closes and deletes logs, and runs retention,
recovery-point checkpoints, ``flush.ms`` and delayed closes on one housekeeping tick.

Opening: a directory's ``partition.metadata`` (storage/partition_metadata.py) names the topic
incarnation it belongs to; one of an older incarnation (deleted while this worker was down) is
deleted instead of being served as the new one. ``leader-epoch-checkpoint``
(storage/leader_epoch_checkpoint.py) gets ``(epoch, log end offset)`` when the image's epoch is
newer than its last entry; entries beyond the log end (recovery truncated the log) are dropped.

Deleting a topic (Kafka's LogManager.asyncDelete): the directory is renamed at once to
``<topic>-<partition>.<uuid hex>-delete`` (storage/file_names.py; the name is free for a topic
created again), its files stay open for ``file.delete.delay.ms`` (a sendfile in progress still
reads valid bytes), then are closed and removed; leftovers of a crash are removed at start.
Directories of topics deleted while every worker was down stay on disk (their next incarnation
is not served from them).

Handing over (a partition moves to another worker): its flushes finish, then
`PartitionLog.hand_over` writes checkpoints and the clean-shutdown marker without an fdatasync
(same host, same page cache), so the next owner opens it without a scan. Its files stay open for
``file.delete.delay.ms``, at most `HANDOVER_HOLD_S`, for fetch responses still being sent (the
full 60 s default held ~2,700 descriptors at 15 moves a second and reached the fd limit).

Timers run on the event loop, each step a few system calls; checkpoints (two fsync'ed files per
partition whose recovery point or log start offset moved) and closes run in the flusher's threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

from shardbroker.broker.log_flusher import LogFlusher
from shardbroker.broker.partition import Partition
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    LOG_FLUSH_OFFSET_CHECKPOINT_INTERVAL_MS,
    LOG_FLUSH_SCHEDULER_INTERVAL_MS,
    LOG_RETENTION_CHECK_INTERVAL_MS,
)
from shardbroker.config.config_def import ConfigError
from shardbroker.config.log_config import LogConfig
from shardbroker.metadata.image import PartitionImage, TopicImage
from shardbroker.storage.errors import StorageError
from shardbroker.storage.file_modes import make_dirs
from shardbroker.storage.file_names import delete_dir, is_delete_dir
from shardbroker.storage.group_commit import SyncObserver
from shardbroker.storage.leader_epoch_checkpoint import read_leader_epochs, write_leader_epochs
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_segment import LogSegment
from shardbroker.storage.partition_metadata import read_partition_metadata, write_partition_metadata

__all__ = ["LogManager"]

log = logging.getLogger(__name__)

#: Housekeeping tick: the finest of the housekeeping intervals (log.*.interval.ms) it honours.
MAX_TICK_S: Final = 1.0
#: Longest a handed-over partition's files stay open here.
HANDOVER_HOLD_S: Final = 5.0


# ---------------------------------------------------------------------------------- manager


class LogManager:
    """Opens, hands over, closes and deletes the logs under ``data_dir``; their timers."""

    def __init__(
        self,
        node_id: int,
        config: BrokerConfig,
        flusher: LogFlusher,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_flush: SyncObserver | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.data_dir = Path(config.data_dir)
        self._flusher = flusher
        self._clock = clock
        self._on_flush = on_flush
        self._pending_dir_deletes: list[tuple[float, Partition, Path]] = []
        #: Files of handed-over partitions, closed once file.delete.delay.ms has passed (due, segments).
        self._pending_closes: list[tuple[float, list[LogSegment]]] = []
        self.retention_check_interval_s = config.get(LOG_RETENTION_CHECK_INTERVAL_MS) / 1000
        self.checkpoint_interval_s = config.get(LOG_FLUSH_OFFSET_CHECKPOINT_INTERVAL_MS) / 1000
        self.flush_interval_s = config.get(LOG_FLUSH_SCHEDULER_INTERVAL_MS) / 1000
        now = clock()
        self._next_retention = now + self.retention_check_interval_s
        self._next_checkpoint = now + self.checkpoint_interval_s
        self._next_flush_check = now + self.flush_interval_s

    @property
    def tick_s(self) -> float:
        """How often `tick` must run to honour every interval."""
        return min(
            MAX_TICK_S, self.retention_check_interval_s, self.checkpoint_interval_s, self.flush_interval_s
        )

    # ------------------------------------------------------------------ open

    def startup(self) -> None:
        """Create ``data_dir`` and remove the ``-delete`` directories a crash left behind."""
        make_dirs(self.data_dir)
        for entry in os.scandir(self.data_dir):
            if entry.is_dir() and is_delete_dir(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)

    def log_config(self, topic: TopicImage) -> LogConfig:
        try:
            return self.config.log_defaults.overrides(topic.configs)
        except ConfigError as exc:  # the controller validated them; a newer config name, say
            log.error("topic %s: %s; using the broker defaults", topic.name, exc)
            return self.config.log_defaults

    def open(self, topic: TopicImage, part: PartitionImage) -> Partition:
        """Open (recovering if needed) the log of a partition this worker now leads."""
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
            self.log_config(topic),
            topic=topic.name,
            partition=part.partition,
            on_flush=self._on_flush,
        )
        if read_partition_metadata(directory) != topic.topic_id:
            write_partition_metadata(directory, topic.topic_id)
        p = Partition(topic.name, part.partition, topic.topic_id, part.leader_epoch, plog)
        stored = read_leader_epochs(directory)
        p.epochs = [e for e in stored if e[1] <= plog.log_end_offset]  # truncated away: forgotten
        if not p.epochs or p.epochs[-1][0] < part.leader_epoch:
            self.new_epoch(p, part.leader_epoch)
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

    def new_epoch(self, p: Partition, epoch: int) -> None:
        p.leader_epoch = epoch
        if not p.epochs or p.epochs[-1][0] < epoch:
            # The first entry covers what the log already holds (written before histories were kept).
            start = p.log.log_end_offset if p.epochs else p.log.log_start_offset
            p.epochs.append((epoch, start))
            try:
                write_leader_epochs(p.directory, p.epochs)
            except OSError as exc:
                log.error("writing the leader epochs of %s: %s", p, exc)

    # ------------------------------------------------------------------ let go

    async def hand_over(self, moved: list[Partition]) -> None:
        """Let go of partitions that move to another worker (before the image is acked: the
        controller gives a moved partition to its next owner only once this worker let go)."""
        await self._flusher.flushes_done(moved)
        loop = asyncio.get_running_loop()
        handed = await asyncio.gather(
            *(loop.run_in_executor(self._flusher.executor, self._hand_over, p) for p in moved)
        )
        for p, segments in zip(moved, handed, strict=True):
            hold = min(p.log.config.file_delete_delay_ms / 1000, HANDOVER_HOLD_S)
            self._pending_closes.append((self._clock() + hold, segments))

    def _hand_over(self, p: Partition) -> list[LogSegment]:
        """`PartitionLog.hand_over` in an executor thread; the segments to close later."""
        try:
            segments = p.log.hand_over()
        except StorageError as exc:
            log.error("handing over %s: %s (its next owner recovers it)", p, exc)
            return []
        log.info("worker %d handed over %s at log end offset %d", self.node_id, p, p.log.log_end_offset)
        return segments

    def delete(self, p: Partition) -> None:
        """Rename now (the name is free again), close and remove after file.delete.delay.ms."""
        target = delete_dir(p.directory)
        try:
            os.rename(p.directory, target)
        except OSError as exc:
            log.error("renaming %s for deletion: %s", p.directory, exc)
            target = p.directory
        delay = p.log.config.file_delete_delay_ms / 1000
        self._pending_dir_deletes.append((self._clock() + delay, p, target))

    async def shutdown(self, parts: list[Partition]) -> None:
        """Flush and close every log cleanly (clean-shutdown marker: the next start skips
        recovery), in executor threads in parallel, and finish the pending deletes and closes."""
        loop = asyncio.get_running_loop()
        await self._flusher.flushes_done(parts)  # before their files close
        executor = self._flusher.executor
        closes = [loop.run_in_executor(executor, self._close, p) for p in parts]
        closes += [
            loop.run_in_executor(executor, self._finish_dir_delete, p, d)
            for _, p, d in self._pending_dir_deletes
        ]
        self._pending_dir_deletes = []
        self._close_handed_over(float("inf"))
        await asyncio.gather(*closes, return_exceptions=True)

    @staticmethod
    def _close(p: Partition) -> None:
        try:
            p.log.close()
        except StorageError as exc:
            log.error("closing %s: %s (the next start recovers it)", p, exc)

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
    def _finish_dir_delete(p: Partition, target: Path) -> None:
        p.log.delete()  # closes the files; its rmtree of the old name finds nothing
        shutil.rmtree(target, ignore_errors=True)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float, partitions: Iterable[Partition]) -> None:
        """One tick of the timers over ``partitions`` (the ones led here)."""
        parts = list(partitions)
        if now >= self._next_flush_check:
            self._next_flush_check = now + self.flush_interval_s
            for p in parts:
                if p.log.config.flush_ms < (1 << 62) and p.log.flush_due():
                    self._flusher.request_flush(p, p.log.log_end_offset)
        for p in parts:
            p.log.remove_deleted_segments()
        if now >= self._next_retention:
            self._next_retention = now + self.retention_check_interval_s
            for p in parts:
                try:
                    deleted = p.log.delete_old_segments()
                except StorageError as exc:
                    log.error("retention of %s: %s", p, exc)
                    continue
                if deleted:
                    log.info("retention deleted %d segments of %s", deleted, p)
                    p.refresh_log_gauges()
        if now >= self._next_checkpoint:
            self._next_checkpoint = now + self.checkpoint_interval_s
            moved = []
            for p in parts:
                mark = (p.log.recovery_point, p.log.log_start_offset)
                if mark != p.checkpointed:  # the log itself rewrites them on retention/DeleteRecords
                    p.checkpointed = mark
                    moved.append(p)
            if moved:
                # Two fsync'ed files per partition: off the loop.
                asyncio.get_running_loop().run_in_executor(self._flusher.executor, self._checkpoint, moved)
        if self._pending_closes:
            self._close_handed_over(now)
        if self._pending_dir_deletes:
            due = [(t, p, d) for t, p, d in self._pending_dir_deletes if t <= now]
            if due:
                self._pending_dir_deletes = [e for e in self._pending_dir_deletes if e[0] > now]
                for _, p, d in due:
                    self._finish_dir_delete(p, d)

    @staticmethod
    def _checkpoint(parts: list[Partition]) -> None:
        for p in parts:
            try:
                p.log.checkpoint()
            except StorageError as exc:
                log.error("checkpoint of %s: %s", p, exc)
