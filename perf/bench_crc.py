"""CRC-32C: hardware (``crc32c`` package) vs the numpy fallbacks, so the choice stays measured.

Run for real::

    . .venv/bin/activate
    pytest perf/bench_crc.py --benchmark-enable --benchmark-columns=median,iqr,min,max,rounds

Cases: one 1 MiB buffer; one 64 MiB buffer; 10,000 buffers of 100-1000 B (hardware from a Python
loop vs :func:`crc32c_many_numpy` in one call). ``extra_info`` holds the bytes per round, so GB/s
is bytes / median. Quick mode (no ``--benchmark-enable``) runs each body once on small inputs.

Last measured (2-core VM, ``taskset -c 1``, numpy 2.4, crc32c 2.9; medians of two runs):
hardware 24.1 GB/s (1 MiB), 15.6 GB/s (64 MiB), 1.37 GB/s = 2.5 M buffers/s (10,000 small, Python
loop); numpy 0.88-1.00 GB/s (1 MiB), 0.89-0.97 GB/s (64 MiB), 0.23 GB/s = 0.41 M buffers/s
(10,000 small). Hardware stays the hot path (see shardbroker/protocol/crc.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from pytest_benchmark.fixture import BenchmarkFixture

from perf.sizes import pick
from shardbroker.protocol.crc import crc32c, crc32c_many_numpy, crc32c_numpy

ONE_MIB = 1 << 20
BIG = pick(64 << 20, 1 << 20)
SMALL_COUNT = pick(10_000, 200)


def _random(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def one_mib() -> bytes:
    return _random(ONE_MIB)


@pytest.fixture(scope="module")
def big() -> bytes:
    return _random(BIG, 1)


@pytest.fixture(scope="module")
def small_buffers() -> list[bytes]:
    rng = np.random.default_rng(2)
    data = _random(1000 * SMALL_COUNT, 3)
    sizes = rng.integers(100, 1001, size=SMALL_COUNT)
    return [data[i * 1000 : i * 1000 + int(n)] for i, n in enumerate(sizes)]


@pytest.mark.benchmark(group="crc32c-1MiB")
def test_hardware_1mib(benchmark: BenchmarkFixture, one_mib: bytes) -> None:
    benchmark.extra_info["bytes"] = len(one_mib)
    assert benchmark(crc32c, one_mib) == crc32c_numpy(one_mib)


@pytest.mark.benchmark(group="crc32c-1MiB")
def test_numpy_1mib(benchmark: BenchmarkFixture, one_mib: bytes) -> None:
    benchmark.extra_info["bytes"] = len(one_mib)
    assert benchmark(crc32c_numpy, one_mib) == crc32c(one_mib)


@pytest.mark.benchmark(group="crc32c-64MiB")
def test_hardware_big(benchmark: BenchmarkFixture, big: bytes) -> None:
    benchmark.extra_info["bytes"] = len(big)
    assert benchmark(crc32c, big) == crc32c(big)


@pytest.mark.benchmark(group="crc32c-64MiB")
def test_numpy_big(benchmark: BenchmarkFixture, big: bytes) -> None:
    benchmark.extra_info["bytes"] = len(big)
    got = benchmark.pedantic(crc32c_numpy, args=(big,), rounds=5, iterations=1)  # type: ignore[no-untyped-call]
    assert got == crc32c(big)


def _hardware_loop(buffers: list[bytes]) -> list[int]:
    return [crc32c(b) for b in buffers]


@pytest.mark.benchmark(group="crc32c-10k-small")
def test_hardware_many_small(benchmark: BenchmarkFixture, small_buffers: list[bytes]) -> None:
    benchmark.extra_info["bytes"] = sum(map(len, small_buffers))
    benchmark.extra_info["buffers"] = len(small_buffers)
    got = benchmark(_hardware_loop, small_buffers)
    assert got == crc32c_many_numpy(small_buffers).tolist()


@pytest.mark.benchmark(group="crc32c-10k-small")
def test_numpy_many_small(benchmark: BenchmarkFixture, small_buffers: list[bytes]) -> None:
    benchmark.extra_info["bytes"] = sum(map(len, small_buffers))
    benchmark.extra_info["buffers"] = len(small_buffers)
    got = benchmark(crc32c_many_numpy, small_buffers)
    assert got.tolist() == _hardware_loop(small_buffers)
