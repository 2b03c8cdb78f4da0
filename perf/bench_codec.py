"""Codec benchmarks (pytest-benchmark): ``pytest perf/bench_codec.py --benchmark-only``.

Importable standalone (``python perf/bench_codec.py`` prints rough medians without pytest).
"""

from __future__ import annotations

import statistics
import time
from typing import Any
from uuid import UUID

from shardbroker.protocol import codec, messages

P = messages.ProduceRequest
M = messages.MetadataResponse
F = messages.FetchResponse


def produce_request(batch_size: int) -> bytes:
    batch = bytes(batch_size)
    msg = P(
        transactional_id=None,
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            P.TopicProduceData(name="bench", partition_data=[P.PartitionProduceData(index=0, records=batch)])
        ],
    )
    return codec.encode(msg, 9)


def metadata_response(partitions: int = 1000, topics: int = 10) -> M:
    per_topic = partitions // topics
    return M(
        brokers=[M.MetadataResponseBroker(node_id=i, host="127.0.0.1", port=9092 + i) for i in range(2)],
        cluster_id="cluster",
        controller_id=0,
        topics=[
            M.MetadataResponseTopic(
                name=f"topic-{t}",
                topic_id=UUID(int=t + 1),
                partitions=[
                    M.MetadataResponsePartition(
                        partition_index=p,
                        leader_id=p % 2,
                        leader_epoch=3,
                        replica_nodes=[p % 2],
                        isr_nodes=[p % 2],
                    )
                    for p in range(per_topic)
                ],
            )
            for t in range(topics)
        ],
    )


def fetch_response(partitions: int = 100, batch_size: int = 16 * 1024) -> F:
    batch = bytes(batch_size)
    return F(
        session_id=1,
        responses=[
            F.FetchableTopicResponse(
                topic_id=UUID(int=1),
                partitions=[
                    F.PartitionData(
                        partition_index=p, high_watermark=1000, last_stable_offset=1000, records=batch
                    )
                    for p in range(partitions)
                ],
            )
        ],
    )


PRODUCE_1MIB = produce_request(1 << 20)
PRODUCE_1KIB = produce_request(1 << 10)
METADATA = metadata_response()
METADATA_BYTES = codec.encode(METADATA, 12)
FETCH = fetch_response()
FETCH_BYTES = codec.encode(FETCH, 16)


def test_decode_produce_1mib(benchmark: Any) -> None:
    msg = benchmark(codec.decode, P, PRODUCE_1MIB, 9)
    assert len(msg.topic_data[0].partition_data[0].records) == 1 << 20


def test_decode_produce_1kib(benchmark: Any) -> None:
    msg = benchmark(codec.decode, P, PRODUCE_1KIB, 9)
    assert len(msg.topic_data[0].partition_data[0].records) == 1 << 10


def test_encode_metadata_1000_partitions(benchmark: Any) -> None:
    assert benchmark(codec.encode, METADATA, 12) == METADATA_BYTES


def test_decode_metadata_1000_partitions(benchmark: Any) -> None:
    assert benchmark(codec.decode, M, METADATA_BYTES, 12) == METADATA


def test_encode_fetch_100_partitions(benchmark: Any) -> None:
    assert len(benchmark(codec.encode_parts, FETCH, 16)) > 100  # records stay uncopied parts


def test_encode_fetch_100_partitions_joined(benchmark: Any) -> None:
    assert benchmark(codec.encode, FETCH, 16) == FETCH_BYTES


def test_decode_fetch_100_partitions(benchmark: Any) -> None:
    assert benchmark(codec.decode, F, FETCH_BYTES, 16) == FETCH


def _median_us(fn: Any, *args: Any, rounds: int = 200) -> float:
    fn(*args)
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn(*args)
        samples.append(time.perf_counter() - t)
    return statistics.median(samples) * 1e6


if __name__ == "__main__":
    for label, fn, args in [
        ("decode Produce v9, 1 MiB batch", codec.decode, (P, PRODUCE_1MIB, 9)),
        ("decode Produce v9, 1 KiB batch", codec.decode, (P, PRODUCE_1KIB, 9)),
        ("encode Metadata v12, 1000 partitions", codec.encode, (METADATA, 12)),
        ("decode Metadata v12, 1000 partitions", codec.decode, (M, METADATA_BYTES, 12)),
        ("encode_parts Fetch v16, 100 x 16 KiB", codec.encode_parts, (FETCH, 16)),
        ("decode Fetch v16, 100 x 16 KiB", codec.decode, (F, FETCH_BYTES, 16)),
    ]:
        print(f"{label:40s} {_median_us(fn, *args):10.1f} us")
