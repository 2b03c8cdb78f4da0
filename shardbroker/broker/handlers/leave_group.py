"""LeaveGroup (api key 13), v0-v5: members leave (v3+: several at once, by member id or
group.instance.id), and the group rebalances without them at once.

v0-v2 name one member and the answer's error is that member's; v3+ answer per member, with the
top-level error only for the group as a whole (NOT_COORDINATOR, ...; GROUP_AUTHORIZATION_FAILED
without READ on the group, with no member answers, as Kafka).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator, may_read_group
from shardbroker.protocol import messages as m

__all__ = ["HANDLER"]


async def handle_leave_group(ctx: RequestContext, request: m.LeaveGroupRequest) -> m.LeaveGroupResponse:
    version = ctx.api_version
    if not may_read_group(ctx, request.group_id):
        return m.LeaveGroupResponse(error_code=GROUP_DENIED)
    if version >= 3:
        members = [(mi.member_id, mi.group_instance_id) for mi in request.members]
    else:
        members = [(request.member_id, None)]
    groups = coordinator(ctx)
    if groups is None:
        return m.LeaveGroupResponse(error_code=NOT_AVAILABLE)
    code, codes = groups.leave(request.group_id, members)
    if version < 3:
        return m.LeaveGroupResponse(error_code=code or (codes[0] if codes else 0))
    return m.LeaveGroupResponse(
        error_code=code,
        members=[
            m.LeaveGroupResponse.MemberResponse(member_id=mid, group_instance_id=iid, error_code=c)
            for (mid, iid), c in zip(members, codes, strict=False)
        ],
    )


HANDLER = ApiHandler(
    api_key=m.LeaveGroupRequest.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_leave_group,
)
