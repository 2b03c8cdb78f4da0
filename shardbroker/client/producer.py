"""A small blocking Kafka producer over TCP, for ``shardbroker produce`` and tests. Opens sockets.

"Tcp" in the name because it speaks the Kafka protocol to any broker (shardbroker or Kafka); the
same-host shared-memory producer is a different thing. It is Kafka's producer cut to what a
console tool needs, with Kafka's names and defaults:

- Records are gathered per partition into record batches (magic v2, built by
  :class:`~shardbroker.protocol.record_batch_builder.RecordBatchBuilder`, compressed with ``compression``);
  a batch is sealed when the next record would take it past ``batch_size`` (Kafka's
  ``batch.size``, 16384). Batches are sent when :meth:`TcpProducer.flush` is called or when the
  pending bytes reach ``max_request_size`` (Kafka's ``max.request.size``, 1 MiB): one Produce
  request per partition leader, at most ``max_request_size`` each. There is no linger timer:
  the caller decides when to flush (the console producer flushes whenever its input has nothing
  more ready, so an interactive line goes out at once and a piped file goes out in 1 MiB requests).
- Partitioning is Kafka's default: an explicit partition wins; a keyed record goes to
  ``murmur2(key) % partitions`` (Kafka's ``Utils.murmur2``, so the same key lands on the same
  partition as with the Java client or librdkafka's ``murmur2_random``); a key-less record goes to
  a "sticky" partition that changes each time a batch for its topic is sealed or sent (KIP-480).
- Metadata is asked for with ``allow_auto_topic_creation``, as Kafka producers do, and retried
  while a topic's leaders are not yet known (LEADER_NOT_AVAILABLE), until ``timeout``.
- Each record's outcome goes to its ``on_delivery`` callback as a :class:`RecordMetadata`: its
  offset, or a :class:`KafkaApiError` named by Kafka's error code (per-record messages from
  Produce v8+ ``record_errors`` included). Retriable errors (NOT_LEADER_OR_FOLLOWER, a dropped
  connection...) are retried with fresh metadata until ``timeout``: at-least-once, like Kafka's
  producer without idempotence, so a retry after a lost answer may write a batch twice.
- ``acks``: 0 (no answer: offsets unknown, -1), 1 or -1 (all; on one host the same as 1).

Not thread-safe; one request in flight per connection (acks=0 requests are written back to back).
About 14 us of client CPU per record; 256 KiB batches were no faster than Kafka's 16 KiB
``batch.size``, which stays the default (docs/notes/tcp-clients.md).
"""

from __future__ import annotations

import functools
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicInfo
from shardbroker.client.client_security import ClientSecurity
from shardbroker.client.connection import DEFAULT_TIMEOUT, BrokerUnreachable, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_MAX_REQUEST_SIZE",
    "DeliveryCallback",
    "RecordMetadata",
    "TcpProducer",
    "default_partition",
    "murmur2",
]

#: Kafka's producer defaults (ProducerConfig): batch.size, max.request.size.
DEFAULT_BATCH_SIZE = 16384
DEFAULT_MAX_REQUEST_SIZE = 1024 * 1024
#: Bytes a record adds to a batch beyond its key, value and headers (length, attributes, deltas,
#: key/value lengths, header count: at most 5 + 1 + 10 + 5 + 5 + 5 + 5): an upper bound.
_RECORD_OVERHEAD = 36
_MASK32 = 0xFFFFFFFF
#: The retry reason of a batch that waits because an earlier batch of its partition failed.
_HELD_BACK = KafkaApiError(ErrorCode.NETWORK_EXCEPTION, "an earlier batch of the partition is being retried")


@dataclass(frozen=True)
class RecordMetadata:
    """What became of one record: ``offset`` -1 when unknown (acks=0, or ``error`` is set)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    error: KafkaApiError | None = None


DeliveryCallback = Callable[[RecordMetadata], None]


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2`` (32-bit MurmurHash2, seed 0x9747b28c), as a signed int32."""
    length = len(data)
    mul = 0x5BD1E995
    h = (0x9747B28C ^ length) & _MASK32
    end = length - length % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * mul) & _MASK32
        k ^= k >> 24
        k = (k * mul) & _MASK32
        h = ((h * mul) & _MASK32) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[end + 2] << 16
    if tail >= 2:
        h ^= data[end + 1] << 8
    if tail >= 1:
        h ^= data[end]
        h = (h * mul) & _MASK32
    h ^= h >> 13
    h = (h * mul) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


