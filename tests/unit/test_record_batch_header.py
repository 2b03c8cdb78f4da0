"""The one definition of the v2 batch header: its struct, offsets, dtype and sizes agree."""

from __future__ import annotations

import struct

import numpy as np

from shardbroker.protocol import record_batch_header as h

#: Kafka's DefaultRecordBatch field order and widths.
FIELDS = (
    ("BASE_OFFSET_OFFSET", "q"),
    ("LENGTH_OFFSET", "i"),
    ("PARTITION_LEADER_EPOCH_OFFSET", "i"),
    ("MAGIC_OFFSET", "b"),
    ("CRC_OFFSET", "I"),
    ("ATTRIBUTES_OFFSET", "h"),
    ("LAST_OFFSET_DELTA_OFFSET", "i"),
    ("BASE_TIMESTAMP_OFFSET", "q"),
    ("MAX_TIMESTAMP_OFFSET", "q"),
    ("PRODUCER_ID_OFFSET", "q"),
    ("PRODUCER_EPOCH_OFFSET", "h"),
    ("BASE_SEQUENCE_OFFSET", "i"),
    ("RECORDS_COUNT_OFFSET", "i"),
)


def test_offsets_follow_the_field_widths() -> None:
    fmt = ">"
    for name, code in FIELDS:
        assert getattr(h, name) == struct.calcsize(fmt), name
        fmt += code
    assert fmt == h.HEADER.format
    assert h.HEADER.size == h.BATCH_HEADER_SIZE == 61
    assert h.LOG_OVERHEAD == h.LENGTH_OFFSET + 4
    assert h.MIN_BATCH_LENGTH == h.BATCH_HEADER_SIZE - h.LOG_OVERHEAD


def test_prefix_and_crc_covered_part_make_the_header() -> None:
    assert h.HEADER_PREFIX.size == h.CRC_OFFSET
    assert h.CRC_START == h.ATTRIBUTES_OFFSET == h.CRC_OFFSET + 4
    assert h.CRC_START + h.CRC_COVERED_HEADER.size == h.BATCH_HEADER_SIZE
    assert ">" + h.HEADER_PREFIX.format[1:] + "I" + h.CRC_COVERED_HEADER.format[1:] == h.HEADER.format


def test_dtype_reads_what_the_struct_reads() -> None:
    values = (5, 49, 7, 2, 0xDEADBEEF, 0x35, 0, 1000, 2000, 42, 3, 9, 1)
    raw = h.HEADER.pack(*values)
    parsed = np.frombuffer(raw, dtype=h.HEADER_DTYPE)[0]
    assert tuple(int(parsed[name]) for name in h.HEADER_DTYPE.names or ()) == values
    assert h.HEADER_DTYPE.itemsize == h.BATCH_HEADER_SIZE


def test_attribute_bits_are_kafkas() -> None:
    assert (h.COMPRESSION_MASK, h.TIMESTAMP_TYPE_BIT, h.TRANSACTIONAL_BIT) == (0x07, 0x08, 0x10)
    assert (h.CONTROL_BIT, h.DELETE_HORIZON_BIT) == (0x20, 0x40)
    assert h.NO_PRODUCER_ID == h.NO_PRODUCER_EPOCH == h.NO_SEQUENCE == h.NO_TIMESTAMP == -1
