"""ACLs on the data path of a whole broker, with real clients as ``alice`` (SASL PLAIN): each of
confluent-kafka, kafka-python, aiokafka and kcat produces and consumes in a group under Kafka's
rules: WRITE without READ, DENY beating ALLOW, PREFIXED patterns, the super user without ACLs,
Metadata hiding the topics a principal may not describe (anonymous PLAINTEXT sees none), the
idempotent producer's InitProducerId check, and CreateTopics with CREATE on a PREFIXED pattern.

Consuming in a group needs READ on the GROUP (KafkaApis' JoinGroup/SyncGroup/OffsetFetch
checks): the tests grant it, so they hold whether or not the group checks are in force.
Opens loopback sockets, runs a broker (tests/integration/acl_broker.py) and kcat.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclOperation,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.acl_broker import (
    AclBroker,
    acl_broker,
    admin_client,
    allow,
    clean_acls,
    confluent_config,
    deny,
    grant,
    new_topic,
    python_config,
)
from tests.integration.kafka_clients import aiokafka_values

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

import aiokafka
import aiokafka.admin
import aiokafka.errors

TIMEOUT = 30.0
COUNT = 5
CLIENTS = ["confluent", "kafka-python", "aiokafka", "kcat"]
TAF, CAF = "TOPIC_AUTHORIZATION_FAILED", "CLUSTER_AUTHORIZATION_FAILED"
#: How each client names the errors these tests expect (exception names, librdkafka's text).
_SPELLINGS = {
    TAF: ("TOPIC_AUTHORIZATION_FAILED", "TopicAuthorizationFailed", "Topic authorization failed"),
    CAF: ("CLUSTER_AUTHORIZATION_FAILED", "ClusterAuthorizationFailed", "Cluster authorization failed"),
}
PREFIXED = ResourcePatternType.PREFIXED
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.BROKER


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    yield from acl_broker(tmp_path_factory, "acl-data")


@pytest.fixture(autouse=True)
def _clean(broker: AclBroker) -> Iterator[None]:
    yield
    clean_acls(broker)


def _needs(client: str) -> None:
    if client == "kcat" and shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")


def error_name(text: str) -> str:
    """The Kafka error name a client's error text stands for (the text itself if none)."""
    for name, spellings in _SPELLINGS.items():
        if any(s in text for s in spellings):
            return name
    return text


def values(topic: str) -> set[bytes]:
    return {f"{topic}-{i}".encode() for i in range(COUNT)}


# -- one produce and one group consume per client, as ``user`` -----------------------------------


def produce(broker: AclBroker, client: str, user: str, topic: str, idempotent: bool = False) -> str | None:
    """Produce ``values(topic)``; None once all are acknowledged, else the error's Kafka name."""
    sent = sorted(values(topic))
    try:
        if client == "confluent":
            return _confluent_produce(broker, user, topic, sent, idempotent)
        if client == "kafka-python":
            sec = python_config(broker, user)
            kp = kafka.KafkaProducer(enable_idempotence=idempotent, max_block_ms=int(TIMEOUT * 1000), **sec)
            try:
                for value in sent:
                    kp.send(topic, value).get(timeout=TIMEOUT)
            finally:
                kp.close(timeout=TIMEOUT)
            return None
        if client == "aiokafka":
            asyncio.run(_aiokafka_produce(broker, user, topic, sent, idempotent))
            return None
    except Exception as exc:  # each client's own error types: compared by name
        return error_name(f"{type(exc).__name__}: {exc}")
    assert client == "kcat"
    settings = (f"enable.idempotence={str(idempotent).lower()}",)
    done = kcat(broker, user, ["-P", "-t", topic], settings, "".join(f"{v.decode()}\n" for v in sent))
    # kcat may exit 0 after librdkafka's fatal error (idempotence refused) when nothing was queued
    # yet: the FATAL line is the answer then.
    failed = done.returncode != 0 or "|FATAL|" in done.stderr
    return error_name(done.stderr) if failed else None


