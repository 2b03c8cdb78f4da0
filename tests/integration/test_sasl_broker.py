"""A whole broker on a SASL_PLAINTEXT listener with real clients: produce, consume in a group and
admin with PLAIN (users from ``sasl.plain.users``), OAUTHBEARER (librdkafka's unsecured JWT) and
SCRAM-SHA-256/512 (users created with AlterUserScramCredentials), and the failures clients see.

test_sasl_clients.py covers the same authentication flows against the SASL handlers alone, in
process. Opens loopback sockets, runs a broker and kcat.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import aiokafka_values

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

import aiokafka

USERS = {"admin": "admin-secret", "alice": "alice-secret"}
SCRAM_USER, SCRAM_PASSWORD = "carol", "carol-secret"
TIMEOUT = 60.0
COUNT = 20


class SaslBroker(BrokerProcess):
    """A broker whose one listener is SASL_PLAINTEXT (``listeners`` in the config file instead of
    ``--listen``), with PLAIN users, SCRAM and OAUTHBEARER enabled."""

    def command(self) -> list[str]:
        self.config.update(
            {
                "listeners": f"SASL_PLAINTEXT://{self.host}:{self.base_port}",
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
                "sasl.plain.users": json.dumps(USERS),
                "connection.failed.authentication.delay.ms": 0,
                "num.partitions": 2,
            }
        )
        args = super().command()
        for flag in ("--listen", "--advertise"):
            at = args.index(flag)
            del args[at : at + 2]
        return args


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    root = tmp_path_factory.mktemp("sasl-broker")
    logs = root / "logs"
    logs.mkdir()
    process = SaslBroker(root / "data", logs, workers=2, name="sasl")
    try:
        yield process.start()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
        process.kill()


def confluent_security(mechanism: str, user: str = "", password: str = "") -> dict[str, Any]:
    if mechanism == "OAUTHBEARER":
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": f"principal={user} lifeSeconds=600",
        }
    return {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
    }


def python_security(mechanism: str, user: str, password: str) -> dict[str, Any]:
    """kafka-python's and aiokafka's settings."""
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def kcat_security(mechanism: str, user: str, password: str) -> list[str]:
    settings = confluent_security(mechanism, user, password)
    return [arg for name, value in settings.items() for arg in ("-X", f"{name}={value}")]


def new_topic(broker: BrokerProcess) -> str:
    topic = f"sasl-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(
        {"bootstrap.servers": broker.bootstrap, **confluent_security("PLAIN", "admin", "admin-secret")}
    )
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(
        timeout=TIMEOUT
    )
    return topic


def messages(tag: str) -> list[tuple[bytes, bytes]]:
    return [(f"k{i}".encode(), f"{tag}-{i}".encode()) for i in range(COUNT)]


def roundtrip(
    client: str, bootstrap: str, topic: str, mechanism: str, user: str, password: str
) -> set[bytes]:
    """Produce ``messages(topic)`` and consume them back in a group; the values read."""
    sent = messages(topic)
    group = f"g-{topic}"
    if client == "confluent":
        conf = {"bootstrap.servers": bootstrap, **confluent_security(mechanism, user, password)}
        producer = confluent_kafka.Producer(conf)
        for key, value in sent:
            producer.produce(topic, value, key)
        assert producer.flush(TIMEOUT) == 0
        consumer = confluent_kafka.Consumer({**conf, "group.id": group, "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        got: set[bytes] = set()
        deadline = time.monotonic() + TIMEOUT
        while len(got) < COUNT and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                got.add(msg.value())
        consumer.close()
        return got
    if client == "kafka-python":
        sec = python_security(mechanism, user, password)
        kp = kafka.KafkaProducer(bootstrap_servers=bootstrap, **sec)
        for key, value in sent:
            kp.send(topic, value, key)
        kp.flush(TIMEOUT)
        kp.close()
        kc = kafka.KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            auto_offset_reset="earliest",
            consumer_timeout_ms=int(TIMEOUT * 1000),
            **sec,
        )
        got = set()
        for record in kc:
            got.add(record.value)
            if len(got) == COUNT:
                break
        kc.close()
        return got
    if client == "aiokafka":
        return asyncio.run(
            _aiokafka_roundtrip(bootstrap, topic, group, sent, python_security(mechanism, user, password))
        )
    assert client == "kcat"
    x = kcat_security(mechanism, user, password)
    lines = "".join(f"{k.decode()}:{v.decode()}\n" for k, v in sent)
    subprocess.run(
        ["kcat", "-b", bootstrap, "-P", "-t", topic, "-K:", *x],
        input=lines,
        text=True,
        check=True,
        timeout=TIMEOUT,
    )
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-G", group, topic, "-o", "beginning", "-c", str(COUNT), "-f", "%s\\n", *x],
        capture_output=True,
        text=True,
        check=True,
        timeout=TIMEOUT,
    ).stdout
    return {line.encode() for line in out.splitlines() if line}


async def _aiokafka_roundtrip(
    bootstrap: str, topic: str, group: str, sent: list[tuple[bytes, bytes]], sec: dict[str, Any]
) -> set[bytes]:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, **sec)
    await producer.start()
    try:
        for key, value in sent:
            await producer.send_and_wait(topic, value, key)
    finally:
        await producer.stop()
    consumer = aiokafka.AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", **sec
    )
    return await aiokafka_values(consumer, COUNT, TIMEOUT)


CLIENTS = ["confluent", "kafka-python", "aiokafka", "kcat"]


def _needs_kcat(client: str) -> None:
    if client == "kcat" and shutil.which("kcat") is None:
        pytest.skip("kcat is not installed")


def _kcat_librdkafka() -> tuple[int, ...]:
    out = subprocess.run(["kcat", "-V"], capture_output=True, text=True, check=True).stdout
    match = re.search(r"librdkafka (\d+)\.(\d+)\.(\d+)", out)
    assert match, out
    return tuple(int(g) for g in match.groups())


#: librdkafka before 2.6.1 sends the client nonce twice in the SCRAM client-final message
#: (librdkafka#4895); RFC 5802 and Kafka 4.0 refuse it, and so do we.
FIXED_SCRAM_NONCE = (2, 6, 1)


@pytest.mark.parametrize("client", CLIENTS)
def test_plain_produce_and_consume_in_a_group(broker: SaslBroker, client: str) -> None:
    _needs_kcat(client)
    topic = new_topic(broker)
    assert roundtrip(client, broker.bootstrap, topic, "PLAIN", "alice", "alice-secret") == {
        v for _, v in messages(topic)
    }


def test_oauthbearer_unsecured_produce_and_consume(broker: SaslBroker) -> None:
    topic = new_topic(broker)
    assert roundtrip("confluent", broker.bootstrap, topic, "OAUTHBEARER", "dave", "") == {
        v for _, v in messages(topic)
    }


@pytest.mark.parametrize("password", ["wrong", ""])
def test_wrong_password_is_an_authentication_error(broker: SaslBroker, password: str) -> None:
    errors: list[Any] = []
    admin = AdminClient(
        {
            "bootstrap.servers": broker.bootstrap,
            **confluent_security("PLAIN", "alice", password or "x"),
            "error_cb": errors.append,
            "log_level": 0,
        }
    )
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors


def test_unauthenticated_requests_are_refused_by_closing(broker: SaslBroker) -> None:
    # A PLAINTEXT client on the SASL listener: its first Metadata closes the connection.
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=5)


def _create_scram_user(broker: BrokerProcess, mechanism: str) -> None:
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialUpsertion,
    )

    admin = AdminClient(
        {"bootstrap.servers": broker.bootstrap, **confluent_security("PLAIN", "admin", "admin-secret")}
    )
    info = ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), 4096)
    upsert = UserScramCredentialUpsertion(SCRAM_USER, info, SCRAM_PASSWORD.encode())
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=TIMEOUT)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("client", CLIENTS)
def test_scram_produce_and_consume_in_a_group(broker: SaslBroker, client: str, mechanism: str) -> None:
    _needs_kcat(client)
    _create_scram_user(broker, mechanism)
    topic = new_topic(broker)
    if client == "kcat" and _kcat_librdkafka() < FIXED_SCRAM_NONCE:
        with pytest.raises(subprocess.CalledProcessError):
            roundtrip(client, broker.bootstrap, topic, mechanism, SCRAM_USER, SCRAM_PASSWORD)
        log = "".join(path.read_text() for path in broker.log_dir.iterdir() if path.is_file())
        assert "Invalid client nonce in the final client message" in log
        return
    got = roundtrip(client, broker.bootstrap, topic, mechanism, SCRAM_USER, SCRAM_PASSWORD)
    assert got == {v for _, v in messages(topic)}


def test_scram_unknown_user_and_wrong_password_fail_alike(broker: SaslBroker) -> None:
    _create_scram_user(broker, "SCRAM-SHA-512")
    for user, password in ((SCRAM_USER, "wrong"), ("nobody", SCRAM_PASSWORD)):
        errors: list[Any] = []
        conf = {"bootstrap.servers": broker.bootstrap, "error_cb": errors.append, "log_level": 0}
        admin = AdminClient({**conf, **confluent_security("SCRAM-SHA-512", user, password)})
        with pytest.raises(confluent_kafka.KafkaException):
            admin.list_topics(timeout=5)
        admin.poll(1)
        texts = {e.str() for e in errors if e.code() == confluent_kafka.KafkaError._AUTHENTICATION}
        assert any("invalid credentials with SASL mechanism SCRAM-SHA-512" in t for t in texts), errors
