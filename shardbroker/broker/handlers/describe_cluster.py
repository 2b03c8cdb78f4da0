"""DescribeCluster (api key 60), v0-v1: cluster id, controller id and the workers as brokers.

Brokers are the workers (node id, advertised host, port + i) on the request's listener, as in
Metadata. v1's endpoint type
(KIP-919): 1 (brokers) is answered; 2 (controllers) is MISMATCHED_ENDPOINT_TYPE (114) -- our
controller has no Kafka endpoint, as a broker answers in Kafka; anything else is
UNSUPPORTED_ENDPOINT_TYPE (115). The authorized operations asked for are, as Kafka, those the
principal may do on the CLUSTER if it may DESCRIBE it, else none (0); every cluster operation
without an authorizer.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster, authorized_operations
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import CLUSTER_NAME, AclOperation, ResourceType

__all__ = ["HANDLER"]

_ENDPOINT_BROKERS = 1
_ENDPOINT_CONTROLLERS = 2


async def handle(ctx: RequestContext, request: m.DescribeClusterRequest) -> m.DescribeClusterResponse:
    version = ctx.api_version
    if version >= 1 and request.endpoint_type != _ENDPOINT_BROKERS:
        mismatched = request.endpoint_type == _ENDPOINT_CONTROLLERS
        return m.DescribeClusterResponse(
            error_code=ErrorCode.MISMATCHED_ENDPOINT_TYPE
            if mismatched
            else ErrorCode.UNSUPPORTED_ENDPOINT_TYPE,
            error_message=(
                "The controller has no Kafka endpoint: ask brokers (endpoint type 1)"
                if mismatched
                else f"Unsupported endpoint type {request.endpoint_type}"
            ),
            endpoint_type=request.endpoint_type,
        )
    image = ctx.worker.image
    response = m.DescribeClusterResponse(
        cluster_id=image.cluster_id,
        controller_id=image.controller_id,
        brokers=[
            m.DescribeClusterResponse.DescribeClusterBroker(
                broker_id=b.node_id, host=b.host, port=b.port, rack=None
            )
            for b in image.brokers_on(ctx.session.listener)
        ],
    )
    if request.include_cluster_authorized_operations:
        response.cluster_authorized_operations = (
            authorized_operations(ctx, ResourceType.CLUSTER, CLUSTER_NAME)
            if authorize_cluster(ctx, AclOperation.DESCRIBE)
            else 0
        )
    return response


HANDLER = ApiHandler(api_key=60, min_version=0, max_version=1, handle=handle)
