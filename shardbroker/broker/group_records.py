"""Records of the internal topic ``__consumer_offsets``: Kafka's own key and value layouts. No I/O.

A record's key starts with an int16 version that says what it is (Kafka's
GroupCoordinatorRecordSerde): keys 0 and 1 are ``OffsetCommitKey`` (group, topic, partition),
key 2 is ``GroupMetadataKey`` (group). A null value is a tombstone (the offset was deleted or
expired, the group was deleted): the compactor drops the key. Layouts (Kafka's message specs
OffsetCommitKey/Value.json, GroupMetadataKey/Value.json, non-flexible versions; strings are
int16 length + UTF-8, -1 for null; bytes are int32 length + data)::

    OffsetCommitKey v0/v1     group string, topic string, partition int32
    OffsetCommitValue v0      offset int64, metadata string, commit_timestamp int64
    OffsetCommitValue v1      v0 + expire_timestamp int64
    OffsetCommitValue v2      as v0
    OffsetCommitValue v3      offset int64, leader_epoch int32, metadata string, commit_timestamp int64
    GroupMetadataKey v2       group string
    GroupMetadataValue v0-v3  protocol_type string, generation int32, protocol string?, leader string?,
                              [v2+] current_state_timestamp int64, members int32 count x
                              member_id string, [v3+] group_instance_id string?, client_id string,
                              client_host string, [v1+] rebalance_timeout int32, session_timeout int32,
                              subscription bytes, assignment bytes

We write OffsetCommitKey v1, OffsetCommitValue v3 (v1 when an expire timestamp is set, as Kafka),
GroupMetadataKey v2 and GroupMetadataValue v3, which is what Kafka 2.3-3.x brokers write, so
Kafka's tools (``kafka-console-consumer --formatter ...OffsetsMessageFormatter``,
``kafka-dump-log --offsets-decoder``) read our topic. Readers accept every version above and
OffsetCommitValue v4 / GroupMetadataValue v4 (flexible: compact strings, tagged fields), which
Kafka 3.x+ writes, so a data dir holding Kafka's records would load too.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from shardbroker.protocol.primitives import decode_uvarint

__all__ = [
    "GroupMetadataKey",
    "GroupMetadataValue",
    "MemberMetadata",
    "OffsetCommitKey",
    "OffsetCommitValue",
    "RecordFormatError",
    "RecordReader",
    "decode_key",
    "decode_value",
    "encode_group_metadata_key",
    "encode_group_metadata_value",
    "encode_offset_commit_key",
    "encode_offset_commit_value",
    "encode_string",
]

OFFSET_COMMIT_KEY_VERSION: Final = 1
GROUP_METADATA_KEY_VERSION: Final = 2
_I16, _I32, _I64 = struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")


class RecordFormatError(ValueError):
    """A key or value that is not one of the layouts above (or is truncated)."""


@dataclass(frozen=True, slots=True)
class OffsetCommitKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class OffsetCommitValue:
    offset: int
    metadata: str | None = ""
    commit_timestamp: int = -1
    leader_epoch: int = -1
    #: Only v1 carries it (OffsetCommit v1-v4 retention_time); -1 otherwise.
    expire_timestamp: int = -1


@dataclass(frozen=True, slots=True)
class MemberMetadata:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout: int
    session_timeout: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupMetadataValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int = -1
    members: Sequence[MemberMetadata] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------- writing


def encode_string(value: str | None) -> bytes:
    """A classic (non-flexible) string: int16 length + UTF-8, -1 for null."""
    if value is None:
        return _I16.pack(-1)
    raw = value.encode()
    if len(raw) > 0x7FFF:
        raise ValueError(f"string of {len(raw)} bytes does not fit an int16 length")
    return _I16.pack(len(raw)) + raw


def _bytes(value: bytes | None) -> bytes:
    if value is None:
        return _I32.pack(-1)
    return _I32.pack(len(value)) + bytes(value)


def encode_offset_commit_key(group: str, topic: str, partition: int) -> bytes:
    return (
        _I16.pack(OFFSET_COMMIT_KEY_VERSION)
        + encode_string(group)
        + encode_string(topic)
        + _I32.pack(partition)
    )


def encode_group_metadata_key(group: str) -> bytes:
    return _I16.pack(GROUP_METADATA_KEY_VERSION) + encode_string(group)


def encode_offset_commit_value(value: OffsetCommitValue) -> bytes:
    if value.expire_timestamp >= 0:  # Kafka writes v1 only for an explicit retention
        return b"".join(
            (
                _I16.pack(1),
                _I64.pack(value.offset),
                encode_string(value.metadata if value.metadata is not None else ""),
                _I64.pack(value.commit_timestamp),
                _I64.pack(value.expire_timestamp),
            )
        )
    return b"".join(
        (
            _I16.pack(3),
            _I64.pack(value.offset),
            _I32.pack(value.leader_epoch),
            encode_string(value.metadata if value.metadata is not None else ""),
            _I64.pack(value.commit_timestamp),
        )
    )


def encode_group_metadata_value(value: GroupMetadataValue) -> bytes:
    parts = [
        _I16.pack(3),
        encode_string(value.protocol_type),
        _I32.pack(value.generation),
        encode_string(value.protocol),
        encode_string(value.leader),
        _I64.pack(value.current_state_timestamp),
        _I32.pack(len(value.members)),
    ]
    for mm in value.members:
        parts += [
            encode_string(mm.member_id),
            encode_string(mm.group_instance_id),
            encode_string(mm.client_id),
            encode_string(mm.client_host),
            _I32.pack(mm.rebalance_timeout),
            _I32.pack(mm.session_timeout),
            _bytes(mm.subscription),
            _bytes(mm.assignment),
        ]
    return b"".join(parts)


# ---------------------------------------------------------------------------------- reading


class RecordReader:
    """Reads Kafka's message-spec layouts (also the transaction log's, transaction_log.py):
    classic (int16/int32 lengths) or flexible (uvarint lengths + 1, tagged fields)."""

    __slots__ = ("buf", "flexible", "pos")

    def __init__(self, buf: bytes | memoryview, pos: int = 0, flexible: bool = False) -> None:
        self.buf = bytes(buf)
        self.pos = pos
        self.flexible = flexible

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise RecordFormatError(f"truncated record: need {n} bytes at {self.pos} of {len(self.buf)}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def i8(self) -> int:
        return int.from_bytes(self._take(1), "big", signed=True)

    def i16(self) -> int:
        value: int = _I16.unpack(self._take(2))[0]
        return value

    def i32(self) -> int:
        value: int = _I32.unpack(self._take(4))[0]
        return value

    def i64(self) -> int:
        value: int = _I64.unpack(self._take(8))[0]
        return value

    def _uvarint(self) -> int:
        try:
            value, self.pos = decode_uvarint(self.buf, self.pos)
        except Exception as exc:
            raise RecordFormatError(f"bad varint at {self.pos}") from exc
        return value

    def string(self) -> str | None:
        n = self._uvarint() - 1 if self.flexible else self.i16()
        if n < 0:
            return None
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as exc:
            raise RecordFormatError("string is not UTF-8") from exc

    def req_string(self) -> str:
        value = self.string()
        if value is None:
            raise RecordFormatError("null where a string is required")
        return value

    def blob(self) -> bytes:
        n = self._uvarint() - 1 if self.flexible else self.i32()
        return b"" if n < 0 else self._take(n)

    def array_len(self) -> int:
        return self._uvarint() - 1 if self.flexible else self.i32()

    def skip_tags(self) -> None:
        self.tagged_fields()

    def tagged_fields(self) -> dict[int, bytes]:
        """A flexible struct's tagged fields (tag -> raw bytes); none in a classic layout."""
        if not self.flexible:
            return {}
        fields = {}
        for _ in range(self._uvarint()):
            tag = self._uvarint()
            fields[tag] = self._take(self._uvarint())
        return fields


