"""Client metrics pushed by clients (KIP-714) on /metrics (a `MetricsCollector.add_source` source).

Each worker keeps the ``EXPORTED`` metrics of its clients' pushes (broker/client_telemetry.py)
and publishes them through ipc/client_telemetry.py; this turns them into families named
``shardbroker_client_<name>`` with one label, ``client_id`` (the client.id of the pushing
connection). A client id seen by two workers (instances pushing to different workers) is
combined as each worker combines its instances: by the metric's ``how``. Per worker:
``shardbroker_client_telemetry_instances`` (client instances known) and
``shardbroker_client_telemetry_unexported_pushes_total`` (pushes accepted but not exported, past
the cap of client ids). Cardinality: at most 100 client ids per worker times ``EXPORTED``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shardbroker.ipc.client_telemetry import ClientTelemetryTable

__all__ = ["EXPORTED", "ClientTelemetrySource", "ExportedMetric", "combine"]


@dataclass(frozen=True, slots=True)
class ExportedMetric:
    """One client metric on /metrics: ``shardbroker_client_<name>``; ``how`` combines data points
    (one per broker node, topic or partition) and instances: "sum", "mean", "max", or "delta" (a
    delta sum, accumulated into a counter); values are multiplied by ``scale`` (clients report
    milliseconds; Prometheus wants seconds)."""

    name: str
    help: str
    how: str
    scale: float = 1.0


_MS: Final = 0.001
_P: Final = "org.apache.kafka.producer."
_C: Final = "org.apache.kafka.consumer."

#: OTLP metric name -> how it is exported. What librdkafka 2.16 pushes (seen with
#: ``enable.metrics.push=true`` and ``metrics=*``: producer request latency, queue time, throttle
#: time, connections; consumer fetch and commit latency, assigned partitions, poll idle ratio),
#: plus the Java client's send rate and lag (KIP-714 names: ``org.apache.kafka.`` + the metric
#: group without ``-metrics`` + the metric name, dashes as dots). librdkafka pushes no send rate
#: and no lag.
EXPORTED: Final[Mapping[str, ExportedMetric]] = {
    _P + "request.latency.avg": ExportedMetric(
        "producer_request_latency_avg_seconds", "Produce request latency, client's average", "mean", _MS
    ),
    _P + "request.latency.max": ExportedMetric(
        "producer_request_latency_max_seconds", "Produce request latency, client's maximum", "max", _MS
    ),
    _P + "record.queue.time.avg": ExportedMetric(
        "producer_record_queue_time_avg_seconds",
        "Time records wait in the producer queue, average",
        "mean",
        _MS,
    ),
    _P + "record.queue.time.max": ExportedMetric(
        "producer_record_queue_time_max_seconds",
        "Time records wait in the producer queue, maximum",
        "max",
        _MS,
    ),
    _P + "produce.throttle.time.avg": ExportedMetric(
        "producer_throttle_time_avg_seconds", "Produce throttle time the client saw, average", "mean", _MS
    ),
    _P + "record.send.rate": ExportedMetric(
        "producer_record_send_rate", "Records sent per second (Java client)", "sum"
    ),
    _P + "record.error.rate": ExportedMetric(
        "producer_record_error_rate", "Records failed per second (Java client)", "sum"
    ),
    _P + "connection.creation.total": ExportedMetric(
        "producer_connection_creations_total", "Connections the producer opened", "delta"
    ),
    _C + "fetch.manager.fetch.latency.avg": ExportedMetric(
        "consumer_fetch_latency_avg_seconds", "Fetch request latency, client's average", "mean", _MS
    ),
    _C + "fetch.manager.fetch.latency.max": ExportedMetric(
        "consumer_fetch_latency_max_seconds", "Fetch request latency, client's maximum", "max", _MS
    ),
    _C + "fetch.manager.records.lag": ExportedMetric(
        "consumer_records_lag",
        "Records behind the high watermark, summed over partitions (Java client)",
        "sum",
    ),
    _C + "fetch.manager.records.lag.max": ExportedMetric(
        "consumer_records_lag_max", "Largest lag of a partition (Java client)", "max"
    ),
    _C + "fetch.manager.records.consumed.rate": ExportedMetric(
        "consumer_records_consumed_rate", "Records consumed per second (Java client)", "sum"
    ),
    _C + "coordinator.assigned.partitions": ExportedMetric(
        "consumer_assigned_partitions", "Partitions assigned to the consumer", "sum"
    ),
    _C + "coordinator.commit.latency.avg": ExportedMetric(
        "consumer_commit_latency_avg_seconds", "Offset commit latency, client's average", "mean", _MS
    ),
    _C + "poll.idle.ratio.avg": ExportedMetric(
        "consumer_poll_idle_ratio", "Share of time the consumer waits in poll", "mean"
    ),
    _C + "connection.creation.total": ExportedMetric(
        "consumer_connection_creations_total", "Connections the consumer opened", "delta"
    ),
}
_BY_NAME: Final = {spec.name: spec for spec in EXPORTED.values()}


def combine(how: str, values: list[float]) -> float:
    if how == "max":
        return max(values)
    if how == "mean":
        return sum(values) / len(values)
    return sum(values)


class ClientTelemetrySource:
    """The ``shardbroker_client_*`` families, read from the workers' documents at each scrape."""

    def __init__(self, table: ClientTelemetryTable) -> None:
        self.table = table

    def __call__(self) -> Iterator[Metric]:
        documents = self.table.documents()
        instances = GaugeMetricFamily(
            "shardbroker_client_telemetry_instances",
            "Client instances (KIP-714) the worker knows: asked for a subscription or pushed lately",
            labels=["worker"],
        )
        unexported = CounterMetricFamily(
            "shardbroker_client_telemetry_unexported_pushes",
            "Client metrics pushes accepted but not exported: more client ids than the cap",
            labels=["worker"],
        )
        gathered: dict[str, dict[str, list[float]]] = {}
        for worker, doc in documents:
            instances.add_metric([str(worker)], float(doc.get("instances", 0)))
            unexported.add_metric([str(worker)], float(doc.get("unexported", 0)))
            for client_id, values in doc.get("clients", {}).items():
                for name, value in values.items():
                    if name in _BY_NAME:
                        gathered.setdefault(name, {}).setdefault(client_id, []).append(float(value))
        yield instances
        yield unexported
        for name, spec in _BY_NAME.items():
            family: GaugeMetricFamily | CounterMetricFamily
            if spec.how == "delta":
                family = CounterMetricFamily(f"shardbroker_client_{name}", spec.help, labels=["client_id"])
            else:
                family = GaugeMetricFamily(f"shardbroker_client_{name}", spec.help, labels=["client_id"])
            for client_id, values in sorted(gathered.get(name, {}).items()):
                family.add_metric([client_id], combine(spec.how, values))
            yield family
