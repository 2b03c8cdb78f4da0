"""DescribeTransactions (api key 65), v0: the state of transactional ids this worker coordinates.

As KafkaApis: DESCRIBE on each TRANSACTIONAL_ID, else TRANSACTIONAL_ID_AUTHORIZATION_FAILED for
that id; the partitions of a transaction are listed only for the topics the principal may
DESCRIBE. The coordinator answers NOT_COORDINATOR for an id coordinated elsewhere (clients find
the coordinator first), TRANSACTIONAL_ID_NOT_FOUND for an unknown one
(broker/transaction_coordinator.py ``describe``).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._txn import NOT_AVAILABLE, TXN_DENIED, coordinator
from shardbroker.protocol import messages as m
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "handle_describe_transactions"]

_S = m.DescribeTransactionsResponse.TransactionState
_T = m.DescribeTransactionsResponse.TopicData


def _describe(ctx: RequestContext, transactional_id: str) -> _S:
    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.TRANSACTIONAL_ID, transactional_id):
        return _S(transactional_id=transactional_id, error_code=TXN_DENIED)
    txn = coordinator(ctx)
    if txn is None:
        return _S(transactional_id=transactional_id, error_code=NOT_AVAILABLE)
    code, md = txn.describe(transactional_id)
    if md is None:
        return _S(transactional_id=transactional_id, error_code=code)
    topics = md.topics()
    allowed = filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (t for t, _ in topics))
    return _S(
        transactional_id=transactional_id,
        transaction_state=md.state.kafka_name,
        transaction_timeout_ms=md.txn_timeout_ms,
        transaction_start_time_ms=md.start_timestamp,
        producer_id=md.producer_id,
        producer_epoch=md.producer_epoch,
        topics=[_T(topic=t, partitions=parts) for t, parts in topics if t in allowed],
    )


async def handle_describe_transactions(
    ctx: RequestContext, request: m.DescribeTransactionsRequest
) -> m.DescribeTransactionsResponse:
    return m.DescribeTransactionsResponse(
        transaction_states=[_describe(ctx, tid) for tid in request.transactional_ids]
    )


HANDLER = ApiHandler(
    api_key=m.DescribeTransactionsRequest.API_KEY,
    min_version=0,
    max_version=0,
    handle=handle_describe_transactions,
)
