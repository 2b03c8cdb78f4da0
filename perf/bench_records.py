"""Record batches: header scan, scan + CRC verification (log recovery), batch build, record decode.

Run for real::

    . .venv/bin/activate
    pytest perf/bench_records.py --benchmark-enable --benchmark-columns=median,iqr,min,max,rounds

``extra_info`` carries ``bytes`` / ``batches`` / ``records`` per round, so rates are those over
the median. Quick mode (no ``--benchmark-enable``) runs each body once on small inputs.

Cases
    * ``scan-16KiB``: :func:`scan_batches` over 256 MiB of 16 KiB batches (16,384 batches).
    * ``scan-small``: the same over 1,000,000 batches of ~170 B (one 100 B record each): the
      length-chain walk is a Python loop, so this is its worst case.
    * ``recovery``: ``scan_batches`` + ``verify_crcs`` (hardware CRC) over 1 GiB of batches of
      16 KiB..1 MiB (log-uniform sizes), the log-recovery target (>= 1 GB/s); and over 256 MiB
      of 16 KiB batches; and the numpy CRC fallback over 64 MiB of 16 KiB batches.
    * ``build``: :class:`RecordBatchBuilder`, 1,000 records of 100 B values per batch,
      uncompressed (and lz4, for the codec's cost).
    * ``decode``: iterating the records of that 1,000-record batch.

Last measured (2-core VM, ``taskset -c 1``; range of the medians of two runs): scan-16KiB
5.9-7.7 ms (2.1-2.8 M batches/s); scan-small 0.31-0.44 s (2.3-3.2 M batches/s); recovery 1 GiB
mixed 80-132 ms (8-13 GB/s), 256 MiB of 16 KiB 41-64 ms (4.2-6.5 GB/s), numpy CRC fallback
0.04-0.07 GB/s; build 0.83-0.85 ms per 1,000 records (1.2 M records/s; lz4 1.06 ms); decode
3.1-3.7 ms (0.27-0.32 M records/s).
"""

from __future__ import annotations

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from perf.sizes import pick
from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches, verify_crcs, verify_crcs_numpy
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.record_batch import RecordBatch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder

KIB = 1024
MIB = 1024 * KIB


def _batch_of_size(target: int, seed: int) -> bytes:
    """An uncompressed batch of about ``target`` bytes (values of 1 KiB of random bytes)."""
    rng = np.random.default_rng(seed)
    b = RecordBatchBuilder(producer_id=1, producer_epoch=0, base_sequence=0)
    value = rng.integers(0, 256, size=1024, dtype=np.uint8).tobytes()
    while b.records_size + 61 + 1100 <= target:
        b.append(value, timestamp=1_700_000_000_000)
    last = max(0, target - 61 - b.records_size - 8)
    b.append(value[:last] if last < len(value) else value, timestamp=1_700_000_000_000)
    return b.build()


