"""AlterClientQuotas (api key 49), v0-v1 (KIP-546): set and remove client quotas, through the
controller (control/quota_control.py holds the checks and Kafka's errors).

One result per entry, in order, each entity all or nothing; ``validate_only`` checks without
storing. The answer comes once every worker applied the change, so the next request on any
worker is held to the new quota. Without ALTER_CONFIGS on the CLUSTER every entry is
CLUSTER_AUTHORIZATION_FAILED and nothing reaches the controller.
"""

from __future__ import annotations

from typing import Any

from shardbroker.broker.auth_helper import DENIED, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_items, controller_timeout
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_Response = m.AlterClientQuotasResponse


def _entity(entry: m.AlterClientQuotasRequest.EntryData) -> list[_Response.EntityData]:
    return [_Response.EntityData(entity_type=e.entity_type, entity_name=e.entity_name) for e in entry.entity]


def controller_args(request: m.AlterClientQuotasRequest) -> dict[str, Any]:
    return {
        "validate_only": request.validate_only,
        "entries": [
            {
                "entity": [
                    {"entity_type": e.entity_type, "entity_name": e.entity_name} for e in entry.entity
                ],
                "ops": [{"key": op.key, "value": op.value, "remove": op.remove} for op in entry.ops],
            }
            for entry in request.entries
        ],
    }


async def handle(ctx: RequestContext, request: m.AlterClientQuotasRequest) -> _Response:
    if not authorize_cluster(ctx, AclOperation.ALTER_CONFIGS):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    # NaN and infinities cross the control ring as Python's json writes them (NaN, Infinity),
    # for the controller to refuse.
    answers = await controller_items(
        ctx,
        "alter_client_quotas",
        controller_args(request),
        "results",
        len(request.entries),
        controller_timeout(0),
    )
    return _Response(
        entries=[
            _Response.EntryData(
                error_code=int(answer.get("error_code", 0)),
                error_message=answer.get("error_message"),
                entity=_entity(entry),
            )
            for entry, answer in zip(request.entries, answers, strict=True)
        ]
    )


def error_response(
    request: m.AlterClientQuotasRequest, version: int, code: ErrorCode, message: str
) -> _Response:
    return _Response(
        entries=[
            _Response.EntryData(error_code=code, error_message=message, entity=_entity(entry))
            for entry in request.entries
        ]
    )


HANDLER = ApiHandler(api_key=49, min_version=0, max_version=1, handle=handle, error_response=error_response)
