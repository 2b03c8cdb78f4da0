"""The single-partition Produce request, read and answered without the generic codec: the shape
of nearly every Produce a client with ``linger.ms=0`` or one partition per broker sends.

:func:`parse_single_produce` reads a Produce v3-v11 frame (after the size prefix) with no
transactional id, exactly one topic with exactly one partition, non-null records and no tagged
fields into a :class:`SingleProduce`; for any other frame it returns None and the caller decodes
it with the generic codec (which also owns every error: a frame this parser refuses is decoded
again, never answered from here). :func:`success_response` encodes the answer to one appended
batch from a per-(version, topic) template: the bytes before and after the partition's fields
are taken once from the generic encoder's own output (with marker values, split where they
are), so the layout has one definition.

Why: a one-record Produce cost the worker ~28 us of Python, of which decoding the header and the
body into message objects was ~22 % and building and encoding the response ~21 % (cProfile of
the in-process request path, perf/bench_requests.py's docstring). Here the request is read with
a few ``unpack_from`` calls and the response is four joined byte strings. With the append done
without message objects too (broker/connection.py), a one-record Produce costs the worker 15.5
instead of 28.5 us of CPU in-process.
"""

from __future__ import annotations

import struct
from typing import Final

from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import encode
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.headers import response_head
from shardbroker.protocol.primitives import decode_uvarint

__all__ = ["FIRST_VERSION", "LAST_VERSION", "SingleProduce", "parse_single_produce", "success_response"]

#: Produce versions read here: record batches (v3+) up to the newest the broker serves.
FIRST_VERSION: Final = 3
LAST_VERSION: Final = 11
FLEXIBLE: Final = 9
_HEAD = struct.Struct(">hhih")  # api key, api version, correlation id, client id length
_ACKS_TIMEOUT = struct.Struct(">hi")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
#: Marker values the templates are cut at (distinct 8-byte patterns no name or count contains).
_MARK_INDEX = 0x5A5B5C5D
_MARK_OFFSET = 0x0102030405060708
_MARK_TIME = 0x1112131415161718
_MARK_START = 0x2122232425262728
#: At most this many (version, topic) templates are kept (each ~100 bytes).
MAX_TEMPLATES: Final = 4096


class SingleProduce:
    """One Produce request for one partition. ``records`` is a view of the receive buffer."""

    __slots__ = (
        "acks",
        "api_version",
        "client_id",
        "correlation_id",
        "partition",
        "records",
        "timeout_ms",
        "topic",
    )

    def __init__(
        self,
        api_version: int,
        correlation_id: int,
        client_id: str | None,
        acks: int,
        timeout_ms: int,
        topic: str,
        partition: int,
        records: memoryview,
    ) -> None:
        self.api_version = api_version
        self.correlation_id = correlation_id
        self.client_id = client_id
        self.acks = acks
        self.timeout_ms = timeout_ms
        self.topic = topic
        self.partition = partition
        self.records = records

    def as_request(self) -> tuple[m.RequestHeader, m.ProduceRequest]:
        """The same request as the generic codec's objects (for the paths that need them)."""
        header = m.RequestHeader(
            request_api_key=m.ProduceRequest.API_KEY,
            request_api_version=self.api_version,
            correlation_id=self.correlation_id,
            client_id=self.client_id,
        )
        pd = m.ProduceRequest.PartitionProduceData(index=self.partition, records=self.records)
        topic = m.ProduceRequest.TopicProduceData(name=self.topic, partition_data=[pd])
        request = m.ProduceRequest(
            transactional_id=None, acks=self.acks, timeout_ms=self.timeout_ms, topic_data=[topic]
        )
        return header, request


def parse_single_produce(frame: memoryview) -> SingleProduce | None:
    """The request in ``frame`` (a Produce frame after its size prefix), or None when it is
    not a single-partition v3-v11 Produce without a transactional id and tagged fields (or is
    malformed: the generic codec then says how)."""
    try:
        return _parse(frame)
    except (IndexError, ValueError, struct.error, UnicodeDecodeError, ProtocolError):
        return None


