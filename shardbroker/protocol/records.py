"""Record batches (magic v2): a zero-copy view, a builder, control batches, the broker's patches.

Layout (Kafka docs/implementation.html 5.3; byte offsets in :mod:`shardbroker.protocol.batch_scan`):
a 61-byte header, then ``recordsCount`` records, compressed as one blob when attributes bits 0-2
are non-zero. A record is ``length varint | attributes int8 | timestampDelta varlong |
offsetDelta varint | keyLength varint | key | valueLength varint | value | headersCount varint |
[headerKeyLength varint | headerKey | headerValueLength varint | headerValue]``; -1 lengths mean
null. Varints are protobuf's zig-zag LEB128 (at most 5 bytes for varint, 10 for varlong), from
:mod:`shardbroker.protocol.primitives`.

Why it looks like this:

- The produce and fetch paths never re-encode records (DESIGN.md), so :class:`RecordBatch` is a
  view: header fields are ``struct.unpack_from`` on the caller's buffer, keys and values of
  uncompressed batches are ``memoryview`` slices of it, and records decode lazily.
- The broker's only edits on append are the base offset and partition leader epoch
  (:func:`assign_offsets`), both outside the CRC-covered range (bytes 21..end), so the client's
  CRC stays valid and nothing is recomputed. LogAppendTime changes CRC-covered bytes
  (attributes bit 3 and maxTimestamp), so :func:`set_log_append_time` is separate and recomputes
  the CRC over the whole batch (at 12-25 GB/s hardware CRC-32C that is still cheap).
- Errors: :class:`InvalidRecordBatch` (a :class:`ProtocolError`) carries the Kafka error code to
  answer a Produce with: CORRUPT_MESSAGE (2) for bytes that cannot be a batch (bad CRC, torn,
  length mismatch, undecodable records), INVALID_RECORD (87) for a well-formed batch that breaks
  a produce rule (offset deltas not 0..n-1, count mismatch, empty batch),
  UNSUPPORTED_COMPRESSION_TYPE (76) for codec ids 5-7, UNSUPPORTED_FOR_MESSAGE_FORMAT (43) for
  magic 0/1.
- Speed (``perf/bench_records.py``, one core pinned, medians): building a batch of 1,000 records
  of 100 B values takes 0.83 ms (1.2 M records/s; 1.06 ms with lz4), decoding its records
  3.1 ms (0.32 M records/s). The encoder and decoder special-case 1- and 2-byte varints, by far
  the common case. Decoding is a Python loop per record, so a produce path that wants line rate
  should check header + CRC (``validate(records=False)``, CRC speed) and decode records only
  where a rule needs them (compacted topics' keys, per-record timestamp limits).
- Line rate, for the local clients: :func:`encode_uniform_batch` writes a whole batch of
  equal-sized records with numpy (~30 ns a record against ~1.1 us for the builder, CPU time on
  a busy VM), and :func:`record_columns` decodes an uncompressed, header-less batch into numpy
  columns (~0.23 us a record against ~2.8 us for :meth:`RecordBatch.records` in the same run);
  both give the same bytes and values as the per-record code (tests/unit/test_local_records.py).
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Iterable, Iterator, Sequence
from enum import IntEnum
from typing import Final, NamedTuple, TypeAlias

import numpy as np
import numpy.typing as npt

from shardbroker.protocol.batch_scan import (
    BATCH_HEADER_SIZE,
    CRC_OFFSET,
    CRC_START,
    LOG_OVERHEAD,
    scan_batch_positions,
)
from shardbroker.protocol.compression import (
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    CompressionError,
    CompressionType,
    compress,
    decompress,
)
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.primitives import (
    INT8,
    INT16,
    INT32,
    INT64,
    UINT32,
    UVARINT_TABLE,
    BytesLike,
    decode_varint,
    decode_varlong,
    encode_varint,
    encode_varlong,
)

__all__ = [
    "MAGIC",
    "NO_PARTITION_LEADER_EPOCH",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "NO_TIMESTAMP",
    "CompressionType",
    "ControlRecord",
    "ControlRecordType",
    "Header",
    "InvalidRecordBatch",
    "Record",
    "RecordBatch",
    "RecordBatchBuilder",
    "RecordColumns",
    "TimestampType",
    "as_uniform",
    "assign_offsets",
    "build_control_batch",
    "encode_uniform_batch",
    "iter_batches",
    "record_columns",
    "set_log_append_time",
    "split_batches",
    "uniform_records_size",
]

Value: TypeAlias = bytes | bytearray | memoryview | None

MAGIC: Final = 2
#: Sentinels from Kafka's RecordBatch interface.
NO_TIMESTAMP: Final = -1
NO_PRODUCER_ID: Final = -1
NO_PRODUCER_EPOCH: Final = -1
NO_SEQUENCE: Final = -1
NO_PARTITION_LEADER_EPOCH: Final = -1

# Attribute bits (implementation.html 5.3.1).
COMPRESSION_MASK: Final = 0x07
TIMESTAMP_TYPE_BIT: Final = 0x08
TRANSACTIONAL_BIT: Final = 0x10
CONTROL_BIT: Final = 0x20
DELETE_HORIZON_BIT: Final = 0x40

# Header from byte 0: baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes,
# lastOffsetDelta, baseTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, count.
_HEADER = struct.Struct(">qiibIhiqqqhii")
# The CRC-covered part of the header, from attributes (byte 21) to recordsCount.
_CRC_HEADER = struct.Struct(">hiqqqhii")
_PREFIX = struct.Struct(">qiib")  # baseOffset, batchLength, partitionLeaderEpoch, magic

_INT32_MAX: Final = 2**31 - 1


class InvalidRecordBatch(ProtocolError):
    """A record batch that cannot be accepted; ``error_code`` is the Kafka error to answer with."""

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.CORRUPT_MESSAGE) -> None:
        super().__init__(message, error_code)


class TimestampType(IntEnum):
    CREATE_TIME = 0
    LOG_APPEND_TIME = 1


class ControlRecordType(IntEnum):
    """Control record key ``type`` (Kafka's ControlRecordType)."""

    ABORT = 0
    COMMIT = 1


# ---- records -------------------------------------------------------------------------------------


class Header(NamedTuple):
    """A record header: a UTF-8 key (malformed bytes replaced, as Java does) and a nullable value."""

    key: str
    value: memoryview | bytes | None


class Record(NamedTuple):
    """One decoded record. ``key``/``value`` are memoryview slices of the batch (or of the
    decompressed records) and stay valid as long as that buffer does."""

    offset: int
    timestamp: int
    key: memoryview | None
    value: memoryview | None
    headers: tuple[Header, ...]
    attributes: int = 0
    offset_delta: int = 0
    timestamp_delta: int = 0


_NO_HEADERS: Final[tuple[Header, ...]] = ()


def _iter_records(
    data: memoryview, count: int, base_offset: int, base_timestamp: int, append_time: int | None
) -> Iterator[Record]:
    """Decode ``count`` records from ``data``; raises InvalidRecordBatch on any inconsistency."""
    end = data.nbytes
    pos = 0
    for i in range(count):
        # length
        try:
            b = data[pos]
        except IndexError:
            raise InvalidRecordBatch(
                f"records end after {i} of {count} records (batch declares more)"
            ) from None
        if b < 0x80:
            length = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            length, pos = decode_varint(data, pos)
        rec_end = pos + length
        if length < 6 or rec_end > end:
            raise InvalidRecordBatch(f"record length {length} out of bounds")
        attributes = data[pos]
        b = data[pos + 1]
        if b < 0x80:
            ts_delta = (b >> 1) ^ -(b & 1)
            pos += 2
        else:
            ts_delta, pos = decode_varlong(data, pos + 1)
        b = data[pos]
        if b < 0x80:
            off_delta = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            off_delta, pos = decode_varint(data, pos)
        # key
        b = data[pos] if pos < rec_end else 0xFF
        if b < 0x80:
            klen = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            klen, pos = decode_varint(data, pos)
        if klen >= 0:
            if pos + klen > rec_end:
                raise InvalidRecordBatch("record key runs past the record")
            key: memoryview | None = data[pos : pos + klen]
            pos += klen
        elif klen == -1:
            key = None
        else:
            raise InvalidRecordBatch(f"invalid key length {klen}")
        # value
        b = data[pos] if pos < rec_end else 0xFF
        if b < 0x80:
            vlen = (b >> 1) ^ -(b & 1)
            pos += 1
        else:
            vlen, pos = decode_varint(data, pos)
        if vlen >= 0:
            if pos + vlen > rec_end:
                raise InvalidRecordBatch("record value runs past the record")
            value: memoryview | None = data[pos : pos + vlen]
            pos += vlen
        elif vlen == -1:
            value = None
        else:
            raise InvalidRecordBatch(f"invalid value length {vlen}")
        # headers
        if pos >= rec_end:
            raise InvalidRecordBatch("record ends before its header count")
        b = data[pos]
        if b == 0:
            headers = _NO_HEADERS
            pos += 1
        else:
            hcount, pos = decode_varint(data, pos)
            if hcount < 0:
                raise InvalidRecordBatch(f"invalid header count {hcount}")
            hs = []
            for _h in range(hcount):
                hklen, pos = decode_varint(data, pos)
                if hklen < 0 or pos + hklen > rec_end:
                    raise InvalidRecordBatch(f"invalid header key length {hklen}")
                hkey = bytes(data[pos : pos + hklen]).decode("utf-8", "replace")
                pos += hklen
                hvlen, pos = decode_varint(data, pos)
                if hvlen >= 0:
                    if pos + hvlen > rec_end:
                        raise InvalidRecordBatch("header value runs past the record")
                    hvalue: memoryview | None = data[pos : pos + hvlen]
                    pos += hvlen
                elif hvlen == -1:
                    hvalue = None
                else:
                    raise InvalidRecordBatch(f"invalid header value length {hvlen}")
                hs.append(Header(hkey, hvalue))
            headers = tuple(hs)
        if pos != rec_end:
            raise InvalidRecordBatch(
                f"record length says {length} bytes, fields take {pos - rec_end + length}"
            )
        timestamp = append_time if append_time is not None else base_timestamp + ts_delta
        yield Record(base_offset + off_delta, timestamp, key, value, headers, attributes, off_delta, ts_delta)
    if pos != end:
        raise InvalidRecordBatch(f"{end - pos} bytes left after the last of {count} records")


# ---- the view ------------------------------------------------------------------------------------


class RecordBatch:
    """A read-only view of one v2 record batch in ``buf`` (no copy).

    ``buf`` must start at the batch; bytes after the batch's declared size are ignored by the
    properties and rejected by :meth:`validate`. Construction checks only that the 61-byte header
    is there.
    """

    __slots__ = ("_buf",)

    def __init__(self, buf: BytesLike) -> None:
        mv = memoryview(buf)
        if mv.format != "B" or mv.ndim != 1:
            mv = mv.cast("B")
        if mv.nbytes < BATCH_HEADER_SIZE:
            raise InvalidRecordBatch(f"record batch of {mv.nbytes} bytes is shorter than its header")
        self._buf = mv

    def __repr__(self) -> str:
        return (
            f"RecordBatch(base_offset={self.base_offset}, count={self.records_count}, "
            f"size={self.size}, compression={self.compression_type.name if self.compression_known else '?'})"
        )

    # header fields
    @property
    def buffer(self) -> memoryview:
        """The batch's bytes (its declared size, or what there is if shorter)."""
        return self._buf[: self.size]

    @property
    def base_offset(self) -> int:
        return int(INT64.unpack_from(self._buf, 0)[0])

    @property
    def batch_length(self) -> int:
        return int(INT32.unpack_from(self._buf, 8)[0])

    @property
    def size(self) -> int:
        """Total size: LOG_OVERHEAD + batchLength."""
        return LOG_OVERHEAD + int(INT32.unpack_from(self._buf, 8)[0])

    @property
    def partition_leader_epoch(self) -> int:
        return int(INT32.unpack_from(self._buf, 12)[0])

    @property
    def magic(self) -> int:
        return int(INT8.unpack_from(self._buf, 16)[0])

    @property
    def crc(self) -> int:
        return int(UINT32.unpack_from(self._buf, CRC_OFFSET)[0])

    @property
    def attributes(self) -> int:
        return int(INT16.unpack_from(self._buf, 21)[0])

    @property
    def compression_known(self) -> bool:
        return (self._buf[22] & COMPRESSION_MASK) <= CompressionType.ZSTD

    @property
    def compression_type(self) -> CompressionType:
        """The codec; raises InvalidRecordBatch (UNSUPPORTED_COMPRESSION_TYPE) for ids 5-7."""
        cid = self._buf[22] & COMPRESSION_MASK
        if cid > CompressionType.ZSTD:
            raise InvalidRecordBatch(
                f"unknown compression type id {cid}", ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
            )
        return CompressionType(cid)

    @property
    def is_compressed(self) -> bool:
        return bool(self._buf[22] & COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        return (
            TimestampType.LOG_APPEND_TIME if self._buf[22] & TIMESTAMP_TYPE_BIT else TimestampType.CREATE_TIME
        )

    @property
    def is_transactional(self) -> bool:
        return bool(self._buf[22] & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self._buf[22] & CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self._buf[22] & DELETE_HORIZON_BIT)

    @property
    def last_offset_delta(self) -> int:
        return int(INT32.unpack_from(self._buf, 23)[0])

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def base_timestamp(self) -> int:
        return int(INT64.unpack_from(self._buf, 27)[0])

    @property
    def max_timestamp(self) -> int:
        return int(INT64.unpack_from(self._buf, 35)[0])

    @property
    def producer_id(self) -> int:
        return int(INT64.unpack_from(self._buf, 43)[0])

    @property
    def producer_epoch(self) -> int:
        return int(INT16.unpack_from(self._buf, 51)[0])

    @property
    def base_sequence(self) -> int:
        return int(INT32.unpack_from(self._buf, 53)[0])

    @property
    def last_sequence(self) -> int:
        """Sequence of the last record; wraps past int32 max to 0 like Kafka's incrementSequence."""
        base = self.base_sequence
        if base == NO_SEQUENCE:
            return NO_SEQUENCE
        delta = self.last_offset_delta
        if base > _INT32_MAX - delta:
            return base + delta - _INT32_MAX - 1
        return base + delta

    @property
    def records_count(self) -> int:
        return int(INT32.unpack_from(self._buf, 57)[0])

    def header(self) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]:
        """All 13 header fields at once (one unpack), in layout order."""
        return _HEADER.unpack_from(self._buf, 0)

    # checks
    def compute_crc(self) -> int:
        """CRC-32C of bytes 21..size (what the crc field should hold)."""
        return crc32c(self._buf[CRC_START : self.size])

    def is_crc_valid(self) -> bool:
        size = self.size
        return size <= self._buf.nbytes and size >= BATCH_HEADER_SIZE and self.compute_crc() == self.crc

    def validate(self, *, records: bool = True, produce: bool = True) -> None:
        """Raise :class:`InvalidRecordBatch` unless this is a sound v2 batch.

        Always: magic, declared size == buffer size, CRC, known codec. With ``records``: every
        record decodes (after decompression), exactly ``recordsCount`` of them and no trailing
        bytes. With ``produce`` (Kafka's LogValidator rules for client batches): at least one
        record, offset deltas 0..n-1 in order and lastOffsetDelta == n-1 (compacted batches in a
        log may break these legitimately, so pass ``produce=False`` there).
        """
        magic = self.magic
        if magic != MAGIC:
            if magic in (0, 1):
                raise InvalidRecordBatch(
                    f"message format v{magic} is not supported", ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
                )
            raise InvalidRecordBatch(f"invalid magic {magic}")
        size = self.size
        if size < BATCH_HEADER_SIZE:
            raise InvalidRecordBatch(f"batch length {size - LOG_OVERHEAD} is below the minimum")
        if size != self._buf.nbytes:
            raise InvalidRecordBatch(f"batch declares {size} bytes but {self._buf.nbytes} are there")
        computed = self.compute_crc()
        if computed != self.crc:
            raise InvalidRecordBatch(f"CRC mismatch: stored {self.crc:#010x}, computed {computed:#010x}")
        if not self.compression_known:
            raise InvalidRecordBatch(
                f"unknown compression type id {self._buf[22] & COMPRESSION_MASK}",
                ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            )
        count = self.records_count
        if count < 0:
            raise InvalidRecordBatch(f"negative record count {count}")
        if produce and count == 0:
            raise InvalidRecordBatch("record batch has no records", ErrorCode.INVALID_RECORD)
        if produce and self.last_offset_delta != count - 1:
            raise InvalidRecordBatch(
                f"lastOffsetDelta {self.last_offset_delta} does not match {count} records",
                ErrorCode.INVALID_RECORD,
            )
        if not records:
            return
        for expected, rec in enumerate(self.records()):
            if produce and rec.offset_delta != expected:
                raise InvalidRecordBatch(
                    f"record {expected} has offset delta {rec.offset_delta}", ErrorCode.INVALID_RECORD
                )

    # records
    def records_data(self, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> memoryview:
        """The (decompressed) record bytes after the header."""
        payload = self._buf[BATCH_HEADER_SIZE : self.size]
        codec = self.compression_type
        if codec == CompressionType.NONE:
            return payload
        try:
            return memoryview(decompress(codec, payload, max_size))
        except CompressionError as exc:
            raise InvalidRecordBatch(f"cannot decompress records: {exc}") from None

    def records(self, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE) -> Iterator[Record]:
        """Decode records lazily (decompressing first if needed; capped at ``max_size``)."""
        size = self.size
        if size < BATCH_HEADER_SIZE or size > self._buf.nbytes:
            raise InvalidRecordBatch(f"batch declares {size} bytes but {self._buf.nbytes} are there")
        count = self.records_count
        if count < 0:
            raise InvalidRecordBatch(f"negative record count {count}")
        append_time = self.max_timestamp if self._buf[22] & TIMESTAMP_TYPE_BIT else None
        data = self.records_data(max_size)
        try:
            yield from _iter_records(data, count, self.base_offset, self.base_timestamp, append_time)
        except IndexError:
            raise InvalidRecordBatch("record runs past the end of the batch") from None
        except InvalidRecordBatch:
            raise
        except ProtocolError as exc:  # a malformed varint (primitives raise the codec's error)
            raise InvalidRecordBatch(str(exc)) from None

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def control_record(self) -> ControlRecord:
        """The control record of a control batch (its only record)."""
        if not self.is_control:
            raise InvalidRecordBatch("not a control batch", ErrorCode.INVALID_RECORD)
        for rec in self.records():
            return ControlRecord.from_record(rec)
        raise InvalidRecordBatch("control batch has no records", ErrorCode.INVALID_RECORD)


class ControlRecord(NamedTuple):
    """A transaction marker: key ``version int16 | type int16``, value
    ``version int16 | coordinatorEpoch int32`` (Kafka's EndTransactionMarker)."""

    type: int
    coordinator_epoch: int
    key_version: int = 0
    value_version: int = 0

    @classmethod
    def from_record(cls, rec: Record) -> ControlRecord:
        if rec.key is None or rec.key.nbytes < 4:
            raise InvalidRecordBatch("control record key is too short", ErrorCode.INVALID_RECORD)
        key_version, ctype = struct.unpack_from(">hh", rec.key, 0)
        if key_version < 0:
            raise InvalidRecordBatch(f"control record key version {key_version}", ErrorCode.INVALID_RECORD)
        if rec.value is None or rec.value.nbytes < 6:
            if ctype in (ControlRecordType.ABORT, ControlRecordType.COMMIT):
                raise InvalidRecordBatch("transaction marker value is too short", ErrorCode.INVALID_RECORD)
            return cls(ctype, -1, key_version, -1)
        value_version, epoch = struct.unpack_from(">hi", rec.value, 0)
        return cls(ctype, epoch, key_version, value_version)


# ---- splitting a records blob --------------------------------------------------------------------


def iter_batches(blob: BytesLike, *, allow_partial_tail: bool = False) -> Iterator[RecordBatch]:
    """Views of the concatenated batches in ``blob`` (a Produce/Fetch ``records`` field, a ring).

    A trailing partial batch raises CORRUPT_MESSAGE, unless ``allow_partial_tail`` (Fetch
    responses may end in one; consumers skip it).
    """
    mv = memoryview(blob)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    starts, end = scan_batch_positions(mv)
    if end != mv.nbytes and not allow_partial_tail:
        raise InvalidRecordBatch(f"{mv.nbytes - end} bytes after the last whole batch at {end}")
    bounds = [*starts, end]
    for i in range(len(starts)):
        yield RecordBatch(mv[bounds[i] : bounds[i + 1]])


def split_batches(blob: BytesLike, *, allow_partial_tail: bool = False) -> list[RecordBatch]:
    """:func:`iter_batches` as a list."""
    return list(iter_batches(blob, allow_partial_tail=allow_partial_tail))


# ---- the broker's in-place patches ---------------------------------------------------------------


def assign_offsets(
    buf: bytearray | memoryview, position: int, base_offset: int, partition_leader_epoch: int
) -> None:
    """Write baseOffset (bytes 0..8) and partitionLeaderEpoch (12..16) of the batch at ``position``.

    Both lie outside the CRC-covered range (21..end), so the client's CRC stays valid.
    """
    INT64.pack_into(buf, position, base_offset)
    INT32.pack_into(buf, position + 12, partition_leader_epoch)


def set_log_append_time(buf: bytearray | memoryview, position: int, timestamp: int) -> None:
    """Turn the batch at ``position`` into LogAppendTime with maxTimestamp ``timestamp``.

    NOT CRC-neutral: attributes and maxTimestamp are covered by the CRC, so this recomputes the
    CRC over the whole batch (Kafka's DefaultRecordBatch.setMaxTimestamp does the same).
    Records' own timestamps are left alone: readers use maxTimestamp for every record.
    """
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    size = LOG_OVERHEAD + INT32.unpack_from(mv, position + 8)[0]
    if size < BATCH_HEADER_SIZE or position + size > mv.nbytes:
        raise InvalidRecordBatch(f"batch at {position} declares {size} bytes, buffer too short")
    attributes = INT16.unpack_from(mv, position + 21)[0]
    INT16.pack_into(mv, position + 21, attributes | TIMESTAMP_TYPE_BIT)
    INT64.pack_into(mv, position + 35, timestamp)
    UINT32.pack_into(mv, position + CRC_OFFSET, crc32c(mv[position + CRC_START : position + size]))


# ---- building ------------------------------------------------------------------------------------


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _encode_record(
    offset_delta: int,
    timestamp_delta: int,
    key: Value,
    value: Value,
    headers: Sequence[tuple[str | bytes, Value]],
    out: list[bytes | bytearray | memoryview],
) -> int:
    """Append one record's pieces to ``out``; returns its encoded size."""
    uv = UVARINT_TABLE
    z = (timestamp_delta << 1) ^ (timestamp_delta >> 63)
    ts = uv[z] if 0 <= z < 16384 else encode_varlong(timestamp_delta)
    od = uv[offset_delta << 1] if offset_delta < 8192 else encode_varint(offset_delta)
    parts: list[bytes | bytearray | memoryview] = [b"\x00", ts, od]
    if key is None:
        parts.append(b"\x01")
    else:
        n = len(key) if not isinstance(key, memoryview) else key.nbytes
        parts.append(uv[n << 1] if n < 8192 else encode_varint(n))
        parts.append(key)
    if value is None:
        parts.append(b"\x01")
    else:
        n = len(value) if not isinstance(value, memoryview) else value.nbytes
        parts.append(uv[n << 1] if n < 8192 else encode_varint(n))
        parts.append(value)
    if not headers:
        parts.append(b"\x00")
    else:
        parts.append(encode_varint(len(headers)))
        for hkey, hvalue in headers:
            hk = hkey.encode() if isinstance(hkey, str) else bytes(hkey)
            parts.append(encode_varint(len(hk)))
            parts.append(hk)
            if hvalue is None:
                parts.append(b"\x01")
            else:
                hv = memoryview(hvalue).cast("B") if not isinstance(hvalue, bytes) else hvalue
                parts.append(encode_varint(len(hv)))
                parts.append(hv)
    body = b"".join(parts)
    n = len(body)
    prefix = uv[n << 1] if n < 8192 else encode_varint(n)
    out.append(prefix)
    out.append(body)
    return len(prefix) + n


class RecordBatchBuilder:
    """Records in, one v2 batch out (as a producer builds it).

    The first record's timestamp becomes baseTimestamp (as in Kafka's MemoryRecordsBuilder), the
    largest becomes maxTimestamp. ``base_offset`` is normally 0 (the broker assigns it).
    """

    __slots__ = (
        "_base_timestamp",
        "_compression",
        "_count",
        "_is_control",
        "_is_transactional",
        "_max_timestamp",
        "_parts",
        "_size",
        "base_offset",
        "base_sequence",
        "partition_leader_epoch",
        "producer_epoch",
        "producer_id",
        "timestamp_type",
    )

    def __init__(
        self,
        *,
        compression: CompressionType | int = CompressionType.NONE,
        base_offset: int = 0,
        partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
        producer_id: int = NO_PRODUCER_ID,
        producer_epoch: int = NO_PRODUCER_EPOCH,
        base_sequence: int = NO_SEQUENCE,
        is_transactional: bool = False,
        is_control: bool = False,
        timestamp_type: TimestampType = TimestampType.CREATE_TIME,
    ) -> None:
        self._compression = CompressionType(compression)
        self.base_offset = base_offset
        self.partition_leader_epoch = partition_leader_epoch
        self.producer_id = producer_id
        self.producer_epoch = producer_epoch
        self.base_sequence = base_sequence
        self._is_transactional = is_transactional
        self._is_control = is_control
        self.timestamp_type = timestamp_type
        self._parts: list[bytes | bytearray | memoryview] = []
        self._count = 0
        self._size = 0
        self._base_timestamp: int | None = None
        self._max_timestamp: int | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def records_size(self) -> int:
        """Uncompressed size of the records so far (batch size is this + 61 when uncompressed)."""
        return self._size

    def append(
        self,
        value: Value,
        key: Value = None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str | bytes, Value]] = (),
    ) -> int:
        """Add a record (timestamp in ms; now if None); returns its offset delta."""
        if timestamp is None:
            timestamp = _now_ms()
        base = self._base_timestamp
        if base is None:
            base = self._base_timestamp = timestamp
        if self._max_timestamp is None or timestamp > self._max_timestamp:
            self._max_timestamp = timestamp
        delta = self._count
        self._size += _encode_record(delta, timestamp - base, key, value, headers, self._parts)
        self._count = delta + 1
        return delta

    def extend(self, values: Iterable[Value], timestamp: int | None = None) -> None:
        """Append many key-less, header-less records with one timestamp (the bulk fast path)."""
        if timestamp is None:
            timestamp = _now_ms()
        for v in values:
            self.append(v, None, timestamp)

    def build(self) -> bytes:
        """The batch's bytes (CRC computed)."""
        records = b"".join(self._parts)
        attributes = int(self._compression)
        if self._compression != CompressionType.NONE:
            records = compress(self._compression, records)
        if self.timestamp_type == TimestampType.LOG_APPEND_TIME:
            attributes |= TIMESTAMP_TYPE_BIT
        if self._is_transactional:
            attributes |= TRANSACTIONAL_BIT
        if self._is_control:
            attributes |= CONTROL_BIT
        base_ts = self._base_timestamp if self._base_timestamp is not None else NO_TIMESTAMP
        max_ts = self._max_timestamp if self._max_timestamp is not None else NO_TIMESTAMP
        crc_header = _CRC_HEADER.pack(
            attributes,
            self._count - 1,
            base_ts,
            max_ts,
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self._count,
        )
        crc = crc32c(records, crc32c(crc_header))
        batch_length = BATCH_HEADER_SIZE - LOG_OVERHEAD + len(records)
        prefix = _PREFIX.pack(self.base_offset, batch_length, self.partition_leader_epoch, MAGIC)
        return b"".join((prefix, UINT32.pack(crc), crc_header, records))


