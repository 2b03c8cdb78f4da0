"""Helpers shared by the group handlers (not a handler module: the leading ``_``).

Every group API goes to the group's coordinator (group_coordinator.py); a worker without one
(unit tests that build a bare WorkerState) answers COORDINATOR_NOT_AVAILABLE.
"""

from __future__ import annotations

from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.protocol.errors import ErrorCode

__all__ = ["NOT_AVAILABLE", "client_host", "coordinator"]

NOT_AVAILABLE = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)


def coordinator(ctx: RequestContext) -> GroupCoordinator | None:
    return ctx.worker.groups


def client_host(ctx: RequestContext) -> str:
    """Kafka's member client host: ``/`` and the client's address."""
    host = ctx.peer.rpartition(":")[0] if ":" in ctx.peer else ctx.peer
    return "/" + host.strip("[]")
