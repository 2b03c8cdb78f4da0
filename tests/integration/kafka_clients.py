"""The same few operations with each real Kafka client: produce, read back, end offsets, admin.

Opens sockets (through the clients) and runs ``kcat`` as a subprocess.

Consumers here never use consumer groups (no group coordinator in this step): manual assignment
from the beginning, no commits. confluent-kafka insists on a ``group.id`` even for ``assign()``,
so one is given and never used. Every read stops when each partition reached the end offset the
caller expects, or fails at a deadline naming what was missing.

A record read back is ``Rec(partition, offset, key, value)``; a produce returns what the client
acknowledged, in the same shape (kcat reports no offsets: it returns nothing, and the tests read
back instead).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

import aiokafka
import aiokafka.admin

__all__ = [
    "CLIENTS",
    "Rec",
    "aiokafka_values",
    "check_partition_logs",
    "consume",
    "create_topic",
    "end_offsets",
    "make_messages",
    "produce",
]

CLIENTS = ("confluent", "kafka-python", "aiokafka", "kcat")
#: Deadline for one produce or read of the sizes these tests use, on a busy 2-core machine.
IO_TIMEOUT = 120.0


class Rec(NamedTuple):
    partition: int
    offset: int
    key: bytes | None
    value: bytes


def make_messages(count: int, keys: int, tag: str, value_size: int = 100) -> list[tuple[bytes, bytes]]:
    """``count`` keyed messages; value = ``tag:index:key`` padded with ``.`` to ``value_size``.

    Printable ASCII with no tab or newline, so kcat's line formats carry them unchanged. The index
    in the value gives the production order, which per partition must survive the round trip.
    """
    out = []
    for i in range(count):
        key = f"k{i % keys:05d}".encode()
        value = f"{tag}:{i:09d}:{key.decode()}:".encode()
        out.append((key, value.ljust(value_size, b".")))
    return out


def index_of(value: bytes) -> int:
    return int(value.split(b":", 2)[1])


# -- topics ------------------------------------------------------------------------------------


def create_topic(
    bootstrap: str, topic: str, partitions: int, config: Mapping[str, str] | None = None
) -> None:
    """Create with confluent-kafka's admin client and wait until every worker's metadata has it."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1, config=dict(config or {}))],
        operation_timeout=30,
        request_timeout=30,
    )
    futures[topic].result(timeout=60)
    deadline = time.monotonic() + 30
    while True:
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        if (
            t is not None
            and t.error is None
            and len(t.partitions) == partitions
            and all(p.leader >= 0 for p in t.partitions.values())
        ):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} not in metadata 30 s after CreateTopics: {t}")
        time.sleep(0.1)


# -- produce -----------------------------------------------------------------------------------


def produce(
    client: str,
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    *,
    compression: str | None = None,
    idempotent: bool = True,
    acks: str = "all",
) -> list[Rec] | None:
    """Produce ``messages`` (key, value) in order; the acknowledged records, or None for kcat."""
    if client == "confluent":
        return produce_confluent(bootstrap, topic, messages, compression=compression, idempotent=idempotent)
    if client == "kafka-python":
        return produce_kafka_python(bootstrap, topic, messages, compression, idempotent)
    if client == "aiokafka":
        return asyncio.run(produce_aiokafka(bootstrap, topic, messages, compression, idempotent))
    if client == "kcat":
        produce_kcat(bootstrap, topic, messages, compression, idempotent)
        return None
    raise ValueError(client)


