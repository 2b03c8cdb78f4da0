"""What client-quota accounting costs a one-record Produce (broker/client_quota_manager.py), as
a same-run A/B on the in-process request path of perf/bench_request_path.py (single-partition
path, the default one): CPU per request with no quota set (the path pays one attribute test),
with a quota set for another client only (``other``: one memoised lookup per request), with
quotas that apply to this client (``on``: ``producer_byte_rate`` and ``request_percentage`` of
its client id, too high to throttle: both rates recorded on every request), and with realistic
quotas whose usage is shared with another worker (``shared``: 1 MB/s and 1,000 %, not reached
in a run; a lease of 20 kB lasts ~100 requests, and the other worker's usage is read once per
slice, 0.1 s), runs alternated.

Run::

    .venv/bin/python -m perf client-quotas [--requests 30000] [--runs 5]

Figures: the module docstring of broker/client_quota_manager.py.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Final

from perf.bench_request_path import cpu_per_request
from perf.sizes import pick
from shardbroker.metadata.client_quotas import ClientQuotas

__all__ = ["MODES", "main"]

#: The client id perf/broker_load.py's Produce frames carry.
CLIENT_ID: Final = "loadgen"
MODES: Final[dict[str, ClientQuotas]] = {
    "off": {},
    "other": {(("client-id", "someone-else"),): {"producer_byte_rate": 1e6}},
    "on": {(("client-id", CLIENT_ID),): {"producer_byte_rate": 1e15, "request_percentage": 1e9}},
    "shared": {(("client-id", CLIENT_ID),): {"producer_byte_rate": 1e6, "request_percentage": 1000.0}},
}
#: Modes whose usage goes through a shared table (ipc/client_quotas.py).
SHARED: Final = frozenset({"shared"})


def test_client_quotas_quick() -> None:
    """Every mode answers every request (figures not judged here)."""
    for mode, quotas in MODES.items():
        assert cpu_per_request("single", 200, quotas=quotas, shared=mode in SHARED) > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf client-quotas", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=pick(30_000, 2_000), help="per run [30,000]")
    parser.add_argument("--runs", type=int, default=5, help="of each mode, alternated [5]")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.runs < 1:
        parser.error("--requests and --runs must be at least 1")
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.runs):
        for mode, quotas in MODES.items():
            results[mode].append(
                cpu_per_request("single", args.requests, quotas=quotas, shared=mode in SHARED)
            )
    base = statistics.median(results["off"])
    for mode, values in results.items():
        median = statistics.median(values)
        ratios = [v / b for v, b in zip(values, results["off"], strict=True)]
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{mode:6} {median:6.2f} us of CPU a request, x{median / base:.3f} of off "
            f"(per-run ratios {min(ratios):.3f}-{max(ratios):.3f}; runs: {runs})"
        )
    return 0
