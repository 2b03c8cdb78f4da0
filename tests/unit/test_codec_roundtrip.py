"""Round trips of every request, response and header at every valid version.

Sample values are built from the schema tables themselves: every field present in the version
gets a non-default value (tagged fields included), a second sample puts null wherever the
version allows it, and a hypothesis strategy derived from the same tables draws many more.
"""

from __future__ import annotations

import random
import string
import struct
from typing import Any
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.protocol import codec, messages
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.schema import NATURAL, NATURAL_DEFAULTS, Field, Struct, in_versions

ALL_MESSAGES: list[type[Message]] = [
    *messages.REQUESTS.values(),
    *messages.RESPONSES.values(),
    *messages.HEADERS.values(),
]
ALL_VERSIONS = [
    (cls, v) for cls in ALL_MESSAGES for v in range(cls.VALID_VERSIONS[0], cls.VALID_VERSIONS[1] + 1)
]

INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def flexible(cls: type[Message], version: int) -> bool:
    return cls.FLEXIBLE_VERSIONS is not None and version >= cls.FLEXIBLE_VERSIONS


def present(f: Field, version: int, flex: bool) -> bool:
    return in_versions(f.versions, version) or (flex and f.tag is not None and in_versions(f.tagged, version))


def default_of(f: Field) -> Any:
    if f.default is not NATURAL:
        return f.default
    if f.kind == "struct":
        assert f.struct is not None
        return f.struct()
    if f.kind.startswith("[]"):
        return []
    return NATURAL_DEFAULTS[f.kind]


def scalar_sample(kind: str, rnd: random.Random, avoid: Any) -> Any:
    while True:
        if kind in INT_RANGES:
            lo, hi = INT_RANGES[kind]
            value: Any = rnd.choice([lo, hi, rnd.randint(lo, hi), 1])
        elif kind == "bool":
            value = not avoid
        elif kind == "float64":
            value = rnd.choice([1.5, -2.25e300, float("inf")])
        elif kind == "string":
            value = "".join(rnd.choice(string.ascii_letters + "é€😀") for _ in range(rnd.randint(1, 12)))
        elif kind == "uuid":
            value = UUID(int=rnd.getrandbits(128) or 1)
        elif kind in ("bytes", "records"):
            value = rnd.randbytes(rnd.randint(1, 40))
        else:  # pragma: no cover
            raise AssertionError(kind)
        if value != avoid:
            return value


def build_sample(
    cls: type[Struct], version: int, flex: bool, rnd: random.Random, nulls: bool = False
) -> Struct:
    """An instance with a non-default value in every field present at ``version``."""
    obj = cls()
    for f in cls.FIELDS:
        if not present(f, version, flex):
            continue
        if nulls and in_versions(f.nullable, version):
            setattr(obj, f.attr, None)
            continue
        if f.kind == "struct":
            assert f.struct is not None
            value: Any = build_sample(f.struct, version, flex, rnd, nulls)
            if value == f.struct():  # a struct with no fields in this version stays default
                value = f.struct() if f.default is NATURAL else value
        elif f.kind == "[]struct":
            assert f.struct is not None
            value = [build_sample(f.struct, version, flex, rnd, nulls) for _ in range(rnd.randint(1, 2))]
        elif f.kind.startswith("[]"):
            value = [scalar_sample(f.kind[2:], rnd, None) for _ in range(rnd.randint(1, 3))]
        else:
            value = scalar_sample(f.kind, rnd, default_of(f))
        setattr(obj, f.attr, value)
    return obj


def ids(p: tuple[type[Message], int]) -> str:
    return f"{p[0].__name__}-v{p[1]}"


@pytest.mark.parametrize(("cls", "version"), ALL_VERSIONS, ids=[ids(p) for p in ALL_VERSIONS])
def test_round_trip_every_version(cls: type[Message], version: int) -> None:
    rnd = random.Random(f"{cls.__name__}{version}")
    flex = flexible(cls, version)
    for nulls in (False, True):
        msg = build_sample(cls, version, flex, rnd, nulls)
        data = codec.encode(msg, version)
        back = codec.decode(cls, data, version)
        assert back == msg, f"{cls.__name__} v{version} nulls={nulls}"
        assert codec.encode(back, version) == data
        assert b"".join(bytes(p) for p in codec.encode_parts(msg, version, threshold=0)) == data
    empty = codec.decode(cls, codec.encode(cls(), version), version)
    assert empty == cls()


