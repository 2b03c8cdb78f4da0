"""SCRAM credentials on a real broker (KIP-554): confluent-kafka's AdminClient
alter/describe_user_scram_credentials, ``shardbroker users`` as an operator runs it (``python -m
shardbroker`` in a subprocess), every worker answering the same right after a change, the
credentials surviving a drain and a kill -9 of the supervisor with ``shardbroker check`` clean,
and ``users add --data-dir`` bootstrapping a stopped broker (and refused while one runs).

Starts broker processes and CLI subprocesses; opens loopback sockets (the clients).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
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

pytestmark = pytest.mark.integration

CLI_TIMEOUT = 120.0
TIMEOUT = 30.0
SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512


def users(*argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", "users", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def ok(*argv: str, stdin: str | None = None) -> str:
    done = users(*argv, stdin=stdin)
    assert done.returncode == 0, f"users {' '.join(argv)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def listed(bootstrap: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = json.loads(ok("list", "--format", "json", "--bootstrap-server", bootstrap))
    return result


def upsert(admin: AdminClient, user: str, mechanism: Any, iterations: int, password: bytes) -> None:
    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialUpsertion(user, ScramCredentialInfo(mechanism, iterations), password)]
    )
    futures[user].result(TIMEOUT)


def described(admin: AdminClient) -> dict[str, list[tuple[Any, int]]]:
    everything = admin.describe_user_scram_credentials().result(TIMEOUT)
    return {
        user: sorted(
            ((c.mechanism, c.iterations) for c in d.scram_credential_infos), key=lambda c: int(c[0].value)
        )
        for user, d in everything.items()
    }


def kafka_error(future: Any) -> Any:
    with pytest.raises(confluent_kafka.KafkaException) as exc:
        future.result(TIMEOUT)
    return exc.value.args[0]


@pytest.mark.kafka_api("AlterUserScramCredentials", "DescribeUserScramCredentials", client="confluent-kafka")
def test_confluent_admin_alter_and_describe(broker: BrokerProcess) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    assert described(admin) == {}
    upsert(admin, "alice", SHA256, 4096, b"alice-secret")
    upsert(admin, "alice", SHA512, 8192, b"alice-secret")
    upsert(admin, "bob", SHA512, 16384, b"bob-secret")
    assert described(admin) == {"alice": [(SHA256, 4096), (SHA512, 8192)], "bob": [(SHA512, 16384)]}

    # every worker serves the change as soon as it is answered
    worker1 = AdminClient({"bootstrap.servers": f"{broker.host}:{broker.ports[1]}"})
    upsert(admin, "carol", SHA256, 5000, b"c")
    assert described(worker1)["carol"] == [(SHA256, 5000)]

    named = admin.describe_user_scram_credentials(["bob", "nobody"])
    bob = named["bob"].result(TIMEOUT)
    assert [(c.mechanism, c.iterations) for c in bob.scram_credential_infos] == [(SHA512, 16384)]
    assert kafka_error(named["nobody"]).code() == confluent_kafka.KafkaError.RESOURCE_NOT_FOUND

    # Kafka's refusals, per user: the others of the same request are applied
    futures = admin.alter_user_scram_credentials(
        [
            UserScramCredentialUpsertion("dave", ScramCredentialInfo(SHA256, 100), b"d"),
            UserScramCredentialDeletion("erin", SHA256),
            UserScramCredentialUpsertion("frank", ScramCredentialInfo(SHA512, 4096), b"f"),
        ]
    )
    assert kafka_error(futures["dave"]).code() == confluent_kafka.KafkaError.UNACCEPTABLE_CREDENTIAL
    assert kafka_error(futures["erin"]).code() == confluent_kafka.KafkaError.RESOURCE_NOT_FOUND
    futures["frank"].result(TIMEOUT)
    # one alteration per user and request, as Kafka's controller
    futures = admin.alter_user_scram_credentials(
        [
            UserScramCredentialUpsertion("gina", ScramCredentialInfo(SHA256, 4096), b"g"),
            UserScramCredentialUpsertion("gina", ScramCredentialInfo(SHA512, 4096), b"g"),
        ]
    )
    assert kafka_error(futures["gina"]).code() == confluent_kafka.KafkaError.DUPLICATE_RESOURCE

    futures = admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("alice", SHA256), UserScramCredentialDeletion("bob", SHA512)]
    )
    for future in futures.values():
        future.result(TIMEOUT)
    assert described(worker1) == {
        "alice": [(SHA512, 8192)],
        "carol": [(SHA256, 5000)],
        "frank": [(SHA512, 4096)],
    }


def test_cli_round_trip(broker: BrokerProcess) -> None:
    b = broker.bootstrap
    out = ok("add", "ops", "--mechanism", "SCRAM-SHA-512", "--iterations", "8192", "--bootstrap-server", b,
             stdin="s3cret\n")  # fmt: skip
    assert out == "set the SCRAM-SHA-512 credential of user 'ops' (8192 iterations)\n" and "s3cret" not in out
    ok("add", "ops", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", b, stdin="s3cret")
    assert listed(b) == [
        {"user": "ops", "mechanism": "SCRAM-SHA-256", "iterations": 4096},
        {"user": "ops", "mechanism": "SCRAM-SHA-512", "iterations": 8192},
    ]
    admin = AdminClient({"bootstrap.servers": b})
    assert described(admin) == {"ops": [(SHA256, 4096), (SHA512, 8192)]}

    ok("delete", "ops", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", b)
    done = users("delete", "ops", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", b)
    assert done.returncode == 1 and "RESOURCE_NOT_FOUND" in done.stderr
    done = users("list", "nobody", "--bootstrap-server", b)
    assert done.returncode == 1 and "RESOURCE_NOT_FOUND: user 'nobody'" in done.stderr
    done = users("add", "x", "--mechanism", "SCRAM-SHA-256", "--bootstrap-server", b, stdin="")
    assert done.returncode == 2 and "refusing an empty password" in done.stderr
    assert listed(b) == [{"user": "ops", "mechanism": "SCRAM-SHA-512", "iterations": 8192}]


def check_clean(data_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shardbroker", "check", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )
    assert done.returncode == 0, f"check exited {done.returncode}: {done.stdout}{done.stderr}"


def test_credentials_survive_a_drain_and_a_killed_supervisor(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=2)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    upsert(admin, "alice", SHA512, 8192, b"a")
    upsert(admin, "bob", SHA256, 4096, b"b")
    admin.alter_user_scram_credentials([UserScramCredentialDeletion("bob", SHA256)])["bob"].result(TIMEOUT)
    del admin
    expected = {"alice": [(SHA512, 8192)]}

    assert broker.stop() == 0
    check_clean(broker.data_dir)
    broker.start()
    assert described(AdminClient({"bootstrap.servers": broker.bootstrap})) == expected

    upsert(AdminClient({"bootstrap.servers": broker.bootstrap}), "carol", SHA256, 4096, b"c")
    broker.stop(signal.SIGKILL)  # the supervisor only: its workers notice and exit
    check_clean(broker.data_dir)
    broker.start()
    assert described(AdminClient({"bootstrap.servers": broker.bootstrap})) == {
        **expected,
        "carol": [(SHA256, 4096)],
    }


def test_bootstrap_a_stopped_broker_with_users_add_data_dir(
    broker_factory: BrokerFactory, tmp_path: Path
) -> None:
    broker = broker_factory(workers=2, start=False)
    pw = tmp_path / "admin.pw"
    pw.write_text("bootstrap-secret\n")
    out = ok("add", "admin", "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
             "--data-dir", str(broker.data_dir))  # fmt: skip
    assert "set the SCRAM-SHA-512 credential of user 'admin' (4096 iterations) in data dir" in out
    check_clean(broker.data_dir)

    broker.start()
    assert listed(broker.bootstrap) == [{"user": "admin", "mechanism": "SCRAM-SHA-512", "iterations": 4096}]
    done = users("add", "other", "--mechanism", "SCRAM-SHA-512", "--password-file", str(pw),
                 "--data-dir", str(broker.data_dir))  # fmt: skip
    assert done.returncode == 1 and "in use by another shardbroker" in done.stderr
    assert [u["user"] for u in listed(broker.bootstrap)] == ["admin"]
