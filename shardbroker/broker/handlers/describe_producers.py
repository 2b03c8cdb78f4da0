"""DescribeProducers (api key 61, KIP-664), v0: the active producers of partitions led here.

From the partition's producer state (storage/producer_state.py): producer id, epoch, last
sequence, timestamp of the last batch or marker, epoch of the coordinator of the last marker,
and the first offset of the transaction open in the partition (-1: none): what
``kafka-transactions.sh find-hanging`` and ``abort`` need. As KafkaApis: an illegal topic name is
INVALID_TOPIC_EXCEPTION, then READ on the TOPIC (else TOPIC_AUTHORIZATION_FAILED), then an unknown
topic UNKNOWN_TOPIC_OR_PARTITION, for every partition asked; a partition another worker leads is
NOT_LEADER_OR_FOLLOWER (clients send to the leader).
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.partition import Partition
from shardbroker.metadata.topic_names import validate_topic_name
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "active_producers", "handle_describe_producers"]

_R = m.DescribeProducersResponse
_NONE = int(ErrorCode.NONE)


def active_producers(p: Partition) -> list[_R.ProducerState]:
    """Every producer the partition's producer state holds, by producer id."""
    return [
        _R.ProducerState(
            producer_id=e.producer_id,
            producer_epoch=e.epoch,
            last_sequence=e.last_seq,
            last_timestamp=e.last_timestamp,
            coordinator_epoch=e.coordinator_epoch,
            current_txn_start_offset=e.current_txn_first_offset,
        )
        for _, e in sorted(p.log.producer_state.producers.items())
    ]


def _topic_error(ctx: RequestContext, name: str, allowed: set[str]) -> tuple[int, str | None]:
    why = validate_topic_name(name)
    if why is not None:
        return int(ErrorCode.INVALID_TOPIC_EXCEPTION), why
    if name not in allowed:
        return int(ErrorCode.TOPIC_AUTHORIZATION_FAILED), None
    if name not in ctx.worker.replicas.image.topics:
        return int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION), None
    return _NONE, None


async def handle_describe_producers(
    ctx: RequestContext, request: m.DescribeProducersRequest
) -> m.DescribeProducersResponse:
    replicas = ctx.worker.replicas
    allowed = filter_authorized(ctx, AclOperation.READ, ResourceType.TOPIC, (t.name for t in request.topics))
    topics = []
    for t in request.topics:
        code, message = _topic_error(ctx, t.name, allowed)
        partitions = []
        for index in t.partition_indexes:
            out = _R.PartitionResponse(partition_index=index, error_code=code, error_message=message)
            if code == _NONE:
                p = replicas.get(t.name, index)
                if p is None:
                    out.error_code = replicas.not_here_error(t.name, index)
                else:
                    out.active_producers = active_producers(p)
            partitions.append(out)
        topics.append(_R.TopicResponse(name=t.name, partitions=partitions))
    return m.DescribeProducersResponse(topics=topics)


HANDLER = ApiHandler(
    api_key=m.DescribeProducersRequest.API_KEY,
    min_version=0,
    max_version=0,
    handle=handle_describe_producers,
)
