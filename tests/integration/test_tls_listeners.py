"""Listeners with security protocols, and TLS, against a live broker with real clients.

One broker (two workers) with three listeners: PLAINTEXT, SSL (server certificate only) and
MTLS, a custom name mapped to SSL with ``ssl.client.auth=required`` and principal mapping rules,
all configured with Kafka's property names (per-listener ``listener.name.mtls.ssl.*``). The
certificates come from a CA made by the test (tests/integration/tls.py). Each of
confluent-kafka, kafka-python, aiokafka and kcat creates a topic, produces, and consumes in a
group over SSL and over mTLS; Metadata answers each listener with its own ports; plaintext on a
TLS port, TLS on a plaintext port, and untrusted, expired or missing client certificates are
refused with a closed connection, counted in ``shardbroker_authentication_total`` and logged
(rate-limited), the workers unharmed. A second broker shows
the key store reloaded by IncrementalAlterConfigs for new connections, kept over a restart, and
a bad key store refused with INVALID_CONFIG.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
    ResourceType,
)
from cryptography import x509

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.test_metrics_endpoint import scrape, values
from tests.integration.tls import Issued, TestCA, client_context, client_settings

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

import aiokafka
import aiokafka.admin

CLIENTS = ("confluent", "kafka-python", "aiokafka", "kcat")
MESSAGES = 10
DEADLINE = 90.0


class Pki:
    def __init__(self, root: Path) -> None:
        self.ca = TestCA(root / "ca")
        self.server = self.ca.server()
        self.alice = self.ca.client("Alice", ou="apps")
        self.expired = self.ca.client("Old", expired=True)
        self.stranger = TestCA(root / "other", "Other CA").client("Mallory")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(module_broker_factory: BrokerFactory, pki: Pki) -> BrokerProcess:
    return module_broker_factory(
        config={
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL",
            "ssl.keystore.location": str(pki.server.keystore),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.truststore.location": str(pki.ca.pem),
            "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/L,DEFAULT",
        },
        listeners=("PLAINTEXT", "SSL", "MTLS"),
    )


# -- clients ------------------------------------------------------------------------------------


def _kcat(*args: str, settings: dict[str, Any], stdin: bytes | None = None) -> bytes:
    path = shutil.which("kcat") or shutil.which("kafkacat")
    assert path, "kcat is not installed"
    options = [x for k, v in settings.items() for x in ("-X", f"{k}={v}")]
    done = subprocess.run(
        [path, *options, *args], input=stdin, capture_output=True, timeout=DEADLINE, check=False
    )
    assert done.returncode == 0, (
        f"kcat {args} exited {done.returncode}: {done.stderr.decode(errors='replace')}"
    )
    return done.stdout


def _round_trip_confluent(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    conf = {"bootstrap.servers": bootstrap, **settings}
    admin = AdminClient(conf)
    admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(timeout=DEADLINE)
    producer = confluent_kafka.Producer(conf)
    for i in range(MESSAGES):
        producer.produce(topic, f"m{i}".encode())
    assert producer.flush(DEADLINE) == 0
    consumer = confluent_kafka.Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + DEADLINE
        while len(values) < MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def _round_trip_kafka_python(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    admin = kafka.admin.KafkaAdminClient(bootstrap_servers=bootstrap, **settings)
    try:
        admin.create_topics([kafka.admin.NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    producer = kafka.KafkaProducer(bootstrap_servers=bootstrap, **settings)
    for i in range(MESSAGES):
        producer.send(topic, f"m{i}".encode())
    producer.flush(DEADLINE)
    producer.close()
    consumer = kafka.KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", auto_offset_reset="earliest", **settings
    )
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + DEADLINE
        while len(values) < MESSAGES and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values += [r.value for r in records]
    finally:
        consumer.close()
    return values


async def _round_trip_aiokafka(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    admin = aiokafka.admin.AIOKafkaAdminClient(bootstrap_servers=bootstrap, **settings)
    await admin.start()
    try:
        await admin.create_topics([aiokafka.admin.NewTopic(topic, 2, 1)])
    finally:
        await admin.close()
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, **settings)
    await producer.start()
    try:
        for i in range(MESSAGES):
            await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()
    consumer = aiokafka.AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}", auto_offset_reset="earliest", **settings
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + DEADLINE
        while len(values) < MESSAGES and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                values += [r.value for r in records]
    finally:
        await consumer.stop()
    return values


def _round_trip_kcat(bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    listing = _kcat("-b", bootstrap, "-L", settings=settings)  # admin: metadata
    assert b"brokers:" in listing
    lines = b"".join(f"m{i}\n".encode() for i in range(MESSAGES))
    _kcat("-b", bootstrap, "-P", "-t", topic, settings=settings, stdin=lines)
    out = _kcat(
        "-b",
        bootstrap,
        "-G",
        f"g-{topic}",
        "-o",
        "beginning",
        "-c",
        str(MESSAGES),
        "-q",
        topic,
        settings=settings,
    )
    return out.splitlines()


def round_trip(client: str, bootstrap: str, settings: dict[str, Any], topic: str) -> list[bytes]:
    """Create ``topic`` (kcat: auto-created), produce MESSAGES, consume them back in a group."""
    if client == "confluent":
        return _round_trip_confluent(bootstrap, settings, topic)
    if client == "kafka-python":
        return _round_trip_kafka_python(bootstrap, settings, topic)
    if client == "aiokafka":
        return asyncio.run(_round_trip_aiokafka(bootstrap, settings, topic))
    return _round_trip_kcat(bootstrap, settings, topic)


# -- tests ----------------------------------------------------------------------------------------


def _metadata_ports(bootstrap: str, settings: dict[str, Any]) -> list[int]:
    cluster = AdminClient({"bootstrap.servers": bootstrap, **settings}).list_topics(timeout=30)
    return sorted(b.port for b in cluster.brokers.values())


def test_metadata_answers_each_listener_with_its_own_endpoints(tls_broker: BrokerProcess, pki: Pki) -> None:
    assert _metadata_ports(tls_broker.listener_bootstrap("PLAINTEXT"), {}) == tls_broker.listener_ports(
        "PLAINTEXT"
    )
    ssl_settings = client_settings("confluent", pki.ca)
    assert _metadata_ports(tls_broker.listener_bootstrap("SSL"), ssl_settings) == tls_broker.listener_ports(
        "SSL"
    )
    mtls = client_settings("confluent", pki.ca, pki.alice)
    assert _metadata_ports(tls_broker.listener_bootstrap("MTLS"), mtls) == tls_broker.listener_ports("MTLS")


@pytest.mark.parametrize("listener", ["SSL", "MTLS"])
@pytest.mark.parametrize("client", CLIENTS)
def test_clients_produce_consume_and_admin_over_tls(
    tls_broker: BrokerProcess, pki: Pki, client: str, listener: str
) -> None:
    settings = client_settings(client, pki.ca, pki.alice if listener == "MTLS" else None)
    topic = f"tls-{client}-{listener}".lower()
    values = round_trip(client, tls_broker.listener_bootstrap(listener), settings, topic)
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(MESSAGES))


def _log_lines(broker: BrokerProcess, fragment: str) -> int:
    return broker.output(tail=100_000).count(fragment)


def _tls_failures(broker: BrokerProcess, listener: str) -> float:
    """Failed TLS authentications on ``listener`` so far (the broker's /metrics, all workers)."""
    found = values(scrape(broker), "shardbroker_authentication_total", listener=listener, mechanism="SSL")
    return sum(v for labels, v in found if labels["result"] == "failure")


@pytest.fixture
def unharmed(tls_broker: BrokerProcess, pki: Pki) -> Iterator[None]:
    """The workers neither restarted nor stopped serving TLS clients."""
    pids = tls_broker.worker_pids()
    yield
    assert tls_broker.worker_pids() == pids
    assert _metadata_ports(
        tls_broker.listener_bootstrap("MTLS"), client_settings("confluent", pki.ca, pki.alice)
    ) == tls_broker.listener_ports("MTLS")


def _api_versions_frame() -> bytes:
    # ApiVersions v0, correlation id 7, client id "t".
    body = (
        (18).to_bytes(2, "big")
        + (0).to_bytes(2, "big")
        + (7).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + b"t"
    )
    return len(body).to_bytes(4, "big") + body


def _closed_without_answer(sock: socket.socket) -> bool:
    sock.settimeout(15)
    try:
        return sock.recv(1024) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def test_plaintext_on_a_tls_port_and_tls_on_a_plaintext_port_are_refused(
    tls_broker: BrokerProcess, pki: Pki, unharmed: None
) -> None:
    before = _tls_failures(tls_broker, "SSL")
    with socket.create_connection(("127.0.0.1", tls_broker.listener_ports("SSL")[0])) as plain:
        plain.sendall(_api_versions_frame())
        assert _closed_without_answer(plain)
    wait_for(lambda: _tls_failures(tls_broker, "SSL") > before, 10, "the handshake failure counted")
    line = "Failed authentication with 127.0.0.1 on listener SSL (SSL): TLS handshake:"
    assert line in tls_broker.output(tail=100_000)
    before_plain = _log_lines(tls_broker, "closing connection from")
    port = tls_broker.listener_ports("PLAINTEXT")[1]
    with socket.create_connection(("127.0.0.1", port)) as raw, pytest.raises(OSError):  # SSLError too
        client_context(pki.ca).wrap_socket(raw, server_hostname="127.0.0.1")
    wait_for(
        lambda: _log_lines(tls_broker, "closing connection from") > before_plain, 10, "the PLAINTEXT log line"
    )


@pytest.mark.parametrize("who", ["stranger", "expired", "nobody"])
def test_bad_client_certificates_are_refused_under_required(
    tls_broker: BrokerProcess, pki: Pki, unharmed: None, who: str
) -> None:
    cert: Issued | None = {"stranger": pki.stranger, "expired": pki.expired, "nobody": None}[who]
    before = _tls_failures(tls_broker, "MTLS")
    context = client_context(pki.ca, cert)
    with socket.create_connection(("127.0.0.1", tls_broker.listener_ports("MTLS")[0])) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                # TLS 1.3: the server judges the client's certificate after the client's side of the
                # handshake is done; the refusal arrives on the first read.
                tls.sendall(_api_versions_frame())
                assert _closed_without_answer(tls)
        except (ssl.SSLError, ConnectionResetError):
            pass
    # Counted each time; logged once a minute per (listener, host): broker/security_audit.py.
    wait_for(lambda: _tls_failures(tls_broker, "MTLS") > before, 10, "the refusal counted")
    line = "Failed authentication with 127.0.0.1 on listener MTLS (SSL): TLS handshake:"
    assert line in tls_broker.output(tail=100_000)


# -- key store reload ------------------------------------------------------------------------------


def _served_serial(port: int, ca: TestCA) -> int:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _serial_of(issued: Issued) -> int:
    return x509.load_pem_x509_certificate(issued.cert.read_bytes()).serial_number


def _set_broker_config(broker: BrokerProcess, node: str, name: str, value: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.listener_bootstrap("PLAINTEXT")})
    entry = ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(ResourceType.BROKER, node, incremental_configs=[entry])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def test_key_store_reload_for_new_connections_kept_over_a_restart(
    broker_factory: BrokerFactory, pki: Pki
) -> None:
    broker = broker_factory(
        config={"ssl.keystore.location": str(pki.server.keystore)}, listeners=("PLAINTEXT", "SSL")
    )
    ports = broker.listener_ports("SSL")
    assert {_served_serial(p, pki.ca) for p in ports} == {_serial_of(pki.server)}
    rotated = pki.ca.server("rotated")
    _set_broker_config(broker, "1", "ssl.keystore.location", str(rotated.keystore))
    # Every worker serves the new certificate to new connections (the image reaches them all).
    wait_for(
        lambda: {_served_serial(p, pki.ca) for p in ports} == {_serial_of(rotated)},
        30,
        "every worker serving the new certificate",
    )
    admin = AdminClient({"bootstrap.servers": broker.listener_bootstrap("PLAINTEXT")})
    described = admin.describe_configs([ConfigResource(ResourceType.BROKER, "0")])
    entry = next(iter(described.values())).result(timeout=30)["ssl.keystore.location"]
    assert (entry.value, entry.source, entry.is_read_only) == (str(rotated.keystore), 2, False)
    # A key store that does not load is refused with the reason; the rotated one stays.
    broken = pki.ca.directory / "broken.pem"
    broken.write_text("not a key store")
    with pytest.raises(confluent_kafka.KafkaException) as info:
        _set_broker_config(broker, "0", "ssl.keystore.location", str(broken))
    assert info.value.args[0].code() == confluent_kafka.KafkaError.INVALID_CONFIG
    assert "cannot load the key store" in info.value.args[0].str()
    # The metadata log keeps it: a restart serves the rotated certificate, not the file's.
    assert broker.stop() == 0
    broker.start()
    assert {_served_serial(p, pki.ca) for p in ports} == {_serial_of(rotated)}
