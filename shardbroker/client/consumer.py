"""A small blocking Kafka consumer over TCP, for ``shardbroker consume`` and tests. Opens sockets.

"Tcp" in the name because it speaks the Kafka protocol to any broker (shardbroker or Kafka); the
same-host shared-memory consumer is a different thing. Kafka's consumer cut to what a console
tool needs, with Kafka's names and defaults:

- Either :meth:`TcpConsumer.assign` (given partitions and start offsets, no group) or
  :meth:`TcpConsumer.subscribe` as a member of a consumer group through the classic protocol:
  FindCoordinator, JoinGroup (protocol type "consumer", one assignor "range", subscription in
  ConsumerProtocolSubscription v0; the MEMBER_ID_REQUIRED round of JoinGroup v4+), SyncGroup
  (the leader computes :func:`range_assign` over every member's subscription), Heartbeat every
  ``heartbeat_interval_ms`` between fetches, OffsetFetch for the start positions (else
  ``auto_offset_reset`` via ListOffsets), OffsetCommit with the member's generation every
  ``auto_commit_interval_ms`` and on close, then LeaveGroup. A heartbeat answered
  REBALANCE_IN_PROGRESS commits and rejoins; UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION rejoin.
  Being single-threaded, it heartbeats only inside :meth:`poll`: a caller that stops polling for
  longer than ``session_timeout_ms`` (Kafka's 45 s default) is dropped from the group, as a Kafka
  consumer that exceeds max.poll.interval.ms is.
- Fetch: one request per partition leader, full fetches (no fetch sessions: session id 0,
  epoch -1), read_uncommitted, topic ids from Metadata for Fetch v13+. The long poll
  (``fetch_max_wait_ms``) is used on the first leader only; once records have arrived, the other
  leaders are asked with no wait. A batch that starts before the position is decoded and its
  earlier records skipped (brokers return whole batches); control batches (transaction markers)
  are skipped but advance the position. OFFSET_OUT_OF_RANGE resets the position by
  ``auto_offset_reset``; retriable errors (NOT_LEADER_OR_FOLLOWER...) refresh metadata, and so
  does a leader that cannot be reached (a restarting worker), until ``timeout`` without a
  successful fetch.
- :meth:`poll` returns at most ``max_records`` records and advances the position only past the
  records it returned (the rest stay buffered), so a commit never covers a record the caller
  did not get: ``--max-messages N`` followed by a commit is exact.

Not thread-safe; one request in flight per connection.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple
from uuid import UUID

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicInfo
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.client_security import ClientSecurity
from shardbroker.client.connection import DEFAULT_TIMEOUT, BrokerConnection, BrokerUnreachable, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.consumer_protocol import (
    decode_consumer_assignment,
    decode_consumer_subscription,
    encode_consumer_assignment,
    encode_consumer_subscription,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.record_batch import iter_batches

__all__ = [
    "ASSIGNOR",
    "ConsumerRecord",
    "TcpConsumer",
    "range_assign",
]

TopicPartition = tuple[str, int]
#: The one partition assignment strategy this consumer offers (Kafka's RangeAssignor name).
ASSIGNOR = "range"
PROTOCOL_TYPE = "consumer"
#: Kafka's consumer defaults (ConsumerConfig).
DEFAULT_SESSION_TIMEOUT_MS = 45000
DEFAULT_HEARTBEAT_INTERVAL_MS = 3000
DEFAULT_REBALANCE_TIMEOUT_MS = 300000  # max.poll.interval.ms
DEFAULT_AUTO_COMMIT_INTERVAL_MS = 5000
DEFAULT_FETCH_MAX_WAIT_MS = 500
DEFAULT_FETCH_MAX_BYTES = 52428800
DEFAULT_MAX_PARTITION_FETCH_BYTES = 1048576

_REJOIN = {ErrorCode.REBALANCE_IN_PROGRESS, ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID}
_COORDINATOR_MOVED = {
    ErrorCode.NOT_COORDINATOR,
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
}


class ConsumerRecord(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: int
    #: 0 CreateTime, 1 LogAppendTime
    timestamp_type: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def range_assign(
    subscriptions: Mapping[str, Sequence[str]],
    partitions_per_topic: Mapping[str, int],
    instance_ids: Mapping[str, str | None] | None = None,
) -> dict[str, dict[str, list[int]]]:
    """Kafka's RangeAssignor: for each topic, its subscribers in order (static members by
    ``group.instance.id`` first, then by member id) each take a contiguous range of
    ``partitions // members`` partitions, the first ``partitions % members`` one more. Topics
    missing from ``partitions_per_topic`` (unknown) are left out. Every member gets an entry."""
    ids = instance_ids or {}
    out: dict[str, dict[str, list[int]]] = {member: {} for member in subscriptions}
    by_topic: dict[str, list[str]] = defaultdict(list)
    for member, topics in subscriptions.items():
        for topic in set(topics):
            by_topic[topic].append(member)

    def order(member: str) -> tuple[int, str]:
        instance = ids.get(member)
        return (0, instance) if instance else (1, member)

    for topic, members in sorted(by_topic.items()):
        count = partitions_per_topic.get(topic)
        if not count:
            continue
        members.sort(key=order)
        share, extra = divmod(count, len(members))
        for i, member in enumerate(members):
            start = i * share + min(i, extra)
            length = share + (1 if i < extra else 0)
            if length:
                out[member][topic] = list(range(start, start + length))
    return out


class TcpConsumer:
    """Blocking consumer. ``timeout`` (seconds) bounds each connect and each answer (a JoinGroup
    may take up to the rebalance timeout more); ``auto_offset_reset`` is "earliest" or "latest"
    (where to start without a committed offset, or after OFFSET_OUT_OF_RANGE);
    ``security`` (client/client_security.py) makes every connection use TLS and/or SASL."""

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str | None = None,
        auto_offset_reset: str = "latest",
        enable_auto_commit: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str = "shardbroker-consumer",
        security: ClientSecurity | None = None,
        session_timeout_ms: int = DEFAULT_SESSION_TIMEOUT_MS,
        heartbeat_interval_ms: int = DEFAULT_HEARTBEAT_INTERVAL_MS,
        rebalance_timeout_ms: int = DEFAULT_REBALANCE_TIMEOUT_MS,
        auto_commit_interval_ms: int = DEFAULT_AUTO_COMMIT_INTERVAL_MS,
        fetch_max_wait_ms: int = DEFAULT_FETCH_MAX_WAIT_MS,
        fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        max_partition_fetch_bytes: int = DEFAULT_MAX_PARTITION_FETCH_BYTES,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest"):
            raise ValueError(f"auto_offset_reset must be 'earliest' or 'latest', not {auto_offset_reset!r}")
        self.cluster = AdminClient(bootstrap, timeout=timeout, client_id=client_id, security=security)
        self.group_id = group_id
        self.auto_offset_reset = auto_offset_reset
        self.enable_auto_commit = enable_auto_commit
        self.timeout = timeout
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.rebalance_timeout_ms = rebalance_timeout_ms
        self.auto_commit_interval_ms = auto_commit_interval_ms
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.fetch_max_bytes = fetch_max_bytes
        self.max_partition_fetch_bytes = max_partition_fetch_bytes
        #: partition -> offset of the next record to return
        self.positions: dict[TopicPartition, int] = {}
        self._topics: dict[str, TopicInfo] = {}
        self._subscription: list[str] = []
        self._buffer: list[ConsumerRecord] = []
        self._buffer_ends: dict[TopicPartition, int] = {}
        # group membership
        self.member_id = ""
        self.generation_id = -1
        self._joined = False
        self._next_heartbeat = 0.0
        self._next_commit = 0.0
        self._committed: dict[TopicPartition, int] = {}
        self._unreachable_since = 0.0

    def __enter__(self) -> TcpConsumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def assignment(self) -> list[TopicPartition]:
        return sorted(self.positions)

    # -- metadata ------------------------------------------------------------------------------

    def topic(self, name: str) -> TopicInfo:
        """The topic's partitions and leaders (cached until an error says they moved). Raises
        KafkaApiError (UNKNOWN_TOPIC_OR_PARTITION) for a topic that does not exist."""
        info = self._topics.get(name)
        if info is None:
            info = self._topics[name] = self.cluster.topic(name)
        return info

    def _reset(self, partitions: Iterable[TopicPartition], spec: int | None = None) -> None:
        wanted = {tp: EARLIEST if self.auto_offset_reset == "earliest" else LATEST for tp in partitions}
        if spec is not None:
            wanted = dict.fromkeys(wanted, spec)
        if wanted:
            self.positions.update(self.cluster.list_offsets(wanted))

    # -- assignment without a group ------------------------------------------------------------

    def assign(self, starts: Mapping[TopicPartition, int]) -> None:
        """Consume these partitions (no group), each from an offset, or EARLIEST / LATEST."""
        if self.group_id is not None:
            raise ValueError("assign() is for a consumer without a group; use subscribe()")
        for t, p in starts:
            info = self.topic(t)
            if p not in info.partitions:
                raise KafkaApiError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic '{t}' has no partition {p} (partitions 0-{len(info.partitions) - 1})",
                )
        self.positions = {tp: o for tp, o in starts.items() if o >= 0}
        for spec in (EARLIEST, LATEST):
            self._reset([tp for tp, o in starts.items() if o == spec], spec)
        self._buffer.clear()
        self._buffer_ends.clear()

    # -- group membership ----------------------------------------------------------------------

    def subscribe(self, topics: Sequence[str]) -> None:
        """Join ``group_id`` for these topics (on the next :meth:`poll`). The topics must exist."""
        if self.group_id is None:
            raise ValueError("subscribe() needs a group_id")
        for t in topics:
            self.topic(t)
        self._subscription = list(topics)
        self._joined = False

    def _coordinator(self) -> BrokerConnection:
        assert self.group_id is not None
        return self.cluster.node(self.cluster.find_coordinator(self.group_id).node_id)

    def _join(self) -> None:
        """JoinGroup + SyncGroup until this member has an assignment of the current generation,
        then start positions from committed offsets (else ``auto_offset_reset``)."""
        group = self.group_id
        assert group is not None
        deadline = time.monotonic() + self.timeout + self.rebalance_timeout_ms / 1000
        self._buffer.clear()
        self._buffer_ends.clear()
        self.positions = {}
        while True:
            if time.monotonic() > deadline:
                raise KafkaApiError(
                    ErrorCode.REBALANCE_IN_PROGRESS, f"could not join group '{group}' in time"
                )
            try:
                assignment = self._join_once(group)
            except KafkaApiError as exc:
                if exc.error_code == ErrorCode.UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                elif exc.error_code not in _REJOIN and exc.error_code not in _COORDINATOR_MOVED:
                    raise
                time.sleep(0.05)
                continue
            break
        self._joined = True
        parts = sorted((t, p) for t, ps in assignment.items() for p in ps)
        committed = self.cluster.committed_offsets(group, parts) if parts else {}
        self._committed = dict(committed)
        self.positions = dict(committed)
        self._reset([tp for tp in parts if tp not in committed])
        now = time.monotonic()
        self._next_heartbeat = now + self.heartbeat_interval_ms / 1000
        self._next_commit = now + self.auto_commit_interval_ms / 1000

    def _join_once(self, group: str) -> dict[str, list[int]]:
        conn = self._coordinator()
        join = m.JoinGroupRequest(
            group_id=group,
            session_timeout_ms=self.session_timeout_ms,
            rebalance_timeout_ms=self.rebalance_timeout_ms,
            member_id=self.member_id,
            group_instance_id=None,
            protocol_type=PROTOCOL_TYPE,
            protocols=[
                m.JoinGroupRequest.JoinGroupRequestProtocol(
                    name=ASSIGNOR, metadata=encode_consumer_subscription(self._subscription)
                )
            ],
            reason=None,
        )
        wait = self.timeout + self.rebalance_timeout_ms / 1000
        joined: m.JoinGroupResponse = conn.send(join, timeout=wait)
        if joined.error_code == ErrorCode.MEMBER_ID_REQUIRED:
            self.member_id = joined.member_id
            join.member_id = self.member_id
            joined = conn.send(join, timeout=wait)
        if joined.error_code != ErrorCode.NONE:
            raise KafkaApiError(joined.error_code, f"joining group '{group}'")
        self.member_id = joined.member_id
        self.generation_id = joined.generation_id
        assignments = []
        if joined.leader == joined.member_id:
            assignments = self._assign_group(joined)
        synced: m.SyncGroupResponse = conn.send(
            m.SyncGroupRequest(
                group_id=group,
                generation_id=self.generation_id,
                member_id=self.member_id,
                group_instance_id=None,
                protocol_type=PROTOCOL_TYPE,
                protocol_name=joined.protocol_name or ASSIGNOR,
                assignments=assignments,
            ),
            timeout=wait,
        )
        if synced.error_code != ErrorCode.NONE:
            raise KafkaApiError(synced.error_code, f"syncing group '{group}'")
        try:
            return decode_consumer_assignment(synced.assignment).partitions
        except ProtocolError as exc:
            raise KafkaApiError(
                ErrorCode.INCONSISTENT_GROUP_PROTOCOL, f"undecodable assignment: {exc}"
            ) from None

    def _assign_group(
        self, joined: m.JoinGroupResponse
    ) -> list[m.SyncGroupRequest.SyncGroupRequestAssignment]:
        """As the group's leader: every member's partitions by :func:`range_assign`."""
        subscriptions: dict[str, list[str]] = {}
        for member in joined.members:
            try:
                subscriptions[member.member_id] = decode_consumer_subscription(member.metadata).topics
            except ProtocolError:
                subscriptions[member.member_id] = []
        topics = sorted({t for ts in subscriptions.values() for t in ts})
        md = self.cluster.metadata(topics)
        counts = {
            t: len(info.partitions) for t, info in md.topics.items() if info.error_code == ErrorCode.NONE
        }
        plan = range_assign(
            subscriptions, counts, {mem.member_id: mem.group_instance_id for mem in joined.members}
        )
        return [
            m.SyncGroupRequest.SyncGroupRequestAssignment(
                member_id=member, assignment=encode_consumer_assignment(parts)
            )
            for member, parts in plan.items()
        ]

    def _heartbeat(self) -> None:
        assert self.group_id is not None
        conn = self._coordinator()
        response: m.HeartbeatResponse = conn.send(
            m.HeartbeatRequest(
                group_id=self.group_id,
                generation_id=self.generation_id,
                member_id=self.member_id,
                group_instance_id=None,
            )
        )
        code = response.error_code
        self._next_heartbeat = time.monotonic() + self.heartbeat_interval_ms / 1000
        if code == ErrorCode.NONE:
            return
        if code == ErrorCode.REBALANCE_IN_PROGRESS:
            self._commit_quietly()
            self._joined = False
        elif code in (ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID):
            if code == ErrorCode.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            self._joined = False
        elif code not in _COORDINATOR_MOVED:
            raise KafkaApiError(code, f"heartbeat in group '{self.group_id}'")

    def commit(self) -> None:
        """Commit the positions of the assigned partitions (those that moved since the last
        commit) with this member's generation. Raises KafkaApiError."""
        if self.group_id is None or not self._joined:
            return
        changed = {tp: o for tp, o in self.positions.items() if self._committed.get(tp) != o}
        if changed:
            self.cluster.commit_offsets(
                self.group_id, changed, generation_id=self.generation_id, member_id=self.member_id
            )
            self._committed.update(changed)
        self._next_commit = time.monotonic() + self.auto_commit_interval_ms / 1000

    def _commit_quietly(self) -> None:
        """A commit that a rebalance may have overtaken (then the next member starts from the
        previous commit, as with Kafka's CommitFailedException)."""
        try:
            self.commit()
        except KafkaApiError as exc:
            if exc.error_code not in _REJOIN:
                raise

    def _leave(self) -> None:
        assert self.group_id is not None
        conn = self._coordinator()
        version = conn.version_for(m.LeaveGroupRequest.API_KEY, "LeaveGroup")
        if version >= 3:
            request = m.LeaveGroupRequest(
                group_id=self.group_id,
                members=[
                    m.LeaveGroupRequest.MemberIdentity(member_id=self.member_id, reason="consumer closed")
                ],
            )
        else:
            request = m.LeaveGroupRequest(group_id=self.group_id, member_id=self.member_id)
        conn.send(request, version)
        self._joined = False
        self.member_id = ""

    def close(self) -> None:
        """In a group: commit (when auto-commit is on) and leave, also when interrupted while
        joining (the coordinator knows the member id already); then close the connections."""
        try:
            if self.group_id is not None and self._joined and self.enable_auto_commit:
                self._commit_quietly()
            if self.group_id is not None and self.member_id:
                self._leave()
        finally:
            self.cluster.close()

    # -- fetching ------------------------------------------------------------------------------

    def poll(self, timeout: float, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout`` seconds for some;
        at most ``max_records``. In a group: joins, heartbeats and auto-commits here."""
        deadline = time.monotonic() + timeout
        while True:
            if self.group_id is not None:
                self._group_duties()
            if not self._buffer:
                remaining = deadline - time.monotonic()
                wait_ms = max(0, min(self.fetch_max_wait_ms, int(remaining * 1000)))
                if self.group_id is not None and self._joined:
                    until_heartbeat = self._next_heartbeat - time.monotonic()
                    wait_ms = max(0, min(wait_ms, int(until_heartbeat * 1000)))
                self._fetch(wait_ms)
            if self._buffer:
                return self._take(max_records)
            if time.monotonic() >= deadline:
                return []

    def _group_duties(self) -> None:
        if not self._joined:
            self._join()
        now = time.monotonic()
        if now >= self._next_heartbeat:
            self._heartbeat()
            if not self._joined:
                self._join()
        if self.enable_auto_commit and self._joined and time.monotonic() >= self._next_commit:
            self._commit_quietly()

    def _take(self, max_records: int | None) -> list[ConsumerRecord]:
        n = len(self._buffer) if max_records is None else max(1, max_records)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        for rec in out:
            self.positions[(rec.topic, rec.partition)] = rec.offset + 1
        if not self._buffer:
            for tp, end in self._buffer_ends.items():
                if tp in self.positions and end > self.positions[tp]:
                    self.positions[tp] = end
            self._buffer_ends.clear()
        return out

    def _fetch(self, wait_ms: int) -> None:
        by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in sorted(self.positions):
            try:
                leader = self.topic(tp[0]).partitions.get(tp[1], -1)
            except KafkaApiError as exc:
                if not exc.retriable:
                    raise
                continue
            if leader >= 0:
                by_leader[leader].append(tp)
        if not by_leader:
            self._topics.clear()
            time.sleep(wait_ms / 1000)
            return
        for leader, parts in sorted(by_leader.items()):
            try:
                self._fetch_from(leader, parts, 0 if self._buffer else wait_ms)
            except BrokerUnreachable:
                # A worker restarting, or a leader that moved: ask for metadata again, and give
                # up only when no fetch has worked for the whole timeout.
                now = time.monotonic()
                self._unreachable_since = self._unreachable_since or now
                if now - self._unreachable_since > self.timeout:
                    raise
                self._topics.clear()
                time.sleep(min(0.1, self.timeout))
                continue
            self._unreachable_since = 0.0

    def _fetch_from(self, leader: int, parts: list[TopicPartition], wait_ms: int) -> None:
        conn = self.cluster.node(leader)
        version = conn.version_for(m.FetchRequest.API_KEY, "Fetch")
        use_ids = version >= 13
        topics: dict[str, list[m.FetchRequest.FetchPartition]] = defaultdict(list)
        for t, p in parts:
            topics[t].append(
                m.FetchRequest.FetchPartition(
                    partition=p,
                    current_leader_epoch=-1,
                    fetch_offset=self.positions[(t, p)],
                    last_fetched_epoch=-1,
                    log_start_offset=-1,
                    partition_max_bytes=self.max_partition_fetch_bytes,
                )
            )
        names_by_id: dict[UUID, str] = {}
        fetch_topics = []
        for t, ps in topics.items():
            entry = m.FetchRequest.FetchTopic(partitions=ps)
            if use_ids:
                topic_id = self.topic(t).topic_id
                if topic_id is None:
                    raise KafkaApiError(
                        ErrorCode.UNKNOWN_TOPIC_ID, f"no topic id for '{t}' (Fetch v{version})"
                    )
                entry.topic_id = topic_id
                names_by_id[topic_id] = t
            else:
                entry.topic = t
            fetch_topics.append(entry)
        request = m.FetchRequest(
            replica_id=-1,
            max_wait_ms=wait_ms,
            min_bytes=1,
            max_bytes=self.fetch_max_bytes,
            isolation_level=0,
            session_id=0,
            session_epoch=-1,
            topics=fetch_topics,
            forgotten_topics_data=[],
            rack_id="",
        )
        response: m.FetchResponse = conn.send(request, version, timeout=self.timeout + wait_ms / 1000)
        if response.error_code != ErrorCode.NONE:
            error = KafkaApiError(response.error_code, f"Fetch from node {leader}")
            if error.retriable:
                self._topics.clear()
                return
            raise error
        for rt in response.responses:
            name = names_by_id.get(rt.topic_id, "") if use_ids else rt.topic
            for rp in rt.partitions:
                tp = (name, rp.partition_index)
                if tp not in self.positions:
                    continue
                self._take_partition(tp, rp)

    def _take_partition(self, tp: TopicPartition, rp: m.FetchResponse.PartitionData) -> None:
        code = rp.error_code
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            self._reset([tp])
            return
        if code != ErrorCode.NONE:
            error = KafkaApiError(code, f"Fetch {tp[0]}-{tp[1]}")
            if error.retriable:
                self._topics.pop(tp[0], None)
                return
            raise error
        records = rp.records
        if not isinstance(records, bytes | bytearray | memoryview) or not len(records):
            return
        position = self.positions[tp]
        end = position
        topic, partition = tp
        try:
            for batch in iter_batches(records, allow_partial_tail=True):
                if batch.next_offset <= position:
                    continue
                end = max(end, batch.next_offset)
                if batch.is_control:
                    continue
                kind = int(batch.timestamp_type)
                add = self._buffer.append
                for offset, timestamp, key, value, headers, *_ in batch.records():
                    if offset < position:
                        continue
                    add(
                        ConsumerRecord(
                            topic,
                            partition,
                            offset,
                            timestamp,
                            kind,
                            None if key is None else bytes(key),
                            None if value is None else bytes(value),
                            tuple((h.key, None if h.value is None else bytes(h.value)) for h in headers)
                            if headers
                            else (),
                        )
                    )
        except ProtocolError as exc:
            raise KafkaApiError(ErrorCode.CORRUPT_MESSAGE, f"Fetch {topic}-{partition}: {exc}") from None
        if end > position:
            self._buffer_ends[tp] = end
