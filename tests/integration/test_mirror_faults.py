"""``shardbroker mirror`` under faults: two brokers on loopback, the mirror a subprocess between them.

Starts processes (two brokers, the mirror), opens sockets, writes temp dirs. Each test feeds the
source with keyed records with headers, in batches of every codec (mirror_process.FeedThread),
breaks something while records flow, and then requires the target's copy to hold exactly the
source's records, per partition in order (key, value, headers): nothing skipped (no gap) and, in
the default idempotent mode, nothing twice. The faults are the issue's: a source unreachable at
the start, a target stopped and restarted, a worker of either broker SIGKILLed (the supervisor
restarts it), the mirror SIGKILLed at random points, a source topic deleted mid-flight, and a
batch the target refuses (MESSAGE_TOO_LARGE: that partition paused and reported, the rest goes on).

The mirror only knows the CLI contract (mirror_process.py). Quick variants for CI (well under
90 s together on the 2-core machine); ``-m slow`` adds a longer kill loop.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic
from tests.integration.mirror_process import (
    SOURCE_ALIAS,
    FeedThread,
    MirrorProcess,
    assert_mirrored,
    caught_up,
    end_offsets,
    mirror_config,
    read_topic,
    running_mirror,
)

pytestmark = pytest.mark.integration

PARTITIONS = 4


def brokers(factory: BrokerFactory) -> tuple[BrokerProcess, BrokerProcess]:
    return factory(workers=2), factory(workers=2)


def mirrored_count(target: BrokerProcess, topic: str) -> int:
    return sum(end_offsets(target.bootstrap, f"{SOURCE_ALIAS}.{topic}").values())


def wait_progress(target: BrokerProcess, topic: str, mirror: MirrorProcess, more_than: int) -> int:
    """Wait until the target's copy holds more than ``more_than`` records; how many it holds."""

    def grown() -> int | None:
        mirror.assert_running()
        count = mirrored_count(target, topic)
        return count if count > more_than else None

    return wait_for(grown, 60.0, f"the mirror to copy more than {more_than} records of {topic}", interval=0.2)


def kill_worker(broker: BrokerProcess, node: int) -> None:
    """SIGKILL worker ``node`` and wait until the supervisor has a new one serving."""
    victim = broker.worker_pid(node)
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: broker.worker_pid(node) != victim or None, 60.0, f"worker {node} restarted")


