"""A consumer group moved from one broker to another through MirrorMaker 2's offset translation.

Two shardbroker instances on loopback. The data path is simulated here (records copied batch by
batch with shardbroker's client, with offset gaps on both sides, and each batch reported to
OffsetSyncWriter as the mirror's loop does); the offset syncs, checkpoints, target group offsets
and ``mirror status`` are the real ones. A confluent-kafka group consumes part of the source and
commits; after the CheckpointTask ran, a confluent-kafka consumer of the same group on the target
must read every record after the source-committed one (no loss), re-reading at most the records
since the sync used.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from typing import Any

import confluent_kafka
import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.producer import RecordMetadata, TcpProducer
from shardbroker.mirror.checkpoints import CheckpointTask
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.mirror.mirror_status import print_status
from shardbroker.mirror.offset_syncs import OffsetSyncWriter
from tests.integration.broker_process import BrokerProcess, wait_for

BrokerFactory = Callable[..., BrokerProcess]

PARTITIONS = 2
RECORDS = 300  # per partition
BATCH = 10
LAG_MAX = 20
#: Source offsets never copied (as if compacted away or aborted): partition -> range.
SKIPPED = {0: range(100, 117), 1: range(250, 251)}
#: Records already on the target before mirroring starts, so the offsets differ from the source's.
TARGET_HEAD = {0: 7, 1: 0}


def value_of(partition: int, offset: int) -> bytes:
    return f"p{partition}-o{offset}".encode()


def produce_source(bootstrap: str) -> None:
    producer = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for p in range(PARTITIONS):
        for o in range(RECORDS):
            producer.produce("orders", value=value_of(p, o), key=b"k%d" % o, partition=p)
    assert producer.flush(30) == 0


def copy_to_target(bootstrap: str, writer: OffsetSyncWriter) -> dict[tuple[int, int], int]:
    """The simulated mirror: copy the source's records batch by batch (skipping SKIPPED), report
    each batch to ``writer``; returns (partition, source offset) -> target offset."""
    copies: dict[tuple[int, int], int] = {}
    with TcpProducer(bootstrap) as producer:
        for p, head in TARGET_HEAD.items():
            for _ in range(head):
                producer.send("east.orders", b"before-mirroring", partition=p)
        producer.flush()
        for p in range(PARTITIONS):
            offsets = [o for o in range(RECORDS) if o not in SKIPPED.get(p, ())]
            for i in range(0, len(offsets), BATCH):
                batch = offsets[i : i + BATCH]
                acked: list[RecordMetadata] = []
                for o in batch:
                    producer.send("east.orders", value_of(p, o), partition=p, on_delivery=acked.append)
                producer.flush()
                assert all(md.error is None for md in acked), acked
                for o, md in zip(batch, acked, strict=True):
                    copies[(p, o)] = md.offset
                writer.record("orders", p, batch[0], acked[0].offset)
                writer.flush()
    writer.close()
    return copies


def commit_group_on_source(bootstrap: str, offsets: dict[int, int]) -> dict[int, int]:
    """Group "app" joins for "orders", reads, and commits ``offsets``; what the source holds."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "app",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe(["orders"])
        wait_for(lambda: consumer.poll(0.5) is not None and consumer.assignment(), 30, "an assignment", 0)
        consumer.commit(
            offsets=[confluent_kafka.TopicPartition("orders", p, o) for p, o in offsets.items()],
            asynchronous=False,
        )
        committed = consumer.committed([confluent_kafka.TopicPartition("orders", p) for p in offsets])
        return {tp.partition: tp.offset for tp in committed}
    finally:
        consumer.close()


