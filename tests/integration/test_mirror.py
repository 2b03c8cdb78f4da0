"""``shardbroker mirror`` between two shardbroker instances on loopback, driven as a user would:
the CLI as a subprocess, records produced and read with confluent-kafka.

The tool does not know what either side is; these tests check what a user relies on: the target
holds the same records (key, value, headers, timestamp) in the same order per partition, across
a SIGTERM and a kill -9 of the mirror in the middle of the run (no gap, no duplicate), without
copying mirrored topics back (DefaultReplicationPolicy's cycle check), exactly-once, and a batch
the target refuses pauses its partition while the rest goes on.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.broker_process import REPO, BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory

RECORDS = 200_000
CODECS = ("none", "gzip", "lz4", "zstd", "snappy")


@pytest.fixture(scope="module")
def clusters(module_broker_factory: BrokerFactory) -> tuple[BrokerProcess, BrokerProcess]:
    return module_broker_factory(workers=2), module_broker_factory(workers=1)


class Mirror:
    """One ``shardbroker mirror`` subprocess; its output goes to a file (read on failure)."""

    def __init__(self, config: Path, log: Path, *extra: str) -> None:
        self.config, self.log_path, self.extra = config, log, extra
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Mirror:
        out = self.log_path.open("ab")
        cmd = [
            sys.executable,
            "-m",
            "shardbroker.cli.main",
            "mirror",
            "--config",
            str(self.config),
            *self.extra,
        ]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(60)
        self.proc = None
        return code

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def mirror(tmp_path: Path, source: BrokerProcess, target: BrokerProcess, **props: str) -> Iterator[Mirror]:
    lines = {
        "source.cluster.alias": "east",
        "target.cluster.alias": "west",
        "source.cluster.bootstrap.servers": source.bootstrap,
        "target.cluster.bootstrap.servers": target.bootstrap,
        "refresh.topics.interval.seconds": "1",
        **props,
    }
    config = tmp_path / f"mirror-{len(list(tmp_path.glob('mirror-*.toml')))}.toml"
    config.write_text("".join(f'"{k}" = "{v}"\n' for k, v in lines.items()))
    m = Mirror(config, config.with_suffix(".log")).start()
    try:
        yield m
    finally:
        if m.proc is not None:
            m.proc.kill()
            m.proc.wait(10)


def _create(bootstrap: str, topic: str, partitions: int, **configs: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1, config=configs)])[topic].result(30)


def _produce(bootstrap: str, topic: str, codec: str, start: int, count: int, errors: list[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5})
    for i in range(start, start + count):
        p.produce(
            topic,
            value=b"v%08d" % i + b"." * (i % 50),
            key=b"key-%d" % (i % 997),
            headers=[("n", b"%d" % i), ("c", codec.encode())],
        )
        if i % 2000 == 0:
            p.poll(0)
    if p.flush(60):
        errors.append(f"{codec}: records left unsent")


def _ends(bootstrap: str, topic: str, partitions: int) -> list[int]:
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "mirror-test-ends", "isolation.level": "read_committed"}
    )
    try:
        return [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        c.close()


def _read(bootstrap: str, topic: str, partition: int) -> list[tuple[object, ...]]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-test-read",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        end = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        c.assign([TopicPartition(topic, partition, 0)])
        out: list[tuple[object, ...]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = c.poll(1)
            if msg is None:
                if c.position([TopicPartition(topic, partition)])[0].offset >= end:
                    break
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value(), msg.headers(), msg.timestamp()))
            if msg.offset() + 1 >= end:
                break
        return out
    finally:
        c.close()


def _same_records(
    source: BrokerProcess, target: BrokerProcess, topic: str, remote: str, partitions: int, total: int
) -> None:
    wait_for(
        lambda: (
            _ends(target.bootstrap, remote, partitions) == _ends(source.bootstrap, topic, partitions) or None
        ),
        120,
        f"{remote} to catch up with {topic}",
        interval=0.5,
    )
    seen = 0
    for p in range(partitions):
        want = _read(source.bootstrap, topic, p)
        got = _read(target.bootstrap, remote, p)
        assert len(got) == len(want), f"partition {p}: {len(got)} records mirrored, {len(want)} at the source"
        assert got == want, f"partition {p}: records differ"
        seen += len(want)
    assert seen == total


def test_mirror_while_producing_with_restarts(
    clusters: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    source, target = clusters
    _create(source.bootstrap, "orders", 4)
    errors: list[str] = []
    per = RECORDS // len(CODECS)
    with mirror(tmp_path, source, target, **{"exactly.once.source.support": "disabled"}) as m:
        producers = [
            threading.Thread(target=_produce, args=(source.bootstrap, "orders", codec, i * per, per, errors))
            for i, codec in enumerate(CODECS)
        ]
        for t in producers:
            t.start()
        time.sleep(3)
        assert m.stop(signal.SIGTERM) == 0, m.output()
        m.start()
        time.sleep(3)
        m.stop(signal.SIGKILL)
        m.start()
        for t in producers:
            t.join(120)
        assert not errors
        _same_records(source, target, "orders", "east.orders", 4, RECORDS)
        assert m.stop() == 0, m.output()
    assert "mirrored" in m.output()  # the periodic summary line


def test_exactly_once_and_no_cycle_back(
    clusters: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    source, target = clusters
    _create(source.bootstrap, "payments", 2)
    _create(target.bootstrap, "local", 1)
    errors: list[str] = []
    with mirror(
        tmp_path, source, target, topics="payments", **{"exactly.once.source.support": "enabled"}
    ) as m:
        _produce(source.bootstrap, "payments", "zstd", 0, 20_000, errors)
        time.sleep(1)
        m.stop(signal.SIGKILL)
        m.start()
        _same_records(source, target, "payments", "east.payments", 2, 20_000)
    # the other way: west -> east; east.payments (from east) must not come back
    with mirror(
        tmp_path,
        target,
        source,
        **{"source.cluster.alias": "west", "target.cluster.alias": "east", "topics": "local|east\\..*"},
    ):
        _produce(target.bootstrap, "local", "lz4", 0, 1000, errors)
        _same_records(target, source, "local", "west.local", 1, 1000)
        names = AdminClient({"bootstrap.servers": source.bootstrap}).list_topics(timeout=10).topics
        assert "west.east.payments" not in names
    assert not errors


def test_refused_batch_pauses_only_its_partition(
    clusters: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    source, target = clusters
    _create(source.bootstrap, "big", 1)
    _create(source.bootstrap, "small", 1)
    _create(target.bootstrap, "east.big", 1, **{"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": source.bootstrap})
    p.produce("big", value=b"x" * 10_000)
    p.flush(30)
    errors: list[str] = []
    with mirror(tmp_path, source, target, topics="big|small") as m:
        _produce(source.bootstrap, "small", "none", 0, 500, errors)
        _same_records(source, target, "small", "east.small", 1, 500)
        wait_for(lambda: "paused" in m.output() or None, 30, "the pause to be logged")
        assert "MESSAGE_TOO_LARGE" in m.output()
        assert _ends(target.bootstrap, "east.big", 1) == [0]
        assert m.stop() == 0
