"""CRC-32C: hardware path, numpy fallbacks and the pure Python reference agree."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.protocol.crc import (
    crc32c,
    crc32c_many_numpy,
    crc32c_numpy,
    crc32c_python,
    crc32c_ranges_numpy,
)

# RFC 3720 appendix B.4 and the usual CRC catalogue check value for "123456789".
KNOWN = [
    (b"", 0x00000000),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize("data,expected", KNOWN)
def test_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_numpy(data) == expected
    assert crc32c_python(data) == expected
    assert crc32c_many_numpy([data])[0] == expected


@pytest.mark.parametrize(
    "size", [0, 1, 3, 4, 5, 127, 128, 129, 255, 256, 1023, 4096, 65536 * 2 - 1, 65536 * 2 + 5, 1 << 20]
)
def test_numpy_matches_hardware_at_level_boundaries(size: int) -> None:
    data = os.urandom(size)
    assert crc32c_numpy(data) == crc32c(data)


def test_numpy_large_multi_level() -> None:
    data = os.urandom(3 * 65536 * 4 + 12345)  # several rows of the widest level plus every tail
    assert crc32c_numpy(data) == crc32c(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=5000), st.integers(0, 2**32 - 1))
def test_numpy_matches_hardware(data: bytes, value: int) -> None:
    assert crc32c_numpy(data, value) == crc32c(data, value)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_continuation(a: bytes, b: bytes) -> None:
    assert crc32c(b, crc32c(a)) == crc32c(a + b)
    assert crc32c_numpy(b, crc32c_numpy(a)) == crc32c(a + b)
    assert crc32c_python(b, crc32c_python(a)) == crc32c(a + b)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=600), max_size=40))
def test_many_numpy_matches_hardware(buffers: list[bytes]) -> None:
    got = crc32c_many_numpy(buffers)
    assert got.dtype == np.uint32
    assert got.tolist() == [crc32c(b) for b in buffers]


def test_many_numpy_realistic() -> None:
    rng = np.random.default_rng(1)
    buffers = [os.urandom(int(n)) for n in rng.integers(100, 1001, size=2000)]
    buffers.append(b"")
    assert crc32c_many_numpy(buffers).tolist() == [crc32c(b) for b in buffers]


def test_buffer_types() -> None:
    data = os.urandom(1000)
    expected = crc32c(data)
    arr = np.frombuffer(data, dtype=np.uint8)
    for obj in (bytearray(data), memoryview(data), arr):
        assert crc32c(obj) == expected
        assert crc32c_numpy(obj) == expected
    # a non-contiguous array is read in logical order
    strided = np.frombuffer(data * 2, dtype=np.uint8).reshape(2, -1)[:, :500].copy()
    assert crc32c(strided[0]) == crc32c(data[:500])
    assert crc32c_many_numpy([memoryview(data)[:10], bytearray(data[10:20])]).tolist() == [
        crc32c(data[:10]),
        crc32c(data[10:20]),
    ]


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=3000), st.lists(st.tuples(st.integers(0, 3000), st.integers(0, 400))))
def test_ranges_numpy_matches_hardware(buf: bytes, spans: list[tuple[int, int]]) -> None:
    starts = [min(s, len(buf)) for s, _ in spans]
    ends = [min(s + n, len(buf)) for s, n in zip(starts, (n for _, n in spans), strict=True)]
    got = crc32c_ranges_numpy(buf, starts, ends)
    assert got.tolist() == [crc32c(buf[s:e]) for s, e in zip(starts, ends, strict=True)]


def test_ranges_numpy_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        crc32c_ranges_numpy(b"abc", [0], [4])
    with pytest.raises(ValueError):
        crc32c_ranges_numpy(b"abc", [2], [1])
