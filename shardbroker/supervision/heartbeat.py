"""Heartbeat table: one shared-memory cell per worker slot, for liveness and the worker gauges.

Opens and unlinks POSIX shared memory (posix-ipc) and maps it (mmap); numpy gives typed views.

Why shared memory and not gunicorn's per-worker temp file touched with fchmod: the supervisor
reads every cell each tick and /metrics reads them on every scrape; reading a mapped page is a
memory load with no system call, and a worker's beat is one 8-byte store, no fsync, no inode.

Layout (little-endian, 64-byte aligned so each cell sits alone on a cache line and two workers
never write the same line)::

    header, 64 bytes: 8 x int64
      [0] magic: b"SHSBHBT1" read as a little-endian int64
      [1] layout version (1)
      [2] owner pid: the supervisor that created the segment
      [3] number of slots
      [4] cell size in bytes (64)
      [5..7] reserved (0)
    cells, 64 bytes each, slot i at offset 64 + 64 * i:
      beat      float64  time.monotonic() of the last beat. CLOCK_MONOTONIC is one clock for
                         every process on a Linux host, so the supervisor compares it with its own
      pid       int64    the worker process that owns the cell (0 before it wrote)
      state     int64    policy.SlotState
      restarts  int64    times the slot was restarted (shardbroker_worker_restarts_total)
      started   float64  monotonic time the supervisor started the current worker
      exitcode  int64    how the previous worker ended (os.waitstatus_to_exitcode; -N = signal N)
      reserved  2 x int64

One writer per cell at any time: the supervisor writes a cell only while its slot has no live
worker (`HeartbeatCell.reset` before fork, `HeartbeatCell.mark_dead` after the reap); the worker
writes it (`claim`, `beat`, `set_state`) for the rest of its life. Every field is an aligned
8-byte word, so a reader never sees a torn value, only possibly a mix of old and new fields, which
the supervisor tolerates by matching the pid.

Naming and stale segments: the segment is ``/shardbroker-<instance>-heartbeat`` (the prefix the
ipc layer's other segments use). A supervisor killed with SIGKILL cannot unlink it, so `create`
reads the owner pid of an existing segment and unlinks it when that process is gone, and refuses
(`SegmentInUse`) when it is alive: that is another supervisor with the same instance name. A
segment too short to hold a header was left by a creator killed between create and write: stale.
Known gap: a recycled owner pid makes a stale segment look in use; the message names the pid.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import time
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import posix_ipc  # type: ignore[import-not-found, unused-ignore]  # ships no stubs

from shardbroker.ipc.procfs import STATE, stat_fields
from shardbroker.supervision.policy import Beat, SlotState

SEGMENT_PREFIX: Final = "/shardbroker-"
MAGIC: Final = int.from_bytes(b"SHSBHBT1", "little")
LAYOUT_VERSION: Final = 1
HEADER_BYTES: Final = 64
CELL_BYTES: Final = 64
_HEADER_WORDS: Final = HEADER_BYTES // 8
_OWNER: Final = 2

CELL_DTYPE: Final = np.dtype(
    [
        ("beat", "<f8"),
        ("pid", "<i8"),
        ("state", "<i8"),
        ("restarts", "<i8"),
        ("started", "<f8"),
        ("exitcode", "<i8"),
        ("reserved", "<i8", (2,)),
    ]
)
assert CELL_DTYPE.itemsize == CELL_BYTES

# Linux allows 255 bytes, macOS only 31 for the whole name: keep instance names short and plain.
_INSTANCE_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class SegmentInUse(RuntimeError):
    """The heartbeat segment belongs to a live process: another supervisor with this instance."""


def segment_name(instance: str) -> str:
    """``/shardbroker-<instance>-heartbeat``; `instance` tells concurrent brokers on one host apart."""
    if not _INSTANCE_RE.fullmatch(instance):
        raise ValueError(f"instance name must match {_INSTANCE_RE.pattern}, got {instance!r}")
    return f"{SEGMENT_PREFIX}{instance}-heartbeat"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a zombie counts as gone: it runs nothing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        return stat_fields(pid)[STATE] != b"Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True  # no /proc (not Linux): kill(0) said it exists


def read_owner(name: str) -> int | None:
    """The owner pid recorded in segment ``name``: None if there is no such segment, 0 if it is
    too short to have a header (its creator died before writing one)."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError:
        return None
    try:
        if shm.size < HEADER_BYTES:
            return 0
        with mmap.mmap(shm.fd, HEADER_BYTES, access=mmap.ACCESS_READ) as mapped:
            words = np.frombuffer(mapped, dtype="<i8", count=_HEADER_WORDS)
            owner = int(words[_OWNER])
            del words  # release the buffer before the mmap closes
            return owner
    finally:
        shm.close_fd()


def reclaim_stale(name: str) -> bool:
    """Unlink segment ``name`` if its owner is dead; True if it did. Raises `SegmentInUse` if alive."""
    owner = read_owner(name)
    if owner is None:
        return False
    if pid_alive(owner):
        raise SegmentInUse(
            f"shared memory {name} belongs to live process {owner}: another shardbroker supervisor "
            "with the same instance name is running (stop it, or choose another instance)"
        )
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        return False  # someone else reclaimed it first
    return True


