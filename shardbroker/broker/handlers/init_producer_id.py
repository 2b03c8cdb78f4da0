"""InitProducerId (api key 22), v0-v5: producer ids for idempotent producers.

Non-transactional (``transactional_id`` null): a new id from the worker's block (blocks of 1000
come from the controller, which persists them in the metadata log, so an id is never handed out
twice, across workers and restarts), epoch 0. KIP-360 re-initialisation (v3+: the client sends
its ``producer_id`` and ``producer_epoch``, after UNKNOWN_PRODUCER_ID or a timed-out batch): the
same id with the epoch bumped, so the partitions fence the old epoch's in-flight batches and
accept the new epoch from sequence 0. (Kafka itself hands a non-transactional producer a fresh id
here; clients accept either, and keeping the id keeps one producer-state entry per producer.)
An epoch that would pass 32766 gets a fresh id at epoch 0, as Kafka does on epoch exhaustion.

Transactional (a non-empty ``transactional_id``): the transaction coordinator of the id
answers (broker/transaction_coordinator.py: a new producer id, or the epoch bumped, after aborting
a transaction the previous epoch left open; NOT_COORDINATOR on another worker). PRODUCER_FENCED
is answered INVALID_PRODUCER_EPOCH below v4, as KafkaApis does (KIP-588). A controller that
cannot be reached for a new block answers COORDINATOR_NOT_AVAILABLE (15, retriable), as Kafka
does while its producer id manager has no block.

Authorization, as KafkaApis.handleInitProducerIdRequest, before anything else: a transactional
id needs WRITE on the TRANSACTIONAL_ID (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53); an
idempotent producer needs IDEMPOTENT_WRITE on the CLUSTER or WRITE on at least one TOPIC
(``authorize_by_resource_type``), else CLUSTER_AUTHORIZATION_FAILED (31). An empty
``transactional_id`` is taken as none (idempotent), as before authorization existed; Kafka
answers it INVALID_REQUEST after the TRANSACTIONAL_ID check.
"""

from __future__ import annotations

import logging

from shardbroker.broker.auth_helper import authorize, authorize_by_resource_type, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "handle_init_producer_id"]

log = logging.getLogger(__name__)

#: Kafka bumps up to Short.MAX_VALUE - 1 and then needs a new producer id.
MAX_EPOCH = 32766


async def handle_init_producer_id(
    ctx: RequestContext, request: m.InitProducerIdRequest
) -> m.InitProducerIdResponse:
    refusal = _refusal(ctx, request.transactional_id)
    if refusal is not None:
        return m.InitProducerIdResponse(error_code=int(refusal), producer_id=-1, producer_epoch=-1)
    pid, epoch = request.producer_id, request.producer_epoch
    if request.transactional_id:
        coordinator = ctx.worker.transactions
        if coordinator is None:
            code, pid, epoch = int(ErrorCode.COORDINATOR_NOT_AVAILABLE), -1, -1
        else:
            expected = (pid, epoch) if ctx.api_version >= 3 and pid >= 0 else None
            code, pid, epoch = await coordinator.init_producer_id(
                request.transactional_id, request.transaction_timeout_ms, expected
            )
        if code == ErrorCode.PRODUCER_FENCED and ctx.api_version < 4:
            code = int(ErrorCode.INVALID_PRODUCER_EPOCH)
        return m.InitProducerIdResponse(error_code=code, producer_id=pid, producer_epoch=epoch)
    if ctx.api_version >= 3 and pid >= 0 and 0 <= epoch < MAX_EPOCH:
        return m.InitProducerIdResponse(producer_id=pid, producer_epoch=epoch + 1)
    try:
        new_pid = await ctx.worker.replicas.allocate_producer_id()
    except Exception as exc:  # ControllerUnavailable, or a malformed answer
        log.warning("worker %d: no producer id block: %s", ctx.worker.node_id, exc)
        return m.InitProducerIdResponse(
            error_code=int(ErrorCode.COORDINATOR_NOT_AVAILABLE), producer_id=-1, producer_epoch=-1
        )
    return m.InitProducerIdResponse(producer_id=new_pid, producer_epoch=0)


def _refusal(ctx: RequestContext, transactional_id: str | None) -> ErrorCode | None:
    if transactional_id:
        if not authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id):
            return ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        return None
    if authorize_cluster(ctx, AclOperation.IDEMPOTENT_WRITE) or authorize_by_resource_type(
        ctx, AclOperation.WRITE, ResourceType.TOPIC
    ):
        return None
    return ErrorCode.CLUSTER_AUTHORIZATION_FAILED


HANDLER = ApiHandler(
    api_key=m.InitProducerIdRequest.API_KEY, min_version=0, max_version=5, handle=handle_init_producer_id
)