def build_control_batch(
    control_type: ControlRecordType | int,
    *,
    producer_id: int,
    producer_epoch: int,
    coordinator_epoch: int,
    timestamp: int | None = None,
    base_offset: int = 0,
    partition_leader_epoch: int = NO_PARTITION_LEADER_EPOCH,
) -> bytes:
    """A transaction marker batch (commit or abort), as the transaction coordinator writes it.

    Attributes: transactional + control; one record with key ``version 0 | type`` and value
    ``version 0 | coordinatorEpoch``; baseSequence -1 (markers carry no sequence).
    """
    builder = RecordBatchBuilder(
        base_offset=base_offset,
        partition_leader_epoch=partition_leader_epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=NO_SEQUENCE,
        is_transactional=True,
        is_control=True,
    )
    builder.append(
        struct.pack(">hi", 0, coordinator_epoch),
        key=struct.pack(">hh", 0, int(control_type)),
        timestamp=timestamp,
    )
    return builder.build()


# ---- vectorised building: many records of one key size and one value size -----------------------

#: Where the offset-delta varint widens (zig-zag ``delta << 1`` takes 7 bits per byte): deltas
#: ``[0, 64)`` take 1 byte, ``[64, 8192)`` 2 and ``[8192, 2**20)`` 3.
_DELTA_WIDTHS: Final = ((0, 64, 1), (64, 8192, 2), (8192, 1 << 20, 3))
#: Records a uniform batch may hold (its offset deltas stay within 3-byte varints).
MAX_UNIFORM_RECORDS: Final = 1 << 20


