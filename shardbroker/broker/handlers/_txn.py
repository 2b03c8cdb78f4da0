"""Helpers shared by the transaction handlers (not a handler module: the leading ``_``).

Every transaction API goes to the transactional id's coordinator (transaction_coordinator.py); a
worker without one (unit tests that build a bare WorkerState) answers COORDINATOR_NOT_AVAILABLE.
The ACL checks are made in the handlers, before the coordinator, as KafkaApis makes them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import RequestContext
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

if TYPE_CHECKING:
    from shardbroker.broker.transaction_coordinator import TransactionCoordinator

__all__ = ["NOT_AVAILABLE", "TXN_DENIED", "coordinator", "fenced_as", "may_write_transactional_id"]

NOT_AVAILABLE: Final = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
TXN_DENIED: Final = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)


def may_write_transactional_id(ctx: RequestContext, transactional_id: str) -> bool:
    """WRITE on the TRANSACTIONAL_ID: what every transactional request of a producer needs."""
    return authorize(ctx, AclOperation.WRITE, ResourceType.TRANSACTIONAL_ID, transactional_id)


def coordinator(ctx: RequestContext) -> TransactionCoordinator | None:
    return ctx.worker.transactions


def fenced_as(code: int, version: int, first_version: int = 2) -> int:
    """PRODUCER_FENCED (KIP-588) is answered INVALID_PRODUCER_EPOCH to the versions before it."""
    if code == ErrorCode.PRODUCER_FENCED and version < first_version:
        return int(ErrorCode.INVALID_PRODUCER_EPOCH)
    return code
