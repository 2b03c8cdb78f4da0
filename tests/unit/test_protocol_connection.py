"""The sans-IO server connection: byte strings in, events out; responses in request order."""

from __future__ import annotations

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.connection import (
    DEFAULT_BUFFER_SIZE,
    BadRequest,
    ConnectionClosed,
    Event,
    RequestReceived,
    ServerConnection,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.headers import decode_response, encode_request
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder


def frame(msg: Message, version: int, correlation_id: int = 1, client_id: str | None = "t") -> bytes:
    header = m.RequestHeader(
        request_api_key=msg.API_KEY,
        request_api_version=version,
        correlation_id=correlation_id,
        client_id=client_id,
    )
    return encode_request(header, msg)


def produce(records: bytes, correlation_id: int = 1) -> bytes:
    req = m.ProduceRequest(
        acks=1,
        timeout_ms=1000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name="t", partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=records)]
            )
        ],
    )
    return frame(req, 9, correlation_id)


def batch(n: int = 3, size: int = 10) -> bytes:
    b = RecordBatchBuilder()
    for i in range(n):
        b.append(b"v" * size, key=str(i).encode())
    return b.build()


def summary(events: list[Event]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, RequestReceived):
            out.append(("req", e.api_key, e.api_version, e.correlation_id, e.request))
        elif isinstance(e, BadRequest):
            out.append(("bad", e.api_key, e.api_version, e.correlation_id, e.error_code))
        else:
            out.append(("close", e.error_code))
    return out


def test_one_request() -> None:
    conn = ServerConnection()
    (event,) = conn.receive_data(frame(m.ApiVersionsRequest(), 0, correlation_id=7))
    assert isinstance(event, RequestReceived)
    assert (event.api_key, event.api_version, event.correlation_id) == (18, 0, 7)
    assert event.header.client_id == "t"
    assert event.request == m.ApiVersionsRequest()
    assert event.lease is None  # no records: nothing pinned


def test_pipelined_requests_in_one_chunk() -> None:
    data = b"".join(frame(m.ApiVersionsRequest(), 0, correlation_id=i) for i in range(10))
    events = ServerConnection().receive_data(data)
    assert [e.correlation_id for e in events if isinstance(e, RequestReceived)] == list(range(10))


def test_records_are_views_of_the_receive_buffer() -> None:
    conn = ServerConnection()
    records = batch()
    (event,) = conn.receive_data(produce(records))
    assert isinstance(event, RequestReceived)
    view = event.request.topic_data[0].partition_data[0].records  # type: ignore[attr-defined]
    assert isinstance(view, memoryview) and bytes(view) == records
    assert view.obj is conn._buf.data  # zero-copy: a slice of the connection's own buffer
    assert event.lease is not None and conn._buf.pins == 1
    conn.release(event)
    conn.release(event)  # idempotent
    assert conn._buf.pins == 0


def test_pinned_buffer_is_never_overwritten() -> None:
    """Many produce requests while the first is still being handled: its view stays intact."""
    conn = ServerConnection(buffer_size=4096)
    first_records = batch(5, 100)
    (first,) = conn.receive_data(produce(first_records, 0))
    assert isinstance(first, RequestReceived)
    view = first.request.topic_data[0].partition_data[0].records  # type: ignore[attr-defined]
    later = []
    for i in range(1, 50):
        events = conn.receive_data(produce(batch(5, 100 + i), i))
        later += events
        for e in events:
            conn.release(e)  # the later ones finish at once
    assert bytes(view) == first_records
    assert len(later) == 49
    conn.release(first)


def test_unpinned_buffer_is_reused_in_place() -> None:
    conn = ServerConnection(buffer_size=4096)
    buf = conn._buf
    for i in range(100):
        for e in conn.receive_data(produce(batch(5, 100), i)):
            conn.release(e)
    assert conn._buf is buf


def test_buffer_grows_for_a_big_frame_then_shrinks_back() -> None:
    conn = ServerConnection(buffer_size=4096)
    big = produce(batch(4, 10_000), 1)
    (event,) = conn.receive_data(big)
    assert isinstance(event, RequestReceived)
    assert len(conn._buf) >= len(big)
    conn.release(event)
    for e in conn.receive_data(frame(m.ApiVersionsRequest(), 0, 2) * 300):
        assert isinstance(e, RequestReceived)
    assert len(conn._buf) == 4096


