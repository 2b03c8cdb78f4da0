"""SASL on a connection, over loopback sockets: the handshake and authenticate handlers with the
real mechanisms, the gating of everything else until authenticated, KIP-368 expiry and
re-authentication, the legacy v0 framing, the SASL frame limit and the handshake deadline."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from shardbroker.broker.dispatch import ApiHandler, HandlerRegistry, RequestContext
from shardbroker.broker.handlers import api_versions, sasl_authenticate, sasl_handshake
from shardbroker.broker.handlers import metadata as metadata_handler
from shardbroker.broker.session import SecurityProtocol
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.config_def import ConfigError
from shardbroker.config.sasl import check_sasl_listeners, sasl_listener_config
from shardbroker.ipc import counters as ctr
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.scram_credential import ScramMechanism, derive_credential
from tests.unit.test_broker_connection import Client, metadata
from tests.unit.test_broker_connection import serving as harness

with warnings.catch_warnings():  # kafka-python's package import uses importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.net.sasl.scram import ScramClient

SHA256 = ScramMechanism.SCRAM_SHA_256
PROPS = {
    "sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-256,OAUTHBEARER",
    "sasl.plain.users": json.dumps({"alice": "alice-secret", "bob": "bob-secret"}),
    "connection.failed.authentication.delay.ms": "0",
}


def image(**users: str) -> MetadataImage:
    creds = {name: {SHA256: derive_credential(SHA256, pw.encode(), 4096)} for name, pw in users.items()}
    return MetadataImage(1, "cluster", 0, (), {}, creds)


@asynccontextmanager
async def serving(
    tmp_path: Path,
    props: dict[str, str] | None = None,
    protocol: SecurityProtocol = SecurityProtocol.SASL_PLAINTEXT,
    **limits: Any,
) -> AsyncIterator[tuple[SimpleNamespace, Callable[[], Awaitable[Client]]]]:
    """The connection harness of test_broker_connection on a SASL listener, with the SASL
    handlers and a Metadata stand-in that records who asked."""
    listeners = {"listeners": f"{protocol.value}://127.0.0.1:9092"}
    config = BrokerConfig.from_properties({"log.dirs": str(tmp_path), **listeners, **PROPS, **(props or {})})
    channel = SimpleNamespace(image=image(carol="carol-secret"), subscribe=lambda callback: None)
    shared = SimpleNamespace(sessions=[], channel=channel)

    async def seen(ctx: RequestContext, request: m.MetadataRequest) -> Message:
        shared.sessions.append((ctx.session.principal, ctx.session.authenticated))
        return m.MetadataResponse()

    registry = HandlerRegistry(
        [
            api_versions.HANDLER,
            sasl_handshake.HANDLER,
            sasl_authenticate.HANDLER,
            ApiHandler(3, 0, 12, seen, metadata_handler.HANDLER.error_response),
        ]
    )
    async with harness(
        tmp_path, config=config, registry=registry, channel=shared.channel, protocol=protocol, **limits
    ) as (listener, connect):
        shared.worker = listener.state
        yield shared, connect


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


async def ask(c: Client, msg: Message, version: int) -> Any:
    await c.send(msg, version)
    return (await c.read())[1]


async def handshake(c: Client, mechanism: str = "PLAIN", version: int = 1) -> m.SaslHandshakeResponse:
    return cast(m.SaslHandshakeResponse, await ask(c, m.SaslHandshakeRequest(mechanism=mechanism), version))


async def token(c: Client, data: bytes, version: int = 2) -> m.SaslAuthenticateResponse:
    return cast(m.SaslAuthenticateResponse, await ask(c, m.SaslAuthenticateRequest(auth_bytes=data), version))


async def plain(c: Client, user: str = "alice", password: str = "alice-secret") -> m.SaslAuthenticateResponse:
    assert (await handshake(c)).error_code == 0
    return await token(c, f"\x00{user}\x00{password}".encode())


def test_plain_authenticates_and_then_every_api_is_served(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            versions = await ask(
                c, m.ApiVersionsRequest(client_software_name="t", client_software_version="1"), 3
            )
            assert {k.api_key for k in versions.api_keys} >= {17, 36}
            answer = await handshake(c)
            assert answer.mechanisms == ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"]
            done = await token(c, b"\x00alice\x00alice-secret")
            assert (done.error_code, done.auth_bytes, done.session_lifetime_ms) == (0, b"", 0)
            await ask(c, metadata(), 12)
            assert shared.sessions == [(KafkaPrincipal.user("alice"), True)]

    run(scenario())


def test_requests_before_the_handshake_close_the_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            await c.send(metadata(), 12)
            assert await c.closed()
            c = await connect()
            await c.send(m.SaslAuthenticateRequest(auth_bytes=b"\x00alice\x00alice-secret"), 2)
            assert await c.closed()
            assert shared.sessions == []

    run(scenario())


def test_other_requests_after_the_handshake_get_illegal_sasl_state_then_a_close(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            await handshake(c)
            answer = await ask(c, metadata("t"), 12)
            assert answer.topics[0].error_code == ErrorCode.ILLEGAL_SASL_STATE
            assert await c.closed() and shared.sessions == []

    run(scenario())


@pytest.mark.parametrize(
    ("user", "password", "message"),
    [
        ("alice", "nope", "Authentication failed: Invalid username or password"),
        ("mallory", "x", "Authentication failed: Invalid username or password"),
        ("", "x", "Authentication failed: username not specified"),
    ],
)
def test_failed_authentication_is_answered_then_closed(
    tmp_path: Path, user: str, password: str, message: str
) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, {"connection.failed.authentication.delay.ms": "200"}) as (
            shared,
            connect,
        ):
            c = await connect()
            started = time.monotonic()
            answer = await plain(c, user, password)
            assert time.monotonic() - started >= 0.2  # connection.failed.authentication.delay.ms
            assert (answer.error_code, answer.error_message) == (
                ErrorCode.SASL_AUTHENTICATION_FAILED,
                message,
            )
            assert await c.closed() and shared.sessions == []

    run(scenario())


def test_unsupported_mechanism_is_answered_with_the_enabled_ones_then_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            answer = await handshake(c, "SCRAM-SHA-512")
            assert answer.error_code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
            assert answer.mechanisms == ["PLAIN", "SCRAM-SHA-256", "OAUTHBEARER"]
            assert await c.closed()

    run(scenario())


def scram_exchange(user: str, password: str) -> ScramClient:
    return ScramClient(user, password, "SCRAM-SHA-256")


async def scram(c: Client, user: str, password: str) -> m.SaslAuthenticateResponse:
    client = scram_exchange(user, password)
    assert (await handshake(c, "SCRAM-SHA-256")).error_code == 0
    first = await token(c, client.first_message())
    assert first.error_code == 0
    client.process_server_first_message(first.auth_bytes)
    final = await token(c, client.final_message())
    if final.error_code == 0:
        client.process_server_final_message(final.auth_bytes)  # checks the server's signature
    return final


def test_scram_authenticates_from_the_image_and_a_revoked_user_fails_reauthentication(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, {"connections.max.reauth.ms": "60000"}) as (shared, connect):
            c = await connect()
            done = await scram(c, "carol", "carol-secret")
            assert done.error_code == 0 and 59_000 < done.session_lifetime_ms <= 60_000
            await ask(c, metadata(), 12)
            # Re-authentication while the user exists renews the session.
            assert (await scram(c, "carol", "carol-secret")).error_code == 0
            shared.channel.image = image()  # AlterUserScramCredentials deleted carol
            again = await scram(c, "carol", "carol-secret")
            assert again.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
            assert again.error_message == (
                "Authentication failed during re-authentication due to invalid credentials"
                " with SASL mechanism SCRAM-SHA-256"
            )
            assert await c.closed()
            assert shared.sessions == [(KafkaPrincipal.user("carol"), True)]

    run(scenario())


def test_session_expiry_closes_on_the_next_request_unless_reauthenticated(tmp_path: Path) -> None:
    async def scenario() -> None:
        props = {"listener.name.sasl_plaintext.connections.max.reauth.ms": "1000"}
        async with serving(tmp_path, props) as (shared, connect):
            c = await connect()
            assert (await plain(c)).session_lifetime_ms == 1000
            await asyncio.sleep(0.6)
            assert (await plain(c)).session_lifetime_ms == 1000  # re-authenticated: renewed
            await asyncio.sleep(0.6)
            await ask(c, metadata(), 12)  # past the first expiry, within the renewed one
            await asyncio.sleep(0.6)
            await c.send(metadata(), 12)
            assert await c.closed()
            assert len(shared.sessions) == 1

    run(scenario())


def test_reauthentication_as_another_user_fails(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            await plain(c)
            answer = await plain(c, "bob", "bob-secret")
            assert answer.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
            assert (
                answer.error_message
                == "Cannot change principals during re-authentication from User.alice: User.bob"
            )
            assert await c.closed()

    run(scenario())


def test_sasl_authenticate_v0_client_cannot_reauthenticate(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            await handshake(c)
            assert (await token(c, b"\x00alice\x00alice-secret", version=0)).error_code == 0
            assert (await handshake(c)).error_code == ErrorCode.ILLEGAL_SASL_STATE  # Kafka's KafkaApis
            again = await token(c, b"\x00alice\x00alice-secret")
            assert again.error_code == ErrorCode.ILLEGAL_SASL_STATE
            await ask(c, metadata(), 12)  # still open and authenticated
            assert shared.sessions == [(KafkaPrincipal.user("alice"), True)]

    run(scenario())


def test_handshake_v0_uses_raw_tokens(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            assert (await handshake(c, version=0)).error_code == 0
            raw = b"\x00alice\x00alice-secret"
            c.writer.write(struct.pack(">i", len(raw)) + raw)
            assert await c.reader.readexactly(4) == b"\x00\x00\x00\x00"  # Kafka sends the empty token
            await ask(c, metadata(), 12)
            assert shared.sessions == [(KafkaPrincipal.user("alice"), True)]
            bad = await connect()
            await handshake(bad, version=0)
            raw = b"\x00alice\x00wrong"
            bad.writer.write(struct.pack(">i", len(raw)) + raw)
            assert await bad.closed()  # the legacy framing has no error response

    run(scenario())


def test_frames_over_sasl_server_max_receive_size_close_before_authentication(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, {"sasl.server.max.receive.size": "1000"}) as (shared, connect):
            c = await connect()
            await handshake(c)
            await c.send(m.SaslAuthenticateRequest(auth_bytes=b"x" * 2000), 2)
            assert await c.closed()
            c = await connect()
            await plain(c)
            await ask(c, metadata("t" * 2000), 12)  # authenticated: socket.request.max.bytes again
            assert len(shared.sessions) == 1

    run(scenario())


def test_unauthenticated_connection_is_closed_after_connections_max_idle_ms(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_idle_ms=400) as (_, connect):
            c = await connect()
            started = time.monotonic()
            await ask(c, m.ApiVersionsRequest(client_software_name="t", client_software_version="1"), 3)
            await handshake(c)  # active, but never authenticated
            assert await c.closed(timeout=3)
            assert 0.35 < time.monotonic() - started < 2.5
            ok = await connect()
            await plain(ok)
            for _ in range(4):  # active past the deadline: an authenticated connection stays
                await asyncio.sleep(0.15)
                await ask(ok, metadata(), 12)

    run(scenario())


def b64url(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")


def test_oauthbearer_token_expiry_is_the_session_lifetime_and_bad_tokens_end_with_json(
    tmp_path: Path,
) -> None:
    def bearer(claims: object) -> bytes:
        return f"n,,\x01auth=Bearer {b64url({'alg': 'none'})}.{b64url(claims)}.\x01\x01".encode()

    async def scenario() -> None:
        async with serving(tmp_path) as (shared, connect):
            c = await connect()
            await handshake(c, "OAUTHBEARER")
            done = await token(c, bearer({"sub": "dave", "exp": time.time() + 30}))
            assert done.error_code == 0 and 28_000 < done.session_lifetime_ms <= 30_001
            await ask(c, metadata(), 12)
            assert shared.sessions == [(KafkaPrincipal.user("dave"), True)]
            bad = await connect()
            await handshake(bad, "OAUTHBEARER")
            answer = await token(bad, bearer({"sub": "dave", "exp": time.time() - 1}))
            assert (answer.error_code, answer.auth_bytes) == (0, b'{"status":"invalid_token"}')
            ended = await token(bad, b"\x01")
            assert (ended.error_code, ended.error_message) == (58, '{"status":"invalid_token"}')
            assert await bad.closed()

    run(scenario())


def authentications(shared: SimpleNamespace) -> dict[tuple[str, str], int]:
    """The worker's non-zero authentication cells of its one listener: (mechanism, result) -> n."""
    cells = shared.worker.counters._auth
    out = {}
    for i, mechanism in enumerate(ctr.MECHANISMS):
        for j, result in enumerate(("success", "failure")):
            if cells[i * 2 + j]:
                out[(mechanism, result)] = cells[i * 2 + j]
    return out


