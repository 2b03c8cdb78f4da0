"""Kafka's ACL model: resource patterns, access control entries, bindings and their filters.

The vocabulary of ``org.apache.kafka.common.acl`` and ``...common.resource`` with Kafka's wire
codes: an ``AclBinding`` is a ``ResourcePattern`` (type, name, LITERAL or PREFIXED) plus an
``AccessControlEntry`` (principal ``Type:name``, host, operation, ALLOW or DENY). Filters (for
DescribeAcls and DeleteAcls) match bindings with Kafka's rules: ``None`` fields and ANY match
everything; pattern type MATCH matches every pattern that would apply to the named resource
(the literal name, the literal wildcard ``*``, and every prefix of the name).

``binding_error`` and ``filter_error`` are the refusals of Kafka's AclControlManager and request
validation (answered as INVALID_REQUEST with the same messages). Codes a newer client may send
that we do not know decode as UNKNOWN, as Kafka's ``fromCode``. Pure: no IO.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Self

from shardbroker.security.principal import KafkaPrincipal

__all__ = [
    "CLUSTER_NAME",
    "IMPLIES_DESCRIBE",
    "IMPLIES_DESCRIBE_CONFIGS",
    "WILDCARD_HOST",
    "WILDCARD_PRINCIPAL",
    "WILDCARD_RESOURCE",
    "AccessControlEntry",
    "AclBinding",
    "AclBindingFilter",
    "AclOperation",
    "AclPermissionType",
    "PatternType",
    "ResourcePattern",
    "ResourceType",
    "binding_error",
    "filter_error",
]

#: The one name of the CLUSTER resource.
CLUSTER_NAME: Final = "kafka-cluster"
WILDCARD_RESOURCE: Final = "*"
WILDCARD_HOST: Final = "*"
WILDCARD_PRINCIPAL: Final = "User:*"


class _Coded(enum.IntEnum):
    """An enum with Kafka's wire codes; an unknown code is UNKNOWN (0), as Kafka's fromCode."""

    @classmethod
    def from_code(cls, code: int) -> Self:
        try:
            return cls(code)
        except ValueError:
            return cls(0)

    @classmethod
    def parse(cls, text: str) -> Self:
        """By name, case-insensitive, in Kafka's forms (``kafka-acls --operation ClusterAction``,
        ``CLUSTER_ACTION``, ``cluster-action``); ValueError names the choices."""
        key = "".join(c for c in text if c not in "-_ \t").upper()
        for member in cls:
            if member.name.replace("_", "") == key:
                return member
        choices = ", ".join(m.name for m in cls if m.name not in ("UNKNOWN", "ANY", "MATCH"))
        raise ValueError(f"unknown {cls.__name__} {text!r}: one of {choices}")


class ResourceType(_Coded):
    UNKNOWN = 0
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5
    DELEGATION_TOKEN = 6
    USER = 7


class PatternType(_Coded):
    UNKNOWN = 0
    ANY = 1
    MATCH = 2
    LITERAL = 3
    PREFIXED = 4


class AclOperation(_Coded):
    UNKNOWN = 0
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12
    CREATE_TOKENS = 13
    DESCRIBE_TOKENS = 14
    TWO_PHASE_COMMIT = 15


class AclPermissionType(_Coded):
    UNKNOWN = 0
    ANY = 1
    DENY = 2
    ALLOW = 3


#: An ALLOW of any of these also allows DESCRIBE (Kafka's implied operations; DENY implies nothing).
IMPLIES_DESCRIBE: Final = frozenset(
    {AclOperation.DESCRIBE, AclOperation.READ, AclOperation.WRITE, AclOperation.DELETE, AclOperation.ALTER}
)
#: An ALLOW of any of these also allows DESCRIBE_CONFIGS.
IMPLIES_DESCRIBE_CONFIGS: Final = frozenset({AclOperation.DESCRIBE_CONFIGS, AclOperation.ALTER_CONFIGS})


@dataclass(frozen=True, slots=True)
class ResourcePattern:
    resource_type: ResourceType
    name: str
    pattern_type: PatternType = PatternType.LITERAL

    def __str__(self) -> str:
        return (
            f"ResourcePattern(resourceType={self.resource_type.name}, name={self.name}, "
            f"patternType={self.pattern_type.name})"
        )


@dataclass(frozen=True, slots=True)
class AccessControlEntry:
    #: ``Type:name`` as written in the ACL (``User:alice``, ``User:*``).
    principal: str
    host: str
    operation: AclOperation
    permission_type: AclPermissionType

    def __str__(self) -> str:
        return (
            f"(principal={self.principal}, host={self.host}, operation={self.operation.name}, "
            f"permissionType={self.permission_type.name})"
        )


@dataclass(frozen=True, slots=True)
class AclBinding:
    pattern: ResourcePattern
    entry: AccessControlEntry

    def to_record(self) -> dict[str, Any]:
        """The binding's JSON form in the metadata log and the image."""
        p, e = self.pattern, self.entry
        return {
            "resource_type": int(p.resource_type),
            "name": p.name,
            "pattern_type": int(p.pattern_type),
            "principal": e.principal,
            "host": e.host,
            "operation": int(e.operation),
            "permission_type": int(e.permission_type),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AclBinding:
        """From ``to_record``'s form; codes we do not know become UNKNOWN (refused by
        ``binding_error``)."""
        return cls(
            ResourcePattern(
                ResourceType.from_code(int(record["resource_type"])),
                str(record["name"]),
                PatternType.from_code(int(record["pattern_type"])),
            ),
            AccessControlEntry(
                str(record["principal"]),
                str(record["host"]),
                AclOperation.from_code(int(record["operation"])),
                AclPermissionType.from_code(int(record["permission_type"])),
            ),
        )


@dataclass(frozen=True, slots=True)
class AclBindingFilter:
    """Kafka's AclBindingFilter: ``None`` names/principals/hosts and the ANY enums match all."""

    resource_type: ResourceType = ResourceType.ANY
    name: str | None = None
    pattern_type: PatternType = PatternType.ANY
    principal: str | None = None
    host: str | None = None
    operation: AclOperation = AclOperation.ANY
    permission_type: AclPermissionType = AclPermissionType.ANY

    def to_record(self) -> dict[str, Any]:
        """The filter's JSON form (a controller op's arguments): as a binding's, ``None`` kept."""
        return {
            "resource_type": int(self.resource_type),
            "name": self.name,
            "pattern_type": int(self.pattern_type),
            "principal": self.principal,
            "host": self.host,
            "operation": int(self.operation),
            "permission_type": int(self.permission_type),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> AclBindingFilter:
        def text(key: str) -> str | None:
            value = record.get(key)
            return None if value is None else str(value)

        return cls(
            ResourceType.from_code(int(record["resource_type"])),
            text("name"),
            PatternType.from_code(int(record["pattern_type"])),
            text("principal"),
            text("host"),
            AclOperation.from_code(int(record["operation"])),
            AclPermissionType.from_code(int(record["permission_type"])),
        )

    def matches(self, binding: AclBinding) -> bool:
        return self._matches_pattern(binding.pattern) and self._matches_entry(binding.entry)

    def _matches_pattern(self, pattern: ResourcePattern) -> bool:
        if self.resource_type is not ResourceType.ANY and self.resource_type is not pattern.resource_type:
            return False
        any_or_match = self.pattern_type in (PatternType.ANY, PatternType.MATCH)
        if not any_or_match and self.pattern_type is not pattern.pattern_type:
            return False
        if self.name is None:
            return True
        if self.pattern_type in (PatternType.ANY, pattern.pattern_type):
            return self.name == pattern.name
        # MATCH: every pattern that applies to the resource named by the filter.
        if pattern.pattern_type is PatternType.LITERAL:
            return pattern.name in (self.name, WILDCARD_RESOURCE)
        return self.name.startswith(pattern.name)

    def _matches_entry(self, entry: AccessControlEntry) -> bool:
        return (
            (self.principal is None or self.principal == entry.principal)
            and (self.host is None or self.host == entry.host)
            and (self.operation is AclOperation.ANY or self.operation is entry.operation)
            and self.permission_type in (AclPermissionType.ANY, entry.permission_type)
        )


def binding_error(binding: AclBinding) -> str | None:
    """Why CreateAcls refuses ``binding`` (INVALID_REQUEST), or None: Kafka's checks and messages."""
    p, e = binding.pattern, binding.entry
    if p.resource_type in (ResourceType.UNKNOWN, ResourceType.ANY):
        return f"Invalid resourceType {p.resource_type.name}"
    if p.pattern_type not in (PatternType.LITERAL, PatternType.PREFIXED):
        return f"Invalid patternType {p.pattern_type.name}"
    if e.operation in (AclOperation.UNKNOWN, AclOperation.ANY):
        return f"Invalid operation {e.operation.name}"
    if e.permission_type not in (AclPermissionType.ALLOW, AclPermissionType.DENY):
        return f"Invalid permissionType {e.permission_type.name}"
    if not p.name:
        return "Resource name should not be empty"
    if p.resource_type is ResourceType.CLUSTER and p.name != CLUSTER_NAME:
        return f"The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
    if ":" not in e.principal:
        return (
            f"Could not parse principal from `{e.principal}` (no colon is present separating the "
            "principal type from the principal name)"
        )
    try:
        KafkaPrincipal.parse(e.principal)
    except ValueError:
        return f"Could not parse principal from `{e.principal}`"
    return None


def filter_error(acl_filter: AclBindingFilter) -> str | None:
    """Why DescribeAcls/DeleteAcls refuse ``acl_filter`` (INVALID_REQUEST), or None."""
    if acl_filter.resource_type is ResourceType.UNKNOWN or acl_filter.pattern_type is PatternType.UNKNOWN:
        return "Unknown patternFilter."
    f = acl_filter
    if f.operation is AclOperation.UNKNOWN or f.permission_type is AclPermissionType.UNKNOWN:
        return "Unknown entryFilter."
    return None
