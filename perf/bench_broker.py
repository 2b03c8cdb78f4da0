"""End-to-end broker load (perf/broker_load.py) as a benchmark; the test suite runs it quick.

``pytest perf/bench_broker.py --benchmark-enable -s`` runs the full sizes once and prints the
report; in the normal test run (quick mode) it checks that every part of the harness works end
to end against a real broker: the rates are measured and positive and every message and batch
was acknowledged (the harness raises otherwise). Targets are judged on full runs only: a quick
run on a shared 2-core VM says nothing about them.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from perf.broker_load import LoadConfig, Report, run
from perf.sizes import quick


def test_broker_load(benchmark: Any) -> None:
    cfg = LoadConfig.for_mode()
    report: Report = benchmark.pedantic(run, args=(cfg,), rounds=1, iterations=1)
    print(json.dumps(asdict(report), indent=2))
    assert report.producer["messages"] == cfg.messages
    assert report.producer["enqueue_msgs_per_s"] > 0 and report.producer["delivered_msgs_per_s"] > 0
    assert report.consumer["msgs_per_s"] > 0
    assert report.capacity["broker_mb_per_s"] > 0 and report.capacity["sink_mb_per_s"] > 0
    assert report.capacity["workers_used"] == list(range(cfg.workers)), "capacity load reached every worker"
    if not quick():
        assert all(report.met.values()), report.met
