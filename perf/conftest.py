"""Quick mode for the perf suites.

Benchmarks run in two ways: inside the normal test run (benchmarks disabled: each body runs once,
on small inputs, so the suites cannot rot) and for real with ``--benchmark-enable``. Suites read
``SHARDBROKER_PERF_QUICK`` (see ``perf.sizes``) to pick their input sizes.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    measuring = config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")
    if not measuring:
        os.environ.setdefault("SHARDBROKER_PERF_QUICK", "1")
