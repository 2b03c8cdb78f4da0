"""``shardbroker produce`` and ``shardbroker consume`` against a real broker, as an operator runs
them (``python -m shardbroker`` in a subprocess): round trips with confluent-kafka in both
directions, byte for byte with keys and headers and with every compression codec; Kafka's
partitioner; start positions (offset, timestamp); a consumer group whose commits
``shardbroker groups describe`` shows; and the error paths with their exit codes.

Starts a broker process and CLI subprocesses; opens sockets (through the clients).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import confluent_kafka
import pytest

from shardbroker.client.producer import default_partition
from tests.integration.broker_process import REPO, BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic
from tests.unit.kafka_fake import closed_port

CONFIG = {
    "auto.create.topics.enable": False,
    "group.initial.rebalance.delay.ms": 100,
    "group.min.session.timeout.ms": 1000,
}
CLI_TIMEOUT = 120.0

Record = tuple[
    int, bytes | None, bytes | None, list[tuple[str, bytes | None]]
]  # partition, key, value, headers


@pytest.fixture(scope="module")
def pbroker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(config=CONFIG)


def cli(bootstrap: str, *argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", *argv, "--bootstrap-server", bootstrap],
        input=stdin,
        capture_output=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def ok(bootstrap: str, *argv: str, stdin: bytes = b"") -> bytes:
    done = cli(bootstrap, *argv, stdin=stdin)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}"
    return done.stdout


def confluent_read(bootstrap: str, topic: str, partitions: int, count: int) -> list[Record]:
    """Every record of the topic from the beginning (manual assignment), headers included."""
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False}
    )
    consumer.assign(
        [
            confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
            for p in range(partitions)
        ]
    )
    got: list[Record] = []
    deadline = time.monotonic() + IO_TIMEOUT
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"confluent-kafka read {len(got)} of {count} records"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            got.append((msg.partition(), msg.key(), msg.value(), list(msg.headers() or [])))
    finally:
        consumer.close()
    return got


def confluent_write(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]], int | None]],
) -> None:
    """(key, value, headers, timestamp) in order, with the Java client's partitioner."""
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "linger.ms": 5}
    )
    errors: list[Any] = []
    for key, value, headers, ts in records:
        kwargs: dict[str, Any] = {"headers": headers} if headers else {}
        if ts is not None:
            kwargs["timestamp"] = ts
        producer.produce(topic, value, key, on_delivery=lambda err, msg: err and errors.append(err), **kwargs)
    assert producer.flush(IO_TIMEOUT) == 0 and not errors, errors


# -- CLI -> confluent-kafka ------------------------------------------------------------------------

VALUES = [b"plain", "unicode \u00e9\u4e2d\U0001f600".encode(), b"\xff\xfe\x00\x01 bytes", b"", b"tab\tinside"]


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_cli_produce_then_confluent_reads_the_same_bytes(pbroker: BrokerProcess, compression: str) -> None:
    b = pbroker.bootstrap
    topic = f"cli-pc-{compression}"
    create_topic(b, topic, 3)
    lines, want = [], []
    for i in range(60):
        value = VALUES[i % len(VALUES)] + b"#%d" % i
        key = b"key-%d\xc3" % (i % 13)
        headers = [("n", b"%d" % i), ("empty", b""), ("bin", b"\x00\xff")]
        lines.append(b"n:%d,empty:,bin:\x00\xff|" % i + key + b"=" + value)
        want.append((default_partition(key, 3), key, value, headers))
    lines.append(b"|=no key")  # an empty key is a key
    want.append((default_partition(b"", 3), b"", b"no key", []))
    stdin = b"\n".join(lines) + b"\n"
    props = ["--property", "parse.headers=true", "--property", "headers.delimiter=|", "--key-separator", "="]
    out = ok(b, "produce", "--topic", topic, "--compression", compression, *props, stdin=stdin)
    assert out == b""
    got = confluent_read(b, topic, 3, len(want))
    for partition in range(3):  # order is kept within each partition
        assert [r for r in got if r[0] == partition] == [r for r in want if r[0] == partition]


