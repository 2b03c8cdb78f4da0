"""Fetch (api key 1), v4-v16: sessionless reads of file ranges, long poll woken by appends.

Sessions (KIP-227) are not kept: the response's ``session_id`` is 0, which tells the client to
keep sending full fetch requests (Kafka's answer when its session cache is full). Topic ids
replace names from v13 (UNKNOWN_TOPIC_ID, 100, for an id the image does not know).

Sizing, as Kafka's ReplicaManager.readFromLog: ``max_bytes`` (capped by the broker's
``fetch.max.bytes``) is shared by the partitions in request order; each gets at most
``min(partition_max_bytes, what is left)``; the first partition that has data gets at least one
whole batch even if that exceeds both limits (so a batch larger than the limits never blocks a
consumer); later partitions get nothing once the budget is spent, and nothing rather than a
fragment when their first batch does not fit in what is left (Kafka sends the fragment, which
clients can only drop). A read starts at the batch
holding the fetch offset -- a fetch in the middle of a batch returns that whole batch, and
clients skip the records before their offset -- and stored batches are never re-cut at the
front; like Kafka, the end of a range may stop inside a batch, which clients drop. A client
with a ``consumer_byte_rate`` gets at most what its quota lets through in a window (Kafka's
getMaxValueInQuotaWindow: the bound x ``(quota.window.num - 1) x quota.window.size.seconds``),
``min_bytes`` capped likewise.

Records go into the response as ``FileRegion``\\ s of the segment files, which the connection
sends with ``sendfile`` (no copy through Python); the log keeps those files open for
``file.delete.delay.ms`` after retention deletes them.

The handler costs 18 us per single-partition request; a fetch reads 440-650 MB/s per worker
(docs/notes/fetch.md).

Isolation (KIP-98), per request (no sessions): ``last_stable_offset`` is the partition's LSO at
both levels, the high watermark its log end offset (broker/partition.py). READ_COMMITTED
(``isolation_level`` 1) reads stop at the LSO (``PartitionLog.read(max_offset=)``: nothing from
the batch holding it on; still a sendfile range, only shorter), and ``aborted_transactions``
lists ``(producer_id, first_offset)`` of the aborted transactions overlapping the range returned,
with Kafka's upper bound (``PartitionLog.aborted_transactions``), an empty list when nothing is
returned; READ_UNCOMMITTED answers null there, as Kafka. Measured in-process on one partition
(``python -m perf readcommitted``'s handler figure, best of 3 runs each): READ_UNCOMMITTED 7.41 us
a request before, 7.66 after (the LSO: a lock and a dict test per partition); READ_COMMITTED
8.9 us over a log without transactions, 17.5 us with an aborted transaction in range (reading
its ``.txnindex``).

Long poll: if the bytes found are fewer than ``min_bytes`` and ``max_wait_ms`` > 0, the request
parks one waiter on every partition it asked for; appends to them that bring the bytes found up
to ``min_bytes`` resolve it (no polling; a smaller append wakes nothing: partition.FetchWaiter),
and so do transaction markers however they are appended (the log's ``on_markers``
hook: a marker moves the LSO); the fetch reads again (read_committed: below the LSO only, as
Kafka's DelayedFetch counts), and answers when it has ``min_bytes`` or the time is up. Any
partition error answers at once (as Kafka, which completes a delayed fetch on an error).

Authorization (with ``authorizer.class.name``), as KafkaApis.handleFetchRequest: a consumer needs
READ on each TOPIC (TOPIC_AUTHORIZATION_FAILED, 29, per partition; an unknown topic id stays
UNKNOWN_TOPIC_ID, checked first); a fetch with ``replica_id`` >= 0 (a follower's: there are none
here) needs CLUSTER_ACTION on the CLUSTER instead, else every partition is 29. As in Kafka, a
refused partition does not end the long poll early. Without an authorizer the cost is one
attribute test per request (no measurable change); with one, a memoised check per topic: a
4-topic request runs the handler at ~0.92 of its speed without an authorizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from shardbroker.broker.auth_helper import authorize, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.file_region import FileRegion
from shardbroker.broker.partition import Partition
from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.config.broker_properties import FETCH_MAX_BYTES
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.storage.errors import StorageError
from shardbroker.storage.log import FetchDataInfo, PartitionLog

__all__ = ["HANDLER", "handle_fetch"]

_PD = m.FetchResponse.PartitionData
_ABORTED = m.FetchResponse.AbortedTransaction
_UNKNOWN_TOPIC = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
_UNKNOWN_TOPIC_ID = int(ErrorCode.UNKNOWN_TOPIC_ID)
_NOT_LEADER = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
_EMPTY = b""
_API_KEY = m.FetchRequest.API_KEY


class _Slot:
    """One requested partition: where its answer goes and what to read."""

    __slots__ = ("fetch_offset", "max_bytes", "partition", "response")

    def __init__(self, response: Any, partition: Partition, fetch_offset: int, max_bytes: int) -> None:
        self.response = response
        self.partition = partition
        self.fetch_offset = fetch_offset
        self.max_bytes = max_bytes


def _error(index: int, code: int) -> Any:
    return _PD(
        partition_index=index,
        error_code=code,
        high_watermark=-1,
        last_stable_offset=-1,
        log_start_offset=-1,
        aborted_transactions=None,
        records=_EMPTY,
    )


def _aborted(plog: PartitionLog, info: FetchDataInfo) -> list[Any]:
    """``aborted_transactions`` of a read_committed range (Kafka's bounds: PartitionLog)."""
    return [_ABORTED(producer_id=pid, first_offset=first) for pid, first in plog.aborted_transactions(info)]


def _read_all(
    replicas: ReplicaManager, slots: list[_Slot], max_bytes: int, committed: bool
) -> tuple[int, bool]:
    """Fill every slot's response; ``(bytes found, any error)``. read_committed: each read
    stops at the partition's LSO, so only bytes below it count towards ``min_bytes``."""
    total = 0
    error = False
    read = replicas.read
    for slot in slots:
        resp = slot.response
        p = slot.partition
        plog = p.log
        lso = plog.last_stable_offset
        limit = min(slot.max_bytes, max_bytes - total)
        aborted: list[Any] | None = [] if committed else None
        try:
            if limit <= 0 and total > 0:
                length = 0
            else:
                # Always ask for a whole first batch: when this is not the first partition with
                # data and that batch is over the limit, send nothing rather than a useless
                # fragment of it (Kafka would send the fragment; clients drop it).
                info = read(p, slot.fetch_offset, max(limit, 0), True, lso if committed else None)
                length = info.length
                if length > limit and total > 0:
                    length = 0
                if committed and length:
                    aborted = _aborted(plog, info)
        except StorageError as exc:
            resp.error_code = exc.error_code
            resp.records = _EMPTY
            error = True
            length = 0
        else:
            resp.error_code = 0
            resp.records = FileRegion(info.fd, info.position, length) if length else _EMPTY
        resp.high_watermark = plog.log_end_offset
        resp.last_stable_offset = lso
        resp.log_start_offset = plog.log_start_offset
        resp.aborted_transactions = aborted
        total += length
    return total, error


def _denial(ctx: RequestContext, request: m.FetchRequest, version: int) -> Callable[[str], bool]:
    """Which topics (by name, "" for an unknown id) this request may not read."""
    replica_id = request.replica_state.replica_id if version >= 15 else request.replica_id
    if replica_id >= 0:
        follower_allowed = authorize_cluster(ctx, AclOperation.CLUSTER_ACTION)
        return lambda name: not follower_allowed
    return lambda name: bool(name) and not authorize(ctx, AclOperation.READ, ResourceType.TOPIC, name)


async def handle_fetch(ctx: RequestContext, request: m.FetchRequest) -> m.FetchResponse:
    version = ctx.api_version
    replicas = ctx.worker.replicas
    counters = replicas.counters
    by_id = version >= 13
    slots: list[_Slot] = []
    error = False
    leaders: set[int] = set()
    responses = []
    denied = _denial(ctx, request, version) if ctx.worker.authorizer is not None else None
    for ft in request.topics:
        name = ft.topic
        if by_id:
            name = replicas.topic_name(ft.topic_id) or ""
        out = []
        partitions = ft.partitions
        if denied is not None and denied(name):
            out = [_error(fp.partition, _TOPIC_DENIED) for fp in partitions]
            for _ in out:
                counters.error(_API_KEY, _TOPIC_DENIED)
            partitions = []
        for fp in partitions:
            index = fp.partition
            p = replicas.get(name, index) if name else None
            if p is None:
                code = _UNKNOWN_TOPIC_ID if by_id and not name else replicas.not_here_error(name, index)
                resp = _error(index, code)
                counters.error(_API_KEY, code)
                if code == _NOT_LEADER and version >= 12:
                    leader, epoch = replicas.leader_of(name, index)
                    resp.current_leader = m.FetchResponse.LeaderIdAndEpoch(
                        leader_id=leader, leader_epoch=epoch
                    )
                    if leader >= 0:
                        leaders.add(leader)
                error = True
            else:
                code = p.check_leader_epoch(fp.current_leader_epoch) if version >= 9 else 0
                if code:
                    resp = _error(index, code)
                    counters.error(_API_KEY, code)
                    error = True
                else:
                    resp = _PD(partition_index=index)
                    slots.append(_Slot(resp, p, fp.fetch_offset, fp.partition_max_bytes))
            out.append(resp)
        if by_id:
            responses.append(m.FetchResponse.FetchableTopicResponse(topic_id=ft.topic_id, partitions=out))
        else:
            responses.append(m.FetchResponse.FetchableTopicResponse(topic=name, partitions=out))

    max_bytes = min(request.max_bytes, replicas.config.get(FETCH_MAX_BYTES))
    min_bytes = request.min_bytes
    quotas = ctx.worker.quotas
    sensor = quotas.client(ctx.session.principal.name, ctx.client_id).fetch if quotas.enabled else None
    if sensor is not None:
        # Kafka's KafkaApis: never more than the quota lets through in its window (more would be
        # throttled whatever came before, and a consumer could make no progress).
        max_bytes = min(max_bytes, int(sensor.max_in_window()))
        min_bytes = min(min_bytes, max_bytes)
    committed = request.isolation_level == 1
    total, read_error = _read_all(replicas, slots, max_bytes, committed)
    wait_ms = request.max_wait_ms
    if slots and wait_ms > 0 and total < min_bytes and not (error or read_error):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        parked = [s.partition for s in slots]
        while True:
            remaining = deadline - loop.time()
            needed = 1 if committed else min_bytes - total
            if remaining <= 0 or not await replicas.wait_for_data(parked, remaining, needed):
                break
            if any(replicas.get(p.topic, p.index) is not p for p in parked):
                # A partition was closed or deleted while parked: answer with its new state.
                request.max_wait_ms = 0
                return await handle_fetch(ctx, request)
            total, read_error = _read_all(replicas, slots, max_bytes, committed)
            if total >= min_bytes or read_error:
                break
    if sensor is not None:
        # Kafka's order: record the bytes; when throttled, take them back and answer nothing
        # but the throttle time (the connection mutes itself for it).
        size = sum(len(slot.response.records) for slot in slots)
        now = quotas.clock()
        throttle = sensor.charge(size, now)
        if throttle:
            sensor.record(-size, now)
            return m.FetchResponse(throttle_time_ms=throttle, session_id=0, responses=[])
    for slot in slots:
        p = slot.partition
        p.fetch_requests += 1
        p.bytes_out += len(slot.response.records)
        if slot.response.error_code:
            counters.error(_API_KEY, slot.response.error_code)
    response = m.FetchResponse(session_id=0, responses=responses)
    if leaders and version >= 16:
        image = replicas.image
        response.node_endpoints = [
            m.FetchResponse.NodeEndpoint(node_id=b.node_id, host=b.host, port=b.port)
            for b in (image.broker(n, ctx.session.listener) for n in sorted(leaders))
            if b is not None
        ]
    return response


HANDLER = ApiHandler(api_key=m.FetchRequest.API_KEY, min_version=4, max_version=16, handle=handle_fetch)
