"""A certificate's subject as Java's ``X500Principal.getName()`` writes it (RFC 2253).

Kafka's DefaultKafkaPrincipalBuilder names an mTLS client ``User:<subject>`` with the subject in
the JDK's RFC 2253 form, before ``ssl.principal.mapping.rules``; rules written for Kafka match
that exact text, so it is reproduced here from the DER certificate: the relative names last
first, ``+`` between the values of one, the RFC 2253 keywords (CN, C, L, ST, O, OU, STREET, DC,
UID) and the dotted OID for any other type (``1.2.840.113549.1.9.1`` for an e-mail address)
with its value as ``#`` and the hex of its DER encoding; string values with Java's escapes
(``,=+<>#;"\\``, leading and trailing spaces, NUL as ``\\00``). A small DER reader, no ``ssl``:
the TLS layer hands over the peer certificate's bytes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["subject_name"]

_SEQUENCE: Final = 0x30
_SET: Final = 0x31
_OID: Final = 0x06
_VERSION: Final = 0xA0  # [0] EXPLICIT

#: RFC 2253's keywords (the JDK's AVAKeyword rows marked RFC 2253 compliant).
_KEYWORDS: Final = {
    "2.5.4.3": "CN",
    "2.5.4.6": "C",
    "2.5.4.7": "L",
    "2.5.4.8": "ST",
    "2.5.4.10": "O",
    "2.5.4.11": "OU",
    "2.5.4.9": "STREET",
    "0.9.2342.19200300.100.1.25": "DC",
    "0.9.2342.19200300.100.1.1": "UID",
}
#: DER string types the JDK writes as text (isDerString, not canonical), with their decoding.
_STRINGS: Final = {
    0x13: "ascii",  # PrintableString
    0x14: "latin-1",  # T61String
    0x16: "ascii",  # IA5String
    0x1B: "ascii",  # GeneralString
    0x0C: "utf-8",  # UTF8String
    0x1E: "utf-16-be",  # BMPString
}
_ESCAPED: Final = ',=+<>#;"\\'


def _read(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER value at ``pos``."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER value")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER value")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> list[tuple[int, int, int, int]]:
    """(tag, content start, content end, value start) of each value in ``data[start:end]``."""
    out = []
    pos = start
    while pos < end:
        tag, content, stop = _read(data, pos)
        out.append((tag, content, stop, pos))
        pos = stop
    return out


def _oid(body: bytes) -> str:
    if not body:
        raise ValueError("empty OID")
    parts: list[int] = []
    value = 0
    for byte in body:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def _escape(text: str) -> str:
    out = []
    for c in text:
        if c in _ESCAPED:
            out.append("\\" + c)
        elif c == "\0":
            out.append("\\00")
        else:
            out.append(c)
    chars = "".join(out)
    lead = len(chars) - len(chars.lstrip(" \r"))
    trail = len(chars.rstrip(" \r"))
    return "".join(("\\" + c) if i < lead or i >= trail else c for i, c in enumerate(chars))


def _attribute(data: bytes, start: int, end: int) -> str:
    (oid_tag, oid_start, oid_end, _), (tag, content, stop, value_start) = _children(data, start, end)[:2]
    if oid_tag != _OID:
        raise ValueError("attribute type is not an OID")
    oid = _oid(data[oid_start:oid_end])
    keyword = _KEYWORDS.get(oid)
    encoding = _STRINGS.get(tag)
    if keyword is None or encoding is None:
        return f"{keyword or oid}=#{data[value_start:stop].hex()}"
    return f"{keyword}={_escape(data[content:stop].decode(encoding, errors='replace'))}"


def subject_name(certificate: bytes) -> str:
    """The subject of a DER X.509 certificate in the JDK's RFC 2253 form (ValueError if the
    bytes are not a certificate)."""
    tag, start, end = _read(certificate, 0)
    if tag != _SEQUENCE:
        raise ValueError("not a DER certificate")
    tag, start, end = _read(certificate, start)  # tbsCertificate
    if tag != _SEQUENCE:
        raise ValueError("not a DER certificate")
    fields = _children(certificate, start, end)
    if fields and fields[0][0] == _VERSION:
        fields = fields[1:]
    if len(fields) < 5:
        raise ValueError("truncated certificate")
    # serialNumber, signature, issuer, validity, subject
    tag, start, end, _ = fields[4]
    if tag != _SEQUENCE:
        raise ValueError("subject is not a Name")
    names = []
    for rdn_tag, rdn_start, rdn_end, _ in _children(certificate, start, end):
        if rdn_tag != _SET:
            raise ValueError("relative name is not a SET")
        names.append(
            "+".join(
                _attribute(certificate, s, e) for t, s, e, _ in _children(certificate, rdn_start, rdn_end)
            )
        )
    return ",".join(reversed(names))
