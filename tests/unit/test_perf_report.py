"""perf/report.py: the report schema, the regression check and the comparison table.

Reports here come from the harness's own document builder (perf.harness._Figures) fed with fixed
numbers, so the schema checked is the one the harness writes, without a broker.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from perf import report
from perf.harness import QUICK, _Figures

METRICS = {  # name -> (group, x, value MB/s, reference)
    "produce.record_size=100": ("record_size", 100, 30.0, "socket_sink"),
    "produce.record_size=1000": ("record_size", 1000, 60.0, "socket_sink"),
    "consume.record_size=1000": ("consume", 1000, 90.0, "socket_sink"),
    "produce.partitions=4": ("partitions", 4, 55.0, "socket_sink"),
    "produce.workers=2": ("workers", 2, 50.0, "socket_sink"),
    "redis.record_size=1000": ("redis", 1000, 40.0, "socket_sink"),
    "append": ("storage", None, 1500.0, "file_write"),
    "crc32c": ("cpu", None, 15000.0, "memcpy"),
}
E2E = "e2e.rate=5000"  # one of the latency sweep's entries
REFERENCES = {"socket_sink": 3000.0, "file_write": 3500.0, "memcpy": 7000.0}


def synthetic_report(quick: bool = True, repeats: int = 3) -> dict[str, Any]:
    f = _Figures(QUICK, lambda line: None)
    rng = np.random.default_rng(5)
    for _ in range(repeats):
        for name, (group, x, value, ref) in METRICS.items():
            ref_value = f.reference(ref, REFERENCES[ref] * rng.uniform(0.97, 1.03))
            f.add(name, group, x, value * rng.uniform(0.97, 1.03), ref, ref_value, records_per_s=value * 1e4)
    for rate, scale in ((5000.0, 0.0005), (25000.0, 0.002), (40000.0, 0.02)):
        for side in ("ack", "e2e"):
            f.latencies[f"{side}.rate={rate:g}"] = [rng.exponential(scale, 2000)]
            f.latency_params[f"{side}.rate={rate:g}"] = {"record_size": 100, "records_per_s": rate}
    f.latencies["produce"] = [rng.exponential(0.010, 2000)]
    f.latency_params["produce"] = {"record_size": 1000}
    f.peers["redis"] = {"version": "7"}
    doc = f.document(0.0)
    doc["quick"] = quick
    return json.loads(json.dumps(doc))  # as read back from the file


def scaled(doc: dict[str, Any], factors: dict[str, float]) -> dict[str, Any]:
    """``doc`` with every repeat of the named metrics scaled (a shift, not noise)."""
    out = copy.deepcopy(doc)
    for name, factor in factors.items():
        metric = out["metrics"][name]
        metric["ratio"] *= factor
        metric["value"] *= factor
        metric["ratios"] = [r * factor for r in metric["ratios"]]
        metric["values"] = [v * factor for v in metric["values"]]
    return out


def test_harness_document_validates() -> None:
    doc = synthetic_report()
    assert report.validate(doc) == []
    assert doc["metrics"]["append"]["reference"] == "file_write"
    assert doc["metrics"]["produce.record_size=100"]["ratio"] == pytest.approx(0.01, rel=0.1)
    assert len(doc["metrics"]["crc32c"]["ratios"]) == 3
    assert doc["latency"]["e2e.rate=5000"]["count"] == 2000


@pytest.mark.parametrize(
    ("breakage", "problem"),
    [
        (lambda d: d.pop("metrics"), "metrics: missing"),
        (lambda d: d.update(schema="other/1"), "schema is 'other/1'"),
        (lambda d: d["metrics"]["append"].update(reference="nowhere"), "metrics.append.reference"),
        (lambda d: d["metrics"]["crc32c"].update(ratio=0), "metrics.crc32c.ratio"),
        (lambda d: d["metrics"]["crc32c"].update(ratios=[]), "metrics.crc32c.ratios"),
        (lambda d: d["references"]["memcpy"].update(samples=[-1]), "references.memcpy.samples"),
        (lambda d: d["latency"][E2E]["percentiles"].pop("p99.9"), f"latency.{E2E}.percentiles"),
        (lambda d: d["latency"][E2E]["cdf"].reverse(), f"latency.{E2E}.cdf: not non-decreasing"),
        (lambda d: d.update(quick="yes"), "quick: missing or not a bool"),
    ],
)
def test_validation_names_what_is_wrong(breakage: Any, problem: str) -> None:
    doc = synthetic_report()
    breakage(doc)
    assert any(problem in p for p in report.validate(doc)), report.validate(doc)


def test_check_flags_a_20_percent_drop() -> None:
    baseline = synthetic_report()
    current = scaled(baseline, {"produce.record_size=1000": 0.80})
    findings = {f.metric: f for f in report.check(current, baseline, report.DEFAULT_TOLERANCE)}
    assert findings["produce.record_size=1000"].verdict == "DROP"
    assert findings["produce.record_size=1000"].change == pytest.approx(-0.20)
    assert [f.metric for f in findings.values() if f.failed] == ["produce.record_size=1000"]


def test_a_median_drop_within_the_repeats_spread_is_noisy_not_a_failure() -> None:
    baseline = synthetic_report()
    current = scaled(baseline, {"append": 0.80})
    best = max(baseline["metrics"]["append"]["ratios"])
    current["metrics"]["append"]["ratios"][0] = best  # one repeat as good as the baseline's best
    findings = {f.metric: f for f in report.check(current, baseline, report.DEFAULT_TOLERANCE)}
    assert findings["append"].verdict == "noisy" and not findings["append"].failed


def test_check_passes_noise_of_5_percent_either_way() -> None:
    baseline = synthetic_report()
    factors = {name: (0.95 if i % 2 else 1.05) for i, name in enumerate(METRICS)}
    findings = report.check(scaled(baseline, factors), baseline, report.DEFAULT_TOLERANCE)
    assert not [f for f in findings if f.failed]
    assert {round(abs(f.change or 0), 6) for f in findings} == {0.05}


def test_check_fails_a_missing_metric_and_lists_new_ones() -> None:
    baseline = synthetic_report()
    current = copy.deepcopy(baseline)
    current["metrics"]["produce.partitions=16"] = current["metrics"].pop("produce.partitions=4")
    verdicts = {f.metric: f.verdict for f in report.check(current, baseline, 0.15)}
    assert verdicts["produce.partitions=4"] == "MISSING"
    assert verdicts["produce.partitions=16"] == "new"


def test_check_refuses_a_quick_report_against_a_full_baseline() -> None:
    with pytest.raises(report.ReportError, match="quick report cannot be checked against a full baseline"):
        report.check(synthetic_report(quick=True), synthetic_report(quick=False), 0.15)


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_check_command_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = _write(tmp_path / "baseline.json", synthetic_report())
    same = _write(tmp_path / "same.json", scaled(synthetic_report(), {"append": 0.96}))
    dropped = _write(tmp_path / "dropped.json", scaled(synthetic_report(), {"append": 0.8}))
    assert report.check_main([str(same), "--baseline", str(baseline)]) == 0
    assert "ok: no metric more than 15% below" in capsys.readouterr().out
    assert report.check_main([str(dropped), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION: 1 of" in out and "-20.0%" in out and "DROP" in out
    assert report.check_main([str(dropped), "--baseline", str(baseline), "--tolerance", "0.25"]) == 0
    (tmp_path / "broken.json").write_text("{")
    assert report.check_main([str(tmp_path / "broken.json"), "--baseline", str(baseline)]) == 2
    assert "is not JSON" in capsys.readouterr().err
    assert report.check_main([str(same), "--baseline", str(tmp_path / "absent.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_compare_prints_both_sides_and_the_change(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = synthetic_report()
    b = scaled(a, {"append": 1.10})
    b["metrics"].pop("crc32c")
    code = report.compare_main([str(_write(tmp_path / "a.json", a)), str(_write(tmp_path / "b.json", b))])
    assert code == 0
    out = capsys.readouterr().out
    append_row = next(line for line in out.splitlines() if line.startswith("append"))
    assert "+10.0%" in append_row
    crc_row = next(line for line in out.splitlines() if line.startswith("crc32c"))
    assert crc_row.split()[2] == "-"  # no B value
    assert "latency e2e.rate=5000 ms (A -> B)" in out


def test_summary_table_lists_every_metric() -> None:
    doc = synthetic_report()
    table = report.summary_table(doc)
    for name in METRICS:
        assert name in table
    assert "references (medians): socket_sink" in table
