"""What a local (same-host) client needs to find its way: the directory and the high watermarks.

This module opens files: two POSIX shared-memory segments (``shm.py``) per broker instance.

``local-dir`` (``LocalDirectory``): written by the controller in the supervisor on every
metadata change, read by ``LocalProducer``/``LocalConsumer`` in any process. Its body is one JSON
object (``DirectoryBody``): the metadata version, the worker count, worker 0's Kafka address, and
per topic its id, the owning worker and the high-watermark row of each partition. JSON because it
changes only with admin operations and a client reads it once at attach and again only when it
meets an unknown topic or a moved partition: a 1,000-partition directory decodes in ~0.3 ms.

    32  u64 sequence   seqlock: odd while the controller writes, bumped twice per publish
    40  u64 length     bytes of JSON at 64
    48  u64 capacity   bytes available at 64
    64  ...            JSON body

A reader copies the body between two loads of the sequence and retries while it was odd or
moved, so it never decodes a half-written body; the writer never waits for readers. The same
x86-64 ordering argument as ring_endpoint.py (aligned 8-byte loads/stores, TSO) makes "sequence, body,
sequence" ordered on both sides.

``local-hw`` (``HighWatermarkTable``): one 24-byte row per partition, ``(high watermark, log start
offset, last stable offset)`` as int64, written by the partition's owner worker after *every*
append (TCP or local, transaction markers included) and read by local consumers, which never read
past the high watermark (read_uncommitted) or the LSO (read_committed). The controller assigns
rows (in the directory) from a counter that never goes back within a run, so a row never changes
partitions under a reader: a topic deleted and created again gets new rows. 65,536 rows (1.5 MiB)
by default; partitions beyond have row -1 and no local consumer (the directory says so).
Each value is one aligned 8-byte store (``memoryview.cast("q")``), so a reader sees the old or
the new watermark, never a torn one; each is stored after the data below it is written.

Worker sockets. A local client attaches to a worker over a Unix ``SOCK_SEQPACKET`` socket in the
abstract namespace, ``\\0shardbroker-<instance>-local-w<i>`` (``worker_socket_address``): no file to
leave behind when a worker is SIGKILLed (the kernel frees the name with the socket), message
boundaries kept by the kernel (no framing code), and EOF on the worker's side the moment the
client process dies, which is how the worker learns to reclaim the client's rings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Final

from shardbroker.ipc.shm import SharedSegment, shm_name, validate_instance

__all__ = [
    "DIRECTORY_NAME",
    "HIGH_WATERMARKS_NAME",
    "DirectoryBody",
    "DirectoryError",
    "HighWatermarkRows",
    "HighWatermarkTable",
    "LocalDirectory",
    "TopicEntry",
    "worker_socket_address",
]

DIRECTORY_NAME: Final = "local-dir"
HIGH_WATERMARKS_NAME: Final = "local-hw"
DIRECTORY_KIND: Final = 0x5249444C  # b"LDIR" read as a little-endian u32
HIGH_WATERMARKS_KIND: Final = 0x5757484C  # b"LHWW"
LAYOUT_VERSION: Final = 1
#: 2: rows carry the last stable offset (issue 16).
HIGH_WATERMARKS_LAYOUT: Final = 2
_ROW_WORDS: Final = 3
#: 1 MiB of JSON: ~60 bytes per partition, so ~15,000 partitions.
DIRECTORY_CAPACITY: Final = 1 << 20
HIGH_WATERMARK_ROWS: Final = 1 << 16

_BODY_AT: Final = 64
_Q_SEQUENCE: Final = 4
_Q_LENGTH: Final = 5
_Q_CAPACITY: Final = 6
#: How long a reader retries while the controller is writing (it writes in microseconds).
_READ_PATIENCE_S: Final = 1.0


class DirectoryError(Exception):
    """The directory cannot be read or does not hold what the client asked for."""


def worker_socket_address(instance: str, slot: int) -> bytes:
    """The abstract-namespace address of worker ``slot``'s local-client socket."""
    return f"\0shardbroker-{validate_instance(instance)}-local-w{slot}".encode()


@dataclass(frozen=True, slots=True)
class TopicEntry:
    topic_id: str
    #: Owning worker of each partition.
    owners: tuple[int, ...]
    #: High-watermark row of each partition (-1: none).
    rows: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DirectoryBody:
    version: int
    workers: int
    #: ``host:port`` of worker 0's Kafka listener (consumer-group commits go over TCP).
    bootstrap: str
    topics: dict[str, TopicEntry]

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "version": self.version,
                "workers": self.workers,
                "bootstrap": self.bootstrap,
                "topics": {
                    name: {"id": t.topic_id, "owners": list(t.owners), "rows": list(t.rows)}
                    for name, t in self.topics.items()
                },
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DirectoryBody:
        body: dict[str, Any] = json.loads(raw)
        return cls(
            int(body["version"]),
            int(body["workers"]),
            str(body["bootstrap"]),
            {
                name: TopicEntry(str(t["id"]), tuple(map(int, t["owners"])), tuple(map(int, t["rows"])))
                for name, t in body["topics"].items()
            },
        )