def produce_confluent(
    bootstrap: str,
    topic: str,
    messages: Iterable[tuple[bytes, bytes]],
    *,
    compression: str | None = None,
    idempotent: bool = True,
    extra: Mapping[str, Any] | None = None,
    partition_of: Mapping[int, int] | None = None,
) -> list[Rec]:
    """confluent-kafka; raises if any delivery failed. ``partition_of``: message index -> partition."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": idempotent,
        "acks": "all",
        "linger.ms": 5,
        "partitioner": "murmur2_random",  # the Java client's: the same key -> the same partition
        "message.timeout.ms": int(IO_TIMEOUT * 1000),
    }
    if compression:
        conf["compression.type"] = compression
    conf.update(extra or {})
    producer = confluent_kafka.Producer(conf)
    acked: list[Rec] = []
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            acked.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))

    for i, (key, value) in enumerate(messages):
        kwargs: dict[str, Any] = {}
        if partition_of is not None:
            kwargs["partition"] = partition_of[i]
        while True:
            try:
                producer.produce(topic, value, key, on_delivery=on_delivery, **kwargs)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    left = producer.flush(IO_TIMEOUT)
    assert left == 0, f"confluent-kafka: {left} messages still undelivered after {IO_TIMEOUT} s"
    assert not errors, f"confluent-kafka delivery errors: {errors[:5]} ({len(errors)} in all)"
    return acked


def produce_kafka_python(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    compression: str | None,
    idempotent: bool,
) -> list[Rec]:
    producer = kafka.KafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotent,
        acks="all",
        linger_ms=5,
        compression_type=compression,
        request_timeout_ms=30_000,
    )
    try:
        futures = [producer.send(topic, value=v, key=k) for k, v in messages]
        producer.flush(timeout=IO_TIMEOUT)
        acked = []
        for (key, value), fut in zip(messages, futures, strict=True):
            md = fut.get(timeout=IO_TIMEOUT)
            acked.append(Rec(md.partition, md.offset, key, value))
        return acked
    finally:
        producer.close(timeout=10)


async def produce_aiokafka(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    compression: str | None,
    idempotent: bool,
) -> list[Rec]:
    producer = aiokafka.AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        enable_idempotence=idempotent,
        acks="all",
        linger_ms=5,
        compression_type=compression,
        request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        futures = []
        for key, value in messages:
            futures.append(await producer.send(topic, value=value, key=key))
        results = await asyncio.wait_for(asyncio.gather(*futures), IO_TIMEOUT)
        return [
            Rec(md.partition, md.offset, key, value)
            for (key, value), md in zip(messages, results, strict=True)
        ]
    finally:
        await producer.stop()


def kcat() -> str:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    if path is None:
        raise AssertionError("kcat is not installed (apt-get install -y kcat)")
    return path


def produce_kcat(
    bootstrap: str,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    compression: str | None,
    idempotent: bool,
) -> None:
    args = [kcat(), "-P", "-b", bootstrap, "-t", topic, "-K", "\t", "-X", "partitioner=murmur2_random"]
    args += ["-X", f"enable.idempotence={'true' if idempotent else 'false'}", "-X", "acks=all"]
    if compression:
        args += ["-z", compression]
    data = b"".join(k + b"\t" + v + b"\n" for k, v in messages)
    done = subprocess.run(args, input=data, capture_output=True, timeout=IO_TIMEOUT, check=False)
    assert done.returncode == 0, f"kcat -P exited {done.returncode}: {done.stderr.decode(errors='replace')}"
    # Delivery failures are reported on stderr ("% ERROR: ... Delivery failed ...").
    err = done.stderr.decode(errors="replace")
    assert "ERROR" not in err and "failed" not in err.lower(), f"kcat -P: {err}"


# -- end offsets (ListOffsets latest) ----------------------------------------------------------


def end_offsets(client: str, bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """High watermark of each partition, as ``client`` reads it (ListOffsets latest)."""
    if client == "confluent":
        consumer = _confluent_consumer(bootstrap)
        try:
            marks = [
                consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)
                for p in range(partitions)
            ]
            return {p: int(high) for p, (_, high) in enumerate(marks)}
        finally:
            consumer.close()
    if client == "kafka-python":
        kc = kafka.KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
        try:
            tps = [kafka.TopicPartition(topic, p) for p in range(partitions)]
            return {tp.partition: int(o) for tp, o in kc.end_offsets(tps).items()}
        finally:
            kc.close()
    if client == "aiokafka":
        return asyncio.run(_aiokafka_end_offsets(bootstrap, topic, partitions))
    if client == "kcat":
        out = subprocess.run(
            [
                kcat(),
                "-Q",
                "-b",
                bootstrap,
                *[a for p in range(partitions) for a in ("-t", f"{topic}:{p}:-1")],
            ],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout.decode()
        # "<topic> [<partition>] offset <n>"
        found = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[0] == topic and parts[2] == "offset":
                found[int(parts[1].strip("[]"))] = int(parts[3])
        return found
    raise ValueError(client)


async def _aiokafka_end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = aiokafka.AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [aiokafka.TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: int(o) for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


# -- consume -----------------------------------------------------------------------------------


def consume(client: str, bootstrap: str, topic: str, ends: Mapping[int, int]) -> list[Rec]:
    """Every record of ``topic`` from the beginning up to ``ends`` (partition -> end offset)."""
    if client == "confluent":
        return consume_confluent(bootstrap, topic, ends)
    if client == "kafka-python":
        return consume_kafka_python(bootstrap, topic, ends)
    if client == "aiokafka":
        return asyncio.run(consume_aiokafka(bootstrap, topic, ends))
    if client == "kcat":
        return consume_kcat(bootstrap, topic, ends)
    raise ValueError(client)


def _confluent_consumer(bootstrap: str, extra: Mapping[str, Any] | None = None) -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "shardbroker-tests-unused",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            **(extra or {}),
        }
    )


def _missing(ends: Mapping[int, int], nxt: Mapping[int, int]) -> dict[int, tuple[int, int]]:
    return {p: (nxt.get(p, 0), e) for p, e in ends.items() if nxt.get(p, 0) < e}


def consume_confluent(
    bootstrap: str, topic: str, ends: Mapping[int, int], extra: Mapping[str, Any] | None = None
) -> list[Rec]:
    consumer = _confluent_consumer(bootstrap, extra)
    out: list[Rec] = []
    nxt: dict[int, int] = {}
    try:
        consumer.assign(
            [confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING) for p in ends]
        )
        deadline = time.monotonic() + IO_TIMEOUT
        while _missing(ends, nxt):
            assert time.monotonic() < deadline, f"confluent-kafka: (next, end) missing {_missing(ends, nxt)}"
            for msg in consumer.consume(10_000, timeout=0.5):
                err = msg.error()
                assert err is None, f"confluent-kafka consume error: {err}"
                p, o = msg.partition(), msg.offset()
                if o < ends.get(p, 0):
                    out.append(Rec(p, o, msg.key(), msg.value()))
                nxt[p] = o + 1
    finally:
        consumer.close()
    return out


def consume_kafka_python(bootstrap: str, topic: str, ends: Mapping[int, int]) -> list[Rec]:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    out: list[Rec] = []
    nxt: dict[int, int] = {}
    try:
        tps = [kafka.TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + IO_TIMEOUT
        while _missing(ends, nxt):
            assert time.monotonic() < deadline, f"kafka-python: (next, end) missing {_missing(ends, nxt)}"
            for tp, records in consumer.poll(timeout_ms=500, max_records=10_000).items():
                for r in records:
                    if r.offset < ends.get(tp.partition, 0):
                        out.append(Rec(tp.partition, r.offset, r.key, r.value))
                    nxt[tp.partition] = r.offset + 1
    finally:
        consumer.close()
    return out


async def consume_aiokafka(bootstrap: str, topic: str, ends: Mapping[int, int]) -> list[Rec]:
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[Rec] = []
    nxt: dict[int, int] = {}
    try:
        tps = [aiokafka.TopicPartition(topic, p) for p in ends]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + IO_TIMEOUT
        while _missing(ends, nxt):
            assert time.monotonic() < deadline, f"aiokafka: (next, end) missing {_missing(ends, nxt)}"
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batches.items():
                for r in records:
                    if r.offset < ends.get(tp.partition, 0):
                        out.append(Rec(tp.partition, r.offset, r.key, r.value))
                    nxt[tp.partition] = r.offset + 1
    finally:
        await consumer.stop()
    return out


async def aiokafka_values(consumer: aiokafka.AIOKafkaConsumer, count: int, timeout: float) -> set[bytes]:
    """Start ``consumer`` (subscribed, in a group), read until ``count`` distinct values or
    ``timeout`` seconds, stop it: the values read."""
    await consumer.start()
    got: set[bytes] = set()
    try:
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got.update(r.value for r in records)
    finally:
        await consumer.stop()
    return got


def consume_kcat(bootstrap: str, topic: str, ends: Mapping[int, int]) -> list[Rec]:
    """``kcat -C -e``: from the beginning until the end of every partition, one line per record."""
    out: list[Rec] = []
    for partition, end in ends.items():
        if end == 0:
            continue
        args = [kcat(), "-C", "-b", bootstrap, "-t", topic, "-p", str(partition), "-o", "beginning"]
        args += ["-c", str(end), "-e", "-q", "-f", "%p\t%o\t%k\t%s\n"]
        done = subprocess.run(args, capture_output=True, timeout=IO_TIMEOUT, check=False)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 0, f"kcat -C exited {done.returncode}: {err}"
        for line in done.stdout.splitlines():
            p, o, k, v = line.split(b"\t", 3)
            out.append(Rec(int(p), int(o), k or None, v))
    return out


# -- checks ------------------------------------------------------------------------------------


def check_partition_logs(
    records: Sequence[Rec],
    produced: Sequence[tuple[bytes, bytes]],
    ends: Mapping[int, int],
    who: str,
) -> None:
    """What was read is exactly what was produced: each message once, on its key's partition,
    in production order per partition, at dense offsets 0..end-1."""
    by_partition: dict[int, list[Rec]] = defaultdict(list)
    for r in records:
        by_partition[r.partition].append(r)
    assert sum(ends.values()) == len(produced), f"{who}: end offsets {dict(ends)} != {len(produced)} produced"
    for p, end in ends.items():
        recs = by_partition.get(p, [])
        offsets = [r.offset for r in recs]
        assert offsets == list(range(end)), (
            f"{who}: partition {p} offsets not dense 0..{end - 1}: "
            f"{len(offsets)} records, first {offsets[:5]}, last {offsets[-5:]}"
        )
        order = [index_of(r.value) for r in recs]
        assert order == sorted(order), f"{who}: partition {p} out of production order"
    assert set(by_partition) <= set(ends), f"{who}: records of unexpected partitions {set(by_partition)}"
    got = sorted((r.key or b"", r.value) for r in records)
    assert got == sorted(produced), f"{who}: read back {len(got)} records, produced {len(produced)}"
    partition_of_key: dict[bytes | None, int] = {}
    for r in records:
        assert partition_of_key.setdefault(r.key, r.partition) == r.partition, (
            f"{who}: key {r.key!r} on partitions {partition_of_key[r.key]} and {r.partition}"
        )
