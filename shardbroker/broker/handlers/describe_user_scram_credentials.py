"""DescribeUserScramCredentials (api key 50), v0 (KIP-554): each user's SCRAM mechanisms and
iteration counts, from the worker's metadata image (as Kafka's brokers answer from theirs).

Kafka's ScramImage.describe: a null or empty user list describes every user with a credential;
a user named twice is DUPLICATE_RESOURCE (92), a named user without credentials
RESOURCE_NOT_FOUND (91), each with Kafka's message. Salts and keys are never sent. Results come
in the order of the request (every user: by name), mechanisms by wire value. Without DESCRIBE on
the CLUSTER: CLUSTER_AUTHORIZATION_FAILED at the top and in one result per user named (Kafka's
error answer, whose results carry no user name).
"""

from __future__ import annotations

from collections import Counter

from shardbroker.broker.auth_helper import DENIED, authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_Response = m.DescribeUserScramCredentialsResponse
_Result = _Response.DescribeUserScramCredentialsResult


async def handle(
    ctx: RequestContext, request: m.DescribeUserScramCredentialsRequest
) -> m.DescribeUserScramCredentialsResponse:
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    credentials = ctx.worker.image.scram_credentials
    names = [u.name for u in request.users] if request.users else sorted(credentials)
    counts = Counter(names)
    results = []
    for name in dict.fromkeys(names):
        creds = credentials.get(name)
        if counts[name] > 1:
            results.append(
                _Result(
                    user=name,
                    error_code=ErrorCode.DUPLICATE_RESOURCE,
                    error_message=f"Cannot describe SCRAM credentials for the same user twice in a "
                    f"single request: {name}",
                    credential_infos=[],
                )
            )
        elif not creds:
            results.append(
                _Result(
                    user=name,
                    error_code=ErrorCode.RESOURCE_NOT_FOUND,
                    error_message=f"Attempt to describe a user credential that does not exist: {name}",
                    credential_infos=[],
                )
            )
        else:
            infos = [
                _Response.CredentialInfo(mechanism=int(mech), iterations=cred.iterations)
                for mech, cred in sorted(creds.items())
            ]
            results.append(_Result(user=name, error_code=0, error_message=None, credential_infos=infos))
    return _Response(error_code=0, error_message=None, results=results)


def error_response(
    request: m.DescribeUserScramCredentialsRequest, version: int, code: ErrorCode, message: str
) -> _Response:
    return _Response(
        error_code=code,
        error_message=message,
        results=[
            _Result(user="", error_code=code, error_message=message, credential_infos=[])
            for _ in request.users or []
        ],
    )


HANDLER = ApiHandler(api_key=50, min_version=0, max_version=0, handle=handle, error_response=error_response)
