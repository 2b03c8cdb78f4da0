"""AlterUserScramCredentials (api key 51), v0 (KIP-554): create, replace and delete SCRAM
credentials, through the controller.

The client salts and iterates the password itself and sends the salted password; the controller
derives StoredKey and ServerKey from it and stores those, with the salt and iteration count
(control/scram_control.py, which also holds the checks and Kafka's error codes). One result per
user named in the request, each user all or nothing; the answer comes once every worker applied
the change, so a SCRAM login on any worker sees it. The salted password crosses only the
worker's control ring to the controller (shared memory of the broker's own user), as Kafka's
brokers forward it to theirs; it is never logged nor stored. Without ALTER on the CLUSTER every
user is CLUSTER_AUTHORIZATION_FAILED and nothing reaches the controller.
"""

from __future__ import annotations

from typing import Any

from shardbroker.broker.auth_helper import DENIED, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_items, controller_timeout
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "controller_args"]

_Result = m.AlterUserScramCredentialsResponse.AlterUserScramCredentialsResult


def _users(request: m.AlterUserScramCredentialsRequest) -> list[str]:
    """Every user named, once, in order of first appearance (deletions first): the controller
    answers in this order."""
    names = [d.name for d in request.deletions] + [u.name for u in request.upsertions]
    return list(dict.fromkeys(names))


def controller_args(request: m.AlterUserScramCredentialsRequest) -> dict[str, Any]:
    """The controller op's arguments (bytes as hex): control/scram_control.py `alter_credentials`."""
    return {
        "deletions": [{"name": d.name, "mechanism": d.mechanism} for d in request.deletions],
        "upsertions": [
            {
                "name": u.name,
                "mechanism": u.mechanism,
                "iterations": u.iterations,
                "salt": bytes(u.salt).hex(),
                "salted_password": bytes(u.salted_password).hex(),
            }
            for u in request.upsertions
        ],
    }


async def handle(
    ctx: RequestContext, request: m.AlterUserScramCredentialsRequest
) -> m.AlterUserScramCredentialsResponse:
    if not authorize_cluster(ctx, AclOperation.ALTER):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    users = _users(request)
    args = controller_args(request)
    answers = await controller_items(
        ctx, "alter_scram_credentials", args, "results", len(users), controller_timeout(0)
    )
    return m.AlterUserScramCredentialsResponse(
        results=[
            _Result(
                user=user,
                error_code=int(answer.get("error_code", 0)),
                error_message=answer.get("error_message"),
            )
            for user, answer in zip(users, answers, strict=True)
        ]
    )


def error_response(
    request: m.AlterUserScramCredentialsRequest, version: int, code: ErrorCode, message: str
) -> m.AlterUserScramCredentialsResponse:
    return m.AlterUserScramCredentialsResponse(
        results=[_Result(user=u, error_code=code, error_message=message) for u in _users(request)]
    )


HANDLER = ApiHandler(api_key=51, min_version=0, max_version=0, handle=handle, error_response=error_response)
