"""The v2 record batch header (Kafka's DefaultRecordBatch): its one definition in shardbroker.

Layout (Kafka docs/implementation.html section 5.3.1), big-endian, byte offsets from the batch
start::

     0 baseOffset int64 | 8 batchLength int32 (bytes after this field) | 12 partitionLeaderEpoch int32
    16 magic int8 | 17 crc uint32 (CRC-32C of bytes 21..end) | 21 attributes int16
    23 lastOffsetDelta int32 | 27 baseTimestamp int64 | 35 maxTimestamp int64 | 43 producerId int64
    51 producerEpoch int16 | 53 baseSequence int32 | 57 recordsCount int32 | 61 records

Attributes: bits 0-2 the compression codec (0 none .. 4 zstd; 5-7 name no codec), bit 3 the
timestamp type (1: LogAppendTime, maxTimestamp holds it for every record), bit 4 transactional,
bit 5 control (a transaction marker), bit 6 delete horizon set (compacted logs).

Invariants: baseOffset and partitionLeaderEpoch lie before the CRC-covered range (``CRC_START``
to the end of the batch), so the broker assigns them without touching the CRC; any other edit
needs a new CRC. The sentinels are Kafka's RecordBatch constants.

Why one module: the header was once spelled out as a ``struct`` format in three modules and a
numpy dtype in a fourth, with the attribute bits in three; every reader of these bytes (record
batch view and builder, vectorised scan, log validator, replica manager) now imports them here.
"""

from __future__ import annotations

import struct
from enum import IntEnum
from typing import Final

import numpy as np

__all__ = [
    "ATTRIBUTES_OFFSET",
    "BASE_OFFSET_OFFSET",
    "BASE_SEQUENCE_OFFSET",
    "BASE_TIMESTAMP_OFFSET",
    "BATCH_HEADER_SIZE",
    "COMPRESSION_MASK",
    "CONTROL_BIT",
    "CRC_COVERED_HEADER",
    "CRC_OFFSET",
    "CRC_START",
    "DELETE_HORIZON_BIT",
    "HEADER",
    "HEADER_DTYPE",
    "HEADER_PREFIX",
    "LAST_OFFSET_DELTA_OFFSET",
    "LENGTH_OFFSET",
    "LOG_OVERHEAD",
    "MAGIC",
    "MAGIC_OFFSET",
    "MAX_TIMESTAMP_OFFSET",
    "MIN_BATCH_LENGTH",
    "NO_PARTITION_LEADER_EPOCH",
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "NO_SEQUENCE",
    "NO_TIMESTAMP",
    "PARTITION_LEADER_EPOCH_OFFSET",
    "PRODUCER_EPOCH_OFFSET",
    "PRODUCER_ID_OFFSET",
    "RECORDS_COUNT_OFFSET",
    "TIMESTAMP_TYPE_BIT",
    "TRANSACTIONAL_BIT",
    "TimestampType",
]

#: The only record batch format stored and accepted.
MAGIC: Final = 2

# Field offsets (Kafka's DefaultRecordBatch names).
BASE_OFFSET_OFFSET: Final = 0
LENGTH_OFFSET: Final = 8
PARTITION_LEADER_EPOCH_OFFSET: Final = 12
MAGIC_OFFSET: Final = 16
CRC_OFFSET: Final = 17
ATTRIBUTES_OFFSET: Final = 21
LAST_OFFSET_DELTA_OFFSET: Final = 23
BASE_TIMESTAMP_OFFSET: Final = 27
MAX_TIMESTAMP_OFFSET: Final = 35
PRODUCER_ID_OFFSET: Final = 43
PRODUCER_EPOCH_OFFSET: Final = 51
BASE_SEQUENCE_OFFSET: Final = 53
RECORDS_COUNT_OFFSET: Final = 57

#: baseOffset (8) + batchLength (4): the bytes before what batchLength counts (Kafka's LOG_OVERHEAD).
LOG_OVERHEAD: Final = 12
#: Bytes before the first record (Kafka's RECORD_BATCH_OVERHEAD).
BATCH_HEADER_SIZE: Final = 61
#: Smallest legal batchLength: a header with no records.
MIN_BATCH_LENGTH: Final = BATCH_HEADER_SIZE - LOG_OVERHEAD
#: The first byte the CRC covers (attributes); it covers everything to the end of the batch.
CRC_START: Final = ATTRIBUTES_OFFSET

#: All 13 fields, baseOffset .. recordsCount, in layout order.
HEADER: Final = struct.Struct(">qiibIhiqqqhii")
#: The fields before the CRC: baseOffset, batchLength, partitionLeaderEpoch, magic.
HEADER_PREFIX: Final = struct.Struct(">qiib")
#: The CRC-covered fields: attributes .. recordsCount.
CRC_COVERED_HEADER: Final = struct.Struct(">hiqqqhii")

#: The header as a numpy structured dtype (big-endian fields at their byte offsets), for reading
#: the headers of many batches at once.
HEADER_DTYPE: Final = np.dtype(
    {
        "names": [
            "base_offset",
            "batch_length",
            "partition_leader_epoch",
            "magic",
            "crc",
            "attributes",
            "last_offset_delta",
            "base_timestamp",
            "max_timestamp",
            "producer_id",
            "producer_epoch",
            "base_sequence",
            "records_count",
        ],
        "formats": [">i8", ">i4", ">i4", "i1", ">u4", ">i2", ">i4", ">i8", ">i8", ">i8", ">i2", ">i4", ">i4"],
        "offsets": [
            BASE_OFFSET_OFFSET,
            LENGTH_OFFSET,
            PARTITION_LEADER_EPOCH_OFFSET,
            MAGIC_OFFSET,
            CRC_OFFSET,
            ATTRIBUTES_OFFSET,
            LAST_OFFSET_DELTA_OFFSET,
            BASE_TIMESTAMP_OFFSET,
            MAX_TIMESTAMP_OFFSET,
            PRODUCER_ID_OFFSET,
            PRODUCER_EPOCH_OFFSET,
            BASE_SEQUENCE_OFFSET,
            RECORDS_COUNT_OFFSET,
        ],
        "itemsize": BATCH_HEADER_SIZE,
    }
)

# Attribute bits (implementation.html 5.3.1).
COMPRESSION_MASK: Final = 0x07
TIMESTAMP_TYPE_BIT: Final = 0x08
TRANSACTIONAL_BIT: Final = 0x10
CONTROL_BIT: Final = 0x20
DELETE_HORIZON_BIT: Final = 0x40

# Sentinels from Kafka's RecordBatch interface.
NO_TIMESTAMP: Final = -1
NO_PRODUCER_ID: Final = -1
NO_PRODUCER_EPOCH: Final = -1
NO_SEQUENCE: Final = -1
NO_PARTITION_LEADER_EPOCH: Final = -1


class TimestampType(IntEnum):
    """Attributes bit 3."""

    CREATE_TIME = 0
    LOG_APPEND_TIME = 1
