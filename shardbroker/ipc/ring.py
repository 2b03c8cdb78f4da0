"""Single-producer single-consumer byte ring in POSIX shared memory, with doorbells.

This module opens files (through ``shm.py`` and ``doorbell.py``): a ``/dev/shm`` segment and two
named FIFOs per ring.

Who uses it: the supervisor creates one ring per direction per pair of parties before forking
(``Ring.create``), workers and local producers attach by name (``Ring.attach``) or inherit the
object across fork; each side takes one endpoint (``ring.writer()`` or ``ring.reader()``). Exactly
one process writes and one reads a given ring at a time: nothing here arbitrates between two
writers.

Layout (native byte order; every counter an aligned 8-byte word)::

    cache line 0  [0, 64)     shm preamble (magic, kind, version, owner pid + start time, see
                              shm.py), capacity u64 at 32: written once at creation
    cache line 1  [64, 128)   tail u64 at 64 (bytes ever published by the writer), writer pid
                              u64 at 72, frames u64 at 80 (frames ever published: pads not
                              counted)
    cache line 2  [128, 192)  head u64 at 128 (bytes ever released by the reader), reader pid
    cache line 3  [192, 256)  reader sleep epoch u64 at 192, writer sleep epoch u64 at 200
    [256, 256 + capacity)     data; capacity is a power of two, positions are counter % capacity

The writer is the only one to store ``tail``, the reader the only one to store ``head``; they sit
on separate cache lines so the two cores do not bounce one line on every frame. The sleep epochs
are on a fourth line: they are read on every publish but written only when a side goes to sleep,
so that line stays shared in both caches and reading it is a cache hit. ``used_bytes`` is
``tail - head`` (both monotonic uint64, which never wrap in practice: 2**64 bytes).

Traffic counters, for ``shardbroker_ring_{bytes,frames}_total`` (metrics.py): the tail is the
bytes ever published (frame headers and end-of-area pads included), and the writer also stores the
count of frames it published (pads not counted) in a spare word of its own cache line, once per
publish like the tail (one store for a whole ``try_write_many``), so anyone can read a ring's
traffic from its header (``Ring.stats``, or ``read_stats`` on a read-only mapping) without a
message or a lock. A new writer resumes the count from the header, as it resumes the tail; a
writer killed between the two stores leaves the count one publish short (nothing relies on it to
find frames). Layout version 2 added the count. Its cost is one attribute update and one 8-byte
store per publish: with 100-byte frames in one process, ``try_write`` went from 912-1001 ns to
964-1059 ns per frame (per-round ratio new/old, median of 5 runs of 40 alternating rounds:
1.054, range 1.046-1.064) and ``try_write_many`` of 64 frames by a ratio of 1.042 (1.023-1.064);
at 64 KiB frames (``python -m perf.bench_ring``, 5 runs of each version, alternating) no
difference shows above this VM's noise: in place 10.6 GB/s (4.2-11.4) against 9.4 (3.0-12.1)
before, ratio to memcpy 0.70 (0.24-1.01) against 0.60 (0.18-0.82).

Frames: an 8-byte header (u32 payload length, u32 reserved = 0) then the payload, padded to a
multiple of 8, so every header and payload is 8-aligned (numpy views of payloads work). A frame is
always contiguous in the data area: when it does not fit before the end, the writer puts a pad
marker (length 0xFFFFFFFF) in the rest of the area and the frame at position 0. Padding rather
than splitting frames across the end is what lets both sides work in place: ``reserve()`` hands
out one contiguous memoryview to fill, and ``peek_batch()`` hands out views of payloads that the
reader parses without copying; a split frame would have to be copied out (or written through two
views) every time it straddles the end. The cost is the unused end of the area, at most one frame
minus 8 bytes per lap, which for 64 KiB frames in a 4 MiB ring is < 1.6 %. Any frame up to
``capacity - 8`` bytes of payload fits: if it cannot fit before the end, the writer publishes the
pad alone, and once the reader has skipped it the whole area is in front of the writer.

Publication and memory ordering
    The writer writes header and payload into the free area, then publishes the new ``tail`` with
    a single store of an aligned 8-byte word (``memoryview.cast("Q")[i] = v``: CPython packs it
    with a fixed-size ``memcpy`` of 8 bytes, which compiles to one ``mov``; it measured 29 ns,
    against 49 ns for a numpy uint64 view and 91 ns for ``struct.pack_into``). Aligned 8-byte
    loads and stores are single-copy atomic on x86-64 and AArch64, so the reader sees either the
    old or the new tail, never a torn one. The reader only reads bytes below the tail it loaded,
    so a frame is visible only once whole, and a writer killed mid-frame (even mid-payload)
    leaves nothing visible: the next writer resumes from the published tail and overwrites it.

    x86-64 (TSO) keeps stores in program order and loads in program order, so "payload, then
    tail" on the writer and "tail, then payload" on the reader are ordered by the hardware, and
    the Python interpreter cannot move one bytecode's memory accesses past another's (each is an
    opaque C call). On weakly ordered CPUs (AArch64) ``_fence()`` is added at those two points.

    The one ordering TSO does not give is a store followed by a load of another location, which
    the sleep protocol needs (see below). ``_fence()`` is ``lock.release(); lock.acquire()`` on a
    private lock that is normally held: in CPython 3.11 on Linux that is ``sem_post`` +
    ``sem_trywait``/``sem_wait`` on an uncontended semaphore, i.e. two locked read-modify-write
    instructions, each a full barrier on x86. On AArch64 this relies on glibc's sem_post and
    sem_trywait being release and acquire RMWs of one word, which order an earlier store before
    a later load; untested here (this machine is x86-64), and the 1 s re-check below bounds the
    damage if it is wrong. It costs ~95 ns, paid once per publish.

Sleeping without lost wake-ups (both directions, same protocol)
    A reader that finds the ring empty announces it is going to sleep by storing an odd sleep
    epoch in the header, fences, and re-checks the tail; only if the ring is still empty does it
    sleep on its doorbell (``doorbell.py``). The writer, after publishing a tail, fences and
    loads the epoch: if it is odd and not one it has rung for yet, it rings. With a full fence
    between each side's store and its load, at least one side sees the other's store: either the
    reader sees the new tail (and does not sleep) or the writer sees the odd epoch (and rings; the
    FIFO keeps the ring until the reader polls). The writer rings once per epoch, so a burst of
    frames to a sleeping reader costs one ``write(2)``, and frames to an awake reader cost none.
    A writer blocked on a full ring sleeps the same way on the other doorbell, and the reader
    rings it after publishing a new head.

    Sleeps are cut into slices of at most ``IDLE_RECHECK_S`` (1 s) after which the condition is
    re-checked: a writer SIGKILLed between publishing and ringing, or an ordering assumption
    broken on some future platform, delays a frame by at most that instead of forever. An idle
    ring costs one wake-up per second per sleeper (measured idle reader: 0.01-0.02 % of a core).

    Before announcing sleep, a blocking ``wait``/``write`` polls the ring for ``SPIN_S`` (10 us).
    Without it, a reader consuming in place outruns a writer copying 64 KiB frames, empties the
    ring, and sleeps after almost every frame (5,000-5,900 sleeps per 8,300 frames), so the
    writer pays a FIFO write and a cross-core wake-up per frame: 13.4-14.1 GB/s. With the 10 us
    poll the reader slept 44-57 times and the ring moved 18.6-20.3 GB/s (3 runs each, same
    session). An idle ring pays it once per burst. The event-loop paths (``wait_async``,
    ``watch``) do not poll: other callbacks are waiting for the loop.

Event loops
    ``RingReader.watch(loop, callback)`` keeps the doorbell fd registered (``add_reader``) and
    calls the callback while frames are waiting: the worker's consumer. ``wait_async()`` /
    ``write_async()`` are the coroutine forms (a future per sleep; slower to wake, see below).
    Any selector loop can watch ``RingReader.fileno()`` itself.

Measured (``python -m perf.bench_ring``, 2-core VM shared with other engineers' jobs; medians of
7 runs, range in brackets; details and method in ``perf/bench_ring.py``)
    64 KiB frames, writer ``write()`` -> reader in another process: 18.5 GB/s (8.2-20.0) with
    the reader working in place, 0.73 (0.33-0.80) of a numpy memcpy of the same bytes in the same
    run; 9.2 GB/s (6.5-18.6), ratio 0.37 (0.25-0.71), when the reader also copies every payload
    out. The low ends are runs where another job held one of the two cores.
    Idle reader in another process, from ``write()`` to the frame in the reader's hands: with
    ``wait()`` p50 29 us (27-84), p99 101 us (70-170); with ``watch()`` in an asyncio loop p50
    38 us (33-85), p99 107 us (86-153); with ``await wait_async()`` p50 61 us, p99 160 us. The
    bare FIFO doorbell is p50 18 us, p99 58 us of that; the rest is Python on both sides.
    Idle reader: 0.016 % of a core (0.015-0.021).
"""

