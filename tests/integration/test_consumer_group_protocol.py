"""The consumer group protocol (KIP-848) with librdkafka's ``group.protocol=consumer`` (issue 19).

Starts broker processes and opens sockets (through confluent-kafka). Every consumer commits each
record synchronously after "processing" it, so across every rebalance each produced record must
be read exactly once; ownership is tracked from the members' own assignment callbacks (incremental
with this protocol) and a partition assigned to a member while another still holds it fails the
test. The broker serves the protocol (``group.coordinator.rebalance.protocols``) with a short
session and heartbeat interval so that rebalances take a fraction of a second.
"""

from __future__ import annotations

import collections
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import Rec, create_topic, make_messages, produce_confluent

CONSUMER_PROTOCOL_CONFIG = {
    "group.coordinator.rebalance.protocols": "classic,consumer",
    "group.consumer.min.session.timeout.ms": 1000,
    "group.consumer.session.timeout.ms": 6000,
    "group.consumer.min.heartbeat.interval.ms": 100,
    "group.consumer.heartbeat.interval.ms": 300,
}
PHASE_TIMEOUT = 60.0
#: What a member may be answered when it commits just as its epoch moves on (it retries once its
#: heartbeat has brought the new epoch, as the Java client does): STALE_MEMBER_EPOCH.
_RETRIED_COMMIT_ERRORS = (113,)
#: What a classic-protocol member may be answered when it commits as its generation ends
#: (ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS): as with Kafka, the record is not committed and
#: whoever owns the partition next reads it again.
_CLASSIC_COMMIT_ERRORS = (22, 27)

Seen = collections.Counter[tuple[int, int]]


@pytest.fixture(scope="module")
def cbroker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(config=CONSUMER_PROTOCOL_CONFIG)


class Ownership:
    """Who owns each partition, from the members' assignment callbacks; what went wrong."""

    def __init__(self) -> None:
        #: (topic, partition) -> member.
        self.owner: dict[tuple[str, int], str] = {}
        self.violations: list[str] = []
        self.assigned: collections.Counter[str] = collections.Counter()
        #: (time, member, "assign" | "revoke" | "lost", partitions), in callback order.
        self.log: list[tuple[float, str, str, list[int]]] = []

    def assign(self, name: str, partitions: Sequence[Any]) -> None:
        self.log.append((time.monotonic(), name, "assign", sorted(tp.partition for tp in partitions)))
        for tp in partitions:
            holder = self.owner.get((tp.topic, tp.partition))
            if holder is not None and holder != name:
                self.violations.append(
                    f"partition {tp.topic}-{tp.partition} assigned to {name} while {holder} owns it"
                )
            self.owner[(tp.topic, tp.partition)] = name
            self.assigned[name] += 1

    def revoke(self, name: str, partitions: Sequence[Any]) -> None:
        self.log.append((time.monotonic(), name, "revoke", sorted(tp.partition for tp in partitions)))
        for tp in partitions:
            if self.owner.get((tp.topic, tp.partition)) == name:
                del self.owner[(tp.topic, tp.partition)]

    def lose(self, name: str, partitions: Sequence[Any]) -> None:
        """Partitions taken away without a revocation (the member was fenced)."""
        self.log.append((time.monotonic(), name, "lost", sorted(tp.partition for tp in partitions)))
        self.revoke(name, partitions)


class Member:
    """A ``group.protocol=consumer`` member polled from the test's thread."""

    def __init__(
        self,
        name: str,
        bootstrap: str,
        group: str,
        topic: str,
        ownership: Ownership,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.ownership = ownership
        self.c = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.protocol": "consumer",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 1000,
                "reconnect.backoff.max.ms": 500,
                **(extra or {}),
            }
        )
        self.closed = False
        self.classic = (extra or {}).get("group.protocol") == "classic"
        #: Records "processed" whose commit was refused (_CLASSIC_COMMIT_ERRORS).
        self.uncommitted: set[tuple[int, int]] = set()
        self.c.subscribe(
            [topic],
            on_assign=lambda _c, ps: ownership.assign(name, ps),
            on_revoke=lambda _c, ps: ownership.revoke(name, ps),
            on_lost=lambda _c, ps: ownership.lose(name, ps),
        )

    def poll_once(self, seen: Seen) -> None:
        msg = self.c.poll(0.01)
        if msg is None:
            return
        if msg.error():
            raise AssertionError(f"{self.name}: {msg.error()}")
        seen[(msg.partition(), msg.offset())] += 1  # "processed"
        deadline = time.monotonic() + 10
        while True:
            try:
                self.c.commit(message=msg, asynchronous=False)
                return
            except confluent_kafka.KafkaException as exc:
                if self.classic and exc.args[0].code() in _CLASSIC_COMMIT_ERRORS:
                    self.uncommitted.add((msg.partition(), msg.offset()))
                    return
                if exc.args[0].code() not in _RETRIED_COMMIT_ERRORS or time.monotonic() > deadline:
                    raise
                # librdkafka learns the new epoch in its own thread; a poll() here could run a
                # revocation callback first and give the partition away before this commit.
                time.sleep(0.02)

    def owned(self) -> set[int]:
        return set() if self.closed else {tp.partition for tp in self.c.assignment()}

    def close(self) -> None:
        if not self.closed:
            self.c.close()
            self.closed = True


