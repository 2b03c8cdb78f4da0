"""The groups of one worker's ``__consumer_offsets`` partitions and their log (Kafka's
GroupMetadataManager): which partition holds a group, loading, writing, offset expiry, compaction.

A group lives in partition ``abs(groupId.hashCode()) % partitions`` of ``__consumer_offsets``
(Java's ``String.hashCode`` over UTF-16 code units, int32 wrap-around; ``Utils.abs`` maps
Integer.MIN_VALUE to 0), so tools that compute a group's partition agree with us. Every group of
a partition this worker leads is in memory (:class:`Group`); what Kafka persists is persisted the
same way, as records in that partition (Kafka's layouts, group_records.py): offset commits, and
the group's metadata when the state machine marks it dirty (a generation completed, the group
became Empty). Records go through the ReplicaManager (files: only through it).

Loading a partition replays it from the log start (Kafka's loadGroupsAndOffsets): a group loaded
with members is Stable at its stored generation, so heartbeats and commits continue across a
restart or a kill -9; a partition led elsewhere now is unloaded (its groups are killed).

Offset retention (Kafka 2.1+): offsets of a group with no protocol expire one by one, retention
after their commit; those of an Empty consumer group all together, retention after it became
Empty; an explicit OffsetCommit retention wins. A group left with nothing is removed (tombstone).

Compaction: the topic is ``cleanup.policy=compact`` and the worker's log cleaner compacts it like
any compacted topic (broker/log_cleaner_service.py, Kafka's rules: the latest record per key, a
tombstone kept ``delete.retention.ms``, aborted transactional commits removed), so loading replays
only what the cleaner kept. (Before the cleaner, this manager rewrote its live records into a
fresh segment and moved the log start: docs/notes/group-coordinator.md.)
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker import group_records as gr
from shardbroker.broker.consumer_group import ConsumerGroup, ConsumerGroupConfig
from shardbroker.broker.consumer_group import Record as ConsumerRecord
from shardbroker.broker.group_migration import classic_group_from_consumer
from shardbroker.broker.group_state import Group, GroupState, Member, OffsetAndMetadata
from shardbroker.broker.txn_offset_commits import PendingTxnOffsets
from shardbroker.metadata.image import MetadataImage, TopicImage
from shardbroker.protocol.control_records import ControlRecordType, control_record
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.record_batch import Record, RecordBatch, iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.storage.errors import StorageError

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.storage.log import PartitionLog

__all__ = [
    "OFFSETS_TOPIC",
    "GroupMetadataManager",
    "java_string_hash",
    "offset_commit_record",
    "partition_for",
    "replay_records",
]

log = logging.getLogger(__name__)

OFFSETS_TOPIC: Final = "__consumer_offsets"
_NONE: Final = int(ErrorCode.NONE)
#: Bytes read from the log per step while loading a partition.
LOAD_CHUNK: Final = 1 << 20
#: Log errors a TxnOffsetCommit answers as they are (the producer's epoch or transaction).
_PRODUCER_ERRORS: Final = frozenset(
    int(e)
    for e in (
        ErrorCode.INVALID_PRODUCER_EPOCH,
        ErrorCode.INVALID_TXN_STATE,
        ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
    )
)


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


def offset_commit_record(
    group_id: str, topic: str, partition: int, om: OffsetAndMetadata
) -> tuple[bytes, bytes]:
    """The ``__consumer_offsets`` record (key, value) of one committed offset."""
    value = gr.OffsetCommitValue(
        om.offset, om.metadata, om.commit_timestamp, om.leader_epoch, om.expire_timestamp
    )
    return gr.encode_offset_commit_key(group_id, topic, partition), gr.encode_offset_commit_value(value)


def replay_batches(plog: PartitionLog, label: str) -> Iterator[tuple[RecordBatch, list[Record]]]:
    """Every batch of an internal topic's partition with its records (control batches too), from
    its log start to its end; read errors end the replay with a log line."""
    position = plog.log_start_offset
    end = plog.log_end_offset
    while position < end:
        try:
            data = plog.read_bytes(position, LOAD_CHUNK)
            batches = list(iter_batches(data, allow_partial_tail=True))
        except (StorageError, ProtocolError) as exc:
            log.error("loading %s at %d: %s", label, position, exc)
            return
        advanced = position
        for batch in batches:
            if batch.next_offset <= position:
                continue
            advanced = batch.next_offset
            try:
                recs = [r for r in batch.records() if r.offset >= position]
            except ProtocolError as exc:
                log.error("%s batch at %d: %s", label, batch.base_offset, exc)
                continue
            yield batch, recs
        if advanced <= position:
            return  # nothing readable further (should not happen: logs end at whole batches)
        position = advanced


def replay_records(plog: PartitionLog, label: str) -> Iterator[tuple[int, memoryview, memoryview | None]]:
    """``(offset, key, value)`` of every keyed record of an internal topic's partition, skipping
    control batches (markers): ``__transaction_state`` in transaction_state_manager.py."""
    for batch, recs in replay_batches(plog, label):
        if not batch.is_control:
            for rec in recs:
                if rec.key is not None:
                    yield rec.offset, rec.key, rec.value


def _offset_and_metadata(value: gr.OffsetCommitValue) -> OffsetAndMetadata:
    return OffsetAndMetadata(
        value.offset, value.leader_epoch, value.metadata, value.commit_timestamp, value.expire_timestamp
    )


class GroupMetadataManager:
    """The groups of the ``__consumer_offsets`` partitions this worker leads, and their records."""

    def __init__(
        self,
        node_id: int,
        channel: Any,
        replicas: ReplicaManager,
        *,
        initial_rebalance_delay_ms: int,
        num_partitions: int,
        retention_ms: int,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        consumer_config: ConsumerGroupConfig | None = None,
        on_rebalance: Callable[[str], None] = lambda protocol: None,
    ) -> None:
        self.node_id = node_id
        self.channel = channel
        self.replicas = replicas
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        self.num_partitions = num_partitions
        self.retention_ms = retention_ms
        self._clock = clock
        self._wall = wall_clock
        self.groups: dict[str, Group] = {}
        #: Groups of the consumer protocol (KIP-848), by id; each also has a (classic, Empty)
        #: entry in ``groups``, which holds its committed offsets.
        self.consumer_groups: dict[str, ConsumerGroup] = {}
        self.consumer_config = consumer_config or ConsumerGroupConfig()
        #: Told each rebalance of a group here ("classic" or "consumer"): the metric's counter.
        self.on_rebalance = on_rebalance
        #: (protocol, group id) -> the generation / assignment epoch last seen, to count rebalances.
        self._epochs: dict[tuple[str, str], int] = {}
        #: __consumer_offsets partitions loaded and served here.
        self.owned: set[int] = set()
        #: Wall-clock ms at which each Empty group became Empty (offset retention).
        self._empty_since: dict[str, int] = {}
        #: Groups with members or pending members (the only ones with timers).
        self.active: set[str] = set()
        #: Transactional offset commits waiting for their marker (txn_offset_commits.py).
        self.pending = PendingTxnOffsets()

    def now(self) -> float:
        return self._clock() * 1000.0

    def wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def clear(self) -> None:
        """Kill every group and forget every partition (the worker drains)."""
        for group in self.groups.values():
            group.kill()
        for cg in self.consumer_groups.values():
            cg.kill()
        self.groups = {}
        self.consumer_groups = {}
        self.owned = set()

    # ------------------------------------------------------------------ partitions

    def topic(self) -> TopicImage | None:
        image: MetadataImage = self.channel.image
        return image.topics.get(OFFSETS_TOPIC)

    def partition_of(self, group_id: str) -> int:
        topic = self.topic()
        return partition_for(group_id, len(topic.partitions) if topic else self.num_partitions)

    def _led(self, image: MetadataImage) -> set[int]:
        topic = image.topics.get(OFFSETS_TOPIC)
        if topic is None:
            return set()
        return {p.partition for p in topic.partitions if p.leader == self.node_id}

    def sync_partitions(self, image: MetadataImage) -> None:
        """Load the partitions led here now, unload those led elsewhere."""
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
            records += self.load(partition, len(topic.partitions))
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
        for group_id in [g for g in self.groups if self.partition_of(g) == partition]:
            self._epochs.pop(("classic", group_id), None)
            self._epochs.pop(("consumer", group_id), None)
            self.groups.pop(group_id).kill()
            self._empty_since.pop(group_id, None)
            self.pending.forget(group_id)
        for group_id in [g for g in self.consumer_groups if self.partition_of(g) == partition]:
            self.consumer_groups.pop(group_id).kill()
        log.info("worker %d: unloaded %s-%d (led elsewhere now)", self.node_id, OFFSETS_TOPIC, partition)

    # ------------------------------------------------------------------ loading

    def load(self, partition: int, partitions: int) -> int:
        """Rebuild the groups of one partition from its log (Kafka's loadGroupsAndOffsets);
        returns the number of records read."""
        p = self.replicas.get(OFFSETS_TOPIC, partition)
        assert p is not None
        offsets: dict[str, dict[tuple[str, int], OffsetAndMetadata | None]] = {}
        metadata: dict[str, gr.GroupMetadataValue | None] = {}
        consumer: dict[str, ConsumerGroup] = {}
        #: producer id -> group -> offsets of its transaction, until its marker in the log.
        txn: dict[int, dict[str, dict[tuple[str, int], OffsetAndMetadata]]] = {}
        records = 0
        for batch, recs in replay_batches(p.log, f"{OFFSETS_TOPIC}-{partition}"):
            if batch.is_control:
                try:
                    commit = control_record(batch).type == ControlRecordType.COMMIT
                except ProtocolError as exc:
                    log.warning("%s-%d marker at %d: %s", OFFSETS_TOPIC, partition, batch.base_offset, exc)
                    continue
                for group_id, done in txn.pop(batch.producer_id, {}).items():
                    if commit:
                        offsets.setdefault(group_id, {}).update(done)
                continue
            for rec in recs:
                if rec.key is None:
                    continue
                records += 1
                try:
                    key = gr.decode_key(rec.key)
                    if key is None:
                        ckey = cgr.decode_key(rec.key)
                        if ckey is not None:
                            cg = consumer.get(ckey.group)
                            if cg is None:
                                cg = consumer[ckey.group] = ConsumerGroup(ckey.group, self.consumer_config)
                            cg.replay(ckey, cgr.decode_value(ckey, rec.value))
                        continue
                    value = gr.decode_value(key, rec.value)
                except gr.RecordFormatError as exc:
                    log.warning("%s-%d offset %d: %s", OFFSETS_TOPIC, partition, rec.offset, exc)
                    continue
                if isinstance(key, gr.OffsetCommitKey):
                    assert value is None or isinstance(value, gr.OffsetCommitValue)
                    om = None if value is None else _offset_and_metadata(value)
                    if batch.is_transactional and om is not None:
                        txn.setdefault(batch.producer_id, {}).setdefault(key.group, {})[
                            (key.topic, key.partition)
                        ] = om
                    else:
                        offsets.setdefault(key.group, {})[(key.topic, key.partition)] = om
                else:
                    assert value is None or isinstance(value, gr.GroupMetadataValue)
                    metadata[key.group] = value
        for producer_id, by_group in txn.items():
            for group_id, held in by_group.items():
                self.pending.add(group_id, producer_id, held)
                offsets.setdefault(group_id, {})
        now, wall = self.now(), self.wall_ms()
        for group_id, cg in consumer.items():
            if partition_for(group_id, partitions) == partition and not cg.is_empty_shell:
                cg.finish_load(now)
                self.consumer_groups[group_id] = cg
                self._epochs[("consumer", group_id)] = cg.assignment_epoch
        for group_id in set(offsets) | set(metadata) | set(self.consumer_groups):
            if partition_for(group_id, partitions) != partition:
                continue
            kept = {tp: o for tp, o in offsets.get(group_id, {}).items() if o is not None}
            value = metadata.get(group_id)
            if (
                value is None
                and not kept
                and group_id not in self.pending.by_group
                and group_id not in self.consumer_groups
            ):
                continue
            group = self.add_group(group_id)
            group.offsets = kept
            if value is not None:
                self._restore(group, value, now)
                group.persisted = gr.encode_group_metadata_value(value)
                self._epochs[("classic", group_id)] = group.generation_id
            if group.state == GroupState.EMPTY:
                ts = value.current_state_timestamp if value is not None else -1
                self._empty_since[group_id] = ts if ts >= 0 else wall
            self.after_change(group)
        self.owned.add(partition)
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

    # ------------------------------------------------------------------ writing

    def get_group(self, group_id: str) -> Group | None:
        return self.groups.get(group_id)

    def get_consumer_group(self, group_id: str) -> ConsumerGroup | None:
        return self.consumer_groups.get(group_id)

    def add_consumer_group(self, group_id: str) -> ConsumerGroup:
        """A new consumer-protocol group; its offsets go to the (Empty) classic entry."""
        if group_id not in self.groups:
            self.add_group(group_id)
        # A group made anew counts its epochs from 1 again (an earlier one may have gone classic).
        self._epochs.pop(("consumer", group_id), None)
        cg = self.consumer_groups[group_id] = ConsumerGroup(group_id, self.consumer_config)
        return cg

    def _count_rebalance(self, protocol: str, group_id: str, epoch: int) -> None:
        seen = self._epochs.get((protocol, group_id), 0)
        self._epochs[(protocol, group_id)] = epoch
        if epoch > seen:
            self.on_rebalance(protocol)

    def persist_consumer_group(
        self,
        cg: ConsumerGroup,
        *,
        first: Sequence[tuple[bytes, bytes | None]] = (),
        last: Sequence[tuple[bytes, bytes | None]] = (),
    ) -> tuple[int, int]:
        """Append what ``cg`` marked for persisting, as one batch (all or nothing), between the
        classic records ``first`` and ``last`` (a protocol migration's); ``(error code, flush
        offset)``. A group whose records could not be written no longer matches the log: it is
        dropped from memory and its partition loaded again by the next request."""
        self._count_rebalance("consumer", cg.group_id, cg.assignment_epoch)
        records = [*first, *encode_consumer_records(cg.take_records()), *last]
        self._track_consumer_group(cg)
        if not records:
            return _NONE, -1
        code, flush_offset = self.append_at(cg.group_id, records)
        if code != _NONE:
            partition = self.partition_of(cg.group_id)
            log.warning(
                "worker %d: consumer group %r: records not written (error %d): reloading %s-%d",
                self.node_id,
                cg.group_id,
                code,
                OFFSETS_TOPIC,
                partition,
            )
            if partition in self.owned:
                self._unload(partition)
        return code, flush_offset

    def upgrade(self, group: Group, cg: ConsumerGroup) -> tuple[int, int]:
        """``cg``, made of the classic ``group``'s members (group_migration.py), replaces it:
        one batch deletes the classic metadata record and writes the consumer group's records;
        ``group`` stays, Empty, with the offsets. ``(error code, flush offset)``."""
        group.hand_over(self.now())
        self.consumer_groups[cg.group_id] = cg
        self._epochs[("consumer", cg.group_id)] = cg.group_epoch  # counted as classic ones
        first = [(gr.encode_group_metadata_key(cg.group_id), None)] if group.persisted is not None else []
        code, flush_offset = self.persist_consumer_group(cg, first=first)
        if code == _NONE:
            group.persisted = None
        return code, flush_offset

    def downgrade(
        self, cg: ConsumerGroup, topics: Mapping[str, TopicImage], generation_id: int
    ) -> tuple[int, int]:
        """``cg``'s members (all of the classic protocol now) go back to its classic entry at
        ``generation_id``, which starts a rebalance: one batch deletes the consumer group's
        records and writes the classic group's. ``(error code, flush offset)``."""
        group = self.groups.get(cg.group_id) or self.add_group(cg.group_id)
        classic_group_from_consumer(cg, group, topics, self.now(), generation_id)
        self.consumer_groups.pop(cg.group_id, None)
        cg.records.extend(cg.tombstones())
        cg.kill()
        record = self._metadata_record(group)
        group.dirty = False
        code, flush_offset = self.persist_consumer_group(cg, last=[record])
        self._epochs.pop(("consumer", cg.group_id), None)
        self._epochs[("classic", cg.group_id)] = group.generation_id
        if code == _NONE:
            group.persisted = record[1]
        self.after_change(group)
        return code, flush_offset

    def _track_consumer_group(self, cg: ConsumerGroup) -> None:
        """A consumer group with members has timers and keeps its offsets; without, its offsets
        age from when it became empty (as an Empty classic consumer group's)."""
        if cg.members and not cg.dead:
            self.active.add(cg.group_id)
            self._empty_since.pop(cg.group_id, None)
        else:
            self.active.discard(cg.group_id)
            self._empty_since.setdefault(cg.group_id, self.wall_ms())

    def add_group(self, group_id: str) -> Group:
        """A new Empty group, served from now on."""
        group = self.groups[group_id] = Group(
            group_id, self.now(), initial_rebalance_delay_ms=self.initial_rebalance_delay_ms
        )
        return group

    def append(self, group_id: str, records: Sequence[tuple[bytes, bytes | None]]) -> int:
        """Append records to the group's partition; the error code (NONE: written)."""
        return self.append_at(group_id, records)[0]

    def append_at(
        self,
        group_id: str,
        records: Sequence[tuple[bytes, bytes | None]],
        producer: tuple[int, int] | None = None,
    ) -> tuple[int, int]:
        """``(error code, offset a flush must reach first or -1)`` of appending ``records``;
        ``producer`` (id, epoch): a transactional batch of that producer's open transaction
        (TxnOffsetCommit), whose epoch the log checks (INVALID_PRODUCER_EPOCH)."""
        if not records:
            return _NONE, -1
        partition = self.partition_of(group_id)
        builder = RecordBatchBuilder()
        if producer is not None:
            builder = self._txn_builder(partition, *producer)
        now = self.wall_ms()
        for key, value in records:
            builder.append(value, key=key, timestamp=now)
        result = self.replicas.append(OFFSETS_TOPIC, partition, bytearray(builder.build()))
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
            if producer is not None and result.error_code in _PRODUCER_ERRORS:
                return result.error_code, -1
            return int(ErrorCode.UNKNOWN_SERVER_ERROR), -1
        return _NONE, result.flush_offset

    def _txn_builder(self, partition: int, producer_id: int, producer_epoch: int) -> RecordBatchBuilder:
        """A transactional batch builder of the producer, at the sequence its state in the
        partition expects (Kafka's coordinator appends skip the sequence check; our log checks)."""
        p = self.replicas.get(OFFSETS_TOPIC, partition)
        entry = None if p is None else p.log.producer_state.producers.get(producer_id)
        seq = 0
        if entry is not None and entry.epoch == producer_epoch and entry.last_seq >= 0:
            seq = (entry.last_seq + 1) & 0x7FFFFFFF
        return RecordBatchBuilder(
            producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=seq, is_transactional=True
        )

    def complete_txn(self, partition: int, batch: bytes | bytearray) -> int:
        """A transaction marker landed on ``partition``: commit or drop the offsets its producer
        holds for the groups of that partition (Kafka's scheduleHandleTxnCompletion); the
        number of offsets completed."""
        if partition not in self.owned or not self.pending.by_group:
            return 0
        try:
            marker = next(iter_batches(batch))
            commit = control_record(marker).type == ControlRecordType.COMMIT
        except (ProtocolError, StopIteration) as exc:
            log.error(
                "worker %d: unreadable marker on %s-%d: %s", self.node_id, OFFSETS_TOPIC, partition, exc
            )
            return 0
        done = 0
        for group_id in list(self.pending.by_group):
            group = self.groups.get(group_id)
            if group is None:
                self.pending.forget(group_id)
            elif self.partition_of(group_id) == partition:
                done += self.pending.complete(group, marker.producer_id, commit)
        return done

    async def wait_durable(self, group_id: str, flush_offset: int) -> int:
        """Wait for the flush the topic's flush policy asked for (as acks=-1), if any."""
        if flush_offset < 0:
            return _NONE
        p = self.replicas.get(OFFSETS_TOPIC, self.partition_of(group_id))
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

    def after_change(self, group: Group) -> None:
        """Persist what the state machine says must be, and track when the group became Empty
        and whether it has timers (members or pending members) for ``tick`` to look at."""
        self._count_rebalance("classic", group.group_id, group.generation_id)
        cg = self.consumer_groups.get(group.group_id)
        if cg is not None:
            self._track_consumer_group(cg)
        else:
            if (group.members or group.pending_members) and group.state != GroupState.DEAD:
                self.active.add(group.group_id)
            else:
                self.active.discard(group.group_id)
            if group.state == GroupState.EMPTY:
                self._empty_since.setdefault(group.group_id, self.wall_ms())
            else:
                self._empty_since.pop(group.group_id, None)
        if group.dirty and group.state != GroupState.DEAD:
            group.dirty = False
            record = self._metadata_record(group)
            if self.append(group.group_id, [record]) == _NONE:
                group.persisted = record[1]

    def remove(self, group: Group) -> None:
        """Forget a deleted or expired group and kill it (its waiting requests are answered)."""
        if self.groups.get(group.group_id) is group:
            del self.groups[group.group_id]
            self._empty_since.pop(group.group_id, None)
            self._epochs.pop(("classic", group.group_id), None)
            self._epochs.pop(("consumer", group.group_id), None)
        cg = self.consumer_groups.pop(group.group_id, None)
        if cg is not None:
            cg.kill()
        group.kill()

    # ------------------------------------------------------------------ offset expiry

    def expire_offsets(self, wall_ms: int | None = None) -> int:
        """Remove expired offsets (and then empty groups); tombstones appended. Returns the count."""
        now = self.wall_ms() if wall_ms is None else wall_ms
        removed = 0
        for group_id, group in list(self.groups.items()):
            if group.state == GroupState.DEAD:
                continue
            expired: list[tuple[str, int]] = []
            empty_since = self._empty_since.get(group_id)
            cg = self.consumer_groups.get(group_id)
            live_consumers = cg is not None and bool(cg.members)
            for tp, om in group.offsets.items():
                if om.expire_timestamp >= 0:
                    due = om.expire_timestamp <= now
                elif live_consumers:
                    due = False
                elif cg is not None and empty_since is not None:
                    due = max(empty_since, om.commit_timestamp) + self.retention_ms <= now
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
            drop_group = (
                group.state == GroupState.EMPTY and not live_consumers and len(expired) == len(group.offsets)
            )
            if drop_group and group.persisted is not None:
                records.append((gr.encode_group_metadata_key(group_id), None))
            if drop_group and cg is not None:
                records += encode_consumer_records(cg.tombstones())
            if not records and not drop_group:
                continue
            if records and self.append(group_id, records) != _NONE:
                continue
            for tp in expired:
                del group.offsets[tp]
            removed += len(expired)
            if drop_group:
                self.remove(group)
        if removed:
            log.info("worker %d: expired %d committed offsets", self.node_id, removed)
        return removed


def encode_consumer_records(records: Sequence[ConsumerRecord]) -> list[tuple[bytes, bytes | None]]:
    """Consumer-group records (consumer_group.py) as ``__consumer_offsets`` key/value bytes."""
    return [
        (cgr.encode_key(key), None if value is None else cgr.encode_value(value)) for key, value in records
    ]
