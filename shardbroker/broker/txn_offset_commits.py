"""Transactional offset commits of one worker's groups while their transaction is open (Kafka's
GroupMetadata.pendingTransactionalOffsetCommits and completePendingTxnOffsetCommit).

A TxnOffsetCommit appends its offsets to the group's ``__consumer_offsets`` partition in a
transactional batch of the producer (id, epoch), so the log itself holds them as part of the
transaction; here they wait, per group and producer id, invisible to OffsetFetch, until the
transaction's marker lands on that partition (ReplicaManager.marker_listener): COMMIT makes them
the group's committed offsets, ABORT drops them. Loading a partition replays the same: offset
records of a transactional batch wait for their producer's marker in the log. A partition
with pending offsets is not compacted (group_metadata_manager.py): the compaction snapshot holds
committed offsets only, and moving the log start past an open transaction's records would lose
them at the next load.

Deviation: Kafka keeps a later non-transactional commit of the same partition over the
transaction's (it compares the records' log offsets); here the marker's COMMIT always wins.
"""

from __future__ import annotations

from typing import Final

from shardbroker.broker.group_state import Group, GroupState, OffsetAndMetadata
from shardbroker.protocol.errors import ErrorCode

__all__ = ["UNSTABLE", "PendingTxnOffsets", "validate_txn_commit"]

_NONE: Final = int(ErrorCode.NONE)
TopicPartition = tuple[str, int]
#: What an OffsetFetch with ``require_stable`` gets for a partition with a pending transactional
#: commit (answered UNSTABLE_OFFSET_COMMIT with offset -1, as Kafka's getOffsets).
UNSTABLE: Final = OffsetAndMetadata(-1, -1, "", -1, -1)


def validate_txn_commit(
    group: Group, member_id: str, group_instance_id: str | None, generation_id: int
) -> int:
    """Kafka's doTxnCommitOffsets checks (TxnOffsetCommit v3+ sends the member's identity; older
    versions send generation -1 and no member, which always passes)."""
    if group.state == GroupState.DEAD:
        return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
    if group_instance_id is not None and group.static_members.get(group_instance_id, member_id) != member_id:
        return int(ErrorCode.FENCED_INSTANCE_ID)
    if member_id and member_id not in group.members:
        return int(ErrorCode.UNKNOWN_MEMBER_ID)
    if generation_id >= 0 and generation_id != group.generation_id:
        return int(ErrorCode.ILLEGAL_GENERATION)
    return _NONE


class PendingTxnOffsets:
    """group id -> producer id -> the offsets that producer's open transaction commits."""

    def __init__(self) -> None:
        self.by_group: dict[str, dict[int, dict[TopicPartition, OffsetAndMetadata]]] = {}

    def add(self, group_id: str, producer_id: int, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
        self.by_group.setdefault(group_id, {}).setdefault(producer_id, {}).update(offsets)

    def is_pending(self, group_id: str, tp: TopicPartition) -> bool:
        return any(tp in offsets for offsets in self.by_group.get(group_id, {}).values())

    def has_any(self, group_ids: set[str]) -> bool:
        return any(g in group_ids for g in self.by_group)

    def complete(self, group: Group, producer_id: int, commit: bool) -> int:
        """Apply (COMMIT) or drop (ABORT) what ``producer_id`` holds for ``group``; the number of
        offsets it held."""
        by_producer = self.by_group.get(group.group_id)
        if by_producer is None:
            return 0
        offsets = by_producer.pop(producer_id, None)
        if not by_producer:
            del self.by_group[group.group_id]
        if offsets is None:
            return 0
        if commit:
            group.offsets.update(offsets)
        return len(offsets)

    def forget(self, group_id: str) -> None:
        self.by_group.pop(group_id, None)
