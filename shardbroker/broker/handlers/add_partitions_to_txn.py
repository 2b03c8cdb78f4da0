"""AddPartitionsToTxn (api key 24), v0-v5: partitions join the producer's transaction before it
writes to them (Kafka's handleAddPartitionsToTxnRequest).

v0-v3 (clients): one transaction. Without WRITE on the TRANSACTIONAL_ID every partition is
TRANSACTIONAL_ID_AUTHORIZATION_FAILED; then a partition of a topic without WRITE is
TOPIC_AUTHORIZATION_FAILED and one that does not exist UNKNOWN_TOPIC_OR_PARTITION, and if any
partition failed so, the others are OPERATION_NOT_ATTEMPTED and nothing is added. Otherwise the
coordinator's answer (transaction_coordinator.py) is every partition's. PRODUCER_FENCED is
INVALID_PRODUCER_EPOCH below v2.

v4+ (KIP-890 part 1, broker to coordinator): several transactions, CLUSTER_ACTION on the
cluster (else the top-level CLUSTER_AUTHORIZATION_FAILED); a ``verify_only`` transaction only
checks that the partitions are in it (nothing written), the others are added as above without
the per-id and per-topic ACL checks, which CLUSTER_ACTION covers.
"""

from __future__ import annotations

from collections.abc import Sequence

from shardbroker.broker.auth_helper import authorize_cluster, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._txn import (
    NOT_AVAILABLE,
    TXN_DENIED,
    coordinator,
    fenced_as,
    may_write_transactional_id,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_Rq = m.AddPartitionsToTxnRequest
_Rs = m.AddPartitionsToTxnResponse
TopicPartition = tuple[str, int]


def _results(codes: dict[TopicPartition, int]) -> list[_Rs.AddPartitionsToTxnTopicResult]:
    by_topic: dict[str, list[_Rs.AddPartitionsToTxnPartitionResult]] = {}
    for (topic, index), code in codes.items():
        by_topic.setdefault(topic, []).append(
            _Rs.AddPartitionsToTxnPartitionResult(partition_index=index, partition_error_code=code)
        )
    return [_Rs.AddPartitionsToTxnTopicResult(name=t, results_by_partition=r) for t, r in by_topic.items()]


def _partitions(topics: Sequence[_Rq.AddPartitionsToTxnTopic]) -> list[TopicPartition]:
    return list(dict.fromkeys((t.name, p) for t in topics for p in t.partitions))


async def _add(
    ctx: RequestContext,
    transactional_id: str,
    producer_id: int,
    epoch: int,
    partitions: list[TopicPartition],
    *,
    check_acls: bool,
) -> dict[TopicPartition, int]:
    txn = coordinator(ctx)
    if check_acls and not may_write_transactional_id(ctx, transactional_id):
        return dict.fromkeys(partitions, TXN_DENIED)
    if txn is None:
        return dict.fromkeys(partitions, NOT_AVAILABLE)
    allowed = (
        filter_authorized(ctx, AclOperation.WRITE, ResourceType.TOPIC, {t for t, _ in partitions})
        if check_acls
        else {t for t, _ in partitions}
    )
    topics = ctx.worker.image.topics
    failed: dict[TopicPartition, int] = {}
    for topic, index in partitions:
        if topic not in allowed:
            failed[(topic, index)] = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
        elif topic not in topics or topics[topic].partition(index) is None:
            failed[(topic, index)] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    if failed:
        return {tp: failed.get(tp, int(ErrorCode.OPERATION_NOT_ATTEMPTED)) for tp in partitions}
    if not transactional_id:
        return dict.fromkeys(partitions, int(ErrorCode.INVALID_REQUEST))
    code = await txn.add_partitions(transactional_id, producer_id, epoch, set(partitions))
    return dict.fromkeys(partitions, fenced_as(code, ctx.api_version))


async def handle_add_partitions_to_txn(ctx: RequestContext, request: _Rq) -> _Rs:
    if ctx.api_version < 4:
        codes = await _add(
            ctx,
            request.v3_and_below_transactional_id,
            request.v3_and_below_producer_id,
            request.v3_and_below_producer_epoch,
            _partitions(request.v3_and_below_topics),
            check_acls=True,
        )
        return _Rs(results_by_topic_v3_and_below=_results(codes))
    if not authorize_cluster(ctx, AclOperation.CLUSTER_ACTION):
        return _Rs(error_code=int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED))
    txn = coordinator(ctx)
    out = []
    for t in request.transactions:
        partitions = _partitions(t.topics)
        if txn is None:
            codes = dict.fromkeys(partitions, NOT_AVAILABLE)
        elif t.verify_only:
            codes = txn.verify_partitions(
                t.transactional_id, t.producer_id, t.producer_epoch, set(partitions)
            )
        else:
            codes = await _add(
                ctx, t.transactional_id, t.producer_id, t.producer_epoch, partitions, check_acls=False
            )
        out.append(
            _Rs.AddPartitionsToTxnResult(transactional_id=t.transactional_id, topic_results=_results(codes))
        )
    return _Rs(results_by_transaction=out)


def add_partitions_error_response(request: _Rq, version: int, code: ErrorCode, message: str) -> _Rs:
    if version >= 4:
        return _Rs(error_code=int(code))
    return _Rs(
        results_by_topic_v3_and_below=_results(
            dict.fromkeys(_partitions(request.v3_and_below_topics), int(code))
        )
    )


HANDLER = ApiHandler(
    api_key=_Rq.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_add_partitions_to_txn,
    error_response=add_partitions_error_response,
)
