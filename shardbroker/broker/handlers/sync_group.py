"""SyncGroup (api key 14), v0-v5: the leader hands out assignments; every member gets its own.

Followers park until the leader's SyncGroup arrives (or the group rebalances again:
REBALANCE_IN_PROGRESS). Assignments are relayed byte for byte. v5 checks protocol type and name
(INCONSISTENT_GROUP_PROTOCOL, also when either is null: mandatory from v5) and echoes them. Then,
as Kafka, READ on the group (GROUP_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator, may_read_group
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]


async def handle_sync_group(ctx: RequestContext, request: m.SyncGroupRequest) -> m.SyncGroupResponse:
    version = ctx.api_version
    if version >= 5 and (request.protocol_type is None or request.protocol_name is None):
        return m.SyncGroupResponse(error_code=ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
    if not may_read_group(ctx, request.group_id):
        return m.SyncGroupResponse(error_code=GROUP_DENIED)
    groups = coordinator(ctx)
    if groups is None:
        return m.SyncGroupResponse(error_code=NOT_AVAILABLE)
    result = await groups.sync(
        request.group_id,
        member_id=request.member_id,
        group_instance_id=request.group_instance_id if version >= 3 else None,
        generation_id=request.generation_id,
        protocol_type=request.protocol_type if version >= 5 else None,
        protocol_name=request.protocol_name if version >= 5 else None,
        assignments=[(a.member_id, bytes(a.assignment)) for a in request.assignments],
    )
    return m.SyncGroupResponse(
        error_code=result.error_code,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


HANDLER = ApiHandler(
    api_key=m.SyncGroupRequest.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_sync_group,
)
