"""The admin client's ACL calls, as Kafka's Admin.createAcls / describeAcls / deleteAcls make
them: CreateAcls, DescribeAcls and DeleteAcls (v1+: resource pattern types), at any broker (which
forwards changes to the controller and answers once every worker enforces them). Bindings and
filters are security/acl.py's types, so what ``kafka-acls`` would print is their ``str()``.

Errors as the other API families: a refusal of the whole request (DescribeAcls'
SECURITY_DISABLED or CLUSTER_AUTHORIZATION_FAILED) raises :class:`KafkaApiError`; CreateAcls and
DeleteAcls answer per binding or filter (Kafka fails each future alone), so they return a
mapping to None / the bindings removed, or the item's error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shardbroker.client.admin_cluster import ClusterAdmin
from shardbroker.client.connection import KafkaApiError
from shardbroker.protocol import messages as m
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

__all__ = ["EVERY_ACL", "AclAdmin"]

#: Kafka's AclBindingFilter.ANY: every binding.
EVERY_ACL = AclBindingFilter()


def _binding(
    resource_type: int,
    name: str,
    pattern_type: int,
    principal: str,
    host: str,
    operation: int,
    permission: int,
) -> AclBinding:
    return AclBinding(
        ResourcePattern(ResourceType.from_code(resource_type), name, PatternType.from_code(pattern_type)),
        AccessControlEntry(
            principal, host, AclOperation.from_code(operation), AclPermissionType.from_code(permission)
        ),
    )


def _filter_fields(f: AclBindingFilter) -> dict[str, Any]:
    """A filter as DescribeAcls' request and DeleteAcls' filters carry it (the same fields)."""
    return {
        "resource_type_filter": f.resource_type,
        "resource_name_filter": f.name,
        "pattern_type_filter": f.pattern_type,
        "principal_filter": f.principal,
        "host_filter": f.host,
        "operation": f.operation,
        "permission_type": f.permission_type,
    }


class AclAdmin(ClusterAdmin):
    """CreateAcls, DescribeAcls, DeleteAcls."""

    def create_acls(self, bindings: Sequence[AclBinding]) -> dict[AclBinding, KafkaApiError | None]:
        """Create ``bindings``; per binding None (created, or equal to one that exists) or its
        error (INVALID_REQUEST with Kafka's reason, SECURITY_DISABLED, CLUSTER_AUTHORIZATION_FAILED)."""
        Creation = m.CreateAclsRequest.AclCreation
        request = m.CreateAclsRequest(
            creations=[
                Creation(
                    resource_type=b.pattern.resource_type,
                    resource_name=b.pattern.name,
                    resource_pattern_type=b.pattern.pattern_type,
                    principal=b.entry.principal,
                    host=b.entry.host,
                    operation=b.entry.operation,
                    permission_type=b.entry.permission_type,
                )
                for b in bindings
            ]
        )
        conn = self._any_conn()
        response: m.CreateAclsResponse = conn.send(request, conn.version_for(request.API_KEY, "CreateAcls"))
        if len(response.results) != len(bindings):
            raise KafkaApiError(
                ErrorCode.UNKNOWN_SERVER_ERROR,
                f"CreateAcls answered {len(response.results)} of {len(bindings)} creations",
            )
        return {
            b: self._result_error(r.error_code, r.error_message, f"CreateAcls {b}")
            for b, r in zip(bindings, response.results, strict=True)
        }

    def describe_acls(self, acl_filter: AclBindingFilter = EVERY_ACL) -> list[AclBinding]:
        """The bindings ``acl_filter`` matches, in the broker's order; KafkaApiError when refused."""
        request = m.DescribeAclsRequest(**_filter_fields(acl_filter))
        conn = self._any_conn()
        response: m.DescribeAclsResponse = conn.send(
            request, conn.version_for(request.API_KEY, "DescribeAcls")
        )
        error = self._result_error(response.error_code, response.error_message, "DescribeAcls")
        if error is not None:
            raise error
        return [
            _binding(
                r.resource_type,
                r.resource_name,
                r.pattern_type,
                a.principal,
                a.host,
                a.operation,
                a.permission_type,
            )
            for r in response.resources
            for a in r.acls
        ]

    def delete_acls(
        self, filters: Sequence[AclBindingFilter]
    ) -> dict[AclBindingFilter, list[AclBinding] | KafkaApiError]:
        """Delete what each filter matches; per filter the bindings it removed (a binding two
        filters match is listed under the first), or its error (a filter's, or the first error
        of a binding it matched, as Kafka's FilterResults)."""
        request = m.DeleteAclsRequest(
            filters=[m.DeleteAclsRequest.DeleteAclsFilter(**_filter_fields(f)) for f in filters]
        )
        conn = self._any_conn()
        response: m.DeleteAclsResponse = conn.send(request, conn.version_for(request.API_KEY, "DeleteAcls"))
        if len(response.filter_results) != len(filters):
            raise KafkaApiError(
                ErrorCode.UNKNOWN_SERVER_ERROR,
                f"DeleteAcls answered {len(response.filter_results)} of {len(filters)} filters",
            )
        out: dict[AclBindingFilter, list[AclBinding] | KafkaApiError] = {}
        for f, r in zip(filters, response.filter_results, strict=True):
            error = self._result_error(r.error_code, r.error_message, "DeleteAcls")
            matched = [
                (
                    _binding(
                        a.resource_type,
                        a.resource_name,
                        a.pattern_type,
                        a.principal,
                        a.host,
                        a.operation,
                        a.permission_type,
                    ),
                    self._result_error(a.error_code, a.error_message, "DeleteAcls"),
                )
                for a in r.matching_acls
            ]
            error = error or next((e for _, e in matched if e is not None), None)
            out.setdefault(f, error if error is not None else [b for b, _ in matched])
        return out