class _UniformRun(NamedTuple):
    """Equal rows of a uniform batch: where they start in the records area, and a template of
    their bytes (keys and values left zero) for the columns around keys and values."""

    first: int
    template: npt.NDArray[np.uint8]  # (rows, row size)
    key_col: int
    value_col: int


@functools.lru_cache(maxsize=64)
def _uniform_runs(count: int, key_size: int, value_size: int) -> tuple[_UniformRun, ...]:
    """Built once per batch shape (producers send the same shape over and over). Encoding then
    writes each output byte once: the columns before the key (or value) from the template, the
    keys, the values, the trailing header count; measured 3 numpy passes instead of a dozen
    column writes, and half the memory traffic of copying a whole template then the values."""
    key_len = b"\x01" if key_size < 0 else encode_varint(key_size)
    value_len = encode_varint(value_size)
    key_field = len(key_len) + max(key_size, 0)
    runs = []
    pos = 0
    for lo, hi, width in _DELTA_WIDTHS:
        if lo >= count:
            break
        hi = min(hi, count)
        body = 2 + width + key_field + len(value_len) + value_size + 1  # ..., headers count 0
        prefix = encode_varint(body)
        rows = np.zeros((hi - lo, len(prefix) + body), dtype=np.uint8)
        c = len(prefix)
        rows[:, :c] = np.frombuffer(prefix, dtype=np.uint8)
        c += 2  # attributes 0, timestamp delta 0
        z = np.arange(lo, hi, dtype=np.uint32) << 1  # zig-zag offset deltas
        for b in range(width):
            byte = ((z >> (7 * b)) & 0x7F).astype(np.uint8)
            rows[:, c + b] = byte | 0x80 if b < width - 1 else byte
        c += width
        rows[:, c : c + len(key_len)] = np.frombuffer(key_len, dtype=np.uint8)
        key_col = c + len(key_len)
        value_col = key_col + max(key_size, 0) + len(value_len)
        rows[:, key_col + max(key_size, 0) : value_col] = np.frombuffer(value_len, dtype=np.uint8)
        rows.setflags(write=False)
        runs.append(_UniformRun(pos, rows, key_col, value_col))
        pos += rows.size
    return tuple(runs)


