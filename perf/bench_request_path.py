"""The broker's Python request path in-process: CPU per one-record Produce through a
KafkaConnection over a stand-in transport (no sockets, no kernel), the real handlers and a real
ReplicaManager in a temp dir; the single-partition path (protocol/single_produce.py) against the
generic one (decode to message objects, dispatch, handler, encode), alternated.

Run::

    .venv/bin/python -m perf request-path [--requests 30000] [--runs 3] [--event-loop uvloop]
    .venv/bin/python -m perf request-path --profile generic     # cProfile, by own time

This is where the request-rate figures' Python cost is found and cut (perf/bench_requests.py
measures the same requests over sockets, where the kernel adds ~9 us). 2026-12-05, uvloop, 3
runs each: generic 28.0-28.6 us a request, single-partition 15.3-15.7 us.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from perf.broker_load import produce_frame
from perf.sizes import pick
from shardbroker.broker.client_quota_manager import slices_of
from shardbroker.broker.connection import ConnectionLimits, KafkaConnection
from shardbroker.broker.dispatch import discover
from shardbroker.config.broker_properties import EVENT_LOOPS
from shardbroker.ipc.client_quotas import WorkerQuotaUsage
from shardbroker.metadata.client_quotas import ClientQuotas
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.supervision.event_loop import loop_factory
from tests.unit.replica_fakes import FakeTransport, Harness, image, topic

__all__ = ["PATHS", "cpu_per_request", "main"]

PATHS: Final = ("single", "generic")
RECORD_SIZE: Final = 100
#: Requests sent before the clock starts (segment files created, code paths warm).
WARM_UP: Final = 2000


def _frame(correlation_id: int) -> bytes:
    builder = RecordBatchBuilder()
    builder.append(b"v" * RECORD_SIZE, timestamp=1_700_000_000_000)
    return produce_frame("t", 0, builder.build(), correlation_id)


async def _run(
    path: str, requests: int, profile: cProfile.Profile | None, quotas: ClientQuotas, shared: bool
) -> float:
    with tempfile.TemporaryDirectory(prefix="shardbroker-request-path-") as tmp:
        async with Harness(Path(tmp), image(topic("t"))) as h:
            if shared:  # worker 0 of two sharing quota usage (ipc/client_quotas.py)
                h.state.quotas.share(WorkerQuotaUsage.private(2, slices_of(h.state.quotas.samples))[0])
            h.state.quotas.update(quotas)
            conn = KafkaConnection(h.state, discover(), ConnectionLimits())
            transport = FakeTransport()
            writes = [0]
            transport.on_write = lambda: writes.__setitem__(0, writes[0] + 1)
            conn.connection_made(transport)  # type: ignore[arg-type]
            conn.conn.single_produce = path == "single"
            frames = [_frame(i) for i in range(100)]

            async def send(count: int) -> None:
                for i in range(count):
                    frame = frames[i % 100]
                    buf = conn.get_buffer(len(frame))
                    buf[: len(frame)] = frame
                    want = writes[0] + 1
                    conn.buffer_updated(len(frame))
                    while writes[0] < want:  # the answer leaves on the next loop iteration
                        await asyncio.sleep(0)

            await send(WARM_UP)
            cpu = time.process_time()
            if profile is not None:
                profile.enable()
            await send(requests)
            if profile is not None:
                profile.disable()
            used = time.process_time() - cpu
            conn.connection_lost(None)
            return used / requests * 1e6


def cpu_per_request(
    path: str,
    requests: int,
    event_loop: str = "uvloop",
    profile: bool = False,
    quotas: ClientQuotas | None = None,
    shared: bool = False,
) -> float:
    """us of CPU one request costs on ``path`` ("single" or "generic"), with these client
    quotas in force (perf/bench_client_quotas.py) or none, their usage ``shared`` with another
    worker's (through a private table) or not."""
    prof = cProfile.Profile() if profile else None
    with asyncio.Runner(loop_factory=loop_factory(event_loop)) as runner:
        us = runner.run(_run(path, requests, prof, quotas or {}, shared))
    if prof is not None:
        pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(40)
    return us


def test_request_path_quick() -> None:
    """Both paths answer every request (figures not judged here)."""
    for path in PATHS:
        assert cpu_per_request(path, 200) > 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf request-path", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=pick(30_000, 2_000), help="per run [30,000]")
    parser.add_argument("--runs", type=int, default=3, help="of each path, alternated [3]")
    parser.add_argument("--event-loop", choices=EVENT_LOOPS, default="uvloop")
    parser.add_argument("--profile", choices=PATHS, help="one cProfile run of this path instead")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.runs < 1:
        parser.error("--requests and --runs must be at least 1")
    if args.profile:
        us = cpu_per_request(args.profile, args.requests, args.event_loop, profile=True)
        print(f"{args.profile}: {us:.1f} us a request under cProfile")
        return 0
    results: dict[str, list[float]] = {path: [] for path in PATHS}
    for _ in range(args.runs):
        for path in PATHS:
            results[path].append(cpu_per_request(path, args.requests, args.event_loop))
    for path, values in results.items():
        print(
            f"{path:8} {statistics.median(values):6.1f} us of CPU a request "
            f"(runs: {', '.join(f'{v:.1f}' for v in values)})"
        )
    return 0
