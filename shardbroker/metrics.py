"""The /metrics contract (DESIGN.md, "Contracts"): a prometheus-client Collector over shared memory.

Runs in the supervisor. On each scrape it reads the workers' counters (ipc/counters.py), the
heartbeat table (ipc/heartbeat.py) and the controller's rings, and builds the metric families on
a private ``CollectorRegistry``: no global registry (nothing else registers by accident), no
multiprocess mode (DESIGN.md: a lock per increment, per-pid files, no custom collectors). The
HTTP side is metrics_http.py.

Series (labels in braces; ``worker`` is the Kafka node id):

- ``shardbroker_partition_{messages_in,bytes_in,bytes_out}_total{topic,partition,worker}``
  (messages_in counts records as the batch headers give them; counters start at 0 when the
  worker opens the partition),
  ``shardbroker_partition_{produce,fetch}_requests_total{...}`` (counters),
  ``shardbroker_partition_log_{end_offset,start_offset,size_bytes}{...}`` (gauges);
- ``shardbroker_requests_total{api,worker}``, ``shardbroker_request_errors_total{api,worker,error}``
  (``error`` is the Kafka error name, e.g. CORRUPT_MESSAGE; a partition's error in a Produce or
  Fetch counts once per partition, a refused frame once, under api="Unknown" when its api key
  is unreadable), ``shardbroker_request_duration_seconds{api,worker}`` (histogram, 100 us to
  10 s: from the decoded request to the response object, so a long-poll Fetch includes its wait,
  as Kafka's TotalTimeMs does);
- ``shardbroker_worker_up{worker}``, ``shardbroker_worker_restarts_total{worker}``,
  ``shardbroker_connections{worker}``, ``shardbroker_fetch_waiters{worker}``,
  ``shardbroker_partition_rows_overflow{worker}`` (partitions past the counter table's capacity:
  counted, not exported);
- ``shardbroker_ring_used_bytes{ring}``, ``shardbroker_ring_capacity_bytes{ring}`` (the
  controller's control rings, ``ctl-w<i>-in``/``-out``: 2 per worker, so low-cardinality);
- ``shardbroker_build_info{version,python}`` (always 1).

Cardinality: labels come from bounded sets only (api names from the protocol registry, error
names from Kafka's codes, topic/partition rows bounded by the table), and only non-zero
request/error series are exported.

Extension point: ``MetricsCollector.add_source(fn)`` registers a callable returning more metric
families per scrape. serve.py adds `GroupLagSource` that way:

- ``shardbroker_consumergroup_lag{group,topic,partition}`` (gauge): Kafka's lag, the partition's
  high watermark (log end offset: the offset of the *next* record; control records count) minus
  the group's committed offset, so a fully consumed partition has lag 0. Committed offsets come
  from the workers' group coordinators (ipc/group_offsets.py, published on the 1 s tick), log
  end offsets from the partition rows above. Only groups with committed offsets have series; a
  deleted group's series disappear with its rows. A partition whose log end offset is unknown
  (no live row: not open anywhere, past the counter table's capacity, or relabelled during the
  scrape) is skipped. A committed offset beyond the log end (the log was truncated, or the topic
  deleted and created again) gives 0, not Kafka's ``kafka-consumer-groups`` negative
  ``end - committed``: a negative gauge would cancel real lag in ``sum by (group)``, and the
  consumer has nothing to read there (it gets OFFSET_OUT_OF_RANGE and resets). Behind the log
  start (DeleteRecords, retention) the lag stays ``end - committed``, as Kafka's tool shows.
- ``shardbroker_consumergroup_offsets_overflow{worker}``: committed offsets past the offsets
  table's capacity (or with a group id longer than 224 bytes): counted, not exported.

Scrape cost (perf/bench_metrics.py, this 2-core VM, 10,000 partitions on 2 workers, 7.8 MB of
text): 39-62 ms warm, 109-133 ms for the first scrape (label strings are built once per row
generation and cached). Through ``generate_latest`` alone the per-partition families took
0.9-1.6 s (0.4 s of it building 80,000 Sample tuples), so `MetricsCollector.partition_text`
writes them itself, in the same text format, after ``generate_latest``'s output for everything
else. Counts are at most 1 s old (ipc/counters.py: workers publish once per housekeeping tick).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable
from shardbroker.ipc.group_offsets import OVERFLOW, GroupOffsetTable
from shardbroker.ipc.heartbeat import HeartbeatTable
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.supervision import SlotState

__all__ = ["API_NAMES", "ERROR_NAMES", "GroupLagSource", "MetricsCollector", "RingStat", "build_registry"]

#: api key -> "Produce", "Fetch", ... (the protocol registry's names); the counter table's last
#: row holds refusals of frames whose api key is out of range or unreadable.
API_NAMES: dict[int, str] = {key: cls.API_NAME for key, cls in m.REQUESTS.items()}
assert max(API_NAMES) < ctr.N_API - 1, "an api key does not fit the counter table"
API_NAMES[ctr.N_API - 1] = "Unknown"


def _error_names() -> list[str]:
    names = []
    for i in range(ctr.N_ERR):
        code = i - 1
        try:
            names.append(ErrorCode(code).name)
        except ValueError:
            names.append(f"ERROR_{code}")
    names[-1] = "OTHER"
    return names


#: errors column -> Kafka error name.
ERROR_NAMES: list[str] = _error_names()
_LE: list[str] = [*(floatToGoString(b) for b in ctr.BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]

#: (field, name, help, type) of the per-partition families (written by `partition_text`).
_PARTITION_FAMILIES: list[tuple[int, str, str, str]] = [
    (ctr.MESSAGES_IN, "shardbroker_partition_messages_in_total", "Records appended", "counter"),
    (ctr.BYTES_IN, "shardbroker_partition_bytes_in_total", "Record batch bytes appended", "counter"),
    (ctr.BYTES_OUT, "shardbroker_partition_bytes_out_total", "Record bytes sent to fetchers", "counter"),
    (
        ctr.PRODUCE_REQUESTS,
        "shardbroker_partition_produce_requests_total",
        "Produce partition requests",
        "counter",
    ),
    (ctr.FETCH_REQUESTS, "shardbroker_partition_fetch_requests_total", "Fetch partition requests", "counter"),
    (ctr.LOG_END_OFFSET, "shardbroker_partition_log_end_offset", "Offset of the next record", "gauge"),
    (ctr.LOG_START_OFFSET, "shardbroker_partition_log_start_offset", "First offset kept", "gauge"),
    (ctr.LOG_SIZE_BYTES, "shardbroker_partition_log_size_bytes", "Bytes in the segment files", "gauge"),
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


#: (ring name, used bytes, capacity bytes)
RingStat = tuple[str, int, int]
Source = Callable[[], Iterable[Metric]]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("shardbroker")
    except Exception:
        return "unknown"


class MetricsCollector(Collector):
    """Reads the shared counters on every ``collect``; the callables give what may change
    (a heartbeat table that is None before start, the controller's rings)."""

    def __init__(
        self,
        counters: CounterTable,
        heartbeats: Callable[[], HeartbeatTable | None] = lambda: None,
        rings: Callable[[], Iterable[RingStat]] = lambda: (),
    ) -> None:
        self.table = counters
        self._heartbeats = heartbeats
        self._rings = rings
        self._sources: list[Source] = []
        #: row -> (generation, 'topic="t",partition="0",worker="1"'), built once per row use.
        self._labels: dict[int, tuple[int, str]] = {}
        self._build = ([_version(), platform.python_version()], 1.0)
        self.registry = build_registry(self)

    def add_source(self, source: Source) -> None:
        """More families per scrape (e.g. consumer group lag)."""
        self._sources.append(source)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no families at registration: collect() reads live memory

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._workers()
        yield from self._ring_families()
        build = GaugeMetricFamily(
            "shardbroker_build_info", "Build of the broker", labels=["version", "python"]
        )
        build.add_metric(*self._build)
        yield build
        for source in self._sources:
            yield from source()

    # -- per partition -----------------------------------------------------------------------

    def partition_text(self) -> str:
        """The per-partition families in the text format (0.0.4), formatted here rather than by
        prometheus-client: 8 families x 10,000 partitions are 80,000 samples, which cost
        ``generate_latest`` about 1 s here against 0.05 s for this (perf/bench_metrics.py). Label
        strings are built once per (row, generation)."""
        t = self.table
        state = t.state.copy()
        live = np.flatnonzero((state > 0) & (state % 2 == 0))
        values = t.counters[live]
        # Rows relabelled while we copied are left out of this scrape (the seqlock of counters.py).
        stable = t.state[live] == state[live]
        rows = live.tolist()
        gens = state[live].tolist()
        rpw = t.rows_per_worker
        cache = self._labels
        labels: list[str] = []
        keep = np.zeros(len(rows), dtype=bool)
        for i, (row, gen, ok) in enumerate(zip(rows, gens, stable.tolist(), strict=True)):
            if not ok:
                continue
            hit = cache.get(row)
            if hit is None or hit[0] != gen:
                topic, partition = t.label(row)
                if t.state[row] != gen:
                    continue
                hit = (gen, f'topic="{_escape(topic)}",partition="{partition}",worker="{row // rpw}"')
                cache[row] = hit
            labels.append(hit[1])
            keep[i] = True
        if len(cache) > 2 * len(rows) + 1024:  # forget rows freed long ago
            alive = set(rows)
            self._labels = {r: v for r, v in cache.items() if r in alive}
        values = values[keep]
        out: list[str] = []
        for field, name, doc, kind in _PARTITION_FAMILIES:
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            out.extend(
                [f"{name}{{{lab}}} {v}\n" for lab, v in zip(labels, values[:, field].tolist(), strict=True)]
            )
        return "".join(out)

    def exposition(self) -> bytes:
        """What GET /metrics answers: ``generate_latest`` of the private registry (every family
        but the per-partition ones) followed by `partition_text`."""
        return generate_latest(self.registry) + self.partition_text().encode()

    # -- per worker ----------------------------------------------------------------------------

    def _requests(self) -> Iterator[Metric]:
        t = self.table
        requests = t.requests.copy()
        hist = t.hist.copy()
        hist_sum = t.hist_sum.copy()
        errors = t.errors.copy()
        total = CounterMetricFamily(
            "shardbroker_requests_total", "Requests answered", labels=["api", "worker"]
        )
        duration = HistogramMetricFamily(
            "shardbroker_request_duration_seconds",
            "Time from a decoded request to its response",
            labels=["api", "worker"],
        )
        for w, api in zip(*(a.tolist() for a in np.nonzero(requests)), strict=True):
            labels = [API_NAMES.get(api, str(api)), str(w)]
            total.add_metric(labels, requests[w, api])
            cumulative = np.cumsum(hist[w, api]).tolist()
            duration.add_metric(
                labels, buckets=list(zip(_LE, cumulative, strict=True)), sum_value=float(hist_sum[w, api])
            )
        errs = CounterMetricFamily(
            "shardbroker_request_errors_total",
            "Refusals by Kafka error (per partition for Produce and Fetch)",
            labels=["api", "worker", "error"],
        )
        for w, api, e in zip(*(a.tolist() for a in np.nonzero(errors)), strict=True):
            errs.add_metric([API_NAMES.get(api, str(api)), str(w), ERROR_NAMES[e]], errors[w, api, e])
        yield total
        yield errs
        yield duration

    def _workers(self) -> Iterator[Metric]:
        t = self.table
        misc = t.misc.copy()
        gauges = [
            (ctr.CONNECTIONS, "shardbroker_connections", "Open Kafka client connections"),
            (ctr.FETCH_WAITERS, "shardbroker_fetch_waiters", "Fetch requests parked in a long poll"),
            (ctr.PARTITION_OVERFLOW, "shardbroker_partition_rows_overflow", "Partitions not exported"),
        ]
        for field, name, doc in gauges:
            family = GaugeMetricFamily(name, doc, labels=["worker"])
            for w in range(t.workers):
                family.add_metric([str(w)], float(misc[w, field]))
            yield family
        table = self._heartbeats()
        if table is None:
            return
        cells: Any = table.snapshot()
        up = GaugeMetricFamily("shardbroker_worker_up", "1 while the worker is serving", labels=["worker"])
        restarts = CounterMetricFamily(
            "shardbroker_worker_restarts", "Times the worker slot was restarted", labels=["worker"]
        )
        for slot in range(len(cells)):
            serving = int(cells["state"][slot]) == SlotState.READY and int(cells["pid"][slot]) > 0
            up.add_metric([str(slot)], 1.0 if serving else 0.0)
            restarts.add_metric([str(slot)], float(cells["restarts"][slot]))
        yield up
        yield restarts

    def _ring_families(self) -> Iterator[Metric]:
        used = GaugeMetricFamily("shardbroker_ring_used_bytes", "Bytes queued in the ring", labels=["ring"])
        cap = GaugeMetricFamily("shardbroker_ring_capacity_bytes", "Ring data area size", labels=["ring"])
        for name, used_bytes, capacity in self._rings():
            used.add_metric([name], float(used_bytes))
            cap.add_metric([name], float(capacity))
        yield used
        yield cap


class GroupLagSource:
    """``shardbroker_consumergroup_lag`` (a `MetricsCollector.add_source` source): the committed
    offsets of ipc/group_offsets.py joined with the log end offsets of the counter table's
    partition rows (see the module docstring for the rules)."""

    def __init__(self, counters: CounterTable, offsets: GroupOffsetTable) -> None:
        self.counters = counters
        self.offsets = offsets
        #: partition row -> (generation, (topic, partition)), decoded once per row use.
        self._labels: dict[int, tuple[int, tuple[str, int]]] = {}

    def log_end_offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> log end offset, for the partition rows live now."""
        t = self.counters
        state = t.state.copy()
        live = np.flatnonzero((state > 0) & (state % 2 == 0))
        ends = t.counters[live, ctr.LOG_END_OFFSET].tolist()
        stable = (t.state[live] == state[live]).tolist()
        rows = live.tolist()
        cache = self._labels
        out: dict[tuple[str, int], int] = {}
        for row, gen, ok, end in zip(rows, state[live].tolist(), stable, ends, strict=True):
            if not ok:
                continue
            hit = cache.get(row)
            if hit is None or hit[0] != gen:
                tp = t.label(row)
                if t.state[row] != gen:
                    continue
                hit = cache[row] = (gen, tp)
            out[hit[1]] = max(end, out.get(hit[1], -1))  # a partition moving: two rows, briefly
        if len(cache) > 2 * len(rows) + 1024:
            alive = set(rows)
            self._labels = {r: v for r, v in cache.items() if r in alive}
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
        seen: set[tuple[str, str, int]] = set()
        for group, topic, partition, committed in rows:
            end = ends.get((topic, partition))
            key = (group, topic, partition)
            if end is None or committed < 0 or key in seen:
                continue  # end unknown; no offset (-1); a group moving between coordinators
            seen.add(key)
            lag.add_metric([group, topic, str(partition)], float(self.lag(end, committed)))
        yield lag
        overflow = GaugeMetricFamily(
            "shardbroker_consumergroup_offsets_overflow",
            "Committed offsets not exported (offsets table full, or group id too long)",
            labels=["worker"],
        )
        misc = self.offsets.misc
        for w in range(self.offsets.workers):
            overflow.add_metric([str(w)], float(misc[w, OVERFLOW]))
        yield overflow


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A private registry holding only ``collector`` (no process/platform/gc default collectors:
    the supervisor's own process stats would be mistaken for the broker's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
