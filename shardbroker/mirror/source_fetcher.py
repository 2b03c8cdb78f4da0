"""Raw record batches from the source cluster: Fetch, READ_COMMITTED, no record decoded. Opens sockets.

One Fetch per partition leader carries every partition that leader serves (each at its own
position); the answer's ``records`` are cut into batches by their headers and filtered by
:func:`~shardbroker.mirror.batch_rewrite.select_batches` (markers and aborted transactions
dropped). Fetch sessions are not used (full fetches, as ``TcpConsumer``): a mirror has a few
hundred partitions at most, and a full Fetch request for them is a few KB.

Sizes: ``fetch.max.bytes`` 64 MiB and ``max.partition.fetch.bytes`` 1 MiB (Kafka's consumer:
50 MiB and 1 MiB). Measured (this fetch code alone, 3,000,000 x 100 B in 4 partitions of a
1-worker broker, 3 runs, 2026-12-05): 1 MiB per partition 21.6 M records/s (19.8-24.1), 4 MiB
9.6 M, 16 MiB 6.7 M: the answer's buffer was allocated and filled per Fetch, and a few MiB come
back from malloc warm, while tens of MiB are fresh pages, each a page fault (costly on this VM).
Answers are now read into :data:`RECEIVE_BUFFERS` reused buffers (client/receive_buffers.py): a
buffer comes back once every batch cut from it is acknowledged and dropped, so the mirror holds
at most that many answers' worth of memory beyond what is queued and pending.

Errors come back per partition in :class:`FetchedPartition` (the loop decides: retry, pause,
reset); a leader that cannot be reached is an error of each of its partitions, and the next
fetch asks Metadata again. ``OFFSET_OUT_OF_RANGE`` is answered with the source's log start
offset (the records before it were deleted by retention before they could be mirrored: the loop
logs it), as MirrorMaker 2's consumer with ``auto.offset.reset=earliest``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from uuid import UUID

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicInfo, TopicPartition
from shardbroker.client.admin_partitions import EARLIEST
from shardbroker.client.connection import AdminClientError, KafkaApiError
from shardbroker.client.receive_buffers import ReceiveBuffers
from shardbroker.mirror.batch_rewrite import Selection, select_batches
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode, ProtocolError

__all__ = ["FETCH_MAX_BYTES", "PARTITION_FETCH_MAX_BYTES", "FetchedPartition", "SourceFetcher"]

FETCH_MAX_BYTES: Final = 64 * 1024 * 1024
PARTITION_FETCH_MAX_BYTES: Final = 1024 * 1024
#: Kafka's fetch.max.wait.ms.
FETCH_MAX_WAIT_MS: Final = 500
READ_COMMITTED: Final = 1
#: Fetch answers' buffers kept for reuse: the mirror's queued rounds (4), its pending batches
#: (mirror_maker.PENDING_MAX_BYTES) and the answer being read; perf/bench_mirror.py uses 10
#: (4 partitions, counted by hand), the rest is margin.
RECEIVE_BUFFERS: Final = 16


@dataclass(slots=True)
class FetchedPartition:
    """One partition's part of a Fetch: ``selection`` (None with ``error``), the source's end
    offset for lag (the last stable offset under READ_COMMITTED), and when it was fetched."""

    topic: str
    partition: int
    selection: Selection | None
    end_offset: int
    fetched_at: float
    error: KafkaApiError | None = None
    #: OFFSET_OUT_OF_RANGE: the source's log start offset the position moved to
    reset_to: int | None = None

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)


class SourceFetcher:
    """Fetches for a set of positions (``{(topic, partition): next offset}``). Not thread-safe:
    one fetch thread owns it (and its ``cluster``)."""

    def __init__(
        self,
        cluster: AdminClient,
        *,
        fetch_max_bytes: int = FETCH_MAX_BYTES,
        partition_max_bytes: int = PARTITION_FETCH_MAX_BYTES,
        max_wait_ms: int = FETCH_MAX_WAIT_MS,
    ) -> None:
        self.cluster = cluster
        self.fetch_max_bytes = fetch_max_bytes
        self.partition_max_bytes = partition_max_bytes
        self.max_wait_ms = max_wait_ms
        self._topics: dict[str, TopicInfo] = {}
        self._buffers = ReceiveBuffers(RECEIVE_BUFFERS)

    def forget_metadata(self) -> None:
        self._topics.clear()

    def _topic(self, name: str) -> TopicInfo:
        info = self._topics.get(name)
        if info is None:
            info = self._topics[name] = self.cluster.topic(name)
        return info

    def fetch(self, positions: Mapping[TopicPartition, int]) -> list[FetchedPartition]:
        """One round: a Fetch to each leader of ``positions``' partitions. The first leader may
        hold the answer up to ``max_wait_ms`` for data; the others are asked not to wait once
        something has arrived."""
        by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
        out: list[FetchedPartition] = []
        now = time.time()
        for tp, _ in sorted(positions.items()):
            try:
                leader = self._topic(tp[0]).partitions.get(tp[1], -1)
            except AdminClientError as exc:
                out.append(self._failed(tp, exc, now))
                continue
            if leader < 0:
                out.append(self._failed(tp, KafkaApiError(ErrorCode.LEADER_NOT_AVAILABLE, _name(tp)), now))
                self._topics.pop(tp[0], None)
            else:
                by_leader[leader].append(tp)
        for leader, tps in sorted(by_leader.items()):
            wait = 0 if any(f.selection and f.selection.batches for f in out) else self.max_wait_ms
            try:
                out += self._fetch_from(leader, tps, positions, wait)
            except AdminClientError as exc:
                self._topics.clear()
                out += [self._failed(tp, exc, time.time()) for tp in tps]
        return out

    @staticmethod
    def _failed(tp: TopicPartition, exc: AdminClientError, when: float) -> FetchedPartition:
        error = (
            exc if isinstance(exc, KafkaApiError) else KafkaApiError(ErrorCode.NETWORK_EXCEPTION, str(exc))
        )
        return FetchedPartition(tp[0], tp[1], None, -1, when, error)

    def _fetch_from(
        self, leader: int, tps: list[TopicPartition], positions: Mapping[TopicPartition, int], wait_ms: int
    ) -> list[FetchedPartition]:
        conn = self.cluster.node(leader)
        version = conn.version_for(m.FetchRequest.API_KEY, "Fetch")
        use_ids = version >= 13
        grouped: dict[str, list[m.FetchRequest.FetchPartition]] = defaultdict(list)
        for t, p in tps:
            grouped[t].append(
                m.FetchRequest.FetchPartition(
                    partition=p,
                    current_leader_epoch=-1,
                    fetch_offset=positions[(t, p)],
                    last_fetched_epoch=-1,
                    log_start_offset=-1,
                    partition_max_bytes=self.partition_max_bytes,
                )
            )
        names: dict[UUID, str] = {}
        topics = []
        for t, parts in grouped.items():
            entry = m.FetchRequest.FetchTopic(partitions=parts)
            if use_ids:
                topic_id = self._topic(t).topic_id
                if topic_id is None:
                    raise KafkaApiError(ErrorCode.UNKNOWN_TOPIC_ID, f"no topic id for '{t}'")
                entry.topic_id = topic_id
                names[topic_id] = t
            else:
                entry.topic = t
            topics.append(entry)
        request = m.FetchRequest(
            replica_id=-1,
            max_wait_ms=wait_ms,
            min_bytes=1,
            max_bytes=self.fetch_max_bytes,
            isolation_level=READ_COMMITTED,
            session_id=0,
            session_epoch=-1,
            topics=topics,
            forgotten_topics_data=[],
            rack_id="",
        )
        response: m.FetchResponse = conn.send(
            request, version, timeout=self.cluster.timeout + wait_ms / 1000, buffers=self._buffers
        )
        when = time.time()
        if response.error_code != ErrorCode.NONE:
            raise KafkaApiError(response.error_code, f"Fetch from node {leader}")
        out = []
        for rt in response.responses:
            name = names.get(rt.topic_id, "") if use_ids else rt.topic
            for rp in rt.partitions:
                tp = (name, rp.partition_index)
                if tp in positions:
                    out.append(self._partition(tp, positions[tp], rp, when))
        return out

    def _partition(
        self, tp: TopicPartition, position: int, rp: m.FetchResponse.PartitionData, when: float
    ) -> FetchedPartition:
        code = rp.error_code
        end = rp.last_stable_offset if rp.last_stable_offset >= 0 else rp.high_watermark
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            earliest = self.cluster.list_offsets({tp: EARLIEST})[tp]
            if earliest > position:
                return FetchedPartition(*tp, Selection(position, earliest), end, when, reset_to=earliest)
            code = ErrorCode.OFFSET_OUT_OF_RANGE  # past the end: a truncated source log
        if code != ErrorCode.NONE:
            error = KafkaApiError(code, f"Fetch {_name(tp)}")
            if error.retriable or code == ErrorCode.UNKNOWN_TOPIC_ID:
                self._topics.pop(tp[0], None)
            return FetchedPartition(*tp, None, end, when, error)
        aborted = [(a.producer_id, a.first_offset) for a in rp.aborted_transactions or ()]
        records = rp.records if isinstance(rp.records, bytes | bytearray | memoryview) else b""
        try:
            return FetchedPartition(*tp, select_batches(records, position, aborted), end, when)
        except ProtocolError as exc:
            return FetchedPartition(
                *tp, None, end, when, KafkaApiError(exc.error_code, f"{_name(tp)}: {exc}")
            )


def _name(tp: TopicPartition) -> str:
    return f"{tp[0]}-{tp[1]}"
