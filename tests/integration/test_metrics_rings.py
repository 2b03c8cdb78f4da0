"""The ring series of a real ``shardbroker serve`` (observability/ring_metrics.py): with LocalProducers
attached, the control rings and the local clients' rings aggregated per worker and role, frames
and bytes counted while a producer runs, gauges gone and counters kept (and growing with the
next client) after it closes, and ``promtool check metrics`` clean on the exposition; with a
Produce sent to the worker that does not own the partition, the forwarding rings' series."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardbroker.client.connection import BrokerConnection
from shardbroker.client.local_producer import LocalProducer
from shardbroker.ipc.local_attach import LocalBroker
from shardbroker.protocol import messages as m
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import create_topic
from tests.integration.test_prometheus_live import scrape_text

pytestmark = pytest.mark.integration

RingSeries = dict[tuple[str, str], float]  # (family without "shardbroker_ring_", ring) -> value


def ring_series(text: str) -> RingSeries:
    out: RingSeries = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("shardbroker_ring_"):
                out[(s.name.removeprefix("shardbroker_ring_"), s.labels["ring"])] = s.value
    return out


def promtool_check(text: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool not found: apt-get install prometheus"
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def owners(broker: BrokerProcess, topic: str, partitions: int) -> list[int]:
    """The worker owning each partition, as local clients see it."""
    local = LocalBroker(broker.data_dir)
    try:
        return [local.partition(topic, p)[1] for p in range(partitions)]
    finally:
        local.close()


def produce_and_scrape(broker: BrokerProcess, topic: str, count: int) -> tuple[int, str]:
    """``count`` 100-byte records into partitions 0 and 1 through one LocalProducer, then a scrape
    while it is still open; returns (its request ring capacity, the scrape). It is closed (and its
    rings unlinked) on return."""
    with LocalProducer(str(broker.data_dir)) as producer:
        for p in range(2):
            assert all(f.error is None for f in producer.send_batch(topic, [b"v" * 100] * count, partition=p))
        producer.flush(30)
        return producer.ring_capacity, scrape_text(broker)


def test_local_ring_series_follow_producers(broker: BrokerProcess) -> None:
    topic = "ring-metrics"
    create_topic(broker.bootstrap, topic, 2)
    workers = sorted(set(owners(broker, topic, 2)))
    roles = [f"local-w{w}-{role}" for w in workers for role in ("requests", "acks")]

    before = ring_series(scrape_text(broker))
    for w in range(2):  # the controller pushed each worker its metadata image at start
        assert before[("frames_total", f"ctl-w{w}-in")] > 0
        assert before[("capacity_bytes", f"ctl-w{w}-out")] > 0
    assert not any(ring.startswith("local-") for _, ring in before)

    capacity, text = produce_and_scrape(broker, topic, 5000)
    promtool_check(text)
    live = ring_series(text)
    for ring in roles:
        assert live[("frames_total", ring)] > 0, ring
        assert live[("bytes_total", ring)] >= 8 * live[("frames_total", ring)], ring
        assert 0 <= live[("used_bytes", ring)] <= live[("capacity_bytes", ring)], ring
    for w in workers:
        assert live[("capacity_bytes", f"local-w{w}-requests")] == capacity
        assert live[("bytes_total", f"local-w{w}-requests")] > 5000 * 100  # every record went through

    text = scrape_text(broker)  # the producer unlinked its rings when it closed
    promtool_check(text)
    closed = ring_series(text)
    for ring in roles:
        assert ("used_bytes", ring) not in closed and ("capacity_bytes", ring) not in closed, ring
        for family in ("frames_total", "bytes_total"):
            assert closed[(family, ring)] == live[(family, ring)], (family, ring)  # not reset

    # A second client adds to the same series (counted from its rings as last scraped).
    _, text = produce_and_scrape(broker, topic, 10)
    second = ring_series(text)
    after = ring_series(scrape_text(broker))
    for ring in roles:
        assert second[("frames_total", ring)] > closed[("frames_total", ring)], ring
        assert after[("frames_total", ring)] == second[("frames_total", ring)], ring
        assert ("capacity_bytes", ring) not in after, ring


def test_forwarding_ring_series(broker: BrokerProcess) -> None:
    topic = "ring-metrics-fwd"
    create_topic(broker.bootstrap, topic, 1)
    owner = owners(broker, topic, 1)[0]
    other = 1 - owner
    builder = RecordBatchBuilder()
    for i in range(10):
        builder.append(b"v%d" % i, None, 0, [])
    batch = builder.build()
    request = m.ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=batch)],
            )
        ],
    )
    with BrokerConnection(broker.host, broker.ports[other]) as conn:  # not the owner: forwarded
        response = conn.send(request)
    assert response.responses[0].partition_responses[0].error_code == 0
    text = scrape_text(broker)
    promtool_check(text)
    series = ring_series(text)
    pair = f"fwd-w{other}-to-w{owner}"
    assert series[("frames_total", pair)] >= 1 and series[("frames_total", f"{pair}-acks")] >= 1
    assert series[("bytes_total", pair)] > len(batch)
    assert series[("capacity_bytes", pair)] > 0 and series[("capacity_bytes", f"{pair}-acks")] > 0
    assert (("frames_total", f"fwd-w{owner}-to-w{other}")) not in series  # nothing went that way
