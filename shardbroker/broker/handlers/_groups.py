"""Helpers shared by the group handlers (not a handler module: the leading ``_``).

Every group API goes to the group's coordinator (group_coordinator.py); a worker without one
(unit tests that build a bare WorkerState) answers COORDINATOR_NOT_AVAILABLE. The ACL checks are
made here in the handlers, before the coordinator, as KafkaApis makes them: the coordinator also
serves local clients, whose door makes its own checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = [
    "GROUP_DENIED",
    "NOT_AVAILABLE",
    "client_host",
    "committable_partitions",
    "coordinator",
    "may_read_group",
]

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


class _CommitTopic(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def partitions(self) -> Sequence[Any]: ...


def committable_partitions(
    ctx: RequestContext, topics: Sequence[_CommitTopic]
) -> tuple[dict[tuple[str, int], int], list[tuple[str, Any]]]:
    """An (Txn)OffsetCommit's partitions as KafkaApis sorts them: ``(errors of the refused
    ones, (topic, partition struct) of the others)``; READ on the topic is checked before its
    existence (TOPIC_AUTHORIZATION_FAILED, then UNKNOWN_TOPIC_OR_PARTITION)."""
    image = ctx.worker.image
    readable = filter_authorized(ctx, AclOperation.READ, ResourceType.TOPIC, (t.name for t in topics))
    codes: dict[tuple[str, int], int] = {}
    accepted: list[tuple[str, Any]] = []
    for t in topics:
        topic = image.topics.get(t.name)
        for p in t.partitions:
            if t.name not in readable:
                codes[(t.name, p.partition_index)] = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
            elif topic is None or topic.partition(p.partition_index) is None:
                codes[(t.name, p.partition_index)] = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
            else:
                accepted.append((t.name, p))
    return codes, accepted
