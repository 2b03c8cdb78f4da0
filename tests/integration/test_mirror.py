"""``shardbroker mirror`` between two shardbroker instances on loopback, driven as a user would:
the CLI as a subprocess, records produced and read with confluent-kafka.

The tool does not know what either side is; these tests check what a user relies on: the target
holds the same records (key, value, headers, timestamp) in the same order per partition, across
a SIGTERM and a kill -9 of the mirror in the middle of the run (no gap, no duplicate), without
copying mirrored topics back (DefaultReplicationPolicy's cycle check), and exactly-once. Faults
(a batch the target refuses, unreachable clusters, killed workers) are test_mirror_faults.py's.
"""

from __future__ import annotations

import contextlib
import json
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
#: how long the records of the while-producing test take to produce
PRODUCE_S = 10.0


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
    config.write_text("".join(f"{json.dumps(k)} = {json.dumps(v)}\n" for k, v in lines.items()))
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


def _produce(
    bootstrap: str, topic: str, codec: str, start: int, count: int, errors: list[str], seconds: float = 0
) -> None:
    """``count`` keyed records with headers, spread evenly over ``seconds`` (so that a mirror
    started beside it mirrors while they are produced)."""
    p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 5})
    began = time.monotonic()
    for n, i in enumerate(range(start, start + count)):
        p.produce(
            topic,
            value=b"v%08d" % i + b"." * (i % 50),
            key=b"key-%d" % (i % 997),
            headers=[("n", b"%d" % i), ("c", codec.encode())],
        )
        if n % 1000 == 0:
            p.poll(0)
            time.sleep(max(0.0, began + seconds * n / count - time.monotonic()))
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


def _read(bootstrap: str, topic: str, partition: int, want: int | None = None) -> list[tuple[object, ...]]:
    """The partition's records (READ_COMMITTED): up to its end, or, with ``want``, until that
    many arrived (waiting for a mirror to catch up) and nothing more within half a second."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-test-read",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        c.assign([TopicPartition(topic, partition, 0)])
        out: list[tuple[object, ...]] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                if want is not None:
                    if len(out) >= want:
                        break
                    continue
                end = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                if c.position([TopicPartition(topic, partition)])[0].offset >= end:
                    break
                continue
            assert msg.error() is None, msg.error()
            out.append((msg.key(), msg.value(), msg.headers(), msg.timestamp()))
        return out
    finally:
        c.close()


def _same_records(
    source: BrokerProcess, target: BrokerProcess, topic: str, remote: str, partitions: int, total: int
) -> None:
    """The target topic holds the source topic's records, the same and in the same order per
    partition: no gap, no duplicate (read after every record was produced)."""
    seen = 0
    for p in range(partitions):
        want = _read(source.bootstrap, topic, p)
        got = _read(target.bootstrap, remote, p, len(want))
        assert len(got) == len(want), f"partition {p}: {len(got)} records mirrored, {len(want)} at the source"
        first = next((i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w), None)
        assert first is None, f"partition {p}: record {first} differs: {got[first]} != {want[first]}"
        seen += len(want)
    assert seen == total


def _mirrored(target: BrokerProcess, remote: str, partitions: int) -> int:
    """The target topic's end offsets, summed (records and transaction markers)."""
    try:
        return sum(_ends(target.bootstrap, remote, partitions))
    except Exception:  # not created yet
        return 0


def _wait_progress(target: BrokerProcess, remote: str, partitions: int, beyond: int) -> int:
    return wait_for(
        lambda: n if (n := _mirrored(target, remote, partitions)) > beyond else None,
        30,
        f"{remote} to grow past {beyond}",
        interval=0.2,
    )


def _mirror_while_producing(
    source: BrokerProcess,
    target: BrokerProcess,
    tmp_path: Path,
    topic: str,
    records: int,
    seconds: float,
    pause: float = 0,
) -> None:
    """``records`` records over ``seconds`` in five codecs; while they are produced the mirror is
    stopped (SIGTERM) and killed (SIGKILL) in turn, each time after it mirrored more of them:
    twice, or with ``pause``, every ``pause`` seconds until the records are produced."""
    _create(source.bootstrap, topic, 4)
    remote = f"east.{topic}"
    errors: list[str] = []
    per = records // len(CODECS)
    producers = [
        threading.Thread(
            target=_produce, args=(source.bootstrap, topic, codec, i * per, per, errors, seconds)
        )
        for i, codec in enumerate(CODECS)
    ]
    with mirror(tmp_path, source, target, **{"exactly.once.source.support": "disabled"}) as m:
        for t in producers:
            t.start()
        done, stops = 0, 0
        while stops < 2 or (pause and producers[0].is_alive()):
            time.sleep(pause)
            done = _wait_progress(target, remote, 4, done)
            assert stops >= 2 or all(t.is_alive() for t in producers), "produced before the stop"
            sig = signal.SIGTERM if stops % 2 == 0 else signal.SIGKILL
            code = m.stop(sig)
            assert sig == signal.SIGKILL or code == 0, m.output()
            m.start()
            stops += 1
        for t in producers:
            t.join(seconds + 120)
        assert not errors
        _same_records(source, target, topic, remote, 4, per * len(CODECS))
        # idempotent mode writes no transaction markers: the offsets match one for one
        assert _ends(target.bootstrap, remote, 4) == _ends(source.bootstrap, topic, 4)
        assert m.stop() == 0, m.output()
    if pause:  # over many kills, some land after batches acknowledged but not yet saved
        assert "records were mirrored after the last saved position" in m.output()
    assert "saving the mirror's positions failed" not in m.output()


def test_mirror_while_producing_with_restarts(
    clusters: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    """200,000 records over ~10 s, the mirror stopped once and killed once in the middle."""
    _mirror_while_producing(*clusters, tmp_path, "orders", RECORDS, PRODUCE_S)


@pytest.mark.slow
def test_mirror_soak_while_producing_with_restarts(
    clusters: tuple[BrokerProcess, BrokerProcess], tmp_path: Path
) -> None:
    """2,000,000 records over ~2 minutes, the mirror stopped or killed every ~4 s."""
    _mirror_while_producing(*clusters, tmp_path, "orders-soak", 10 * RECORDS, 12 * PRODUCE_S, pause=3)


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
        producer = threading.Thread(
            target=_produce, args=(source.bootstrap, "payments", "zstd", 0, 20_000, errors, 4)
        )
        producer.start()
        _wait_progress(target, "east.payments", 2, 0)
        assert producer.is_alive(), "produced before the kill: not a mid-run kill"
        m.stop(signal.SIGKILL)
        m.start()
        producer.join(60)
        _same_records(source, target, "payments", "east.payments", 2, 20_000)
        # written in transactions: each committed one left a marker
        assert sum(_ends(target.bootstrap, "east.payments", 2)) > 20_000
        assert "exactly-once (target transactions)" in m.output()
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
