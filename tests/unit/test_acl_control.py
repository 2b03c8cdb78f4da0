"""ACL records and ops in the metadata log (control/acl_control.py via controller_state)."""

from __future__ import annotations

import itertools
import uuid

from shardbroker.control.controller_state import ControllerState, OpContext, handle, replay
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


def _ids() -> OpContext:
    counter = itertools.count(1)
    return OpContext(workers=2, new_acl_id=lambda: uuid.UUID(int=next(counter)))


def _binding(name: str, op: AclOperation = AclOperation.READ, principal: str = "User:alice") -> AclBinding:
    return AclBinding(
        ResourcePattern(ResourceType.TOPIC, name, PatternType.LITERAL),
        AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW),
    )


def test_create_describe_delete_and_replay() -> None:
    ctx = _ids()
    a, b = _binding("t"), _binding("u", AclOperation.WRITE)
    bad = {**_binding("v").to_record(), "principal": "nobody"}
    out = handle(
        ControllerState(),
        "create_acls",
        {"creations": [a.to_record(), bad, b.to_record(), a.to_record()]},
        ctx,
    )
    codes = [r["error_code"] for r in out.result["results"]]
    assert codes == [0, ErrorCode.INVALID_REQUEST, 0, 0]
    assert "no colon" in out.result["results"][1]["error_message"]
    assert list(out.state.acls.values()) == [a, b]  # the duplicate made no record
    assert len(out.records) == 2
    assert out.state.image("c", ()).acls == (a, b)
    assert replay(out.records) == out.state
    assert ControllerState.from_dict(out.state.to_dict()) == out.state

    filters = [
        AclBindingFilter(name="t").to_record(),
        AclBindingFilter().to_record(),
        {**AclBindingFilter().to_record(), "operation": 0},
    ]
    gone = handle(out.state, "delete_acls", {"filters": filters}, ctx)
    results = gone.result["results"]
    assert [AclBinding.from_record(r) for r in results[0]["matching"]] == [a]
    assert [AclBinding.from_record(r) for r in results[1]["matching"]] == [b]  # a was already removed
    assert results[2]["error_code"] == ErrorCode.INVALID_REQUEST
    assert gone.state.acls == {}
    assert replay(out.records + gone.records) == gone.state


def test_malformed_op_changes_nothing() -> None:
    out = handle(ControllerState(), "create_acls", {"creations": [{"name": "t"}]}, _ids())
    assert out.result["error_code"] == ErrorCode.INVALID_REQUEST
    assert out.records == [] and out.state.acls == {}
