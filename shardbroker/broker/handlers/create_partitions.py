"""CreatePartitions (api key 37), v0-v3: grow a topic's partition count through the controller.

The controller places the new partitions (least-loaded worker first) and answers once every
worker has opened them; INVALID_PARTITIONS (37) when the count does not grow,
UNKNOWN_TOPIC_OR_PARTITION (3) for an unknown topic, INVALID_REQUEST (42) for a topic listed twice.
Explicit assignments are refused with INVALID_REPLICA_ASSIGNMENT (39): placement is the broker's.

Authorization, as KRaft's ControllerApis.createPartitions, before any other check: ALTER on each
TOPIC, else TOPIC_AUTHORIZATION_FAILED (29); a topic listed twice stays INVALID_REQUEST.
KIP-599: the partitions asked for count against the client's ``controller_mutation_rate``
(handlers/_common.py ``controller_mutations``); from v3 a topic asked while the quota is exceeded
is THROTTLING_QUOTA_EXCEEDED, before that it passes; ``throttle_time_ms`` answers the throttle.
"""

from __future__ import annotations

from typing import Any

from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import (
    THROTTLED,
    controller_items,
    controller_mutations,
    controller_timeout,
    topics_allowed,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_Result = m.CreatePartitionsResponse.CreatePartitionsTopicResult


async def handle(ctx: RequestContext, request: m.CreatePartitionsRequest) -> m.CreatePartitionsResponse:
    asked: list[dict[str, Any]] = []
    results: list[_Result | None] = []
    alterable = topics_allowed(ctx, AclOperation.ALTER, [t.name for t in request.topics])
    mutations = controller_mutations(ctx, ctx.api_version >= 3, bool(request.validate_only))
    topics = ctx.worker.image.topics
    for topic in request.topics:
        if topic.name not in alterable:
            results.append(
                _Result(name=topic.name, error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED, error_message=None)
            )
            continue
        if topic.assignments:
            results.append(
                _Result(
                    name=topic.name,
                    error_code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    error_message="Manual replica assignment is not supported: "
                    "shardbroker places each partition on a worker itself",
                )
            )
            continue
        current = topics.get(topic.name)
        new = topic.count - len(current.partitions) if current is not None else 0
        if mutations is not None and not mutations.admit(new):
            results.append(_Result(name=topic.name, error_code=THROTTLED[0], error_message=THROTTLED[1]))
            continue
        results.append(None)
        asked.append({"name": topic.name, "count": topic.count})
    args = {"topics": asked, "validate_only": bool(request.validate_only)}
    answers = iter(
        await controller_items(ctx, "create_partitions", args, "topics", len(asked),
                               controller_timeout(request.timeout_ms))
    )  # fmt: skip
    out = []
    for topic, result in zip(request.topics, results, strict=True):
        if result is None:
            answer = next(answers)
            result = _Result(
                name=topic.name,
                error_code=int(answer.get("error_code", 0)),
                error_message=answer.get("error_message"),
            )
        out.append(result)
    return m.CreatePartitionsResponse(
        results=out, throttle_time_ms=mutations.throttle_ms() if mutations else 0
    )


def error_response(
    request: m.CreatePartitionsRequest, version: int, code: ErrorCode, message: str
) -> m.CreatePartitionsResponse:
    return m.CreatePartitionsResponse(
        results=[_Result(name=t.name, error_code=code, error_message=message) for t in request.topics]
    )


HANDLER = ApiHandler(api_key=37, min_version=0, max_version=3, handle=handle, error_response=error_response)
