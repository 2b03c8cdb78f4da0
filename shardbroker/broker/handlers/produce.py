"""Produce (api key 0): v3-v11 append record batches; v0-v2 are advertised but refused.

Why v0-v2 are advertised: librdkafka turns gzip/snappy/lz4 off when the broker does not list
Produce v0-2 (DESIGN.md; Kafka 4.0 keeps them for that reason). Those versions carry message sets
of magic 0/1, which this broker does not store nor convert, so each of their partitions is
answered UNSUPPORTED_FOR_MESSAGE_FORMAT (43) -- the code Kafka uses for a message format the
log cannot take -- rather than CORRUPT_MESSAGE, which would say the bytes were damaged (and
makes librdkafka retry). A v3+ request carrying magic 0/1 gets 43 too.

Per partition, the answer comes from ``ReplicaManager.append`` (leader_append.py: validation,
idempotence; log_flusher.py: durability): UNKNOWN_TOPIC_OR_PARTITION (3),
NOT_LEADER_OR_FOLLOWER (6, with the current leader and its endpoint from v10, so the client
re-routes without a Metadata round trip), CORRUPT_MESSAGE (2), MESSAGE_TOO_LARGE (10),
INVALID_RECORD (87), KAFKA_STORAGE_ERROR (56), and the idempotence errors 45/47/59. acks=0 gets
no response (None). acks=-1 waits for a flush only when the log's flush policy asks for one
after this append, bounded by ``timeout_ms`` (REQUEST_TIMED_OUT, 7).

A partition that another worker leads (a client with stale metadata, a partition that just
moved) is not refused: its batch is forwarded to the owner through the rings and answered with
the owner's answer, concurrently with the other partitions' forwards; one that nobody leads (a
move between its two steps) waits for its new placement, within ``timeout_ms``
(broker/produce_routing.py, ``reroute``). NOT_LEADER_OR_FOLLOWER remains for when the owner cannot be
reached or the placement does not come in time.

A transaction's first batch in a partition waits for the transaction coordinator's word that
the partition is in the transaction (KIP-890 part 1, broker/txn_verification.py), and the
partition's later batches on this worker wait behind it; refused: INVALID_PRODUCER_EPOCH (a
zombie), INVALID_TXN_STATE (never added), NOT_ENOUGH_REPLICAS (the coordinator is not ready:
retried by every client). Every other batch takes the path above, untouched.

A request for exactly one partition usually arrives without message objects
(protocol/single_produce.py): the connection calls :func:`append_single`, which applies the
checks above that can send it elsewhere (authorizer, forwarding, transaction verification) by
handing it to :func:`handle_produce`, and :func:`finish_single` for an error or a flush to wait
for. A per-request rule added to the handler (request quotas, say) belongs in
``append_single`` too, or makes it return None.

Authorization (with ``authorizer.class.name``), as KafkaApis.handleProduceRequest: a request whose
batches are transactional needs WRITE on its TRANSACTIONAL_ID (else every partition is
TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53); each topic needs WRITE on the TOPIC, checked before
its existence (TOPIC_AUTHORIZATION_FAILED, 29, for its partitions, also for a topic that does not
exist). With acks=0 a refused batch is dropped without an answer (Kafka also closes the
connection then; we do not). Without an authorizer the cost is one attribute test per request
(A/B in one process: 0.98-1.02 of the handler's speed before, noise); with one, a memoised
check per topic (~0.4 us) and a look at each partition's first batch header (~0.1 us): a
4-topic request runs the handler at ~0.88 of its speed without an authorizer, 1,000 ACLs or 2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.forwarding import ForwardResult
from shardbroker.broker.leader_append import AppendResult
from shardbroker.broker.produce_routing import reroute
from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.broker.txn_verification import TransactionVerifier
from shardbroker.broker.worker_state import WorkerState
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_header import ATTRIBUTES_OFFSET, MAGIC, MAGIC_OFFSET, TRANSACTIONAL_BIT
from shardbroker.protocol.single_produce import SingleProduce
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "append_single", "finish_single", "handle_produce", "needs_response_objects"]

_BUFFERS = (bytes, bytearray, memoryview)

_PPR = m.ProduceResponse.PartitionProduceResponse
_NOT_LEADER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_API_KEY = m.ProduceRequest.API_KEY
_QUEUED = AppendResult(_NOT_LEADER)
_TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
_OLD_FORMAT = AppendResult(
    int(ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT),
    error_message="Produce v0-2 (message format v0/v1) is not supported: use Produce v3+ with record batches",
)


async def handle_produce(ctx: RequestContext, request: m.ProduceRequest) -> m.ProduceResponse | None:
    version = ctx.api_version
    replicas = ctx.worker.replicas
    acks = request.acks
    append = replicas.append
    with_message = version >= 8
    waits: list[tuple[m.ProduceResponse.PartitionProduceResponse, Any, int]] = []
    forwards: list[tuple[_PPR, str, Awaitable[ForwardResult]]] = []
    forwarder = ctx.worker.forwarder
    verifier = ctx.worker.verifier if version >= 3 else None
    tid = request.transactional_id
    timeout = max(request.timeout_ms, 0) / 1000
    leaders: set[int] = set()
    responses = []
    authorizer = ctx.worker.authorizer
    if authorizer is not None and _transactional(request) and not _transaction_allowed(ctx, request):
        if acks == 0:
            return None
        return produce_error_response(
            request,
            version,
            ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
            "Transactional Id authorization failed.",
        )
    for topic in request.topic_data:
        name = topic.name
        if authorizer is not None and not authorize(ctx, AclOperation.WRITE, ResourceType.TOPIC, name):
            denied = [
                _PPR(index=pd.index, error_code=_TOPIC_DENIED, base_offset=-1) for pd in topic.partition_data
            ]
            for _ in denied:
                replicas.counters.error(_API_KEY, _TOPIC_DENIED)
            responses.append(m.ProduceResponse.TopicProduceResponse(name=name, partition_responses=denied))
            continue
        out = []
        for pd in topic.partition_data:
            if verifier is not None and verifier.needed(name, pd.index, pd.records, tid):
                resp = _PPR(index=pd.index)
                forwards.append(
                    (resp, name, _verified(ctx, verifier, tid, name, pd.index, pd.records, acks, timeout))
                )
                out.append(resp)
                continue
            if version >= 3 and forwarder is not None and forwarder.busy(name, pd.index):
                r = _QUEUED  # earlier batches of it are being forwarded or held: behind them
            else:
                r = append(name, pd.index, pd.records) if version >= 3 else _OLD_FORMAT
            if r.error_code == _NOT_LEADER and forwarder is not None and isinstance(pd.records, _BUFFERS):
                resp = _PPR(index=pd.index)
                forwards.append(
                    (resp, name, reroute(ctx.worker, forwarder, name, pd.index, pd.records, acks, timeout))
                )
                out.append(resp)
                continue
            resp = _answer(replicas, version, name, pd.index, r, leaders)
            if not r.error_code and r.flush_offset >= 0 and acks == -1:
                p = replicas.get(name, pd.index)
                if p is not None:
                    waits.append((resp, p, r.flush_offset))
            out.append(resp)
        responses.append(m.ProduceResponse.TopicProduceResponse(name=name, partition_responses=out))
    for resp, name, fut in forwards:
        f = await fut
        resp.error_code, resp.base_offset, resp.log_append_time_ms = (
            f.error_code,
            f.base_offset,
            f.log_append_time,
        )
        if f.error_code:
            replicas.counters.error(_API_KEY, f.error_code)
            if with_message:
                resp.error_message = f.error_message or (
                    f"forwarding to the partition's owner: {ErrorCode(f.error_code).name}"
                )
                if f.record_errors:
                    resp.record_errors = _record_errors(f.record_errors)
            if f.error_code == _NOT_LEADER and version >= 10:
                leader, epoch = replicas.leader_of(name, resp.index)
                resp.current_leader = m.ProduceResponse.LeaderIdAndEpoch(leader_id=leader, leader_epoch=epoch)
                if leader >= 0:
                    leaders.add(leader)
    if acks == 0:
        return None
    if waits:
        codes = await asyncio.gather(
            *(replicas.flusher.wait_durable(p, offset, timeout) for _, p, offset in waits)
        )
        for (resp, _, _), code in zip(waits, codes, strict=True):
            if code:
                _flush_failed(replicas, resp, code, with_message)
    response = m.ProduceResponse(responses=responses)
    if leaders:
        response.node_endpoints = _endpoints(ctx, leaders)
    return response


def _answer(
    replicas: ReplicaManager, version: int, name: str, index: int, r: AppendResult, leaders: set[int]
) -> _PPR:
    """A partition's answer to its append (errors counted; the leader of a NOT_LEADER partition
    added to ``leaders`` for the response's node endpoints)."""
    resp = _PPR(
        index=index,
        error_code=r.error_code,
        base_offset=r.base_offset,
        log_append_time_ms=r.log_append_time,
        log_start_offset=r.log_start_offset,
    )
    if r.error_code:
        replicas.counters.error(_API_KEY, r.error_code)
        if version >= 8:
            resp.error_message = r.error_message
            if r.record_errors:
                resp.record_errors = _record_errors(r.record_errors)
        if r.error_code == _NOT_LEADER and version >= 10:
            leader, epoch = replicas.leader_of(name, index)
            resp.current_leader = m.ProduceResponse.LeaderIdAndEpoch(leader_id=leader, leader_epoch=epoch)
            if leader >= 0:
                leaders.add(leader)
    return resp


