"""A ring's shared-memory layout, its mapping, and what anyone can read from its header.

A ring is a single-producer single-consumer byte queue in one ``/dev/shm`` segment (shm.py) with
two doorbell FIFOs (doorbell.py). Layout (native byte order; every counter an aligned u64)::

    [0, 64)                 shm preamble (shm.py); capacity at 32, written once at creation
    [64, 128)               tail at 64 (bytes ever published), writer pid at 72,
                            frames at 80 (frames ever published, pads not counted)
    [128, 192)              head at 128 (bytes ever released), reader pid at 136
    [192, 256)              reader sleep epoch at 192, writer sleep epoch at 200
    [256, 256 + capacity)   data; capacity a power of two, a position is counter % capacity

A frame is a u32 payload length, a u32 reserved (0), the payload, padded to a multiple of 8 (so
every payload is 8-aligned: numpy views work). A frame never straddles the end of the data area:
when it does not fit before the end, the writer marks the rest as a pad (length 0xFFFFFFFF) and
puts the frame at 0. Any payload up to ``capacity - 8`` bytes fits.

Invariants: only the writer stores tail and frames, only the reader stores head, each side on its
own cache line (no line bouncing per frame); the sleep epochs share a fourth line, written only
when a side goes to sleep, so reading them on every publish is a cache hit. tail and head only
grow (2**64 bytes never wrap) and ``tail - head <= capacity``; bytes below the tail are whole
frames (ring_endpoint.py: publication). The traffic counters (tail, frames) are what
``shardbroker_ring_{bytes,frames}_total`` export, read here without a message or a lock.

Why pad rather than split: both sides work in place (``reserve()`` hands out one contiguous view,
``peek_batch()`` views of whole payloads), for at most one frame less 8 bytes per lap (< 1.6 % for
64 KiB frames in a 4 MiB ring). The frame count (layout version 2) costs one 8-byte store per
publish, +4-5 % per 100-byte frame and nothing visible at 64 KiB (docs/notes/rings.md).
"""

from __future__ import annotations

import mmap
import os
from typing import NamedTuple

from shardbroker.ipc.doorbell import FifoDoorbell
from shardbroker.ipc.shm import Preamble, SharedSegment

RING_KIND = 0x474E4952  # b"RING" read as a little-endian u32
RING_VERSION = 2  # 2: the frame count at 80
HEADER_SIZE = 256
FRAME_HEADER = 8
PAD = 0xFFFFFFFF
MIN_CAPACITY = 64
MAX_CAPACITY = 1 << 31  # payload lengths are u32 and PAD is reserved
READER_BELL = "rbell"  # rung by the writer, the reader sleeps on it
WRITER_BELL = "wbell"  # rung by the reader, a writer waiting for space sleeps on it

# Indexes of u64 words in the header.
Q_CAPACITY = 4
Q_TAIL = 8
Q_WRITER_PID = 9
Q_FRAMES = 10
Q_HEAD = 16
Q_READER_PID = 17
Q_READER_SLEEP = 24
Q_WRITER_SLEEP = 25


class RingStats(NamedTuple):
    """What a ring's header says about it; loaded word by word (each load atomic), not as a
    consistent snapshot: the writer and reader keep moving."""

    used_bytes: int  # published and not yet released, pads included
    capacity: int  # size of the data area
    bytes_published: int  # the tail: every frame (header, payload, padding to 8) and end pad
    frames_published: int  # frames (pads not counted)


def header_stats(q: memoryview) -> RingStats:
    # head is loaded first: tail only grows, so tail - head is never negative; clamped because
    # both may move in between.
    head = q[Q_HEAD]
    tail = q[Q_TAIL]
    cap = q[Q_CAPACITY]
    return RingStats(max(0, min(tail - head, cap)), cap, tail, q[Q_FRAMES])


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
                stats = header_stats(q)
    except ValueError:
        return None
    finally:
        os.close(fd)
    cap = stats.capacity
    return stats if cap >= MIN_CAPACITY and not cap & (cap - 1) else None  # not yet initialised


class RingError(Exception):
    """A ring is malformed, misused, or a frame cannot ever fit."""


class RingCorrupt(RingError):
    """The data area holds something no `RingWriter` writes."""


def frame_size(payload_len: int) -> int:
    """Bytes a frame of ``payload_len`` takes in the ring: header + payload, rounded up to 8."""
    return (payload_len + FRAME_HEADER + 7) & ~7


class RingMapping:
    """One ring's mapped segment: views of the header and the data area, and the two doorbells.

    `ring.Ring` adds the lifecycle and the endpoints; the endpoints (ring_writer.py,
    ring_reader.py) work on these views directly."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        mv = memoryview(segment.mmap)
        q = mv[:HEADER_SIZE].cast("Q")
        cap = q[Q_CAPACITY]
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

    @property
    def name(self) -> str:
        return self.segment.name

    @property
    def used_bytes(self) -> int:
        """Bytes published and not yet released (pads included). Safe from anywhere."""
        return header_stats(self._q).used_bytes

    def stats(self) -> RingStats:
        """Fill and traffic from the header, for /metrics (no endpoint needed)."""
        return header_stats(self._q)

    @property
    def free_bytes(self) -> int:
        return self.capacity - self.used_bytes

    @property
    def max_payload(self) -> int:
        return self.capacity - FRAME_HEADER

    def _release_views(self) -> None:
        self.reader_bell.close()
        self.writer_bell.close()
        for v in (self._words, self._data, self._q, self._mv):
            v.release()