def uniform_records_size(count: int, key_size: int, value_size: int) -> int:
    """Bytes of ``count`` records encoded by :func:`encode_uniform_batch` (key_size -1: no key)."""
    last = _uniform_runs(count, key_size, value_size)[-1]
    return last.first + int(last.template.size)


def as_uniform(items: Sequence[bytes | bytearray | memoryview]) -> npt.NDArray[np.uint8] | None:
    """``items`` as an ``(n, size)`` uint8 array when all have one size (one join), else None."""
    if not items:
        return None
    size = len(items[0])
    if len(set(map(len, items))) != 1:
        return None
    flat = np.frombuffer(b"".join(items), dtype=np.uint8)
    return flat.reshape(len(items), size)


def encode_uniform_batch(
    out: memoryview | bytearray,
    values: npt.NDArray[np.uint8],
    keys: npt.NDArray[np.uint8] | None = None,
    timestamp: int | None = None,
    *,
    producer_id: int = NO_PRODUCER_ID,
    producer_epoch: int = NO_PRODUCER_EPOCH,
    base_sequence: int = NO_SEQUENCE,
) -> int:
    """Encode one uncompressed v2 batch of ``len(values)`` records into ``out``; returns its size.

    ``values`` (and ``keys``, or None for null keys) are ``(n, size)`` uint8 arrays: every record
    has the same key and value sizes, one timestamp and no headers, so the records split into at
    most three runs of equal length (the offset-delta varint widens at 64 and 8192) and each run
    is written as a 2-D array, column by column, by numpy: no Python step per record. The bytes
    equal what :class:`RecordBatchBuilder` builds for the same records. ``out`` must hold
    ``61 + uniform_records_size(...)`` bytes (``ValueError`` otherwise).

    Measured (100 B values, no key, 2,259 records a batch, CPU time on the busy 2-core VM,
    3 repetitions): 31-35 ns a record, against 1,060-1,250 ns with ``RecordBatchBuilder``; the
    first version, which copied a whole cached template and then the values, took twice the
    memory traffic and ran 1.6-2x slower into a 16 MiB ring.
    """
    count = int(values.shape[0])
    if not 0 < count <= MAX_UNIFORM_RECORDS or values.ndim != 2:
        raise ValueError(f"need 1..{MAX_UNIFORM_RECORDS} values as an (n, size) array, got {values.shape}")
    value_size = int(values.shape[1])
    key_size = -1
    if keys is not None:
        if keys.ndim != 2 or keys.shape[0] != count:
            raise ValueError(f"keys must be an ({count}, size) array, got {keys.shape}")
        key_size = int(keys.shape[1])
    if timestamp is None:
        timestamp = _now_ms()
    runs = _uniform_runs(count, key_size, value_size)
    end = BATCH_HEADER_SIZE + runs[-1].first + int(runs[-1].template.size)
    buf = np.frombuffer(out, dtype=np.uint8)
    if end > buf.shape[0]:
        raise ValueError(f"a {buf.shape[0]}-byte buffer cannot hold this {end}-byte batch")
    area = buf[BATCH_HEADER_SIZE:end]
    lo = 0
    for first, template, key_col, value_col in runs:
        n, size = template.shape
        rows = area[first : first + n * size].reshape(n, size)
        if keys is None:
            rows[:, :value_col] = template[:, :value_col]
        else:
            rows[:, :key_col] = template[:, :key_col]
            rows[:, key_col : key_col + key_size] = keys[lo : lo + n]
            rows[:, key_col + key_size : value_col] = template[:, key_col + key_size : value_col]
        rows[:, value_col : value_col + value_size] = values[lo : lo + n]
        rows[:, -1] = 0  # no headers
        lo += n
    pos = end
    mv = memoryview(out).cast("B") if not isinstance(out, bytearray) else memoryview(out)
    _CRC_HEADER.pack_into(
        mv, CRC_START, 0, count - 1, timestamp, timestamp, producer_id, producer_epoch, base_sequence, count
    )
    _PREFIX.pack_into(mv, 0, 0, pos - LOG_OVERHEAD, NO_PARTITION_LEADER_EPOCH, MAGIC)
    UINT32.pack_into(mv, CRC_OFFSET, crc32c(mv[CRC_START:pos]))
    return pos


