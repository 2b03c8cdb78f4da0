"""FindCoordinator (api key 10), v0-v5: which worker coordinates a group or a transactional id.

The coordinator of a group is the leader of its ``__consumer_offsets`` partition, that of a
transactional id the leader of its ``__transaction_state`` partition (both Java's
String.hashCode, as Kafka: group_metadata_manager.partition_for). The topic is created on the
first FindCoordinator that finds it missing, as Kafka does; the answer waits for it. v4+ asks for
several keys at once (``coordinator_keys``) and gets one answer per key. The coordinator's
address is its endpoint on the listener the request came in on, as Kafka answers.

Key types: 0 (group), 1 (transaction). Other key types get INVALID_REQUEST.

Authorization, as KafkaApis.getCoordinator, per key before anything else: a group key needs
DESCRIBE on the GROUP (GROUP_AUTHORIZATION_FAILED, 30), a transaction key DESCRIBE on the
TRANSACTIONAL_ID (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, 53).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

KEY_GROUP = 0
KEY_TRANSACTION = 1

_C = m.FindCoordinatorResponse.Coordinator

#: Per key type: the resource DESCRIBE is checked on, and the error (with Kafka's message) if not.
_CHECKS = {
    KEY_GROUP: (ResourceType.GROUP, ErrorCode.GROUP_AUTHORIZATION_FAILED, "Group authorization failed."),
    KEY_TRANSACTION: (
        ResourceType.TRANSACTIONAL_ID,
        ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        "Transactional Id authorization failed.",
    ),
}


async def _find(ctx: RequestContext, key: str, key_type: int) -> _C:
    out = _C(key=key, node_id=-1, host="", port=-1, error_code=0, error_message=None)
    check = _CHECKS.get(key_type)
    if check is not None and not authorize(ctx, AclOperation.DESCRIBE, check[0], key):
        out.error_code, out.error_message = int(check[1]), check[2]
        return out
    if key_type not in (KEY_GROUP, KEY_TRANSACTION):
        out.error_code = int(ErrorCode.INVALID_REQUEST)
        out.error_message = f"unknown coordinator key type {key_type}"
        return out
    found = coordinator(ctx) if key_type == KEY_GROUP else ctx.worker.transactions
    if found is None:
        out.error_code = NOT_AVAILABLE
        return out
    if not key:
        out.error_code = int(ErrorCode.INVALID_REQUEST)
        out.error_message = "empty group id" if key_type == KEY_GROUP else "empty transactional id"
        return out
    code = await found.ensure_topic()
    node = -1
    if code == 0:
        code, node = found.coordinator_of(key)
    endpoint = ctx.worker.image.broker(node, ctx.session.listener) if code == 0 else None
    if endpoint is None:
        out.error_code = code or NOT_AVAILABLE
        out.error_message = ErrorCode(out.error_code).name
        return out
    out.node_id, out.host, out.port = endpoint.node_id, endpoint.host, endpoint.port
    return out


async def handle_find_coordinator(
    ctx: RequestContext, request: m.FindCoordinatorRequest
) -> m.FindCoordinatorResponse:
    version = ctx.api_version
    key_type = request.key_type if version >= 1 else KEY_GROUP
    if version >= 4:
        return m.FindCoordinatorResponse(
            coordinators=[await _find(ctx, key, key_type) for key in request.coordinator_keys]
        )
    found = await _find(ctx, request.key, key_type)
    return m.FindCoordinatorResponse(
        error_code=found.error_code,
        error_message=found.error_message,
        node_id=found.node_id,
        host=found.host,
        port=found.port,
    )


def find_coordinator_error_response(
    request: m.FindCoordinatorRequest, version: int, code: ErrorCode, message: str
) -> m.FindCoordinatorResponse:
    if version >= 4:
        return m.FindCoordinatorResponse(
            coordinators=[
                _C(key=k, node_id=-1, host="", port=-1, error_code=int(code), error_message=message)
                for k in request.coordinator_keys
            ]
        )
    return m.FindCoordinatorResponse(error_code=int(code), error_message=message, node_id=-1, port=-1)


HANDLER = ApiHandler(
    api_key=m.FindCoordinatorRequest.API_KEY,
    min_version=0,
    max_version=5,
    handle=handle_find_coordinator,
    error_response=find_coordinator_error_response,
)
