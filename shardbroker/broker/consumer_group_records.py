"""Records of the new consumer group protocol (KIP-848) in ``__consumer_offsets``: Kafka's layouts. No I/O.

Kafka's group coordinator keeps a consumer group as these records, next to the classic ones
(group_records.py, whose ``decode_key`` returns None for them). As there, a key starts with an
int16 that says which record it is, and a null value is a tombstone (that part of the group is
gone). Keys are non-flexible: strings are int16 length + UTF-8. Values are flexible: an int16
value version, then compact strings (uvarint length + 1, 0 for null), compact arrays (uvarint
count + 1), 16-byte uuids, and a tagged-field section (uvarint count, then tag, size, bytes)
after every struct. Layouts (Kafka's message specs ConsumerGroup*Key/Value.json; ``?`` is
nullable, ``[...]`` an array; the key number is the specs' "apiKey")::

    key record                                 key fields        value v0 fields
    3   ConsumerGroupMetadata                  group             epoch int32
    4   ConsumerGroupPartitionMetadata         group             topics [TopicMetadata]
    5   ConsumerGroupMemberMetadata            group, member_id  instance_id string?, rack_id string?,
                                                                 client_id string, client_host string,
                                                                 subscribed_topic_names [string],
                                                                 subscribed_topic_regex string?,
                                                                 rebalance_timeout_ms int32,
                                                                 server_assignor string?, tagged 0:
                                                                 classic_member_metadata (ClassicMember-
                                                                 Metadata: session timeout, protocols)
    6   ConsumerGroupTargetAssignmentMetadata  group             assignment_epoch int32
    7   ConsumerGroupTargetAssignmentMember    group, member_id  topic_partitions [TopicPartitions]
    8   ConsumerGroupCurrentMemberAssignment   group, member_id  member_epoch int32,
                                                                 previous_member_epoch int32, state int8,
                                                                 assigned_partitions [TopicPartitions],
                                                                 partitions_pending_revocation
                                                                 [TopicPartitions]
    16  ConsumerGroupRegularExpression         group, regex      topics [string], version int64,
                                                                 timestamp int64
        TopicMetadata                                            topic_id uuid, topic_name string,
                                                                 num_partitions int32,
                                                                 partition_racks [PartitionRacks]
        PartitionRacks (Kafka's PartitionMetadata)               partition int32, racks [string]
        TopicPartitions                                          topic_id uuid, partitions [int32]

        ClassicMemberMetadata (tagged 0 above)                   session_timeout_ms int32,
                                                                 supported_protocols [ClassicProtocol]
        ClassicProtocol                                          name string, metadata bytes

We write what Kafka 4.0 writes: value version 0 (the only one Kafka defines), no tagged field but
``classic_member_metadata`` when a member has it (kept as bytes in the value; read and written by
``decode_classic_member_metadata`` / ``encode_classic_member_metadata``), so Kafka's tools and
brokers read our records and we read theirs. Later Kafka only adds tagged fields (4.1's group
metadata hash, for one), which the readers skip.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Final, TypeAlias, TypeVar, assert_never

from shardbroker.broker.group_records import RecordFormatError, RecordReader, encode_string
from shardbroker.protocol.primitives import encode_uvarint

__all__ = [
    "ClassicMemberMetadata",
    "ClassicProtocol",
    "ConsumerGroupCurrentMemberAssignmentKey",
    "ConsumerGroupCurrentMemberAssignmentValue",
    "ConsumerGroupMemberMetadataKey",
    "ConsumerGroupMemberMetadataValue",
    "ConsumerGroupMetadataKey",
    "ConsumerGroupMetadataValue",
    "ConsumerGroupPartitionMetadataKey",
    "ConsumerGroupPartitionMetadataValue",
    "ConsumerGroupRegularExpressionKey",
    "ConsumerGroupRegularExpressionValue",
    "ConsumerGroupTargetAssignmentMemberKey",
    "ConsumerGroupTargetAssignmentMemberValue",
    "ConsumerGroupTargetAssignmentMetadataKey",
    "ConsumerGroupTargetAssignmentMetadataValue",
    "Key",
    "PartitionRacks",
    "TopicMetadata",
    "TopicPartitions",
    "Value",
    "decode_classic_member_metadata",
    "decode_key",
    "decode_value",
    "encode_classic_member_metadata",
    "encode_key",
    "encode_value",
]

VALUE_VERSION: Final = 0
_I8, _I16, _I32, _I64 = struct.Struct(">b"), struct.Struct(">h"), struct.Struct(">i"), struct.Struct(">q")
#: Kafka refuses longer strings (Java's ``short`` limit, also for compact strings).
_MAX_STRING: Final = 0x7FFF
#: Tag of ConsumerGroupMemberMetadataValue's ClassicMemberMetadata.
_CLASSIC_MEMBER_METADATA_TAG: Final = 0

_T = TypeVar("_T")

# ---------------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupPartitionMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupMemberMetadataKey:
    group: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMetadataKey:
    group: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMemberKey:
    group: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupCurrentMemberAssignmentKey:
    group: str
    member_id: str


@dataclass(frozen=True, slots=True)
class ConsumerGroupRegularExpressionKey:
    group: str
    regex: str


Key: TypeAlias = (
    ConsumerGroupMetadataKey
    | ConsumerGroupPartitionMetadataKey
    | ConsumerGroupMemberMetadataKey
    | ConsumerGroupTargetAssignmentMetadataKey
    | ConsumerGroupTargetAssignmentMemberKey
    | ConsumerGroupCurrentMemberAssignmentKey
    | ConsumerGroupRegularExpressionKey
)

#: Key version (Kafka's "apiKey" of the record) -> key type; every key field is a string.
_KEY_TYPES: Final[dict[int, type[Key]]] = {
    3: ConsumerGroupMetadataKey,
    4: ConsumerGroupPartitionMetadataKey,
    5: ConsumerGroupMemberMetadataKey,
    6: ConsumerGroupTargetAssignmentMetadataKey,
    7: ConsumerGroupTargetAssignmentMemberKey,
    8: ConsumerGroupCurrentMemberAssignmentKey,
    16: ConsumerGroupRegularExpressionKey,
}
_KEY_VERSIONS: Final[dict[type[Key], int]] = {cls: version for version, cls in _KEY_TYPES.items()}

# ---------------------------------------------------------------------------------- values


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadataValue:
    epoch: int


@dataclass(frozen=True, slots=True)
class PartitionRacks:
    """Kafka's PartitionMetadata: the racks of a partition's replicas."""

    partition: int
    racks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    topic_id: uuid.UUID
    topic_name: str
    num_partitions: int
    #: Empty when no rack is known (Kafka's assignors stopped reading it after 4.0).
    partition_racks: tuple[PartitionRacks, ...] = ()


@dataclass(frozen=True, slots=True)
class ConsumerGroupPartitionMetadataValue:
    topics: tuple[TopicMetadata, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupMemberMetadataValue:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed_topic_names: tuple[str, ...]
    subscribed_topic_regex: str | None
    rebalance_timeout_ms: int
    server_assignor: str | None
    #: Tagged field 0, verbatim (the session timeout and protocols of a classic-protocol member).
    classic_member_metadata: bytes | None = None


@dataclass(frozen=True, slots=True)
class ClassicProtocol:
    """One protocol a classic-protocol member joined with (its name and metadata bytes)."""

    name: str
    metadata: bytes


@dataclass(frozen=True, slots=True)
class ClassicMemberMetadata:
    """What a member that speaks the classic protocol inside a consumer group keeps of its
    JoinGroup (KIP-848's migration): its session timeout and protocols, in its order."""

    session_timeout_ms: int
    supported_protocols: tuple[ClassicProtocol, ...]


@dataclass(frozen=True, slots=True)
class TopicPartitions:
    topic_id: uuid.UUID
    partitions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMetadataValue:
    assignment_epoch: int


@dataclass(frozen=True, slots=True)
class ConsumerGroupTargetAssignmentMemberValue:
    topic_partitions: tuple[TopicPartitions, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupCurrentMemberAssignmentValue:
    member_epoch: int
    previous_member_epoch: int
    #: Kafka's MemberState value (an int8).
    state: int
    assigned_partitions: tuple[TopicPartitions, ...]
    partitions_pending_revocation: tuple[TopicPartitions, ...]


@dataclass(frozen=True, slots=True)
class ConsumerGroupRegularExpressionValue:
    topics: tuple[str, ...]
    version: int
    timestamp: int


Value: TypeAlias = (
    ConsumerGroupMetadataValue
    | ConsumerGroupPartitionMetadataValue
    | ConsumerGroupMemberMetadataValue
    | ConsumerGroupTargetAssignmentMetadataValue
    | ConsumerGroupTargetAssignmentMemberValue
    | ConsumerGroupCurrentMemberAssignmentValue
    | ConsumerGroupRegularExpressionValue
)

# ---------------------------------------------------------------------------------- writing


def encode_key(key: Key) -> bytes:
    """The key's version, then its fields (all strings) as classic strings."""
    return _I16.pack(_KEY_VERSIONS[type(key)]) + b"".join(
        encode_string(getattr(key, f.name)) for f in fields(key)
    )


def _compact_string(value: str | None) -> bytes:
    if value is None:
        return b"\x00"
    raw = value.encode()
    if len(raw) > _MAX_STRING:
        raise ValueError(f"string of {len(raw)} bytes is longer than Kafka allows ({_MAX_STRING})")
    return encode_uvarint(len(raw) + 1) + raw


def _compact_array(items: Sequence[_T], write: Callable[[_T], bytes]) -> bytes:
    return encode_uvarint(len(items) + 1) + b"".join(write(item) for item in items)


def _tags(tagged: dict[int, bytes]) -> bytes:
    """A tagged-field section: count, then each field as tag, size, bytes (ascending tags)."""
    return encode_uvarint(len(tagged)) + b"".join(
        encode_uvarint(tag) + encode_uvarint(len(tagged[tag])) + tagged[tag] for tag in sorted(tagged)
    )


_NO_TAGS: Final = _tags({})


def _partition_racks(pr: PartitionRacks) -> bytes:
    return _I32.pack(pr.partition) + _compact_array(pr.racks, _compact_string) + _NO_TAGS


def _topic_metadata(topic: TopicMetadata) -> bytes:
    return b"".join(
        (
            topic.topic_id.bytes,
            _compact_string(topic.topic_name),
            _I32.pack(topic.num_partitions),
            _compact_array(topic.partition_racks, _partition_racks),
            _NO_TAGS,
        )
    )


def _topic_partitions(tp: TopicPartitions) -> bytes:
    return tp.topic_id.bytes + _compact_array(tp.partitions, _I32.pack) + _NO_TAGS


def _member_metadata(value: ConsumerGroupMemberMetadataValue) -> bytes:
    classic = value.classic_member_metadata
    return b"".join(
        (
            _compact_string(value.instance_id),
            _compact_string(value.rack_id),
            _compact_string(value.client_id),
            _compact_string(value.client_host),
            _compact_array(value.subscribed_topic_names, _compact_string),
            _compact_string(value.subscribed_topic_regex),
            _I32.pack(value.rebalance_timeout_ms),
            _compact_string(value.server_assignor),
            _tags({} if classic is None else {_CLASSIC_MEMBER_METADATA_TAG: bytes(classic)}),
        )
    )


def encode_classic_member_metadata(value: ClassicMemberMetadata) -> bytes:
    """The tagged field's bytes (a flexible struct; no version of its own)."""
    return b"".join(
        (
            _I32.pack(value.session_timeout_ms),
            _compact_array(value.supported_protocols, _classic_protocol),
            _NO_TAGS,
        )
    )


def _classic_protocol(p: ClassicProtocol) -> bytes:
    return _compact_string(p.name) + encode_uvarint(len(p.metadata) + 1) + p.metadata + _NO_TAGS


def _current_assignment(value: ConsumerGroupCurrentMemberAssignmentValue) -> bytes:
    return b"".join(
        (
            _I32.pack(value.member_epoch),
            _I32.pack(value.previous_member_epoch),
            _I8.pack(value.state),
            _compact_array(value.assigned_partitions, _topic_partitions),
            _compact_array(value.partitions_pending_revocation, _topic_partitions),
            _NO_TAGS,
        )
    )


def encode_value(value: Value) -> bytes:
    """Value version 0, then the value's flexible layout."""
    if isinstance(value, ConsumerGroupMetadataValue):
        body = _I32.pack(value.epoch) + _NO_TAGS
    elif isinstance(value, ConsumerGroupPartitionMetadataValue):
        body = _compact_array(value.topics, _topic_metadata) + _NO_TAGS
    elif isinstance(value, ConsumerGroupMemberMetadataValue):
        body = _member_metadata(value)
    elif isinstance(value, ConsumerGroupTargetAssignmentMetadataValue):
        body = _I32.pack(value.assignment_epoch) + _NO_TAGS
    elif isinstance(value, ConsumerGroupTargetAssignmentMemberValue):
        body = _compact_array(value.topic_partitions, _topic_partitions) + _NO_TAGS
    elif isinstance(value, ConsumerGroupCurrentMemberAssignmentValue):
        body = _current_assignment(value)
    elif isinstance(value, ConsumerGroupRegularExpressionValue):
        body = b"".join(
            (
                _compact_array(value.topics, _compact_string),
                _I64.pack(value.version),
                _I64.pack(value.timestamp),
                _NO_TAGS,
            )
        )
    else:
        assert_never(value)
    return _I16.pack(VALUE_VERSION) + body


# ---------------------------------------------------------------------------------- reading


class _Reader(RecordReader):
    """A flexible-layout reader with what these records add: uuids, non-null arrays, struct ends."""

    __slots__ = ()

    def __init__(self, buf: bytes | memoryview) -> None:
        super().__init__(buf, flexible=True)

    def read_uuid(self) -> uuid.UUID:
        high, low = self.i64(), self.i64()
        return uuid.UUID(int=((high & 0xFFFF_FFFF_FFFF_FFFF) << 64) | (low & 0xFFFF_FFFF_FFFF_FFFF))

    def array(self, read: Callable[[], _T]) -> tuple[_T, ...]:
        n = self.array_len()
        if n < 0:
            raise RecordFormatError("null where an array is required")
        return tuple(read() for _ in range(n))

    def ended(self, struct_value: _T) -> _T:
        """``struct_value`` (its fields just read), after skipping the struct's tagged fields."""
        self.skip_tags()
        return struct_value


def decode_key(key: bytes | memoryview) -> Key | None:
    """The key of a ``__consumer_offsets`` record; None for a record type other than the above
    (the classic ones of group_records.py, and later Kafka's share and streams groups)."""
    r = RecordReader(key)
    cls = _KEY_TYPES.get(r.i16())
    if cls is None:
        return None
    out = cls(*[r.req_string() for _ in fields(cls)])
    _check_end(r, cls.__name__)
    return out


def decode_value(key: Key, value: bytes | memoryview | None) -> Value | None:
    """The value for ``key``; None for a tombstone."""
    if value is None:
        return None
    r = _Reader(value)
    version = r.i16()
    if version != VALUE_VERSION:
        raise RecordFormatError(f"{type(key).__name__} value version {version}")
    out: Value
    if isinstance(key, ConsumerGroupMetadataKey):
        out = r.ended(ConsumerGroupMetadataValue(r.i32()))
    elif isinstance(key, ConsumerGroupPartitionMetadataKey):
        out = r.ended(ConsumerGroupPartitionMetadataValue(r.array(lambda: _read_topic_metadata(r))))
    elif isinstance(key, ConsumerGroupMemberMetadataKey):
        out = _read_member_metadata(r)
    elif isinstance(key, ConsumerGroupTargetAssignmentMetadataKey):
        out = r.ended(ConsumerGroupTargetAssignmentMetadataValue(r.i32()))
    elif isinstance(key, ConsumerGroupTargetAssignmentMemberKey):
        out = r.ended(ConsumerGroupTargetAssignmentMemberValue(r.array(lambda: _read_topic_partitions(r))))
    elif isinstance(key, ConsumerGroupCurrentMemberAssignmentKey):
        out = r.ended(
            ConsumerGroupCurrentMemberAssignmentValue(
                member_epoch=r.i32(),
                previous_member_epoch=r.i32(),
                state=r.i8(),
                assigned_partitions=r.array(lambda: _read_topic_partitions(r)),
                partitions_pending_revocation=r.array(lambda: _read_topic_partitions(r)),
            )
        )
    elif isinstance(key, ConsumerGroupRegularExpressionKey):
        out = r.ended(ConsumerGroupRegularExpressionValue(r.array(r.req_string), r.i64(), r.i64()))
    else:
        assert_never(key)
    _check_end(r, type(out).__name__)
    return out


def _check_end(r: RecordReader, what: str) -> None:
    if r.pos != len(r.buf):
        raise RecordFormatError(f"{len(r.buf) - r.pos} trailing bytes after a {what}")


def _read_topic_metadata(r: _Reader) -> TopicMetadata:
    return r.ended(
        TopicMetadata(
            topic_id=r.read_uuid(),
            topic_name=r.req_string(),
            num_partitions=r.i32(),
            partition_racks=r.array(lambda: r.ended(PartitionRacks(r.i32(), r.array(r.req_string)))),
        )
    )


def _read_topic_partitions(r: _Reader) -> TopicPartitions:
    return r.ended(TopicPartitions(r.read_uuid(), r.array(r.i32)))


def decode_classic_member_metadata(raw: bytes | memoryview) -> ClassicMemberMetadata:
    """The tagged field's value; RecordFormatError if it is not one."""
    r = _Reader(raw)
    out = r.ended(
        ClassicMemberMetadata(r.i32(), r.array(lambda: r.ended(ClassicProtocol(r.req_string(), r.blob()))))
    )
    _check_end(r, "ClassicMemberMetadata")
    return out


def _read_member_metadata(r: _Reader) -> ConsumerGroupMemberMetadataValue:
    return ConsumerGroupMemberMetadataValue(
        instance_id=r.string(),
        rack_id=r.string(),
        client_id=r.req_string(),
        client_host=r.req_string(),
        subscribed_topic_names=r.array(r.req_string),
        subscribed_topic_regex=r.string(),
        rebalance_timeout_ms=r.i32(),
        server_assignor=r.string(),
        classic_member_metadata=r.tagged_fields().get(_CLASSIC_MEMBER_METADATA_TAG),
    )
