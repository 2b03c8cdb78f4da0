"""LocalConsumer: reads one partition on the broker's host straight from its segment files.
Opens files (read-only mmaps of ``<data_dir>/<topic>-<partition>/*.log``), shared memory and a
Unix socket (through ipc/local_attach.py); commits offsets over TCP (client/admin_groups.py).

    with LocalConsumer("/var/lib/shardbroker", "orders", 0, group_id="app") as consumer:
        for record in consumer.records(timeout=1.0):      # offset, timestamp, key, value, headers
            ...
        columns = consumer.poll_columns(timeout=1.0)      # or: numpy columns of every record read
        consumer.commit()                                 # the position, to the group coordinator

What it reads and how far. The owner worker stores the partition's high watermark and last
stable offset in the broker's ``local-hw`` table after every append (broker/local_clients.py);
the consumer reads whole batches below the high watermark (``isolation_level="read_uncommitted"``,
Kafka's default) or below the LSO (``"read_committed"``, Kafka's consumer property and values)
from a read-only mmap of the segment file, exactly the bytes Fetch would send (the log holds
batches as produced, with the broker's offsets). It never takes the data dir's lock and never
writes there. Bytes past the high watermark (an append in progress) are never looked at. As a
Kafka consumer, it never returns control batches (transaction markers), and read_committed drops
the batches of aborted transactions, found in the partition's ``.txnindex`` files
(client/local_isolation.py); ``offset="latest"`` is the LSO there, as Kafka's ListOffsets.

Finding an offset: the segment is the one with the largest base offset at or below it (file
names); inside it, the offset index (``OffsetIndex.read_entries``: read without mapping or
resizing the broker's file) gives a position at most ``index.interval.bytes`` before the batch,
and ``batch_scan.scan_batches`` walks from there. Reading on walks batch headers in numpy: one
``scan_batches`` per poll over what the mapping holds.

Segment roll and retention: when the reader is at the end of its segment file and the high
watermark is further, it lists the directory again and moves to the segment whose base offset is
its position. A segment deleted by retention while mapped stays readable (the mapping holds the
inode). If the position has fallen below the first segment (retention deleted what it had not
read yet), ``auto_offset_reset="earliest"`` moves it to the log start, "none" raises
``OffsetOutOfRange``, like Kafka's consumer setting.

Waiting without polling: at attach the consumer creates a small wake ring and asks the owner
worker (``watch``) to write to it after each new high watermark; an idle consumer sleeps on that
ring's doorbell (the ring's sleep protocol: no wake-up is lost, and a busy consumer costs the
worker no system call).

Partition moves (AlterPartitionReassignments): the files stay where they are and keep their
high-watermark row, so reading goes on unchanged; only the wake-ups come from another worker.
The controller first releases the partition (owner -1 in the directory; the old owner closes its
watches), then gives it to the new owner, which publishes the row after each append. A poll that
finds no data therefore looks at its watch (``WorkerSession.worker_gone``: one non-blocking
``recv``), and once a second (``OWNER_CHECK_INTERVAL_S``: a directory read, ~0.3 ms for 1,000
partitions, only when idle) at the directory; when the watched worker let go or the directory
names another owner, it watches the new owner. Between the two steps nobody can be watched, so
it polls the row every 10 ms until the new owner accepts the watch. A watched worker that went
away while the directory still names it (it died) is an error, as before.

Records, batches and columns: ``poll_batches``/``batches()`` give the raw batches (``RawBatch``:
header fields and the bytes, zero-copy); ``poll_columns`` decodes every record of up to
``COLUMNS_POLL_BYTES`` of batches into one set of numpy columns (``RecordColumns``: offsets,
timestamps, key and value positions and lengths in the segment mapping, headers), in one
vectorised pass over all those batches (``protocol.record_columns.record_columns``): what a reader that
wants line rate takes. ``records()`` builds Record objects from those columns.

Access (broker/local_clients.py): the owner worker admits only the broker's OS user or a member
of ``local.clients.allowed.group``, and with an authorizer checks READ on the topic (and on the
group, given a ``group_id``) as ``User:<OS user>`` at every watch; when an ACL change denies it
later, it withdraws the watch with the reason, which the next poll raises (one non-blocking
``recv`` a poll: 1.1 us measured, for up to 4 MiB of records) as the TCP consumer would:
``KafkaApiError`` TOPIC_/GROUP_AUTHORIZATION_FAILED. Commits go over TCP (below), checked there
as that connection's principal.
This binds the client library, not the process: a process of the broker's user can read the
segment files whatever the ACLs say. A group member cannot read them at all (the data dir is
0700): the consumer says so at construction.

Consumer groups: ``commit`` sends OffsetCommit through the normal coordinator (AdminClient over
TCP to worker 0's address from the directory), as an admin commit (generation -1), which Kafka's
coordinator accepts only while the group has no active members.

Measured (``python -m perf.bench_local --records 2000000 --tcp-records 200000 --runs 3``:
2,000,000 records of 100 B in 256 KiB batches over 2 partitions, 2 workers; median (range) of 3
runs, load average 1.0-1.2 on the shared 2-core VM): ``batches()`` 294 M records/s (277-299), a
batch-level rate (records counted from the batch headers: the walk touches only headers); every
record decoded by ``poll_columns`` 8.05 M records/s (7.52-8.46), 0.12 us of CPU a record
(0.12-0.13; an earlier run at load 0.6-1.2: 9.51, 7.31-11.19); ``records()`` as Record objects
0.50 M/s (0.50-0.72), 1.4-2.0 us of CPU each, nearly all of it building the Python objects. So
the issue's 5 M msgs/s holds with every record's key, value, offset and timestamp addressable.
Against the previous decode (the former ``RawBatch.columns()``, batch by batch over
``batches()``, the same records) in one broker run, 5 alternating rounds: 3.98 M/s (3.83-7.14)
before, 8.42 M/s (7.90-11.16) after, 2.1x (1.2-2.8). What bounds it: the column decode
itself, ~90-140 ns a record on this VM (protocol/record_columns.py), is most of the 0.12 us; the scan
and the loop are the rest.

``COLUMNS_POLL_BYTES``: decoding 0.5 / 1 / 2 / 4 / 8 / 16 / 64 MiB of batches at a time took
200 / 114 / 100 / 95 / 126 / 200 / 248 ns a record (medians of 5, one quiet run; a busier one
ranked them the same): above a few MiB the decode's gathers leave the cache (1 MiB of L2 per
core here), below it numpy's fixed cost per call (~2-3 us here) dominates.
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Literal

import numpy as np

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import KafkaApiError
from shardbroker.client.local_isolation import AbortedTransactions, take_batches, visible_batches
from shardbroker.ipc.local_attach import LocalBroker, LocalClientError, WorkerSession, ring_object
from shardbroker.ipc.ring_names import WAKE_ROLE
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches
from shardbroker.protocol.record_batch import Record, RecordBatch
from shardbroker.protocol.record_batch_header import LENGTH_OFFSET, LOG_OVERHEAD, TRANSACTIONAL_BIT
from shardbroker.protocol.record_columns import RecordColumns, record_columns
from shardbroker.storage.file_names import LOG_SUFFIX, index_file, offset_from_file_name, partition_dir_name
from shardbroker.storage.offset_index import OffsetIndex

__all__ = ["LocalConsumer", "OffsetOutOfRange", "RawBatch"]

WAKE_RING_CAPACITY: Final = 4096
#: Bytes of a segment walked per poll at most (bounds one poll's work and the batches it returns).
MAX_POLL_BYTES: Final = 64 << 20
#: Bytes of batches decoded per ``poll_columns``: the decode's gathers stay in cache (module
#: docstring: 4 MiB measured fastest).
COLUMNS_POLL_BYTES: Final = 4 << 20
#: How often an idle consumer re-reads the directory to see whether its partition moved.
OWNER_CHECK_INTERVAL_S: Final = 1.0
#: Sleep between polls while no worker can be watched (the partition is between two owners).
UNWATCHED_POLL_S: Final = 0.01


class OffsetOutOfRange(LocalClientError):
    """The position is outside the log (below its start after retention, or past its end)."""


def _kafka_error(exc: LocalClientError) -> Exception:
    """A worker's refusal with a Kafka error code (an ACL) as the TCP consumer raises it."""
    if exc.error_code is None:
        return exc
    return KafkaApiError(exc.error_code, str(exc).split(": ", 1)[-1])


