"""/metrics over HTTPS with basic auth on a real ``shardbroker serve``: curl with the right
password gets the exposition, a wrong or missing one 401 with the challenge, plain HTTP a 400,
garbage a closed connection, and the broker keeps serving; a live Prometheus (Debian's, as in
test_prometheus_live.py) scrapes it with ``scheme: https``, ``tls_config`` and ``basic_auth``,
and a job with the wrong password is down. Basic auth on plain HTTP off loopback stops the start.

The password hash comes from ``shardbroker metrics-password``; keys and certificates from the
test CA (tests/integration/tls.py), in a temp dir.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.broker_process import BrokerProcess, toml_text, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.test_prometheus_live import Prometheus
from tests.integration.tls import TestCA
from tests.ports import free_port_block

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "scrape-me-7Qx"


def password_hash(password_file: Path) -> str:
    """The TOML line ``shardbroker metrics-password`` prints, e.g. ``"prometheus" = "pbkdf2..."``."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardbroker.cli.main",
            "metrics-password",
            USER,
            "--password-file",
            str(password_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert PASSWORD not in out.stdout + out.stderr
    return out.stdout.strip()


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("metrics-tls")


@pytest.fixture(scope="module")
def ca(secrets_dir: Path) -> TestCA:
    return TestCA(secrets_dir / "ca")


@pytest.fixture(scope="module")
def password_file(secrets_dir: Path) -> Path:
    path = secrets_dir / "password"
    path.write_text(PASSWORD + "\n")
    return path


@pytest.fixture(scope="module")
def broker(module_broker_factory: BrokerFactory, ca: TestCA, password_file: Path) -> BrokerProcess:
    line = password_hash(password_file)
    user, hashed = (part.strip().strip('"') for part in line.split("=", 1))
    assert user == USER and hashed.startswith("pbkdf2_sha256$600000$")
    issued = ca.server("metrics")
    return module_broker_factory(
        workers=1,
        config={
            "metrics.ssl.keystore.location": str(issued.keystore),
            "metrics.basic.auth.users": f'{{"{USER}": "{hashed}"}}',  # TOML's table, as JSON text
        },
    )


def curl(broker: BrokerProcess, ca: TestCA, *args: str, scheme: str = "https") -> tuple[int, str]:
    """(HTTP status, headers and body) of ``curl`` against the broker's /metrics."""
    exe = shutil.which("curl")
    assert exe is not None, "curl not found: apt-get install curl"
    url = f"{scheme}://localhost:{broker.metrics_port}/metrics"
    out = subprocess.run(
        [exe, "-sS", "-i", "--cacert", str(ca.pem), "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=30,
    )
    text, _, code = out.stdout.rpartition("\n")
    return int(code or 0), text + out.stderr


def curl_after_hold_back(broker: BrokerProcess, ca: TestCA, *args: str) -> tuple[int, str]:
    """``curl``, retried while a failed check holds the next one back (429 with Retry-After: a
    check takes ~0.1 s, but several times that on a loaded host, and the hold-back is 4 times
    as long), as a scraper would."""
    deadline = time.monotonic() + 30
    while True:
        status, text = curl(broker, ca, *args)
        if status != 429 or time.monotonic() > deadline:
            return status, text
        time.sleep(0.5)


def test_curl_right_wrong_and_no_password(broker: BrokerProcess, ca: TestCA) -> None:
    status, text = curl(broker, ca, "-u", f"{USER}:{PASSWORD}")
    assert status == 200 and "shardbroker_build_info" in text
    for args in ((), ("-u", f"{USER}:wrong"), ("-u", f"nobody:{PASSWORD}")):
        status, text = curl_after_hold_back(broker, ca, *args)
        assert status == 401 and 'WWW-Authenticate: Basic realm="shardbroker"' in text, (args, text)
        assert "shardbroker_build_info" not in text
    status, text = curl(broker, ca, "-u", f"{USER}:again-wrong")  # right after a failed one
    assert status == 429 and "Retry-After: 1" in text
    assert curl(broker, ca, "-u", f"{USER}:{PASSWORD}")[0] == 200  # remembered: never held back
    assert PASSWORD not in broker.output() and "again-wrong" not in broker.output()
    assert "failed basic-auth attempts since the last report (last: user 'prometheus'" in broker.output()


def test_plain_http_and_garbage_are_refused_and_the_broker_keeps_serving(
    broker: BrokerProcess, ca: TestCA
) -> None:
    status, text = curl(broker, ca, scheme="http")
    assert status == 400 and "use https://" in text
    for garbage in (b"\x16\x03\x01\x02\x00" + bytes(range(256)) * 4, b"\x00" * 100, b""):
        # The server may close (and reset) before our shutdown or read: ENOTCONN, EPIPE,
        # ECONNRESET are all a refusal here.
        with (
            socket.create_connection((broker.host, broker.metrics_port), timeout=5) as s,
            contextlib.suppress(OSError),
        ):
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    assert broker.proc is not None and broker.proc.poll() is None
    assert curl(broker, ca, "-u", f"{USER}:{PASSWORD}")[0] == 200


@pytest.fixture
def prometheus(
    broker: BrokerProcess, ca: TestCA, password_file: Path, secrets_dir: Path
) -> Iterator[Prometheus]:
    wrong = secrets_dir / "wrong-password"
    wrong.write_text("not-it\n")
    target = f"{broker.host}:{broker.metrics_port}"

    def job(name: str, password: Path) -> dict[str, object]:
        return {
            "job_name": name,
            "scheme": "https",
            "tls_config": {"ca_file": str(ca.pem), "server_name": "localhost"},
            "basic_auth": {"username": USER, "password_file": str(password)},
            "static_configs": [{"targets": [target]}],
        }

    prom = Prometheus(target, (job("secured", password_file), job("wrong-password", wrong)))
    try:
        prom.wait_ready()
        yield prom
    finally:
        prom.close()


def test_prometheus_scrapes_https_with_basic_auth(prometheus: Prometheus) -> None:
    def up() -> dict[str, float] | None:
        got = {r["metric"]["job"]: float(r["value"][1]) for r in prometheus.query("up")}
        return got if {"secured", "wrong-password"} <= set(got) else None

    states = wait_for(up, 30.0, "both jobs scraped once", interval=0.5)
    assert states["secured"] == 1.0 and states["wrong-password"] == 0.0
    built = prometheus.query('shardbroker_build_info{job="secured"}')
    assert built and float(built[0]["value"][1]) == 1.0
    targets = prometheus.api("targets")["activeTargets"]
    errors = {t["labels"]["job"]: t["lastError"] for t in targets}
    assert errors["secured"] == "" and "401" in errors["wrong-password"], errors


def test_basic_auth_on_plain_http_off_loopback_stops_the_start(tmp_path: Path, password_file: Path) -> None:
    line = password_hash(password_file)
    config = tmp_path / "broker.toml"
    config.write_text(
        toml_text({"metrics.listen": f"0.0.0.0:{free_port_block(1)}"})
        + f"[metrics.basic.auth.users]\n{line}\n"
    )
    kafka = free_port_block(1)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "shardbroker.cli.main",
            "serve",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path / "data"),
            "--workers",
            "1",
            "--listen",
            f"127.0.0.1:{kafka}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "metrics.basic.auth.users on plain HTTP would send the passwords in clear" in out.stderr
    assert "pbkdf2_sha256" not in out.stderr
