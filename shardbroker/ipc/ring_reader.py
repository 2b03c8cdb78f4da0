"""A ring's consuming side: payloads in place (``peek_batch`` + ``release``) or copied
(``read_batch``, ``try_read``, ``read``), and waiting for them (``wait``, ``wait_async``, ``watch``).

Reads frames in the layout of ring_layout.py from the head up to the tail it loaded (reloaded only
when the cached one says "empty"), skipping pads, and publishes the new head when it releases
(ring_endpoint.py), ringing a writer that sleeps for space.

Invariants: views handed out by ``peek_batch`` stay valid until ``release()``, which frees their
space to the writer and releases them (a caller still holding exports of one is its bug, never a
corruption of the ring). A frame that does not end within the data area and below the tail raises
RingCorrupt. One reader per ring at a time.

Event loops: ``watch(loop, callback)`` keeps the doorbell fd registered (``add_reader``) once for
good and calls back while frames wait, so a wake-up is epoll -> callback: p50 38 us from a
``write()`` in another process, against 61 us for ``await wait_async()`` (a future and
``add_reader``/``remove_reader`` per sleep) and 29 us for a blocking ``wait()``
(docs/notes/rings.md). Any selector loop can watch ``fileno()`` itself.

Active spin (off unless set: ``set_active_spin``; workers: ``ring.reader.spin.us``, default 0). A
reader that took a frame in the last ``ACTIVE_WINDOW_NS`` (5 ms) polls the ring that long before
sleeping, in ``wait``/``read`` and after each ``watch`` callback (holding the loop); an idle one
sleeps at once (idle CPU 0.02 % of a core, spin on or off). Off because at a steady 10,000
frames/s between two processes (``python -m perf ring-wakeup``, 3 alternated rounds, medians) the
reader already gets each frame p50 14 us, p99 20 us (16-29) after ``write()`` for 7 % of a core:
the kernel runs both on one vCPU, no halted-vCPU wake-up. A spin shorter than the 100 us gap
catches nothing (0.99 sleeps per frame): 20 us costs 27 % of a core for the same p99, 50 us 64 %
and doubles p50 (the writer then runs on the other vCPU: a cross-vCPU wake-up, p50 26 us as when
pinned apart); 100 us catches every frame, p50 4 us, p99 26 us, for 99 % of a core.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable

from shardbroker.ipc import ring_endpoint
from shardbroker.ipc.ring_endpoint import WEAK_ORDERING, RingEndpoint, deadline_after, poll
from shardbroker.ipc.ring_layout import (
    FRAME_HEADER,
    PAD,
    Q_HEAD,
    Q_READER_PID,
    Q_READER_SLEEP,
    Q_TAIL,
    RingCorrupt,
    RingError,
    RingMapping,
)

#: A reader that took a frame less than this long ago is active: it polls before sleeping.
ACTIVE_WINDOW_NS = 5_000_000
#: How long an active reader polls before it sleeps, for this process (``set_active_spin``).
_active_spin_ns = 0


def set_active_spin(seconds: float) -> None:
    """How long this process's active readers poll the ring before sleeping; 0: not at all."""
    global _active_spin_ns
    _active_spin_ns = int(seconds * 1e9)


