"""DeleteGroups (api key 42), v0-v2: remove Empty groups and their committed offsets
(tombstones appended to ``__consumer_offsets`` before the answer). NON_EMPTY_GROUP while the
group has members, GROUP_ID_NOT_FOUND if it does not exist, NOT_COORDINATOR if another worker
coordinates it (clients send each group to its coordinator); GROUP_AUTHORIZATION_FAILED without
DELETE on the group."""

from __future__ import annotations

from shardbroker.broker.auth_helper import filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_R = m.DeleteGroupsResponse.DeletableGroupResult


async def handle_delete_groups(ctx: RequestContext, request: m.DeleteGroupsRequest) -> m.DeleteGroupsResponse:
    groups = coordinator(ctx)
    deletable = filter_authorized(ctx, AclOperation.DELETE, ResourceType.GROUP, request.groups_names)
    results = []
    for group_id in request.groups_names:
        if group_id not in deletable:
            code = GROUP_DENIED
        else:
            code = NOT_AVAILABLE if groups is None else await groups.delete_group(group_id)
        results.append(_R(group_id=group_id, error_code=code))
    return m.DeleteGroupsResponse(results=results)


def delete_groups_error_response(
    request: m.DeleteGroupsRequest, version: int, code: ErrorCode, message: str
) -> m.DeleteGroupsResponse:
    return m.DeleteGroupsResponse(
        results=[_R(group_id=g, error_code=int(code)) for g in request.groups_names]
    )


HANDLER = ApiHandler(
    api_key=m.DeleteGroupsRequest.API_KEY,
    min_version=0,
    max_version=2,
    handle=handle_delete_groups,
    error_response=delete_groups_error_response,
)
