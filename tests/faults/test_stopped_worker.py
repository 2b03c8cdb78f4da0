"""SIGSTOP of the group coordinator's worker for longer than the members' session timeout, under
produce + consume load: when it continues, the group rebalances (the sessions expired while the
worker slept), every member gets a new assignment, and the load finishes with every acknowledged
record in the log once and read by the group.

The stop is shorter than the supervisor's heartbeat timeout (10 s, supervision.Policy): the same
worker process must come back, not a replacement. The slow variant stops it for longer than that:
the supervisor replaces the stuck worker and the group still recovers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from tests.faults.load import GroupLoad
from tests.faults.test_process_kills import GROUP_CONFIG, PARTITIONS, TOPIC, finish_and_verify
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import create_topic

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]

SESSION_TIMEOUT_MS = 3000
BROKER_CONFIG = {**GROUP_CONFIG, "group.min.session.timeout.ms": 1000}


def coordinator_of(bootstrap: str, group: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group]).values()
    return int(future.result(30).coordinator.id)


def run_stopped_coordinator(broker_factory: Factory, stopped_for: float, replaced: bool) -> None:
    broker = broker_factory(workers=2, config=BROKER_CONFIG)
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    load = GroupLoad(
        broker.bootstrap,
        TOPIC,
        6_000,
        producer={"message.timeout.ms": 120_000},
        consumer={"session.timeout.ms": SESSION_TIMEOUT_MS, "heartbeat.interval.ms": 300},
    ).start()
    try:
        wait_for(lambda: all(load.assignments) or None, 60, "both members to get an assignment")
        load.wait_acked(1_000)
        node = coordinator_of(broker.bootstrap, load.group)
        pid = broker.worker_pid(node)
        before = list(load.assignments)
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stopped_for)
        finally:
            with contextlib.suppress(ProcessLookupError):  # the supervisor may have killed it
                os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: all(a > b for a, b in zip(load.assignments, before, strict=True)) or None,
            60,
            f"every member to be assigned again after the rebalance (before {before})",
        )
        assert (broker.worker_pid(node) != pid) == replaced, (
            "the stopped worker was replaced" if not replaced else "the stuck worker was not replaced"
        )
        finish_and_verify(broker, load)
    finally:
        load.stop()


def test_coordinator_stopped_past_the_session_timeout_rebalances_and_recovers(
    broker_factory: Factory,
) -> None:
    run_stopped_coordinator(broker_factory, stopped_for=SESSION_TIMEOUT_MS / 1000 + 2, replaced=False)


@pytest.mark.slow
def test_coordinator_stopped_past_the_heartbeat_timeout_is_replaced_and_the_group_recovers(
    broker_factory: Factory,
) -> None:
    run_stopped_coordinator(broker_factory, stopped_for=14, replaced=True)
