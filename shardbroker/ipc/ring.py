"""Single-producer single-consumer byte ring in POSIX shared memory, with doorbells: `Ring`, the
object a process creates or attaches and takes its endpoint from.

Who uses it: the controller creates one ring per direction with each worker before forking, local
clients and forwarding workers create their rings and hand their names to the worker they attach
to (ring_names.py); the other side attaches by name (``Ring.attach``) or inherits the object across
fork. Each side takes one endpoint, ``ring.writer()`` (ring_writer.py) or ``ring.reader()``
(ring_reader.py). Exactly one process writes and one reads a given ring at a time: nothing here
arbitrates between two writers. Opens files through shm.py and doorbell.py: one ``/dev/shm``
segment and two named FIFOs per ring, unlinked by the creating process when it closes the ring.

Byte layout and frames: ring_layout.py; publication order and the sleep protocol:
ring_endpoint.py. Why shared memory: 64 KiB frames move at 18.5 GB/s to a reader in another
process working in place (0.73 of a memcpy of the same bytes), and an idle reader has a frame in
its hands p50 29 us after ``write()`` (perf/bench_ring.py; measurements in docs/notes/rings.md).
"""

from __future__ import annotations

from types import TracebackType

from shardbroker.ipc.ring_layout import (
    HEADER_SIZE,
    MAX_CAPACITY,
    MIN_CAPACITY,
    Q_CAPACITY,
    Q_HEAD,
    Q_READER_SLEEP,
    Q_TAIL,
    Q_WRITER_SLEEP,
    READER_BELL,
    RING_KIND,
    RING_VERSION,
    WRITER_BELL,
    RingMapping,
)
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.ipc.ring_writer import RingWriter
from shardbroker.ipc.shm import SharedSegment, shm_name


class Ring(RingMapping):
    """One shared ring: the mapping, the header, the two doorbells. Take endpoints from it."""

    def __init__(self, segment: SharedSegment) -> None:
        super().__init__(segment)
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
                q[Q_CAPACITY] = capacity
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
        self._q[Q_HEAD] = self._q[Q_TAIL]
        for i in (Q_READER_SLEEP, Q_WRITER_SLEEP):
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
        self._release_views()
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