@dataclass(frozen=True, slots=True)
class RawBatch:
    """One stored batch: header fields and its bytes, a view of the segment mapping (valid as
    long as the view is kept; copy with ``bytes(batch.data)`` to keep it beyond)."""

    base_offset: int
    last_offset: int
    record_count: int
    max_timestamp: int
    data: memoryview

    def records(self) -> Iterator[Record]:
        return RecordBatch(self.data).records()


@dataclass(frozen=True, slots=True)
class _Read:
    """What one poll read: whole batches ``headers[first:stop]`` in ``view`` (positions minus
    ``headers.base_position`` index it), starting at or before offset ``position``."""

    view: memoryview
    headers: BatchHeaders
    first: int
    stop: int
    position: int


class _Segment:
    """A read-only mapping of one segment file, remapped when the file grows."""

    def __init__(self, path: Path, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.map: mmap.mmap | None = None
        self.mapped = 0

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def view(self) -> memoryview:
        """The whole file as it is now (remapping if it grew)."""
        size = self.size()
        if size != self.mapped:
            # The old mapping is dropped, not closed: batches handed out may still view it.
            self.map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ) if size else None
            self.mapped = size
        return memoryview(self.map) if self.map is not None else memoryview(b"")

    def close(self) -> None:
        os.close(self.fd)
        self.map = None


