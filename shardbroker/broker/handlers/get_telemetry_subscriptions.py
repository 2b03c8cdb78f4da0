"""GetTelemetrySubscriptions (api key 71, KIP-714), v0: a client instance's metrics subscription.

The rules (instance ids, subscription ids, throttling) are broker/client_metrics.py's; this
answers with the subscription: its id, the prefixes to push (empty: none; one empty string:
all), the push interval, ``telemetry.max.bytes``, delta temporality (always, as Kafka) and the
accepted compression types in Kafka's order of preference (zstd, lz4, gzip, snappy). No ACL
check, as Kafka: every client may ask.
"""

from __future__ import annotations

from shardbroker.broker.client_metrics import ACCEPTED_COMPRESSION_TYPES, TelemetryRefusal
from shardbroker.broker.client_telemetry import attributes_of
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.metadata.client_metrics import ALL_METRICS
from shardbroker.protocol import messages as m

__all__ = ["HANDLER"]


async def handle(
    ctx: RequestContext, request: m.GetTelemetrySubscriptionsRequest
) -> m.GetTelemetrySubscriptionsResponse:
    telemetry = ctx.worker.telemetry
    telemetry.update(ctx.worker.image.client_metrics)
    try:
        inst = telemetry.manager.get_subscriptions(
            request.client_instance_id, attributes_of(ctx.client_id, ctx.peer, ctx.session)
        )
    except TelemetryRefusal as exc:
        return m.GetTelemetrySubscriptionsResponse(error_code=exc.error_code)
    return m.GetTelemetrySubscriptionsResponse(
        client_instance_id=inst.instance_id,
        subscription_id=inst.subscription_id,
        accepted_compression_types=[int(c) for c in ACCEPTED_COMPRESSION_TYPES],
        push_interval_ms=inst.push_interval_ms,
        telemetry_max_bytes=telemetry.manager.max_bytes,
        delta_temporality=True,
        requested_metrics=["" if p == ALL_METRICS else p for p in inst.metrics],
    )


HANDLER = ApiHandler(
    api_key=m.GetTelemetrySubscriptionsRequest.API_KEY, min_version=0, max_version=0, handle=handle
)
