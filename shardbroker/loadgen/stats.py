"""What a load run measured: per-second windows, the final summary, and how both are printed.

Pure (no sockets, no processes): the load processes send :class:`Window` objects, the runner
folds them into a :class:`Tally`, and this module turns a tally into the progress line printed
every second and the final :class:`Summary` (text and JSON).

Units: MB is 10^6 bytes (as in the perf harness reports); latencies are kept in seconds as
float64 and printed in milliseconds. Percentiles are exact (numpy's linear interpolation over
every latency seen), not histogram buckets: at the rates a 2-core host reaches (< 1 M records/s)
keeping every latency costs 8 MB per million records, which is cheap next to the client itself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "PERCENTILES",
    "Summary",
    "Tally",
    "Window",
    "latency_cdf",
    "latency_percentiles",
    "progress_line",
]

MB = 1e6
#: The percentiles of the final summary (Kafka's producer-perf-test prints 50/95/99/99.9).
PERCENTILES = (50.0, 95.0, 99.0, 99.9)


@dataclass
class Window:
    """What one load process did since its previous window: acknowledged (producers) or received
    (consumers) records and bytes, and their latencies in seconds (may be empty)."""

    records: int
    nbytes: int
    latencies: bytes = b""  # float64 array, native order (np.ndarray.tobytes)
    errors: int = 0

    @classmethod
    def of(cls, records: int, nbytes: int, latencies: list[float], errors: int = 0) -> Window:
        return cls(records, nbytes, np.asarray(latencies, dtype=np.float64).tobytes(), errors)

    def latency_array(self) -> npt.NDArray[np.float64]:
        return np.frombuffer(self.latencies, dtype=np.float64)


@dataclass
class Tally:
    """Windows folded together: the whole run, or the last second of it."""

    records: int = 0
    nbytes: int = 0
    errors: int = 0
    _latencies: list[npt.NDArray[np.float64]] = field(default_factory=list)

    def add(self, window: Window) -> None:
        self.records += window.records
        self.nbytes += window.nbytes
        self.errors += window.errors
        lat = window.latency_array()
        if lat.size:
            self._latencies.append(lat)

    def latencies(self) -> npt.NDArray[np.float64]:
        if not self._latencies:
            return np.zeros(0, dtype=np.float64)
        if len(self._latencies) > 1:
            self._latencies = [np.concatenate(self._latencies)]
        return self._latencies[0]


def latency_percentiles(latencies: npt.NDArray[np.float64]) -> dict[str, float] | None:
    """avg, p50, p95, p99, p99.9 and max in milliseconds; None when nothing was measured."""
    if not latencies.size:
        return None
    ms = latencies * 1000.0
    values = np.percentile(ms, PERCENTILES)
    out = {"avg": float(ms.mean())}
    out.update({f"p{p:g}": float(v) for p, v in zip(PERCENTILES, values, strict=True)})
    out["max"] = float(ms.max())
    return out


def latency_cdf(latencies: npt.NDArray[np.float64], points: int = 200) -> list[list[float]]:
    """[[latency ms, fraction <= it], ...] at ``points`` quantiles, log-spaced towards the tail
    (0.5 .. 0.9999) so that the p99.9 region of a CDF plot has points of its own."""
    if not latencies.size:
        return []
    tail = 1.0 - np.logspace(np.log10(0.5), np.log10(1e-4), points)
    fractions = np.concatenate(([0.0, 0.1, 0.25], tail, [1.0]))
    values = np.quantile(latencies * 1000.0, fractions)
    return [[float(v), float(f)] for v, f in zip(values, fractions, strict=True)]


def progress_line(elapsed: float, window: Tally, seconds: float, total: Tally) -> str:
    """One line per second: what the last ``seconds`` carried, and the running total."""
    rate = window.records / seconds if seconds > 0 else 0.0
    mb = window.nbytes / MB / seconds if seconds > 0 else 0.0
    line = f"{elapsed:7.1f} s  {rate:12,.0f} records/s  {mb:9.2f} MB/s"
    pct = latency_percentiles(window.latencies())
    if pct is not None:
        line += f"  avg {pct['avg']:8.2f} ms  p99 {pct['p99']:8.2f} ms"
    line += f"  ({total.records:,} records)"
    if total.errors:
        line += f"  {total.errors:,} errors"
    return line


@dataclass
class Summary:
    """The final figures of one run (``--json`` prints :meth:`as_json`)."""

    mode: str
    topic: str
    records: int
    bytes: int
    seconds: float
    errors: int
    latency_ms: dict[str, float] | None
    config: dict[str, Any]

    @classmethod
    def of(cls, mode: str, topic: str, tally: Tally, seconds: float, config: dict[str, Any]) -> Summary:
        return cls(
            mode=mode,
            topic=topic,
            records=tally.records,
            bytes=tally.nbytes,
            seconds=seconds,
            errors=tally.errors,
            latency_ms=latency_percentiles(tally.latencies()),
            config=config,
        )

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["records_per_s"] = self.records_per_s
        out["mb_per_s"] = self.mb_per_s
        return out

    def text(self) -> str:
        lines = [
            f"{self.mode}: {self.records:,} records ({self.bytes / MB:,.1f} MB) in {self.seconds:.2f} s: "
            f"{self.records_per_s:,.0f} records/s, {self.mb_per_s:,.2f} MB/s"
            + (f", {self.errors:,} errors" if self.errors else "")
        ]
        if self.latency_ms is not None:
            what = "end-to-end latency" if self.mode == "e2e" else "latency"
            parts = "  ".join(f"{k} {v:.2f}" for k, v in self.latency_ms.items())
            lines.append(f"{what} ms: {parts}")
        return "\n".join(lines)
