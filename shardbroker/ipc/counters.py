"""Shared counters: per-partition and per-worker metrics in POSIX shared memory, read by /metrics.

Opens and unlinks one segment (shm.py's ``SharedSegment``, object name ``counters``); numpy gives
the reader typed views, memoryviews give the writers cheap stores. Layout (native byte order;
every section starts on a 64-byte boundary)::

    [0, 32)      ipc/shm.py preamble: kind b"CNTR", version 5, owner pid and start time
    [32, 96)     header, 8 x int64: workers, partition rows, rows per worker, N_API, N_ERR,
                 N_BUCKETS, listeners, security dimensions (N_MECHANISMS, N_OPERATIONS,
                 N_RESOURCE_TYPES packed in bytes 2, 1, 0)
    worker blocks, one per worker w (WORKER_BLOCK bytes each):
      misc       int64[8]       connections, fetch_waiters, partition_overflow, rows_in_use,
                                rebalances (classic, consumer protocol), 2 spare
      requests   int64[N_API]                 indexed by Kafka api key
      errors     int64[N_API, N_ERR]          [api key, error code + 1]; last column: other codes
      hist       int64[N_API, N_BUCKETS + 1]  request durations, per bucket (not cumulative);
                                              the last is (10 s, +Inf)
      hist_sum   float64[N_API]               seconds
      flush      int64[N_BUCKETS + 1]         log flush (fdatasync) durations, per bucket
      flush_sum  float64                      seconds
    state        int64[rows]        0 free, odd: being (re)labelled, even > 0: live (generation)
    counters     int64[rows, 16]    PARTITION_FIELDS (12 used; dirty_ratio holds a float64), two
                                    64-byte lines per row
    labels       bytes[rows, 320]   int64 partition, int64 name length, 48 spare, topic (<= 256 B)
    security blocks, one per worker w (security_block(listeners) bytes each):
      denied     int64[N_OPERATIONS, N_RESOURCE_TYPES]   authorization denials, by Kafka's
                                                          AclOperation and ResourceType codes
      auth       int64[listeners, N_MECHANISMS, 2]       authentications by listener (the
                                                          config's order), MECHANISMS, [success,
                                                          failure]
    transaction blocks, one per worker w (TXN_BLOCK bytes each):
      txn        int64[8]       TXN_RESULTS ended (commit, abort, timeout, fenced), ongoing, 3 spare
      txn_hist   int64[N_TXN_BUCKETS + 1]     transaction durations (first record to decision)
      txn_sum    float64                      seconds
    cleaner blocks, one per worker w (CLEANER_BLOCK bytes each):
      cleaner    int64[8]       CLEANER_FIELDS: bytes read, bytes written, cleans that succeeded,
                                failed, were aborted, max compaction delay (ms), uncleanable
                                partitions, last progress (Unix ms)
    quota blocks, one per worker w (QUOTA_BLOCK bytes each):
      seq        int64          a seqlock over the block: odd while the worker writes it
      totals     int64[7]       throttle time handed out (ms), by QUOTA_TYPES, all clients
      top        QUOTA_TOP rows of 320 bytes: int64 QUOTA_TYPES index, throttle ms, user length,
                 client-id length, 32 spare, user (<= 128 B UTF-8), client id (<= 128 B): the
                 clients throttled longest (broker/client_quota_manager.py ``report``)

Invariants: one writer per cell. The supervisor creates the segment before the first fork and
never writes it again; worker w writes only its block, its rows ``[w * R, (w + 1) * R)`` (``R =
rows // workers``), its security block, its transaction block and its cleaner block, 64-byte
aligned, so no cache line is shared between two workers, and aligned 8-byte stores are atomic: a
reader sees old or new values, never torn ones. A row is labelled under a seqlock (``state`` odd,
label written, counters zeroed and the dirty ratio set to NaN, a new even generation; x86 keeps
the stores in order, a weakly ordered CPU would need fences): a reader drops a row whose state
changed while it read, so a scrape never names one partition's counts with another's. Past R
partitions a worker counts into no row and bumps ``partition_overflow``: it never fails. A
starting worker zeroes its blocks and rows, which Prometheus' ``rate`` reads as a counter reset.

Why: workers count and the supervisor reads with no metrics files and no lock on the hot path
(DESIGN.md, "Counters"). Workers accumulate in Python attributes and publish once per 1 s
housekeeping tick (a scrape sees counts at most 1 s old): writing the per-append fields straight
into shared memory cost +9.9 % of an append, the private adds 1.1 % (docs/notes/metrics.md).
Security events (an authentication, a denial) are rare next to appends and are written at once,
like the errors. The security section has one cell per listener of the config (known before the
fork), so a label set is bounded by the config, never by what clients send. Transactions
(broker/transaction_coordinator.py) end at most a few thousand times a second: written at once too.
The log cleaner's threads (broker/log_cleaner_service.py) keep their counts under their own lock;
the event loop copies them on the tick (`WorkerCounters.publish_cleaner`), so the cleaner block and
the rows' dirty ratios keep one writer, the worker's event loop, like the rest of its cells.
"""

