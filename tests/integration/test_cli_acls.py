"""``shardbroker acls`` against a broker with the authorizer on (tests/integration/acl_broker.py),
as an operator runs it: ``python -m shardbroker`` subprocesses authenticating with SASL/PLAIN
through ``--command-config`` (Kafka's client properties), exit codes and output, the bindings
cross-checked with confluent-kafka's DescribeAcls. A user who is not a super user and has no
ACL on the cluster is refused (CLUSTER_AUTHORIZATION_FAILED, exit 1), as is an anonymous
PLAINTEXT client and a wrong password.

Starts a broker process and CLI subprocesses; opens loopback sockets.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.acl_broker import PASSWORDS, TIMEOUT, AclBroker, acl_broker, admin_client, clean_acls
from tests.integration.broker_process import REPO

EVERY = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    yield from acl_broker(tmp_path_factory, "acl-cli")


@pytest.fixture(autouse=True)
def _clean(broker: AclBroker) -> Iterator[None]:
    yield
    clean_acls(broker)


def command_config(directory: Path, user: str, password: str | None = None) -> Path:
    """A Kafka client properties file for ``user`` over SASL_PLAINTEXT with PLAIN."""
    path = directory / f"{user}.properties"
    path.write_text(
        "security.protocol=SASL_PLAINTEXT\n"
        "sasl.mechanism=PLAIN\n"
        "sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required \\\n"
        f'    username="{user}" password="{password or PASSWORDS[user]}";\n'
    )
    return path


def acls(
    bootstrap: str, config: Path | None, *argv: str, stdin: int | None = subprocess.DEVNULL
) -> subprocess.CompletedProcess[str]:
    security = ["--command-config", str(config)] if config is not None else []
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", "acls", *argv, "--bootstrap-server", bootstrap, *security],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=REPO,
        stdin=stdin,
    )


def described(broker: AclBroker) -> set[str]:
    admin = admin_client(broker)
    return {str(b) for b in admin.describe_acls(EVERY, request_timeout=TIMEOUT).result()}


def test_add_list_remove_as_super_user(broker: AclBroker, tmp_path: Path) -> None:
    admin = command_config(tmp_path, "admin")
    b = broker.bootstrap
    done = acls(
        b, admin, "add", "--producer", "--idempotent", "--allow-principal", "User:alice", "--topic", "orders"
    )
    assert done.returncode == 0, done.stderr
    assert (
        "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=orders, patternType=LITERAL)`"
        in (done.stdout)
    )
    done = acls(
        b, admin, "add", "--deny-principal", "User:bob", "--operation", "read", "--deny-host", "10.0.0.9",
        "--topic", "pay-", "--resource-pattern-type", "prefixed",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = described(broker)  # confluent-kafka's view: what the broker stores
    assert len(seen) == 5
    assert any("IDEMPOTENT_WRITE" in s and "User:alice" in s for s in seen)
    assert any("PREFIXED" in s and "pay-" in s and "DENY" in s and "10.0.0.9" in s for s in seen)

    # again: nothing new, reported as existing
    again = acls(b, admin, "add", "--producer", "--allow-principal", "User:alice", "--topic", "orders")
    assert again.returncode == 0 and again.stdout.count("already exists.") == 3

    listed = acls(b, admin, "list", "--topic", "pay-xyz", "--resource-pattern-type", "match")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == (
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=pay-, patternType=PREFIXED)`:\n"
        "\t(principal=User:bob, host=10.0.0.9, operation=READ, permissionType=DENY)\n\n"
    )
    mine = acls(b, admin, "list", "--principal", "User:alice")
    assert mine.stdout.startswith("ACLs for principal `User:alice`") and "User:bob" not in mine.stdout

    # remove: without a terminal and without --force, refused and nothing removed
    refused = acls(b, admin, "remove", "--topic", "orders")
    assert refused.returncode == 1 and "stdin is not a terminal" in refused.stderr
    assert len(described(broker)) == 5
    removed = acls(b, admin, "remove", "--force", "--topic", "orders")
    assert removed.returncode == 0, removed.stderr
    assert len(described(broker)) == 2


def test_refused_without_cluster_alter(broker: AclBroker, tmp_path: Path) -> None:
    """bob authenticates, but neither is a super user nor holds ALTER/DESCRIBE on the cluster."""
    bob = command_config(tmp_path, "bob")
    for argv in (("add", "--allow-principal", "User:bob", "--topic", "t"), ("list",)):
        done = acls(broker.bootstrap, bob, *argv)
        assert done.returncode == 1, done.stdout
        assert "CLUSTER_AUTHORIZATION_FAILED" in done.stderr
    anonymous = acls(broker.plaintext_bootstrap, None, "add", "--allow-principal", "User:*", "--topic", "t")
    assert anonymous.returncode == 1 and "CLUSTER_AUTHORIZATION_FAILED" in anonymous.stderr
    assert described(broker) == set()


def test_wrong_password(broker: AclBroker, tmp_path: Path) -> None:
    config = command_config(tmp_path, "admin", "not-the-password")
    done = acls(broker.bootstrap, config, "list")
    assert done.returncode == 1
    assert "SASL_AUTHENTICATION_FAILED" in done.stderr and "not-the-password" not in done.stderr