@functools.lru_cache(maxsize=4096)  # keys repeat; murmur2 in Python costs ~2 us
def default_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record: ``toPositive(murmur2(key)) % partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class _Record(NamedTuple):
    value: bytes | None
    key: bytes | None
    timestamp: int
    headers: Sequence[tuple[str, bytes | None]]
    callback: DeliveryCallback | None


@dataclass
class _Batch:
    topic: str
    partition: int
    compression: CompressionType
    records: list[_Record] = field(default_factory=list)
    #: estimated uncompressed size of the records so far
    size: int = 0
    data: bytes = b""

    def seal(self) -> None:
        if not self.data:
            builder = RecordBatchBuilder(compression=self.compression)
            for r in self.records:
                builder.append(r.value, r.key, r.timestamp, r.headers)
            self.data = builder.build()

    def split(self) -> list[_Batch]:
        """One batch per record (what Kafka's producer does with a batch refused as too large)."""
        out = [_Batch(self.topic, self.partition, self.compression, [r]) for r in self.records]
        for b in out:
            b.seal()
        return out

    def complete(self, base_offset: int, append_time: int) -> None:
        for i, r in enumerate(self.records):
            if r.callback is not None:
                offset = base_offset + i if base_offset >= 0 else -1
                ts = append_time if append_time >= 0 else r.timestamp
                r.callback(RecordMetadata(self.topic, self.partition, offset, ts))

    def fail(self, error: KafkaApiError, per_record: dict[int, str] | None = None) -> None:
        for i, r in enumerate(self.records):
            callback, timestamp = r.callback, r.timestamp
            if callback is None:
                continue
            err = error
            if per_record and i in per_record:
                err = KafkaApiError(error.error_code, f"{self.topic}-{self.partition}: {per_record[i]}")
            callback(RecordMetadata(self.topic, self.partition, -1, timestamp, err))


