"""ACL bindings in the metadata log: their records, CreateAcls and DeleteAcls (Kafka's
AclControlManager), pure.

Each binding has an id (a UUID, as Kafka's AccessControlEntryRecord) so a removal names exactly
one binding. Records::

    {"type": "acl", "id", "resource_type", "name", "pattern_type", "principal", "host",
     "operation", "permission_type"}                  (codes as on the wire) add one binding
    {"type": "remove_acl", "id"}                       remove one binding

Semantics are Kafka's: each creation is checked on its own (security/acl.py ``binding_error``,
answered INVALID_REQUEST) and a binding equal to one that exists is a success without a record;
each deletion filter is checked (INVALID_REQUEST) and removes every binding it matches that an
earlier filter of the same request did not already remove, answering the bindings it removed.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclBinding, AclBindingFilter, binding_error, filter_error

__all__ = ["ADD_RECORD", "REMOVE_RECORD", "Acls", "apply_acl_record", "create_acls", "delete_acls"]

ADD_RECORD: Final = "acl"
REMOVE_RECORD: Final = "remove_acl"

#: binding id -> binding, in creation order (the order DescribeAcls answers in).
Acls = Mapping[str, AclBinding]


def apply_acl_record(acls: Acls, record: Mapping[str, Any]) -> dict[str, AclBinding]:
    """The bindings after one of this module's records (a new mapping; ``acls`` is unchanged)."""
    out = dict(acls)
    acl_id = str(record["id"])
    if record["type"] == ADD_RECORD:
        if acl_id in out:
            raise ValueError(f"ACL id {acl_id} already exists")
        out[acl_id] = AclBinding.from_record(dict(record))
    elif record["type"] == REMOVE_RECORD:
        if out.pop(acl_id, None) is None:
            raise ValueError(f"removal of an ACL that does not exist: {acl_id}")
    else:
        raise ValueError(f"not an ACL record: {record['type']!r}")
    return out


def _ok() -> dict[str, Any]:
    return {"error_code": 0, "error_message": None}


def _refused(message: str) -> dict[str, Any]:
    return {"error_code": int(ErrorCode.INVALID_REQUEST), "error_message": message}


def create_acls(
    acls: Acls, creations: list[AclBinding], new_id: Callable[[], uuid.UUID] = uuid.uuid4
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """CreateAcls against ``acls``: (records, one result per creation, in order)."""
    existing = set(acls.values())
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for binding in creations:
        refused = binding_error(binding)
        if refused is not None:
            results.append(_refused(refused))
            continue
        if binding not in existing:
            existing.add(binding)
            records.append({"type": ADD_RECORD, "id": str(new_id()), **binding.to_record()})
        results.append(_ok())
    return records, results


def delete_acls(
    acls: Acls, filters: list[AclBindingFilter]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """DeleteAcls against ``acls``: (records, one result per filter with the removed bindings as
    ``matching``: a list of their records)."""
    removed: set[str] = set()
    records: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for acl_filter in filters:
        refused = filter_error(acl_filter)
        if refused is not None:
            results.append({**_refused(refused), "matching": []})
            continue
        matching = []
        for acl_id, binding in acls.items():
            if acl_id not in removed and acl_filter.matches(binding):
                removed.add(acl_id)
                records.append({"type": REMOVE_RECORD, "id": acl_id})
                matching.append(binding.to_record())
        results.append({**_ok(), "matching": matching})
    return records, results
