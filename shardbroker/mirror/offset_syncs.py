"""MirrorMaker 2's offset syncs: which target offset holds the copy of which source offset.

Record format (MirrorMaker 2's ``OffsetSync``, Kafka's ``protocol.types.Struct`` encoding, so a
real MirrorMaker 2 reads ours and we read its): key ``{topic: STRING, partition: INT32}``, value
``{upstreamOffset: INT64, offset: INT64}``; a STRING is an int16 byte length then UTF-8, integers
are big-endian. One partition, compacted (the key is the source partition, so compaction keeps a
partition's newest sync), named ``mm2-offset-syncs.<target alias>.internal``, on the cluster
``offset-syncs.topic.location`` names.

:class:`OffsetSyncWriter` decides when to write one (MirrorMaker 2's ``OffsetSyncWriter`` rules,
fed once per mirrored batch instead of once per record): the first batch of a partition after
start; the target offset more than ``offset.lag.max`` past what the last sync translates to; the
source and target offsets no longer advancing together (source records skipped: compaction,
transaction markers, aborted batches, a restart elsewhere); either side going backwards. Other
batches leave a "delayed" sync that is written once per ``emit.checkpoints.interval.seconds``,
so a group at the end of an idle partition translates exactly.

:class:`OffsetSyncStore` reads the topic and translates as Kafka 3.5+'s ``OffsetSyncStore``: a
source offset U maps to the target offset of the newest sync with upstream <= U, plus 1 when U is
past that sync's upstream. Records between the sync and U may or may not have been copied (some
are skipped), so nothing better is safe; the answer is never after U's copy (a moved group never
skips a record) and re-reads at most what was mirrored since the sync. Per partition it keeps a
bounded history, spaced more widely further back (:class:`PartitionSyncs`), so groups far behind still
translate, less precisely. It translates nothing until it has read the topic to its end once.

Deliberate differences (README): syncs read at start are kept (MirrorMaker 3.5/3.6 kept only the
newest; 3.7 keeps them when its checkpoints loaded, which our CheckpointTask always does before
emitting), and a sync whose target offset goes backwards also clears a partition's history (the
target was truncated or recreated: older syncs would point past the new copies).
"""

from __future__ import annotations

import bisect
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.connection import AdminClientError, KafkaApiError
from shardbroker.client.consumer import TcpConsumer
from shardbroker.client.producer import RecordMetadata, TcpProducer
from shardbroker.mirror.mirror_config import ClusterSettings, MirrorConfig
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "Backoff",
    "FailureLog",
    "InternalTopic",
    "MalformedRecord",
    "OffsetSync",
    "OffsetSyncStore",
    "OffsetSyncWriter",
    "PartitionSyncs",
    "StructReader",
    "encode_string",
    "require",
]

log = logging.getLogger(__name__)

_I16: Final = struct.Struct(">h")
_I32: Final = struct.Struct(">i")
_I64: Final = struct.Struct(">q")
#: Kafka's Type.STRING: at most 32767 bytes of UTF-8.
_MAX_STRING: Final = 0x7FFF
#: A partition's syncs kept for translation: one per quarter of each power-of-two distance from
#: the newest (4 x 64 classes); 256 pairs of ints, ~20 KiB per partition in Python.
MAX_SYNCS_PER_PARTITION: Final = 256
#: Seconds a client call to the offset-syncs cluster may take; a cluster that does not answer
#: costs the mirror's loop this long once per retry backoff, not per batch.
CLIENT_TIMEOUT_S: Final = 5.0
_BACKOFF_START_S: Final = 0.5
_BACKOFF_MAX_S: Final = 30.0


class MalformedRecord(ValueError):
    """An offset-sync or checkpoint record that does not decode (the message says why)."""


def encode_string(text: str) -> bytes:
    """Kafka's STRING: int16 length, UTF-8 bytes."""
    raw = text.encode()
    if len(raw) > _MAX_STRING:
        raise ValueError(f"string of {len(raw)} bytes is longer than Kafka's STRING ({_MAX_STRING})")
    return _I16.pack(len(raw)) + raw


