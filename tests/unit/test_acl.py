"""ACL bindings and filters (security/acl.py): Kafka's matching rules and refusals."""

from __future__ import annotations

import pytest

from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
    binding_error,
    filter_error,
)

OP, ALLOW = AclOperation, AclPermissionType.ALLOW


def binding(
    name: str = "t",
    pattern: PatternType = PatternType.LITERAL,
    principal: str = "User:alice",
    resource_type: ResourceType = ResourceType.TOPIC,
    operation: AclOperation = OP.READ,
    permission: AclPermissionType = ALLOW,
) -> AclBinding:
    return AclBinding(
        ResourcePattern(resource_type, name, pattern),
        AccessControlEntry(principal, "*", operation, permission),
    )


def test_record_round_trip_and_unknown_codes() -> None:
    b = binding("orders-", PatternType.PREFIXED, operation=OP.IDEMPOTENT_WRITE)
    assert AclBinding.from_record(b.to_record()) == b
    odd = AclBinding.from_record({**b.to_record(), "operation": 99, "resource_type": 42})
    assert odd.entry.operation is OP.UNKNOWN and odd.pattern.resource_type is ResourceType.UNKNOWN
    f = AclBindingFilter(name=None, principal="User:bob", operation=OP.WRITE)
    assert AclBindingFilter.from_record(f.to_record()) == f


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (binding(resource_type=ResourceType.ANY), "Invalid resourceType ANY"),
        (binding(pattern=PatternType.MATCH), "Invalid patternType MATCH"),
        (binding(operation=OP.ANY), "Invalid operation ANY"),
        (binding(permission=AclPermissionType.ANY), "Invalid permissionType ANY"),
        (binding(name=""), "Resource name should not be empty"),
        (binding(resource_type=ResourceType.CLUSTER, name="c"), "The only valid name for the CLUSTER"),
        (binding(principal="alice"), "no colon is present"),
        (binding(principal="User:"), "Could not parse principal"),
    ],
)
def test_binding_errors(bad: AclBinding, message: str) -> None:
    error = binding_error(bad)
    assert error is not None and message in error


def test_valid_bindings() -> None:
    assert binding_error(binding()) is None
    assert binding_error(binding(resource_type=ResourceType.CLUSTER, name="kafka-cluster")) is None


def test_filter_errors() -> None:
    assert filter_error(AclBindingFilter()) is None
    assert filter_error(AclBindingFilter(resource_type=ResourceType.UNKNOWN)) == "Unknown patternFilter."
    assert filter_error(AclBindingFilter(operation=OP.UNKNOWN)) == "Unknown entryFilter."


def test_filter_match_semantics() -> None:
    literal, wildcard = binding("orders"), binding("*")
    prefixed, other = binding("ord", PatternType.PREFIXED), binding("pay", PatternType.PREFIXED)
    match = AclBindingFilter(name="orders", pattern_type=PatternType.MATCH)
    assert [match.matches(b) for b in (literal, wildcard, prefixed, other)] == [True, True, True, False]
    exact = AclBindingFilter(name="orders", pattern_type=PatternType.LITERAL)
    assert [exact.matches(b) for b in (literal, wildcard, prefixed)] == [True, False, False]
    any_type = AclBindingFilter(name="ord")
    assert [any_type.matches(b) for b in (literal, prefixed)] == [False, True]
    assert AclBindingFilter(principal="User:bob").matches(literal) is False
    assert AclBindingFilter(permission_type=AclPermissionType.DENY).matches(literal) is False
    assert AclBindingFilter(resource_type=ResourceType.GROUP).matches(literal) is False
    assert AclBindingFilter(operation=OP.READ, host="*").matches(literal) is True


def test_parse_names() -> None:
    assert AclOperation.parse("idempotent-write") is OP.IDEMPOTENT_WRITE
    assert ResourceType.parse("Topic") is ResourceType.TOPIC
    # kafka-acls' CamelCase names (SecurityUtils.operation), any case
    assert AclOperation.parse("ClusterAction") is OP.CLUSTER_ACTION
    assert AclOperation.parse("describeconfigs") is OP.DESCRIBE_CONFIGS
    assert ResourceType.parse("TransactionalId") is ResourceType.TRANSACTIONAL_ID
    with pytest.raises(ValueError, match="one of"):
        AclOperation.parse("jump")
