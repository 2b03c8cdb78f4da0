"""Arbitrary and mutated bytes fed to every decoder raise ProtocolError and nothing else."""

from __future__ import annotations

import contextlib
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.protocol import codec, headers
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.primitives import decode_uvarint
from tests.unit.test_codec_roundtrip import ALL_VERSIONS, build_sample, flexible

FUZZ = settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decode_only_protocol_errors(cls: type, data: bytes, version: int) -> None:
    with contextlib.suppress(ProtocolError):
        codec.decode(cls, data, version)


@FUZZ
@given(st.sampled_from(ALL_VERSIONS), st.binary(max_size=200))
def test_arbitrary_bytes(pair: tuple[type, int], data: bytes) -> None:
    cls, version = pair
    decode_only_protocol_errors(cls, data, version)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[type, bytes, int]:
    cls, version = draw(st.sampled_from(ALL_VERSIONS))
    seed = draw(st.integers(0, 2**32))
    data = bytearray(
        codec.encode(build_sample(cls, version, flexible(cls, version), random.Random(seed)), version)
    )
    op = draw(st.sampled_from(["truncate", "flip", "huge", "splice"]))
    if not data:
        return cls, bytes(draw(st.binary(max_size=8))), version
    at = draw(st.integers(0, len(data) - 1))
    if op == "truncate":
        del data[at:]
    elif op == "flip":
        data[at] ^= draw(st.integers(1, 255))
    elif op == "huge":  # a length or count field claiming far more than the frame holds
        width = draw(st.sampled_from([1, 2, 4]))
        data[at : at + width] = draw(st.sampled_from([b"\x7f\xff\xff\xff", b"\xff\xff\xff\x0f", b"\x80\x00"]))
    else:
        data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return cls, bytes(data), version


@FUZZ
@given(mutated())
def test_mutated_valid_encodings(case: tuple[type, bytes, int]) -> None:
    decode_only_protocol_errors(*case)


def test_huge_counts_do_not_allocate() -> None:
    from shardbroker.protocol.messages import MetadataRequest, MetadataResponse

    # classic int32 count of 2**31-1 topics in 4 bytes: rejected before any allocation
    for cls, version in ((MetadataRequest, 4), (MetadataResponse, 0)):
        data = struct.pack(">i", 2**31 - 1)
        try:
            codec.decode(cls, data, version)
        except ProtocolError as exc:
            assert "cannot fit" in str(exc) or "past the end" in str(exc)
    # a compact (uvarint) count of 2**32-2 in flexible versions
    try:
        codec.decode(MetadataRequest, b"\xff\xff\xff\xff\x0f", 12)
        raise AssertionError("should fail")
    except ProtocolError as exc:
        assert "cannot fit" in str(exc)


@FUZZ
@given(st.binary(max_size=64))
def test_request_header_decoder(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        headers.decode_request_header(memoryview(data))
    with contextlib.suppress(ProtocolError):
        headers.decode_request(data)


@FUZZ
@given(st.integers(0, 70), st.integers(-1, 20), st.binary(max_size=64))
def test_request_header_decoder_known_keys(api_key: int, version: int, rest: bytes) -> None:
    frame = struct.pack(">hhi", api_key, version, 42) + rest
    try:
        headers.decode_request(frame)
    except headers.RequestHeaderError as exc:
        assert exc.correlation_id == 42
    except ProtocolError:
        pass


def test_a_varint_beyond_32_bits_is_refused_like_the_encoder_refuses_it() -> None:
    """The 5th byte of a 32-bit varint carries 4 bits: a 35-bit tag number used to decode (and
    then could not be encoded back)."""
    assert decode_uvarint(bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]), 0) == (2**32 - 1, 5)
    with pytest.raises(ProtocolError, match="32 bits"):
        decode_uvarint(bytes([0x80, 0x80, 0x80, 0x80, 0x10]), 0)
    # Found by `python -m tests.fuzz`: ListOffsets v9 whose tagged section holds tag 0x7c0808080.
    data = bytes.fromhex("00000000000101808080807c0880808080082dff80808080")
    with pytest.raises(ProtocolError, match="32 bits"):
        codec.decode(m.ListOffsetsRequest, data, 9, allow_trailing=True)
