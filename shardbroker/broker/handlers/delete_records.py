"""DeleteRecords (api key 21), v0-v2: move partitions' log start offsets forward.

Per partition, ``PartitionLog.delete_records``: offset -1 means the high watermark (Kafka's
DeleteRecordsRequest.HIGH_WATERMARK); an offset beyond the high watermark is
OFFSET_OUT_OF_RANGE (1); segments wholly below the new start are deleted at once (renamed, then
unlinked after ``file.delete.delay.ms``). The answer is the new low watermark (log start
offset). Single replica: nothing to wait for, so ``timeout_ms`` is not used.

Authorization, as KafkaApis: DELETE on each TOPIC, else TOPIC_AUTHORIZATION_FAILED (29) for its
partitions, before their existence is looked at.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import filter_authorized
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.storage.errors import StorageError

__all__ = ["HANDLER", "handle_delete_records"]

_R = m.DeleteRecordsResponse.DeleteRecordsPartitionResult


async def handle_delete_records(
    ctx: RequestContext, request: m.DeleteRecordsRequest
) -> m.DeleteRecordsResponse:
    replicas = ctx.worker.replicas
    allowed = filter_authorized(
        ctx, AclOperation.DELETE, ResourceType.TOPIC, (t.name for t in request.topics)
    )
    topics = []
    for t in request.topics:
        out = []
        for rp in t.partitions:
            resp = _R(partition_index=rp.partition_index, low_watermark=-1)
            p = replicas.get(t.name, rp.partition_index)
            if t.name not in allowed:
                resp.error_code = ErrorCode.TOPIC_AUTHORIZATION_FAILED
            elif p is None:
                resp.error_code = replicas.not_here_error(t.name, rp.partition_index)
            else:
                try:
                    resp.low_watermark = p.log.delete_records(rp.offset)
                    p.refresh_log_gauges()
                except StorageError as exc:
                    resp.error_code = exc.error_code
            out.append(resp)
        topics.append(m.DeleteRecordsResponse.DeleteRecordsTopicResult(name=t.name, partitions=out))
    return m.DeleteRecordsResponse(topics=topics)


def delete_records_error_response(
    request: m.DeleteRecordsRequest, version: int, code: ErrorCode, message: str
) -> m.DeleteRecordsResponse:
    return m.DeleteRecordsResponse(
        topics=[
            m.DeleteRecordsResponse.DeleteRecordsTopicResult(
                name=t.name,
                partitions=[
                    _R(partition_index=rp.partition_index, low_watermark=-1, error_code=int(code))
                    for rp in t.partitions
                ],
            )
            for t in request.topics
        ]
    )


HANDLER = ApiHandler(
    api_key=m.DeleteRecordsRequest.API_KEY,
    min_version=0,
    max_version=2,
    handle=handle_delete_records,
    error_response=delete_records_error_response,
)