def _flush_failed(replicas: ReplicaManager, resp: _PPR, code: int, with_message: bool) -> None:
    replicas.counters.error(_API_KEY, code)
    resp.error_code = code
    resp.base_offset = -1
    if with_message:
        resp.error_message = "the flush this append needed did not complete"


# -- one partition, without the generic codec (protocol/single_produce.py) ---------------------


def append_single(worker: WorkerState, single: SingleProduce) -> AppendResult | None:
    """The single-partition path's append, as :func:`handle_produce` would do it; None when the
    request needs the whole handler (nothing was appended then): an authorizer is configured,
    the partition's batches are being forwarded or wait for the transaction coordinator, or
    another worker leads it."""
    if worker.authorizer is not None:
        return None
    topic, index, records = single.topic, single.partition, single.records
    verifier = worker.verifier
    if verifier is not None and verifier.needed(topic, index, records, None):
        return None
    forwarder = worker.forwarder
    if forwarder is not None and forwarder.busy(topic, index):
        return None
    r = worker.replicas.append(topic, index, records)
    if r.error_code == _NOT_LEADER and forwarder is not None:
        return None  # not led here: the handler forwards it to its owner
    return r


def needs_response_objects(single: SingleProduce, r: AppendResult) -> bool:
    """Whether the answer to an :func:`append_single` needs :func:`finish_single` (an error, or a
    flush to wait for) rather than the pre-encoded success."""
    return bool(r.error_code) or (r.flush_offset >= 0 and single.acks == -1)


