"""The heartbeat table: layout, one-writer cell operations, attach, stale-segment reclaim."""

from __future__ import annotations

import contextlib
import mmap
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import posix_ipc  # type: ignore[import-not-found, unused-ignore]
import pytest

from shardbroker.supervision.heartbeat import (
    CELL_BYTES,
    HEADER_BYTES,
    MAGIC,
    HeartbeatTable,
    SegmentInUse,
    pid_alive,
    read_owner,
    reclaim_stale,
    segment_name,
)
from shardbroker.supervision.policy import Beat, SlotState

_counter = iter(range(1_000_000))


@pytest.fixture
def name() -> Iterator[str]:
    """A segment name of this test alone, unlinked afterwards whatever happened."""
    segment = segment_name(f"t{os.getpid()}-{next(_counter)}")
    yield segment
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(segment)


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_segment(name: str, words: list[int], size: int) -> None:
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=size)
    with mmap.mmap(shm.fd, size) as mapped:
        view = np.frombuffer(mapped, dtype="<i8", count=len(words))
        view[:] = words
        del view
    shm.close_fd()


def shm_exists(name: str) -> bool:
    return read_owner(name) is not None


@pytest.mark.parametrize("instance", ["a", "broker-9092", "x.y_z", "A" * 64])
def test_segment_name_uses_the_ipc_prefix(instance: str) -> None:
    assert segment_name(instance) == f"/shardbroker-{instance}-heartbeat"


@pytest.mark.parametrize("instance", ["", "a/b", "with space", "A" * 65, "é"])
def test_segment_name_rejects_unsafe_instances(instance: str) -> None:
    with pytest.raises(ValueError):
        segment_name(instance)


def test_layout_header_and_cache_line_cells(name: str) -> None:
    with HeartbeatTable.create(name, 3) as table:
        assert table.owner_pid == os.getpid()
        assert table.slots == 3
        assert CELL_BYTES == 64 and HEADER_BYTES == 64
        assert [int(w) for w in table.header[:5]] == [MAGIC, 1, os.getpid(), 3, 64]
        shm = posix_ipc.SharedMemory(name)
        assert shm.size >= HEADER_BYTES + 3 * CELL_BYTES
        shm.close_fd()


def test_cell_lifecycle_is_visible_to_an_attached_reader(name: str) -> None:
    with HeartbeatTable.create(name, 2) as table:
        reader = HeartbeatTable.attach(name)
        try:
            cell = table.cell(1)
            cell.reset(restarts=4, now=12.5)
            assert reader.cell(1).read() == Beat(pid=0, state=SlotState.STARTING, at=12.5)
            cell.claim(4321)
            got = reader.cell(1).read()
            assert (got.pid, got.state) == (4321, SlotState.BOOTING)
            cell.beat(20.0)
            cell.set_state(SlotState.READY)
            assert reader.cell(1).read().state is SlotState.READY
            assert reader.cell(1).read().at >= 20.0
            cell.mark_dead(-9)
            assert reader.cell(1).exit_code == -9
            assert reader.cell(1).restarts == 4
            assert reader.cell(1).read().state is SlotState.DEAD
            # the neighbour cell was never written
            assert reader.cell(0).read() == Beat(pid=0, state=SlotState.EMPTY, at=0.0)
            snap = reader.snapshot()
            assert snap["restarts"].tolist() == [0, 4]
        finally:
            reader.close()


def test_beat_defaults_to_the_monotonic_clock(name: str) -> None:
    with HeartbeatTable.create(name, 1) as table:
        before = time.monotonic()
        table.cell(0).beat()
        assert before <= table.cell(0).read().at <= time.monotonic()


def test_cell_index_is_checked(name: str) -> None:
    with HeartbeatTable.create(name, 2) as table, pytest.raises(IndexError):
        table.cell(2)


def test_close_and_unlink_removes_the_segment_even_with_cells_alive(name: str) -> None:
    table = HeartbeatTable.create(name, 2)
    cell = table.cell(0)  # holds a view on the mapping
    table.close_and_unlink()
    assert not shm_exists(name)
    del cell


def test_attach_never_unlinks(name: str) -> None:
    with HeartbeatTable.create(name, 1):
        with HeartbeatTable.attach(name):
            pass
        assert shm_exists(name)
    assert not shm_exists(name)


def test_a_live_owner_is_refused(name: str) -> None:
    with HeartbeatTable.create(name, 1), pytest.raises(SegmentInUse, match=str(os.getpid())):
        HeartbeatTable.create(name, 1)


def test_a_dead_owners_segment_is_reclaimed(name: str) -> None:
    gone = dead_pid()
    write_segment(name, [MAGIC, 1, gone, 1, 64, 0, 0, 0], HEADER_BYTES + CELL_BYTES)
    assert read_owner(name) == gone
    with HeartbeatTable.create(name, 2) as table:
        assert table.owner_pid == os.getpid()
        assert table.slots == 2


@pytest.mark.parametrize("size", [1, HEADER_BYTES - 8])
def test_a_half_created_segment_is_reclaimed(name: str, size: int) -> None:
    shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=size)
    shm.close_fd()
    assert read_owner(name) == 0
    assert reclaim_stale(name) is True
    assert not shm_exists(name)


def test_reclaim_of_nothing_is_false(name: str) -> None:
    assert read_owner(name) is None
    assert reclaim_stale(name) is False


def test_attach_rejects_a_foreign_layout(name: str) -> None:
    write_segment(name, [1234, 1, os.getpid(), 1, 64, 0, 0, 0], HEADER_BYTES + CELL_BYTES)
    with pytest.raises(ValueError, match="not a version-1"):
        HeartbeatTable.attach(name)


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-5)
    assert not pid_alive(dead_pid())


def test_a_zombie_is_not_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10
        while pid_alive(child.pid):
            assert time.monotonic() < deadline, "child never exited"
            time.sleep(0.005)
        assert child.poll() == 0  # it was a zombie until this reap
    finally:
        child.kill()
        child.wait()
