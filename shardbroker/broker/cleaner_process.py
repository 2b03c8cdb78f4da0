"""Where a worker's cleans run: a child process per cleaner thread (spawned, SCHED_IDLE), fed one
clean at a time over a pipe; the worker keeps the swaps (they change its segment list).

Why a process, measured (``python -m perf cleaner-latency --runs 5``: round trips of one-record
Produce requests, acks=1, to a one-worker broker while its cleaner compacts 1 GiB, against the
same broker idle 5 s before and 5 s after; p99 ratios, median and range of the runs):

- the clean in a thread of the worker: p99 0.34 ms -> 5.8-6.4 ms, x17.6 (15.2-18.7; 512 MiB):
  the numpy, decoding and hashing hold the GIL for milliseconds at a time; a 0.5 ms switch
  interval made it worse (x25);
- in this child at nice 10: x6.4 (4.0-8.9); at SCHED_IDLE (it runs only on CPU time nobody
  else wants): x3.3 (2.4-3.8), x2.2 once the child is up before the measurement (spawning it
  costs ~0.5 s of imports at normal priority, once per worker);
- then, found with ``perf sched`` (a woken worker's wait for the CPU the child held): a clean
  with one thread instead of two (log_cleaner.py: GIL hand-offs between a SCHED_IDLE
  process's threads cost the worker x9-10 on their own), at most 64 KiB per read or write
  system call (log_cleaner.SYSCALL_BYTES: the kernel here, preempt=none, switches only between
  copies), and malloc keeping freed memory (`_keep_freed_memory`): x1.75 (1.27-2.23);
- and the child let off its worker's core: a worker is pinned to one core (supervisor.py) and
  a spawned child inherits that, so every clean ran on the very core of the worker it should
  spare, preempted at each request and emptying that core's caches (cleaning p50 +70 %). The
  child takes the supervisor's cores instead (`_broker_cpus`) and so whatever idle time any
  core has: x1.27 (1.00-1.33; p99 0.35-0.40 ms against 0.28-0.35 idle; p50 unchanged), the
  clean ~10 % faster. In the same runs a SCHED_IDLE process that only spins costs x0.79
  (0.76-1.26), one that only reads the same log files from the page cache x1.02 (0.99-1.10).
  When every core is busy the clean still shares one with a worker, which is what the items
  above are for. ``log.cleaner.io.max.bytes.per.second`` trades clean time for the rest.

One cleaner process for all workers, fed through the rings, would save the per-worker process
but not the swaps, which must happen in the owner.

Protocol (multiprocessing Connection, pickles): the worker sends ``("clean", view fields,
first dirty, first uncleanable, now)`` then the view's fds (SCM_RIGHTS: the child reads the very
files the worker saw, even if retention renames them meanwhile); the child answers
``("group", segment indexes, cleaned base)`` for each cleaned group, written and synced as
``.cleaned`` files, and waits for the worker's True (swapped in: go on) or False (stop); then
``("done", stats)`` or ``("error", kind, message)``. A clean whose log is closed, handed over or
deleted kills the child (a new one is spawned for the next clean); its ``.cleaned`` files are
removed by the next open of the log.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import logging
import multiprocessing
import os
import signal
import threading
from collections.abc import Generator
from multiprocessing import reduction
from multiprocessing.connection import Connection
from typing import Any, Final

from shardbroker.storage.cleaner_view import CleanerView, SegmentFile
from shardbroker.storage.file_names import CLEANED_SUFFIX
from shardbroker.storage.log_cleaner import (
    CleanAbortedError,
    Cleaner,
    CleanStats,
    Throttler,
    UncleanableLogError,
)
from shardbroker.storage.log_segment import LogSegment
from shardbroker.supervision.fault_injection import arm_from_environment

__all__ = ["CleanerProcess"]

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1  # linux/prctl.h
_M_TRIM_THRESHOLD: Final = -1  # malloc.h (glibc)
_M_MMAP_THRESHOLD: Final = -3
_MMAP_THRESHOLD_MAX: Final = 32 << 20  # glibc's upper bound on 64-bit
#: How often the worker checks the abort flag while it waits for the child.
POLL_S: Final = 0.05


class CleanerProcess:
    """One child process running cleans; `clean` has the interface of `Cleaner.clean`."""

    def __init__(self, name: str, max_keys: int, io_rate: float) -> None:
        self.name = name
        self.max_keys = max_keys
        self.io_rate = io_rate
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    def _started(self) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        if self._proc is None or self._conn is None or not self._proc.is_alive():
            self.stop()
            ctx = multiprocessing.get_context("spawn")  # never fork a process with threads
            ours, theirs = ctx.Pipe(duplex=True)
            proc = ctx.Process(
                target=_child_main,
                args=(theirs, self.max_keys, self.io_rate, os.getpid(), _broker_cpus()),
                name=self.name,
                daemon=True,
            )
            proc.start()
            theirs.close()
            self._proc, self._conn = proc, ours
        return self._proc, self._conn

    def stop(self) -> None:
        """End the child (a clean in progress is abandoned)."""
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            conn.close()
        if proc is not None:
            proc.kill()
            proc.join(10)

    def clean(
        self, view: CleanerView, first_dirty: int, first_uncleanable: int, now_ms: int, stats: CleanStats
    ) -> Generator[tuple[list[SegmentFile], LogSegment], None, None]:
        """`Cleaner.clean`, in the child: yields each group once the child has written it; the
        caller's next step (it swapped the group in) lets the child go on, closing the iterator
        (the swap failed) stops it."""
        proc, conn = self._started()
        conn.send(("clean", view.portable(), first_dirty, first_uncleanable, now_ms, len(view.fds)))
        for fd in view.fds:
            reduction.send_handle(conn, fd, proc.pid)
        try:
            while True:
                message = self._receive(proc, conn, view.abort)
                if message[0] == "group":
                    _, indexes, base = message
                    cleaned = LogSegment(
                        view.directory, base, view.config, active=False, file_suffix=CLEANED_SUFFIX
                    )
                    yield [view.segments[i] for i in indexes], cleaned
                    conn.send(True)  # swapped in: the next group
                elif message[0] == "done":
                    for name, value in message[1].items():
                        setattr(stats, name, value)
                    return
                else:
                    _, kind, text = message
                    if kind == "uncleanable":
                        raise UncleanableLogError(text)
                    raise OSError(errno.EIO, f"log cleaner process: {text}")
        except GeneratorExit:  # closed at the yield: the group was not swapped in, the child stops
            conn.send(False)
            self._receive(proc, conn, view.abort)  # its "done"
            raise

    def _receive(
        self, proc: multiprocessing.process.BaseProcess, conn: Connection, abort: threading.Event
    ) -> Any:
        while True:
            if abort.is_set():
                self.stop()
                raise CleanAbortedError("the log was closed during the clean")
            if conn.poll(POLL_S):
                break
            if not proc.is_alive():
                self.stop()
                raise OSError(errno.EIO, f"log cleaner process exited with {proc.exitcode}")
        try:
            return conn.recv()
        except EOFError:
            self.stop()
            raise OSError(errno.EIO, "log cleaner process went away") from None


def _die_with(parent: int) -> None:
    """SIGKILL this process when its parent dies (Linux's PR_SET_PDEATHSIG): a worker killed with
    kill -9 must not leave a clean writing into a directory its successor opens."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def _broker_cpus() -> set[int] | None:
    """The cores of the process that started this worker (the supervisor), or None if unknown.
    The worker is pinned to one of them and the child would inherit that; at SCHED_IDLE it may
    as well take the idle time of any."""
    try:
        return os.sched_getaffinity(os.getppid())
    except OSError:
        return None


def _keep_freed_memory() -> None:
    """Have malloc keep the memory a clean frees for the next chunk: buffers up to 32 MiB from
    the heap (not a fresh mmap each), and the heap never trimmed. Every first touch of fresh
    memory is a page fault, and here (a VM) some take 0.5-3 ms in the kernel, during which a
    worker woken onto this CPU waits (perf sched: the worst waits behind the cleaner all ended
    at a page fault's return in memset/memmove). Kafka's cleaner holds its buffers for good too.
    Without glibc (no mallopt) nothing changes."""
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)
        mallopt(_M_TRIM_THRESHOLD, 0x7FFFFFFF)