class LocalConsumer:
    """Reads one partition of the broker serving ``data_dir`` (see the module docstring)."""

    def __init__(
        self,
        data_dir: str,
        topic: str,
        partition: int,
        *,
        offset: int | Literal["earliest", "latest"] = "earliest",
        auto_offset_reset: Literal["earliest", "none"] = "earliest",
        group_id: str | None = None,
        isolation_level: Literal["read_uncommitted", "read_committed"] = "read_uncommitted",
    ) -> None:
        if isolation_level not in ("read_uncommitted", "read_committed"):
            raise ValueError(
                f"isolation_level must be 'read_uncommitted' or 'read_committed', not {isolation_level!r}"
            )
        self.isolation_level = isolation_level
        self.topic = topic
        self.partition = partition
        self.group_id = group_id
        self.auto_offset_reset = auto_offset_reset
        self.broker = LocalBroker(data_dir)
        self.session: WorkerSession | None = None
        self.wake: RingReader | None = None
        try:
            entry, owner = self.broker.partition(topic, partition)
            self.row = entry.rows[partition]
            if self.row < 0:
                raise LocalClientError(f"{topic}-{partition} has no high-watermark row (too many partitions)")
            self.directory = self.broker.data_dir / partition_dir_name(topic, partition)
            self._check_readable()
            if owner >= 0:  # else the partition is between two owners: watched once it has one
                self._watch(owner)
            self._hw = self.broker.high_watermarks
            committed = isolation_level == "read_committed"
            self._aborted = AbortedTransactions(self.directory) if committed else None
        except BaseException:
            self.broker.close()
            raise
        self._next_owner_check = time.monotonic() + OWNER_CHECK_INTERVAL_S
        self._segment: _Segment | None = None
        self._file_position = 0
        if offset == "earliest":
            self.position = self.log_start_offset
        elif offset == "latest":
            self.position = self.last_fetchable_offset
        else:
            self.position = offset
        self._closed = False

    # ------------------------------------------------------------------ offsets

    @property
    def high_watermark(self) -> int:
        """The offset after the last committed record, as the owner published it."""
        return self._hw.high_watermark(self.row)

    @property
    def last_stable_offset(self) -> int:
        """Kafka's LSO, as the owner published it: below the first undecided transaction."""
        return self._hw.last_stable_offset(self.row)

    @property
    def last_fetchable_offset(self) -> int:
        """Where reading stops: the LSO for read_committed, else the high watermark."""
        return self.last_stable_offset if self._aborted is not None else self.high_watermark

    @property
    def log_start_offset(self) -> int:
        return self._hw.log_start_offset(self.row)

    def seek(self, offset: int) -> None:
        self.position = offset
        self._drop_segment()

    # ------------------------------------------------------------------ reading

    def poll_batches(self, timeout: float = 0.0) -> list[RawBatch]:
        """The whole batches from the position up to the last fetchable offset (at most
        ``MAX_POLL_BYTES`` of them, less the markers and aborted batches left out), waiting up to
        ``timeout`` for the first; [] if none."""
        got = self._poll(timeout, MAX_POLL_BYTES)
        if got is None:
            return []
        h, view = got.headers, got.view
        rel = (h.positions[got.first : got.stop] - h.base_position).tolist()
        sizes = h.sizes[got.first : got.stop].tolist()
        zipped = zip(
            h.base_offsets[got.first : got.stop].tolist(),
            h.last_offsets[got.first : got.stop].tolist(),
            h.record_counts[got.first : got.stop].tolist(),
            h.max_timestamps[got.first : got.stop].tolist(),
            rel,
            sizes,
            strict=True,
        )
        return [RawBatch(base, last, n, ts, view[p : p + size]) for base, last, n, ts, p, size in zipped]

    def poll_columns(self, timeout: float = 0.0, max_bytes: int = COLUMNS_POLL_BYTES) -> RecordColumns | None:
        """Every record from the position on, in the whole batches up to the last fetchable offset (at
        most ``max_bytes`` of them, and at least one batch), decoded into one set of numpy
        columns (``protocol.record_columns.record_columns``; records of a batch before the position
        left out, so it may be empty), waiting up to ``timeout`` for the first; None if none."""
        got = self._poll(timeout, max_bytes)
        if got is None:
            return None
        return record_columns(got.view, got.headers, got.first, got.stop).since(got.position)

    def batches(self, timeout: float = 0.0) -> Iterator[RawBatch]:
        """Every batch from the position on; stops once ``timeout`` passes with nothing new."""
        while got := self.poll_batches(timeout):
            yield from got

    def records(self, timeout: float = 0.0) -> Iterator[Record]:
        """Every record from the position on (records of a batch before the position skipped),
        built from ``poll_columns``; key, value and header values are memoryviews of the
        segment mapping (or, for compressed batches, of their decompressed records)."""
        while (columns := self.poll_columns(timeout)) is not None:
            yield from columns.records()

    def _poll(self, timeout: float, max_bytes: int) -> _Read | None:
        deadline = time.monotonic() + timeout
        while True:
            self._session_gone()  # raises once an ACL change withdrew the watch (module docstring)
            if self.wake is not None:
                self.wake.read_batch(64)  # forget wake-ups: the watermark itself is read next
            hw = self.high_watermark
            got = self._read(self.last_stable_offset if self._aborted is not None else hw, hw, max_bytes)
            if got is not None:
                got = self._visible(got)
                if got.stop > got.first:
                    return got
                continue  # all left out (markers, aborted data): read on at once
            self._follow_owner()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            if self.wake is None:
                time.sleep(min(remaining, UNWATCHED_POLL_S))
            else:
                self.wake.wait(min(remaining, OWNER_CHECK_INTERVAL_S))

    def _read(self, limit: int, hw: int, max_bytes: int) -> _Read | None:
        """Whole batches from the position, all below ``limit`` (the last fetchable offset); None
        when the position did not move."""
        pos = self.position
        if pos >= limit:
            if pos > hw and hw >= 0:
                self._out_of_range(f"position {pos} is past the high watermark {hw}")
            return None
        seg = self._segment or self._open_segment(pos)
        if seg is None:
            return None
        view = seg.view()
        start = self._file_position
        if start >= len(view):
            if self._next_segment(seg):
                return self._read(limit, hw, max_bytes)
            return None
        scanned = view[start : start + max(max_bytes, self._batch_size(view, start))]
        headers = scan_batches(scanned, base_position=start)
        if not len(headers):
            return None
        lasts = headers.last_offsets
        keep = int(np.searchsorted(lasts, limit, side="left"))  # whole batches below the limit
        if not keep:
            return None
        first = int(np.searchsorted(lasts[:keep], pos, side="left"))  # skip batches before pos
        self._file_position = int(headers.positions[keep - 1] + headers.sizes[keep - 1])
        self.position = max(pos, int(lasts[keep - 1]) + 1)
        return _Read(scanned, headers, first, keep, pos)

    def _visible(self, got: _Read) -> _Read:
        """``got`` without what a Kafka consumer leaves out (client/local_isolation.py)."""
        aborted = None
        h = got.headers
        if self._aborted is not None and (h.attributes[got.first : got.stop] & TRANSACTIONAL_BIT).any():
            assert self._segment is not None  # _read returned batches of it
            upper = int(h.last_offsets[got.stop - 1]) + 1
            aborted = self._aborted.collect(self._segment.base_offset, self._bases, got.position, upper)
        keep = visible_batches(h, got.first, got.stop, aborted)
        if keep is None:
            return got
        return _Read(got.view, take_batches(h, keep), 0, len(keep), got.position)

    @staticmethod
    def _batch_size(view: memoryview, position: int) -> int:
        """The size of the batch at ``position`` (a poll always takes at least one whole batch)."""
        if position + LOG_OVERHEAD > len(view):
            return 0
        length = view[position + LENGTH_OFFSET : position + LOG_OVERHEAD]
        return LOG_OVERHEAD + int.from_bytes(length, "big", signed=True)

    # ------------------------------------------------------------------ partition moves

    def _watch(self, owner: int) -> None:
        """Ask worker ``owner`` to ring a new wake ring after each new high watermark."""
        ring = self.broker.new_ring(WAKE_ROLE, WAKE_RING_CAPACITY)
        hello: dict[str, object] = {
            "op": "watch",
            "ring": ring_object(ring),
            "topic": self.topic,
            "partition": self.partition,
        }
        if self.group_id is not None:
            hello["group"] = self.group_id
        try:
            session = self.broker.attach(owner, hello, [ring])  # closes the ring if refused
        except LocalClientError as exc:
            raise _kafka_error(exc) from None
        self._unwatch()
        self.session, self.wake = session, ring.reader()

    def _session_gone(self) -> bool:
        """True when there is no watch or its worker let go of it; KafkaApiError when the worker
        withdrew it for an ACL (one non-blocking ``recv``)."""
        if self.session is None:
            return True
        try:
            return self.session.worker_gone()
        except LocalClientError as exc:
            raise _kafka_error(exc) from None

    def _unwatch(self) -> None:
        if self.session is not None:
            self.session.close()
        self.session = self.wake = None

    def _follow_owner(self) -> None:
        """After a poll without data: if the watched worker let go of the session (it no longer
        owns the partition, or it died), or now and then in any case, read the directory and
        watch the partition's owner there (see the module docstring)."""
        session = self.session
        gone = self._session_gone()
        now = time.monotonic()
        if not gone and now < self._next_owner_check:
            return
        self._next_owner_check = now + OWNER_CHECK_INTERVAL_S
        self.broker.read()
        _, owner = self.broker.partition(self.topic, self.partition)
        if session is not None and owner == session.node_id and not gone:
            return
        if session is not None and gone:
            self._unwatch()
        if owner < 0:
            return  # released by its old owner, not yet given to the new one
        try:
            self._watch(owner)
        except LocalClientError as exc:
            if session is not None and owner == session.node_id:
                raise LocalClientError(
                    f"the worker owning {self.topic}-{self.partition} went away: {exc}"
                ) from None
            # The directory names the new owner a moment before it takes the partition: retried.

    # ------------------------------------------------------------------ segments

    def _check_readable(self) -> None:
        try:
            os.listdir(self.directory)
        except PermissionError:
            raise LocalClientError(
                f"uid {os.geteuid()} cannot read {self.directory}: a LocalConsumer reads the segment "
                "files itself, so it runs as the broker's user (members of local.clients.allowed.group "
                "may use LocalProducer)"
            ) from None
        except FileNotFoundError:
            pass  # not created yet: _bases says so when it is read

    def _bases(self) -> list[int]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            raise LocalClientError(f"{self.directory} is gone (topic deleted?)") from None
        bases = []
        for name in names:
            parsed = offset_from_file_name(name)
            if parsed is not None and parsed[1] == LOG_SUFFIX and not parsed[2]:
                bases.append(parsed[0])
        return sorted(bases)

    def _open_segment(self, pos: int) -> _Segment | None:
        bases = self._bases()
        if not bases:
            return None
        if pos < bases[0] or pos < self.log_start_offset:
            self._out_of_range(f"offset {pos} is below the log start {max(bases[0], self.log_start_offset)}")
            pos = self.position
        i = bisect.bisect_right(bases, pos) - 1
        base = bases[i]
        try:
            seg = _Segment(self.directory / f"{base:020d}{LOG_SUFFIX}", base)
        except FileNotFoundError:  # deleted by retention between the listing and the open
            return self._open_segment(pos)
        self._segment = seg
        self._file_position = self._index_position(base, pos)
        return seg

    def _index_position(self, base: int, pos: int) -> int:
        """A file position at or before the batch holding ``pos`` (0 without a usable index)."""
        if pos <= base:
            return 0  # the segment's first batch: no need to read its (preallocated) index
        try:
            entries = OffsetIndex.read_entries(index_file(self.directory, base))
        except OSError:
            return 0
        keys = entries.keys[: entries.valid]
        i = int(np.searchsorted(keys, pos - base, side="left")) - 1  # entries of batches ending before pos
        return int(entries.values[i]) if i >= 0 else 0

    def _next_segment(self, seg: _Segment) -> bool:
        """At the end of ``seg``: move on if the log rolled past it."""
        later = [b for b in self._bases() if b > seg.base_offset]
        if not later:
            return False  # still the active segment: the rest is not written yet
        self._drop_segment()
        if self.position < later[0]:
            # ``seg`` rolled and is read to its end, yet the next segment starts further on:
            # retention deleted the one in between while we read.
            self._out_of_range(f"offset {self.position} was deleted by retention")
        return self._open_segment(self.position) is not None

    def _drop_segment(self) -> None:
        if self._segment is not None:
            self._segment.close()
        self._segment = None
        self._file_position = 0

    def _out_of_range(self, why: str) -> None:
        if self.auto_offset_reset != "earliest":
            raise OffsetOutOfRange(f"OFFSET_OUT_OF_RANGE: {self.topic}-{self.partition}: {why}")
        bases = self._bases()
        self.position = max(self.log_start_offset, bases[0] if bases else 0)
        self._drop_segment()

    # ------------------------------------------------------------------ groups

    def commit(self, offset: int | None = None) -> None:
        """Commit ``offset`` (default: the position) for ``group_id`` through the coordinator."""
        if self.group_id is None:
            raise LocalClientError("commit needs a group_id")
        with AdminClient(self.broker.read().bootstrap) as admin:
            admin.commit_offsets(
                self.group_id, {(self.topic, self.partition): self.position if offset is None else offset}
            )

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._drop_segment()
        self._unwatch()
        with contextlib.suppress(BufferError):
            self.broker.close()

    def __enter__(self) -> LocalConsumer:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