class BackgroundProducer:
    """Writes small batches until stopped; the records it got acknowledged."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.produced: list[Rec] = []
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(bootstrap, topic), daemon=True)
        self._thread.start()

    def _run(self, bootstrap: str, topic: str) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                self.produced += produce_confluent(
                    bootstrap, topic, make_messages(40, 97, f"b{n}", value_size=20)
                )
                n += 1
                self._stop.wait(0.05)
        except BaseException as exc:  # reported by stop()
            self._errors.append(exc)

    def stop(self) -> list[Rec]:
        self._stop.set()
        self._thread.join(60)
        assert not self._errors, self._errors
        return self.produced


def drive(members: Sequence[Member], seen: Seen, done: Callable[[], bool], what: str, own: Ownership) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    while True:
        for m in members:
            if not m.closed:
                m.poll_once(seen)
        assert not own.violations, own.violations
        if done():
            return
        if time.monotonic() > deadline:
            live = [m for m in members if not m.closed]
            raise AssertionError(
                f"timed out: {what}; owned {[(m.name, sorted(m.owned())) for m in live]}, {len(seen)} read"
            )


def dwell(members: Sequence[Member], seen: Seen, own: Ownership, seconds: float = 1.0) -> None:
    """Consume a while as the group is now (records keep flowing through mixed groups)."""
    end = time.monotonic() + seconds
    drive(members, seen, lambda: time.monotonic() > end, "dwell", own)


def balanced(members: Sequence[Member], partitions: int) -> bool:
    """Every partition owned by exactly one live member, and the counts differ by at most one."""
    owned = [m.owned() for m in members if not m.closed]
    counts = [len(o) for o in owned]
    union: set[int] = set().union(*owned)
    return union == set(range(partitions)) and sum(counts) == partitions and max(counts) - min(counts) <= 1


def assert_exactly_once(
    seen: Seen, produced: Sequence[Rec], uncommitted: frozenset[tuple[int, int]] = frozenset()
) -> None:
    """Every record read, and read once unless its commit was refused (``uncommitted``)."""
    want = {(r.partition, r.offset) for r in produced}
    dups = {k: n for k, n in seen.items() if n > 1 and k not in uncommitted}
    assert not dups, f"read more than once: {sorted(dups)[:10]}"
    assert set(seen) == want, (
        f"lost {sorted(want - set(seen))[:10]}, unexpected {sorted(set(seen) - want)[:10]}"
    )


@pytest.mark.kafka_api("ConsumerGroupHeartbeat", "OffsetCommit", "OffsetFetch", client="confluent-kafka")
def test_one_to_ten_to_three_members_while_a_producer_writes(cbroker: BrokerProcess) -> None:
    bootstrap = cbroker.bootstrap
    topic, group, partitions = "kip848-scale", "kip848-scale", 60
    create_topic(bootstrap, topic, partitions)
    own = Ownership()
    seen: Seen = collections.Counter()
    members = [Member("m0", bootstrap, group, topic, own)]
    producer = BackgroundProducer(bootstrap, topic)
    try:
        drive(members, seen, lambda: balanced(members, partitions), "one member owns all 60", own)
        members += [Member(f"m{i}", bootstrap, group, topic, own) for i in range(1, 10)]
        drive(members, seen, lambda: balanced(members, partitions), "ten members share 60", own)
        assert all(len(m.owned()) == 6 for m in members)
        for m in members[3:]:
            m.close()
        drive(members, seen, lambda: balanced(members, partitions), "three members share 60", own)
        produced = producer.stop()
        drive(members, seen, lambda: len(seen) >= len(produced), "every record read", own)
        assert_exactly_once(seen, produced)
        for m in members:
            m.close()
        assert not own.violations, own.violations
    finally:
        producer.stop()
        for m in members:
            m.close()


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(cbroker: BrokerProcess) -> None:
    bootstrap = cbroker.bootstrap
    topic, group, partitions = "kip848-static", "kip848-static", 6
    create_topic(bootstrap, topic, partitions)
    own = Ownership()
    seen: Seen = collections.Counter()
    a = Member("a", bootstrap, group, topic, own, {"group.instance.id": "instance-a"})
    b = Member("b", bootstrap, group, topic, own, {"group.instance.id": "instance-b"})
    members = [a, b]
    try:
        drive(members, seen, lambda: balanced(members, partitions), "two static members", own)
        b_before = b.owned()
        a_before = a.owned()
        events = len(own.log)
        a.close()  # a static member's close leaves with epoch -2: its partitions stay its own
        a2 = Member("a2", bootstrap, group, topic, own, {"group.instance.id": "instance-a"})
        members.append(a2)
        drive(
            members, seen, lambda: a2.owned() == a_before, "the restarted instance gets its partitions", own
        )
        assert b.owned() == b_before
        after = [e for e in own.log[events:] if e[1] == "b"]
        assert not after, f"b was asked to give up or take partitions: {after}"
    finally:
        for m in members:
            m.close()


@pytest.mark.kafka_api("ConsumerGroupDescribe", "ListGroups", client="confluent-kafka")
def test_describe_and_list_groups_show_the_consumer_protocol(cbroker: BrokerProcess) -> None:
    from confluent_kafka.admin import AdminClient

    bootstrap = cbroker.bootstrap
    topic, group = "kip848-describe", "kip848-describe"
    create_topic(bootstrap, topic, 4)
    own = Ownership()
    seen: Seen = collections.Counter()
    m = Member("solo", bootstrap, group, topic, own, {"client.id": "solo-client"})
    try:
        drive([m], seen, lambda: m.owned() == {0, 1, 2, 3}, "one member owns all 4", own)
        admin = AdminClient({"bootstrap.servers": bootstrap})
        listed = admin.list_consumer_groups().result(timeout=30)
        found = {g.group_id: g for g in listed.valid}
        assert found[group].type.name == "CONSUMER"
        described = admin.describe_consumer_groups([group])[group].result(timeout=30)
        assert described.type.name == "CONSUMER"
        assert [mm.client_id for mm in described.members] == ["solo-client"]
        assert {tp.partition for tp in described.members[0].assignment.topic_partitions} == {0, 1, 2, 3}
    finally:
        m.close()


def test_coordinator_killed_mid_reconciliation(broker_factory: BrokerFactory) -> None:
    """kill -9 of the group's coordinator worker while a new member is being reconciled in: the
    restarted worker replays the group from __consumer_offsets, the members carry on with their
    epochs and partitions (none loses its partitions or rejoins), the newcomer gets its share,
    nothing is read twice and no partition has two owners."""
    from confluent_kafka.admin import AdminClient

    from shardbroker.broker.group_metadata_manager import partition_for

    broker = broker_factory(config=CONSUMER_PROTOCOL_CONFIG)
    bootstrap = broker.bootstrap
    topic, group, partitions = "kip848-kill", "kip848-kill", 12
    create_topic(bootstrap, topic, partitions)
    own = Ownership()
    seen: Seen = collections.Counter()
    members = [Member(f"m{i}", bootstrap, group, topic, own) for i in range(3)]
    producer = BackgroundProducer(bootstrap, topic)
    try:
        drive(members, seen, lambda: balanced(members, partitions), "three members share 12", own)
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics("__consumer_offsets", timeout=20)
        parts = meta.topics["__consumer_offsets"].partitions
        coordinator = parts[partition_for(group, len(parts))].leader
        pid = broker.worker_pid(coordinator)
        lost_before = len([e for e in own.log if e[2] == "lost"])
        members.append(Member("m3", bootstrap, group, topic, own))
        for m in members:  # the newcomer joins; the others are asked to revoke
            m.poll_once(seen)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: broker.worker_pid(coordinator) != pid, 30, "the worker to be restarted")
        drive(members, seen, lambda: balanced(members, partitions), "four members share 12", own)
        produced = producer.stop()
        drive(members, seen, lambda: len(seen) >= len(produced), "every record read", own)
        assert_exactly_once(seen, produced)
        assert len([e for e in own.log if e[2] == "lost"]) == lost_before, "a member lost its partitions"
    finally:
        producer.stop()
        for m in members:
            m.close()


def _classic(strategy: str) -> dict[str, Any]:
    return {
        "group.protocol": "classic",
        "partition.assignment.strategy": strategy,
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    }


def _group_type(bootstrap: str, group: str) -> str:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the answer is in
    listed = admin.list_consumer_groups().result(timeout=30)
    found = {g.group_id: g for g in listed.valid}
    assert group in found, (listed.valid, listed.errors)
    return str(found[group].type.name)


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_classic_group_upgraded_and_downgraded_by_rolling_restarts(
    cbroker: BrokerProcess, strategy: str
) -> None:
    """Three classic members (cooperative or eager) restarted one by one with
    ``group.protocol=consumer`` while a producer writes: the group becomes a consumer group when
    the first new member arrives (group.consumer.migration.policy=bidirectional, the default),
    the classic members keep consuming inside it, and after the last restart it is a consumer
    group of three; then restarted back one by one, it becomes classic again when the last
    consumer-protocol member leaves. Every record is read once and no partition has two owners."""
    bootstrap = cbroker.bootstrap
    topic = group = f"kip848-migrate-{strategy}"
    partitions = 12
    create_topic(bootstrap, topic, partitions)
    own = Ownership()
    seen: Seen = collections.Counter()
    classic = _classic(strategy)
    members = [Member(f"c{i}", bootstrap, group, topic, own, classic) for i in range(3)]
    producer = BackgroundProducer(bootstrap, topic)
    try:
        drive(members, seen, lambda: balanced(members, partitions), "three classic members share 12", own)
        assert _group_type(bootstrap, group) == "CLASSIC"
        for i in range(3):  # rolling upgrade
            members[i].close()
            members.append(Member(f"n{i}", bootstrap, group, topic, own))
            drive(members, seen, lambda: balanced(members, partitions), f"upgrade step {i}", own)
            assert _group_type(bootstrap, group) == "CONSUMER"
            assert not any(m.uncommitted for m in members)
            dwell(members, seen, own)
        for i in range(3):  # rolling downgrade
            members[3 + i].close()
            members.append(Member(f"d{i}", bootstrap, group, topic, own, classic))
            drive(members, seen, lambda: balanced(members, partitions), f"downgrade step {i}", own)
            dwell(members, seen, own)
        assert _group_type(bootstrap, group) == "CLASSIC"
        produced = producer.stop()
        drive(members, seen, lambda: len(seen) >= len(produced), "every record read", own)
        uncommitted = frozenset().union(*(m.uncommitted for m in members))
        assert_exactly_once(seen, produced, uncommitted)
        # Refused only as the group went back to classic (its generation is the group epoch,
        # ahead of the members' epochs, as Kafka's): at most once per partition.
        assert len(uncommitted) <= partitions, f"{len(uncommitted)} commits refused"
    finally:
        producer.stop()
        for m in members:
            m.close()


def test_regex_subscription_picks_up_a_new_topic(cbroker: BrokerProcess) -> None:
    """librdkafka's ``^``-pattern subscription is sent as SubscribedTopicRegex and evaluated by the
    broker: the matching topic's partitions are assigned, a non-matching one's are not, and a
    matching topic created later is assigned without the members doing anything."""
    bootstrap = cbroker.bootstrap
    group = "kip848-regex"
    create_topic(bootstrap, "kip848-regex-a", 3)
    create_topic(bootstrap, "kip848-regexp-not", 2)
    own = Ownership()
    seen: Seen = collections.Counter()
    members = [Member(f"r{i}", bootstrap, group, "^kip848-regex-.*", own) for i in range(2)]

    def owned_topics() -> set[tuple[str, int]]:
        return {(tp.topic, tp.partition) for m in members for tp in m.c.assignment()}

    try:
        drive(members, seen, lambda: owned_topics() == {("kip848-regex-a", p) for p in range(3)}, "a", own)
        create_topic(bootstrap, "kip848-regex-b", 2)
        want = {("kip848-regex-a", p) for p in range(3)} | {("kip848-regex-b", p) for p in range(2)}
        drive(members, seen, lambda: owned_topics() == want, "the new topic assigned", own)
        produced = produce_confluent(bootstrap, "kip848-regex-b", make_messages(20, 2, "rb"))
        drive(members, seen, lambda: len(seen) >= len(produced), "the new topic's records read", own)
        assert len(seen) == len(produced)
    finally:
        for m in members:
            m.close()
