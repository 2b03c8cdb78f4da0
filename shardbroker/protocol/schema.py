"""The vocabulary the generated ``messages.py`` is written in: schema tables and their structs.

Owns :class:`Field` (one row of a struct's ``FIELDS`` table: attribute, type, versions,
nullable/tagged versions, default, ignorable), :class:`Struct` (the base of every generated
struct: equality, repr, the unknown tagged fields read), the markers :data:`UNSET` and
:data:`NATURAL`, each type's natural default, and the version ranges of Kafka's specs ("3+",
"0-4", "none"). Nothing here encodes or decodes: :mod:`shardbroker.protocol.codec_compiler`
compiles these tables, :mod:`shardbroker.protocol.codec` is the entry point.

Why a module of its own: the compiler and the codec's entry points both read these types, and
the compiler is called by the entry points; with the types here neither imports the other's
caller.
"""

from __future__ import annotations

from collections.abc import Sized
from functools import cache
from typing import Any, ClassVar, NamedTuple, TypeAlias
from uuid import UUID

__all__ = [
    "MAX_VERSION",
    "NATURAL",
    "NATURAL_DEFAULTS",
    "UNSET",
    "ZERO_UUID",
    "Field",
    "Records",
    "Struct",
    "in_versions",
]

# Kafka versions are int16; "N+" is stored as (N, MAX_VERSION).
MAX_VERSION = 0x7FFF
ZERO_UUID = UUID(int=0)

# What a records field may hold: a buffer, or (for encode_parts) any sized object such as a
# file range that the I/O layer knows how to send.
Records: TypeAlias = bytes | bytearray | memoryview | Sized


class _Marker:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


# Constructor default for values that must be fresh per instance (lists, nested structs).
UNSET: Any = _Marker("UNSET")
# Schema-table default meaning "the type's own default" (0, False, "", b"", zero UUID, [], ...).
NATURAL: Any = _Marker("NATURAL")


class Field(NamedTuple):
    """One row of a schema table. Version ranges are the spec's own strings ("3+", "0-4")."""

    attr: str
    kind: str  # a primitive, "[]<primitive>", "struct" or "[]struct"
    versions: str
    struct: type[Struct] | None = None
    nullable: str | None = None
    default: Any = NATURAL
    tag: int | None = None
    tagged: str | None = None
    ignorable: bool = False
    flexible: str | None = None  # override of the message's flexibleVersions (string/bytes only)


class Struct:
    """Base of every generated struct: equality, repr, and the unknown tagged fields."""

    __slots__ = ("unknown_tagged_fields",)
    FIELDS: ClassVar[tuple[Field, ...]] = ()
    # Tagged fields this version of the schema does not know, as read: (tag, raw bytes).
    unknown_tagged_fields: tuple[tuple[int, bytes], ...]

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        for f in self.FIELDS:
            if getattr(self, f.attr) != getattr(other, f.attr):
                return False
        return self.unknown_tagged_fields == other.unknown_tagged_fields

    __hash__ = None  # type: ignore[assignment]  # mutable: equal structs may change

    def __repr__(self) -> str:
        parts = []
        for f in self.FIELDS:
            v = getattr(self, f.attr)
            if f.kind == "records" and v is not None:
                parts.append(f"{f.attr}=<{type(v).__name__} of {len(v)} bytes>")
            else:
                parts.append(f"{f.attr}={v!r}")
        if self.unknown_tagged_fields:
            parts.append(f"unknown_tagged_fields={self.unknown_tagged_fields!r}")
        return f"{type(self).__qualname__}({', '.join(parts)})"


#: The natural default of each primitive type (what :data:`NATURAL` stands for).
NATURAL_DEFAULTS: dict[str, Any] = {
    "bool": False,
    "int8": 0,
    "int16": 0,
    "uint16": 0,
    "int32": 0,
    "uint32": 0,
    "int64": 0,
    "float64": 0.0,
    "string": "",
    "uuid": ZERO_UUID,
    "bytes": b"",
    "records": None,
}


@cache
def _version_range(text: str | None) -> tuple[int, int] | None:
    """A spec's version range ("3+", "0-4", "2") as ``(lo, hi)``; None for "none" or no range."""
    if text is None or text == "none":
        return None
    if text.endswith("+"):
        return (int(text[:-1]), MAX_VERSION)
    lo, _, hi = text.partition("-")
    return (int(lo), int(hi or lo))


def in_versions(text: str | None, version: int) -> bool:
    """Is ``version`` in the spec's version range ``text``?"""
    r = _version_range(text)
    return r is not None and r[0] <= version <= r[1]
