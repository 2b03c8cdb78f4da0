"""The vectorised record codecs (protocol/uniform_batch.py, protocol/record_columns.py) against the
per-record ones: the uniform batch encoder builds the same bytes as RecordBatchBuilder for any
record count, key size and value size; ``record_columns`` decodes many batches at once into the
same records, values and refusals as ``RecordBatch.records``."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.protocol.batch_scan import scan_batches
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.record_batch import (
    InvalidRecordBatch,
    Record,
    RecordBatch,
    assign_offsets,
    set_log_append_time,
    split_batches,
)
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_columns import record_columns
from shardbroker.protocol.uniform_batch import as_uniform, encode_uniform_batch, uniform_records_size


def reference(values: list[bytes], keys: list[bytes] | None, timestamp: int) -> bytes:
    builder = RecordBatchBuilder()
    for i, v in enumerate(values):
        builder.append(v, None if keys is None else keys[i], timestamp)
    return builder.build()


def encode(values: list[bytes], keys: list[bytes] | None, timestamp: int) -> bytes:
    key_size = -1 if keys is None else len(keys[0])
    out = bytearray(61 + uniform_records_size(len(values), key_size, len(values[0])))
    v = np.frombuffer(b"".join(values), np.uint8).reshape(len(values), -1)
    k = None if keys is None else np.frombuffer(b"".join(keys), np.uint8).reshape(len(keys), -1)
    size = encode_uniform_batch(out, v, k, timestamp)
    assert size == len(out)
    return bytes(out)


@settings(max_examples=40, deadline=None)
@given(
    count=st.one_of(st.integers(1, 130), st.sampled_from([8191, 8192, 8193])),
    key_size=st.sampled_from([-1, 0, 1, 63, 64, 200]),
    value_size=st.sampled_from([0, 1, 63, 64, 100, 8191, 8192]),
    timestamp=st.integers(0, 2**41),
    seed=st.integers(0, 255),
)
def test_same_bytes_as_the_builder(
    count: int, key_size: int, value_size: int, timestamp: int, seed: int
) -> None:
    if count > 200:
        value_size = min(value_size, 8)  # the 2- and 3-byte offset deltas, without 64 MiB batches
    values = [bytes([(seed + i) % 256]) * value_size for i in range(count)]
    keys = None if key_size < 0 else [bytes([(seed * 7 + i) % 256]) * key_size for i in range(count)]
    assert encode(values, keys, timestamp) == reference(values, keys, timestamp)


def test_decodes_to_the_records() -> None:
    values = [i.to_bytes(4, "big") * 25 for i in range(300)]
    keys = [i.to_bytes(2, "big") for i in range(300)]
    batch = RecordBatch(encode(values, keys, 1234))
    batch.validate()
    got = [(r.offset, r.timestamp, bytes(r.key or b""), bytes(r.value or b"")) for r in batch.records()]
    assert got == [(i, 1234, keys[i], values[i]) for i in range(300)]


def test_as_uniform() -> None:
    arr = as_uniform([b"ab", bytearray(b"cd"), memoryview(b"ef")])
    assert arr is not None and arr.shape == (3, 2) and bytes(arr) == b"abcdef"
    assert as_uniform([b"a", b"bc"]) is None
    assert as_uniform([]) is None


def test_refusals() -> None:
    v = np.zeros((10, 100), np.uint8)
    with pytest.raises(ValueError, match="cannot hold"):
        encode_uniform_batch(bytearray(100), v, None, 0)
    with pytest.raises(ValueError, match="values"):
        encode_uniform_batch(bytearray(10_000), np.zeros((0, 100), np.uint8), None, 0)
    with pytest.raises(ValueError, match="keys"):
        encode_uniform_batch(bytearray(10_000), v, np.zeros((9, 1), np.uint8), 0)


Row = tuple[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes | None], ...], int, int, int]


def as_row(r: Record) -> Row:
    return (
        r.offset,
        r.timestamp,
        None if r.key is None else bytes(r.key),
        None if r.value is None else bytes(r.value),
        tuple((h.key, None if h.value is None else bytes(h.value)) for h in r.headers),
        r.attributes,
        r.offset_delta,
        r.timestamp_delta,
    )


def reference_rows(log: bytes) -> list[Row]:
    """The per-record decoder's view of every batch in ``log``."""
    return [as_row(r) for batch in split_batches(log) for r in batch.records()]


