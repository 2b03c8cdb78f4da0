"""The codec's entry points: encode and decode a Kafka message at a version.

Owns :class:`Message` (the base of the generated request, response and header classes, with
their API key, valid, flexible and deprecated versions), :func:`decode` / :func:`decode_from`,
:func:`encode` / :func:`encode_parts` and :func:`is_flexible`. The bytes are Kafka's message
format as the specs define it (body only: the header is :mod:`shardbroker.protocol.headers`,
the size prefix :mod:`shardbroker.protocol.connection`); the functions that write and read
them are compiled per (class, version) on first use by :mod:`shardbroker.protocol.codec_compiler`.

Guarantees:

- Decoders accept ``bytes`` or ``memoryview``; ``records`` fields decode to a ``memoryview``
  slice of the input (no copy: decoding a Produce request of a 1 MiB batch takes what 1 KiB
  does, 3.9 us; docs/notes/codec.md). ``bytes`` fields are copied (SASL tokens, member metadata).
- Any malformed input raises :class:`ProtocolError` only, and no decoder allocates more than
  its frame.
- ``records`` fields accept anything with ``__len__`` when encoding with :func:`encode_parts`
  (e.g. a file range for ``sendfile``): such objects (and large buffers) come back as their own
  elements of the returned list so the I/O layer can send them without copying.
"""

from __future__ import annotations

import struct
from typing import Any, ClassVar, TypeVar

