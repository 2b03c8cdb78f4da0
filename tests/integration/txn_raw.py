"""A transactional producer spoken in raw requests through shardbroker's own protocol client
(client/connection.py), for tests that need each request and each answer exact: InitProducerId,
AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn and transactional Produce at the
versions a test chooses, with the error codes returned, never raised. Plus what the tests check
afterwards: a transactional id's state (DescribeTransactions), a partition's last stable offset
and high watermark (ListOffsets with each isolation level), and what a confluent-kafka
read_committed consumer reads. Opens sockets.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import confluent_kafka

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import BrokerConnection, BrokerUnreachable, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, wait_for

__all__ = [
    "RawTxnProducer",
    "offsets",
    "read_committed",
    "transaction_state",
    "transactional_id_on",
]

TopicPartition = tuple[str, int]
_NOT_YET = {
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ErrorCode.NOT_COORDINATOR,
}


def connect(broker: BrokerProcess, node: int) -> BrokerConnection:
    return BrokerConnection(broker.host, broker.ports[node], timeout=30.0).connect()


def find_coordinator(broker: BrokerProcess, transactional_id: str) -> int:
    """The node coordinating ``transactional_id`` (FindCoordinator key type 1; the first one
    creates ``__transaction_state``)."""

    def ask() -> int | None:
        with connect(broker, 0) as conn:
            answer: m.FindCoordinatorResponse = conn.send(
                m.FindCoordinatorRequest(key_type=1, coordinator_keys=[transactional_id]), 4
            )
        (c,) = answer.coordinators
        if c.error_code in _NOT_YET:
            return None
        assert c.error_code == ErrorCode.NONE, ErrorCode(c.error_code).name
        return int(c.node_id)

    return wait_for(ask, 60, f"the coordinator of {transactional_id!r}", interval=0.1)


def transactional_id_on(broker: BrokerProcess, node: int, prefix: str) -> str:
    """The first of ``prefix-0``, ``prefix-1``... that worker ``node`` coordinates."""
    for i in range(200):
        tid = f"{prefix}-{i}"
        if find_coordinator(broker, tid) == node:
            return tid
    raise AssertionError(f"no transactional id {prefix}-* lands on worker {node}")


def transaction_state(broker: BrokerProcess, transactional_id: str) -> tuple[str, list[TopicPartition]]:
    """``(state, partitions)`` of the id at its coordinator (DescribeTransactions), or the error
    name in place of the state (TRANSACTIONAL_ID_NOT_FOUND...)."""
    with AdminClient(broker.bootstrap, timeout=30.0) as admin:
        try:
            d = admin.describe_transaction(transactional_id)
        except KafkaApiError as exc:
            return exc.name, []
    return d.state, d.partitions


def wait_state(broker: BrokerProcess, transactional_id: str, state: str, timeout: float = 60) -> None:
    def reached() -> bool:
        with contextlib.suppress(BrokerUnreachable, KafkaApiError, ConnectionError):
            return transaction_state(broker, transactional_id)[0] == state
        return False

    wait_for(reached, timeout, f"{transactional_id!r} in {state}", interval=0.1)


def offsets(broker: BrokerProcess, topic: str, partition: int) -> tuple[int, int]:
    """``(last stable offset, high watermark)``: ListOffsets LATEST at the leader, read_committed
    then read_uncommitted."""
    L = m.ListOffsetsRequest
    found = []
    with AdminClient(broker.bootstrap, timeout=30.0) as admin:
        leader = admin.topic(topic).partitions[partition]
        conn = admin.node(leader)
        for isolation in (1, 0):
            request = L(
                replica_id=-1,
                isolation_level=isolation,
                topics=[
                    L.ListOffsetsTopic(
                        name=topic,
                        partitions=[L.ListOffsetsPartition(partition_index=partition, timestamp=-1)],
                    )
                ],
            )
            response: m.ListOffsetsResponse = conn.send(request)
            (p,) = response.topics[0].partitions
            assert p.error_code == ErrorCode.NONE, ErrorCode(p.error_code).name
            found.append(int(p.offset))
    return found[0], found[1]


def read_committed(
    bootstrap: str, topic: str, partitions: int, want: int, settle: float = 1.0
) -> list[bytes]:
    """Every value a confluent-kafka read_committed consumer reads from the start of ``topic``:
    until ``want`` values came, then ``settle`` seconds more (so a duplicate or an aborted record
    after them would be seen too)."""
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "txn-raw-unused",  # assign only: never joined
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    got: list[bytes] = []
    try:
        consumer.assign(
            [
                confluent_kafka.TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                for p in range(partitions)
            ]
        )
        deadline = time.monotonic() + 60
        settled: float | None = None
        while settled is None or time.monotonic() < settled:
            assert time.monotonic() < deadline, f"read_committed: {len(got)} of {want} values"
            for msg in consumer.consume(1000, timeout=0.2):
                assert msg.error() is None, msg.error()
                got.append(msg.value())
            if settled is None and len(got) >= want:
                settled = time.monotonic() + settle
    finally:
        consumer.close()
    return got


class RawTxnProducer:
    """One transactional id's producer, request by request, connected to its coordinator."""

    def __init__(self, broker: BrokerProcess, transactional_id: str) -> None:
        self.broker = broker
        self.transactional_id = transactional_id
        self.coordinator = find_coordinator(broker, transactional_id)
        self.conn = connect(broker, self.coordinator)
        self.admin = AdminClient(broker.bootstrap, timeout=30.0)
        self.producer_id = -1
        self.epoch = -1
        self.sequences: dict[TopicPartition, int] = {}

    def close(self) -> None:
        self.conn.close()
        self.admin.close()

    def __enter__(self) -> RawTxnProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def init(self, timeout_ms: int = 60_000, version: int = 4) -> int:
        """InitProducerId; on success the producer takes the id and epoch answered."""
        answer: m.InitProducerIdResponse = self.conn.send(
            m.InitProducerIdRequest(
                transactional_id=self.transactional_id, transaction_timeout_ms=timeout_ms
            ),
            version,
        )
        if answer.error_code == ErrorCode.NONE:
            self.producer_id, self.epoch = answer.producer_id, answer.producer_epoch
            self.sequences.clear()
        return int(answer.error_code)

    def init_retrying(self, timeout_ms: int = 60_000) -> None:
        """InitProducerId again while it answers CONCURRENT_TRANSACTIONS (a fence in progress)."""

        def once() -> bool | None:
            code = self.init(timeout_ms)
            if code == ErrorCode.CONCURRENT_TRANSACTIONS:
                return None
            assert code == ErrorCode.NONE, ErrorCode(code).name
            return True

        wait_for(once, 30, f"InitProducerId of {self.transactional_id!r}", interval=0.1)

    def add(
        self, partitions: Iterable[TopicPartition], version: int = 3, epoch: int | None = None
    ) -> dict[TopicPartition, int]:
        """AddPartitionsToTxn (v0-v3): each partition's error code."""
        by_topic: dict[str, list[int]] = {}
        for topic, index in partitions:
            by_topic.setdefault(topic, []).append(index)
        R = m.AddPartitionsToTxnRequest
        answer: m.AddPartitionsToTxnResponse = self.conn.send(
            R(
                v3_and_below_transactional_id=self.transactional_id,
                v3_and_below_producer_id=self.producer_id,
                v3_and_below_producer_epoch=self.epoch if epoch is None else epoch,
                v3_and_below_topics=[
                    R.AddPartitionsToTxnTopic(name=t, partitions=ps) for t, ps in by_topic.items()
                ],
            ),
            version,
        )
        return {
            (t.name, p.partition_index): int(p.partition_error_code)
            for t in answer.results_by_topic_v3_and_below
            for p in t.results_by_partition
        }

    def end(self, commit: bool, version: int = 3, epoch: int | None = None) -> int:
        answer: m.EndTxnResponse = self.conn.send(
            m.EndTxnRequest(
                transactional_id=self.transactional_id,
                producer_id=self.producer_id,
                producer_epoch=self.epoch if epoch is None else epoch,
                committed=commit,
            ),
            version,
        )
        return int(answer.error_code)

    def add_offsets(self, group: str, version: int = 3) -> int:
        answer: m.AddOffsetsToTxnResponse = self.conn.send(
            m.AddOffsetsToTxnRequest(
                transactional_id=self.transactional_id,
                producer_id=self.producer_id,
                producer_epoch=self.epoch,
                group_id=group,
            ),
            version,
        )
        return int(answer.error_code)

    def commit_offsets(
        self,
        group: str,
        committed: Mapping[TopicPartition, int],
        *,
        generation_id: int = -1,
        member_id: str = "",
        version: int = 3,
    ) -> dict[TopicPartition, int]:
        """TxnOffsetCommit at the group's coordinator: each partition's error code."""
        R = m.TxnOffsetCommitRequest
        by_topic: dict[str, list[Any]] = {}
        for (topic, index), offset in committed.items():
            by_topic.setdefault(topic, []).append(
                R.TxnOffsetCommitRequestPartition(partition_index=index, committed_offset=offset)
            )
        request = R(
            transactional_id=self.transactional_id,
            group_id=group,
            producer_id=self.producer_id,
            producer_epoch=self.epoch,
            generation_id=generation_id,
            member_id=member_id,
            topics=[R.TxnOffsetCommitRequestTopic(name=t, partitions=ps) for t, ps in by_topic.items()],
        )
        conn = self.admin.node(self.admin.find_coordinator(group).node_id)
        answer: m.TxnOffsetCommitResponse = conn.send(request, version)
        return {(t.name, p.partition_index): int(p.error_code) for t in answer.topics for p in t.partitions}

    def produce(self, topic: str, partition: int, values: Iterable[bytes], epoch: int | None = None) -> int:
        """One transactional batch to the partition's leader (acks=-1): its error code. The
        sequence moves on only when it was written."""
        tp = (topic, partition)
        batch = RecordBatchBuilder(
            producer_id=self.producer_id,
            producer_epoch=self.epoch if epoch is None else epoch,
            base_sequence=self.sequences.get(tp, 0),
            is_transactional=True,
        )
        count = 0
        for value in values:
            batch.append(value)
            count += 1
        P = m.ProduceRequest
        request = P(
            transactional_id=self.transactional_id,
            acks=-1,
            timeout_ms=30_000,
            topic_data=[
                P.TopicProduceData(
                    name=topic,
                    partition_data=[P.PartitionProduceData(index=partition, records=batch.build())],
                )
            ],
        )
        answer: m.ProduceResponse = self.admin.node(self.admin.topic(topic).partitions[partition]).send(
            request
        )
        code = int(answer.responses[0].partition_responses[0].error_code)
        if code == ErrorCode.NONE:
            self.sequences[tp] = self.sequences.get(tp, 0) + count
        return code
