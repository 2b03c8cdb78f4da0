"""``shardbroker_consumergroup_lag`` on a real broker's /metrics (DESIGN.md, "Contracts" -> Metrics).

Opens sockets (through the clients and the HTTP scrape) and starts a broker process. Produce to a
2-partition topic, consume part of it with a confluent-kafka group member that commits each
record synchronously, and scrape: the lag of each partition is its end offset minus the group's
committed offset (Kafka's rule). Consume the rest: lag 0. Delete the group: its series are gone.
"""

from __future__ import annotations

import collections
import time
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, make_messages, produce_confluent
from tests.integration.test_metrics_endpoint import Labels, scrape, values

pytestmark = pytest.mark.integration

GROUP_CONFIG = {"group.initial.rebalance.delay.ms": 100, "group.min.session.timeout.ms": 1000}
LAG = "shardbroker_consumergroup_lag"
PARTITIONS = 2
COUNT = 200
TIMEOUT = 30.0


def lag_series(broker: BrokerProcess, group: str) -> dict[tuple[str, int], float]:
    return {
        (labels["topic"], int(labels["partition"])): v
        for labels, v in values(scrape(broker), LAG, group=group)
    }


def consume(consumer: Any, count: int) -> int:
    """Poll ``count`` records, committing each one synchronously after it is read."""
    got = 0
    deadline = time.monotonic() + TIMEOUT
    while got < count:
        assert time.monotonic() < deadline, f"read {got} of {count} records"
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        assert msg.error() is None, msg.error()
        consumer.commit(message=msg, asynchronous=False)
        got += 1
    return got


def test_lag_follows_commits_and_disappears_with_the_group(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(config=GROUP_CONFIG)
    bootstrap = broker.bootstrap
    topic, group = "lag-t", "lag-group"
    create_topic(bootstrap, topic, PARTITIONS)
    acked = produce_confluent(
        bootstrap,
        topic,
        make_messages(COUNT, 53, "lag", value_size=20),
        partition_of={i: i % PARTITIONS for i in range(COUNT)},
    )
    ends = collections.Counter(r.partition for r in acked)  # a fresh topic: end offset = count
    assert ends == {0: COUNT // 2, 1: COUNT // 2}

    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200,
        }
    )
    try:
        consumer.subscribe([topic])
        read = consume(consumer, COUNT * 3 // 10)
        tps = [confluent_kafka.TopicPartition(topic, p) for p in range(PARTITIONS)]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        expected = {
            (topic, p): float(ends[p] - committed[p])
            for p in range(PARTITIONS)
            if committed[p] >= 0  # a partition with nothing committed has no series
        }
        assert sum(o for o in committed.values() if o >= 0) == read  # offsets from 0, one commit each
        assert sum(expected.values()) > 0
        time.sleep(1.2)  # the workers publish once a second
        wait_for(lambda: lag_series(broker, group) == expected or None, 10.0, f"lag {expected}")
        samples = scrape(broker)
        for labels, v in values(samples, "shardbroker_partition_log_end_offset", topic=topic):
            assert v == ends[int(labels["partition"])]

        consume(consumer, COUNT - read)
        done = {(topic, p): 0.0 for p in range(PARTITIONS)}
        wait_for(lambda: lag_series(broker, group) == done or None, 10.0, "lag 0 once all is consumed")
    finally:
        consumer.close()  # leaves the group: Empty, deletable

    admin = AdminClient({"bootstrap.servers": bootstrap})
    assert admin.delete_consumer_groups([group])[group].result(20) is None

    def gone() -> list[tuple[str, Labels, float]] | None:
        s = scrape(broker)
        return s if not values(s, LAG, group=group) else None

    wait_for(gone, 10.0, f"the series of {group} gone")
    overflow = values(scrape(broker), "shardbroker_consumergroup_offsets_overflow")
    assert {labels["worker"]: v for labels, v in overflow} == {"0": 0.0, "1": 0.0}