from shardbroker.protocol.codec_compiler import (
    DECODERS,
    ENCODERS,
    Decoder,
    Encoder,
    compiled_decoder,
    compiled_encoder,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.primitives import INT16
from shardbroker.protocol.schema import Struct

__all__ = [
    "ZERO_COPY_THRESHOLD",
    "Data",
    "Message",
    "decode",
    "decode_from",
    "encode",
    "encode_parts",
    "is_flexible",
]

# A records buffer at least this long is returned as its own element by encode_parts() instead of
# being copied into its neighbours: one 16 KiB copy costs about what an extra writev element does.
ZERO_COPY_THRESHOLD = 16 * 1024


class Message(Struct):
    """Base of the generated request, response and header classes."""

    __slots__ = ()
    API_KEY: ClassVar[int] = -1
    API_NAME: ClassVar[str] = ""
    VALID_VERSIONS: ClassVar[tuple[int, int]] = (0, 0)
    FLEXIBLE_VERSIONS: ClassVar[int | None] = None  # first flexible version, or None
    DEPRECATED_VERSIONS: ClassVar[tuple[int, int] | None] = None

    @classmethod
    def is_flexible(cls, version: int) -> bool:
        return is_flexible(cls, version)

    def encode(self, version: int) -> bytes:
        return encode(self, version)

    @classmethod
    def decode(
        cls: type[M], buf: bytes | bytearray | memoryview, version: int, *, allow_trailing: bool = False
    ) -> M:
        return decode(cls, buf, version, allow_trailing=allow_trailing)


class Data(Message):
    """Base of the generated ``data`` messages (ConsumerProtocolSubscription, ...): bytes carried
    inside other messages, prefixed by their own int16 version (Kafka's
    ``MessageUtil.toVersionPrefixedBytes``)."""

    __slots__ = ()

    def encode_versioned(self, version: int) -> bytes:
        """The int16 ``version``, then the message at that version."""
        return INT16.pack(version) + encode(self, version)

    @classmethod
    def decode_versioned(cls: type[D], buf: bytes | bytearray | memoryview) -> tuple[D, int]:
        """Read the version prefix, then the message; return both. As Kafka's
        ``ConsumerProtocol.deserialize*``: a version newer than ours is read at our newest (later
        versions only append fields), bytes after the message are ignored, a version below our
        oldest is refused."""
        if len(buf) < 2:
            raise ProtocolError(f"{cls.__qualname__}: {len(buf)} bytes, no int16 version")
        (version,) = INT16.unpack_from(buf, 0)
        if version < cls.VALID_VERSIONS[0]:
            raise ProtocolError(f"{cls.__qualname__}: unsupported version {version}")
        obj, _ = decode_from(cls, buf, 2, min(version, cls.VALID_VERSIONS[1]))
        return obj, version


S = TypeVar("S", bound=Struct)
M = TypeVar("M", bound=Message)
D = TypeVar("D", bound=Data)


def is_flexible(cls: type[Message], version: int) -> bool:
    first = cls.FLEXIBLE_VERSIONS
    return first is not None and version >= first


def _first_use(cls: type[Struct], version: int, what: str) -> bool:
    """First use of ``cls`` at ``version``: check it is a message and has that version; is the
    version flexible?"""
    if not issubclass(cls, Message):
        raise TypeError(f"{cls.__qualname__} is a nested struct: {what} its message instead")
    lo, hi = cls.VALID_VERSIONS
    if not lo <= version <= hi:
        raise ProtocolError(
            f"{cls.__qualname__} has no version {version} (valid: {lo}-{hi})",
            ErrorCode.UNSUPPORTED_VERSION,
        )
    return is_flexible(cls, version)


def _decoder(cls: type[Struct], version: int) -> Decoder:
    fn = DECODERS.get((cls, version))  # the per-message path: one lookup, no further call
    return fn if fn is not None else compiled_decoder(cls, version, _first_use(cls, version, "decode"))


def _encoder(cls: type[Struct], version: int) -> Encoder:
    fn = ENCODERS.get((cls, version))
    return fn if fn is not None else compiled_encoder(cls, version, _first_use(cls, version, "encode"))


# Errors that malformed input can provoke inside compiled decoders, turned into ProtocolError at
# the entry points (checking every read explicitly would double the decoder's cost).
_DECODE_ERRORS = (struct.error, IndexError, ValueError, OverflowError)
_ENCODE_ERRORS = (struct.error, TypeError, AttributeError, ValueError, OverflowError)


def decode_from(cls: type[S], buf: bytes | bytearray | memoryview, pos: int, version: int) -> tuple[S, int]:
    """Decode one ``cls`` at ``version`` starting at ``pos``; return it and the end position."""
    fn = _decoder(cls, version)
    mv = buf if type(buf) is memoryview else memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    try:
        obj, end = fn(mv, pos)
    except ProtocolError:
        raise
    except _DECODE_ERRORS as exc:
        raise ProtocolError(f"malformed {cls.__qualname__} v{version}: {exc}") from None
    return obj, end


def decode(
    cls: type[S], buf: bytes | bytearray | memoryview, version: int, *, allow_trailing: bool = False
) -> S:
    """Decode a whole buffer as ``cls`` at ``version``; trailing bytes are an error unless allowed."""
    obj, end = decode_from(cls, buf, 0, version)
    if end != len(buf) and not allow_trailing:
        raise ProtocolError(f"{len(buf) - end} trailing bytes after {cls.__qualname__} v{version}")
    return obj


def _encode_list(msg: Struct, version: int) -> tuple[list[Any], list[int]]:
    fn = _encoder(type(msg), version)
    out: list[Any] = []
    big: list[int] = []
    try:
        fn(msg, out, big)
    except ProtocolError:
        raise
    except _ENCODE_ERRORS as exc:
        raise ProtocolError(
            f"cannot encode {type(msg).__qualname__} v{version}: {exc}", ErrorCode.UNKNOWN_SERVER_ERROR
        ) from None
    return out, big


def encode(msg: Struct, version: int) -> bytes:
    """Encode ``msg`` at ``version`` (body only, no header or size prefix)."""
    out, _ = _encode_list(msg, version)
    try:
        return b"".join(out)
    except TypeError:
        raise ProtocolError(
            "a records field holds an object that is not a buffer: use encode_parts()",
            ErrorCode.UNKNOWN_SERVER_ERROR,
        ) from None


def encode_parts(msg: Struct, version: int, *, threshold: int = ZERO_COPY_THRESHOLD) -> list[Any]:
    """Encode ``msg`` as a list of buffers whose concatenation is :func:`encode`'s result.

    Records values that are not buffers (file ranges, ...) or are buffers of at least
    ``threshold`` bytes appear as their own elements, uncopied; everything else is joined.
    """
    out, big = _encode_list(msg, version)
    parts: list[Any] = []
    start = 0
    for i in big:
        v = out[i]
        if isinstance(v, bytes | bytearray | memoryview) and len(v) < threshold:
            continue
        if i > start:
            parts.append(b"".join(out[start:i]))
        parts.append(v)
        start = i + 1
    if start < len(out) or not parts:
        parts.append(b"".join(out[start:]))
    return parts
