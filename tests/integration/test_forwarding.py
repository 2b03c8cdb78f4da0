"""Forwarding (broker/forwarding.py) on a real two-worker broker, driven with raw Produce requests
to the worker that does NOT own the partition: the owner's answer comes back (offsets, the
log-append time of a LogAppendTime topic, an idempotent retry's original offset, the owner's own
refusals), and a killed owner gives a retriable error, then forwarding resumes with its successor.

Starts broker processes; opens sockets and shared memory (through the broker).
"""

from __future__ import annotations

import os
import signal
import time
import warnings

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_topics import NewTopic
from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, wait_for

pytestmark = pytest.mark.integration

P = m.ProduceRequest


def produce(
    conn: BrokerConnection, topic: str, partition: int, batch: bytes
) -> m.ProduceResponse.PartitionProduceResponse:
    data = P.TopicProduceData(
        name=topic, partition_data=[P.PartitionProduceData(index=partition, records=batch)]
    )
    response = conn.send(P(acks=-1, timeout_ms=10_000, topic_data=[data]))
    (answer,) = response.responses[0].partition_responses
    return answer


def batch(*values: bytes, producer_id: int = -1, sequence: int = -1) -> bytes:
    b = RecordBatchBuilder(
        producer_id=producer_id, producer_epoch=0 if producer_id >= 0 else -1, base_sequence=sequence
    )
    for v in values:
        b.append(v)
    return b.build()


def not_owner(broker: BrokerProcess, admin: AdminClient, topic: str) -> tuple[BrokerConnection, int]:
    """A connection to the worker that does not own partition 0, and the owner's node id."""
    owner = admin.topic(topic).partitions[0]
    return BrokerConnection(broker.host, broker.ports[1 - owner]).connect(), owner


def test_forwarded_answers_are_the_owners(broker: BrokerProcess) -> None:
    with AdminClient(broker.bootstrap) as admin:
        timed = {"message.timestamp.type": "LogAppendTime", "max.message.bytes": "2000"}
        created = admin.create_topics([NewTopic("fw", 1), NewTopic("fw-time", 1, configs=timed)])
        assert created == {"fw": None, "fw-time": None}
        conn, _ = not_owner(broker, admin, "fw")
        first = produce(conn, "fw", 0, batch(b"a", b"b"))
        assert (first.error_code, first.base_offset) == (0, 0)
        assert produce(conn, "fw", 0, batch(b"c")).base_offset == 2
        # Idempotence is the owner's: a retried batch gets its original offset, a gap is refused.
        pid = admin_pid(conn)
        assert produce(conn, "fw", 0, batch(b"d", producer_id=pid, sequence=0)).base_offset == 3
        again = produce(conn, "fw", 0, batch(b"d", producer_id=pid, sequence=0))
        assert (again.error_code, again.base_offset) == (0, 3)
        gap = produce(conn, "fw", 0, batch(b"e", producer_id=pid, sequence=5))
        assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
        conn.close()

        conn, _ = not_owner(broker, admin, "fw-time")
        before = int(time.time() * 1000)
        stamped = produce(conn, "fw-time", 0, batch(b"t"))
        assert stamped.error_code == 0 and before <= stamped.log_append_time_ms <= int(time.time() * 1000) + 1
        too_big = produce(conn, "fw-time", 0, batch(b"x" * 5000))
        assert too_big.error_code == ErrorCode.MESSAGE_TOO_LARGE  # the owner's topic config decides
        conn.close()
    assert "forwarding to worker" in broker.output()


def admin_pid(conn: BrokerConnection) -> int:
    response = conn.send(m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000))
    assert response.error_code == 0
    return int(response.producer_id)


def test_a_killed_owner_gives_a_retriable_error_then_its_successor_is_used(broker: BrokerProcess) -> None:
    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic("fw-kill", 1)])
        conn, owner = not_owner(broker, admin, "fw-kill")
        assert produce(conn, "fw-kill", 0, batch(b"1")).error_code == 0
        os.kill(broker.worker_pid(owner), signal.SIGKILL)
        answers = []

        def forwarded() -> bool | None:
            answer = produce(conn, "fw-kill", 0, batch(b"2"))
            answers.append(answer.error_code)
            return answer.error_code == 0 or None

        wait_for(forwarded, 60, "a forwarded Produce succeeding after the owner's restart", interval=0.2)
        assert all(ErrorCode(code).retriable for code in answers[:-1]), answers
        conn.close()


@pytest.mark.kafka_api("AlterPartitionReassignments", "ListPartitionReassignments", client="kafka-python")
def test_kafka_python_admin_moves_and_lists_through_kafkas_reassignment_api(broker: BrokerProcess) -> None:
    with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.admin import KafkaAdminClient
        from kafka.structs import TopicPartition

    with AdminClient(broker.bootstrap) as admin:
        admin.create_topics([NewTopic("kp", 2)])
        owner = admin.topic("kp").partitions[0]
        kadmin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            moved = kadmin.alter_partition_reassignments({TopicPartition("kp", 0): [1 - owner]})
            assert moved == {TopicPartition("kp", 0): None}
            assert admin.topic("kp").partitions[0] == 1 - owner
            assert kadmin.list_partition_reassignments() == {}  # done when answered
            refused = kadmin.alter_partition_reassignments({TopicPartition("kp", 1): [0, 1]})
            assert refused[TopicPartition("kp", 1)].errno == ErrorCode.INVALID_REPLICA_ASSIGNMENT, refused
        finally:
            kadmin.close()
