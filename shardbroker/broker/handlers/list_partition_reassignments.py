"""ListPartitionReassignments (api key 46), v0: the partition moves in progress.

The controller keeps them between a move's two steps (control/controller.py), so it answers; a move is
listed with ``replicas`` = its target, ``adding_replicas`` = [target] and ``removing_replicas`` =
[the old owner]. Moves take milliseconds, so the list is usually empty. A topic filter lists only
those topics (and partition indexes) that are moving; unknown names are simply not listed, as Kafka.
"""

from __future__ import annotations

from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.handlers._common import controller_timeout
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["HANDLER"]

_Resp = m.ListPartitionReassignmentsResponse


async def handle(ctx: RequestContext, request: m.ListPartitionReassignmentsRequest) -> _Resp:
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


HANDLER = ApiHandler(api_key=46, min_version=0, max_version=0, handle=handle)
