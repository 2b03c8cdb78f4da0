"""Consumer groups with real clients: rebalances, commits, expiry, restarts (issue 5).

Opens sockets (through the clients), starts broker processes and one consumer subprocess.

Every consumer commits each record synchronously after "processing" it, so across any number of
rebalances each produced record must be read exactly once, and at every moment no partition may
be owned by two members. The broker runs with ``group.initial.rebalance.delay.ms`` = 100 and
``group.min.session.timeout.ms`` = 1000 so that rebalances take a fraction of a second.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import Rec, create_topic, make_messages, produce_confluent

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.structs

import aiokafka
import aiokafka.structs

GROUP_CONFIG = {"group.initial.rebalance.delay.ms": 100, "group.min.session.timeout.ms": 1000}
PARTITIONS = 6
PHASE_TIMEOUT = 30.0
#: REBALANCE_IN_PROGRESS, ILLEGAL_GENERATION (see commit_confluent).
_RETRIED_COMMIT_ERRORS = (27, 22)
#: What a classic group member sends (tools/gen_compatibility.py).
MEMBER_APIS = (
    "FindCoordinator",
    "JoinGroup",
    "SyncGroup",
    "Heartbeat",
    "OffsetCommit",
    "OffsetFetch",
    "LeaveGroup",
)

Seen = collections.Counter[tuple[int, int]]


@pytest.fixture(scope="module")
def gbroker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    return module_broker_factory(config=GROUP_CONFIG)


def produce_batch(bootstrap: str, topic: str, count: int, tag: str) -> list[Rec]:
    return produce_confluent(bootstrap, topic, make_messages(count, 97, tag, value_size=20))


def confluent_consumer(bootstrap: str, group: str, assignor: str = "range", session_ms: int = 6000) -> Any:
    return confluent_kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "partition.assignment.strategy": assignor,
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": 200,
            "max.poll.interval.ms": 60000,
            "topic.metadata.refresh.interval.ms": 2000,
            "reconnect.backoff.max.ms": 500,  # a restarted worker is back within a second or two
        }
    )


class Member:
    """A confluent-kafka group member polled from the test's thread."""

    def __init__(
        self, name: str, consumer: Any, topic: str, on_revoke: Callable[..., None] | None = None
    ) -> None:
        self.name = name
        self.c = consumer
        self.closed = False
        if on_revoke is None:
            consumer.subscribe([topic])
        else:
            consumer.subscribe([topic], on_revoke=on_revoke)

    def poll_once(self, seen: Seen) -> None:
        msg = self.c.poll(0.02)
        if msg is None:
            return
        if msg.error():
            raise AssertionError(f"{self.name}: {msg.error()}")
        seen[(msg.partition(), msg.offset())] += 1  # "processed"
        commit_confluent(self.c, msg)

    def owned(self) -> set[int]:
        return set() if self.closed else {tp.partition for tp in self.c.assignment()}

    def close(self) -> None:
        self.c.close()
        self.closed = True


def commit_confluent(consumer: Any, msg: Any) -> None:
    """Commit after processing, retrying what Kafka answers a cooperative member that keeps
    consuming through a rebalance: REBALANCE_IN_PROGRESS while the group waits for its leader's
    assignment, and ILLEGAL_GENERATION for a commit sent with the old generation just before the
    member read its JoinGroup answer (the new generation). Retrying before the next poll is safe:
    the partition cannot be given to another member until this one has revoked it in a poll."""
    deadline = time.monotonic() + 10
    while True:
        try:
            consumer.commit(message=msg, asynchronous=False)
            return
        except confluent_kafka.KafkaException as exc:
            err = exc.args[0]
            if err.code() not in _RETRIED_COMMIT_ERRORS or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def owners_ok(owned: Sequence[set[int]], partitions: int) -> bool:
    """Every partition owned by exactly one member, and every member owns some."""
    union: set[int] = set().union(*owned)
    return union == set(range(partitions)) and sum(map(len, owned)) == partitions and all(owned)


def no_overlap(members: Sequence[Member]) -> None:
    owned = [m.owned() for m in members]
    for i, a in enumerate(owned):
        for j in range(i + 1, len(owned)):
            both = a & owned[j]
            assert not both, f"{members[i].name} and {members[j].name} both own {sorted(both)}"


