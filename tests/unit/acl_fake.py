"""The fake broker (tests/unit/kafka_fake.py) serving CreateAcls, DescribeAcls and DeleteAcls with
the controller's own ACL operations (control/acl_control.py) and filters (security/acl.py), for
the admin client's and the ``acls`` CLI's unit tests. ``refuse`` answers every call with that
error instead (CLUSTER_AUTHORIZATION_FAILED, SECURITY_DISABLED)."""

from __future__ import annotations

from typing import Any

from shardbroker.broker.handlers.create_acls import creation_record
from shardbroker.broker.handlers.delete_acls import _matching as matching_acl
from shardbroker.broker.handlers.describe_acls import acl_filter
from shardbroker.control import acl_control
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.security.acl import AclBinding
from tests.unit.kafka_fake import FakeBroker

__all__ = ["AclFake"]


class AclFake:
    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        self.acls: dict[str, AclBinding] = {}
        self.refuse = 0
        fake.versions.update({29: (0, 3), 30: (0, 3), 31: (0, 3)})
        fake.handlers.update({29: self.describe, 30: self.create, 31: self.delete})

    @property
    def bindings(self) -> list[AclBinding]:
        return list(self.acls.values())

    def _apply(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self.acls = acl_control.apply_acl_record(self.acls, record)

    def create(self, version: int, request: Any) -> Message:
        R = m.CreateAclsResponse.AclCreationResult
        if self.refuse:
            return m.CreateAclsResponse(results=[R(error_code=self.refuse) for _ in request.creations])
        creations = [AclBinding.from_record(creation_record(c)) for c in request.creations]
        records, results = acl_control.create_acls(self.acls, creations)
        self._apply(records)
        return m.CreateAclsResponse(results=[R(**r) for r in results])

    def describe(self, version: int, request: Any) -> Message:
        R = m.DescribeAclsResponse
        if self.refuse:
            return R(error_code=self.refuse, error_message="refused")
        wanted = acl_filter(request)
        by_pattern: dict[Any, list[Any]] = {}
        for b in self.bindings:
            if wanted.matches(b):
                e = b.entry
                by_pattern.setdefault(b.pattern, []).append(
                    R.AclDescription(
                        principal=e.principal,
                        host=e.host,
                        operation=e.operation,
                        permission_type=e.permission_type,
                    )
                )
        return R(
            resources=[
                R.DescribeAclsResource(
                    resource_type=p.resource_type,
                    resource_name=p.name,
                    pattern_type=p.pattern_type,
                    acls=acls,
                )
                for p, acls in by_pattern.items()
            ]
        )

    def delete(self, version: int, request: Any) -> Message:
        R = m.DeleteAclsResponse
        if self.refuse:
            return R(
                filter_results=[R.DeleteAclsFilterResult(error_code=self.refuse) for _ in request.filters]
            )
        records, results = acl_control.delete_acls(self.acls, [acl_filter(f) for f in request.filters])
        self._apply(records)
        out = [
            R.DeleteAclsFilterResult(
                error_code=r["error_code"],
                error_message=r["error_message"],
                matching_acls=[matching_acl(rec) for rec in r["matching"]],
            )
            for r in results
        ]
        return R(filter_results=out)
