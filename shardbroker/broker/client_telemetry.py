"""What a worker does with pushed client telemetry (KIP-714): decode it, keep a few metrics, publish.

`decode_metrics` turns a PushTelemetry payload into OTLP ``MetricsData``: decompressed with the
record batch codecs (protocol/compression.py) into at most ``telemetry.max.bytes`` (beyond:
TELEMETRY_TOO_LARGE, as Kafka 4.x), then parsed by the ``opentelemetry-proto`` classes
(protobuf's C parser; imported at the first push, so a broker nobody pushes to never loads it:
30 ms). Anything that does not decompress or parse is INVALID_RECORD and nothing is kept.

`TelemetryExporter` keeps only the metrics of ``EXPORTED`` (the client's view of its own
traffic: send rates, request latency, queue time, lag...), by the client id of the pushing
connection, and publishes them for /metrics (ipc/client_telemetry.py -> observability/
client_telemetry.py, ``shardbroker_client_*{client_id}``). Per client id, over its live
instances and the data points of a metric (one per broker node, topic or partition): rates,
counts and lag are summed, averages averaged, maxima maxed; delta sums (the temporality we ask
for) accumulate into counters. Bounded: at most ``MAX_CLIENT_IDS`` client ids per worker, first
come first served (a client id of more than ``MAX_CLIENT_ID_LENGTH`` characters is never
exported); a push beyond them is accepted and counted as not exported
(``shardbroker_client_telemetry_unexported_pushes_total``). A client id's series go when its
last instance expires (broker/client_metrics.py: 3 push intervals, at least 60 s, unseen).

Cost: 140 us of worker CPU per push (median of 5 x 1,000 pushes, 140-150, a zstd'd librdkafka-like
payload, the whole request path): 1,000 clients pushing once a minute take 0.23 % of a core
(``python -m perf.bench_telemetry``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from shardbroker.broker.client_metrics import (
    ClientAttributes,
    ClientInstance,
    ClientMetricsManager,
    TelemetryRefusal,
)
from shardbroker.ipc.client_telemetry import WorkerClientTelemetry
from shardbroker.observability.client_telemetry import EXPORTED, combine
from shardbroker.protocol.compression import CompressionError, DecompressedTooLarge, decompress
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric, MetricsData

    from shardbroker.broker.session import ConnectionSession

__all__ = [
    "MAX_CLIENT_IDS",
    "ClientTelemetry",
    "TelemetryExporter",
    "attributes_of",
    "decode_metrics",
]

#: Client ids exported per worker (each with up to len(EXPORTED) series).
MAX_CLIENT_IDS: Final = 100
MAX_CLIENT_ID_LENGTH: Final = 255


def attributes_of(client_id: str | None, peer: str, session: ConnectionSession) -> ClientAttributes:
    """The match attributes of the asking connection (Kafka's ClientMetricsInstanceMetadata):
    its request header's client id, its ``host:port`` and what its ApiVersions said."""
    host, _, port = peer.rpartition(":")
    return ClientAttributes(
        client_id=client_id,
        software_name=session.client_software_name,
        software_version=session.client_software_version,
        source_address=host or None,
        source_port=port or None,
    )


def decode_metrics(compression: int, payload: bytes, max_bytes: int) -> MetricsData:
    """The OTLP MetricsData of a push, or TelemetryRefusal (TELEMETRY_TOO_LARGE, INVALID_RECORD)."""
    from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
    from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData

    try:
        data = decompress(compression, payload, max_size=max_bytes)
    except DecompressedTooLarge as exc:
        raise TelemetryRefusal(ErrorCode.TELEMETRY_TOO_LARGE, str(exc)) from None
    except CompressionError as exc:
        raise TelemetryRefusal(ErrorCode.INVALID_RECORD, f"telemetry payload: {exc}") from None
    try:
        return cast("MetricsData", MetricsData.FromString(data))
    except DecodeError as exc:
        raise TelemetryRefusal(ErrorCode.INVALID_RECORD, f"telemetry payload is not OTLP: {exc}") from None


def _values(metric: Metric) -> tuple[list[float], bool]:
    """(the numeric data points' values, whether they are deltas of a sum)."""
    kind = metric.WhichOneof("data")
    if kind == "gauge":
        points = metric.gauge.data_points
        delta = False
    elif kind == "sum":
        points = metric.sum.data_points
        delta = metric.sum.aggregation_temporality == 1  # AGGREGATION_TEMPORALITY_DELTA
    else:
        return [], False
    return [p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int) for p in points], delta