def test_every_outcome_is_in_the_audit_trail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "shardbroker.authentication")

    async def scenario() -> None:
        async with serving(tmp_path, max_idle_ms=300) as (shared, connect):
            await plain(await connect())
            await scram(await connect(), "carol", "carol-secret")
            for password in ("guess1", "guess2"):  # counted twice, logged once (same key)
                c = await connect()
                await plain(c, "bob", password)
                assert await c.closed()
            c = await connect()
            await handshake(c, "GSSAPI")
            assert await c.closed()
            c = await connect()
            await c.send(metadata(), 12)  # a PLAINTEXT client on a SASL port
            assert await c.closed()
            c = await connect()
            await handshake(c)
            assert await c.closed(timeout=3)  # never authenticated within connections.max.idle.ms
            assert authentications(shared) == {
                ("PLAIN", "success"): 1,
                ("SCRAM-SHA-256", "success"): 1,
                ("PLAIN", "failure"): 3,
                ("UNKNOWN", "failure"): 2,
            }

    run(scenario())
    lines = [r.getMessage() for r in caplog.records if r.name == "shardbroker.authentication"]
    assert lines == [
        "Failed authentication with 127.0.0.1 on listener SASL_PLAINTEXT (PLAIN, user 'bob'): "
        "wrong password 'bob'",
        "Failed authentication with 127.0.0.1 on listener SASL_PLAINTEXT (UNKNOWN): "
        "SaslHandshake v1 refused (UNSUPPORTED_SASL_MECHANISM): mechanism 'GSSAPI'",
        # The Metadata before a handshake has the GSSAPI attempt's key: counted, not logged.
        "Failed authentication with 127.0.0.1 on listener SASL_PLAINTEXT (PLAIN): "
        "not authenticated after 300 ms: closed",
    ]
    assert not any("secret" in line or "guess" in line for line in lines)


