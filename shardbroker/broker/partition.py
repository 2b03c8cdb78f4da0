"""One partition this worker leads (Kafka's Partition): its log and the state kept beside it.

What it owns: the `PartitionLog`, the leader epoch from the metadata image and the leader-epoch
history ``(epoch, start offset)`` read from and written to ``leader-epoch-checkpoint`` by
log_manager.py, the fetches parked on it (an append wakes them all), its flush state
(log_flusher.py) and its counters. Answers as Kafka's Partition and LeaderEpochFileCache: the
fencing of a client's ``current_leader_epoch``, OffsetForLeaderEpoch and the epoch of an offset.

Single replica: an append is committed once it is written, so the high watermark is the log end
offset; the last stable offset is the log's (below the first undecided transaction). Parked
fetches wake on every append, and on every append of transaction markers whoever makes it (the
log's ``on_markers`` hook): a marker moves the LSO, which a read_committed fetch waits for.

Counters are plain attributes, counted on every append and fetch (76 ns per append together) and
copied to the shared counter table once a second by ReplicaManager.publish_metrics
(ipc/counters.py explains the trade).
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Final

from shardbroker.ipc.counters import PartitionRow
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.log import PartitionLog

__all__ = ["FlushState", "Partition"]

_NONE: Final = int(ErrorCode.NONE)


@dataclass(slots=True)
class FlushState:
    """At most one flush job per partition in an executor thread, plus one follow-up."""

    running: asyncio.Future[None] | None = None
    running_target: int = 0
    follow_up: asyncio.Future[None] | None = None


class FetchWaiter:
    """A fetch parked on its partitions until ``needed`` more bytes are appended to them, taken
    together (Kafka's DelayedFetch: ``min_bytes`` is honoured before the fetch runs again, so an
    append that leaves it short wakes nothing), or until any of them changes otherwise
    (``Partition.wake``). Measured (2026-12-05, in-process, uvloop: one-record Produce requests
    through KafkaConnection to a partition with a fetch parked for 1 GiB): 40 us a Produce when
    each append woke the fetch to re-read and park again, 29.6 us when it does not (28 us with no
    fetch parked).

    read_committed fetches park with ``needed`` 1: bytes above the LSO do not count for them,
    so they re-read at every append (and at every marker, which may move the LSO).
    """

    __slots__ = ("future", "needed")

    def __init__(self, future: asyncio.Future[None], needed: int = 1) -> None:
        self.future = future
        self.needed = needed

    def add(self, size: int) -> bool:
        """Count ``size`` appended bytes; True once ``needed`` is reached."""
        self.needed -= size
        return self.needed <= 0

    def resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


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
        #: Fetches (and local-consumer watches) parked on this partition (``FetchWaiter``).
        self.waiters: set[FetchWaiter] = set()
        #: Leader-epoch history: (epoch, start offset), ascending.
        self.epochs: list[tuple[int, int]] = []
        self.flush = FlushState()
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
        plog.on_markers = self._on_markers

    def __repr__(self) -> str:
        return f"Partition({self.topic}-{self.index}, epoch {self.leader_epoch})"

    @property
    def high_watermark(self) -> int:
        """Single replica: everything written is committed."""
        return self.log.log_end_offset

    @property
    def last_stable_offset(self) -> int:
        """Kafka's LSO (storage/log.py): below the first undecided transaction."""
        return self.log.last_stable_offset

    @property
    def log_start_offset(self) -> int:
        return self.log.log_start_offset

    def refresh_log_gauges(self) -> None:
        """After the log's size or start offset changed other than by an append (open, retention,
        DeleteRecords): recompute the size base and publish at the next tick."""
        self.size_base = self.log.size_in_bytes - self.bytes_in
        self.published = None

    def wake(self) -> None:
        """Resolve every parked fetch (they re-read and decide whether they have enough): the
        partition's state changed other than by an append (markers, closing, deletion)."""
        waiters = self.waiters
        if waiters:
            self.waiters = set()
            for w in waiters:
                w.resolve()

    def appended(self, size: int) -> None:
        """``size`` bytes were appended: resolve the parked fetches they bring to their
        ``min_bytes`` (the others stay parked, without re-reading)."""
        done = [w for w in self.waiters if w.add(size)]
        for w in done:
            self.waiters.discard(w)
            w.resolve()

    def _on_markers(self) -> None:
        """Markers landed: the LSO may have moved. Wake the parked fetches and publish the
        counters (the LSO gauge) at the next tick."""
        self.published = None
        self.wake()

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