async def finish_single(
    ctx: RequestContext, single: SingleProduce, r: AppendResult
) -> m.ProduceResponse | None:
    """The answer to an :func:`append_single` that failed or must wait for a flush."""
    replicas = ctx.worker.replicas
    leaders: set[int] = set()
    resp = _answer(replicas, single.api_version, single.topic, single.partition, r, leaders)
    if single.acks == 0:
        return None
    if not r.error_code and r.flush_offset >= 0 and single.acks == -1:
        p = replicas.get(single.topic, single.partition)
        if p is not None:
            code = await replicas.flusher.wait_durable(p, r.flush_offset, max(single.timeout_ms, 0) / 1000)
            if code:
                _flush_failed(replicas, resp, code, single.api_version >= 8)
    response = m.ProduceResponse(
        responses=[m.ProduceResponse.TopicProduceResponse(name=single.topic, partition_responses=[resp])]
    )
    if leaders:
        response.node_endpoints = _endpoints(ctx, leaders)
    return response


async def _verified(
    ctx: RequestContext,
    verifier: TransactionVerifier,
    transactional_id: str | None,
    topic: str,
    index: int,
    records: Any,
    acks: int,
    timeout: float,
) -> ForwardResult:
    """A batch that waits for the transaction coordinator's word (and the partition's earlier
    waiting batches): then appended here or forwarded, and made durable as acks=-1 asks."""
    replicas = ctx.worker.replicas
    forwarder = ctx.worker.forwarder

    def refused(code: int) -> ForwardResult | Awaitable[ForwardResult]:
        why = "the transaction coordinator did not verify this partition in the producer's transaction"
        return ForwardResult(code, error_message=f"{why}: {ErrorCode(code).name}")

    def append() -> ForwardResult | Awaitable[ForwardResult]:
        if forwarder is not None and forwarder.busy(topic, index):
            return reroute(ctx.worker, forwarder, topic, index, records, acks, timeout)
        r = replicas.append(topic, index, records)
        if r.error_code == _NOT_LEADER and forwarder is not None and isinstance(records, _BUFFERS):
            return reroute(ctx.worker, forwarder, topic, index, records, acks, timeout)
        done = ForwardResult(r.error_code, r.base_offset, r.log_append_time, r.error_message, r.record_errors)
        p = replicas.get(topic, index)
        if r.error_code or r.flush_offset < 0 or acks != -1 or p is None:
            return done
        return _durable(replicas.flusher.wait_durable(p, r.flush_offset, timeout), done)

    result = await verifier.run(topic, index, records, transactional_id, timeout, refused, append)
    return result if isinstance(result, ForwardResult) else await result


