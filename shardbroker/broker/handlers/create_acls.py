"""CreateAcls (api key 30), v0-3: add ACL bindings through the controller's metadata log.

Kafka's AclApis and AclControlManager: without an authorizer every creation is answered
SECURITY_DISABLED; the caller needs ALTER on the CLUSTER (CLUSTER_AUTHORIZATION_FAILED for every
creation otherwise); each creation is checked alone (control/acl_control.py: INVALID_REQUEST with
Kafka's message) and one equal to an existing binding succeeds without adding a second. The
answer comes once every worker applied the new image, so the bindings are enforced everywhere
when the client sees success.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_items, controller_timeout
from shardbroker.broker.handlers.describe_acls import CLUSTER_DENIED, NO_AUTHORIZER
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER", "creation_record"]

_Result = m.CreateAclsResponse.AclCreationResult


def creation_record(c: m.CreateAclsRequest.AclCreation) -> dict[str, object]:
    """The binding's record form (security/acl.py ``AclBinding.to_record``) from the wire."""
    return {
        "resource_type": c.resource_type,
        "name": c.resource_name,
        "pattern_type": c.resource_pattern_type,
        "principal": c.principal,
        "host": c.host,
        "operation": c.operation,
        "permission_type": c.permission_type,
    }


async def handle(ctx: RequestContext, request: m.CreateAclsRequest) -> m.CreateAclsResponse:
    if ctx.worker.authorizer is None:
        return error_response(request, ctx.api_version, ErrorCode.SECURITY_DISABLED, NO_AUTHORIZER)
    if not authorize_cluster(ctx, AclOperation.ALTER):
        code = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
        return error_response(request, ctx.api_version, code, CLUSTER_DENIED)
    creations = [creation_record(c) for c in request.creations]
    answers = await controller_items(
        ctx, "create_acls", {"creations": creations}, "results", len(creations), controller_timeout(0)
    )
    return m.CreateAclsResponse(
        results=[
            _Result(error_code=int(a.get("error_code", 0)), error_message=a.get("error_message"))
            for a in answers
        ]
    )


def error_response(
    request: m.CreateAclsRequest, version: int, code: ErrorCode, message: str
) -> m.CreateAclsResponse:
    return m.CreateAclsResponse(
        results=[_Result(error_code=code, error_message=message or None) for _ in request.creations]
    )


HANDLER = ApiHandler(api_key=30, min_version=0, max_version=3, handle=handle, error_response=error_response)
