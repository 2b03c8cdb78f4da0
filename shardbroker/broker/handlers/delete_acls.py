"""DeleteAcls (api key 31), v0-3: remove the ACL bindings each filter matches, through the
controller's metadata log.

Kafka's AclApis and AclControlManager: without an authorizer every filter is answered
SECURITY_DISABLED; the caller needs ALTER on the CLUSTER (CLUSTER_AUTHORIZATION_FAILED per filter
otherwise); a filter with a code we do not know is INVALID_REQUEST; each filter answers the
bindings it removed (a binding matched by two filters is removed by, and listed under, the
first). The answer comes once every worker applied the new image.
"""

from __future__ import annotations

from typing import Any

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_items, controller_timeout
from shardbroker.broker.handlers.describe_acls import CLUSTER_DENIED, NO_AUTHORIZER
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclBinding, AclOperation

__all__ = ["HANDLER"]

_FilterResult = m.DeleteAclsResponse.DeleteAclsFilterResult
_Matching = m.DeleteAclsResponse.DeleteAclsMatchingAcl


def _filter_record(f: m.DeleteAclsRequest.DeleteAclsFilter) -> dict[str, Any]:
    return {
        "resource_type": f.resource_type_filter,
        "name": f.resource_name_filter,
        "pattern_type": f.pattern_type_filter,
        "principal": f.principal_filter,
        "host": f.host_filter,
        "operation": f.operation,
        "permission_type": f.permission_type,
    }


def _matching(record: dict[str, Any]) -> _Matching:
    b = AclBinding.from_record(record)
    return _Matching(
        error_code=0,
        error_message=None,
        resource_type=b.pattern.resource_type,
        resource_name=b.pattern.name,
        pattern_type=b.pattern.pattern_type,
        principal=b.entry.principal,
        host=b.entry.host,
        operation=b.entry.operation,
        permission_type=b.entry.permission_type,
    )


async def handle(ctx: RequestContext, request: m.DeleteAclsRequest) -> m.DeleteAclsResponse:
    if ctx.worker.authorizer is None:
        return error_response(request, ctx.api_version, ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not authorize_cluster(ctx, AclOperation.ALTER):
        code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        return error_response(request, ctx.api_version, code, CLUSTER_DENIED)
    filters = [_filter_record(f) for f in request.filters]
    answers = await controller_items(
        ctx, "delete_acls", {"filters": filters}, "results", len(filters), controller_timeout(0)
    )
    return m.DeleteAclsResponse(
        filter_results=[
            _FilterResult(
                error_code=int(a.get("error_code", 0)),
                error_message=a.get("error_message"),
                matching_acls=[_matching(r) for r in a.get("matching", ())],
            )
            for a in answers
        ]
    )


def error_response(
    request: m.DeleteAclsRequest, version: int, code: ErrorCode, message: str
) -> m.DeleteAclsResponse:
    return m.DeleteAclsResponse(
        filter_results=[
            _FilterResult(error_code=code, error_message=message or None, matching_acls=[])
            for _ in request.filters
        ]
    )


HANDLER = ApiHandler(api_key=31, min_version=0, max_version=3, handle=handle, error_response=error_response)