def _resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def test_an_announced_frame_costs_only_what_has_arrived() -> None:
    """A slow sender that announces 64 MiB does not make us hold 64 MiB: the buffer grows with
    what arrives (at most 4x), and the whole frame, once in, is parsed as usual."""
    conn = ServerConnection()
    body = produce(batch(4, 1000), 1)[4:]
    size = 64 << 20
    before = _resident_mib()
    assert conn.receive_data(struct.pack(">i", size) + body[:100]) == []
    assert len(conn.get_buffer()) <= DEFAULT_BUFFER_SIZE  # what the event loop asks for before a recv
    assert _resident_mib() - before < 16
    rest = body[100:] + bytes(size - len(body))  # bytes after a complete body are ignored
    received = 104
    for at in range(0, len(rest) - (1 << 20), 1 << 20):
        assert conn.receive_data(rest[at : at + (1 << 20)]) == []
        received += 1 << 20
        assert len(conn._buf) <= max(DEFAULT_BUFFER_SIZE, 4 * received)
    (event,) = conn.receive_data(rest[received - 104 :])
    assert isinstance(event, RequestReceived) and isinstance(event.request, m.ProduceRequest)


def test_oversized_frame_is_refused_from_its_size_prefix_alone() -> None:
    conn = ServerConnection(max_request_size=1000)
    events = conn.receive_data(struct.pack(">i", 1001))
    assert summary(events) == [("close", ErrorCode.CORRUPT_MESSAGE)]
    assert isinstance(events[0], ConnectionClosed) and "socket.request.max.bytes" in events[0].reason
    assert conn.closed
    assert conn.receive_data(b"\x00" * 100) == []  # nothing after a close
    assert len(conn._buf) <= 1004  # never buffered beyond the cap


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    data = frame(m.ApiVersionsRequest(), 0)
    conn = ServerConnection(max_request_size=len(data) - 4)
    assert isinstance(conn.receive_data(data)[0], RequestReceived)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">i", -5) + b"\x00" * 8, id="negative-size"),
        pytest.param(struct.pack(">i", 3) + b"\x00\x03\x00", id="shorter-than-a-header"),
        pytest.param(
            struct.pack(">i", 14) + struct.pack(">hhi", 3, 12, 1) + b"\x00\x00\x00\xff\xff\xff\xff\x0f",
            id="body-overruns-frame",
        ),
    ],
)
def test_malformed_frames_close(data: bytes) -> None:
    events = ServerConnection().receive_data(data)
    assert summary(events) == [("close", ErrorCode.CORRUPT_MESSAGE)]


def test_trailing_bytes_after_the_body_are_ignored_as_kafka_does() -> None:
    # librdkafka 2.16's Metadata v12 request for all topics, as captured on the wire
    frame = bytes.fromhex("0003000c00000003000772646b61666b610000000000010000")
    (event,) = ServerConnection().receive_data(struct.pack(">i", len(frame)) + frame)
    assert isinstance(event, RequestReceived)
    assert event.request.topics is None  # type: ignore[attr-defined]


def test_unknown_api_key_and_version_outside_the_specs_are_bad_requests() -> None:
    unknown = struct.pack(">hhih", 999, 0, 5, -1)
    too_new = struct.pack(">hhih", 18, 99, 6, -1) + b"\x00"
    conn = ServerConnection()
    events = conn.receive_data(
        struct.pack(">i", len(unknown)) + unknown + struct.pack(">i", len(too_new)) + too_new
    )
    assert summary(events) == [
        ("bad", 999, 0, 5, ErrorCode.INVALID_REQUEST),
        ("bad", 18, 99, 6, ErrorCode.UNSUPPORTED_VERSION),
    ]
    assert conn.in_flight == 2 and not conn.closed


def test_versions_the_broker_does_not_serve_are_bad_requests_without_decoding() -> None:
    conn = ServerConnection(supported={18: (0, 2)})
    garbage_body = struct.pack(">hhih", 18, 3, 1, 1) + b"t\x00" + b"\xff" * 20  # the v3 body would not decode
    events = conn.receive_data(struct.pack(">i", len(garbage_body)) + garbage_body)
    events += conn.receive_data(frame(m.MetadataRequest(topics=None), 12, 2))
    assert summary(events) == [
        ("bad", 18, 3, 1, ErrorCode.UNSUPPORTED_VERSION),
        ("bad", 3, 12, 2, ErrorCode.UNSUPPORTED_VERSION),
    ]