def drive(members: Sequence[Member], seen: Seen, done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PHASE_TIMEOUT
    live = [m for m in members if not m.closed]
    while True:
        for m in live:
            m.poll_once(seen)
            no_overlap(live)
        if done():
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out: {what}; owned {[(m.name, sorted(m.owned())) for m in live]}, "
                f"{sum(seen.values())} records read"
            )


def assert_exactly_once(seen: Seen, produced: Iterable[Rec]) -> None:
    want = {(r.partition, r.offset) for r in produced}
    dups = {k: n for k, n in seen.items() if n > 1}
    assert not dups, f"read more than once: {sorted(dups)[:10]}"
    assert set(seen) == want, (
        f"lost {sorted(want - set(seen))[:10]}, unexpected {sorted(set(seen) - want)[:10]}"
    )


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = confluent_consumer(bootstrap, group)
    try:
        tps = c.committed([confluent_kafka.TopicPartition(topic, p) for p in range(partitions)], timeout=20)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        c.close()


def ends(produced: Iterable[Rec]) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in produced:
        out[r.partition] = max(out.get(r.partition, 0), r.offset + 1)
    return out


# -- confluent-kafka: two, three, then one member -------------------------------------------------


@pytest.mark.parametrize("assignor", ["range", "roundrobin", "cooperative-sticky"])
@pytest.mark.kafka_api(*MEMBER_APIS, "Fetch", client="confluent-kafka")
def test_confluent_members_come_and_go(gbroker: BrokerProcess, assignor: str) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = f"cg-{assignor}", f"group-{assignor}"
    create_topic(bootstrap, topic, PARTITIONS)
    seen: Seen = collections.Counter()
    produced = produce_batch(bootstrap, topic, 120, "one")
    a = Member("a", confluent_consumer(bootstrap, group, assignor), topic)
    b = Member("b", confluent_consumer(bootstrap, group, assignor), topic)
    members = [a, b]
    try:

        def settled(expected: Sequence[Member]) -> Callable[[], bool]:
            return lambda: len(seen) >= len(produced) and owners_ok([m.owned() for m in expected], PARTITIONS)

        drive(members, seen, settled([a, b]), "two members share the partitions")
        c = Member("c", confluent_consumer(bootstrap, group, assignor), topic)
        members.append(c)
        produced += produce_batch(bootstrap, topic, 120, "two")  # read while the group rebalances
        drive(members, seen, settled([a, b, c]), "three members share the partitions")
        a.close()
        b.close()
        produced += produce_batch(bootstrap, topic, 120, "three")
        drive(members, seen, settled([c]), "the last member owns every partition")
        assert_exactly_once(seen, produced)
        c.close()
        assert committed(bootstrap, group, topic, PARTITIONS) == ends(produced)
    finally:
        for m in members:
            if not m.closed:
                m.close()


# -- kafka-python and aiokafka --------------------------------------------------------------------


@pytest.mark.kafka_api(*MEMBER_APIS, "Fetch", client="kafka-python")
def test_kafka_python_group(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cg-kafka-python", "group-kafka-python"
    create_topic(bootstrap, topic, 4)
    produced = produce_batch(bootstrap, topic, 200, "kp")
    seen: Seen = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()
    consumers: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            kc = kafka.KafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=200,
            )
            consumers[name] = kc
            while not stop.is_set():
                for tp, records in kc.poll(timeout_ms=50).items():
                    for rec in records:
                        with lock:
                            seen[(rec.partition, rec.offset)] += 1
                        kc.commit({tp: kafka.structs.OffsetAndMetadata(rec.offset + 1, None, -1)})
            kc.close()
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in ("x", "y")]
    for t in threads:
        t.start()

    def settled() -> bool:
        if errors:
            raise AssertionError(f"kafka-python consumer failed: {errors[0]!r}")
        owned = [set(tp.partition for tp in c.assignment()) for c in list(consumers.values())]
        with lock:
            return len(owned) == 2 and len(seen) >= len(produced) and owners_ok(owned, 4)

    try:
        wait_for(settled, PHASE_TIMEOUT, "two kafka-python members to read everything")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert_exactly_once(seen, produced)
    assert committed(bootstrap, group, topic, 4) == ends(produced)


