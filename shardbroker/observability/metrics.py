"""The /metrics contract (DESIGN.md, "Contracts"): a prometheus-client Collector over shared memory.

Runs in the supervisor. On each scrape it reads the workers' counters (ipc/counters.py), the
heartbeat table (supervision/heartbeat.py) and the controller's rings, and builds the metric families on
a private ``CollectorRegistry``: no global registry (nothing else registers by accident), no
multiprocess mode (DESIGN.md: a lock per increment, per-pid files, no custom collectors). The
HTTP side is metrics_http.py.

Series (labels in braces; ``worker`` is the Kafka node id):

- ``shardbroker_partition_{messages_in,bytes_in,bytes_out}_total{topic,partition,worker}``
  (messages_in counts records as the batch headers give them; counters start at 0 when the
  worker opens the partition),
  ``shardbroker_partition_{produce,fetch}_requests_total{...}`` (counters),
  ``shardbroker_partition_log_{end_offset,start_offset,size_bytes,segments}{...}`` (gauges);
- ``shardbroker_partition_offline{topic,partition}``: one per partition of the controller's
  metadata, 1 while its owner worker is not serving or its log went offline (a failed
  fdatasync), Kafka's offline-partition health for a single host (`offline_text`);
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
- ``shardbroker_log_flush_duration_seconds{worker}`` (histogram, the same buckets): each
  fdatasync of a partition's log (storage/group_commit.py times it; one flush may cover many
  produce requests);
- ``shardbroker_ring_used_bytes{ring}``, ``shardbroker_ring_capacity_bytes{ring}`` (gauges),
  ``shardbroker_ring_frames_total{ring}``, ``shardbroker_ring_bytes_total{ring}`` (counters:
  frames published into the ring, each a batch forwarded or carried or a control message, and
  the bytes they took, frame headers and padding included: ipc/ring.py's traffic counters), for
  every ring of the instance (see "Rings" below);
- ``shardbroker_build_info{version,python}`` (always 1).

Rings: the ``ring`` label is low-cardinality and survives client restarts. The controller's
control rings keep their names, ``ctl-w<i>-in``/``-out`` (read through the controller's own
mappings). Every other ring is found by `ClientRings`, which lists ``/dev/shm`` for the
instance's ``lc*`` segments at each scrape and reads their headers read-only
(``ring.read_stats``; it never creates, attaches a writer to or unlinks anything; a ring that
vanishes between listing and reading is skipped), and labelled by `ring_label`: a worker S's
forwarding rings to worker D are ``fwd-w<S>-to-w<D>`` (requests) and ``fwd-w<S>-to-w<D>-acks``;
local clients' rings are aggregated per worker and role, ``local-w<W>-requests`` and
``local-w<W>-acks`` (LocalProducers' ring pairs) and ``local-wake`` (LocalConsumers' wake
rings), summing used, capacity, frames and bytes of the live ones. So at most
2 + 2 + 2 (W - 1) ``ring`` values per worker plus one, whatever the number of clients: the
per-client detail DESIGN.md wants opt-in is not exported. A sum over live rings would drop each time a client
goes away (its ring is unlinked), which ``rate()`` reads as a counter reset and turns into a
spike; so `ClientRings` keeps, per label, the totals its rings had at the last scrape before
they went away, and the exported counters are monotonic while the supervisor runs. They
undercount by what a ring carried after its last scrape, so a client that comes and goes between
two scrapes is not counted at all (only the rings' owners see every frame; the collector sees
the rings that exist when it looks). A label whose rings are all gone keeps its
counters but loses its gauges (nothing is queued, and a 0 capacity would make the fill ratio
NaN). Scrape cost with 50 client rings: see `ClientRings`.

Sources added by serve.py besides the lag: `WorkerProcessSource` (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ``process_virtual_memory_bytes``,
``process_start_time_seconds``, ``process_open_fds``, each ``{worker}``, and
``shardbroker_disk_written_bytes_total{worker}``) and `DataDirSource`
(``shardbroker_data_dir_{size,free}_bytes``).

Cardinality: labels come from bounded sets only (api names from the protocol registry, error
names from Kafka's codes, topic/partition rows bounded by the table), and only non-zero
request/error series are exported. Per partition: 10 series (9 row families + offline); per
(group, partition) with a committed offset: 2; per worker: about 25 plus 19 per API it has
served (17 buckets, sum, count) and one per (API, error) seen. A deleted topic's series go at
the next scrape: its owner frees the rows when the metadata image drops the topic, the offline
series follow the controller's metadata, the lag series need a live row.

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
- ``shardbroker_consumergroup_committed_offset{group,topic,partition}`` (gauge, as
  kafka_exporter's ``kafka_consumergroup_current_offset``: a reset moves it back): the same rows'
  committed offsets, so its ``rate`` is what a group consumes per second (the broker does not
  count fetched records: Fetch sends byte ranges of the log without parsing them).
- ``shardbroker_consumergroup_offsets_overflow{worker}``: committed offsets past the offsets
  table's capacity (or with a group id longer than 224 bytes): counted, not exported.

Scrape cost (perf/bench_metrics.py, this 2-core VM, 10,000 partitions on 2 workers): with the 8
families of the first version (7.8 MB of text) 39-62 ms warm, 109-133 ms for the first scrape
(label strings are built once per row generation and cached); with the segment count, offline
series, flush histogram and process sources (9.4 MB) 62-182 ms warm and 194-700 ms cold, measured
while other test suites kept the load average at 5-8 on the 2 cores (so the spread is the
machine's; the first figures were taken on a quieter one). The first scrape decodes every row's
label in one batch (`CounterTable.labels_of`: 8x faster than row by row). Through
``generate_latest`` alone the per-partition families took
0.9-1.6 s (0.4 s of it building 80,000 Sample tuples), so `MetricsCollector.partition_text`
writes them itself, in the same text format, after ``generate_latest``'s output for everything
else. Counts are at most 1 s old (ipc/counters.py: workers publish once per housekeeping tick).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

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
from shardbroker.ipc import procfs
from shardbroker.ipc.counters import CounterTable
from shardbroker.ipc.group_offsets import OVERFLOW, GroupOffsetTable
from shardbroker.ipc.procfs import CLOCK_TICKS, stat_fields
from shardbroker.ipc.ring_layout import RingStats, read_stats
from shardbroker.ipc.ring_names import Direction, RingRole, parse_ring_name
from shardbroker.ipc.shm import PREFIX, SHM_DIR, validate_instance
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.supervision.heartbeat import HeartbeatTable
from shardbroker.supervision.policy import SlotState

__all__ = [
    "API_NAMES",
    "ERROR_NAMES",
    "ClientRings",
    "DataDirSource",
    "GroupLagSource",
    "MetricsCollector",
    "RingStat",
    "WorkerProcessSource",
    "build_registry",
    "ring_label",
]

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
    (ctr.SEGMENT_COUNT, "shardbroker_partition_log_segments", "Segment files", "gauge"),
]
_OFFLINE = "shardbroker_partition_offline"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


T = TypeVar("T")

#: (``ring`` label, the ring's stats or the sum of the stats of the rings with that label)
RingStat = tuple[str, RingStats]
Source = Callable[[], Iterable[Metric]]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("shardbroker")
    except Exception:
        return "unknown"


class RowLabels(Generic[T]):
    """The live rows of the counter table with something made from each row's label, cached by
    (row, generation): ``make(row, topic, partition)`` runs once per row use, labels are decoded
    in one batch (`CounterTable.labels_of`), and rows relabelled while being read are left out of
    this scrape (the seqlock of ipc/counters.py)."""

    def __init__(self, table: CounterTable, make: Callable[[int, str, int], T]) -> None:
        self.table = table
        self.make = make
        self._cache: dict[int, tuple[int, T]] = {}

    def read(self, field: int | None = None) -> tuple[list[T], Any]:
        """(made values, the rows' counters, or only column ``field``) of the stable live rows."""
        t = self.table
        state = t.state.copy()
        live = np.flatnonzero((state > 0) & (state % 2 == 0))
        values = t.counters[live] if field is None else t.counters[live, field]
        oks = (t.state[live] == state[live]).tolist()
        rows = live.tolist()
        gens = state[live].tolist()
        cache = self._cache
        miss = [
            (row, gen)
            for row, gen, ok in zip(rows, gens, oks, strict=True)
            if ok and ((hit := cache.get(row)) is None or hit[0] != gen)
        ]
        if miss:
            decoded = t.labels_of([row for row, _ in miss])
            now = t.state[[row for row, _ in miss]].tolist()
            for (row, gen), (topic, partition), cur in zip(miss, decoded, now, strict=True):
                if cur == gen:
                    cache[row] = (gen, self.make(row, topic, partition))
        made: list[T] = []
        keep = np.zeros(len(rows), dtype=bool)
        for i, (row, gen, ok) in enumerate(zip(rows, gens, oks, strict=True)):
            hit = cache.get(row)
            if ok and hit is not None and hit[0] == gen:
                made.append(hit[1])
                keep[i] = True
        if len(cache) > 2 * len(rows) + 1024:  # forget rows freed long ago
            alive = set(rows)
            self._cache = {r: v for r, v in cache.items() if r in alive}
        return made, values[keep]


class MetricsCollector(Collector):
    """Reads the shared counters on every ``collect``; the callables give what may change
    (a heartbeat table that is None before start, the controller's rings, the controller's
    topics for the offline series)."""

    def __init__(
        self,
        counters: CounterTable,
        heartbeats: Callable[[], HeartbeatTable | None] = lambda: None,
        rings: Callable[[], Iterable[RingStat]] = lambda: (),
        topics: Callable[[], Iterable[TopicImage]] = lambda: (),
    ) -> None:
        self.table = counters
        self._heartbeats = heartbeats
        self._rings = rings
        self._topics = topics
        self._sources: list[Source] = []
        rpw = counters.rows_per_worker
        #: Per row: ('topic="t",partition="0",worker="1"', (topic, partition)), once per row use.
        self._rows = RowLabels(
            counters,
            lambda row, topic, partition: (
                f'topic="{_escape(topic)}",partition="{partition}",worker="{row // rpw}"',
                (topic, partition),
            ),
        )
        self._build = ([_version(), platform.python_version()], 1.0)
        self.registry = build_registry(self)

    def add_source(self, source: Source) -> None:
        """More families per scrape (e.g. consumer group lag)."""
        self._sources.append(source)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # no families at registration: collect() reads live memory

    def collect(self) -> Iterator[Metric]:
        yield from self._requests()
        yield from self._flushes()
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
        prometheus-client: 9 families x 10,000 partitions are 90,000 samples, which cost
        ``generate_latest`` about 1 s here against 0.05 s for this (perf/bench_metrics.py). Label
        strings are built once per (row, generation), then `offline_text`."""
        rows, values = self._rows.read()
        labels = [label for label, _ in rows]
        out: list[str] = []
        for field, name, doc, kind in _PARTITION_FAMILIES:
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            out.extend(
                [f"{name}{{{lab}}} {v}\n" for lab, v in zip(labels, values[:, field].tolist(), strict=True)]
            )
        failed = {tp for (_, tp), off in zip(rows, values[:, ctr.OFFLINE].tolist(), strict=True) if off}
        out.append(self.offline_text(failed))
        return "".join(out)

    def offline_text(self, failed: set[tuple[str, int]]) -> str:
        """``shardbroker_partition_offline{topic,partition}``: one series per partition of the
        controller's metadata (so a deleted topic's series go with it), 1 when its owner is not
        serving (dead, restarting, booting) or its log went offline (``failed``: the rows'
        offline flags), else 0. The owners come from the controller, not from the rows: a dead
        worker's rows say nothing about whether anyone serves the partition now."""
        up = self.serving()
        out = [f"# HELP {_OFFLINE} 1 while no worker serves the partition\n# TYPE {_OFFLINE} gauge\n"]
        for topic in self._topics():
            name = _escape(topic.name)
            for p in topic.partitions:
                bad = not (0 <= p.leader < len(up) and up[p.leader]) or (topic.name, p.partition) in failed
                out.append(f'{_OFFLINE}{{topic="{name}",partition="{p.partition}"}} {1 if bad else 0}\n')
        return "".join(out)

    def serving(self) -> list[bool]:
        """Per worker slot: READY with a live pid (``shardbroker_worker_up``); empty before the
        heartbeat table exists."""
        table = self._heartbeats()
        if table is None:
            return []
        cells: Any = table.snapshot()
        return [
            int(state) == SlotState.READY and int(pid) > 0
            for state, pid in zip(cells["state"].tolist(), cells["pid"].tolist(), strict=True)
        ]

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
        for slot, serving in enumerate(self.serving()):
            up.add_metric([str(slot)], 1.0 if serving else 0.0)
            restarts.add_metric([str(slot)], float(cells["restarts"][slot]))
        yield up
        yield restarts

    def _flushes(self) -> Iterator[Metric]:
        t = self.table
        hist = t.flush.copy()
        sums = t.flush_sum.copy()
        family = HistogramMetricFamily(
            "shardbroker_log_flush_duration_seconds",
            "Log flushes (fdatasync of a partition's unflushed segments) by duration",
            labels=["worker"],
        )
        for w in range(t.workers):
            cumulative = np.cumsum(hist[w]).tolist()
            family.add_metric(
                [str(w)], buckets=list(zip(_LE, cumulative, strict=True)), sum_value=float(sums[w])
            )
        yield family

    def _ring_families(self) -> Iterator[Metric]:
        r = ["ring"]
        summed = "; local-* rings: summed over the live clients"
        used = GaugeMetricFamily("shardbroker_ring_used_bytes", f"Bytes queued in the ring{summed}", labels=r)
        cap = GaugeMetricFamily("shardbroker_ring_capacity_bytes", f"Ring data area size{summed}", labels=r)
        kept = "; local-* and fwd-* rings: summed, keeping the totals of rings gone, so monotonic"
        frames = CounterMetricFamily(
            "shardbroker_ring_frames", f"Frames published into the ring{kept}", labels=r
        )
        sent = CounterMetricFamily(
            "shardbroker_ring_bytes",
            f"Bytes published into the ring, frame headers and padding included{kept}",
            labels=r,
        )
        for name, stats in self._rings():
            if stats.capacity:  # 0: every ring of an aggregated label is gone
                used.add_metric([name], float(stats.used_bytes))
                cap.add_metric([name], float(stats.capacity))
            frames.add_metric([name], float(stats.frames_published))
            sent.add_metric([name], float(stats.bytes_published))
        yield from (used, cap, frames, sent)


