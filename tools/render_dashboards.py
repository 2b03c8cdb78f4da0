"""Render grafana/dashboards/*.json to PNGs from a live Prometheus, with matplotlib.

    .venv/bin/python tools/render_dashboards.py --prometheus http://127.0.0.1:9090 \\
        --last 10m --out docs/dashboards [--var topic=orders] [--scrape-interval 5s]

Opens sockets (Prometheus' HTTP API) and writes one ``<dashboard>.png`` per dashboard into
``--out``. Why not screenshots: Grafana is not installed where the docs are built; this draws the
same panels (same queries, same grid layout, same units and legends) from the same data, so the
README's pictures show what the dashboards show. What it draws of each panel type: timeseries as
lines (stacked where the panel stacks), stat as its last value, bargauge as horizontal bars,
table as a text table (at most ``TABLE_ROWS`` rows, like a scrolled-up Grafana table).

Template variables default to every value (Grafana's "All", here ``.+``); ``--var name=regex``
narrows one. ``$__rate_interval`` becomes Grafana's value: max(4 x scrape interval, step +
scrape interval), with the step the query resolution (range / ``POINTS``).

Exit codes: 0 written; 1 Prometheus unreachable or a query refused (the message says which); 2 bad
usage.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

REPO = Path(__file__).resolve().parents[1]
DASHBOARDS = REPO / "grafana" / "dashboards"
#: Points per timeseries (Grafana asks for about one per pixel; fewer keeps the PNGs readable).
POINTS = 240
TABLE_ROWS = 12
LEGEND_MAX = 8
#: Grid unit in inches: a Grafana row is 30 px high, a column 1/24 of the width.
ROW_INCHES = 0.34
WIDTH_INCHES = 20.0
TOP_INCHES = 0.5
#: Inside a panel's box, inches (left, right, top, bottom): title above, tick labels around.
PADS: dict[str, tuple[float, float, float, float]] = {
    "timeseries": (0.75, 0.15, 0.35, 0.3),
    "bargauge": (2.2, 0.6, 0.35, 0.3),
    "stat": (0.1, 0.1, 0.35, 0.1),
    "table": (0.1, 0.1, 0.35, 0.1),
    "row": (0.1, 0.1, 0.0, 0.0),
}

#: (expr, start, end, step) -> Prometheus "matrix" result; (expr, time) -> "vector" result.
RangeQuery = Callable[[str, float, float, float], list[dict[str, Any]]]
InstantQuery = Callable[[str, float], list[dict[str, Any]]]


class RenderError(Exception):
    """Prometheus unreachable or a query refused: the message says which."""


class Prometheus:
    """The two query endpoints of Prometheus' HTTP API (opens sockets)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _get(self, path: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise RenderError(f"Prometheus refused {params.get('query')!r}: {exc.code} {detail}") from None
        except OSError as exc:
            raise RenderError(f"cannot reach Prometheus at {self.url}: {exc}") from None
        if body.get("status") != "success":
            raise RenderError(f"Prometheus refused {params.get('query')!r}: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        return self._get(
            "query_range", {"query": expr, "start": f"{start}", "end": f"{end}", "step": f"{step}"}
        )

    def instant(self, expr: str, at: float) -> list[dict[str, Any]]:
        return self._get("query", {"query": expr, "time": f"{at}"})


# -- values and units ------------------------------------------------------------------------------