def test_source_unreachable_at_start_then_started(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-early", PARTITIONS)
    early = FeedThread(source.bootstrap, ("mf-early",), limit=2000)
    early.start()
    assert early.finish() == 2000
    source.stop()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        time.sleep(3)  # retrying against a closed port, with backoff: still running, nothing copied
        mirror.assert_running()
        errors = mirror.scrape().get("shardbroker_mirror_errors_total", {})
        assert sum(errors.values()) > 0, "an unreachable source is an error the metrics count"
        source.start()
        late = FeedThread(source.bootstrap, ("mf-early",), limit=2000)
        late.start()
        assert late.finish() == 2000
        assert assert_mirrored(source, target, "mf-early", mirror) == 4000


def test_target_stopped_and_restarted(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-t", PARTITIONS)
    feed = FeedThread(source.bootstrap, ("mf-t",))
    feed.start()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        wait_progress(target, "mf-t", mirror, 1000)
        target.stop()
        time.sleep(2)  # the mirror meets a closed port and retries while the source grows
        mirror.assert_running()
        target.start()
        wait_progress(target, "mf-t", mirror, 0)
        time.sleep(1)
        sent = feed.finish()
        assert assert_mirrored(source, target, "mf-t", mirror) == sent


def test_worker_of_either_broker_killed(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-w", PARTITIONS)
    feed = FeedThread(source.bootstrap, ("mf-w",))
    feed.start()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        seen = wait_progress(target, "mf-w", mirror, 1000)
        kill_worker(source, 1)  # leader of half the source partitions: fetches fail, then resume
        seen = wait_progress(target, "mf-w", mirror, seen)
        kill_worker(target, 1)  # leader of half the target partitions: produces retried
        wait_progress(target, "mf-w", mirror, seen)
        sent = feed.finish()
        assert assert_mirrored(source, target, "mf-w", mirror) == sent


def kill_mirror_repeatedly(
    broker_factory: BrokerFactory, tmp_path: Path, kills: int, seed: int
) -> tuple[int, int]:
    """Feed the source while the mirror is SIGKILLed ``kills`` times at random points (each
    restart resumes from what it committed); (records sent, records mirrored)."""
    rng = random.Random(seed)
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-k", PARTITIONS)
    feed = FeedThread(source.bootstrap, ("mf-k",))
    feed.start()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        for kill in range(kills):
            wait_progress(target, "mf-k", mirror, 0)
            time.sleep(rng.uniform(0.2, 2.0))
            mirror.kill()
            print(f"seed {seed}: kill {kill + 1} with {mirrored_count(target, 'mf-k')} records mirrored")
            mirror.start()
        sent = feed.finish()
        return sent, assert_mirrored(source, target, "mf-k", mirror)


def test_mirror_killed_at_random_points(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    sent, mirrored = kill_mirror_repeatedly(broker_factory, tmp_path, kills=3, seed=seed)
    assert mirrored == sent, f"seed {seed}"


@pytest.mark.slow
def test_mirror_killed_at_random_points_soak(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    seed = random.randrange(1 << 30)
    sent, mirrored = kill_mirror_repeatedly(broker_factory, tmp_path, kills=20, seed=seed)
    assert mirrored == sent, f"seed {seed}"


def test_source_topic_deleted_mid_flight(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """A source topic deleted while records of it are in flight: mirrored in part, the rest
    written while the target is down (the mirror fetches what it cannot produce yet), then the
    topic deleted and the target back. Meanwhile another topic is fed: it goes on, exactly."""
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-keep", PARTITIONS)
    create_topic(source.bootstrap, "mf-gone", PARTITIONS)
    early = FeedThread(source.bootstrap, ("mf-gone",), limit=2000)
    early.start()
    assert early.finish() == 2000
    keep = FeedThread(source.bootstrap, ("mf-keep",))
    keep.start()
    with running_mirror(mirror_config(source, target), tmp_path) as mirror:
        wait_for(lambda: caught_up(source, target, "mf-gone"), 60.0, "mf-gone's first records mirrored")
        target.stop()
        late = FeedThread(source.bootstrap, ("mf-gone",), limit=4000)
        late.start()
        assert late.finish() == 4000
        ends = end_offsets(source.bootstrap, "mf-gone")
        before = read_topic(source.bootstrap, "mf-gone", ends)
        admin = AdminClient({"bootstrap.servers": source.bootstrap})
        admin.delete_topics(["mf-gone"], operation_timeout=30)["mf-gone"].result(60)
        target.start()
        time.sleep(2)  # topics are refreshed every second
        sent = keep.finish()
        assert assert_mirrored(source, target, "mf-keep", mirror) == sent
        # Deletions are not propagated (not asked): the target keeps its copy, a prefix of each
        # source partition, with what was in flight or without it.
        kept = end_offsets(target.bootstrap, f"{SOURCE_ALIAS}.mf-gone")
        print(f"mf-gone: {kept} of {ends} on the target")
        assert kept.keys() == ends.keys() and sum(kept.values()) >= 2000, kept
        got = read_topic(target.bootstrap, f"{SOURCE_ALIAS}.mf-gone", kept)
        assert all(got[p] == before[p][: kept[p]] for p in ends)
        wait_for(
            lambda: (
                not any("mf-gone" in str(k) for k in mirror.scrape().get("shardbroker_mirror_lag", {}))
                or None
            ),
            10.0,
            "the deleted topic's lag series to go",
        )


def test_deletion_propagated_when_asked(broker_factory: BrokerFactory, tmp_path: Path) -> None:
    """With sync.topic.deletions.enabled (ours) a source topic deleted while mirrored is deleted
    on the target too; the other mirrored topic stays."""
    source, target = brokers(broker_factory)
    for name in ("mf-del", "mf-stay"):
        create_topic(source.bootstrap, name, 1)
        produce_to(source.bootstrap, name, 0, SMALL[:50])
    config = mirror_config(source, target, sync_topic_deletions_enabled=True)
    with running_mirror(config, tmp_path) as mirror:
        for name in ("mf-del", "mf-stay"):
            wait_for(lambda n=name: caught_up(source, target, n), 60.0, f"{name} mirrored")
        admin = AdminClient({"bootstrap.servers": source.bootstrap})
        admin.delete_topics(["mf-del"], operation_timeout=30)["mf-del"].result(60)
        remote = AdminClient({"bootstrap.servers": target.bootstrap})

        def deleted() -> bool | None:
            mirror.assert_running()
            return f"{SOURCE_ALIAS}.mf-del" not in remote.list_topics(timeout=10).topics or None

        wait_for(deleted, 30.0, "the target copy of the deleted topic to go", interval=0.5)
        assert f"{SOURCE_ALIAS}.mf-stay" in remote.list_topics(timeout=10).topics
        assert "deleted target topic" in mirror.output()


def produce_to(bootstrap: str, topic: str, partition: int, values: list[bytes]) -> None:
    """``values`` to one partition, in batches of at most ~4 KiB (batch.size), uncompressed."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "batch.size": 4096, "linger.ms": 2}
    )
    errors: list[Any] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(err)

    for i, value in enumerate(values):
        producer.produce(
            topic,
            value,
            f"k{i}".encode(),
            partition=partition,
            headers=[("n", str(i).encode())],
            on_delivery=delivered,
        )
        producer.poll(0)
    assert producer.flush(IO_TIMEOUT) == 0 and not errors, errors


SMALL = [f"small:{i}:".encode().ljust(100, b".") for i in range(300)]
BIG_REMOTE = f"{SOURCE_ALIAS}.mf-big"


@contextlib.contextmanager
def refused_partition(broker_factory: BrokerFactory, tmp_path: Path) -> Iterator[tuple[Any, ...]]:
    """Source ``mf-big``: 300 small records on each of its 2 partitions, then on partition 1 a
    40 KB batch and 50 small records; the target's copy refuses batches over 16 KiB (it exists
    with that max.message.bytes, and keeps it: no config sync). Yields (source, target, mirror)
    once the mirror reports partition 1 paused."""
    source, target = brokers(broker_factory)
    create_topic(source.bootstrap, "mf-big", 2)
    admin = AdminClient({"bootstrap.servers": target.bootstrap})
    limit = {"max.message.bytes": "16384"}
    admin.create_topics([NewTopic(BIG_REMOTE, 2, 1, config=limit)])[BIG_REMOTE].result(60)
    produce_to(source.bootstrap, "mf-big", 0, SMALL)
    produce_to(source.bootstrap, "mf-big", 1, SMALL)
    produce_to(source.bootstrap, "mf-big", 1, [b"x" * 40_000])  # one batch the target refuses
    produce_to(source.bootstrap, "mf-big", 1, SMALL[:50])
    config = mirror_config(source, target, sync_topic_configs_enabled=False)
    with running_mirror(config, tmp_path) as mirror:

        def paused() -> bool | None:
            mirror.assert_running()
            return mirror.sample("shardbroker_mirror_partitions_paused") == 1 or None

        wait_for(paused, 60.0, "shardbroker_mirror_partitions_paused 1", interval=0.2)
        yield source, target, mirror


def test_message_too_large_on_the_target_pauses_only_that_partition(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    with refused_partition(broker_factory, tmp_path) as (source, target, mirror):
        # The other partition goes on, also with records produced after the pause.
        produce_to(source.bootstrap, "mf-big", 0, SMALL[:100])
        produce_to(source.bootstrap, "mf-big", 1, SMALL[:100])

        def partition_0_done() -> bool | None:
            mirror.assert_running()
            got = end_offsets(target.bootstrap, BIG_REMOTE)
            assert got[1] <= 300, f"records after the refused batch were mirrored: {got}"
            return got[0] == 400 or None

        wait_for(partition_0_done, 60.0, "partition 0 mirrored past the pause", interval=0.2)
        source_records = read_topic(source.bootstrap, "mf-big", end_offsets(source.bootstrap, "mf-big"))
        copy = read_topic(target.bootstrap, BIG_REMOTE, {0: 400, 1: 300})
        assert copy[0] == source_records[0]
        assert copy[1] == source_records[1][:300]  # everything before the refused batch, no more
        assert mirror.sample("shardbroker_mirror_partitions_paused") == 1
        assert "MESSAGE_TOO_LARGE" in mirror.output() and "mf-big" in mirror.output()
        assert caught_up(source, target, "mf-big") is None  # partition 1 stays behind, reported

        # The paused partition's lag keeps counting what the source gets (the lag alert and the
        # dashboard show it falling behind): the source's end minus the first offset not mirrored.
        want = 351 + 100 - 300

        def lag() -> bool | None:
            mirror.assert_running()
            return mirror.sample("shardbroker_mirror_lag", topic="mf-big", partition="1") == want or None

        wait_for(lag, 12.0, f"the paused partition's lag at {want}", interval=0.5)  # set every 1 s
