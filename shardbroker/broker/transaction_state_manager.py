"""The transactional ids of one worker's ``__transaction_state`` partitions and their log (Kafka's
TransactionStateManager): which partition holds an id, loading, writing, expiry.

An id lives in partition ``abs(id.hashCode()) % partitions`` of ``__transaction_state`` (Java's
String.hashCode: group_metadata_manager.partition_for, the function the group coordinator uses),
so tools that compute an id's coordinator agree with us. Every id of a partition this worker
leads is in memory (transaction_metadata.py ``TransactionMetadata``); every state change is one
record in that partition (Kafka's layout, transaction_log.py), appended through the
ReplicaManager and, when the topic's flush policy asks for it, made durable before the change is
applied (Kafka appends with acks=-1). The coordinator epoch of a partition is its leader epoch:
it grows when the partition moves, so markers of an older coordinator are refused by the
partitions (TRANSACTION_COORDINATOR_FENCED) and a write that finished after a move is answered
NOT_COORDINATOR.

Loading replays the partition from its log start (Kafka's loadTransactionsForTxnTopicPartition);
the ids left in PrepareCommit/PrepareAbort are returned so the coordinator finishes them (markers,
then the Complete record), which is how a commit survives a kill -9 between its two records.

Expiry (``transactional.id.expiration.ms``): an id with no transaction open (Empty,
CompleteCommit, CompleteAbort) and no update for that long gets a tombstone and is forgotten.
The topic is ``cleanup.policy=compact``: the worker's log cleaner (broker/log_cleaner_service.py)
keeps the latest record of each transactional id and drops tombstones ``delete.retention.ms`` after
the clean that first saw them, so loading replays about one record per live id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from shardbroker.broker.group_metadata_manager import partition_for, replay_records
from shardbroker.broker.group_records import RecordFormatError
from shardbroker.broker.transaction_log import (
    TransactionLogValue,
    decode_transaction_log_key,
    decode_transaction_log_value,
    encode_transaction_log_key,
    encode_transaction_log_value,
)
from shardbroker.broker.transaction_metadata import (
    NO_PRODUCER_EPOCH,
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
)
from shardbroker.metadata.image import MetadataImage, TopicImage
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager

__all__ = ["TRANSACTION_STATE_TOPIC", "TransactionStateManager", "log_value"]

log = logging.getLogger(__name__)

TRANSACTION_STATE_TOPIC: Final = "__transaction_state"
_NONE: Final = int(ErrorCode.NONE)
_NOT_COORDINATOR: Final = int(ErrorCode.NOT_COORDINATOR)
#: How a failed append is answered (Kafka's TransactionStateManager.appendTransactionToLog).
_APPEND_ERRORS: Final = {
    int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION): int(ErrorCode.COORDINATOR_NOT_AVAILABLE),
    int(ErrorCode.REQUEST_TIMED_OUT): int(ErrorCode.COORDINATOR_NOT_AVAILABLE),
    int(ErrorCode.NOT_LEADER_OR_FOLLOWER): _NOT_COORDINATOR,
    int(ErrorCode.KAFKA_STORAGE_ERROR): _NOT_COORDINATOR,
}
#: Seconds an append waits for its flush when the flush policy asks for one.
DURABLE_TIMEOUT_S: Final = 30.0


def log_value(t: TxnTransitMetadata) -> TransactionLogValue:
    """The record value of a transition (its partitions grouped by topic, sorted)."""
    topics: dict[str, list[int]] = {}
    for topic, index in sorted(t.partitions):
        topics.setdefault(topic, []).append(index)
    return TransactionLogValue(
        t.producer_id,
        t.producer_epoch,
        t.txn_timeout_ms,
        int(t.state),
        tuple((topic, tuple(ids)) for topic, ids in topics.items()),
        t.last_update_timestamp,
        t.start_timestamp,
        t.last_producer_id,
        t.next_producer_id,
        t.client_transaction_version,
    )


def _metadata(transactional_id: str, v: TransactionLogValue) -> TransactionMetadata:
    state = TransactionState(v.transaction_status)
    partitions = (
        set() if state == TransactionState.EMPTY else {(t, i) for t, ids in v.partitions for i in ids}
    )
    return TransactionMetadata(
        transactional_id,
        v.producer_id,
        v.previous_producer_id,
        v.producer_epoch,
        NO_PRODUCER_EPOCH,  # Kafka does not persist the last epoch either
        v.transaction_timeout_ms,
        state,
        partitions,
        v.start_timestamp_ms,
        v.last_update_timestamp_ms,
        next_producer_id=v.next_producer_id,
        client_transaction_version=v.client_transaction_version,
    )


class TransactionStateManager:
    """The transactional ids of the ``__transaction_state`` partitions this worker leads."""

    def __init__(
        self,
        node_id: int,
        channel: Any,
        replicas: ReplicaManager,
        *,
        num_partitions: int,
        expiration_ms: int,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.channel = channel
        self.replicas = replicas
        self.num_partitions = num_partitions
        self.expiration_ms = expiration_ms
        self._wall = wall_clock
        self.transactions: dict[str, TransactionMetadata] = {}
        #: Partitions loaded and served here -> their coordinator epoch (leader epoch at load).
        self.owned: dict[int, int] = {}

    def wall_ms(self) -> int:
        return int(self._wall() * 1000)

    def clear(self) -> None:
        self.transactions = {}
        self.owned = {}

    # ------------------------------------------------------------------ partitions

    def topic(self) -> TopicImage | None:
        image: MetadataImage = self.channel.image
        return image.topics.get(TRANSACTION_STATE_TOPIC)

    def partition_of(self, transactional_id: str) -> int:
        topic = self.topic()
        return partition_for(transactional_id, len(topic.partitions) if topic else self.num_partitions)

    def led(self, image: MetadataImage) -> dict[int, int]:
        """The partitions this worker leads in ``image`` -> their leader epochs."""
        topic = image.topics.get(TRANSACTION_STATE_TOPIC)
        if topic is None:
            return {}
        return {p.partition: p.leader_epoch for p in topic.partitions if p.leader == self.node_id}

    def sync_partitions(self, image: MetadataImage) -> list[str]:
        """Load the partitions led here now (or again at a new epoch), unload those led elsewhere;
        the ids that loading left in PrepareCommit/PrepareAbort."""
        led = self.led(image)
        for partition in sorted(self.owned):
            if led.get(partition) != self.owned[partition]:
                self.unload(partition)
        pending: list[str] = []
        started = time.monotonic()
        loaded = 0
        for partition, epoch in sorted(led.items()):
            opened = self.replicas.get(TRANSACTION_STATE_TOPIC, partition) is not None
            if partition not in self.owned and opened:
                pending += self.load(partition, epoch)
                loaded += 1
        if loaded:
            log.info(
                "worker %d: loaded %d %s partitions (%d transactional ids, %d to complete) in %.3f s",
                self.node_id,
                loaded,
                TRANSACTION_STATE_TOPIC,
                len(self.transactions),
                len(pending),
                time.monotonic() - started,
            )
        return pending

    def unload(self, partition: int) -> None:
        self.owned.pop(partition, None)
        for tid in [t for t in self.transactions if self.partition_of(t) == partition]:
            del self.transactions[tid]
        log.info("worker %d: unloaded %s-%d", self.node_id, TRANSACTION_STATE_TOPIC, partition)

    def load(self, partition: int, coordinator_epoch: int) -> list[str]:
        """Rebuild the ids of one partition from its log; returns those left in a Prepare state."""
        p = self.replicas.get(TRANSACTION_STATE_TOPIC, partition)
        assert p is not None
        loaded: dict[str, TransactionMetadata | None] = {}
        records = 0
        label = f"{TRANSACTION_STATE_TOPIC}-{partition}"
        partitions = len(t.partitions) if (t := self.topic()) is not None else self.num_partitions
        for offset, raw_key, raw_value in replay_records(p.log, label):
            records += 1
            try:
                tid = decode_transaction_log_key(raw_key)
                if tid is None:
                    continue
                value = decode_transaction_log_value(raw_value)
                loaded[tid] = None if value is None else _metadata(tid, value)
            except (RecordFormatError, ValueError) as exc:  # ValueError: an unknown state id
                log.warning("%s offset %d: %s", label, offset, exc)
        pending = []
        for tid, md in loaded.items():
            if md is None or partition_for(tid, partitions) != partition:
                continue
            self.transactions[tid] = md
            if md.state in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
                pending.append(tid)
        self.owned[partition] = coordinator_epoch
        log.debug(
            "worker %d: loaded %s at epoch %d: %d records", self.node_id, label, coordinator_epoch, records
        )
        return pending

    # ------------------------------------------------------------------ writing

    def coordinator_epoch(self, transactional_id: str) -> int | None:
        """The epoch this worker coordinates ``transactional_id`` at (None: it does not)."""
        return self.owned.get(self.partition_of(transactional_id))

    async def append(self, transactional_id: str, coordinator_epoch: int, t: TxnTransitMetadata) -> int:
        """Write the record of a prepared transition, then apply it (or drop it, on an error:
        Kafka's appendTransactionToLog). A Dead target writes a tombstone and forgets the id."""
        md = self.transactions.get(transactional_id)
        key = encode_transaction_log_key(transactional_id)
        value = None if t.state == TransactionState.DEAD else encode_transaction_log_value(log_value(t))
        code = await self._write(transactional_id, key, value)
        if code == _NONE and self.coordinator_epoch(transactional_id) != coordinator_epoch:
            code = _NOT_COORDINATOR  # the partition moved (or moved and came back) meanwhile
        current = self.transactions.get(transactional_id)
        if current is None or current is not md or md is None:
            return code if code != _NONE else _NOT_COORDINATOR  # unloaded meanwhile
        if code != _NONE:
            if md.pending_state == t.state:
                md.abort_pending()
            return code
        if t.state == TransactionState.DEAD:
            del self.transactions[transactional_id]
        else:
            md.complete_transition(t)
        return _NONE

    async def _write(self, transactional_id: str, key: bytes, value: bytes | None) -> int:
        partition = self.partition_of(transactional_id)
        builder = RecordBatchBuilder()
        builder.append(value, key=key, timestamp=self.wall_ms())
        result = self.replicas.append(TRANSACTION_STATE_TOPIC, partition, bytearray(builder.build()))
        if result.error_code != _NONE:
            log.error(
                "worker %d: writing the state of %r: error %d %s",
                self.node_id,
                transactional_id,
                result.error_code,
                result.error_message,
            )
            return _APPEND_ERRORS.get(result.error_code, int(ErrorCode.UNKNOWN_SERVER_ERROR))
        if result.flush_offset < 0:
            return _NONE
        p = self.replicas.get(TRANSACTION_STATE_TOPIC, partition)
        if p is None:
            return _NOT_COORDINATOR
        code = await self.replicas.flusher.wait_durable(p, result.flush_offset, DURABLE_TIMEOUT_S)
        return _APPEND_ERRORS.get(code, code)

    # ------------------------------------------------------------------ timers

    def timed_out(self, now_ms: int) -> list[tuple[str, int, int]]:
        """``(id, producer id, epoch)`` of the Ongoing transactions past their timeout."""
        return [
            (tid, md.producer_id, md.producer_epoch)
            for tid, md in self.transactions.items()
            if md.state == TransactionState.ONGOING
            and not md.pending
            and md.start_timestamp + md.txn_timeout_ms < now_ms
        ]

    async def expire_transactional_ids(self, now_ms: int) -> int:
        """Tombstone and forget the ids idle past ``transactional.id.expiration.ms``; the count."""
        expired = [
            (tid, md)
            for tid, md in self.transactions.items()
            if md.state.expiration_allowed
            and not md.pending
            and md.last_update_timestamp <= now_ms - self.expiration_ms
        ]
        removed = 0
        for tid, md in expired:
            epoch = self.coordinator_epoch(tid)
            if epoch is None or self.transactions.get(tid) is not md or md.pending:
                continue
            if await self.append(tid, epoch, md.prepare_dead()) == _NONE:
                removed += 1
        if removed:
            log.info("worker %d: expired %d transactional ids", self.node_id, removed)
        return removed
