"""Real processes: a supervisor with two workers (``python -m shardbroker.supervision.supervisor``).

State is read the way /metrics will read it: by attaching to the heartbeat table. Every wait polls
with a deadline; every test kills its process group and unlinks its segment even when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import posix_ipc  # type: ignore[import-not-found, unused-ignore]
import pytest

from shardbroker.supervision.heartbeat import HeartbeatTable, pid_alive, read_owner, segment_name
from shardbroker.supervision.policy import BOOT_ERROR_EXIT, SlotState
from shardbroker.supervision.worker import Worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
READY = int(SlotState.READY)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something other than None or False; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


class Broker:
    """One supervisor process (its own session and process group) and what it spawned."""

    def __init__(self, instance: str, log_path: Path, *extra: str) -> None:
        self.instance = instance
        self.segment = segment_name(instance)
        self.log_path = log_path
        self.worker_pids: set[int] = set()
        self.log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "shardbroker.supervision.supervisor",
                "--instance",
                instance,
                "--workers",
                "2",
                "--beat-interval",
                "0.1",
                *extra,
            ],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def snapshot(self) -> Any:
        """A copy of the heartbeat cells, or None while the table does not exist (yet)."""
        try:
            table = HeartbeatTable.attach(self.segment)
        except (posix_ipc.ExistentialError, ValueError):
            return None
        try:
            if table.owner_pid != self.proc.pid:
                return None  # a stale table from an earlier supervisor
            cells = table.snapshot()
        finally:
            table.close()
        self.worker_pids.update(int(pid) for pid in cells["pid"] if pid > 0)
        return cells

    def wait_ready(self, timeout: float = 10.0) -> Any:
        def ready() -> Any:
            cells = self.snapshot()
            return cells if cells is not None and (cells["state"] == READY).all() else None

        return wait_for(ready, timeout, "every worker READY")

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"supervisor still running after {timeout} s") from exc

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in self.worker_pids:  # orphans that left the group would still be here
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait()
        self.log.close()
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(self.segment)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Broker]]:
    started: list[Broker] = []
    count = iter(range(100))

    def start_broker(*extra: str, instance: str | None = None) -> Broker:
        name = instance or f"it{os.getpid()}-{next(count)}"
        broker = Broker(name, tmp_path / f"{name}-{len(started)}.log", *extra)
        started.append(broker)
        return broker

    yield start_broker
    for broker in started:
        broker.cleanup()
    for broker in started:
        if broker.proc.returncode not in (0, BOOT_ERROR_EXIT):
            print(f"--- supervisor {broker.instance} output ---\n{broker.output()}")


def cpus_allowed(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no Cpus_allowed_list")


def test_killed_worker_is_restarted_alone_then_sigterm_drains(start: Callable[..., Broker]) -> None:
    broker = start()
    cells = broker.wait_ready()
    first, second = int(cells["pid"][0]), int(cells["pid"][1])
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) >= 2:
        cores = sorted(os.sched_getaffinity(0))
        assert [cpus_allowed(first), cpus_allowed(second)] == [str(cores[0]), str(cores[1])]

    os.kill(first, signal.SIGKILL)

    def restarted() -> Any:
        c = broker.snapshot()
        ok = c is not None and c["restarts"][0] == 1 and c["state"][0] == READY and c["pid"][0] != first
        return c if ok else None

    cells = wait_for(restarted, 10.0, "slot 0 restarted")
    assert int(cells["exitcode"][0]) == -signal.SIGKILL
    assert int(cells["pid"][1]) == second and int(cells["restarts"][1]) == 0
    workers = [int(pid) for pid in cells["pid"]]

    broker.proc.send_signal(signal.SIGTERM)
    assert broker.wait_exit(10.0) == 0
    assert not [pid for pid in workers if pid_alive(pid)]
    assert read_owner(broker.segment) is None, "heartbeat segment left behind"


def test_sigkilled_supervisor_leaves_no_orphans_and_its_segment_is_reclaimed(
    start: Callable[..., Broker],
) -> None:
    broker = start()
    cells = broker.wait_ready()
    workers = [int(pid) for pid in cells["pid"]]

    os.kill(broker.proc.pid, signal.SIGKILL)
    broker.wait_exit(5.0)
    wait_for(lambda: not any(pid_alive(pid) for pid in workers), 2.0, "orphaned workers to exit")
    assert read_owner(broker.segment) == broker.proc.pid  # left behind by the SIGKILL

    again = start(instance=broker.instance)
    again.wait_ready()
    assert read_owner(again.segment) == again.proc.pid
    again.proc.send_signal(signal.SIGINT)
    assert again.wait_exit(10.0) == 0
    assert read_owner(again.segment) is None


def failing_setup(worker: Worker) -> None:
    """--setup for the boot-failure test: the data dir is unusable."""
    raise OSError("data dir is not writable")


def test_boot_failure_halts_instead_of_crash_looping(start: Callable[..., Broker]) -> None:
    broker = start("--setup", f"{__name__}:failing_setup")
    assert broker.wait_exit(10.0) == BOOT_ERROR_EXIT
    output = broker.output()
    assert f"exit code {BOOT_ERROR_EXIT}: worker" in output and "failed to boot" in output
    assert output.count("started pid") == 2, "a failing worker was restarted"
    assert not [pid for pid in broker.worker_pids if pid_alive(pid)]
    assert read_owner(broker.segment) is None


class _BlockLoopOnce:
    """Blocks the worker's loop a moment after boot, in the first incarnation of slot 1 only."""

    async def start(self, worker: Worker) -> None:
        if worker.slot == 1 and worker.cell is not None and worker.cell.restarts == 0:
            asyncio.get_running_loop().call_later(0.2, time.sleep, 60)

    async def drain(self) -> None:
        return None


def stuck_setup(worker: Worker) -> None:
    """--setup for the stuck-worker test."""
    worker.add_service(_BlockLoopOnce())


def test_stuck_worker_is_aborted_and_replaced(start: Callable[..., Broker]) -> None:
    broker = start("--setup", f"{__name__}:stuck_setup", "--heartbeat-timeout", "0.5", "--abort-grace", "0.5")
    cells = broker.wait_ready()
    healthy = int(cells["pid"][0])

    def replaced() -> Any:
        c = broker.snapshot()
        return c if c is not None and c["restarts"][1] == 1 and c["state"][1] == READY else None

    cells = wait_for(replaced, 10.0, "the stuck worker replaced")
    assert int(cells["exitcode"][1]) == -signal.SIGABRT
    assert int(cells["pid"][0]) == healthy
    assert "Fatal Python error: Aborted" in broker.output()  # faulthandler's dump of the stuck stack
    broker.proc.send_signal(signal.SIGTERM)
    assert broker.wait_exit(10.0) == 0
