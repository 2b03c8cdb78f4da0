"""SASL_SSL against a whole broker with real clients: TLS (a CA made by the test) plus SCRAM.

One broker (two workers) with three listeners: PLAINTEXT (where the test creates SCRAM users with
AlterUserScramCredentials, as an operator on loopback would), SASL_SSL (PLAIN, SCRAM-SHA-256,
SCRAM-SHA-512) and REAUTH, a second SASL_SSL listener whose ``connections.max.reauth.ms`` is
short. confluent-kafka, kafka-python and aiokafka each create a topic, produce and consume in a
group over SASL_SSL with SCRAM-SHA-512 and SCRAM-SHA-256; kcat does the same with PLAIN (Debian's
kcat links a librdkafka older than 2.6.1, whose SCRAM client-final we refuse: test_sasl_broker.py
asserts that). A SCRAM user deleted while a confluent-kafka client is connected to REAUTH fails
its next re-authentication: test_sasl_clients.py shows it against the handlers with the image
swapped by hand, here the deletion goes through AlterUserScramCredentials, the controller and the
workers' images. Opens loopback sockets, runs a broker and kcat.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from tests.integration.broker_process import REPO, BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.test_tls_listeners import round_trip
from tests.integration.tls import TestCA, client_settings

PLAIN_USERS = {"kcat": "kcat-secret"}
PASSWORD = "s3cret-for-scram"
TIMEOUT = 60.0
MESSAGES = 10  # test_tls_listeners.round_trip's count


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def broker(module_broker_factory: BrokerFactory, ca: TestCA) -> BrokerProcess:
    return module_broker_factory(
        config={
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,REAUTH:SASL_SSL",
            "ssl.keystore.location": str(ca.server().keystore),
            "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
            "sasl.plain.users": json.dumps(PLAIN_USERS),  # a JSON object, as test_sasl_broker.py
            "listener.name.reauth.connections.max.reauth.ms": 1500,
            "connection.failed.authentication.delay.ms": 0,
        },
        listeners=("PLAINTEXT", "SASL_SSL", "REAUTH"),
    )


def _scram_admin(broker: BrokerProcess) -> AdminClient:
    return AdminClient({"bootstrap.servers": broker.listener_bootstrap("PLAINTEXT")})


def _upsert(broker: BrokerProcess, user: str, mechanism: str) -> None:
    info = ScramCredentialInfo(getattr(ScramMechanism, mechanism.replace("-", "_")), 4096)
    upsert = UserScramCredentialUpsertion(user, info, PASSWORD.encode())
    admin = _scram_admin(broker)  # kept alive until the answer: a destroyed handle fails its futures
    for future in admin.alter_user_scram_credentials([upsert]).values():
        future.result(timeout=TIMEOUT)


def _delete(broker: BrokerProcess, user: str, mechanism: str) -> None:
    deletion = UserScramCredentialDeletion(user, getattr(ScramMechanism, mechanism.replace("-", "_")))
    admin = _scram_admin(broker)
    for future in admin.alter_user_scram_credentials([deletion]).values():
        future.result(timeout=TIMEOUT)


def sasl_ssl_settings(client: str, ca: TestCA, mechanism: str, user: str, password: str) -> dict[str, Any]:
    """``client_settings``' TLS settings, switched to SASL_SSL with ``mechanism``."""
    tls = client_settings(client, ca)
    if client in ("confluent", "kcat"):
        return tls | {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": mechanism,
            "sasl.username": user,
            "sasl.password": password,
        }
    return tls | {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": user,
        "sasl_plain_password": password,
    }


def _watched_admin(
    bootstrap: str, ca: TestCA, mechanism: str, user: str, password: str
) -> tuple[AdminClient, list[Any]]:
    """A confluent-kafka admin client over SASL_SSL and the errors its ``error_cb`` collects."""
    errors: list[Any] = []
    settings = sasl_ssl_settings("confluent", ca, mechanism, user, password)
    conf = {"bootstrap.servers": bootstrap, **settings, "error_cb": errors.append, "log_level": 0}
    return AdminClient(conf), errors


def _authentication_failed(errors: list[Any]) -> bool:
    return any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
@pytest.mark.parametrize("client", ["confluent", "kafka-python", "aiokafka"])
def test_scram_over_tls_produce_consume_in_a_group_and_admin(
    broker: BrokerProcess, ca: TestCA, client: str, mechanism: str
) -> None:
    user = f"{client}-{mechanism}".lower()
    _upsert(broker, user, mechanism)
    settings = sasl_ssl_settings(client, ca, mechanism, user, PASSWORD)
    topic = f"sasl-ssl-{user}"
    values = round_trip(client, broker.listener_bootstrap("SASL_SSL"), settings, topic)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(MESSAGES))


