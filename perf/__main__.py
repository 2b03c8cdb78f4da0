"""``python -m perf COMMAND ...``: the perf harness's commands.

Each command is ``"module:function"``, imported only when run (``check`` needs neither a broker
nor matplotlib); the function takes the remaining arguments and returns the exit code. A new
command is one line in ``COMMANDS``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

COMMANDS = {
    "run": ("perf.harness:main", "measure (broker, clients, references, peers) and write a JSON report"),
    "check": ("perf.report:check_main", "compare a report's ratios with the committed baseline"),
    "compare": ("perf.report:compare_main", "two reports side by side"),
    "plot": ("perf.plot:main", "draw a report as PNG charts"),
    "authz": ("perf.bench_authorizer:main", "produce with 1,000 ACLs vs none, and authorizer decisions"),
    "soak": ("perf.soak:main", "mixed load and faults, then every acknowledged record checked"),
    "readcommitted": (
        "perf.bench_readcommitted:main",
        "read_committed vs read_uncommitted consume over 10 % aborted data; Fetch handler cost",
    ),
    "mirror": (
        "perf.bench_mirror:main",
        "shardbroker mirror records/s vs the same fetch code alone; CPU per MB",
    ),
    "transactions": ("perf.bench_transactions:main", "transactional vs idempotent produce; commit latency"),
    "offsetmap": (
        "perf.bench_offset_map:main",
        "the log cleaner's numpy key map vs a dict: build, probe, memory",
    ),
    "cleaner": ("perf.bench_log_cleaner:main", "compacting 100 B keyed records (10 % live) vs read + write"),
    "cleaner-latency": (
        "perf.bench_log_cleaner:latency_main",
        "produce p99 while the log cleaner runs vs idle",
    ),
    "ring-wakeup": (
        "perf.bench_ring:wakeup_main",
        "ring reader wake-up p50/p99 and CPU at 10,000 frames/s and idle, active spin off vs on",
    ),
    "record-sizes": ("perf.bench_record_sizes:main", "produce MB/s by record size, 100 B to 1 MB"),
    "latency": (
        "perf.bench_latency:main",
        "produce->ack and produce->consume p50/p99/p99.9 at 10/50/80 % of capacity and 8,000 records/s",
    ),
    "client-quotas": (
        "perf.bench_client_quotas:main",
        "in-process CPU per one-record Produce with client quotas off, set for others, applying",
    ),
    "request-path": (
        "perf.bench_request_path:main",
        "in-process CPU per one-record Produce: the single-partition path vs the generic one",
    ),
    "requests": (
        "perf.bench_requests:main",
        "small Produce/Fetch requests/s per worker and CPU per request vs Redis XADD -P 1",
    ),
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        usage = "usage: python -m perf COMMAND [ARGS]  (COMMAND --help for its own)\n\n" + "\n".join(
            f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()
        )
        if argv and argv[0] not in ("-h", "--help"):
            print(f"python -m perf: unknown command {argv[0]!r}\n{usage}", file=sys.stderr)
            return 2
        print(usage, file=sys.stderr if not argv else sys.stdout)
        return 2 if not argv else 0
    module, function = COMMANDS[argv[0]][0].split(":")
    command: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    return command(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
