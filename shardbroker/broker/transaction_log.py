"""Records of the internal topic ``__transaction_state``: Kafka's own key and value layouts. No I/O.

One record per change of a transactional id's state (Kafka's TransactionLog). The key is
``TransactionLogKey`` prefixed by its int16 version (Kafka's coordinator record type 0, the only
one in this topic); the value is ``TransactionLogValue`` prefixed by its int16 version, or null
(a tombstone: the transactional id expired, the compactor drops it). Layouts (Kafka's message
specs TransactionLogKey/Value.json; classic strings are int16 length + UTF-8, arrays int32
count, -1 for null; flexible ones uvarint length + 1 and tagged fields)::

    TransactionLogKey v0      transactional_id string
    TransactionLogValue v0    producer_id int64, producer_epoch int16, transaction_timeout_ms int32,
                              transaction_status int8, transaction_partitions [topic string,
                              partition_ids [int32]] (null when Empty), last_update_timestamp_ms
                              int64, start_timestamp_ms int64
    TransactionLogValue v1    the same, flexible, with tagged fields 0 previous_producer_id int64,
                              1 next_producer_id int64, 2 client_transaction_version int16
                              (KIP-890 part 2; -1, -1, 0 when absent)

We write value v0 for transactions v1 (what Kafka writes until ``transaction.version`` 1 is
finalized) and v1 for an id whose last transaction was ended with EndTxn v5 (KIP-890 part 2: its
client version and next producer id must survive a restart), so Kafka's tools (``kafka-dump-log
--transaction-log-decoder``) read our topic; the reader takes both. ``transaction_status``
holds Kafka's state ids (transaction_metadata.py ``TransactionState``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from shardbroker.broker.group_records import RecordFormatError, RecordReader, encode_string
from shardbroker.protocol.primitives import encode_uvarint

__all__ = [
    "TRANSACTION_LOG_KEY_VERSION",
    "TransactionLogValue",
    "decode_transaction_log_key",
    "decode_transaction_log_value",
    "encode_transaction_log_key",
    "encode_transaction_log_value",
]

#: Kafka's CoordinatorRecordType.TRANSACTION_LOG: the key's version prefix.
TRANSACTION_LOG_KEY_VERSION: Final = 0
_HIGHEST_VALUE_VERSION: Final = 1
_I8, _I16, _I32, _I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


@dataclass(frozen=True, slots=True)
class TransactionLogValue:
    producer_id: int
    producer_epoch: int
    transaction_timeout_ms: int
    transaction_status: int
    #: ``(topic, partition ids)`` pairs; empty for an Empty transactional id (written as null).
    partitions: Sequence[tuple[str, Sequence[int]]] = field(default_factory=tuple)
    last_update_timestamp_ms: int = -1
    start_timestamp_ms: int = -1
    previous_producer_id: int = -1
    next_producer_id: int = -1
    client_transaction_version: int = 0


def encode_transaction_log_key(transactional_id: str) -> bytes:
    return _I16.pack(TRANSACTION_LOG_KEY_VERSION) + encode_string(transactional_id)


def encode_transaction_log_value(value: TransactionLogValue) -> bytes:
    """Version 0, or 1 for transactions v2 (see the module docstring); the partitions are null
    when there are none, as Kafka writes an Empty transactional id."""
    flexible = value.client_transaction_version >= 2
    parts = [
        _I16.pack(1 if flexible else 0),
        _I64.pack(value.producer_id),
        _I16.pack(value.producer_epoch),
        _I32.pack(value.transaction_timeout_ms),
        _I8.pack(value.transaction_status),
    ]
    count: Callable[[int], bytes] = (lambda n: encode_uvarint(n + 1)) if flexible else _I32.pack
    string: Callable[[str], bytes] = _compact_string if flexible else encode_string
    if not value.partitions:
        parts.append(encode_uvarint(0) if flexible else _I32.pack(-1))
    else:
        parts.append(count(len(value.partitions)))
        for topic, ids in value.partitions:
            parts += [string(topic), count(len(ids))]
            parts += [_I32.pack(i) for i in ids]
            if flexible:
                parts.append(encode_uvarint(0))  # no tagged fields
    parts += [_I64.pack(value.last_update_timestamp_ms), _I64.pack(value.start_timestamp_ms)]
    if flexible:
        tags = [  # as Kafka's generated writers: only the ones that differ from their default
            (tag, layout.pack(v))
            for tag, layout, v, default in (
                (0, _I64, value.previous_producer_id, -1),
                (1, _I64, value.next_producer_id, -1),
                (2, _I16, value.client_transaction_version, 0),
            )
            if v != default
        ]
        parts.append(encode_uvarint(len(tags)))
        for tag, raw in tags:
            parts += [encode_uvarint(tag), encode_uvarint(len(raw)), raw]
    return b"".join(parts)


def _compact_string(value: str) -> bytes:
    raw = value.encode()
    return encode_uvarint(len(raw) + 1) + raw


def decode_transaction_log_key(key: bytes | memoryview) -> str | None:
    """The transactional id of a ``__transaction_state`` key; None for a record type that is
    not Kafka's transaction log (a version other than 0: Kafka skips those too)."""
    r = RecordReader(key)
    version = r.i16()
    if version < 0:
        raise RecordFormatError(f"key version {version}")
    if version != TRANSACTION_LOG_KEY_VERSION:
        return None
    return r.req_string()


def decode_transaction_log_value(value: bytes | memoryview | None) -> TransactionLogValue | None:
    """The value of a transaction log record; None for a tombstone."""
    if value is None:
        return None
    r = RecordReader(value)
    version = r.i16()
    if not 0 <= version <= _HIGHEST_VALUE_VERSION:
        raise RecordFormatError(f"TransactionLogValue version {version}")
    r.flexible = version >= 1
    producer_id = r.i64()
    epoch = r.i16()
    timeout = r.i32()
    status = r.i8()
    partitions: list[tuple[str, tuple[int, ...]]] = []
    for _ in range(max(0, r.array_len())):
        topic = r.req_string()
        ids = tuple(r.i32() for _ in range(max(0, r.array_len())))
        r.skip_tags()
        partitions.append((topic, ids))
    last_update = r.i64()
    start = r.i64()
    tags = r.tagged_fields()
    return TransactionLogValue(
        producer_id,
        epoch,
        timeout,
        status,
        tuple(partitions),
        last_update,
        start,
        _tag(tags, 0, _I64, -1),
        _tag(tags, 1, _I64, -1),
        _tag(tags, 2, _I16, 0),
    )


def _tag(tags: dict[int, bytes], tag: int, layout: struct.Struct, default: int) -> int:
    raw = tags.get(tag)
    if raw is None:
        return default
    if len(raw) != layout.size:
        raise RecordFormatError(f"tagged field {tag}: {len(raw)} bytes, expected {layout.size}")
    value: int = layout.unpack(raw)[0]
    return value