from __future__ import annotations

import bisect
import math
import mmap
import struct
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from shardbroker.ipc.shm import SharedSegment
from shardbroker.ipc.table import (
    TableLayout,
    aligned,
    attach_segment,
    close_table,
    create_segment,
    read_header,
)

__all__ = [
    "BUCKETS",
    "CLEANER_FIELDS",
    "MECHANISMS",
    "N_API",
    "N_ERR",
    "PARTITION_FIELDS",
    "QUOTA_TOP",
    "QUOTA_TYPES",
    "REBALANCE_PROTOCOLS",
    "TXN_BUCKETS",
    "TXN_RESULTS",
    "CleanerStats",
    "CounterTable",
    "PartitionRow",
    "WorkerCounters",
    "error_index",
]

COUNTERS_KIND: Final = int.from_bytes(b"CNTR", "little")
COUNTERS_VERSION: Final = 6
OBJECT_NAME: Final = "counters"

#: Total partition rows (all workers), split evenly between workers.
DEFAULT_PARTITION_ROWS: Final = 65_536
#: Kafka api keys are < 128 (the specs' highest is 87 in Kafka 4.0).
N_API: Final = 128
#: Error code + 1 for codes -1..189 (Kafka's highest is 133); the last column collects the rest.
N_ERR: Final = 192
#: Request duration histogram upper bounds, seconds: 100 us to 10 s, 1-2.5-5 steps.
BUCKETS: Final[tuple[float, ...]] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
N_BUCKETS: Final = len(BUCKETS)

#: The ``mechanism`` of an authentication: the SASL mechanisms served, ``SSL`` for a TLS
#: handshake (and the client certificate's principal), ``UNKNOWN`` when no mechanism was agreed
#: (an unsupported one such as GSSAPI, a request before SaslHandshake).
MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "SSL", "UNKNOWN")
N_MECHANISMS: Final = len(MECHANISMS)
UNKNOWN_MECHANISM: Final = N_MECHANISMS - 1
#: Kafka's AclOperation codes are 0..15 and ResourceType codes 0..7 (security/acl.py).
N_OPERATIONS: Final = 16
N_RESOURCE_TYPES: Final = 8
_SECURITY_DIMS: Final = N_MECHANISMS << 16 | N_OPERATIONS << 8 | N_RESOURCE_TYPES
_DENIED_BYTES: Final = aligned(8 * N_OPERATIONS * N_RESOURCE_TYPES)
#: How a transaction ended (``shardbroker_transactions_total{result}``): committed, aborted by its
#: producer, aborted after ``transaction.timeout.ms``, aborted because a new producer of its
#: transactional id fenced it (InitProducerId).
TXN_RESULTS: Final = ("commit", "abort", "timeout", "fenced")
TXN_COMMIT, TXN_ABORT, TXN_TIMEOUT, TXN_FENCED = range(4)
TXN_ONGOING: Final = len(TXN_RESULTS)
#: Transaction duration upper bounds, seconds: 10 ms (a commit every few ms) to 15 min (the
#: default ``transaction.max.timeout.ms``).
TXN_BUCKETS: Final[tuple[float, ...]] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
)  # fmt: skip
N_TXN_BUCKETS: Final = len(TXN_BUCKETS)
_TXN_HIST_AT: Final = 64
_TXN_SUM_AT: Final = _TXN_HIST_AT + 8 * (N_TXN_BUCKETS + 1)
TXN_BLOCK: Final = aligned(_TXN_SUM_AT + 8)
#: The log cleaner's cells of a worker (`WorkerCounters.publish_cleaner`): cumulative bytes read
#: and written by cleans, cleans that finished, failed (an uncleanable log, a full disk) or were
#: aborted (the partition moved or closed); then gauges as of the cleaner's last look: the largest
#: max compaction delay of the worker's compacted partitions (ms, Kafka's
#: max-compaction-delay-secs) and the partitions marked uncleanable (Kafka's
#: uncleanable-partitions-count); and when a cleaner thread last made progress (ended a look at
#: the partitions or swapped a cleaned group in; Unix ms, 0: never or disabled; Kafka's
#: time-since-last-run-ms as a timestamp).
CLEANER_FIELDS: Final = (
    "bytes_read",
    "bytes_written",
    "runs",
    "errors",
    "aborted",
    "max_compaction_delay_ms",
    "uncleanable_partitions",
    "last_progress_ms",
)
CLEANER_BYTES_READ: Final = 0
CLEANER_BYTES_WRITTEN: Final = 1
CLEANER_RUNS: Final = 2
CLEANER_ERRORS: Final = 3
CLEANER_ABORTED: Final = 4
CLEANER_MAX_COMPACTION_DELAY_MS: Final = 5
CLEANER_UNCLEANABLE: Final = 6
CLEANER_LAST_PROGRESS_MS: Final = 7
CLEANER_BLOCK: Final = aligned(8 * 8)
#: Quota types of the throttle-time cells (Kafka's quota keys without their unit).
QUOTA_TYPES: Final = ("produce", "fetch", "request", "controller_mutation")
#: Clients per worker with a throttle-time series of their own: the ones throttled longest (a
#: bounded cardinality whatever the clients; the totals count every client).
QUOTA_TOP: Final = 10
QUOTA_ROW: Final = 320
QUOTA_LABEL: Final = 128
_QUOTA_ROWS_AT: Final = 64
QUOTA_BLOCK: Final = _QUOTA_ROWS_AT + QUOTA_ROW * QUOTA_TOP
#: Room for listeners in `WorkerCounters.private` (nobody reads private counters).
PRIVATE_LISTENERS: Final = 16

