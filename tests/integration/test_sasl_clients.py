"""Real clients authenticate against the SASL handlers: confluent-kafka (librdkafka), kafka-python
(SaslHandshake v1, and v0's legacy raw tokens), aiokafka and kcat, with PLAIN, SCRAM-SHA-256/512
and OAUTHBEARER (librdkafka's unsecured JWT), right and wrong credentials, and librdkafka's
KIP-368 re-authentication.

Opens loopback sockets and runs kcat. The server is a SASL_PLAINTEXT ``KafkaListener`` in a thread
of this process with the real ApiVersions, SaslHandshake and SaslAuthenticate handlers and a
Metadata stand-in naming this listener as the one broker (so a client's metadata request, the
first thing it sends once authenticated, proves the authentication), and an image holding SCRAM
credentials. The same flows against a whole broker, with produce and consume, are in
test_sasl_broker.py (they need SASL listeners in ``listeners``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import confluent_kafka
import pytest
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from shardbroker.broker.dispatch import ApiHandler, HandlerRegistry, RequestContext
from shardbroker.broker.handlers import api_versions, sasl_authenticate, sasl_handshake
from shardbroker.broker.session import SecurityProtocol
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.security.principal import KafkaPrincipal
from shardbroker.security.scram_credential import ScramMechanism, derive_credential
from tests.unit.test_broker_connection import serving

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka

import aiokafka

USERS = {"alice": "alice-secret"}
SCRAM = {"carol": "carol-secret"}
TIMEOUT = 30.0


class Server:
    """A SASL_PLAINTEXT listener on a loop in a thread; ``principals`` are who asked Metadata."""

    def __init__(self, tmp_path: Path, props: dict[str, str]) -> None:
        self.config = BrokerConfig.from_properties(
            {
                "log.dirs": str(tmp_path),
                "listeners": "SASL_PLAINTEXT://127.0.0.1:9092",  # bound on a free port by the harness
                "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512,OAUTHBEARER",
                "sasl.plain.users": json.dumps(USERS),
                **props,
            }
        )
        creds = {
            name: {mech: derive_credential(mech, pw.encode(), 4096) for mech in ScramMechanism}
            for name, pw in SCRAM.items()
        }
        image = MetadataImage(1, "sasl-test", 0, (), {}, creds)
        self.channel = SimpleNamespace(image=image, subscribe=lambda callback: None)
        self.principals: list[KafkaPrincipal] = []
        #: The connections (their sessions) that asked Metadata.
        self.sessions: dict[int, object] = {}
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(tmp_path),), daemon=True)

    async def _metadata(self, ctx: RequestContext, request: m.MetadataRequest) -> Message:
        self.principals.append(ctx.session.principal)
        self.sessions[id(ctx.session)] = ctx.session
        broker = m.MetadataResponse.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port)
        return m.MetadataResponse(brokers=[broker], cluster_id="sasl-test", controller_id=0)

    async def _main(self, tmp_path: Path) -> None:
        registry = HandlerRegistry(
            [
                api_versions.HANDLER,
                sasl_handshake.HANDLER,
                sasl_authenticate.HANDLER,
                ApiHandler(3, 0, 12, self._metadata),
            ]
        )
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serving(
            tmp_path,
            config=self.config,
            registry=registry,
            channel=self.channel,
            protocol=SecurityProtocol.SASL_PLAINTEXT,
        ) as (listener, _):
            self.port = listener.bound_port
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> Server:
        self._thread.start()
        assert self._ready.wait(10), "the SASL listener did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with Server(tmp_path, {"connection.failed.authentication.delay.ms": "0"}) as s:
        yield s


def confluent_config(server: Server, mechanism: str, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": server.bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "log_level": 0,  # failures are asserted, not printed once per reconnect
    }


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        ("PLAIN", "alice", "alice-secret"),
        ("SCRAM-SHA-256", "carol", "carol-secret"),
        ("SCRAM-SHA-512", "carol", "carol-secret"),
    ],
)
@pytest.mark.kafka_api("SaslHandshake", "SaslAuthenticate", client="confluent-kafka")
def test_confluent_kafka_authenticates(server: Server, mechanism: str, user: str, password: str) -> None:
    admin = AdminClient(confluent_config(server, mechanism, user, password))
    assert admin.list_topics(timeout=TIMEOUT).cluster_id == "sasl-test"
    assert KafkaPrincipal.user(user) in server.principals


@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [
        ("PLAIN", "alice", "wrong"),
        ("PLAIN", "mallory", "x"),
        ("SCRAM-SHA-256", "carol", "wrong"),
        ("SCRAM-SHA-512", "mallory", "x"),
    ],
)
def test_confluent_kafka_wrong_credentials_fail_with_an_authentication_error(
    server: Server, mechanism: str, user: str, password: str
) -> None:
    errors: list[Any] = []
    config = {**confluent_config(server, mechanism, user, password), "error_cb": errors.append}
    admin = AdminClient(config)
    with pytest.raises(confluent_kafka.KafkaException):
        admin.list_topics(timeout=5)
    admin.poll(1)  # serves error_cb
    assert any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors), errors
    assert server.principals == []


def test_confluent_kafka_oauthbearer_unsecured_jwt(server: Server) -> None:
    admin = AdminClient(
        {
            "bootstrap.servers": server.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "OAUTHBEARER",
            "enable.sasl.oauthbearer.unsecure.jwt": True,
            "sasl.oauthbearer.config": "principal=dave scope=kafka lifeSeconds=600",
        }
    )
    admin.list_topics(timeout=TIMEOUT)
    assert set(server.principals) == {KafkaPrincipal.user("dave")}


def test_confluent_kafka_reauthenticates_before_the_session_expires(tmp_path: Path) -> None:
    with Server(tmp_path, {"connections.max.reauth.ms": "2000"}) as server:
        admin = AdminClient(confluent_config(server, "SCRAM-SHA-256", "carol", "carol-secret"))
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:  # three lifetimes: without re-authentication the broker closes
            admin.list_topics(timeout=TIMEOUT)
            time.sleep(0.5)
        assert set(server.principals) == {KafkaPrincipal.user("carol")}
        # Re-authenticated on the same connections (bootstrap and broker 0): a client that did not
        # would have been disconnected at each expiry and come back on new ones.
        assert len(server.sessions) <= 2, len(server.sessions)


def test_confluent_kafka_revoked_user_fails_reauthentication(tmp_path: Path) -> None:
    with Server(tmp_path, {"connections.max.reauth.ms": "1500"}) as server:
        errors: list[Any] = []
        config = {
            **confluent_config(server, "SCRAM-SHA-256", "carol", "carol-secret"),
            "error_cb": errors.append,
        }
        admin = AdminClient(config)
        admin.list_topics(timeout=TIMEOUT)
        server.channel.image = MetadataImage(2, "sasl-test", 0, (), {})  # carol deleted
        deadline = time.monotonic() + 15
        while not any(e.code() == confluent_kafka.KafkaError._AUTHENTICATION for e in errors):
            assert time.monotonic() < deadline, f"no authentication error after revocation: {errors}"
            with contextlib.suppress(confluent_kafka.KafkaException):
                admin.list_topics(timeout=1)
            admin.poll(0.2)  # serves error_cb


@pytest.mark.parametrize("api_version", [(2, 8), (0, 10, 1)], ids=["handshake-v1", "handshake-v0-raw-tokens"])
@pytest.mark.parametrize(
    ("mechanism", "user", "password"),
    [("PLAIN", "alice", "alice-secret"), ("SCRAM-SHA-512", "carol", "carol-secret")],
)
@pytest.mark.kafka_api("SaslHandshake", "SaslAuthenticate", client="kafka-python")
def test_kafka_python_authenticates(
    server: Server, api_version: tuple[int, ...], mechanism: str, user: str, password: str
) -> None:
    consumer = kafka.KafkaConsumer(
        bootstrap_servers=server.bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_plain_username=user,
        sasl_plain_password=password,
        api_version=api_version,
        request_timeout_ms=int(TIMEOUT * 1000),
    )
    try:
        assert consumer.topics() == set()
    finally:
        consumer.close()
    assert KafkaPrincipal.user(user) in server.principals


@pytest.mark.kafka_api("SaslHandshake", "SaslAuthenticate", client="aiokafka")
def test_aiokafka_authenticates(server: Server) -> None:
    async def scenario() -> None:
        client = aiokafka.AIOKafkaClient(
            bootstrap_servers=server.bootstrap,
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism="SCRAM-SHA-256",
            sasl_plain_username="carol",
            sasl_plain_password="carol-secret",
        )
        await client.bootstrap()
        await client.close()

    asyncio.run(scenario())
    assert KafkaPrincipal.user("carol") in server.principals


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed")
@pytest.mark.parametrize(
    ("mechanism", "password", "ok"), [("PLAIN", "alice-secret", True), ("PLAIN", "bad", False)]
)
@pytest.mark.kafka_api("SaslHandshake", "SaslAuthenticate", "Metadata", client="kcat")
def test_kcat_lists_metadata_only_when_authenticated(
    server: Server, mechanism: str, password: str, ok: bool
) -> None:
    user = "alice"
    result = subprocess.run(
        [
            "kcat",
            "-b",
            server.bootstrap,
            "-L",
            "-m",
            "5",
            "-X",
            "security.protocol=SASL_PLAINTEXT",
            "-X",
            f"sasl.mechanisms={mechanism}",
            "-X",
            f"sasl.username={user}",
            "-X",
            f"sasl.password={password}",
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert (result.returncode == 0) is ok, result.stderr
    if not ok:
        assert "Authentication failed" in result.stderr + result.stdout
