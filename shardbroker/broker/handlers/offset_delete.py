"""OffsetDelete (api key 47), v0: delete some committed offsets of a group (KIP-496).

Allowed for an Empty group, and for a consumer group's topics that no member subscribes to
(GROUP_SUBSCRIBED_TO_TOPIC per partition otherwise); NON_EMPTY_GROUP for a non-consumer group
with members; GROUP_ID_NOT_FOUND if the group does not exist. Tombstones are appended before
the answer. Authorization as KafkaApis: DELETE on the group (else GROUP_AUTHORIZATION_FAILED for
the request), then READ on each topic (else TOPIC_AUTHORIZATION_FAILED for its partitions)."""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_T = m.OffsetDeleteResponse.OffsetDeleteResponseTopic
_P = m.OffsetDeleteResponse.OffsetDeleteResponsePartition


async def handle_offset_delete(ctx: RequestContext, request: m.OffsetDeleteRequest) -> m.OffsetDeleteResponse:
    if not authorize(ctx, AclOperation.DELETE, ResourceType.GROUP, request.group_id):
        return m.OffsetDeleteResponse(error_code=GROUP_DENIED)
    groups = coordinator(ctx)
    if groups is None:
        return m.OffsetDeleteResponse(error_code=NOT_AVAILABLE)
    wanted = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]
    readable = filter_authorized(ctx, AclOperation.READ, ResourceType.TOPIC, (name for name, _ in wanted))
    code, per_partition = await groups.delete_offsets(
        request.group_id, [t for t in wanted if t[0] in readable]
    )
    if code != 0:
        return m.OffsetDeleteResponse(error_code=code)
    denied = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
    per_partition |= {(name, i): denied for name, parts in wanted if name not in readable for i in parts}
    return m.OffsetDeleteResponse(
        topics=[
            _T(
                name=name,
                partitions=[_P(partition_index=i, error_code=per_partition[(name, i)]) for i in parts],
            )
            for name, parts in wanted
        ]
    )


def offset_delete_error_response(
    request: m.OffsetDeleteRequest, version: int, code: ErrorCode, message: str
) -> m.OffsetDeleteResponse:
    return m.OffsetDeleteResponse(error_code=int(code))


HANDLER = ApiHandler(
    api_key=m.OffsetDeleteRequest.API_KEY,
    min_version=0,
    max_version=0,
    handle=handle_offset_delete,
    error_response=offset_delete_error_response,
)