from __future__ import annotations

import asyncio
import contextlib
import mmap
import os
import platform
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import NamedTuple

from shardbroker.ipc.doorbell import FifoDoorbell
from shardbroker.ipc.shm import Preamble, SharedSegment, shm_name

RING_KIND = 0x474E4952  # b"RING" read as a little-endian u32
RING_VERSION = 2  # 2: the frame count at 80
HEADER_SIZE = 256
FRAME_HEADER = 8
PAD = 0xFFFFFFFF
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 31  # payload lengths are u32 and PAD is reserved
READER_BELL = "rbell"  # rung by the writer, the reader sleeps on it
WRITER_BELL = "wbell"  # rung by the reader, a writer waiting for space sleeps on it
#: Longest uninterrupted sleep: bounds the damage of a lost ring (see module docstring).
IDLE_RECHECK_S = 1.0
#: How long a blocking ``wait``/``write`` polls before going to sleep (see module docstring).
SPIN_S = 10e-6

# Indexes of u64 words in the header.
_Q_CAPACITY = 4
_Q_TAIL = 8
_Q_WRITER_PID = 9
_Q_FRAMES = 10
_Q_HEAD = 16
_Q_READER_PID = 17
_Q_READER_SLEEP = 24
_Q_WRITER_SLEEP = 25