def test_coverage_counts() -> None:
    assert len(messages.REQUESTS) == len(messages.RESPONSES) >= 80
    assert len(ALL_VERSIONS) > 600
    assert messages.ProduceRequest.API_KEY == 0 and messages.API_NAMES[0] == "Produce"
    assert messages.ProduceRequest.VALID_VERSIONS == (0, 11)
    assert messages.ProduceRequest.FLEXIBLE_VERSIONS == 9
    assert messages.ProduceRequest.DEPRECATED_VERSIONS == (0, 6)
    assert messages.RequestHeader.VALID_VERSIONS == (0, 2)
    assert messages.ResponseHeader.VALID_VERSIONS == (0, 1)
    assert messages.API_NAMES[18] == "ApiVersions"


# ---- specific wire facts ------------------------------------------------------------------


def produce(records: Any) -> messages.ProduceRequest:
    P = messages.ProduceRequest
    return P(
        acks=-1,
        timeout_ms=30000,
        topic_data=[
            P.TopicProduceData(name="t", partition_data=[P.PartitionProduceData(index=0, records=records)])
        ],
    )


def test_records_decode_is_a_view_not_a_copy() -> None:
    batch = bytes(range(256)) * 4096  # 1 MiB
    frame = bytearray(codec.encode(produce(batch), 9))
    msg = codec.decode(messages.ProduceRequest, frame, 9)
    rec = msg.topic_data[0].partition_data[0].records
    assert isinstance(rec, memoryview) and rec == batch
    frame[-4] ^= 0xFF  # the last record byte (three empty tagged sections follow): the view sees it
    assert rec[-1] == frame[-4] != batch[-1]


def test_classic_and_compact_encodings() -> None:
    # v8: classic nullable string (-1), int16 acks, int32 timeout, int32 array count, int16 name...
    data = codec.encode(produce(b"abc"), 8)
    assert data == (
        b"\xff\xff" + b"\xff\xff" + struct.pack(">i", 30000) + b"\x00\x00\x00\x01" + b"\x00\x01t"
        b"\x00\x00\x00\x01" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x03abc"
    )
    # v9: compact: null string is 0, counts and lengths are uvarint(n+1), tagged sections everywhere
    data = codec.encode(produce(b"abc"), 9)
    assert data == (
        b"\x00" + b"\xff\xff" + struct.pack(">i", 30000) + b"\x02" + b"\x02t"
        b"\x02" + b"\x00\x00\x00\x00" + b"\x04abc" + b"\x00" + b"\x00" + b"\x00"
    )


def test_tagged_fields_written_only_when_not_default_and_in_tag_order() -> None:
    R = messages.ApiVersionsResponse
    plain = codec.encode(R(), 3)
    assert plain.endswith(b"\x00")  # no tagged fields
    msg = R(finalized_features_epoch=7, zk_migration_ready=True)
    data = codec.encode(msg, 3)
    # tags 1 (epoch, int64) and 3 (bool), ascending
    assert data.endswith(b"\x02" + b"\x01\x08" + struct.pack(">q", 7) + b"\x03\x01\x01")
    assert codec.decode(R, data, 3) == msg
    assert codec.encode(msg, 2) == codec.encode(R(), 2)  # tagged fields are ignorable-by-absence


def test_unknown_tagged_fields_are_kept_and_re_emitted() -> None:
    R = messages.ApiVersionsResponse
    data = codec.encode(R(finalized_features_epoch=7), 3)
    # known tags are 0-3; add unknown tags 5 and 300 (a two-byte varint) after the known tag 1
    count_at = len(data) - 1 - (1 + 1 + 8)
    assert data[count_at] == 1
    extra = b"\x05\x03xyz" + b"\xac\x02\x00"
    forged = data[:count_at] + b"\x03" + data[count_at + 1 :] + extra
    msg = codec.decode(R, forged, 3)
    assert msg.unknown_tagged_fields == ((5, b"xyz"), (300, b""))
    again = codec.encode(msg, 3)
    assert again[count_at:] == b"\x03" + b"\x01\x08" + struct.pack(">q", 7) + b"\x05\x03xyz" + b"\xac\x02\x00"
    assert codec.decode(R, again, 3) == msg