@pytest.fixture(scope="module")
def segment_16k() -> bytes:
    one = _batch_of_size(16 * KIB, 0)
    return one * (pick(256 * MIB, 4 * MIB) // len(one))


@pytest.fixture(scope="module")
def segment_mixed() -> bytes:
    """~1 GiB of batches with log-uniform sizes in 16 KiB..1 MiB (64 distinct batches reused)."""
    rng = np.random.default_rng(7)
    pool = [
        _batch_of_size(int(s), i)
        for i, s in enumerate(np.exp(rng.uniform(np.log(16 * KIB), np.log(MIB), 64)))
    ]
    total = pick(1024 * MIB, 8 * MIB)
    parts: list[bytes] = []
    size = 0
    while size < total:
        p = pool[int(rng.integers(0, len(pool)))]
        parts.append(p)
        size += len(p)
    return b"".join(parts)


@pytest.fixture(scope="module")
def segment_small() -> bytes:
    b = RecordBatchBuilder()
    b.append(bytes(100), timestamp=1)
    return b.build() * pick(1_000_000, 10_000)


def _info(benchmark: BenchmarkFixture, buf: bytes, h: BatchHeaders) -> None:
    benchmark.extra_info["bytes"] = len(buf)
    benchmark.extra_info["batches"] = len(h)


@pytest.mark.benchmark(group="scan-16KiB")
def test_scan_16k(benchmark: BenchmarkFixture, segment_16k: bytes) -> None:
    h = benchmark(scan_batches, segment_16k)
    assert h.end == len(segment_16k)
    _info(benchmark, segment_16k, h)


@pytest.mark.benchmark(group="scan-small")
def test_scan_small(benchmark: BenchmarkFixture, segment_small: bytes) -> None:
    h = benchmark.pedantic(scan_batches, args=(segment_small,), rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert h.end == len(segment_small)
    _info(benchmark, segment_small, h)


def _recover(buf: bytes) -> tuple[BatchHeaders, np.ndarray]:
    h = scan_batches(buf)
    return h, verify_crcs(buf, h)


def _recover_numpy(buf: bytes) -> tuple[BatchHeaders, np.ndarray]:
    h = scan_batches(buf)
    return h, verify_crcs_numpy(buf, h)


@pytest.mark.benchmark(group="recovery")
def test_recover_1gib_mixed(benchmark: BenchmarkFixture, segment_mixed: bytes) -> None:
    h, ok = benchmark.pedantic(_recover, args=(segment_mixed,), rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert ok.all() and h.end == len(segment_mixed)
    _info(benchmark, segment_mixed, h)


@pytest.mark.benchmark(group="recovery")
def test_recover_16k(benchmark: BenchmarkFixture, segment_16k: bytes) -> None:
    h, ok = benchmark.pedantic(_recover, args=(segment_16k,), rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert ok.all()
    _info(benchmark, segment_16k, h)


@pytest.mark.benchmark(group="recovery")
def test_recover_16k_numpy_crc(benchmark: BenchmarkFixture, segment_16k: bytes) -> None:
    part = segment_16k[: (len(segment_16k) // 4) // (16 * KIB) * (16 * KIB) or len(segment_16k)]
    h = scan_batches(part)
    part = part[: h.end]
    h, ok = benchmark.pedantic(_recover_numpy, args=(part,), rounds=3, iterations=1)  # type: ignore[no-untyped-call]
    assert ok.all()
    _info(benchmark, part, h)


VALUE = bytes(range(100))
RECORDS_PER_BATCH = 1000


def _build(codec: CompressionType) -> bytes:
    b = RecordBatchBuilder(compression=codec, producer_id=1, producer_epoch=0, base_sequence=0)
    append = b.append
    for _ in range(RECORDS_PER_BATCH):
        append(VALUE, None, 1_700_000_000_000)
    return b.build()


@pytest.mark.benchmark(group="build")
def test_build_uncompressed(benchmark: BenchmarkFixture) -> None:
    raw = benchmark(_build, CompressionType.NONE)
    benchmark.extra_info["records"] = RECORDS_PER_BATCH
    RecordBatch(raw).validate()


@pytest.mark.benchmark(group="build")
def test_build_lz4(benchmark: BenchmarkFixture) -> None:
    raw = benchmark(_build, CompressionType.LZ4)
    benchmark.extra_info["records"] = RECORDS_PER_BATCH
    RecordBatch(raw).validate()


def _decode(raw: bytes) -> int:
    n = 0
    for rec in RecordBatch(raw).records():
        n += rec.value is not None
    return n


@pytest.mark.benchmark(group="decode")
def test_decode_uncompressed(benchmark: BenchmarkFixture) -> None:
    raw = _build(CompressionType.NONE)
    assert benchmark(_decode, raw) == RECORDS_PER_BATCH
    benchmark.extra_info["records"] = RECORDS_PER_BATCH


@pytest.mark.benchmark(group="decode")
def test_validate_uncompressed(benchmark: BenchmarkFixture) -> None:
    raw = _build(CompressionType.NONE)
    benchmark(RecordBatch(raw).validate)
    benchmark.extra_info["records"] = RECORDS_PER_BATCH
