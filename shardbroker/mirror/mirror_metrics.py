"""The mirror's Prometheus series, served on ``shardbroker mirror --metrics HOST:PORT``.

Names (docs/notes/mirror.md; the "Mirror" dashboard and the lag alert read them):
``shardbroker_mirror_records_total{topic}`` and ``shardbroker_mirror_bytes_total{topic}``
(records and batch bytes acknowledged by the target, by source topic),
``shardbroker_mirror_lag{topic,partition}`` (the source's end offset minus the next offset to
mirror), ``shardbroker_mirror_replication_latency_seconds`` (a batch's age when the target
acknowledged it), ``shardbroker_mirror_errors_total{kind}``,
``shardbroker_mirror_partitions_paused`` (partitions the target refused, e.g. MESSAGE_TOO_LARGE),
``shardbroker_mirror_checkpoints_total{group}`` and ``shardbroker_mirror_up`` (1 while running).

Cardinality is the mirrored topics and partitions and the checkpointed groups: bounded by the
``topics`` and ``groups`` filters, and a partition's lag series is removed with its topic.

Why a thread (``prometheus_client.start_http_server``) when the broker serves /metrics from its
event loop: the broker's supervisor forks workers, the mirror forks nothing; a daemon thread is
the plain way to answer a scrape while the mirror's loop is busy.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ERROR_KINDS", "LATENCY_BUCKETS", "MirrorMetrics"]

#: The ``kind`` label values: fetch and produce failures the loop retries, a producer reset
#: (sequence or epoch lost), a batch the target refused, a position save, a topic sync, the
#: offset-syncs and checkpoints topics (writes, and malformed records read).
ERROR_KINDS: Final = (
    "fetch",
    "produce_retriable",
    "producer_reset",
    "refused",
    "commit",
    "topic_sync",
    "offset_syncs",
    "checkpoints",
    "group_offsets_sync",
    "malformed_offset_sync",
    "malformed_checkpoint",
)
#: Seconds: a batch takes a few ms between two local brokers; minutes when the mirror lags.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class MirrorMetrics:
    """One mirror's series in a registry of their own (nothing registers globally)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._records = Counter(
            "shardbroker_mirror_records",
            "Records mirrored (acknowledged by the target)",
            ["topic"],
            registry=r,
        )
        self._bytes = Counter(
            "shardbroker_mirror_bytes",
            "Record batch bytes mirrored (acknowledged by the target)",
            ["topic"],
            registry=r,
        )
        self._lag = Gauge(
            "shardbroker_mirror_lag",
            "Source end offset minus the next source offset to mirror",
            ["topic", "partition"],
            registry=r,
        )
        self._latency = Histogram(
            "shardbroker_mirror_replication_latency_seconds",
            "Age of a mirrored batch when the target acknowledged it",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._errors = Counter("shardbroker_mirror_errors", "Errors by kind", ["kind"], registry=r)
        for kind in ERROR_KINDS:  # at 0 from the start: rate() sees a kind's first error too
            self._errors.labels(kind)
        self._paused = Gauge(
            "shardbroker_mirror_partitions_paused",
            "Partitions paused because the target refused them",
            registry=r,
        )
        self._checkpoints = Counter(
            "shardbroker_mirror_checkpoints", "Checkpoints written, by source group", ["group"], registry=r
        )
        self._up = Gauge("shardbroker_mirror_up", "1 while the mirror runs", registry=r)

    def serve(self, host: str, port: int) -> None:
        """Answer ``GET /metrics`` on ``host:port`` from a daemon thread."""
        start_http_server(port, host, registry=self.registry)

    def set_up(self, up: bool) -> None:
        self._up.set(1 if up else 0)

    def batch_mirrored(self, topic: str, records: int, nbytes: int, latency_s: float) -> None:
        self._records.labels(topic).inc(records)
        self._bytes.labels(topic).inc(nbytes)
        self._latency.observe(max(0.0, latency_s))

    def set_lag(self, topic: str, partition: int, lag: int) -> None:
        self._lag.labels(topic, str(partition)).set(max(0, lag))

    def forget_topic(self, topic: str, partitions: int) -> None:
        """Drop a topic's lag series (deleted, or no longer mirrored)."""
        for partition in range(partitions):
            try:
                self._lag.remove(topic, str(partition))
            except KeyError:
                continue

    def error(self, kind: str) -> None:
        self._errors.labels(kind).inc()

    def set_paused(self, partitions: int) -> None:
        self._paused.set(partitions)

    def checkpoint_emitted(self, group: str, count: int = 1) -> None:
        self._checkpoints.labels(group).inc(count)
