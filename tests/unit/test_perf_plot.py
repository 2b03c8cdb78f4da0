"""perf/plot.py draws every chart of a report as a PNG file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perf import plot
from tests.unit.test_perf_report import synthetic_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_every_chart_as_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report_path = tmp_path / "report.json"
    report_path.write_text(json.dumps(synthetic_report()))
    out = tmp_path / "plots"
    assert plot.main([str(report_path), "--out", str(out)]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == sorted(plot.FILES)
    for name in plot.FILES:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, name
    assert capsys.readouterr().out.split() == [str(out / name) for name in plot.FILES]


def test_plot_refuses_a_file_that_is_not_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "x"}))
    assert plot.main([str(bad), "--out", str(tmp_path / "plots")]) == 2
    assert "is not a perf report" in capsys.readouterr().err
    assert not (tmp_path / "plots").exists()