def ring_label(name: str) -> str | None:
    """The ``ring`` label of the client or forwarding ring whose object name (the part after
    ``/shardbroker-<instance>-``) is ``name``; None for any other object (the controller's rings
    are labelled by their names, from the controller's own mappings)."""
    ring = parse_ring_name(name)
    if ring is None:
        return None
    to_worker = ring.direction is Direction.TO_WORKER
    if ring.role is RingRole.LOCAL_PRODUCER:
        return f"local-w{ring.worker}-{'requests' if to_worker else 'acks'}"
    if ring.role is RingRole.FORWARD:
        pair = f"fwd-w{ring.source}-to-w{ring.worker}"
        return pair if to_worker else f"{pair}-acks"
    return "local-wake" if ring.role is RingRole.LOCAL_WAKE else None


class ClientRings:
    """Every ``lc*`` ring of one instance, found in ``/dev/shm`` at each call, as `RingStat`s
    summed per `ring_label`, with the totals of rings gone kept (module docstring, "Rings").

    Not thread-safe: one scraper at a time (the supervisor's loop).

    Cost per call: a listing of ``/dev/shm`` and, per ring, an open, a one-page read-only mmap, a
    few loads, munmap and close (``read_stats``: 23 us per ring on an idle core). Measured with 50
    rings of 5 roles (180 entries in /dev/shm; 3 runs of 200 calls on this shared 2-core VM):
    1.8-2.7 ms per call (median; p90 2.7-4.4 ms), which took the whole exposition of an otherwise
    empty 2-worker broker from 0.8-1.3 ms to 2.9-3.2 ms; against the 62-182 ms of a 10,000-partition
    scrape (module docstring) that is 1-4 %. The mappings are not kept between scrapes: a cached
    header mapping would keep a closed client's whole ring allocated until the next scrape.
    """

    def __init__(self, instance: str, shm_dir: Path = SHM_DIR) -> None:
        self.prefix = f"{PREFIX}-{validate_instance(instance)}-"
        self.shm_dir = shm_dir
        #: file name -> (label, bytes, frames) at the last call, for the rings seen then
        self._last: dict[str, tuple[str, int, int]] = {}
        #: label -> (bytes, frames) summed over the rings that went away
        self._gone: dict[str, tuple[int, int]] = {}

    def __call__(self) -> list[RingStat]:
        seen: dict[str, tuple[str, int, int]] = {}
        live: dict[str, RingStats] = {}
        with os.scandir(self.shm_dir) as entries:
            for entry in entries:
                name = entry.name
                if not name.startswith(self.prefix) or "." in name:  # "." : a doorbell FIFO
                    continue
                label = ring_label(name[len(self.prefix) :])
                if label is None:
                    continue
                stats = read_stats(entry.path)
                if stats is None:  # unlinked since listed, or not yet initialised
                    continue
                seen[name] = (label, stats.bytes_published, stats.frames_published)
                acc = live.get(label)
                live[label] = stats if acc is None else RingStats(*map(sum, zip(acc, stats, strict=True)))
        for name, (label, sent, frames) in self._last.items():
            now = seen.get(name)
            if now is None or now[1] < sent:  # gone (or a new ring under a reused name)
                gone_sent, gone_frames = self._gone.get(label, (0, 0))
                self._gone[label] = (gone_sent + sent, gone_frames + frames)
        self._last = seen
        out: list[RingStat] = []
        for label in sorted(live.keys() | self._gone.keys()):
            used, capacity, sent, frames = live.get(label, RingStats(0, 0, 0, 0))
            gone_sent, gone_frames = self._gone.get(label, (0, 0))
            out.append((label, RingStats(used, capacity, sent + gone_sent, frames + gone_frames)))
        return out


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