async def _durable(flushed: Awaitable[int], done: ForwardResult) -> ForwardResult:
    code = await flushed
    return (
        done
        if not code
        else ForwardResult(code, error_message="the flush this append needed did not complete")
    )


def _record_errors(errors: Sequence[tuple[int, str]]) -> list[m.ProduceResponse.BatchIndexAndErrorMessage]:
    """KIP-467's per-record answer (v8+): which records of the batch failed it, and why."""
    return [
        m.ProduceResponse.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=why)
        for i, why in errors
    ]


def _transactional(request: m.ProduceRequest) -> bool:
    """Does the first batch of any partition have the transactional bit (Kafka's
    ``RequestUtils.hasTransactionalRecords``)?"""
    for topic in request.topic_data:
        for pd in topic.partition_data:
            r = pd.records
            if (
                isinstance(r, _BUFFERS)
                and len(r) > ATTRIBUTES_OFFSET + 1
                and r[MAGIC_OFFSET] == MAGIC
                and r[ATTRIBUTES_OFFSET + 1] & TRANSACTIONAL_BIT
            ):
                return True
    return False


def _transaction_allowed(ctx: RequestContext, request: m.ProduceRequest) -> bool:
    tid = request.transactional_id
    return tid is not None and authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, tid)


def _endpoints(ctx: RequestContext, nodes: set[int]) -> list[m.ProduceResponse.NodeEndpoint]:
    image = ctx.worker.replicas.image
    out = []
    for node in sorted(nodes):
        b = image.broker(node, ctx.session.listener)
        if b is not None:
            out.append(m.ProduceResponse.NodeEndpoint(node_id=b.node_id, host=b.host, port=b.port))
    return out


def produce_error_response(
    request: m.ProduceRequest, version: int, code: ErrorCode, message: str
) -> m.ProduceResponse:
    """Every partition of the request answered with ``code`` (a handler failure)."""
    return m.ProduceResponse(
        responses=[
            m.ProduceResponse.TopicProduceResponse(
                name=t.name,
                partition_responses=[
                    _PPR(
                        index=pd.index,
                        error_code=int(code),
                        base_offset=-1,
                        error_message=message if version >= 8 else None,
                    )
                    for pd in t.partition_data
                ],
            )
            for t in request.topic_data
        ]
    )


HANDLER = ApiHandler(
    api_key=m.ProduceRequest.API_KEY,
    min_version=0,
    max_version=11,
    handle=handle_produce,
    error_response=produce_error_response,
)
