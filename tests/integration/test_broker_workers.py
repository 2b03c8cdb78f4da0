"""One, two and four workers: the same data in, the same logs out; Metadata shows one node per
worker (node i on port + i) and every partition led by the worker that owns it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import (
    check_partition_logs,
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce_confluent,
)

pytestmark = pytest.mark.integration

PARTITIONS = 32  # enough that every worker owns some (placement is the broker's to choose)
COUNT = 6_400


def metadata_from(bootstrap: str) -> tuple[list[tuple[int, str, int]], dict[int, int]]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics("spread", timeout=30)
    brokers = sorted((b.id, str(b.host), b.port) for b in md.brokers.values())
    topic = md.topics["spread"]
    assert topic.error is None, topic.error
    return brokers, {p.id: p.leader for p in topic.partitions.values()}


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_same_results_for_any_worker_count(
    broker_factory: Callable[..., BrokerProcess], workers: int
) -> None:
    broker = broker_factory(workers=workers)
    assert len(broker.worker_pids()) == workers, "one worker process per --workers"
    create_topic(broker.bootstrap, "spread", PARTITIONS)

    expected_brokers = [(i, broker.host, broker.base_port + i) for i in range(workers)]
    answers = [metadata_from(f"{broker.host}:{port}") for port in broker.ports]
    brokers, leaders = answers[0]
    assert brokers == expected_brokers
    assert sorted(leaders) == list(range(PARTITIONS))
    assert set(leaders.values()) == set(range(workers)), f"every worker leads some partition: {leaders}"
    for other in answers[1:]:  # any worker describes the whole broker, identically
        assert other == answers[0]

    # Message i goes to partition i % PARTITIONS explicitly, so the result is fully determined:
    # partition p holds messages p, p + 32, ... at offsets 0, 1, ...
    messages = make_messages(COUNT, keys=PARTITIONS, tag="spread")
    acked = produce_confluent(
        broker.bootstrap, "spread", messages, partition_of={i: i % PARTITIONS for i in range(COUNT)}
    )
    assert sorted((r.partition, r.offset, r.value) for r in acked) == sorted(
        (i % PARTITIONS, i // PARTITIONS, v) for i, (_, v) in enumerate(messages)
    )
    ends = {p: COUNT // PARTITIONS for p in range(PARTITIONS)}
    assert end_offsets("confluent", broker.bootstrap, "spread", PARTITIONS) == ends
    records = consume("confluent", broker.bootstrap, "spread", ends)
    check_partition_logs(records, messages, ends, f"{workers} workers")

    # "Led by its owner": librdkafka fetches from the leader Metadata names only, and a worker
    # that does not own the partition answers a Fetch NOT_LEADER_OR_FOLLOWER (test_broker_protocol:
    # only Produce is forwarded), so the round trip above fails unless every named leader owns its
    # partition. The data is in Kafka's layout: data_dir/<topic>-<partition>/<20-digit base offset>.log
    for p in range(PARTITIONS):
        segments = list((broker.data_dir / f"spread-{p}").glob("[0-9]" * 20 + ".log"))
        assert sum(s.stat().st_size for s in segments) > 0, f"spread-{p} has no data on disk"
