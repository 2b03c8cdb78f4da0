"""kill -9 while transactions end: between the coordinator's PrepareCommit/PrepareAbort record and
its markers, with (a) the coordinator's worker killed, (b) the owner of a partition of the
transactions killed while its marker is on its way, (c) the whole broker killed (supervisor and
every worker). After the respawn or restart both transactions complete as decided (the commit
stays committed, the abort stays aborted), every partition's last stable offset reaches its high
watermark, and a confluent-kafka read_committed consumer reads every committed record once and no
aborted one.

How the tests land between Prepare and the markers, every time: two confluent-kafka transactional
producers whose ids the worker 0 coordinates write into partitions of both workers; worker 1 is
SIGSTOPped; the commit of one and the abort of the other are answered (the Prepare record is in
worker 0's ``__transaction_state`` log, and worker 0's own partitions have their markers) but the
markers for worker 1's partitions wait in the rings, so DescribeTransactions shows PrepareCommit
and PrepareAbort. Then the kill. The stop is far shorter than the supervisor's heartbeat timeout
(10 s), so worker 1 is never replaced for it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.broker_process import BrokerProcess, _alive, wait_for
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic
from tests.integration.test_broker_lifecycle import restarted
from tests.integration.test_transactions import transactional_producer
from tests.integration.txn_raw import (
    offsets,
    read_committed,
    transaction_state,
    transactional_id_on,
    wait_state,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]

TOPIC = "txn-faults"
PARTITIONS = 4
COORDINATOR, OTHER = 0, 1
CONFIG = {"transaction.state.log.num.partitions": 4}
PER_PARTITION = 20


def write_transaction(producer: Any, tag: str) -> list[bytes]:
    """``PER_PARTITION`` records into every partition, acknowledged; their values."""
    producer.begin_transaction()
    values = [f"{tag}-{p}-{i}".encode() for p in range(PARTITIONS) for i in range(PER_PARTITION)]
    for value in values:
        producer.produce(TOPIC, value=value, partition=int(value.split(b"-")[1]))
    assert producer.flush(IO_TIMEOUT) == 0
    return values


class Prepared:
    """A broker with one committed transaction (``base``), then one transaction in PrepareCommit
    (``committed``) and one in PrepareAbort (``aborted``) whose markers cannot reach worker 1."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        create_topic(broker.bootstrap, TOPIC, PARTITIONS)
        self.commit_id = transactional_id_on(broker, COORDINATOR, "faults-commit")
        self.abort_id = transactional_id_on(broker, COORDINATOR, "faults-abort")
        committer = transactional_producer(broker.bootstrap, self.commit_id)
        aborter = transactional_producer(broker.bootstrap, self.abort_id)
        committer.init_transactions(IO_TIMEOUT)
        aborter.init_transactions(IO_TIMEOUT)
        self.base = write_transaction(committer, "base")
        committer.commit_transaction(IO_TIMEOUT)
        self.committed = write_transaction(committer, "commit")
        self.aborted = write_transaction(aborter, "abort")
        self.stopped_pid = broker.worker_pid(OTHER)
        os.kill(self.stopped_pid, signal.SIGSTOP)
        try:
            committer.commit_transaction(IO_TIMEOUT)
            aborter.abort_transaction(IO_TIMEOUT)
            # the Prepare records are written, the markers for worker 1 cannot be
            assert transaction_state(broker, self.commit_id)[0] == "PrepareCommit"
            assert transaction_state(broker, self.abort_id)[0] == "PrepareAbort"
        except BaseException:
            self.resume()
            raise

    def resume(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # killed by the test meanwhile
            os.kill(self.stopped_pid, signal.SIGCONT)

    def verify(self) -> None:
        """Both transactions complete as decided; LSO = HW everywhere; read_committed reads
        ``base`` and ``committed`` once each and nothing of ``aborted``."""
        broker = self.broker
        wait_state(broker, self.commit_id, "CompleteCommit")
        wait_state(broker, self.abort_id, "CompleteAbort")
        for p in range(PARTITIONS):
            wait_for(
                lambda p=p: (lambda o: o[0] == o[1] and o[1] > 0)(offsets(broker, TOPIC, p)),
                30,
                f"the last stable offset of partition {p} at its high watermark",
            )
        expected = self.base + self.committed
        got = read_committed(broker.bootstrap, TOPIC, PARTITIONS, len(expected))
        counts = collections.Counter(got)
        assert not [v for v in got if v.startswith(b"abort-")], "an aborted record was read"
        assert sorted(counts) == sorted(expected), "committed records missing or unknown ones read"
        assert {v: n for v, n in counts.items() if n > 1} == {}, "records read twice"
        # the coordinator goes on: the same id commits again
        producer = transactional_producer(broker.bootstrap, self.commit_id)
        producer.init_transactions(IO_TIMEOUT)
        producer.begin_transaction()
        producer.produce(TOPIC, value=b"after", partition=0)
        producer.commit_transaction(IO_TIMEOUT)
        assert b"after" in read_committed(broker.bootstrap, TOPIC, PARTITIONS, len(expected) + 1, 0.2)


def test_coordinator_killed_between_prepare_and_markers(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2, config=CONFIG)
    txns = Prepared(broker)
    try:
        victim = broker.worker_pid(COORDINATOR)
        os.kill(victim, signal.SIGKILL)
    finally:
        txns.resume()
    wait_for(functools.partial(restarted, broker, COORDINATOR, [victim]), 60, "the coordinator respawned")
    txns.verify()


def test_partition_owner_killed_while_markers_are_written(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2, config=CONFIG)
    txns = Prepared(broker)
    try:
        os.kill(txns.stopped_pid, signal.SIGKILL)  # stopped, with the markers for it in its ring
    finally:
        txns.resume()
    wait_for(functools.partial(restarted, broker, OTHER, [txns.stopped_pid]), 60, "worker 1 respawned")
    txns.verify()


def test_whole_broker_killed_between_prepare_and_markers(broker_factory: Factory) -> None:
    broker = broker_factory(workers=2, config=CONFIG)
    txns = Prepared(broker)
    workers = broker.worker_pids()
    try:
        os.kill(broker.pid, signal.SIGKILL)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
    finally:
        txns.resume()
    assert broker.proc is not None
    broker.proc.wait(10)
    wait_for(lambda: not any(_alive(p) for p in workers), 15, "every worker's end")
    broker.start()
    txns.verify()