class HeartbeatCell:
    """One slot's cell. The worker holds it for its lifetime; the supervisor only between workers."""

    def __init__(self, table: HeartbeatTable, slot: int) -> None:
        self._cells = table.cells
        self.slot = slot

    # --- worker side ---

    def claim(self, pid: int, state: SlotState = SlotState.BOOTING) -> None:
        """First write of a new worker: its pid and state, then a beat."""
        cell = self._cells[self.slot]
        cell["pid"] = pid
        cell["state"] = int(state)
        self.beat()

    def beat(self, now: float | None = None) -> None:
        self._cells["beat"][self.slot] = time.monotonic() if now is None else now

    def set_state(self, state: SlotState) -> None:
        self._cells["state"][self.slot] = int(state)
        self.beat()

    # --- supervisor side (slot has no live worker) ---

    def reset(self, restarts: int, now: float) -> None:
        """Before forking a worker into the slot."""
        cell = self._cells[self.slot]
        cell["pid"] = 0
        cell["state"] = int(SlotState.STARTING)
        cell["restarts"] = restarts
        cell["started"] = now
        cell["beat"] = now

    def mark_dead(self, exit_code: int) -> None:
        """After reaping the slot's worker."""
        cell = self._cells[self.slot]
        cell["exitcode"] = exit_code
        cell["state"] = int(SlotState.DEAD)

    # --- anyone ---

    def read(self) -> Beat:
        cell = self._cells[self.slot]
        return Beat(pid=int(cell["pid"]), state=SlotState(int(cell["state"])), at=float(cell["beat"]))

    @property
    def restarts(self) -> int:
        return int(self._cells["restarts"][self.slot])

    @property
    def exit_code(self) -> int:
        return int(self._cells["exitcode"][self.slot])


class HeartbeatTable:
    """The mapped segment: `create` (supervisor: reclaims stale, owns, unlinks) or `attach` (tools,
    tests, a metrics reader: maps an existing one, never unlinks)."""

    def __init__(self, name: str, mapped: mmap.mmap, *, owner: bool) -> None:
        self.name = name
        self.is_owner = owner
        self._mmap: mmap.mmap | None = mapped
        self.header: npt.NDArray[np.int64] = np.ndarray(
            (_HEADER_WORDS,), dtype="<i8", buffer=mapped, offset=0
        )
        if int(self.header[0]) != MAGIC or int(self.header[1]) != LAYOUT_VERSION:
            self._release()
            raise ValueError(f"{name} is not a version-{LAYOUT_VERSION} shardbroker heartbeat segment")
        self.slots = int(self.header[3])
        self.cells: np.ndarray[Any, np.dtype[np.void]] = np.ndarray(
            (self.slots,), dtype=CELL_DTYPE, buffer=mapped, offset=HEADER_BYTES
        )

    @classmethod
    def create(cls, name: str, slots: int) -> HeartbeatTable:
        """Create the segment for ``slots`` workers, owned by this process (reclaims a stale one)."""
        if slots < 1:
            raise ValueError(f"need at least one slot, got {slots}")
        reclaim_stale(name)
        size = HEADER_BYTES + CELL_BYTES * slots
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        except posix_ipc.ExistentialError as exc:
            raise SegmentInUse(f"shared memory {name} was created by another process just now") from exc
        try:
            mapped = mmap.mmap(shm.fd, size)
        except BaseException:
            posix_ipc.unlink_shared_memory(name)
            raise
        finally:
            shm.close_fd()
        header = np.ndarray((_HEADER_WORDS,), dtype="<i8", buffer=mapped, offset=0)
        header[:] = [MAGIC, LAYOUT_VERSION, os.getpid(), slots, CELL_BYTES, 0, 0, 0]
        del header
        return cls(name, mapped, owner=True)

    @classmethod
    def attach(cls, name: str) -> HeartbeatTable:
        """Map an existing segment (raises posix_ipc.ExistentialError if there is none)."""
        shm = posix_ipc.SharedMemory(name)
        try:
            mapped = mmap.mmap(shm.fd, shm.size)
        finally:
            shm.close_fd()
        return cls(name, mapped, owner=False)

    @property
    def owner_pid(self) -> int:
        return int(self.header[_OWNER])

    def cell(self, slot: int) -> HeartbeatCell:
        if not 0 <= slot < self.slots:
            raise IndexError(f"slot {slot} out of range 0..{self.slots - 1}")
        return HeartbeatCell(self, slot)

    def snapshot(self) -> np.ndarray[Any, np.dtype[np.void]]:
        """A private copy of every cell (for /metrics and tests): one consistent-enough read."""
        return self.cells.copy()

    def close(self) -> None:
        """Unmap. Cells handed out keep views on the mapping; if any outlive this call the
        mapping stays until they are collected (the segment is still unlinked by `unlink`)."""
        self._release()

    def unlink(self) -> None:
        """Remove the name (only the owner should): the memory goes when the last mapping does."""
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_shared_memory(self.name)

    def close_and_unlink(self) -> None:
        try:
            if self.is_owner:
                self.unlink()
        finally:
            self.close()

    def __enter__(self) -> HeartbeatTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close_and_unlink()

    def _release(self) -> None:
        mapped, self._mmap = self._mmap, None
        if mapped is None:
            return
        self.header = np.zeros(_HEADER_WORDS, dtype="<i8")
        self.cells = np.zeros(0, dtype=CELL_DTYPE)
        with contextlib.suppress(BufferError):  # a cell still holds a view: it goes with that
            mapped.close()
