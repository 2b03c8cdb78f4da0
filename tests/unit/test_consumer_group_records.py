"""KIP-848 consumer-group records of ``__consumer_offsets``: Kafka's key and value byte layouts."""

from __future__ import annotations

import contextlib
import struct
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker import group_records as gr

# Both halves have the top bit set: read as Kafka's two int64s they are negative.
U1 = uuid.UUID("f0112233-4455-6677-8899-aabbccddeeff")
U1_BYTES = bytes.fromhex("f0112233445566778899aabbccddeeff")
U2 = uuid.UUID("00000000-0000-0000-0000-000000000001")
U2_BYTES = bytes(15) + b"\x01"

NULL = b"\x00"  # a null compact string
NO_TAGS = b"\x00"  # an empty tagged-field section
V0 = b"\x00\x00"  # value version 0


def i8(v: int) -> bytes:
    return struct.pack(">b", v)


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def i64(v: int) -> bytes:
    return struct.pack(">q", v)


def kstr(s: str) -> bytes:
    """A key string: int16 length + UTF-8."""
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def cstr(s: str) -> bytes:
    """A compact string shorter than 127 bytes: one-byte uvarint(len + 1) + UTF-8."""
    raw = s.encode()
    assert len(raw) < 127
    return bytes([len(raw) + 1]) + raw


def count(n: int) -> bytes:
    """A compact array's count (n < 127): one-byte uvarint(n + 1)."""
    assert n < 127
    return bytes([n + 1])


MEMBER = cgr.ConsumerGroupMemberMetadataValue(
    instance_id=None,
    rack_id="rack-1",
    client_id="consumer-1",
    client_host="/10.0.0.1",
    subscribed_topic_names=("orders", "payments"),
    subscribed_topic_regex=None,
    rebalance_timeout_ms=300_000,
    server_assignor="uniform",
)

# (key, value) of every record type, with nulls, empty tuples, many partitions, unicode names.
SAMPLES: list[tuple[cgr.Key, cgr.Value]] = [
    (cgr.ConsumerGroupMetadataKey("grp"), cgr.ConsumerGroupMetadataValue(42)),
    (cgr.ConsumerGroupMetadataKey("grüppe-名前"), cgr.ConsumerGroupMetadataValue(-1)),
    (
        cgr.ConsumerGroupPartitionMetadataKey("grp"),
        cgr.ConsumerGroupPartitionMetadataValue(
            (
                cgr.TopicMetadata(U1, "commandes-é", 300),
                cgr.TopicMetadata(
                    U2,
                    "t",
                    2,
                    (cgr.PartitionRacks(0, ("r1", "r2")), cgr.PartitionRacks(1, ())),
                ),
            )
        ),
    ),
    (cgr.ConsumerGroupPartitionMetadataKey(""), cgr.ConsumerGroupPartitionMetadataValue(())),
    (cgr.ConsumerGroupMemberMetadataKey("grp", "m-1"), MEMBER),
    (
        cgr.ConsumerGroupMemberMetadataKey("grp", "m-2"),
        cgr.ConsumerGroupMemberMetadataValue(
            instance_id="instance-ü",
            rack_id=None,
            client_id="",
            client_host="/::1",
            subscribed_topic_names=(),
            subscribed_topic_regex="^orders-.*",
            rebalance_timeout_ms=-1,
            server_assignor=None,
            classic_member_metadata=b"\x00\x00\x27\x10\x02\x06range\x01\x00",
        ),
    ),
    (cgr.ConsumerGroupTargetAssignmentMetadataKey("grp"), cgr.ConsumerGroupTargetAssignmentMetadataValue(7)),
    (
        cgr.ConsumerGroupTargetAssignmentMemberKey("grp", "m-1"),
        cgr.ConsumerGroupTargetAssignmentMemberValue(
            (cgr.TopicPartitions(U1, tuple(range(500))), cgr.TopicPartitions(U2, ()))
        ),
    ),
    (
        cgr.ConsumerGroupTargetAssignmentMemberKey("grp", "m-2"),
        cgr.ConsumerGroupTargetAssignmentMemberValue(()),
    ),
    (
        cgr.ConsumerGroupCurrentMemberAssignmentKey("grp", "m-1"),
        cgr.ConsumerGroupCurrentMemberAssignmentValue(
            member_epoch=12,
            previous_member_epoch=11,
            state=2,
            assigned_partitions=(cgr.TopicPartitions(U2, (0, 2, 2**31 - 1)),),
            partitions_pending_revocation=(cgr.TopicPartitions(U1, tuple(range(130))),),
        ),
    ),
    (
        cgr.ConsumerGroupCurrentMemberAssignmentKey("grp", "m-2"),
        cgr.ConsumerGroupCurrentMemberAssignmentValue(0, -1, -128, (), ()),
    ),
    (
        cgr.ConsumerGroupRegularExpressionKey("grp", "^orders-.*$"),
        cgr.ConsumerGroupRegularExpressionValue(("orders-eu", "orders-日本"), 3, 1_700_000_000_000),
    ),
    (cgr.ConsumerGroupRegularExpressionKey("grp", "x|y"), cgr.ConsumerGroupRegularExpressionValue((), 0, -1)),
]
KEYS = [key for key, _ in SAMPLES]


