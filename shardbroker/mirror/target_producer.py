"""Raw record batches to the target cluster, idempotent, and transactional when asked. Opens sockets.

Kafka's idempotent producer reduced to what a mirror needs (it never makes records):

- ``InitProducerId`` gives the producer id and epoch (at any broker; at the transaction
  coordinator with a ``transactional.id``, which also fences an older mirror with the same id and
  aborts its open transaction). Each target partition gets its own sequence, from 0, advanced by
  a batch's record count when the batch is first written (:mod:`~shardbroker.mirror.batch_rewrite`
  puts the producer fields in the batch). A batch sent again keeps its sequence: the target
  answers DUPLICATE_SEQUENCE_NUMBER, or its original offset, for a batch it already has, so a lost
  answer never duplicates.
- :meth:`TargetProducer.produce` sends at most one batch per partition per Produce (Kafka's rule
  for v3+), one request per leader, and answers each batch's :class:`Outcome`: written
  (``base_offset``), ``retry`` (retriable: NOT_LEADER_OR_FOLLOWER, a dropped connection...),
  ``reset`` (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID, INVALID_PRODUCER_EPOCH: the target
  lost the producer's state; the loop checks the partition's end offset and calls :meth:`reset`)
  or refused (anything else, e.g. MESSAGE_TOO_LARGE).
- Transactions (``exactly.once.source.support=enabled``): :meth:`add_partitions` before a
  partition's first batch of a transaction (AddPartitionsToTxn), :meth:`commit` with the
  mirror's positions (AddOffsetsToTxn, TxnOffsetCommit at the group's coordinator, EndTxn),
  :meth:`abort`. CONCURRENT_TRANSACTIONS (the last EndTxn still completing) is retried.

Not thread-safe: one produce thread owns it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, TypeVar

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicInfo, TopicPartition
from shardbroker.client.connection import AdminClientError, BrokerConnection, KafkaApiError, Pipelined
from shardbroker.mirror.batch_rewrite import SourceBatch, next_sequence, rewrite_batch
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["InFlight", "OutBatch", "Outcome", "Result", "TargetProducer", "TransactionFenced"]

#: Kafka's transaction.timeout.ms default; a mirror commits every ~100 ms.
TRANSACTION_TIMEOUT_MS: Final = 60_000
_TRANSACTION_KEY: Final = 1  # FindCoordinator key type of a transactional id
_RESET: Final = {
    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
    ErrorCode.UNKNOWN_PRODUCER_ID,
    ErrorCode.INVALID_PRODUCER_EPOCH,
}
_FENCED: Final = {ErrorCode.PRODUCER_FENCED, ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}
T = TypeVar("T")


class TransactionFenced(AdminClientError):
    """Another mirror with the same transactional id took over (or the id is not allowed)."""


class Outcome(Enum):
    WRITTEN = "written"
    RETRY = "retry"
    RESET = "reset"
    REFUSED = "refused"


@dataclass(slots=True)
class OutBatch:
    """A source batch on its way to a target partition ``tp``; ``data`` is the batch rewritten
    (in place, see batch_rewrite.py) for the producer generation ``generation`` (None: not
    written yet; rewritten again for a newer generation)."""

    tp: TopicPartition
    source: SourceBatch
    source_tp: TopicPartition
    #: when it was fetched (time.time()), for the replication latency of CreateTime batches
    fetched_at: float
    data: memoryview | None = None
    generation: int = -1


@dataclass(frozen=True, slots=True)
class InFlight:
    """What :meth:`TargetProducer.send` wrote: the Produce requests awaiting their answers, and
    the results already known (no leader)."""

    done: list[Result]
    requests: list[tuple[BrokerConnection, Pipelined, list[OutBatch]]]


def _all_retry(batches: list[OutBatch], exc: AdminClientError) -> list[Result]:
    error = KafkaApiError(ErrorCode.NETWORK_EXCEPTION, str(exc))
    return [Result(b, Outcome.RETRY, error=error) for b in batches]


@dataclass(frozen=True, slots=True)
class Result:
    batch: OutBatch
    outcome: Outcome
    #: the target offset of the batch's first record (-1: unknown, e.g. a duplicate)
    base_offset: int = -1
    error: KafkaApiError | None = None


class TargetProducer:
    """The mirror's producer on ``cluster`` (an AdminClient of the target, owned by this object)."""

    def __init__(
        self,
        cluster: AdminClient,
        *,
        transactional_id: str | None = None,
        request_timeout_ms: int = 30_000,
        metadata: AdminClient | None = None,
    ) -> None:
        self.cluster = cluster
        #: where leaders are looked up: its own connections, since ``cluster``'s may have Produce
        #: requests in flight whose answers a Metadata round trip would read
        self.metadata = metadata or cluster
        self.transactional_id = transactional_id
        self.request_timeout_ms = request_timeout_ms
        self.producer_id = -1
        self.producer_epoch = -1
        #: bumped by every InitProducerId: batches rewritten for an older one are rewritten again
        self.generation = 0
        self._sequences: dict[TopicPartition, int] = defaultdict(int)
        self._topics: dict[str, TopicInfo] = {}
        self._in_txn: set[TopicPartition] = set()
        self._txn_open = False

    @property
    def transactional(self) -> bool:
        return self.transactional_id is not None

    # -- producer id ----------------------------------------------------------------------------

    def reset(self) -> None:
        """InitProducerId (again): a new producer id or epoch, every sequence back to 0."""
        request = m.InitProducerIdRequest(
            transactional_id=self.transactional_id,
            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS,
            producer_id=-1,
            producer_epoch=-1,
        )

        def call(conn: BrokerConnection) -> m.InitProducerIdResponse:
            response: m.InitProducerIdResponse = conn.send(request)
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, "InitProducerId")
            return response

        answer = self._txn_call(call) if self.transactional else call(self.cluster._any_conn())
        self.producer_id, self.producer_epoch = answer.producer_id, answer.producer_epoch
        self.generation += 1
        self._sequences.clear()
        self._in_txn.clear()
        self._txn_open = False

    def _txn_call(self, call: Callable[[BrokerConnection], T]) -> T:
        """``call`` at the transaction coordinator, retried while it moves or the previous
        transaction completes (CONCURRENT_TRANSACTIONS); fencing raises TransactionFenced."""
        assert self.transactional_id is not None
        deadline = time.monotonic() + self.cluster.timeout
        delay = 0.01
        while True:
            try:
                return self.cluster._coordinator_call(self.transactional_id, call, _TRANSACTION_KEY)
            except KafkaApiError as exc:
                if exc.error_code in _FENCED:
                    raise TransactionFenced(f"transactional id '{self.transactional_id}': {exc}") from None
                if exc.error_code != ErrorCode.CONCURRENT_TRANSACTIONS or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    # -- records --------------------------------------------------------------------------------

    def forget_metadata(self) -> None:
        self._topics.clear()

    def _leader(self, tp: TopicPartition) -> int:
        info = self._topics.get(tp[0])
        if info is None:
            info = self._topics[tp[0]] = self.metadata.topic(tp[0])
        return info.partitions.get(tp[1], -1)

    def _prepare(self, batch: OutBatch) -> memoryview:
        if batch.data is None or batch.generation != self.generation:
            sequence = self._sequences[batch.tp]
            batch.data = rewrite_batch(
                batch.source.data,
                self.producer_id,
                self.producer_epoch,
                sequence,
                transactional=self.transactional,
            )
            batch.generation = self.generation
            self._sequences[batch.tp] = next_sequence(sequence, batch.source.records)
        return batch.data

    def produce(self, batches: Sequence[OutBatch]) -> list[Result]:
        """Write ``batches`` (at most one per partition), one Produce per leader; every batch
        gets its :class:`Result`."""
        return self.receive(self.send(batches))

    def send(self, batches: Sequence[OutBatch]) -> InFlight:
        """Write ``batches`` (at most one per partition), one Produce per leader, without waiting
        for the answers: :meth:`receive` them, in the order sent. A partition's next batch may be
        sent before this one is answered (its sequence follows; the target refuses it out of
        order if this one fails: OUT_OF_ORDER_SEQUENCE_NUMBER, which the loop then ignores)."""
        by_leader: dict[int, list[OutBatch]] = defaultdict(list)
        done: list[Result] = []
        for b in batches:
            try:
                leader = self._leader(b.tp)
            except KafkaApiError as exc:
                done.append(self._failed(b, exc))
                continue
            except AdminClientError as exc:
                done.append(
                    Result(b, Outcome.RETRY, error=KafkaApiError(ErrorCode.NETWORK_EXCEPTION, str(exc)))
                )
                continue
            if leader < 0:
                self._topics.pop(b.tp[0], None)
                error = KafkaApiError(ErrorCode.LEADER_NOT_AVAILABLE, f"{b.tp[0]}-{b.tp[1]}")
                done.append(Result(b, Outcome.RETRY, error=error))
            else:
                by_leader[leader].append(b)
        if self.transactional:
            self.add_partitions([b.tp for group in by_leader.values() for b in group])
        requests = []
        for leader, group in sorted(by_leader.items()):
            try:
                conn = self.cluster.node(leader)
                requests.append((conn, conn.send_pipelined(self._request(group)), group))
            except AdminClientError as exc:
                self._topics.clear()
                done += _all_retry(group, exc)
        return InFlight(done, requests)

    def receive(self, sent: InFlight) -> list[Result]:
        """The :class:`Result` of every batch of a :meth:`send`."""
        results = list(sent.done)
        wait = self.cluster.timeout + self.request_timeout_ms / 1000
        for conn, pending, group in sent.requests:
            try:
                response = conn.receive(pending, timeout=wait)
            except AdminClientError as exc:
                self._topics.clear()
                results += _all_retry(group, exc)
            else:
                results += self._answers(response, group)
        return results

    def _failed(self, batch: OutBatch, error: KafkaApiError) -> Result:
        if error.retriable:
            self._topics.pop(batch.tp[0], None)
            return Result(batch, Outcome.RETRY, error=error)
        if error.error_code in _RESET:
            return Result(batch, Outcome.RESET, error=error)
        if error.error_code in _FENCED:
            raise TransactionFenced(f"transactional id '{self.transactional_id}': {error}")
        return Result(batch, Outcome.REFUSED, error=error)

    def _request(self, batches: list[OutBatch]) -> m.ProduceRequest:
        topics: dict[str, list[m.ProduceRequest.PartitionProduceData]] = defaultdict(list)
        for b in batches:
            topics[b.tp[0]].append(
                m.ProduceRequest.PartitionProduceData(index=b.tp[1], records=self._prepare(b))
            )
        return m.ProduceRequest(
            transactional_id=self.transactional_id,
            acks=-1,
            timeout_ms=self.request_timeout_ms,
            topic_data=[
                m.ProduceRequest.TopicProduceData(name=t, partition_data=ps) for t, ps in topics.items()
            ],
        )

    def _answers(self, response: m.ProduceResponse, batches: list[OutBatch]) -> list[Result]:
        answers = {(t.name, p.index): p for t in response.responses for p in t.partition_responses}
        out = []
        for b in batches:
            answer = answers.get(b.tp)
            where = f"{b.tp[0]}-{b.tp[1]}"
            if answer is None:
                out.append(
                    Result(b, Outcome.RETRY, error=KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, where))
                )
            elif answer.error_code in (ErrorCode.NONE, ErrorCode.DUPLICATE_SEQUENCE_NUMBER):
                out.append(Result(b, Outcome.WRITTEN, answer.base_offset))
            else:
                detail = f"{where}: {answer.error_message}" if answer.error_message else where
                out.append(self._failed(b, KafkaApiError(answer.error_code, detail)))
        return out

    # -- transactions ---------------------------------------------------------------------------

    def add_partitions(self, tps: Sequence[TopicPartition]) -> None:
        """AddPartitionsToTxn for those of ``tps`` not yet in the open transaction."""
        new = sorted(set(tps) - self._in_txn)
        if not new:
            return
        grouped: dict[str, list[int]] = defaultdict(list)
        for t, p in new:
            grouped[t].append(p)
        request = m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=self.transactional_id or "",
            v3_and_below_producer_id=self.producer_id,
            v3_and_below_producer_epoch=self.producer_epoch,
            v3_and_below_topics=[
                m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name=t, partitions=ps)
                for t, ps in grouped.items()
            ],
        )

        def call(conn: BrokerConnection) -> None:
            response: m.AddPartitionsToTxnResponse = conn.send(request)
            for rt in response.results_by_topic_v3_and_below:
                for rp in rt.results_by_partition:
                    if rp.partition_error_code != ErrorCode.NONE:
                        raise KafkaApiError(
                            rp.partition_error_code, f"AddPartitionsToTxn {rt.name}-{rp.partition_index}"
                        )

        self._txn_call(call)
        self._in_txn.update(new)
        self._txn_open = True

    def commit(self, group_id: str, positions: Mapping[TopicPartition, tuple[int, str]]) -> None:
        """Commit the open transaction with ``positions`` (offset, metadata) for ``group_id``."""
        if positions:
            self._send_offsets(group_id, positions)
        self._end(True)

    def abort(self) -> None:
        self._end(False)

    def _send_offsets(self, group_id: str, positions: Mapping[TopicPartition, tuple[int, str]]) -> None:
        tid = self.transactional_id or ""

        def add(conn: BrokerConnection) -> None:
            response: m.AddOffsetsToTxnResponse = conn.send(
                m.AddOffsetsToTxnRequest(
                    transactional_id=tid,
                    producer_id=self.producer_id,
                    producer_epoch=self.producer_epoch,
                    group_id=group_id,
                )
            )
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, f"AddOffsetsToTxn for group '{group_id}'")

        self._txn_call(add)
        self._txn_open = True
        grouped: dict[str, list[m.TxnOffsetCommitRequest.TxnOffsetCommitRequestPartition]] = defaultdict(list)
        for (t, p), (offset, note) in sorted(positions.items()):
            grouped[t].append(
                m.TxnOffsetCommitRequest.TxnOffsetCommitRequestPartition(
                    partition_index=p, committed_offset=offset, committed_metadata=note
                )
            )
        request = m.TxnOffsetCommitRequest(
            transactional_id=tid,
            group_id=group_id,
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            topics=[
                m.TxnOffsetCommitRequest.TxnOffsetCommitRequestTopic(name=t, partitions=ps)
                for t, ps in grouped.items()
            ],
        )

        def commit(conn: BrokerConnection) -> None:
            response: m.TxnOffsetCommitResponse = conn.send(request)
            for rt in response.topics:
                for rp in rt.partitions:
                    if rp.error_code != ErrorCode.NONE:
                        raise KafkaApiError(rp.error_code, f"TxnOffsetCommit {rt.name}-{rp.partition_index}")

        self.cluster._coordinator_call(group_id, commit)

    def _end(self, committed: bool) -> None:
        request = m.EndTxnRequest(
            transactional_id=self.transactional_id or "",
            producer_id=self.producer_id,
            producer_epoch=self.producer_epoch,
            committed=committed,
        )

        def call(conn: BrokerConnection) -> None:
            response: m.EndTxnResponse = conn.send(request)
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, "EndTxn " + ("commit" if committed else "abort"))

        if self._txn_open:
            self._txn_call(call)
        self._in_txn.clear()
        self._txn_open = False
