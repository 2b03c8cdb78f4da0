"""A ring's producing side: copy a frame in (``try_write``/``write``/``write_async``, or many with
one publish: ``try_write_many``) or build it in place (``reserve``/``commit``).

Writes frames in the layout of ring_layout.py: at the tail, 8-aligned, a pad to the end of the data
area when the next frame does not fit before it (published alone when only the pad fits, so the
reader frees the end and the frame then goes at 0). Stores the tail and the frame count in one
publish per call (ring_endpoint.py), then rings a sleeping reader once per its sleep epoch.

Invariants: back-pressure, never a drop: a frame is written whole or not at all (False, None or
TimeoutError while the ring is full), and nothing is visible before its publish. A new writer
resumes from the published tail and frame count, so what a killed predecessor wrote past the tail
is overwritten; one killed between the two stores leaves the count one publish short (nothing
relies on it to find frames). A pending reservation blocks every other write until committed or
aborted. One writer per ring at a time: nothing here arbitrates between two.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from shardbroker.ipc.ring_endpoint import WEAK_ORDERING, RingEndpoint, deadline_after
from shardbroker.ipc.ring_layout import (
    FRAME_HEADER,
    PAD,
    Q_FRAMES,
    Q_HEAD,
    Q_READER_SLEEP,
    Q_TAIL,
    Q_WRITER_PID,
    Q_WRITER_SLEEP,
    RingError,
    RingMapping,
    frame_size,
)

Buffer = bytes | bytearray | memoryview


class RingWriter(RingEndpoint):
    """The producing side. ``try_write``/``write``/``write_async`` copy a payload in;
    ``reserve``/``commit`` let the caller build the payload in place."""

    def __init__(self, ring: RingMapping) -> None:
        super().__init__(ring, Q_WRITER_SLEEP, ring.writer_bell, ring.reader_bell)
        q = self._q
        q[Q_WRITER_PID] = os.getpid()
        # Resume from the published tail: bytes a killed predecessor wrote past it are garbage.
        self._tail: int = q[Q_TAIL]
        self._wr = self._tail  # write cursor: tail plus a pad not yet published
        self._frames: int = q[Q_FRAMES]  # frame count, including frames not yet published
        self._head: int = q[Q_HEAD]  # cached; reloaded only when the cached value says "full"
        self._res_off = -1
        self._res_len = 0
        self._res_view: memoryview | None = None
        # A predecessor killed between publishing and ringing may have left the reader asleep.
        self._wake_peer()

    @property
    def max_payload(self) -> int:
        return self._cap - FRAME_HEADER

    def _claim(self, need: int) -> int:
        """Data offset where a frame of ``need`` bytes goes, or -1 while the ring is too full.

        May write a pad marker at the end of the area (and publish it alone when only the pad
        fits, so that the reader frees the end and a large frame can go at position 0).
        """
        cap = self._cap
        wr = self._wr
        pos = wr & self._mask
        contig = cap - pos
        if need <= contig:
            if wr + need - self._head > cap:
                self._head = self._q[Q_HEAD]
                if wr + need - self._head > cap:
                    return -1
            return pos
        if wr + contig + need - self._head > cap:
            self._head = self._q[Q_HEAD]
            if wr + contig - self._head > cap:
                return -1
        w = pos >> 2
        self._words[w] = PAD
        self._words[w + 1] = 0
        self._wr = wr + contig
        if self._wr + need - self._head > cap:
            self._publish(self._wr)
            return -1
        return 0

    def _publish(self, tail: int) -> None:
        if WEAK_ORDERING:
            self._fence()  # payload stores before the tail store
        q = self._q
        q[Q_TAIL] = tail  # the single aligned 8-byte store that makes frames visible
        q[Q_FRAMES] = self._frames
        self._tail = self._wr = tail
        self._wake_peer()

    def _check_size(self, n: int) -> int:
        need = frame_size(n)
        if need > self._cap:
            raise RingError(f"{n}-byte payload cannot fit a {self._cap}-byte ring (max {self.max_payload})")
        if self._res_off >= 0:
            raise RingError("a reservation is pending: commit() or abort() it first")
        return need

    def try_write(self, payload: Buffer) -> bool:
        """Copy one frame in and publish it; False (nothing written) when the ring is too full."""
        # The common case (fits before the end, cached head says there is room) is inlined: this
        # is the per-frame path and each Python call costs ~60 ns: 1.9 us per 100-byte frame
        # against 2.2 us through _check_size/_claim/_publish (docs/notes/rings.md).
        if not isinstance(payload, bytes):
            payload = memoryview(payload).cast("B")
        n = len(payload)
        need = (n + FRAME_HEADER + 7) & ~7
        if need > self._cap or self._res_off >= 0:
            self._check_size(n)  # raises
        cap = self._cap
        wr = self._wr
        off = wr & self._mask
        if need > cap - off or wr + need - self._head > cap:
            off = self._claim(need)
            if off < 0:
                return False
        w = off >> 2
        words = self._words
        words[w] = n
        words[w + 1] = 0
        self._data[off + FRAME_HEADER : off + FRAME_HEADER + n] = payload
        tail = self._wr + need
        if WEAK_ORDERING:
            self._fence()
        q = self._q
        q[Q_TAIL] = tail
        q[Q_FRAMES] = self._frames = self._frames + 1
        self._tail = self._wr = tail
        self._lock.release()  # _fence(), inlined
        self._lock.acquire()
        s = q[Q_READER_SLEEP]
        if s & 1 and s != self._rung:
            self._rung = s
            self._peer_bell.ring()
        return True

    def try_write_many(self, payloads: Iterable[Buffer]) -> int:
        """Copy in as many frames as fit, in order, with one publish; returns how many.

        One tail store and one peer check for the whole batch instead of one per frame. A payload
        that can never fit raises RingError; the frames before it are published.
        """
        count = 0
        data, words = self._data, self._words
        try:
            for p in payloads:
                payload = p if isinstance(p, bytes) else memoryview(p).cast("B")
                n = len(payload)
                need = self._check_size(n)
                off = self._claim(need)
                if off < 0:
                    break
                w = off >> 2
                words[w] = n
                words[w + 1] = 0
                data[off + FRAME_HEADER : off + FRAME_HEADER + n] = payload
                self._wr += need
                self._frames += 1
                count += 1
        finally:
            if self._wr != self._tail:
                self._publish(self._wr)
        return count

    def _space_changed(self) -> bool:
        return self._q[Q_HEAD] != self._head

    def write(self, payload: Buffer, timeout: float | None = None) -> bool:
        """Write one frame, sleeping (not spinning) while the ring is full; False on timeout.

        Back-pressure, never a drop: the frame is either written whole or not at all.
        """
        deadline = deadline_after(timeout)
        while not self.try_write(payload):
            if not self._block(self._space_changed, deadline):
                return False
        return True

    async def write_async(self, payload: Buffer, timeout: float | None = None) -> bool:
        """``write`` for an event loop: waits on the space doorbell's fd."""
        deadline = deadline_after(timeout)
        while not self.try_write(payload):
            if not await self._block_async(self._space_changed, deadline):
                return False
        return True

    def try_reserve(self, n: int) -> memoryview | None:
        """A writable view of ``n`` payload bytes in the ring, or None when too full.

        Fill it, then ``commit(m)`` (m <= n: reserve the maximum, commit what was used) or
        ``abort()``. Nothing is visible to the reader before ``commit``; the view is released
        by commit/abort so a stale write into the ring raises instead of corrupting it.
        """
        need = self._check_size(n)
        off = self._claim(need)
        if off < 0:
            return None
        self._res_off = off
        self._res_len = n
        view = self._data[off + FRAME_HEADER : off + FRAME_HEADER + n]
        self._res_view = view
        return view

    def reserve(self, n: int, timeout: float | None = None) -> memoryview:
        """``try_reserve`` that sleeps while the ring is full; TimeoutError after ``timeout``."""
        deadline = deadline_after(timeout)
        while True:
            view = self.try_reserve(n)
            if view is not None:
                return view
            if not self._block(self._space_changed, deadline):
                raise TimeoutError(f"{self._ring.name}: no room for {n} bytes within {timeout} s")

    def commit(self, n: int | None = None) -> None:
        """Publish the reserved frame with ``n`` payload bytes (default: all reserved)."""
        off = self._res_off
        if off < 0:
            raise RingError("commit() without reserve()")
        if n is None:
            n = self._res_len
        elif not 0 <= n <= self._res_len:
            raise RingError(f"commit({n}) of a {self._res_len}-byte reservation")
        self._drop_reservation()
        w = off >> 2
        self._words[w] = n
        self._words[w + 1] = 0
        self._frames += 1
        self._publish(self._wr + frame_size(n))

    def abort(self) -> None:
        """Forget the reservation; nothing becomes visible."""
        self._drop_reservation()

    def _drop_reservation(self) -> None:
        if self._res_view is not None:
            with contextlib.suppress(BufferError):  # the caller still holds exports of it
                self._res_view.release()
            self._res_view = None
        self._res_off = -1

    def _detach(self) -> None:
        self._drop_reservation()
