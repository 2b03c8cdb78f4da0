"""PushTelemetry (api key 72, KIP-714), v0: a client's metrics, as OTLP MetricsData.

Checked before anything is decoded (broker/client_metrics.py, Kafka's order): a reserved
instance id or a push after a terminating one INVALID_REQUEST, too early
THROTTLING_QUOTA_EXCEEDED, a subscription id the instance was not given UNKNOWN_SUBSCRIPTION_ID,
an unknown compression type UNSUPPORTED_COMPRESSION_TYPE, more than ``telemetry.max.bytes``
TELEMETRY_TOO_LARGE. Then the payload is decompressed (at most ``telemetry.max.bytes`` out:
TELEMETRY_TOO_LARGE beyond, as Kafka 4.x) and parsed; data that is not OTLP is INVALID_RECORD,
as Kafka answers when its exporter fails, and nothing of it is kept (broker/client_telemetry.py).
An empty payload (a terminating push may carry none) is accepted without decoding. No ACL check,
as Kafka.
"""

from __future__ import annotations

from shardbroker.broker.client_metrics import TelemetryRefusal
from shardbroker.broker.client_telemetry import attributes_of
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.protocol import messages as m

__all__ = ["HANDLER"]


async def handle(ctx: RequestContext, request: m.PushTelemetryRequest) -> m.PushTelemetryResponse:
    telemetry = ctx.worker.telemetry
    telemetry.update(ctx.worker.image.client_metrics)
    try:
        telemetry.push(
            request.client_instance_id,
            attributes_of(ctx.client_id, ctx.peer, ctx.session),
            request.subscription_id,
            request.terminating,
            request.compression_type,
            request.metrics,
        )
    except TelemetryRefusal as exc:
        return m.PushTelemetryResponse(error_code=exc.error_code)
    return m.PushTelemetryResponse()


HANDLER = ApiHandler(api_key=m.PushTelemetryRequest.API_KEY, min_version=0, max_version=0, handle=handle)
