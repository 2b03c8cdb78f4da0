"""tools/render_dashboards.py: units, legends, variables, and every dashboard drawn from fake data."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.ports import free_port_block

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((REPO / "grafana" / "dashboards").glob("*.json"))


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "render_dashboards", REPO / "tools" / "render_dashboards.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["render_dashboards"] = module
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


def test_format_value() -> None:
    f = tool.format_value
    assert f(0.25, "percentunit") == "25%"
    assert (f(2.5, "s"), f(0.0042, "s"), f(0.00012, "s")) == ("2.5 s", "4.2 ms", "120 µs")
    assert (f(0, "s"), f(90, "s"), f(5400, "s")) == ("0", "1.5 min", "1.5 h")
    assert (f(3 * 1024 * 1024, "bytes"), f(512, "Bps")) == ("3 MiB", "512 B/s")
    assert (f(1500, "short"), f(12, "reqps"), f(float("nan"), "s")) == ("1.5k", "12 req/s", "NaN")


def test_legend_variables_and_rate_interval() -> None:
    labels = {"__name__": "m", "topic": "orders", "partition": "3"}
    assert tool.legend("{{topic}}/{{ partition }} w{{worker}}", labels) == "orders/3 w"
    assert tool.legend("{{ring}}", labels) == tool.legend("", labels)
    assert tool.legend("", labels) == 'm{partition="3", topic="orders"}'
    expr = 'rate(x{topic=~"$topic",group=~"${group}"}[$__rate_interval])'
    out = tool.substitute(expr, {"topic": "a|b", "group": ".+", "__rate_interval": "20s"})
    assert out == 'rate(x{topic=~"a|b",group=~".+"}[20s])'
    with pytest.raises(tool.RenderError, match="no value for a variable"):
        tool.substitute('x{w=~"$worker"}', {})
    assert tool.rate_interval(step=15.0, scrape=5.0) == "20s"
    assert tool.rate_interval(step=1.0, scrape=5.0) == "20s"


class FakePrometheus:
    """Answers every query with two series (or two samples) and records the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        self.queries.append(expr)
        points = [[start + i * step, str(float(i % 7))] for i in range(int((end - start) / step))]
        labels = {"topic": "orders", "partition": "0", "worker": "0", "api": "Produce", "group": "g"}
        return [
            {"metric": labels, "values": points},
            {"metric": {**labels, "partition": "1"}, "values": points},
        ]

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        self.queries.append(expr)
        labels = {"topic": "orders", "partition": "0", "worker": "0", "group": "g"}
        return [
            {"metric": labels, "value": [at, "3"]},
            {"metric": {**labels, "partition": "1"}, "value": [at, "0"]},
        ]


def test_every_dashboard_renders(tmp_path: Path) -> None:
    prom = FakePrometheus()
    renderer = tool.Renderer(
        prom.range, prom.instant, 1_000.0, 1_600.0, {"topic": ".+", "group": "g", "worker": ".+"}, 5.0
    )
    lines: list[str] = []
    written = tool.render(renderer, tmp_path, DASHBOARDS, lines.append)
    assert [p.name for p in written] == [f"{p.stem}.png" for p in DASHBOARDS]
    for png in written:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000
    assert len(lines) == len(DASHBOARDS) and lines[0].startswith(f"[1/{len(DASHBOARDS)}]")
    assert all("$" not in q for q in prom.queries)
    targets = sum(
        len(p.get("targets", [])) for d in DASHBOARDS for p in tool.json.loads(d.read_text())["panels"]
    )
    assert len(prom.queries) == targets  # every query of every panel was asked


def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port_block(1)  # nothing listens there
    code = tool.main(["--prometheus", f"http://127.0.0.1:{port}", "--out", str(tmp_path), str(DASHBOARDS[0])])
    assert code == 1 and "cannot reach Prometheus" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--var", "topic"])
    assert exit_info.value.code == 2 and "expected name=regex" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / "missing.json")])
    assert "no such dashboard file" in capsys.readouterr().err
