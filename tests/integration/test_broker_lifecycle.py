"""Process-level faults and restarts: a worker killed mid-produce, a whole-broker restart on the
same data dir, and SIGTERM under load. What was acknowledged is never lost nor duplicated."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import (
    IO_TIMEOUT,
    Rec,
    check_partition_logs,
    consume,
    create_topic,
    end_offsets,
    make_messages,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]


def idempotent_producer(bootstrap: str, **extra: Any) -> Any:
    return confluent_kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "partitioner": "murmur2_random",
            "message.timeout.ms": int(IO_TIMEOUT * 1000),
            "reconnect.backoff.ms": 20,
            "reconnect.backoff.max.ms": 200,
            **extra,
        }
    )


def acks_reached(producer: Any, acked: list[Rec], count: int) -> Callable[[], bool]:
    def reached() -> bool:
        producer.poll(0.05)  # delivery callbacks run inside poll()
        return len(acked) > count

    return reached


def restarted(broker: BrokerProcess, node: int, dead: list[int]) -> int | None:
    pid = broker.worker_pid(node)
    return None if pid in dead else pid


def produce_killing_workers(broker: BrokerProcess, topic: str, count: int, kills: int) -> list[Rec]:
    """Produce ``count`` messages in chunks; SIGKILL worker 1 ``kills`` times while they flow."""
    producer = idempotent_producer(broker.bootstrap)
    messages = make_messages(count, keys=499, tag="kill")
    acked: list[Rec] = []
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))

    kill_at = [count * (k + 1) // (kills + 2) for k in range(kills)]
    killed: list[int] = []
    chunk = 250
    for start in range(0, count, chunk):
        for key, value in messages[start : start + chunk]:
            while True:
                try:
                    producer.produce(topic, value, key, on_delivery=on_delivery)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.poll(0.01)
        if kill_at and start >= kill_at[0]:
            kill_at.pop(0)
            # some acknowledged already, more in flight: kill the owner of half the partitions
            # (delivery callbacks run inside poll(), so the predicate polls)
            wait_for(acks_reached(producer, acked, start // 2), 60, "acks before the kill")
            victim = broker.worker_pid(1)
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            replacement = wait_for(lambda: restarted(broker, 1, killed), 60, "worker 1 restarted")
            assert replacement not in killed
    left = producer.flush(IO_TIMEOUT)
    assert left == 0, f"{left} messages never delivered after the worker restarts"
    assert not errors, f"delivery errors across a worker restart: {errors[:5]} ({len(errors)})"
    assert len(killed) == kills
    assert len(acked) == count
    return acked


def check_exactly_once(
    broker: BrokerProcess, topic: str, partitions: int, acked: list[Rec], count: int
) -> None:
    ends = end_offsets("confluent", broker.bootstrap, topic, partitions)
    records = consume("confluent", broker.bootstrap, topic, ends)
    # every message exactly once (no duplicate from a retried batch), dense offsets, in order
    check_partition_logs(records, make_messages(count, keys=499, tag="kill"), ends, "after worker kills")
    assert sorted(records) == sorted(acked), "records not at the offsets that were acknowledged"


def test_killed_worker_is_restarted_and_idempotent_producer_finishes(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "kill", 8)
    acked = produce_killing_workers(broker, "kill", 30_000, kills=1)
    check_exactly_once(broker, "kill", 8, acked, 30_000)


@pytest.mark.slow
def test_repeatedly_killed_worker_soak(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "kill", 8)
    acked = produce_killing_workers(broker, "kill", 300_000, kills=4)
    check_exactly_once(broker, "kill", 8, acked, 300_000)


def describe_topic_config(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return {k: str(v.value) for k, v in admin.describe_configs([resource])[resource].result(30).items()}


def test_restart_on_the_same_data_dir_keeps_topics_configs_and_data(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "keep-a", 3, {"retention.ms": "3600000", "max.message.bytes": "300000"})
    create_topic(broker.bootstrap, "keep-b", 1)
    messages = make_messages(5_000, keys=97, tag="keep")
    producer = idempotent_producer(broker.bootstrap)
    for key, value in messages:
        producer.produce("keep-a", value, key)
        producer.poll(0)
    producer.produce("keep-b", b"only", b"one")
    assert producer.flush(IO_TIMEOUT) == 0
    ends = end_offsets("confluent", broker.bootstrap, "keep-a", 3)
    # Keep the client referenced until the result arrives: a destroyed client fails its futures.
    before = AdminClient({"bootstrap.servers": broker.bootstrap})
    described = before.describe_topics(confluent_kafka.TopicCollection(["keep-a"]))["keep-a"]
    topic_id = described.result(30).topic_id
    del before

    assert broker.stop(signal.SIGINT) == 0, "SIGINT must drain and exit 0"
    broker.start()  # same data dir, same ports

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=30)
    assert {"keep-a", "keep-b"} <= set(md.topics)
    assert len(md.topics["keep-a"].partitions) == 3 and len(md.topics["keep-b"].partitions) == 1
    desc = admin.describe_topics(confluent_kafka.TopicCollection(["keep-a"]))["keep-a"].result(30)
    assert str(desc.topic_id) == str(topic_id), "topic id changed across a restart"
    configs = describe_topic_config(broker.bootstrap, "keep-a")
    assert configs["retention.ms"] == "3600000" and configs["max.message.bytes"] == "300000"

    assert end_offsets("confluent", broker.bootstrap, "keep-a", 3) == ends
    check_partition_logs(consume("confluent", broker.bootstrap, "keep-a", ends), messages, ends, "restarted")
    (only,) = consume("confluent", broker.bootstrap, "keep-b", {0: 1})
    assert (only.offset, only.key, only.value) == (0, b"one", b"only")

    # appends continue after the recovered end, and the idempotent state does not refuse them
    producer = idempotent_producer(broker.bootstrap)
    delivered: list[int] = []
    producer.produce("keep-b", b"two", b"two", on_delivery=lambda err, msg: delivered.append(msg.offset()))
    assert producer.flush(IO_TIMEOUT) == 0
    assert delivered == [1]


def test_sigterm_under_load_exits_0_and_loses_nothing_acknowledged(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2)
    create_topic(broker.bootstrap, "drain", 4)
    acked: list[Rec] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def load() -> None:
        try:
            producer = idempotent_producer(broker.bootstrap, **{"message.timeout.ms": 5_000})

            def on_delivery(err: Any, msg: Any) -> None:
                if err is None:
                    acked.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))

            i = 0
            while not stop.is_set():
                for key, value in make_messages(200, keys=50, tag=f"drain{i}"):
                    try:
                        producer.produce("drain", value, key, on_delivery=on_delivery)
                    except BufferError:
                        producer.poll(0.05)
                i += 1
                producer.poll(0.005)
            producer.purge()
            producer.flush(10)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    thread = threading.Thread(target=load, name="drain-load")
    thread.start()
    try:
        wait_for(lambda: len(acked) > 5_000 or None, 60, "5,000 acknowledged messages under load")
        started = time.monotonic()
        code = broker.stop(signal.SIGTERM, timeout=30)
        drain_time = time.monotonic() - started
    finally:
        stop.set()
        thread.join(60)
    assert not failures, failures
    assert code == 0, f"SIGTERM under load: exit code {code}"
    assert drain_time < 30
    snapshot = list(acked)

    broker.start()
    ends = end_offsets("confluent", broker.bootstrap, "drain", 4)
    records = consume("confluent", broker.bootstrap, "drain", ends)
    assert [r for r in records if r.offset >= ends[r.partition]] == []
    by_position = {(r.partition, r.offset): r for r in records}
    lost = [r for r in snapshot if by_position.get((r.partition, r.offset)) != r]
    assert not lost, f"{len(lost)} of {len(snapshot)} acknowledged messages lost, e.g. {lost[:3]}"
    for p in range(4):  # dense offsets
        offsets = sorted(r.offset for r in records if r.partition == p)
        assert offsets == list(range(ends[p]))
