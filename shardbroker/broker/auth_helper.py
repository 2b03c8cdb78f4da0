"""The checks handlers make before acting: Kafka's AuthHelper over the worker's authorizer.

Every handler asks here, with the request's ``RequestContext``, whether the connection's
principal (``ctx.session.principal``, from its host ``ctx.session.client_host``) may do an
operation on a resource, exactly where KafkaApis asks, and answers Kafka's error when not
(TOPIC_/GROUP_/CLUSTER_/TRANSACTIONAL_ID_AUTHORIZATION_FAILED). Without
``authorizer.class.name`` the worker has no authorizer and every check allows at the cost of one
attribute test, which is Kafka's behaviour without an authorizer.

A denial is recorded in the worker's audit trail (broker/security_audit.py) unless the caller
says the denial is expected (``log_if_denied=False``: Metadata filtering the topic list, as
Kafka's ``logIfDenied = false``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from shardbroker.broker.dispatch import RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = [
    "DENIED",
    "NOT_REQUESTED",
    "SUPPORTED_OPERATIONS",
    "authorize",
    "authorize_by_resource_type",
    "authorize_cluster",
    "authorized_operations",
    "filter_authorized",
]

#: The ``*_authorized_operations`` value when the client did not ask for them (Kafka's
#: Int.MinValue).
NOT_REQUESTED: Final = -(2**31)

_O = AclOperation
#: The operations each resource type supports (Kafka's AclEntry.supportedOperations): what
#: ``authorized_operations`` reports on.
SUPPORTED_OPERATIONS: Final[Mapping[ResourceType, tuple[AclOperation, ...]]] = {
    ResourceType.TOPIC: (
        _O.READ, _O.WRITE, _O.CREATE, _O.DESCRIBE, _O.DELETE, _O.ALTER, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS
    ),
    ResourceType.GROUP: (_O.READ, _O.DESCRIBE, _O.DELETE, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS),
    ResourceType.CLUSTER: (
        _O.CREATE, _O.CLUSTER_ACTION, _O.DESCRIBE_CONFIGS, _O.ALTER_CONFIGS, _O.IDEMPOTENT_WRITE, _O.ALTER,
        _O.DESCRIBE,
    ),
    ResourceType.TRANSACTIONAL_ID: (_O.DESCRIBE, _O.WRITE, _O.TWO_PHASE_COMMIT),
    ResourceType.DELEGATION_TOKEN: (_O.DESCRIBE,),
    ResourceType.USER: (_O.CREATE_TOKENS, _O.DESCRIBE_TOKENS),
}  # fmt: skip


def authorize(
    ctx: RequestContext,
    operation: AclOperation,
    resource_type: ResourceType,
    name: str,
    *,
    log_if_denied: bool = True,
) -> bool:
    """May this request's principal do ``operation`` on the resource?"""
    authorizer = ctx.worker.authorizer
    if authorizer is None:
        return True
    session = ctx.session
    if authorizer.authorize(session.principal, session.client_host, operation, resource_type, name):
        return True
    if log_if_denied:
        _denied(ctx, operation, resource_type, name)
    return False


def authorize_cluster(ctx: RequestContext, operation: AclOperation) -> bool:
    """``operation`` on the CLUSTER resource (``kafka-cluster``)."""
    return authorize(ctx, operation, ResourceType.CLUSTER, CLUSTER_NAME)


def filter_authorized(
    ctx: RequestContext,
    operation: AclOperation,
    resource_type: ResourceType,
    names: Iterable[str],
    *,
    log_if_denied: bool = True,
) -> set[str]:
    """The names (once each) on which ``operation`` is allowed."""
    unique = set(names)
    if ctx.worker.authorizer is None:
        return unique
    return {n for n in unique if authorize(ctx, operation, resource_type, n, log_if_denied=log_if_denied)}


def authorize_by_resource_type(
    ctx: RequestContext, operation: AclOperation, resource_type: ResourceType
) -> bool:
    """May the principal do ``operation`` on some resource of the type (Kafka's
    ``authorizeByResourceType``)? Not audited: its callers fall back to another check."""
    authorizer = ctx.worker.authorizer
    if authorizer is None:
        return True
    principal, host = ctx.session.principal, ctx.session.client_host
    return authorizer.authorize_by_resource_type(principal, host, operation, resource_type)


def authorized_operations(ctx: RequestContext, resource_type: ResourceType, name: str) -> int:
    """The 32-bit field of the operations the principal may do on the resource (bit = operation
    code), as Metadata, DescribeGroups and DescribeCluster answer when asked; every supported
    operation without an authorizer, as Kafka. Not audited (a report, not a refusal)."""
    bits = 0
    for operation in SUPPORTED_OPERATIONS[resource_type]:
        if authorize(ctx, operation, resource_type, name, log_if_denied=False):
            bits |= 1 << operation
    return bits


def _denied(ctx: RequestContext, operation: AclOperation, resource_type: ResourceType, name: str) -> None:
    request = m.REQUESTS.get(ctx.api_key)
    api = request.API_NAME if request is not None else str(ctx.api_key)
    session = ctx.session
    ctx.worker.audit.denied(str(session.principal), session.client_host, operation, resource_type, name, api)


#: Kafka's error for an operation refused on a resource of each type (AclEntry.authorizationError)
#: and its default message (Errors.X.message(): librdkafka ignores some errors without one).
DENIED: Final[Mapping[ResourceType, tuple[ErrorCode, str]]] = {
    ResourceType.TOPIC: (ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Topic authorization failed."),
    ResourceType.GROUP: (ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed."),
    ResourceType.CLUSTER: (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, "Cluster authorization failed."),
    ResourceType.TRANSACTIONAL_ID: (
        ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "Transactional Id authorization failed.",
    ),
    ResourceType.DELEGATION_TOKEN: (
        ErrorCode.DELEGATION_TOKEN_AUTHORIZATION_FAILED,
        "Delegation Token authorization failed.",
    ),
}
