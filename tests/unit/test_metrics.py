"""metrics.py, ring_metrics.py, system_metrics.py and metrics_http.py: the exposition of a known
set of counters, the ring series, the /proc and data dir sources, and the responder."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from shardbroker.broker.log_cleaner_service import CleanerCounters
from shardbroker.broker.security_audit import SecurityAudit
from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_layout import RingStats
from shardbroker.metadata.image import PartitionImage, TopicImage
from shardbroker.observability.metrics import OPERATION_NAMES, RESOURCE_TYPE_NAMES, MetricsCollector
from shardbroker.observability.metrics_http import MetricsServer, respond
from shardbroker.observability.ring_metrics import ClientRings, ring_label
from shardbroker.observability.system_metrics import DataDirSource, WorkerProcessSource
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.supervision.heartbeat import HeartbeatTable, segment_name
from shardbroker.supervision.policy import SlotState

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def instance() -> str:
    return f"m{uuid.uuid4().hex[:12]}"


@pytest.fixture
def table(instance: str) -> Iterator[CounterTable]:
    t = CounterTable.create(instance, workers=2, rows=16)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def heartbeats(instance: str) -> Iterator[HeartbeatTable]:
    with HeartbeatTable.create(segment_name(instance), 2) as hb:
        yield hb


def scrape(collector: MetricsCollector) -> tuple[str, Samples]:
    text = collector.exposition().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def fill(table: CounterTable) -> None:
    w0, w1 = table.worker(0), table.worker(1)
    a = w0.open_partition("orders", 0)
    w0.publish_partition(a, 10, 1000, 500, 10, 2, 1200, 3, 4, segment_count=3, last_stable_offset=6)
    b = w1.open_partition("orders", 1)
    w1.publish_partition(b, 7, 0, 0, 7, 0, 0, 1, 0)
    broken = w0.open_partition("orders", 2)
    w0.publish_partition(broken, 0, 0, 0, 0, 0, 0, 0, 0, offline=True)
    gone = w1.open_partition("old", 0)
    w1.publish_partition(gone, 99, 0, 0, 0, 0, 0, 0, 0)
    w1.close_partition(gone)
    w0.request(0, 0.0002, 0)  # Produce, (100 us, 250 us]
    w0.request(0, 0.02, 0)  # (10 ms, 25 ms]
    w0.request(3, 0.001, 0)  # Metadata
    w1.request(1, 0.5, 0)  # Fetch, le 0.5
    w1.error(0, 2)  # a CORRUPT_MESSAGE partition of a Produce
    w1.error(0, 2)
    w1.error(-1, 2)  # a broken frame: api unknown
    w0.add_connections(3)
    w1.add_fetch_waiters(1)
    w1.flush(0.003)  # (2.5 ms, 5 ms]
    w1.flush(0.02)  # (10 ms, 25 ms]
    w0.publish()
    w1.publish()


def test_partition_series(table: CounterTable) -> None:
    fill(table)
    _, s = scrape(MetricsCollector(table))
    p0 = {"topic": "orders", "partition": "0", "worker": "0"}
    p1 = {"topic": "orders", "partition": "1", "worker": "1"}
    assert s[key("shardbroker_partition_messages_in_total", **p0)] == 10
    assert s[key("shardbroker_partition_messages_in_total", **p1)] == 7
    assert s[key("shardbroker_partition_bytes_in_total", **p0)] == 1000
    assert s[key("shardbroker_partition_bytes_out_total", **p0)] == 500
    assert s[key("shardbroker_partition_log_end_offset", **p0)] == 10
    assert s[key("shardbroker_partition_log_start_offset", **p0)] == 2
    assert s[key("shardbroker_partition_log_size_bytes", **p0)] == 1200
    assert s[key("shardbroker_partition_produce_requests_total", **p0)] == 3
    assert s[key("shardbroker_partition_fetch_requests_total", **p0)] == 4
    assert s[key("shardbroker_partition_log_segments", **p0)] == 3
    assert s[key("shardbroker_partition_log_segments", **p1)] == 1
    assert s[key("shardbroker_partition_last_stable_offset", **p0)] == 6
    assert s[key("shardbroker_partition_last_stable_offset", **p1)] == 7  # no transactions: the end
    # A freed row is not exported.
    assert not any(dict(labels).get("topic") == "old" for _, labels in s)


def test_request_series_and_histogram(table: CounterTable) -> None:
    fill(table)
    text, s = scrape(MetricsCollector(table))
    assert s[key("shardbroker_requests_total", api="Produce", worker="0")] == 2
    assert s[key("shardbroker_requests_total", api="Metadata", worker="0")] == 1
    assert s[key("shardbroker_requests_total", api="Fetch", worker="1")] == 1
    assert key("shardbroker_requests_total", api="Fetch", worker="0") not in s  # zeros left out
    errors = key("shardbroker_request_errors_total", api="Produce", worker="1", error="CORRUPT_MESSAGE")
    assert s[errors] == 2
    unknown = key("shardbroker_request_errors_total", api="Unknown", worker="1", error="CORRUPT_MESSAGE")
    assert s[unknown] == 1
    produce = {"api": "Produce", "worker": "0"}
    buckets = {
        le: s[key("shardbroker_request_duration_seconds_bucket", le=le, **produce)]
        for le in ("0.0001", "0.00025", "0.01", "0.025", "10.0", "+Inf")
    }
    assert buckets == {"0.0001": 0, "0.00025": 1, "0.01": 1, "0.025": 2, "10.0": 2, "+Inf": 2}
    assert s[key("shardbroker_request_duration_seconds_count", **produce)] == 2
    assert s[key("shardbroker_request_duration_seconds_sum", **produce)] == pytest.approx(0.0202)
    les = [
        line for line in text.splitlines() if line.startswith("shardbroker_request_duration_seconds_bucket{")
    ]
    assert len(les) == 3 * (len(ctr.BUCKETS) + 1)  # three (api, worker) pairs, 17 buckets each
    assert s[key("shardbroker_connections", worker="0")] == 3
    assert s[key("shardbroker_fetch_waiters", worker="1")] == 1
    assert s[key("shardbroker_partition_rows_overflow", worker="0")] == 0


def test_security_series(instance: str) -> None:
    t = CounterTable.create(instance, workers=2, rows=4, listeners=2)
    try:
        listeners = ["PLAINTEXT", "SASL_SSL"]
        w0, w1 = t.worker(0), t.worker(1)
        # Through the audit trail, as the workers write them.
        a0, a1 = SecurityAudit(w0, listeners), SecurityAudit(w1, listeners)
        for _ in range(3):
            a0.authentication("SASL_SSL", "h", "SCRAM-SHA-512", False, user="eve", reason="wrong password")
        a1.authentication("SASL_SSL", "h", "SCRAM-SHA-512", False, user="eve", reason="wrong password")
        a1.authentication("SASL_SSL", "h", "SCRAM-SHA-512", True)
        a1.authentication("SASL_SSL", "h", "GSSAPI", False, reason="unsupported mechanism")
        a0.denied("User:eve", "h", AclOperation.WRITE, ResourceType.TOPIC, "t", "Produce")
        a1.denied("User:eve", "h", AclOperation.DESCRIBE, ResourceType.GROUP, "g", "OffsetFetch")
        a1.denied("User:eve", "h", AclOperation.DESCRIBE, ResourceType.GROUP, "g", "OffsetFetch")
        text, s = scrape(MetricsCollector(t, listeners=listeners))
        auth = "shardbroker_authentication_total"
        sasl = {"listener": "SASL_SSL", "mechanism": "SCRAM-SHA-512"}
        assert s[key(auth, result="failure", worker="0", **sasl)] == 3
        assert s[key(auth, result="failure", worker="1", **sasl)] == 1
        assert s[key(auth, result="success", worker="1", **sasl)] == 1
        unknown = key(auth, listener="SASL_SSL", mechanism="UNKNOWN", result="failure", worker="1")
        assert s[unknown] == 1
        assert len([k for k in s if k[0] == auth]) == 4  # zeros left out
        denied = "shardbroker_authorization_denied_total"
        assert s[key(denied, operation="WRITE", resource_type="TOPIC", worker="0")] == 1
        assert s[key(denied, operation="DESCRIBE", resource_type="GROUP", worker="1")] == 2
        assert len([k for k in s if k[0] == denied]) == 2
        assert "# TYPE shardbroker_authentication_total counter" in text
        assert "# TYPE shardbroker_authorization_denied_total counter" in text
        # A user name never becomes a label value.
        assert "eve" not in text
        # Without the config's names, a listener is named by its index.
        _, s = scrape(MetricsCollector(t))
        by_index = {"listener": "listener1", "mechanism": "SCRAM-SHA-512"}
        assert s[key(auth, result="success", worker="1", **by_index)] == 1
    finally:
        t.close()


def test_operation_and_resource_type_names() -> None:
    assert OPERATION_NAMES[AclOperation.IDEMPOTENT_WRITE] == "IDEMPOTENT_WRITE"
    assert RESOURCE_TYPE_NAMES[ResourceType.TRANSACTIONAL_ID] == "TRANSACTIONAL_ID"
    assert len(OPERATION_NAMES) == ctr.N_OPERATIONS == max(AclOperation) + 1
    assert len(RESOURCE_TYPE_NAMES) == ctr.N_RESOURCE_TYPES == max(ResourceType) + 1


def test_workers_rings_build_and_sources(table: CounterTable, heartbeats: HeartbeatTable) -> None:
    c0, c1 = heartbeats.cell(0), heartbeats.cell(1)
    c0.reset(0, 1.0)
    c0.claim(1234, SlotState.READY)
    c1.reset(2, 1.0)
    c1.mark_dead(-9)

    def lag() -> Iterator[Metric]:
        g = GaugeMetricFamily("shardbroker_consumergroup_lag", "lag", labels=["group", "topic", "partition"])
        g.add_metric(["g", "t", "0"], 5)
        yield g

    collector = MetricsCollector(
        table, lambda: heartbeats, lambda: [("ctl-w0-in", RingStats(128, 4096, 1024, 9))]
    )
    collector.add_source(lag)
    _, s = scrape(collector)
    assert s[key("shardbroker_worker_up", worker="0")] == 1
    assert s[key("shardbroker_worker_up", worker="1")] == 0
    assert s[key("shardbroker_worker_restarts_total", worker="1")] == 2
    assert s[key("shardbroker_ring_used_bytes", ring="ctl-w0-in")] == 128
    assert s[key("shardbroker_ring_capacity_bytes", ring="ctl-w0-in")] == 4096
    assert s[key("shardbroker_ring_frames_total", ring="ctl-w0-in")] == 9
    assert s[key("shardbroker_ring_bytes_total", ring="ctl-w0-in")] == 1024
    assert s[key("shardbroker_consumergroup_lag", group="g", topic="t", partition="0")] == 5
    build = [labels for name, labels in s if name == "shardbroker_build_info"]
    assert len(build) == 1 and {"version", "python"} == {k for k, _ in build[0]}


@pytest.mark.parametrize(
    "name,label",
    [
        ("lc4242-0-req-w1", "local-w1-requests"),
        ("lc4242-1-ack-w1", "local-w1-acks"),
        ("lc7-12-wake", "local-wake"),
        ("lc99-3-fwd-w0-to-w1-req", "fwd-w0-to-w1"),
        ("lc99-4-fwd-w1-to-w0-ack", "fwd-w1-to-w0-acks"),
        ("lc99-5-fwd-w10-to-w2-req", "fwd-w10-to-w2"),
        ("ctl-w0-in", None),
        ("local-dir", None),
        ("lc1-2-req-w", None),
        ("lc1-req-w0", None),
        ("lcx-0-wake", None),
        ("lc1-0-wake-2", None),
        ("lc1-0-fwd-w0-to-w1", None),
        ("lc1-0-reqs-w0", None),
    ],
)
def test_ring_label(name: str, label: str | None) -> None:
    assert ring_label(name) == label


def test_client_rings_summed_per_label_and_monotonic(instance: str) -> None:
    rings = ClientRings(instance)
    with contextlib.ExitStack() as stack:

        def ring(name: str, capacity: int = 256, inst: str = instance) -> Ring:
            return stack.enter_context(Ring.create(inst, name, capacity))

        assert rings() == []
        a, b = ring("lc10-0-req-w0"), ring("lc11-0-req-w0", 512)
        ring("lc10-1-wake", 64)
        ring("ctl-w0-in").writer().try_write(b"not a client ring")
        ring("lc10-0-req-w0", inst=f"{instance}x").writer().try_write(b"another broker's")
        assert a.writer().try_write_many([bytes(8), bytes(8)]) == 2
        assert b.writer().try_write(bytes(16))
        a.reader().read_batch(1)
        assert rings() == [
            ("local-w0-requests", RingStats(16 + 24, 768, 56, 3)),
            ("local-wake", RingStats(0, 64, 0, 0)),
        ]
        a.close()  # the client went away: its totals stay in the counters, not in the gauges
        assert b.writer().try_write(bytes(16))
        assert rings()[0] == ("local-w0-requests", RingStats(48, 512, 80, 4))
        b.close()
        assert rings()[0] == ("local-w0-requests", RingStats(0, 0, 80, 4))
        c = ring("lc12-0-req-w0")  # a new client of the same worker adds to the totals
        c.writer().try_write(bytes(8))
        assert rings()[0] == ("local-w0-requests", RingStats(16, 256, 96, 5))

        d = ring("lc20-0-fwd-w1-to-w0-ack")
        d.writer().try_write_many([b"x"] * 3)
        assert ("fwd-w1-to-w0-acks", RingStats(48, 256, 48, 3)) in rings()
        d.close()  # gone and replaced under the same name between two scrapes
        ring("lc20-0-fwd-w1-to-w0-ack").writer().try_write(b"y")
        assert ("fwd-w1-to-w0-acks", RingStats(16, 256, 64, 4)) in rings()


def test_ring_series_of_aggregated_rings(table: CounterTable, instance: str) -> None:
    rings = ClientRings(instance)
    collector = MetricsCollector(table, rings=rings)
    with Ring.create(instance, "lc10-0-ack-w1", 256) as acks:
        acks.writer().try_write(bytes(100))
        text, s = scrape(collector)
        series = {"ring": "local-w1-acks"}
        assert s[key("shardbroker_ring_used_bytes", **series)] == 112
        assert s[key("shardbroker_ring_capacity_bytes", **series)] == 256
        assert s[key("shardbroker_ring_frames_total", **series)] == 1
        assert s[key("shardbroker_ring_bytes_total", **series)] == 112
        assert "# TYPE shardbroker_ring_frames_total counter" in text
    _, s = scrape(collector)
    assert key("shardbroker_ring_used_bytes", **series) not in s
    assert key("shardbroker_ring_capacity_bytes", **series) not in s
    assert s[key("shardbroker_ring_frames_total", **series)] == 1
    assert s[key("shardbroker_ring_bytes_total", **series)] == 112


def test_relabelled_row_gets_its_new_name(table: CounterTable) -> None:
    w = table.worker(0)
    collector = MetricsCollector(table)
    r = w.open_partition("a", 0)
    scrape(collector)
    w.close_partition(r)
    w.publish_partition(w.open_partition("b", 3), 1, 0, 0, 0, 0, 0, 0, 0)  # same row, new generation
    _, s = scrape(collector)
    assert s[key("shardbroker_partition_messages_in_total", topic="b", partition="3", worker="0")] == 1
    assert not any(dict(labels).get("topic") == "a" for _, labels in s)


def test_respond(table: CounterTable) -> None:
    registry = MetricsCollector(table).exposition
    ok = respond(b"GET /metrics?x=1 HTTP/1.1\r\nHost: x", registry)
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n") and b"shardbroker_build_info" in ok
    assert respond(b"GET / HTTP/1.1", registry).startswith(b"HTTP/1.1 404")
    assert respond(b"POST /metrics HTTP/1.1", registry).startswith(b"HTTP/1.1 405")
    assert respond(b"garbage", registry).startswith(b"HTTP/1.1 400")
    head = respond(b"HEAD /metrics HTTP/1.1", registry)
    assert head.endswith(b"\r\n\r\n") and b"Content-Length: 0" not in head


def test_server_on_a_selector_loop(table: CounterTable) -> None:
    sel = selectors.DefaultSelector()
    server = MetricsServer("127.0.0.1", 0, MetricsCollector(table).exposition)
    server.start(sel.register, sel.unregister)
    try:

        def get(request: bytes) -> bytes:
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
                c.sendall(request)
                c.setblocking(False)
                chunks = []
                for _ in range(1000):
                    for k, mask in sel.select(0.01):
                        k.data(mask)
                    try:
                        chunk = c.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        return b"".join(chunks)
                    chunks.append(chunk)
            raise AssertionError("no complete response")

        idle = socket.create_connection(("127.0.0.1", server.port))  # never sends: must not block
        body = get(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        assert body.startswith(b"HTTP/1.1 200 OK") and b"shardbroker_build_info" in body
        assert get(b"GET /nope HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 404")
        idle.close()
    finally:
        server.close()
        sel.close()
    assert server.sock is None


def test_flush_histogram(table: CounterTable) -> None:
    fill(table)
    _, s = scrape(MetricsCollector(table))
    w1 = {"worker": "1"}
    buckets = {
        le: s[key("shardbroker_log_flush_duration_seconds_bucket", le=le, **w1)]
        for le in ("0.0025", "0.005", "0.01", "0.025", "+Inf")
    }
    assert buckets == {"0.0025": 0, "0.005": 1, "0.01": 1, "0.025": 2, "+Inf": 2}
    assert s[key("shardbroker_log_flush_duration_seconds_sum", **w1)] == pytest.approx(0.023)
    assert s[key("shardbroker_log_flush_duration_seconds_count", worker="0")] == 0


def test_partition_offline_follows_owners_and_failed_logs(
    table: CounterTable, heartbeats: HeartbeatTable
) -> None:
    fill(table)
    heartbeats.cell(0).reset(0, 1.0)
    heartbeats.cell(0).claim(1234, SlotState.READY)
    heartbeats.cell(1).reset(0, 1.0)
    heartbeats.cell(1).claim(1235, SlotState.READY)
    orders = TopicImage("orders", uuid.uuid4(), tuple(PartitionImage(i, i % 2) for i in range(4)))
    topics = [orders]
    collector = MetricsCollector(table, lambda: heartbeats, topics=lambda: topics)

    def offline() -> dict[int, float]:
        _, s = scrape(collector)
        return {
            int(dict(labels)["partition"]): v
            for (name, labels), v in s.items()
            if name == "shardbroker_partition_offline" and dict(labels)["topic"] == "orders"
        }

    # Partition 2's log failed (its row's flag); the rest are served.
    assert offline() == {0: 0, 1: 0, 2: 1, 3: 0}
    heartbeats.cell(1).mark_dead(-9)  # worker 1 down: its partitions 1 and 3 too
    assert offline() == {0: 0, 1: 1, 2: 1, 3: 1}
    heartbeats.cell(1).reset(1, 2.0)  # restarting: not serving yet
    assert offline() == {0: 0, 1: 1, 2: 1, 3: 1}
    topics.clear()  # the topic deleted: its series go
    assert offline() == {}


def test_worker_process_series_from_proc(tmp_path: Path, heartbeats: HeartbeatTable) -> None:
    proc = tmp_path / "proc"
    (proc / "4321" / "fd").mkdir(parents=True)
    for fd in ("0", "1", "7"):
        (proc / "4321" / "fd" / fd).touch()
    ticks, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1700000000\n")
    # pid (comm) state, then fields 4..24: utime=14, stime=15, starttime=22, vsize=23, rss=24.
    fields = ["S"] + ["0"] * 21
    fields[11], fields[12] = str(3 * ticks), str(ticks)  # 4 s of CPU
    fields[19], fields[20], fields[21] = str(50 * ticks), "123456789", "1000"
    (proc / "4321" / "stat").write_text(f"4321 (python3 (w) x) {' '.join(fields)}\n")
    (proc / "4321" / "io").write_text("rchar: 1\nwchar: 2\nwrite_bytes: 65536\ncancelled_write_bytes: 0\n")
    heartbeats.cell(0).reset(0, 1.0)
    heartbeats.cell(0).claim(4321, SlotState.READY)
    heartbeats.cell(1).reset(0, 1.0)
    heartbeats.cell(1).claim(9999, SlotState.READY)  # no such pid under proc: left out
    source = WorkerProcessSource(lambda: heartbeats, proc=str(proc))
    s = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for f in source()
        for sample in f.samples
    }
    w0 = {"worker": "0"}
    assert s == {
        key("process_cpu_seconds_total", **w0): 4.0,
        key("process_resident_memory_bytes", **w0): 1000.0 * page,
        key("process_virtual_memory_bytes", **w0): 123456789.0,
        key("process_start_time_seconds", **w0): 1700000050.0,
        key("process_open_fds", **w0): 3.0,
        key("shardbroker_disk_written_bytes_total", **w0): 65536.0,
    }
    heartbeats.cell(0).mark_dead(0)  # reaped: its pid is not read again
    assert all(not list(f.samples) for f in source())


def test_worker_process_series_of_a_real_process(heartbeats: HeartbeatTable) -> None:
    heartbeats.cell(0).reset(0, 1.0)
    heartbeats.cell(0).claim(os.getpid(), SlotState.READY)
    s = {sample.name: sample.value for f in WorkerProcessSource(lambda: heartbeats)() for sample in f.samples}
    assert s["process_resident_memory_bytes"] > 1 << 20 and s["process_open_fds"] >= 3
    assert 0 < s["process_start_time_seconds"] <= time.time()


def test_data_dir_space(tmp_path: Path) -> None:
    s = {sample.name: sample.value for f in DataDirSource(tmp_path)() for sample in f.samples}
    st = os.statvfs(tmp_path)
    assert s["shardbroker_data_dir_size_bytes"] == st.f_blocks * st.f_frsize
    assert 0 < s["shardbroker_data_dir_free_bytes"] <= s["shardbroker_data_dir_size_bytes"]
    assert list(DataDirSource(tmp_path / "missing")()) == []


def test_transaction_series(table: CounterTable) -> None:
    w1 = table.worker(1)
    w1.transaction_ended(ctr.TXN_COMMIT, 0.2)
    w1.transaction_ended(ctr.TXN_COMMIT, 0.3)
    w1.transaction_ended(ctr.TXN_TIMEOUT, 60.0)
    w1.set_transactions_ongoing(2)
    _, s = scrape(MetricsCollector(table))
    results = {r: s[key("shardbroker_transactions_total", result=r, worker="1")] for r in ctr.TXN_RESULTS}
    assert results == {"commit": 2, "abort": 0, "timeout": 1, "fenced": 0}
    assert s[key("shardbroker_transactions_ongoing", worker="1")] == 2
    assert s[key("shardbroker_transactions_ongoing", worker="0")] == 0
    h = "shardbroker_transaction_duration_seconds"
    buckets = {le: s[key(f"{h}_bucket", le=le, worker="1")] for le in ("0.1", "0.25", "0.5", "60.0", "+Inf")}
    assert buckets == {"0.1": 0, "0.25": 1, "0.5": 2, "60.0": 3, "+Inf": 3}
    assert s[key(f"{h}_sum", worker="1")] == pytest.approx(60.5)


def test_group_rebalance_series(table: CounterTable) -> None:
    w1 = table.worker(1)
    w1.rebalance("consumer")
    w1.rebalance("consumer")
    w1.rebalance("classic")
    _, s = scrape(MetricsCollector(table))
    name = "shardbroker_group_rebalances_total"
    assert s[key(name, protocol="consumer", worker="1")] == 2
    assert s[key(name, protocol="classic", worker="1")] == 1
    # Both protocols always have a series (the dashboard's rate() needs one before any rebalance).
    assert s[key(name, protocol="consumer", worker="0")] == 0
    assert s[key(name, protocol="classic", worker="0")] == 0


def test_log_cleaner_series(table: CounterTable) -> None:
    w0, w1 = table.worker(0), table.worker(1)
    for w, topic, partition in ((w0, "orders", 0), (w0, "_schemas", 0), (w1, "_schemas", 1), (w1, "kv", 0)):
        w.open_partition(topic, partition)
    w0.publish_cleaner(
        CleanerCounters(
            bytes_read=3_000,
            bytes_written=1_000,
            runs=4,
            errors=1,
            max_compaction_delay_ms=2_500,
            dirty_ratios={("_schemas", 0): 0.5},
            uncleanable={("_schemas", 0)},
            last_progress_ms=1_700_000_000_250,
        )
    )
    w1.publish_cleaner(CleanerCounters(aborted=2, dirty_ratios={("_schemas", 1): 0.0, ("kv", 0): 0.875}))
    text, s = scrape(MetricsCollector(table))
    dirty = {
        (dict(labels)["topic"], dict(labels)["partition"], dict(labels)["worker"]): v
        for (name, labels), v in s.items()
        if name == "shardbroker_partition_dirty_ratio"
    }
    # Compacted partitions only (a measured 0 is a series too); "orders" has none.
    assert dirty == {("_schemas", "0", "0"): 0.5, ("_schemas", "1", "1"): 0.0, ("kv", "0", "1"): 0.875}
    assert text.count("# TYPE shardbroker_partition_dirty_ratio gauge") == 1

    def per_worker(name: str, **labels: str) -> list[float]:
        return [s[key(name, **labels, worker=str(w))] for w in (0, 1)]

    assert per_worker("shardbroker_log_cleaner_bytes_read_total") == [3_000, 0]
    assert per_worker("shardbroker_log_cleaner_bytes_written_total") == [1_000, 0]
    runs = {
        r: per_worker("shardbroker_log_cleaner_runs_total", result=r) for r in ("success", "error", "aborted")
    }
    assert runs == {"success": [4, 0], "error": [1, 0], "aborted": [0, 2]}
    assert per_worker("shardbroker_log_cleaner_max_compaction_delay_seconds") == [2.5, 0]
    assert per_worker("shardbroker_log_cleaner_uncleanable_partitions") == [1, 0]
    # Worker 1's cleaner has made no progress yet (or is disabled): no series, so no stuck alert.
    progress = "shardbroker_log_cleaner_last_progress_timestamp_seconds"
    assert s[key(progress, worker="0")] == 1_700_000_000.25
    assert key(progress, worker="1") not in s
    # The next look finds "kv" no longer compacted: its series ends.
    w1.publish_cleaner(CleanerCounters(aborted=2, dirty_ratios={("_schemas", 1): 0.25}))
    _, s = scrape(MetricsCollector(table))
    assert key("shardbroker_partition_dirty_ratio", topic="kv", partition="0", worker="1") not in s
    assert s[key("shardbroker_partition_dirty_ratio", topic="_schemas", partition="1", worker="1")] == 0.25


def test_quota_throttle_series(table: CounterTable) -> None:
    w0, w1 = table.worker(0), table.worker(1)
    w0.publish_quotas([2500, 0, 0, 0], [(0, "alice", "etl", 2000), (0, "", "noisy", 500)])
    w1.publish_quotas([0, 0, 0, 3000], [(3, "bob", "", 3000)])
    _, s = scrape(MetricsCollector(table))
    assert s[key("shardbroker_quota_throttle_time_seconds_total", quota="produce", worker="0")] == 2.5
    assert s[key("shardbroker_quota_throttle_time_seconds_total", quota="fetch", worker="0")] == 0.0
    assert (
        s[key("shardbroker_quota_throttle_time_seconds_total", quota="controller_mutation", worker="1")]
        == 3.0
    )
    clients = {
        labels: v
        for (name, labels), v in s.items()
        if name == "shardbroker_quota_client_throttle_time_seconds_total"
    }
    assert clients == {
        frozenset({("quota", "produce"), ("user", "alice"), ("client_id", "etl"), ("worker", "0")}): 2.0,
        frozenset({("quota", "produce"), ("user", ""), ("client_id", "noisy"), ("worker", "0")}): 0.5,
        frozenset(
            {("quota", "controller_mutation"), ("user", "bob"), ("client_id", ""), ("worker", "1")}
        ): 3.0,
    }
