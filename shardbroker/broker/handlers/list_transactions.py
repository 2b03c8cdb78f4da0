"""ListTransactions (api key 66), v0-v1: the transactional ids this worker coordinates.

Filters as Kafka's TransactionStateManager.listTransactionStates: ``state_filters`` (Kafka's state
names; unknown ones are echoed in ``unknown_state_filters``), ``producer_id_filters``, and (v1,
KIP-994) ``duration_filter``: only transactions running longer than that many ms. Each Kafka
broker answers for its own coordinator partitions and so does each worker here: clients (and
``shardbroker transactions list``) ask every node. Ids the principal may not DESCRIBE are left
out silently, as KafkaApis does (no error, no audit line per id).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._txn import NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "handle_list_transactions"]

_S = m.ListTransactionsResponse.TransactionState


async def handle_list_transactions(
    ctx: RequestContext, request: m.ListTransactionsRequest
) -> m.ListTransactionsResponse:
    txn = coordinator(ctx)
    if txn is None:
        return m.ListTransactionsResponse(error_code=NOT_AVAILABLE)
    duration = request.duration_filter if ctx.api_version >= 1 else -1
    code, unknown, found = txn.list_transactions(
        set(request.producer_id_filters), set(request.state_filters), duration
    )
    states = [
        _S(
            transactional_id=md.transactional_id,
            producer_id=md.producer_id,
            transaction_state=md.state.kafka_name,
        )
        for md in found
        if authorize(
            ctx,
            AclOperation.DESCRIBE,
            ResourceType.TRANSACTIONAL_ID,
            md.transactional_id,
            log_if_denied=False,
        )
    ]
    return m.ListTransactionsResponse(
        error_code=code, unknown_state_filters=unknown, transaction_states=states
    )


HANDLER = ApiHandler(
    api_key=m.ListTransactionsRequest.API_KEY,
    min_version=0,
    max_version=1,
    handle=handle_list_transactions,
)
