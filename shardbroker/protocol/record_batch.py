"""A zero-copy view of one v2 record batch, its records' decoder, and the broker's in-place patches.

Owns :class:`RecordBatch` (header fields read from the caller's buffer, checks, lazy record
decode), :func:`iter_batches` over a records blob, and :func:`assign_offsets` /
:func:`set_log_append_time`. The header's layout is :mod:`shardbroker.protocol.record_batch_header`;
after it come ``recordsCount`` records, compressed as one blob when attributes bits 0-2 are
non-zero. A record is ``length varint | attributes int8 | timestampDelta varlong | offsetDelta
varint | keyLength varint | key | valueLength varint | value | headersCount varint |
[headerKeyLength varint | headerKey | headerValueLength varint | headerValue]``; -1 lengths mean
null; varints are zig-zag LEB128 (:mod:`shardbroker.protocol.primitives`).

Why a view: the produce and fetch paths never re-encode records (DESIGN.md), so header fields
are ``struct.unpack_from`` on the caller's buffer, keys and values of uncompressed batches are
``memoryview`` slices of it, and records decode lazily. The broker's only edits on append, base
offset and partition leader epoch, lie outside the CRC-covered range, so the client's CRC stays
valid; LogAppendTime changes covered bytes, so :func:`set_log_append_time` recomputes the CRC.

Errors: :class:`InvalidRecordBatch` carries the Kafka error code to answer a Produce with:
CORRUPT_MESSAGE (2) for bytes that cannot be a batch (bad CRC, torn, length mismatch,
undecodable records), INVALID_RECORD (87) for a well-formed batch that breaks a produce rule
(offset deltas not 0..n-1, count mismatch, empty batch), UNSUPPORTED_COMPRESSION_TYPE (76) for
codec ids 5-7, UNSUPPORTED_FOR_MESSAGE_FORMAT (43) for magic 0/1.

Decoding is a Python loop per record (0.32 M records/s, docs/notes/records.md), special-cased
for 1- and 2-byte varints; readers that want line rate take :mod:`shardbroker.protocol.record_columns`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NamedTuple

from shardbroker.protocol.batch_scan import scan_batch_positions
from shardbroker.protocol.compression import (
    DEFAULT_MAX_DECOMPRESSED_SIZE,
    CompressionError,
    CompressionType,
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
    BytesLike,
    decode_varint,
    decode_varlong,
)
from shardbroker.protocol.record_batch_header import (
    ATTRIBUTES_OFFSET,
    BASE_OFFSET_OFFSET,
    BASE_SEQUENCE_OFFSET,
    BASE_TIMESTAMP_OFFSET,
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CONTROL_BIT,
    CRC_OFFSET,
    CRC_START,
    DELETE_HORIZON_BIT,
    HEADER,
    LAST_OFFSET_DELTA_OFFSET,
    LENGTH_OFFSET,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_OFFSET,
    MAX_TIMESTAMP_OFFSET,
    NO_SEQUENCE,
    PARTITION_LEADER_EPOCH_OFFSET,
    PRODUCER_EPOCH_OFFSET,
    PRODUCER_ID_OFFSET,
    RECORDS_COUNT_OFFSET,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
    TimestampType,
)

__all__ = [
    "Header",
    "InvalidRecordBatch",
    "Record",
    "RecordBatch",
    "assign_offsets",
    "decode_records",
    "iter_batches",
    "set_log_append_time",
    "split_batches",
]

_INT32_MAX: Final = 2**31 - 1
#: The attributes' low byte, which holds every bit in use.
_ATTRIBUTE_BITS: Final = ATTRIBUTES_OFFSET + 1


class InvalidRecordBatch(ProtocolError):
    """A record batch that cannot be accepted; ``error_code`` is the Kafka error to answer with."""

    def __init__(self, message: str, error_code: ErrorCode = ErrorCode.CORRUPT_MESSAGE) -> None:
        super().__init__(message, error_code)


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


def decode_records(
    data: memoryview, count: int, base_offset: int, base_timestamp: int, append_time: int | None
) -> Iterator[Record]:
    """Decode ``count`` records from ``data`` (a batch's records, decompressed); raises
    InvalidRecordBatch on any inconsistency. Timestamps are ``append_time`` when given."""
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
        return int(INT64.unpack_from(self._buf, BASE_OFFSET_OFFSET)[0])

    @property
    def batch_length(self) -> int:
        return int(INT32.unpack_from(self._buf, LENGTH_OFFSET)[0])

    @property
    def size(self) -> int:
        """Total size: LOG_OVERHEAD + batchLength."""
        return LOG_OVERHEAD + int(INT32.unpack_from(self._buf, LENGTH_OFFSET)[0])

    @property
    def partition_leader_epoch(self) -> int:
        return int(INT32.unpack_from(self._buf, PARTITION_LEADER_EPOCH_OFFSET)[0])

    @property
    def magic(self) -> int:
        return int(INT8.unpack_from(self._buf, MAGIC_OFFSET)[0])

    @property
    def crc(self) -> int:
        return int(UINT32.unpack_from(self._buf, CRC_OFFSET)[0])

    @property
    def attributes(self) -> int:
        return int(INT16.unpack_from(self._buf, ATTRIBUTES_OFFSET)[0])

    @property
    def compression_known(self) -> bool:
        return (self._buf[_ATTRIBUTE_BITS] & COMPRESSION_MASK) <= CompressionType.ZSTD

    @property
    def compression_type(self) -> CompressionType:
        """The codec; raises InvalidRecordBatch (UNSUPPORTED_COMPRESSION_TYPE) for ids 5-7."""
        cid = self._buf[_ATTRIBUTE_BITS] & COMPRESSION_MASK
        if cid > CompressionType.ZSTD:
            raise InvalidRecordBatch(
                f"unknown compression type id {cid}", ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
            )
        return CompressionType(cid)

    @property
    def is_compressed(self) -> bool:
        return bool(self._buf[_ATTRIBUTE_BITS] & COMPRESSION_MASK)

    @property
    def timestamp_type(self) -> TimestampType:
        if self._buf[_ATTRIBUTE_BITS] & TIMESTAMP_TYPE_BIT:
            return TimestampType.LOG_APPEND_TIME
        return TimestampType.CREATE_TIME

    @property
    def is_transactional(self) -> bool:
        return bool(self._buf[_ATTRIBUTE_BITS] & TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self._buf[_ATTRIBUTE_BITS] & CONTROL_BIT)

    @property
    def has_delete_horizon(self) -> bool:
        return bool(self._buf[_ATTRIBUTE_BITS] & DELETE_HORIZON_BIT)

    @property
    def last_offset_delta(self) -> int:
        return int(INT32.unpack_from(self._buf, LAST_OFFSET_DELTA_OFFSET)[0])

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.last_offset + 1

    @property
    def base_timestamp(self) -> int:
        return int(INT64.unpack_from(self._buf, BASE_TIMESTAMP_OFFSET)[0])

    @property
    def max_timestamp(self) -> int:
        return int(INT64.unpack_from(self._buf, MAX_TIMESTAMP_OFFSET)[0])

    @property
    def producer_id(self) -> int:
        return int(INT64.unpack_from(self._buf, PRODUCER_ID_OFFSET)[0])

    @property
    def producer_epoch(self) -> int:
        return int(INT16.unpack_from(self._buf, PRODUCER_EPOCH_OFFSET)[0])

    @property
    def base_sequence(self) -> int:
        return int(INT32.unpack_from(self._buf, BASE_SEQUENCE_OFFSET)[0])

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
        return int(INT32.unpack_from(self._buf, RECORDS_COUNT_OFFSET)[0])

    def header(self) -> tuple[int, int, int, int, int, int, int, int, int, int, int, int, int]:
        """All 13 header fields at once (one unpack), in layout order."""
        return HEADER.unpack_from(self._buf, 0)

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
                f"unknown compression type id {self._buf[_ATTRIBUTE_BITS] & COMPRESSION_MASK}",
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
        append_time = self.max_timestamp if self._buf[_ATTRIBUTE_BITS] & TIMESTAMP_TYPE_BIT else None
        data = self.records_data(max_size)
        try:
            yield from decode_records(data, count, self.base_offset, self.base_timestamp, append_time)
        except IndexError:
            raise InvalidRecordBatch("record runs past the end of the batch") from None
        except InvalidRecordBatch:
            raise
        except ProtocolError as exc:  # a malformed varint (primitives raise the codec's error)
            raise InvalidRecordBatch(str(exc)) from None

    def __iter__(self) -> Iterator[Record]:
        return self.records()


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
    INT64.pack_into(buf, position + BASE_OFFSET_OFFSET, base_offset)
    INT32.pack_into(buf, position + PARTITION_LEADER_EPOCH_OFFSET, partition_leader_epoch)


def set_log_append_time(buf: bytearray | memoryview, position: int, timestamp: int) -> None:
    """Turn the batch at ``position`` into LogAppendTime with maxTimestamp ``timestamp``.

    NOT CRC-neutral: attributes and maxTimestamp are covered by the CRC, so this recomputes the
    CRC over the whole batch (Kafka's DefaultRecordBatch.setMaxTimestamp does the same).
    Records' own timestamps are left alone: readers use maxTimestamp for every record.
    """
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    size = LOG_OVERHEAD + INT32.unpack_from(mv, position + LENGTH_OFFSET)[0]
    if size < BATCH_HEADER_SIZE or position + size > mv.nbytes:
        raise InvalidRecordBatch(f"batch at {position} declares {size} bytes, buffer too short")
    attributes = INT16.unpack_from(mv, position + ATTRIBUTES_OFFSET)[0]
    INT16.pack_into(mv, position + ATTRIBUTES_OFFSET, attributes | TIMESTAMP_TYPE_BIT)
    INT64.pack_into(mv, position + MAX_TIMESTAMP_OFFSET, timestamp)
    UINT32.pack_into(mv, position + CRC_OFFSET, crc32c(mv[position + CRC_START : position + size]))
