"""AlterConfigs (api key 33), v0-v2: replace a topic's whole set of config overrides.

Kafka's semantics for the legacy API: the configs given become the topic's only overrides; any
override not listed reverts to the broker default. A null value is INVALID_REQUEST (42). Broker
and other resources: see ``_alter.py`` (refused with INVALID_REQUEST and a message).
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._alter import Change, alter, error_responses, responses
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_Response = m.AlterConfigsResponse.AlterConfigsResourceResponse


def _change(resource: m.AlterConfigsRequest.AlterConfigsResource) -> Change:
    change = Change(
        resource.resource_type,
        resource.resource_name,
        [{"name": c.name, "op": "set", "value": c.value} for c in resource.configs],
    )
    nulls = [c.name for c in resource.configs if c.value is None]
    if nulls:
        change.refusal = (
            ErrorCode.INVALID_REQUEST,
            f"Null value not supported for configs: {', '.join(nulls)}",
        )
    return change


async def handle(ctx: RequestContext, request: m.AlterConfigsRequest) -> m.AlterConfigsResponse:
    outcomes = await alter(
        ctx, [_change(r) for r in request.resources], replace=True, validate_only=bool(request.validate_only)
    )
    return m.AlterConfigsResponse(responses=responses(_Response, outcomes))


def error_response(
    request: m.AlterConfigsRequest, version: int, code: ErrorCode, message: str
) -> m.AlterConfigsResponse:
    return m.AlterConfigsResponse(responses=error_responses(_Response, request.resources, code, message))


HANDLER = ApiHandler(api_key=33, min_version=0, max_version=2, handle=handle, error_response=error_response)
