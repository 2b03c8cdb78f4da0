"""A fetched record batch made ready for the target, without decoding its records (pure).

The mirror passes batches through: compression, timestamps (and the LogAppendTime bit), keys,
values and headers stay byte for byte. What changes, all in the 61-byte header:

- ``baseOffset`` 0 and ``partitionLeaderEpoch`` -1: the target assigns both (outside the CRC).
- ``producerId``, ``producerEpoch``, ``baseSequence``: the mirror's own idempotent (or
  transactional) producer on the target, so a resent batch is recognised there as a duplicate.
- the transactional bit: set only when the mirror writes in a target transaction
  (``exactly.once.source.support``); a committed source transaction's batches become plain
  batches of the mirror's producer otherwise.
- the CRC-32C over attributes..end, recomputed (hardware CRC: about 10 GB/s, ~0.1 ms for a
  1 MiB batch).

The rewrite is done in place, in the buffer the Fetch answer was read into, when that buffer is
writable (the mirror's: client/receive_buffers.py): a copy of every batch cost the produce
thread more than the CRC (a fresh 1 MiB buffer per batch, first touch of its pages).

:func:`select_batches` is READ_COMMITTED's filter, as Kafka's consumer applies it to a Fetch
answer: control batches (transaction markers) are dropped, and so are the batches of aborted
transactions (FetchResponse ``aborted_transactions``: a producer id is aborted from the
transaction's first offset until its ABORT marker). Only control batches are decoded (one record).

Old message formats (magic 0 and 1) are refused, not converted: :class:`OldMessageFormat` names
the partition and the offset, and the mirror pauses that partition. Kafka 3+ writes only v2, and
converting would mean decoding every record, which the pass-through exists to avoid.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from shardbroker.protocol.batch_scan import scan_batch_positions
from shardbroker.protocol.control_records import ControlRecordType, control_record
from shardbroker.protocol.crc import Buffer, crc32c
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.record_batch import RecordBatch
from shardbroker.protocol.record_batch_header import (
    ATTRIBUTES_OFFSET,
    BATCH_HEADER_SIZE,
    CONTROL_BIT,
    CRC_OFFSET,
    CRC_START,
    HEADER,
    LOG_OVERHEAD,
    MAGIC,
    MAGIC_OFFSET,
    NO_PARTITION_LEADER_EPOCH,
    PRODUCER_ID_OFFSET,
    TIMESTAMP_TYPE_BIT,
    TRANSACTIONAL_BIT,
)

__all__ = [
    "OldMessageFormat",
    "Selection",
    "SourceBatch",
    "next_sequence",
    "rewrite_batch",
    "select_batches",
]

_PREFIX: Final = struct.Struct(">qii")  # baseOffset, batchLength, partitionLeaderEpoch
_ATTRIBUTES: Final = struct.Struct(">h")
_PRODUCER: Final = struct.Struct(">qhi")  # producerId, producerEpoch, baseSequence
_CRC: Final = struct.Struct(">I")
_INT32_MAX: Final = 0x7FFFFFFF


class OldMessageFormat(ProtocolError):
    """A magic 0/1 message set in the source log: not mirrored (see the module docstring)."""

    def __init__(self, magic: int, offset: int) -> None:
        super().__init__(
            f"message format v{magic} at offset {offset}: only record batches v2 (Kafka 0.11+) are "
            "mirrored; rewrite the topic with a v2 client or Kafka 3+ first",
            ErrorCode.UNSUPPORTED_VERSION,
        )


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """One batch to mirror: its bytes as fetched and what the loop needs from its header."""

    data: memoryview
    base_offset: int
    #: offset after the batch's last record
    next_offset: int
    records: int
    #: the batch's max timestamp (the append time with LogAppendTime), ms
    max_timestamp: int
    log_append_time: bool


@dataclass(slots=True)
class Selection:
    """What a Fetch answer for one partition yields from position ``start``: the batches to
    mirror, in order, and ``next_position`` (after every whole batch seen, dropped ones
    included, so markers and aborted transactions are passed over)."""

    start: int
    next_position: int
    batches: list[SourceBatch] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(b.records for b in self.batches)

    @property
    def nbytes(self) -> int:
        return sum(b.data.nbytes for b in self.batches)


def select_batches(records: Buffer, position: int, aborted: Iterable[tuple[int, int]] = ()) -> Selection:
    """READ_COMMITTED's batches of ``records`` (a Fetch answer's ``records`` for one partition)
    at or after ``position``; ``aborted`` is ``(producer_id, first_offset)`` pairs. A partial
    batch at the end (Fetch answers may end in one) is left for the next fetch."""
    mv = memoryview(records)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    out = Selection(position, position)
    if mv.nbytes > MAGIC_OFFSET and mv[MAGIC_OFFSET] != MAGIC:
        raise OldMessageFormat(mv[MAGIC_OFFSET], _PREFIX.unpack_from(mv, 0)[0])
    starts, end = scan_batch_positions(mv)
    pending = sorted(aborted, key=lambda a: a[1])
    aborting: set[int] = set()
    unpack = HEADER.unpack_from
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else end
        (base, _, _, magic, _, attributes, delta, _, max_ts, producer_id, _, _, count) = unpack(mv, start)
        if magic != MAGIC:
            raise OldMessageFormat(magic, base)
        last = base + delta
        if last < position:
            continue
        out.next_position = last + 1
        while pending and pending[0][1] <= last:
            aborting.add(pending.pop(0)[0])
        if attributes & CONTROL_BIT:
            if producer_id in aborting:
                marker = control_record(RecordBatch(mv[start:stop]))
                if marker.type == ControlRecordType.ABORT:
                    aborting.discard(producer_id)
            continue
        if count <= 0 or (attributes & TRANSACTIONAL_BIT and producer_id in aborting):
            continue
        out.batches.append(
            SourceBatch(mv[start:stop], base, last + 1, count, max_ts, bool(attributes & TIMESTAMP_TYPE_BIT))
        )
    return out


def rewrite_batch(
    batch: Buffer, producer_id: int, producer_epoch: int, base_sequence: int, *, transactional: bool
) -> memoryview:
    """``batch`` made ready for the target's producer (see the module docstring), CRC recomputed:
    in place when ``batch`` is writable, else in a copy. ``base_sequence`` wraps past 2**31-1 as
    Kafka's sequences do."""
    out = memoryview(batch).cast("B")
    if out.readonly:
        out = memoryview(bytearray(out))
    if out.nbytes < BATCH_HEADER_SIZE or LOG_OVERHEAD + _PREFIX.unpack_from(out, 0)[1] != out.nbytes:
        raise ProtocolError("not one whole record batch", ErrorCode.CORRUPT_MESSAGE)
    _PREFIX.pack_into(out, 0, 0, out.nbytes - LOG_OVERHEAD, NO_PARTITION_LEADER_EPOCH)
    attributes = _ATTRIBUTES.unpack_from(out, ATTRIBUTES_OFFSET)[0] & ~TRANSACTIONAL_BIT
    _ATTRIBUTES.pack_into(out, ATTRIBUTES_OFFSET, attributes | (TRANSACTIONAL_BIT if transactional else 0))
    _PRODUCER.pack_into(out, PRODUCER_ID_OFFSET, producer_id, producer_epoch, base_sequence & _INT32_MAX)
    _CRC.pack_into(out, CRC_OFFSET, crc32c(out[CRC_START:]))
    return out


def next_sequence(base_sequence: int, records: int) -> int:
    """The sequence after a batch of ``records`` starting at ``base_sequence`` (wraps to 0)."""
    return (base_sequence + records) & _INT32_MAX
