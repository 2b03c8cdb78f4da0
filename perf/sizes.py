"""Input sizes for the perf suites: full size when measuring, small in quick mode (CI)."""

from __future__ import annotations

import os


def quick() -> bool:
    """True when ``SHARDBROKER_PERF_QUICK`` is set to anything but ``0`` or empty."""
    return os.environ.get("SHARDBROKER_PERF_QUICK", "") not in ("", "0")


def pick(full: int, quick_size: int) -> int:
    """``full`` when measuring, ``quick_size`` in quick mode."""
    return quick_size if quick() else full
