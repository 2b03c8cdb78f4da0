"""Structure-aware mutations: find the slots of a valid encoding that a decoder trusts, and break them.

Random bytes mostly die in the first length field; a decoder's interesting paths are behind valid
prefixes. So a mutation starts from a valid encoding and its *layout*: every length, count and
varint, where it is, how wide, what it says. :func:`message_layout` derives it from the schema
tables of ``messages.py`` and the message's values (the tagged-field sections it reads from the
bytes), :func:`batch_layout` from a v2 record batch; both are checked against the encoding they
describe (the walk must end exactly at its end). :func:`mutate` then applies one to three
operations: a length or count set to a neighbour, -1, -2, 0 or the type's maximum; a varint cut
short or made overlong; a tagged-field section replaced by garbage (lying counts, huge tags,
sizes past the end, known tags with wrong contents); or a plain byte flip, cut, insertion,
deletion or duplication.

Choices come from a :class:`Choices` object: ``random.Random`` for the long runs, a hypothesis
``data.draw`` adapter in the unit tests (so findings shrink), atheris' FuzzedDataProvider in
``--engine atheris`` runs. One mutation engine, three drivers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, TypeVar

from shardbroker.protocol.codec import Message, is_flexible
from shardbroker.protocol.primitives import decode_uvarint, decode_varint, decode_varlong, encode_uvarint
from shardbroker.protocol.schema import Struct, in_versions

__all__ = ["Choices", "Slot", "batch_layout", "message_layout", "mutate"]

T = TypeVar("T")

_FIXED_SIZE = {
    "bool": 1,
    "int8": 1,
    "int16": 2,
    "uint16": 2,
    "int32": 4,
    "uint32": 4,
    "int64": 8,
    "float64": 8,
}
_PACK = {"i8": struct.Struct(">b"), "i16": struct.Struct(">h"), "i32": struct.Struct(">i")}
_HUGE = {"i8": 127, "i16": 0x7FFF, "i32": 0x7FFFFFFF, "uv": 2**32 - 1, "zz": 2**31 - 1, "zzl": 2**63 - 1}
_RANGE = {"i8": (-(2**7), 2**7 - 1), "i16": (-(2**15), 2**15 - 1), "i32": (-(2**31), 2**31 - 1)}


class Choices(Protocol):
    """The three calls mutations make (``random.Random`` has them)."""

    def randint(self, a: int, b: int) -> int: ...
    def choice(self, seq: Sequence[T]) -> T: ...
    def randbytes(self, n: int) -> bytes: ...


class Slot(NamedTuple):
    """One number a decoder reads and trusts. ``kind``: its encoding (``i8``/``i16``/``i32``
    big-endian, ``uv`` unsigned varint, ``zz`` zig-zag varint, ``zzl`` zig-zag varlong); ``value``
    is the number as stored (n + 1 for a compact length). ``role`` says what it counts; ``end`` is
    where what it governs ends (a tagged section's end; else the slot's own end)."""

    pos: int
    width: int
    kind: str
    role: str
    value: int
    end: int


# -- the layout of a Kafka message ---------------------------------------------------------------


def message_layout(msg: Message, version: int, data: bytes) -> list[Slot]:
    """The slots of ``data``, the encoding of ``msg`` at ``version``."""
    slots: list[Slot] = []
    end = _walk(type(msg), version, is_flexible(type(msg), version), msg, data, 0, slots)
    if end != len(data):
        raise AssertionError(f"layout of {type(msg).__name__} v{version} ends at {end}, not {len(data)}")
    return slots


def _walk(
    cls: type[Struct], version: int, flex: bool, obj: Any, data: bytes, pos: int, out: list[Slot]
) -> int:
    for f in cls.FIELDS:
        if flex and f.tag is not None and in_versions(f.tagged, version):
            continue  # in the tagged section, read from the bytes below
        if not in_versions(f.versions, version):
            continue
        compact = flex and (f.flexible is None or in_versions(f.flexible, version))
        pos = _value(
            f.kind,
            f.struct,
            in_versions(f.nullable, version),
            getattr(obj, f.attr),
            version,
            flex,
            compact,
            data,
            pos,
            out,
        )
    if flex:
        pos = _tagged_section(data, pos, out)
    return pos


def _length(out: list[Slot], pos: int, n: int, compact: bool, wide: bool, role: str) -> int:
    if compact:
        width = len(encode_uvarint(n + 1))
        out.append(Slot(pos, width, "uv", role, n + 1, pos + width))
    else:
        width = 4 if wide else 2
        out.append(Slot(pos, width, "i32" if wide else "i16", role, n, pos + width))
    return pos + width


def _value(
    kind: str,
    sub: type[Struct] | None,
    nullable: bool,
    v: Any,
    version: int,
    flex: bool,
    compact: bool,
    data: bytes,
    pos: int,
    out: list[Slot],
) -> int:
    if kind in _FIXED_SIZE:
        return pos + _FIXED_SIZE[kind]
    if kind == "uuid":
        return pos + 16
    if kind == "struct":
        assert sub is not None
        if nullable:
            out.append(Slot(pos, 1, "i8", "presence", -1 if v is None else 1, pos + 1))
            pos += 1
            if v is None:
                return pos
        return _walk(sub, version, flex, v, data, pos, out)
    if kind in ("string", "bytes", "records"):
        raw = None if v is None else (v.encode() if kind == "string" else v)
        n = -1 if raw is None else len(raw)
        pos = _length(out, pos, n, compact, kind != "string", kind)
        return pos + max(n, 0)
    assert kind.startswith("[]"), kind
    pos = _length(out, pos, -1 if v is None else len(v), compact, True, "array")
    for item in v or ():
        pos = _value(kind[2:], sub, False, item, version, flex, compact, data, pos, out)
    return pos


def _tagged_section(data: bytes, pos: int, out: list[Slot]) -> int:
    start = pos
    count, pos = decode_uvarint(data, pos)
    entries: list[Slot] = []
    for _ in range(count):
        tag_pos = pos
        tag, pos = decode_uvarint(data, pos)
        entries.append(Slot(tag_pos, pos - tag_pos, "uv", "tag", tag, pos))
        size_pos = pos
        size, pos = decode_uvarint(data, pos)
        pos += size
        entries.append(Slot(size_pos, len(encode_uvarint(size)), "uv", "tag-size", size, pos))
    out.append(Slot(start, len(encode_uvarint(count)), "uv", "tags", count, pos))
    out.extend(entries)
    return pos


# -- the layout of a record batch ----------------------------------------------------------------

#: Header fields worth breaking (record_batch_header.py has the layout): batchLength, magic, attributes
#: (codec bits), lastOffsetDelta, recordsCount.
_BATCH_HEADER_SLOTS = ((8, "i32", "batch-length"), (16, "i8", "magic"), (21, "i16", "attributes"),
                       (23, "i32", "last-offset-delta"), (57, "i32", "records-count"))  # fmt: skip


def batch_layout(batch: bytes) -> list[Slot]:
    """The header slots of a v2 batch and, when uncompressed, every varint of its records."""
    slots = [
        Slot(
            pos, _PACK[kind].size, kind, role, _PACK[kind].unpack_from(batch, pos)[0], pos + _PACK[kind].size
        )
        for pos, kind, role in _BATCH_HEADER_SLOTS
    ]
    if batch[22] & 0x07:
        return slots  # compressed: the records are one opaque blob
    (count,) = _PACK["i32"].unpack_from(batch, 57)
    pos = 61

    def zz(role: str, long: bool = False) -> int:
        nonlocal pos
        start = pos
        value, pos = (decode_varlong if long else decode_varint)(batch, pos)
        slots.append(Slot(start, pos - start, "zzl" if long else "zz", role, value, pos))
        return value

    for _ in range(count):
        zz("record-length")
        pos += 1  # attributes
        zz("timestamp-delta", long=True)
        zz("offset-delta")
        for role in ("key-length", "value-length"):
            n = zz(role)  # (not ``pos += zz()``: that reads pos before zz moves it)
            pos += max(n, 0)
        for _h in range(zz("header-count")):
            for role in ("header-key-length", "header-value-length"):
                n = zz(role)
                pos += max(n, 0)
    if pos != len(batch):
        raise AssertionError(f"batch layout ends at {pos}, not {len(batch)}")
    return slots


# -- mutations -----------------------------------------------------------------------------------


def _encode(kind: str, value: int) -> bytes:
    if kind in _PACK:
        lo, hi = _RANGE[kind]
        return _PACK[kind].pack(min(max(value, lo), hi))
    if kind == "uv":
        return encode_uvarint(min(max(value, 0), 2**32 - 1))
    bits = 64 if kind == "zzl" else 32
    value = min(max(value, -(2 ** (bits - 1))), 2 ** (bits - 1) - 1)
    return encode_uvarint_wide((value << 1) ^ (value >> (bits - 1)))


def encode_uvarint_wide(value: int) -> bytes:
    """LEB128 of any non-negative value (varlongs need up to 10 bytes)."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _new_number(slot: Slot, ch: Choices, op: str) -> int:
    """A new stored value for ``slot``."""
    stored = slot.value
    if op == "huge":
        return _HUGE[slot.kind]
    if op == "negative":
        if slot.kind == "uv":
            return 0  # a compact null (n = -1); no other negative is encodable
        return ch.choice((-1, -2, -(2**31)))
    return ch.choice((stored - 1, stored + 1, stored * 2 + 1, 0, 1, -1, 2**16, ch.randint(0, 2**31 - 1)))


