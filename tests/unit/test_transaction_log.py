"""``__transaction_state`` record layouts (Kafka's TransactionLogKey/Value), against hand-built bytes."""

from __future__ import annotations

import struct

import pytest

from shardbroker.broker.group_records import RecordFormatError
from shardbroker.broker.transaction_log import (
    TransactionLogValue,
    decode_transaction_log_key,
    decode_transaction_log_value,
    encode_transaction_log_key,
    encode_transaction_log_value,
)
from shardbroker.protocol.primitives import encode_uvarint as _uv


def test_key_bytes() -> None:
    key = encode_transaction_log_key("txn-1")
    assert key == b"\x00\x00" + b"\x00\x05txn-1"
    assert decode_transaction_log_key(key) == "txn-1"


def test_key_of_another_record_type_is_skipped_and_a_negative_version_refused() -> None:
    assert decode_transaction_log_key(b"\x00\x01\x00\x01x") is None
    with pytest.raises(RecordFormatError):
        decode_transaction_log_key(b"\xff\xff\x00\x01x")
    with pytest.raises(RecordFormatError):
        decode_transaction_log_key(b"\x00\x00\x00\x09abc")  # truncated


def test_value_v0_bytes_ongoing() -> None:
    value = TransactionLogValue(
        producer_id=1000,
        producer_epoch=3,
        transaction_timeout_ms=60000,
        transaction_status=1,
        partitions=(("a", (0, 2)), ("bb", (1,))),
        last_update_timestamp_ms=1_700_000_000_123,
        start_timestamp_ms=1_700_000_000_000,
    )
    raw = encode_transaction_log_value(value)
    expected = (
        struct.pack(">hqhib", 0, 1000, 3, 60000, 1)
        + struct.pack(">i", 2)
        + b"\x00\x01a"
        + struct.pack(">iii", 2, 0, 2)
        + b"\x00\x02bb"
        + struct.pack(">ii", 1, 1)
        + struct.pack(">qq", 1_700_000_000_123, 1_700_000_000_000)
    )
    assert raw == expected
    assert decode_transaction_log_value(raw) == value


def test_value_v0_empty_has_null_partitions() -> None:
    value = TransactionLogValue(7, 0, 10000, 0, (), 5, -1)
    raw = encode_transaction_log_value(value)
    assert raw == struct.pack(">hqhibiqq", 0, 7, 0, 10000, 0, -1, 5, -1)
    assert decode_transaction_log_value(raw) == value


def test_tombstone() -> None:
    assert decode_transaction_log_value(None) is None


def test_value_v1_flexible_with_tagged_fields() -> None:
    raw = (
        struct.pack(">hqhib", 1, 42, 5, 900000, 4)
        + _uv(2)  # compact array: 1 topic
        + _uv(4)
        + b"top"  # compact string
        + _uv(3)
        + struct.pack(">ii", 0, 9)  # 2 partitions
        + _uv(0)  # the topic struct's tagged fields
        + struct.pack(">qq", 11, 10)
        + _uv(3)  # three tagged fields, by tag
        + _uv(0)
        + _uv(8)
        + struct.pack(">q", 41)
        + _uv(1)
        + _uv(8)
        + struct.pack(">q", 43)
        + _uv(2)
        + _uv(2)
        + struct.pack(">h", 2)
    )
    value = TransactionLogValue(42, 5, 900000, 4, (("top", (0, 9)),), 11, 10, 41, 43, 2)
    assert decode_transaction_log_value(raw) == value
    assert encode_transaction_log_value(value) == raw  # transactions v2 write value v1


def test_value_v1_written_omits_tags_at_their_default() -> None:
    value = TransactionLogValue(42, 6, 1000, 5, (), 1, 1, -1, -1, 2)
    raw = encode_transaction_log_value(value)
    tag = _uv(2) + _uv(2) + struct.pack(">h", 2)
    assert raw == struct.pack(">hqhib", 1, 42, 6, 1000, 5) + _uv(0) + struct.pack(">qq", 1, 1) + _uv(1) + tag
    assert decode_transaction_log_value(raw) == value


def test_value_v1_without_tags_has_kafka_defaults() -> None:
    raw = struct.pack(">hqhib", 1, 42, 5, 1000, 0) + _uv(0) + struct.pack(">qq", 1, -1) + _uv(0)
    value = decode_transaction_log_value(raw)
    assert value == TransactionLogValue(42, 5, 1000, 0, (), 1, -1, -1, -1, 0)


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack(">h", 2) + bytes(40),  # unknown version
        struct.pack(">hqhib", 0, 1, 0, 1, 0),  # truncated
        # a tagged field of the wrong size
        struct.pack(">hqhib", 1, 1, 0, 1, 0)
        + _uv(0)
        + struct.pack(">qq", 1, 1)
        + _uv(1)
        + _uv(0)
        + _uv(2)
        + b"xx",
    ],
)
def test_bad_values_are_refused(raw: bytes) -> None:
    with pytest.raises(RecordFormatError):
        decode_transaction_log_value(raw)