PARTITION_FIELDS: Final = (
    "messages_in",
    "bytes_in",
    "bytes_out",
    "log_end_offset",
    "log_start_offset",
    "log_size_bytes",
    "produce_requests",
    "fetch_requests",
    "segment_count",
    "offline",
    "last_stable_offset",
    "dirty_ratio",
)
MESSAGES_IN: Final = 0
BYTES_IN: Final = 1
BYTES_OUT: Final = 2
LOG_END_OFFSET: Final = 3
LOG_START_OFFSET: Final = 4
LOG_SIZE_BYTES: Final = 5
PRODUCE_REQUESTS: Final = 6
FETCH_REQUESTS: Final = 7
SEGMENT_COUNT: Final = 8
#: 1 while the partition's log is offline (a failed fdatasync: storage/group_commit.py).
OFFLINE: Final = 9
#: Kafka's LSO: below the first undecided transaction (the log end offset without transactions).
LAST_STABLE_OFFSET: Final = 10
#: A float64 in an int64 word: the log cleaner's dirty ratio of a compacted partition as of its last
#: look; NaN (what `WorkerCounters.open_partition` writes) for any other partition, which then has
#: no ``shardbroker_partition_dirty_ratio`` series (written by `WorkerCounters.publish_cleaner`).
DIRTY_RATIO: Final = 11
#: int64 words per row: the fields rounded up to whole 64-byte lines.
ROW_WORDS: Final = aligned(8 * len(PARTITION_FIELDS)) // 8
ROW_BYTES: Final = 8 * ROW_WORDS

MISC_FIELDS: Final = (
    "connections",
    "fetch_waiters",
    "partition_overflow",
    "rows_in_use",
    "rebalances_classic",
    "rebalances_consumer",
)
CONNECTIONS: Final = 0
FETCH_WAITERS: Final = 1
PARTITION_OVERFLOW: Final = 2
ROWS_IN_USE: Final = 3
#: Rebalances of the groups this worker coordinates, by protocol (`REBALANCE_PROTOCOLS`): a
#: classic group's completed join phase, a consumer-protocol group's new target assignment.
REBALANCE_PROTOCOLS: Final = ("classic", "consumer")
REBALANCES_AT: Final = 4

LABEL_BYTES: Final = 320
LABEL_NAME_AT: Final = 64
MAX_NAME: Final = LABEL_BYTES - LABEL_NAME_AT  # Kafka topic names are at most 249 characters

# Offsets inside one worker block.
_MISC_AT: Final = 0
_REQ_AT: Final = _MISC_AT + 8 * 8
_ERR_AT: Final = aligned(_REQ_AT + 8 * N_API)
_HIST_AT: Final = aligned(_ERR_AT + 8 * N_API * N_ERR)
_HSUM_AT: Final = aligned(_HIST_AT + 8 * N_API * (N_BUCKETS + 1))
_FLUSH_AT: Final = aligned(_HSUM_AT + 8 * N_API)
_FLUSH_SUM_AT: Final = _FLUSH_AT + 8 * (N_BUCKETS + 1)
WORKER_BLOCK: Final = aligned(_FLUSH_SUM_AT + 8)


def security_block(listeners: int) -> int:
    """Bytes of one worker's security block: denials, then authentications per listener."""
    return _DENIED_BYTES + aligned(8 * listeners * N_MECHANISMS * 2)


def error_index(code: int) -> int:
    """The errors column of a Kafka error code (the last one for codes out of range)."""
    i = code + 1
    return i if 0 <= i < N_ERR - 1 else N_ERR - 1