def test_scram_admin_over_tls_describes_users_and_metadata_names_the_listener(
    broker: BrokerProcess, ca: TestCA
) -> None:
    _upsert(broker, "auditor", "SCRAM-SHA-512")
    admin = AdminClient(
        {
            "bootstrap.servers": broker.listener_bootstrap("SASL_SSL"),
            **sasl_ssl_settings("confluent", ca, "SCRAM-SHA-512", "auditor", PASSWORD),
        }
    )
    described: dict[str, Any] = admin.describe_user_scram_credentials(["auditor"])  # type: ignore[assignment]
    info = described["auditor"].result(timeout=TIMEOUT)
    assert [(c.mechanism, c.iterations) for c in info.scram_credential_infos] == [
        (ScramMechanism.SCRAM_SHA_512, 4096)
    ]
    cluster = admin.list_topics(timeout=TIMEOUT)
    assert sorted(b.port for b in cluster.brokers.values()) == broker.listener_ports("SASL_SSL")


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
def test_kcat_plain_over_tls(broker: BrokerProcess, ca: TestCA) -> None:
    settings = sasl_ssl_settings("kcat", ca, "PLAIN", "kcat", PLAIN_USERS["kcat"])
    values = round_trip("kcat", broker.listener_bootstrap("SASL_SSL"), settings, "sasl-ssl-kcat")
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(MESSAGES))


def test_scram_over_tls_wrong_password_is_an_authentication_error(broker: BrokerProcess, ca: TestCA) -> None:
    _upsert(broker, "erin", "SCRAM-SHA-512")
    admin, errors = _watched_admin(
        broker.listener_bootstrap("SASL_SSL"), ca, "SCRAM-SHA-512", "erin", "wrong"
    )
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)
    assert _authentication_failed(errors), errors


def test_deleted_scram_user_fails_reauthentication(broker: BrokerProcess, ca: TestCA) -> None:
    _upsert(broker, "frank", "SCRAM-SHA-256")
    admin, errors = _watched_admin(
        broker.listener_bootstrap("REAUTH"), ca, "SCRAM-SHA-256", "frank", PASSWORD
    )
    # Several session lifetimes while the user exists: re-authentication succeeds.
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        admin.list_topics(timeout=TIMEOUT)
        admin.poll(0.3)
    assert not _authentication_failed(errors), errors
    _delete(broker, "frank", "SCRAM-SHA-256")
    deadline = time.monotonic() + 20
    while not _authentication_failed(errors):
        assert time.monotonic() < deadline, f"no authentication error after the deletion: {errors}"
        with contextlib.suppress(confluent_kafka.KafkaException):
            admin.list_topics(timeout=1)
        admin.poll(0.2)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_our_admin_client_over_tls_with_sasl(
    broker: BrokerProcess, ca: TestCA, tmp_path: Path, mechanism: str
) -> None:
    """``shardbroker users`` with ``--command-config`` (Kafka's client properties): our client's
    TLS (the test CA as truststore, the host name checked) and SASL, creating a SCRAM user that
    then authenticates; a truststore that does not hold the CA fails the TLS handshake."""
    user, password = ("gina", PASSWORD) if mechanism != "PLAIN" else ("kcat", PLAIN_USERS["kcat"])
    if mechanism != "PLAIN":
        _upsert(broker, user, mechanism)
    module = "scram.ScramLoginModule" if mechanism != "PLAIN" else "plain.PlainLoginModule"
    config = tmp_path / "client.properties"
    config.write_text(
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={mechanism}\n"
        f'sasl.jaas.config=org.apache.kafka.common.security.{module} required username="{user}" '
        f'password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={ca.pem}\n"
    )
    password_file = tmp_path / "password"
    password_file.write_text("hank-secret\n")

    def users(*argv: str, settings: Path = config) -> subprocess.CompletedProcess[str]:
        bootstrap = broker.listener_bootstrap("SASL_SSL").replace("127.0.0.1", "localhost")
        return subprocess.run(
            [sys.executable, "-m", "shardbroker", "users", *argv, "--bootstrap-server", bootstrap,
             "--command-config", str(settings)],
            capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
        )  # fmt: skip

    added = users("add", "hank", "--mechanism", "SCRAM-SHA-256", "--password-file", str(password_file))
    assert added.returncode == 0, added.stderr
    listed = users("list", "hank")
    assert listed.returncode == 0, listed.stderr
    assert "SCRAM-SHA-256" in listed.stdout
    other = TestCA(tmp_path / "other")
    untrusted = tmp_path / "untrusted.properties"
    untrusted.write_text(config.read_text().replace(str(ca.pem), str(other.pem)))
    refused = users("list", settings=untrusted)
    assert refused.returncode == 1 and "TLS handshake failed" in refused.stderr
