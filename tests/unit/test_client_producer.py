"""The TCP producer (shardbroker.client.producer) against the fake broker: batching, one batch per
partition per request, Kafka's partitioner, acks=0, retries, per-record errors, splitting a batch
refused as too large. Opens loopback sockets and the fake broker's threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.client.connection import KafkaApiError
from shardbroker.client.producer import RecordMetadata, TcpProducer, default_partition, murmur2
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import iter_batches
from tests.unit.kafka_fake import FakeBroker, running_fake

R = m.ProduceResponse


class ProduceLog:
    """A Produce handler that appends to per-partition logs; ``errors`` queues error codes to
    answer per partition first (with optional record errors)."""

    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        self.ends: dict[tuple[str, int], int] = {}
        self.records: dict[tuple[str, int], list[tuple[bytes | None, bytes | None, tuple[Any, ...]]]] = {}
        self.errors: dict[tuple[str, int], list[tuple[int, list[tuple[int, str]]]]] = {}
        fake.versions[0] = (0, 11)
        fake.handlers[0] = self.answer

    def answer(self, version: int, request: Any) -> Message | None:
        topics = []
        for t in request.topic_data:
            parts = []
            for pd in t.partition_data:
                tp = (t.name, pd.index)
                queued = self.errors.get(tp)
                if queued:
                    code, record_errors = queued.pop(0)
                    parts.append(
                        R.PartitionProduceResponse(
                            index=pd.index,
                            error_code=code,
                            base_offset=-1,
                            record_errors=[
                                R.BatchIndexAndErrorMessage(batch_index=i, batch_index_error_message=msg)
                                for i, msg in record_errors
                            ],
                        )
                    )
                    continue
                base = self.ends.get(tp, 0)
                batches = list(iter_batches(pd.records))
                assert len(batches) == 1, "Produce v3+ carries exactly one batch per partition"
                recs = [
                    (
                        None if r.key is None else bytes(r.key),
                        None if r.value is None else bytes(r.value),
                        tuple((h.key, None if h.value is None else bytes(h.value)) for h in r.headers),
                    )
                    for r in batches[0].records()
                ]
                self.records.setdefault(tp, []).extend(recs)
                self.ends[tp] = base + len(recs)
                parts.append(
                    R.PartitionProduceResponse(index=pd.index, base_offset=base, log_append_time_ms=-1)
                )
            topics.append(R.TopicProduceResponse(name=t.name, partition_responses=parts))
        if request.acks == 0:
            return None
        return R(responses=topics)

    def requests(self) -> list[Any]:
        return [r for _, r in self.fake.apis(0)]


@pytest.fixture
def log() -> Iterator[ProduceLog]:
    with running_fake() as fake:
        fake.topics = {"t": 3, "u": 1}
        yield ProduceLog(fake)


def test_murmur2_matches_kafka() -> None:
    # Kafka's UtilsTest.testMurmur2 vectors
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107
    assert default_partition(b"21", 7) == (-973932308 & 0x7FFFFFFF) % 7


def test_records_batch_per_partition_in_one_request(log: ProduceLog) -> None:
    delivered: list[RecordMetadata] = []
    keys = [b"key-%d" % i for i in range(20)]
    with TcpProducer(log.fake.address, timeout=5) as producer:
        for i, key in enumerate(keys):
            producer.send("t", b"value-%d" % i, key, headers=[("n", b"%d" % i)], on_delivery=delivered.append)
        assert log.requests() == []  # nothing is sent before a flush (or a full request)
        producer.flush()
    requests = log.requests()
    assert len(requests) == 1 and requests[0].acks == -1
    partitions = [pd.index for t in requests[0].topic_data for pd in t.partition_data]
    assert sorted(partitions) == sorted(set(partitions))
    for i, key in enumerate(keys):
        p = default_partition(key, 3)
        assert (key, b"value-%d" % i, (("n", b"%d" % i),)) in log.records[("t", p)]
    assert len(delivered) == 20 and all(d.error is None for d in delivered)
    by_partition: dict[int, list[int]] = {}
    for d in delivered:
        by_partition.setdefault(d.partition, []).append(d.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())


def test_small_batch_size_makes_ordered_requests_one_batch_per_partition(log: ProduceLog) -> None:
    delivered: list[RecordMetadata] = []
    with TcpProducer(log.fake.address, timeout=5, batch_size=200) as producer:
        for i in range(30):
            producer.send("t", b"x" * 50 + b"%d" % i, partition=1, on_delivery=delivered.append)
    requests = log.requests()
    assert len(requests) > 1
    for request in requests:
        assert [pd.index for t in request.topic_data for pd in t.partition_data] == [1]
    assert [v for _, v, _ in log.records[("t", 1)]] == [b"x" * 50 + b"%d" % i for i in range(30)]
    assert [d.offset for d in delivered] == list(range(30))


def test_keyless_records_stick_to_one_partition_per_batch(log: ProduceLog) -> None:
    with TcpProducer(log.fake.address, timeout=5) as producer:
        for i in range(10):
            producer.send("t", b"%d" % i)
    assert len(log.records) == 1  # one sticky partition for the one batch


def test_compression_and_nulls(log: ProduceLog) -> None:
    with TcpProducer(log.fake.address, timeout=5, compression=CompressionType.ZSTD) as producer:
        producer.send("u", None, b"tombstone", headers=[("h", None)])
    batch = next(iter_batches(log.requests()[0].topic_data[0].partition_data[0].records))
    assert batch.compression_type == CompressionType.ZSTD
    assert log.records[("u", 0)] == [(b"tombstone", None, (("h", None),))]


def test_acks_zero_waits_for_no_answer(log: ProduceLog) -> None:
    delivered: list[RecordMetadata] = []
    with TcpProducer(log.fake.address, timeout=5, acks=0) as producer:
        producer.send("u", b"a", on_delivery=delivered.append)
        producer.flush()
        producer.send("u", b"b", on_delivery=delivered.append)
    assert [d.offset for d in delivered] == [-1, -1] and all(d.error is None for d in delivered)
    deadline = time.monotonic() + 5  # nothing answers, so the fake may still be reading
    while len(log.requests()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.acks for r in log.requests()] == [0, 0]
    assert [v for _, v, _ in log.records[("u", 0)]] == [b"a", b"b"]


def test_retriable_error_is_retried_with_fresh_metadata(log: ProduceLog) -> None:
    log.errors[("u", 0)] = [(ErrorCode.NOT_LEADER_OR_FOLLOWER, [])]
    delivered: list[RecordMetadata] = []
    with TcpProducer(log.fake.address, timeout=5) as producer:
        producer.send("u", b"a", on_delivery=delivered.append)
        metadata_before = len(log.fake.apis(3))
    assert len(log.requests()) == 2
    assert len(log.fake.apis(3)) > metadata_before
    assert delivered == [RecordMetadata("u", 0, 0, delivered[0].timestamp)]


def test_errors_are_reported_per_record_by_name(log: ProduceLog) -> None:
    log.errors[("u", 0)] = [(ErrorCode.INVALID_RECORD, [(1, "record 1 has no key")])]
    delivered: list[RecordMetadata] = []
    with TcpProducer(log.fake.address, timeout=5) as producer:
        for v in (b"a", b"b", b"c"):
            producer.send("u", v, on_delivery=delivered.append)
    assert len(log.requests()) == 1  # not retriable: no second try
    errors = [d.error for d in delivered]
    assert all(isinstance(e, KafkaApiError) and e.name == "INVALID_RECORD" for e in errors)
    assert "record 1 has no key" in str(errors[1]) and "record 1" not in str(errors[0])
    assert all(d.offset == -1 for d in delivered)


def test_batch_refused_as_too_large_is_split(log: ProduceLog) -> None:
    # the two-record batch is refused, then "big" alone; "small" alone is accepted
    log.errors[("u", 0)] = [(ErrorCode.MESSAGE_TOO_LARGE, []), (ErrorCode.MESSAGE_TOO_LARGE, [])]
    delivered: list[RecordMetadata] = []
    with TcpProducer(log.fake.address, timeout=5) as producer:
        for v in (b"big", b"small"):
            producer.send("u", v, on_delivery=delivered.append)
    # 1 request with both records, refused; then one request per record (one batch per partition)
    assert [
        sum(len(list(iter_batches(pd.records))) for t in r.topic_data for pd in t.partition_data)
        for r in log.requests()
    ] == [1, 1, 1]
    assert [(d.error.name if d.error else None) for d in delivered] == ["MESSAGE_TOO_LARGE", None]


def test_unknown_topic_and_partition(log: ProduceLog) -> None:
    with TcpProducer(log.fake.address, timeout=5) as producer:
        with pytest.raises(KafkaApiError, match="UNKNOWN_TOPIC_OR_PARTITION: topic 'nope' does not exist"):
            producer.send("nope", b"x")
        with pytest.raises(KafkaApiError, match="has no partition 3 \\(partitions 0-2\\)"):
            producer.send("t", b"x", partition=3)
    requests = log.fake.apis(3)
    assert requests and all(r.allow_auto_topic_creation for _, r in requests if r.topics)


def test_bad_acks() -> None:
    with pytest.raises(ValueError, match="acks"):
        TcpProducer("127.0.0.1:1", acks=2)
