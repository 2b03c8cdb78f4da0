"""The vectorised uniform batch encoder (protocol/records.py) against RecordBatchBuilder: the same
bytes for any record count, key size and value size, and clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.protocol.records import (
    CompressionType,
    InvalidRecordBatch,
    RecordBatch,
    RecordBatchBuilder,
    as_uniform,
    encode_uniform_batch,
    record_columns,
    uniform_records_size,
)


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


def columns_as_rows(raw: bytes) -> list[tuple[int, int, bytes | None, bytes | None]] | None:
    cols = record_columns(RecordBatch(raw))
    if cols is None:
        return None
    d = cols.data
    rows = []
    for i in range(len(cols.offset_deltas)):
        ks, kl, vs, vl = cols.key_starts[i], cols.key_lengths[i], cols.value_starts[i], cols.value_lengths[i]
        key = None if kl < 0 else bytes(d[ks : ks + kl])
        value = None if vl < 0 else bytes(d[vs : vs + vl])
        rows.append((int(cols.offset_deltas[i]), int(cols.timestamp_deltas[i]), key, value))
    return rows


record_strategy = st.tuples(
    st.one_of(st.none(), st.binary(max_size=40)),
    st.one_of(st.none(), st.binary(max_size=300)),
    st.integers(-(2**40), 2**40),
)


@settings(max_examples=60, deadline=None)
@given(records=st.lists(record_strategy, min_size=1, max_size=80), repeat=st.integers(1, 40))
def test_columns_agree_with_the_record_decoder(
    records: list[tuple[bytes | None, bytes | None, int]], repeat: int
) -> None:
    builder = RecordBatchBuilder()
    for key, value, ts in records * repeat:  # repeats make runs of equal records (the stride path)
        builder.append(value, key, ts)
    raw = builder.build()
    expected = [
        (
            r.offset_delta,
            r.timestamp_delta,
            None if r.key is None else bytes(r.key),
            None if r.value is None else bytes(r.value),
        )
        for r in RecordBatch(raw).records()
    ]
    assert columns_as_rows(raw) == expected


def test_columns_leave_headers_and_compression_to_the_record_decoder() -> None:
    builder = RecordBatchBuilder()
    builder.append(b"v", headers=[("h", b"1")])
    assert record_columns(RecordBatch(builder.build())) is None
    builder = RecordBatchBuilder(compression=CompressionType.GZIP)
    builder.append(b"v")
    assert record_columns(RecordBatch(builder.build())) is None


def test_columns_refuse_a_broken_length_chain() -> None:
    raw = bytearray(encode(([b"x" * 10] * 50), None, 1))
    raw[61 + 19 * 17] = 0x7E  # record 19 of 17 bytes now says 63: the chain breaks
    with pytest.raises(InvalidRecordBatch):
        record_columns(RecordBatch(bytes(raw)))
