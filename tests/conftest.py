"""Collection rules for every test under tests/ (unit, integration, faults).

- ``@pytest.mark.slow`` variants (soaks, long fault runs) are left out unless asked for
  (``-m slow``, or ``SHARDBROKER_SLOW=1``): the default run, and CI's, is the quick variants.
- Tests that drive real Kafka clients (tests/integration, tests/faults) let kafka-python's
  import-time warning through: kafka-python 3.0 loads its protocol schemas with
  importlib.resources.read_text/open_text, which Python 3.11 deprecates, and the suite runs with
  ``-W error``. Only that warning is let through.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

KAFKA_PYTHON_WARNING = r"ignore:(read|open)_text is deprecated:DeprecationWarning"

HERE = Path(__file__).parent
#: Directories whose tests start real brokers and real Kafka clients.
CLIENT_DIRS = (HERE / "integration", HERE / "faults")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    want_slow = "slow" in (config.getoption("markexpr") or "") or os.environ.get("SHARDBROKER_SLOW") == "1"
    keep, drop = [], []
    for item in items:
        parents = Path(str(item.path)).parents
        if HERE not in parents:
            keep.append(item)  # perf/ has rules of its own
            continue
        if any(d in parents for d in CLIENT_DIRS):
            item.add_marker(pytest.mark.filterwarnings(KAFKA_PYTHON_WARNING))
        if item.get_closest_marker("slow") is not None and not want_slow:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