class StructReader:
    """Reads Kafka ``protocol.types`` fields from bytes, raising :class:`MalformedRecord` naming
    the ``what`` and field when the bytes end early or a string is null or not UTF-8."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def _take(self, n: int, field: str) -> bytes:
        if self._pos + n > len(self._data):
            raise MalformedRecord(f"{self._what}: {len(self._data)} bytes end inside field '{field}'")
        out = self._data[self._pos : self._pos + n]
        self._pos += n
        return out

    def int16(self, field: str) -> int:
        value: int = _I16.unpack(self._take(2, field))[0]
        return value

    def int32(self, field: str) -> int:
        value: int = _I32.unpack(self._take(4, field))[0]
        return value

    def int64(self, field: str) -> int:
        value: int = _I64.unpack(self._take(8, field))[0]
        return value

    def string(self, field: str) -> str:
        length = self.int16(field)
        if length < 0:
            raise MalformedRecord(f"{self._what}: field '{field}' is null (length {length})")
        try:
            return self._take(length, field).decode()
        except UnicodeDecodeError:
            raise MalformedRecord(f"{self._what}: field '{field}' is not UTF-8") from None


def require(data: bytes | None, what: str, part: str) -> bytes:
    """The record's key or value, or MalformedRecord when it is null (a tombstone)."""
    if data is None:
        raise MalformedRecord(f"{what}: the record has no {part}")
    return data


@dataclass(frozen=True, slots=True)
class OffsetSync:
    """The record at ``upstream_offset`` of ``topic``-``partition`` (source) is at
    ``downstream_offset`` on the target."""

    topic: str
    partition: int
    upstream_offset: int
    downstream_offset: int

    def key(self) -> bytes:
        return encode_string(self.topic) + _I32.pack(self.partition)

    def value(self) -> bytes:
        return _I64.pack(self.upstream_offset) + _I64.pack(self.downstream_offset)

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> OffsetSync:
        """MalformedRecord when the bytes are not an offset sync; bytes after the struct are
        ignored, as Kafka's Schema.read does."""
        k = StructReader(require(key, "offset sync", "key"), "offset sync key")
        topic, partition = k.string("topic"), k.int32("partition")
        v = StructReader(require(value, "offset sync", "value"), "offset sync value")
        upstream, downstream = v.int64("upstreamOffset"), v.int64("offset")
        if partition < 0 or upstream < 0 or downstream < 0:
            raise MalformedRecord(
                f"offset sync {topic}-{partition} {upstream}->{downstream}: negative partition or offset"
            )
        return cls(topic, partition, upstream, downstream)


class FailureLog:
    """Logs a failure once per kind until that kind succeeds again (a cluster down for an hour
    is one warning, not one per retry), and counts every one in ``metrics``."""

    def __init__(self, metrics: MirrorMetrics | None) -> None:
        self._metrics = metrics
        self._failing: set[str] = set()

    def failed(self, kind: str, exc: BaseException) -> None:
        if self._metrics is not None:
            self._metrics.error(kind)
        if kind not in self._failing:
            self._failing.add(kind)
            log.warning("%s: %s (retrying with backoff; logged once until it recovers)", kind, exc)

    def succeeded(self, kind: str) -> None:
        if kind in self._failing:
            self._failing.discard(kind)
            log.info("%s: recovered", kind)


