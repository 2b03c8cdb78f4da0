"""Compiles the schema tables of ``messages.py`` into one encoder and one decoder per (struct, version).

``messages.py`` (generated) holds one plain class per struct and a schema table per class
(:mod:`shardbroker.protocol.schema`). This module turns a ``(class, version)`` pair, on first
use, into two specialised Python functions: it writes their source as straight-line code for
exactly that version (fields absent from the version are simply not there, consecutive
fixed-width fields become one ``struct.Struct`` call, arrays of fixed-width numbers one
``unpack_from``, compact or classic lengths chosen up front), ``exec``\\ s it once and caches
the functions in :data:`DECODERS` / :data:`ENCODERS`. Nested structs get their own functions.

Invariants of the written code: every length and count is checked against the bytes that
remain before anything is allocated (a peer cannot make a decoder allocate more than its
frame); a string is at most 32767 bytes also where a compact length could say more (Kafka's
readers refuse longer ones: "had invalid length"); encoding refuses null where not nullable and
a non-default value in a field the version lacks unless ``ignorable``; tagged fields are written
only when they differ from their default, unknown ones read are written back.

Why: a generic interpreter walking the field table per value pays for every "which type is
this, is it in this version, is it compact" decision on every field of every value; compiled
straight-line code pays for none of them: a Metadata response of 1,000 partitions decodes in
1.46 ms against kafka-python's 1.9 ms (docs/notes/codec.md). Nothing is compiled eagerly:
one (class, version) costs ~0.1-1 ms, all 659 versions ~1 s.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.primitives import INT8, INT16, INT32, encode_uvarint, uvarint_tail
from shardbroker.protocol.schema import NATURAL, NATURAL_DEFAULTS, Field, Struct, in_versions

__all__ = ["DECODERS", "ENCODERS", "Decoder", "Encoder", "compiled_decoder", "compiled_encoder"]

Decoder: TypeAlias = Callable[[memoryview, int], tuple[Any, int]]
Encoder: TypeAlias = Callable[[Any, list[Any], list[int]], None]
F = TypeVar("F", Decoder, Encoder)

#: The compiled functions, by (struct, version).
DECODERS: dict[tuple[type[Struct], int], Decoder] = {}
ENCODERS: dict[tuple[type[Struct], int], Encoder] = {}

_FIXED = {
    "bool": "?",
    "int8": "b",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "float64": "d",
}


_SMALL_ARRAY = 32
_ARRAY_UNPACK = {
    ch: tuple(struct.Struct(f">{n}{ch}").unpack_from for n in range(_SMALL_ARRAY)) for ch in _FIXED.values()
}
_ARRAY_PACK = {
    ch: tuple(struct.Struct(f">{n}{ch}").pack for n in range(_SMALL_ARRAY)) for ch in _FIXED.values()
}


def _trunc(what: str) -> ProtocolError:
    return ProtocolError(f"{what}: length runs past the end of the frame")


def _count(what: str, n: int, left: int) -> ProtocolError:
    return ProtocolError(f"{what}: {n} elements cannot fit in the {left} bytes left")


def _strlen(what: str, n: int) -> ProtocolError:
    return ProtocolError(f"{what}: a string of {n} bytes (at most 32767)")


def _notnull(what: str) -> ProtocolError:
    return ProtocolError(f"{what}: null is not allowed in this version", ErrorCode.INVALID_REQUEST)


def _absent(what: str) -> ProtocolError:
    return ProtocolError(
        f"{what}: a non-default value cannot be encoded in this version", ErrorCode.UNSUPPORTED_VERSION
    )


def _tagover(what: str) -> ProtocolError:
    return ProtocolError(f"{what}: tagged field is longer than its declared size")


def _uvarint_decode_lines(var: str, ind: str) -> list[str]:
    return [
        f"{ind}{var} = buf[pos]",
        f"{ind}pos += 1",
        f"{ind}if {var} > 127:",
        f"{ind}    {var}, pos = _uvt(buf, pos, {var})",
    ]


class _Compiler:
    """Writes the source of one decoder or encoder (a struct at a version) and execs it."""

    def __init__(self, cls: type[Struct], version: int, flexible: bool) -> None:
        self.cls = cls
        self.version = version
        self.flexible = flexible
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {
            "_uvt": uvarint_tail,
            "_uv": encode_uvarint,
            "_trunc": _trunc,
            "_count": _count,
            "_notnull": _notnull,
            "_strlen": _strlen,
            "_absent": _absent,
            "_tagover": _tagover,
            "_unpack_from": struct.unpack_from,
            "_pack": struct.pack,
            "_new": object.__new__,
            "UUID": UUID,
            "_C": cls,
            "_b": INT8.unpack_from,
            "_h": INT16.unpack_from,
            "_i": INT32.unpack_from,
            "_pb": INT8.pack,
            "_ph": INT16.pack,
            "_pi": INT32.pack,
        }
        self.n = 0

    def const(self, value: object) -> str:
        self.n += 1
        name = f"_k{self.n}"
        self.ns[name] = value
        return name

    def tmp(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def where(self, f: Field) -> str:
        return f"{self.cls.__qualname__}.{f.attr} v{self.version}"

    def compact(self, f: Field) -> bool:
        if not self.flexible:
            return False
        return f.flexible is None or in_versions(f.flexible, self.version)

    def nullable(self, f: Field) -> bool:
        return in_versions(f.nullable, self.version)

    def default_expr(self, f: Field) -> str:
        """An expression for a fresh default value of ``f``."""
        if f.default is not NATURAL:
            return self.const(f.default) if f.default is not None else "None"
        if f.kind == "struct":
            return f"{self.const(f.struct)}()"
        if f.kind.startswith("[]"):
            return "[]"
        return self.const(NATURAL_DEFAULTS[f.kind])

    def nondefault_cond(self, f: Field, v: str) -> str:
        d = f.default
        if d is None or (d is NATURAL and f.kind == "records"):
            return f"{v} is not None"
        if d is NATURAL and (f.kind.startswith("[]") or f.kind == "bytes"):
            return f"{v}"
        if d is NATURAL and f.kind == "struct":
            assert f.struct is not None
            return self.struct_nondefault(f.struct, v)
        value = NATURAL_DEFAULTS[f.kind] if d is NATURAL else d
        return f"{v} != {self.const(value)}"

    def struct_nondefault(self, cls: type[Struct], v: str) -> str:
        """``v != cls()``, inline, field by field: a tagged struct left at its default (Fetch's
        diverging epoch, current leader and snapshot id, Produce's current leader) is then
        skipped without ``Struct.__eq__``, which read every field through ``getattr`` (7 calls,
        ~3 us, of every two-partition Fetch response)."""
        conds = [self.nondefault_cond(g, f"{v}.{g.attr}") for g in cls.FIELDS]
        conds.append(f"{v}.unknown_tagged_fields")
        return f"({v} is None or " + " or ".join(f"({c})" for c in conds) + ")"

    # ---- decoding ---------------------------------------------------------------------

    def dec_len(self, out: list[str], ind: str, var: str, compact: bool, wide: bool) -> None:
        if compact:
            out.extend(_uvarint_decode_lines(var, ind))
            out.append(f"{ind}{var} -= 1")
        elif wide:
            out.append(f"{ind}({var},) = _i(buf, pos)")
            out.append(f"{ind}pos += 4")
        else:
            out.append(f"{ind}({var},) = _h(buf, pos)")
            out.append(f"{ind}pos += 2")

    def dec_value(
        self,
        out: list[str],
        ind: str,
        f: Field,
        ftype: str,
        target: str,
        end: str,
        nullable: bool,
        compact: bool,
    ) -> None:
        what = self.const(self.where(f))
        if ftype in _FIXED:
            s = struct.Struct(">" + _FIXED[ftype])
            out.append(f"{ind}({target},) = {self.const(s.unpack_from)}(buf, pos)")
            out.append(f"{ind}pos += {s.size}")
        elif ftype == "uuid":
            out.append(f"{ind}{target} = UUID(bytes=bytes(buf[pos:pos + 16]))")
            out.append(f"{ind}pos += 16")
        elif ftype in ("string", "bytes", "records"):
            n, e = self.tmp("n"), self.tmp("e")
            self.dec_len(out, ind, n, compact, wide=ftype != "string")
            out.append(f"{ind}if {n} < 0:")
            out.append(f"{ind}    {target} = None" if nullable else f"{ind}    raise _notnull({what})")
            if compact and ftype == "string":  # an int16 length cannot say more; Kafka refuses more
                out.append(f"{ind}elif {n} > 0x7FFF:")
                out.append(f"{ind}    raise _strlen({what}, {n})")
            out.append(f"{ind}else:")
            out.append(f"{ind}    {e} = pos + {n}")
            out.append(f"{ind}    if {e} > {end}:")
            out.append(f"{ind}        raise _trunc({what})")
            conv = {
                "string": "str(buf[pos:{e}], 'utf-8')",
                "bytes": "bytes(buf[pos:{e}])",
                "records": "buf[pos:{e}]",
            }
            out.append(f"{ind}    {target} = {conv[ftype].format(e=e)}")
            out.append(f"{ind}    pos = {e}")
        elif ftype == "struct":
            assert f.struct is not None
            fn = self.const(compiled_decoder(f.struct, self.version, self.flexible))
            if nullable:
                m = self.tmp("m")
                out.append(f"{ind}({m},) = _b(buf, pos)")
                out.append(f"{ind}pos += 1")
                out.append(f"{ind}if {m} < 0:")
                out.append(f"{ind}    {target} = None")
                out.append(f"{ind}else:")
                out.append(f"{ind}    {target}, pos = {fn}(buf, pos)")
            else:
                out.append(f"{ind}{target}, pos = {fn}(buf, pos)")
        elif ftype.startswith("[]"):
            elem = ftype[2:]
            n = self.tmp("n")
            self.dec_len(out, ind, n, compact, wide=True)
            out.append(f"{ind}if {n} < 0:")
            out.append(f"{ind}    {target} = None" if nullable else f"{ind}    raise _notnull({what})")
            out.append(f"{ind}else:")
            i2 = ind + "    "
            out.append(f"{i2}if {n} > {end} - pos:")
            out.append(f"{i2}    raise _count({what}, {n}, {end} - pos)")
            if elem in _FIXED:
                ch = _FIXED[elem]
                size = struct.calcsize(">" + ch)
                # Short arrays (replicas, ISR) use a prebuilt Struct: no format string per call.
                self.ns[f"_au{ch}"] = _ARRAY_UNPACK[ch]
                out.append(f"{i2}if {n} < {_SMALL_ARRAY}:")
                out.append(f"{i2}    {target} = list(_au{ch}[{n}](buf, pos))")
                out.append(f"{i2}else:")
                out.append(f"{i2}    {target} = list(_unpack_from('>%d{ch}' % {n}, buf, pos))")
                out.append(f"{i2}pos += {size} * {n}")
            else:
                a, x = self.tmp("a"), self.tmp("x")
                out.append(f"{i2}{a} = []")
                if elem == "struct":
                    assert f.struct is not None
                    fn = self.const(compiled_decoder(f.struct, self.version, self.flexible))
                    out.append(f"{i2}for _ in range({n}):")
                    out.append(f"{i2}    {x}, pos = {fn}(buf, pos)")
                    out.append(f"{i2}    {a}.append({x})")
                else:
                    out.append(f"{i2}for _ in range({n}):")
                    self.dec_value(out, i2 + "    ", f, elem, x, end, False, compact)
                    out.append(f"{i2}    {a}.append({x})")
                out.append(f"{i2}{target} = {a}")
        else:  # pragma: no cover - the generator validates types
            raise AssertionError(ftype)

    def decoder_source(self) -> str:
        v = self.version
        out = [
            "def _dec(buf, pos):",
            "    end = len(buf)",
            "    o = _new(_C)",
            "    o.unknown_tagged_fields = ()",
        ]
        group: list[Field] = []

        def flush() -> None:
            if not group:
                return
            s = struct.Struct(">" + "".join(_FIXED[g.kind] for g in group))
            targets = ", ".join(f"o.{g.attr}" for g in group)
            out.append(f"    ({targets},) = {self.const(s.unpack_from)}(buf, pos)")
            out.append(f"    pos += {s.size}")
            group.clear()

        tagged: list[Field] = []
        for f in self.cls.FIELDS:
            if self.flexible and f.tag is not None and in_versions(f.tagged, v):
                out.append(f"    o.{f.attr} = {self.default_expr(f)}")
                tagged.append(f)
                continue
            if not in_versions(f.versions, v):
                out.append(f"    o.{f.attr} = {self.default_expr(f)}")
                continue
            if f.kind in _FIXED:
                group.append(f)
                continue
            flush()
            self.dec_value(out, "    ", f, f.kind, f"o.{f.attr}", "end", self.nullable(f), self.compact(f))
        flush()
        if self.flexible:
            self.dec_tagged(out, tagged)
        out.append("    return o, pos")
        return "\n".join(out)

    def dec_tagged(self, out: list[str], tagged: list[Field]) -> None:
        ind = "    "
        out.extend(_uvarint_decode_lines("nt", ind))
        out.append(f"{ind}if nt > end - pos:")
        out.append(
            f"{ind}    raise _count({self.const(self.cls.__qualname__ + ' tagged fields')}, nt, end - pos)"
        )
        out.append(f"{ind}if nt:")
        out.append(f"{ind}    unk = []")
        out.append(f"{ind}    for _ in range(nt):")
        i3 = ind + "        "
        out.extend(_uvarint_decode_lines("tag", i3))
        out.extend(_uvarint_decode_lines("sz", i3))
        out.append(f"{i3}te = pos + sz")
        out.append(f"{i3}if te > end:")
        out.append(f"{i3}    raise _trunc({self.const(self.cls.__qualname__ + ' tagged field')})")
        kw = "if"
        for f in sorted(tagged, key=lambda f: f.tag or 0):
            out.append(f"{i3}{kw} tag == {f.tag}:")
            self.dec_value(out, i3 + "    ", f, f.kind, f"o.{f.attr}", "te", self.nullable(f), True)
            out.append(f"{i3}    if pos > te:")
            out.append(f"{i3}        raise _tagover({self.const(self.where(f))})")
            kw = "elif"
        if tagged:
            out.append(f"{i3}else:")
            out.append(f"{i3}    unk.append((tag, bytes(buf[pos:te])))")
        else:
            out.append(f"{i3}unk.append((tag, bytes(buf[pos:te])))")
        out.append(f"{i3}pos = te")
        out.append(f"{ind}    if unk:")
        out.append(f"{ind}        o.unknown_tagged_fields = tuple(unk)")

    # ---- encoding ---------------------------------------------------------------------

    def enc_len(self, out: list[str], ind: str, n: str, compact: bool, wide: bool) -> None:
        if compact:
            out.append(f"{ind}app(_uv({n} + 1))")
        else:
            out.append(f"{ind}app({'_pi' if wide else '_ph'}({n}))")

    def enc_null(self, out: list[str], ind: str, f: Field, ftype: str, nullable: bool, compact: bool) -> None:
        if not nullable:
            out.append(f"{ind}raise _notnull({self.const(self.where(f))})")
        elif ftype == "struct":
            out.append(f"{ind}app(b'\\xff')")
        elif compact:
            out.append(f"{ind}app(b'\\x00')")
        elif ftype == "string":
            out.append(f"{ind}app(b'\\xff\\xff')")
        else:
            out.append(f"{ind}app(b'\\xff\\xff\\xff\\xff')")

    def enc_value(
        self, out: list[str], ind: str, f: Field, ftype: str, v: str, nullable: bool, compact: bool, sink: str
    ) -> None:
        """Append the encoding of expression ``v`` (a local name) via ``app``."""
        if ftype in _FIXED:
            out.append(f"{ind}app({self.const(struct.Struct('>' + _FIXED[ftype]).pack)}({v}))")
            return
        if ftype == "uuid":
            out.append(f"{ind}app({v}.bytes)")
            return
        if ftype == "struct":
            assert f.struct is not None
            fn = self.const(compiled_encoder(f.struct, self.version, self.flexible))
            if nullable:
                out.append(f"{ind}if {v} is None:")
                out.append(f"{ind}    app(b'\\xff')")
                out.append(f"{ind}else:")
                out.append(f"{ind}    app(b'\\x01')")
                out.append(f"{ind}    {fn}({v}, out, {sink})")
            else:
                out.append(f"{ind}{fn}({v}, out, {sink})")
            return
        out.append(f"{ind}if {v} is None:")
        self.enc_null(out, ind + "    ", f, ftype, nullable, compact)
        out.append(f"{ind}else:")
        i2 = ind + "    "
        if ftype == "string":
            b = self.tmp("b")
            out.append(f"{i2}{b} = {v}.encode('utf-8')")
            self.enc_len(out, i2, f"len({b})", compact, wide=False)
            out.append(f"{i2}app({b})")
        elif ftype == "bytes":
            self.enc_len(out, i2, f"len({v})", compact, wide=True)
            out.append(f"{i2}app({v})")
        elif ftype == "records":
            self.enc_len(out, i2, f"len({v})", compact, wide=True)
            out.append(f"{i2}{sink}.append(len(out))")
            out.append(f"{i2}app({v})")
        elif ftype.startswith("[]"):
            elem = ftype[2:]
            n = self.tmp("n")
            out.append(f"{i2}{n} = len({v})")
            if elem in _FIXED:
                ch = _FIXED[elem]
                if compact:
                    self.ns[f"_ap{ch}"] = _ARRAY_PACK[ch]
                    out.append(f"{i2}app(_uv({n} + 1))")
                    out.append(f"{i2}if {n} < {_SMALL_ARRAY}:")
                    out.append(f"{i2}    app(_ap{ch}[{n}](*{v}))")
                    out.append(f"{i2}else:")
                    out.append(f"{i2}    app(_pack('>%d{ch}' % {n}, *{v}))")
                else:
                    out.append(f"{i2}app(_pack('>i%d{ch}' % {n}, {n}, *{v}))")
            else:
                self.enc_len(out, i2, n, compact, wide=True)
                x = self.tmp("x")
                if elem == "struct":
                    assert f.struct is not None
                    fn = self.const(compiled_encoder(f.struct, self.version, self.flexible))
                    out.append(f"{i2}for {x} in {v}:")
                    out.append(f"{i2}    {fn}({x}, out, {sink})")
                else:
                    out.append(f"{i2}for {x} in {v}:")
                    self.enc_value(out, i2 + "    ", f, elem, x, False, compact, sink)
        else:  # pragma: no cover
            raise AssertionError(ftype)

    def encoder_source(self) -> str:
        v = self.version
        out = ["def _enc(o, out, big):", "    app = out.append"]
        group: list[Field] = []

        def flush() -> None:
            if not group:
                return
            s = struct.Struct(">" + "".join(_FIXED[g.kind] for g in group))
            args = ", ".join(f"o.{g.attr}" for g in group)
            out.append(f"    app({self.const(s.pack)}({args}))")
            group.clear()

        tagged: list[Field] = []
        for f in self.cls.FIELDS:
            if self.flexible and f.tag is not None and in_versions(f.tagged, v):
                tagged.append(f)
                continue
            if not in_versions(f.versions, v):
                if not f.ignorable:
                    flush()
                    out.append(f"    if {self.nondefault_cond(f, 'o.' + f.attr)}:")
                    out.append(f"        raise _absent({self.const(self.where(f))})")
                continue
            if f.kind in _FIXED:
                group.append(f)
                continue
            flush()
            lv = self.tmp("v")
            out.append(f"    {lv} = o.{f.attr}")
            self.enc_value(out, "    ", f, f.kind, lv, self.nullable(f), self.compact(f), "big")
        flush()
        if self.flexible:
            self.enc_tagged(out, tagged)
        out.append("    return None")
        return "\n".join(out)

    def enc_tagged(self, out: list[str], tagged: list[Field]) -> None:
        if not tagged:
            out.append("    if o.unknown_tagged_fields:")
            out.append("        tg = sorted(o.unknown_tagged_fields, key=_first)")
            out.append("        app(_uv(len(tg)))")
            out.append("        for t, d in tg:")
            out.append("            app(_uv(t))")
            out.append("            app(_uv(len(d)))")
            out.append("            app(d)")
            out.append("    else:")
            out.append("        app(b'\\x00')")
            self.ns["_first"] = _first
            return
        self.ns["_first"] = _first
        self.ns["_join"] = b"".join
        out.append("    tg = []")
        for f in sorted(tagged, key=lambda f: f.tag or 0):
            lv = self.tmp("v")
            out.append(f"    {lv} = o.{f.attr}")
            out.append(f"    if {self.nondefault_cond(f, lv)}:")
            out.append("        sub = []")
            # Encode into a sub-list with its own "app" and "out": shadow them locally.
            out.append("        app, out_ = sub.append, out")
            out.append("        out = sub")
            self.enc_value(out, "        ", f, f.kind, lv, self.nullable(f), True, "[]")
            out.append("        app, out = out_.append, out_")
            out.append(f"        tg.append(({f.tag}, _join(sub)))")
        out.append("    if o.unknown_tagged_fields:")
        out.append("        tg.extend(o.unknown_tagged_fields)")
        out.append("        tg.sort(key=_first)")
        out.append("    app(_uv(len(tg)))")
        out.append("    for t, d in tg:")
        out.append("        app(_uv(t))")
        out.append("        app(_uv(len(d)))")
        out.append("        app(d)")


def _first(item: tuple[int, bytes]) -> int:
    return item[0]


def _compile(
    cache: dict[tuple[type[Struct], int], F], cls: type[Struct], version: int, flexible: bool, encoder: bool
) -> F:
    """The compiled encoder (or decoder) of ``cls`` at ``version``: from ``cache``, else written,
    exec'd and stored there."""
    fn = cache.get((cls, version))
    if fn is None:
        c = _Compiler(cls, version, flexible)
        source = c.encoder_source() if encoder else c.decoder_source()
        what = "encode" if encoder else "decode"
        exec(compile(source, f"<{what} {cls.__qualname__} v{version}>", "exec"), c.ns)
        fn = c.ns["_enc" if encoder else "_dec"]
        fn.__source__ = source  # for debugging: print(codec_compiler.DECODERS[...].__source__)
        cache[(cls, version)] = fn
    return fn


def compiled_decoder(cls: type[Struct], version: int, flexible: bool) -> Decoder:
    return _compile(DECODERS, cls, version, flexible, encoder=False)


def compiled_encoder(cls: type[Struct], version: int, flexible: bool) -> Encoder:
    return _compile(ENCODERS, cls, version, flexible, encoder=True)