def _tag_garbage(ch: Choices) -> bytes:
    """A tagged-field section that lies: counts, tags and sizes that do not add up."""
    entries = ch.randint(0, 4)
    out = bytearray(encode_uvarint(ch.choice((entries, entries + 1, entries + 100, 2**32 - 1))))
    for _ in range(entries):
        out += encode_uvarint(ch.choice((0, 1, 2, 3, ch.randint(0, 200), 2**31, 2**32 - 1)))
        content = ch.randbytes(ch.randint(0, 12))
        size = ch.choice((len(content), len(content), len(content) + 1, max(len(content) - 1, 0), 2**31))
        out += encode_uvarint(size) + content
    return bytes(out)


_SLOT_OPS = ("length", "negative", "huge", "varint", "tags")
_BYTE_OPS = ("flip", "cut", "insert", "delete", "duplicate", "edge")


def mutate(data: bytes, slots: Sequence[Slot], ch: Choices) -> bytes:
    """``data`` with one to three structure-aware or byte-level mutations applied."""
    buf = bytearray(data)
    planned: list[tuple[int, str, Slot]] = []
    byte_ops: list[str] = []
    for _ in range(ch.randint(1, 3)):
        op = ch.choice(_SLOT_OPS + _BYTE_OPS) if slots else ch.choice(_BYTE_OPS)
        if op in _SLOT_OPS:
            slot = _pick_slot(slots, op, ch)
            if slot is not None:
                planned.append((slot.pos, op, slot))
                continue
            op = ch.choice(_BYTE_OPS)
        byte_ops.append(op)
    # Back to front, so the positions of the slots not yet touched stay right.
    for _, op, slot in sorted(planned, key=lambda p: p[0], reverse=True):
        if op == "tags":
            buf[slot.pos : slot.end] = _tag_garbage(ch)
        elif op == "varint":
            if ch.randint(0, 1):  # cut inside it: continuation bits, then the end of the input
                del buf[slot.pos :]
                buf += b"\x80" * ch.randint(1, 5)
            else:  # overlong: more continuation bytes than the type allows
                buf[slot.pos : slot.end] = b"\xff" * ch.randint(5, 11) + b"\x01"
        else:
            buf[slot.pos : slot.pos + slot.width] = _encode(slot.kind, _new_number(slot, ch, op))
    for op in byte_ops:
        _byte_op(buf, op, ch)
    return bytes(buf)


