"""The README's cut-over guide, step by step, between two brokers on loopback.

Starts processes (two brokers, the mirror, ``shardbroker mirror status``), opens sockets, writes
temp dirs. The application is a producer and a consumer group ``orders-app`` on topic ``orders``;
the mirror runs with the guide's settings (IdentityReplicationPolicy, the group's offsets synced
to the target), and the test follows the guide: wait for LAG 0 in ``mirror status``, stop the
producers, LAG 0 again, let the consumers finish and stop them, wait for the group's translated
offsets on the target, stop the mirror (SIGTERM, exit 0), then move consumers and producers to
the target. The moved consumer must see every record produced after the move (no loss) and
re-read at most the records since the last offset sync per partition (``offset.lag.max``, and a
batch at most)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic
from tests.integration.mirror_process import ROUND, FeedThread, end_offsets, mirror_config, running_mirror

pytestmark = pytest.mark.integration

TOPIC, GROUP, PARTITIONS = "orders", "orders-app", 4
#: The most a moved group may read again per partition: the records since the last offset sync,
#: offset.lag.max's default (100), and a batch at most (a sync is written after a batch).
REREAD_MAX = 100 + ROUND


def mirror_status(config: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "shardbroker.cli.main", "mirror", "status", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def status_lags(text: str) -> dict[int, int]:
    """Partition -> LAG of ``TOPIC`` in the partitions table of ``mirror status``."""
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["TOPIC", "PARTITION"])
    columns = lines[header].split()
    lags = {}
    for line in lines[header + 1 :]:
        cells = line.split()
        if len(cells) != len(columns):
            break
        row = dict(zip(columns, cells, strict=True))
        if row["TOPIC"] == TOPIC:
            lags[int(row["PARTITION"])] = int(row["LAG"])
    return lags


def group_consumer(bootstrap: str) -> Any:
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": GROUP,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    consumer.subscribe([TOPIC])
    return consumer


def consume_until(consumer: Any, done: Any, what: str) -> list[Any]:
    """Poll (committing as it goes) until ``done(records so far)``."""
    got: list[Any] = []
    deadline = time.monotonic() + IO_TIMEOUT
    while not done(got):
        assert time.monotonic() < deadline, f"{what}: {len(got)} records"
        batch: list[Any] = consumer.consume(1000, timeout=0.5)
        for msg in batch:
            assert msg.error() is None, msg.error()
            got.append(msg)
        if batch:
            consumer.commit(asynchronous=False)
    return got


def committed(bootstrap: str) -> dict[int, int]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": GROUP})
    try:
        tps = [confluent_kafka.TopicPartition(TOPIC, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    finally:
        consumer.close()


def test_cut_over_from_one_cluster_to_another(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    source, target = broker_factory(workers=2), broker_factory(workers=2)
    create_topic(source.bootstrap, TOPIC, PARTITIONS)
    producers = FeedThread(source.bootstrap, (TOPIC,))
    producers.start()
    consumer = group_consumer(source.bootstrap)
    consume_until(consumer, lambda got: len(got) >= 1000, "the application's first records")
    # 1. The mirror with the guide's settings.
    config = mirror_config(
        source,
        target,
        topics=TOPIC,
        groups=GROUP,
        replication_policy_class="org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        sync_group_offsets_enabled=True,
    )
    with running_mirror(config, tmp_path) as mirror:
        # 2. Caught up while the application runs: every partition listed, lag small or 0.
        wait_for(
            lambda: len(status_lags(mirror_status(mirror.config_path))) == PARTITIONS or None, 60, "status"
        )
        # 3. Producers stopped: LAG 0 everywhere, and the target holds every record.
        sent = producers.finish()
        wait_for(
            lambda: set(status_lags(mirror_status(mirror.config_path)).values()) == {0} or None,
            60,
            "LAG 0 in mirror status",
            interval=0.5,
        )
        ends = end_offsets(source.bootstrap, TOPIC)
        assert sum(ends.values()) == sent and end_offsets(target.bootstrap, TOPIC) == ends
        # 4. The consumers finish and stop; their offsets reach the target's idle group.
        consume_until(consumer, lambda _: committed(source.bootstrap) == ends, "the group at the end")
        consumer.close()

        def translated() -> bool | None:
            mirror.assert_running()
            at = committed(target.bootstrap)
            behind = {p: ends[p] - at[p] for p in ends if at[p] >= 0}
            return (len(behind) == PARTITIONS and all(0 <= b <= REREAD_MAX for b in behind.values())) or None

        wait_for(translated, 60, f"{GROUP}'s translated offsets on the target", interval=0.5)
        at_move = committed(target.bootstrap)
        # 5. The mirror stops cleanly, before anything else writes to the target's topics.
        assert mirror.stop() == 0, mirror.output()
    # 6. Producers and consumers on the target.
    after = FeedThread(target.bootstrap, (TOPIC,), limit=2000)
    after.start()
    assert after.finish() == 2000
    moved = group_consumer(target.bootstrap)
    try:
        final = end_offsets(target.bootstrap, TOPIC)
        records = consume_until(
            moved,
            lambda got: sum(1 for m in got if m.offset() >= ends[m.partition()]) >= 2000,
            "the moved group's records",
        )
    finally:
        moved.close()
    new = {(m.partition(), m.offset()) for m in records if m.offset() >= ends[m.partition()]}
    assert new == {(p, o) for p in final for o in range(ends[p], final[p])}, "no record lost after the move"
    again = [m for m in records if m.offset() < ends[m.partition()]]
    assert all(m.offset() >= at_move[m.partition()] for m in again), "nothing before the translated offset"
    assert len(again) <= REREAD_MAX * PARTITIONS
