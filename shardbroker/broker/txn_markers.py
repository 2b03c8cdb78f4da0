"""Writing transaction markers (COMMIT/ABORT control batches) into the partitions of a transaction,
wherever they are led (Kafka's TransactionMarkerChannelManager and WriteTxnMarkers, on this
broker's process model).

A partition this worker leads gets its marker appended at once (ReplicaManager.append_marker:
the log's marker rules, the flush the policy asks for, as acks=-1). A partition another worker
leads gets it through the forwarding rings (broker/forwarding.py), as one request frame flagged
FLAG_TXN_MARKER, which only a sibling worker may send (local_clients.py ``_marker``). Kafka sends
WriteTxnMarkers over TCP to each leader instead; the rings need no inter-worker listener, no
credentials, and the owner knows its peer is a worker from the kernel (SO_PEERCRED), so that
CLUSTER_ACTION needs no ACL. The WriteTxnMarkers API (handlers/write_txn_markers.py) uses the
same function for the markers an admin client asks for.

Each marker is answered with a Kafka error code; retrying (NOT_LEADER_OR_FOLLOWER while a
partition moves, REQUEST_TIMED_OUT) is the caller's decision.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from shardbroker.broker.forwarding import ForwardResult, ProduceForwarder
from shardbroker.ipc.local_protocol import FLAG_TXN_MARKER, FLAG_TXN_MARKER_V2
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager

__all__ = ["RETRIABLE_MARKER_ERRORS", "MarkerWriter", "TxnMarker"]

_NONE: Final = int(ErrorCode.NONE)
_NOT_LEADER: Final = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_UNKNOWN: Final = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
_TIMED_OUT: Final = int(ErrorCode.REQUEST_TIMED_OUT)

#: Errors after which Kafka's marker channel sends the marker again (after new metadata).
RETRIABLE_MARKER_ERRORS: Final = frozenset(
    int(e)
    for e in (
        ErrorCode.NOT_LEADER_OR_FOLLOWER,
        ErrorCode.LEADER_NOT_AVAILABLE,
        ErrorCode.REQUEST_TIMED_OUT,
        ErrorCode.KAFKA_STORAGE_ERROR,
        ErrorCode.NOT_ENOUGH_REPLICAS,
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    )
)


class TxnMarker:
    """What one marker says: producer id and epoch, the coordinator's epoch, commit or abort;
    and the transaction version whose rules the partition checks it with (2: KIP-890 part 2,
    its epoch is newer than the transaction's data)."""

    __slots__ = ("commit", "coordinator_epoch", "producer_epoch", "producer_id", "transaction_version")

    def __init__(
        self,
        producer_id: int,
        producer_epoch: int,
        coordinator_epoch: int,
        commit: bool,
        transaction_version: int = 0,
    ) -> None:
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.coordinator_epoch = coordinator_epoch
        self.commit = commit
        self.transaction_version = transaction_version

    def batch(self) -> bytes:
        return build_control_batch(
            ControlRecordType.COMMIT if self.commit else ControlRecordType.ABORT,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            coordinator_epoch=self.coordinator_epoch,
            timestamp=time.time_ns() // 1_000_000,
        )


class MarkerWriter:
    """Writes markers from one worker: into the partitions it leads, or through its forwarder."""

    def __init__(self, node_id: int, replicas: ReplicaManager, forwarder: ProduceForwarder | None) -> None:
        self.node_id = node_id
        self.replicas = replicas
        self.forwarder = forwarder

    async def write(self, topic: str, partition: int, marker: TxnMarker, timeout: float) -> int:
        """Write ``marker`` into one partition, here or at its leader; the error code (never raises)."""
        replicas = self.replicas
        leader = replicas.leader_of(topic, partition)[0]
        if leader == self.node_id:
            r = replicas.append_marker(topic, partition, marker.batch(), marker.transaction_version)
            p = replicas.get(topic, partition)
            if r.error_code or r.flush_offset < 0 or p is None:
                return r.error_code
            return await replicas.flusher.wait_durable(p, r.flush_offset, timeout)
        if leader < 0:
            return _UNKNOWN if replicas.image.topics.get(topic) is None else _NOT_LEADER
        if self.forwarder is None:
            return _NOT_LEADER
        flags = FLAG_TXN_MARKER | (FLAG_TXN_MARKER_V2 if marker.transaction_version >= 2 else 0)
        sent = await self.forwarder.send(leader, topic, partition, marker.batch(), -1, timeout, flags=flags)
        if isinstance(sent, ForwardResult):
            return sent.error_code
        try:
            result = await asyncio.wait_for(asyncio.shield(sent), timeout)
        except TimeoutError:
            return _TIMED_OUT
        return result.error_code

    async def write_all(
        self, partitions: Iterable[tuple[str, int]], marker: TxnMarker, timeout: float
    ) -> dict[tuple[str, int], int]:
        """Write ``marker`` into every partition at once; the error code of each."""
        keys = list(partitions)
        codes = await asyncio.gather(*(self.write(t, p, marker, timeout) for t, p in keys))
        return dict(zip(keys, codes, strict=True))