class Backoff:
    """Exponential retry delay: 0.5 s doubling to 30 s, back to 0.5 s after a success."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.next_try = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.next_try

    def failed(self, now: float) -> None:
        self.delay = min(_BACKOFF_MAX_S, max(_BACKOFF_START_S, self.delay * 2))
        self.next_try = now + self.delay

    def succeeded(self) -> None:
        self.delay = self.next_try = 0.0


class InternalTopic:
    """One of the mirror's one-partition compacted topics on one cluster: created as MirrorMaker 2
    creates them, and read from the start (TcpConsumer with assign)."""

    def __init__(self, cluster: ClusterSettings, name: str, replication_factor: int) -> None:
        self.cluster = cluster
        self.name = name
        self.replication_factor = replication_factor
        self._consumer: TcpConsumer | None = None

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def admin(self) -> AdminClient:
        return self.cluster.admin("shardbroker-mirror", CLIENT_TIMEOUT_S)

    def create(self) -> None:
        """Create it (1 partition, cleanup.policy=compact) unless it exists."""
        with self.admin() as admin:
            topic = NewTopic(self.name, 1, self.replication_factor, {"cleanup.policy": "compact"})
            error = admin.create_topics([topic])[self.name]
        if error is not None and error.error_code != ErrorCode.TOPIC_ALREADY_EXISTS:
            raise error

    def producer(self) -> TcpProducer:
        return TcpProducer(
            self.bootstrap,
            timeout=CLIENT_TIMEOUT_S,
            client_id="shardbroker-mirror",
            security=self.cluster.security,
        )

    def read(
        self, *, to_end: bool, timeout: float = CLIENT_TIMEOUT_S
    ) -> Iterator[tuple[bytes | None, bytes | None]]:
        """(key, value) of the records not read yet: up to the end offset of now when ``to_end``
        (raises TimeoutError if that takes longer than ``timeout``), else what one poll returns."""
        if self._consumer is None:
            consumer = TcpConsumer(
                self.bootstrap,
                auto_offset_reset="earliest",
                timeout=CLIENT_TIMEOUT_S,
                client_id="shardbroker-mirror",
                security=self.cluster.security,
                fetch_max_wait_ms=100,
            )
            try:
                consumer.assign({(self.name, 0): EARLIEST})
            except BaseException:
                consumer.close()
                raise
            self._consumer = consumer
        consumer = self._consumer
        tp = (self.name, 0)
        if not to_end:
            for rec in consumer.poll(0.0):
                yield rec.key, rec.value
            return
        end = consumer.cluster.list_offsets({tp: LATEST})[tp]
        deadline = time.monotonic() + timeout
        while consumer.positions.get(tp, 0) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"reading {self.name} to offset {end} took longer than {timeout:.0f} s "
                    f"(at {consumer.positions.get(tp, 0)})"
                )
            for rec in consumer.poll(0.2):
                yield rec.key, rec.value

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


# -- writing -----------------------------------------------------------------------------------


class _PartitionState:
    """The emit rule's memory of one partition (MirrorMaker 2's PartitionState, per batch)."""

    __slots__ = ("last_sync_downstream", "previous_downstream", "previous_upstream")

    def __init__(self) -> None:
        self.previous_upstream = -1
        self.previous_downstream = -1
        self.last_sync_downstream = -1

    def update(self, upstream: int, downstream: int, max_lag: int) -> bool:
        """Whether a sync must be written now for a batch starting at ``upstream`` ->
        ``downstream`` (the module docstring lists the reasons)."""
        first = self.last_sync_downstream < 0
        # translation answers last_sync_downstream + 1 past the sync, hence the + 1
        stale = downstream - (self.last_sync_downstream + 1) >= max_lag
        skipped = upstream - self.previous_upstream != downstream - self.previous_downstream
        backwards = upstream < self.previous_upstream or downstream < self.previous_downstream
        self.previous_upstream, self.previous_downstream = upstream, downstream
        if first or stale or skipped or backwards:
            self.last_sync_downstream = downstream
            return True
        return False


class OffsetSyncWriter:
    """Decides and writes offset syncs; ``record`` after each acknowledged batch, ``flush`` to
    write what is due (synchronously; a failure is logged once, counted in
    ``shardbroker_mirror_errors_total{kind="offset_syncs"}``, and the syncs wait for the next
    flush after a backoff), ``close`` to write what is left. Thread-safe."""

    def __init__(self, config: MirrorConfig, metrics: MirrorMetrics | None = None) -> None:
        cluster = config.source if config.offset_syncs_on_source else config.target
        self.topic = InternalTopic(cluster, config.offset_syncs_topic, config.replication_factor)
        self.max_lag = config.offset_lag_max
        self.promote_interval_s = float(config.emit_checkpoints_interval_s)
        self._failures = FailureLog(metrics)
        self._backoff = Backoff()
        self._lock = threading.Lock()
        self._states: dict[tuple[str, int], _PartitionState] = {}
        #: syncs to write at the next flush, and those written only once per promote interval
        self._pending: dict[tuple[str, int], OffsetSync] = {}
        self._delayed: dict[tuple[str, int], OffsetSync] = {}
        self._last_promotion = time.monotonic()
        self._producer: TcpProducer | None = None

    def record(self, source_topic: str, partition: int, upstream_offset: int, downstream_offset: int) -> None:
        """A batch whose last offset is ``upstream_offset`` on the source ends at
        ``downstream_offset`` on the target."""
        tp = (source_topic, partition)
        sync = OffsetSync(source_topic, partition, upstream_offset, downstream_offset)
        with self._lock:
            state = self._states.get(tp)
            if state is None:
                state = self._states[tp] = _PartitionState()
            if state.update(upstream_offset, downstream_offset, self.max_lag):
                self._delayed.pop(tp, None)
                self._pending[tp] = sync
            else:
                self._delayed[tp] = sync

    def forget(self, source_topic: str, partition: int) -> None:
        """The partition is no longer mirrored (topic deleted): its next batch starts afresh."""
        with self._lock:
            tp = (source_topic, partition)
            for table in (self._states, self._pending, self._delayed):
                table.pop(tp, None)

    def pending(self) -> list[OffsetSync]:
        """The syncs the next flush writes (for tests and the status of a stuck writer)."""
        with self._lock:
            return list(self._pending.values())

    def flush(self, *, promote: bool = False) -> None:
        """Write the due syncs; the delayed ones too when ``promote`` or when the promote
        interval has passed."""
        now = time.monotonic()
        with self._lock:
            if promote or now - self._last_promotion >= self.promote_interval_s:
                self._pending.update(self._delayed)
                self._delayed.clear()
                self._last_promotion = now
            if not self._pending or not self._backoff.ready(now):
                return
            batch, self._pending = self._pending, {}
        failed = self._send(list(batch.values()))
        with self._lock:
            for sync in failed:  # retried unless a newer sync of the partition came meanwhile
                self._pending.setdefault((sync.topic, sync.partition), sync)

    def _send(self, syncs: list[OffsetSync]) -> list[OffsetSync]:
        """Produce ``syncs`` to partition 0; the ones that failed."""
        failed: list[OffsetSync] = []
        errors: list[KafkaApiError] = []

        def delivered(sync: OffsetSync) -> Callable[[RecordMetadata], None]:
            def callback(md: RecordMetadata) -> None:
                if md.error is not None:
                    failed.append(sync)
                    errors.append(md.error)

            return callback

        try:
            if self._producer is None:
                self.topic.create()
                self._producer = self.topic.producer()
            for sync in syncs:
                self._producer.send(
                    self.topic.name, sync.value(), sync.key(), partition=0, on_delivery=delivered(sync)
                )
            self._producer.flush()
        except AdminClientError as exc:
            self._fail(exc)
            return syncs
        if errors:
            self._fail(errors[0])
            return failed
        self._backoff.succeeded()
        self._failures.succeeded("offset_syncs")
        return []

    def _fail(self, exc: Exception) -> None:
        self._failures.failed("offset_syncs", exc)
        self._backoff.failed(time.monotonic())
        if self._producer is not None:
            self._producer.cluster.close()
            self._producer = None

    def close(self) -> None:
        """Write every sync still held (delayed ones included), then close the connections."""
        self.flush(promote=True)
        if self._producer is not None:
            self._producer.cluster.close()
            self._producer = None


# -- reading and translating -------------------------------------------------------------------


def _distance_class(distance: int) -> tuple[int, int]:
    """(bit length, the two bits after the leading one): 4 classes per power of two."""
    bits = distance.bit_length()
    return (bits, distance) if bits <= 3 else (bits, (distance >> (bits - 3)) & 0b11)


class PartitionSyncs:
    """One source partition's syncs, oldest first, strictly increasing in upstream offset.

    At most :data:`MAX_SYNCS_PER_PARTITION` + 1 are kept: the newest, and of the older ones the
    oldest in each distance class from the newest (a quarter of a power of two: distances 8-9,
    10-11, 12-13, 14-15, 16-19...), so the sync used for an offset d records behind the newest
    is within 0.6 d of it (plus the sync interval; measured worst 0.55 d), and the oldest sync seen
    stays (a group far behind still translates). A sync that goes backwards on either side
    clears the history (the topic was recreated or truncated; older syncs no longer hold)."""

    __slots__ = ("_downstream", "_upstream")

    def __init__(self) -> None:
        self._upstream: list[int] = []
        self._downstream: list[int] = []

    def __len__(self) -> int:
        return len(self._upstream)

    def add(self, upstream: int, downstream: int) -> None:
        if self._upstream and (upstream < self._upstream[-1] or downstream < self._downstream[-1]):
            self._upstream.clear()
            self._downstream.clear()
        elif self._upstream and upstream == self._upstream[-1]:
            self._upstream.pop()
            self._downstream.pop()
        self._upstream.append(upstream)
        self._downstream.append(downstream)
        self._thin()

    def _thin(self) -> None:
        head = self._upstream[-1]
        keep_up, keep_down = [head], [self._downstream[-1]]
        bucket_of_last: tuple[int, int] = (-1, 0)
        for i in range(len(self._upstream) - 2, -1, -1):  # newest to oldest
            bucket = _distance_class(head - self._upstream[i])
            if bucket == bucket_of_last:  # an older sync at the same distance class replaces it
                keep_up[-1], keep_down[-1] = self._upstream[i], self._downstream[i]
            else:
                keep_up.append(self._upstream[i])
                keep_down.append(self._downstream[i])
                bucket_of_last = bucket
        keep_up.reverse()
        keep_down.reverse()
        self._upstream, self._downstream = keep_up, keep_down

    def syncs(self) -> list[tuple[int, int]]:
        return list(zip(self._upstream, self._downstream, strict=True))

    def translate(self, upstream: int) -> int | None:
        """The target offset for a group at source offset ``upstream``; None when every sync is
        after it (too old to translate safely) or there is none."""
        i = bisect.bisect_right(self._upstream, upstream) - 1
        if i < 0:
            return None
        return self._downstream[i] + (1 if upstream > self._upstream[i] else 0)


class OffsetSyncStore:
    """The offset-syncs topic, read into :class:`PartitionSyncs` per source partition.

    ``start()`` reads the topic to its end (raises on failure: the caller retries); until then
    :meth:`translate` answers None. ``update()`` reads what came since. Malformed records are
    skipped with a warning naming the first one and counted as errors of kind
    ``malformed_offset_sync``."""

    def __init__(self, config: MirrorConfig, metrics: MirrorMetrics | None = None) -> None:
        cluster = config.source if config.offset_syncs_on_source else config.target
        self.topic = InternalTopic(cluster, config.offset_syncs_topic, config.replication_factor)
        self._metrics = metrics
        self._partitions: dict[tuple[str, int], PartitionSyncs] = {}
        self._read_to_end = False
        self.malformed = 0

    @property
    def ready(self) -> bool:
        return self._read_to_end

    def start(self) -> None:
        self.topic.create()
        for key, value in self.topic.read(to_end=True):
            self.handle_record(key, value)
        self._read_to_end = True

    def update(self) -> None:
        for key, value in self.topic.read(to_end=True):
            self.handle_record(key, value)

    def handle_record(self, key: bytes | None, value: bytes | None) -> None:
        try:
            sync = OffsetSync.decode(key, value)
        except MalformedRecord as exc:
            self.malformed += 1
            if self._metrics is not None:
                self._metrics.error("malformed_offset_sync")
            if self.malformed == 1:
                log.warning(
                    "%s: skipping a malformed record (%s); later ones are only counted", self.topic.name, exc
                )
            return
        tp = (sync.topic, sync.partition)
        syncs = self._partitions.get(tp)
        if syncs is None:
            syncs = self._partitions[tp] = PartitionSyncs()
        syncs.add(sync.upstream_offset, sync.downstream_offset)

    def mark_read_to_end(self) -> None:
        """For a store fed by :meth:`handle_record` directly (tests)."""
        self._read_to_end = True

    def translate(self, source_topic: str, partition: int, upstream_offset: int) -> int | None:
        if not self._read_to_end:
            return None
        syncs = self._partitions.get((source_topic, partition))
        return None if syncs is None else syncs.translate(upstream_offset)

    def close(self) -> None:
        self.topic.close()
