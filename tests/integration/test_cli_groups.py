"""``shardbroker groups list|describe|reset-offsets`` against a real broker, as an operator runs it:
``python -m shardbroker`` in a subprocess, its exit code and output checked, with a real
confluent-kafka group consumer committing offsets (issue 5), and one of the consumer protocol
(KIP-848, ``group.protocol=consumer``) shown with its type, epochs and assignments.

Opens sockets (through the clients), starts broker processes and CLI subprocesses.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import REPO, BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import Rec, create_topic, make_messages, produce_confluent
from tests.ports import free_port_block

GROUP_CONFIG = {"group.initial.rebalance.delay.ms": 100, "group.min.session.timeout.ms": 1000}
#: A broker serving the consumer protocol too, with a short session and heartbeat interval.
CONSUMER_PROTOCOL_CONFIG = {
    "group.coordinator.rebalance.protocols": "classic,consumer",
    "group.consumer.min.session.timeout.ms": 1000,
    "group.consumer.session.timeout.ms": 6000,
    "group.consumer.min.heartbeat.interval.ms": 100,
    "group.consumer.heartbeat.interval.ms": 300,
}
PARTITIONS = 3
MESSAGES = 60
CLI_TIMEOUT = 120.0
_REBALANCE_IN_PROGRESS = 27
DESCRIBE_HEADER = [
    "GROUP",
    "TOPIC",
    "PARTITION",
    "CURRENT-OFFSET",
    "LOG-END-OFFSET",
    "LAG",
    "CONSUMER-ID",
    "HOST",
    "CLIENT-ID",
]


@pytest.fixture(scope="module")
def gbroker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(config=GROUP_CONFIG)


def cli(bootstrap: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", "groups", *argv, "--bootstrap-server", bootstrap],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def ok(bootstrap: str, *argv: str) -> str:
    done = cli(bootstrap, *argv)
    assert done.returncode == 0, f"groups {' '.join(argv)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def table(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def group_consumer(bootstrap: str, group: str, reset: str = "earliest") -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": reset,
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200,
        }
    )


def commit(consumer: Any, msg: Any) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            consumer.commit(message=msg, asynchronous=False)
            return
        except confluent_kafka.KafkaException as exc:
            if exc.args[0].code() != _REBALANCE_IN_PROGRESS or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def consume(bootstrap: str, group: str, topic: str, count: int, *, reset: str = "earliest") -> list[Rec]:
    """Read ``count`` records as a member of ``group``, committing each one; then leave."""
    consumer = group_consumer(bootstrap, group, reset)
    consumer.subscribe([topic])
    got: list[Rec] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count:
            assert time.monotonic() < deadline, f"read {len(got)} of {count} records of {topic} in 60 s"
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            got.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))
            commit(consumer, msg)
    finally:
        consumer.close()
    return got


def next_offsets(records: Iterable[Rec]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in records:
        out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
    return out


def describe_rows(bootstrap: str, group: str) -> list[list[str]]:
    rows = [r for r in table(ok(bootstrap, "describe", group)) if r[0] in (group, "GROUP")]
    assert rows[0] == DESCRIBE_HEADER
    return rows[1:]


def test_list_describe_and_reset(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cli-orders", "cli-group"
    create_topic(bootstrap, topic, PARTITIONS)
    produced = produce_confluent(bootstrap, topic, make_messages(MESSAGES, 31, "cli", value_size=20))
    ends = next_offsets(produced)
    assert sum(ends.values()) == MESSAGES and len(ends) == PARTITIONS

    read = consume(bootstrap, group, topic, 25)
    committed = next_offsets(read)

    # list: the group is there, Empty once its only member has left.
    assert group in ok(bootstrap, "list").split()
    assert [group, "Empty"] in table(ok(bootstrap, "list", "--state"))
    listed = json.loads(ok(bootstrap, "list", "--json"))
    assert {"group": group, "state": "Empty"}.items() <= next(
        g for g in listed if g["group"] == group
    ).items()

    # describe: CURRENT-OFFSET = committed, LOG-END-OFFSET = high watermark, LAG = the difference.
    out = ok(bootstrap, "describe", group)
    assert f"Consumer group '{group}' has no active members." in out
    want = [
        [group, topic, str(p), str(committed[p]), str(ends[p]), str(ends[p] - committed[p]), "-", "-", "-"]
        for p in sorted(committed)
    ]
    assert describe_rows(bootstrap, group) == want
    (described,) = json.loads(ok(bootstrap, "describe", group, "--json"))
    assert described["state"] == "Empty"
    assert {
        (o["partition"], o["current_offset"], o["log_end_offset"], o["lag"]) for o in described["offsets"]
    } == {(p, committed[p], ends[p], ends[p] - committed[p]) for p in committed}
    state = table(ok(bootstrap, "describe", group, "--state"))
    assert state[1][0] == group and "Empty" in state[1]

    # reset: a dry run by default (nothing changes), then --execute.
    plan = table(ok(bootstrap, "reset-offsets", group, "--topic", topic, "--to-earliest"))
    assert plan == [["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]] + [
        [group, topic, str(p), "0"] for p in range(PARTITIONS)
    ]
    assert describe_rows(bootstrap, group) == want
    ok(bootstrap, "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
    assert describe_rows(bootstrap, group) == [
        [group, topic, str(p), "0", str(ends[p]), str(ends[p]), "-", "-", "-"] for p in range(PARTITIONS)
    ]

    # A new member of the group starts from the reset offsets: everything again, from 0.
    # (auto.offset.reset=latest: a partition without a committed offset would be skipped.)
    again = consume(bootstrap, group, topic, MESSAGES, reset="latest")
    assert sorted((r.partition, r.offset) for r in again) == sorted((r.partition, r.offset) for r in produced)
    assert describe_rows(bootstrap, group) == [
        [group, topic, str(p), str(ends[p]), str(ends[p]), "0", "-", "-", "-"] for p in range(PARTITIONS)
    ]

    # --shift-by and --to-offset, per partition, clamped to the log.
    ok(bootstrap, "reset-offsets", group, "--topic", f"{topic}:0,1", "--shift-by", "-5", "--execute")
    ok(bootstrap, "reset-offsets", group, "--topic", f"{topic}:2", "--to-offset", "100000", "--execute")
    rows = {int(r[2]): (int(r[3]), int(r[5])) for r in describe_rows(bootstrap, group)}
    assert rows == {
        0: (max(ends[0] - 5, 0), min(5, ends[0])),
        1: (max(ends[1] - 5, 0), min(5, ends[1])),
        2: (ends[2], 0),
    }


def test_active_member_blocks_reset_and_shows_in_describe(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cli-active", "cli-active-group"
    create_topic(bootstrap, topic, PARTITIONS)
    produce_confluent(bootstrap, topic, make_messages(30, 7, "act", value_size=20))
    consumer = group_consumer(bootstrap, group)
    consumer.subscribe([topic])
    try:
        first = None

        def assigned() -> bool:
            nonlocal first
            msg = consumer.poll(0.1)
            if msg is not None and not msg.error() and first is None:
                first = msg
                commit(consumer, msg)
            return first is not None and len(consumer.assignment()) == PARTITIONS

        wait_for(assigned, 60, "the consumer to join, get every partition and commit once")
        for _ in range(5):
            consumer.poll(0.05)

        done = cli(bootstrap, "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")
        assert done.returncode != 0
        assert "inactive" in done.stderr and "Stable" in done.stderr and group in done.stderr

        rows = describe_rows(bootstrap, group)
        assert sorted(int(r[2]) for r in rows) == list(range(PARTITIONS))
        assert {r[6] for r in rows} == {consumer.memberid()}
        members = table(ok(bootstrap, "describe", group, "--members"))
        assert members[1][:2] == [group, consumer.memberid()] and members[1][-1] == str(PARTITIONS)
    finally:
        consumer.close()
    # Once the member left, the same reset goes through.
    wait_for(
        lambda: [group, "Empty"] in table(ok(bootstrap, "list", "--state")), 30, f"group {group} to be Empty"
    )
    ok(bootstrap, "reset-offsets", group, "--topic", topic, "--to-earliest", "--execute")


def test_consumer_protocol_group_in_list_and_describe(broker_factory: BrokerFactory) -> None:
    bootstrap = broker_factory(config=CONSUMER_PROTOCOL_CONFIG).bootstrap
    topic, group = "cli-kip848", "cli-kip848-group"
    create_topic(bootstrap, topic, PARTITIONS)
    consumer = confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.protocol": "consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    everything = f"{topic}({','.join(map(str, range(PARTITIONS)))})"
    try:

        def owns_all() -> bool:
            consumer.poll(0.1)
            return len(consumer.assignment()) == PARTITIONS

        wait_for(owns_all, 60, "the consumer-protocol member to own every partition")

        def reconciled() -> list[str] | None:
            """The --state row once the member has acknowledged its assignment (Stable)."""
            for _ in range(3):
                consumer.poll(0.05)  # keeps the member's heartbeats and reconciliation going
            row = table(ok(bootstrap, "describe", group, "--state"))[1]
            return row if "Stable" in row else None

        state = wait_for(reconciled, 60, f"group {group} to be Stable")
        # GROUP COORDINATOR (ID) TYPE ASSIGNMENT-STRATEGY STATE GROUP-EPOCH TARGET-ASSIGNMENT-EPOCH #MEMBERS
        assert state[0] == group and state[3] == "Consumer" and state[4] != "-" and state[8] == "1"
        group_epoch, assignment_epoch = int(state[6]), int(state[7])
        assert group_epoch >= 1 and assignment_epoch >= 1

        members = table(ok(bootstrap, "describe", group, "--members", "--verbose"))
        assert members[0][-4:] == ["CURRENT-EPOCH", "CURRENT-ASSIGNMENT", "TARGET-EPOCH", "TARGET-ASSIGNMENT"]
        (member,) = members[1:]
        assert member[:2] == [group, consumer.memberid()]
        # #PARTITIONS, then its epoch and assignment caught up with the group's target.
        assert member[-5:] == [
            str(PARTITIONS),
            str(assignment_epoch),
            everything,
            str(assignment_epoch),
            everything,
        ]

        (described,) = json.loads(ok(bootstrap, "describe", group, "--json"))
        assert (described["type"], described["state"], described["group_epoch"]) == (
            "consumer",
            "Stable",
            group_epoch,
        )
        (mem,) = described["members"]
        assert mem["member_epoch"] == described["assignment_epoch"] == assignment_epoch
        assert mem["assignment"] == mem["target_assignment"] == {topic: list(range(PARTITIONS))}
        assert mem["subscription"] == [topic]
        assert {o["consumer_id"] for o in described["offsets"]} == {consumer.memberid()}

        assert [group, "Consumer"] in table(ok(bootstrap, "list", "--type"))
        assert [group, "Consumer", "Stable"] in table(ok(bootstrap, "list", "--type", "consumer", "--state"))
        assert group not in ok(bootstrap, "list", "--type", "classic").split()
        listed = json.loads(ok(bootstrap, "list", "--json"))
        assert next(g for g in listed if g["group"] == group)["type"] == "consumer"
    finally:
        consumer.close()


def test_unknown_group_and_topic(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    done = cli(bootstrap, "describe", "cli-no-such-group")
    assert done.returncode == 1
    assert "consumer group 'cli-no-such-group' does not exist" in done.stderr
    done = cli(bootstrap, "reset-offsets", "cli-no-such-group", "--topic", "cli-no-such-topic", "--to-latest")
    assert done.returncode == 1
    assert "topic 'cli-no-such-topic' does not exist" in done.stderr


def test_unreachable_bootstrap_names_the_address() -> None:
    port = free_port_block(1, "127.0.0.1")  # nothing listens there
    for argv in (["list"], ["describe", "g"], ["reset-offsets", "g", "--topic", "t", "--to-earliest"]):
        done = cli(f"127.0.0.1:{port}", *argv)
        assert done.returncode == 1
        assert f"127.0.0.1:{port}" in done.stderr and "unreachable" in done.stderr
        assert done.stdout == ""


def test_bad_arguments_exit_2(gbroker: BrokerProcess) -> None:
    done = cli(gbroker.bootstrap, "reset-offsets", "g", "--topic", "t")
    assert done.returncode == 2 and "--to-earliest" in done.stderr
