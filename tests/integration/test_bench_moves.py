"""perf/bench_moves.py at its quick sizes: the benchmark runs and its correctness checks hold
(every forwarded answer without error, moves leave every acknowledged record once and in order).
No timing is judged here."""

from __future__ import annotations

import pytest

from perf.bench_moves import run_once

pytestmark = pytest.mark.integration


def test_bench_moves_quick() -> None:
    result = run_once(requests=30, count=4)
    fwd, move = result["forwarding"], result["move"]
    assert fwd["direct_records_per_s"] > 0 and fwd["forwarded_records_per_s"] > 0
    assert move["moves"] == 4 and move["acked"] > 0 and move["producer_errors"] == 0
    assert move["log_records"] == move["acked"] and move["exactly_once_in_order"]
