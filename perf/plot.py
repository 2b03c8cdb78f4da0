"""``python -m perf plot REPORT.json --out DIR``: PNG charts of a perf report (matplotlib, no
display needed). Writes files into ``DIR``.

- ``throughput_vs_record_size.png``: produce and consume MB/s and Redis XADD MB/s against the
  record size (log x), with records/s on a second panel;
- ``throughput_vs_partitions.png`` and ``throughput_vs_workers.png``: produce MB/s;
- ``latency_cdf.png``: the latency CDFs (log x; the tail is where they differ): produce at full
  speed and produce->consume at each load point;
- ``latency_vs_load.png``: p50/p99/p99.9 of produce->ack and produce->consume against the
  records/s reached at each load point of the sweep (perf/bench_latency.py), log y.

Throughput points are the median of the run's repeats, with bars from the slowest to the fastest
repeat (on a shared host the bars are the honest part). Each chart says which reference its run
measured alongside, and its median, so a chart is read against the machine it came from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt

from perf.report import ReportError, load

__all__ = ["FILES", "main", "plot"]

FILES = (
    "throughput_vs_record_size.png",
    "throughput_vs_partitions.png",
    "throughput_vs_workers.png",
    "latency_cdf.png",
    "latency_vs_load.png",
)
#: The sweep's latency entries: ``<side>.<point>`` (perf/harness.py's _latency_round).
SIDES = {"ack": ("produce->ack", "tab:blue"), "e2e": ("produce->consume", "tab:red")}
LABELS = {"record_size": "produce", "consume": "consume", "redis": "Redis XADD (peer)"}


def _series(
    doc: dict[str, Any], group: str, key: str = "value"
) -> tuple[list[float], list[float], list[list[float]]]:
    """x, the medians, and for MB/s the [below, above] distance to the slowest and fastest repeat."""
    points = sorted(
        (m["x"], m.get(key) or 0.0, m["values"]) for m in doc["metrics"].values() if m["group"] == group
    )
    x = [p[0] for p in points]
    y = [p[1] for p in points]
    spread = [[p[1] - min(p[2]) for p in points], [max(p[2]) - p[1] for p in points]]
    if key != "value":
        spread = [[0.0] * len(points), [0.0] * len(points)]
    return x, y, spread


def _footer(doc: dict[str, Any]) -> str:
    ref = doc["references"].get("socket_sink")
    where = f"; loopback socket sink {ref['median']:,.0f} MB/s in the same run" if ref else ""
    return f"{doc['created']} ({'quick' if doc['quick'] else 'full'} run){where}"


def _record_size(doc: dict[str, Any], path: Path) -> None:
    fig, (mb, rate) = plt.subplots(1, 2, figsize=(11, 4.2))
    for group, label in LABELS.items():
        x, y, spread = _series(doc, group)
        if x:
            mb.errorbar(x, y, yerr=spread, marker="o", capsize=3, label=label)
            xr, yr, _ = _series(doc, group, "records_per_s")
            rate.plot(xr, yr, marker="o", label=label)
    for ax, unit in ((mb, "MB/s"), (rate, "records/s")):
        ax.set_xscale("log")
        ax.set_xlabel("record size (bytes)")
        ax.set_ylabel(unit)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("Throughput vs record size (one producer, one consumer, 4 partitions, 2 workers)")
    fig.text(0.01, 0.01, _footer(doc), fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _simple(doc: dict[str, Any], group: str, xlabel: str, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    x, y, spread = _series(doc, group)
    ax.errorbar(x, y, yerr=spread, marker="o", capsize=3, label="produce MB/s")
    ax.set_xscale("log", base=2)
    ax.set_xticks(x, [f"{v:g}" for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("MB/s")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title(title)
    fig.text(0.01, 0.01, _footer(doc), fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency(doc: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, lat in doc["latency"].items():
        if name.startswith("ack."):
            continue  # the e2e curve of the same point bounds it; latency_vs_load.png has both
        ms = [p[0] for p in lat["cdf"]]
        frac = [p[1] for p in lat["cdf"]]
        params = lat["params"]
        label = f"{name}: {params.get('record_size', '?')} B"
        if "records_per_s" in params:
            label += f" at {params['records_per_s']:,.0f}/s"
        ax.plot(ms, frac, label=f"{label} (p99 {lat['percentiles']['p99']:.1f} ms)")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of records")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Latency CDF")
    fig.text(0.01, 0.01, _footer(doc), fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_vs_load(doc: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for side, (what, color) in SIDES.items():
        points = sorted(
            (lat["params"]["records_per_s"], lat["percentiles"])
            for name, lat in doc["latency"].items()
            if name.startswith(side + ".") and "records_per_s" in lat["params"]
        )
        if not points:
            continue
        rates = [p[0] for p in points]
        for key, style in (("p50", ":"), ("p99", "-"), ("p99.9", "--")):
            ax.plot(rates, [p[1][key] for p in points], style, color=color, marker="o", label=f"{what} {key}")
    ax.set_yscale("log")
    ax.set_xlabel("records/s reached (one record per Produce request, consumer attached)")
    ax.set_ylabel("latency (ms)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("Latency vs load (10/50/80 % of capacity and a fixed rate)")
    fig.text(0.01, 0.01, _footer(doc), fontsize=7, alpha=0.7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(doc: dict[str, Any], out: Path) -> list[Path]:
    """Draw every chart of ``doc`` into ``out`` (created if needed); return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / name for name in FILES]
    _record_size(doc, paths[0])
    _simple(doc, "partitions", "partitions", "Produce throughput vs partitions (1 KB records)", paths[1])
    _simple(
        doc, "workers", "broker workers", "Produce throughput vs broker workers (2 producers, 1 KB)", paths[2]
    )
    _latency(doc, paths[3])
    _latency_vs_load(doc, paths[4])
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf plot", description="Draw a perf report as PNGs.")
    parser.add_argument("report", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="directory for the PNG files")
    args = parser.parse_args(argv)
    try:
        doc = load(args.report)
    except ReportError as exc:
        print(f"python -m perf plot: error: {exc}", file=sys.stderr)
        return 2
    for path in plot(doc, args.out):
        print(path)
    return 0