def _pick_slot(slots: Sequence[Slot], op: str, ch: Choices) -> Slot | None:
    if op == "tags":
        wanted = [s for s in slots if s.role == "tags"]
    elif op == "varint":
        wanted = [s for s in slots if s.kind in ("uv", "zz", "zzl")]
    elif op == "negative":
        wanted = [s for s in slots if s.role not in ("tag", "tags", "presence")]
    else:
        wanted = list(slots)
    return ch.choice(wanted) if wanted else None


def _byte_op(buf: bytearray, op: str, ch: Choices) -> None:
    if not buf:
        buf += ch.randbytes(ch.randint(1, 8))
        return
    at = ch.randint(0, len(buf) - 1)
    if op == "flip":
        buf[at] ^= ch.randint(1, 255)
    elif op == "cut":
        del buf[at:]
    elif op == "insert":
        buf[at:at] = ch.randbytes(ch.randint(1, 8))
    elif op == "delete":
        del buf[at : at + ch.randint(1, 8)]
    elif op == "duplicate":
        buf[at:at] = buf[at : at + ch.randint(1, 32)]
    else:  # an edge value over whatever is there
        width = ch.choice((1, 2, 4))
        buf[at : at + width] = ch.choice((b"\xff", b"\x7f", b"\x80", b"\x00")) * width
