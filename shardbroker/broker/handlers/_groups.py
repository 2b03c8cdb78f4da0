"""Helpers shared by the group handlers (not a handler module: the leading ``_``).

Every group API goes to the group's coordinator (group_coordinator.py); a worker without one
(unit tests that build a bare WorkerState) answers COORDINATOR_NOT_AVAILABLE. The ACL checks are
made here in the handlers, before the coordinator, as KafkaApis makes them: the coordinator also
serves local clients, whose door makes its own checks.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["GROUP_DENIED", "NOT_AVAILABLE", "client_host", "coordinator", "may_read_group"]

NOT_AVAILABLE = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)


def may_read_group(ctx: RequestContext, group_id: str) -> bool:
    """READ on the GROUP: what JoinGroup, SyncGroup, Heartbeat, LeaveGroup and OffsetCommit need."""
    return authorize(ctx, AclOperation.READ, ResourceType.GROUP, group_id)


def coordinator(ctx: RequestContext) -> GroupCoordinator | None:
    return ctx.worker.groups


def client_host(ctx: RequestContext) -> str:
    """Kafka's member client host: ``/`` and the client's address."""
    host = ctx.peer.rpartition(":")[0] if ":" in ctx.peer else ctx.peer
    return "/" + host.strip("[]")