class TcpProducer:
    """Blocking producer: :meth:`send` records, :meth:`flush` to deliver them (callbacks run
    inside ``send`` or ``flush``). ``timeout`` (seconds) bounds each connect and answer, and the
    time spent retrying a batch or waiting for a topic's metadata;
    ``security`` (client/client_security.py) makes every connection use TLS and/or SASL."""

    def __init__(
        self,
        bootstrap: str,
        *,
        acks: int = -1,
        compression: CompressionType = CompressionType.NONE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_request_size: int = DEFAULT_MAX_REQUEST_SIZE,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str = "shardbroker-producer",
        security: ClientSecurity | None = None,
    ) -> None:
        if acks not in (-1, 0, 1):
            raise ValueError(f"acks must be -1 (all), 0 or 1, not {acks}")
        self.cluster = AdminClient(bootstrap, timeout=timeout, client_id=client_id, security=security)
        self.acks = acks
        self.compression = compression
        self.batch_size = batch_size
        self.max_request_size = max_request_size
        self.timeout = timeout
        self._topics: dict[str, TopicInfo] = {}
        self._open: dict[tuple[str, int], _Batch] = {}
        self._sealed: list[_Batch] = []
        self._pending_bytes = 0
        self._sticky: dict[str, int] = {}

    def __enter__(self) -> TcpProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Deliver what is pending, then close the connections."""
        try:
            self.flush()
        finally:
            self.cluster.close()

    # -- metadata ------------------------------------------------------------------------------

    def partitions_for(self, topic: str) -> TopicInfo:
        """The topic's partitions and leaders (cached; auto-created where the broker allows).
        Raises KafkaApiError (UNKNOWN_TOPIC_OR_PARTITION, INVALID_TOPIC_EXCEPTION...)."""
        info = self._topics.get(topic)
        if info is not None:
            return info
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            md = self.cluster.metadata([topic], allow_auto_topic_creation=True)
            found = md.topics.get(topic)
            code = found.error_code if found is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            if (
                found is not None
                and code == ErrorCode.NONE
                and all(v >= 0 for v in found.partitions.values())
            ):
                self._topics[topic] = found
                return found
            if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise KafkaApiError(code, f"topic '{topic}' does not exist (and was not auto-created)")
            if code not in (ErrorCode.NONE, ErrorCode.LEADER_NOT_AVAILABLE) or time.monotonic() > deadline:
                raise KafkaApiError(
                    ErrorCode.LEADER_NOT_AVAILABLE if code == ErrorCode.NONE else code,
                    f"topic '{topic}'"
                    + (" has partitions without a leader" if code == ErrorCode.NONE else ""),
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def choose_partition(self, topic: str, key: bytes | None, partition: int | None) -> int:
        """Where a record goes (see the module docstring); KafkaApiError for a partition the
        topic does not have."""
        info = self.partitions_for(topic)
        count = len(info.partitions)
        if partition is not None:
            if partition not in info.partitions:
                raise KafkaApiError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic '{topic}' has no partition {partition} (partitions 0-{count - 1})",
                )
            return partition
        if key is not None:
            return default_partition(key, count)
        sticky = self._sticky.get(topic)
        if sticky is None or sticky >= count:
            sticky = self._sticky[topic] = random.randrange(count)
        return sticky

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        *,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
        timestamp: int | None = None,
        on_delivery: DeliveryCallback | None = None,
    ) -> None:
        """Add one record (timestamp in ms, now when None). Raises KafkaApiError when the topic or
        the partition does not exist; a record larger than ``max_request_size`` is reported to
        ``on_delivery`` as MESSAGE_TOO_LARGE without being sent."""
        p = self.choose_partition(topic, key, partition)
        size = _RECORD_OVERHEAD + (len(key) if key else 0) + (len(value) if value else 0)
        if headers:
            size += sum(len(k.encode()) + (len(v) if v else 0) + 10 for k, v in headers)
        if size + BATCH_HEADER_SIZE > self.max_request_size:
            if on_delivery is not None:
                error = KafkaApiError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"the record is about {size} bytes, more than max.request.size {self.max_request_size}",
                )
                on_delivery(RecordMetadata(topic, p, -1, timestamp if timestamp is not None else -1, error))
            return
        batch = self._open.get((topic, p))
        if batch is not None and batch.records and batch.size + size > self.batch_size:
            self._seal(batch)
            batch = None
            if partition is None and key is None:  # the sticky partition moves on with a new batch
                self._sticky.pop(topic, None)
                p = self.choose_partition(topic, key, partition)
                batch = self._open.get((topic, p))
        if batch is None:
            batch = self._open[(topic, p)] = _Batch(topic, p, self.compression)
        if timestamp is None:
            timestamp = time.time_ns() // 1_000_000
        batch.records.append(_Record(value, key, timestamp, tuple(headers), on_delivery))
        batch.size += size
        self._pending_bytes += size
        if self._pending_bytes >= self.max_request_size:
            self.flush()

    def _seal(self, batch: _Batch) -> None:
        del self._open[(batch.topic, batch.partition)]
        batch.seal()
        self._sealed.append(batch)

    def flush(self) -> None:
        """Send every pending record and wait for the answers (callbacks run here)."""
        for batch in list(self._open.values()):
            self._seal(batch)
        batches, self._sealed, self._pending_bytes = self._sealed, [], 0
        self._sticky.clear()
        deadline = time.monotonic() + self.timeout
        while batches:
            retry = self._send_round(batches)
            if retry and time.monotonic() > deadline:
                for batch, error in retry:
                    batch.fail(error)
                return
            if retry:
                time.sleep(0.1)
                self._topics.clear()
            batches = [b for b, _ in retry]

    def _send_round(self, batches: list[_Batch]) -> list[tuple[_Batch, KafkaApiError]]:
        """One Produce per leader (more when over ``max_request_size``); the batches to retry."""
        by_leader: dict[int, list[_Batch]] = defaultdict(list)
        retry: list[tuple[_Batch, KafkaApiError]] = []
        for batch in batches:
            try:
                leader = self.partitions_for(batch.topic).partitions.get(batch.partition, -1)
            except KafkaApiError as exc:
                if exc.retriable:
                    retry.append((batch, exc))
                else:
                    batch.fail(exc)
                continue
            if leader < 0:
                retry.append(
                    (batch, KafkaApiError(ErrorCode.LEADER_NOT_AVAILABLE, f"{batch.topic}-{batch.partition}"))
                )
            else:
                by_leader[leader].append(batch)
        for leader, group in sorted(by_leader.items()):
            held: set[tuple[str, int]] = set()  # partitions with a batch to retry: keep their order
            for chunk in self._requests(group):
                ready = [b for b in chunk if (b.topic, b.partition) not in held]
                retry += [(b, _HELD_BACK) for b in chunk if (b.topic, b.partition) in held]
                failed = self._produce(leader, ready) if ready else []
                held.update((b.topic, b.partition) for b, _ in failed)
                retry += failed
        return retry

    def _requests(self, batches: list[_Batch]) -> list[list[_Batch]]:
        """Split one leader's batches into Produce requests: at most one batch per partition in a
        request (Produce v3+ takes exactly one), a partition's batches in order, and at most
        ``max_request_size`` bytes each (a larger single batch goes alone)."""
        waves: list[list[_Batch]] = []
        seen: dict[tuple[str, int], int] = defaultdict(int)
        for batch in batches:
            k = seen[(batch.topic, batch.partition)]
            seen[(batch.topic, batch.partition)] += 1
            if k == len(waves):
                waves.append([])
            waves[k].append(batch)
        out: list[list[_Batch]] = []
        for wave in waves:
            out.append([])
            size = 0
            for batch in wave:
                if out[-1] and size + len(batch.data) > self.max_request_size:
                    out.append([])
                    size = 0
                out[-1].append(batch)
                size += len(batch.data)
        return out

    def _produce(self, leader: int, batches: list[_Batch]) -> list[tuple[_Batch, KafkaApiError]]:
        topics: dict[str, list[m.ProduceRequest.PartitionProduceData]] = defaultdict(list)
        for b in batches:
            topics[b.topic].append(m.ProduceRequest.PartitionProduceData(index=b.partition, records=b.data))
        request = m.ProduceRequest(
            transactional_id=None,
            acks=self.acks,
            timeout_ms=int(self.timeout * 1000),
            topic_data=[
                m.ProduceRequest.TopicProduceData(name=t, partition_data=ps) for t, ps in topics.items()
            ],
        )
        try:
            conn = self.cluster.node(leader)
            response: m.ProduceResponse | None = conn.send(request, expect_response=self.acks != 0)
        except BrokerUnreachable as exc:
            error = KafkaApiError(ErrorCode.NETWORK_EXCEPTION, str(exc))
            return [(b, error) for b in batches]
        if response is None:  # acks=0
            for b in batches:
                b.complete(-1, -1)
            return []
        answers = {(t.name, p.index): p for t in response.responses for p in t.partition_responses}
        retry: list[tuple[_Batch, KafkaApiError]] = []
        for b in batches:
            answer = answers.get((b.topic, b.partition))
            if answer is None:
                b.fail(
                    KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, f"no answer for {b.topic}-{b.partition}")
                )
                continue
            if answer.error_code == ErrorCode.NONE:
                b.complete(answer.base_offset, answer.log_append_time_ms)
                continue
            where = f"{b.topic}-{b.partition}"
            error = KafkaApiError(
                answer.error_code, f"{where}: {answer.error_message}" if answer.error_message else where
            )
            if error.retriable:
                retry.append((b, error))
            elif error.error_code == ErrorCode.MESSAGE_TOO_LARGE and len(b.records) > 1:
                retry += [(one, error) for one in b.split()]
            else:
                per_record = {e.batch_index: e.batch_index_error_message or "" for e in answer.record_errors}
                b.fail(error, per_record)
        return retry
