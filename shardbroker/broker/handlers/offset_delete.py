"""OffsetDelete (api key 47), v0: delete some committed offsets of a group (KIP-496).

Allowed for an Empty group, and for a consumer group's topics that no member subscribes to
(GROUP_SUBSCRIBED_TO_TOPIC per partition otherwise); NON_EMPTY_GROUP for a non-consumer group
with members; GROUP_ID_NOT_FOUND if the group does not exist. Tombstones are appended before
the answer."""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_T = m.OffsetDeleteResponse.OffsetDeleteResponseTopic
_P = m.OffsetDeleteResponse.OffsetDeleteResponsePartition


async def handle_offset_delete(ctx: RequestContext, request: m.OffsetDeleteRequest) -> m.OffsetDeleteResponse:
    groups = coordinator(ctx)
    if groups is None:
        return m.OffsetDeleteResponse(error_code=NOT_AVAILABLE)
    wanted = [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics]
    code, per_partition = await groups.delete_offsets(request.group_id, wanted)
    if code != 0:
        return m.OffsetDeleteResponse(error_code=code)
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
