"""/metrics' doors: password hashes (security/password_hash.py), basic auth and its settings
(observability/metrics_security.py), and the HTTPS server on a selector loop (metrics_http.py)
with real sockets: right password 200, wrong or none 401, plain HTTP to HTTPS 400, garbage and
stuck handshakes closed while the loop keeps serving."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import selectors
import socket
import ssl
import threading
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.config_def import ConfigError
from shardbroker.config.ssl_context import TlsConfigError
from shardbroker.observability import metrics_http
from shardbroker.observability.metrics_http import MetricsServer, respond
from shardbroker.observability.metrics_security import (
    BasicAuth,
    MetricsSecurity,
    MetricsSecurityError,
    Verdict,
)
from shardbroker.security.password_hash import MIN_ITERATIONS, PasswordHash
from tests.integration.tls import TestCA, client_context

PASSWORD = b"s3cret:with colon"


def basic(user: str, password: bytes) -> bytes:
    return b"Basic " + base64.b64encode(user.encode() + b":" + password)


@pytest.fixture(scope="module")
def hashed() -> PasswordHash:
    return PasswordHash.create(PASSWORD, MIN_ITERATIONS)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


# -- password hashes ---------------------------------------------------------------------------


def test_hash_is_djangos_pbkdf2_form_and_verifies(hashed: PasswordHash) -> None:
    scheme, iterations, salt, key = hashed.text().split("$")
    assert (scheme, int(iterations)) == ("pbkdf2_sha256", MIN_ITERATIONS)
    expected = hashlib.pbkdf2_hmac("sha256", PASSWORD, salt.encode(), MIN_ITERATIONS)
    assert base64.b64decode(key) == expected
    again = PasswordHash.parse(hashed.text())
    assert again == hashed and again.verify(PASSWORD) and not again.verify(b"s3cret")
    assert "key" not in repr(hashed) and key not in repr(hashed)
    assert PasswordHash.create(PASSWORD, MIN_ITERATIONS).salt != hashed.salt


@pytest.mark.parametrize(
    "text",
    [
        "plaintext-password",
        "pbkdf2_sha1$10000$salt$" + base64.b64encode(bytes(32)).decode(),
        "pbkdf2_sha256$100$salt$" + base64.b64encode(bytes(32)).decode(),
        "pbkdf2_sha256$x$salt$" + base64.b64encode(bytes(32)).decode(),
        "pbkdf2_sha256$10000$$" + base64.b64encode(bytes(32)).decode(),
        "pbkdf2_sha256$10000$salt$" + base64.b64encode(bytes(16)).decode(),
        "pbkdf2_sha256$10000$salt$not base64!",
    ],
)
def test_bad_hashes_are_refused_without_repeating_them(text: str) -> None:
    with pytest.raises(ValueError) as info:
        PasswordHash.parse(text)
    assert text not in str(info.value)


# -- basic auth --------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def slow_auth(
    hashed: PasswordHash, monkeypatch: pytest.MonkeyPatch
) -> tuple[BasicAuth, FakeClock, list[int]]:
    """BasicAuth on a fake clock where each derivation takes 0.1 s; the list counts derivations."""
    clock = FakeClock()
    derivations: list[int] = []
    real = PasswordHash.verify

    def verify(self: PasswordHash, password: bytes) -> bool:
        derivations.append(1)
        clock.now += 0.1
        return real(self, password)

    monkeypatch.setattr(PasswordHash, "verify", verify)
    return BasicAuth({"prometheus": hashed}, clock), clock, derivations


@pytest.mark.parametrize(
    "header",
    [
        None,
        b"Bearer abc",
        b"Basic !!!",
        b"Basic " + base64.b64encode(b"no-colon"),
        b"Basic " + base64.b64encode(b":" + PASSWORD),
        b"Basic " + base64.b64encode(b"\xff:" + PASSWORD),
    ],
)
def test_malformed_credentials_are_denied_without_a_derivation(
    hashed: PasswordHash, monkeypatch: pytest.MonkeyPatch, header: bytes | None
) -> None:
    auth, _, derivations = slow_auth(hashed, monkeypatch)
    assert auth.check(header) is Verdict.DENIED
    assert derivations == []


def test_right_password_is_remembered_and_wrong_guesses_are_held_back(
    hashed: PasswordHash, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, clock, derivations = slow_auth(hashed, monkeypatch)
    assert auth.check(basic("prometheus", PASSWORD)) is Verdict.ALLOWED
    assert auth.check(b"basic  " + base64.b64encode(b"prometheus:" + PASSWORD)) is Verdict.ALLOWED
    assert len(derivations) == 1  # the second one was remembered
    assert auth.check(basic("prometheus", b"guess")) is Verdict.DENIED
    assert len(derivations) == 2
    # The failed derivation took 0.1 s: the next waits 0.4 s, but the remembered password passes.
    assert auth.check(basic("prometheus", b"guess2")) is Verdict.THROTTLED
    assert auth.check(basic("nobody", PASSWORD)) is Verdict.THROTTLED
    assert auth.check(basic("prometheus", PASSWORD)) is Verdict.ALLOWED
    assert len(derivations) == 2
    clock.now += 0.4
    assert auth.check(basic("nobody", PASSWORD)) is Verdict.DENIED  # an unknown user derives too
    assert len(derivations) == 3


def test_failures_are_logged_once_a_minute_without_the_password(
    hashed: PasswordHash, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    auth, clock, _ = slow_auth(hashed, monkeypatch)
    with caplog.at_level(logging.WARNING):
        for guess in (b"first-guess", b"second-guess", b"third-guess"):
            clock.now += 1
            assert auth.check(basic("prometheus", guess), "10.0.0.9:5555") is Verdict.DENIED
        clock.now += 61
        assert auth.check(basic("mallory", b"fourth-guess"), "10.0.0.9:5556") is Verdict.DENIED
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "1 failed basic-auth attempts" in messages[0] and "'prometheus' from 10.0.0.9:5555" in messages[0]
    assert "3 failed basic-auth attempts" in messages[1] and "'mallory'" in messages[1]
    assert not any("guess" in m for m in messages)


def test_respond_checks_credentials_before_anything_else(
    hashed: PasswordHash, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, clock, _ = slow_auth(hashed, monkeypatch)
    rendered: list[int] = []

    def render() -> bytes:
        rendered.append(1)
        return b"metric 1\n"

    for request in (b"GET /metrics HTTP/1.1\r\nHost: x", b"GET /other HTTP/1.1\r\nAuthorization: Basic Og=="):
        denied = respond(request, render, auth)
        assert denied.startswith(b"HTTP/1.1 401 Unauthorized\r\n")
        assert b'\r\nWWW-Authenticate: Basic realm="shardbroker"\r\n' in denied
    assert respond(b"nonsense", render, auth).startswith(b"HTTP/1.1 400")
    assert rendered == []
    wrong = respond(b"GET /metrics HTTP/1.1\r\nauthorization: " + basic("prometheus", b"x"), render, auth)
    assert wrong.startswith(b"HTTP/1.1 401")
    throttled = respond(b"GET /metrics HTTP/1.1\r\nAuthorization: " + basic("prometheus", b"y"), render, auth)
    assert throttled.startswith(b"HTTP/1.1 429") and b"\r\nRetry-After: 1\r\n" in throttled
    clock.now += 1
    ok = respond(b"GET /metrics HTTP/1.1\r\nAUTHORIZATION: " + basic("prometheus", PASSWORD), render, auth)
    assert ok.startswith(b"HTTP/1.1 200 OK") and ok.endswith(b"metric 1\n") and rendered == [1]


# -- settings ----------------------------------------------------------------------------------


def test_basic_auth_without_tls_only_on_loopback(hashed: PasswordHash) -> None:
    users = f'{{"prometheus": "{hashed.text()}"}}'
    for host in ("127.0.0.1", "[::1]", "localhost"):
        config = BrokerConfig.from_properties(
            {"metrics.listen": f"{host}:9404", "metrics.basic.auth.users": users}
        )
        security = MetricsSecurity.load(config)
        assert security.tls is None and security.auth is not None
    for host in ("0.0.0.0", "192.0.2.1", "metrics.example"):
        config = BrokerConfig.from_properties(
            {"metrics.listen": f"{host}:9404", "metrics.basic.auth.users": users}
        )
        with pytest.raises(MetricsSecurityError, match="in clear"):
            MetricsSecurity.load(config)
    assert MetricsSecurity.load(BrokerConfig.from_properties({})) == MetricsSecurity()


def test_bad_settings_name_the_property_and_never_the_secret(ca: TestCA, hashed: PasswordHash) -> None:
    bad = '{"prometheus": "hunter2"}'
    with pytest.raises(MetricsSecurityError) as info:
        MetricsSecurity.load(BrokerConfig.from_properties({"metrics.basic.auth.users": bad}))
    assert "metrics.basic.auth.users: user 'prometheus'" in str(info.value) and "hunter2" not in str(
        info.value
    )
    with pytest.raises(ConfigError, match=r"metrics\.basic\.auth\.users"):
        BrokerConfig.from_properties({"metrics.basic.auth.users": '["hunter2"]'})
    with pytest.raises(ConfigError, match=r"metrics\.ssl\.client\.auth set, but /metrics has no key store"):
        BrokerConfig.from_properties({"metrics.ssl.client.auth": "required"})
    with pytest.raises(ConfigError, match="/metrics: SSL private key is specified, but certificate chain"):
        BrokerConfig.from_properties({"metrics.ssl.keystore.key": "KEY"})
    missing = BrokerConfig.from_properties({"metrics.ssl.keystore.location": "/nonexistent.pem"})
    with pytest.raises(
        TlsConfigError, match=r"/metrics: cannot load the key store from metrics\.ssl\.keystore\.location"
    ):
        MetricsSecurity.load(missing)
    locked = ca.server("locked", password=b"right")
    wrong = BrokerConfig.from_properties(
        {"metrics.ssl.keystore.location": str(locked.keystore), "metrics.ssl.key.password": "pw-Zq81x"}
    )
    with pytest.raises(TlsConfigError, match="/metrics: cannot load the key store") as tls_info:
        MetricsSecurity.load(wrong)
    assert "pw-Zq81x" not in str(tls_info.value)


def test_inline_key_store_and_client_auth(ca: TestCA) -> None:
    issued = ca.server("inline")
    config = BrokerConfig.from_properties(
        {
            "metrics.listen": "0.0.0.0:9404",
            "metrics.ssl.keystore.key": issued.key.read_text(),
            "metrics.ssl.keystore.certificate.chain": issued.cert.read_text(),
            "metrics.ssl.client.auth": "required",
            "metrics.ssl.truststore.location": str(ca.pem),
            "metrics.ssl.enabled.protocols": "TLSv1.3",
        }
    )
    tls = MetricsSecurity.load(config).tls
    assert tls is not None and tls.verify_mode is ssl.CERT_REQUIRED
    assert tls.minimum_version is ssl.TLSVersion.TLSv1_3


# -- the server over real sockets ------------------------------------------------------------------


class Loop:
    """A selector loop in a thread, as the supervisor's (the clients below block)."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, mask in self.selector.select(0.02):
                key.data(mask)

    def __enter__(self) -> Loop:
        return self

    def start(self) -> None:
        self._thread.start()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.selector.close()


