"""What a ring's writer and reader share: publication order, the fence, and sleeping on a doorbell.

Publication. A side writes (writer: header and payload) or reads (reader: payloads) the data
area, then publishes its counter (tail or head, ring_layout.py) with one store of an aligned
8-byte word (``memoryview.cast("Q")[i] = v``: one ``mov``, 29 ns, against 49 ns through numpy and
91 ns through ``struct.pack_into``). Aligned 8-byte loads and stores are single-copy atomic on
x86-64 and AArch64, so the peer sees the old or the new value, never a torn one, and a writer
killed mid-frame leaves nothing visible: its successor resumes from the published tail. x86-64
(TSO) keeps "payload, then tail" and "tail, then payload" in order by itself; on weakly ordered
CPUs (``WEAK_ORDERING``) a fence is added at those points.

Sleeping without lost wake-ups (both directions). A side that finds nothing to do stores an odd
sleep epoch in the header, fences, re-checks, and only then sleeps on its doorbell; the peer,
after each publish, fences and loads that epoch and rings once per odd epoch. With a full fence
between each side's store and load (the one order TSO does not give), at least one sees the
other's store. ``_fence()`` is release + acquire of a held private lock: two locked RMWs on an
uncontended semaphore, each a full barrier on x86 (~95 ns, once per publish; on AArch64 this
relies on glibc's sem_post/sem_trywait ordering, untested here).

Invariants: a sleep lasts at most ``IDLE_RECHECK_S`` before re-checking, so a peer killed between
publishing and ringing (or a broken ordering assumption) delays a frame by 1 s, not forever (an
idle ring: one wake-up per second, 0.01-0.02 % of a core). A blocking wait polls ``SPIN_S`` (10 us)
before announcing sleep: without it a reader working in place outruns a 64 KiB writer and sleeps
after almost every frame (13.4-14.1 GB/s; with it 18.6-20.3 GB/s, docs/notes/rings.md). The event
loop paths do not poll, but for a reader's active spin (ring_reader.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import threading
import time
from collections.abc import Callable, Iterator

from shardbroker.ipc.doorbell import FifoDoorbell
from shardbroker.ipc.ring_layout import Q_READER_SLEEP, Q_WRITER_SLEEP, RingMapping

#: Longest uninterrupted sleep: bounds the damage of a lost ring (see the module docstring).
IDLE_RECHECK_S = 1.0
#: How long a blocking ``wait``/``write`` polls before going to sleep (see the module docstring).
SPIN_S = 10e-6

WEAK_ORDERING = platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686")


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def poll(ready: Callable[[], bool], ns: int) -> bool:
    """Call ``ready()`` until it is True (then True) or ``ns`` nanoseconds passed (then False)."""
    if ns <= 0:
        return False
    end = time.perf_counter_ns() + ns
    while not ready():
        if time.perf_counter_ns() >= end:
            return False
    return True


def _sleep_slice(deadline: float | None) -> float:
    """How long the next sleep may last: ``IDLE_RECHECK_S``, less near ``deadline`` (<= 0: past it)."""
    return IDLE_RECHECK_S if deadline is None else min(IDLE_RECHECK_S, deadline - time.monotonic())


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class RingEndpoint:
    """What reader and writer share: the header, the fence, and sleeping on a doorbell."""

    def __init__(
        self, ring: RingMapping, sleep_index: int, sleep_bell: FifoDoorbell, peer_bell: FifoDoorbell
    ) -> None:
        self._ring = ring
        self._q = ring._q
        self._data = ring._data
        self._words = ring._words
        self._cap = ring.capacity
        self._mask = ring.capacity - 1
        self._sleep_index = sleep_index
        self._sleep_bell = sleep_bell
        self._peer_bell = peer_bell
        self._peer_sleep_index = Q_WRITER_SLEEP if sleep_index == Q_READER_SLEEP else Q_READER_SLEEP
        # Start awake (even epoch), whatever a killed predecessor left.
        self._epoch = (self._q[sleep_index] + 1) & ~1
        self._q[sleep_index] = self._epoch
        self._rung = 0  # the peer's last sleep epoch this endpoint rang for
        self._lock = threading.Lock()
        self._lock.acquire()  # held except inside _fence()

    def _fence(self) -> None:
        """Full memory barrier: two locked RMWs (see the module docstring, ~95 ns)."""
        self._lock.release()
        self._lock.acquire()

    def _wake_peer(self) -> None:
        """After a publish: ring the peer's doorbell once per sleep epoch it announced."""
        self._fence()
        s = self._q[self._peer_sleep_index]
        if s & 1 and s != self._rung:
            self._rung = s
            self._peer_bell.ring()

    def _announce_sleep(self) -> None:
        self._epoch += 1  # odd: "about to sleep, ring me"
        self._q[self._sleep_index] = self._epoch
        self._fence()

    def _announce_awake(self) -> None:
        self._epoch += 1
        self._q[self._sleep_index] = self._epoch

    @contextlib.contextmanager
    def _asleep(self) -> Iterator[None]:
        """Announced as asleep (the peer rings) for the duration; re-check before sleeping."""
        self._announce_sleep()
        try:
            yield
        finally:
            self._announce_awake()

    def _poll_ns(self) -> int:
        """How long a blocking wait polls before it sleeps: ``SPIN_S`` (read at each wait)."""
        return int(SPIN_S * 1e9)

    def _block(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Sleep on the doorbell until ``ready()`` or the deadline; True when ready.

        Polls for ``_poll_ns()`` first (see the module docstring for why and what it measured).
        """
        if poll(ready, self._poll_ns()):
            return True
        while not ready():
            slice_s = _sleep_slice(deadline)
            if slice_s <= 0:
                return False
            with self._asleep():
                if not ready():
                    self._sleep_bell.wait(slice_s)
        return True

    async def _block_async(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """``_block`` for an event loop: waits on the doorbell's fd, no thread."""
        loop = asyncio.get_running_loop()
        fd = self._sleep_bell.fileno()
        while not ready():
            slice_s = _sleep_slice(deadline)
            if slice_s <= 0:
                return False
            with self._asleep():
                if ready():
                    continue
                fut: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _resolve, fut)
                timer = loop.call_later(slice_s, _resolve, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    loop.remove_reader(fd)
                    self._sleep_bell.drain()
        return True

    def _detach(self) -> None:
        pass
