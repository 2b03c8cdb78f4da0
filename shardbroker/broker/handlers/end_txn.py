"""EndTxn (api key 26), v0-v5: commit or abort the producer's transaction.

The coordinator writes PrepareCommit/PrepareAbort and answers; the markers and the Complete
record follow (broker/transaction_coordinator.py). Without WRITE on the TRANSACTIONAL_ID:
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, as KafkaApis. PRODUCER_FENCED is INVALID_PRODUCER_EPOCH
below v2. v5 is transactions v2 (KIP-890 part 2), chosen by the client as in Kafka 4 (the request
version decides): the coordinator bumps the epoch at every end and answers the producer id and
epoch to go on with (transaction_coordinator.py ``end_txn_v2``).
"""

from __future__ import annotations

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

__all__ = ["HANDLER"]


async def handle_end_txn(ctx: RequestContext, request: m.EndTxnRequest) -> m.EndTxnResponse:
    if not may_write_transactional_id(ctx, request.transactional_id):
        return m.EndTxnResponse(error_code=TXN_DENIED)
    txn = coordinator(ctx)
    if txn is None:
        return m.EndTxnResponse(error_code=NOT_AVAILABLE)
    if not request.transactional_id:
        return m.EndTxnResponse(error_code=int(ErrorCode.INVALID_REQUEST))
    if ctx.api_version >= 5:
        code, producer_id, epoch = await txn.end_txn_v2(
            request.transactional_id, request.producer_id, request.producer_epoch, request.committed
        )
        return m.EndTxnResponse(error_code=code, producer_id=producer_id, producer_epoch=epoch)
    code = await txn.end_txn(
        request.transactional_id, request.producer_id, request.producer_epoch, request.committed
    )
    return m.EndTxnResponse(error_code=fenced_as(code, ctx.api_version))


HANDLER = ApiHandler(api_key=m.EndTxnRequest.API_KEY, min_version=0, max_version=5, handle=handle_end_txn)
