"""The group coordinator of one worker: consumer groups and committed offsets (Kafka's classic
GroupCoordinator + GroupMetadataManager). Reads and appends ``__consumer_offsets`` partitions
through the ReplicaManager (files: only through it).

Which worker coordinates a group
    Kafka's rule: the leader of partition ``abs(groupId.hashCode()) % partitions`` of the internal
    compacted topic ``__consumer_offsets``, with Java's ``String.hashCode`` (31-polynomial over
    UTF-16 code units, int32 wrap-around; Kafka's ``Utils.abs`` maps Integer.MIN_VALUE to 0), so
    tools that compute the partition of a group (kafka-consumer-groups, Cruise Control) agree.
    The topic has ``offsets.topic.num.partitions`` partitions (50, Kafka's default), placed over
    the workers by the controller like any topic (least-loaded first), ``cleanup.policy=compact``.
    As with Kafka it is created on the first FindCoordinator (for a group) that finds it missing:
    the worker asks the controller, which answers once every worker opened the new partitions,
    and then answers the FindCoordinator. A broker whose clients never use groups never has it.

State and persistence
    Every group of a partition this worker leads is in memory (`group_state.Group`). What Kafka
    persists is persisted the same way, as records in the group's ``__consumer_offsets`` partition
    (Kafka's key/value layouts, group_records.py): an OffsetCommit is answered only after its
    records were appended (and flushed, if the topic's flush policy asks for it, as acks=-1);
    group metadata (generation, protocol, leader, members with their subscriptions and
    assignments) is appended when a generation completes (leader's SyncGroup) and when the group
    becomes Empty, before the waiting requests are answered. When this worker gains a partition
    (start, or a new image) it reads the partition from the log start and rebuilds its groups
    before answering for them (COORDINATOR_LOAD_IN_PROGRESS meanwhile; loading is synchronous
    on the loop today, so the window is the time between the image and this subscriber). A group
    loaded with members is Stable at its stored generation: its members' heartbeats and commits
    continue across a restart or a worker kill -9, and members that do not come back expire
    after their session timeout. A partition led elsewhere now is unloaded (its groups answer
    NOT_COORDINATOR from then on).

Timers
    One task ticks every 50 ms through the groups that have members (session expiry, end of a
    join phase, when their next deadline passed); a second one every
    ``offsets.retention.check.interval.ms`` expires offsets (Kafka 2.1+ rules, below) and writes
    their tombstones; a third looks for partitions to compact every 10 s.

Offset retention (``offsets.retention.minutes``, default 7 days)
    Offsets of a group with no protocol (commits without membership) expire one by one,
    retention after their commit; offsets of an Empty consumer group expire all together,
    retention after the group became Empty; an offset committed with an explicit retention
    (OffsetCommit v2-v4) expires at that time. A group left with no offsets and no members is
    removed (tombstone of its metadata).

Compaction of ``__consumer_offsets`` (the topic is ``cleanup.policy=compact``: time retention
never deletes its segments)
    Kafka's LogCleaner keeps the latest record of each key. Here the coordinator already holds
    exactly that state in memory (loading a partition *is* a replay of the log), so a partition
    is compacted by writing a snapshot: every live key's latest record is appended in a fresh
    segment, flushed, and the log start offset is moved to the snapshot's first offset (the
    DeleteRecords path of storage), which deletes all older segments. Superseded records and
    tombstones disappear with them (nothing downstream needs the tombstones: we are the only
    reader). A crash between the steps leaves the snapshot as a harmless replay. Checked every
    10 s; a partition is compacted once the records written since its last compaction are at
    least as many as its live keys (Kafka's min.cleanable.dirty.ratio 0.5) and at least 1000.
    The offsets of live records change (Kafka's cleaner keeps them): nothing reads
    ``__consumer_offsets`` by offset.

Known limits
    Loading reads and decodes a partition on the event loop (compaction keeps partitions near
    their live size, so this is milliseconds for thousands of groups; Kafka loads in a
    background thread). Not implemented: ``group.max.size`` (GROUP_MAX_SIZE_REACHED),
    transactional offset commits (TxnOffsetCommit), the KIP-848 consumer protocol
    (ConsumerGroupHeartbeat).

Lag metric (``shardbroker_consumergroup_lag``)
    `publish_offsets` runs on the ReplicaManager's 1 s publish tick and copies every committed
    offset of the groups loaded here into this worker's rows of the shared table
    (ipc/group_offsets.py); the supervisor subtracts them from the partitions' log end offsets
    (metrics.py, `GroupLagSource`). An OffsetCommit writes no shared memory; a group deleted,
    expired or unloaded loses its rows at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from shardbroker.broker import group_records as gr
from shardbroker.broker.group_state import (
    Group,
    GroupState,
    JoinResult,
    Member,
    OffsetAndMetadata,
    SyncResult,
)
from shardbroker.config import BrokerConfig
from shardbroker.ipc.group_offsets import WorkerGroupOffsets
from shardbroker.metadata.image import MetadataImage, TopicImage
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.records import RecordBatchBuilder, iter_batches
from shardbroker.storage.errors import StorageError

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.supervision.worker import Worker

__all__ = [
    "OFFSETS_TOPIC",
    "CommitItem",
    "GroupCoordinator",
    "GroupOverview",
    "java_string_hash",
    "partition_for",
]

log = logging.getLogger(__name__)

OFFSETS_TOPIC: Final = "__consumer_offsets"
_NONE: Final = int(ErrorCode.NONE)
_T = TypeVar("_T")


def _future_and_callback() -> tuple[asyncio.Future[_T], Callable[[_T], None]]:
    """A future of the running loop and a callback that resolves it (later calls are ignored)."""
    fut: asyncio.Future[_T] = asyncio.get_running_loop().create_future()

    def done(result: _T) -> None:
        if not fut.done():
            fut.set_result(result)

    return fut, done


#: Kafka's defaults (GroupCoordinatorConfig / OffsetConfig).
DEFAULTS: Final = {
    "group.initial.rebalance.delay.ms": 3000,
    "group.min.session.timeout.ms": 6000,
    "group.max.session.timeout.ms": 1_800_000,
    "offsets.topic.num.partitions": 50,
    "offsets.topic.segment.bytes": 104_857_600,
    "offsets.retention.minutes": 7 * 24 * 60,
    "offsets.retention.check.interval.ms": 600_000,
    "offset.metadata.max.bytes": 4096,
}
TICK_S: Final = 0.05
#: How long a FindCoordinator waits for the controller to create the topic.
CREATE_TIMEOUT_S: Final = 15.0
#: Bytes read from the log per step while loading a partition.
LOAD_CHUNK: Final = 1 << 20
#: Compaction (see the module docstring): a partition is compacted once the records appended
#: since it was loaded or last compacted are at least as many as its live keys (Kafka's
#: min.cleanable.dirty.ratio 0.5) and at least this many.
COMPACT_MIN_RECORDS: Final = 1000
COMPACTION_CHECK_S: Final = 10.0
#: Records per batch of a compaction snapshot (well below max.message.bytes for Kafka-sized keys).
SNAPSHOT_BATCH: Final = 500


@functools.lru_cache(maxsize=1 << 16)
def java_string_hash(s: str) -> int:
    """Java's ``String.hashCode``: over UTF-16 code units, int32 arithmetic (cached: every
    request of a group hashes its id)."""
    h = 0
    raw = s.encode("utf-16-be")
    for i in range(0, len(raw), 2):
        h = (31 * h + ((raw[i] << 8) | raw[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group_id: str, partitions: int) -> int:
    """Kafka's ``Utils.abs(groupId.hashCode) % partitions`` (abs(MIN_VALUE) is 0 there)."""
    h = java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def _int_prop(config: BrokerConfig, name: str) -> int:
    raw = config.properties.get(name)
    default = DEFAULTS[name]
    if raw is None:
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default
    if value < 0 or (value == 0 and name != "group.initial.rebalance.delay.ms"):
        log.warning("ignoring %s=%r: out of range", name, raw)
        return default
    return value


