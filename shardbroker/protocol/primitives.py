"""Kafka protocol primitives: varints, and the fixed-width packers the compiled codec shares.

Unsigned varints (LEB128, at most 5 bytes for 32 bits) carry compact lengths and tagged-field
headers in flexible versions; zig-zag varints/varlongs are the record format's. Decoders take
``(buf, pos)`` and return ``(value, new_pos)``; they raise only :class:`ProtocolError`.
"""

from __future__ import annotations

import struct
from typing import Final

from shardbroker.protocol.errors import ProtocolError

INT8: Final = struct.Struct(">b")
INT16: Final = struct.Struct(">h")
UINT16: Final = struct.Struct(">H")
INT32: Final = struct.Struct(">i")
UINT32: Final = struct.Struct(">I")
INT64: Final = struct.Struct(">q")
FLOAT64: Final = struct.Struct(">d")

# One-byte varints are by far the most common (lengths < 127, tag counts): precomputed.
_UVARINT_1: Final = tuple(bytes((i,)) for i in range(128))


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint of a value in 0 .. 2**32-1 (Kafka's writeUnsignedVarint)."""
    if 0 <= value < 128:
        return _UVARINT_1[value]
    if value < 0 or value > 0xFFFFFFFF:
        raise ProtocolError(f"unsigned varint out of range: {value}")
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def uvarint_tail(buf: memoryview | bytes, pos: int, first: int) -> tuple[int, int]:
    """Finish a varint whose first byte (``first`` > 127) was already read; pos is after it."""
    result = first & 0x7F
    shift = 7
    end = len(buf)
    while True:
        if pos >= end:
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 28:
            raise ProtocolError("varint is longer than 5 bytes")


def decode_uvarint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    if pos >= len(buf):
        raise ProtocolError("truncated varint")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    return uvarint_tail(buf, pos + 1, first)


def encode_varint(value: int) -> bytes:
    """Zig-zag signed varint (32-bit), as in record headers and lengths."""
    if not -(2**31) <= value < 2**31:
        raise ProtocolError(f"varint out of range: {value}")
    return encode_uvarint((value << 1) ^ (value >> 31))


def decode_varint(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    raw, pos = decode_uvarint(buf, pos)
    return (raw >> 1) ^ -(raw & 1), pos


def encode_varlong(value: int) -> bytes:
    """Zig-zag signed varlong (64-bit, at most 10 bytes)."""
    if not -(2**63) <= value < 2**63:
        raise ProtocolError(f"varlong out of range: {value}")
    raw = (value << 1) ^ (value >> 63)
    out = bytearray()
    while raw > 0x7F:
        out.append((raw & 0x7F) | 0x80)
        raw >>= 7
    out.append(raw)
    return bytes(out)


def decode_varlong(buf: memoryview | bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(buf)
    while True:
        if pos >= end:
            raise ProtocolError("truncated varlong")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varlong is longer than 10 bytes")