def test_sasl_apis_on_a_plaintext_listener_are_an_illegal_state(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, protocol=SecurityProtocol.PLAINTEXT) as (shared, connect):
            c = await connect()
            assert (await handshake(c)).error_code == ErrorCode.ILLEGAL_SASL_STATE
            assert (await token(c, b"\x00alice\x00alice-secret")).error_code == ErrorCode.ILLEGAL_SASL_STATE
            await ask(c, metadata(), 12)
            assert shared.sessions == [(ANONYMOUS, True)]

    run(scenario())


# -- the listener's settings ----------------------------------------------------------------------


def test_sasl_listener_refuses_gssapi_by_default_and_plain_without_users(tmp_path: Path) -> None:
    sasl = {"listeners": "SASL_PLAINTEXT://127.0.0.1:9093", "workers": "2"}
    with pytest.raises(ConfigError, match=r"GSSAPI \(Kafka's default\).*sasl.enabled.mechanisms"):
        sasl_listener_config(BrokerConfig.from_properties(sasl), "SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="PLAIN but has no users"):
        config = BrokerConfig.from_properties({**sasl, "sasl.enabled.mechanisms": "PLAIN"})
        sasl_listener_config(config, "SASL_PLAINTEXT")
    config = BrokerConfig.from_properties(
        {
            "listeners": "PLAINTEXT://127.0.0.1:9092,SASL://127.0.0.1:9094,OTHER://127.0.0.1:9096",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL:SASL_PLAINTEXT,OTHER:SASL_PLAINTEXT",
            "workers": "2",
            "listener.name.sasl.sasl.enabled.mechanisms": "OAUTHBEARER",
        }
    )
    check_sasl_listeners(config, [("PLAINTEXT", "PLAINTEXT"), ("SASL", "SASL_PLAINTEXT")])
    with pytest.raises(ConfigError, match="listener OTHER enables GSSAPI"):
        check_sasl_listeners(config, [("SASL", "SASL_PLAINTEXT"), ("OTHER", "SASL_PLAINTEXT")])


def test_listener_overrides_win_and_a_listener_table_replaces_the_global_one(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text(
        'listeners = "CLIENTS://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094"\n'
        '"listener.security.protocol.map" = "CLIENTS:SASL_PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"\n'
        "workers = 2\n"
        'sasl.enabled.mechanisms = "SCRAM-SHA-512"\n'
        '"listener.name.clients.sasl.enabled.mechanisms" = "PLAIN, OAUTHBEARER"\n'
        '"connections.max.reauth.ms" = 1000\n'
        "[sasl.plain.users]\n"
        'alice = "a"\n'
        "[listener.name.clients.sasl.plain.users]\n"
        '"bob.smith" = "b"\n'
    )
    config = BrokerConfig.load(path, {})
    clients = sasl_listener_config(config, "CLIENTS")
    assert clients.enabled_mechanisms == ("PLAIN", "OAUTHBEARER")
    assert clients.plain_users == {"bob.smith": "b"} and clients.max_reauth_ms == 1000
    other = sasl_listener_config(config, "SASL_PLAINTEXT")
    assert other.enabled_mechanisms == ("SCRAM-SHA-512",) and other.plain_users == {"alice": "a"}


def test_a_bad_user_table_is_refused_without_echoing_it(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[sasl.plain.users]\nalice = 12345678\n")
    with pytest.raises(ConfigError) as info:
        BrokerConfig.load(path, {})
    assert "12345678" not in str(info.value) and "sasl.plain.users" in str(info.value)
    x = {"listeners": "X://127.0.0.1:9092", "listener.security.protocol.map": "X:PLAINTEXT"}
    with pytest.raises(ConfigError, match=r"listener\.name\.x\.connections\.max\.reauth\.ms"):
        BrokerConfig.from_properties({**x, "listener.name.x.connections.max.reauth.ms": "-1"})
    with pytest.raises(ConfigError, match="cannot be set per listener"):
        BrokerConfig.from_properties({**x, "listener.name.x.log.dirs": "/tmp"})


def test_describe_configs_never_shows_the_plain_passwords() -> None:
    from shardbroker.broker.handlers._common import broker_config_entries
    from shardbroker.broker.handlers.describe_configs import _entry

    config = BrokerConfig.from_properties({"sasl.plain.users": json.dumps({"alice": "alice-secret"})})
    (users,) = [e for e in broker_config_entries(config, 0) if e.name == "sasl.plain.users"]
    assert users.value is None and all(v is None for _, v, _ in users.synonyms)
    described = _entry(users, 3, synonyms=True)
    assert described.is_sensitive and described.value is None
    assert "alice-secret" not in repr(described)


def test_server_connection_raw_sasl_frames_are_tokens_answered_in_order() -> None:
    from shardbroker.protocol.connection import RequestReceived, SaslTokenReceived, ServerConnection

    conn = ServerConnection()
    conn.raw_sasl = True
    (first, second) = conn.receive_data(b"\x00\x00\x00\x03abc\x00\x00\x00\x00")
    assert isinstance(first, SaslTokenReceived) and isinstance(second, SaslTokenReceived)
    assert (first.token, second.token) == (b"abc", b"")
    conn.respond_token(second, None)  # a failure: nothing, then close
    assert conn.data_to_send() == []  # the first token is not answered yet
    conn.respond_token(first, b"xyz")
    assert conn.data_to_send() == [b"\x00\x00\x00\x03xyz"] and conn.must_close
    plain = ServerConnection()
    frame = Client(*cast(Any, (None, None))).frame(metadata(), 12)
    (event,) = plain.receive_data(frame)
    assert isinstance(event, RequestReceived)
