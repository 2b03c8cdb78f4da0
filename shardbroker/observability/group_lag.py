"""Consumer group lag on /metrics (a `MetricsCollector.add_source` source, added by serve.py).

- ``shardbroker_consumergroup_lag{group,topic,partition}`` (gauge): Kafka's lag, the partition's
  high watermark (log end offset: the offset of the *next* record; control records count) minus
  the group's committed offset, so a fully consumed partition has lag 0; the high watermark
  whatever the group's isolation level, as Kafka's kafka-consumer-groups (a read_committed group
  stuck behind an open transaction shows the lag; ``shardbroker_partition_last_stable_offset``
  says why);
- ``shardbroker_consumergroup_committed_offset{group,topic,partition}`` (gauge, as
  kafka_exporter's ``kafka_consumergroup_current_offset``: a reset moves it back), whose ``rate``
  is what a group consumes per second (the broker does not count fetched records: Fetch sends
  byte ranges of the log without parsing them);
- ``shardbroker_consumergroup_offsets_overflow{worker}``: committed offsets past the offsets
  table's capacity (or with a group id longer than 224 bytes): counted, not exported.

Committed offsets come from the workers' group coordinators (ipc/group_offsets.py, published on
the 1 s tick), log end offsets from the counter table's partition rows. Only groups with committed
offsets have series; a partition whose log end offset is unknown (no live row: not open anywhere,
past the table's capacity, or relabelled during the scrape) is skipped. A committed offset beyond
the log end (log truncated, topic deleted and created again) gives 0, not the negative
``end - committed`` of Kafka's ``kafka-consumer-groups``: a negative gauge would cancel real lag in
``sum by (group)``, and the consumer has nothing to read there (it gets OFFSET_OUT_OF_RANGE and
resets). Behind the log start (DeleteRecords, retention) the lag stays ``end - committed``, as
Kafka's tool shows.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable
from shardbroker.ipc.group_offsets import OVERFLOW, GroupOffsetTable
from shardbroker.observability.metrics import RowLabels

__all__ = ["GroupLagSource"]


class GroupLagSource:
    """``shardbroker_consumergroup_lag`` (a `MetricsCollector.add_source` source): the committed
    offsets of ipc/group_offsets.py joined with the log end offsets of the counter table's
    partition rows (see the module docstring for the rules)."""

    def __init__(self, counters: CounterTable, offsets: GroupOffsetTable) -> None:
        self.counters = counters
        self.offsets = offsets
        self._rows = RowLabels(counters, lambda row, topic, partition: (topic, partition))

    def log_end_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> log end offset, for the partition rows live now."""
        tps, ends = self._rows.read(ctr.LOG_END_OFFSET)
        out: dict[tuple[str, int], int] = {}
        for tp, end in zip(tps, ends.tolist(), strict=True):
            out[tp] = max(end, out.get(tp, -1))  # a partition moving: two rows, briefly
        return out

    @staticmethod
    def lag(end: int, committed: int) -> int:
        """Kafka's lag (high watermark - committed), 0 when the committed offset is beyond the end."""
        return max(0, end - committed)

    def __call__(self) -> Iterator[Metric]:
        rows = self.offsets.snapshot()
        ends = self.log_end_offsets() if rows else {}
        lag = GaugeMetricFamily(
            "shardbroker_consumergroup_lag",
            "Log end offset (high watermark) minus the group's committed offset",
            labels=["group", "topic", "partition"],
        )
        offsets = GaugeMetricFamily(
            "shardbroker_consumergroup_committed_offset",
            "The group's committed offset (its rate: messages consumed per second)",
            labels=["group", "topic", "partition"],
        )
        seen: set[tuple[str, str, int]] = set()
        for group, topic, partition, committed in rows:
            end = ends.get((topic, partition))
            key = (group, topic, partition)
            if end is None or committed < 0 or key in seen:
                continue  # end unknown; no offset (-1); a group moving between coordinators
            seen.add(key)
            labels = [group, topic, str(partition)]
            lag.add_metric(labels, float(self.lag(end, committed)))
            offsets.add_metric(labels, float(committed))
        yield lag
        yield offsets
        overflow = GaugeMetricFamily(
            "shardbroker_consumergroup_offsets_overflow",
            "Committed offsets not exported (offsets table full, or group id too long)",
            labels=["worker"],
        )
        misc = self.offsets.misc
        for w in range(self.offsets.workers):
            overflow.add_metric([str(w)], float(misc[w, OVERFLOW]))
        yield overflow
