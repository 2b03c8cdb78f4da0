#!/usr/bin/env python3
"""Generate shardbroker/protocol/messages.py from Apache Kafka's message specs.

Usage::

    python tools/gen_protocol.py [--specs DIR] [--out FILE] [--check]

``--specs`` defaults to ``../shared/kafka-protocol/message`` relative to the repository root,
``--out`` to ``shardbroker/protocol/messages.py``. ``--check`` writes nothing and exits 1 when the
committed file differs from what the specs generate.

Two separate passes, as in Kafka's own generator:

1. :func:`load_specs` parses the JSON (with ``//`` comments) and :func:`validate_spec` checks each
   spec, raising :class:`SpecError` with a message that names the file and field (for example
   ``taggedVersions must be a subset of versions``). Nothing is emitted until every spec passed.
2. :func:`render` turns the validated specs into Python source: one class per struct (the message
   class, with its structs nested inside it, as Kafka's ``*Data`` classes do) and a compact schema
   table per class that ``shardbroker.protocol.codec_compiler`` compiles into encoders and
   decoders.

Only facts are carried over (names, types, versions, defaults, tags); the specs' prose ("about")
and their files themselves stay outside the repository. ``request``, ``response``, ``header`` and
``data`` specs are generated (``data``: version-prefixed bytes inside other messages, such as
ConsumerProtocolSubscription; their classes derive from ``codec.Data``); ``metadata`` specs are not.
"""

from __future__ import annotations

import argparse
import difflib
import json
import keyword
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPECS = REPO_ROOT.parent / "shared" / "kafka-protocol" / "message"
DEFAULT_OUT = REPO_ROOT / "shardbroker" / "protocol" / "messages.py"

# Kafka versions are int16 on the wire; an open range "N+" ends at the largest one.
MAX_VERSION = 0x7FFF

PRIMITIVES = frozenset(
    {
        "bool",
        "int8",
        "int16",
        "uint16",
        "int32",
        "uint32",
        "int64",
        "float64",
        "string",
        "uuid",
        "bytes",
        "records",
    }
)
ARRAY_ELEMENT_PRIMITIVES = PRIMITIVES - {"records", "bytes"}
NULLABLE_PRIMITIVES = frozenset({"string", "bytes", "records"})
INT_RANGES = {
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
}
GENERATED_TYPES = ("request", "response", "header", "data")
KNOWN_TYPES = (*GENERATED_TYPES, "metadata")
TOP_KEYS = frozenset(
    {
        "apiKey",
        "type",
        "name",
        "validVersions",
        "flexibleVersions",
        "deprecatedVersions",
        "latestVersionUnstable",
        "listeners",
        "fields",
        "commonStructs",
    }
)
FIELD_KEYS = frozenset(
    {
        "name",
        "type",
        "versions",
        "about",
        "nullableVersions",
        "default",
        "ignorable",
        "mapKey",
        "entityType",
        "tag",
        "taggedVersions",
        "flexibleVersions",
        "zeroCopy",
        "fields",
    }
)
NAME_RE = re.compile(r"^[A-Z][A-Za-z0-9]*$")
FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")  # a few specs spell fields in camelCase
VERSION_RE = re.compile(r"^(\d+)(?:(\+)|-(\d+))?$")
RESERVED_ATTRS = frozenset({"unknown_tagged_fields"})


class SpecError(ValueError):
    """A message spec that the generator refuses, with the file and field it is about."""


# --------------------------------------------------------------------------------------------
# Loading


