"""AlterPartitionReassignments (api key 45), v0: move partitions between workers.

A partition's replica set on this broker is its owning worker (node id = worker index), so a
reassignment to ``[W]`` moves the partition to worker W: the controller takes it from its owner,
which hands the log over on the same disk (no copy), then gives it to W with leader epoch + 1
(control/controller.py, "Partition moves"). Kafka answers at once and finishes in the background; a move
here takes milliseconds, so the answer comes when it is complete and every worker serves the
new placement: after it, Metadata shows the new leader.

Per partition: INVALID_REPLICA_ASSIGNMENT (39) for a replica list that is not exactly one existing
node, or a partition of an internal topic; UNKNOWN_TOPIC_OR_PARTITION (3); REASSIGNMENT_IN_PROGRESS
(60) for a partition already moving; NO_REASSIGNMENT_IN_PROGRESS (85) for a cancel (null replicas)
when none runs. A move to the current owner succeeds and changes nothing. Without ALTER on the
CLUSTER: CLUSTER_AUTHORIZATION_FAILED at the top and for every partition (Kafka's error answer).
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

_Resp = m.AlterPartitionReassignmentsResponse
_PartitionResult = _Resp.ReassignablePartitionResponse


def _refusal(replicas: list[int] | None) -> str | None:
    if replicas is not None and len(replicas) != 1:
        return (
            f"Replicas {replicas}: every partition has exactly one replica here, its owning worker; "
            "give one node id (= worker) to move it there."
        )
    return None


async def handle(ctx: RequestContext, request: m.AlterPartitionReassignmentsRequest) -> _Resp:
    if not authorize_cluster(ctx, AclOperation.ALTER):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    asked: list[dict[str, Any]] = []
    answers: dict[tuple[str, int], dict[str, Any]] = {}
    for topic in request.topics:
        for p in topic.partitions:
            why = _refusal(p.replicas)
            if why is not None:
                answers[(topic.name, p.partition_index)] = {
                    "error_code": int(ErrorCode.INVALID_REPLICA_ASSIGNMENT),
                    "error_message": why,
                }
                continue
            to = None if p.replicas is None else p.replicas[0]
            asked.append({"topic": topic.name, "partition": p.partition_index, "to": to})
    results = await controller_items(
        ctx,
        "move_partitions",
        {"partitions": asked},
        "partitions",
        len(asked),
        controller_timeout(request.timeout_ms),
    )
    for item, result in zip(asked, results, strict=True):
        answers[(item["topic"], item["partition"])] = result
    return _Resp(
        responses=[
            _Resp.ReassignableTopicResponse(
                name=topic.name,
                partitions=[
                    _result(p.partition_index, answers[(topic.name, p.partition_index)])
                    for p in topic.partitions
                ],
            )
            for topic in request.topics
        ]
    )


def _result(index: int, answer: dict[str, Any]) -> _PartitionResult:
    code = int(answer.get("error_code") or 0)
    return _PartitionResult(
        partition_index=index, error_code=code, error_message=answer.get("error_message") if code else None
    )


def error_response(
    request: m.AlterPartitionReassignmentsRequest, version: int, code: ErrorCode, message: str
) -> _Resp:
    """Kafka's AlterPartitionReassignmentsRequest.getErrorResponse: the error at the top and for
    every partition asked."""
    return _Resp(
        error_code=int(code),
        error_message=message,
        responses=[
            _Resp.ReassignableTopicResponse(
                name=t.name,
                partitions=[
                    _PartitionResult(
                        partition_index=p.partition_index, error_code=int(code), error_message=message
                    )
                    for p in t.partitions
                ],
            )
            for t in request.topics
        ],
    )


HANDLER = ApiHandler(api_key=45, min_version=0, max_version=0, handle=handle, error_response=error_response)