_WEAK_ORDERING = platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686")

Buffer = bytes | bytearray | memoryview


class RingStats(NamedTuple):
    """What a ring's header says about it; loaded word by word (each load atomic), not as a
    consistent snapshot: the writer and reader keep moving."""

    used_bytes: int  # published and not yet released, pads included
    capacity: int  # size of the data area
    bytes_published: int  # the tail: every frame (header, payload, padding to 8) and end pad
    frames_published: int  # frames (pads not counted)


def _header_stats(q: memoryview) -> RingStats:
    # head is loaded first: tail only grows, so tail - head is never negative; clamped because
    # both may move in between.
    head = q[_Q_HEAD]
    tail = q[_Q_TAIL]
    cap = q[_Q_CAPACITY]
    return RingStats(max(0, min(tail - head, cap)), cap, tail, q[_Q_FRAMES])


def read_stats(path: str | os.PathLike[str]) -> RingStats | None:
    """`RingStats` of the ring segment at ``path`` (a ``/dev/shm`` file), mapping only its header,
    read-only, for as long as the loads take; None when it is not (or no longer, or not yet) a ring
    of this layout. Never creates, writes or unlinks anything: the supervisor's collector uses it
    on rings other processes own."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # unlinked since it was listed (or not ours to read)
    try:
        # ValueError: shorter than the header (the creator is between shm_open and ftruncate).
        with mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ) as mm:
            pre = Preamble.unpack(mm)
            if pre is None or pre.kind != RING_KIND or pre.version != RING_VERSION:
                return None
            with memoryview(mm) as mv, mv.cast("Q") as q:
                stats = _header_stats(q)
    except ValueError:
        return None
    finally:
        os.close(fd)
    cap = stats.capacity
    return stats if cap >= MIN_CAPACITY and not cap & (cap - 1) else None  # not yet initialised


class RingError(Exception):
    """A ring is malformed, misused, or a frame cannot ever fit."""


class RingCorrupt(RingError):
    """The data area holds something no writer of this module writes."""


def frame_size(payload_len: int) -> int:
    """Bytes a frame of ``payload_len`` takes in the ring: header + payload, rounded up to 8."""
    return (payload_len + FRAME_HEADER + 7) & ~7


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


class Ring:
    """One shared ring: the mapping, the header, the two doorbells. Take endpoints from it."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        mv = memoryview(segment.mmap)
        q = mv[:HEADER_SIZE].cast("Q")
        cap = q[_Q_CAPACITY]
        if cap < MIN_CAPACITY or cap & (cap - 1) or len(mv) < HEADER_SIZE + cap:
            q.release()
            mv.release()
            raise RingError(f"{segment.name}: bad capacity {cap} for a {len(mv)}-byte segment")
        self._mv = mv
        self._q = q
        self._data = mv[HEADER_SIZE : HEADER_SIZE + cap]
        self._words = self._data.cast("I")
        self.capacity: int = cap
        self.reader_bell = FifoDoorbell(segment.fifos[0])
        self.writer_bell = FifoDoorbell(segment.fifos[1])
        self._reader: RingReader | None = None
        self._writer: RingWriter | None = None
        self._closed = False

    @classmethod
    def create(cls, instance: str, name: str, capacity: int) -> Ring:
        """Create ``/shardbroker-<instance>-<name>`` (O_EXCL) and its doorbells; caller owns them."""
        if capacity < MIN_CAPACITY or capacity > MAX_CAPACITY or capacity & (capacity - 1):
            raise ValueError(f"capacity must be a power of two in [{MIN_CAPACITY}, {MAX_CAPACITY}]")
        seg = SharedSegment.create(
            shm_name(instance, name), HEADER_SIZE + capacity, RING_KIND, RING_VERSION,
            (READER_BELL, WRITER_BELL),
        )  # fmt: skip
        try:
            with memoryview(seg.mmap) as mv, mv[:HEADER_SIZE].cast("Q") as q:
                q[_Q_CAPACITY] = capacity
            return cls(seg)
        except BaseException:
            seg.close()
            raise

    @classmethod
    def attach(cls, instance: str, name: str) -> Ring:
        """Map an existing ring by name, from any process."""
        bells = (READER_BELL, WRITER_BELL)
        seg = SharedSegment.attach(shm_name(instance, name), RING_KIND, RING_VERSION, bells)
        try:
            return cls(seg)
        except BaseException:
            seg.close()
            raise

    @property
    def name(self) -> str:
        return self.segment.name

    @property
    def used_bytes(self) -> int:
        """Bytes published and not yet released (pads included). Safe from anywhere."""
        return _header_stats(self._q).used_bytes

    def stats(self) -> RingStats:
        """Fill and traffic from the header, for /metrics (no endpoint needed)."""
        return _header_stats(self._q)

    @property
    def free_bytes(self) -> int:
        return self.capacity - self.used_bytes

    @property
    def max_payload(self) -> int:
        return self.capacity - FRAME_HEADER

    def writer(self) -> RingWriter:
        """This process's writing endpoint (one per Ring object)."""
        if self._writer is None:
            self._writer = RingWriter(self)
        return self._writer

    def reader(self) -> RingReader:
        """This process's reading endpoint (one per Ring object)."""
        if self._reader is None:
            self._reader = RingReader(self)
        return self._reader

    def reset(self) -> None:
        """Drop everything unread (head := tail) and clear both sleep flags.

        Only while no endpoint of the ring is in use anywhere, e.g. by the supervisor between a
        worker's death and its replacement when the dead worker's queue must not be replayed.
        Endpoints taken afterwards start from the new positions.
        """
        self._q[_Q_HEAD] = self._q[_Q_TAIL]
        for i in (_Q_READER_SLEEP, _Q_WRITER_SLEEP):
            self._q[i] = (self._q[i] + 1) & ~1
        self.reader_bell.drain()
        self.writer_bell.drain()
        self._detach_endpoints()

    def _detach_endpoints(self) -> None:
        for ep in (self._reader, self._writer):
            if ep is not None:
                ep._detach()
        self._reader = self._writer = None

    def close(self) -> None:
        """Unmap; the creating process also unlinks the segment and FIFOs. Idempotent."""
        if self._closed:
            return
        self._detach_endpoints()
        self.reader_bell.close()
        self.writer_bell.close()
        for v in (self._words, self._data, self._q, self._mv):
            v.release()
        self._closed = True
        self.segment.close()

    def __enter__(self) -> Ring:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ring({self.name!r}, capacity={self.capacity})"


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _Endpoint:
    """What reader and writer share: the header, the fence, and sleeping on a doorbell."""

    def __init__(
        self, ring: Ring, sleep_index: int, sleep_bell: FifoDoorbell, peer_bell: FifoDoorbell
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
        self._peer_sleep_index = _Q_WRITER_SLEEP if sleep_index == _Q_READER_SLEEP else _Q_READER_SLEEP
        # Start awake (even epoch), whatever a killed predecessor left.
        self._epoch = (self._q[sleep_index] + 1) & ~1
        self._q[sleep_index] = self._epoch
        self._rung = 0  # the peer's last sleep epoch this endpoint rang for
        self._lock = threading.Lock()
        self._lock.acquire()  # held except inside _fence()

    def _fence(self) -> None:
        """Full memory barrier: two locked RMWs (see module docstring, ~95 ns)."""
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

    def _block(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """Sleep on the doorbell until ``ready()`` or the deadline; True when ready.

        Polls for ``SPIN_S`` first (see the module docstring for why and what it measured).
        """
        if SPIN_S > 0:
            end = time.perf_counter_ns() + int(SPIN_S * 1e9)
            while not ready():
                if time.perf_counter_ns() >= end:
                    break
            else:
                return True
        while True:
            if ready():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self._announce_sleep()
            try:
                if ready():
                    return True
                slice_s = IDLE_RECHECK_S if deadline is None else min(IDLE_RECHECK_S, deadline - now)
                self._sleep_bell.wait(slice_s)
            finally:
                self._announce_awake()

    async def _block_async(self, ready: Callable[[], bool], deadline: float | None) -> bool:
        """``_block`` for an event loop: waits on the doorbell's fd, no thread."""
        loop = asyncio.get_running_loop()
        fd = self._sleep_bell.fileno()
        while True:
            if ready():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            self._announce_sleep()
            try:
                if ready():
                    return True
                slice_s = IDLE_RECHECK_S if deadline is None else min(IDLE_RECHECK_S, deadline - now)
                fut: asyncio.Future[None] = loop.create_future()
                loop.add_reader(fd, _resolve, fut)
                timer = loop.call_later(slice_s, _resolve, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
                    loop.remove_reader(fd)
                    self._sleep_bell.drain()
            finally:
                self._announce_awake()

    def _detach(self) -> None:
        pass


class RingWriter(_Endpoint):
    """The producing side. ``try_write``/``write``/``write_async`` copy a payload in;
    ``reserve``/``commit`` let the caller build the payload in place."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, _Q_WRITER_SLEEP, ring.writer_bell, ring.reader_bell)
        q = self._q
        q[_Q_WRITER_PID] = os.getpid()
        # Resume from the published tail: bytes a killed predecessor wrote past it are garbage.
        self._tail: int = q[_Q_TAIL]
        self._wr = self._tail  # write cursor: tail plus a pad not yet published
        self._frames: int = q[_Q_FRAMES]  # frame count, including frames not yet published
        self._head: int = q[_Q_HEAD]  # cached; reloaded only when the cached value says "full"
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
                self._head = self._q[_Q_HEAD]
                if wr + need - self._head > cap:
                    return -1
            return pos
        if wr + contig + need - self._head > cap:
            self._head = self._q[_Q_HEAD]
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
        if _WEAK_ORDERING:
            self._fence()  # payload stores before the tail store
        q = self._q
        q[_Q_TAIL] = tail  # the single aligned 8-byte store that makes frames visible
        q[_Q_FRAMES] = self._frames
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
        # is the per-frame path and each Python call costs ~60 ns. Measured with 100-byte frames
        # (reader's share included, medians of 7 alternating runs, under load): 1.9 us per frame
        # against 2.2 us for the same steps through _check_size/_claim/_publish.
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
        if _WEAK_ORDERING:
            self._fence()
        q = self._q
        q[_Q_TAIL] = tail
        q[_Q_FRAMES] = self._frames = self._frames + 1
        self._tail = self._wr = tail
        self._lock.release()  # _fence(), inlined
        self._lock.acquire()
        s = q[_Q_READER_SLEEP]
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
        return self._q[_Q_HEAD] != self._head

    def write(self, payload: Buffer, timeout: float | None = None) -> bool:
        """Write one frame, sleeping (not spinning) while the ring is full; False on timeout.

        Back-pressure, never a drop: the frame is either written whole or not at all.
        """
        deadline = _deadline(timeout)
        while not self.try_write(payload):
            if not self._block(self._space_changed, deadline):
                return False
        return True

    async def write_async(self, payload: Buffer, timeout: float | None = None) -> bool:
        """``write`` for an event loop: waits on the space doorbell's fd."""
        deadline = _deadline(timeout)
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
        deadline = _deadline(timeout)
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


class RingReader(_Endpoint):
    """The consuming side. ``peek_batch`` + ``release`` read in place; ``read_batch`` copies."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, _Q_READER_SLEEP, ring.reader_bell, ring.writer_bell)
        q = self._q
        q[_Q_READER_PID] = os.getpid()
        self._head: int = q[_Q_HEAD]
        self._rd = self._head  # read cursor: head plus frames handed out and not yet released
        self._tail: int = q[_Q_TAIL]  # cached; reloaded only when the cached value says "empty"
        self._views: list[memoryview] = []
        self._watch_loop: asyncio.AbstractEventLoop | None = None
        self._on_ready: Callable[[], object] | None = None
        self._watch_soon: asyncio.Handle | None = None
        self._watch_timer: asyncio.TimerHandle | None = None
        # A predecessor killed with a writer waiting for space: let the writer re-check.
        self._wake_peer()

    def _available(self) -> bool:
        if self._rd != self._tail:
            return True
        self._tail = self._q[_Q_TAIL]
        if _WEAK_ORDERING:
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
        elif self._rd != self._head:
            self._publish_head()  # only pads were skipped: free them now
        return out

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
        if _WEAK_ORDERING:
            self._fence()  # payload loads before the head store
        self._q[_Q_HEAD] = self._rd
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
        return self._block(self._available, _deadline(timeout))

    async def wait_async(self, timeout: float | None = None) -> bool:
        """``wait`` for an event loop: watches the doorbell's fd with ``add_reader``, no thread."""
        return await self._block_async(self._available, _deadline(timeout))

    def read(self, max_frames: int = 64, timeout: float | None = None) -> list[bytes]:
        """``read_batch`` that first waits up to ``timeout`` for a frame; [] on timeout."""
        deadline = _deadline(timeout)
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
            if self._available():  # more than it took: come back after other callbacks
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
            self._watch_timer = self._watch_loop.call_later(IDLE_RECHECK_S, self._on_timer)
            self._on_bell()

    def _detach(self) -> None:
        self.unwatch()
        for v in self._views:
            with contextlib.suppress(BufferError):
                v.release()
        self._views.clear()
