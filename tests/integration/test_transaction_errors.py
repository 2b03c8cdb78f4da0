"""Bad transactional requests against a live two-worker broker, each sent and answered exactly
(shardbroker's own protocol client, tests/integration/txn_raw.py): every one gets Kafka's error
code, and nothing is written (the transaction's state at its coordinator, the partitions' high
watermarks and the group's offsets are checked afterwards). Kafka's answers are those of its
TransactionCoordinator (handleEndTransaction, handleAddPartitionsToTxn, handleInitProducerId),
KafkaApis, GroupCoordinator.doTxnCommitOffsets and ProducerAppendInfo (3.x, transactions v1):

- EndTxn of an unknown id: INVALID_PRODUCER_ID_MAPPING; with no transaction open (Empty), or
  abort after a commit completed: INVALID_TXN_STATE; the commit sent again: NONE (a retry).
  While the commit's markers are on their way (PrepareCommit): abort INVALID_TXN_STATE, commit
  and AddPartitionsToTxn CONCURRENT_TRANSACTIONS.
- AddPartitionsToTxn naming a missing topic or partition: UNKNOWN_TOPIC_OR_PARTITION for it,
  OPERATION_NOT_ATTEMPTED for the others, none added.
- TxnOffsetCommit with a generation newer than the group's: ILLEGAL_GENERATION; from a member the
  group does not know: UNKNOWN_MEMBER_ID; those offsets never become visible.
- A zombie (an older epoch after another producer initialized the same id): PRODUCER_FENCED on
  InitProducerId (KIP-360 re-init), AddPartitionsToTxn and EndTxn (INVALID_PRODUCER_EPOCH to the
  versions before KIP-588), INVALID_PRODUCER_EPOCH on Produce.
- A transactional id of more than 32767 bytes: Kafka's request parser refuses any string longer
  than that (the ``__transaction_state`` key has an int16 length) and closes the connection; one
  of exactly 32767 bytes is a transactional id like any other.
- transaction.timeout.ms above transaction.max.timeout.ms, or not positive:
  INVALID_TRANSACTION_TIMEOUT, the id never created.
- WriteTxnMarkers for a producer id the partition never saw: Kafka writes the marker (NONE;
  ProducerAppendInfo.appendEndTxnMarker checks only the epochs, and a transaction with no data
  changes neither the LSO nor the aborted index); a later marker of an older coordinator epoch is
  TRANSACTION_COORDINATOR_FENCED and not written.

And issue 16's timeout test: a confluent-kafka producer that never ends its transaction is
aborted after its transaction.timeout.ms, and then fenced (PRODUCER_FENCED on EndTxn,
INVALID_PRODUCER_EPOCH on Produce).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import confluent_kafka
import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import BrokerConnection, BrokerUnreachable
from shardbroker.client.consumer import TcpConsumer
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.integration.broker_process import BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic
from tests.integration.test_transactions_ops import sample
from tests.integration.txn_raw import (
    RawTxnProducer,
    find_coordinator,
    offsets,
    read_committed,
    transaction_state,
    transactional_id_on,
    wait_state,
)

pytestmark = pytest.mark.integration

E = ErrorCode
TOPIC = "txn-errors"
PARTITIONS = 4
MAX_TIMEOUT_MS = 60_000
CONFIG = {
    "transaction.state.log.num.partitions": 4,
    "offsets.topic.num.partitions": 4,
    "group.initial.rebalance.delay.ms": 0,
    "transaction.max.timeout.ms": MAX_TIMEOUT_MS,
    # the timeout test: timed-out transactions looked for every 200 ms (Kafka: 10 s)
    "transaction.abort.timed.out.transaction.cleanup.interval.ms": 200,
}
TIMEOUT_MS = 3000


@pytest.fixture(scope="module")
def broker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    broker = module_broker_factory(workers=2, config=CONFIG)
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    return broker


@pytest.fixture
def producer(
    broker: BrokerProcess, request: pytest.FixtureRequest
) -> Iterator[Callable[..., RawTxnProducer]]:
    made: list[RawTxnProducer] = []

    def make(tid: str | None = None) -> RawTxnProducer:
        p = RawTxnProducer(broker, tid or f"{request.node.name}-{len(made)}")
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def leaders(broker: BrokerProcess) -> dict[int, int]:
    with AdminClient(broker.bootstrap) as admin:
        return dict(admin.topic(TOPIC).partitions)


def high_watermarks(broker: BrokerProcess) -> dict[int, int]:
    return {p: offsets(broker, TOPIC, p)[1] for p in range(PARTITIONS)}


def test_end_txn_out_of_order(broker: BrokerProcess, producer: Callable[..., RawTxnProducer]) -> None:
    unknown = producer()
    unknown.producer_id, unknown.epoch = 1, 0
    assert unknown.end(commit=True) == E.INVALID_PRODUCER_ID_MAPPING

    p = producer()
    assert p.init() == E.NONE
    before = high_watermarks(broker)
    assert p.end(commit=True) == E.INVALID_TXN_STATE  # nothing open
    assert p.end(commit=False) == E.INVALID_TXN_STATE
    assert transaction_state(broker, p.transactional_id) == ("Empty", [])
    assert high_watermarks(broker) == before  # no marker anywhere

    assert p.add([(TOPIC, 0)]) == {(TOPIC, 0): E.NONE}
    assert p.produce(TOPIC, 0, [b"committed"]) == E.NONE
    assert p.end(commit=True) == E.NONE
    wait_state(broker, p.transactional_id, "CompleteCommit")
    assert p.end(commit=True) == E.NONE  # the client's retry of the same commit
    assert p.end(commit=False) == E.INVALID_TXN_STATE
    assert transaction_state(broker, p.transactional_id)[0] == "CompleteCommit"


def test_end_txn_while_the_commit_markers_are_pending(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer]
) -> None:
    """PrepareCommit held by a SIGSTOPped owner of a partition of the transaction."""
    p = producer(transactional_id_on(broker, 0, "pending-markers"))
    remote = next(i for i, leader in leaders(broker).items() if leader == 1)
    assert p.init() == E.NONE
    assert p.add([(TOPIC, remote)]) == {(TOPIC, remote): E.NONE}
    assert p.produce(TOPIC, remote, [b"held"]) == E.NONE
    owner = broker.worker_pid(1)
    os.kill(owner, signal.SIGSTOP)
    try:
        assert p.end(commit=True) == E.NONE
        assert transaction_state(broker, p.transactional_id)[0] == "PrepareCommit"
        assert p.end(commit=False) == E.INVALID_TXN_STATE
        assert p.end(commit=True) == E.CONCURRENT_TRANSACTIONS
        assert p.add([(TOPIC, remote)]) == {(TOPIC, remote): E.CONCURRENT_TRANSACTIONS}
        assert p.init() == E.CONCURRENT_TRANSACTIONS
        assert transaction_state(broker, p.transactional_id)[0] == "PrepareCommit"
    finally:
        os.kill(owner, signal.SIGCONT)
    wait_state(broker, p.transactional_id, "CompleteCommit")
    assert offsets(broker, TOPIC, remote)[0] == offsets(broker, TOPIC, remote)[1]


def test_add_partitions_for_unknown_topics(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer]
) -> None:
    p = producer()
    assert p.init() == E.NONE
    for version in (1, 3):
        codes = p.add([(TOPIC, 0), (TOPIC, 1), ("no-such-topic", 0), (TOPIC, PARTITIONS)], version=version)
        assert codes == {
            (TOPIC, 0): E.OPERATION_NOT_ATTEMPTED,
            (TOPIC, 1): E.OPERATION_NOT_ATTEMPTED,
            ("no-such-topic", 0): E.UNKNOWN_TOPIC_OR_PARTITION,
            (TOPIC, PARTITIONS): E.UNKNOWN_TOPIC_OR_PARTITION,
        }, version
        assert transaction_state(broker, p.transactional_id) == ("Empty", [])


@pytest.mark.kafka_api("InitProducerId", "AddOffsetsToTxn", "TxnOffsetCommit", "EndTxn", client="shardbroker")
def test_txn_offset_commit_with_a_newer_generation_or_an_unknown_member(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer]
) -> None:
    group = "txn-errors-group"
    with (
        TcpConsumer(broker.bootstrap, group_id=group, session_timeout_ms=30_000) as member,
        AdminClient(broker.bootstrap) as admin,
    ):
        member.subscribe([TOPIC])
        member.poll(0.5)
        assert member.generation_id >= 1 and member.member_id
        p = producer()
        assert p.init() == E.NONE
        assert p.add_offsets(group) == E.NONE
        newer = p.commit_offsets(
            group, {(TOPIC, 1): 11}, generation_id=member.generation_id + 1, member_id=member.member_id
        )
        assert newer == {(TOPIC, 1): E.ILLEGAL_GENERATION}
        stranger = p.commit_offsets(
            group, {(TOPIC, 2): 12}, generation_id=member.generation_id, member_id="no-such-member"
        )
        assert stranger == {(TOPIC, 2): E.UNKNOWN_MEMBER_ID}
        good = p.commit_offsets(
            group, {(TOPIC, 0): 10}, generation_id=member.generation_id, member_id=member.member_id
        )
        assert good == {(TOPIC, 0): E.NONE}
        assert p.end(commit=True) == E.NONE
        wait_state(broker, p.transactional_id, "CompleteCommit")
        assert admin.committed_offsets(group) == {(TOPIC, 0): 10}


def test_a_zombie_with_an_older_epoch_is_fenced(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer]
) -> None:
    zombie = producer()
    assert zombie.init() == E.NONE
    assert zombie.add([(TOPIC, 0)]) == {(TOPIC, 0): E.NONE}
    assert zombie.produce(TOPIC, 0, [b"zombie"]) == E.NONE
    fresh = producer(zombie.transactional_id)
    fresh.init_retrying()  # fences the zombie: its transaction aborted at a bumped epoch
    assert (fresh.producer_id, fresh.epoch) == (zombie.producer_id, zombie.epoch + 2)
    assert transaction_state(broker, fresh.transactional_id) == ("Empty", [])
    before = high_watermarks(broker)

    assert zombie.add([(TOPIC, 1)]) == {(TOPIC, 1): E.PRODUCER_FENCED}
    assert zombie.add([(TOPIC, 1)], version=1) == {(TOPIC, 1): E.INVALID_PRODUCER_EPOCH}
    assert zombie.end(commit=True) == E.PRODUCER_FENCED
    assert zombie.end(commit=True, version=1) == E.INVALID_PRODUCER_EPOCH
    assert zombie.produce(TOPIC, 0, [b"late"]) == E.INVALID_PRODUCER_EPOCH
    kip360 = m.InitProducerIdRequest(
        transactional_id=zombie.transactional_id,
        transaction_timeout_ms=60_000,
        producer_id=zombie.producer_id,
        producer_epoch=zombie.epoch,
    )
    assert zombie.conn.send(kip360, 4).error_code == E.PRODUCER_FENCED
    assert zombie.conn.send(kip360, 3).error_code == E.INVALID_PRODUCER_EPOCH
    assert high_watermarks(broker) == before
    assert transaction_state(broker, fresh.transactional_id) == ("Empty", [])

    assert fresh.add([(TOPIC, 0)]) == {(TOPIC, 0): E.NONE}
    assert fresh.produce(TOPIC, 0, [b"fresh"]) == E.NONE
    assert fresh.end(commit=True) == E.NONE


@pytest.mark.parametrize("where", ["here", "through the rings"])
def test_a_transactions_first_batch_in_a_partition_is_verified(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer], where: str
) -> None:
    """KIP-890 part 1: the partition's leader asks the coordinator (on its own worker, or on the
    other one through the rings) before a transaction's first batch goes in; a batch of a
    partition never added, and a zombie's batch into a partition its transaction never reached,
    are refused and leave no hanging transaction behind."""
    by_leader = leaders(broker)
    node = 0
    tid = transactional_id_on(broker, node, f"verify-{where.replace(' ', '-')}")
    parts = [p for p, leader in sorted(by_leader.items()) if (leader == node) == (where == "here")]
    assert len(parts) >= 2, by_leader
    first, other = parts[:2]
    zombie = producer(tid)
    assert zombie.init() == E.NONE
    before = high_watermarks(broker)
    assert zombie.produce(TOPIC, first, [b"never added"]) == E.INVALID_TXN_STATE
    assert high_watermarks(broker) == before
    assert zombie.add([(TOPIC, first)]) == {(TOPIC, first): E.NONE}
    assert zombie.produce(TOPIC, first, [b"in"]) == E.NONE
    assert zombie.produce(TOPIC, first, [b"in again"]) == E.NONE  # no question once it is open
    fresh = producer(tid)
    fresh.init_retrying()  # fences the zombie and aborts its transaction
    before = high_watermarks(broker)
    assert zombie.produce(TOPIC, other, [b"zombie"]) == E.INVALID_PRODUCER_EPOCH
    assert high_watermarks(broker) == before
    lso, hw = offsets(broker, TOPIC, other)
    assert lso == hw  # nothing hangs
    assert fresh.add([(TOPIC, other)]) == {(TOPIC, other): E.NONE}
    assert fresh.produce(TOPIC, other, [b"fresh"]) == E.NONE
    assert fresh.end(commit=True) == E.NONE
    wait_state(broker, tid, "CompleteCommit")
    assert offsets(broker, TOPIC, other)[0] == offsets(broker, TOPIC, other)[1]


def test_transactional_id_length(broker: BrokerProcess, producer: Callable[..., RawTxnProducer]) -> None:
    longest = producer("L" * 0x7FFF)
    assert longest.init() == E.NONE
    assert longest.add([(TOPIC, 3)]) == {(TOPIC, 3): E.NONE}
    assert longest.produce(TOPIC, 3, [b"long id"]) == E.NONE
    assert longest.end(commit=True) == E.NONE
    wait_state(broker, longest.transactional_id, "CompleteCommit")

    pids = broker.worker_pids()
    with BrokerConnection(broker.host, broker.ports[0]) as conn:
        too_long = m.InitProducerIdRequest(transactional_id="L" * 0x8000, transaction_timeout_ms=60_000)
        with pytest.raises(BrokerUnreachable, match="closed"):
            conn.send(too_long, 4)
    assert broker.worker_pids() == pids, "a worker died of it"
    assert "malformed InitProducerId v4 request" in broker.output(tail=50), "no log line"
    with AdminClient(broker.bootstrap) as admin:
        assert all(len(t.transactional_id) <= 0x7FFF for t in admin.list_transactions())


@pytest.mark.parametrize("timeout_ms", [MAX_TIMEOUT_MS + 1, 0, -1])
def test_transaction_timeout_outside_the_limits(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer], timeout_ms: int
) -> None:
    p = producer()
    assert p.init(timeout_ms=timeout_ms) == E.INVALID_TRANSACTION_TIMEOUT
    assert transaction_state(broker, p.transactional_id)[0] == "TRANSACTIONAL_ID_NOT_FOUND"
    assert p.init(timeout_ms=MAX_TIMEOUT_MS) == E.NONE


def write_marker(conn: BrokerConnection, partition: int, producer_id: int, coordinator_epoch: int) -> int:
    W = m.WriteTxnMarkersRequest
    request = W(
        markers=[
            W.WritableTxnMarker(
                producer_id=producer_id,
                producer_epoch=0,
                transaction_result=True,
                coordinator_epoch=coordinator_epoch,
                topics=[W.WritableTxnMarkerTopic(name=TOPIC, partition_indexes=[partition])],
            )
        ]
    )
    answer: m.WriteTxnMarkersResponse = conn.send(request, 1)
    return int(answer.markers[0].topics[0].partitions[0].error_code)


@pytest.mark.kafka_api("WriteTxnMarkers", client="shardbroker")
def test_write_txn_markers_for_a_producer_the_partition_never_saw(broker: BrokerProcess) -> None:
    partition, never_seen = 2, 987_654_321
    with AdminClient(broker.bootstrap) as admin:
        conn = admin.node(admin.topic(TOPIC).partitions[partition])
        _, end = offsets(broker, TOPIC, partition)
        assert write_marker(conn, partition, never_seen, coordinator_epoch=5) == E.NONE
        assert offsets(broker, TOPIC, partition) == (end + 1, end + 1)  # written; stable
        assert (
            write_marker(conn, partition, never_seen, coordinator_epoch=4) == E.TRANSACTION_COORDINATOR_FENCED
        )
        assert offsets(broker, TOPIC, partition) == (end + 1, end + 1)  # not written
        (state,) = [
            s
            for s in admin.describe_producers([(TOPIC, partition)])[(TOPIC, partition)]
            if s.producer_id == never_seen
        ]
        assert (state.coordinator_epoch, state.current_txn_start_offset) == (5, -1)


def test_a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced(
    broker: BrokerProcess, producer: Callable[..., RawTxnProducer]
) -> None:
    """A confluent-kafka producer begins, writes and never ends: after transaction.timeout.ms the
    coordinator bumps the epoch and aborts (Kafka's abortTimedOutTransactions), the LSO reaches
    the high watermark, read_committed reads nothing of it, the metrics count a timeout, and the
    old producer is fenced."""
    topic = "txn-timeout"
    create_topic(broker.bootstrap, topic, 2)
    tid = "timeout-never-ends"
    forgetful = confluent_kafka.Producer(
        {
            "bootstrap.servers": broker.bootstrap,
            "transactional.id": tid,
            "transaction.timeout.ms": TIMEOUT_MS,
            "message.timeout.ms": TIMEOUT_MS,
        }
    )
    forgetful.init_transactions(IO_TIMEOUT)
    coordinator = str(find_coordinator(broker, tid))
    timeouts_before = (
        sample(broker, "shardbroker_transactions_total", result="timeout", worker=coordinator) or 0
    )
    forgetful.begin_transaction()
    for i in range(10):
        forgetful.produce(topic, value=b"never committed %d" % i, partition=i % 2)
    assert forgetful.flush(IO_TIMEOUT) == 0
    with AdminClient(broker.bootstrap) as admin:
        open_txn = admin.describe_transaction(tid)
    assert open_txn.state == "Ongoing" and open_txn.timeout_ms == TIMEOUT_MS
    plain = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap})
    for p in range(2):
        plain.produce(topic, value=b"plain %d" % p, partition=p)
    assert plain.flush(IO_TIMEOUT) == 0
    assert [offsets(broker, topic, p) for p in range(2)] == [(0, 6), (0, 6)]  # held by the open one

    wait_state(broker, tid, "CompleteAbort", timeout=TIMEOUT_MS / 1000 + 20)
    assert [offsets(broker, topic, p) for p in range(2)] == [(7, 7), (7, 7)]  # + the ABORT marker
    assert sorted(read_committed(broker.bootstrap, topic, 2, 2)) == [b"plain 0", b"plain 1"]
    timeouts = sample(broker, "shardbroker_transactions_total", result="timeout", worker=coordinator)
    assert timeouts == timeouts_before + 1

    old = producer(tid)
    old.producer_id, old.epoch = open_txn.producer_id, open_txn.producer_epoch
    old.sequences = {(topic, 0): 5, (topic, 1): 5}
    assert old.end(commit=True) == E.PRODUCER_FENCED
    assert old.produce(topic, 0, [b"late"]) == E.INVALID_PRODUCER_EPOCH
    with pytest.raises(confluent_kafka.KafkaException) as raised:
        forgetful.commit_transaction(IO_TIMEOUT)
    error = raised.value.args[0]
    assert error.fatal() or error.txn_requires_abort(), error
    assert [offsets(broker, topic, p) for p in range(2)] == [(7, 7), (7, 7)]
