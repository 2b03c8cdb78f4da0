"""CreateTopics (api key 19), v0-v7: topics are created by the controller (placement, ids, log).

Validation of names, partition counts, replication factors and configs is the controller's (one
place, Kafka's rules and messages); this handler refuses only what the controller op cannot
express: explicit replica assignments (INVALID_REPLICA_ASSIGNMENT 39: placement is the broker's on
a single host) and configs with a null value (INVALID_CONFIG 40, as Kafka). The answer comes once
every worker applied the new metadata, so a Metadata request to any worker right after sees the
topic. v5+ results carry the partition count, replication factor 1 and the topic's configs with
their sources (what DescribeConfigs would say); v7+ the topic id. ``timeout_ms`` bounds the wait
for the controller (REQUEST_TIMED_OUT 7 after it; the creation may still happen, as with Kafka).

Authorization, as KRaft's ControllerApis.createTopics, before any other check: CREATE on the
CLUSTER allows every topic, else CREATE on each TOPIC (TOPIC_AUTHORIZATION_FAILED 29, "Authorization
failed."); a topic listed twice stays INVALID_REQUEST. A created topic's partition count,
replication factor and configs are answered only with DESCRIBE_CONFIGS on it, else its
``topic_config_error_code`` is 29.
KIP-599: the partitions asked for count against the client's ``controller_mutation_rate``
(handlers/_common.py ``controller_mutations``); from v6 a topic asked while the quota is exceeded
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
    topic_config_entries,
    topics_allowed,
)
from shardbroker.config.broker_properties import NUM_PARTITIONS
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER"]

_Result = m.CreateTopicsResponse.CreatableTopicResult
_Config = m.CreateTopicsResponse.CreatableTopicConfigs


_DENIED = (ErrorCode.TOPIC_AUTHORIZATION_FAILED, "Authorization failed.")


def _authorized(ctx: RequestContext, request: m.CreateTopicsRequest) -> tuple[set[str], set[str]]:
    """(the names that may be created, those whose configs may be described)."""
    names = [t.name for t in request.topics]
    if authorize(ctx, AclOperation.CREATE, ResourceType.CLUSTER, CLUSTER_NAME, log_if_denied=False):
        creatable = set(names)
    else:
        creatable = topics_allowed(ctx, AclOperation.CREATE, names)
    describable = filter_authorized(
        ctx, AclOperation.DESCRIBE_CONFIGS, ResourceType.TOPIC, names, log_if_denied=False
    )
    return creatable, describable


def _refusal(topic: m.CreateTopicsRequest.CreatableTopic) -> tuple[ErrorCode, str] | None:
    if topic.assignments:
        return (
            ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            "Manual replica assignment is not supported: "
            "shardbroker places each partition on a worker itself",
        )
    for config in topic.configs:
        if config.value is None:
            return ErrorCode.INVALID_CONFIG, f"Null value not supported for topic config: {config.name}"
    return None


async def handle(ctx: RequestContext, request: m.CreateTopicsRequest) -> m.CreateTopicsResponse:
    version = ctx.api_version
    results: list[_Result | None] = []
    asked: list[dict[str, Any]] = []
    creatable, describable = _authorized(ctx, request)
    validate_only = bool(request.validate_only) if version >= 1 else False
    mutations = controller_mutations(ctx, version >= 6, validate_only)
    default_partitions = ctx.worker.config.get(NUM_PARTITIONS)
    for topic in request.topics:
        refusal = _refusal(topic) if topic.name in creatable else _DENIED
        partitions = topic.num_partitions if topic.num_partitions > 0 else default_partitions
        if refusal is None and mutations is not None and not mutations.admit(partitions):
            refusal = THROTTLED
        if refusal is not None:
            results.append(_Result(name=topic.name, error_code=refusal[0], error_message=refusal[1]))
            continue
        results.append(None)
        asked.append(
            {
                "name": topic.name,
                "num_partitions": topic.num_partitions,
                "replication_factor": topic.replication_factor,
                "configs": {c.name: c.value for c in topic.configs},
            }
        )
    args = {"topics": asked, "validate_only": validate_only}
    answers = iter(
        await controller_items(
            ctx, "create_topics", args, "topics", len(asked), controller_timeout(request.timeout_ms)
        )
    )
    out = []
    for topic, result in zip(request.topics, results, strict=True):
        if result is None:
            result = _from_answer(ctx, topic, next(answers), version, topic.name in describable)
        if version < 1:
            result.error_message = None
        out.append(result)
    return m.CreateTopicsResponse(topics=out, throttle_time_ms=mutations.throttle_ms() if mutations else 0)


def _from_answer(
    ctx: RequestContext,
    topic: m.CreateTopicsRequest.CreatableTopic,
    answer: dict[str, Any],
    version: int,
    describable: bool,
) -> _Result:
    code = int(answer.get("error_code", 0))
    result = _Result(name=topic.name, error_code=code, error_message=answer.get("error_message"))
    if code:
        return result
    raw_id = answer.get("topic_id")
    if version >= 7 and raw_id:
        result.topic_id = uuid.UUID(str(raw_id))
    if version >= 5 and not describable:
        result.topic_config_error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
    elif version >= 5:
        result.num_partitions = int(answer.get("num_partitions", topic.num_partitions))
        result.replication_factor = 1
        created = ctx.worker.image.topics.get(topic.name)
        if created is None:  # validate_only: describe the configs the topic would have
            created = TopicImage(
                name=topic.name,
                topic_id=ZERO_UUID,
                partitions=(),
                configs={c.name: c.value for c in topic.configs if c.value is not None},
            )
        result.configs = [
            _Config(
                name=e.name,
                value=e.value,
                read_only=e.read_only,
                config_source=e.source,
                is_sensitive=False,
            )
            for e in topic_config_entries(ctx.worker.config, created)
        ]
    return result


def error_response(
    request: m.CreateTopicsRequest, version: int, code: ErrorCode, message: str
) -> m.CreateTopicsResponse:
    return m.CreateTopicsResponse(
        topics=[
            _Result(name=t.name, error_code=code, error_message=message if version >= 1 else None)
            for t in request.topics
        ]
    )


HANDLER = ApiHandler(api_key=19, min_version=0, max_version=7, handle=handle, error_response=error_response)
