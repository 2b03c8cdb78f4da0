"""ListGroups (api key 16), v0-v5: the groups this worker coordinates (clients ask every
broker and merge, as with Kafka). v4 filters by state, v5 by type ("classic" or "consumer",
KIP-848's protocol; case-insensitive as Kafka's). As Kafka, DESCRIBE on the CLUSTER
lists every group; without it, only the groups the principal may DESCRIBE (denials not logged)."""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import coordinator
from shardbroker.protocol import messages as m
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER"]


async def handle_list_groups(ctx: RequestContext, request: m.ListGroupsRequest) -> m.ListGroupsResponse:
    version = ctx.api_version
    groups = coordinator(ctx)
    states = {s.lower() for s in request.states_filter} if version >= 4 else set()
    types = {t.lower() for t in request.types_filter} if version >= 5 else set()
    listed = []
    every = authorize(ctx, AclOperation.DESCRIBE, ResourceType.CLUSTER, CLUSTER_NAME, log_if_denied=False)
    if groups is not None:
        for g in groups.list_groups():
            if (states and g.state.lower() not in states) or (types and g.group_type not in types):
                continue
            if not every and not authorize(
                ctx, AclOperation.DESCRIBE, ResourceType.GROUP, g.group_id, log_if_denied=False
            ):
                continue
            listed.append(
                m.ListGroupsResponse.ListedGroup(
                    group_id=g.group_id,
                    protocol_type=g.protocol_type,
                    group_state=g.state,
                    group_type=g.group_type,
                )
            )
    return m.ListGroupsResponse(groups=listed)


HANDLER = ApiHandler(
    api_key=m.ListGroupsRequest.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_list_groups,
)
