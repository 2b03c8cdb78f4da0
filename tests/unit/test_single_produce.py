"""protocol/single_produce.py against the generic codec: every frame it reads decodes to the same
request there, every frame it refuses is left to the generic codec, and its answers are the
generic encoder's bytes."""

from __future__ import annotations

import pytest

from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_request, encode_request, encode_response
from shardbroker.protocol.single_produce import (
    FIRST_VERSION,
    LAST_VERSION,
    parse_single_produce,
    success_response,
)

VERSIONS = range(FIRST_VERSION, LAST_VERSION + 1)


def frame(
    version: int,
    *,
    topics: int = 1,
    partitions: int = 1,
    tid: str | None = None,
    records: bytes | None = b"batch-bytes" * 20,
    client_id: str | None = "cli\u00e9nt",
    topic: str = "t\u00f6pic",
) -> bytes:
    """A whole Produce request frame from the generic encoder, size prefix cut off."""
    request = m.ProduceRequest(
        transactional_id=tid,
        acks=-1,
        timeout_ms=1234,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=f"{topic}{t}" if t else topic,
                partition_data=[
                    m.ProduceRequest.PartitionProduceData(index=7 + p, records=records)
                    for p in range(partitions)
                ],
            )
            for t in range(topics)
        ],
    )
    header = m.RequestHeader(
        request_api_key=0, request_api_version=version, correlation_id=99, client_id=client_id
    )
    return encode_request(header, request)[4:]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("client_id", ["cli\u00e9nt", None, ""])
def test_a_single_partition_request_reads_as_the_generic_codec_reads_it(
    version: int, client_id: str | None
) -> None:
    data = frame(version, client_id=client_id)
    single = parse_single_produce(memoryview(data))
    assert single is not None
    header, request = decode_request(data)
    assert isinstance(request, m.ProduceRequest)
    assert (single.api_version, single.correlation_id, single.client_id) == (version, 99, header.client_id)
    assert (single.acks, single.timeout_ms) == (request.acks, request.timeout_ms)
    pd = request.topic_data[0].partition_data[0]
    assert (single.topic, single.partition) == (request.topic_data[0].name, pd.index)
    assert bytes(single.records) == bytes(pd.records)
    again_header, again = single.as_request()
    assert again == request and again_header.client_id == header.client_id


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "other",
    [
        {"topics": 2},
        {"partitions": 2},
        {"partitions": 0},
        {"tid": "txn"},
        {"tid": ""},
        {"records": None},
    ],
)
def test_other_shapes_are_left_to_the_generic_codec(version: int, other: dict[str, object]) -> None:
    assert parse_single_produce(memoryview(frame(version, **other))) is None  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 1, 2])
def test_message_set_versions_are_left_to_the_generic_codec(version: int) -> None:
    data = bytearray(frame(3))
    data[2:4] = version.to_bytes(2, "big")
    assert parse_single_produce(memoryview(bytes(data))) is None


@pytest.mark.parametrize("version", [3, 9])
def test_every_truncation_and_any_trailing_byte_is_refused(version: int) -> None:
    data = frame(version)
    for cut in range(len(data)):
        assert parse_single_produce(memoryview(data[:cut])) is None, cut
    assert parse_single_produce(memoryview(data + b"\x00")) is None


def test_tagged_fields_and_bad_utf8_are_refused() -> None:
    data = bytearray(frame(9))
    data[-1] = 1  # a request-level tagged field count of 1
    assert parse_single_produce(memoryview(bytes(data))) is None
    data = bytearray(frame(9, client_id="ab"))
    data[10] = 0xFF  # the client id's first byte: not UTF-8
    assert parse_single_produce(memoryview(bytes(data))) is None


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("topic", ["t", "a-much-longer-topic-name.with.dots_" * 3, "t\u00f6pic"])
def test_success_response_is_the_generic_encoders_frame(version: int, topic: str) -> None:
    for partition, base, lat, start in ((0, 0, -1, 0), (2**31 - 1, 2**62, 1_700_000_000_000, 5)):
        expected = encode_response(
            42,
            0,
            version,
            m.ProduceResponse(
                responses=[
                    m.ProduceResponse.TopicProduceResponse(
                        name=topic,
                        partition_responses=[
                            m.ProduceResponse.PartitionProduceResponse(
                                index=partition,
                                error_code=0,
                                base_offset=base,
                                log_append_time_ms=lat,
                                log_start_offset=start,
                            )
                        ],
                    )
                ]
            ),
        )
        assert success_response(version, 42, topic, partition, base, lat, start) == expected
