"""Transactions v2 (KIP-890 part 2) against a live two-worker broker. No client installed here
sends EndTxn v5 yet (librdkafka, kafka-python and aiokafka keep to v1), so the test is that
client, written with shardbroker's own protocol connection the way Kafka's 4.x producer does it:
InitProducerId, AddPartitionsToTxn, transactional Produce to each partition's leader, EndTxn v5,
and the next transaction at the epoch EndTxn answered. What it checks is what the bump is for: a
Produce of an ended transaction that arrives late is refused at the partition (on both workers,
one of which gets its marker through the rings), and real consumers (confluent-kafka,
read_committed) see the committed records and none of the aborted ones."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import consume_confluent, create_topic
from tests.integration.test_transactions import markers

pytestmark = pytest.mark.integration

TOPIC = "txn-v2"
TID = "it-v2"
COMMITTED = {"isolation.level": "read_committed"}
CONCURRENT = int(ErrorCode.CONCURRENT_TRANSACTIONS)


def retrying(call: Callable[[], Any], code: Callable[[Any], int]) -> Any:
    """``call()`` again while it answers CONCURRENT_TRANSACTIONS (the markers of the previous
    transaction are still being written), as Kafka's producer does."""
    deadline = time.monotonic() + 30
    while True:
        answer = call()
        if code(answer) != CONCURRENT or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


class TransactionsV2Client:
    """A transactional producer of transactions v2 over raw requests (one connection per node)."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.bootstrap = BrokerConnection(broker.host, broker.base_port).connect()
        md = self.bootstrap.send(
            m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=TOPIC)])
        )
        self.nodes = {b.node_id: (b.host, b.port) for b in md.brokers}
        self.leaders = {p.partition_index: p.leader_id for p in md.topics[0].partitions}
        self.conns: dict[int, BrokerConnection] = {}
        found = self.bootstrap.send(m.FindCoordinatorRequest(key_type=1, coordinator_keys=[TID]), 4)
        self.coordinator = self.conn(found.coordinators[0].node_id)
        init = self.coordinator.send(
            m.InitProducerIdRequest(transactional_id=TID, transaction_timeout_ms=60000)
        )
        assert init.error_code == 0
        self.pid, self.epoch = init.producer_id, init.producer_epoch
        self.seq = dict.fromkeys(self.leaders, 0)

    def conn(self, node: int) -> BrokerConnection:
        if node not in self.conns:
            self.conns[node] = BrokerConnection(*self.nodes[node]).connect()
        return self.conns[node]

    def close(self) -> None:
        for c in [self.bootstrap, *self.conns.values()]:
            c.close()

    def add_partitions(self) -> None:
        topic = m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(
            name=TOPIC, partitions=sorted(self.leaders)
        )
        request = m.AddPartitionsToTxnRequest(
            v3_and_below_transactional_id=TID,
            v3_and_below_producer_id=self.pid,
            v3_and_below_producer_epoch=self.epoch,
            v3_and_below_topics=[topic],
        )
        answer = retrying(
            lambda: self.coordinator.send(request, 3),
            lambda a: a.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        )
        codes = {
            p.partition_error_code
            for t in answer.results_by_topic_v3_and_below
            for p in t.results_by_partition
        }
        assert codes == {0}

    def produce(
        self, partition: int, values: list[bytes], epoch: int | None = None, seq: int | None = None
    ) -> int:
        """Error code of one transactional batch (at the client's epoch and next sequence unless given)."""
        b = RecordBatchBuilder(
            producer_id=self.pid,
            producer_epoch=self.epoch if epoch is None else epoch,
            base_sequence=self.seq[partition] if seq is None else seq,
            is_transactional=True,
        )
        for v in values:
            b.append(v)
        request = m.ProduceRequest(
            transactional_id=TID,
            acks=-1,
            timeout_ms=10_000,
            topic_data=[
                m.ProduceRequest.TopicProduceData(
                    name=TOPIC,
                    partition_data=[
                        m.ProduceRequest.PartitionProduceData(index=partition, records=b.build())
                    ],
                )
            ],
        )
        code: int = (
            self.conn(self.leaders[partition]).send(request, 9).responses[0].partition_responses[0].error_code
        )
        if code == 0 and seq is None:
            self.seq[partition] += len(values)
        return code

    def end(self, commit: bool) -> Any:
        answer = self.coordinator.send(
            m.EndTxnRequest(
                transactional_id=TID, producer_id=self.pid, producer_epoch=self.epoch, committed=commit
            ),
            5,
        )
        if answer.error_code == 0:
            if (answer.producer_id, answer.producer_epoch) != (self.pid, self.epoch):
                self.seq = dict.fromkeys(self.seq, 0)  # a new epoch starts at sequence 0
            self.pid, self.epoch = answer.producer_id, answer.producer_epoch
        return answer


@pytest.fixture
def client(broker: BrokerProcess) -> Iterator[TransactionsV2Client]:
    create_topic(broker.bootstrap, TOPIC, 2)
    c = TransactionsV2Client(broker)
    try:
        assert set(c.leaders.values()) == {0, 1}, "both workers lead a partition"
        yield c
    finally:
        c.close()


def test_every_end_bumps_the_epoch_and_fences_late_produces(
    broker: BrokerProcess, client: TransactionsV2Client
) -> None:
    first = client.epoch
    client.add_partitions()
    for p in (0, 1):
        assert client.produce(p, [b"c%d-%d" % (p, i) for i in range(3)]) == 0
    committed = client.end(commit=True)
    assert (committed.error_code, committed.producer_id, committed.producer_epoch) == (
        0,
        client.pid,
        first + 1,
    )
    # a retry of the same EndTxn (the answer was lost) gets the same answer
    again = m.EndTxnRequest(
        transactional_id=TID, producer_id=client.pid, producer_epoch=first, committed=True
    )
    retry = retrying(lambda: client.coordinator.send(again, 5), lambda a: a.error_code)
    assert (retry.error_code, retry.producer_epoch) == (0, first + 1)

    # the next transaction, at the answered epoch, is aborted
    client.add_partitions()
    for p in (0, 1):
        assert client.produce(p, [b"a%d" % p]) == 0
    aborted = client.end(commit=False)
    assert (aborted.error_code, aborted.producer_epoch) == (0, first + 2)
    # a Produce of the first transaction arriving now is refused on both workers, not taken
    # into whatever transaction comes next
    for p in (0, 1):
        assert client.produce(p, [b"late"], epoch=first, seq=3) == ErrorCode.INVALID_PRODUCER_EPOCH

    # and one more committed transaction after the aborted one
    client.add_partitions()
    for p in (0, 1):
        assert client.produce(p, [b"z%d" % p]) == 0
    assert client.end(commit=True).producer_epoch == first + 3

    for p in (0, 1):
        found = markers(broker, TOPIC, p)
        want = [
            ("COMMIT", client.pid, first + 1),
            ("ABORT", client.pid, first + 2),
            ("COMMIT", client.pid, first + 3),
        ]
        assert found == want, found
    # offsets: 0-2 committed, 3 marker, 4 aborted, 5 marker, 6 committed, 7 marker
    records = consume_confluent(broker.bootstrap, TOPIC, {0: 7, 1: 7}, COMMITTED)
    want_values = [b"c%d-%d" % (p, i) for p in (0, 1) for i in range(3)] + [b"z0", b"z1"]
    assert sorted(r.value for r in records) == sorted(want_values)
