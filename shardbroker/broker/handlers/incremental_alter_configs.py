"""IncrementalAlterConfigs (api key 44), v0-v1: SET, DELETE, APPEND, SUBTRACT on a topic's configs.

Operations (Kafka's AlterConfigOp.OpType): 0 SET, 1 DELETE (back to the default), 2 APPEND and
3 SUBTRACT (list configs only: cleanup.policy; the controller refuses them elsewhere with
INVALID_CONFIG). An unknown operation, a config named twice in one resource, or a SET with a null
value is INVALID_REQUEST (42), as Kafka. Broker and other resources: see ``_alter.py``.
"""

from __future__ import annotations

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._alter import Change, alter, error_responses, responses
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_Response = m.IncrementalAlterConfigsResponse.AlterConfigsResourceResponse
_OPS = {0: "set", 1: "delete", 2: "append", 3: "subtract"}


def _change(resource: m.IncrementalAlterConfigsRequest.AlterConfigsResource) -> Change:
    change = Change(resource.resource_type, resource.resource_name, [])
    names = [c.name for c in resource.configs]
    for config in resource.configs:
        op = _OPS.get(config.config_operation)
        if op is None:
            change.refusal = (
                ErrorCode.INVALID_REQUEST,
                f"Unknown config operation {config.config_operation} for {config.name}",
            )
        elif names.count(config.name) > 1:
            change.refusal = ErrorCode.INVALID_REQUEST, f"Error due to duplicate config keys: {config.name}"
        elif op == "set" and config.value is None:
            change.refusal = ErrorCode.INVALID_REQUEST, f"Null value not supported for: {config.name}"
        else:
            change.ops.append({"name": config.name, "op": op, "value": config.value})
            continue
        break
    return change


async def handle(
    ctx: RequestContext, request: m.IncrementalAlterConfigsRequest
) -> m.IncrementalAlterConfigsResponse:
    outcomes = await alter(
        ctx, [_change(r) for r in request.resources], replace=False, validate_only=bool(request.validate_only)
    )
    return m.IncrementalAlterConfigsResponse(responses=responses(_Response, outcomes))


def error_response(
    request: m.IncrementalAlterConfigsRequest, version: int, code: ErrorCode, message: str
) -> m.IncrementalAlterConfigsResponse:
    return m.IncrementalAlterConfigsResponse(
        responses=error_responses(_Response, request.resources, code, message)
    )


HANDLER = ApiHandler(api_key=44, min_version=0, max_version=1, handle=handle, error_response=error_response)
