"""Record batches as librdkafka (confluent-kafka) really sends them, captured live.

A tiny fake broker on 127.0.0.1 (a thread in this test, hand-encoded so it depends on nothing
but the wire format) speaks just enough Kafka for a producer: ApiVersions v0-3, Metadata v0-4
and Produce v3-7. It keeps the ``records`` bytes of every Produce request and answers success;
the test parses them with :class:`RecordBatch`, for every codec librdkafka supports here.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.record_batch import RecordBatch, split_batches

confluent_kafka = pytest.importorskip("confluent_kafka")

TOPIC = "captured"

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


def _string(s: str | None) -> bytes:
    if s is None:
        return _I16.pack(-1)
    b = s.encode()
    return _I16.pack(len(b)) + b


class _Reader:
    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def i8(self) -> int:
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def i16(self) -> int:
        (v,) = _I16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def i32(self) -> int:
        (v,) = _I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def string(self) -> str | None:
        n = self.i16()
        if n < 0:
            return None
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s

    def bytes_(self) -> bytes | None:
        n = self.i32()
        if n < 0:
            return None
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b


# Fetch and FindCoordinator are advertised but never served: librdkafka 2.x enables MsgVer2 only
# if Fetch >= 4 is advertised, and lz4 only if FindCoordinator is ("Feature LZ4: FindCoordinator
# (0..32767) NOT supported by broker" -> "not compressing batch"). Worth knowing for ApiVersions.
API_VERSIONS = {0: (3, 7), 1: (4, 11), 3: (0, 4), 10: (0, 3), 18: (0, 3)}


def _api_versions_response(version: int) -> bytes:
    if version >= 3:  # flexible body (header stays v0 for ApiVersions)
        body = _I16.pack(0) + bytes([len(API_VERSIONS) + 1])
        for key, (lo, hi) in API_VERSIONS.items():
            body += _I16.pack(key) + _I16.pack(lo) + _I16.pack(hi) + b"\x00"
        return body + _I32.pack(0) + b"\x00"
    body = _I16.pack(0) + _I32.pack(len(API_VERSIONS))
    for key, (lo, hi) in API_VERSIONS.items():
        body += _I16.pack(key) + _I16.pack(lo) + _I16.pack(hi)
    return body + (_I32.pack(0) if version >= 1 else b"")


def _metadata_response(version: int, port: int) -> bytes:
    out = _I32.pack(0) if version >= 3 else b""  # throttle_time_ms
    out += _I32.pack(1) + _I32.pack(0) + _string("127.0.0.1") + _I32.pack(port)
    if version >= 1:
        out += _string(None)  # rack
    if version >= 2:
        out += _string("fake-cluster")
    if version >= 1:
        out += _I32.pack(0)  # controller
    out += _I32.pack(1) + _I16.pack(0) + _string(TOPIC)
    if version >= 1:
        out += b"\x00"  # is_internal
    out += _I32.pack(1)  # one partition
    out += _I16.pack(0) + _I32.pack(0) + _I32.pack(0)  # error, index, leader
    out += _I32.pack(1) + _I32.pack(0) + _I32.pack(1) + _I32.pack(0)  # replicas, isr
    return out


def _produce(r: _Reader, version: int, captured: list[bytes]) -> bytes:
    if version >= 3:
        r.string()  # transactional_id
    r.i16()  # acks
    r.i32()  # timeout
    out = b""
    topics = r.i32()
    out += _I32.pack(topics)
    for _ in range(topics):
        name = r.string()
        out += _string(name)
        parts = r.i32()
        out += _I32.pack(parts)
        for _ in range(parts):
            index = r.i32()
            records = r.bytes_()
            if records is not None:
                captured.append(records)
            out += _I32.pack(index) + _I16.pack(0) + _I64.pack(len(captured) * 100)
            if version >= 2:
                out += _I64.pack(-1)  # log_append_time_ms
            if version >= 5:
                out += _I64.pack(0)  # log_start_offset
    return out + _I32.pack(0)  # throttle_time_ms


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError
        buf += chunk
    return buf


def _serve_conn(conn: socket.socket, port: int, captured: list[bytes]) -> None:
    with conn:
        while True:
            try:
                (size,) = _I32.unpack(_recv_exact(conn, 4))
                frame = _recv_exact(conn, size)
            except (ConnectionError, OSError):
                return
            r = _Reader(frame)
            api_key, version, correlation_id = r.i16(), r.i16(), r.i32()
            r.string()  # client_id
            if api_key == 18:
                if version >= 3:
                    r.pos += 1  # empty tagged fields of header v2
                body = _api_versions_response(version)
            elif api_key == 3:
                body = _metadata_response(version, port)
            elif api_key == 0:
                body = _produce(r, version, captured)
            else:
                return
            resp = _I32.pack(correlation_id) + body
            conn.sendall(_I32.pack(len(resp)) + resp)


@contextmanager
def fake_broker() -> Iterator[tuple[int, list[bytes]]]:
    captured: list[bytes] = []
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def accept_loop() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            threading.Thread(target=_serve_conn, args=(conn, port, captured), daemon=True).start()

    t = threading.Thread(target=accept_loop, daemon=True)
    t.start()
    try:
        yield port, captured
    finally:
        stop.set()
        t.join(2)
        srv.close()


def _capture(codec: str, n: int = 20) -> list[bytes]:
    with fake_broker() as (port, captured):
        p = confluent_kafka.Producer(
            {
                "bootstrap.servers": f"127.0.0.1:{port}",
                "compression.type": codec,
                "linger.ms": 50,
                "enable.idempotence": False,
                "socket.timeout.ms": 5000,
                "message.timeout.ms": 10000,
            }
        )
        for i in range(n):
            headers = [("h", b"hv"), ("n", None)] if i % 5 == 0 else None
            key = None if i % 3 == 0 else f"key-{i}".encode()
            p.produce(TOPIC, value=(f"value-{i}-" * (i + 1)).encode(), key=key, headers=headers)
        remaining = p.flush(15)
        assert remaining == 0, "librdkafka did not get its messages acknowledged by the fake broker"
        return list(captured)


@pytest.mark.parametrize(
    "codec,expected",
    [
        ("none", CompressionType.NONE),
        ("gzip", CompressionType.GZIP),
        ("snappy", CompressionType.SNAPPY),
        ("lz4", CompressionType.LZ4),
        ("zstd", CompressionType.ZSTD),
    ],
)
def test_parse_batches_produced_by_librdkafka(codec: str, expected: CompressionType) -> None:
    n = 20
    try:
        blobs = _capture(codec, n)
    except confluent_kafka.KafkaException as exc:  # pragma: no cover - depends on the build
        pytest.skip(f"librdkafka build cannot use {codec}: {exc}")
    values: list[bytes] = []
    for blob in blobs:
        for batch in split_batches(blob):
            batch.validate()
            assert batch.magic == 2
            assert batch.compression_type == expected
            assert batch.producer_id == -1  # idempotence off
            for rec in batch.records():
                i = len(values)
                assert rec.value is not None
                values.append(bytes(rec.value))
                assert (None if rec.key is None else bytes(rec.key)) == (
                    None if i % 3 == 0 else f"key-{i}".encode()
                )
                if i % 5 == 0:
                    assert [(h.key, None if h.value is None else bytes(h.value)) for h in rec.headers] == [
                        ("h", b"hv"),
                        ("n", None),
                    ]
                else:
                    assert rec.headers == ()
    assert values == [(f"value-{i}-" * (i + 1)).encode() for i in range(n)]


def test_librdkafka_snappy_is_raw_or_xerial() -> None:
    """Record which snappy framing librdkafka sends (we must read it either way)."""
    blobs = _capture("snappy", 3)
    batch = RecordBatch(blobs[0])
    payload = bytes(batch.buffer[61:])
    # librdkafka writes a raw snappy block (no xerial header); Java and kafka-python write xerial.
    assert not payload.startswith(b"\x82SNAPPY\x00")
    assert [bytes(r.value or b"") for r in batch.records()] == [
        (f"value-{i}-" * (i + 1)).encode() for i in range(3)
    ]