def strip_comments(text: str) -> str:
    """Remove ``//`` comments outside JSON strings (the specs use them for prose and licences)."""
    out: list[str] = []
    i, n = 0, len(text)
    in_string = False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_string = False
        elif c == '"':
            in_string = True
            out.append(c)
        elif c == "/" and text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def load_spec_text(text: str, origin: str) -> dict[str, Any]:
    try:
        spec = json.loads(strip_comments(text))
    except json.JSONDecodeError as exc:
        raise SpecError(f"{origin}: invalid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise SpecError(f"{origin}: top level must be a JSON object")
    return spec


def load_specs(specs_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    if not specs_dir.is_dir():
        raise SpecError(f"specs directory not found: {specs_dir}")
    files = sorted(specs_dir.glob("*.json"))
    if not files:
        raise SpecError(f"no *.json specs in {specs_dir}")
    return [(p.name, load_spec_text(p.read_text(encoding="utf-8"), p.name)) for p in files]


# --------------------------------------------------------------------------------------------
# Validation


def parse_versions(text: object, where: str) -> tuple[int, int] | None:
    """Parse "N+", "A-B", "N" or "none" into an inclusive range, or None for "none"."""
    if not isinstance(text, str):
        raise SpecError(f"{where}: bad version range {text!r}: expected a string such as '0+' or '1-3'")
    if text == "none":
        return None
    m = VERSION_RE.match(text.strip())
    if m is None:
        raise SpecError(f"{where}: bad version range {text!r}: expected 'N+', 'A-B', 'N' or 'none'")
    lo = int(m.group(1))
    hi = MAX_VERSION if m.group(2) else int(m.group(3)) if m.group(3) is not None else lo
    if lo > hi:
        raise SpecError(f"{where}: bad version range {text!r}: start {lo} is after end {hi}")
    if hi > MAX_VERSION:
        raise SpecError(f"{where}: bad version range {text!r}: versions are int16")
    return (lo, hi)


def is_subset(inner: tuple[int, int] | None, outer: tuple[int, int] | None) -> bool:
    if inner is None:
        return True
    if outer is None:
        return False
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def intersect(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    if a is None or b is None:
        return None
    lo, hi = max(a[0], b[0]), min(a[1], b[1])
    return (lo, hi) if lo <= hi else None


def snake_case(name: str) -> str:
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    s = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()
    return s + "_" if keyword.iskeyword(s) or keyword.issoftkeyword(s) else s


@dataclass
class FieldModel:
    name: str
    attr: str
    type: str  # primitive, "[]<primitive>", "struct", "[]struct"
    struct: str | None  # struct name for struct and []struct
    versions: tuple[int, int]
    nullable: tuple[int, int] | None
    tag: int | None
    tagged: tuple[int, int] | None
    ignorable: bool
    flexible_override: str | None
    default: Any  # python value; NATURAL for the type's own default
    versions_text: str
    nullable_text: str | None
    tagged_text: str | None


@dataclass
class StructModel:
    name: str
    fields: list[FieldModel]
    versions: tuple[int, int]


@dataclass
class MessageModel:
    file: str
    name: str
    type: str
    api_key: int | None
    valid: tuple[int, int]
    flexible: tuple[int, int] | None
    deprecated: tuple[int, int] | None
    root: StructModel
    structs: list[StructModel] = field(default_factory=list)  # nested, in definition order


class _Natural:
    def __repr__(self) -> str:
        return "NATURAL"


NATURAL: Any = _Natural()


def _parse_default(f: dict[str, Any], ftype: str, nullable: tuple[int, int] | None, where: str) -> Any:
    if "default" not in f:
        return NATURAL
    raw = f["default"]
    if raw == "null":
        if nullable is None:
            raise SpecError(f"{where}: default 'null' requires nullableVersions")
        return None
    if isinstance(raw, bool):
        raw = "true" if raw else "false"
    if isinstance(raw, int | float):
        raw = str(raw)
    if not isinstance(raw, str):
        raise SpecError(f"{where}: default must be a string, got {raw!r}")
    if ftype in INT_RANGES:
        try:
            value = int(raw, 16) if raw.lower().startswith(("0x", "-0x")) else int(raw)
        except ValueError:
            raise SpecError(f"{where}: default {raw!r} is not a valid {ftype}") from None
        lo, hi = INT_RANGES[ftype]
        if not lo <= value <= hi:
            raise SpecError(f"{where}: default {raw!r} is out of range for {ftype}")
        return NATURAL if value == 0 else value
    if ftype == "bool":
        if raw.lower() not in ("true", "false"):
            raise SpecError(f"{where}: default {raw!r} is not a valid bool (true or false)")
        return True if raw.lower() == "true" else NATURAL
    if ftype == "float64":
        try:
            value_f = float(raw)
        except ValueError:
            raise SpecError(f"{where}: default {raw!r} is not a valid float64") from None
        return NATURAL if value_f == 0.0 else value_f
    if ftype == "string":
        return NATURAL if raw == "" else raw
    if raw == "":
        return NATURAL
    raise SpecError(f"{where}: type {ftype} only accepts the default 'null' (or none), got {raw!r}")


class _Validator:
    def __init__(self, file: str, spec: dict[str, Any]) -> None:
        self.file = file
        self.spec = spec
        self.structs: dict[str, StructModel] = {}
        self.common: dict[str, dict[str, Any]] = {}
        self.order: list[StructModel] = []

    def run(self) -> MessageModel:
        spec, file = self.spec, self.file
        for key in ("name", "type", "validVersions", "fields"):
            if key not in spec:
                raise SpecError(f"{file}: missing top-level key {key!r}")
        unknown = set(spec) - TOP_KEYS
        if unknown:
            raise SpecError(f"{file}: unknown top-level key(s) {sorted(unknown)}")
        name = spec["name"]
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise SpecError(f"{file}: bad message name {name!r}")
        mtype = spec["type"]
        if mtype not in KNOWN_TYPES:
            raise SpecError(f"{file}: unknown message type {mtype!r}, expected one of {list(KNOWN_TYPES)}")
        api_key = spec.get("apiKey")
        if mtype in ("request", "response"):
            if not isinstance(api_key, int) or isinstance(api_key, bool) or not 0 <= api_key <= 0x7FFF:
                raise SpecError(f"{file}: {mtype} needs an int16 apiKey >= 0, got {api_key!r}")
            if not name.endswith("Request" if mtype == "request" else "Response"):
                raise SpecError(f"{file}: {mtype} name {name!r} must end with {mtype.capitalize()!r}")
        valid = parse_versions(spec["validVersions"], f"{file}: validVersions")
        if valid is None:
            raise SpecError(f"{file}: validVersions must not be 'none'")
        if "flexibleVersions" not in spec:
            raise SpecError(f"{file}: missing top-level key 'flexibleVersions' (use \"none\")")
        flexible = parse_versions(spec["flexibleVersions"], f"{file}: flexibleVersions")
        if flexible is not None and flexible[1] != MAX_VERSION:
            raise SpecError(f"{file}: flexibleVersions must be open-ended ('N+') or 'none'")
        deprecated = None
        if "deprecatedVersions" in spec:
            deprecated = parse_versions(spec["deprecatedVersions"], f"{file}: deprecatedVersions")
            if not is_subset(deprecated, valid):
                raise SpecError(f"{file}: deprecatedVersions must be a subset of validVersions")
        self.valid, self.flexible = valid, flexible
        for cs in spec.get("commonStructs", []):
            cname = cs.get("name") if isinstance(cs, dict) else None
            if not isinstance(cname, str) or not NAME_RE.match(cname):
                raise SpecError(f"{file}: commonStructs entry with bad name {cname!r}")
            if cname in self.common:
                raise SpecError(f"{file}: common struct {cname} is defined more than once")
            if not isinstance(cs.get("fields"), list):
                raise SpecError(f"{file}: common struct {cname} needs a list of fields")
            self.common[cname] = cs
        for cname, cs in self.common.items():
            cver = parse_versions(cs.get("versions", "0+"), f"{file}: common struct {cname}: versions")
            self._struct(cname, cs["fields"], cver or valid, f"{file}: {cname}")
        root = StructModel(name, self._fields(spec["fields"], valid, f"{file}: {name}"), valid)
        return MessageModel(file, name, mtype, api_key, valid, flexible, deprecated, root, self.order)

    def _struct(self, name: str, fields: list[Any], versions: tuple[int, int], where: str) -> StructModel:
        if name in self.structs:
            raise SpecError(f"{where}: struct {name} is defined more than once")
        model = StructModel(name, [], versions)
        self.structs[name] = model
        model.fields = self._fields(fields, versions, where)
        self.order.append(model)
        return model

    def _fields(self, fields: object, parent: tuple[int, int], where: str) -> list[FieldModel]:
        if not isinstance(fields, list):
            raise SpecError(f"{where}: 'fields' must be a list")
        out: list[FieldModel] = []
        attrs: set[str] = set()
        tags: dict[int, str] = {}
        for f in fields:
            fm = self._field(f, parent, where)
            if fm.attr in attrs or fm.attr in RESERVED_ATTRS:
                raise SpecError(f"{where}: field {fm.name}: attribute name {fm.attr!r} is taken")
            attrs.add(fm.attr)
            if fm.tag is not None:
                if fm.tag in tags:
                    raise SpecError(
                        f"{where}: field {fm.name}: tag {fm.tag} is already used by {tags[fm.tag]}"
                    )
                tags[fm.tag] = fm.name
            out.append(fm)
        return out

    def _field(self, f: object, parent: tuple[int, int], where: str) -> FieldModel:
        if not isinstance(f, dict):
            raise SpecError(f"{where}: each field must be a JSON object")
        name = f.get("name")
        if not isinstance(name, str) or not FIELD_NAME_RE.match(name):
            raise SpecError(f"{where}: bad field name {name!r}")
        here = f"{where}: field {name}"
        unknown = set(f) - FIELD_KEYS
        if unknown:
            raise SpecError(f"{here}: unknown key(s) {sorted(unknown)}")
        if "type" not in f or "versions" not in f:
            raise SpecError(f"{here}: 'type' and 'versions' are required")
        raw_type = f["type"]
        if not isinstance(raw_type, str):
            raise SpecError(f"{here}: unknown type {raw_type!r}")
        versions = parse_versions(f["versions"], f"{here}: versions")
        if versions is None:
            raise SpecError(f"{here}: versions must not be 'none'")
        nullable = (
            parse_versions(f["nullableVersions"], f"{here}: nullableVersions")
            if "nullableVersions" in f
            else None
        )
        is_array = raw_type.startswith("[]")
        base = raw_type[2:] if is_array else raw_type
        struct: str | None = None
        if base in PRIMITIVES:
            if "fields" in f:
                raise SpecError(f"{here}: a field of type {raw_type} cannot have 'fields'")
            if is_array and base not in ARRAY_ELEMENT_PRIMITIVES:
                raise SpecError(f"{here}: unknown type {raw_type!r}: arrays of {base} are not supported")
            ftype = raw_type
        elif NAME_RE.match(base):
            struct = base
            ftype = "[]struct" if is_array else "struct"
            if "fields" in f:
                if base in self.common:
                    raise SpecError(f"{here}: struct {base} is also a common struct")
                self._struct(base, f["fields"], versions, f"{where}: {base}")
            elif base not in self.common and base not in self.structs:
                raise SpecError(f"{here}: unknown type {raw_type!r} (no inline fields and no common struct)")
        else:
            raise SpecError(f"{here}: unknown type {raw_type!r}")
        if nullable is not None:
            if not (is_array or ftype == "struct" or base in NULLABLE_PRIMITIVES):
                raise SpecError(f"{here}: type {raw_type} cannot be nullable")
            if not is_subset(nullable, versions) and intersect(nullable, versions) is None:
                raise SpecError(f"{here}: nullableVersions must overlap versions")
        tag = f.get("tag")
        tagged = None
        if ("tag" in f) != ("taggedVersions" in f):
            raise SpecError(f"{here}: 'tag' and 'taggedVersions' must be given together")
        if isinstance(tag, str) and tag.isdigit():
            tag = int(tag)  # some specs quote their tags; Kafka's JSON reader accepts both
        if "tag" in f:
            if not isinstance(tag, int) or isinstance(tag, bool) or tag < 0:
                raise SpecError(f"{here}: tag must be a non-negative integer, got {tag!r}")
            tagged = parse_versions(f["taggedVersions"], f"{here}: taggedVersions")
            if tagged is None:
                raise SpecError(f"{here}: taggedVersions must not be 'none'")
            if not is_subset(tagged, versions):
                raise SpecError(f"{here}: taggedVersions must be a subset of versions")
            if self.flexible is None or not is_subset(tagged, self.flexible):
                raise SpecError(f"{here}: taggedVersions must be a subset of the message's flexibleVersions")
            if tagged[1] != MAX_VERSION:
                raise SpecError(f"{here}: taggedVersions must be open-ended ('N+')")
        override = None
        if "flexibleVersions" in f:
            if base not in ("string", "bytes") or is_array:
                raise SpecError(f"{here}: flexibleVersions can only be set on string or bytes fields")
            parse_versions(f["flexibleVersions"], f"{here}: flexibleVersions")
            override = str(f["flexibleVersions"])
        ignorable = f.get("ignorable", False)
        if not isinstance(ignorable, bool):
            raise SpecError(f"{here}: ignorable must be true or false")
        for flag in ("mapKey", "zeroCopy"):
            if flag in f and not isinstance(f[flag], bool):
                raise SpecError(f"{here}: {flag} must be true or false")
        default = _parse_default(f, ftype, nullable, here)
        return FieldModel(
            name=name,
            attr=snake_case(name),
            type=ftype,
            struct=struct,
            versions=versions,
            nullable=nullable,
            tag=tag,
            tagged=tagged,
            ignorable=ignorable,
            flexible_override=override,
            default=default,
            versions_text=str(f["versions"]),
            nullable_text=str(f["nullableVersions"]) if "nullableVersions" in f else None,
            tagged_text=str(f["taggedVersions"]) if "taggedVersions" in f else None,
        )


def validate_spec(file: str, spec: dict[str, Any]) -> MessageModel:
    """Check one spec; return its model or raise SpecError naming the file and field."""
    return _Validator(file, spec).run()


def validate_all(specs: list[tuple[str, dict[str, Any]]]) -> list[MessageModel]:
    models = [validate_spec(f, s) for f, s in specs]
    seen: dict[tuple[str, int | None], str] = {}
    pair: tuple[str, int | None]
    names: dict[str, str] = {}
    for m in models:
        if m.name in names:
            raise SpecError(f"{m.file}: message name {m.name} is also used by {names[m.name]}")
        names[m.name] = m.file
        if m.type in ("request", "response"):
            pair = (m.type, m.api_key)
            if pair in seen:
                raise SpecError(f"{m.file}: {m.type} apiKey {m.api_key} is also used by {seen[pair]}")
            seen[pair] = m.file
    requests = {m.api_key: m for m in models if m.type == "request"}
    responses = {m.api_key: m for m in models if m.type == "response"}
    for key, req in requests.items():
        resp = responses.get(key)
        if resp is None:
            raise SpecError(f"{req.file}: no response spec with apiKey {key}")
        if resp.valid != req.valid or resp.flexible != req.flexible:
            raise SpecError(f"{resp.file}: validVersions/flexibleVersions differ from {req.file}")
    for key, resp in responses.items():
        if key not in requests:
            raise SpecError(f"{resp.file}: no request spec with apiKey {key}")
    return models


# --------------------------------------------------------------------------------------------
# Emission

PY_TYPES = {
    "bool": "bool",
    "int8": "int",
    "int16": "int",
    "uint16": "int",
    "int32": "int",
    "uint32": "int",
    "int64": "int",
    "float64": "float",
    "string": "str",
    "uuid": "UUID",
    "bytes": "bytes",
    "records": "Records",
}
NATURAL_LITERALS = {
    "bool": "False",
    "int8": "0",
    "int16": "0",
    "uint16": "0",
    "int32": "0",
    "uint32": "0",
    "int64": "0",
    "float64": "0.0",
    "string": '""',
    "uuid": "ZERO_UUID",
    "bytes": 'b""',
    "records": "None",
}


def _ever_nullable(f: FieldModel) -> bool:
    return f.nullable is not None or f.default is None or f.type == "records"


def _py_type(f: FieldModel, owner: str) -> str:
    if f.type == "struct":
        t = f"{owner}.{f.struct}"
    elif f.type == "[]struct":
        t = f"list[{owner}.{f.struct}]"
    elif f.type.startswith("[]"):
        t = f"list[{PY_TYPES[f.type[2:]]}]"
    else:
        t = PY_TYPES[f.type]
    return f"{t} | None" if _ever_nullable(f) else t


def _init_default(f: FieldModel) -> str:
    """The constructor's default: a literal, or UNSET for values that need a fresh object."""
    if f.default is None:
        return "None"
    if f.type in ("struct", "[]struct") or f.type.startswith("[]"):
        return "UNSET"
    if f.default is NATURAL:
        return NATURAL_LITERALS[f.type]
    return repr(f.default)


def _init_assign(f: FieldModel, owner: str) -> str:
    a = f.attr
    if _init_default(f) != "UNSET":
        return f"self.{a} = {a}"
    fresh = f"{owner}.{f.struct}()" if f.type == "struct" else "[]"
    return f"self.{a} = {fresh} if {a} is UNSET else {a}"


def _field_row(f: FieldModel, owner: str) -> str:
    args = [repr(f.attr), repr(f.type), repr(f.versions_text)]
    if f.struct is not None:
        args.append(f"struct={owner}.{f.struct}")
    if f.nullable_text is not None:
        args.append(f"nullable={f.nullable_text!r}")
    if f.default is not NATURAL:
        args.append(f"default={f.default!r}")
    if f.tag is not None:
        args.append(f"tag={f.tag}")
        args.append(f"tagged={f.tagged_text!r}")
    if f.ignorable:
        args.append("ignorable=True")
    if f.flexible_override is not None:
        args.append(f"flexible={f.flexible_override!r}")
    return f"Field({', '.join(args)})"


def _render_class(
    lines: list[str], struct: StructModel, base: str, indent: str, doc: str, extra: list[str]
) -> None:
    attrs = tuple(f.attr for f in struct.fields)
    lines.append(f"{indent}class {struct.name}({base}):")
    lines.append(f'{indent}    """{doc}"""')
    lines.append("")
    lines.append(f"{indent}    __slots__ = {tuple(sorted(attrs))!r}")
    lines.extend(f"{indent}    {e}" if e else "" for e in extra)


def _render_init(lines: list[str], struct: StructModel, indent: str, owner: str) -> None:
    i2 = indent + "    "
    if not struct.fields:
        lines.append(f"{i2}def __init__(self) -> None:")
        lines.append(f"{i2}    self.unknown_tagged_fields = ()")
        return
    lines.append(f"{i2}def __init__(")
    lines.append(f"{i2}    self,")
    lines.append(f"{i2}    *,")
    for f in struct.fields:
        lines.append(f"{i2}    {f.attr}: {_py_type(f, owner)} = {_init_default(f)},")
    lines.append(f"{i2}) -> None:")
    for f in struct.fields:
        lines.append(f"{i2}    {_init_assign(f, owner)}")
    lines.append(f"{i2}    self.unknown_tagged_fields = ()")


def _range_literal(r: tuple[int, int] | None) -> str:
    return "None" if r is None else f"({r[0]}, {r[1]})"


def api_name(message_name: str) -> str:
    return re.sub(r"(Request|Response)$", "", message_name)


HEADER = '''\
# generated by tools/gen_protocol.py, do not edit.
"""Kafka protocol messages, generated from Apache Kafka's message specs (request, response, header, data).

One class per struct: the message class, and each of its structs nested inside it (as in Kafka's
``*Data`` classes), with snake_case attributes, a keyword-only constructor and Kafka's defaults.
``FIELDS`` is each class's schema table (``shardbroker.protocol.schema``): attribute, type,
versions, and where they apply nullability, default, tag/taggedVersions, ignorable and a
flexibleVersions override, in wire order. ``shardbroker.protocol.codec_compiler`` compiles these
tables into per-version encoders and decoders; see there for the design. Field values are not
validated on assignment, only on encode.
``data`` messages (``codec.Data``) also encode and decode with their int16 version prefix.

Regenerate with ``python tools/gen_protocol.py`` after updating the specs.
"""

from __future__ import annotations

from uuid import UUID

from shardbroker.protocol.codec import Data, Message
from shardbroker.protocol.schema import UNSET, ZERO_UUID, Field, Records, Struct

'''


def render(models: list[MessageModel]) -> str:
    lines: list[str] = [HEADER]
    ordered = sorted(
        models,
        key=lambda m: (
            GENERATED_TYPES.index(m.type) if m.type in ("header", "data") else 0,
            m.api_key or 0,
            m.type,
            m.name,
        ),
    )
    generated = [m for m in ordered if m.type in GENERATED_TYPES]
    for m in generated:
        owner = m.name
        lines.append("")
        if m.type in ("header", "data"):
            doc = f"{m.name}, versions {m.valid[0]}-{m.valid[1]}."
        else:
            doc = f"{api_name(m.name)} {m.type} (api key {m.api_key}), versions {m.valid[0]}-{m.valid[1]}."
        api = [f"API_KEY = {m.api_key if m.api_key is not None else -1}", f"API_NAME = {api_name(m.name)!r}"]
        if m.type == "data":  # no api key: carried inside other messages
            api = []
        extra = [
            "",
            *api,
            f"VALID_VERSIONS = {_range_literal(m.valid)}",
            f"FLEXIBLE_VERSIONS = {m.flexible[0] if m.flexible else None}",
            f"DEPRECATED_VERSIONS = {_range_literal(m.deprecated)}",
        ]
        base = "Data" if m.type == "data" else "Message"
        _render_class(lines, m.root, base, "", doc, extra)
        for s in m.structs:
            lines.append("")
            _render_class(lines, s, "Struct", "    ", f"{owner}.{s.name}.", [""])
            _render_init(lines, s, "    ", owner)
        lines.append("")
        _render_init(lines, m.root, "", owner)
        lines.append("")
    lines.append("")
    lines.append(
        "# Schema tables (wire order). Set after the classes so that they can refer to nested structs."
    )
    for m in generated:
        owner = m.name
        for s in [*m.structs, m.root]:
            qual = owner if s is m.root else f"{owner}.{s.name}"
            if not s.fields:
                lines.append(f"{qual}.FIELDS = ()")
                continue
            lines.append(f"{qual}.FIELDS = (")
            lines.extend(f"    {_field_row(f, owner)}," for f in s.fields)
            lines.append(")")
    lines.append("")
    lines.append("REQUESTS: dict[int, type[Message]] = {")
    lines.extend(f"    {m.api_key}: {m.name}," for m in generated if m.type == "request")
    lines.append("}")
    lines.append("RESPONSES: dict[int, type[Message]] = {")
    lines.extend(f"    {m.api_key}: {m.name}," for m in generated if m.type == "response")
    lines.append("}")
    lines.append("HEADERS: dict[str, type[Message]] = {")
    lines.extend(f"    {m.name!r}: {m.name}," for m in generated if m.type == "header")
    lines.append("}")
    lines.append("# Kafka's API names (ApiVersions, metrics labels), by api key.")
    lines.append("API_NAMES: dict[int, str] = {")
    lines.extend(f"    {m.api_key}: {api_name(m.name)!r}," for m in generated if m.type == "request")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _find_ruff() -> str | None:
    beside = Path(sys.executable).parent / "ruff"
    return str(beside) if beside.exists() else shutil.which("ruff")


def format_source(source: str, out: Path = DEFAULT_OUT) -> str:
    """Run ``ruff format`` (the repository's formatter and settings) over the rendered source.

    The emitter writes plain, correct Python; letting the formatter lay it out keeps
    ``ruff format --check`` clean without re-implementing its line breaking here. Without ruff
    the source is returned unformatted, with a warning (the regeneration test would then show
    the difference).
    """
    ruff = _find_ruff()
    if ruff is None:
        print("gen_protocol: warning: ruff not found, output left unformatted", file=sys.stderr)
        return source
    proc = subprocess.run(
        [ruff, "format", "--stdin-filename", str(out), "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise SpecError(f"ruff format failed on the generated source: {proc.stderr.strip()}")
    return proc.stdout


def generate(specs_dir: Path, *, fmt: bool = True) -> str:
    """Load, validate (all specs, before emitting anything), render, then format."""
    source = render(validate_all(load_specs(specs_dir)))
    return format_source(source) if fmt else source


def iter_diff(old: str, new: str, path: str) -> Iterator[str]:
    return difflib.unified_diff(old.splitlines(True), new.splitlines(True), path, path + " (regenerated)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="directory of Kafka message *.json specs"
    )
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="file to write (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    ap.add_argument("--no-format", action="store_true", help="do not run ruff format over the output")
    args = ap.parse_args(argv)
    try:
        source = generate(args.specs, fmt=not args.no_format)
    except SpecError as exc:
        print(f"gen_protocol: {exc}", file=sys.stderr)
        return 2
    if args.check:
        old = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if old != source:
            sys.stdout.writelines(iter_diff(old, source, str(args.out)))
            return 1
        return 0
    args.out.write_text(source, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
