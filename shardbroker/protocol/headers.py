"""Request and response headers, and the 4-byte size prefix of every Kafka frame.

The header version is derived, never sent (KIP-482): a request uses RequestHeader v2 when its
(api key, version) is flexible, else v1, except ControlledShutdown v0 which uses v0; a response
uses ResponseHeader v1 when flexible, else v0, except ApiVersions responses which always use v0
(a client that does not yet know the broker's versions must be able to read the error code).
``ClientId`` stays an int16-length string even in header v2 (its spec sets flexibleVersions none).

Frames here are the bytes *after* the size prefix; :func:`encode_request` and
:func:`encode_response` return whole frames, prefix included.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from shardbroker.protocol.codec import Message, decode, decode_from, encode, encode_parts, is_flexible
from shardbroker.protocol.errors import ErrorCode, ProtocolError, RequestHeaderError
from shardbroker.protocol.messages import REQUESTS, RESPONSES, RequestHeader, ResponseHeader

__all__ = [
    "decode_request",
    "decode_request_header",
    "decode_response",
    "encode_request",
    "encode_request_parts",
    "encode_response",
    "encode_response_parts",
    "request_header_version",
    "response_head",
    "response_header_version",
]

API_VERSIONS_KEY = 18
CONTROLLED_SHUTDOWN_KEY = 7

_FIXED_PREFIX = struct.Struct(">hhi")  # request api key, api version, correlation id
_SIZE = struct.Struct(">i")
_SIZE_AND_CORRELATION = struct.Struct(">ii")


# Cached: both are asked once per request and response (measured: 0.06 us a call cached, 0.14
# computed).
@functools.cache
def request_header_version(api_key: int, api_version: int) -> int:
    if api_key == CONTROLLED_SHUTDOWN_KEY and api_version == 0:
        return 0
    cls = REQUESTS.get(api_key)
    return 2 if cls is not None and is_flexible(cls, api_version) else 1


@functools.cache
def response_header_version(api_key: int, api_version: int) -> int:
    if api_key == API_VERSIONS_KEY:
        return 0
    cls = RESPONSES.get(api_key)
    return 1 if cls is not None and is_flexible(cls, api_version) else 0


def decode_request_header(frame: bytes | memoryview) -> tuple[RequestHeader, int]:
    """Decode the header of a request frame; return it and the offset of the body.

    Raises :class:`RequestHeaderError` (carrying the correlation id and the error code to answer
    with) when the api key is unknown, the version is not one the specs define, or the header
    breaks off after the correlation id; plain :class:`ProtocolError` when not even the
    correlation id can be read.
    """
    mv = frame if type(frame) is memoryview else memoryview(frame)
    if len(mv) < _FIXED_PREFIX.size:
        raise ProtocolError(f"request frame of {len(mv)} bytes is too short for a header")
    api_key, api_version, _ = _FIXED_PREFIX.unpack_from(mv, 0)
    cls = REQUESTS.get(api_key)
    if cls is None:
        raise RequestHeaderError(f"unknown api key {api_key}", ErrorCode.INVALID_REQUEST, **_ids(mv))
    lo, hi = cls.VALID_VERSIONS
    if not lo <= api_version <= hi:
        raise RequestHeaderError(
            f"{cls.API_NAME} has no version {api_version} (valid: {lo}-{hi})",
            ErrorCode.UNSUPPORTED_VERSION,
            **_ids(mv),
        )
    try:
        header, offset = decode_from(RequestHeader, mv, 0, request_header_version(api_key, api_version))
    except ProtocolError as exc:
        raise RequestHeaderError(
            f"bad request header: {exc}", ErrorCode.INVALID_REQUEST, **_ids(mv)
        ) from None
    return header, offset


def _ids(mv: memoryview) -> dict[str, int]:
    """Whom to answer a request whose header is refused (built only then, not for every
    request)."""
    api_key, api_version, correlation_id = _FIXED_PREFIX.unpack_from(mv, 0)
    return {"api_key": api_key, "api_version": api_version, "correlation_id": correlation_id}


def decode_request(frame: bytes | memoryview) -> tuple[RequestHeader, Message]:
    """Decode a whole request frame (header and body). Body errors are ProtocolError."""
    mv = frame if type(frame) is memoryview else memoryview(frame)
    header, offset = decode_request_header(mv)
    cls = REQUESTS[header.request_api_key]
    return header, decode(cls, mv[offset:], header.request_api_version)


def encode_request(header: RequestHeader, msg: Message) -> bytes:
    """A size-prefixed request frame; the header's api key must be the message's."""
    if header.request_api_key != msg.API_KEY:
        raise ProtocolError(f"header api key {header.request_api_key} does not match {type(msg).__name__}")
    version = header.request_api_version
    body = encode(msg, version)
    head = encode(header, request_header_version(msg.API_KEY, version))
    return _SIZE.pack(len(head) + len(body)) + head + body


def encode_request_parts(header: RequestHeader, msg: Message) -> list[Any]:
    """Like :func:`encode_request`, as a list of parts (see ``codec.encode_parts``): a Produce's
    large batches are their own parts, uncopied."""
    if header.request_api_key != msg.API_KEY:
        raise ProtocolError(f"header api key {header.request_api_key} does not match {type(msg).__name__}")
    parts = encode_parts(msg, header.request_api_version)
    head = encode(header, request_header_version(msg.API_KEY, header.request_api_version))
    return _prefixed(_SIZE.pack(len(head) + sum(len(p) for p in parts)) + head, parts)


def response_head(correlation_id: int, api_key: int, api_version: int, body_size: int) -> bytes:
    """The size prefix and the response header, packed directly (the header we send never has
    tagged fields: v1 is the correlation id and an empty tagged-field count)."""
    if response_header_version(api_key, api_version):
        return _SIZE_AND_CORRELATION.pack(body_size + 5, correlation_id) + b"\x00"
    return _SIZE_AND_CORRELATION.pack(body_size + 4, correlation_id)


def encode_response(correlation_id: int, api_key: int, api_version: int, msg: Message) -> bytes:
    """A size-prefixed response frame."""
    if api_key != msg.API_KEY:
        raise ProtocolError(f"api key {api_key} does not match {type(msg).__name__}")
    body = encode(msg, api_version)
    return response_head(correlation_id, api_key, api_version, len(body)) + body


def encode_response_parts(correlation_id: int, api_key: int, api_version: int, msg: Message) -> list[Any]:
    """Like :func:`encode_response`, as a list of parts (see ``codec.encode_parts``).

    The first part carries the size prefix and the header; records that are not buffers (file
    ranges) or are large appear as their own parts, uncopied.
    """
    if api_key != msg.API_KEY:
        raise ProtocolError(f"api key {api_key} does not match {type(msg).__name__}")
    parts = encode_parts(msg, api_version)
    return _prefixed(response_head(correlation_id, api_key, api_version, sum(len(p) for p in parts)), parts)


def _prefixed(head: bytes, parts: list[Any]) -> list[Any]:
    """``parts`` with ``head`` in front (joined to the first part when that one is small bytes)."""
    if isinstance(parts[0], bytes):
        parts[0] = head + parts[0]
    else:
        parts.insert(0, head)
    return parts


def decode_response(
    frame: bytes | memoryview, api_key: int, api_version: int
) -> tuple[ResponseHeader, Message]:
    """Client side: decode a response frame (after the size prefix) to the request it answers."""
    cls = RESPONSES.get(api_key)
    if cls is None:
        raise ProtocolError(f"unknown api key {api_key}", ErrorCode.INVALID_REQUEST)
    mv = frame if type(frame) is memoryview else memoryview(frame)
    header, offset = decode_from(ResponseHeader, mv, 0, response_header_version(api_key, api_version))
    return header, decode(cls, mv[offset:], api_version)
