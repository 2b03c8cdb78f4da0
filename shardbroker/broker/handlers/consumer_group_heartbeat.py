"""ConsumerGroupHeartbeat (api key 68), v0-v1: a member of a consumer-protocol group (KIP-848)
joins (epoch 0), heartbeats, acknowledges revocations (its owned partitions) and leaves (-1; -2
for a static member that will come back); the broker answers its member epoch and, when it
changed, the partitions it may own (consumer_group.py).

The request's shape is checked first, with Kafka's messages (INVALID_REQUEST): a group id; a
member id unless joining; on joining, a rebalance timeout, an empty owned-partitions list and a
subscription (topic names or, v1, a regex; not both); no empty instance or rack id; an epoch of
-2 only with an instance id; a ``server_assignor`` among ``group.consumer.assignors``
(UNSUPPORTED_ASSIGNOR). A regex (RE2/J syntax, matched against whole topic names by
topic_regex.py) that does not compile is refused INVALID_REGULAR_EXPRESSION, with Kafka's
message. Authorization as Kafka: READ on the
group (GROUP_AUTHORIZATION_FAILED), DESCRIBE on every subscribed topic name
(TOPIC_AUTHORIZATION_FAILED). Served only when ``group.coordinator.rebalance.protocols`` lists
``consumer`` (dispatch.py leaves the API out of
ApiVersions otherwise).
"""

from __future__ import annotations

import uuid

from shardbroker.broker.auth_helper import filter_authorized
from shardbroker.broker.consumer_group import HeartbeatRequest, HeartbeatResult
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import (
    GROUP_DENIED,
    NOT_AVAILABLE,
    client_host,
    coordinator,
    may_read_group,
)
from shardbroker.broker.topic_regex import TopicRegexError, compile_topic_regex
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

R = m.ConsumerGroupHeartbeatResponse


def _blank(value: str) -> bool:
    return not value.strip()


def invalid(
    request: m.ConsumerGroupHeartbeatRequest, version: int, assignors: tuple[str, ...]
) -> tuple[int, str] | None:
    """Kafka's checks of the request's shape: ``(error code, message)`` or None."""
    bad = int(ErrorCode.INVALID_REQUEST)
    # An empty regex is "no regex" (librdkafka sends "" beside topic names), as Kafka reads it.
    regex = (request.subscribed_topic_regex or None) if version >= 1 else None
    # Kafka's throwIfEmptyString: blank (all whitespace) counts as empty.
    if _blank(request.group_id):
        return bad, "GroupId can't be empty."
    if request.instance_id is not None and _blank(request.instance_id):
        return bad, "InstanceId can't be empty."
    if request.rack_id is not None and _blank(request.rack_id):
        return bad, "RackId can't be empty."
    epoch = request.member_epoch
    if epoch < -2:
        return bad, "MemberEpoch is invalid."
    if epoch != 0 and _blank(request.member_id):
        return bad, "MemberId can't be empty."
    if epoch == 0:
        if request.rebalance_timeout_ms == -1:
            return bad, "RebalanceTimeoutMs must be provided in first request."
        if request.topic_partitions is None or request.topic_partitions:
            return bad, "TopicPartitions must be empty when (re-)joining."
        # Kafka 4.0 takes both (the member subscribes to the names and what the regex matches;
        # librdkafka sends an empty name list beside its regex), and either may be empty.
        if request.subscribed_topic_names is None and request.subscribed_topic_regex is None:
            return (
                bad,
                "Either SubscribedTopicNames or SubscribedTopicRegex must be non-null when (re-)joining.",
            )
    if epoch == -2 and request.instance_id is None:
        return bad, "InstanceId can't be null."
    if request.rebalance_timeout_ms < -1 or request.rebalance_timeout_ms == 0:
        return bad, f"RebalanceTimeoutMs is invalid: {request.rebalance_timeout_ms}."
    if regex is not None:
        try:
            compile_topic_regex(regex)
        except TopicRegexError as exc:  # Kafka's message, the pattern quoted (cut if long)
            return int(ErrorCode.INVALID_REGULAR_EXPRESSION), str(exc)
    if request.server_assignor is not None and request.server_assignor not in assignors:
        return int(ErrorCode.UNSUPPORTED_ASSIGNOR), (
            f"ServerAssignor {request.server_assignor} is not supported. "
            f"Supported assignors: {', '.join(assignors)}."
        )
    return None


def _request(ctx: RequestContext, request: m.ConsumerGroupHeartbeatRequest) -> HeartbeatRequest:
    owned: dict[uuid.UUID, frozenset[int]] | None = None
    if request.topic_partitions is not None:
        owned = {}
        for tp in request.topic_partitions:
            if tp.partitions:
                owned[tp.topic_id] = owned.get(tp.topic_id, frozenset()) | frozenset(tp.partitions)
    names = request.subscribed_topic_names
    return HeartbeatRequest(
        member_id=request.member_id,
        member_epoch=request.member_epoch,
        instance_id=request.instance_id,
        rack_id=request.rack_id,
        rebalance_timeout_ms=request.rebalance_timeout_ms,
        subscribed_topic_names=None if names is None else tuple(names),
        # v1; "" (librdkafka sends it beside topic names) is no regex, as Kafka reads it.
        subscribed_topic_regex=request.subscribed_topic_regex if ctx.api_version >= 1 else None,
        server_assignor=request.server_assignor,
        owned=owned,
        client_id=ctx.client_id or "",
        client_host=client_host(ctx),
    )


def _response(result: HeartbeatResult) -> R:
    assignment = None
    if result.assignment is not None:
        assignment = R.Assignment(
            topic_partitions=[
                R.TopicPartitions(topic_id=topic_id, partitions=sorted(parts))
                for topic_id, parts in sorted(result.assignment.items())
                if parts
            ]
        )
    return R(
        member_id=result.member_id,
        member_epoch=result.member_epoch,
        heartbeat_interval_ms=result.heartbeat_interval_ms,
        assignment=assignment,
    )


async def handle_consumer_group_heartbeat(ctx: RequestContext, request: m.ConsumerGroupHeartbeatRequest) -> R:
    groups = coordinator(ctx)
    if groups is None:
        return R(error_code=NOT_AVAILABLE)
    refused = invalid(request, ctx.api_version, groups.consumer_config.assignors)
    if refused is not None:
        return R(error_code=refused[0], error_message=refused[1])
    if not may_read_group(ctx, request.group_id):
        return R(error_code=GROUP_DENIED)
    names = request.subscribed_topic_names or []
    denied = set(names) - filter_authorized(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, names)
    if denied:
        return R(
            error_code=int(ErrorCode.TOPIC_AUTHORIZATION_FAILED),
            error_message=f"Not authorized to describe {len(denied)} of the subscribed topics.",
        )
    code, message, result = await groups.consumer_group_heartbeat(request.group_id, _request(ctx, request))
    if result is None:
        return R(error_code=code, error_message=message)
    return _response(result)


HANDLER = ApiHandler(
    api_key=m.ConsumerGroupHeartbeatRequest.API_KEY,
    min_version=0,
    max_version=1,
    handle=handle_consumer_group_heartbeat,
)
