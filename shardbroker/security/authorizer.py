"""Kafka's StandardAuthorizer decision, over an immutable snapshot of the ACL bindings.

``authorize(principal, host, operation, resource_type, name)`` follows StandardAuthorizerData:
a super user (``super.users``) may do everything; otherwise the ACLs that apply to the resource
are the LITERAL ones on its name, the LITERAL wildcard ``*`` and every PREFIXED one whose prefix
starts the name; of those, the ones whose principal is the caller's or ``User:*`` and whose host
is the caller's or ``*`` decide. Any matching DENY (of the operation or ALL) denies; otherwise an
ALLOW of the operation, of ALL, or of an operation implying it (READ/WRITE/DELETE/ALTER imply
DESCRIBE, ALTER_CONFIGS implies DESCRIBE_CONFIGS) allows; otherwise, when no ACL at all applies
to the resource, ``allow.everyone.if.no.acl.found`` decides; otherwise denied.
``authorize_by_resource_type`` is Kafka's Authorizer default of the same name (may the caller do
``operation`` on *some* resource of the type: InitProducerId's idempotent-write check).

Cost: the index is a dict of literal names and a dict of prefixes probed once per distinct
prefix length, and decisions are memoised per (principal, host, operation, resource) until the
ACLs change (a new authorizer is built from each new metadata image). The memo makes the
Produce path pay one dict probe per topic whatever the number of ACLs (perf/bench_authorizer.py).
Pure: no IO.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

from shardbroker.security.acl import (
    IMPLIES_DESCRIBE,
    IMPLIES_DESCRIBE_CONFIGS,
    WILDCARD_HOST,
    WILDCARD_PRINCIPAL,
    WILDCARD_RESOURCE,
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourceType,
)
from shardbroker.security.principal import KafkaPrincipal

__all__ = ["StandardAuthorizer"]

#: Memoised decisions kept before the memo starts over (a bound on memory, not a tuning knob:
#: a worker sees far fewer distinct (principal, host, operation, resource) tuples than this).
MEMO_LIMIT: Final = 65_536

_Entries = tuple[AccessControlEntry, ...]
_Key = tuple[ResourceType, str]


def _allows(granted: AclOperation, wanted: AclOperation) -> bool:
    if granted is AclOperation.ALL or granted is wanted:
        return True
    if wanted is AclOperation.DESCRIBE:
        return granted in IMPLIES_DESCRIBE
    if wanted is AclOperation.DESCRIBE_CONFIGS:
        return granted in IMPLIES_DESCRIBE_CONFIGS
    return False


class StandardAuthorizer:
    """The decisions of one set of ACL bindings and broker settings (immutable once built)."""

    def __init__(
        self,
        bindings: Iterable[AclBinding] = (),
        super_users: Iterable[str] = (),
        allow_everyone_if_no_acl_found: bool = False,
    ) -> None:
        self.bindings: tuple[AclBinding, ...] = tuple(dict.fromkeys(bindings))
        self.super_users = frozenset(super_users)
        self.allow_everyone_if_no_acl_found = allow_everyone_if_no_acl_found
        literal: dict[_Key, list[AccessControlEntry]] = {}
        prefixed: dict[_Key, list[AccessControlEntry]] = {}
        lengths: dict[ResourceType, set[int]] = {}
        for binding in self.bindings:
            p = binding.pattern
            if p.pattern_type is PatternType.PREFIXED:
                prefixed.setdefault((p.resource_type, p.name), []).append(binding.entry)
                lengths.setdefault(p.resource_type, set()).add(len(p.name))
            else:
                literal.setdefault((p.resource_type, p.name), []).append(binding.entry)
        self._literal: dict[_Key, _Entries] = {k: tuple(v) for k, v in literal.items()}
        self._prefixed: dict[_Key, _Entries] = {k: tuple(v) for k, v in prefixed.items()}
        self._prefix_lengths = {t: tuple(sorted(ls)) for t, ls in lengths.items()}
        self._memo: dict[tuple[KafkaPrincipal, str, AclOperation, ResourceType, str], bool] = {}

    def authorize(
        self,
        principal: KafkaPrincipal,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        key = (principal, host, operation, resource_type, name)
        decided = self._memo.get(key)
        if decided is None:
            decided = self._decide(principal, host, operation, resource_type, name)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = decided
        return decided

    def _decide(
        self,
        principal: KafkaPrincipal,
        host: str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: str,
    ) -> bool:
        who = str(principal)
        if who in self.super_users:
            return True
        found = allowed = False
        for entries in self._applying(resource_type, name):
            found = True
            for e in entries:
                if e.principal != who and e.principal != WILDCARD_PRINCIPAL:
                    continue
                if e.host != host and e.host != WILDCARD_HOST:
                    continue
                if e.permission_type is AclPermissionType.DENY:
                    if e.operation is AclOperation.ALL or e.operation is operation:
                        return False
                elif _allows(e.operation, operation):
                    allowed = True
        if allowed:
            return True
        return not found and self.allow_everyone_if_no_acl_found

    def _applying(self, resource_type: ResourceType, name: str) -> Iterator[_Entries]:
        """The entries of every pattern that applies to the resource (literal, wildcard, prefixes)."""
        for literal in (name, WILDCARD_RESOURCE):
            entries = self._literal.get((resource_type, literal))
            if entries:
                yield entries
        for length in self._prefix_lengths.get(resource_type, ()):
            if length > len(name):
                break
            entries = self._prefixed.get((resource_type, name[:length]))
            if entries:
                yield entries

    def authorize_by_resource_type(
        self, principal: KafkaPrincipal, host: str, operation: AclOperation, resource_type: ResourceType
    ) -> bool:
        """May ``principal`` do ``operation`` on at least one resource of ``resource_type``?

        Kafka's rule: allowed if an arbitrary resource name is (super users, or no ACLs and
        ``allow.everyone.if.no.acl.found``); denied by a matching DENY on the literal wildcard;
        else allowed by a matching ALLOW on the wildcard, or on a literal name or prefix that no
        matching DENY (the same literal, or a prefix of it) covers. Implied operations do not
        count here, as in Kafka.
        """
        if self.authorize(principal, host, operation, resource_type, "hardcode"):
            return True
        who = str(principal)
        deny: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        allow: dict[PatternType, set[str]] = {PatternType.LITERAL: set(), PatternType.PREFIXED: set()}
        wildcard_allowed = False
        for binding in self.bindings:
            p, e = binding.pattern, binding.entry
            if p.resource_type is not resource_type:
                continue
            if e.host not in (host, WILDCARD_HOST) or e.principal not in (who, WILDCARD_PRINCIPAL):
                continue
            if e.operation is not operation and e.operation is not AclOperation.ALL:
                continue
            if e.permission_type is AclPermissionType.DENY:
                if p.pattern_type is PatternType.LITERAL and p.name == WILDCARD_RESOURCE:
                    return False
                deny[p.pattern_type].add(p.name)
            elif p.pattern_type is PatternType.LITERAL and p.name == WILDCARD_RESOURCE:
                wildcard_allowed = True
            else:
                allow[p.pattern_type].add(p.name)
        if wildcard_allowed:
            return True
        for pattern_type, names in allow.items():
            for name in names:
                if pattern_type is PatternType.LITERAL and name in deny[PatternType.LITERAL]:
                    continue
                if not any(name[:i] in deny[PatternType.PREFIXED] for i in range(1, len(name) + 1)):
                    return True
        return False

    def describe(self, acl_filter: AclBindingFilter) -> list[AclBinding]:
        """The bindings ``acl_filter`` matches (DescribeAcls), in the order they were created."""
        return [b for b in self.bindings if acl_filter.matches(b)]