def _confluent_produce(
    broker: AclBroker, user: str, topic: str, sent: list[bytes], idempotent: bool
) -> str | None:
    producer = confluent_kafka.Producer({**confluent_config(broker, user), "enable.idempotence": idempotent})
    failures: list[str] = []

    def delivered(err: confluent_kafka.KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    try:
        for value in sent:
            producer.produce(topic, value, on_delivery=delivered)
        left = producer.flush(TIMEOUT)
    except (confluent_kafka.KafkaException, SystemError) as exc:
        # A fatal error (idempotence refused) raises here; confluent-kafka sometimes surfaces it
        # as a SystemError chained to the KafkaException.
        return error_name(f"{exc} {exc.__cause__ or ''} {exc.__context__ or ''}")
    assert left == 0, f"{left} messages not delivered in {TIMEOUT} s"
    return error_name(failures[0]) if failures else None


async def _aiokafka_produce(
    broker: AclBroker, user: str, topic: str, sent: list[bytes], idempotent: bool
) -> None:
    producer = aiokafka.AIOKafkaProducer(enable_idempotence=idempotent, **python_config(broker, user))
    try:
        await producer.start()
        for value in sent:
            await asyncio.wait_for(producer.send_and_wait(topic, value), TIMEOUT)
    finally:
        await producer.stop()


def consume(broker: AclBroker, client: str, user: str, topic: str, group: str) -> set[bytes] | str:
    """Read ``COUNT`` records of ``topic`` in ``group`` from the beginning: their values, or the
    error's Kafka name."""
    try:
        if client == "confluent":
            return _confluent_consume(broker, user, topic, group)
        if client == "kafka-python":
            sec = python_config(broker, user)
            timeout_ms = int(TIMEOUT * 1000)
            kc = kafka.KafkaConsumer(
                topic, group_id=group, auto_offset_reset="earliest", consumer_timeout_ms=timeout_ms, **sec
            )
            got: set[bytes] = set()
            try:
                for record in kc:
                    got.add(record.value)
                    if len(got) == COUNT:
                        break
            finally:
                kc.close()
            return got
        if client == "aiokafka":
            return asyncio.run(_aiokafka_consume(broker, user, topic, group))
    except Exception as exc:  # each client's own error types: compared by name
        return error_name(f"{type(exc).__name__}: {exc}")
    assert client == "kcat"
    done = kcat(broker, user, ["-G", group, topic, "-o", "beginning", "-c", str(COUNT), "-f", "%s\\n"])
    if done.returncode != 0:
        return error_name(done.stderr)
    return {line.encode() for line in done.stdout.splitlines() if line}


def _confluent_consume(broker: AclBroker, user: str, topic: str, group: str) -> set[bytes] | str:
    conf = {**confluent_config(broker, user), "group.id": group, "auto.offset.reset": "earliest"}
    consumer = confluent_kafka.Consumer(conf)
    consumer.subscribe([topic])
    got: set[bytes] = set()
    try:
        deadline = time.monotonic() + TIMEOUT
        while len(got) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            err = msg.error()
            if err is not None:
                return str(err.name())
            value = msg.value()
            assert isinstance(value, bytes)
            got.add(value)
    finally:
        consumer.close()
    return got


async def _aiokafka_consume(broker: AclBroker, user: str, topic: str, group: str) -> set[bytes]:
    sec = python_config(broker, user)
    consumer = aiokafka.AIOKafkaConsumer(topic, group_id=group, auto_offset_reset="earliest", **sec)
    return await aiokafka_values(consumer, COUNT, TIMEOUT)


def kcat(
    broker: AclBroker,
    user: str | None,
    args: list[str],
    settings: tuple[str, ...] = (),
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """kcat as ``user`` over SASL PLAIN (None: anonymous over PLAINTEXT)."""
    conf = confluent_config(broker, user)
    x = [a for k, v in conf.items() if k != "bootstrap.servers" for a in ("-X", f"{k}={v}")]
    x += [a for s in settings for a in ("-X", s)]
    cmd = ["kcat", "-b", conf["bootstrap.servers"], *args, *x]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=TIMEOUT)


def read_as_admin(broker: AclBroker, topic: str) -> set[bytes]:
    """Every value of ``topic`` (all partitions, from the start), read by the super user."""
    got = consume(broker, "confluent", "admin", topic, f"admin-{uuid.uuid4().hex[:8]}")
    assert isinstance(got, set), got
    return got


# -- the scenarios ------------------------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_write_without_read_produces_but_cannot_consume(broker: AclBroker, client: str) -> None:
    _needs(client)
    topic = new_topic(broker)
    group = f"g-{topic}"
    grant(
        broker,
        allow("alice", AclOperation.WRITE, TOPIC, topic),
        allow("alice", AclOperation.READ, GROUP, group),
    )
    assert produce(broker, client, "alice", topic) is None
    assert read_as_admin(broker, topic) == values(topic)
    assert consume(broker, client, "alice", topic, group) == TAF


@pytest.mark.parametrize("client", CLIENTS)
def test_deny_beats_allow(broker: AclBroker, client: str) -> None:
    _needs(client)
    denied, other = new_topic(broker), new_topic(broker)
    group = f"g-{denied}"
    grant(
        broker,
        allow("alice", AclOperation.ALL, TOPIC, "*"),
        allow("alice", AclOperation.READ, GROUP, group),
        deny("alice", AclOperation.WRITE, TOPIC, denied),
    )
    assert produce(broker, client, "alice", denied) == TAF
    assert produce(broker, client, "alice", other) is None
    # the DENY is of WRITE only: the ALLOW of ALL still lets alice read the topic
    assert produce(broker, "confluent", "admin", denied) is None
    assert consume(broker, client, "alice", denied, group) == values(denied)


@pytest.mark.parametrize("client", CLIENTS)
def test_prefixed_patterns(broker: AclBroker, client: str) -> None:
    _needs(client)
    mine, theirs = new_topic(broker, "alice"), new_topic(broker, "bob")
    grant(
        broker,
        allow("alice", AclOperation.WRITE, TOPIC, "alice-", PREFIXED),
        allow("alice", AclOperation.READ, TOPIC, "alice-", PREFIXED),
        allow("alice", AclOperation.READ, GROUP, "alice-", PREFIXED),
    )
    assert produce(broker, client, "alice", mine) is None
    assert consume(broker, client, "alice", mine, f"alice-{mine}") == values(mine)
    assert produce(broker, client, "alice", theirs) == TAF


@pytest.mark.parametrize("client", CLIENTS)
def test_super_user_needs_no_acl(broker: AclBroker, client: str) -> None:
    _needs(client)
    topic = new_topic(broker)  # CreateTopics as admin
    assert produce(broker, client, "admin", topic) is None
    assert consume(broker, client, "admin", topic, f"g-{topic}") == values(topic)
    admin = admin_client(broker)
    admin.delete_topics([topic])[topic].result(timeout=TIMEOUT)


def visible_topics(broker: AclBroker, client: str, user: str | None) -> set[str]:
    """The topics a Metadata request for every topic lists, as ``user`` (None: anonymous over
    PLAINTEXT)."""
    if client == "confluent":
        return set(admin_client(broker, user).list_topics(timeout=TIMEOUT).topics)
    if client == "kcat":
        listed = kcat(broker, user, ["-L", "-J"])
        assert listed.returncode == 0, listed.stderr
        return {t["topic"] for t in json.loads(listed.stdout)["topics"]}
    sec = python_config(broker, user) if user else {"bootstrap_servers": broker.plaintext_bootstrap}
    if client == "kafka-python":
        admin = kafka.admin.KafkaAdminClient(**sec)
        try:
            return set(admin.list_topics())
        finally:
            admin.close()
    return asyncio.run(_aiokafka_topics(sec))


async def _aiokafka_topics(sec: dict[str, Any]) -> set[str]:
    consumer = aiokafka.AIOKafkaConsumer(**sec)
    await consumer.start()
    try:
        return set(await consumer.topics())
    finally:
        await consumer.stop()


@pytest.mark.parametrize("client", CLIENTS)
def test_metadata_hides_topics_the_principal_may_not_describe(broker: AclBroker, client: str) -> None:
    _needs(client)
    seen, hidden = new_topic(broker, "seen"), new_topic(broker, "hidden")
    grant(broker, allow("alice", AclOperation.DESCRIBE, TOPIC, seen))
    assert visible_topics(broker, client, "alice") == {seen}
    assert {seen, hidden} <= visible_topics(broker, client, "admin")
    assert visible_topics(broker, client, None) == set()  # User:ANONYMOUS has no ACL


@pytest.mark.parametrize("client", CLIENTS)
def test_idempotent_producer_with_write_on_a_topic_only(broker: AclBroker, client: str) -> None:
    """No IDEMPOTENT_WRITE on the cluster: WRITE on some topic is enough (Kafka 2.8+)."""
    _needs(client)
    topic = new_topic(broker)
    grant(broker, allow("alice", AclOperation.WRITE, TOPIC, topic))
    assert produce(broker, client, "alice", topic, idempotent=True) is None
    assert read_as_admin(broker, topic) == values(topic)


@pytest.mark.parametrize("client", CLIENTS)
def test_idempotent_producer_without_any_write_fails_at_init(broker: AclBroker, client: str) -> None:
    """Only DESCRIBE (the topic is visible, nothing may be written): InitProducerId answers
    CLUSTER_AUTHORIZATION_FAILED, which every client reports as fatal."""
    _needs(client)
    topic = new_topic(broker)
    grant(broker, allow("alice", AclOperation.DESCRIBE, TOPIC, topic))
    assert produce(broker, client, "alice", topic, idempotent=True) == CAF
    grant(broker, allow("alice", AclOperation.IDEMPOTENT_WRITE, CLUSTER, "kafka-cluster"))
    assert produce(broker, client, "alice", topic, idempotent=True) == TAF  # past init, no WRITE


def create_topic(client: str, broker: AclBroker, name: str) -> str | None:
    """CreateTopics as alice: None if created, else the error's Kafka name."""
    try:
        if client == "confluent":
            admin = admin_client(broker, "alice")
            admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(
                timeout=TIMEOUT
            )
        elif client == "kafka-python":
            python_admin = kafka.admin.KafkaAdminClient(**python_config(broker, "alice"))
            try:
                python_admin.create_topics([kafka.admin.NewTopic(name, 1, 1)])
            finally:
                python_admin.close()
        else:
            asyncio.run(_aiokafka_create(broker, name))
    except Exception as exc:  # each client's own error types: compared by name
        return error_name(f"{type(exc).__name__}: {exc}")
    return None


async def _aiokafka_create(broker: AclBroker, name: str) -> None:
    admin = aiokafka.admin.AIOKafkaAdminClient(**python_config(broker, "alice"))
    await admin.start()
    try:
        response = await admin.create_topics([aiokafka.admin.NewTopic(name, 1, 1)])
        for _name, code, *_ in response.topic_errors:  # aiokafka returns the errors, not raises
            if code:
                raise aiokafka.errors.for_code(code)()
    finally:
        await admin.close()


@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka"])
def test_create_topics_with_create_on_a_prefixed_pattern(broker: AclBroker, client: str) -> None:
    tag = uuid.uuid4().hex[:8]
    grant(broker, allow("alice", AclOperation.CREATE, TOPIC, "alice-", PREFIXED))
    assert create_topic(client, broker, f"alice-{tag}") is None
    assert create_topic(client, broker, f"bob-{tag}") == TAF
    assert f"alice-{tag}" in visible_topics(broker, "confluent", "admin")
    assert f"bob-{tag}" not in visible_topics(broker, "confluent", "admin")
