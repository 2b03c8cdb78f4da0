"""The macro harness (``python -m perf run``, perf/harness.py) end to end; the test suite runs it
in quick mode.

In the normal test run (quick mode: every part once, small sizes, ~40 s here) it proves the
harness still works against a real broker: every part measured, every record acknowledged and
read back (the harness raises otherwise), the report valid against the schema, and the charts
drawn. Timings are never judged here: the regression gate is ``python -m perf check``, run by
hand (README, "Performance"). ``pytest perf/bench_broker.py --benchmark-enable -s`` runs the full
plan instead and prints the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perf import bench_latency, peers, plot, report
from perf.harness import FULL, QUICK, run
from perf.sizes import quick


def test_harness_run_writes_a_valid_report(benchmark: Any, tmp_path: Path) -> None:
    plan = QUICK if quick() else FULL
    doc: dict[str, Any] = benchmark.pedantic(run, args=(plan, print), rounds=1, iterations=1)
    print(report.summary_table(doc))
    assert report.validate(doc) == []
    assert doc["quick"] is plan.quick
    groups = {m["group"] for m in doc["metrics"].values()}
    assert {
        "record_size",
        "consume",
        "partitions",
        "workers",
        "capacity",
        "storage",
        "cpu",
        "requests_produce",
        "requests_fetch",
    } <= groups
    assert [m["x"] for m in doc["metrics"].values() if m["group"] == "workers"] == list(plan.workers)
    requests = [m["x"] for m in doc["metrics"].values() if m["group"] == "requests_produce"]
    assert requests == list(plan.request_connections)
    points = [f"load={f:g}" for f in bench_latency.FRACTIONS] + [f"rate={plan.latency_fixed_rate:g}"]
    assert set(doc["latency"]) == {"produce"} | {f"{side}.{p}" for side in ("ack", "e2e") for p in points}
    assert set(doc["references"]) == {"socket_sink", "file_write", "memcpy", "kafka_sink", "request_sink"}
    if "skipped" not in doc["peers"]["redis"]:
        sizes = [m for m in doc["metrics"].values() if m["group"] == "record_size"]
        assert all(("vs_redis" in m) == (m["x"] <= peers.XADD_MAX_VALUE) for m in sizes)
    paths = plot.plot(doc, tmp_path / "plots")
    assert all(p.stat().st_size > 0 for p in paths)