def test_ignorable_false_rejects_non_default_in_versions_without_the_field() -> None:
    P = messages.ProduceRequest
    with pytest.raises(ProtocolError) as exc:
        codec.encode(P(transactional_id="tx"), 2)  # TransactionalId is 3+, not ignorable
    assert exc.value.error_code == ErrorCode.UNSUPPORTED_VERSION
    codec.encode(P(transactional_id=None), 2)  # its default is null: fine
    # An ignorable field is silently dropped.
    F = messages.FetchRequest
    assert next(f for f in F.FIELDS if f.attr == "session_id").ignorable
    assert codec.encode(F(session_id=5), 6) == codec.encode(F(), 6)


def test_null_only_where_nullable() -> None:
    P = messages.ProduceRequest
    codec.encode(P(transactional_id=None), 3)
    with pytest.raises(ProtocolError):
        codec.encode(P(topic_data=None), 3)  # type: ignore[arg-type]
    M = messages.MetadataRequest
    assert codec.decode(M, codec.encode(M(topics=None), 1), 1).topics is None
    with pytest.raises(ProtocolError):
        codec.encode(M(topics=None), 0)  # null topics ("all") only from v1


def test_hex_and_explicit_defaults() -> None:
    assert messages.ProduceRequest().transactional_id is None  # "null" default
    defaults = {f.default for cls in ALL_MESSAGES for f in cls.FIELDS if f.default is not NATURAL}
    assert 0x7FFFFFFF in defaults  # "0x7fffffff"
    assert -1 in defaults and True in defaults


def test_nullable_struct_uses_presence_byte() -> None:
    R = messages.ConsumerGroupHeartbeatResponse
    f = next(f for f in R.FIELDS if f.attr == "assignment")
    assert f.kind == "struct" and f.default is None
    without = codec.encode(R(), 0)
    with_ = codec.encode(R(assignment=R.Assignment()), 0)
    assert without[-2:] == b"\xff\x00"
    assert with_[-4:] == b"\x01\x01\x00\x00"  # present, empty partitions array, two tagged sections


def test_trailing_bytes_rejected_unless_allowed() -> None:
    data = codec.encode(messages.HeartbeatRequest(group_id="g"), 0) + b"!"
    with pytest.raises(ProtocolError, match="trailing"):
        codec.decode(messages.HeartbeatRequest, data, 0)
    assert codec.decode(messages.HeartbeatRequest, data, 0, allow_trailing=True).group_id == "g"


def test_compact_strings_longer_than_32767_bytes_are_refused_as_by_kafka() -> None:
    """Kafka's generated readers refuse any string over 0x7fff bytes ("had invalid length"); a
    compact string could say more, a classic int16 length cannot."""
    init = messages.InitProducerIdRequest
    longest = codec.encode(init(transactional_id="t" * 0x7FFF), 4)
    assert codec.decode(init, longest, 4).transactional_id == "t" * 0x7FFF
    with pytest.raises(ProtocolError, match="32768 bytes"):
        codec.decode(init, codec.encode(init(transactional_id="t" * 0x8000), 4), 4)
    assert (
        codec.decode(
            messages.SaslAuthenticateRequest,
            codec.encode(messages.SaslAuthenticateRequest(auth_bytes=b"b" * 0x8000), 2),
            2,
        ).auth_bytes
        == b"b" * 0x8000
    )


def test_unsupported_version() -> None:
    with pytest.raises(ProtocolError) as exc:
        codec.encode(messages.ProduceRequest(), 99)
    assert exc.value.error_code == ErrorCode.UNSUPPORTED_VERSION
    with pytest.raises(ProtocolError):
        codec.decode(messages.ProduceRequest, b"", 99)


def test_nested_structs_are_not_entry_points() -> None:
    # A version no message has: a nested struct compiled for its message is served from the cache.
    nested = messages.ProduceRequest.TopicProduceData
    with pytest.raises(TypeError, match="nested struct: encode its message"):
        codec.encode(nested(), 999)
    with pytest.raises(TypeError, match="nested struct: decode its message"):
        codec.decode(nested, b"", 999)


