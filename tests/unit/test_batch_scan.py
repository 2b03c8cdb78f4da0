"""scan_batches / verify_crcs: concatenations, torn tails at every cut, garbage, field extraction."""

from __future__ import annotations

import mmap
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.protocol.batch_scan import (
    BatchHeaders,
    first_invalid,
    scan_batch_positions,
    scan_batches,
    verify_crcs,
    verify_crcs_numpy,
)
from shardbroker.protocol.record_batch import RecordBatch, assign_offsets
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE, LOG_OVERHEAD

with warnings.catch_warnings():
    # kafka-python 3.0 loads its schemas with importlib.resources.read_text (deprecated in 3.11)
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record.default_records import DefaultRecordBatchBuilder


def kafka_python_batch(n: int, seq: int, transactional: bool = False) -> bytes:
    b = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=int(transactional),
        producer_id=1000 + n,
        producer_epoch=n % 7,
        base_sequence=seq,
        batch_size=1 << 20,
    )
    for i in range(n):
        b.append(i, timestamp=1_700_000_000_000 + 10 * i, key=None, value=b"v" * (i * 13), headers=[])
    return bytes(b.build())


def make_log(counts: list[int]) -> tuple[bytes, list[bytes]]:
    """A log of batches with consecutive offsets assigned, as the broker would store them."""
    out = bytearray()
    batches = []
    offset = 0
    for k, n in enumerate(counts):
        raw = bytearray(kafka_python_batch(n, seq=offset, transactional=bool(k % 2)))
        assign_offsets(raw, 0, offset, k)
        offset += n
        batches.append(bytes(raw))
        out += raw
    return bytes(out), batches


def test_fields_match_record_batch_view() -> None:
    log, batches = make_log([1, 2, 5, 3, 8])
    h = scan_batches(log)
    assert isinstance(h, BatchHeaders)
    assert len(h) == 5
    assert h.end == len(log)
    pos = 0
    for i, raw in enumerate(batches):
        rb = RecordBatch(raw)
        assert h.positions[i] == pos
        assert h.sizes[i] == len(raw) == rb.size
        assert h.base_offsets[i] == rb.base_offset
        assert h.last_offset_deltas[i] == rb.last_offset_delta
        assert h.last_offsets[i] == rb.last_offset
        assert h.partition_leader_epochs[i] == rb.partition_leader_epoch == i
        assert h.magics[i] == 2
        assert h.crcs[i] == rb.crc
        assert h.attributes[i] == rb.attributes
        assert h.base_timestamps[i] == rb.base_timestamp
        assert h.max_timestamps[i] == rb.max_timestamp
        assert h.producer_ids[i] == rb.producer_id
        assert h.producer_epochs[i] == rb.producer_epoch
        assert h.base_sequences[i] == rb.base_sequence
        assert h.record_counts[i] == rb.records_count
        pos += len(raw)
    assert h.positions.dtype == np.int64 and h.sizes.dtype == np.int64
    assert h.base_offsets.dtype == np.int64 and h.last_offset_deltas.dtype == np.int32
    assert h.partition_leader_epochs.dtype == np.int32 and h.magics.dtype == np.int8
    assert h.crcs.dtype == np.uint32 and h.attributes.dtype == np.int16
    assert h.base_timestamps.dtype == np.int64 and h.max_timestamps.dtype == np.int64
    assert h.producer_ids.dtype == np.int64 and h.producer_epochs.dtype == np.int16
    assert h.base_sequences.dtype == np.int32 and h.record_counts.dtype == np.int32
    assert h.next_offset == 1 + 2 + 5 + 3 + 8
    assert verify_crcs(log, h).all()


def test_negative_and_extreme_header_values() -> None:
    b = RecordBatchBuilder(producer_id=-1, producer_epoch=-1, base_sequence=-1)
    b.append(b"x", timestamp=-5)
    raw = bytearray(b.build())
    assign_offsets(raw, 0, 2**62, -1)
    h = scan_batches(bytes(raw))
    assert h.base_offsets[0] == 2**62
    assert h.partition_leader_epochs[0] == -1
    assert h.producer_ids[0] == -1 and h.producer_epochs[0] == -1 and h.base_sequences[0] == -1
    assert h.base_timestamps[0] == -5 and h.max_timestamps[0] == -5
    # a CRC with the top bit set reads as uint32, not negative
    assert all(int(c) >= 0 for c in h.crcs)


def test_base_position_offsets_positions_and_end() -> None:
    log, _ = make_log([3, 4])
    h = scan_batches(log, base_position=4096)
    assert h.positions.tolist() == [4096, 4096 + h.sizes[0]]
    assert h.end == 4096 + len(log)
    assert h.base_position == 4096
    assert verify_crcs(log, h).all()


def test_torn_tail_at_every_cut_point() -> None:
    log, batches = make_log([2, 1, 3])
    bounds = np.cumsum([0] + [len(b) for b in batches]).tolist()
    for cut in range(len(log) + 1):
        h = scan_batches(log[:cut])
        whole = max(i for i, b in enumerate(bounds) if b <= cut)
        assert len(h) == whole, cut
        assert h.end == bounds[whole], cut
        assert verify_crcs(log[:cut], h).all()


def test_short_length_field_stops_scan() -> None:
    log, batches = make_log([2, 2])
    garbage = bytearray(log)
    # second batch's length below the minimum (48 < 49): the chain ends there
    struct.pack_into(">i", garbage, len(batches[0]) + 8, BATCH_HEADER_SIZE - LOG_OVERHEAD - 1)
    h = scan_batches(bytes(garbage))
    assert len(h) == 1 and h.end == len(batches[0])
    # preallocated zeros after the log (a length of 0) also end it
    h = scan_batches(log + bytes(1000))
    assert len(h) == 2 and h.end == len(log)
    # a negative length
    h = scan_batches(log + struct.pack(">qi", 0, -100) + bytes(100))
    assert len(h) == 2 and h.end == len(log)


