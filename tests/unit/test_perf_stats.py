"""shardbroker.loadgen.stats: percentiles, windows folded into tallies, progress line, summary."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shardbroker.loadgen.stats import Summary, Tally, Window, latency_cdf, latency_percentiles, progress_line


def test_percentiles_are_exact_over_every_latency() -> None:
    lat = np.arange(1, 1001, dtype=np.float64) / 1000.0  # 1 .. 1000 ms
    pct = latency_percentiles(lat)
    assert pct is not None
    assert pct["avg"] == pytest.approx(500.5)
    assert pct["p50"] == pytest.approx(500.5)
    assert pct["p95"] == pytest.approx(950.05)
    assert pct["p99"] == pytest.approx(990.01)
    assert pct["p99.9"] == pytest.approx(999.001)
    assert pct["max"] == pytest.approx(1000.0)
    assert latency_percentiles(np.zeros(0)) is None


def test_windows_fold_into_a_tally() -> None:
    total = Tally()
    total.add(Window.of(3, 300, [0.001, 0.002, 0.003]))
    total.add(Window.of(2, 200, [], errors=1))
    total.add(Window.of(1, 100, [0.010]))
    assert (total.records, total.nbytes, total.errors) == (6, 600, 1)
    assert total.latencies().tolist() == [0.001, 0.002, 0.003, 0.010]
    assert total.latencies().tolist() == [0.001, 0.002, 0.003, 0.010]  # merged once, stable


def test_cdf_is_monotonic_and_spans_min_to_max() -> None:
    lat = np.random.default_rng(1).exponential(0.002, 10_000)
    cdf = latency_cdf(lat)
    ms = [p[0] for p in cdf]
    frac = [p[1] for p in cdf]
    assert ms == sorted(ms) and frac == sorted(frac)
    assert ms[0] == pytest.approx(lat.min() * 1000) and ms[-1] == pytest.approx(lat.max() * 1000)
    assert frac[0] == 0.0 and frac[-1] == 1.0
    assert any(0.999 <= f < 1.0 for f in frac), "the tail has points of its own"
    assert latency_cdf(np.zeros(0)) == []


def test_progress_line_shows_rate_throughput_and_latency() -> None:
    second = Tally()
    second.add(Window.of(5000, 5_000_000, [0.002] * 99 + [0.050]))
    total = Tally()
    total.add(Window.of(12_000, 12_000_000, []))
    line = progress_line(3.0, second, 0.5, total)
    assert "10,000 records/s" in line
    assert "10.00 MB/s" in line
    assert "p99" in line and "avg" in line
    assert "(12,000 records)" in line
    consume_line = progress_line(1.0, Tally(), 1.0, Tally())
    assert "0 records/s" in consume_line and "p99" not in consume_line


def test_summary_text_and_json() -> None:
    tally = Tally()
    tally.add(Window.of(1000, 100_000, [0.001] * 1000))
    summary = Summary.of("produce", "t", tally, 2.0, {"record_size": 100})
    doc = json.loads(json.dumps(summary.as_json()))
    assert doc["records"] == 1000 and doc["bytes"] == 100_000
    assert doc["records_per_s"] == 500.0 and doc["mb_per_s"] == pytest.approx(0.05)
    assert set(doc["latency_ms"]) == {"avg", "p50", "p95", "p99", "p99.9", "max"}
    text = summary.text()
    assert "500 records/s" in text and "p99.9 1.00" in text
    consumed = Summary.of("consume", "t", Tally(), 1.0, {})
    assert consumed.latency_ms is None and "latency" not in consumed.text()