def test_cli_produce_to_one_partition_with_acks(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    create_topic(b, "cli-pc-part", 2)
    for acks in ("0", "1", "all"):
        ok(
            b,
            "produce",
            "--topic",
            "cli-pc-part",
            "--partition",
            "1",
            "--acks",
            acks,
            stdin=b"a-%s\nb-%s\n" % (acks.encode(), acks.encode()),
        )
    got = confluent_read(b, "cli-pc-part", 2, 6)
    assert [(p, v) for p, _, v, _ in got] == [
        (1, v) for v in (b"a-0", b"b-0", b"a-1", b"b-1", b"a-all", b"b-all")
    ]


# -- confluent-kafka -> CLI ------------------------------------------------------------------------


def test_confluent_produce_then_cli_consume(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    topic = "cli-cc"
    create_topic(b, topic, 2)
    records = [
        (
            b"k%d" % i,
            b"v\n%d\xff" % i if i % 3 == 0 else b"value %d" % i,
            [("h", b"%d" % i), ("nul", None)],
            None,
        )
        for i in range(40)
    ]
    records.append((None, b"keyless", [], None))
    records.append((b"tomb", None, [], None))
    confluent_write(b, topic, records)

    # JSON lines: exact bytes of keys, values and headers, whatever they hold
    out = ok(
        b,
        "consume",
        "--topic",
        topic,
        "--from-beginning",
        "--max-messages",
        str(len(records)),
        "--format",
        "json",
    )
    docs = [json.loads(line) for line in out.splitlines()]

    def raw(v: Any) -> bytes | None:
        return None if v is None else base64.b64decode(v["base64"]) if isinstance(v, dict) else v.encode()

    seen = {(raw(d["key"]), raw(d["value"])): d for d in docs}
    assert len(docs) == len(records) == len(seen)
    for key, value, headers, _ in records:
        d = seen[(key, value)]
        assert [(h[0], raw(h[1])) for h in d["headers"]] == headers
        if key is not None:
            assert d["partition"] == default_partition(key, 2)  # confluent's murmur2_random is ours
        assert d["topic"] == topic and d["timestamp_type"] == "CreateTime" and d["timestamp"] > 0
    by_partition: dict[int, list[int]] = {}
    for d in docs:
        by_partition.setdefault(d["partition"], []).append(d["offset"])
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())

    # plain, Kafka's formatter: partition, key and value as raw bytes
    out = ok(
        b,
        "consume",
        "--topic",
        topic,
        "--partition",
        str(default_partition(b"k1", 2)),
        "--offset",
        "earliest",
        "--timeout-ms",
        "1500",
        "--property",
        "print.key=true",
        "--property",
        "print.headers=true",
        "--property",
        "key.separator=|",
    )
    assert b"h:1,nul:null|k1|value 1\n" in out.splitlines(keepends=True)  # headers, key, value


def test_consume_from_offset_and_timestamp(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    topic = "cli-start"
    create_topic(b, topic, 1)
    base = int(time.time() * 1000) - 60_000
    confluent_write(b, topic, [(None, b"r%d" % i, [], base + 1000 * i) for i in range(6)])
    at = ["--topic", topic, "--timeout-ms", "1500"]
    assert ok(b, "consume", *at, "--partition", "0", "--offset", "4").splitlines() == [b"r4", b"r5"]
    assert ok(b, "consume", *at, "--timestamp", str(base + 2500)).splitlines() == [b"r3", b"r4", b"r5"]
    assert ok(b, "consume", *at, "--timestamp", str(base + 10**7)) == b""  # after the last: the end
    assert ok(b, "consume", *at, "--from-beginning", "--max-messages", "2").splitlines() == [b"r0", b"r1"]
    done = cli(b, "consume", *at)  # from the end: nothing new within the timeout
    assert done.returncode == 0 and done.stdout == b"" and b"Processed a total of 0 messages" in done.stderr


# -- groups ----------------------------------------------------------------------------------------


def describe_offsets(bootstrap: str, group: str, topic: str) -> dict[int, tuple[int, int, int]]:
    """partition -> (committed, log end, lag) from ``shardbroker groups describe``."""
    out = ok(bootstrap, "groups", "describe", group).decode()
    rows = [line.split() for line in out.splitlines() if line.startswith(group + " ")]
    return {int(r[2]): (int(r[3]), int(r[4]), int(r[5])) for r in rows if r[1] == topic}


def test_consume_with_a_group_commits_what_it_printed(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    topic, group = "cli-grp", "cli-grp-g"
    create_topic(b, topic, 3)
    ok(
        b,
        "produce",
        "--topic",
        topic,
        "--key-separator",
        ":",
        stdin=b"".join(b"k%d:v%d\n" % (i, i) for i in range(30)),
    )

    first = ok(
        b, "consume", "--topic", topic, "--group", group, "--from-beginning", "--max-messages", "12"
    ).splitlines()
    assert len(first) == 12
    offsets = describe_offsets(b, group, topic)
    assert sum(c for c, _, _ in offsets.values()) == 12
    assert sum(end for _, end, _ in offsets.values()) == 30
    assert all(lag == end - c for c, end, lag in offsets.values())

    # the group goes on where it stopped: the other 18, none twice
    rest = ok(b, "consume", "--topic", topic, "--group", group, "--timeout-ms", "3000").splitlines()
    assert sorted(first + rest) == sorted(b"v%d" % i for i in range(30))
    offsets = describe_offsets(b, group, topic)
    assert all(c == end and lag == 0 for c, end, lag in offsets.values())

    # the group's offsets live in the internal topic, which --exclude-internal leaves out
    assert "__consumer_offsets" in ok(b, "topics", "list").decode().split()
    assert "__consumer_offsets" not in ok(b, "topics", "list", "--exclude-internal").decode().split()

    # a confluent-kafka member of the same group finds nothing left to read
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": b, "group.id": group, "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            assert msg is None or msg.error() is not None, f"re-read {msg.value()!r} past the CLI's commit"
    finally:
        consumer.close()


# -- errors ----------------------------------------------------------------------------------------


def test_error_paths_and_exit_codes(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    create_topic(b, "cli-small", 1, {"max.message.bytes": "300"})

    # one record too large: reported by line with its Kafka error; the others are produced
    stdin = b"first\n" + b"x" * 1000 + b"\nlast\n"
    done = cli(b, "produce", "--topic", "cli-small", stdin=stdin)
    assert done.returncode == 1
    err = done.stderr.decode()
    assert "line 2: record (key null, value 1000 bytes) to cli-small-0: MESSAGE_TOO_LARGE" in err
    assert "1 of 3 records failed" in err and "line 1" not in err and "line 3" not in err
    assert ok(
        b, "consume", "--topic", "cli-small", "--from-beginning", "--timeout-ms", "1500"
    ).splitlines() == [b"first", b"last"]

    # a line without the key separator
    done = cli(b, "produce", "--topic", "cli-small", "--key-separator", ":", stdin=b"k:v\nnokey\n")
    assert done.returncode == 1 and b"line 2: no key separator ':'" in done.stderr

    # unknown topics (auto-creation is off on this broker)
    for argv in (
        ["produce", "--topic", "cli-none"],
        ["consume", "--topic", "cli-none", "--timeout-ms", "500"],
    ):
        done = cli(b, *argv, stdin=b"x\n")
        assert done.returncode == 1, argv
        assert b"UNKNOWN_TOPIC_OR_PARTITION: topic 'cli-none' does not exist" in done.stderr

    done = cli(b, "produce", "--topic", "cli-small", "--partition", "4", stdin=b"x\n")
    assert done.returncode == 1 and b"has no partition 4 (partitions 0-0)" in done.stderr
    done = cli(b, "consume", "--topic", "cli-small", "--partition", "4")
    assert done.returncode == 1 and b"has no partition 4" in done.stderr

    port = closed_port()
    for argv in (["produce", "--topic", "t"], ["consume", "--topic", "t"]):
        done = cli(f"127.0.0.1:{port}", *argv)
        assert done.returncode == 1 and f"broker 127.0.0.1:{port} unreachable".encode() in done.stderr


def test_an_interactive_line_is_sent_before_the_next_is_typed(pbroker: BrokerProcess) -> None:
    b = pbroker.bootstrap
    create_topic(b, "cli-live", 1)
    producer = subprocess.Popen(
        [sys.executable, "-m", "shardbroker", "produce", "--topic", "cli-live", "--bootstrap-server", b],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        assert producer.stdin is not None
        producer.stdin.write(b"typed\n")
        producer.stdin.flush()
        # stdin stays open: the line must arrive anyway
        assert confluent_read(b, "cli-live", 1, 1)[0][2] == b"typed"
        producer.stdin.close()
        assert producer.wait(CLI_TIMEOUT) == 0
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
        if producer.stderr is not None:
            producer.stderr.close()
