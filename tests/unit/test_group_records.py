"""``__consumer_offsets`` record layouts (Kafka's) and the group -> partition hash (Java's)."""

from __future__ import annotations

import struct

import pytest

from shardbroker.broker import group_records as gr
from shardbroker.broker.group_metadata_manager import java_string_hash, partition_for


def test_offset_commit_key_bytes() -> None:
    key = gr.encode_offset_commit_key("g", "topic", 7)
    assert key == b"\x00\x01" + b"\x00\x01g" + b"\x00\x05topic" + b"\x00\x00\x00\x07"
    assert gr.decode_key(key) == gr.OffsetCommitKey("g", "topic", 7)
    # Version 0 keys (Kafka < 0.10) have the same layout.
    assert gr.decode_key(b"\x00\x00" + key[2:]) == gr.OffsetCommitKey("g", "topic", 7)


def test_group_metadata_key_bytes() -> None:
    key = gr.encode_group_metadata_key("my-group")
    assert key == b"\x00\x02\x00\x08my-group"
    assert gr.decode_key(key) == gr.GroupMetadataKey("my-group")
    assert gr.decode_key(b"\x00\x03whatever") is None  # newer record types are skipped


def test_offset_commit_value_v3_bytes() -> None:
    value = gr.OffsetCommitValue(offset=42, metadata="md", commit_timestamp=1000, leader_epoch=5)
    raw = gr.encode_offset_commit_value(value)
    assert raw == struct.pack(">hqih2sq", 3, 42, 5, 2, b"md", 1000)
    key = gr.OffsetCommitKey("g", "t", 0)
    assert gr.decode_value(key, raw) == value


def test_offset_commit_value_v1_when_expiring() -> None:
    value = gr.OffsetCommitValue(offset=1, metadata="", commit_timestamp=10, expire_timestamp=99)
    raw = gr.encode_offset_commit_value(value)
    assert raw[:2] == b"\x00\x01" and len(raw) == 2 + 8 + 2 + 8 + 8
    assert gr.decode_value(gr.OffsetCommitKey("g", "t", 0), raw) == value


def test_offset_commit_value_older_and_flexible_versions() -> None:
    key = gr.OffsetCommitKey("g", "t", 0)
    v0 = struct.pack(">hqh1sq", 0, 9, 1, b"x", 77)
    assert gr.decode_value(key, v0) == gr.OffsetCommitValue(9, "x", 77)
    # v4 (flexible): compact string (length + 1), then an empty tagged-field section.
    v4 = struct.pack(">hqi", 4, 9, 3) + b"\x02x" + struct.pack(">q", 77) + b"\x00"
    assert gr.decode_value(key, v4) == gr.OffsetCommitValue(9, "x", 77, 3)
    assert gr.decode_value(key, None) is None  # tombstone


def test_group_metadata_value_round_trip_and_layout() -> None:
    member = gr.MemberMetadata("m-1", "inst", "client", "/127.0.0.1", 30000, 10000, b"sub", b"assign")
    value = gr.GroupMetadataValue("consumer", 3, "range", "m-1", 123, (member,))
    raw = gr.encode_group_metadata_value(value)
    expected = b"".join(
        [
            struct.pack(">h", 3),
            b"\x00\x08consumer",
            struct.pack(">i", 3),
            b"\x00\x05range",
            b"\x00\x03m-1",
            struct.pack(">q", 123),
            struct.pack(">i", 1),
            b"\x00\x03m-1",
            b"\x00\x04inst",
            b"\x00\x06client",
            b"\x00\x0a/127.0.0.1",
            struct.pack(">ii", 30000, 10000),
            struct.pack(">i", 3) + b"sub",
            struct.pack(">i", 6) + b"assign",
        ]
    )
    assert raw == expected
    assert gr.decode_value(gr.GroupMetadataKey("g"), raw) == value


def test_group_metadata_value_v0_and_empty_group() -> None:
    v0 = b"".join(
        [
            struct.pack(">h", 0),
            b"\x00\x08consumer",
            struct.pack(">i", 1),
            b"\x00\x05range",
            b"\x00\x01m",
            struct.pack(">i", 1),
            b"\x00\x01m",
            b"\x00\x01c",
            b"\x00\x01h",
            struct.pack(">i", 6000),
            struct.pack(">i", 0),
            struct.pack(">i", 1) + b"a",
        ]
    )
    decoded = gr.decode_value(gr.GroupMetadataKey("g"), v0)
    assert isinstance(decoded, gr.GroupMetadataValue)
    (m,) = decoded.members
    assert (m.session_timeout, m.rebalance_timeout, m.group_instance_id, m.assignment) == (
        6000,
        6000,
        None,
        b"a",
    )
    empty = gr.GroupMetadataValue("consumer", 4, None, None, 5, ())
    assert gr.decode_value(gr.GroupMetadataKey("g"), gr.encode_group_metadata_value(empty)) == empty


def test_truncated_records_are_refused() -> None:
    raw = gr.encode_offset_commit_value(gr.OffsetCommitValue(1, "abc", 2))
    with pytest.raises(gr.RecordFormatError):
        gr.decode_value(gr.OffsetCommitKey("g", "t", 0), raw[:-3])
    with pytest.raises(gr.RecordFormatError):
        gr.decode_key(b"\x00\x01\x00\x05ab")
    with pytest.raises(gr.RecordFormatError):
        gr.decode_value(gr.OffsetCommitKey("g", "t", 0), b"\x00\x09")


def test_java_string_hash_matches_java() -> None:
    assert java_string_hash("") == 0
    assert java_string_hash("a") == 97
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("polygenelubricants") == -(2**31)  # Integer.MIN_VALUE
    # Outside the BMP: a surrogate pair, as Java's UTF-16 strings hash it.
    assert java_string_hash("\U0001f600") == 0xD83D * 31 + 0xDE00
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112  # Java's well-known collision
    assert java_string_hash("x" * 6) < 0  # int32 wrap-around


def test_partition_for_uses_kafka_abs() -> None:
    assert partition_for("polygenelubricants", 50) == 0  # Utils.abs(MIN_VALUE) = 0
    assert partition_for("hello", 50) == 99162322 % 50
    negative = "x" * 6
    assert (
        partition_for(negative, 50)
        == -java_string_hash(negative) % 50
        == abs(java_string_hash(negative)) % 50
    )
