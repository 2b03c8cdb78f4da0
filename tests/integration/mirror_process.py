"""Run ``shardbroker mirror`` as a subprocess between two test brokers, feed the source, compare.

Opens processes, files and sockets. What it relies on (the CLI contract, docs/notes/mirror.md):
``python -m shardbroker.cli.main mirror --config FILE --metrics HOST:PORT`` runs in the
foreground until SIGTERM (exit 0), reads MirrorMaker 2's property names from the TOML file and
serves ``shardbroker_mirror_*`` on ``GET /metrics``. Nothing here knows how the mirror works: a
test reads the source and the target with confluent-kafka and compares them.

With the default replication policy a source topic ``t`` is ``src.t`` on the target (the source's
alias is ``src``). ``SHARDBROKER_MIRROR_CMD`` overrides the command (shlex-split; ``mirror`` and
the options are appended), as ``SHARDBROKER_SERVE_CMD`` does for the broker.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import confluent_kafka
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.broker_process import BrokerProcess, toml_text, wait_for
from tests.integration.kafka_clients import IO_TIMEOUT
from tests.ports import free_port_block

__all__ = [
    "ROUND",
    "SOURCE_ALIAS",
    "FeedThread",
    "MirrorProcess",
    "Record",
    "assert_mirrored",
    "mirror_config",
    "read_topic",
]

SOURCE_ALIAS = "src"
#: Codecs the feed rotates through: the mirror passes batches through, compressed as they came.
CODECS = ("none", "lz4", "gzip", "zstd", "snappy")
#: (key, value, headers) of one record, as the tests compare them per partition.
Record = tuple[bytes | None, bytes, tuple[tuple[str, bytes], ...]]
#: Seconds between two rounds of the feed, and records in a round (no batch holds more).
PAUSE = 0.05
ROUND = 400


def mirror_config(source: BrokerProcess, target: BrokerProcess, **extra: str | int | bool) -> dict[str, Any]:
    """MirrorMaker 2 properties for ``source`` -> ``target``: topics ``mf-.*``, every interval 1 s
    (topics created during a test are found at once); ``extra`` on top (underscores for dots)."""
    config: dict[str, Any] = {
        "source.cluster.alias": SOURCE_ALIAS,
        "target.cluster.alias": "dst",
        "source.cluster.bootstrap.servers": source.bootstrap,
        "target.cluster.bootstrap.servers": target.bootstrap,
        "topics": "mf-.*",
        "refresh.topics.interval.seconds": 1,
        "refresh.groups.interval.seconds": 1,
        "emit.checkpoints.interval.seconds": 1,
        "sync.group.offsets.interval.seconds": 1,
    }
    config.update({key.replace("_", "."): value for key, value in extra.items()})
    return config


class MirrorProcess:
    """One ``shardbroker mirror`` (a session of its own), its config file, output and /metrics."""

    def __init__(self, config: Mapping[str, Any], log_dir: Path, name: str = "mirror") -> None:
        self.log_dir = log_dir
        self.name = name
        self.config_path = log_dir / f"{name}.toml"
        self.config_path.write_text(toml_text(config))
        self.metrics_port = free_port_block(1)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._log_path = log_dir / f"{name}.log"

    def command(self) -> list[str]:
        override = os.environ.get("SHARDBROKER_MIRROR_CMD")
        base = shlex.split(override) if override else [sys.executable, "-m", "shardbroker.cli.main"]
        return [
            *base,
            "mirror",
            "--config",
            str(self.config_path),
            "--metrics",
            f"127.0.0.1:{self.metrics_port}",
        ]

    def start(self) -> MirrorProcess:
        """Start (or start again after a kill) and wait until /metrics answers."""
        assert self.proc is None or self.proc.poll() is not None, "mirror already running"
        self.starts += 1
        with self._log_path.open("ab") as log:
            log.write(f"===== start {self.starts}: {shlex.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.log_dir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1"),
                start_new_session=True,
            )

        def answering() -> bool | None:
            self.assert_running()
            with contextlib.suppress(OSError):
                return self.scrape() is not None
            return None

        wait_for(answering, 60.0, f"{self.name}'s /metrics", interval=0.1)
        return self

    def assert_running(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, (
            f"{self.name} exited with {self.proc and self.proc.returncode}\n{self.output()}"
        )

    def scrape(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Every sample on /metrics: name -> (sorted labels) -> value."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
        return out

    def sample(self, name: str, **labels: str) -> float | None:
        return self.scrape().get(name, {}).get(tuple(sorted(labels.items())))

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed or committed on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def stop(self) -> int:
        """SIGTERM and the exit code (a running mirror must stop cleanly: 0)."""
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(
                    f"{self.name} still running 30 s after SIGTERM\n{self.output()}"
                ) from None
        return proc.returncode

    def output(self) -> str:
        return self._log_path.read_text(errors="replace")[-6000:] if self._log_path.exists() else ""


@contextlib.contextmanager
def running_mirror(config: Mapping[str, Any], log_dir: Path) -> Iterator[MirrorProcess]:
    """A started mirror, SIGKILLed on the way out whatever happened; its log printed (pytest shows
    it for failing tests)."""
    mirror = MirrorProcess(config, log_dir)
    try:
        yield mirror.start()
    finally:
        mirror.kill()
        print(mirror.output())


class FeedThread(threading.Thread):
    """Produce to the source until stopped (or ``limit`` records), in rounds of ``round_size``
    records, each round with the next codec's idempotent producer (so a partition holds batches of
    every codec) and a pause of ``PAUSE`` s (at most ~8,000 records/s, so a test's volume does not
    depend on how fast the machine is); keyed records with two headers, ``idx`` the production
    index."""

    def __init__(
        self, bootstrap: str, topics: tuple[str, ...], round_size: int = ROUND, limit: int = 0
    ) -> None:
        super().__init__(daemon=True, name="mirror-feed")
        self.bootstrap = bootstrap
        self.topics = topics
        self.round_size = round_size
        self.limit = limit
        self.stopping = threading.Event()
        self.acked = 0
        self.errors: list[str] = []
        self.failure: BaseException | None = None

    def _producer(self, codec: str) -> Any:
        return confluent_kafka.Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": codec,
                "partitioner": "murmur2_random",
                "message.timeout.ms": int(IO_TIMEOUT * 1000),
            }
        )

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.acked += 1

    def run(self) -> None:
        try:
            producers = [self._producer(codec) for codec in CODECS]
            i = 0
            while not self.stopping.is_set() and (not self.limit or i < self.limit):
                producer = producers[(i // self.round_size) % len(producers)]
                for _ in range(self.round_size):
                    key = f"k{i % 97:03d}".encode()
                    headers = [("idx", str(i).encode()), ("src", b"feed")]
                    value = f"feed:{i:09d}:".encode().ljust(60 + i % 80, b".")
                    topic = self.topics[i % len(self.topics)]
                    while True:
                        try:
                            producer.produce(topic, value, key, headers=headers, on_delivery=self._delivered)
                            break
                        except BufferError:
                            producer.poll(0.05)
                    i += 1
                left = producer.flush(IO_TIMEOUT)
                assert left == 0, f"{left} records undelivered"
                time.sleep(PAUSE)
        except BaseException as exc:  # re-raised by finish(), in the test's thread
            self.failure = exc

    def finish(self) -> int:
        """Stop (or, with a limit, let it reach it), wait, raise what the feed met; the records
        acknowledged."""
        if not self.limit:
            self.stopping.set()
        self.join(IO_TIMEOUT)
        assert not self.is_alive(), "the feed did not stop"
        if self.failure is not None:
            raise self.failure
        assert not self.errors, f"delivery errors: {self.errors[:5]} ({len(self.errors)})"
        return self.acked


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Each partition's high watermark, {} when the topic does not exist (yet)."""
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "mirror-tests-unused"})
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return {}
        marks = {
            p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=10)
            for p in meta.partitions
        }
        return {p: int(high) for p, (_, high) in marks.items()}
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, ends: Mapping[int, int]) -> dict[int, list[Record]]:
    """Every record of ``topic`` below ``ends``, per partition in offset order."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "mirror-tests-unused",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    out: dict[int, list[Record]] = {p: [] for p in ends}
    nxt = dict.fromkeys(ends, 0)
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in ends]
        )
        deadline = time.monotonic() + IO_TIMEOUT
        while any(nxt[p] < end for p, end in ends.items()):
            assert time.monotonic() < deadline, f"{topic}: read up to {nxt} of {dict(ends)}"
            batch: list[Any] = consumer.consume(10_000, timeout=0.5)
            for msg in batch:
                assert msg.error() is None, msg.error()
                p = msg.partition()
                if msg.offset() < ends[p]:
                    headers = tuple((k, v or b"") for k, v in msg.headers() or ())
                    out[p].append((msg.key(), msg.value(), headers))
                nxt[p] = msg.offset() + 1
    finally:
        consumer.close()
    return out


def caught_up(source: BrokerProcess, target: BrokerProcess, topic: str) -> bool | None:
    """True once the target's copy of ``topic`` ends where the source's does; an AssertionError
    at once if it ends past it (a duplicate)."""
    want = end_offsets(source.bootstrap, topic)
    got = end_offsets(target.bootstrap, f"{SOURCE_ALIAS}.{topic}")
    over = {p: (got[p], end) for p, end in want.items() if got.get(p, 0) > end}
    assert not over, f"{topic}: the target has more than the source (target, source) {over}"
    return (bool(want) and got == want) or None


def assert_mirrored(
    source: BrokerProcess, target: BrokerProcess, topic: str, mirror: MirrorProcess, timeout: float = 60.0
) -> int:
    """Wait until the target's copy of ``topic`` is complete, then compare it with the source,
    partition by partition: the same records (key, value, headers) in the same order, none
    missing, none twice. The number of records."""

    def done() -> bool | None:
        mirror.assert_running()
        return caught_up(source, target, topic)

    try:
        wait_for(done, timeout, f"the target's copy of {topic}", interval=0.25)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\nsource ends {end_offsets(source.bootstrap, topic)}, target ends "
            f"{end_offsets(target.bootstrap, f'{SOURCE_ALIAS}.{topic}')}\n{mirror.output()}"
        ) from None
    ends = end_offsets(source.bootstrap, topic)
    want = read_topic(source.bootstrap, topic, ends)
    got = read_topic(target.bootstrap, f"{SOURCE_ALIAS}.{topic}", ends)
    for p in ends:
        if got[p] != want[p]:
            first = next(i for i, (a, b) in enumerate(zip(got[p], want[p], strict=False)) if a != b)
            raise AssertionError(
                f"{topic}-{p}: target differs from source at offset {first}: {got[p][first]!r} != "
                f"{want[p][first]!r} ({len(got[p])} vs {len(want[p])} records)"
            )
    return sum(ends.values())