def column_rows(log: bytes, first: int = 0, stop: int | None = None, lead: int = 0) -> list[Row]:
    """``record_columns`` over the batches of ``log``, read from a buffer where ``lead`` other
    bytes come first (scanned from there on, as the consumer scans a segment)."""
    buf = memoryview(b"\xee" * lead + log)
    cols = record_columns(buf[lead:], scan_batches(buf[lead:], base_position=lead), first, stop)
    rows = [as_row(r) for r in cols.records()]
    assert len(cols) == len(rows)
    for i, row in enumerate(rows):  # the columns themselves, not only through records()
        key, value = cols.key(i), cols.value(i)
        assert (int(cols.offsets[i]), None if key is None else bytes(key)) == (row[0], row[2])
        assert (int(cols.timestamps[i]), None if value is None else bytes(value)) == (row[1], row[3])
    return rows


def log_of(batches: list[bytes], append_time: Collection[int] = ()) -> bytes:
    """Batches as a partition log: offsets assigned one after another, LogAppendTime where asked."""
    out = bytearray()
    offset = 0
    for i, raw in enumerate(batches):
        position = len(out)
        out += raw
        assign_offsets(out, position, offset, 0)
        if i in append_time:
            set_log_append_time(out, position, 1_700_000_000_000 + i)
        offset = RecordBatch(bytes(out[position:])).next_offset
    return bytes(out)


def uniform(count: int, value_size: int = 100, key_size: int = -1, timestamp: int = 1000) -> bytes:
    values = np.full((count, value_size), ord("v"), np.uint8)
    keys = None if key_size < 0 else np.full((count, key_size), ord("k"), np.uint8)
    out = bytearray(61 + uniform_records_size(count, key_size, value_size))
    encode_uniform_batch(out, values, keys, timestamp)
    return bytes(out)


header_strategy = st.lists(
    st.tuples(st.text(max_size=5), st.one_of(st.none(), st.binary(max_size=10))), max_size=2
)
record_strategy = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40), st.just(b"K" * 9000)),  # 3-byte key lengths too
    st.one_of(st.none(), st.binary(max_size=300)),
    st.one_of(st.integers(-(2**40), 2**40), st.integers(-(2**61), 2**61)),  # up to 10-byte deltas
    st.one_of(st.just([]), header_strategy),
)
batch_strategy = st.tuples(
    st.lists(record_strategy, min_size=1, max_size=30),
    st.integers(1, 40),  # repeats: runs of equal records, the predicted layout
    st.sampled_from([CompressionType.NONE, CompressionType.NONE, CompressionType.GZIP]),
)


def built(
    records: list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]],
    repeat: int,
    compression: CompressionType,
) -> bytes:
    builder = RecordBatchBuilder(compression=compression)
    for key, value, ts, headers in records * repeat:
        builder.append(value, key, ts, headers)
    return builder.build()


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(batch_strategy, min_size=1, max_size=5),
    uniform_counts=st.lists(st.sampled_from([1, 63, 64, 65, 300, 8193]), max_size=3),
    append_time=st.sets(st.integers(0, 7), max_size=2),
    lead=st.sampled_from([0, 5]),
)
def test_columns_agree_with_the_record_decoder(
    batches: list[
        tuple[
            list[tuple[bytes | None, bytes | None, int, list[tuple[str, bytes | None]]]], int, CompressionType
        ]
    ],
    uniform_counts: list[int],
    append_time: set[int],
    lead: int,
) -> None:
    raws = [built(*b) for b in batches] + [uniform(n, 8 if n > 300 else 100) for n in uniform_counts]
    log = log_of(raws, append_time)
    assert column_rows(log, lead=lead) == reference_rows(log)
    n = len(raws)
    first, stop = n // 3, max(n // 3 + 1, n - 1)
    part = b"".join(bytes(b.buffer) for b in split_batches(log)[first:stop])
    assert column_rows(log, first, stop, lead) == reference_rows(part)


def test_uniform_batches_of_every_offset_delta_width() -> None:
    """What LocalProducer writes: offset deltas of 1, 2 and 3 bytes, keys or none, several
    batches of different counts in one decode (the predicted starts)."""
    log = log_of([uniform(2259), uniform(10), uniform(9000, 4, 3), uniform(1, 0, 0), uniform(70, 200, 1)])
    rows = column_rows(log)
    assert rows == reference_rows(log)
    assert [r[0] for r in rows] == list(range(2259 + 10 + 9000 + 1 + 70))


def test_since_skips_the_records_before_an_offset() -> None:
    log = log_of([uniform(10), uniform(10)])
    cols = record_columns(log, scan_batches(log))
    later = cols.since(13)
    assert later.offsets.tolist() == list(range(13, 20))
    assert [as_row(r) for r in later.records()] == reference_rows(log)[13:]
    assert cols.since(0) is cols and len(cols.since(20)) == 0


