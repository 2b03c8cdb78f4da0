"""OffsetFetch (api key 9), v0-v9: a group's committed offsets (v8+: several groups at once).

A partition with no committed offset answers offset -1, metadata "" and no error (Kafka's
answer); ``topics`` null (v2+) asks for every offset of the group. Group-level errors
(NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS, ...) go in the top-level error code from v2 and
in each partition's for v0-v1, as Kafka. ``require_stable`` (v7+): a named partition with a
pending transactional commit (txn_offset_commits.py) answers UNSTABLE_OFFSET_COMMIT. v9's
member id / epoch are checked by a group of the consumer protocol (KIP-848: UNKNOWN_MEMBER_ID,
STALE_MEMBER_EPOCH as the group-level error); a classic group ignores them, as Kafka's.

Authorization as KafkaApis: DESCRIBE on the group (GROUP_AUTHORIZATION_FAILED as a group-level
error); named topics without DESCRIBE answer TOPIC_AUTHORIZATION_FAILED for their partitions
(after the others), and when all offsets are asked for, those topics are silently left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_state import OffsetAndMetadata
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator
from shardbroker.broker.txn_offset_commits import UNSTABLE
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

R = m.OffsetFetchResponse
_TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
_UNSTABLE = int(ErrorCode.UNSTABLE_OFFSET_COMMIT)
Wanted = Sequence[tuple[str, Sequence[int]]]


def _lookup(
    ctx: RequestContext,
    group_id: str,
    topics: Wanted | None,
    require_stable: bool,
    member: tuple[str | None, int] = (None, -1),
) -> tuple[int, dict[str, dict[int, OffsetAndMetadata | None]], Wanted]:
    """``(group error, the offsets one may see, the named topics one may not describe)``."""
    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return GROUP_DENIED, {}, []
    groups = coordinator(ctx)
    if groups is None:
        return NOT_AVAILABLE, {}, []
    if topics is None:
        code, found = groups.fetch(group_id, None, member=member)
        visible = filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, found)
        return code, {name: parts for name, parts in found.items() if name in visible}, []
    described = filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, (n for n, _ in topics))
    code, found = groups.fetch(group_id, [t for t in topics if t[0] in described], require_stable, member)
    return code, found, [t for t in topics if t[0] not in described] if code == 0 else []


def _partition(cls: Any, index: int, om: OffsetAndMetadata | None, code: int) -> Any:
    """One partition's answer (``cls``: the v0-v7 or the v8+ partition struct)."""
    if om is None:
        return cls(
            partition_index=index,
            committed_offset=-1,
            committed_leader_epoch=-1,
            metadata="",
            error_code=code,
        )
    return cls(
        partition_index=index,
        committed_offset=om.offset,
        committed_leader_epoch=om.leader_epoch,
        metadata=om.metadata,
        error_code=code,
    )


def _topics(
    topic_cls: Any, partition_cls: Any, found: dict[str, dict[int, OffsetAndMetadata | None]], denied: Wanted
) -> list[Any]:
    """The answer's topics (``*_cls``: the v0-v7 or the v8+ structs): the offsets found, then the
    named topics one may not describe."""
    out = [
        topic_cls(
            name=name,
            partitions=[
                _partition(partition_cls, i, None, _UNSTABLE)
                if om is UNSTABLE
                else _partition(partition_cls, i, om, 0)
                for i, om in parts.items()
            ],
        )
        for name, parts in found.items()
    ]
    out += [
        topic_cls(name=name, partitions=[_partition(partition_cls, i, None, _TOPIC_DENIED) for i in indexes])
        for name, indexes in denied
    ]
    return out


async def handle_offset_fetch(ctx: RequestContext, request: m.OffsetFetchRequest) -> m.OffsetFetchResponse:
    version = ctx.api_version
    if version >= 8:
        out_groups = []
        for g in request.groups:
            wanted = None if g.topics is None else [(t.name, t.partition_indexes) for t in g.topics]
            member = (g.member_id, g.member_epoch) if version >= 9 else (None, -1)
            code, found, denied = _lookup(ctx, g.group_id, wanted, request.require_stable, member)
            topics = _topics(R.OffsetFetchResponseTopics, R.OffsetFetchResponsePartitions, found, denied)
            out_groups.append(R.OffsetFetchResponseGroup(group_id=g.group_id, topics=topics, error_code=code))
        return R(groups=out_groups)
    wanted = None if request.topics is None else [(t.name, t.partition_indexes) for t in request.topics]
    if wanted is None and version < 2:
        wanted = []
    code, found, denied = _lookup(ctx, request.group_id, wanted, version >= 7 and request.require_stable)
    if code == 0:
        topics_out = _topics(R.OffsetFetchResponseTopic, R.OffsetFetchResponsePartition, found, denied)
        return R(topics=topics_out, error_code=0)
    return offset_fetch_error_response(request, version, ErrorCode(code), "")


def offset_fetch_error_response(
    request: m.OffsetFetchRequest, version: int, code: ErrorCode, message: str
) -> m.OffsetFetchResponse:
    if version >= 8:
        return R(
            groups=[
                R.OffsetFetchResponseGroup(group_id=g.group_id, error_code=int(code)) for g in request.groups
            ]
        )
    if version >= 2:
        return R(error_code=int(code))
    return R(
        topics=[
            R.OffsetFetchResponseTopic(
                name=t.name,
                partitions=[
                    _partition(R.OffsetFetchResponsePartition, i, None, int(code))
                    for i in t.partition_indexes
                ],
            )
            for t in request.topics or []
        ]
    )


HANDLER = ApiHandler(
    api_key=m.OffsetFetchRequest.API_KEY,
    min_version=0,
    max_version=9,
    handle=handle_offset_fetch,
    error_response=offset_fetch_error_response,
)