@pytest.mark.kafka_api(*MEMBER_APIS, "Fetch", client="aiokafka")
def test_aiokafka_group(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cg-aiokafka", "group-aiokafka"
    create_topic(bootstrap, topic, 4)
    produced = produce_batch(bootstrap, topic, 200, "aio")
    seen: Seen = collections.Counter()

    async def scenario() -> None:
        consumers = [
            aiokafka.AIOKafkaConsumer(
                topic,
                bootstrap_servers=bootstrap,
                group_id=group,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=6000,
                heartbeat_interval_ms=200,
            )
            for _ in range(2)
        ]
        for c in consumers:
            await c.start()
        stop = asyncio.Event()

        async def run(c: aiokafka.AIOKafkaConsumer) -> None:
            while not stop.is_set():
                batches = await c.getmany(timeout_ms=50)
                for tp, records in batches.items():
                    for rec in records:
                        seen[(rec.partition, rec.offset)] += 1
                        await c.commit({tp: rec.offset + 1})

        tasks = [asyncio.create_task(run(c)) for c in consumers]
        deadline = time.monotonic() + PHASE_TIMEOUT
        try:
            while True:
                for t in tasks:
                    if t.done():
                        t.result()
                owned = [{tp.partition for tp in c.assignment()} for c in consumers]
                if len(seen) >= len(produced) and owners_ok(owned, 4):
                    break
                assert time.monotonic() < deadline, (
                    f"aiokafka group did not settle: {owned}, {len(seen)} read"
                )
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in consumers:
                await c.stop()

    asyncio.run(scenario())
    assert_exactly_once(seen, produced)
    assert committed(bootstrap, group, topic, 4) == ends(produced)


# -- a member that dies without leaving -----------------------------------------------------------

_DOOMED = """
import sys, confluent_kafka
c = confluent_kafka.Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
    "session.timeout.ms": 2000, "heartbeat.interval.ms": 200, "enable.auto.commit": False,
    "auto.offset.reset": "earliest"})
c.subscribe([sys.argv[3]])
told = False
while True:
    c.poll(0.1)
    if c.assignment() and not told:
        print("ASSIGNED", flush=True)
        told = True
"""


def test_killed_member_is_expelled_after_its_session_timeout(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cg-expiry", "group-expiry"
    create_topic(bootstrap, topic, 4)
    seen: Seen = collections.Counter()
    survivor = Member("survivor", confluent_consumer(bootstrap, group, session_ms=6000), topic)
    doomed = subprocess.Popen(
        [sys.executable, "-c", _DOOMED, bootstrap, group, topic],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONWARNINGS="ignore"),
    )
    try:
        assert doomed.stdout is not None
        reader = threading.Thread(target=doomed.stdout.readline, daemon=True)
        reader.start()
        deadline = time.monotonic() + PHASE_TIMEOUT
        while reader.is_alive() or len(survivor.owned()) != 2:
            survivor.poll_once(seen)
            assert time.monotonic() < deadline, f"no 2/2 split: survivor owns {survivor.owned()}"
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        killed_at = time.monotonic()
        while len(survivor.owned()) != 4:
            survivor.poll_once(seen)
            assert time.monotonic() - killed_at < 2.0 + 8.0, "the dead member was never expelled"
        waited = time.monotonic() - killed_at
        # Not before its session timeout (2 s; the broker checks every 50 ms).
        assert waited >= 1.8, f"expelled {waited:.2f} s after the kill: before its session timeout"
    finally:
        if doomed.poll() is None:
            doomed.kill()
            doomed.wait(10)
        if doomed.stdout is not None:
            doomed.stdout.close()
        survivor.close()


# -- persistence: broker restart and worker kill -9 ------------------------------------------------


def _consume_all(bootstrap: str, group: str, topic: str, count: int, seen: Seen) -> None:
    m = Member("m", confluent_consumer(bootstrap, group), topic)
    try:
        drive([m], seen, lambda: sum(seen.values()) >= count, f"{count} records read")
    finally:
        m.close()


def test_committed_offsets_survive_a_broker_restart(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(config=GROUP_CONFIG)
    topic, group = "cg-restart", "group-restart"
    create_topic(broker.bootstrap, topic, 3)
    first = produce_batch(broker.bootstrap, topic, 90, "before")
    seen: Seen = collections.Counter()
    _consume_all(broker.bootstrap, group, topic, len(first), seen)
    assert committed(broker.bootstrap, group, topic, 3) == ends(first)
    assert broker.stop() == 0
    broker.start()
    assert committed(broker.bootstrap, group, topic, 3) == ends(first)
    second = produce_batch(broker.bootstrap, topic, 60, "after")
    _consume_all(broker.bootstrap, group, topic, len(first) + len(second), seen)
    assert_exactly_once(seen, first + second)  # resumed at the committed offsets


def test_committed_offsets_and_membership_survive_a_coordinator_kill(broker_factory: BrokerFactory) -> None:
    from shardbroker.broker.group_metadata_manager import partition_for

    broker = broker_factory(config=GROUP_CONFIG)
    bootstrap = broker.bootstrap
    topic, group = "cg-kill", "group-kill"
    create_topic(bootstrap, topic, 4)
    produced = produce_batch(bootstrap, topic, 100, "before")
    seen: Seen = collections.Counter()
    revocations: list[int] = []
    m = Member(
        "m",
        confluent_consumer(bootstrap, group, session_ms=10000),
        topic,
        on_revoke=lambda _c, parts: revocations.append(len(parts)),
    )
    try:
        drive([m], seen, lambda: len(seen) >= len(produced), "first batch read")
        assert not revocations
        meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics("__consumer_offsets", timeout=20)
        parts = meta.topics["__consumer_offsets"].partitions
        coordinator = parts[partition_for(group, len(parts))].leader
        pid = broker.worker_pid(coordinator)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: broker.worker_pid(coordinator) != pid, 30, "the worker to be restarted")
        # The member carries on with the same generation: the restarted coordinator reloaded it.
        produced += produce_batch(bootstrap, topic, 100, "after")
        drive([m], seen, lambda: len(seen) >= len(produced), "second batch read")
        quiet = time.monotonic() + 1.5  # heartbeats to the new coordinator process go on
        while time.monotonic() < quiet:
            m.poll_once(seen)
        assert not revocations, "the member had to rejoin: its membership was lost with the worker"
        assert_exactly_once(seen, produced)
    finally:
        m.close()
    assert committed(bootstrap, group, topic, 4) == ends(produced)


# -- admin: ListGroups, DescribeGroups, DeleteGroups ----------------------------------------------


@pytest.mark.kafka_api("ListGroups", "DescribeGroups", "DeleteGroups", client="confluent-kafka")
def test_admin_lists_describes_and_deletes_groups(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cg-admin", "group-admin"
    create_topic(bootstrap, topic, 2)
    produced = produce_batch(bootstrap, topic, 20, "adm")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    seen: Seen = collections.Counter()
    m = Member("m", confluent_consumer(bootstrap, group), topic)
    try:
        drive([m], seen, lambda: len(seen) >= len(produced), "records read")
        live = admin.describe_consumer_groups([group])[group].result(20)
        assert live.state == confluent_kafka.ConsumerGroupState.STABLE
        (desc,) = live.members
        assert {tp.partition for tp in desc.assignment.topic_partitions} == {0, 1}
        assert admin.delete_consumer_groups([group])[group].exception(20) is not None  # not empty
    finally:
        m.close()
    listed = admin.list_consumer_groups().result(20)
    states = {g.group_id: g.state for g in listed.valid}
    assert states.get(group) == confluent_kafka.ConsumerGroupState.EMPTY, states
    described = admin.describe_consumer_groups([group])[group].result(20)
    assert described.state == confluent_kafka.ConsumerGroupState.EMPTY and not described.members
    assert admin.delete_consumer_groups([group])[group].result(20) is None
    assert group not in {g.group_id for g in admin.list_consumer_groups().result(20).valid}
    assert committed(bootstrap, group, topic, 2) == {0: -1001, 1: -1001}  # OFFSET_INVALID: none left


@pytest.mark.kafka_api(
    "OffsetCommit", "OffsetDelete", "OffsetFetch", "FindCoordinator", client="kafka-python"
)
def test_kafka_python_admin_commits_and_deletes_an_empty_groups_offsets(gbroker: BrokerProcess) -> None:
    topic, group = "cg-offset-delete", "group-offset-delete"
    create_topic(gbroker.bootstrap, topic, 2)
    produce_batch(gbroker.bootstrap, topic, 10, "od")
    tps = [kafka.TopicPartition(topic, p) for p in (0, 1)]
    admin = kafka.KafkaAdminClient(bootstrap_servers=gbroker.bootstrap)
    try:
        admin.alter_group_offsets(group, {tp: kafka.structs.OffsetAndMetadata(3, "", -1) for tp in tps})
        assert committed(gbroker.bootstrap, group, topic, 2) == {0: 3, 1: 3}
        admin.delete_group_offsets(group, tps[:1])  # raises on a partition's error
        fetched = admin.list_group_offsets({group: None})[group]
    finally:
        admin.close()
    assert {tp.partition: o.offset for tp, o in fetched.items()} == {1: 3}
    assert committed(gbroker.bootstrap, group, topic, 2) == {0: -1001, 1: 3}


# -- drain with a JoinGroup parked ------------------------------------------------------------------


def test_sigterm_answers_a_parked_join_at_once(broker_factory: BrokerFactory) -> None:
    from shardbroker.protocol import messages as m
    from shardbroker.protocol.errors import ErrorCode
    from shardbroker.protocol.headers import decode_response
    from tests.integration.test_broker_protocol import RawConnection

    broker = broker_factory(config=GROUP_CONFIG)
    boot = RawConnection(broker.host, broker.base_port)
    found = boot.request(m.FindCoordinatorRequest(key="parked"), 1)
    boot.close()
    assert found.error_code == 0, found
    join = m.JoinGroupRequest(
        group_id="parked",
        session_timeout_ms=30_000,
        rebalance_timeout_ms=60_000,
        protocol_type="consumer",
        protocols=[m.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"")],
    )
    first, second = RawConnection(found.host, found.port), RawConnection(found.host, found.port)
    try:
        assert first.request(join, 3).generation_id == 1
        second.send(join, 3)  # the first member never rejoins: this waits up to 60 s
        time.sleep(0.5)
        started = time.monotonic()
        assert broker.stop() == 0
        assert time.monotonic() - started < 10, "the drain waited for the parked JoinGroup"
        _, answer = decode_response(second.read_frame(), join.API_KEY, 3)
        assert isinstance(answer, m.JoinGroupResponse) and answer.error_code == ErrorCode.NOT_COORDINATOR
    finally:
        first.close()
        second.close()


# -- static membership ------------------------------------------------------------------------------


def test_static_member_restart_keeps_its_partitions_without_a_rebalance(gbroker: BrokerProcess) -> None:
    bootstrap = gbroker.bootstrap
    topic, group = "cg-static", "group-static"
    create_topic(bootstrap, topic, 4)
    produced = produce_batch(bootstrap, topic, 80, "st")
    seen: Seen = collections.Counter()
    revoked: list[str] = []

    def make(name: str) -> Member:
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "group.instance.id": f"instance-{name}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 200,
        }
        return Member(
            name,
            confluent_kafka.Consumer(conf),
            topic,
            on_revoke=lambda _c, parts: revoked.append(f"{name}:{len(parts)}"),
        )

    a, b = make("a"), make("b")
    members = [a, b]
    try:
        drive(
            members,
            seen,
            lambda: len(seen) >= len(produced) and owners_ok([a.owned(), b.owned()], 4),
            "split",
        )
        owned_by_a, owned_by_b = a.owned(), b.owned()
        a.close()  # a static member does not leave on close (it revokes locally: not counted)
        revoked.clear()
        a2 = make("a")
        members.append(a2)
        produced += produce_batch(bootstrap, topic, 80, "st2")
        drive([a2, b], seen, lambda: len(seen) >= len(produced) and a2.owned() == owned_by_a, "a's restart")
        assert b.owned() == owned_by_b
        assert not [r for r in revoked if not r.endswith(":0")], f"a rebalance revoked partitions: {revoked}"
        assert_exactly_once(seen, produced)
    finally:
        for m in members:
            if not m.closed:
                m.close()