@settings(max_examples=300, deadline=None)
@given(
    batch=st.sampled_from(["uniform", "varied", "headers"]),
    where=st.integers(0, 10**6),
    xor=st.integers(1, 255),
)
def test_damaged_records_are_refused_like_the_record_decoder(batch: str, where: int, xor: int) -> None:
    """A flipped byte in the records (CRC not checked here, as by the record decoder): columns
    refuse exactly what the decoder refuses, and agree on the rest."""
    if batch == "uniform":
        raw = uniform(100, 20, 2)
    else:
        builder = RecordBatchBuilder()
        for i in range(40):
            builder.append(
                b"v" * (i * 7 % 50),
                None if i % 4 else b"key",
                i * 1000,
                [("h", b"x")] if batch == "headers" and i % 5 == 0 else [],
            )
        raw = builder.build()
    damaged = bytearray(log_of([uniform(3), raw]))
    position = len(damaged) - len(raw) + 61 + where % (len(raw) - 61)
    damaged[position] ^= xor
    log = bytes(damaged)
    try:
        expected = reference_rows(log)
    except InvalidRecordBatch:
        with pytest.raises(InvalidRecordBatch):
            column_rows(log)
    else:
        assert column_rows(log) == expected


def test_record_counts_the_decoder_refuses() -> None:
    raw = bytearray(uniform(5))
    raw[57:61] = (6).to_bytes(4, "big")  # says 6 records, holds 5
    with pytest.raises(InvalidRecordBatch, match="records end after 5 of 6"):
        record_columns(bytes(raw), scan_batches(bytes(raw)))
    raw[57:61] = (-1).to_bytes(4, "big", signed=True)
    with pytest.raises(InvalidRecordBatch, match="negative record count"):
        record_columns(bytes(raw), scan_batches(bytes(raw)))
    raw[57:61] = (0).to_bytes(4, "big")
    with pytest.raises(InvalidRecordBatch, match="bytes left"):
        record_columns(bytes(raw), scan_batches(bytes(raw)))


def test_columns_refuse_a_broken_length_chain() -> None:
    raw = bytearray(encode(([b"x" * 10] * 50), None, 1))
    raw[61 + 19 * 17] = 0x7E  # record 19 of 17 bytes now says 63: the chain breaks
    with pytest.raises(InvalidRecordBatch):
        record_columns(bytes(raw), scan_batches(bytes(raw)))


def hand_made(*records: bytes) -> bytes:
    """A batch around records encoded by hand (header from the builder; CRC not fixed: neither
    decoder checks it)."""
    builder = RecordBatchBuilder()
    builder.append(b"", timestamp=0)
    header = bytearray(builder.build()[:61])
    body = b"".join(bytes([len(r) * 2]) + r for r in records)  # 1-byte length prefixes
    header[8:12] = (61 - 12 + len(body)).to_bytes(4, "big")
    header[23:27] = (len(records) - 1).to_bytes(4, "big")
    header[57:61] = len(records).to_bytes(4, "big")
    return bytes(header) + body


# attributes | timestamp delta | offset delta | key length -1 | value length 0 | no headers
WIDEST_DELTA = b"\x00" + b"\xff" * 9 + b"\x01" + b"\x00\x01\x00\x00"  # 64-bit zig-zag: -2**63
TOO_WIDE_DELTA = b"\x00" + b"\xff" * 9 + b"\x02" + b"\x00\x01\x00\x00"  # bit 64 set
OFFSET_DELTA_33_BITS = b"\x00\x00" + b"\xff\xff\xff\xff\x1f" + b"\x01\x00\x00"
LONGEST_OFFSET_DELTA = b"\x00\x00" + b"\x80\x80\x80\x80\x00" + b"\x01\x00\x00"  # 5 bytes, value 0


def test_widest_varints_decode_and_wider_ones_are_refused() -> None:
    log = hand_made(WIDEST_DELTA, LONGEST_OFFSET_DELTA, b"\x00\x00\x02\x01\x00\x00")
    rows = column_rows(log)
    assert rows == reference_rows(log)
    assert rows[0][7] == -(2**63) and [r[6] for r in rows] == [0, 0, 1]
    for bad in (TOO_WIDE_DELTA, OFFSET_DELTA_33_BITS):
        log = hand_made(b"\x00\x00\x00\x01\x00\x00", bad)
        with pytest.raises(InvalidRecordBatch):
            reference_rows(log)
        with pytest.raises(InvalidRecordBatch):
            column_rows(log)
