"""The admin client's ACL calls (client/admin_acls.py) against the fake broker serving the
controller's own ACL operations (tests/unit/acl_fake.py): request layouts, results per binding
and filter, refusals. Opens loopback sockets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_acls import EVERY_ACL
from shardbroker.client.connection import KafkaApiError, UnsupportedApi
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from tests.unit.acl_fake import AclFake
from tests.unit.kafka_fake import running_fake

ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY


def _binding(
    name: str,
    op: AclOperation = AclOperation.READ,
    principal: str = "User:alice",
    kind: PatternType = PatternType.LITERAL,
    permission: AclPermissionType = ALLOW,
) -> AclBinding:
    return AclBinding(
        ResourcePattern(ResourceType.TOPIC, name, kind), AccessControlEntry(principal, "*", op, permission)
    )


@pytest.fixture
def acls() -> Iterator[AclFake]:
    with running_fake() as fake:
        yield AclFake(fake)


def test_create_describe_delete(acls: AclFake) -> None:
    a, b = _binding("t"), _binding("pay-", AclOperation.WRITE, "User:bob", PatternType.PREFIXED, DENY)
    with AdminClient(acls.fake.address, timeout=2) as admin:
        assert admin.create_acls([a, b]) == {a: None, b: None}
        assert admin.describe_acls() == [a, b]
        assert admin.describe_acls(AclBindingFilter(ResourceType.TOPIC, "pay-x", PatternType.MATCH)) == [b]
        assert admin.describe_acls(AclBindingFilter(principal="User:alice")) == [a]
        (version, request) = acls.fake.apis(29)[-1]
        assert (
            version == 3 and request.principal_filter == "User:alice" and request.resource_name_filter is None
        )
        removed = admin.delete_acls([AclBindingFilter(principal="User:bob"), AclBindingFilter(name="nope")])
        assert list(removed.values()) == [[b], []]
        assert admin.describe_acls(EVERY_ACL) == [a]
    assert acls.bindings == [a]


def test_each_creation_answers_alone(acls: AclFake) -> None:
    good, empty_name = _binding("t"), _binding("")
    with AdminClient(acls.fake.address, timeout=2) as admin:
        results = admin.create_acls([good, empty_name])
    assert results[good] is None
    error = results[empty_name]
    assert isinstance(error, KafkaApiError) and error.error_code == ErrorCode.INVALID_REQUEST
    assert "Resource name should not be empty" in str(error)
    assert acls.bindings == [good]


def test_refused_calls(acls: AclFake) -> None:
    acls.refuse = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    with AdminClient(acls.fake.address, timeout=2) as admin:
        with pytest.raises(KafkaApiError, match="CLUSTER_AUTHORIZATION_FAILED: DescribeAcls"):
            admin.describe_acls()
        created = admin.create_acls([_binding("t")])
        deleted = admin.delete_acls([EVERY_ACL])
    for error in [*created.values(), *deleted.values()]:
        assert isinstance(error, KafkaApiError) and error.error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED


def test_needs_pattern_types() -> None:
    """v0 has no resource pattern types: a broker serving only v0 is not spoken to."""
    with running_fake() as fake:
        fake.versions[29] = (0, 0)
        with (
            AdminClient(fake.address, timeout=2) as admin,
            pytest.raises(UnsupportedApi, match="DescribeAcls"),
        ):
            admin.describe_acls()