def _id(sample: object) -> str:
    return type(sample).__name__


@pytest.mark.parametrize(("key", "value"), SAMPLES, ids=[_id(k) for k in KEYS])
def test_round_trip(key: cgr.Key, value: cgr.Value) -> None:
    kb, vb = cgr.encode_key(key), cgr.encode_value(value)
    assert cgr.decode_key(kb) == key
    assert cgr.decode_key(memoryview(kb)) == key
    assert cgr.decode_value(key, vb) == value
    assert cgr.decode_value(key, memoryview(vb)) == value


@pytest.mark.parametrize("key", KEYS, ids=_id)
def test_tombstone(key: cgr.Key) -> None:
    assert cgr.decode_value(key, None) is None


# ---------------------------------------------------------------------------------- golden bytes


def test_key_bytes() -> None:
    # Keys are non-flexible: int16 record type, then int16-length strings.
    expected: dict[cgr.Key, bytes] = {
        cgr.ConsumerGroupMetadataKey("g"): b"\x00\x03" + kstr("g"),
        cgr.ConsumerGroupPartitionMetadataKey("g"): b"\x00\x04" + kstr("g"),
        cgr.ConsumerGroupMemberMetadataKey("g", "m"): b"\x00\x05" + kstr("g") + kstr("m"),
        cgr.ConsumerGroupTargetAssignmentMetadataKey("g"): b"\x00\x06" + kstr("g"),
        cgr.ConsumerGroupTargetAssignmentMemberKey("g", "m"): b"\x00\x07" + kstr("g") + kstr("m"),
        cgr.ConsumerGroupCurrentMemberAssignmentKey("g", "m"): b"\x00\x08" + kstr("g") + kstr("m"),
        cgr.ConsumerGroupRegularExpressionKey("g", "^a.*"): b"\x00\x10" + kstr("g") + kstr("^a.*"),
    }
    assert {type(k) for k in expected} == {type(k) for k in KEYS}
    for key, raw in expected.items():
        assert cgr.encode_key(key) == raw
        assert cgr.decode_key(raw) == key
    assert cgr.encode_key(cgr.ConsumerGroupMetadataKey("é")) == b"\x00\x03\x00\x02\xc3\xa9"


def _golden(key: cgr.Key, value: cgr.Value, raw: bytes) -> None:
    assert cgr.encode_value(value) == raw
    assert cgr.decode_value(key, raw) == value


def test_group_metadata_value_bytes() -> None:
    _golden(cgr.ConsumerGroupMetadataKey("g"), cgr.ConsumerGroupMetadataValue(5), V0 + i32(5) + NO_TAGS)


def test_partition_metadata_value_bytes() -> None:
    value = cgr.ConsumerGroupPartitionMetadataValue(
        (
            cgr.TopicMetadata(U1, "orders", 3, (cgr.PartitionRacks(0, ("r1", "r2")),)),
            cgr.TopicMetadata(U2, "é", 1),
        )
    )
    raw = b"".join(
        [
            V0,
            count(2),
            U1_BYTES + cstr("orders") + i32(3),
            count(1) + i32(0) + count(2) + cstr("r1") + cstr("r2") + NO_TAGS,  # partition racks
            NO_TAGS,  # end of the first topic
            U2_BYTES + b"\x03\xc3\xa9" + i32(1) + count(0) + NO_TAGS,
            NO_TAGS,
        ]
    )
    _golden(cgr.ConsumerGroupPartitionMetadataKey("g"), value, raw)


def test_member_metadata_value_bytes() -> None:
    raw = b"".join(
        [
            V0,
            NULL,  # instance id
            cstr("rack-1"),
            cstr("consumer-1"),
            cstr("/10.0.0.1"),
            count(2) + cstr("orders") + cstr("payments"),
            NULL,  # regex
            i32(300_000),
            cstr("uniform"),
            NO_TAGS,
        ]
    )
    _golden(cgr.ConsumerGroupMemberMetadataKey("g", "m"), MEMBER, raw)