def test_max_batches() -> None:
    log, batches = make_log([1, 1, 1, 1])
    h = scan_batches(log, max_batches=2)
    assert len(h) == 2 and h.end == len(batches[0]) + len(batches[1])
    assert len(scan_batches(log, max_batches=0)) == 0


def test_empty_and_tiny_buffers() -> None:
    for buf in (b"", b"\x00" * 11, b"\x00" * 12, b"\xff" * 60):
        h = scan_batches(buf, base_position=7)
        assert len(h) == 0 and h.end == 7
        assert verify_crcs(buf, h).shape == (0,)
        assert h.next_offset is None
        assert h.last_offsets.shape == (0,)


def test_verify_crcs_finds_the_first_corrupt_batch() -> None:
    log, batches = make_log([2, 3, 4, 5])
    bad = bytearray(log)
    start2 = len(batches[0]) + len(batches[1])
    bad[start2 + BATCH_HEADER_SIZE + 3] ^= 0x01  # a record byte of batch 2
    bad[len(log) - 1] ^= 0x80  # last byte of batch 3
    h = scan_batches(bytes(bad))
    ok = verify_crcs(bytes(bad), h)
    assert ok.tolist() == [True, True, False, False]
    assert first_invalid(ok) == 2
    assert h.positions[first_invalid(ok)] == start2
    assert first_invalid(verify_crcs(log, scan_batches(log))) is None


def test_bytes_outside_crc_do_not_affect_it() -> None:
    log, _ = make_log([2])
    patched = bytearray(log)
    assign_offsets(patched, 0, 123456, 99)
    h = scan_batches(patched)
    assert verify_crcs(patched, h).all()
    patched[16] = 2  # magic is not covered either (Kafka's layout); only bytes 21.. are
    assert verify_crcs(patched, scan_batches(patched)).all()


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "memoryview", "ndarray", "ndarray_slice"])
def test_buffer_kinds(kind: str) -> None:
    log, _ = make_log([3, 2])
    buf: object
    if kind == "bytes":
        buf = log
    elif kind == "bytearray":
        buf = bytearray(log)
    elif kind == "memoryview":
        buf = memoryview(b"\x00" * 5 + log)[5:]
    elif kind == "ndarray":
        buf = np.frombuffer(log, dtype=np.uint8)
    else:
        buf = np.frombuffer(b"\x00" * 3 + log, dtype=np.uint8)[3:]
    h = scan_batches(buf)
    assert len(h) == 2 and h.end == len(log)
    assert verify_crcs(buf, h).all()


def test_scan_batch_positions() -> None:
    log, batches = make_log([1, 2])
    starts, end = scan_batch_positions(log + b"\x00\x00")
    assert starts == [0, len(batches[0])]
    assert end == len(log)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_garbage_never_raises(data: bytes) -> None:
    h = scan_batches(data)
    assert 0 <= h.end <= len(data)
    assert int(h.sizes.sum()) == h.end
    assert (h.sizes >= BATCH_HEADER_SIZE).all()
    verify_crcs(data, h)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=6), st.data())
def test_concatenation_then_garbage(counts: list[int], data: st.DataObject) -> None:
    log, batches = make_log(counts)
    tail = data.draw(st.binary(max_size=200))
    h = scan_batches(log + tail)
    # the known batches are always found; garbage may by chance look like more
    assert len(h) >= len(batches)
    assert h.sizes[: len(batches)].tolist() == [len(b) for b in batches]
    assert verify_crcs(log + tail, h)[: len(batches)].all()


def test_many_batches_roundtrip_random_sizes() -> None:
    parts = []
    for _ in range(300):
        b = RecordBatchBuilder()
        for _ in range(int.from_bytes(os.urandom(1), "big") % 5 + 1):
            b.append(os.urandom(int.from_bytes(os.urandom(2), "big") % 300), timestamp=1)
        parts.append(b.build())
    blob = b"".join(parts)
    h = scan_batches(blob)
    assert len(h) == 300 and h.end == len(blob)
    assert h.sizes.tolist() == [len(p) for p in parts]
    assert verify_crcs(blob, h).all()


def test_verify_crcs_numpy_matches_hardware() -> None:
    parts = []
    for n in (1, 3, 40, 200, 2, 90):  # batches on both sides of NUMPY_SHORT_BATCH
        b = RecordBatchBuilder()
        for i in range(n):
            b.append(os.urandom(50 + i), timestamp=i)
        parts.append(bytearray(b.build()))
    parts[2][-1] ^= 1
    parts[4][30] ^= 1
    blob = b"".join(parts)
    h = scan_batches(blob, base_position=100)
    assert verify_crcs(blob, h).tolist() == [True, True, False, True, False, True]
    assert verify_crcs_numpy(blob, h).tolist() == [True, True, False, True, False, True]
    assert verify_crcs_numpy(b"", scan_batches(b"")).shape == (0,)


def test_mmap_is_released_after_scan_and_verify(tmp_path: Path) -> None:
    """Storage scans mmapped segments and closes the map right after: no export may outlive us."""
    log, _ = make_log([3, 1, 2])
    path = tmp_path / "00000000000000000000.log"
    path.write_bytes(log + log[:40])
    with path.open("rb") as f:
        mm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        h = scan_batches(mm)
        ok = verify_crcs(mm, h)
        ok_numpy = verify_crcs_numpy(mm, h)
        mm.close()  # BufferError here would mean a view into the map survived
    assert len(h) == 3 and h.end == len(log)
    assert ok.all() and ok_numpy.all()
