"""grafana/: the alert rules pass their promtool unit tests, the scrape config and provisioning
files are what Prometheus and Grafana expect, and the dashboards are well-formed.

Runs promtool (Debian ``prometheus``; CI installs it): a missing promtool fails here, it is not
skipped. The dashboards' queries are evaluated against live data in
tests/integration/test_prometheus_live.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shardbroker.mirror.mirror_metrics import MirrorMetrics

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"
PROMETHEUS = GRAFANA / "prometheus"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    exe = shutil.which("promtool")
    assert exe is not None, "promtool not found: apt-get install prometheus"
    done = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_alert_rules_pass_their_tests() -> None:
    out = promtool("test", "rules", "alerts_test.yml")
    assert "SUCCESS" in out


def test_every_alert_is_tested() -> None:
    # No YAML parser in the project: the files' own layout (one key per line) is read with regexes.
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", (PROMETHEUS / "alerts.yml").read_text(), re.M))
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    # A case that expects the alert to fire (exp_alerts followed by an entry), not only silence.
    tested = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels", tests))
    assert alerts == tested
    assert {
        "ShardbrokerWorkerDown",
        "ShardbrokerPartitionOffline",
        "ShardbrokerConsumerLagGrowing",
        "ShardbrokerDiskNearlyFull",
        "ShardbrokerRequestErrors",
        "ShardbrokerFlushLatencyHigh",
    } <= alerts


def test_scrape_config_is_valid() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 1 rule files found" in out


def test_provisioning_points_at_the_dashboards() -> None:
    provider = (GRAFANA / "provisioning/dashboards/shardbroker.yml").read_text()
    (path,) = re.findall(r"^\s*path: (\S+)$", provider, re.M)
    path = path.replace("${GF_PATHS_PROVISIONING}", str(GRAFANA / "provisioning"))
    assert Path(path).resolve() == (GRAFANA / "dashboards").resolve()
    source = (GRAFANA / "provisioning/datasources/prometheus.yml").read_text()
    assert re.search(r"^\s*type: prometheus$", source, re.M) and re.search(
        r"^\s*isDefault: true$", source, re.M
    )


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def test_dashboard_is_well_formed(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"].startswith("shardbroker-") and board["title"].startswith("shardbroker / ")
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel["targets"]:
            used = {name for name in variables if f"${name}" in target["expr"]}
            assert used <= set(variables), target["expr"]


def test_the_dashboards_and_their_variables() -> None:
    boards = {p.stem: json.loads(p.read_text()) for p in DASHBOARDS}
    assert set(boards) == {"overview", "partitions", "consumer-groups", "internals", "clients", "mirror"}
    uids = [b["uid"] for b in boards.values()]
    assert len(set(uids)) == len(uids)
    names = {stem: {v["name"] for v in b["templating"]["list"]} for stem, b in boards.items()}
    assert "topic" in names["overview"] and "topic" in names["partitions"]
    assert {"group", "topic"} <= names["consumer-groups"]
    assert "topic" in names["mirror"]


def mirror_series() -> tuple[set[str], set[str]]:
    """The metric families ``shardbroker mirror --metrics`` serves and their sample names (each
    labelled series made once)."""
    metrics = MirrorMetrics()
    metrics.set_up(True)
    metrics.batch_mirrored("orders", 10, 1000, 0.01)
    metrics.set_lag("orders", 0, 5)
    metrics.error("target")
    metrics.set_paused(1)
    metrics.checkpoint_emitted("g")
    families = list(metrics.registry.collect())
    return {f.name for f in families}, {s.name for f in families for s in f.samples}


def test_the_mirror_dashboard_and_alerts_read_the_mirror_series() -> None:
    """The Mirror dashboard scrapes the mirror, not the broker: every series it and the mirror
    alerts name is one MirrorMetrics serves (a renamed series breaks this, not a dashboard in
    production; tests/integration/test_mirror_faults.py queries them on live data)."""
    families, served = mirror_series()
    board = json.loads((GRAFANA / "dashboards" / "mirror.json").read_text())
    exprs = [t["expr"] for p in panels(board) for t in p["targets"]]
    exprs += [v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"]
    rules = (PROMETHEUS / "alerts.yml").read_text().split("- name: shardbroker-mirror", 1)[1]
    for text in [*exprs, rules]:
        used = set(re.findall(r"\bshardbroker_\w+", text))
        assert used and used <= served, (text, used - served)
    # ... and the dashboard shows every one of them.
    shown = {re.sub(r"_(bucket|total)$", "", n) for e in exprs for n in re.findall(r"shardbroker_\w+", e)}
    assert families == shown
