"""``shardbroker acls``: what kafka-acls' options mean (the bindings and filters they make), its
refusals (exit 2 before any connection), and add/list/remove against the fake broker serving
the controller's ACL operations (tests/unit/acl_fake.py): output in kafka-acls' form, existing
bindings skipped, confirmation before removing. Opens loopback sockets."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from shardbroker.cli.acls import acls_by_resource
from shardbroker.cli.common import UsageError
from shardbroker.cli.main import build_parser, main
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    CLUSTER_NAME,
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from tests.unit.acl_fake import AclFake
from tests.unit.kafka_fake import closed_port, running_fake

Op = AclOperation
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
TOPIC, GROUP, CLUSTER, TXN = (
    ResourceType.TOPIC,
    ResourceType.GROUP,
    ResourceType.CLUSTER,
    ResourceType.TRANSACTIONAL_ID,
)


def _acls(*argv: str) -> dict[ResourcePattern, list[AccessControlEntry]]:
    return acls_by_resource(build_parser().parse_args(["acls", *argv]))


def _pattern(kind: ResourceType, name: str, pattern: PatternType = PatternType.LITERAL) -> ResourcePattern:
    return ResourcePattern(kind, name, pattern)


def _entry(
    op: AclOperation, principal: str = "User:alice", host: str = "*", perm: AclPermissionType = ALLOW
) -> AccessControlEntry:
    return AccessControlEntry(principal, host, op, perm)


# -- what the options mean -------------------------------------------------------------------------


def test_principal_operation_host_product() -> None:
    acls = _acls(
        "add", "--allow-principal", "User:alice", "--allow-principal", "User:bob",
        "--operation", "read", "--operation", "DescribeConfigs",
        "--allow-host", "10.0.0.1", "--deny-principal", "User:eve", "--topic", "t",
    )  # fmt: skip
    assert list(acls) == [_pattern(TOPIC, "t")]
    assert acls[_pattern(TOPIC, "t")] == [
        _entry(Op.READ, "User:alice", "10.0.0.1"),
        _entry(Op.DESCRIBE_CONFIGS, "User:alice", "10.0.0.1"),
        _entry(Op.READ, "User:bob", "10.0.0.1"),
        _entry(Op.DESCRIBE_CONFIGS, "User:bob", "10.0.0.1"),
        _entry(Op.READ, "User:eve", perm=DENY),
        _entry(Op.DESCRIBE_CONFIGS, "User:eve", perm=DENY),
    ]


def test_defaults_all_operations_every_resource() -> None:
    acls = _acls(
        "add", "--allow-principal", "User:*", "--topic", "a", "--group", "g", "--transactional-id", "x",
        "--cluster", "--resource-pattern-type", "literal",
    )  # fmt: skip
    assert list(acls) == [
        _pattern(TOPIC, "a"), _pattern(CLUSTER, CLUSTER_NAME), _pattern(GROUP, "g"), _pattern(TXN, "x")
    ]  # fmt: skip
    assert all(entries == [_entry(Op.ALL, "User:*")] for entries in acls.values())
    prefixed = _acls(
        "add", "--allow-principal", "User:a", "--topic", "pay-", "--resource-pattern-type", "PREFIXED"
    )
    assert list(prefixed) == [_pattern(TOPIC, "pay-", PatternType.PREFIXED)]


def test_producer_and_consumer() -> None:
    producer = _acls(
        "add", "--producer", "--allow-principal", "User:p", "--topic", "t", "--transactional-id", "tx",
        "--idempotent",
    )  # fmt: skip
    p = "User:p"
    assert producer == {
        _pattern(TOPIC, "t"): [_entry(Op.WRITE, p), _entry(Op.DESCRIBE, p), _entry(Op.CREATE, p)],
        _pattern(CLUSTER, CLUSTER_NAME): [_entry(Op.IDEMPOTENT_WRITE, p)],
        _pattern(TXN, "tx"): [_entry(Op.WRITE, p), _entry(Op.DESCRIBE, p)],
    }
    consumer = _acls("add", "--consumer", "--allow-principal", "User:c", "--topic", "t", "--group", "g")
    c = "User:c"
    assert consumer == {
        _pattern(TOPIC, "t"): [_entry(Op.READ, c), _entry(Op.DESCRIBE, c)],
        _pattern(GROUP, "g"): [_entry(Op.READ, c)],
    }
    both = _acls(
        "add", "--producer", "--consumer", "--allow-principal", "User:b", "--topic", "t", "--group", "g"
    )
    ops = [e.operation for e in both[_pattern(TOPIC, "t")]]
    assert ops == [Op.WRITE, Op.DESCRIBE, Op.CREATE, Op.READ]


def test_remove_without_principals_means_every_acl_of_the_resource() -> None:
    assert _acls("remove", "--topic", "t", "--resource-pattern-type", "match") == {
        _pattern(TOPIC, "t", PatternType.MATCH): []
    }


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["add", "--allow-principal", "User:a", "--operation", "Write", "--cluster"],
            "CLUSTER only supports",
        ),
        (
            ["add", "--allow-principal", "User:a", "--operation", "IdempotentWrite", "--topic", "t"],
            "TOPIC only",
        ),
        (
            ["add", "--allow-principal", "User:a", "--operation", "Write", "--group", "g"],
            "GROUP only supports",
        ),
        (["add", "--topic", "t"], "You must specify one of: --allow-principal, --deny-principal"),
        (["add", "--allow-principal", "User:a"], "at least one resource"),
        (["add", "--producer", "--allow-principal", "User:a", "--group", "g"], "With --producer"),
        (
            ["add", "--producer", "--allow-principal", "User:a", "--topic", "t", "--operation", "Read"],
            "--producer",
        ),
        (["add", "--idempotent", "--allow-principal", "User:a", "--topic", "t"], "--idempotent"),
        (["add", "--consumer", "--allow-principal", "User:a", "--topic", "t"], "With --consumer"),
        (["add", "--allow-host", "h", "--deny-principal", "User:a", "--topic", "t"], "--allow-host needs"),
        (["remove", "--topic", "t", "--deny-host", "h"], "--deny-host needs"),
        (
            ["add", "--allow-principal", "User:a", "--cluster", "--resource-pattern-type", "prefixed"],
            "LITERAL",
        ),
    ],
)
def test_refusals(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        _acls(*argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["add", "--allow-principal", "User:a", "--topic", "t", "--operation", "Jump"],
            "unknown operation 'Jump'",
        ),
        (["add", "--allow-principal", "alice", "--topic", "t"], "Type:name"),
        (
            ["add", "--allow-principal", "User:a", "--topic", "t", "--resource-pattern-type", "any"],
            "literal, prefixed",
        ),
        (["list", "--resource-pattern-type", "unknown"], "unknown resource pattern type"),
        (["add", "--allow-principal", "User:a", "--topic", " "], "must not be empty"),
    ],
)
def test_bad_arguments_exit_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["acls", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_refusals_exit_2_before_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "acls",
        "add",
        "--bootstrap-server",
        f"127.0.0.1:{closed_port()}",
        "--operation",
        "Write",
        "--cluster",
    ]
    assert main([*argv, "--allow-principal", "User:a"]) == 2
    assert "ResourceType CLUSTER only supports operations" in capsys.readouterr().err


# -- against the fake broker -----------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[AclFake]:
    with running_fake() as broker:
        yield AclFake(broker)


def _run(fake: AclFake, *argv: str) -> int:
    return main(["acls", argv[0], "--bootstrap-server", fake.fake.address, "--timeout", "2000", *argv[1:]])


def test_add_list_remove(
    fake: AclFake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _run(fake, "add", "--allow-principal", "User:alice", "--operation", "Read", "--topic", "t") == 0
    out = capsys.readouterr().out
    assert out == (
        "Adding ACLs for resource `ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)`: \n"
        " \t(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)\n\n"
    )
    assert (
        _run(
            fake,
            "add",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Read",
            "--operation",
            "Write",
            "--topic",
            "t",
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "Acl (pattern=ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL), "
        "entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)) already exists."
    ) in (out)
    assert "operation=WRITE" in out
    assert (
        _run(fake, "add", "--consumer", "--allow-principal", "User:bob", "--topic", "t", "--group", "g") == 0
    )
    capsys.readouterr()
    assert len(fake.bindings) == 5

    assert _run(fake, "list", "--topic", "t") == 0
    assert capsys.readouterr().out == (
        "Current ACLs for resource `ResourcePattern(resourceType=TOPIC, name=t, patternType=LITERAL)`:\n"
        "\t(principal=User:alice, host=*, operation=READ, permissionType=ALLOW)\n"
        "\t(principal=User:alice, host=*, operation=WRITE, permissionType=ALLOW)\n"
        "\t(principal=User:bob, host=*, operation=READ, permissionType=ALLOW)\n"
        "\t(principal=User:bob, host=*, operation=DESCRIBE, permissionType=ALLOW)\n\n"
    )
    assert _run(fake, "list", "--principal", "User:bob") == 0
    out = capsys.readouterr().out
    assert out.startswith("ACLs for principal `User:bob`\n") and "User:alice" not in out
    assert "resourceType=GROUP, name=g" in out

    # one entry, with --force
    assert (
        _run(
            fake,
            "remove",
            "--force",
            "--topic",
            "t",
            "--allow-principal",
            "User:alice",
            "--operation",
            "Write",
        )
        == 0
    )
    assert "Removed ACLs" in capsys.readouterr().out
    assert len(fake.bindings) == 4
    # without --force on a terminal: asked, "n" keeps them, "y" removes every ACL of the resource
    monkeypatch.setattr("sys.stdin", _Terminal("n\n"))
    assert _run(fake, "remove", "--topic", "t") == 0
    assert "Are you sure you want to delete all ACLs for resource filter" in capsys.readouterr().out
    assert len(fake.bindings) == 4
    monkeypatch.setattr("sys.stdin", _Terminal("y\n"))
    assert _run(fake, "remove", "--topic", "t") == 0
    assert [b.pattern.resource_type for b in fake.bindings] == [GROUP]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_remove_refuses_without_terminal(
    fake: AclFake, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.acls = {"x": AclBinding(_pattern(TOPIC, "t"), _entry(Op.READ))}
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert _run(fake, "remove", "--topic", "t") == 1
    assert "stdin is not a terminal" in capsys.readouterr().err
    assert len(fake.bindings) == 1
    assert fake.fake.apis(31) == []


def test_broker_refusal_exits_1(fake: AclFake, capsys: pytest.CaptureFixture[str]) -> None:
    fake.refuse = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert _run(fake, "add", "--allow-principal", "User:a", "--topic", "t") == 1
    assert "CLUSTER_AUTHORIZATION_FAILED" in capsys.readouterr().err
    assert _run(fake, "list") == 1


def test_command_config_errors_exit_2(
    fake: AclFake, tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "client.properties"  # type: ignore[operator]
    config.write_text("security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\n")
    assert _run(fake, "list", "--command-config", str(config)) == 2
    assert "GSSAPI" in capsys.readouterr().err