@dataclass(slots=True)
class CommitItem:
    topic: str
    partition: int
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""
    commit_timestamp: int = -1


@dataclass(slots=True)
class GroupOverview:
    group_id: str
    protocol_type: str
    state: str


class GroupCoordinator:
    """Groups of the ``__consumer_offsets`` partitions this worker leads (a worker Service)."""

    def __init__(
        self,
        node_id: int,
        config: BrokerConfig,
        channel: Any,
        replicas: ReplicaManager,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        offsets_table: WorkerGroupOffsets | None = None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.channel = channel
        self.replicas = replicas
        self._clock = clock
        self._wall = wall_clock
        self.initial_rebalance_delay_ms = _int_prop(config, "group.initial.rebalance.delay.ms")
        self.min_session_timeout_ms = _int_prop(config, "group.min.session.timeout.ms")
        self.max_session_timeout_ms = _int_prop(config, "group.max.session.timeout.ms")
        self.num_partitions = _int_prop(config, "offsets.topic.num.partitions")
        self.segment_bytes = _int_prop(config, "offsets.topic.segment.bytes")
        self.retention_ms = _int_prop(config, "offsets.retention.minutes") * 60_000
        self.retention_check_s = _int_prop(config, "offsets.retention.check.interval.ms") / 1000
        self.metadata_max_bytes = _int_prop(config, "offset.metadata.max.bytes")
        self.groups: dict[str, Group] = {}
        #: __consumer_offsets partitions loaded and served here.
        self.owned: set[int] = set()
        #: Wall-clock ms at which each Empty group became Empty (offset retention).
        self._empty_since: dict[str, int] = {}
        #: Groups with members or pending members (the only ones with timers).
        self._active: set[str] = set()
        #: Records appended to (or read at load from) each partition since its last compaction.
        self._dirty: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._create_lock = asyncio.Lock()
        self._closed = False
        #: This worker's rows of the shared committed-offsets table (ipc/group_offsets.py),
        #: private memory when nobody reads them; written by `publish_offsets` on the 1 s tick.
        self.offsets_table = offsets_table if offsets_table is not None else WorkerGroupOffsets.private()
        replicas.add_publisher(self.publish_offsets)

    # ------------------------------------------------------------------ lifecycle

    def now(self) -> float:
        return self._clock() * 1000.0

    def wall_ms(self) -> int:
        return int(self._wall() * 1000)

    async def start(self, worker: Worker | None = None) -> None:
        self._sync_partitions(self.channel.image)
        self.channel.subscribe(self._on_image)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._tick_loop(), name=f"groups-tick-{self.node_id}"))
        self._tasks.append(loop.create_task(self._retention_loop(), name=f"groups-retention-{self.node_id}"))
        self._tasks.append(
            loop.create_task(self._compaction_loop(), name=f"groups-compaction-{self.node_id}")
        )

    async def drain(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for group in self.groups.values():
            group.kill()
        self.groups = {}
        self.owned = set()
        self.offsets_table.clear()

    async def stop_serving(self) -> None:
        """Drain hook run *before* the listener drains (registered after it): parked JoinGroup
        and SyncGroup requests are answered NOT_COORDINATOR at once (Kafka's answer when a
        coordinator unloads its groups) and later group requests get NOT_COORDINATOR, so the
        listener's wait for in-flight requests never sits out a rebalance timeout. Everything
        the groups need is already in the log."""
        self._closed = True
        for group in self.groups.values():
            group.kill()

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if not self._closed:
            self._sync_partitions(new)

    def _led(self, image: MetadataImage) -> set[int]:
        topic = image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return set()
        return {p.partition for p in topic.partitions if p.leader == self.node_id}

    def _sync_partitions(self, image: MetadataImage) -> None:
        led = self._led(image)
        for partition in sorted(self.owned - led):
            self._unload(partition)
        topic = image.topics.get(OFFSETS_TOPIC)
        started = time.monotonic()
        loaded = records = 0
        for partition in sorted(led - self.owned):
            if self.replicas.get(OFFSETS_TOPIC, partition) is None:
                continue  # not open (yet): COORDINATOR_LOAD_IN_PROGRESS until it is
            assert topic is not None
            records += self._load(partition, len(topic.partitions))
            loaded += 1
        if loaded:
            log.info(
                "worker %d: loaded %d %s partitions (%d records, %d groups) in %.3f s",
                self.node_id,
                loaded,
                OFFSETS_TOPIC,
                records,
                len(self.groups),
                time.monotonic() - started,
            )

    def _unload(self, partition: int) -> None:
        self.owned.discard(partition)
        self._dirty.pop(partition, None)
        for group_id in [g for g in self.groups if self._partition_of(g) == partition]:
            self.groups.pop(group_id).kill()
            self._empty_since.pop(group_id, None)
        log.info("worker %d: unloaded %s-%d (led elsewhere now)", self.node_id, OFFSETS_TOPIC, partition)

    # ------------------------------------------------------------------ loading

    def _load(self, partition: int, partitions: int) -> int:
        """Rebuild the groups of one partition from its log (Kafka's loadGroupsAndOffsets);
        returns the number of records read."""
        p = self.replicas.get(OFFSETS_TOPIC, partition)
        assert p is not None
        offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata | None]] = {}
        metadata: dict[str, gr.GroupMetadataValue | None] = {}
        position = p.log.log_start_offset
        end = p.log.log_end_offset
        records = 0
        while position < end:
            try:
                data = p.log.read_bytes(position, LOAD_CHUNK)
            except StorageError as exc:
                log.error("loading %s-%d at %d: %s", OFFSETS_TOPIC, partition, position, exc)
                break
            advanced = position
            try:
                batches = list(iter_batches(data, allow_partial_tail=True))
            except ProtocolError as exc:
                log.error("loading %s-%d at %d: %s", OFFSETS_TOPIC, partition, position, exc)
                break
            for batch in batches:
                if batch.next_offset <= position:
                    continue
                advanced = batch.next_offset
                if batch.is_control:
                    continue
                try:
                    recs = list(batch.records())
                except ProtocolError as exc:
                    log.error("%s-%d batch at %d: %s", OFFSETS_TOPIC, partition, batch.base_offset, exc)
                    continue
                for rec in recs:
                    if rec.offset < position or rec.key is None:
                        continue
                    records += 1
                    try:
                        key = gr.decode_key(rec.key)
                        if key is None:
                            continue
                        value = gr.decode_value(key, rec.value)
                    except gr.RecordFormatError as exc:
                        log.warning("%s-%d offset %d: %s", OFFSETS_TOPIC, partition, rec.offset, exc)
                        continue
                    if isinstance(key, gr.OffsetCommitKey):
                        assert value is None or isinstance(value, gr.OffsetCommitValue)
                        offsets.setdefault(key.group, {})[(key.topic, key.partition)] = (
                            None
                            if value is None
                            else OffsetAndMetadata(
                                value.offset,
                                value.leader_epoch,
                                value.metadata,
                                value.commit_timestamp,
                                value.expire_timestamp,
                            )
                        )
                    else:
                        assert value is None or isinstance(value, gr.GroupMetadataValue)
                        metadata[key.group] = value
            if advanced <= position:
                break  # nothing readable further (should not happen: logs end at whole batches)
            position = advanced
        now, wall = self.now(), self.wall_ms()
        for group_id in set(offsets) | set(metadata):
            if partition_for(group_id, partitions) != partition:
                continue
            kept = {tp: o for tp, o in offsets.get(group_id, {}).items() if o is not None}
            value = metadata.get(group_id)
            if value is None and not kept:
                continue
            group = self._new_group(group_id)
            group.offsets = kept
            if value is not None:
                self._restore(group, value, now)
                group.persisted = gr.encode_group_metadata_value(value)
            if group.state == GroupState.EMPTY:
                ts = value.current_state_timestamp if value is not None else -1
                self._empty_since[group_id] = ts if ts >= 0 else wall
            self.groups[group_id] = group
            self._after(group)
        self.owned.add(partition)
        # What compaction would remove: records read beyond one per live key.
        self._dirty[partition] = max(0, records - sum(1 for _ in self._live_records(partition)))
        return records

    @staticmethod
    def _restore(group: Group, value: gr.GroupMetadataValue, now: float) -> None:
        group.generation_id = value.generation
        group.protocol_type = value.protocol_type or None
        group.protocol_name = value.protocol
        group.leader_id = value.leader
        for mm in value.members:
            protocols = [(value.protocol, mm.subscription)] if value.protocol is not None else []
            member = Member(
                mm.member_id,
                mm.group_instance_id,
                mm.client_id,
                mm.client_host,
                mm.rebalance_timeout,
                mm.session_timeout,
                value.protocol_type,
                protocols,
                assignment=mm.assignment,
                last_heartbeat=now,
            )
            group.members[mm.member_id] = member
            if mm.group_instance_id is not None:
                group.static_members[mm.group_instance_id] = mm.member_id
        if group.members:
            group.state = GroupState.STABLE
            if group.leader_id not in group.members:
                group.leader_id = next(iter(group.members))
        else:
            group.state = GroupState.EMPTY
            group.leader_id = None

    # ------------------------------------------------------------------ routing

    def _topic(self) -> TopicImage | None:
        image: MetadataImage = self.channel.image
        return image.topics.get(OFFSETS_TOPIC)

    def _partition_of(self, group_id: str) -> int:
        topic = self._topic()
        return partition_for(group_id, len(topic.partitions) if topic else self.num_partitions)

    def coordinator_of(self, group_id: str) -> tuple[int, int]:
        """``(error code, node id)`` of the coordinator of ``group_id`` (FindCoordinator)."""
        topic = self._topic()
        if topic is None or not topic.partitions:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), -1
        part = topic.partitions[partition_for(group_id, len(topic.partitions))]
        if part.leader < 0:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE), -1
        return _NONE, part.leader

    def check(self, group_id: str) -> int:
        """NONE if this worker serves ``group_id`` now, else why not (Kafka's error codes)."""
        if not group_id:
            return int(ErrorCode.INVALID_GROUP_ID)
        if self._closed:
            return int(ErrorCode.NOT_COORDINATOR)
        topic = self._topic()
        if topic is None or not topic.partitions:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        index = partition_for(group_id, len(topic.partitions))
        if topic.partitions[index].leader != self.node_id:
            return int(ErrorCode.NOT_COORDINATOR)
        if index not in self.owned:
            if self.replicas.get(OFFSETS_TOPIC, index) is not None and not self._closed:
                self._load(index, len(topic.partitions))  # opened since the image arrived
                return _NONE
            return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        return _NONE

    async def ensure_topic(self) -> int:
        """Create ``__consumer_offsets`` if it does not exist; NONE once it does."""
        if self._topic() is not None:
            return _NONE
        async with self._create_lock:
            if self._topic() is not None:
                return _NONE
            args = {
                "topics": [
                    {
                        "name": OFFSETS_TOPIC,
                        "num_partitions": self.num_partitions,
                        "replication_factor": -1,
                        "configs": {"cleanup.policy": "compact", "segment.bytes": str(self.segment_bytes)},
                    }
                ]
            }
            try:
                result = await self.channel.request("create_topics", args, timeout=CREATE_TIMEOUT_S)
            except Exception as exc:
                log.warning("worker %d: creating %s: %s", self.node_id, OFFSETS_TOPIC, exc)
                return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
            items = result.get("topics") or [{}]
            code = int(items[0].get("error_code", result.get("error_code", 0)) or 0)
            if code not in (_NONE, int(ErrorCode.TOPIC_ALREADY_EXISTS)):
                log.warning("worker %d: creating %s: %r", self.node_id, OFFSETS_TOPIC, items[0])
                return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
            log.info("worker %d: created %s", self.node_id, OFFSETS_TOPIC)
            return _NONE if self._topic() is not None else int(ErrorCode.COORDINATOR_NOT_AVAILABLE)

    # ------------------------------------------------------------------ persistence

    def _new_group(self, group_id: str) -> Group:
        return Group(group_id, self.now(), initial_rebalance_delay_ms=self.initial_rebalance_delay_ms)

    def _append(self, group_id: str, records: Sequence[tuple[bytes, bytes | None]]) -> int:
        """Append records to the group's partition; the error code (NONE: written)."""
        return self._append_at(group_id, records)[0]

    def _append_at(self, group_id: str, records: Sequence[tuple[bytes, bytes | None]]) -> tuple[int, int]:
        """``(error code, offset a flush must reach first or -1)`` of appending ``records``."""
        if not records:
            return _NONE, -1
        partition = self._partition_of(group_id)
        builder = RecordBatchBuilder()
        now = self.wall_ms()
        for key, value in records:
            builder.append(value, key=key, timestamp=now)
        result = self.replicas.append(OFFSETS_TOPIC, partition, bytearray(builder.build()))
        self._dirty[partition] = self._dirty.get(partition, 0) + len(records)
        if result.error_code != _NONE:
            log.error(
                "worker %d: appending %d records of group %r: error %d %s",
                self.node_id,
                len(records),
                group_id,
                result.error_code,
                result.error_message,
            )
            if result.error_code in (
                int(ErrorCode.NOT_LEADER_OR_FOLLOWER),
                int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            ):
                return int(ErrorCode.NOT_COORDINATOR), -1
            return int(ErrorCode.UNKNOWN_SERVER_ERROR), -1
        return _NONE, result.flush_offset

    async def _wait_durable(self, group_id: str, flush_offset: int) -> int:
        """Wait for the flush the topic's flush policy asked for (as acks=-1), if any."""
        if flush_offset < 0:
            return _NONE
        p = self.replicas.get(OFFSETS_TOPIC, self._partition_of(group_id))
        if p is None:
            return int(ErrorCode.NOT_COORDINATOR)
        return await self.replicas.flusher.wait_durable(p, flush_offset, 30.0)

    def _metadata_record(self, group: Group) -> tuple[bytes, bytes | None]:
        members = []
        if group.state != GroupState.EMPTY:
            for m in group.members.values():
                members.append(
                    gr.MemberMetadata(
                        m.member_id,
                        m.group_instance_id,
                        m.client_id,
                        m.client_host,
                        m.rebalance_timeout_ms,
                        m.session_timeout_ms,
                        m.metadata(group.protocol_name),
                        m.assignment,
                    )
                )
        value = gr.GroupMetadataValue(
            group.protocol_type or "",
            group.generation_id,
            group.protocol_name,
            group.leader_id,
            self.wall_ms(),
            tuple(members),
        )
        return gr.encode_group_metadata_key(group.group_id), gr.encode_group_metadata_value(value)

    def _after(self, group: Group) -> None:
        """Persist what the state machine says must be, and track when the group became Empty
        and whether it has timers (members or pending members) for ``tick`` to look at."""
        if (group.members or group.pending_members) and group.state != GroupState.DEAD:
            self._active.add(group.group_id)
        else:
            self._active.discard(group.group_id)
        if group.state == GroupState.EMPTY:
            self._empty_since.setdefault(group.group_id, self.wall_ms())
        else:
            self._empty_since.pop(group.group_id, None)
        if group.dirty and group.state != GroupState.DEAD:
            group.dirty = False
            record = self._metadata_record(group)
            if self._append(group.group_id, [record]) == _NONE:
                group.persisted = record[1]

    # ------------------------------------------------------------------ membership APIs

    async def join(
        self,
        group_id: str,
        *,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        require_known_member_id: bool,
    ) -> JoinResult:
        code = self.check(group_id)
        if code != _NONE:
            return JoinResult(code, member_id=member_id)
        if not self.min_session_timeout_ms <= session_timeout_ms <= self.max_session_timeout_ms:
            return JoinResult(int(ErrorCode.INVALID_SESSION_TIMEOUT), member_id=member_id)
        group = self.groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult(int(ErrorCode.UNKNOWN_MEMBER_ID), member_id=member_id)
            group = self.groups[group_id] = self._new_group(group_id)
        fut: asyncio.Future[JoinResult]
        fut, done = _future_and_callback()
        group.join(
            member_id=member_id,
            group_instance_id=group_instance_id,
            protocol_type=protocol_type,
            protocols=protocols,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            client_id=client_id,
            client_host=client_host,
            require_known_member_id=require_known_member_id,
            now=self.now(),
            callback=done,
        )
        self._after(group)
        return await fut

    async def sync(
        self,
        group_id: str,
        *,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Iterable[tuple[str, bytes]],
    ) -> SyncResult:
        code = self.check(group_id)
        if code != _NONE:
            return SyncResult(code)
        group = self.groups.get(group_id)
        if group is None:
            return SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID))
        fut: asyncio.Future[SyncResult]
        fut, done = _future_and_callback()
        group.sync(
            member_id=member_id,
            group_instance_id=group_instance_id,
            generation_id=generation_id,
            protocol_type=protocol_type,
            protocol_name=protocol_name,
            assignments=assignments,
            now=self.now(),
            callback=done,
        )
        self._after(group)
        return await fut

    def heartbeat(
        self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> int:
        code = self.check(group_id)
        if code != _NONE:
            return code
        group = self.groups.get(group_id)
        if group is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        code = group.heartbeat(
            member_id=member_id,
            group_instance_id=group_instance_id,
            generation_id=generation_id,
            now=self.now(),
        )
        self._after(group)
        return code

    def leave(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> tuple[int, list[int]]:
        """``(group error, per-member errors)``."""
        code = self.check(group_id)
        if code != _NONE:
            return code, []
        group = self.groups.get(group_id)
        if group is None:
            return _NONE, [int(ErrorCode.UNKNOWN_MEMBER_ID)] * len(members)
        now = self.now()
        codes = [group.leave(member_id=mid, group_instance_id=iid, now=now) for mid, iid in members]
        self._after(group)
        return _NONE, codes

    # ------------------------------------------------------------------ offsets

    async def commit(
        self,
        group_id: str,
        *,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        retention_ms: int,
        items: Sequence[CommitItem],
    ) -> list[int]:
        """Per-item error codes for an OffsetCommit."""
        code = self.check(group_id)
        group = self.groups.get(group_id)
        if code == _NONE:
            if group is None:
                if generation_id >= 0:
                    # Kafka: a generation for a group it does not know is from an old generation.
                    code = int(ErrorCode.ILLEGAL_GENERATION)
                else:
                    group = self.groups[group_id] = self._new_group(group_id)
                    self._after(group)
            if group is not None and code == _NONE:
                code = group.validate_commit(member_id, group_instance_id, generation_id)
        if code != _NONE:
            return [code] * len(items)
        assert group is not None
        now = self.wall_ms()
        codes: list[int] = []
        records: list[tuple[bytes, bytes | None]] = []
        accepted: list[tuple[tuple[str, int], OffsetAndMetadata]] = []
        for item in items:
            if item.metadata is not None and len(item.metadata.encode()) > self.metadata_max_bytes:
                codes.append(int(ErrorCode.OFFSET_METADATA_TOO_LARGE))
                continue
            ts = item.commit_timestamp if item.commit_timestamp >= 0 else now
            expire = ts + retention_ms if retention_ms >= 0 else -1
            om = OffsetAndMetadata(item.offset, item.leader_epoch, item.metadata, ts, expire)
            records.append(
                (
                    gr.encode_offset_commit_key(group_id, item.topic, item.partition),
                    gr.encode_offset_commit_value(
                        gr.OffsetCommitValue(item.offset, item.metadata, ts, item.leader_epoch, expire)
                    ),
                )
            )
            accepted.append(((item.topic, item.partition), om))
            codes.append(_NONE)
        if not records:
            return codes
        code, flush_offset = self._append_at(group_id, records)
        if code == _NONE:
            # In memory at once (before any flush wait): a compaction snapshot taken meanwhile
            # must include what the log already holds.
            for tp, om in accepted:
                group.offsets[tp] = om
            code = await self._wait_durable(group_id, flush_offset)
        if code != _NONE:
            return [c if c != _NONE else code for c in codes]
        return codes

    def fetch(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]] | None
    ) -> tuple[int, dict[str, dict[int, OffsetAndMetadata | None]]]:
        """``(group error, topic -> partition -> committed offset or None)``; ``topics`` None: all."""
        code = self.check(group_id)
        if code != _NONE:
            return code, {}
        group = self.groups.get(group_id)
        offsets = group.offsets if group is not None else {}
        out: dict[str, dict[int, OffsetAndMetadata | None]] = {}
        if topics is None:
            for (topic, partition), om in sorted(offsets.items()):
                out.setdefault(topic, {})[partition] = om
            return _NONE, out
        for topic, partitions in topics:
            by_partition = out.setdefault(topic, {})
            for partition in partitions:
                by_partition[partition] = offsets.get((topic, partition))
        return _NONE, out

    async def delete_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
    ) -> tuple[int, dict[tuple[str, int], int]]:
        """OffsetDelete: ``(group error, per-partition errors)``."""
        code = self.check(group_id)
        if code != _NONE:
            return code, {}
        group = self.groups.get(group_id)
        if group is None:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), {}
        if group.state == GroupState.DEAD:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), {}
        subscribed: set[str] | None = set()
        if group.state != GroupState.EMPTY:
            if group.protocol_type != "consumer":
                return int(ErrorCode.NON_EMPTY_GROUP), {}
            subscribed = group.subscribed_topics()
        out: dict[tuple[str, int], int] = {}
        tombstones: list[tuple[bytes, bytes | None]] = []
        for topic, partitions in topics:
            for partition in partitions:
                if subscribed is None or topic in subscribed:
                    out[(topic, partition)] = int(ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC)
                    continue
                out[(topic, partition)] = _NONE
                if (topic, partition) in group.offsets:
                    tombstones.append((gr.encode_offset_commit_key(group_id, topic, partition), None))
        if tombstones:
            code, flush_offset = self._append_at(group_id, tombstones)
            if code != _NONE:
                return code, {}
            for topic, partitions in topics:
                for partition in partitions:
                    if out.get((topic, partition)) == _NONE:
                        group.offsets.pop((topic, partition), None)
            code = await self._wait_durable(group_id, flush_offset)
            if code != _NONE:
                return code, {}
        return _NONE, out

    # ------------------------------------------------------------------ admin

    def list_groups(self) -> list[GroupOverview]:
        return [
            GroupOverview(g.group_id, g.protocol_type or "", g.state.value)
            for g in self.groups.values()
            if g.state != GroupState.DEAD
        ]

    def describe(self, group_id: str) -> tuple[int, Group | None]:
        code = self.check(group_id)
        if code != _NONE:
            return code, None
        return _NONE, self.groups.get(group_id)

    async def delete_group(self, group_id: str) -> int:
        code = self.check(group_id)
        if code != _NONE:
            return code
        group = self.groups.get(group_id)
        if group is None or group.state == GroupState.DEAD:
            return int(ErrorCode.GROUP_ID_NOT_FOUND)
        if group.state != GroupState.EMPTY:
            return int(ErrorCode.NON_EMPTY_GROUP)
        records: list[tuple[bytes, bytes | None]] = [
            (gr.encode_offset_commit_key(group_id, t, p), None) for t, p in group.offsets
        ]
        records.append((gr.encode_group_metadata_key(group_id), None))
        code, flush_offset = self._append_at(group_id, records)
        if code != _NONE:
            return code
        if self.groups.get(group_id) is group:
            del self.groups[group_id]
            self._empty_since.pop(group_id, None)
        group.kill()
        return await self._wait_durable(group_id, flush_offset)

    # ------------------------------------------------------------------ metrics

    def committed_offsets(self) -> Iterator[tuple[str, str, int, int]]:
        """(group, topic, partition, committed offset) of every live group loaded here."""
        for group_id, group in self.groups.items():
            if group.state == GroupState.DEAD:
                continue
            for (topic, partition), om in group.offsets.items():
                yield group_id, topic, partition, om.offset

    def publish_offsets(self) -> None:
        """Copy the committed offsets to shared memory (ReplicaManager's 1 s publish tick; no
        write per OffsetCommit). Keys gone since the last tick (group deleted, offsets expired
        or deleted, partition unloaded) lose their rows: their lag series disappear."""
        self.offsets_table.publish(self.committed_offsets())

    # ------------------------------------------------------------------ timers

    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.tick()
            except Exception:
                log.exception("group coordinator tick")

    def tick(self, now: float | None = None) -> None:
        """Expire members and end join phases that are due (public for tests)."""
        now = self.now() if now is None else now
        for group_id in list(self._active):
            group = self.groups.get(group_id)
            if group is None:
                self._active.discard(group_id)
                continue
            deadline = group.next_deadline()
            if deadline is not None and deadline <= now:
                group.tick(now)
                self._after(group)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_s)
            try:
                self.expire_offsets()
            except Exception:
                log.exception("offset retention")

    def expire_offsets(self, wall_ms: int | None = None) -> int:
        """Remove expired offsets (and then empty groups); tombstones appended. Returns the count."""
        now = self.wall_ms() if wall_ms is None else wall_ms
        removed = 0
        for group_id, group in list(self.groups.items()):
            if group.state == GroupState.DEAD:
                continue
            expired: list[tuple[str, int]] = []
            empty_since = self._empty_since.get(group_id)
            for tp, om in group.offsets.items():
                if om.expire_timestamp >= 0:
                    due = om.expire_timestamp <= now
                elif group.protocol_type is None:
                    due = om.commit_timestamp + self.retention_ms <= now
                elif group.state == GroupState.EMPTY and empty_since is not None:
                    due = max(empty_since, om.commit_timestamp) + self.retention_ms <= now
                else:
                    due = False
                if due:
                    expired.append(tp)
            records: list[tuple[bytes, bytes | None]] = [
                (gr.encode_offset_commit_key(group_id, t, p), None) for t, p in expired
            ]
            drop_group = group.state == GroupState.EMPTY and len(expired) == len(group.offsets)
            if drop_group and group.persisted is not None:
                records.append((gr.encode_group_metadata_key(group_id), None))
            if not records and not drop_group:
                continue
            if records and self._append(group_id, records) != _NONE:
                continue
            for tp in expired:
                del group.offsets[tp]
            removed += len(expired)
            if drop_group:
                del self.groups[group_id]
                self._empty_since.pop(group_id, None)
                group.kill()
        if removed:
            log.info("worker %d: expired %d committed offsets", self.node_id, removed)
        return removed

    # ------------------------------------------------------------------ compaction

    async def _compaction_loop(self) -> None:
        while True:
            await asyncio.sleep(COMPACTION_CHECK_S)
            for partition in sorted(self.owned):
                if self._dirty.get(partition, 0) < COMPACT_MIN_RECORDS:
                    continue
                live = sum(1 for _ in self._live_records(partition))
                if self._dirty.get(partition, 0) >= live:
                    try:
                        await self.compact(partition)
                    except Exception:
                        log.exception("compacting %s-%d", OFFSETS_TOPIC, partition)

    def _live_records(self, partition: int) -> Iterator[tuple[bytes, bytes | None]]:
        """The latest record of every live key of ``partition``: what compaction keeps."""
        for group_id, group in list(self.groups.items()):
            if group.state == GroupState.DEAD or self._partition_of(group_id) != partition:
                continue
            if group.persisted is not None:
                yield gr.encode_group_metadata_key(group_id), group.persisted
            for (topic, index), om in group.offsets.items():
                yield (
                    gr.encode_offset_commit_key(group_id, topic, index),
                    gr.encode_offset_commit_value(
                        gr.OffsetCommitValue(
                            om.offset, om.metadata, om.commit_timestamp, om.leader_epoch, om.expire_timestamp
                        )
                    ),
                )

    async def compact(self, partition: int) -> bool:
        """Compact one partition: append the latest record of every live key (a snapshot of what
        this coordinator holds, which is exactly what replaying the partition gives) in a new
        segment, make it durable, then move the log start offset to the snapshot (DeleteRecords'
        path), which deletes every older segment. Superseded records and tombstones are gone; a
        crash before the log start moves leaves the snapshot as a replay of state already in
        the log, so loading gives the same groups either way. True if compacted."""
        p = self.replicas.get(OFFSETS_TOPIC, partition)
        if p is None or partition not in self.owned:
            return False
        live = list(self._live_records(partition))
        dirty = self._dirty.get(partition, 0)
        try:
            p.log.roll()
            start = p.log.log_end_offset
            for i in range(0, len(live), SNAPSHOT_BATCH):
                builder = RecordBatchBuilder()
                now = self.wall_ms()
                for key, value in live[i : i + SNAPSHOT_BATCH]:
                    builder.append(value, key=key, timestamp=now)
                result = self.replicas.append(OFFSETS_TOPIC, partition, bytearray(builder.build()))
                if result.error_code != _NONE:
                    log.error(
                        "compaction snapshot of %s-%d: error %d", OFFSETS_TOPIC, partition, result.error_code
                    )
                    return False
            await self.replicas.flusher.request_flush(p, p.log.log_end_offset)
            if self.replicas.get(OFFSETS_TOPIC, partition) is not p:
                return False  # moved or closed meanwhile
            p.log.delete_records(start)
        except StorageError as exc:
            log.error("compacting %s-%d: %s", OFFSETS_TOPIC, partition, exc)
            return False
        self._dirty[partition] = max(0, self._dirty.get(partition, 0) - dirty)
        log.info(
            "worker %d: compacted %s-%d: %d records before, %d live kept",
            self.node_id,
            OFFSETS_TOPIC,
            partition,
            dirty,
            len(live),
        )
        return True
