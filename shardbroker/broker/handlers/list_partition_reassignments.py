"""ListPartitionReassignments (api key 46), v0: the partition moves in progress.

The controller keeps them between a move's two steps (control/controller.py), so it answers; a move is
listed with ``replicas`` = its target, ``adding_replicas`` = [target] and ``removing_replicas`` =
[the old owner]. Moves take milliseconds, so the list is usually empty. A topic filter lists only
those topics (and partition indexes) that are moving; unknown names are simply not listed, as Kafka.
Without DESCRIBE on the CLUSTER: CLUSTER_AUTHORIZATION_FAILED (Kafka's error answer, which lists
the partitions asked for with no replicas).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import DENIED, authorize_cluster
from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_timeout
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER"]

_Resp = m.ListPartitionReassignmentsResponse


async def handle(ctx: RequestContext, request: m.ListPartitionReassignmentsRequest) -> _Resp:
    if not authorize_cluster(ctx, AclOperation.DESCRIBE):
        return error_response(request, ctx.api_version, *DENIED[ResourceType.CLUSTER])
    try:
        result = await ctx.worker.channel.request(
            "list_moves", {}, timeout=controller_timeout(request.timeout_ms)
        )
    except ControllerUnavailable as exc:
        return _Resp(error_code=int(ErrorCode.REQUEST_TIMED_OUT), error_message=str(exc), topics=[])
    except ControllerRequestError as exc:
        return _Resp(error_code=exc.error_code, error_message=str(exc), topics=[])
    wanted: dict[str, set[int]] | None = None
    if request.topics is not None:
        wanted = {t.name: set(t.partition_indexes) for t in request.topics}
    by_topic: dict[str, list[_Resp.OngoingPartitionReassignment]] = {}
    for move in result.get("moves", []):
        name, index = move["topic"], move["partition"]
        if wanted is not None and index not in wanted.get(name, ()):
            continue
        by_topic.setdefault(name, []).append(
            _Resp.OngoingPartitionReassignment(
                partition_index=index,
                replicas=[move["to"]],
                adding_replicas=[move["to"]],
                removing_replicas=[move["from"]],
            )
        )
    return _Resp(
        error_code=0,
        error_message=None,
        topics=[_Resp.OngoingTopicReassignment(name=n, partitions=ps) for n, ps in sorted(by_topic.items())],
    )


def error_response(
    request: m.ListPartitionReassignmentsRequest, version: int, code: ErrorCode, message: str
) -> _Resp:
    """Kafka's ListPartitionReassignmentsRequest.getErrorResponse: the error at the top, and the
    partitions asked for listed with no replicas."""
    return _Resp(
        error_code=int(code),
        error_message=message,
        topics=[
            _Resp.OngoingTopicReassignment(
                name=t.name,
                partitions=[
                    _Resp.OngoingPartitionReassignment(
                        partition_index=i, replicas=[], adding_replicas=[], removing_replicas=[]
                    )
                    for i in t.partition_indexes
                ],
            )
            for t in request.topics or []
        ],
    )


HANDLER = ApiHandler(api_key=46, min_version=0, max_version=0, handle=handle, error_response=error_response)