def _parse(mv: memoryview) -> SingleProduce | None:
    api_key, version, correlation_id, n = _HEAD.unpack_from(mv, 0)
    if api_key != 0 or not FIRST_VERSION <= version <= LAST_VERSION:
        return None
    pos = 10
    end = len(mv)
    client_id = None
    if n >= 0:
        if pos + n > end:
            return None
        client_id = str(mv[pos : pos + n], "utf-8")
        pos += n
    flexible = version >= FLEXIBLE
    if flexible:
        if mv[pos] != 0:  # header tagged fields
            return None
        pos += 1
        if mv[pos] != 0:  # transactional id: compact nullable string, null is 0
            return None
        pos += 1
    else:
        if _I16.unpack_from(mv, pos)[0] != -1:  # transactional id: null
            return None
        pos += 2
    acks, timeout_ms = _ACKS_TIMEOUT.unpack_from(mv, pos)
    pos += 6
    if flexible:
        if mv[pos] != 2:  # compact array of one topic
            return None
        name_len, pos = decode_uvarint(mv, pos + 1)
        name_len -= 1
        if name_len < 0 or pos + name_len > end:
            return None
        topic = str(mv[pos : pos + name_len], "utf-8")
        pos += name_len
        if mv[pos] != 2:  # one partition
            return None
        pos += 1
        (partition,) = _I32.unpack_from(mv, pos)
        size, pos = decode_uvarint(mv, pos + 4)
        size -= 1
        # Non-null records, then no tagged fields in the partition, the topic and the request.
        if size < 0 or pos + size + 3 != end or mv[end - 3] | mv[end - 2] | mv[end - 1]:
            return None
        records = mv[pos : pos + size]
    else:
        (count,) = _I32.unpack_from(mv, pos)
        (name_len,) = _I16.unpack_from(mv, pos + 4)
        if count != 1 or name_len < 0 or pos + 6 + name_len > end:
            return None
        pos += 6
        topic = str(mv[pos : pos + name_len], "utf-8")
        pos += name_len
        (count,) = _I32.unpack_from(mv, pos)
        (partition,) = _I32.unpack_from(mv, pos + 4)
        (size,) = _I32.unpack_from(mv, pos + 8)
        pos += 12
        if count != 1 or size < 0 or pos + size != end:
            return None
        records = mv[pos : pos + size]
    return SingleProduce(version, correlation_id, client_id, acks, timeout_ms, topic, partition, records)


class _Template:
    """The bytes of a one-partition success answer around the partition's fields."""

    __slots__ = ("middle", "prefix", "size", "suffix")

    def __init__(self, version: int, topic: str) -> None:
        ppr = m.ProduceResponse.PartitionProduceResponse(
            index=_MARK_INDEX,
            error_code=0,
            base_offset=_MARK_OFFSET,
            log_append_time_ms=_MARK_TIME,
            log_start_offset=_MARK_START,
        )
        response = m.ProduceResponse(
            responses=[m.ProduceResponse.TopicProduceResponse(name=topic, partition_responses=[ppr])]
        )
        body = encode(response, version)
        # The partition's fields as this version has them: index, error code, base offset,
        # then the log append time (v2+) and the log start offset (v5+), all big-endian.
        fmt = ">ihqqq" if version >= 5 else ">ihqq"
        self.middle = struct.Struct(fmt)
        marks = (_MARK_INDEX, 0, _MARK_OFFSET, _MARK_TIME, _MARK_START)[: len(fmt) - 1]
        packed = self.middle.pack(*marks)
        at = body.find(packed)
        if at < 0 or body.find(packed, at + 1) >= 0:
            raise AssertionError(
                f"ProduceResponse v{version}: partition fields not found once in the encoding"
            )
        self.prefix = body[:at]
        self.suffix = body[at + len(packed) :]
        self.size = len(body)


_templates: dict[tuple[int, str], _Template] = {}


def success_response(
    version: int,
    correlation_id: int,
    topic: str,
    partition: int,
    base_offset: int,
    log_append_time: int,
    log_start_offset: int,
) -> bytes:
    """The whole response frame (size prefix and header included) of an appended batch:
    error code 0, no throttle, no record errors."""
    key = (version, topic)
    t = _templates.get(key)
    if t is None:
        if len(_templates) >= MAX_TEMPLATES:
            _templates.clear()
        t = _templates[key] = _Template(version, topic)
    head = response_head(correlation_id, m.ProduceRequest.API_KEY, version, t.size)
    if version >= 5:
        mid = t.middle.pack(partition, 0, base_offset, log_append_time, log_start_offset)
    else:
        mid = t.middle.pack(partition, 0, base_offset, log_append_time)
    return b"".join((head, t.prefix, mid, t.suffix))
