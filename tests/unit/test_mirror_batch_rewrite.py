"""batch_rewrite: READ_COMMITTED selection and the pass-through rewrite (decoded back with the
record batch reader)."""

from __future__ import annotations

import struct

import pytest

from shardbroker.mirror.batch_rewrite import OldMessageFormat, next_sequence, rewrite_batch, select_batches
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.record_batch import RecordBatch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import TimestampType


def _batch(
    base: int,
    n: int,
    *,
    compression: CompressionType = CompressionType.NONE,
    producer_id: int = -1,
    transactional: bool = False,
    timestamp_type: TimestampType = TimestampType.CREATE_TIME,
) -> bytes:
    b = RecordBatchBuilder(
        compression=compression,
        base_offset=base,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        is_transactional=transactional,
        timestamp_type=timestamp_type,
    )
    for i in range(n):
        b.append(
            b"value-%d" % (base + i),
            key=b"k%d" % i,
            timestamp=1_700_000_000_000 + i,
            headers=[("h", b"%d" % i)],
        )
    return b.build()


def _marker(offset: int, producer_id: int, kind: ControlRecordType) -> bytes:
    return build_control_batch(
        kind, producer_id=producer_id, producer_epoch=0, coordinator_epoch=1, base_offset=offset
    )


def _decoded(data: bytes | bytearray) -> list[tuple[object, ...]]:
    return [
        (
            r.timestamp,
            bytes(r.key or b""),
            bytes(r.value or b""),
            [(h.key, bytes(h.value or b"")) for h in r.headers],
        )
        for r in RecordBatch(data).records()
    ]


@pytest.mark.parametrize("compression", list(CompressionType))
def test_rewrite_keeps_records_and_compression_and_sets_producer_fields(compression: CompressionType) -> None:
    original = _batch(500, 7, compression=compression, producer_id=42, transactional=True)
    out = rewrite_batch(original, 9001, 3, 1234, transactional=False)
    batch = RecordBatch(out)
    batch.validate()  # CRC, size, records
    assert batch.base_offset == 0 and batch.partition_leader_epoch == -1
    assert (batch.producer_id, batch.producer_epoch, batch.base_sequence) == (9001, 3, 1234)
    assert not batch.is_transactional
    assert batch.compression_type == compression
    assert _decoded(out) == _decoded(original)
    assert RecordBatch(rewrite_batch(original, 1, 0, 0, transactional=True)).is_transactional


def test_rewrite_is_in_place_in_a_writable_buffer_and_copies_a_read_only_one() -> None:
    original = _batch(500, 7, producer_id=42)
    fetched = bytearray(b"....." + original + b"...")
    view = memoryview(fetched)[5 : 5 + len(original)]
    out = rewrite_batch(view, 9001, 3, 1234, transactional=False)
    assert out.obj is fetched and fetched[:5] == b"....." and fetched[-3:] == b"..."
    RecordBatch(bytes(fetched[5:-3])).validate()
    assert RecordBatch(bytes(fetched[5:-3])).producer_id == 9001
    copied = rewrite_batch(original, 9001, 3, 1234, transactional=False)
    assert bytes(copied) == bytes(out) and RecordBatch(original).producer_id == 42


def test_rewrite_keeps_log_append_time_and_rejects_partial_batches() -> None:
    original = _batch(0, 3, timestamp_type=TimestampType.LOG_APPEND_TIME)
    out = RecordBatch(rewrite_batch(original, 1, 0, 0, transactional=False))
    assert out.timestamp_type == TimestampType.LOG_APPEND_TIME
    assert out.max_timestamp == RecordBatch(original).max_timestamp
    with pytest.raises(Exception, match="whole record batch"):
        rewrite_batch(original[:-1], 1, 0, 0, transactional=False)


def test_sequence_wraps_like_kafka() -> None:
    assert next_sequence(10, 5) == 15
    assert next_sequence(2**31 - 2, 5) == 3
    out = RecordBatch(rewrite_batch(_batch(0, 2), 1, 0, 2**31 + 5, transactional=False))
    assert out.base_sequence == 5


def test_select_drops_markers_aborted_and_already_read_batches() -> None:
    blob = b"".join(
        [
            _batch(0, 5),  # 0-4, before the position
            _batch(5, 5, producer_id=7, transactional=True),  # 5-9 aborted
            _batch(10, 5, producer_id=8, transactional=True),  # 10-14 committed
            _marker(15, 7, ControlRecordType.ABORT),
            _marker(16, 8, ControlRecordType.COMMIT),
            _batch(17, 3, producer_id=7, transactional=True),  # 17-19, a later committed txn of 7
            _marker(20, 7, ControlRecordType.COMMIT),
        ]
    )
    partial = _batch(21, 4)[:-3]
    sel = select_batches(blob + partial, 5, aborted=[(7, 5)])
    assert [(b.base_offset, b.next_offset, b.records) for b in sel.batches] == [(10, 15, 5), (17, 20, 3)]
    assert sel.next_position == 21  # past the last marker; the torn tail waits
    assert sel.records == 8 and sel.nbytes == sum(b.data.nbytes for b in sel.batches)
    assert select_batches(blob, 5).records == 13  # nothing aborted: the txn of 7 at 5 is kept


def test_select_refuses_old_message_formats() -> None:
    v1 = bytearray(_batch(3, 1))
    v1[16] = 1
    with pytest.raises(OldMessageFormat, match="v1 at offset 3"):
        select_batches(bytes(v1), 0)
    assert select_batches(b"", 4).next_position == 4
    assert struct.unpack_from(">q", v1, 0)[0] == 3
