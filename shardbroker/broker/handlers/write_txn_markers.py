"""WriteTxnMarkers (api key 27), v0-v1: write COMMIT/ABORT markers into partitions (Kafka's
inter-broker API, also what ``kafka-transactions.sh abort`` sends through the admin client).

CLUSTER_ACTION on the cluster is required, as KafkaApis (else every partition is
CLUSTER_AUTHORIZATION_FAILED). A partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION;
the others get their marker wherever they are led (broker/txn_markers.py: here, or through the
rings to the owner), with the log's checks (INVALID_PRODUCER_EPOCH,
TRANSACTION_COORDINATOR_FENCED). Kafka answers NOT_LEADER_OR_FOLLOWER for a partition led
elsewhere; any worker accepts it here, as any worker accepts Produce (forwarding).
"""

from __future__ import annotations

from typing import Final

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.broker.txn_markers import MarkerWriter, TxnMarker
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_Rs = m.WriteTxnMarkersResponse
#: Seconds a marker may wait for its partition's owner (Kafka's request.timeout.ms).
MARKER_TIMEOUT_S: Final = 30.0


def _response(request: m.WriteTxnMarkersRequest, codes: list[dict[tuple[str, int], int]]) -> _Rs:
    markers = []
    for marker, by_partition in zip(request.markers, codes, strict=True):
        topics = []
        for t in marker.topics:
            results = [
                _Rs.WritableTxnMarkerPartitionResult(partition_index=i, error_code=by_partition[(t.name, i)])
                for i in t.partition_indexes
            ]
            topics.append(_Rs.WritableTxnMarkerTopicResult(name=t.name, partitions=results))
        markers.append(_Rs.WritableTxnMarkerResult(producer_id=marker.producer_id, topics=topics))
    return _Rs(markers=markers)


async def handle_write_txn_markers(ctx: RequestContext, request: m.WriteTxnMarkersRequest) -> _Rs:
    if not authorize_cluster(ctx, AclOperation.CLUSTER_ACTION):
        return write_txn_markers_error_response(
            request, ctx.api_version, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, ""
        )
    worker = ctx.worker
    topics = worker.image.topics
    writer = MarkerWriter(worker.node_id, worker.replicas, worker.forwarder)
    codes: list[dict[tuple[str, int], int]] = []
    for marker in request.markers:
        partitions = {(t.name, i) for t in marker.topics for i in t.partition_indexes}
        unknown = {(t, i) for t, i in partitions if t not in topics or topics[t].partition(i) is None}
        written = await writer.write_all(
            partitions - unknown,
            TxnMarker(
                marker.producer_id, marker.producer_epoch, marker.coordinator_epoch, marker.transaction_result
            ),
            MARKER_TIMEOUT_S,
        )
        codes.append(written | dict.fromkeys(unknown, int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)))
    return _response(request, codes)


def write_txn_markers_error_response(
    request: m.WriteTxnMarkersRequest, version: int, code: ErrorCode, message: str
) -> _Rs:
    return _response(
        request,
        [
            dict.fromkeys(((t.name, i) for t in mk.topics for i in t.partition_indexes), int(code))
            for mk in request.markers
        ],
    )


HANDLER = ApiHandler(
    api_key=m.WriteTxnMarkersRequest.API_KEY,
    min_version=0,
    max_version=1,
    handle=handle_write_txn_markers,
    error_response=write_txn_markers_error_response,
)
