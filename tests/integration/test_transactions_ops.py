"""The operator's view of transactions on a live two-worker broker: a confluent-kafka
transactional producer left open (begun, produced, never committed) appears in
``shardbroker transactions list|describe|describe-producers``, in kafka-python's admin
(ListTransactions, DescribeTransactions, DescribeProducers) and in DescribeProducers of our admin
client; ``find-hanging`` does not list it (its coordinator holds it Ongoing, Kafka's rule) but
lists a transaction no coordinator knows (a raw transactional Produce, let in because this
broker runs with ``transaction.partition.verification.enable=false``, as one upgraded from a
version without KIP-890 may hold), which ``abort`` ends: the last stable offset then reaches the
log end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from typing import Any

import confluent_kafka
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardbroker.client.admin import AdminClient
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic, kafka

pytestmark = pytest.mark.integration

TOPIC = "txn-ops"
GHOST_PID = 424242


def cli(broker: BrokerProcess, *argv: str) -> Any:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardbroker.cli.main",
            "transactions",
            *argv,
            "--bootstrap-server",
            broker.bootstrap,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout) if "--json" in argv else out.stdout


def ghost_transaction(admin: AdminClient, partition: int) -> None:
    """A transactional batch of a producer id no coordinator ever handed out."""
    b = RecordBatchBuilder(producer_id=GHOST_PID, producer_epoch=0, base_sequence=0, is_transactional=True)
    b.append(b"left hanging")
    P = m.ProduceRequest
    request = P(
        transactional_id="ghost",
        acks=-1,
        timeout_ms=10000,
        topic_data=[
            P.TopicProduceData(
                name=TOPIC, partition_data=[P.PartitionProduceData(index=partition, records=b.build())]
            )
        ],
    )
    response: m.ProduceResponse = admin.node(admin.topic(TOPIC).partitions[partition]).send(request)
    assert response.responses[0].partition_responses[0].error_code == ErrorCode.NONE


def sample(broker: BrokerProcess, name: str, **labels: str) -> float | None:
    url = f"http://{broker.host}:{broker.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def last_stable_offset(admin: AdminClient, partition: int) -> int:
    """ListOffsets LATEST for a read_committed consumer."""
    L = m.ListOffsetsRequest
    request = L(
        replica_id=-1,
        isolation_level=1,
        topics=[
            L.ListOffsetsTopic(
                name=TOPIC, partitions=[L.ListOffsetsPartition(partition_index=partition, timestamp=-1)]
            )
        ],
    )
    response: m.ListOffsetsResponse = admin.node(admin.topic(TOPIC).partitions[partition]).send(request)
    (p,) = response.topics[0].partitions
    assert p.error_code == ErrorCode.NONE
    return int(p.offset)


@pytest.mark.kafka_api("DescribeProducers", "ListTransactions", "DescribeTransactions", client="kafka-python")
def test_an_open_transaction_seen_by_the_tools(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(config={"transaction.partition.verification.enable": False})
    create_topic(broker.bootstrap, TOPIC, 2)
    producer = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": "ops-open",
            "transaction.timeout.ms": 60000,
        }
    )
    producer.init_transactions(IO_TIMEOUT)
    producer.begin_transaction()
    for i in range(3):
        producer.produce(TOPIC, value=b"v%d" % i, partition=0)
    assert producer.flush(IO_TIMEOUT) == 0

    listed = cli(broker, "list", "--json")
    (mine,) = [t for t in listed if t["transactional_id"] == "ops-open"]
    assert mine["state"] == "Ongoing"
    desc = cli(broker, "describe", "--transactional-id", "ops-open", "--json")
    assert desc["state"] == "Ongoing" and desc["partitions"] == [[TOPIC, 0]] and desc["duration_ms"] >= 0
    assert (desc["producer_id"], desc["coordinator"]) == (mine["producer_id"], mine["coordinator"])
    (state,) = cli(broker, "describe-producers", "--topic", TOPIC, "--partition", "0", "--json")
    assert (state["producer_id"], state["current_txn_start_offset"], state["last_sequence"]) == (
        mine["producer_id"],
        0,
        2,
    )

    # kafka-python's admin over the same APIs
    kp = kafka.KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        tps = kp.describe_producers([kafka.TopicPartition(TOPIC, 0)])
        (ps,) = next(iter(tps.values())).active_producers
        assert (ps.producer_id, ps.current_transaction_start_offset) == (mine["producer_id"], 0)
        by_broker = kp.list_transactions(state_filters=["Ongoing"])
        assert {n: [t.transactional_id for t in ts] for n, ts in by_broker.items() if ts} == {
            mine["coordinator"]: ["ops-open"]
        }
        described = kp.describe_transactions(["ops-open"])["ops-open"]
        assert described.state == "Ongoing" and described.topic_partitions == {kafka.TopicPartition(TOPIC, 0)}
    finally:
        kp.close()

    with AdminClient(broker.bootstrap) as admin:
        # a valid open transaction is not hanging, even past a 0-minute timeout
        assert cli(broker, "find-hanging", "--topic", TOPIC, "--max-transaction-timeout", "0", "--json") == []
        ghost_transaction(admin, 1)
        hanging = cli(broker, "find-hanging", "--topic", TOPIC, "--max-transaction-timeout", "0", "--json")
        assert [(h["partition"], h["producer_id"], h["start_offset"]) for h in hanging] == [(1, GHOST_PID, 0)]
        cli(broker, "abort", "--topic", TOPIC, "--partition", "1", "--start-offset", "0")
        assert cli(broker, "find-hanging", "--topic", TOPIC, "--max-transaction-timeout", "0", "--json") == []
        (ghost,) = admin.describe_producers([(TOPIC, 1)])[(TOPIC, 1)]
        assert (ghost.producer_id, ghost.current_txn_start_offset) == (GHOST_PID, -1)
        # the last stable offset of partition 1 reached its end (the data batch and the marker)
        assert last_stable_offset(admin, 1) == 2

    producer.commit_transaction(IO_TIMEOUT)
    listed = cli(broker, "list", "--json")
    assert [t["state"] for t in listed if t["transactional_id"] == "ops-open"] == ["CompleteCommit"]
    # the coordinator's worker counted it (at once) and its open-transactions gauge is back at 0 (1 s tick)
    worker = str(mine["coordinator"])
    wait_for(
        lambda: (
            {
                "commit": sample(broker, "shardbroker_transactions_total", result="commit", worker=worker),
                "ongoing": sample(broker, "shardbroker_transactions_ongoing", worker=worker),
            }
            == {
                "commit": 1.0,
                "ongoing": 0.0,
            }
            or None
        ),
        IO_TIMEOUT,
        "the commit counted and no transaction open",
    )
    assert sample(broker, "shardbroker_transaction_duration_seconds_count", worker=worker) == 1.0
