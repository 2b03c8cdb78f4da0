"""Fault injection against real brokers: the integration suite's fixtures, plus a tmpfs mount.

Brokers come from tests/integration/conftest.py (``broker_factory``: fresh data dir, free ports,
teardown that kills every process and removes shared memory even when a test fails). The slow
variants and the kafka-python warning filter are handled by tests/conftest.py for both suites.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import broker_factory  # noqa: F401 - a fixture, used by name

Mount = Callable[[int], Path]


@pytest.fixture
def tmpfs() -> Iterator[Mount]:
    """``tmpfs(size_bytes)`` mounts a fresh tmpfs of that size and returns it; unmounted after the
    test. Skips when this process may not mount (not root, or no CAP_SYS_ADMIN in a container)."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        point = Path(tempfile.mkdtemp(prefix="shardbroker-tmpfs-"))
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            point.rmdir()
            pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        # lazy: a broker killed by the test may still be exiting with files open there
        subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            point.rmdir()
