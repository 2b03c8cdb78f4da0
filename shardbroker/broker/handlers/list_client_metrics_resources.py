"""ListClientMetricsResources (api key 74, KIP-714), v0: the names of the client metrics resources.

From the metadata image (the controller records them: control/client_metrics_control.py), sorted.
As KafkaApis: DESCRIBE_CONFIGS on the CLUSTER, else CLUSTER_AUTHORIZATION_FAILED.
"""

from __future__ import annotations

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER"]

_R = m.ListClientMetricsResourcesResponse


async def handle(ctx: RequestContext, request: m.ListClientMetricsResourcesRequest) -> _R:
    if not authorize_cluster(ctx, AclOperation.DESCRIBE_CONFIGS):
        return _R(error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    names = sorted(ctx.worker.image.client_metrics)
    return _R(client_metrics_resources=[_R.ClientMetricsResource(name=n) for n in names])


HANDLER = ApiHandler(
    api_key=m.ListClientMetricsResourcesRequest.API_KEY, min_version=0, max_version=0, handle=handle
)
