"""Validate produced record batches and assign their offsets in place (Kafka's LogValidator).

The one place that refuses a batch. Two layers: `check_produce_batch`, Kafka's Produce rules for
one partition's records, run by broker/leader_append.py before the log is touched (null or short
records, magic other than 2, not exactly one batch, codec ids 5-7), and on compacted topics
`check_record_keys` (every record has a key); then `validate_and_assign` (and
`check_single_batch`, its one-batch shortcut) when the log appends: framing, magic,
``max.message.bytes``, counts and offset deltas, sequences, control batches, CRC-32C and
``segment.bytes``. Each refusal is a StorageError carrying Kafka's error code.

Works on the batch header only (defined in shardbroker/protocol/record_batch_header.py; the
fields touched here, big-endian, from the batch start)::

     0 baseOffset int64          <- assigned here (not covered by the CRC)
     8 batchLength int32
    12 partitionLeaderEpoch int32 <- assigned here when the caller gives one (not covered by the CRC)
    16 magic int8                must be 2
    17 crc uint32                CRC-32C of bytes 21..end; recomputed only for LogAppendTime
    21 attributes int16          bits 0-2 codec (0-4), 3 timestamp type, 4 transactional, 5 control
    23 lastOffsetDelta int32     must equal recordsCount - 1
    35 maxTimestamp int64        <- set to the append time for LogAppendTime topics
    43 producerId int64 | 51 producerEpoch int16 | 53 baseSequence int32 | 57 recordsCount int32

Every check runs over every batch before anything is patched or written, so a refused append
leaves the log untouched. A Python loop over ``struct.unpack_from`` rather than the numpy
``scan_batches``: 0.3 us a header against 66 us for one batch (docs/notes/replica-manager.md).
Records inside batches are decoded only for compacted topics, by `check_record_keys`: the one
per-record check.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final, TypeAlias

import numpy as np
from crc32c import crc32c as _hw_crc32c

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.batch_scan import scan_batches
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.primitives import decode_varint
from shardbroker.protocol.record_batch import RecordBatch
from shardbroker.protocol.record_batch_header import (
    ATTRIBUTES_OFFSET,
    BASE_OFFSET_OFFSET,
    BATCH_HEADER_SIZE,
    COMPRESSION_MASK,
    CONTROL_BIT,
    CRC_OFFSET,
    CRC_START,
    HEADER,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_OFFSET,
    MAX_TIMESTAMP_OFFSET,
    MIN_BATCH_LENGTH,
    PARTITION_LEADER_EPOCH_OFFSET,
    TIMESTAMP_TYPE_BIT,
)
from shardbroker.protocol.record_columns import record_columns
from shardbroker.storage.errors import (
    CorruptRecordError,
    InvalidRecordError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    RecordValidationError,
    StorageError,
    UnsupportedCompressionTypeError,
    UnsupportedForMessageFormatError,
)

#: The ``crc32c`` package called directly (what shardbroker.protocol.crc.crc32c wraps): the
#: wrapper's extra Python frame was ~0.3 us per batch on the append path.
_crc32c = _hw_crc32c

__all__ = [
    "AppendBatches",
    "Buffer",
    "check_produce_batch",
    "check_record_keys",
    "check_single_batch",
    "header_error",
    "pack_epoch",
    "pack_offset",
    "set_append_time",
    "validate_and_assign",
]

Buffer: TypeAlias = bytes | bytearray | memoryview

#: zstd; codec ids 5-7 are not codecs.
_MAX_CODEC: Final = int(CompressionType.ZSTD)
_pack_q = pack_offset = struct.Struct(">q").pack_into
_pack_i = pack_epoch = struct.Struct(">i").pack_into
_pack_I = struct.Struct(">I").pack_into
_pack_h = struct.Struct(">h").pack_into


class AppendBatches:
    """The batches of one append, patched and ready to write, with what indexes need.

    A plain ``__slots__`` class of parallel lists, built once per append (so its construction cost
    counts; the one-batch path fills it without building empty lists first).
    """

    __slots__ = (
        "attributes",
        "base_offsets",
        "base_sequences",
        "chunks",
        "last_offsets",
        "max_timestamps",
        "positions",
        "producer_epochs",
        "producer_ids",
        "record_counts",
        "sizes",
        "total_bytes",
    )

    def __init__(self, chunks: list[memoryview]) -> None:
        self.chunks = chunks
        self.positions: list[int] = []  # relative to the start of the append
        self.sizes: list[int] = []
        self.base_offsets: list[int] = []
        self.last_offsets: list[int] = []
        self.max_timestamps: list[int] = []
        self.producer_ids: list[int] = []
        self.producer_epochs: list[int] = []
        self.base_sequences: list[int] = []
        self.record_counts: list[int] = []
        self.attributes: list[int] = []
        self.total_bytes = 0

    @property
    def first_offset(self) -> int:
        return self.base_offsets[0]

    @property
    def last_offset(self) -> int:
        return self.last_offsets[-1]


_BUFFER_TYPES: Final = frozenset({bytearray, memoryview, bytes})


def _new_batches() -> AppendBatches:
    """An AppendBatches whose lists the caller sets (skips building ten empty lists)."""
    return AppendBatches.__new__(AppendBatches)


def _writable(buf: Buffer) -> memoryview:
    mv = memoryview(buf)
    if mv.readonly:  # a copy: callers that own a receive buffer pass it writable and skip this
        mv = memoryview(bytearray(mv))
    return mv.cast("B") if mv.format != "B" or mv.ndim != 1 else mv


def header_error(
    pos: int,
    n: int,
    size: int,
    magic: int,
    attrs: int,
    lod: int,
    pid: int,
    seq: int,
    count: int,
    max_message_bytes: int,
    allow_control: bool,
) -> StorageError | None:
    """What is wrong with a batch header (framing first, like Kafka), or None."""
    if size < BATCH_HEADER_SIZE or pos + size > n:
        return CorruptRecordError(
            f"batch length {size - LOG_OVERHEAD} at byte {pos} runs past the data ({n} bytes)"
        )
    if magic != MAGIC:
        return UnsupportedForMessageFormatError(f"magic {magic}: only record batch v2 is stored")
    if size > max_message_bytes:
        return RecordTooLargeError(f"batch of {size} bytes exceeds max.message.bytes {max_message_bytes}")
    if count <= 0 or lod != count - 1:
        return InvalidRecordError(f"lastOffsetDelta {lod} does not match record count {count}")
    if pid >= 0 and seq < 0 and not attrs & CONTROL_BIT:  # markers carry the pid, sequence -1
        return InvalidRecordError(f"invalid sequence number {seq} for producer id {pid}")
    if attrs & CONTROL_BIT and not allow_control:
        return InvalidRecordError("control batches may only be written by the coordinator")
    return None


def check_produce_batch(records: Buffer | None) -> tuple[int, ...]:
    """Kafka's Produce rules for one partition's records, before the log is touched (so they win
    over an offline log): exactly one record batch v2 (ProduceRequest v3+), a known codec.
    Transactional batches are accepted (Kafka before KIP-890 part 2: the producer state opens the
    transaction; whether the partition was added to it is not checked). Returns the unpacked header;
    :func:`validate_and_assign` checks the rest when the log appends. One combined test on the
    hot path, :func:`_produce_refusal` only to name what failed."""
    if records is not None:
        n = len(records)
        if n >= BATCH_HEADER_SIZE:
            f = HEADER.unpack_from(records, 0)
            if f[3] == MAGIC and f[1] + LOG_OVERHEAD == n and f[5] & COMPRESSION_MASK <= _MAX_CODEC:
                return f
    raise _produce_refusal(records)


def _produce_refusal(records: Buffer | None) -> StorageError:
    """What breaks `check_produce_batch`'s rules, in Kafka's order: framing and magic first."""
    if records is None:
        return InvalidRecordError("null records")
    n = len(records)
    if n < BATCH_HEADER_SIZE:
        if n > MAGIC_OFFSET and records[MAGIC_OFFSET] in (0, 1):
            return UnsupportedForMessageFormatError(
                f"message format v{records[MAGIC_OFFSET]} is not supported: use record batch v2"
            )
        cls = CorruptRecordError if n else InvalidRecordError
        return cls(f"{n} bytes cannot hold a record batch")
    (_, length, _, magic, _, attrs, _, _, _, _, _, _, _) = HEADER.unpack_from(records, 0)
    if magic != MAGIC:
        if magic in (0, 1):
            return UnsupportedForMessageFormatError(
                f"message format v{magic} is not supported: use record batch v2"
            )
        return CorruptRecordError(f"invalid magic {magic}")
    if length + LOG_OVERHEAD != n:
        if length + LOG_OVERHEAD < n and length >= MIN_BATCH_LENGTH:
            return InvalidRecordError("Produce v3+ must carry exactly one record batch per partition")
        return CorruptRecordError(f"batch declares {length + LOG_OVERHEAD} bytes but {n} were sent")
    assert attrs & COMPRESSION_MASK > _MAX_CODEC
    return UnsupportedCompressionTypeError(f"unknown compression type id {attrs & COMPRESSION_MASK}")


def check_record_keys(
    records: Buffer, f: tuple[int, ...], cfg: LogConfig, topic: str, partition: int
) -> None:
    """A compacted topic's rule (Kafka's LogValidator.validateKey): every record of the batch
    ``records`` (header ``f``, from :func:`check_produce_batch`) has a key, else the whole batch
    is refused, RecordValidationError (INVALID_RECORD, 87) listing the index of each keyless
    record with Kafka's messages. Control batches are the coordinator's (and have keys).

    Kafka refuses a batch for its header, size or CRC before looking at its records, so a
    refusal here is first checked against those (:func:`check_single_batch`): a damaged batch
    is answered CORRUPT_MESSAGE, not a key error made up from damaged bytes. Records that do not
    decode are CORRUPT_MESSAGE too.

    Cost: what ``ReplicaManager.append`` of one uncompressed batch of keyed 100 B records takes on
    a compacted topic against a ``delete`` one (in-process, best of 5, a 2-core machine): 1
    record 6.2 / 4.2 us, 5 records 8.0 / 4.7 us, 100 records 49 / 12 us, 1,000 records 0.43 /
    0.04 ms, 2,047 records 0.88 / 0.08 ms (the walk), 2,048 records 0.63 / 0.08 ms and 8,000
    records (1 MiB) 1.8 / 0.3 ms (record_columns); 30,000 records of 10 B 5.0 / 1.0 ms. Topics
    that do not compact never come here: their produce is unchanged (4.31 against 4.30 us a
    1-record batch, medians of 6 interleaved runs before and after this check existed)."""
    if f[5] & CONTROL_BIT:
        return
    mv = memoryview(records)
    error: StorageError
    try:
        keyless = _keyless_records(mv, f[12])
        if not keyless:
            return
        why = f"Compacted topic cannot accept message without key in topic partition {topic}-{partition}"
        errors = [(i, why) for i in keyless]
        shown = ", ".join(f"RecordError(batchIndex={i}, message='{why}')" for i, _ in errors[:3])
        error = RecordValidationError(
            f"One or more records have been rejected due to {len(errors)} record errors in total, "
            f"and only showing the first three errors at most: [{shown}]",
            errors,
        )
    except (ProtocolError, IndexError) as exc:  # InvalidRecordBatch, a bad varint, a record overrun
        error = CorruptRecordError(f"records do not decode: {exc}")
    check_single_batch(mv, f, cfg.max_message_bytes, cfg.segment_bytes, True, False)
    raise error


#: From this many records on, a batch's keys are read by the vectorised record decoder, whose
#: fixed cost (0.1-0.4 ms for one batch, more when records differ in size) the Python walk's
#: ~0.4 us a record repays at 1,000-3,000 records (timeit, keyed records of 10 and 100 B).
_COLUMNS_MIN_RECORDS: Final = 2048


def _keyless_records(batch: memoryview, count: int) -> list[int]:
    """The indexes of the records of one whole batch (``count`` of them) whose key is null.

    Batches of fewer than ``_COLUMNS_MIN_RECORDS`` records are walked in Python, reading only
    each record's length, the two deltas' widths and the key length (layout in
    shardbroker/protocol/record_batch.py); a null key is the one-byte zig-zag varint -1, 0x01
    (Kafka writes varints in their shortest form). Larger ones go through ``record_columns``,
    which decodes (and checks) every field of every record at once: 10,000 records of 100 B in
    2.0 ms against 3.9 ms walked, 40,000 records of 10 B in 5.2 against 9.0 ms. Both decompress
    compressed batches first."""
    if count >= _COLUMNS_MIN_RECORDS:
        keys = record_columns(batch, scan_batches(batch)).key_lengths
        return [int(i) for i in np.flatnonzero(keys < 0)]
    data = RecordBatch(batch).records_data()
    keyless = []
    pos = 0
    for i in range(count):
        b = data[pos]
        if b < 0x80 and not b & 1:  # a record shorter than 64 bytes: its length is one byte
            length = b >> 1
            pos += 1
        else:
            length, pos = decode_varint(data, pos)
            if length < 0:
                raise ProtocolError(f"record {i} has length {length}")
        p = pos + 1  # past the attributes
        while data[p] & 0x80:  # timestampDelta
            p += 1
        p += 1
        while data[p] & 0x80:  # offsetDelta
            p += 1
        if data[p + 1] == 1:
            keyless.append(i)
        pos += length
    if pos != data.nbytes:
        raise ProtocolError(f"{count} records take {pos} bytes, the batch has {data.nbytes}")
    return keyless


def check_single_batch(
    mv: memoryview,
    f: tuple[int, ...],
    max_message_bytes: int,
    segment_bytes: int,
    verify_crc: bool,
    allow_control: bool,
) -> None:
    """Every check of a buffer ``mv`` holding exactly one whole batch with header ``f`` (the
    common produce case): one cheap combined test, :func:`header_error` only to name what
    failed, then the CRC and ``segment.bytes``."""
    (_, length, _, magic, crc, attrs, lod, _, _, pid, _, seq, count) = f
    size = length + LOG_OVERHEAD
    if (
        magic != MAGIC
        or size > max_message_bytes
        or count <= 0
        or lod != count - 1
        or (pid >= 0 and seq < 0 and not attrs & CONTROL_BIT)
        or (attrs & CONTROL_BIT and not allow_control)
    ):
        err = header_error(
            0, size, size, magic, attrs, lod, pid, seq, count, max_message_bytes, allow_control
        )
        assert err is not None
        raise err
    if verify_crc and _crc32c(mv[CRC_START:]) != crc:
        raise CorruptRecordError("CRC mismatch in batch at byte 0")
    if size > segment_bytes:
        raise RecordBatchTooLargeError(f"append of {size} bytes exceeds segment.bytes {segment_bytes}")


def validate_and_assign(
    data: Buffer | Sequence[Buffer],
    next_offset: int,
    *,
    max_message_bytes: int,
    segment_bytes: int,
    verify_crc: bool = True,
    log_append_time_ms: int | None = None,
    leader_epoch: int | None = None,
    allow_control: bool = False,
) -> AppendBatches:
    """Check every batch, then give them offsets ``next_offset, ...`` in place.

    Raises CorruptRecordError (2), RecordTooLargeError (10), RecordBatchTooLargeError (18),
    UnsupportedForMessageFormatError (43) or InvalidRecordError (87) before patching anything.
    """
    if type(data) in _BUFFER_TYPES or isinstance(data, bytes | bytearray | memoryview):
        mv = _writable(data)  # type: ignore[arg-type]
        n = mv.nbytes
        if n >= BATCH_HEADER_SIZE:
            f = HEADER.unpack_from(mv, 0)
            if f[1] + LOG_OVERHEAD == n:
                return _one_batch(
                    mv,
                    f,
                    next_offset,
                    max_message_bytes,
                    segment_bytes,
                    verify_crc,
                    log_append_time_ms,
                    leader_epoch,
                    allow_control,
                )
        chunks = [mv]
    else:
        chunks = [_writable(b) for b in data]
    out = AppendBatches(chunks)
    unpack = HEADER.unpack_from
    rel = 0
    for mv in chunks:
        n = mv.nbytes
        pos = 0
        if n == 0:
            raise CorruptRecordError("empty record set")
        while pos < n:
            if n - pos < BATCH_HEADER_SIZE:
                raise CorruptRecordError(f"{n - pos} trailing bytes are not a whole batch header")
            (_, length, _, magic, crc, attrs, lod, _, max_ts, pid, epoch, seq, count) = unpack(mv, pos)
            size = length + LOG_OVERHEAD
            err = header_error(
                pos, n, size, magic, attrs, lod, pid, seq, count, max_message_bytes, allow_control
            )
            if err is not None:
                raise err
            if verify_crc and _crc32c(mv[pos + CRC_START : pos + size]) != crc:
                raise CorruptRecordError(f"CRC mismatch in batch at byte {pos}")
            out.positions.append(rel + pos)
            out.sizes.append(size)
            out.max_timestamps.append(max_ts)
            out.producer_ids.append(pid)
            out.producer_epochs.append(epoch)
            out.base_sequences.append(seq)
            out.record_counts.append(count)
            out.attributes.append(attrs)
            pos += size
        rel += n
    if rel > segment_bytes:
        raise RecordBatchTooLargeError(f"append of {rel} bytes exceeds segment.bytes {segment_bytes}")
    out.total_bytes = rel
    # All checks passed: patch.
    offset = next_offset
    i = 0
    for mv in chunks:
        n = mv.nbytes
        pos = 0
        while pos < n:
            size = out.sizes[i]
            _pack_q(mv, pos + BASE_OFFSET_OFFSET, offset)
            if leader_epoch is not None:
                _pack_i(mv, pos + PARTITION_LEADER_EPOCH_OFFSET, leader_epoch)
            if log_append_time_ms is not None:
                out.attributes[i] = set_append_time(mv, pos, size, out.attributes[i], log_append_time_ms)
                out.max_timestamps[i] = log_append_time_ms
            count = out.record_counts[i]
            out.base_offsets.append(offset)
            out.last_offsets.append(offset + count - 1)
            offset += count
            pos += size
            i += 1
    return out


def set_append_time(mv: memoryview, pos: int, size: int, attrs: int, now_ms: int) -> int:
    """LogAppendTime: timestamp type bit, maxTimestamp = now, and a new CRC (both are under it)."""
    attrs |= TIMESTAMP_TYPE_BIT
    _pack_h(mv, pos + ATTRIBUTES_OFFSET, attrs)
    _pack_q(mv, pos + MAX_TIMESTAMP_OFFSET, now_ms)
    _pack_I(mv, pos + CRC_OFFSET, _crc32c(mv[pos + CRC_START : pos + size]))
    return attrs


def _one_batch(
    mv: memoryview,
    f: tuple[int, ...],
    offset: int,
    max_message_bytes: int,
    segment_bytes: int,
    verify_crc: bool,
    log_append_time_ms: int | None,
    leader_epoch: int | None,
    allow_control: bool,
) -> AppendBatches:
    """One buffer holding one batch: the same checks with fewer Python steps (validation of a
    16 KiB batch, CRC included: 4.7 -> 3.1 us)."""
    check_single_batch(mv, f, max_message_bytes, segment_bytes, verify_crc, allow_control)
    (_, length, _, _, _, attrs, _, _, max_ts, pid, epoch, seq, count) = f
    size = length + LOG_OVERHEAD
    _pack_q(mv, BASE_OFFSET_OFFSET, offset)
    if leader_epoch is not None:
        _pack_i(mv, PARTITION_LEADER_EPOCH_OFFSET, leader_epoch)
    if log_append_time_ms is not None:
        attrs = set_append_time(mv, 0, size, attrs, log_append_time_ms)
        max_ts = log_append_time_ms
    out = _new_batches()
    out.chunks = [mv]
    out.positions = [0]
    out.sizes = [size]
    out.base_offsets = [offset]
    out.last_offsets = [offset + count - 1]
    out.max_timestamps = [max_ts]
    out.producer_ids = [pid]
    out.producer_epochs = [epoch]
    out.base_sequences = [seq]
    out.record_counts = [count]
    out.attributes = [attrs]
    out.total_bytes = size
    return out