def test_member_metadata_classic_member_metadata_is_tagged_field_0() -> None:
    classic = b"\x00\x00\x27\x10\x01\x00"  # opaque to us: kept as is
    value = cgr.ConsumerGroupMemberMetadataValue(None, None, "c", "h", (), None, -1, None, classic)
    head = V0 + NULL + NULL + cstr("c") + cstr("h") + count(0) + NULL + i32(-1) + NULL
    # One tagged field: tag 0, size 6, the bytes.
    _golden(cgr.ConsumerGroupMemberMetadataKey("g", "m"), value, head + b"\x01\x00\x06" + classic)
    # Fields of a later Kafka (tag 5 here) are skipped; tag 0 is still found.
    later = head + b"\x02\x00\x06" + classic + b"\x05\x02\xab\xcd"
    assert cgr.decode_value(cgr.ConsumerGroupMemberMetadataKey("g", "m"), later) == value


def test_target_assignment_metadata_value_bytes() -> None:
    _golden(
        cgr.ConsumerGroupTargetAssignmentMetadataKey("g"),
        cgr.ConsumerGroupTargetAssignmentMetadataValue(7),
        V0 + i32(7) + NO_TAGS,
    )


def test_target_assignment_member_value_bytes() -> None:
    value = cgr.ConsumerGroupTargetAssignmentMemberValue(
        (cgr.TopicPartitions(U1, (0, 2)), cgr.TopicPartitions(U2, tuple(range(200))))
    )
    raw = b"".join(
        [
            V0,
            count(2),
            U1_BYTES + count(2) + i32(0) + i32(2) + NO_TAGS,
            # 201 = 0b1_1001001: two-byte uvarint, low 7 bits first with the continuation bit.
            U2_BYTES + b"\xc9\x01" + b"".join(i32(p) for p in range(200)) + NO_TAGS,
            NO_TAGS,
        ]
    )
    _golden(cgr.ConsumerGroupTargetAssignmentMemberKey("g", "m"), value, raw)


def test_current_member_assignment_value_bytes() -> None:
    value = cgr.ConsumerGroupCurrentMemberAssignmentValue(
        member_epoch=10,
        previous_member_epoch=9,
        state=-2,
        assigned_partitions=(cgr.TopicPartitions(U1, (1,)),),
        partitions_pending_revocation=(cgr.TopicPartitions(U2, (4, 5)),),
    )
    raw = b"".join(
        [
            V0,
            i32(10) + i32(9) + i8(-2),  # state is a plain int8, not a tagged field
            count(1) + U1_BYTES + count(1) + i32(1) + NO_TAGS,
            count(1) + U2_BYTES + count(2) + i32(4) + i32(5) + NO_TAGS,
            NO_TAGS,
        ]
    )
    _golden(cgr.ConsumerGroupCurrentMemberAssignmentKey("g", "m"), value, raw)


def test_regular_expression_value_bytes() -> None:
    value = cgr.ConsumerGroupRegularExpressionValue(("a1", "a2"), 3, 1_700_000_000_000)
    raw = V0 + count(2) + cstr("a1") + cstr("a2") + i64(3) + i64(1_700_000_000_000) + NO_TAGS
    _golden(cgr.ConsumerGroupRegularExpressionKey("g", "a.*"), value, raw)


def test_later_kafkas_tagged_fields_are_skipped() -> None:
    # Kafka 4.1+ adds the metadata hash (tag 0, int64) and more to the group metadata value.
    raw = V0 + i32(5) + b"\x02" + b"\x00\x08" + i64(-99) + b"\x01\x08" + i64(123)
    assert cgr.decode_value(cgr.ConsumerGroupMetadataKey("g"), raw) == cgr.ConsumerGroupMetadataValue(5)
    # ... and assignment epochs (tag 0, compact int32 array) to each TopicPartitions.
    epochs = count(1) + i32(7)
    tp = U1_BYTES + count(1) + i32(3) + b"\x01\x00" + bytes([len(epochs)]) + epochs
    raw = V0 + i32(2) + i32(1) + i8(0) + count(1) + tp + count(0) + NO_TAGS
    assert cgr.decode_value(
        cgr.ConsumerGroupCurrentMemberAssignmentKey("g", "m"), raw
    ) == cgr.ConsumerGroupCurrentMemberAssignmentValue(2, 1, 0, (cgr.TopicPartitions(U1, (3,)),), ())


# ---------------------------------------------------------------------------------- bad bytes


@pytest.mark.parametrize(("key", "value"), SAMPLES, ids=[_id(k) for k in KEYS])
def test_every_truncation_and_trailing_bytes_are_refused(key: cgr.Key, value: cgr.Value) -> None:
    kb, vb = cgr.encode_key(key), cgr.encode_value(value)
    for n in range(len(kb)):
        with pytest.raises(gr.RecordFormatError):
            cgr.decode_key(kb[:n])
    for n in range(len(vb)):
        with pytest.raises(gr.RecordFormatError):
            cgr.decode_value(key, vb[:n])
    with pytest.raises(gr.RecordFormatError, match="trailing"):
        cgr.decode_key(kb + b"\x00")
    with pytest.raises(gr.RecordFormatError, match="trailing"):
        cgr.decode_value(key, vb + NO_TAGS)