def _child_main(conn: Connection, max_keys: int, io_rate: float, parent: int, cpus: set[int] | None) -> None:
    """The child: cleans until the pipe closes."""
    _die_with(parent)
    if cpus:
        os.sched_setaffinity(0, cpus)
    _keep_freed_memory()
    arm_from_environment()  # a test's fault point may be in the clean itself
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # the worker's loop first, always
    cleaner = Cleaner(max_keys, Throttler(io_rate))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        _, fields, first_dirty, first_uncleanable, now_ms, nfds = message
        fds = tuple(reduction.recv_handle(conn) for _ in range(nfds))
        view = CleanerView.received(fields, fds, threading.Event())
        stats = CleanStats()
        try:
            for group, cleaned in cleaner.clean(view, first_dirty, first_uncleanable, now_ms, stats):
                cleaned.close()  # written and synced: the worker opens it to swap it in
                first = view.segments.index(group[0])  # a group is consecutive segments
                conn.send(("group", list(range(first, first + len(group))), cleaned.base_offset))
                if not conn.recv():
                    break
            conn.send(("done", dataclasses.asdict(stats)))
        except UncleanableLogError as exc:
            conn.send(("error", "uncleanable", str(exc)))
        except OSError as exc:
            conn.send(("error", "os", str(exc)))
        finally:
            for fd in fds:
                os.close(fd)
