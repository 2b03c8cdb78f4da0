"""Kafka protocol primitives: varints, and the fixed-width packers the codec and records share.

Unsigned varints (LEB128, at most 5 bytes for 32 bits) carry compact lengths and tagged-field
headers in flexible versions; zig-zag varints/varlongs are the record format's. This module is the
one home of both: the compiled codec (:mod:`shardbroker.protocol.codec`) and the record batches
(:mod:`shardbroker.protocol.record_batch` and its builder) use these functions and :data:`UVARINT_TABLE`.

Errors: decoders take ``(buf, pos)``, return ``(value, new_pos)`` and raise only
:class:`ProtocolError` (CORRUPT_MESSAGE); :mod:`records` turns it into its ``InvalidRecordBatch``
where record decoding starts, so these functions need no error-class argument on the hot path.
Encoders raise :class:`VarintRangeError` for a value out of range: a ``ProtocolError`` for the
codec, and a ``ValueError`` for callers that passed a bad argument (the record builder).

Speed: encoders look every 1- and 2-byte varint up in a 16,384-entry table (60-115 ns);
decoders inline the 1-byte case (100-140 ns) and loop with an explicit end check beyond it,
which is ~130 ns cheaper per multi-byte varint than ``try`` per byte (docs/notes/varints.md).
"""

from __future__ import annotations

import struct
from typing import Final, TypeAlias

from shardbroker.protocol.errors import ProtocolError

INT8: Final = struct.Struct(">b")
INT16: Final = struct.Struct(">h")
UINT16: Final = struct.Struct(">H")
INT32: Final = struct.Struct(">i")
UINT32: Final = struct.Struct(">I")
INT64: Final = struct.Struct(">q")
FLOAT64: Final = struct.Struct(">d")

BytesLike: TypeAlias = bytes | bytearray | memoryview


class VarintRangeError(ProtocolError, ValueError):
    """A value a varint cannot carry, on encoding (a ProtocolError and a ValueError)."""


def _encode_uvarint_loop(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: Size of :data:`UVARINT_TABLE`: the unsigned values below 2**14 take 1-2 bytes.
UVARINT_TABLE_SIZE: Final = 1 << 14
#: ``UVARINT_TABLE[z]`` is the encoded unsigned varint of ``z`` (0 <= z < 16384). Zig-zag values
#: in it (signed -8192..8191) cover nearly every length, delta and count: callers on hot paths
#: index it directly.
UVARINT_TABLE: Final = tuple(_encode_uvarint_loop(i) for i in range(UVARINT_TABLE_SIZE))


def encode_uvarint(value: int) -> bytes:
    """Unsigned varint of a value in 0 .. 2**32-1 (Kafka's writeUnsignedVarint)."""
    if 0 <= value < 16384:
        return UVARINT_TABLE[value]
    if not 0 <= value <= 0xFFFFFFFF:
        raise VarintRangeError(f"unsigned varint out of range: {value}")
    return _encode_uvarint_loop(value)


def encode_varint(value: int) -> bytes:
    """Zig-zag varint of a signed 32-bit value (1-5 bytes), as in record lengths and deltas."""
    z = (value << 1) ^ (value >> 31)
    # Out-of-range values never map into the table (their z is >= 2**32), so look up first.
    if 0 <= z < 16384:
        return UVARINT_TABLE[z]
    if not -(2**31) <= value < 2**31:
        raise VarintRangeError(f"varint out of range: {value}")
    return _encode_uvarint_loop(z)


def encode_varlong(value: int) -> bytes:
    """Zig-zag varlong of a signed 64-bit value (1-10 bytes)."""
    z = (value << 1) ^ (value >> 63)
    if 0 <= z < 16384:
        return UVARINT_TABLE[z]
    if not -(2**63) <= value < 2**63:
        raise VarintRangeError(f"varlong out of range: {value}")
    return _encode_uvarint_loop(z)


def varint_size(value: int) -> int:
    """Encoded size of a zig-zag varint/varlong."""
    z = (value << 1) ^ (value >> 63)
    size = 1
    while z > 0x7F:
        z >>= 7
        size += 1
    return size


def uvarint_tail(buf: BytesLike, pos: int, first: int, max_shift: int = 28) -> tuple[int, int]:
    """Finish a varint whose first byte (``first`` > 127) was already read; pos is after it.

    At most ``max_shift // 7 + 1`` bytes in all: 5 by default (32-bit varints), 10 with
    ``max_shift=63`` (varlongs); a last byte with bits beyond 32 (or 64) is refused, as the
    encoders would refuse the value (a 35-bit tag number decoded and then could not re-encode).
    """
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
            if result >> (max_shift + 4 if max_shift < 63 else 64):
                raise ProtocolError(f"varint does not fit in {min(max_shift + 4, 64)} bits")
            return result, pos
        shift += 7
        if shift > max_shift:
            raise ProtocolError(f"varint is longer than {max_shift // 7 + 1} bytes")


def decode_uvarint(buf: BytesLike, pos: int) -> tuple[int, int]:
    """``(value, new_pos)`` of an unsigned varint (at most 5 bytes)."""
    try:
        b = buf[pos]
    except IndexError:
        raise ProtocolError("truncated varint") from None
    if b < 0x80:
        return b, pos + 1
    return uvarint_tail(buf, pos + 1, b)


def decode_varint(buf: BytesLike, pos: int) -> tuple[int, int]:
    """``(value, new_pos)`` of a zig-zag varint (at most 5 bytes, 32 bits)."""
    try:
        b = buf[pos]
    except IndexError:
        raise ProtocolError("truncated varint") from None
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, pos = uvarint_tail(buf, pos + 1, b)
    if z > 0xFFFFFFFF:
        raise ProtocolError("varint out of 32-bit range")
    return (z >> 1) ^ -(z & 1), pos


def decode_varlong(buf: BytesLike, pos: int) -> tuple[int, int]:
    """``(value, new_pos)`` of a zig-zag varlong (at most 10 bytes, 64 bits)."""
    try:
        b = buf[pos]
    except IndexError:
        raise ProtocolError("truncated varlong") from None
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, pos = uvarint_tail(buf, pos + 1, b, 63)
    if z > 0xFFFFFFFFFFFFFFFF:
        raise ProtocolError("varlong out of 64-bit range")
    return (z >> 1) ^ -(z & 1), pos
