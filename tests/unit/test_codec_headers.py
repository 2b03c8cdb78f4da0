"""Request/response headers: derived versions, framing, and errors that keep the correlation id."""

from __future__ import annotations

import struct

import pytest

from shardbroker.protocol import codec, headers, messages
from shardbroker.protocol.errors import ErrorCode, ProtocolError, RequestHeaderError
from shardbroker.protocol.headers import RequestHeader, ResponseHeader


def test_header_versions_are_derived() -> None:
    assert headers.request_header_version(0, 8) == 1
    assert headers.request_header_version(0, 9) == 2
    assert headers.request_header_version(7, 0) == 0  # ControlledShutdown v0
    assert headers.request_header_version(7, 1) == 1
    assert headers.request_header_version(18, 3) == 2
    assert headers.response_header_version(0, 9) == 1
    assert headers.response_header_version(0, 8) == 0
    assert headers.response_header_version(18, 3) == 0  # ApiVersions response: always v0
    assert headers.response_header_version(3, 9) == 1


def test_request_round_trip_and_client_id_stays_classic() -> None:
    msg = messages.MetadataRequest(topics=None, allow_auto_topic_creation=False)
    h = RequestHeader(request_api_key=3, request_api_version=12, correlation_id=7, client_id="cli")
    frame = headers.encode_request(h, msg)
    (size,) = struct.unpack_from(">i", frame)
    assert size == len(frame) - 4
    # api key, version, correlation id, int16-length client id (not compact), empty tagged section
    assert frame[4 : 4 + 8 + 2 + 3 + 1] == struct.pack(">hhi", 3, 12, 7) + b"\x00\x03cli" + b"\x00"
    header, body = headers.decode_request(memoryview(frame)[4:])
    assert header == h and body == msg
    header, offset = headers.decode_request_header(memoryview(frame)[4:])
    assert offset == 8 + 5 + 1


def test_null_client_id_and_v0_header() -> None:
    h = RequestHeader(request_api_key=7, request_api_version=0, correlation_id=1, client_id=None)
    frame = headers.encode_request(h, messages.ControlledShutdownRequest(broker_id=3))
    assert frame[4:12] == struct.pack(">hhi", 7, 0, 1)  # no client id at all in v0
    assert frame[12:] == struct.pack(">i", 3)
    h1 = RequestHeader(request_api_key=12, request_api_version=0, correlation_id=1, client_id=None)
    frame = headers.encode_request(h1, messages.HeartbeatRequest())
    assert frame[12:14] == b"\xff\xff"
    assert headers.decode_request(frame[4:])[0].client_id is None


def test_response_frames() -> None:
    msg = messages.MetadataResponse(throttle_time_ms=5)
    frame = headers.encode_response(99, 3, 12, msg)
    assert frame[4:9] == struct.pack(">i", 99) + b"\x00"  # header v1: tagged section
    hdr, back = headers.decode_response(frame[4:], 3, 12)
    assert hdr.correlation_id == 99 and back == msg
    av = messages.ApiVersionsResponse(error_code=35)
    frame = headers.encode_response(5, 18, 3, av)
    assert frame[4:10] == struct.pack(">ih", 5, 35)  # header v0 even though v3 is flexible
    assert headers.decode_response(frame[4:], 18, 3)[1] == av
    with pytest.raises(ProtocolError):
        headers.encode_response(1, 0, 3, msg)


def test_response_parts() -> None:
    F = messages.FetchResponse
    big = bytes(range(256)) * 100
    msg = F(responses=[F.FetchableTopicResponse(topic="t", partitions=[F.PartitionData(records=big)])])
    parts = headers.encode_response_parts(3, 1, 11, msg)
    assert any(p is big for p in parts)
    assert b"".join(parts) == headers.encode_response(3, 1, 11, msg)
    assert headers.encode_response_parts(3, 1, 11, F()) == [headers.encode_response(3, 1, 11, F())]


def test_errors_keep_correlation_id() -> None:
    with pytest.raises(RequestHeaderError) as exc:
        headers.decode_request_header(memoryview(struct.pack(">hhi", 0, 99, 1234) + b"\x00\x00"))
    e = exc.value
    assert (e.api_key, e.api_version, e.correlation_id) == (0, 99, 1234)
    assert e.error_code == ErrorCode.UNSUPPORTED_VERSION == 35
    with pytest.raises(RequestHeaderError) as exc:
        headers.decode_request_header(memoryview(struct.pack(">hhi", 31000, 0, 77)))
    assert exc.value.correlation_id == 77 and exc.value.error_code == ErrorCode.INVALID_REQUEST == 42
    with pytest.raises(RequestHeaderError) as exc:  # client id length runs off the frame
        headers.decode_request_header(memoryview(struct.pack(">hhih", 0, 3, 5, 50) + b"ab"))
    assert exc.value.correlation_id == 5 and exc.value.error_code == 42
    with pytest.raises(ProtocolError) as exc2:
        headers.decode_request_header(memoryview(b"\x00\x00\x00"))
    assert not isinstance(exc2.value, RequestHeaderError)
    assert exc2.value.error_code == ErrorCode.CORRUPT_MESSAGE


def test_api_versions_request_at_unknown_future_version_still_answerable() -> None:
    frame = struct.pack(">hhi", 18, 300, 8) + b"\x00\x03cli\x00"
    with pytest.raises(RequestHeaderError) as exc:
        headers.decode_request(frame)
    assert exc.value.api_key == 18 and exc.value.correlation_id == 8 and exc.value.error_code == 35


def test_response_header_flexible_tagged_fields_preserved() -> None:
    rh = ResponseHeader(correlation_id=3)
    rh.unknown_tagged_fields = ((9, b"zz"),)
    data = codec.encode(rh, 1)
    assert codec.decode(ResponseHeader, data, 1) == rh


def test_error_code_table() -> None:
    assert ErrorCode.NONE == 0 and ErrorCode.UNKNOWN_SERVER_ERROR == -1
    assert ErrorCode(3) is ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and ErrorCode(3).retriable
    assert ErrorCode.NOT_LEADER_OR_FOLLOWER.retriable and not ErrorCode.INVALID_REQUEST.retriable
    assert not ErrorCode.NONE.retriable
    values = [int(c) for c in ErrorCode]
    assert values == sorted(values) and set(range(-1, 134)) <= set(values)
