"""ListOffsets (api key 2), v0-v10: earliest, latest, max timestamp, and by timestamp.

Special timestamps (Kafka's ListOffsetsRequest): -1 latest (the last fetchable offset: the high
watermark, = the log end offset here, or the last stable offset for READ_COMMITTED), -2 earliest
(the log start offset, whatever the isolation),
-3 the record with the largest timestamp (v7+, KIP-734), -4 earliest local (= earliest: no
tiered storage), -5 latest tiered (v9+: nothing is tiered, so offset -1 as Kafka answers with
remote storage off).

By timestamp: the log's time index finds the first *batch* whose max timestamp is >= the target;
the batch is then read (one pread of one batch) and its records decoded to find the first
*record* at or after the target, as Kafka returns. The same refinement gives -3 its exact
record. This is per-record work, but on one batch of a rarely used API, never on produce/fetch.
As Kafka's Partition.fetchOffsetForTimestamp, an offset found by timestamp (or -3) at or past the
last fetchable offset is not answered (offset -1): a READ_COMMITTED consumer (``isolation_level``
1, v2+, ``replica_id`` -1) is never sent to an offset of an undecided transaction or later.

v0 (``old_style_offsets``) is answered with at most one offset (Kafka could list segment base
offsets up to ``max_num_offsets``; clients of v0 read the first). ``leader_epoch`` (v4+) is the
epoch of the returned offset from the partition's leader-epoch history.

Authorization, as KafkaApis: DESCRIBE on each TOPIC, else TOPIC_AUTHORIZATION_FAILED (29) for its
partitions, before their existence is looked at.
"""

from __future__ import annotations

import logging

from shardbroker.broker.auth_helper import filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.partition import Partition
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.record_batch import RecordBatch
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.storage.errors import StorageError
from shardbroker.storage.log import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP

__all__ = ["HANDLER", "find_offset", "handle_list_offsets"]

log = logging.getLogger(__name__)

_R = m.ListOffsetsResponse.ListOffsetsPartitionResponse
EARLIEST_LOCAL_TIMESTAMP = -4
LATEST_TIERED_TIMESTAMP = -5


def _refine(p: Partition, found: tuple[int, int], target: int | None) -> tuple[int, int]:
    """The exact record in the batch holding ``found``'s offset: the first with timestamp >=
    ``target`` (or == found's timestamp when ``target`` is None, for -3)."""
    ts, offset = found
    try:
        data = p.log.read(offset, 1, min_one_message=True).read()
        if len(data) < BATCH_HEADER_SIZE:
            return found
        batch = RecordBatch(data)
        start = p.log.log_start_offset
        want = ts if target is None else target
        for rec in batch.records():
            if rec.offset >= start and rec.timestamp >= want:
                return rec.timestamp, rec.offset
    except (StorageError, ProtocolError, OSError) as exc:
        log.warning("ListOffsets of %s at %d: %s; answering the batch offset", p, offset, exc)
    return found


def find_offset(p: Partition, timestamp: int, committed: bool = False) -> tuple[int, int] | None:
    """``(timestamp, offset)`` for a ListOffsets timestamp, None if no record qualifies.
    ``committed`` (READ_COMMITTED): the last fetchable offset is the LSO, not the high watermark."""
    plog = p.log
    if timestamp in (EARLIEST_TIMESTAMP, EARLIEST_LOCAL_TIMESTAMP):
        return -1, plog.log_start_offset
    fetchable = plog.last_stable_offset if committed else plog.log_end_offset
    if timestamp == LATEST_TIMESTAMP:
        return -1, fetchable
    if timestamp == LATEST_TIERED_TIMESTAMP or timestamp < MAX_TIMESTAMP:
        return None
    found = plog.fetch_offset_by_timestamp(timestamp)
    if found is None:
        return None
    found = _refine(p, found, None if timestamp == MAX_TIMESTAMP else timestamp)
    return found if found[1] < fetchable else None


async def handle_list_offsets(ctx: RequestContext, request: m.ListOffsetsRequest) -> m.ListOffsetsResponse:
    version = ctx.api_version
    replicas = ctx.worker.replicas
    allowed = filter_authorized(
        ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (t.name for t in request.topics)
    )
    topics = []
    for t in request.topics:
        out = []
        for rp in t.partitions:
            index = rp.partition_index
            resp = _R(partition_index=index)
            p = replicas.get(t.name, index)
            if t.name not in allowed:
                resp.error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif p is None:
                resp.error_code = replicas.not_here_error(t.name, index)
            elif version >= 4 and (code := p.check_leader_epoch(rp.current_leader_epoch)):
                resp.error_code = code
            elif version == 0 and rp.timestamp < EARLIEST_TIMESTAMP:
                resp.error_code = int(ErrorCode.INVALID_REQUEST)
            else:
                committed = version >= 2 and request.isolation_level == 1 and request.replica_id == -1
                found = find_offset(p, rp.timestamp, committed)
                if version == 0:
                    resp.old_style_offsets = [] if found is None else [found[1]]
                elif found is not None:
                    resp.timestamp, resp.offset = found
                    if version >= 4:
                        resp.leader_epoch = (
                            p.leader_epoch
                            if rp.timestamp == LATEST_TIMESTAMP
                            else p.epoch_of_offset(found[1])
                        )
            out.append(resp)
        topics.append(m.ListOffsetsResponse.ListOffsetsTopicResponse(name=t.name, partitions=out))
    return m.ListOffsetsResponse(topics=topics)


def list_offsets_error_response(
    request: m.ListOffsetsRequest, version: int, code: ErrorCode, message: str
) -> m.ListOffsetsResponse:
    return m.ListOffsetsResponse(
        topics=[
            m.ListOffsetsResponse.ListOffsetsTopicResponse(
                name=t.name,
                partitions=[
                    _R(partition_index=rp.partition_index, error_code=int(code)) for rp in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


HANDLER = ApiHandler(
    api_key=m.ListOffsetsRequest.API_KEY,
    min_version=0,
    max_version=10,
    handle=handle_list_offsets,
    error_response=list_offsets_error_response,
)
