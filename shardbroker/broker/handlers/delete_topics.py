"""DeleteTopics (api key 20), v0-v6: by name (v0-v5 ``topic_names``, v6 ``topics``) or by id (v6).

The controller deletes and answers once every worker has closed and removed the partitions;
UNKNOWN_TOPIC_OR_PARTITION (3) for an unknown name, UNKNOWN_TOPIC_ID (100) for an unknown id.
A v6 item with neither a name nor an id is INVALID_REQUEST. v6 results name the topic and its id.

Authorization, as KRaft's ControllerApis.deleteTopics: DELETE on the CLUSTER allows every topic,
else DELETE on each TOPIC (TOPIC_AUTHORIZATION_FAILED, 29, checked before the topic's existence).
An id is resolved first (unknown: UNKNOWN_TOPIC_ID, ids are not secret); a refused id's result
names its topic only with DESCRIBE on it. Results stay in request order (Kafka shuffles them).
KIP-599: the partitions asked for count against the client's ``controller_mutation_rate``
(handlers/_common.py ``controller_mutations``); from v5 a topic asked while the quota is exceeded
is THROTTLING_QUOTA_EXCEEDED, before that it passes; ``throttle_time_ms`` answers the throttle.
"""

from __future__ import annotations

import uuid
from typing import Any

from shardbroker.broker.auth_helper import authorize, filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import (
    THROTTLED,
    controller_items,
    controller_mutations,
    controller_timeout,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER"]

_Result = m.DeleteTopicsResponse.DeletableTopicResult


def _wanted(request: m.DeleteTopicsRequest, version: int) -> list[tuple[str | None, uuid.UUID]]:
    if version >= 6:
        return [(t.name, t.topic_id) for t in request.topics]
    return [(name, ZERO_UUID) for name in request.topic_names]


async def handle(ctx: RequestContext, request: m.DeleteTopicsRequest) -> m.DeleteTopicsResponse:
    version = ctx.api_version
    wanted = _wanted(request, version)
    asked: list[dict[str, Any]] = []
    results: list[_Result | None] = []
    refused = _refused(ctx, wanted)
    mutations = controller_mutations(ctx, version >= 5, False)
    image = ctx.worker.image
    for name, topic_id in wanted:
        if name is None and topic_id == ZERO_UUID:
            results.append(
                _Result(
                    name=None,
                    error_code=ErrorCode.INVALID_REQUEST,
                    error_message="neither a topic name nor a topic id",
                )
            )
            continue
        denial = refused.get((name, topic_id))
        if denial is not None:
            results.append(denial)
            continue
        if mutations is not None:
            gone = image.topics_by_id.get(topic_id) if name is None else image.topics.get(name)
            if not mutations.admit(len(gone.partitions) if gone is not None else 0):
                results.append(
                    _Result(name=name, topic_id=topic_id, error_code=THROTTLED[0], error_message=THROTTLED[1])
                )
                continue
        results.append(None)
        asked.append({"name": name, "topic_id": str(topic_id) if topic_id != ZERO_UUID else None})
    answers = iter(
        await controller_items(ctx, "delete_topics", {"topics": asked}, "topics", len(asked),
                               controller_timeout(request.timeout_ms))
    )  # fmt: skip
    out = []
    for (name, topic_id), result in zip(wanted, results, strict=True):
        if result is None:
            answer = next(answers)
            raw_id = answer.get("topic_id")
            result = _Result(
                name=answer.get("name", name),
                topic_id=uuid.UUID(str(raw_id)) if raw_id else topic_id,
                error_code=int(answer.get("error_code", 0)),
                error_message=answer.get("error_message"),
            )
        out.append(_for_version(result, version, name))
    return m.DeleteTopicsResponse(responses=out, throttle_time_ms=mutations.throttle_ms() if mutations else 0)


def _refused(
    ctx: RequestContext, wanted: list[tuple[str | None, uuid.UUID]]
) -> dict[tuple[str | None, uuid.UUID], _Result]:
    """The results of the items the principal may not delete, by item."""
    if authorize(ctx, AclOperation.DELETE, ResourceType.CLUSTER, CLUSTER_NAME, log_if_denied=False):
        return {}
    by_id = ctx.worker.image.topics_by_id
    named: dict[tuple[str | None, uuid.UUID], str] = {}
    for name, topic_id in wanted:
        if name is not None:
            named[name, topic_id] = name
        elif topic_id in by_id:  # an unknown id is left to the controller: UNKNOWN_TOPIC_ID
            named[name, topic_id] = by_id[topic_id].name
    describable = filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, named.values())
    deletable = filter_authorized(ctx, AclOperation.DELETE, ResourceType.TOPIC, named.values())
    return {
        (name, topic_id): _Result(
            name=topic if name is not None or topic in describable else None,
            topic_id=topic_id,
            error_code=ErrorCode.TOPIC_AUTHORIZATION_FAILED,
            error_message="Topic authorization failed.",
        )
        for (name, topic_id), topic in named.items()
        if topic not in deletable
    }


def _for_version(result: _Result, version: int, asked_name: str | None) -> _Result:
    if version < 6:
        result.topic_id = ZERO_UUID
        if result.name is None:
            result.name = asked_name or ""
    if version < 5:
        result.error_message = None
    return result


def error_response(
    request: m.DeleteTopicsRequest, version: int, code: ErrorCode, message: str
) -> m.DeleteTopicsResponse:
    return m.DeleteTopicsResponse(
        responses=[
            _for_version(
                _Result(name=name, topic_id=topic_id, error_code=code, error_message=message), version, name
            )
            for name, topic_id in _wanted(request, version)
        ]
    )


HANDLER = ApiHandler(api_key=20, min_version=0, max_version=6, handle=handle, error_response=error_response)