@pytest.fixture
def https_server(ca: TestCA, hashed: PasswordHash) -> Iterator[MetricsServer]:
    issued = ca.server("metrics")
    config = BrokerConfig.from_properties(
        {
            "metrics.ssl.keystore.location": str(issued.keystore),
            "metrics.basic.auth.users": f'{{"prometheus": "{hashed.text()}"}}',
        }
    )
    security = MetricsSecurity.load(config)
    server = MetricsServer("127.0.0.1", 0, lambda: b"up 1\n", tls=security.tls, auth=security.auth)
    with Loop() as loop:
        server.start(loop.selector.register, loop.selector.unregister)
        loop.start()
        try:
            yield server
        finally:
            loop._stop.set()
            loop._thread.join(5)
            server.close()


def get(server: MetricsServer, ca: TestCA, authorization: bytes | None) -> tuple[int, dict[str, Any], bytes]:
    request = urllib.request.Request(f"https://localhost:{server.port}/metrics")
    if authorization is not None:
        request.add_header("Authorization", authorization.decode())
    try:
        with urllib.request.urlopen(request, context=client_context(ca), timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_https_with_basic_auth(https_server: MetricsServer, ca: TestCA) -> None:
    assert get(https_server, ca, basic("prometheus", PASSWORD))[::2] == (200, b"up 1\n")
    status, headers, _ = get(https_server, ca, None)
    assert status == 401 and headers["WWW-Authenticate"] == 'Basic realm="shardbroker"'
    assert get(https_server, ca, basic("prometheus", b"nope"))[0] == 401
    assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200  # remembered: no wait


def raw(port: int, data: bytes) -> bytes:
    """What the server answers to ``data`` until it closes (a reset counts as a close)."""
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(data)
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                chunks.append(chunk)
    return b"".join(chunks)


def test_plain_http_and_garbage_are_refused_and_the_server_keeps_serving(
    https_server: MetricsServer, ca: TestCA
) -> None:
    answer = raw(https_server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request") and b"use https://" in answer
    garbage = raw(https_server.port, b"\x16\x03\x01\x00\x05garbage-that-is-no-client-hello" * 10)
    assert garbage in (b"", b"\x15\x03\x03\x00\x02\x02\x0a")  # closed, maybe after a TLS alert
    assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200
    untrusted = TestCA(ca.directory / "other", "Other CA")
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        get(https_server, untrusted, None)
    assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200


def test_a_peer_that_never_handshakes_blocks_nothing_and_is_dropped(
    https_server: MetricsServer, ca: TestCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = socket.create_connection(("127.0.0.1", https_server.port))
    half = socket.create_connection(("127.0.0.1", https_server.port))
    half.sendall(b"\x16\x03\x01")  # the start of a record, never finished
    try:
        assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200
        monkeypatch.setattr(metrics_http, "REQUEST_TIMEOUT_S", 0.0)
        assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200  # its accept drops them
        for s in (stuck, half):
            s.settimeout(5)
            assert s.recv(1) == b""  # closed by the server
    finally:
        stuck.close()
        half.close()


def test_slots_are_bounded(https_server: MetricsServer, ca: TestCA) -> None:
    idle = [
        socket.create_connection(("127.0.0.1", https_server.port))
        for _ in range(metrics_http.MAX_CONNECTIONS + 3)
    ]
    try:
        assert get(https_server, ca, basic("prometheus", PASSWORD))[0] == 200
        idle[0].settimeout(5)
        assert idle[0].recv(1) == b""  # the oldest made room
    finally:
        for s in idle:
            s.close()


def test_plain_server_still_speaks_plain_http(tmp_path: Path) -> None:
    server = MetricsServer("127.0.0.1", 0, lambda: b"up 1\n")
    with Loop() as loop:
        server.start(loop.selector.register, loop.selector.unregister)
        loop.start()
        try:
            answer = raw(server.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            loop._stop.set()
            loop._thread.join(5)
            server.close()
    assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"up 1\n")


def test_metrics_password_prints_a_toml_line_of_a_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    args = ["metrics-password", "prom", "--iterations", str(MIN_ITERATIONS), "--password-file", str(secret)]
    assert main(args) == 0
    out = capsys.readouterr()
    key, text = tomllib.loads(out.out)["prom"], out.out
    assert "hunter2" not in text + out.err
    assert PasswordHash.parse(key).verify(b"hunter2")  # the line break is not part of the password
    assert main(["metrics-password", "a:b", "--password-file", str(secret)]) == 2
    secret.write_text("")
    assert main(["metrics-password", "prom", "--password-file", str(secret)]) == 2
    assert "refusing an empty password" in capsys.readouterr().err