# ---- vectorised decoding: the records of a batch as columns ---------------------------------------

#: A speculated stride that confirms fewer records than this hands the next ``_WALK`` records to a
#: plain Python walk (records of varied sizes), then speculates again.
_MIN_RUN: Final = 16
_WALK: Final = 256


class RecordColumns(NamedTuple):
    """Every record of one batch as equal-length numpy arrays (positions index ``data``, the
    batch's record bytes): what a reader that wants line rate takes instead of Record objects.
    Lengths are -1 for null keys and values."""

    data: memoryview
    offset_deltas: npt.NDArray[np.int64]
    timestamp_deltas: npt.NDArray[np.int64]
    attributes: npt.NDArray[np.uint8]
    key_starts: npt.NDArray[np.int64]
    key_lengths: npt.NDArray[np.int64]
    value_starts: npt.NDArray[np.int64]
    value_lengths: npt.NDArray[np.int64]


def _varints(
    u8: npt.NDArray[np.uint8], pos: npt.NDArray[np.int64], max_bytes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Zig-zag varints starting at each of ``pos``: ``(values, positions after them)``: one gather
    of the ``max_bytes`` bytes after every position, widths from the first byte without the
    continuation bit (one-byte varints, the common case, take a shorter path)."""
    first = u8[pos]
    if pos.shape[0] and int(first.max()) < 0x80:
        v = first.astype(np.int64)
        return (v >> 1) ^ -(v & 1), pos + 1
    idx = np.minimum(pos[:, None] + np.arange(max_bytes), u8.shape[0] - 1)
    raw = u8[idx]
    more = raw >= 0x80
    if more.all(axis=1).any():
        raise InvalidRecordBatch("varint longer than its type allows")
    width = np.argmin(more, axis=1) + 1
    used = np.arange(max_bytes) < width[:, None]
    shifted = (raw & 0x7F).astype(np.int64) << (7 * np.arange(max_bytes, dtype=np.int64))
    value = np.where(used, shifted, 0).sum(axis=1)
    return (value >> 1) ^ -(value & 1), pos + width


_Run = tuple[int, int, int]  # first position, records, stride: equally long records


def _record_runs(
    data: memoryview, u8: npt.NDArray[np.uint8], count: int
) -> list[_Run | npt.NDArray[np.int64]]:
    """Where the records start: runs of equally long records, or arrays of starts. The length
    chain is sequential, so runs are found by speculation: the stride of a run's first record is
    checked against every later position at once (their length bytes must match)."""
    pieces: list[_Run | npt.NDArray[np.int64]] = []
    found = 0
    pos = 0
    end = u8.shape[0]
    while found < count:
        if pos >= end:
            raise InvalidRecordBatch(f"records end after {found} of {count} records")
        length, body = decode_varint(data, pos)
        stride = body - pos + length
        if length < 6 or pos + stride > end:
            raise InvalidRecordBatch(f"record length {length} out of bounds")
        k = min(count - found, (end - pos) // stride)
        rows = u8[pos : pos + k * stride].reshape(k, stride)
        differs = rows[:, 0] != rows[0, 0]
        for j in range(1, body - pos):  # column by column: 20x faster than any(axis=1) here
            differs |= rows[:, j] != rows[0, j]
        bad = np.flatnonzero(differs)
        run = int(bad[0]) if bad.size else k
        if run >= _MIN_RUN or run == k:
            pieces.append((pos, run, stride))
            found += run
            pos += run * stride
            continue
        walked = [pos]
        p = pos + stride
        while len(walked) < min(_WALK, count - found) and p < end:
            length, body = decode_varint(data, p)
            if length < 6:
                raise InvalidRecordBatch(f"record length {length} out of bounds")
            walked.append(p)
            p = body + length
        pieces.append(np.array(walked, dtype=np.int64))
        found += len(walked)
        pos = p
    if pos != end:
        raise InvalidRecordBatch(f"{end - pos} bytes left after the last of {count} records")
    return pieces


_Columns = tuple[
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint8],
    npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64],
]  # fmt: skip


def _column_varint(rows: npt.NDArray[np.uint8], c: int, width: int) -> npt.NDArray[np.int64] | None:
    """The zig-zag varints in columns ``c .. c + width`` of every row, or None unless every row
    has one of exactly that width there."""
    if c + width > rows.shape[1] or width > 9:  # 10-byte varlongs overflow int64: not here
        return None
    if any(int(rows[:, c + j].min()) < 0x80 for j in range(width - 1)):
        return None
    if int(rows[:, c + width - 1].max()) >= 0x80:
        return None
    v = rows[:, c].astype(np.int64) & 0x7F
    for j in range(1, width):
        v |= (rows[:, c + j].astype(np.int64) & 0x7F) << (7 * j)
    return (v >> 1) ^ -(v & 1)


def _equal_run_columns(data: memoryview, u8: npt.NDArray[np.uint8], run: _Run) -> _Columns | None:
    """Columns of a run of equally long records that also share their field layout (same
    varint widths, key and value lengths, no headers): column slices of a 2-D view, no
    gathers. None when the layout differs between them (the general path decodes them)."""
    first, n, stride = run
    rows = u8[first : first + n * stride].reshape(n, stride)
    at = first
    _, at = decode_varint(data, at)  # the length prefix: equal in every row of the run
    c = at - first
    attributes = rows[:, c].copy()
    fields = []
    at += 1
    for decode in (decode_varlong, decode_varint, decode_varint):  # timestamp/offset delta, key length
        _, nxt = decode(data, at)
        values = _column_varint(rows, at - first, nxt - at)
        if values is None:
            return None
        fields.append(values)
        at = nxt
    ts, od, klen = fields
    key_len = int(klen[0])
    if (klen != key_len).any():
        return None
    key_col = at - first
    at += max(key_len, 0)
    value_len, nxt = decode_varint(data, at)
    if _column_varint(rows, at - first, nxt - at) is None or nxt - first + max(value_len, 0) + 1 != stride:
        return None  # value lengths differ, or the record does not end with the header count
    value_col = nxt - first
    if int(rows[:, -1].max()) != 0:
        return None  # headers
    base = first + stride * np.arange(n, dtype=np.int64)
    return (
        od, ts, attributes, base + key_col, np.full(n, key_len, np.int64), base + value_col,
        np.full(n, value_len, np.int64),
    )  # fmt: skip


def _general_columns(u8: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64]) -> _Columns | None:
    """Columns of records at ``starts`` (any layout): varints decoded by gathers."""
    lengths, bodies = _varints(u8, starts, 5)
    ends = bodies + lengths
    attributes = u8[bodies]
    ts, p = _varints(u8, bodies + 1, 10)
    if (p - bodies > 10).any():
        return None  # a 10-byte timestamp delta overflows int64: the per-record decoder has it
    od, p = _varints(u8, p, 5)
    klen, p = _varints(u8, p, 5)
    kstart = p
    p = p + np.maximum(klen, 0)
    vlen, p = _varints(u8, np.minimum(p, ends - 1), 5)
    vstart = p
    p = p + np.maximum(vlen, 0)
    if (p >= ends).any() or (u8[np.minimum(p, u8.shape[0] - 1)] != 0).any():
        return None  # headers (or a malformed record): the per-record decoder handles it
    if (p + 1 != ends).any() or (klen < -1).any() or (vlen < -1).any():
        raise InvalidRecordBatch("record fields do not end where the record length says")
    return od, ts, attributes, kstart, klen, vstart, vlen


def record_columns(batch: RecordBatch) -> RecordColumns | None:
    """The records of an uncompressed batch whose records carry no headers, as columns; None
    for any other batch (use ``batch.records()``). Same checks as the record decoder on what it
    decodes (lengths inside the batch and chaining to its end, fields ending where the record
    says). Runs of records with one layout -- what producers of fixed-size records send -- are
    decoded from column slices of a 2-D view; others by gathers over their start positions."""
    count = batch.records_count
    if batch.compression_type != CompressionType.NONE or count <= 0:
        return None
    data = batch.records_data()
    u8 = np.frombuffer(data, dtype=np.uint8)
    parts = []
    for piece in _record_runs(data, u8, count):
        cols = None
        if isinstance(piece, tuple):
            cols = _equal_run_columns(data, u8, piece)
            if cols is None:
                first, n, stride = piece
                piece = first + stride * np.arange(n, dtype=np.int64)
        if cols is None:
            assert not isinstance(piece, tuple)
            cols = _general_columns(u8, piece)
            if cols is None:
                return None
        parts.append(cols)
    if len(parts) == 1:
        od, ts, attributes, kstart, klen, vstart, vlen = parts[0]
    else:
        od, ts, attributes, kstart, klen, vstart, vlen = (np.concatenate(c) for c in zip(*parts, strict=True))
    return RecordColumns(data, od, ts, attributes, kstart, klen, vstart, vlen)
