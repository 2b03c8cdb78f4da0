"""DescribeClientQuotas (api key 48), v0-v1 (KIP-546): the client quotas matching a filter, from
the worker's metadata image (as Kafka's brokers answer from their ClientQuotasImage).

The filter's rules, match types (EXACT, DEFAULT, SPECIFIED), ``strict`` and Kafka's errors are in
control/quota_control.py ``describe_client_quotas``; a refused filter is the top-level error with
null entries. Without DESCRIBE_CONFIGS on the CLUSTER: CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import DENIED, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.metadata.client_quotas import DescribeError, describe_client_quotas
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_Response = m.DescribeClientQuotasResponse


async def handle(ctx: RequestContext, request: m.DescribeClientQuotasRequest) -> _Response:
    if not authorize_cluster(ctx, AclOperation.DESCRIBE_CONFIGS):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    components = [(c.entity_type, c.match_type, c.match_) for c in request.components]
    try:
        found = describe_client_quotas(ctx.worker.image.client_quotas, components, request.strict)
    except DescribeError as exc:
        return error_response(request, ctx.api_version, exc.code, str(exc))
    entries = [
        _Response.EntryData(
            entity=[_Response.EntityData(entity_type=t, entity_name=n) for t, n in entity],
            values=[_Response.ValueData(key=k, value=v) for k, v in sorted(values.items())],
        )
        for entity, values in found
    ]
    return _Response(error_code=0, error_message=None, entries=entries)


def error_response(
    request: m.DescribeClientQuotasRequest, version: int, code: ErrorCode, message: str
) -> _Response:
    return _Response(error_code=code, error_message=message, entries=None)


HANDLER = ApiHandler(api_key=48, min_version=0, max_version=1, handle=handle, error_response=error_response)
