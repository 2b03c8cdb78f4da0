"""The group coordinator of one worker (Kafka's GroupCoordinator): the entry points of the group
APIs (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, ConsumerGroupHeartbeat, ConsumerGroupDescribe,
OffsetCommit, TxnOffsetCommit, OffsetFetch, OffsetDelete, ListGroups, DescribeGroups,
DeleteGroups, FindCoordinator), the timers, and the creation of ``__consumer_offsets``.

A group id is a classic group (group_state.py) or a consumer-protocol group (KIP-848,
consumer_group.py), never both at once: a ConsumerGroupHeartbeat for a classic group with members
is refused GROUP_ID_NOT_FOUND, and a JoinGroup for a consumer group with members
INCONSISTENT_GROUP_PROTOCOL; an empty group of either kind is taken over by the other protocol,
its committed offsets kept (they live in the classic entry of either kind). A consumer group's
heartbeat is answered after its records were appended (one batch: the state and the log never
disagree), as an OffsetCommit is.

Each call checks that this worker coordinates the group now (NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS otherwise), drives the group's state machine (group_state.py; waiting
JoinGroup/SyncGroup callbacks become futures) and lets the GroupMetadataManager
(group_metadata_manager.py) persist what the machine marks. An OffsetCommit is answered only after
its records were appended (and flushed, if the topic's flush policy asks for it, as acks=-1).

``__consumer_offsets`` (``offsets.topic.num.partitions``, ``cleanup.policy=compact``) is created,
as with Kafka, by the first FindCoordinator that finds it missing: the controller answers once every
worker opened the partitions. A broker whose clients never use groups never has it.

Timers: every 50 ms the groups with members are ticked (session expiry, end of a join phase);
every ``offsets.retention.check.interval.ms`` offsets expire; every 10 s partitions are checked
for compaction. ``publish_offsets`` copies the committed offsets to this worker's rows of the
shared table (ipc/group_offsets.py) on the ReplicaManager's 1 s tick, for the
``shardbroker_consumergroup_lag`` metric; an OffsetCommit writes no shared memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar

from shardbroker.broker import group_records as gr
from shardbroker.broker.consumer_group import (
    ConsumerGroup,
    ConsumerGroupConfig,
    ConsumerGroupError,
    HeartbeatRequest,
    HeartbeatResult,
)
from shardbroker.broker.group_metadata_manager import (
    OFFSETS_TOPIC,
    GroupMetadataManager,
    encode_consumer_records,
    offset_commit_record,
    partition_for,
)
from shardbroker.broker.group_migration import (
    MigrationError,
    MigrationPolicy,
    consumer_group_from_classic,
    downgrade_refusal,
    upgrade_refusal,
)
from shardbroker.broker.group_state import (
    Group,
    GroupState,
    JoinRequest,
    JoinResult,
    OffsetAndMetadata,
    SyncResult,
    new_classic_member_id,
)
from shardbroker.broker.txn_offset_commits import UNSTABLE, validate_txn_commit
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    GROUP_CONSUMER_ASSIGNORS,
    GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS,
    GROUP_CONSUMER_MAX_SIZE,
    GROUP_CONSUMER_MIGRATION_POLICY,
    GROUP_CONSUMER_SESSION_TIMEOUT_MS,
    GROUP_COORDINATOR_REBALANCE_PROTOCOLS,
    GROUP_INITIAL_REBALANCE_DELAY_MS,
    GROUP_MAX_SESSION_TIMEOUT_MS,
    GROUP_MIN_SESSION_TIMEOUT_MS,
    OFFSET_METADATA_MAX_BYTES,
    OFFSETS_RETENTION_CHECK_INTERVAL_MS,
    OFFSETS_RETENTION_MINUTES,
    OFFSETS_TOPIC_NUM_PARTITIONS,
    OFFSETS_TOPIC_SEGMENT_BYTES,
)
from shardbroker.ipc.group_offsets import WorkerGroupOffsets
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.supervision.worker import Worker

__all__ = [
    "CommitItem",
    "GroupCoordinator",
    "GroupOverview",
    "ensure_internal_topic",
]

log = logging.getLogger(__name__)

_NONE: Final = int(ErrorCode.NONE)
_T = TypeVar("_T")


def _future_and_callback() -> tuple[asyncio.Future[_T], Callable[[_T], None]]:
    """A future of the running loop and a callback that resolves it (later calls are ignored)."""
    fut: asyncio.Future[_T] = asyncio.get_running_loop().create_future()

    def done(result: _T) -> None:
        if not fut.done():
            fut.set_result(result)

    return fut, done


#: How long a FindCoordinator waits for the controller to create the topic.
CREATE_TIMEOUT_S: Final = 15.0


async def ensure_internal_topic(
    channel: Any,
    node_id: int,
    name: str,
    partitions: int,
    segment_bytes: int,
    lock: asyncio.Lock,
) -> int:
    """Create a coordinator's internal topic (``cleanup.policy=compact``, replication factor 1:
    each partition has one replica, its worker) unless the image has it; NONE once it exists
    (the controller answers after every worker opened the partitions), else
    COORDINATOR_NOT_AVAILABLE. ``__consumer_offsets`` here, ``__transaction_state``
    (transaction_coordinator.py) too. ``lock``: one creation at a time per coordinator."""
    if name in channel.image.topics:
        return _NONE
    async with lock:
        if name in channel.image.topics:
            return _NONE
        args = {
            "topics": [
                {
                    "name": name,
                    "num_partitions": partitions,
                    "replication_factor": -1,
                    "configs": {"cleanup.policy": "compact", "segment.bytes": str(segment_bytes)},
                }
            ]
        }
        try:
            result = await channel.request("create_topics", args, timeout=CREATE_TIMEOUT_S)
        except Exception as exc:
            log.warning("worker %d: creating %s: %s", node_id, name, exc)
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        items = result.get("topics") or [{}]
        code = int(items[0].get("error_code", result.get("error_code", 0)) or 0)
        if code not in (_NONE, int(ErrorCode.TOPIC_ALREADY_EXISTS)):
            log.warning("worker %d: creating %s: %r", node_id, name, items[0])
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        log.info("worker %d: created %s", node_id, name)
        return _NONE if name in channel.image.topics else int(ErrorCode.COORDINATOR_NOT_AVAILABLE)


TICK_S: Final = 0.05


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
    #: ListGroups v5's GroupType: "classic" or "consumer" (the protocol, KIP-848).
    group_type: str = "classic"


#: The APIs of the consumer rebalance protocol (KIP-848): ConsumerGroupHeartbeat, ConsumerGroupDescribe.
CONSUMER_PROTOCOL_APIS: Final = frozenset({68, 69})


def disabled_apis(config: BrokerConfig) -> frozenset[int]:
    """The group APIs ``group.coordinator.rebalance.protocols`` leaves out: neither served nor
    advertised in ApiVersions, so clients keep to the classic protocol."""
    if "consumer" in config.get(GROUP_COORDINATOR_REBALANCE_PROTOCOLS):
        return frozenset()
    return CONSUMER_PROTOCOL_APIS


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
        on_rebalance: Callable[[str], None] = lambda protocol: None,
    ) -> None:
        self.node_id = node_id
        self.config = config
        self.channel = channel
        self.replicas = replicas
        self._clock = clock
        self._wall = wall_clock
        self.initial_rebalance_delay_ms = config.get(GROUP_INITIAL_REBALANCE_DELAY_MS)
        self.min_session_timeout_ms = config.get(GROUP_MIN_SESSION_TIMEOUT_MS)
        self.max_session_timeout_ms = config.get(GROUP_MAX_SESSION_TIMEOUT_MS)
        self.num_partitions = config.get(OFFSETS_TOPIC_NUM_PARTITIONS)
        self.segment_bytes = config.get(OFFSETS_TOPIC_SEGMENT_BYTES)
        self.retention_ms = config.get(OFFSETS_RETENTION_MINUTES) * 60_000
        self.retention_check_s = config.get(OFFSETS_RETENTION_CHECK_INTERVAL_MS) / 1000
        self.metadata_max_bytes = config.get(OFFSET_METADATA_MAX_BYTES)
        self.consumer_config = ConsumerGroupConfig(
            session_timeout_ms=config.get(GROUP_CONSUMER_SESSION_TIMEOUT_MS),
            heartbeat_interval_ms=config.get(GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS),
            max_size=config.get(GROUP_CONSUMER_MAX_SIZE),
            assignors=config.get(GROUP_CONSUMER_ASSIGNORS),
        )
        self.migration_policy = MigrationPolicy(config.get(GROUP_CONSUMER_MIGRATION_POLICY))
        self.group_manager = GroupMetadataManager(
            node_id,
            channel,
            replicas,
            initial_rebalance_delay_ms=self.initial_rebalance_delay_ms,
            num_partitions=self.num_partitions,
            retention_ms=self.retention_ms,
            clock=clock,
            wall_clock=wall_clock,
            consumer_config=self.consumer_config,
            on_rebalance=on_rebalance,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._create_lock = asyncio.Lock()
        self._closed = False
        #: This worker's rows of the shared committed-offsets table (ipc/group_offsets.py),
        #: private memory when nobody reads them; written by `publish_offsets` on the 1 s tick.
        self.offsets_table = offsets_table if offsets_table is not None else WorkerGroupOffsets.private()
        replicas.add_publisher(self.publish_offsets)
        replicas.marker_listener = self._on_marker

    # ------------------------------------------------------------------ lifecycle

    async def start(self, worker: Worker | None = None) -> None:
        self.group_manager.sync_partitions(self.channel.image)
        self.channel.subscribe(self._on_image)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._tick_loop(), name=f"groups-tick-{self.node_id}"))
        self._tasks.append(loop.create_task(self._retention_loop(), name=f"groups-retention-{self.node_id}"))

    async def drain(self) -> None:
        self._closed = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        self.group_manager.clear()
        self.offsets_table.clear()

    async def stop_serving(self) -> None:
        """Drain hook run *before* the listener drains (registered after it): parked JoinGroup
        and SyncGroup requests are answered NOT_COORDINATOR at once (Kafka's answer when a
        coordinator unloads its groups) and later group requests get NOT_COORDINATOR, so the
        listener's wait for in-flight requests never sits out a rebalance timeout. Everything
        the groups need is already in the log."""
        self._closed = True
        for group in self.group_manager.groups.values():
            group.kill()
        for cg in self.group_manager.consumer_groups.values():
            cg.kill()

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if self._closed:
            return
        self.group_manager.sync_partitions(new)
        if old.topics != new.topics:
            # Topics created, deleted or grown: groups subscribed to them get a new target.
            for cg in list(self.group_manager.consumer_groups.values()):
                if cg.refresh_metadata(new.topics, self.group_manager.now()):
                    self.group_manager.persist_consumer_group(cg)

    # ------------------------------------------------------------------ routing

    def coordinator_of(self, group_id: str) -> tuple[int, int]:
        """``(error code, node id)`` of the coordinator of ``group_id`` (FindCoordinator)."""
        topic = self.group_manager.topic()
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
        topic = self.group_manager.topic()
        if topic is None or not topic.partitions:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        index = partition_for(group_id, len(topic.partitions))
        if topic.partitions[index].leader != self.node_id:
            return int(ErrorCode.NOT_COORDINATOR)
        if index not in self.group_manager.owned:
            if self.replicas.get(OFFSETS_TOPIC, index) is not None and not self._closed:
                self.group_manager.load(index, len(topic.partitions))  # opened since the image arrived
                return _NONE
            return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        return _NONE

    async def ensure_topic(self) -> int:
        """Create ``__consumer_offsets`` if it does not exist; NONE once it does."""
        return await ensure_internal_topic(
            self.channel,
            self.node_id,
            OFFSETS_TOPIC,
            self.num_partitions,
            self.segment_bytes,
            self._create_lock,
        )

    # ------------------------------------------------------------------ membership APIs

    async def join(self, group_id: str, request: JoinRequest) -> JoinResult:
        member_id = request.member_id
        code = self.check(group_id)
        if code != _NONE:
            return JoinResult(code, member_id=member_id)
        if not self.min_session_timeout_ms <= request.session_timeout_ms <= self.max_session_timeout_ms:
            return JoinResult(int(ErrorCode.INVALID_SESSION_TIMEOUT), member_id=member_id)
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            if cg.members:
                return await self._classic_join_consumer_group(cg, request)
            self._drop_empty_consumer_group(cg)
        group = self.group_manager.get_group(group_id)
        if group is None:
            if member_id:
                return JoinResult(int(ErrorCode.UNKNOWN_MEMBER_ID), member_id=member_id)
            group = self.group_manager.add_group(group_id)
        fut: asyncio.Future[JoinResult]
        fut, done = _future_and_callback()
        group.join(request, now=self.group_manager.now(), callback=done)
        self.group_manager.after_change(group)
        return await fut

    async def _classic_join_consumer_group(self, cg: ConsumerGroup, request: JoinRequest) -> JoinResult:
        """A JoinGroup to a consumer group with members: its member speaks the classic protocol
        there (group_migration.py; Kafka's classicGroupJoinToConsumerGroup)."""
        member_id = request.member_id
        if not cg.supports_classic_protocols(request.protocol_type, (n for n, _ in request.protocols)):
            return JoinResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL), member_id=member_id)
        new_member_id = member_id or new_classic_member_id(request.client_id, request.group_instance_id)
        if not member_id and request.group_instance_id is None and request.require_known_member_id:
            return JoinResult(int(ErrorCode.MEMBER_ID_REQUIRED), member_id=new_member_id)
        manager = self.group_manager
        try:
            result = cg.classic_join(
                request, topics=self.channel.image.topics, now=manager.now(), new_member_id=new_member_id
            )
        except ConsumerGroupError as exc:
            result = JoinResult(exc.code, member_id=member_id)
        code, flush_offset = self._persist_or_downgrade(cg)
        if code == _NONE:
            code = await manager.wait_durable(cg.group_id, flush_offset)
        if code != _NONE:
            return JoinResult(code, member_id=member_id)
        return result

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
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            return cg.classic_sync(
                member_id=member_id,
                instance_id=group_instance_id,
                generation_id=generation_id,
                protocol_type=protocol_type,
                protocol_name=protocol_name,
                now=self.group_manager.now(),
            )
        group = self.group_manager.get_group(group_id)
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
            now=self.group_manager.now(),
            callback=done,
        )
        self.group_manager.after_change(group)
        return await fut

    def heartbeat(
        self, group_id: str, member_id: str, group_instance_id: str | None, generation_id: int
    ) -> int:
        code = self.check(group_id)
        if code != _NONE:
            return code
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            return cg.classic_heartbeat(
                member_id=member_id,
                instance_id=group_instance_id,
                generation_id=generation_id,
                now=self.group_manager.now(),
            )
        group = self.group_manager.get_group(group_id)
        if group is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        code = group.heartbeat(
            member_id=member_id,
            group_instance_id=group_instance_id,
            generation_id=generation_id,
            now=self.group_manager.now(),
        )
        self.group_manager.after_change(group)
        return code

    def leave(self, group_id: str, members: Sequence[tuple[str, str | None]]) -> tuple[int, list[int]]:
        """``(group error, per-member errors)``."""
        code = self.check(group_id)
        if code != _NONE:
            return code, []
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            topics = self.channel.image.topics
            codes = [cg.classic_leave(mid, iid, topics) for mid, iid in members]
            self.group_manager.persist_consumer_group(cg)
            return _NONE, codes
        group = self.group_manager.get_group(group_id)
        if group is None:
            return _NONE, [int(ErrorCode.UNKNOWN_MEMBER_ID)] * len(members)
        now = self.group_manager.now()
        codes = [group.leave(member_id=mid, group_instance_id=iid, now=now) for mid, iid in members]
        self.group_manager.after_change(group)
        return _NONE, codes

    # ------------------------------------------------------------------ consumer protocol

    async def consumer_group_heartbeat(
        self, group_id: str, request: HeartbeatRequest
    ) -> tuple[int, str | None, HeartbeatResult | None]:
        """One ConsumerGroupHeartbeat: ``(error code, error message, result)``."""
        code = self.check(group_id)
        if code != _NONE:
            return code, None, None
        manager = self.group_manager
        cg = manager.get_consumer_group(group_id)
        if cg is None:
            classic = manager.get_group(group_id)
            if classic is not None and classic.state != GroupState.EMPTY:
                return await self._upgrade(classic, request)
            if request.member_epoch != 0:
                return (
                    int(ErrorCode.UNKNOWN_MEMBER_ID),
                    f"Member {request.member_id} is not a member of group {group_id}.",
                    None,
                )
            # An Empty classic group taken over: its metadata record goes, its offsets stay.
            tombstone = [(gr.encode_group_metadata_key(group_id), None)]
            if (
                classic is not None
                and classic.persisted is not None
                and manager.append(group_id, tombstone) == _NONE
            ):
                classic.persisted = None
            cg = manager.add_consumer_group(group_id)
        return await self._heartbeat(cg, request)

    async def _heartbeat(
        self, cg: ConsumerGroup, request: HeartbeatRequest, *, upgrade_from: Group | None = None
    ) -> tuple[int, str | None, HeartbeatResult | None]:
        """``request`` on ``cg``, persisted; ``upgrade_from``: ``cg`` was just made from that
        classic group's members and replaces it in the same write (or not at all)."""
        manager = self.group_manager
        try:
            result = cg.heartbeat(request, self.channel.image.topics, manager.now(), uuid.uuid4().hex)
        except ConsumerGroupError as exc:
            if upgrade_from is None:
                self._persist_or_downgrade(cg)  # a refusal may have fenced a member
            return exc.code, exc.message, None
        if upgrade_from is not None:
            code, flush_offset = manager.upgrade(upgrade_from, cg)
            log.info(
                "worker %d: classic group %s (generation %d, %d members) upgraded to a consumer group",
                self.node_id,
                cg.group_id,
                upgrade_from.generation_id,
                len(cg.members) - 1,
            )
        else:
            code, flush_offset = self._persist_or_downgrade(cg)
        if code == _NONE:
            code = await manager.wait_durable(cg.group_id, flush_offset)
        if code != _NONE:
            return code, None, None
        return _NONE, None, result

    async def _upgrade(
        self, classic: Group, request: HeartbeatRequest
    ) -> tuple[int, str | None, HeartbeatResult | None]:
        """A ConsumerGroupHeartbeat joining a classic group with members: the group becomes a
        consumer group in place if ``group.consumer.migration.policy`` allows (Kafka's
        validateOnlineUpgrade), else GROUP_ID_NOT_FOUND."""
        group_id = classic.group_id
        not_consumer = int(ErrorCode.GROUP_ID_NOT_FOUND), f"Group {group_id} is not a consumer group.", None
        if request.member_epoch != 0:
            return not_consumer
        refusal = upgrade_refusal(self.migration_policy, classic, self.consumer_config.max_size)
        if refusal is not None:
            log.info(
                "worker %d: cannot upgrade classic group %s to consumer group because %s.",
                self.node_id,
                group_id,
                refusal,
            )
            return not_consumer
        manager = self.group_manager
        try:
            cg = consumer_group_from_classic(
                classic, self.consumer_config, self.channel.image.topics, manager.now()
            )
        except MigrationError as exc:
            log.warning("worker %d: %s", self.node_id, exc)
            return int(ErrorCode.GROUP_ID_NOT_FOUND), str(exc), None
        # The joining member's heartbeat runs on the converted group first: if it is refused, the
        # group stays classic (nothing written), as Kafka's one write of both fails together.
        return await self._heartbeat(cg, request, upgrade_from=classic)

    def _persist_or_downgrade(self, cg: ConsumerGroup) -> tuple[int, int]:
        """Persist ``cg``'s changes; if its last consumer-protocol member just went and the
        others are all classic, it becomes a classic group again (when the policy allows)."""
        epoch, cg.consumer_member_left_at = cg.consumer_member_left_at, None
        if epoch is not None and downgrade_refusal(self.migration_policy, cg) is None:
            log.info(
                "worker %d: consumer group %s (epoch %d, %d members) downgraded to a classic group",
                self.node_id,
                cg.group_id,
                epoch,
                len(cg.members),
            )
            return self.group_manager.downgrade(cg, self.channel.image.topics, epoch)
        return self.group_manager.persist_consumer_group(cg)

    def consumer_group(self, group_id: str) -> tuple[int, ConsumerGroup | None]:
        """ConsumerGroupDescribe: ``(error, the group)``; GROUP_ID_NOT_FOUND if it is not one."""
        code = self.check(group_id)
        if code != _NONE:
            return code, None
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is None or cg.dead:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), None
        return _NONE, cg

    def _drop_empty_consumer_group(self, cg: ConsumerGroup) -> None:
        """An empty consumer group becomes a classic one (a JoinGroup arrived): its records go,
        its offsets stay."""
        cg.records.extend(cg.tombstones())
        self.group_manager.persist_consumer_group(cg)
        self.group_manager.consumer_groups.pop(cg.group_id, None)
        cg.kill()

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
        api_version: int = 9,
    ) -> list[int]:
        """Per-item error codes for an OffsetCommit (``generation_id`` is the member epoch for a
        consumer-protocol group, checked by the group: consumer_group.py)."""
        code = self.check(group_id)
        group = self.group_manager.get_group(group_id)
        cg = self.group_manager.get_consumer_group(group_id)
        if code == _NONE and cg is not None:
            code = cg.validate_commit(member_id, generation_id, api_version)
        elif code == _NONE:
            if group is None:
                if generation_id >= 0:
                    # Kafka: a generation for a group it does not know is from an old generation.
                    code = int(ErrorCode.ILLEGAL_GENERATION)
                else:
                    group = self.group_manager.add_group(group_id)
                    self.group_manager.after_change(group)
            if group is not None and code == _NONE:
                code = group.validate_commit(member_id, group_instance_id, generation_id)
        if code != _NONE:
            return [code] * len(items)
        assert group is not None
        now = self.group_manager.wall_ms()
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
            records.append(offset_commit_record(group_id, item.topic, item.partition, om))
            accepted.append(((item.topic, item.partition), om))
            codes.append(_NONE)
        if not records:
            return codes
        code, flush_offset = self.group_manager.append_at(group_id, records)
        if code == _NONE:
            # In memory at once (before any flush wait): a compaction snapshot taken meanwhile
            # must include what the log already holds.
            for tp, om in accepted:
                group.offsets[tp] = om
            code = await self.group_manager.wait_durable(group_id, flush_offset)
        if code != _NONE:
            return [c if c != _NONE else code for c in codes]
        return codes

    async def txn_commit(
        self,
        group_id: str,
        producer: tuple[int, int],
        *,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        items: Sequence[CommitItem],
    ) -> list[int]:
        """Per-item error codes for a TxnOffsetCommit (Kafka's doTxnCommitOffsets): the offsets
        are appended in a transactional batch of ``producer`` (id, epoch) and held pending until
        the transaction's marker reaches the group's partition (``_on_marker``)."""
        code = self.check(group_id)
        if code != _NONE:
            return [code] * len(items)
        group = self.group_manager.get_group(group_id)
        if group is None:
            group = self.group_manager.add_group(group_id)
            self.group_manager.after_change(group)
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            code = cg.validate_commit(member_id, generation_id, None)
        else:
            code = validate_txn_commit(group, member_id, group_instance_id, generation_id)
        if code != _NONE:
            return [code] * len(items)
        now = self.group_manager.wall_ms()
        codes: list[int] = []
        records: list[tuple[bytes, bytes | None]] = []
        accepted: dict[tuple[str, int], OffsetAndMetadata] = {}
        for item in items:
            if item.metadata is not None and len(item.metadata.encode()) > self.metadata_max_bytes:
                codes.append(int(ErrorCode.OFFSET_METADATA_TOO_LARGE))
                continue
            om = OffsetAndMetadata(item.offset, item.leader_epoch, item.metadata, now, -1)
            records.append(offset_commit_record(group_id, item.topic, item.partition, om))
            accepted[(item.topic, item.partition)] = om
            codes.append(_NONE)
        if not records:
            return codes
        code, flush_offset = self.group_manager.append_at(group_id, records, producer)
        if code == _NONE:
            self.group_manager.pending.add(group_id, producer[0], accepted)
            code = await self.group_manager.wait_durable(group_id, flush_offset)
        if code != _NONE:
            return [c if c != _NONE else code for c in codes]
        return codes

    def _on_marker(self, topic: str, partition: int, batch: bytes | bytearray) -> None:
        if topic == OFFSETS_TOPIC:
            self.group_manager.complete_txn(partition, batch)

    def fetch(
        self,
        group_id: str,
        topics: Sequence[tuple[str, Sequence[int]]] | None,
        require_stable: bool = False,
        member: tuple[str | None, int] = (None, -1),
    ) -> tuple[int, dict[str, dict[int, OffsetAndMetadata | None]]]:
        """``(group error, topic -> partition -> committed offset or None)``; ``topics`` None: all;
        ``require_stable``: a named partition with a pending transactional commit is UNSTABLE;
        ``member``: (member id, member epoch) of OffsetFetch v9+, checked by a consumer group."""
        pending = self.group_manager.pending
        code = self.check(group_id)
        if code != _NONE:
            return code, {}
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            code = cg.validate_fetch(*member)
            if code != _NONE:
                return code, {}
        group = self.group_manager.get_group(group_id)
        offsets = group.offsets if group is not None else {}
        out: dict[str, dict[int, OffsetAndMetadata | None]] = {}
        if topics is None:
            for (topic, partition), om in sorted(offsets.items()):
                out.setdefault(topic, {})[partition] = om
            return _NONE, out
        for topic, partitions in topics:
            by_partition = out.setdefault(topic, {})
            for partition in partitions:
                unstable = require_stable and pending.is_pending(group_id, (topic, partition))
                by_partition[partition] = UNSTABLE if unstable else offsets.get((topic, partition))
        return _NONE, out

    async def delete_offsets(
        self, group_id: str, topics: Sequence[tuple[str, Sequence[int]]]
    ) -> tuple[int, dict[tuple[str, int], int]]:
        """OffsetDelete: ``(group error, per-partition errors)``."""
        code = self.check(group_id)
        if code != _NONE:
            return code, {}
        group = self.group_manager.get_group(group_id)
        if group is None:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), {}
        if group.state == GroupState.DEAD:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), {}
        subscribed: set[str] | None = set()
        cg = self.group_manager.get_consumer_group(group_id)
        if cg is not None:
            subscribed = cg.subscribed_topic_names()
        elif group.state != GroupState.EMPTY:
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
            code, flush_offset = self.group_manager.append_at(group_id, tombstones)
            if code != _NONE:
                return code, {}
            for topic, partitions in topics:
                for partition in partitions:
                    if out.get((topic, partition)) == _NONE:
                        group.offsets.pop((topic, partition), None)
            code = await self.group_manager.wait_durable(group_id, flush_offset)
            if code != _NONE:
                return code, {}
        return _NONE, out

    # ------------------------------------------------------------------ admin

    def list_groups(self) -> list[GroupOverview]:
        consumer = self.group_manager.consumer_groups
        return [
            GroupOverview(g.group_id, g.protocol_type or "", g.state.value)
            if g.group_id not in consumer
            else GroupOverview(
                g.group_id, ConsumerGroup.protocol_type, consumer[g.group_id].state.value, "consumer"
            )
            for g in self.group_manager.groups.values()
            if g.state != GroupState.DEAD
        ]

    def describe(self, group_id: str) -> tuple[int, Group | None]:
        """DescribeGroups: a consumer-protocol group is GROUP_ID_NOT_FOUND there, as with Kafka
        (clients describe it with ConsumerGroupDescribe)."""
        code = self.check(group_id)
        if code != _NONE:
            return code, None
        if group_id in self.group_manager.consumer_groups:
            return int(ErrorCode.GROUP_ID_NOT_FOUND), None
        return _NONE, self.group_manager.get_group(group_id)

    async def delete_group(self, group_id: str) -> int:
        code = self.check(group_id)
        if code != _NONE:
            return code
        group = self.group_manager.get_group(group_id)
        if group is None or group.state == GroupState.DEAD:
            return int(ErrorCode.GROUP_ID_NOT_FOUND)
        cg = self.group_manager.get_consumer_group(group_id)
        if group.state != GroupState.EMPTY or (cg is not None and cg.members):
            return int(ErrorCode.NON_EMPTY_GROUP)
        records: list[tuple[bytes, bytes | None]] = [
            (gr.encode_offset_commit_key(group_id, t, p), None) for t, p in group.offsets
        ]
        records.append((gr.encode_group_metadata_key(group_id), None))
        if cg is not None:
            records += encode_consumer_records(cg.tombstones())
        code, flush_offset = self.group_manager.append_at(group_id, records)
        if code != _NONE:
            return code
        self.group_manager.remove(group)
        return await self.group_manager.wait_durable(group_id, flush_offset)

    # ------------------------------------------------------------------ metrics

    def committed_offsets(self) -> Iterator[tuple[str, str, int, int]]:
        """(group, topic, partition, committed offset) of every live group loaded here."""
        for group_id, group in self.group_manager.groups.items():
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
        now = self.group_manager.now() if now is None else now
        for group_id in list(self.group_manager.active):
            cg = self.group_manager.get_consumer_group(group_id)
            if cg is not None:
                deadline = cg.next_deadline()
                if deadline is not None and deadline <= now:
                    fenced = cg.tick(now, self.channel.image.topics)
                    if fenced:
                        log.info("worker %d: group %s: members %s timed out", self.node_id, group_id, fenced)
                    self._persist_or_downgrade(cg)
                continue
            group = self.group_manager.get_group(group_id)
            if group is None:
                self.group_manager.active.discard(group_id)
                continue
            deadline = group.next_deadline()
            if deadline is not None and deadline <= now:
                group.tick(now)
                self.group_manager.after_change(group)

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.retention_check_s)
            try:
                self.group_manager.expire_offsets()
            except Exception:
                log.exception("offset retention")
