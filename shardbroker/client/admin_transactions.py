"""The admin client's transaction calls, as Kafka's Admin and ``kafka-transactions.sh`` make them:
ListTransactions (every broker: each answers for the ids it coordinates), DescribeTransactions
(at the transactional id's coordinator, FindCoordinator key type 1), DescribeProducers (at each
partition's leader, KIP-664) and the abort of a hanging transaction (Kafka's
``Admin.abortTransaction``: WriteTxnMarkers with an ABORT marker, sent to the partition's leader,
which needs CLUSTER_ACTION). `hanging_transactions` is the ``find-hanging`` logic of Kafka's
TransactionsCommand."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from shardbroker.client.admin_cluster import ClusterAdmin, TopicPartition
from shardbroker.client.connection import BrokerConnection, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "OpenTransaction",
    "ProducerState",
    "TransactionAdmin",
    "TransactionDescription",
    "TransactionListing",
]

_TRANSACTION = 1  # FindCoordinator key type


@dataclass(frozen=True)
class TransactionListing:
    transactional_id: str
    producer_id: int
    state: str
    coordinator: int


@dataclass(frozen=True)
class TransactionDescription:
    transactional_id: str
    coordinator: int
    state: str
    producer_id: int
    producer_epoch: int
    timeout_ms: int
    #: -1 when no transaction was ever started
    start_time_ms: int
    partitions: list[TopicPartition]


@dataclass(frozen=True)
class ProducerState:
    producer_id: int
    producer_epoch: int
    last_sequence: int
    last_timestamp: int
    coordinator_epoch: int
    #: first offset of the transaction open in the partition, -1: none
    current_txn_start_offset: int


@dataclass(frozen=True)
class OpenTransaction:
    partition: TopicPartition
    producer: ProducerState


class TransactionAdmin(ClusterAdmin):
    """ListTransactions, DescribeTransactions, DescribeProducers, abort of a transaction."""

    def list_transactions(
        self, states: Sequence[str] = (), producer_ids: Sequence[int] = (), duration_ms: int = -1
    ) -> list[TransactionListing]:
        """The transactions of every broker, filtered as Kafka's ListTransactions (an unknown state
        name is an error here, as Kafka's tool would find nothing)."""
        found: list[TransactionListing] = []
        for node_id in sorted(self.metadata([]).brokers):
            conn = self.node(node_id)
            version = conn.version_for(m.ListTransactionsRequest.API_KEY, "ListTransactions")
            if duration_ms >= 0 and version < 1:
                raise KafkaApiError(ErrorCode.UNSUPPORTED_VERSION, "ListTransactions v1 (a duration filter)")
            request = m.ListTransactionsRequest(
                state_filters=list(states),
                producer_id_filters=list(producer_ids),
                duration_filter=duration_ms,
            )
            response: m.ListTransactionsResponse = conn.send(request, version)
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, f"ListTransactions on {conn.address}")
            if response.unknown_state_filters:
                raise KafkaApiError(
                    ErrorCode.INVALID_REQUEST, f"unknown states: {', '.join(response.unknown_state_filters)}"
                )
            found += [
                TransactionListing(s.transactional_id, s.producer_id, s.transaction_state, node_id)
                for s in response.transaction_states
            ]
        return sorted(found, key=lambda t: t.transactional_id)

    def describe_transaction(self, transactional_id: str) -> TransactionDescription:
        """The coordinator's state of one transactional id (KafkaApiError TRANSACTIONAL_ID_NOT_FOUND
        for an unknown one)."""

        def call(conn: BrokerConnection) -> TransactionDescription:
            request = m.DescribeTransactionsRequest(transactional_ids=[transactional_id])
            response: m.DescribeTransactionsResponse = conn.send(request)
            if len(response.transaction_states) != 1:
                raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, "DescribeTransactions answered no id")
            s = response.transaction_states[0]
            if s.error_code != ErrorCode.NONE:
                raise KafkaApiError(s.error_code, f"transactional id '{transactional_id}'")
            return TransactionDescription(
                transactional_id,
                self._node_of(conn),
                s.transaction_state,
                s.producer_id,
                s.producer_epoch,
                s.transaction_timeout_ms,
                s.transaction_start_time_ms,
                sorted((t.topic, p) for t in s.topics for p in t.partitions),
            )

        return self._coordinator_call(transactional_id, call, _TRANSACTION)

    def describe_producers(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, list[ProducerState]]:
        """The active producers of each partition, asked of its leader."""
        wanted = sorted(set(partitions))
        topics = self.metadata(sorted({t for t, _ in wanted})).topics
        by_leader: dict[int, list[TopicPartition]] = defaultdict(list)
        for tp in wanted:
            info = topics.get(tp[0])
            leader = -1 if info is None else info.partitions.get(tp[1], -1)
            if leader < 0:
                raise KafkaApiError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{tp[0]}-{tp[1]}")
            by_leader[leader].append(tp)
        out: dict[TopicPartition, list[ProducerState]] = {}
        for leader, tps in sorted(by_leader.items()):
            per_topic: dict[str, list[int]] = defaultdict(list)
            for name, index in tps:
                per_topic[name].append(index)
            Rq = m.DescribeProducersRequest
            request = Rq(
                topics=[Rq.TopicRequest(name=t, partition_indexes=ps) for t, ps in per_topic.items()]
            )
            response: m.DescribeProducersResponse = self.node(leader).send(request)
            for t in response.topics:
                for p in t.partitions:
                    error = self._result_error(p.error_code, p.error_message, f"{t.name}-{p.partition_index}")
                    if error is not None:
                        raise error
                    out[(t.name, p.partition_index)] = [
                        ProducerState(
                            s.producer_id,
                            s.producer_epoch,
                            s.last_sequence,
                            s.last_timestamp,
                            s.coordinator_epoch,
                            s.current_txn_start_offset,
                        )
                        for s in p.active_producers
                    ]
        return out

    def hanging_transactions(
        self, partitions: Iterable[TopicPartition], max_timeout_ms: int
    ) -> list[OpenTransaction]:
        """Kafka's ``find-hanging``: the transactions open in ``partitions`` whose last write is
        older than ``max_timeout_ms`` and that no coordinator holds as Ongoing with that
        partition (its producer id unknown to every coordinator, or its transaction over)."""
        now = int(time.time() * 1000)
        candidates = [
            OpenTransaction(tp, s)
            for tp, states in self.describe_producers(partitions).items()
            for s in states
            if s.current_txn_start_offset >= 0 and now - s.last_timestamp > max_timeout_ms
        ]
        if not candidates:
            return []
        ids = {
            t.producer_id: t.transactional_id
            for t in self.list_transactions(producer_ids=sorted({c.producer.producer_id for c in candidates}))
        }
        hanging = []
        for c in candidates:
            tid = ids.get(c.producer.producer_id)
            if tid is not None:
                try:
                    d = self.describe_transaction(tid)
                except KafkaApiError as exc:
                    if exc.error_code != ErrorCode.TRANSACTIONAL_ID_NOT_FOUND:
                        raise
                else:
                    if d.state == "Ongoing" and c.partition in d.partitions:
                        continue
            hanging.append(c)
        return hanging

    def abort_transaction(
        self, partition: TopicPartition, producer_id: int, producer_epoch: int, coordinator_epoch: int
    ) -> None:
        """Write an ABORT marker for the producer's open transaction in ``partition`` (Kafka's
        ``Admin.abortTransaction``: for a hanging transaction its coordinator will not end)."""
        topic, index = partition
        leader = self.topic(topic).partitions.get(index, -1)
        if leader < 0:
            raise KafkaApiError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{topic}-{index}")
        W = m.WriteTxnMarkersRequest
        request = W(
            markers=[
                W.WritableTxnMarker(
                    producer_id=producer_id,
                    producer_epoch=producer_epoch,
                    transaction_result=False,
                    coordinator_epoch=coordinator_epoch,
                    topics=[W.WritableTxnMarkerTopic(name=topic, partition_indexes=[index])],
                )
            ]
        )
        response: m.WriteTxnMarkersResponse = self.node(leader).send(request)
        for marker in response.markers:
            for t in marker.topics:
                for p in t.partitions:
                    error = self._result_error(p.error_code, None, f"abort in {t.name}-{p.partition_index}")
                    if error is not None:
                        raise error