class WorkerProcessSource:
    """``process_*{worker}``: each live worker's CPU, memory, start time and open files, read
    from ``/proc/<pid>`` at scrape time (Linux; elsewhere nothing), with the names and units of
    prometheus-client's ProcessCollector plus a ``worker`` label, so dashboards written for
    Prometheus' conventions work per worker. The supervisor itself is left out: it serves no
    client traffic, and its numbers under these names would read as a worker's.

    Also ``shardbroker_disk_written_bytes_total{worker}``: ``write_bytes`` of
    ``/proc/<pid>/io``, what the worker made the kernel send to the storage layer (segments,
    indexes, checkpoints, compaction; counted when pages are dirtied, so before writeback).
    Read here rather than counted in storage/ because it sees every write path at no cost to
    any of them; it resets when a worker restarts, as counters of a new process do.

    Cost: four small reads per worker plus a listdir of ``/proc/<pid>/fd`` (0.1-0.3 ms per worker
    with a few hundred files open; perf/bench_metrics.py).
    """

    def __init__(self, heartbeats: Callable[[], HeartbeatTable | None], proc: str = "/proc") -> None:
        self._heartbeats = heartbeats
        self._proc = proc
        self._page = float(os.sysconf("SC_PAGE_SIZE"))
        self._boot: float | None = None

    def _boot_time(self) -> float:
        if self._boot is None:
            with open(f"{self._proc}/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self._boot = float(line.split()[1])
                        break
                else:
                    self._boot = 0.0
        return self._boot

    def pids(self) -> list[tuple[int, int]]:
        """(slot, pid) of the workers that may be running (not reaped yet)."""
        table = self._heartbeats()
        if table is None:
            return []
        cells: Any = table.snapshot()
        return [
            (slot, int(pid))
            for slot, (pid, state) in enumerate(
                zip(cells["pid"].tolist(), cells["state"].tolist(), strict=True)
            )
            if pid > 0 and state != SlotState.DEAD
        ]

    def __call__(self) -> Iterator[Metric]:
        w = ["worker"]
        cpu = CounterMetricFamily("process_cpu_seconds", "User and system CPU time", labels=w)
        rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory", labels=w)
        vms = GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory", labels=w)
        start = GaugeMetricFamily(
            "process_start_time_seconds", "Start time, seconds since the epoch", labels=w
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors", labels=w)
        written = CounterMetricFamily(
            "shardbroker_disk_written_bytes", "Bytes the worker sent to the storage layer", labels=w
        )
        for slot, pid in self.pids():
            base = f"{self._proc}/{pid}"
            try:
                fields = stat_fields(pid, self._proc)
                with open(f"{base}/io", "rb") as f:
                    io = dict(line.split(b": ", 1) for line in f.read().splitlines())
                open_fds = len(os.listdir(f"{base}/fd"))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile, or not Linux
            label = [str(slot)]
            cpu.add_metric(label, (int(fields[procfs.UTIME]) + int(fields[procfs.STIME])) / CLOCK_TICKS)
            start.add_metric(label, self._boot_time() + int(fields[procfs.START_TIME]) / CLOCK_TICKS)
            vms.add_metric(label, float(fields[procfs.VSIZE]))
            rss.add_metric(label, int(fields[procfs.RSS_PAGES]) * self._page)
            fds.add_metric(label, float(open_fds))
            written.add_metric(label, float(io.get(b"write_bytes", b"0")))
        yield from (cpu, rss, vms, start, fds, written)


class DataDirSource:
    """``shardbroker_data_dir_{size,free}_bytes``: the file system holding the data dir
    (``statvfs``; free = what an unprivileged process may still use), for the disk-nearly-full
    alert. One system call per scrape."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self) -> Iterator[Metric]:
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return
        size = GaugeMetricFamily("shardbroker_data_dir_size_bytes", "Size of the data dir's file system")
        size.add_metric([], float(st.f_blocks * st.f_frsize))
        free = GaugeMetricFamily("shardbroker_data_dir_free_bytes", "Bytes still available in the data dir")
        free.add_metric([], float(st.f_bavail * st.f_frsize))
        yield size
        yield free


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A private registry holding only ``collector`` (no process/platform/gc default collectors:
    the supervisor's own process stats would be mistaken for the broker's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