def test_responses_go_out_in_request_order() -> None:
    conn = ServerConnection()
    events = conn.receive_data(b"".join(frame(m.ApiVersionsRequest(), 0, i) for i in range(3)))
    e0, e1, e2 = events
    assert (
        isinstance(e0, RequestReceived)
        and isinstance(e1, RequestReceived)
        and isinstance(e2, RequestReceived)
    )
    conn.respond(e2, m.ApiVersionsResponse(error_code=2))
    conn.respond(e1, None)  # no response for this one (like acks=0)
    assert conn.data_to_send() == [] and conn.in_flight == 3
    conn.respond(e0, m.ApiVersionsResponse(error_code=0))
    out = b"".join(conn.data_to_send())
    assert conn.in_flight == 0
    first_size = struct.unpack(">i", out[:4])[0]
    h0, r0 = decode_response(out[4 : 4 + first_size], 18, 0)
    h2, r2 = decode_response(out[8 + first_size :], 18, 0)
    assert (h0.correlation_id, r0.error_code) == (0, 0)  # type: ignore[attr-defined]
    assert (h2.correlation_id, r2.error_code) == (2, 2)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="already answered"):
        conn.respond(e0, None)


def test_error_answer_at_another_version_and_close_after() -> None:
    conn = ServerConnection()
    bad_body = struct.pack(">hhih", 18, 99, 6, -1)
    (bad,) = conn.receive_data(struct.pack(">i", len(bad_body)) + bad_body)
    (good,) = conn.receive_data(frame(m.ApiVersionsRequest(), 0, 7))
    assert isinstance(bad, BadRequest) and isinstance(good, RequestReceived)
    conn.respond(
        bad, m.ApiVersionsResponse(error_code=ErrorCode.UNSUPPORTED_VERSION), version=0, close_after=True
    )
    conn.respond(good, m.ApiVersionsResponse())
    (data,) = conn.data_to_send()
    header, response = decode_response(data[4:], 18, 0)
    assert header.correlation_id == 6 and response.error_code == ErrorCode.UNSUPPORTED_VERSION  # type: ignore[attr-defined]
    assert conn.must_close  # and the later response is never handed out
    assert conn.data_to_send() == []


def test_respond_refuses_a_response_that_does_not_encode() -> None:
    conn = ServerConnection()
    (event,) = conn.receive_data(frame(m.MetadataRequest(topics=[]), 0))
    assert isinstance(event, RequestReceived)
    bad = m.MetadataResponse(brokers=[m.MetadataResponse.MetadataResponseBroker(node_id="zero")])
    with pytest.raises(ProtocolError):
        conn.respond(event, bad)
    conn.respond(event, m.MetadataResponse())  # the slot is still open
    assert conn.data_to_send()


def _stream() -> tuple[bytes, list[tuple[object, ...]]]:
    parts = [
        frame(m.ApiVersionsRequest(client_software_name="x", client_software_version="1"), 3, 1),
        produce(batch(3, 50), 2),
        frame(m.MetadataRequest(topics=None), 12, 3),
        struct.pack(">i", 10) + struct.pack(">hhih", 999, 0, 4, -1),
        produce(batch(1, 3000), 5),
    ]
    data = b"".join(parts)
    return data, summary(ServerConnection().receive_data(data))


STREAM, STREAM_EVENTS = _stream()


def test_the_stream_split_at_every_byte_boundary_gives_the_same_events() -> None:
    assert len(STREAM_EVENTS) == 5
    for cut in range(1, len(STREAM)):
        conn = ServerConnection(buffer_size=512)
        events = conn.receive_data(STREAM[:cut]) + conn.receive_data(STREAM[cut:])
        assert summary(events) == STREAM_EVENTS, cut


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=20), st.booleans())
def test_any_chunking_gives_the_same_events(cuts: list[int], hold: bool) -> None:
    conn = ServerConnection(buffer_size=256)
    events: list[Event] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(STREAM)]:
        new = conn.receive_data(STREAM[prev:cut])
        if not hold:
            for e in new:
                conn.release(e)
        events += new
        prev = cut
    assert summary(events) == STREAM_EVENTS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(min_value=1, max_value=64))
def test_random_bytes_never_raise(data: bytes, chunk: int) -> None:
    conn = ServerConnection(max_request_size=200, buffer_size=64)
    events: list[Event] = []
    for i in range(0, len(data), chunk):
        events += conn.receive_data(data[i : i + chunk])
    closes = [e for e in events if isinstance(e, ConnectionClosed)]
    assert len(closes) <= 1 and (not closes or events[-1] is closes[0])


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=70), st.binary(min_size=0, max_size=120))
def test_random_bodies_behind_a_valid_prefix_never_raise(api_key: int, body: bytes) -> None:
    """A plausible header (known api key, version 0..) then random bytes: an event, never an exception."""
    data = struct.pack(">hhi", api_key, body[0] % 16 if body else 0, 1) + body
    events = ServerConnection().receive_data(struct.pack(">i", len(data)) + data)
    assert len(events) == 1