def test_other_record_types_are_not_ours() -> None:
    # The classic records (group_records.py) ...
    assert cgr.decode_key(gr.encode_offset_commit_key("g", "t", 0)) is None
    assert cgr.decode_key(b"\x00\x00" + gr.encode_offset_commit_key("g", "t", 0)[2:]) is None
    assert cgr.decode_key(gr.encode_group_metadata_key("g")) is None
    # ... and those of later Kafka's share (9-15) and streams (17+) groups.
    for version in (9, 15, 17, 0x7FFF, -1):
        assert cgr.decode_key(struct.pack(">h", version) + kstr("g")) is None


def test_unknown_value_versions_are_refused() -> None:
    key = cgr.ConsumerGroupMetadataKey("g")
    for version in (1, -1):
        with pytest.raises(gr.RecordFormatError, match="version"):
            cgr.decode_value(key, struct.pack(">h", version) + i32(5) + NO_TAGS)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x03" + b"\xff\xff",  # null group id (length -1)
        b"\x00\x03" + b"\xff\xfe",  # negative length
        b"\x00\x05" + kstr("g") + b"\xff\xff",  # null member id
        b"\x00\x03" + b"\x00\x01\xff",  # not UTF-8
    ],
)
def test_garbled_keys_are_refused(raw: bytes) -> None:
    with pytest.raises(gr.RecordFormatError):
        cgr.decode_key(raw)


MEMBER_KEY = cgr.ConsumerGroupMemberMetadataKey("g", "m")
MEMBER_TAIL = count(0) + NULL + i32(-1) + NULL + NO_TAGS


@pytest.mark.parametrize(
    ("key", "raw"),
    [
        (MEMBER_KEY, V0 + NULL + NULL + NULL + cstr("h") + MEMBER_TAIL),  # null client id
        (MEMBER_KEY, V0 + NULL + NULL + cstr("c") + b"\x02\xc3" + MEMBER_TAIL),  # not UTF-8
        (MEMBER_KEY, V0 + NULL + NULL + cstr("c") + cstr("h") + b"\x00" + MEMBER_TAIL[1:]),  # null array
        # A count far beyond the bytes left, and a varint longer than 5 bytes.
        (cgr.ConsumerGroupTargetAssignmentMemberKey("g", "m"), V0 + b"\xff\xff\xff\xff\x0f" + NO_TAGS),
        (cgr.ConsumerGroupTargetAssignmentMemberKey("g", "m"), V0 + b"\x81\x80\x80\x80\x80\x00" + NO_TAGS),
        # A tagged field longer than the value.
        (cgr.ConsumerGroupMetadataKey("g"), V0 + i32(1) + b"\x01\x00\x7f\x00"),
    ],
)
def test_garbled_values_are_refused(key: cgr.Key, raw: bytes) -> None:
    with pytest.raises(gr.RecordFormatError):
        cgr.decode_value(key, raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64), st.sampled_from(KEYS))
def test_random_bytes_raise_only_record_format_error(raw: bytes, key: cgr.Key) -> None:
    for decode in (lambda: cgr.decode_key(raw), lambda: cgr.decode_value(key, V0 + raw)):
        with contextlib.suppress(gr.RecordFormatError):
            decode()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SAMPLES), st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_corrupted_records_raise_only_record_format_error(
    sample: tuple[cgr.Key, cgr.Value], where: int, byte: int
) -> None:
    key, value = sample
    for raw, decode in (
        (cgr.encode_key(key), cgr.decode_key),
        (cgr.encode_value(value), lambda b: cgr.decode_value(key, b)),
    ):
        buf = bytearray(raw)
        buf[where % len(buf)] = byte
        with contextlib.suppress(gr.RecordFormatError):
            decode(bytes(buf))


def test_strings_longer_than_kafka_allows_are_not_written() -> None:
    value = cgr.ConsumerGroupRegularExpressionValue(("x" * 0x8000,), 0, 0)
    with pytest.raises(ValueError, match="longer than Kafka allows"):
        cgr.encode_value(value)
    # The longest allowed one needs a three-byte length.
    ok = cgr.ConsumerGroupRegularExpressionValue(("x" * 0x7FFF,), 0, 0)
    assert cgr.encode_value(ok)[2:6] == count(1) + b"\x80\x80\x02"
    assert cgr.decode_value(cgr.ConsumerGroupRegularExpressionKey("g", "r"), cgr.encode_value(ok)) == ok
