"""Doorbells: how an idle ring endpoint sleeps in the kernel and how its peer wakes it.

This module opens files: named FIFOs (``/dev/shm/<segment>.<suffix>``, made by ``shm.py``) and,
for comparison only, POSIX named semaphores.

Why a named FIFO (``FifoDoorbell``, the default)
    * It is a file descriptor, so an asyncio loop (or the supervisor's selector) watches any
      number of rings with ``add_reader``: no thread per ring.
    * It has a name, so an unrelated process (a local producer started from a shell) can attach;
      an ``eventfd`` has the same wake-up path but can only be shared by fork or SCM_RIGHTS
      (opening ``/proc/<pid>/fd/<n>`` of an anon inode fails), and a ``posix_ipc.Semaphore`` has a
      name but no fd, so an event loop would need a thread blocked in ``sem_wait`` per ring.
    * Both ends open it ``O_RDWR | O_NONBLOCK`` (Linux defines O_RDWR on a FIFO): opening never
      blocks waiting for the other side, the reader never sees EOF when a writer dies, and ringing
      never raises SIGPIPE. A full pipe (64 KiB of unconsumed rings) means "already rung": ignored.
    * Cost, measured on this 2-core VM (``python -m perf.bench_ring``: a sleeper in another
      process, rung 1 ms after it went to sleep; medians of 7 runs, range in brackets): FIFO p50
      18 us (16-50), p99 58 us (44-110); POSIX semaphore p50 16 us (14-51), p99 61 us (43-132).
      Both are one kernel wait-queue wake-up of an idle vCPU; the 2 us between them is inside
      the run-to-run spread, so the fd's event-loop integration decides. Ringing costs one
      ``write(2)`` and waking one ``read(2)`` to drain, a few microseconds next to the wake-up.

A ring rings its peer's doorbell at most once per sleep (see ``ring_endpoint.py``: the sleeper publishes an
odd "sleep epoch" in the ring header, the peer rings once per epoch), so the doorbell is not on
the per-frame path. Extra rings are harmless: a sleeper always re-checks the ring after waking.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
from pathlib import Path
from typing import Protocol

import posix_ipc  # type: ignore[import-not-found,unused-ignore]


class Doorbell(Protocol):
    def ring(self) -> None:
        """Wake the sleeper (or make its next ``wait`` return at once)."""

    def wait(self, timeout: float | None) -> bool:
        """Sleep until rung or ``timeout`` seconds (None: forever); True if rung. Drains the bell."""

    def drain(self) -> None:
        """Forget rings received so far (after waking through ``fileno`` in an event loop)."""

    def fileno(self) -> int:
        """A descriptor that polls readable when rung, or -1 if this doorbell has none."""

    def close(self) -> None: ...


class FifoDoorbell:
    """A doorbell on a named FIFO: ring = write one byte, wait = poll for readable, then drain."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)

    def ring(self) -> None:
        with contextlib.suppress(BlockingIOError):  # pipe full: rung already
            os.write(self._fd, b"\x01")

    def wait(self, timeout: float | None) -> bool:
        # poll() takes milliseconds: round a positive timeout up, so wait(50e-6) still sleeps.
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000.0))
        rung = bool(self._poll.poll(ms))
        if rung:
            self.drain()
        return rung

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while len(os.read(self._fd, 4096)) == 4096:
                pass

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(KeyError, ValueError):
                self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1


class SemaphoreDoorbell:
    """A doorbell on a POSIX named semaphore. Kept to measure against ``FifoDoorbell``; not used
    by rings because it has no descriptor an event loop can watch.

    ``create=True`` makes it (``O_CREAT | O_EXCL``, value 0); the creator calls ``unlink``.
    """

    def __init__(self, name: str, create: bool = False) -> None:
        flags = posix_ipc.O_CREX if create else 0
        self.name = name
        self._sem = posix_ipc.Semaphore(name, flags, mode=0o600, initial_value=0)

    def ring(self) -> None:
        self._sem.release()

    def wait(self, timeout: float | None) -> bool:
        try:
            self._sem.acquire(timeout)
        except posix_ipc.BusyError:
            return False
        self.drain()
        return True

    def drain(self) -> None:
        with contextlib.suppress(posix_ipc.BusyError):
            while True:
                self._sem.acquire(0)

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        self._sem.close()

    def unlink(self) -> None:
        with contextlib.suppress(posix_ipc.ExistentialError):
            posix_ipc.unlink_semaphore(self.name)
