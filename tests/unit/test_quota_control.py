"""Client quota records and AlterClientQuotas (control/quota_control.py via controller_state), and
DescribeClientQuotas' filter (metadata/client_quotas.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from shardbroker.control.controller_state import ControllerState, OpContext, handle, replay
from shardbroker.metadata.client_quotas import DescribeError, describe_client_quotas
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.errors import ErrorCode

CTX = OpContext(workers=2)
INVALID = int(ErrorCode.INVALID_REQUEST)


def _entry(entity: list[tuple[str, str | None]], *ops: tuple[str, float | None]) -> dict[str, Any]:
    return {
        "entity": [{"entity_type": t, "entity_name": n} for t, n in entity],
        "ops": [{"key": k, "value": 0.0 if v is None else v, "remove": v is None} for k, v in ops],
    }


def _alter(state: ControllerState, *entries: dict[str, Any], validate_only: bool = False) -> Any:
    return handle(
        state, "alter_client_quotas", {"entries": list(entries), "validate_only": validate_only}, CTX
    )


def test_set_change_and_remove_replay_to_the_same_state() -> None:
    first = _alter(
        ControllerState(),
        _entry([("user", "alice")], ("producer_byte_rate", 1e6), ("request_percentage", 50.5)),
        _entry([("user", None), ("client-id", "app")], ("consumer_byte_rate", 2e6)),
    )
    assert [r["error_code"] for r in first.result["results"]] == [0, 0]
    assert first.state.client_quotas == {
        (("user", "alice"),): {"producer_byte_rate": 1e6, "request_percentage": 50.5},
        (("client-id", "app"), ("user", None)): {"consumer_byte_rate": 2e6},
    }
    # Same value again: nothing written. Removing the last key removes the entity.
    again = _alter(first.state, _entry([("user", "alice")], ("producer_byte_rate", 1e6)))
    assert again.records == []
    second = _alter(
        first.state,
        _entry([("user", "alice")], ("request_percentage", None), ("producer_byte_rate", 5e5)),
        _entry([("client-id", "app"), ("user", None)], ("consumer_byte_rate", None)),
    )
    assert second.state.client_quotas == {(("user", "alice"),): {"producer_byte_rate": 5e5}}
    assert replay(first.records + second.records) == second.state
    assert ControllerState.from_dict(second.state.to_dict()) == second.state
    image = second.state.image("cluster", ())
    assert MetadataImage.from_dict(image.to_dict()) == image


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_entry([], ("producer_byte_rate", 1.0)), "Invalid empty client quota entity"),
        (_entry([("group", "g")], ("producer_byte_rate", 1.0)), "Unhandled client quota entity type: group"),
        (_entry([("user", "a"), ("user", "b")], ("producer_byte_rate", 1.0)), "duplicate entity entry user"),
        (_entry([("user", "")], ("producer_byte_rate", 1.0)), "Empty user not supported"),
        (_entry([("ip", "1.2.3.4")], ("connection_creation_rate", 1.0)), "IP quotas"),
        (_entry([("user", "a")], ("bytes_rate", 1.0)), "Invalid configuration key bytes_rate"),
        (_entry([("user", "a")], ("producer_byte_rate", 0.0)), "greater than 0"),
        (_entry([("user", "a")], ("producer_byte_rate", -5.0)), "greater than 0"),
        (_entry([("user", "a")], ("request_percentage", math.nan)), "finite number"),
        (_entry([("user", "a")], ("request_percentage", math.inf)), "finite number"),
        (_entry([("user", "a")], ("producer_byte_rate", 1e300)), "must be a Long value"),
        (_entry([("user", "a")], ("consumer_byte_rate", 1.5)), "must be a Long value"),
        (
            _entry([("user", "a")], ("producer_byte_rate", 1.0), ("producer_byte_rate", 2.0)),
            "Duplicate quota key producer_byte_rate",
        ),
    ],
)
def test_refusals_store_nothing_of_the_entity(entry: dict[str, Any], message: str) -> None:
    good = _entry([("client-id", "ok")], ("producer_byte_rate", 1e6))
    out = _alter(ControllerState(), entry, good)
    refused, accepted = out.result["results"]
    assert refused["error_code"] == INVALID and message in refused["error_message"]
    assert accepted == {"error_code": 0, "error_message": None}
    assert out.state.client_quotas == {(("client-id", "ok"),): {"producer_byte_rate": 1e6}}


def test_a_refused_key_keeps_the_entitys_valid_ones_out_too() -> None:
    out = _alter(
        ControllerState(), _entry([("user", "a")], ("producer_byte_rate", 1e6), ("request_percentage", 0.0))
    )
    assert out.result["results"][0]["error_code"] == INVALID
    assert out.records == []


def test_an_entity_named_twice_is_refused_both_times() -> None:
    out = _alter(
        ControllerState(),
        _entry([("user", "a"), ("client-id", "c")], ("producer_byte_rate", 1e6)),
        _entry([("client-id", "c"), ("user", "a")], ("consumer_byte_rate", 1e6)),
    )
    assert [r["error_code"] for r in out.result["results"]] == [INVALID, INVALID]
    assert "Ignoring duplicate entity {client-id=c, user=a}" in out.result["results"][0]["error_message"]
    assert out.records == []


def test_validate_only_answers_without_records() -> None:
    out = _alter(ControllerState(), _entry([("user", "a")], ("producer_byte_rate", 1e6)), validate_only=True)
    assert out.result["results"] == [{"error_code": 0, "error_message": None}]
    assert out.records == [] and out.state.client_quotas == {}


def test_malformed_op_is_invalid_request_with_nothing_applied() -> None:
    out = handle(ControllerState(), "alter_client_quotas", {"entries": [{"entity": []}]}, CTX)
    assert out.result["error_code"] == INVALID and out.records == []


QUOTAS = {
    (("user", "alice"),): {"producer_byte_rate": 1.0},
    (("user", None),): {"producer_byte_rate": 2.0},
    (("client-id", "app"), ("user", "alice")): {"consumer_byte_rate": 3.0},
    (("client-id", None),): {"request_percentage": 4.0},
}


def _names(found: list[Any]) -> list[Any]:
    return [entity for entity, _ in found]


def test_describe_match_types_and_strict() -> None:
    assert len(describe_client_quotas(QUOTAS, [], False)) == 4
    assert describe_client_quotas(QUOTAS, [], True) == []
    exact = describe_client_quotas(QUOTAS, [("user", 0, "alice")], False)
    assert _names(exact) == [(("client-id", "app"), ("user", "alice")), (("user", "alice"),)]
    assert _names(describe_client_quotas(QUOTAS, [("user", 0, "alice")], True)) == [(("user", "alice"),)]
    assert _names(describe_client_quotas(QUOTAS, [("user", 1, None)], False)) == [(("user", None),)]
    specified = describe_client_quotas(QUOTAS, [("client-id", 2, None)], False)
    assert _names(specified) == [(("client-id", None),), (("client-id", "app"), ("user", "alice"))]
    assert dict(exact)[(("user", "alice"),)] == {"producer_byte_rate": 1.0}


@pytest.mark.parametrize(
    ("components", "code", "message"),
    [
        ([("", 0, "a")], ErrorCode.INVALID_REQUEST, "Invalid empty entity type."),
        ([("user", 0, "a"), ("user", 2, None)], ErrorCode.INVALID_REQUEST, "cannot appear more than once"),
        ([("group", 0, "a")], ErrorCode.UNSUPPORTED_VERSION, "Unsupported entity type group"),
        ([("user", 0, None)], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_EXACT, but set match string to null"),
        ([("user", 1, "a")], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_DEFAULT, but also specified"),
        ([("user", 2, "a")], ErrorCode.INVALID_REQUEST, "MATCH_TYPE_SPECIFIED, but also specified"),
        ([("user", 7, None)], ErrorCode.UNSUPPORTED_VERSION, "Unknown match type 7"),
        ([("ip", 2, None), ("user", 2, None)], ErrorCode.INVALID_REQUEST, "IP filter component"),
    ],
)
def test_describe_refuses_bad_filters(components: list[Any], code: ErrorCode, message: str) -> None:
    with pytest.raises(DescribeError, match=message) as raised:
        describe_client_quotas(QUOTAS, components, False)
    assert raised.value.code == code
