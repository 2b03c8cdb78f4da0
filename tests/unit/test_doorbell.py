"""Doorbells: a ring is never lost, never blocks the ringer, and wakes a sleeper in another process."""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterator
from pathlib import Path

import posix_ipc  # type: ignore[import-not-found,unused-ignore]
import pytest

from shardbroker.ipc.doorbell import Doorbell, FifoDoorbell, SemaphoreDoorbell


@pytest.fixture(params=["fifo", "semaphore"])
def bell(request: pytest.FixtureRequest) -> Iterator[Doorbell]:
    name = f"shardbroker-bell{os.getpid()}"
    if request.param == "fifo":
        path = Path("/dev/shm") / f"{name}.rbell"
        os.mkfifo(path, 0o600)
        try:
            fifo = FifoDoorbell(path)
            yield fifo
            fifo.close()
        finally:
            path.unlink()
    else:
        with contextlib.suppress(posix_ipc.ExistentialError):  # left by a killed run with our pid
            posix_ipc.unlink_semaphore(f"/{name}")
        sem = SemaphoreDoorbell(f"/{name}", create=True)
        try:
            yield sem
        finally:
            sem.close()
            sem.unlink()


def test_wait_times_out_when_not_rung(bell: Doorbell) -> None:
    t0 = time.monotonic()
    assert not bell.wait(0.02)
    assert 0.015 <= time.monotonic() - t0 < 1.0
    assert not bell.wait(0)


def test_ring_before_wait_is_kept_and_drained(bell: Doorbell) -> None:
    bell.ring()
    bell.ring()
    assert bell.wait(1.0)
    assert not bell.wait(0)  # both rings consumed by one wake-up
    bell.ring()
    bell.drain()
    assert not bell.wait(0)


def test_ring_never_blocks_even_when_nobody_drains(bell: Doorbell) -> None:
    for _ in range(70_000):  # more than a 64 KiB pipe holds
        bell.ring()
    assert bell.wait(0)
    assert not bell.wait(0)


def test_sub_millisecond_timeout_still_sleeps(bell: Doorbell) -> None:
    t0 = time.monotonic()
    assert not bell.wait(50e-6)
    assert time.monotonic() - t0 >= 40e-6


def test_fifo_fd_is_pollable(bell: Doorbell) -> None:
    if bell.fileno() < 0:
        pytest.skip("semaphores have no descriptor")
    assert select.select([bell.fileno()], [], [], 0)[0] == []
    bell.ring()
    assert select.select([bell.fileno()], [], [], 0)[0] == [bell.fileno()]
    bell.drain()
    assert select.select([bell.fileno()], [], [], 0)[0] == []


def test_wakes_sleeper_in_another_process(bell: Doorbell) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        ok = bell.wait(10.0)
        os._exit(0 if ok else 1)
    time.sleep(0.01)
    bell.ring()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
