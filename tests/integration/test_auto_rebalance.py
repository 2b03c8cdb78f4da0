"""The controller's own partition moves (auto_rebalance.py) on real brokers: workers added between
two starts get partitions, and a worker carrying the hot partitions sheds one to the idle worker
while a producer keeps writing, with every acknowledged record still in place.

Starts broker processes; opens sockets.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from confluent_kafka import Producer

from shardbroker.client.admin import AdminClient
from tests.integration.broker_process import wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import consume, create_topic, end_offsets

pytestmark = pytest.mark.integration


def leaders(admin: AdminClient, topic: str) -> dict[int, int]:
    return dict(admin.topic(topic).partitions)


def test_workers_added_between_starts_get_partitions(broker_factory: BrokerFactory) -> None:
    two = broker_factory(workers=2, start=False)  # torn down first: its shm is not one's leftover
    one = broker_factory(workers=1, data_dir=two.data_dir)
    create_topic(one.bootstrap, "spread", 6)
    producer = Producer({"bootstrap.servers": one.bootstrap, "enable.idempotence": True})
    for p in range(6):
        for i in range(10):
            producer.produce("spread", f"{p}-{i}".encode(), partition=p)
    assert producer.flush(30) == 0
    assert one.stop() == 0
    two.start()
    with AdminClient(two.bootstrap) as admin:
        placed = leaders(admin, "spread")
        epochs = admin.topic("spread").leader_epochs
    assert Counter(placed.values()) == {0: 3, 1: 3}
    assert all(epochs[p] == 1 for p, w in placed.items() if w == 1)  # moved: a new leader epoch
    assert end_offsets("confluent", two.bootstrap, "spread", 6) == dict.fromkeys(range(6), 10)
    records = consume("confluent", two.bootstrap, "spread", dict.fromkeys(range(6), 10))
    assert sorted(r.value for r in records) == sorted(
        f"{p}-{i}".encode() for p in range(6) for i in range(10)
    )
    assert "spread 3 partitions over the 2 workers" in two.output()


def test_a_busy_worker_sheds_a_partition_to_the_idle_one(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=2, config={"leader.imbalance.check.interval.seconds": 1})
    create_topic(broker.bootstrap, "hot", 4)
    with AdminClient(broker.bootstrap) as admin:
        before = leaders(admin, "hot")
        hot = [p for p, w in before.items() if w == 0]  # both of worker 0's partitions are written
        assert len(hot) == 2
        acked: list[tuple[int, int]] = []
        failed: list[str] = []
        stop = threading.Event()

        def write() -> None:
            producer = Producer(
                {"bootstrap.servers": broker.bootstrap, "enable.idempotence": True, "linger.ms": 5}
            )

            def done(err: object, msg: object) -> None:
                if err is not None:
                    failed.append(str(err))
                else:
                    acked.append((msg.partition(), int(msg.value()[:10])))  # type: ignore[attr-defined]

            i = 0
            while not stop.is_set():
                producer.produce("hot", f"{i:010d}".encode() * 10, partition=hot[i % 2], on_delivery=done)
                producer.poll(0)
                i += 1
                if i % 500 == 0:
                    time.sleep(0.01)
            producer.flush(30)

        thread = threading.Thread(target=write)
        thread.start()
        try:
            moved = wait_for(
                lambda: [p for p in hot if leaders(admin, "hot")[p] == 1] or None,
                60,
                "one of worker 0's busy partitions moving to idle worker 1",
            )
            time.sleep(3)  # three more checks under the same load: the spread is final
        finally:
            stop.set()
            thread.join(60)
        after = leaders(admin, "hot")
    assert len(moved) == 1 and Counter(after.values()) == {0: 1, 1: 3}, after
    assert failed == []
    ends = end_offsets("confluent", broker.bootstrap, "hot", 4)
    for p in hot:
        values = [int(r.value[:10]) for r in consume("confluent", broker.bootstrap, "hot", {p: ends[p]})]
        assert values == sorted(v for q, v in acked if q == p)  # all there, once, in order
    assert "rebalancing: moving hot-" in broker.output()