def decode_key(key: bytes | memoryview) -> OffsetCommitKey | GroupMetadataKey | None:
    """The key of a ``__consumer_offsets`` record; None for a record type we do not keep
    (Kafka's newer consumer-group records, versions 3+)."""
    r = RecordReader(key)
    version = r.i16()
    if version in (0, 1):
        return OffsetCommitKey(r.req_string(), r.req_string(), r.i32())
    if version == 2:
        return GroupMetadataKey(r.req_string())
    if version < 0:
        raise RecordFormatError(f"key version {version}")
    return None


def decode_value(
    key: OffsetCommitKey | GroupMetadataKey, value: bytes | memoryview | None
) -> OffsetCommitValue | GroupMetadataValue | None:
    """The value for ``key``; None for a tombstone."""
    if value is None:
        return None
    r = RecordReader(value)
    version = r.i16()
    if isinstance(key, OffsetCommitKey):
        return _offset_value(r, version)
    return _group_value(r, version)


def _offset_value(r: RecordReader, version: int) -> OffsetCommitValue:
    if not 0 <= version <= 4:
        raise RecordFormatError(f"OffsetCommitValue version {version}")
    r.flexible = version >= 4
    offset = r.i64()
    epoch = r.i32() if version >= 3 else -1
    metadata = r.string()
    commit_ts = r.i64()
    expire_ts = r.i64() if version == 1 else -1
    r.skip_tags()
    return OffsetCommitValue(offset, metadata, commit_ts, epoch, expire_ts)


def _group_value(r: RecordReader, version: int) -> GroupMetadataValue:
    if not 0 <= version <= 4:
        raise RecordFormatError(f"GroupMetadataValue version {version}")
    r.flexible = version >= 4
    protocol_type = r.req_string()
    generation = r.i32()
    protocol = r.string()
    leader = r.string()
    state_ts = r.i64() if version >= 2 else -1
    members = []
    for _ in range(max(0, r.array_len())):
        member_id = r.req_string()
        instance = r.string() if version >= 3 else None
        client_id = r.req_string()
        client_host = r.req_string()
        rebalance = r.i32() if version >= 1 else -1
        session = r.i32()
        subscription = r.blob()
        assignment = r.blob()
        r.skip_tags()
        if rebalance < 0:
            rebalance = session
        members.append(
            MemberMetadata(
                member_id, instance, client_id, client_host, rebalance, session, subscription, assignment
            )
        )
    r.skip_tags()
    return GroupMetadataValue(protocol_type, generation, protocol, leader, state_ts, tuple(members))