def consume_group_on_target(bootstrap: str, ends: dict[int, int]) -> dict[int, list[int]]:
    """Group "app" on the target, from its committed offsets (nothing without them: latest);
    per partition the source offsets read, in order."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "app", "auto.offset.reset": "latest"}
    )
    read: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
    positions: dict[int, int] = {}
    try:
        consumer.subscribe(["east.orders"])

        def caught_up() -> bool:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                positions[msg.partition()] = msg.offset() + 1
                text = msg.value().decode()
                if text.startswith("p"):
                    read[msg.partition()].append(int(text.split("-o")[1]))
            return all(positions.get(p, -1) >= end for p, end in ends.items())

        wait_for(caught_up, 30, "the target group to read to the end", interval=0)
    finally:
        consumer.close()
    return read


@pytest.fixture
def clusters(broker_factory: BrokerFactory) -> tuple[BrokerProcess, BrokerProcess]:
    source = broker_factory(workers=1)
    target = broker_factory(workers=1)
    return source, target


def mirror_config(source: BrokerProcess, target: BrokerProcess, **extra: Any) -> MirrorConfig:
    props = {
        "source.cluster.alias": "east",
        "target.cluster.alias": "west",
        "source.cluster.bootstrap.servers": source.bootstrap,
        "target.cluster.bootstrap.servers": target.bootstrap,
        "offset.lag.max": str(LAG_MAX),
        "emit.checkpoints.interval.seconds": "1",
        "sync.group.offsets.enabled": "true",
        "sync.group.offsets.interval.seconds": "1",
        "refresh.groups.interval.seconds": "1",
        **extra,
    }
    return MirrorConfig.from_properties(props)


def test_group_moved_to_target_resumes_without_loss(clusters: tuple[BrokerProcess, BrokerProcess]) -> None:
    source, target = clusters
    for broker, name in ((source, "orders"), (target, "east.orders")):
        with AdminClient(broker.bootstrap) as admin:
            assert admin.create_topics([NewTopic(name, PARTITIONS)])[name] is None
    produce_source(source.bootstrap)
    config = mirror_config(source, target)
    metrics = MirrorMetrics()
    copies = copy_to_target(target.bootstrap, OffsetSyncWriter(config, metrics))
    # partition 0 inside the skipped range (its next copied record is 117), far behind the last
    # sync; partition 1 near the end
    committed = commit_group_on_source(source.bootstrap, {0: 105, 1: 280})
    assert committed == {0: 105, 1: 280}

    task = CheckpointTask(config, metrics)
    stop = threading.Event()
    thread = threading.Thread(target=task.run, args=(stop,), daemon=True)
    thread.start()
    try:
        with AdminClient(target.bootstrap) as admin:

            def synced() -> dict[tuple[str, int], int] | None:
                offsets = admin.committed_offsets("app")
                return offsets if len(offsets) == len(committed) else None

            on_target = wait_for(synced, 20, "group 'app' offsets on the target", interval=0.2)
            # shardbroker-mirror.* (the mirror's positions) is never checkpointed
            assert all(not cp.group.startswith("shardbroker-mirror") for cp in task.checkpoints.values())
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()

    for p, upstream in committed.items():
        next_copied = min(copies[(p, o)] for o in range(upstream, RECORDS) if (p, o) in copies)
        assert on_target[("east.orders", p)] <= next_copied  # never after the copy: no loss
    ends = {p: max(copies[(q, o)] for q, o in copies if q == p) + 1 for p in range(PARTITIONS)}
    read = consume_group_on_target(target.bootstrap, ends)
    for p, upstream in committed.items():
        wanted = [o for o in range(upstream, RECORDS) if (p, o) in copies]
        assert read[p][-len(wanted) :] == wanted, f"partition {p} lost records after {upstream}"
        rereads = len(read[p]) - len(wanted)
        # syncs come every LAG_MAX + a batch; older ones are thinned with their distance from
        # the newest (PartitionSyncs), so a group far behind re-reads more
        behind = RECORDS - upstream
        assert 0 <= rereads <= LAG_MAX + BATCH + behind * 6 // 10, (p, rereads)

    out = io.StringIO()
    assert print_status(config, out) == 0
    text = out.getvalue()
    assert "east.orders" in text and "app" in text, text
    for p, upstream in committed.items():
        assert any(
            line.split()[:4] == ["app", "east.orders", str(p), str(upstream)] for line in text.splitlines()
        ), text


def test_status_names_an_unreachable_cluster(clusters: tuple[BrokerProcess, BrokerProcess]) -> None:
    source, target = clusters
    target.stop()
    out = io.StringIO()
    assert print_status(mirror_config(source, target), out) == 1
    assert f"cannot read the target cluster ({target.bootstrap})" in out.getvalue()