@dataclass(slots=True)
class _ClientSeries:
    """One exported client id: the latest values of its instances, its accumulated deltas."""

    instances: dict[uuid.UUID, dict[str, float]] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)


class TelemetryExporter:
    """The exported series of one worker (see the module docstring)."""

    def __init__(self, table: WorkerClientTelemetry | None = None) -> None:
        self.table = table if table is not None else WorkerClientTelemetry.private()
        self.clients: dict[str, _ClientSeries] = {}
        self.unexported = 0
        self.instances = 0
        self._dirty = True

    def _series(self, client_id: str | None) -> _ClientSeries | None:
        if client_id is None or len(client_id) > MAX_CLIENT_ID_LENGTH:
            return None
        series = self.clients.get(client_id)
        if series is None and len(self.clients) < MAX_CLIENT_IDS:
            series = self.clients[client_id] = _ClientSeries()
        return series

    def export(self, inst: ClientInstance, data: MetricsData) -> None:
        """Keep the ``EXPORTED`` metrics of one decoded push."""
        series = self._series(inst.attributes.client_id)
        if series is None:
            self.unexported += 1
            self._dirty = True
            return
        latest = series.instances.setdefault(inst.instance_id, {})
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    spec = EXPORTED.get(metric.name)
                    if spec is None:
                        continue
                    values, delta = _values(metric)
                    if not values:
                        continue
                    value = combine(spec.how, values) * spec.scale
                    if spec.how == "delta":
                        if delta:
                            series.totals[spec.name] = series.totals.get(spec.name, 0.0) + value
                    else:
                        latest[spec.name] = value
        self._dirty = True

    def forget(self, inst: ClientInstance) -> None:
        """An instance expired: its values go; its client id's go with its last instance."""
        client_id = inst.attributes.client_id
        series = self.clients.get(client_id) if client_id is not None else None
        if series is not None and series.instances.pop(inst.instance_id, None) is not None:
            if not series.instances:
                del self.clients[client_id]  # type: ignore[arg-type]
            self._dirty = True

    def document(self) -> dict[str, Any]:
        """What is published: per client id, each exported value combined over its instances."""
        hows = {spec.name: spec.how for spec in EXPORTED.values()}
        clients: dict[str, dict[str, float]] = {}
        for client_id, series in self.clients.items():
            gathered: dict[str, list[float]] = {}
            for values in series.instances.values():
                for name, value in values.items():
                    gathered.setdefault(name, []).append(value)
            out = {name: combine(hows[name], vals) for name, vals in gathered.items()}
            out.update(series.totals)
            clients[client_id] = out
        return {"clients": clients, "instances": self.instances, "unexported": self.unexported}

    def publish(self, instances: int) -> None:
        """Write the document if anything changed (the worker's 1 s tick)."""
        if instances != self.instances:
            self.instances = instances
            self._dirty = True
        if self._dirty:
            self.table.write(self.document())
            self._dirty = False


class ClientTelemetry:
    """A worker's telemetry: the instances and their rules (``manager``) and the exporter."""

    def __init__(self, max_bytes: int, table: WorkerClientTelemetry | None = None) -> None:
        self.exporter = TelemetryExporter(table)
        self.manager = ClientMetricsManager(max_bytes, on_forget=self.exporter.forget)

    def update(self, resources: Mapping[str, Mapping[str, str]]) -> None:
        self.manager.update(resources)

    def push(
        self,
        instance_id: uuid.UUID,
        attributes: ClientAttributes,
        subscription: int,
        terminating: bool,
        compression: int,
        payload: bytes,
    ) -> None:
        """PushTelemetry: the checks, then the payload decoded and exported; TelemetryRefusal."""
        manager = self.manager
        inst = manager.check_push(
            instance_id, attributes, subscription, terminating, compression, len(payload)
        )
        if not payload:
            return
        try:
            data = decode_metrics(compression, payload, manager.max_bytes)
        except TelemetryRefusal as exc:
            inst.last_error = exc.error_code
            raise
        self.exporter.export(inst, data)

    def publish(self) -> None:
        """The 1 s tick: expire unseen instances, publish the exported series if they changed."""
        self.manager.expire(self.manager.now_ms())
        self.exporter.publish(len(self.manager.instances))
