"""The local-client directory and high-watermark table (ipc/local_directory.py) and the request
frame layout (ipc/local_protocol.py): round trips, the seqlock, refusals."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from shardbroker.ipc import shm
from shardbroker.ipc.local_directory import (
    DirectoryBody,
    DirectoryError,
    HighWatermarkRows,
    HighWatermarkTable,
    LocalDirectory,
    TopicEntry,
    worker_socket_address,
)
from shardbroker.ipc.local_protocol import (
    REQUEST_HEADER,
    LocalProtocolError,
    decode_message,
    encode_message,
    pack_request_header,
    request_header_size,
)

_counter = itertools.count()


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"ld{os.getpid()}x{next(_counter)}"
    yield name
    left = sorted(p.name for p in shm.SHM_DIR.iterdir() if p.name.startswith(f"shardbroker-{name}-"))
    for entry in left:
        (shm.SHM_DIR / entry).unlink(missing_ok=True)
    assert left == [], "test left shared memory behind"


BODY = DirectoryBody(
    7,
    2,
    "127.0.0.1:9092",
    {"orders": TopicEntry("ab" * 16, (0, 1, 0), (0, 1, -1)), "é-t": TopicEntry("cd", (), ())},
)


def test_publish_then_read_from_another_mapping(instance: str) -> None:
    writer = LocalDirectory.create(instance)
    reader = LocalDirectory.attach(instance)
    try:
        with pytest.raises(DirectoryError, match="never published"):
            reader.read()
        writer.publish(BODY)
        assert reader.read() == BODY
        smaller = DirectoryBody(8, 2, "h:1", {})
        writer.publish(smaller)  # a shorter body after a longer one
        assert reader.read() == smaller
    finally:
        reader.close()
        writer.close()


def test_reader_never_decodes_a_body_mid_write(instance: str, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = LocalDirectory.create(instance)
    try:
        writer.publish(BODY)
        writer._q[4] += 1  # a writer stopped between its two sequence bumps
        monkeypatch.setattr("shardbroker.ipc.local_directory._READ_PATIENCE_S", 0.05)
        with pytest.raises(DirectoryError, match="mid-write"):
            writer.read()
        writer._q[4] += 1
        assert writer.read() == BODY
    finally:
        writer.close()


def test_too_big_body_is_refused_and_the_old_one_kept(instance: str) -> None:
    writer = LocalDirectory.create(instance, capacity=128)
    try:
        writer.publish(DirectoryBody(1, 1, "h:1", {}))
        with pytest.raises(ValueError, match="does not fit"):
            writer.publish(BODY)
        assert writer.read().version == 1
    finally:
        writer.close()


def test_high_watermarks(instance: str) -> None:
    table = HighWatermarkTable.create(instance, rows=4)
    other = HighWatermarkTable.attach(instance)
    try:
        assert other.rows == 4
        table.publish(3, 42, 7, 40)
        row = (other.high_watermark(3), other.log_start_offset(3), other.last_stable_offset(3))
        assert row == (42, 7, 40)
        assert other.high_watermark(2) == other.last_stable_offset(2) == 0
    finally:
        other.close()
        table.close()


def test_high_watermark_rows_are_never_reused() -> None:
    rows = HighWatermarkRows(capacity=5)
    body = rows.body(1, 2, "h:1", {"a": ("id-a", (0, 1)), "b": ("id-b", (1,))})
    assert (body.topics["a"].rows, body.topics["b"].rows) == ((0, 1), (2,))
    # "a" grows, "b" is deleted and created again (new id): new rows, and none past the table.
    body = rows.body(2, 2, "h:1", {"a": ("id-a", (0, 1, 0)), "b": ("id-b2", (0, 1))})
    assert (body.topics["a"].rows, body.topics["b"].rows) == ((0, 1, 3), (4, -1))
    assert body.topics["a"].owners == (0, 1, 0) and body.version == 2


def test_worker_socket_address_is_abstract() -> None:
    assert worker_socket_address("sb1", 3) == b"\0shardbroker-sb1-local-w3"
    with pytest.raises(ValueError):
        worker_socket_address("bad-name", 0)


def test_request_header_layout() -> None:
    buf = bytearray(64)
    start = pack_request_header(memoryview(buf), 2**40 + 5, 3, b"orders", -1)
    assert start == request_header_size(b"orders") == 24
    assert REQUEST_HEADER.unpack_from(buf) == (2**40 + 5, 3, 6, -1, 0)
    assert buf[16:24] == b"orders\0\0"


def test_handshake_messages() -> None:
    assert decode_message(encode_message({"op": "watch"})) == {"op": "watch"}
    with pytest.raises(LocalProtocolError, match="JSON object"):
        decode_message(b"[1]")
    with pytest.raises(LocalProtocolError, match="not a JSON"):
        decode_message(b"\xff")
    with pytest.raises(LocalProtocolError, match="over"):
        encode_message({"x": "y" * 5000})
