"""DescribeGroups (api key 15), v0-v5: state, protocol and members of groups this worker
coordinates. As Kafka: member metadata and assignments only in state Stable; a group that does
not exist is described as "Dead" with no error (GROUP_ID_NOT_FOUND is v6+, not served); a group
of the consumer protocol (KIP-848) is "Dead" with GROUP_ID_NOT_FOUND, as Kafka 4 answers it
(clients then ask ConsumerGroupDescribe);
NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS per group otherwise. A group the principal may not
DESCRIBE is GROUP_AUTHORIZATION_FAILED; v3+ ``include_authorized_operations`` answers, for each
group described without error, the operations the principal may do on it (auth_helper)."""

from __future__ import annotations

from shardbroker.broker.auth_helper import NOT_REQUESTED, authorize, authorized_operations
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_state import GroupState
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

D = m.DescribeGroupsResponse.DescribedGroup
DM = m.DescribeGroupsResponse.DescribedGroupMember


def _describe(ctx: RequestContext, group_id: str, with_ops: bool) -> D:
    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return D(error_code=GROUP_DENIED, group_id=group_id)
    groups = coordinator(ctx)
    if groups is None:
        return D(error_code=NOT_AVAILABLE, group_id=group_id)
    code, group = groups.describe(group_id)
    if code == ErrorCode.GROUP_ID_NOT_FOUND:
        return D(error_code=code, group_id=group_id, group_state="Dead")
    if code != 0:
        return D(error_code=code, group_id=group_id)
    ops = authorized_operations(ctx, ResourceType.GROUP, group_id) if with_ops else NOT_REQUESTED
    if group is None or group.state == GroupState.DEAD:
        return D(group_id=group_id, group_state="Dead", authorized_operations=ops)
    stable = group.state == GroupState.STABLE
    members = [
        DM(
            member_id=mem.member_id,
            group_instance_id=mem.group_instance_id,
            client_id=mem.client_id,
            client_host=mem.client_host,
            member_metadata=mem.metadata(group.protocol_name) if stable else b"",
            member_assignment=mem.assignment if stable else b"",
        )
        for mem in group.members.values()
    ]
    return D(
        group_id=group_id,
        group_state=group.state.value,
        protocol_type=group.protocol_type or "",
        protocol_data=(group.protocol_name or "") if stable else "",
        members=members,
        authorized_operations=ops,
    )


async def handle_describe_groups(
    ctx: RequestContext, request: m.DescribeGroupsRequest
) -> m.DescribeGroupsResponse:
    with_ops = ctx.api_version >= 3 and request.include_authorized_operations
    return m.DescribeGroupsResponse(groups=[_describe(ctx, g, with_ops) for g in request.groups])


def describe_groups_error_response(
    request: m.DescribeGroupsRequest, version: int, code: ErrorCode, message: str
) -> m.DescribeGroupsResponse:
    return m.DescribeGroupsResponse(groups=[D(error_code=int(code), group_id=g) for g in request.groups])


HANDLER = ApiHandler(
    api_key=m.DescribeGroupsRequest.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_describe_groups,
    error_response=describe_groups_error_response,
)