@dataclass(frozen=True)
class _Layout(TableLayout):
    BLOCK = WORKER_BLOCK

    listeners: int = 1

    @property
    def counters_at(self) -> int:
        return self.data_at

    @property
    def labels_at(self) -> int:
        return self.counters_at + ROW_BYTES * self.rows

    @property
    def security_at(self) -> int:
        return aligned(self.labels_at + LABEL_BYTES * self.rows)

    @property
    def transactions_at(self) -> int:
        return self.security_at + security_block(self.listeners) * self.workers

    @property
    def cleaner_at(self) -> int:
        return self.transactions_at + TXN_BLOCK * self.workers

    @property
    def quotas_at(self) -> int:
        return self.cleaner_at + CLEANER_BLOCK * self.workers

    @property
    def size(self) -> int:
        return self.quotas_at + QUOTA_BLOCK * self.workers


class CounterTable:
    """The mapped segment: the supervisor `create`\\ s it before forking (workers inherit the
    mapping) and reads it through the numpy views; tools may `attach` by name."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        mm = segment.mmap
        workers, rows, _, n_api, n_err, n_buckets, listeners, dims = read_header(segment)
        if (n_api, n_err, n_buckets, dims) != (N_API, N_ERR, N_BUCKETS, _SECURITY_DIMS) or workers < 1:
            raise ValueError(f"{segment.name}: counters layout does not match this build")
        self.layout = _Layout(workers, rows, listeners)
        lay = self.layout
        self.workers = workers
        self.rows = rows
        self.rows_per_worker = lay.rows_per_worker
        self.listeners = listeners
        at = lay.blocks_at
        self.misc: npt.NDArray[np.int64] = _view(mm, np.int64, (workers, 8), at, WORKER_BLOCK)
        self.requests: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_API), at + _REQ_AT, WORKER_BLOCK
        )
        self.errors: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_API, N_ERR), at + _ERR_AT, WORKER_BLOCK
        )
        self.hist: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_API, N_BUCKETS + 1), at + _HIST_AT, WORKER_BLOCK
        )
        self.hist_sum: npt.NDArray[np.float64] = _view(
            mm, np.float64, (workers, N_API), at + _HSUM_AT, WORKER_BLOCK
        )
        self.flush: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_BUCKETS + 1), at + _FLUSH_AT, WORKER_BLOCK
        )
        self.flush_sum: npt.NDArray[np.float64] = _view(
            mm, np.float64, (workers,), at + _FLUSH_SUM_AT, WORKER_BLOCK
        )
        self.state: npt.NDArray[np.int64] = np.ndarray(
            (rows,), dtype=np.int64, buffer=mm, offset=lay.state_at
        )
        self.counters: npt.NDArray[np.int64] = np.ndarray(
            (rows, ROW_WORDS), dtype=np.int64, buffer=mm, offset=lay.counters_at
        )
        self.labels: npt.NDArray[np.uint8] = np.ndarray(
            (rows, LABEL_BYTES), dtype=np.uint8, buffer=mm, offset=lay.labels_at
        )
        sec = security_block(listeners)
        #: [worker, AclOperation code, ResourceType code]
        self.denied: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_OPERATIONS, N_RESOURCE_TYPES), lay.security_at, sec
        )
        #: [worker, listener, mechanism, 0 success / 1 failure]
        self.authentications: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, listeners, N_MECHANISMS, 2), lay.security_at + _DENIED_BYTES, sec
        )
        txn_at = lay.transactions_at
        #: [worker, TXN_RESULTS index or TXN_ONGOING]
        self.transactions: npt.NDArray[np.int64] = _view(mm, np.int64, (workers, 8), txn_at, TXN_BLOCK)
        self.txn_hist: npt.NDArray[np.int64] = _view(
            mm, np.int64, (workers, N_TXN_BUCKETS + 1), txn_at + _TXN_HIST_AT, TXN_BLOCK
        )
        self.txn_sum: npt.NDArray[np.float64] = _view(
            mm, np.float64, (workers,), txn_at + _TXN_SUM_AT, TXN_BLOCK
        )
        #: [worker, CLEANER_FIELDS index]
        self.cleaner: npt.NDArray[np.int64] = _view(mm, np.int64, (workers, 8), lay.cleaner_at, CLEANER_BLOCK)
        #: [worker, byte of the quota block] (read through `quota_throttles`).
        self.quota_blocks: npt.NDArray[np.uint8] = _view(
            mm, np.uint8, (workers, QUOTA_BLOCK), lay.quotas_at, QUOTA_BLOCK
        )

    @classmethod
    def create(
        cls, instance: str, workers: int, rows: int = DEFAULT_PARTITION_ROWS, listeners: int = 1
    ) -> CounterTable:
        """Create ``/shardbroker-<instance>-counters`` (the caller reclaimed stale segments) with
        authentication cells for ``listeners`` listeners (the config's, in its order)."""
        if workers < 1 or rows < workers or listeners < 1:
            raise ValueError(
                f"need workers >= 1, rows >= workers and listeners >= 1, got {workers}, {rows}, {listeners}"
            )
        lay = _Layout(workers, rows, listeners)
        header = [workers, rows, lay.rows_per_worker, N_API, N_ERR, N_BUCKETS, listeners, _SECURITY_DIMS]
        return cls(create_segment(instance, OBJECT_NAME, lay.size, COUNTERS_KIND, COUNTERS_VERSION, header))

    @classmethod
    def attach(cls, instance: str) -> CounterTable:
        return cls(attach_segment(instance, OBJECT_NAME, COUNTERS_KIND, COUNTERS_VERSION))

    @property
    def name(self) -> str:
        return self.segment.name

    def worker(self, slot: int) -> WorkerCounters:
        """The writer of worker ``slot`` (in that worker, after the fork): zeroes its cells."""
        if not 0 <= slot < self.workers:
            raise IndexError(f"worker {slot} out of range 0..{self.workers - 1}")
        return WorkerCounters(self.segment.mmap, self.layout, slot)

    def rows_of(self, slot: int) -> range:
        r = self.rows_per_worker
        return range(slot * r, (slot + 1) * r)

    def label(self, row: int) -> tuple[str, int]:
        """(topic, partition) written in ``row`` (check `state` around the call: see above)."""
        return self.labels_of([row])[0]

    def labels_of(self, rows: list[int]) -> list[tuple[str, int]]:
        """`label` of many rows with one copy of their label cells (a first scrape decodes every
        row): 3.2 us a row for 10,000 rows, where `label` one row at a time took 27 us a row in
        the same run (a loaded 2-core VM; the ratio is what matters)."""
        raw = self.labels[rows]
        heads = np.ascontiguousarray(raw[:, :16]).view(np.int64)
        lengths = np.clip(heads[:, 1], 0, MAX_NAME).tolist()
        names = raw[:, LABEL_NAME_AT:].tobytes()
        return [
            (names[i * MAX_NAME : i * MAX_NAME + n].decode("utf-8", "replace"), partition)
            for i, (partition, n) in enumerate(zip(heads[:, 0].tolist(), lengths, strict=True))
        ]

    def quota_throttles(self, slot: int) -> tuple[list[int], list[tuple[str, str, str, int]]] | None:
        """Worker ``slot``'s throttle times (ms): the totals by QUOTA_TYPES and its top clients as
        (quota type, user, client id, ms); None while the worker is writing them (the next
        scrape reads them)."""
        view = self.quota_blocks[slot]
        before = int(view[:8].view(np.int64)[0])
        raw = view.tobytes()
        if before & 1 or before != int(view[:8].view(np.int64)[0]):
            return None
        head = struct.unpack_from("<8q", raw, 0)
        top = []
        for i in range(QUOTA_TOP):
            at = _QUOTA_ROWS_AT + i * QUOTA_ROW
            kind, ms, user_len, client_len = struct.unpack_from("<4q", raw, at)
            if ms <= 0 or not 0 <= kind < len(QUOTA_TYPES):
                continue
            user = raw[at + 64 : at + 64 + min(user_len, QUOTA_LABEL)].decode("utf-8", "replace")
            client_at = at + 64 + QUOTA_LABEL
            client = raw[client_at : client_at + min(client_len, QUOTA_LABEL)].decode("utf-8", "replace")
            top.append((QUOTA_TYPES[kind], user, client, ms))
        return list(head[1 : 1 + len(QUOTA_TYPES)]), top

    def close(self) -> None:
        """Unmap (and unlink, in the creating process). Views handed out keep the mapping alive."""
        close_table(
            self,
            (
                "misc",
                "requests",
                "errors",
                "hist",
                "hist_sum",
                "flush",
                "flush_sum",
                "state",
                "counters",
                "labels",
                "denied",
                "authentications",
                "transactions",
                "txn_hist",
                "txn_sum",
                "cleaner",
                "quota_blocks",
            ),
        )


def _view(mm: mmap.mmap, dtype: Any, shape: tuple[int, ...], offset: int, stride0: int) -> Any:
    """A numpy view of one array per worker block (stride ``WORKER_BLOCK`` between workers)."""
    inner = np.ndarray(shape[1:], dtype=dtype).strides
    return np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset, strides=(stride0, *inner))


