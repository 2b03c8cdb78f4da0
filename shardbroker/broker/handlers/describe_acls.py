"""DescribeAcls (api key 29), v0-3: the ACL bindings a filter matches, grouped by resource pattern.

Kafka's AclApis: without an authorizer the answer is SECURITY_DISABLED; the caller needs DESCRIBE
on the CLUSTER (CLUSTER_AUTHORIZATION_FAILED otherwise); a filter with a code we do not know is
INVALID_REQUEST. Bindings are read from this worker's authorizer (the newest metadata image it
applied), grouped by resource pattern in the order the patterns were first created.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    filter_error,
)

__all__ = ["CLUSTER_DENIED", "HANDLER", "NO_AUTHORIZER"]

NO_AUTHORIZER = "No Authorizer is configured."
#: Kafka's message for CLUSTER_AUTHORIZATION_FAILED (librdkafka ignores an error without one).
CLUSTER_DENIED = "Cluster authorization failed."

_Resource = m.DescribeAclsResponse.DescribeAclsResource
_Acl = m.DescribeAclsResponse.AclDescription


def acl_filter(request: m.DescribeAclsRequest) -> AclBindingFilter:
    return AclBindingFilter(
        ResourceType.from_code(request.resource_type_filter),
        request.resource_name_filter,
        PatternType.from_code(request.pattern_type_filter),
        request.principal_filter,
        request.host_filter,
        AclOperation.from_code(request.operation),
        AclPermissionType.from_code(request.permission_type),
    )


def _grouped(bindings: list[AclBinding]) -> list[_Resource]:
    by_pattern: dict[ResourcePattern, list[_Acl]] = {}
    for b in bindings:
        e = b.entry
        by_pattern.setdefault(b.pattern, []).append(
            _Acl(principal=e.principal, host=e.host, operation=e.operation, permission_type=e.permission_type)
        )
    return [
        _Resource(
            resource_type=p.resource_type,
            resource_name=p.name,
            pattern_type=p.pattern_type,
            acls=acls,
        )
        for p, acls in by_pattern.items()
    ]


async def handle(ctx: RequestContext, request: m.DescribeAclsRequest) -> m.DescribeAclsResponse:
    authorizer = ctx.worker.authorizer
    if authorizer is None:
        return error_response(request, ctx.api_version, ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        return error_response(request, ctx.api_version, code, CLUSTER_DENIED)
    wanted = acl_filter(request)
    refused = filter_error(wanted)
    if refused is not None:
        return error_response(request, ctx.api_version, ErrorCode.INVALID_REQUEST, refused)
    return m.DescribeAclsResponse(
        error_code=0, error_message=None, resources=_grouped(authorizer.describe(wanted))
    )


def error_response(
    request: m.DescribeAclsRequest, version: int, code: ErrorCode, message: str
) -> m.DescribeAclsResponse:
    return m.DescribeAclsResponse(error_code=code, error_message=message or None, resources=[])


HANDLER = ApiHandler(api_key=29, min_version=0, max_version=3, handle=handle, error_response=error_response)
