"""JoinGroup (api key 11), v0-v9: a member joins (or rejoins) a group and waits for the rebalance.

The request parks until the group's join phase ends (every member rejoined, the rebalance
timeout, or ``group.initial.rebalance.delay.ms`` for a new group: group_state.py). v4+ first
joins get MEMBER_ID_REQUIRED with the member id to use. The leader's answer lists every member's
metadata for the selected protocol, relayed as the members sent it (client-side assignors).
Without READ on the group: GROUP_AUTHORIZATION_FAILED with no member id, as Kafka.
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.group_state import JoinRequest, JoinResult
from shardbroker.broker.handlers._groups import (
    GROUP_DENIED,
    NOT_AVAILABLE,
    client_host,
    coordinator,
    may_read_group,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]


def _response(result: JoinResult, version: int) -> m.JoinGroupResponse:
    return m.JoinGroupResponse(
        error_code=result.error_code,
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name if version >= 7 or result.protocol_name else "",
        leader=result.leader_id,
        member_id=result.member_id,
        members=[
            m.JoinGroupResponse.JoinGroupResponseMember(member_id=mid, group_instance_id=iid, metadata=meta)
            for mid, iid, meta in result.members
        ],
    )


async def handle_join_group(ctx: RequestContext, request: m.JoinGroupRequest) -> m.JoinGroupResponse:
    version = ctx.api_version
    if not may_read_group(ctx, request.group_id):
        return _response(JoinResult(GROUP_DENIED), version)
    groups = coordinator(ctx)
    if groups is None:
        return _response(JoinResult(NOT_AVAILABLE, member_id=request.member_id), version)
    result = await groups.join(
        request.group_id,
        JoinRequest(
            member_id=request.member_id,
            group_instance_id=request.group_instance_id if version >= 5 else None,
            protocol_type=request.protocol_type,
            protocols=[(p.name, bytes(p.metadata)) for p in request.protocols],
            session_timeout_ms=request.session_timeout_ms,
            rebalance_timeout_ms=request.rebalance_timeout_ms if version >= 1 else -1,
            client_id=ctx.client_id or "",
            client_host=client_host(ctx),
            require_known_member_id=version >= 4,
        ),
    )
    return _response(result, version)


def join_group_error_response(
    request: m.JoinGroupRequest, version: int, code: ErrorCode, message: str
) -> m.JoinGroupResponse:
    return _response(JoinResult(int(code), member_id=request.member_id), version)


HANDLER = ApiHandler(
    api_key=m.JoinGroupRequest.API_KEY,
    min_version=0,
    max_version=9,
    handle=handle_join_group,
    error_response=join_group_error_response,
)