class PartitionRow:
    """A partition's row in the table (-1: the overflow scratch row, never published)."""

    __slots__ = ("row",)

    def __init__(self, row: int) -> None:
        self.row = row


#: The row's int64 fields, all written by `WorkerCounters.publish_partition` (the dirty ratio is not).
_ROW: Final = struct.Struct(f"={DIRTY_RATIO}q")


class CleanerStats(Protocol):
    """What `WorkerCounters.publish_cleaner` reads: the log cleaner's counters
    (broker/log_cleaner_service.py's CleanerCounters; a protocol because ipc/ may not import the
    broker layer above it)."""

    @property
    def bytes_read(self) -> int: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def runs(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def aborted(self) -> int: ...
    @property
    def max_compaction_delay_ms(self) -> int: ...
    @property
    def dirty_ratios(self) -> Mapping[tuple[str, int], float]: ...
    @property
    def uncleanable(self) -> Collection[tuple[str, int]]: ...
    @property
    def last_progress_ms(self) -> int: ...


class WorkerCounters:
    """One worker's writer: private accumulators on the hot path, published to its shared cells
    by `publish` (the worker's 1 s housekeeping tick) -- see the module docstring for why.

    ``WorkerCounters.private()`` is a writer over private memory for code run without a
    supervisor (unit tests, benchmarks): the same code path, nobody reads it.
    """

    def __init__(self, buf: mmap.mmap | bytearray, layout: _Layout, slot: int) -> None:
        self.slot = slot
        self.layout = layout
        mv = memoryview(buf)
        block = layout.blocks_at + WORKER_BLOCK * slot
        mv[block : block + WORKER_BLOCK] = bytes(WORKER_BLOCK)
        self._misc = mv[block + _MISC_AT : block + _REQ_AT].cast("q")
        self._errors = mv[block + _ERR_AT : block + _ERR_AT + 8 * N_API * N_ERR].cast("q")
        self._requests_np = np.frombuffer(mv[block + _REQ_AT : block + _REQ_AT + 8 * N_API], dtype=np.int64)
        hist_bytes = mv[block + _HIST_AT : block + _HIST_AT + 8 * N_API * (N_BUCKETS + 1)]
        self._hist_np = np.frombuffer(hist_bytes, dtype=np.int64)
        self._hsum_np = np.frombuffer(mv[block + _HSUM_AT : block + _HSUM_AT + 8 * N_API], dtype=np.float64)
        self._flush = mv[block + _FLUSH_AT : block + _FLUSH_SUM_AT].cast("q")
        self._flush_sum = mv[block + _FLUSH_SUM_AT : block + _FLUSH_SUM_AT + 8].cast("d")
        self._flush_lock = threading.Lock()
        #: Private accumulators (list item adds are the cheapest store Python has), published.
        self.hist: list[int] = [0] * (N_API * (N_BUCKETS + 1))
        self.hist_sum: list[float] = [0.0] * N_API
        rows = range(slot * layout.rows_per_worker, (slot + 1) * layout.rows_per_worker)
        self._state = mv[layout.state_at : layout.state_at + 8 * layout.rows].cast("q")
        self._counters_at = layout.counters_at
        self._labels_at = layout.labels_at
        self._mv = mv
        for r in rows:
            self._state[r] = 0
        start, stop = layout.counters_at + ROW_BYTES * rows.start, layout.counters_at + ROW_BYTES * rows.stop
        mv[start:stop] = bytes(stop - start)
        self._free: list[int] = list(reversed(rows))  # pop() hands out the lowest row first
        self._gen = 0
        sec = security_block(layout.listeners)
        at = layout.security_at + sec * slot
        mv[at : at + sec] = bytes(sec)
        self._denied = mv[at : at + 8 * N_OPERATIONS * N_RESOURCE_TYPES].cast("q")
        auth_at = at + _DENIED_BYTES
        self._auth = mv[auth_at : auth_at + 8 * layout.listeners * N_MECHANISMS * 2].cast("q")
        #: Listeners with authentication cells (``listener`` of `authentication` is below it).
        self.listeners = layout.listeners
        at = layout.transactions_at + TXN_BLOCK * slot
        mv[at : at + TXN_BLOCK] = bytes(TXN_BLOCK)
        self._txn = mv[at : at + _TXN_HIST_AT].cast("q")
        self._txn_hist = mv[at + _TXN_HIST_AT : at + _TXN_SUM_AT].cast("q")
        self._txn_sum = mv[at + _TXN_SUM_AT : at + _TXN_SUM_AT + 8].cast("d")
        at = layout.cleaner_at + CLEANER_BLOCK * slot
        mv[at : at + CLEANER_BLOCK] = bytes(CLEANER_BLOCK)
        self._cleaner = mv[at : at + CLEANER_BLOCK].cast("q")
        at = layout.quotas_at + QUOTA_BLOCK * slot
        mv[at : at + QUOTA_BLOCK] = bytes(QUOTA_BLOCK)
        self._quota_at = at
        #: Every row's words as float64 (the dirty ratios are stored there).
        self._floats = mv[layout.counters_at : layout.labels_at].cast("d")
        #: (topic, partition) <-> row of the open partitions: the cleaner names partitions by key.
        self._row_of: dict[tuple[str, int], int] = {}
        self._key_of: dict[int, tuple[str, int]] = {}
        #: Rows whose dirty ratio is a number (the others hold NaN).
        self._dirty_rows: set[int] = set()

    @classmethod
    def private(
        cls, workers: int = 1, rows: int = 1024, slot: int = 0, listeners: int = PRIVATE_LISTENERS
    ) -> WorkerCounters:
        lay = _Layout(workers, rows, listeners)
        return cls(bytearray(lay.size), lay, slot)

    # -- requests (dispatch) ------------------------------------------------------------------

    def request(self, api_key: int, seconds: float, error_code: int) -> None:
        """One answered request: its duration (the count is the histogram's), its top-level error."""
        self.hist[api_key * (N_BUCKETS + 1) + bisect.bisect_left(BUCKETS, seconds)] += 1
        self.hist_sum[api_key] += seconds
        if error_code:
            self.error(api_key, error_code)

    def error(self, api_key: int, error_code: int) -> None:
        """A refusal (rare: written to shared memory at once). Also one partition of a
        Produce/Fetch, or a bad request, whose api key may be anything: out-of-range keys share
        the last row."""
        if not 0 <= api_key < N_API:
            api_key = N_API - 1
        self._errors[api_key * N_ERR + error_index(error_code)] += 1

    def publish(self) -> None:
        """Copy the request accumulators into the shared cells (about 0.1 ms)."""
        self._hist_np[:] = self.hist
        self._hsum_np[:] = self.hist_sum
        self._requests_np[:] = self._hist_np.reshape(N_API, N_BUCKETS + 1).sum(axis=1)

    # -- security (rare: written at once, from the event loop) ---------------------------------

    def authentication(self, listener: int, mechanism: int, success: bool) -> None:
        """One authentication outcome: ``listener`` (the config's index), ``mechanism`` (the
        index in `MECHANISMS`)."""
        self._auth[(listener * N_MECHANISMS + mechanism) * 2 + (0 if success else 1)] += 1

    def denied(self, operation: int, resource_type: int) -> None:
        """One authorization denial, by Kafka's AclOperation and ResourceType codes."""
        self._denied[operation * N_RESOURCE_TYPES + resource_type] += 1

    # -- transactions (the coordinator, from the event loop: written at once) -------------------

    def transaction_ended(self, result: int, seconds: float) -> None:
        """A transaction decided (``result``: an index in `TXN_RESULTS`) ``seconds`` after it began."""
        self._txn[result] += 1
        self._txn_hist[bisect.bisect_left(TXN_BUCKETS, seconds)] += 1
        self._txn_sum[0] += seconds

    def set_transactions_ongoing(self, n: int) -> None:
        self._txn[TXN_ONGOING] = n

    # -- log cleaner (its threads count under their lock; copied on the tick) -------------------

    def publish_cleaner(self, stats: CleanerStats) -> None:
        """Copy the log cleaner's counts into this worker's cleaner block and its dirty ratios
        into the rows of the partitions it measured (a row it no longer reports, e.g. a topic
        no longer compacted, goes back to NaN: its series ends). Called on the tick, holding the
        lock the cleaner threads update ``stats`` under, so one look's figures go out together."""
        c = self._cleaner
        c[CLEANER_BYTES_READ] = stats.bytes_read
        c[CLEANER_BYTES_WRITTEN] = stats.bytes_written
        c[CLEANER_RUNS] = stats.runs
        c[CLEANER_ERRORS] = stats.errors
        c[CLEANER_ABORTED] = stats.aborted
        c[CLEANER_MAX_COMPACTION_DELAY_MS] = stats.max_compaction_delay_ms
        c[CLEANER_UNCLEANABLE] = len(stats.uncleanable)
        c[CLEANER_LAST_PROGRESS_MS] = stats.last_progress_ms
        row_of = self._row_of
        ratios = {
            row: ratio for key, ratio in stats.dirty_ratios.items() if (row := row_of.get(key)) is not None
        }
        floats = self._floats
        for row in self._dirty_rows.difference(ratios):
            floats[row * ROW_WORDS + DIRTY_RATIO] = math.nan
        for row, ratio in ratios.items():
            floats[row * ROW_WORDS + DIRTY_RATIO] = ratio
        self._dirty_rows = set(ratios)

    # -- client quotas (copied on the tick, under the block's seqlock) ----------------------------

    def publish_quotas(self, totals: Sequence[int], top: Sequence[tuple[int, str, str, int]]) -> None:
        """The throttle times (ms) handed out: ``totals`` by QUOTA_TYPES index, and ``top``: up to
        QUOTA_TOP clients as (QUOTA_TYPES index, user, client id, ms)."""
        at = self._quota_at
        mv = self._mv
        seq = mv[at : at + 8].cast("q")
        seq[0] += 1  # odd: being written
        struct.pack_into(f"<{len(QUOTA_TYPES)}q", mv, at + 8, *totals)
        for i in range(QUOTA_TOP):
            row = at + _QUOTA_ROWS_AT + i * QUOTA_ROW
            if i >= len(top):
                struct.pack_into("<4q", mv, row, -1, 0, 0, 0)
                continue
            kind, user, client, ms = top[i]
            user_b = user.encode()[:QUOTA_LABEL]
            client_b = client.encode()[:QUOTA_LABEL]
            struct.pack_into("<4q", mv, row, kind, ms, len(user_b), len(client_b))
            mv[row + 64 : row + 64 + len(user_b)] = user_b
            mv[row + 64 + QUOTA_LABEL : row + 64 + QUOTA_LABEL + len(client_b)] = client_b
        seq[0] += 1  # even: done

    # -- log flushes (from the flush threads: written at once, under a lock) -------------------

    def flush(self, seconds: float) -> None:
        """One log flush (fdatasync) took ``seconds``. Flushes run in the worker's executor
        threads, several at once, so the two read-modify-writes are under a lock (uncontended
        about 0.1 us, against the 1-50 ms of an fdatasync)."""
        with self._flush_lock:
            self._flush[bisect.bisect_left(BUCKETS, seconds)] += 1
            self._flush_sum[0] += seconds

    # -- gauges (per connection, per parked fetch: written at once) ----------------------------

    def add_connections(self, n: int) -> None:
        self._misc[CONNECTIONS] += n

    def add_fetch_waiters(self, n: int) -> None:
        self._misc[FETCH_WAITERS] += n

    def rebalance(self, protocol: str) -> None:
        """A group coordinated here rebalanced (``protocol``: one of `REBALANCE_PROTOCOLS`)."""
        self._misc[REBALANCES_AT + REBALANCE_PROTOCOLS.index(protocol)] += 1

    def misc(self, field: int) -> int:
        return int(self._misc[field])

    # -- partition rows --------------------------------------------------------------------------

    def open_partition(self, topic: str, partition: int) -> PartitionRow:
        """A zeroed row (no dirty ratio: NaN) labelled (topic, partition); the scratch row
        (counted) when full."""
        if not self._free:
            self._misc[PARTITION_OVERFLOW] += 1
            return PartitionRow(-1)
        row = self._free.pop()
        name = topic.encode("utf-8")[:MAX_NAME]
        self._gen += 2
        state = self._state
        state[row] = self._gen - 1  # odd: being labelled
        at = self._labels_at + LABEL_BYTES * row
        label = self._mv[at : at + LABEL_BYTES]
        struct.pack_into("=qq", label, 0, partition, len(name))
        label[LABEL_NAME_AT : LABEL_NAME_AT + len(name)] = name
        c_at = self._counters_at + ROW_BYTES * row
        self._mv[c_at : c_at + ROW_BYTES] = bytes(ROW_BYTES)
        self._floats[row * ROW_WORDS + DIRTY_RATIO] = math.nan
        state[row] = self._gen
        self._misc[ROWS_IN_USE] += 1
        self._row_of[topic, partition] = row
        self._key_of[row] = (topic, partition)
        return PartitionRow(row)

    def publish_partition(
        self,
        prow: PartitionRow,
        messages_in: int,
        bytes_in: int,
        bytes_out: int,
        log_end_offset: int,
        log_start_offset: int,
        log_size_bytes: int,
        produce_requests: int,
        fetch_requests: int,
        segment_count: int = 1,
        offline: bool = False,
        last_stable_offset: int | None = None,
    ) -> None:
        """Write a partition's row (in `PARTITION_FIELDS` order, up to the dirty ratio) in one store
        per field (``last_stable_offset`` None: the log end offset, a partition without
        transactions)."""
        if prow.row >= 0:
            _ROW.pack_into(
                self._mv,
                self._counters_at + ROW_BYTES * prow.row,
                messages_in,
                bytes_in,
                bytes_out,
                log_end_offset,
                log_start_offset,
                log_size_bytes,
                produce_requests,
                fetch_requests,
                segment_count,
                offline,
                log_end_offset if last_stable_offset is None else last_stable_offset,
            )

    def close_partition(self, prow: PartitionRow) -> None:
        """The partition left this worker: the row stops being exported and may be reused."""
        if prow.row < 0:
            self._misc[PARTITION_OVERFLOW] -= 1
            prow.row = -2  # closed twice: no effect
            return
        if prow.row == -2:
            return
        self._state[prow.row] = 0
        self._free.append(prow.row)
        key = self._key_of.pop(prow.row)
        if self._row_of.get(key) == prow.row:
            del self._row_of[key]
        self._dirty_rows.discard(prow.row)
        prow.row = -2
        self._misc[ROWS_IN_USE] -= 1
