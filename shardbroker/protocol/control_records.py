"""Control records: the transaction markers (commit, abort) in control batches.

Owns :class:`ControlRecord` and :func:`build_control_batch`. A control batch has attributes
transactional + control and one record: key ``version int16 | type int16``, value ``version int16
| coordinatorEpoch int32`` (Kafka's ControlRecordType and EndTransactionMarker). Markers carry
the producer id and epoch, and baseSequence -1 (NO_SEQUENCE).
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import NamedTuple

from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import InvalidRecordBatch, Record, RecordBatch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import NO_PARTITION_LEADER_EPOCH, NO_SEQUENCE

__all__ = ["ControlRecord", "ControlRecordType", "build_control_batch", "control_record"]


class ControlRecordType(IntEnum):
    """Control record key ``type`` (Kafka's ControlRecordType)."""

    ABORT = 0
    COMMIT = 1


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


def control_record(batch: RecordBatch) -> ControlRecord:
    """The control record of a control batch (its only record)."""
    if not batch.is_control:
        raise InvalidRecordBatch("not a control batch", ErrorCode.INVALID_RECORD)
    for rec in batch.records():
        return ControlRecord.from_record(rec)
    raise InvalidRecordBatch("control batch has no records", ErrorCode.INVALID_RECORD)


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
