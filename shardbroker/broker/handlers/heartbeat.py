"""Heartbeat (api key 12), v0-v4: a member is alive; the answer says whether to rejoin
(REBALANCE_IN_PROGRESS), or that it was fenced (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
FENCED_INSTANCE_ID). Without READ on the group: GROUP_AUTHORIZATION_FAILED."""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator, may_read_group
from shardbroker.protocol import messages as m

__all__ = ["HANDLER"]


async def handle_heartbeat(ctx: RequestContext, request: m.HeartbeatRequest) -> m.HeartbeatResponse:
    if not may_read_group(ctx, request.group_id):
        return m.HeartbeatResponse(error_code=GROUP_DENIED)
    groups = coordinator(ctx)
    if groups is None:
        return m.HeartbeatResponse(error_code=NOT_AVAILABLE)
    code = groups.heartbeat(
        request.group_id,
        request.member_id,
        request.group_instance_id if ctx.api_version >= 3 else None,
        request.generation_id,
    )
    return m.HeartbeatResponse(error_code=code)


HANDLER = ApiHandler(
    api_key=m.HeartbeatRequest.API_KEY,
    min_version=0,
    max_version=4,
    handle=handle_heartbeat,
)