class RingReader(RingEndpoint):
    """The consuming side. ``peek_batch`` + ``release`` read in place; ``read_batch`` copies."""

    def __init__(self, ring: RingMapping) -> None:
        super().__init__(ring, Q_READER_SLEEP, ring.reader_bell, ring.writer_bell)
        q = self._q
        q[Q_READER_PID] = os.getpid()
        self._head: int = q[Q_HEAD]
        self._rd = self._head  # read cursor: head plus frames handed out and not yet released
        self._tail: int = q[Q_TAIL]  # cached; reloaded only when the cached value says "empty"
        self._views: list[memoryview] = []
        # perf_counter_ns() when peek_batch last handed out frames (spin on); idle to begin with.
        self._last_frame_ns = time.perf_counter_ns() - ACTIVE_WINDOW_NS
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._on_ready: Callable[[], object] | None = None
        self._watch_soon: asyncio.Handle | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        # A predecessor killed with a writer waiting for space: let the writer re-check.
        self._wake_peer()

    def _available(self) -> bool:
        if self._rd != self._tail:
            return True
        self._tail = self._q[Q_TAIL]
        if WEAK_ORDERING:
            self._fence()  # the tail load before the payload loads
        return self._rd != self._tail

    def peek_batch(self, max_frames: int = 64) -> list[memoryview]:
        """Up to ``max_frames`` payloads as read-only-by-contract views into the ring, in order.

        They stay valid until ``release()`` (which frees their space to the writer and releases
        the views). Returns [] when the ring is empty; never blocks.
        """
        out: list[memoryview] = []
        cap, mask, words, data = self._cap, self._mask, self._words, self._data
        while len(out) < max_frames and self._available():
            pos = self._rd & mask
            n = words[pos >> 2]
            if n == PAD:
                self._rd += cap - pos
                continue
            size = (n + FRAME_HEADER + 7) & ~7
            if pos + size > cap or self._rd + size > self._tail:
                raise RingCorrupt(f"{self._ring.name}: frame of {n} bytes at {pos} (tail {self._tail})")
            out.append(data[pos + FRAME_HEADER : pos + FRAME_HEADER + n])
            self._rd += size
        if out:
            self._views.extend(out)
            if _active_spin_ns:  # the clock read costs 41 ns, 2.5 % of a 100-byte frame's trip
                self._last_frame_ns = time.perf_counter_ns()
        elif self._rd != self._head:
            self._publish_head()  # only pads were skipped: free them now
        return out

    def _active_spin(self) -> int:
        """Nanoseconds to poll before sleeping: the process's active spin if a frame came within
        ``ACTIVE_WINDOW_NS``, else 0 (an idle reader sleeps at once)."""
        spin = _active_spin_ns
        if spin and time.perf_counter_ns() - self._last_frame_ns < ACTIVE_WINDOW_NS:
            return spin
        return 0

    def _poll_ns(self) -> int:
        return max(super()._poll_ns(), self._active_spin())

    def release(self) -> None:
        """Give the space of every frame handed out by ``peek_batch`` back to the writer."""
        views = self._views
        if views:
            for v in views:
                try:  # noqa: SIM105 - try is free, contextlib.suppress costs ~0.3 us per frame
                    v.release()
                except BufferError:  # the caller still holds exports (numpy...) of it: its bug
                    pass
            views.clear()
        if self._rd != self._head:
            self._publish_head()

    def _publish_head(self) -> None:
        if WEAK_ORDERING:
            self._fence()  # payload loads before the head store
        self._q[Q_HEAD] = self._rd
        self._head = self._rd
        self._wake_peer()

    def read_batch(self, max_frames: int = 64) -> list[bytes]:
        """Up to ``max_frames`` payloads, copied out, and their space released. Never blocks."""
        views = self.peek_batch(max_frames)
        out = [bytes(v) for v in views]
        self.release()
        return out

    def try_read(self) -> bytes | None:
        """One payload copied out, or None when the ring is empty."""
        got = self.read_batch(1)
        return got[0] if got else None

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep on the doorbell until a frame is published; False after ``timeout`` seconds."""
        return self._block(self._available, deadline_after(timeout))

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``wait`` for an event loop: watches the doorbell's fd with ``add_reader``, no thread."""
        return await self._block_async(self._available, deadline_after(timeout))

    def read(self, max_frames: int = 64, timeout: float | None = None) -> list[bytes]:
        """``read_batch`` that first waits up to ``timeout`` for a frame; [] on timeout."""
        deadline = deadline_after(timeout)
        while True:
            got = self.read_batch(max_frames)
            if got or not self._block(self._available, deadline):
                return got

    def fileno(self) -> int:
        """The reader doorbell's fd, for callers running their own selector loop."""
        return self._sleep_bell.fileno()

    def watch(self, loop: asyncio.AbstractEventLoop, on_ready: Callable[[], object]) -> None:
        """Call ``on_ready()`` from ``loop`` whenever frames are waiting; no thread, no task.

        The callback consumes with ``read_batch`` or ``peek_batch``/``release`` (as much as it
        likes: it is called again, via ``call_soon``, while frames remain). In between, the
        reader sleeps with the doorbell fd registered in the loop once for good, so a wake-up is
        epoll -> callback, without ``wait_async``'s future, task switch and per-sleep
        ``add_reader``/``remove_reader`` (measured: see ``perf/bench_ring.py``). The worker's
        control-ring consumer is meant to be this. ``unwatch()`` stops it.
        """
        if self._watch_loop is not None:
            raise RingError("already watched")
        self._watch_loop = loop
        self._on_ready = on_ready
        loop.add_reader(self._sleep_bell.fileno(), self._on_bell)
        self._on_timer()

    def unwatch(self) -> None:
        loop = self._watch_loop
        if loop is None:
            return
        self._watch_loop = None
        self._on_ready = None
        loop.remove_reader(self._sleep_bell.fileno())
        for h in (self._watch_soon, self._watch_timer):
            if h is not None:
                h.cancel()
        self._watch_soon = self._watch_timer = None
        if self._epoch & 1:
            self._announce_awake()

    def _on_bell(self) -> None:
        loop, on_ready = self._watch_loop, self._on_ready
        if loop is None or on_ready is None:
            return
        self._watch_soon = None
        self._sleep_bell.drain()
        if self._epoch & 1:
            self._announce_awake()
        if self._available():
            on_ready()
            if self._watch_loop is None:  # the callback unwatched
                return
            # More than it took, or more within the active spin: come back after other callbacks.
            if self._available() or poll(self._available, self._active_spin()):
                self._watch_soon = loop.call_soon(self._on_bell)
                return
        self._announce_sleep()
        if self._available():
            self._announce_awake()
            self._watch_soon = loop.call_soon(self._on_bell)
            return
        # Asleep until the writer rings the fd (or the safety re-check of _on_timer).

    def _on_timer(self) -> None:
        if self._watch_loop is not None:
            # Read through the module: one place to change (or patch, in tests) the re-check.
            self._watch_timer = self._watch_loop.call_later(ring_endpoint.IDLE_RECHECK_S, self._on_timer)
            self._on_bell()

    def _detach(self) -> None:
        self.unwatch()
        for v in self._views:
            with contextlib.suppress(BufferError):
                v.release()
        self._views.clear()
