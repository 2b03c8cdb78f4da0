"""shardbroker.loadgen.runner with stand-in load processes (no Kafka): the start handshake, the
folding of windows into the summary, progress lines, and the failures a run must report.

The stand-ins are spawned like the real clients, so they live at module level here.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from shardbroker.loadgen.clients import Done
from shardbroker.loadgen.runner import LoadError, _Process, _run
from shardbroker.loadgen.stats import Window


def steady(settings: int, index: int, queue: Any, go: Any, stop: Any) -> None:
    """``settings`` windows of 100 records of 10 B, 2 ms latency each, over ~1.2 s."""
    queue.put(("ready", index, None))
    go.wait()
    for _ in range(settings):
        time.sleep(1.2 / settings)
        queue.put(("window", index, Window.of(100, 1000, [0.002] * 100)))
    queue.put(("done", index, Done(100 * settings, None)))


def burst(settings: int, index: int, queue: Any, go: Any, stop: Any) -> None:
    """``settings`` windows as ``steady``'s, all at once (an e2e producer done before its consumer)."""
    queue.put(("ready", index, None))
    go.wait()
    for _ in range(settings):
        queue.put(("window", index, Window.of(100, 1000, [0.001] * 100)))
    queue.put(("done", index, Done(100 * settings, None)))


def vanishes(settings: int, index: int, queue: Any, go: Any, stop: Any) -> None:
    queue.put(("ready", index, None))
    go.wait()
    os._exit(3)  # no "done": as if librdkafka had crashed the process


def crashes_at_start(settings: int, index: int, queue: Any, go: Any, stop: Any) -> None:
    os._exit(4)


def refuses(settings: int, index: int, queue: Any, go: Any, stop: Any) -> None:
    queue.put(("error", index, f"producer {index}: topic 'x' not usable"))


def test_windows_of_every_process_make_the_summary_and_progress_lines() -> None:
    lines: list[str] = []
    result = _run(
        "produce",
        "t",
        [_Process(steady, 12, True), _Process(steady, 6, True)],
        {"k": 1},
        lines.append,
        connect_timeout=10,
    )
    summary = result.summary
    assert (summary.records, summary.bytes, summary.errors) == (1800, 18_000, 0)
    assert 1.0 < summary.seconds < 10
    assert summary.latency_ms is not None and summary.latency_ms["p99"] == pytest.approx(2.0)
    assert result.latencies.size == 1800 and not result.errors and not result.interrupted
    assert lines and "records/s" in lines[0] and "p99" in lines[0]


def test_a_process_that_exits_without_reporting_fails_the_run() -> None:
    with pytest.raises(LoadError, match="load process 1 exited with code 3 without reporting"):
        _run("produce", "t", [_Process(steady, 40, True), _Process(vanishes, 0, True)], {}, None, 10)


def test_a_process_that_dies_before_connecting_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(LoadError, match="load process 1 exited with code 4 before connecting"):
        _run("produce", "t", [_Process(steady, 1, True), _Process(crashes_at_start, 0, True)], {}, None, 600)
    assert time.monotonic() - started < 300, "not the 600 s connect timeout"


def test_a_process_that_refuses_fails_the_run_with_its_reason() -> None:
    with pytest.raises(LoadError, match="producer 0: topic 'x' not usable"):
        _run("produce", "t", [_Process(refuses, 0, True)], {}, None, 10)


def test_only_counted_processes_make_the_figures() -> None:
    result = _run("e2e", "t", [_Process(steady, 4, True), _Process(burst, 8, False)], {}, None, 10)
    assert result.summary.records == 400
    # The uncounted producer's latencies are kept apart: e2e's produce -> acknowledgement figure.
    assert result.latencies.size == 400 and result.ack_latencies.size == 800
