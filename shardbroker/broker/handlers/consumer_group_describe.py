"""ConsumerGroupDescribe (api key 69), v0: groups of the consumer protocol (KIP-848) with their
epochs, assignor and members, each member's current and target assignment (topic ids and names).

As Kafka: a group that does not exist or is a classic group is GROUP_ID_NOT_FOUND (clients then
fall back to DescribeGroups); an empty group id is INVALID_GROUP_ID; without DESCRIBE on the group,
GROUP_AUTHORIZATION_FAILED; ``include_authorized_operations`` answers the principal's operations on
each group described. Partitions of a topic deleted since are left out (no name to give them).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from shardbroker.broker.auth_helper import NOT_REQUESTED, authorize, authorized_operations
from shardbroker.broker.consumer_group import Assignment, ConsumerGroup
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._groups import GROUP_DENIED, NOT_AVAILABLE, coordinator
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

R = m.ConsumerGroupDescribeResponse


def _assignment(assignment: Assignment, names: Mapping[uuid.UUID, str]) -> R.Assignment:
    return R.Assignment(
        topic_partitions=[
            R.TopicPartitions(topic_id=topic_id, topic_name=names[topic_id], partitions=sorted(parts))
            for topic_id, parts in sorted(assignment.items())
            if parts and topic_id in names
        ]
    )


def describe_group(cg: ConsumerGroup, names: Mapping[uuid.UUID, str], ops: int) -> R.DescribedGroup:
    """One group's answer (also what ``shardbroker groups describe`` prints)."""
    return R.DescribedGroup(
        group_id=cg.group_id,
        group_state=cg.state.value,
        group_epoch=cg.group_epoch,
        assignment_epoch=cg.assignment_epoch,
        assignor_name=cg.preferred_assignor(),
        members=[
            R.Member(
                member_id=mem.member_id,
                instance_id=mem.instance_id,
                rack_id=mem.rack_id,
                member_epoch=mem.member_epoch,
                client_id=mem.client_id,
                client_host=mem.client_host,
                subscribed_topic_names=list(mem.subscribed_topic_names),
                subscribed_topic_regex=mem.subscribed_topic_regex,
                assignment=_assignment(mem.assigned, names),
                target_assignment=_assignment(cg.target.get(mem.member_id, {}), names),
            )
            for mem in sorted(cg.members.values(), key=lambda mem: mem.member_id)
        ],
        authorized_operations=ops,
    )


def _describe(ctx: RequestContext, group_id: str, with_ops: bool) -> R.DescribedGroup:
    if not group_id:
        return R.DescribedGroup(group_id=group_id, error_code=int(ErrorCode.INVALID_GROUP_ID))
    if not authorize(ctx, AclOperation.DESCRIBE, ResourceType.GROUP, group_id):
        return R.DescribedGroup(group_id=group_id, error_code=GROUP_DENIED)
    groups = coordinator(ctx)
    if groups is None:
        return R.DescribedGroup(group_id=group_id, error_code=NOT_AVAILABLE)
    code, cg = groups.consumer_group(group_id)
    if cg is None:
        message = f"Group {group_id} not found." if code == ErrorCode.GROUP_ID_NOT_FOUND else None
        return R.DescribedGroup(group_id=group_id, error_code=code, error_message=message)
    names = {t.topic_id: t.name for t in ctx.worker.image.topics.values()}
    ops = authorized_operations(ctx, ResourceType.GROUP, group_id) if with_ops else NOT_REQUESTED
    return describe_group(cg, names, ops)


async def handle_consumer_group_describe(ctx: RequestContext, request: m.ConsumerGroupDescribeRequest) -> R:
    return R(groups=[_describe(ctx, g, request.include_authorized_operations) for g in request.group_ids])


def consumer_group_describe_error_response(
    request: m.ConsumerGroupDescribeRequest, version: int, code: ErrorCode, message: str
) -> R:
    return R(groups=[R.DescribedGroup(group_id=g, error_code=int(code)) for g in request.group_ids])


HANDLER = ApiHandler(
    api_key=m.ConsumerGroupDescribeRequest.API_KEY,
    min_version=0,
    max_version=0,
    handle=handle_consumer_group_describe,
    error_response=consumer_group_describe_error_response,
)
