"""AddOffsetsToTxn (api key 25), v0-v4: the consumer group's offsets will be committed in the
transaction: its ``__consumer_offsets`` partition joins the transaction (Kafka's
handleAddOffsetsToTxnRequest), so that partition gets the transaction's marker too.

Authorization, as KafkaApis: WRITE on the TRANSACTIONAL_ID (TRANSACTIONAL_ID_AUTHORIZATION_FAILED),
then READ on the GROUP (GROUP_AUTHORIZATION_FAILED). PRODUCER_FENCED is INVALID_PRODUCER_EPOCH
below v2.
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.broker.handlers._groups import GROUP_DENIED, may_read_group
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


async def handle_add_offsets_to_txn(
    ctx: RequestContext, request: m.AddOffsetsToTxnRequest
) -> m.AddOffsetsToTxnResponse:
    if not may_write_transactional_id(ctx, request.transactional_id):
        return m.AddOffsetsToTxnResponse(error_code=TXN_DENIED)
    if not may_read_group(ctx, request.group_id):
        return m.AddOffsetsToTxnResponse(error_code=GROUP_DENIED)
    txn, groups = coordinator(ctx), ctx.worker.groups
    if txn is None or groups is None:
        return m.AddOffsetsToTxnResponse(error_code=NOT_AVAILABLE)
    if not request.transactional_id:
        return m.AddOffsetsToTxnResponse(error_code=int(ErrorCode.INVALID_REQUEST))
    partition = groups.group_manager.partition_of(request.group_id)
    code = await txn.add_partitions(
        request.transactional_id, request.producer_id, request.producer_epoch, {(OFFSETS_TOPIC, partition)}
    )
    return m.AddOffsetsToTxnResponse(error_code=fenced_as(code, ctx.api_version))


HANDLER = ApiHandler(
    api_key=m.AddOffsetsToTxnRequest.API_KEY, min_version=0, max_version=4, handle=handle_add_offsets_to_txn
)