_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BINARY = ((1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


def format_value(value: float, unit: str) -> str:
    """A value as Grafana shows it in that unit (the subset of units the dashboards use)."""
    if math.isnan(value):
        return "NaN"
    if unit == "percentunit":
        return f"{value * 100:.3g}%"
    if value == 0:
        return "0"
    if unit == "s":
        for scale, name in ((3600.0, "h"), (60.0, "min"), (1.0, "s"), (1e-3, "ms"), (1e-6, "µs")):
            if abs(value) >= scale or name == "µs":
                return f"{value / scale:.3g} {name}"
    if unit in ("bytes", "Bps"):
        suffix = "/s" if unit == "Bps" else ""
        for scale, name in _BINARY:
            if abs(value) >= scale:
                return f"{value / scale:.3g} {name}{suffix}"
        return f"{value:.3g} B{suffix}"
    suffix = {"reqps": " req/s", "ops": " ops/s"}.get(unit, "")
    for scale, name in _SI:
        if abs(value) >= scale:
            return f"{value / scale:.3g}{name}{suffix}"
    return f"{value:.3g}{suffix}"


def legend(fmt: str, labels: Mapping[str, str]) -> str:
    """Grafana's ``{{label}}`` legend format; the whole label set when there is none (or it
    comes out empty: matplotlib leaves unnamed lines out of the legend)."""
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m[1], ""), fmt).strip()
    if text:
        return text
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{labels.get('__name__', '')}{{{inner}}}"


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """Replace ``$name`` / ``${name}`` by the variables' values (longest names first)."""
    for name in sorted(variables, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    if "$" in expr:
        raise RenderError(f"no value for a variable in {expr!r} (give it with --var name=regex)")
    return expr


def rate_interval(step: float, scrape: float) -> str:
    return f"{int(max(4 * scrape, step + scrape))}s"


# -- panels ------------------------------------------------------------------------------------------


class Renderer:
    def __init__(
        self,
        range_query: RangeQuery,
        instant_query: InstantQuery,
        start: float,
        end: float,
        variables: Mapping[str, str],
        scrape_interval: float,
    ) -> None:
        self.range_query = range_query
        self.instant_query = instant_query
        self.start, self.end = start, end
        self.step = max(1.0, round((end - start) / POINTS))
        self.variables = {**variables, "__rate_interval": rate_interval(self.step, scrape_interval)}

    def dashboard(self, board: dict[str, Any], out: Path) -> None:
        panels = board["panels"]
        height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
        fig_h = height * ROW_INCHES + TOP_INCHES
        fig = plt.figure(figsize=(WIDTH_INCHES, fig_h))
        for panel in panels:
            g = panel["gridPos"]
            box = (
                g["x"] / 24 * WIDTH_INCHES,
                TOP_INCHES + g["y"] * ROW_INCHES,
                g["w"] / 24 * WIDTH_INCHES,
                g["h"] * ROW_INCHES,
            )
            left, right, top, bottom = PADS.get(panel["type"], PADS["stat"])
            x, y = box[0] + left, fig_h - box[1] - box[3] + bottom
            w, h = box[2] - left - right, box[3] - top - bottom
            ax = fig.add_axes((x / WIDTH_INCHES, y / fig_h, w / WIDTH_INCHES, h / fig_h))
            if panel["type"] != "row":
                fig.patches.append(
                    Rectangle(
                        ((box[0] + 0.03) / WIDTH_INCHES, (fig_h - box[1] - box[3] + 0.03) / fig_h),
                        (box[2] - 0.06) / WIDTH_INCHES,
                        (box[3] - 0.06) / fig_h,
                        transform=fig.transFigure,
                        fill=False,
                        edgecolor="#c8c8c8",
                        linewidth=0.8,
                    )
                )
                fig.text(
                    (box[0] + 0.1) / WIDTH_INCHES,
                    (fig_h - box[1] - 0.08) / fig_h,
                    panel["title"],
                    fontsize=10,
                    fontweight="bold",
                    va="top",
                )
            self.panel(panel, ax)
        frm = time.strftime("%Y-%m-%d %H:%M", time.gmtime(self.start))
        to = time.strftime("%H:%M UTC", time.gmtime(self.end))
        fig.text(
            0.005, 1 - 0.12 / fig_h, f"{board['title']}    ({frm} - {to}, live data)", fontsize=14, va="top"
        )
        fig.savefig(out, dpi=72)
        plt.close(fig)

    def panel(self, panel: dict[str, Any], ax: Axes) -> None:
        kind = panel["type"]
        if kind == "row":
            ax.axis("off")
            ax.text(0, 0.5, panel["title"], fontsize=12, fontweight="bold", va="center")
            return
        draw = {
            "timeseries": self.timeseries,
            "stat": self.stat,
            "bargauge": self.bargauge,
            "table": self.table,
        }
        draw[kind](panel, ax)

    def _expr(self, target: dict[str, Any]) -> str:
        return substitute(target["expr"], self.variables)

    def _unit(self, panel: dict[str, Any]) -> str:
        unit: str = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        return unit

    def timeseries(self, panel: dict[str, Any], ax: Axes) -> None:
        unit = self._unit(panel)
        stack = panel["fieldConfig"]["defaults"].get("custom", {}).get("stacking", {}).get("mode") == "normal"
        lines: list[tuple[str, list[float], list[float]]] = []
        for target in panel["targets"]:
            for series in self.range_query(self._expr(target), self.start, self.end, self.step):
                xs = [float(t) for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                # matplotlib leaves names starting with "_" out of legends (__consumer_offsets).
                name = legend(target.get("legendFormat", ""), series["metric"])
                lines.append(("\u2009" + name if name.startswith("_") else name, xs, ys))
        lines.sort(key=lambda line: line[0])
        if stack and lines:
            times = sorted({x for _, xs, _ in lines for x in xs})
            values = [dict(zip(xs, ys, strict=True)) for _, xs, ys in lines]
            ax.stackplot(
                [(t - self.end) / 60 for t in times],
                [[v.get(t, 0.0) for t in times] for v in values],
                labels=[name for name, _, _ in lines],
                alpha=0.75,
            )
        else:
            for name, xs, ys in lines:
                ax.plot([(x - self.end) / 60 for x in xs], ys, label=name, linewidth=1.2)
        ax.set_xlim((self.start - self.end) / 60, 0)
        ax.yaxis.set_major_formatter(lambda v, _: format_value(v, unit))
        ax.xaxis.set_major_locator(
            MaxNLocator(nbins=10, steps=[1, 2, 5, 10], integer=self.end - self.start >= 180)
        )
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g} min" if v else "now")
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        if not lines:
            ax.text(0.5, 0.5, "No data", transform=ax.transAxes, ha="center", va="center", alpha=0.6)
            return
        handles, names = ax.get_legend_handles_labels()
        if len(names) > LEGEND_MAX:  # Grafana's legend table, sorted by mean, cut to the top
            means = {name: sum(ys) / max(len(ys), 1) for name, _, ys in lines}
            top = sorted(range(len(names)), key=lambda i: -means.get(names[i], 0.0))[:LEGEND_MAX]
            handles, names = [handles[i] for i in top], [names[i] for i in top]
            note = f"{len(lines)} series, top {LEGEND_MAX} by mean in the legend"
            ax.text(0.99, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=7)
        ax.legend(handles, names, fontsize=6, loc="upper left", ncol=min(4, len(names)), framealpha=0.6)

    def _instant(self, panel: dict[str, Any]) -> list[tuple[str, dict[str, str], float]]:
        out = []
        for target in panel["targets"]:
            for sample in self.instant_query(self._expr(target), self.end):
                name = legend(target.get("legendFormat", ""), sample["metric"])
                out.append((name, sample["metric"], float(sample["value"][1])))
        return out

    def stat(self, panel: dict[str, Any], ax: Axes) -> None:
        ax.axis("off")
        values = self._instant(panel)
        text = format_value(values[0][2], self._unit(panel)) if values else "No data"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        color = steps[0]["color"]
        for step in steps[1:]:
            if values and values[0][2] >= step["value"]:
                color = step["color"]
        ax.text(
            0.5,
            0.4,
            text,
            fontsize=22,
            ha="center",
            va="center",
            color={"green": "#2e8b57"}.get(color, color),
        )

    def bargauge(self, panel: dict[str, Any], ax: Axes) -> None:
        values = sorted(self._instant(panel), key=lambda v: v[2])
        unit = self._unit(panel)
        ax.barh([name for name, _, _ in values], [v for _, _, v in values], color="#3274d9")
        for i, (_, _, v) in enumerate(values):
            ax.text(v, i, " " + format_value(v, unit), va="center", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(lambda v, _: format_value(v, unit))
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)

    def table(self, panel: dict[str, Any], ax: Axes) -> None:
        """Grafana's merge transformation: one row per label set, one column per query."""
        ax.axis("off")
        renames: dict[str, str] = {}
        for t in panel.get("transformations", []):
            renames.update(t.get("options", {}).get("renameByName", {}))
        units = {
            o["matcher"]["options"]: o["properties"][0]["value"]
            for o in panel["fieldConfig"].get("overrides", [])
        }
        rows: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
        columns: list[str] = []
        for target in panel["targets"]:
            column = renames.get(f"Value #{target['refId']}", target["refId"])
            columns.append(column)
            for sample in self.instant_query(self._expr(target), self.end):
                key = tuple(
                    sorted(
                        (k, v)
                        for k, v in sample["metric"].items()
                        if k not in ("__name__", "job", "instance")
                    )
                )
                rows.setdefault(key, {})[column] = float(sample["value"][1])
        if not rows:
            ax.text(0.5, 0.5, "No data", ha="center", va="center", alpha=0.6)
            return
        label_names = sorted({k for key in rows for k, _ in key})
        first = columns[0]
        ordered = sorted(rows.items(), key=lambda kv: -kv[1].get(first, 0.0))[:TABLE_ROWS]
        cells = [
            [dict(key).get(name, "") for name in label_names]
            + [format_value(values[c], units.get(c, "short")) if c in values else "" for c in columns]
            for key, values in ordered
        ]
        table = ax.table(cellText=cells, colLabels=label_names + columns, loc="upper center", cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        table.scale(1, 1.1)


def render(
    renderer: Renderer, out: Path, boards: list[Path], say: Callable[[str], None] = print
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, path in enumerate(boards, 1):
        target = out / f"{path.stem}.png"
        say(f"[{i}/{len(boards)}] {path.name} -> {target}")
        renderer.dashboard(json.loads(path.read_text()), target)
        written.append(target)
    return written


def _duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|m|h)", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 90s, 10m or 1h")
    return float(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"\w+", name) or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=regex, e.g. topic=orders")
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus base URL")
    parser.add_argument("--last", type=_duration, default=_duration("30m"), help="time range ending now")
    parser.add_argument("--end", type=float, help="end of the range, Unix seconds (default: now)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "dashboards", help="output folder")
    parser.add_argument("--var", type=_variable, action="append", default=[], help="name=regex")
    parser.add_argument(
        "--scrape-interval", type=_duration, default=_duration("5s"), help="for $__rate_interval"
    )
    parser.add_argument("dashboards", nargs="*", type=Path, help="default: grafana/dashboards/*.json")
    args = parser.parse_args(argv)
    boards = args.dashboards or sorted(DASHBOARDS.glob("*.json"))
    for path in boards:
        if not path.is_file():
            parser.error(f"{path}: no such dashboard file")
    variables = {"topic": ".+", "group": ".+", "worker": ".+", **dict(args.var)}
    end = args.end if args.end is not None else time.time()
    prom = Prometheus(args.prometheus)
    renderer = Renderer(prom.range, prom.instant, end - args.last, end, variables, args.scrape_interval)
    try:
        render(renderer, args.out, boards)
    except RenderError as exc:
        print(f"render_dashboards: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
