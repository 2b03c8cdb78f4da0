"""``shardbroker transactions``, in-process, against the fake broker of kafka_fake.py: usage
errors exit 2, the tables of list/describe/describe-producers, find-hanging's decision (Kafka's:
open, idle past the timeout, and not Ongoing with that partition at its coordinator), and the
WriteTxnMarkers request of abort. Opens loopback sockets (the fake broker's)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from tests.unit.kafka_fake import FakeBroker, closed_port, coordinator_at, running_fake
from tests.unit.test_cli_groups import rows


class TxnFake:
    """Topic ``t`` (2 partitions). ``tx`` (producer 7) is Ongoing over t-0; t-0 has producer 7's
    open transaction and producer 9's (known to no coordinator), t-1 producer 8's, closed."""

    def __init__(self, broker: FakeBroker) -> None:
        #: 20 minutes before the test (made per test: the suite may run a module long after import)
        self.old_ms = int(time.time() * 1000) - 20 * 60_000
        self.broker = broker
        broker.topics = {"t": 2}
        broker.versions.update({27: (0, 1), 61: (0, 0), 65: (0, 0), 66: (0, 1)})
        broker.handlers.update(
            {
                10: coordinator_at(broker),
                27: self.markers,
                61: self.producers,
                65: self.describe,
                66: self.list,
            }
        )

    def list(self, version: int, request: Any) -> Message:
        S = m.ListTransactionsResponse.TransactionState
        states = [S(transactional_id="tx", producer_id=7, transaction_state="Ongoing")]
        if request.producer_id_filters:
            states = [s for s in states if s.producer_id in request.producer_id_filters]
        return m.ListTransactionsResponse(transaction_states=states)

    def describe(self, version: int, request: Any) -> Message:
        R = m.DescribeTransactionsResponse
        out = []
        for tid in request.transactional_ids:
            if tid != "tx":
                out.append(
                    R.TransactionState(transactional_id=tid, error_code=ErrorCode.TRANSACTIONAL_ID_NOT_FOUND)
                )
                continue
            out.append(
                R.TransactionState(
                    transactional_id="tx",
                    transaction_state="Ongoing",
                    transaction_timeout_ms=60000,
                    transaction_start_time_ms=self.old_ms,
                    producer_id=7,
                    producer_epoch=3,
                    topics=[R.TopicData(topic="t", partitions=[0])],
                )
            )
        return R(transaction_states=out)

    def producers(self, version: int, request: Any) -> Message:
        R = m.DescribeProducersResponse
        P = R.ProducerState
        held = {
            0: [P(producer_id=7, producer_epoch=3, last_sequence=4), P(producer_id=9, coordinator_epoch=-1)],
            1: [P(producer_id=8, last_sequence=9)],
        }
        for p in held[0]:
            p.current_txn_start_offset = 10 if p.producer_id == 7 else 12
        for p in (*held[0], *held[1]):
            p.last_timestamp = self.old_ms
        held[0][0].coordinator_epoch = 2
        return R(
            topics=[
                R.TopicResponse(
                    name=t.name,
                    partitions=[
                        R.PartitionResponse(partition_index=p, active_producers=held[p])
                        for p in t.partition_indexes
                    ],
                )
                for t in request.topics
            ]
        )

    def markers(self, version: int, request: Any) -> Message:
        R = m.WriteTxnMarkersResponse
        return R(
            markers=[
                R.WritableTxnMarkerResult(
                    producer_id=mk.producer_id,
                    topics=[
                        R.WritableTxnMarkerTopicResult(
                            name=t.name,
                            partitions=[
                                R.WritableTxnMarkerPartitionResult(partition_index=p)
                                for p in t.partition_indexes
                            ],
                        )
                        for t in mk.topics
                    ],
                )
                for mk in request.markers
            ]
        )


@pytest.fixture
def tfake() -> Iterator[TxnFake]:
    with running_fake() as broker:
        yield TxnFake(broker)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["transactions", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    "argv",
    [
        ["describe"],
        ["describe-producers", "--topic", "t"],
        ["abort", "--topic", "t", "--partition", "0"],
        ["abort", "--topic", "t", "--partition", "0", "--producer-id", "9"],
        ["abort", "--topic", "t", "--partition", "0", "--start-offset", "1", "--producer-id", "9"],
        ["find-hanging"],
        ["find-hanging", "--partition", "0", "--broker-id", "0"],
        ["find-hanging", "--topic", "t", "--max-transaction-timeout", "-1"],
        ["list", "--duration-filter", "soon"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{closed_port()}")
    assert code == 2, err
    assert "error" in err


def test_list_and_describe(capsys: pytest.CaptureFixture[str], tfake: TxnFake) -> None:
    bs = ["--bootstrap-server", tfake.broker.address]
    code, out, _ = run(capsys, "list", *bs)
    assert code == 0
    assert rows(out) == [
        ["TransactionalId", "Coordinator", "ProducerId", "TransactionState"],
        ["tx", "0", "7", "Ongoing"],
    ]
    code, out, _ = run(capsys, "list", "--duration-filter", "5000", *bs)
    assert code == 0 and tfake.broker.apis(66)[-1][1].duration_filter == 5000
    code, out, _ = run(capsys, "describe", "--transactional-id", "tx", *bs)
    header, row = rows(out)
    assert code == 0 and header[0] == "CoordinatorId" and header[-1] == "TopicPartitions"
    assert row[:6] == ["0", "tx", "7", "3", "Ongoing", "60000"] and row[-1] == "t-0"
    assert int(row[7]) >= 20 * 60_000  # the transaction's duration
    assert tfake.broker.apis(10)[-1][1].key_type == 1  # FindCoordinator of a transactional id
    code, out, err = run(capsys, "describe", "--transactional-id", "nope", *bs)
    assert code == 1 and "TRANSACTIONAL_ID_NOT_FOUND" in err


def test_describe_producers(capsys: pytest.CaptureFixture[str], tfake: TxnFake) -> None:
    bs = ["--bootstrap-server", tfake.broker.address]
    code, out, _ = run(capsys, "describe-producers", "--topic", "t", "--partition", "1", *bs)
    assert code == 0
    assert rows(out)[1] == ["8", "0", "0", "9", str(tfake.old_ms), "-"]
    code, out, _ = run(capsys, "describe-producers", "--topic", "t", "--partition", "0", "--json", *bs)
    assert [p["current_txn_start_offset"] for p in json.loads(out)] == [10, 12]


def test_find_hanging(capsys: pytest.CaptureFixture[str], tfake: TxnFake) -> None:
    bs = ["--bootstrap-server", tfake.broker.address]
    # producer 7's transaction is Ongoing with t-0 at its coordinator: not hanging; 9's is
    code, out, _ = run(capsys, "find-hanging", "--topic", "t", *bs)
    assert code == 0
    header, row = rows(out)
    assert header == [
        "Topic",
        "Partition",
        "ProducerId",
        "ProducerEpoch",
        "CoordinatorEpoch",
        "StartOffset",
        "LastTimestamp",
        "Duration(min)",
    ]
    assert row[:6] == ["t", "0", "9", "0", "-1", "12"] and row[7] == "20"
    assert run(capsys, "find-hanging", "--broker-id", "0", "--json", *bs)[1].count('"producer_id": 9') == 1
    # younger than the timeout: nothing
    code, out, _ = run(
        capsys, "find-hanging", "--topic", "t", "--partition", "0", "--max-transaction-timeout", "30", *bs
    )
    assert code == 0 and rows(out) == [header]


def test_abort(capsys: pytest.CaptureFixture[str], tfake: TxnFake) -> None:
    bs = ["--bootstrap-server", tfake.broker.address]
    argv = ["abort", "--topic", "t", "--partition", "0", *bs]
    code, out, _ = run(
        capsys, *argv, "--producer-id", "9", "--producer-epoch", "0", "--coordinator-epoch", "-1"
    )
    assert code == 0 and "producer 9" in out
    (marker,) = tfake.broker.apis(27)[-1][1].markers
    assert (marker.producer_id, marker.producer_epoch, marker.coordinator_epoch) == (9, 0, -1)
    assert marker.transaction_result is False and [(t.name, t.partition_indexes) for t in marker.topics] == [
        ("t", [0])
    ]
    code, out, _ = run(capsys, *argv, "--start-offset", "10")
    (marker,) = tfake.broker.apis(27)[-1][1].markers
    assert code == 0 and (marker.producer_id, marker.producer_epoch, marker.coordinator_epoch) == (7, 3, 2)
    code, _, err = run(capsys, *argv, "--start-offset", "11")
    assert code == 1 and "no transaction open in t-0 at offset 11" in err


@pytest.mark.parametrize("action", ["list", "describe", "describe-producers", "abort", "find-hanging"])
def test_every_action_takes_the_connection_options(capsys: pytest.CaptureFixture[str], action: str) -> None:
    code, out, _ = run(capsys, action, "--help")
    assert code == 0 and "--command-config" in out and "--bootstrap-server" in out