class HighWatermarkRows:
    """The controller's assignment of ``local-hw`` rows to partitions: a counter that never goes
    back within a run, so a row never changes partitions under a reader (a topic deleted and
    created again has a new id, hence new rows); -1 once the table is full."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._rows: dict[str, tuple[int, ...]] = {}  # topic id -> row per partition
        self._next = 0

    def body(
        self, version: int, workers: int, bootstrap: str, topics: dict[str, tuple[str, tuple[int, ...]]]
    ) -> DirectoryBody:
        """The directory for ``topics`` (name -> (topic id, owner per partition))."""
        entries = {}
        for name, (topic_id, owners) in topics.items():
            rows = self._rows.get(topic_id, ())
            while len(rows) < len(owners):
                fits = self._next < self.capacity
                rows = (*rows, self._next if fits else -1)
                self._next += fits
            self._rows[topic_id] = rows
            entries[name] = TopicEntry(topic_id, owners, rows[: len(owners)])
        live = {topic_id for topic_id, _ in topics.values()}
        self._rows = {k: v for k, v in self._rows.items() if k in live}
        return DirectoryBody(version, workers, bootstrap, entries)


class LocalDirectory:
    """The ``local-dir`` segment: ``create`` + ``publish`` in the controller, ``attach`` + ``read``
    in clients."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        self._mv = memoryview(segment.mmap)
        self._q = self._mv[:_BODY_AT].cast("Q")

    @classmethod
    def create(cls, instance: str, capacity: int = DIRECTORY_CAPACITY) -> LocalDirectory:
        seg = SharedSegment.create(
            shm_name(instance, DIRECTORY_NAME), _BODY_AT + capacity, DIRECTORY_KIND, LAYOUT_VERSION
        )
        d = cls(seg)
        d._q[_Q_CAPACITY] = capacity
        return d

    @classmethod
    def attach(cls, instance: str, *, writable: bool = True) -> LocalDirectory:
        """Map the directory; clients map it read-only (``writable=False``)."""
        name = shm_name(instance, DIRECTORY_NAME)
        return cls(SharedSegment.attach(name, DIRECTORY_KIND, LAYOUT_VERSION, writable=writable))

    def publish(self, body: DirectoryBody) -> None:
        """Replace the body (the controller only; one writer). ValueError when it does not fit."""
        raw = body.to_json()
        q = self._q
        if len(raw) > q[_Q_CAPACITY]:
            raise ValueError(f"a {len(raw)}-byte directory does not fit its {q[_Q_CAPACITY]}-byte segment")
        q[_Q_SEQUENCE] += 1  # odd: readers retry
        self._mv[_BODY_AT : _BODY_AT + len(raw)] = raw
        q[_Q_LENGTH] = len(raw)
        q[_Q_SEQUENCE] += 1

    def read(self) -> DirectoryBody:
        """A consistent copy of the body (DirectoryError if the writer never finishes)."""
        q, mv = self._q, self._mv
        deadline = time.monotonic() + _READ_PATIENCE_S
        while True:
            seq = q[_Q_SEQUENCE]
            if not seq & 1:
                length = q[_Q_LENGTH]
                raw = bytes(mv[_BODY_AT : _BODY_AT + min(length, q[_Q_CAPACITY])])
                if q[_Q_SEQUENCE] == seq:
                    if not seq:
                        raise DirectoryError(f"{self.segment.name} was never published")
                    return DirectoryBody.from_json(raw)
            if time.monotonic() > deadline:
                raise DirectoryError(f"{self.segment.name} stayed mid-write for {_READ_PATIENCE_S} s")
            time.sleep(0)

    def close(self) -> None:
        self._q.release()
        self._mv.release()
        self.segment.close()


class HighWatermarkTable:
    """The ``local-hw`` segment: ``(high watermark, log start offset, last stable offset)`` per row."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        self._mv = memoryview(segment.mmap)
        self._q = self._mv[_BODY_AT:].cast("q")
        self.rows = len(self._q) // _ROW_WORDS

    @classmethod
    def create(cls, instance: str, rows: int = HIGH_WATERMARK_ROWS) -> HighWatermarkTable:
        seg = SharedSegment.create(
            shm_name(instance, HIGH_WATERMARKS_NAME),
            _BODY_AT + 8 * _ROW_WORDS * rows,
            HIGH_WATERMARKS_KIND,
            HIGH_WATERMARKS_LAYOUT,
        )
        return cls(seg)

    @classmethod
    def attach(cls, instance: str, *, writable: bool = True) -> HighWatermarkTable:
        """Map the table; the owner workers write it, clients map it read-only."""
        name = shm_name(instance, HIGH_WATERMARKS_NAME)
        return cls(
            SharedSegment.attach(name, HIGH_WATERMARKS_KIND, HIGH_WATERMARKS_LAYOUT, writable=writable)
        )

    def publish(self, row: int, high_watermark: int, log_start_offset: int, last_stable_offset: int) -> None:
        """The owner worker, after an append (or retention): three aligned 8-byte stores."""
        q = self._q
        at = _ROW_WORDS * row
        q[at + 1] = log_start_offset
        q[at + 2] = last_stable_offset
        q[at] = high_watermark

    def high_watermark(self, row: int) -> int:
        return self._q[_ROW_WORDS * row]

    def log_start_offset(self, row: int) -> int:
        return self._q[_ROW_WORDS * row + 1]

    def last_stable_offset(self, row: int) -> int:
        return self._q[_ROW_WORDS * row + 2]

    def close(self) -> None:
        self._q.release()
        self._mv.release()
        self.segment.close()
