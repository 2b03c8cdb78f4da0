"""The /metrics endpoint of a real ``shardbroker serve`` (DESIGN.md, "Contracts" -> Metrics).

Produce with confluent-kafka to a 3-partition topic, consume it back, scrape over HTTP: the
per-partition counts equal what each partition was given, requests and bytes out are counted,
every worker is up, each partition has its segments and is online, each worker has its process
and flush series; then SIGKILL a worker and watch its restart counter.
"""

from __future__ import annotations

import os
import signal
import urllib.error
import urllib.request
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import consume_confluent, create_topic, make_messages, produce_confluent

pytestmark = pytest.mark.integration

Labels = dict[str, str]


def scrape(broker: BrokerProcess) -> list[tuple[str, Labels, float]]:
    url = f"http://{broker.host}:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return [(s.name, s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples]


def values(samples: list[tuple[str, Labels, float]], name: str, **match: str) -> list[tuple[Labels, float]]:
    return [
        (labels, v)
        for n, labels, v in samples
        if n == name and all(labels.get(k) == want for k, want in match.items())
    ]


def test_metrics_follow_produce_consume_and_restarts(broker: BrokerProcess) -> None:
    topic = "metrics-t"
    count = 3000
    create_topic(broker.bootstrap, topic, 3)
    messages = make_messages(count, keys=101, tag="metrics")
    acked = produce_confluent(broker.bootstrap, topic, messages)
    per_partition = Counter(r.partition for r in acked)
    assert sum(per_partition.values()) == count
    records = consume_confluent(broker.bootstrap, topic, dict(per_partition))
    assert len(records) == count

    def produced_counted() -> list[tuple[str, Labels, float]] | None:
        s = scrape(broker)
        # Workers publish once a second (ipc/counters.py): wait for the tick after the consume too.
        got = values(s, "shardbroker_partition_messages_in_total", topic=topic)
        out = values(s, "shardbroker_partition_bytes_out_total", topic=topic)
        # A Fetch is counted as a request when its response is built, after its partitions'
        # bytes out: a tick may fall between the two, so wait for both.
        fetches = values(s, "shardbroker_requests_total", api="Fetch")
        done = sum(v for _, v in got) == count and sum(v for _, v in out) > 0 and fetches
        return s if done else None

    samples = wait_for(produced_counted, 10.0, f"{count} messages in, and bytes out, for {topic}")
    got = {
        int(labels["partition"]): v
        for labels, v in values(samples, "shardbroker_partition_messages_in_total", topic=topic)
    }
    assert got == {p: float(n) for p, n in per_partition.items()}
    workers = {
        labels["worker"]
        for labels, _ in values(samples, "shardbroker_partition_messages_in_total", topic=topic)
    }
    assert workers <= {"0", "1"}
    for labels, v in values(samples, "shardbroker_partition_log_end_offset", topic=topic):
        assert v == per_partition[int(labels["partition"])]
    assert sum(v for _, v in values(samples, "shardbroker_partition_bytes_out_total", topic=topic)) > 0
    assert sum(v for _, v in values(samples, "shardbroker_partition_bytes_in_total", topic=topic)) > 0
    assert sum(v for _, v in values(samples, "shardbroker_partition_log_size_bytes", topic=topic)) > 0
    assert sum(v for _, v in values(samples, "shardbroker_requests_total", api="Produce")) > 0
    assert sum(v for _, v in values(samples, "shardbroker_requests_total", api="Fetch")) > 0
    assert sum(v for _, v in values(samples, "shardbroker_request_duration_seconds_count", api="Produce")) > 0
    assert {labels["worker"]: v for labels, v in values(samples, "shardbroker_worker_up")} == {
        "0": 1.0,
        "1": 1.0,
    }
    assert {labels["worker"]: v for labels, v in values(samples, "shardbroker_worker_restarts_total")} == {
        "0": 0.0,
        "1": 0.0,
    }
    rings = {labels["ring"]: v for labels, v in values(samples, "shardbroker_ring_capacity_bytes")}
    assert set(rings) == {"ctl-w0-in", "ctl-w0-out", "ctl-w1-in", "ctl-w1-out"} and min(rings.values()) > 0
    assert values(samples, "shardbroker_build_info")
    # Segments, offline flags (one per partition of the metadata), flushes, worker processes, disk.
    segments = values(samples, "shardbroker_partition_log_segments", topic=topic)
    assert len(segments) == 3 and all(v >= 1 for _, v in segments)
    offline = {
        labels["partition"]: v for labels, v in values(samples, "shardbroker_partition_offline", topic=topic)
    }
    assert offline == {"0": 0.0, "1": 0.0, "2": 0.0}
    assert {
        labels["worker"] for labels, _ in values(samples, "shardbroker_log_flush_duration_seconds_count")
    } == {
        "0",
        "1",
    }
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"):
        assert {labels["worker"] for labels, v in values(samples, name) if v > 0} == {"0", "1"}, name
    ((_, size),) = values(samples, "shardbroker_data_dir_size_bytes")
    assert size > 0

    # Not found elsewhere.
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://{broker.host}:{broker.metrics_port}/", timeout=10)
    assert info.value.code == 404

    # A killed worker is restarted; its slot's restart counter says so, and it comes back up.
    os.kill(broker.worker_pid(1), signal.SIGKILL)

    def restarted() -> list[tuple[str, Labels, float]] | None:
        s = scrape(broker)
        restarts = dict((labels["worker"], v) for labels, v in values(s, "shardbroker_worker_restarts_total"))
        up = dict((labels["worker"], v) for labels, v in values(s, "shardbroker_worker_up"))
        return s if restarts == {"0": 0.0, "1": 1.0} and up == {"0": 1.0, "1": 1.0} else None

    samples = wait_for(restarted, 30.0, "worker 1 restarted and up again")
    # Worker 0's counters were not touched by worker 1's death.
    for labels, v in values(samples, "shardbroker_partition_messages_in_total", topic=topic, worker="0"):
        assert v == per_partition[int(labels["partition"])]