def test_encode_errors_are_protocol_errors() -> None:
    with pytest.raises(ProtocolError):
        codec.encode(messages.ProduceRequest(acks=1 << 20), 3)
    with pytest.raises(ProtocolError):
        codec.encode(messages.HeartbeatRequest(group_id=12), 0)  # type: ignore[arg-type]


class FileRange:
    """Stands in for a future sendfile region: sized, not a buffer."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_encode_parts_keeps_non_buffer_records_apart() -> None:
    F = messages.FetchResponse
    region = FileRange(5000)
    msg = F(
        responses=[
            F.FetchableTopicResponse(
                topic="t",
                partitions=[
                    F.PartitionData(partition_index=0, records=region),
                    F.PartitionData(records=b"xy"),
                ],
            )
        ]
    )
    parts = codec.encode_parts(msg, 11)
    assert [p for p in parts if p is region] == [region]
    i = parts.index(region)
    assert parts[i - 1][-4:] == struct.pack(">i", 5000)
    assert all(isinstance(p, bytes) for j, p in enumerate(parts) if j != i)
    with pytest.raises(ProtocolError, match="encode_parts"):
        codec.encode(msg, 11)
    big = memoryview(bytes(codec.ZERO_COPY_THRESHOLD))
    parts = codec.encode_parts(
        F(responses=[F.FetchableTopicResponse(partitions=[F.PartitionData(records=big)])]), 4
    )
    assert any(p is big for p in parts)


def test_repr_and_eq() -> None:
    msg = produce(b"x" * 1000)
    assert "records=<bytes of 1000 bytes>" in repr(msg)
    assert repr(messages.ProduceRequest()).startswith("ProduceRequest(transactional_id=None, acks=0")
    assert msg == produce(b"x" * 1000) and msg != produce(b"y")
    assert msg != "not a message"
    # Defaults are fresh per instance.
    a, b = messages.ProduceRequest(), messages.ProduceRequest()
    a.topic_data.append(messages.ProduceRequest.TopicProduceData())
    assert b.topic_data == []


# ---- hypothesis: strategies derived from the schema ----------------------------------------


def scalar_strategy(kind: str) -> st.SearchStrategy[Any]:
    if kind in INT_RANGES:
        lo, hi = INT_RANGES[kind]
        return st.integers(lo, hi)
    return {
        "bool": st.booleans(),
        "float64": st.floats(allow_nan=False),
        "string": st.text(max_size=8),
        "uuid": st.uuids(),
        "bytes": st.binary(max_size=16),
        "records": st.binary(max_size=16),
    }[kind]


def field_strategy(f: Field, version: int, flex: bool, depth: int) -> st.SearchStrategy[Any]:
    if f.kind == "struct":
        assert f.struct is not None
        base: st.SearchStrategy[Any] = struct_strategy(f.struct, version, flex, depth + 1)
    elif f.kind == "[]struct":
        assert f.struct is not None
        base = st.lists(struct_strategy(f.struct, version, flex, depth + 1), max_size=2 if depth < 2 else 1)
    elif f.kind.startswith("[]"):
        base = st.lists(scalar_strategy(f.kind[2:]), max_size=3)
    else:
        base = scalar_strategy(f.kind)
    if in_versions(f.nullable, version):
        base = st.none() | base
    return base


def struct_strategy(cls: type[Struct], version: int, flex: bool, depth: int = 0) -> st.SearchStrategy[Any]:
    kwargs = {
        f.attr: field_strategy(f, version, flex, depth) for f in cls.FIELDS if present(f, version, flex)
    }
    return st.builds(cls, **kwargs)


@st.composite
def message_and_version(draw: st.DrawFn) -> tuple[Struct, int]:
    cls, version = draw(st.sampled_from(ALL_VERSIONS))
    return draw(struct_strategy(cls, version, flexible(cls, version))), version


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message_and_version())
def test_round_trip_hypothesis(sample: tuple[Struct, int]) -> None:
    msg, version = sample
    data = codec.encode(msg, version)
    assert codec.decode(type(msg), data, version) == msg
