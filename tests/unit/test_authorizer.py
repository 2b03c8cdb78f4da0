"""StandardAuthorizer decisions (security/authorizer.py) against Kafka's documented semantics."""

from __future__ import annotations

import pytest

from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.authorizer import MEMO_LIMIT, StandardAuthorizer
from shardbroker.security.principal import KafkaPrincipal

ALICE = KafkaPrincipal.user("alice")
BOB = KafkaPrincipal.user("bob")
HOST = "127.0.0.1"
OP = AclOperation
ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
TOPIC, GROUP, CLUSTER = ResourceType.TOPIC, ResourceType.GROUP, ResourceType.CLUSTER


def acl(
    name: str,
    operation: AclOperation,
    permission: AclPermissionType = ALLOW,
    principal: str = "User:alice",
    host: str = "*",
    resource_type: ResourceType = TOPIC,
    pattern: PatternType = PatternType.LITERAL,
) -> AclBinding:
    return AclBinding(
        ResourcePattern(resource_type, name, pattern),
        AccessControlEntry(principal, host, operation, permission),
    )


def test_no_acl_denies_unless_allow_everyone() -> None:
    assert not StandardAuthorizer().authorize(ALICE, HOST, OP.READ, TOPIC, "t")
    assert StandardAuthorizer(allow_everyone_if_no_acl_found=True).authorize(ALICE, HOST, OP.READ, TOPIC, "t")


def test_allow_everyone_does_not_apply_once_the_resource_has_acls() -> None:
    auth = StandardAuthorizer([acl("t", OP.READ, principal="User:bob")], allow_everyone_if_no_acl_found=True)
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")
    assert auth.authorize(BOB, HOST, OP.READ, TOPIC, "t")
    assert auth.authorize(ALICE, HOST, OP.READ, TOPIC, "other")


def test_allow_write_not_read() -> None:
    auth = StandardAuthorizer([acl("t", OP.WRITE)])
    assert auth.authorize(ALICE, HOST, OP.WRITE, TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")
    assert not auth.authorize(BOB, HOST, OP.WRITE, TOPIC, "t")


@pytest.mark.parametrize("granted", [OP.READ, OP.WRITE, OP.DELETE, OP.ALTER, OP.DESCRIBE, OP.ALL])
def test_operations_implying_describe(granted: AclOperation) -> None:
    assert StandardAuthorizer([acl("t", granted)]).authorize(ALICE, HOST, OP.DESCRIBE, TOPIC, "t")


@pytest.mark.parametrize("granted", [OP.CREATE, OP.ALTER_CONFIGS, OP.DESCRIBE_CONFIGS, OP.IDEMPOTENT_WRITE])
def test_operations_not_implying_describe(granted: AclOperation) -> None:
    allowed = StandardAuthorizer([acl("t", granted)]).authorize(ALICE, HOST, OP.DESCRIBE, TOPIC, "t")
    assert not allowed


def test_alter_configs_implies_describe_configs_only() -> None:
    auth = StandardAuthorizer([acl("t", OP.ALTER_CONFIGS)])
    assert auth.authorize(ALICE, HOST, OP.DESCRIBE_CONFIGS, TOPIC, "t")
    assert not StandardAuthorizer([acl("t", OP.DESCRIBE_CONFIGS)]).authorize(
        ALICE, HOST, OP.ALTER_CONFIGS, TOPIC, "t"
    )


def test_deny_beats_allow_and_implies_nothing() -> None:
    auth = StandardAuthorizer([acl("t", OP.ALL), acl("t", OP.READ, DENY)])
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")
    assert auth.authorize(ALICE, HOST, OP.WRITE, TOPIC, "t")
    assert auth.authorize(ALICE, HOST, OP.DESCRIBE, TOPIC, "t")  # a DENY READ does not deny DESCRIBE


def test_deny_all_denies_every_operation() -> None:
    auth = StandardAuthorizer([acl("t", OP.ALL), acl("*", OP.ALL, DENY)])
    for op in (OP.READ, OP.WRITE, OP.DESCRIBE, OP.ALTER_CONFIGS):
        assert not auth.authorize(ALICE, HOST, op, TOPIC, "t")


def test_prefixed_patterns_and_wildcards() -> None:
    auth = StandardAuthorizer(
        [
            acl("orders-", OP.READ, pattern=PatternType.PREFIXED),
            acl("*", OP.WRITE, principal="User:*"),
            acl("orders-secret", OP.READ, DENY, pattern=PatternType.PREFIXED),
        ]
    )
    assert auth.authorize(ALICE, HOST, OP.READ, TOPIC, "orders-eu")
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "orders")  # shorter than the prefix
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "orders-secret-1")
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "payments")
    assert auth.authorize(BOB, HOST, OP.WRITE, TOPIC, "anything")  # User:* on the wildcard resource
    assert not auth.authorize(BOB, HOST, OP.WRITE, GROUP, "anything")  # other resource type


