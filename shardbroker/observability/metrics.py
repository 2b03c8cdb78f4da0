"""The /metrics contract (DESIGN.md, "Contracts"): `MetricsCollector`, a prometheus-client
Collector that builds the broker's metric families from shared memory at each scrape.

Runs in the supervisor. Reads the workers' counters (ipc/counters.py), the heartbeat table
(supervision/heartbeat.py), the rings' headers (ring_metrics.py) and the controller's topics; more
families come from sources added with ``add_source`` (group_lag.py, system_metrics.py). A private
``CollectorRegistry`` holds only this collector: no global registry (nothing else registers by
accident), no multiprocess mode (a lock per increment, per-pid files, no custom collectors). The
HTTP side is metrics_http.py.

Families built here (``worker`` is the Kafka node id):

- ``shardbroker_partition_*{topic,partition,worker}``: 5 counters and 5 gauges of the partition
  rows (counters start at 0 when the worker opens the partition),
  ``shardbroker_partition_dirty_ratio{topic,partition,worker}`` (only for partitions the log
  cleaner measured: compacted ones), and ``shardbroker_partition_offline{topic,partition}``, one
  per partition of the controller's metadata (`offline_text`);
- ``shardbroker_requests_total``, ``shardbroker_request_errors_total`` (``error``: the Kafka error
  name; a Produce or Fetch partition's error counts once per partition, an unreadable frame under
  api="Unknown") and ``shardbroker_request_duration_seconds`` (histogram, 100 us to 10 s, from
  the decoded request to the response, as Kafka's TotalTimeMs), each ``{api,worker}``;
  ``shardbroker_log_flush_duration_seconds{worker}`` (each fdatasync of a partition's log);
- ``shardbroker_worker_up``, ``_worker_restarts_total``, ``_connections``, ``_fetch_waiters``,
  ``_partition_rows_overflow``, each ``{worker}``; the ring series; ``shardbroker_build_info``;
- ``shardbroker_authentication_total{listener,mechanism,result,worker}`` (result success or
  failure; mechanism PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER, SSL or UNKNOWN) and
  ``shardbroker_authorization_denied_total{operation,resource_type,worker}`` (Kafka's names),
  from broker/security_audit.py; ``shardbroker_transactions_total{result,worker}`` (commit,
  abort, timeout, fenced), ``shardbroker_transactions_ongoing{worker}`` and
  ``shardbroker_transaction_duration_seconds{worker}`` (10 ms to 15 min), from the transaction
  coordinator (broker/transaction_coordinator.py says what is counted when);
  ``shardbroker_log_cleaner_bytes_read_total``, ``_bytes_written_total``,
  ``shardbroker_log_cleaner_runs_total{result}`` (success, error, aborted),
  ``shardbroker_log_cleaner_max_compaction_delay_seconds`` and
  ``shardbroker_log_cleaner_uncleanable_partitions``, each ``{worker}``, from the worker's log
  cleaner (broker/log_cleaner_service.py), as of its last look, and
  ``shardbroker_log_cleaner_last_progress_timestamp_seconds{worker}`` (when it last ended a look
  or swapped a cleaned group in: the stuck-cleaner alert's input). Per worker, as every
  per-worker counter: a restarted worker starts its series at 0, which ``rate`` reads as a reset;
  summed over workers, one worker's reset would look like a drop of the total and ``rate`` would
  count the survivors' whole totals again (a false failure burst on the alert).
- ``shardbroker_quota_throttle_time_seconds_total{quota,worker}``: the throttle time client quotas
  handed out (quota: produce, fetch, request, controller_mutation; every client), and
  ``shardbroker_quota_client_throttle_time_seconds_total{quota,user,client_id,worker}`` for the
  ``QUOTA_TOP`` (10) budgets each worker throttled longest: a top-N, so the label set stays
  bounded whatever clients connect (user and client_id are the budget's, as Kafka's quota
  metric tags: empty where the quota is not per user or per client id).

Invariants: labels come from bounded sets only (api names from the protocol registry, Kafka's
error names, partition rows bounded by the table); only non-zero request/error series are
exported; a row relabelled during a scrape is left out of it; counts are at most 1 s old (workers
publish once per housekeeping tick). Why the per-partition families are written here rather than
by ``generate_latest``: 90,000 samples cost it ~1 s against 0.05 s (docs/notes/metrics.md).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from shardbroker.ipc.counters import CounterTable
from shardbroker.metadata.image import TopicImage
from shardbroker.observability.ring_metrics import RingStat, ring_families
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.supervision.heartbeat import HeartbeatTable
from shardbroker.supervision.policy import SlotState

__all__ = [
    "API_NAMES",
    "ERROR_NAMES",
    "MetricsCollector",
    "RowLabels",
    "build_registry",
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


def _code_names(codes: type[AclOperation] | type[ResourceType], n: int) -> list[str]:
    names = {int(e): e.name for e in codes}
    return [names.get(c, str(c)) for c in range(n)]


#: AclOperation / ResourceType code -> Kafka's name (a code this build does not know: its number).
OPERATION_NAMES: list[str] = _code_names(AclOperation, ctr.N_OPERATIONS)
RESOURCE_TYPE_NAMES: list[str] = _code_names(ResourceType, ctr.N_RESOURCE_TYPES)
_RESULTS = ("success", "failure")
_LE: list[str] = [*(floatToGoString(b) for b in ctr.BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]
_TXN_LE: list[str] = [*(floatToGoString(b) for b in ctr.TXN_BUCKETS), "+Inf"]  # type: ignore[no-untyped-call]

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
    (
        ctr.LAST_STABLE_OFFSET,
        "shardbroker_partition_last_stable_offset",
        "Offset below the first undecided transaction (read_committed reads stop there)",
        "gauge",
    ),
]
_OFFLINE = "shardbroker_partition_offline"
_DIRTY = "shardbroker_partition_dirty_ratio"
#: result label -> cleaner block field of ``shardbroker_log_cleaner_runs_total``.
_CLEANER_RESULTS = (
    ("success", ctr.CLEANER_RUNS),
    ("error", ctr.CLEANER_ERRORS),
    ("aborted", ctr.CLEANER_ABORTED),
)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


T = TypeVar("T")

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
        listeners: Sequence[str] = (),
    ) -> None:
        """``listeners``: the config's listener names, in order (the authentication cells')."""
        self.table = counters
        self._listeners = [
            listeners[i] if i < len(listeners) else f"listener{i}" for i in range(counters.listeners)
        ]
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
        yield from self._security()
        yield from self._transactions()
        yield from self._cleaner()
        yield from self._quotas()
        yield from ring_families(self._rings())
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
        strings are built once per (row, generation), then the dirty ratios of the rows that have
        one (NaN: not compacted, no series), then `offline_text`."""
        rows, values = self._rows.read()
        labels = [label for label, _ in rows]
        out: list[str] = []
        for field, name, doc, kind in _PARTITION_FAMILIES:
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            out.extend(
                [f"{name}{{{lab}}} {v}\n" for lab, v in zip(labels, values[:, field].tolist(), strict=True)]
            )
        ratios = np.ascontiguousarray(values[:, ctr.DIRTY_RATIO]).view(np.float64).tolist()
        out.append(
            f"# HELP {_DIRTY} Dirty bytes / (clean + dirty bytes) of a compacted partition's log, "
            f"as the log cleaner last measured it\n# TYPE {_DIRTY} gauge\n"
        )
        out.extend(
            [f"{_DIRTY}{{{lab}}} {r!r}\n" for lab, r in zip(labels, ratios, strict=True) if not math.isnan(r)]
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
        rebalances = CounterMetricFamily(
            "shardbroker_group_rebalances",
            "Rebalances of the groups each worker coordinates, by protocol: a classic group's "
            "completed join phase, a consumer-protocol group's new target assignment",
            labels=["worker", "protocol"],
        )
        for w in range(t.workers):
            for i, protocol in enumerate(ctr.REBALANCE_PROTOCOLS):
                rebalances.add_metric([str(w), protocol], float(misc[w, ctr.REBALANCES_AT + i]))
        yield rebalances
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

    def _security(self) -> Iterator[Metric]:
        auth, denied = self.table.authentications.copy(), self.table.denied.copy()
        family = CounterMetricFamily(
            "shardbroker_authentication",
            "Authentications (SASL exchanges, TLS handshakes) by listener, mechanism and outcome",
            labels=["listener", "mechanism", "result", "worker"],
        )
        for w, lis, mech, res in zip(*(a.tolist() for a in np.nonzero(auth)), strict=True):
            labels = [self._listeners[lis], ctr.MECHANISMS[mech], _RESULTS[res], str(w)]
            family.add_metric(labels, float(auth[w, lis, mech, res]))
        yield family
        family = CounterMetricFamily(
            "shardbroker_authorization_denied",
            "Requests' authorization checks denied, by ACL operation and resource type",
            labels=["operation", "resource_type", "worker"],
        )
        for w, op, rt in zip(*(a.tolist() for a in np.nonzero(denied)), strict=True):
            labels = [OPERATION_NAMES[op], RESOURCE_TYPE_NAMES[rt], str(w)]
            family.add_metric(labels, float(denied[w, op, rt]))
        yield family

    def _transactions(self) -> Iterator[Metric]:
        t = self.table
        cells, hist, sums = t.transactions.copy(), t.txn_hist.copy(), t.txn_sum.copy()
        total = CounterMetricFamily(
            "shardbroker_transactions",
            "Transactions ended by this worker's coordinator, by result",
            labels=["result", "worker"],
        )
        ongoing = GaugeMetricFamily(
            "shardbroker_transactions_ongoing",
            "Open transactions (Ongoing, PrepareCommit, PrepareAbort) this worker coordinates",
            labels=["worker"],
        )
        duration = HistogramMetricFamily(
            "shardbroker_transaction_duration_seconds",
            "Transactions by duration, from their first partition to their commit or abort",
            labels=["worker"],
        )
        for w in range(t.workers):
            for i, result in enumerate(ctr.TXN_RESULTS):
                total.add_metric([result, str(w)], float(cells[w, i]))
            ongoing.add_metric([str(w)], float(cells[w, ctr.TXN_ONGOING]))
            buckets = list(zip(_TXN_LE, np.cumsum(hist[w]).tolist(), strict=True))
            duration.add_metric([str(w)], buckets=buckets, sum_value=float(sums[w]))
        yield total
        yield ongoing
        yield duration

    def _quotas(self) -> Iterator[Metric]:
        t = self.table
        totals = CounterMetricFamily(
            "shardbroker_quota_throttle_time_seconds",
            "Throttle time client quotas handed out, all clients (KIP-13/599)",
            labels=["quota", "worker"],
        )
        clients = CounterMetricFamily(
            "shardbroker_quota_client_throttle_time_seconds",
            f"Throttle time of the {ctr.QUOTA_TOP} quota budgets each worker throttled longest",
            labels=["quota", "user", "client_id", "worker"],
        )
        for w in range(t.workers):
            read = t.quota_throttles(w)
            if read is None:
                continue
            by_type, top = read
            for kind, ms in zip(ctr.QUOTA_TYPES, by_type, strict=True):
                totals.add_metric([kind, str(w)], ms / 1000)
            for kind, user, client, ms in top:
                clients.add_metric([kind, user, client, str(w)], ms / 1000)
        yield totals
        yield clients

    def _cleaner(self) -> Iterator[Metric]:
        t = self.table
        cells = t.cleaner.copy()
        read = CounterMetricFamily(
            "shardbroker_log_cleaner_bytes_read", "Bytes the log cleaner read from logs", labels=["worker"]
        )
        written = CounterMetricFamily(
            "shardbroker_log_cleaner_bytes_written",
            "Bytes the log cleaner wrote into cleaned segments",
            labels=["worker"],
        )
        runs = CounterMetricFamily(
            "shardbroker_log_cleaner_runs",
            "Cleans of a partition's log, by result (error: uncleanable data or an I/O failure such as "
            "a full disk; aborted: the partition moved or closed)",
            labels=["result", "worker"],
        )
        delay = GaugeMetricFamily(
            "shardbroker_log_cleaner_max_compaction_delay_seconds",
            "Largest time past max.compaction.lag.ms of a dirty record in the worker's compacted "
            "partitions, at the cleaner's last look (0: none overdue)",
            labels=["worker"],
        )
        uncleanable = GaugeMetricFamily(
            "shardbroker_log_cleaner_uncleanable_partitions",
            "Partitions the log cleaner gave up on (unreadable data) until the worker restarts",
            labels=["worker"],
        )
        progress = GaugeMetricFamily(
            "shardbroker_log_cleaner_last_progress_timestamp_seconds",
            "When the log cleaner last ended a look at the worker's partitions or swapped a cleaned "
            "group in (Unix time; no sample before the first or with log.cleaner.enable false)",
            labels=["worker"],
        )
        for w in range(t.workers):
            c = cells[w].tolist()
            read.add_metric([str(w)], float(c[ctr.CLEANER_BYTES_READ]))
            written.add_metric([str(w)], float(c[ctr.CLEANER_BYTES_WRITTEN]))
            for result, field in _CLEANER_RESULTS:
                runs.add_metric([result, str(w)], float(c[field]))
            delay.add_metric([str(w)], c[ctr.CLEANER_MAX_COMPACTION_DELAY_MS] / 1000)
            uncleanable.add_metric([str(w)], float(c[ctr.CLEANER_UNCLEANABLE]))
            if c[ctr.CLEANER_LAST_PROGRESS_MS]:
                progress.add_metric([str(w)], c[ctr.CLEANER_LAST_PROGRESS_MS] / 1000)
        yield read
        yield written
        yield runs
        yield delay
        yield uncleanable
        yield progress


def build_registry(collector: MetricsCollector) -> CollectorRegistry:
    """A private registry holding only ``collector`` (no process/platform/gc default collectors:
    the supervisor's own process stats would be mistaken for the broker's)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
