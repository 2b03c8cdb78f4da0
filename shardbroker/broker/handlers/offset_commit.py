"""OffsetCommit (api key 8), v0-v9: a group's committed offsets, appended to its
``__consumer_offsets`` partition before the answer (group_coordinator.py).

Fencing (classic groups): a member commits with its member id and generation (ILLEGAL_GENERATION,
UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID; REBALANCE_IN_PROGRESS while the group waits for its
leader's assignments). In a consumer-protocol group (KIP-848) the generation field is the member
epoch: STALE_MEMBER_EPOCH unless it is the member's current one, UNSUPPORTED_VERSION below v9.
Commits during PreparingRebalance with the current generation are accepted (consumers commit in
their revocation callback). Generation -1 with no member id is an
admin/standalone commit, allowed only when the group has no members. A topic-partition the
broker does not know gets UNKNOWN_TOPIC_OR_PARTITION; a metadata string over
``offset.metadata.max.bytes`` gets OFFSET_METADATA_TOO_LARGE. v1's per-partition commit
timestamp and v2-v4's ``retention_time_ms`` are stored (OffsetCommitValue v1 for the latter).

Authorization as KafkaApis: without READ on the group every partition is
GROUP_AUTHORIZATION_FAILED; then each topic without READ has its partitions
TOPIC_AUTHORIZATION_FAILED (checked before existence: an unknown topic one may not read is
refused, not reported unknown).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_coordinator import CommitItem
from shardbroker.broker.handlers._groups import (
    NOT_AVAILABLE,
    committable_partitions,
    coordinator,
    may_read_group,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_P = m.OffsetCommitResponse.OffsetCommitResponsePartition
_T = m.OffsetCommitResponse.OffsetCommitResponseTopic


async def handle_offset_commit(ctx: RequestContext, request: m.OffsetCommitRequest) -> m.OffsetCommitResponse:
    version = ctx.api_version
    if not may_read_group(ctx, request.group_id):
        return offset_commit_error_response(request, version, ErrorCode.GROUP_AUTHORIZATION_FAILED, "")
    groups = coordinator(ctx)
    codes, accepted = committable_partitions(ctx, request.topics)
    items = [
        CommitItem(
            name,
            p.partition_index,
            p.committed_offset,
            p.committed_leader_epoch if version >= 6 else -1,
            p.committed_metadata,
            p.commit_timestamp if version == 1 else -1,
        )
        for name, p in accepted
    ]
    if groups is None:
        results = [NOT_AVAILABLE] * len(items)
    else:
        results = await groups.commit(
            request.group_id,
            member_id=request.member_id if version >= 1 else "",
            group_instance_id=request.group_instance_id if version >= 7 else None,
            generation_id=request.generation_id_or_member_epoch if version >= 1 else -1,
            retention_ms=request.retention_time_ms if 2 <= version <= 4 else -1,
            items=items,
            api_version=version,
        )
    for item, code in zip(items, results, strict=True):
        codes[(item.topic, item.partition)] = code
    return m.OffsetCommitResponse(
        topics=[
            _T(
                name=t.name,
                partitions=[
                    _P(partition_index=p.partition_index, error_code=codes[(t.name, p.partition_index)])
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


def offset_commit_error_response(
    request: m.OffsetCommitRequest, version: int, code: ErrorCode, message: str
) -> m.OffsetCommitResponse:
    return m.OffsetCommitResponse(
        topics=[
            _T(
                name=t.name,
                partitions=[
                    _P(partition_index=p.partition_index, error_code=int(code)) for p in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


HANDLER = ApiHandler(
    api_key=m.OffsetCommitRequest.API_KEY,
    min_version=0,
    max_version=9,
    handle=handle_offset_commit,
    error_response=offset_commit_error_response,
)