def test_host_filter() -> None:
    auth = StandardAuthorizer([acl("t", OP.READ, host="10.0.0.1")])
    assert auth.authorize(ALICE, "10.0.0.1", OP.READ, TOPIC, "t")
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")


def test_super_users_pass_even_a_deny() -> None:
    auth = StandardAuthorizer([acl("*", OP.ALL, DENY, principal="User:*")], super_users={"User:admin"})
    assert auth.authorize(KafkaPrincipal.user("admin"), HOST, OP.ALTER, CLUSTER, "kafka-cluster")
    assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")


def test_principal_comparison_is_exact() -> None:
    auth = StandardAuthorizer([acl("t", OP.READ)])
    assert not auth.authorize(KafkaPrincipal.user("Alice"), HOST, OP.READ, TOPIC, "t")
    assert not auth.authorize(KafkaPrincipal("Group", "alice"), HOST, OP.READ, TOPIC, "t")


def test_memo_is_bounded_and_still_right() -> None:
    auth = StandardAuthorizer([acl("t", OP.READ)])
    for i in range(MEMO_LIMIT + 10):
        assert not auth.authorize(ALICE, HOST, OP.READ, TOPIC, f"n{i}")
    assert auth.authorize(ALICE, HOST, OP.READ, TOPIC, "t")


def test_by_resource_type() -> None:
    def by_type(*bindings: AclBinding, allow_everyone: bool = False) -> bool:
        auth = StandardAuthorizer(bindings, allow_everyone_if_no_acl_found=allow_everyone)
        return auth.authorize_by_resource_type(ALICE, HOST, OP.WRITE, TOPIC)

    assert not by_type()
    assert by_type(allow_everyone=True)
    assert by_type(acl("t", OP.WRITE))
    assert by_type(acl("p", OP.WRITE, pattern=PatternType.PREFIXED))
    assert not by_type(acl("t", OP.READ))
    assert not by_type(acl("t", OP.WRITE), acl("t", OP.WRITE, DENY))
    assert not by_type(acl("team-a", OP.WRITE), acl("team", OP.WRITE, DENY, pattern=PatternType.PREFIXED))
    assert by_type(acl("team-a", OP.WRITE), acl("team-b", OP.WRITE, DENY))
    assert not by_type(acl("*", OP.WRITE), acl("*", OP.ALL, DENY))
    assert by_type(acl("*", OP.WRITE), acl("x", OP.WRITE, DENY))
    assert not by_type(acl("t", OP.WRITE, host="10.9.9.9"))
    assert StandardAuthorizer(super_users={"User:alice"}).authorize_by_resource_type(
        ALICE, HOST, OP.WRITE, TOPIC
    )


def test_describe_filters_in_creation_order() -> None:
    from shardbroker.security.acl import AclBindingFilter

    a, b, c = acl("t", OP.READ), acl("u", OP.WRITE), acl("t", OP.WRITE, DENY)
    auth = StandardAuthorizer([a, b, c, a])
    assert auth.describe(AclBindingFilter()) == [a, b, c]
    assert auth.describe(AclBindingFilter(name="t", pattern_type=PatternType.LITERAL)) == [a, c]
