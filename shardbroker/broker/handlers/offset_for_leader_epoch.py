"""OffsetForLeaderEpoch (api key 23), v0-v4: the end offset of a leader epoch.

Consumers (KIP-320) ask it after a leader change to detect log truncation. Answers come from the
partition's leader-epoch history (storage/leader_epoch_checkpoint.py, kept by log_manager.py), as
Kafka's LeaderEpochFileCache.endOffsetFor: for the current epoch, the log end offset; for an
older epoch, the start offset of the next epoch in the history (with the largest known epoch
at or below the requested one); for an epoch newer than any known, -1/-1. A partition's epoch
grows each time it moves between workers (control/controller.py, "Partition moves") or is
reassigned at start. ``current_leader_epoch`` (v2+) is fenced as Kafka does:
FENCED_LEADER_EPOCH (74) if older, UNKNOWN_LEADER_EPOCH (75) if newer than the partition's.
``replica_id`` (v3+) is not used: there are no follower replicas.

Authorization, as KafkaApis: CLUSTER_ACTION on the CLUSTER (a follower's right) allows every
topic; otherwise DESCRIBE on each TOPIC (KIP-320's consumers), else TOPIC_AUTHORIZATION_FAILED
(29) for its partitions.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER", "handle_offset_for_leader_epoch"]

_R = m.OffsetForLeaderEpochResponse.EpochEndOffset


async def handle_offset_for_leader_epoch(
    ctx: RequestContext, request: m.OffsetForLeaderEpochRequest
) -> m.OffsetForLeaderEpochResponse:
    version = ctx.api_version
    replicas = ctx.worker.replicas
    names = [t.topic for t in request.topics]
    if authorize(ctx, AclOperation.CLUSTER_ACTION, ResourceType.CLUSTER, CLUSTER_NAME, log_if_denied=False):
        allowed = set(names)
    else:
        allowed = filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, names)
    topics = []
    for t in request.topics:
        out = []
        for rp in t.partitions:
            resp = _R(partition=rp.partition)
            p = replicas.get(t.topic, rp.partition)
            if t.topic not in allowed:
                resp.error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif p is None:
                resp.error_code = replicas.not_here_error(t.topic, rp.partition)
            elif version >= 2 and (code := p.check_leader_epoch(rp.current_leader_epoch)):
                resp.error_code = code
            else:
                epoch, end = p.end_offset_for_epoch(rp.leader_epoch)
                resp.end_offset = end
                if version >= 1:
                    resp.leader_epoch = epoch
            out.append(resp)
        topics.append(
            m.OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult(topic=t.topic, partitions=out)
        )
    return m.OffsetForLeaderEpochResponse(topics=topics)


def offset_for_leader_epoch_error_response(
    request: m.OffsetForLeaderEpochRequest, version: int, code: ErrorCode, message: str
) -> m.OffsetForLeaderEpochResponse:
    return m.OffsetForLeaderEpochResponse(
        topics=[
            m.OffsetForLeaderEpochResponse.OffsetForLeaderTopicResult(
                topic=t.topic,
                partitions=[_R(partition=rp.partition, error_code=int(code)) for rp in t.partitions],
            )
            for t in request.topics
        ]
    )


HANDLER = ApiHandler(
    api_key=m.OffsetForLeaderEpochRequest.API_KEY,
    min_version=0,
    max_version=4,
    handle=handle_offset_for_leader_epoch,
    error_response=offset_for_leader_epoch_error_response,
)
