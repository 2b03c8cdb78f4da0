"""What AlterConfigs and IncrementalAlterConfigs share: resource checks, then one controller call.

Topic resources go to the controller's ``alter_configs`` op, which validates names and values
(INVALID_CONFIG 40 with LogConfig's message) and answers UNKNOWN_TOPIC_OR_PARTITION (3) for an
unknown topic. Broker resources are refused with INVALID_REQUEST (42) and a message: shardbroker's
broker configs are static (read at start; DescribeConfigs reports them read-only), which is the
answer Kafka gives for a broker config that cannot be updated dynamically. Other resource types
are INVALID_REQUEST too. A resource listed twice is INVALID_REQUEST (Kafka: "Duplicate resource").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.handlers._common import RESOURCE_BROKER, RESOURCE_TOPIC, controller_items
from shardbroker.protocol.errors import ErrorCode

_R = TypeVar("_R")


class _Resource(Protocol):
    resource_type: int
    resource_name: str


BROKER_REFUSAL = (
    "Broker configs cannot be altered: shardbroker reads them at start (see DescribeConfigs: "
    "read-only); change the config file or flags and restart"
)


@dataclass(slots=True)
class Outcome:
    resource_type: int
    resource_name: str
    error_code: int = 0
    error_message: str | None = None


@dataclass(slots=True)
class Change:
    """One resource to alter: its ops as the controller takes them, or why it is refused."""

    resource_type: int
    resource_name: str
    ops: list[dict[str, Any]]
    refusal: tuple[ErrorCode, str] | None = None


async def alter(
    ctx: RequestContext, changes: list[Change], *, replace: bool, validate_only: bool
) -> list[Outcome]:
    keys = [(c.resource_type, c.resource_name) for c in changes]
    outcomes: list[Outcome | None] = []
    asked: list[dict[str, Any]] = []
    for change in changes:
        key = (change.resource_type, change.resource_name)
        refusal = change.refusal
        if refusal is None and keys.count(key) > 1:
            refusal = ErrorCode.INVALID_REQUEST, f"Duplicate resource {change.resource_name!r} in the request"
        if refusal is None and change.resource_type == RESOURCE_BROKER:
            refusal = ErrorCode.INVALID_REQUEST, BROKER_REFUSAL
        if refusal is None and change.resource_type != RESOURCE_TOPIC:
            refusal = (
                ErrorCode.INVALID_REQUEST,
                f"Resource type {change.resource_type} is not supported: only topic configs can be altered",
            )
        if refusal is not None:
            outcomes.append(Outcome(change.resource_type, change.resource_name, refusal[0], refusal[1]))
            continue
        outcomes.append(None)
        asked.append({"name": change.resource_name, "replace": replace, "ops": change.ops})
    args = {"resources": asked, "validate_only": validate_only}
    answers = iter(await controller_items(ctx, "alter_configs", args, "resources", len(asked), 30.0))
    out = []
    for change, outcome in zip(changes, outcomes, strict=True):
        if outcome is None:
            answer = next(answers)
            outcome = Outcome(
                change.resource_type,
                change.resource_name,
                int(answer.get("error_code", 0)),
                answer.get("error_message"),
            )
        out.append(outcome)
    return out


def responses(make: Callable[..., _R], outcomes: Iterable[Outcome]) -> list[_R]:
    """One response item per outcome (both APIs' items have these four fields)."""
    return [
        make(
            error_code=o.error_code,
            error_message=o.error_message,
            resource_type=o.resource_type,
            resource_name=o.resource_name,
        )
        for o in outcomes
    ]


def error_responses(
    make: Callable[..., _R], resources: Iterable[_Resource], code: ErrorCode, message: str
) -> list[_R]:
    """Every resource of a request answered with the same error."""
    return responses(make, (Outcome(r.resource_type, r.resource_name, code, message) for r in resources))
