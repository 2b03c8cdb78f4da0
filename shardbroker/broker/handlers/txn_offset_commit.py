"""TxnOffsetCommit (api key 28), v0-v4: a transactional producer commits a group's offsets in
its transaction (KIP-98; v3+ carry the consumer's generation, member and instance id, KIP-447).
The offsets are written to the group's ``__consumer_offsets`` partition in a transactional
batch of the producer and stay pending until the transaction's marker lands there
(txn_offset_commits.py, GroupCoordinator.txn_commit). AddOffsetsToTxn made that partition part
of the transaction before.

Authorization, as KafkaApis: WRITE on the TRANSACTIONAL_ID (every partition
TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then READ on the GROUP (GROUP_AUTHORIZATION_FAILED),
then READ on each topic (TOPIC_AUTHORIZATION_FAILED), before its existence
(UNKNOWN_TOPIC_OR_PARTITION).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_coordinator import CommitItem
from shardbroker.broker.handlers._groups import (
    GROUP_DENIED,
    NOT_AVAILABLE,
    committable_partitions,
    coordinator,
    may_read_group,
)
from shardbroker.broker.handlers._txn import TXN_DENIED, may_write_transactional_id
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_Rs = m.TxnOffsetCommitResponse


def _response(request: m.TxnOffsetCommitRequest, codes: dict[tuple[str, int], int]) -> _Rs:
    return _Rs(
        topics=[
            _Rs.TxnOffsetCommitResponseTopic(
                name=t.name,
                partitions=[
                    _Rs.TxnOffsetCommitResponsePartition(
                        partition_index=p.partition_index, error_code=codes[(t.name, p.partition_index)]
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


def _all(request: m.TxnOffsetCommitRequest, code: int) -> _Rs:
    return _response(
        request, {(t.name, p.partition_index): code for t in request.topics for p in t.partitions}
    )


async def handle_txn_offset_commit(ctx: RequestContext, request: m.TxnOffsetCommitRequest) -> _Rs:
    version = ctx.api_version
    if not may_write_transactional_id(ctx, request.transactional_id):
        return _all(request, TXN_DENIED)
    if not may_read_group(ctx, request.group_id):
        return _all(request, GROUP_DENIED)
    groups = coordinator(ctx)
    if groups is None:
        return _all(request, NOT_AVAILABLE)
    codes, accepted = committable_partitions(ctx, request.topics)
    items = [
        CommitItem(
            name,
            p.partition_index,
            p.committed_offset,
            p.committed_leader_epoch if version >= 2 else -1,
            p.committed_metadata,
        )
        for name, p in accepted
    ]
    if items:
        results = await groups.txn_commit(
            request.group_id,
            (request.producer_id, request.producer_epoch),
            member_id=request.member_id if version >= 3 else "",
            group_instance_id=request.group_instance_id if version >= 3 else None,
            generation_id=request.generation_id if version >= 3 else -1,
            items=items,
        )
        for item, code in zip(items, results, strict=True):
            codes[(item.topic, item.partition)] = code
    return _response(request, codes)


def txn_offset_commit_error_response(
    request: m.TxnOffsetCommitRequest, version: int, code: ErrorCode, message: str
) -> _Rs:
    return _all(request, int(code))


HANDLER = ApiHandler(
    api_key=m.TxnOffsetCommitRequest.API_KEY,
    min_version=0,
    max_version=4,
    handle=handle_txn_offset_commit,
    error_response=txn_offset_commit_error_response,
)
