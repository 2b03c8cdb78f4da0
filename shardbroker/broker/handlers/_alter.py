"""What AlterConfigs and IncrementalAlterConfigs share: resource checks, then one controller call.

Topic resources go to the controller's ``alter_configs`` op, which validates names and values
(INVALID_CONFIG 40 with LogConfig's message) and answers UNKNOWN_TOPIC_OR_PARTITION (3) for an
unknown topic. Other resource types are INVALID_REQUEST. A resource listed twice is
INVALID_REQUEST (Kafka: "Duplicate resource").

Broker resources (Kafka's dynamic broker configs): only the per-broker rows, the TLS key and
trust stores and their ``listener.name.<l>.`` forms, change without a restart; any other name is
INVALID_CONFIG "Cannot update these configs dynamically", and the cluster default (an empty
resource name) is INVALID_CONFIG "Cannot update these configs at default cluster level, broker id
must be specified", as Kafka answers. The resource name is any worker's node id, and the change
applies to every worker: they share one host and one set of listeners (Kafka would change that
broker only; a deviation). This worker first builds the resulting config and loads every TLS
listener's stores from it: a key store that does not load is INVALID_CONFIG with the reason and
nothing changes; then the controller's ``alter_broker_configs`` op records the whole new set in
the metadata log (kept over restarts), and every worker's listener reloads its TLS context for
new connections when the image arrives. ``validate_only`` stops after the checks.

Client metrics resources (KIP-714, ``kafka-configs --entity-type client-metrics``) go to the
controller's ``alter_client_metrics`` op (control/client_metrics_control.py: Kafka's checks and
errors); this worker first compiles every ``match`` regex it sends (INVALID_CONFIG "Illegal
client matching pattern" for one that does not compile). Deleting every config removes the
resource.

Authorization, as Kafka, after the request's own checks (duplicates, null values) and before
anything else: ALTER_CONFIGS on the CLUSTER for a broker resource (CLUSTER_AUTHORIZATION_FAILED),
on the topic for a topic (TOPIC_AUTHORIZATION_FAILED, before its existence is checked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from shardbroker.broker.client_metrics import check_match_value
from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.handlers._common import (
    RESOURCE_BROKER,
    RESOURCE_CLIENT_METRICS,
    RESOURCE_TOPIC,
    config_refusal,
    controller_items,
)
from shardbroker.broker.tls import TlsConfigError, TlsSettings
from shardbroker.config.config_def import ConfigError
from shardbroker.config.config_ops import (
    apply_config_ops,
    check_dynamic_broker_configs,
    dynamic_broker_key,
    is_dynamic_list,
)
from shardbroker.metadata.client_metrics import MATCH, ClientMetricsConfigError
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

_R = TypeVar("_R")


class _Resource(Protocol):
    resource_type: int
    resource_name: str


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
    metrics_asked: list[dict[str, Any]] = []
    for change in changes:
        key = (change.resource_type, change.resource_name)
        refusal = change.refusal
        if refusal is None and keys.count(key) > 1:
            refusal = ErrorCode.INVALID_REQUEST, f"Duplicate resource {change.resource_name!r} in the request"
        if refusal is None:
            refusal = config_refusal(ctx, AclOperation.ALTER_CONFIGS, *key)
        if refusal is None and change.resource_type == RESOURCE_BROKER:
            outcomes.append(await _alter_broker(ctx, change, replace=replace, validate_only=validate_only))
            continue
        if refusal is None and change.resource_type == RESOURCE_CLIENT_METRICS:
            refusal = _client_metrics_refusal(change)
            if refusal is None:
                outcomes.append(None)
                metrics_asked.append({"name": change.resource_name, "replace": replace, "ops": change.ops})
                continue
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
    args = {"resources": metrics_asked, "validate_only": validate_only}
    metrics_answers = iter(
        await controller_items(ctx, "alter_client_metrics", args, "resources", len(metrics_asked), 30.0)
    )
    out = []
    for change, outcome in zip(changes, outcomes, strict=True):
        if outcome is None:
            answer = next(metrics_answers if change.resource_type == RESOURCE_CLIENT_METRICS else answers)
            outcome = Outcome(
                change.resource_type,
                change.resource_name,
                int(answer.get("error_code", 0)),
                answer.get("error_message"),
            )
        out.append(outcome)
    return out


def _client_metrics_refusal(change: Change) -> tuple[ErrorCode, str] | None:
    """The regexes of every ``match`` value sent compile (the controller checks the rest)."""
    try:
        for op in change.ops:
            if op["name"] == MATCH and op["value"] is not None:
                check_match_value(str(op["value"]))
    except ClientMetricsConfigError as exc:
        return ErrorCode(exc.error_code), str(exc)
    return None


async def _alter_broker(
    ctx: RequestContext, change: Change, *, replace: bool, validate_only: bool
) -> Outcome:
    state = ctx.worker
    name = change.resource_name

    def outcome(code: ErrorCode, message: str | None = None) -> Outcome:
        return Outcome(change.resource_type, name, int(code), message)

    names = [str(op["name"]) for op in change.ops]
    if not name:
        if not names:
            return outcome(ErrorCode.NONE)
        return outcome(
            ErrorCode.INVALID_CONFIG,
            "Cannot update these configs at default cluster level, broker id must be specified: "
            + ", ".join(sorted(names)),
        )
    nodes = {str(b.node_id) for b in state.image.brokers} | {str(state.node_id)}
    if name not in nodes:
        return outcome(
            ErrorCode.INVALID_REQUEST,
            f"Unexpected broker id {name!r}: this broker's nodes are {sorted(nodes)}",
        )
    config = state.config
    effective = {
        n: config.properties.get(n) or (key.default or "")
        for n in names
        if (key := dynamic_broker_key(n)) is not None
    }
    try:
        new = apply_config_ops(
            {} if replace else state.image.broker_configs,
            change.ops,
            is_list=is_dynamic_list,
            effective=effective,
        )
        check_dynamic_broker_configs(new)
        candidate = config.with_dynamic(new)
        for endpoint in candidate.listeners:
            if endpoint.uses_tls:
                TlsSettings.load(candidate.for_listener(endpoint.listener))
    except (ConfigError, TlsConfigError) as exc:
        return outcome(ErrorCode.INVALID_CONFIG, str(exc))
    args = {"ops": change.ops, "replace": replace, "validate_only": validate_only, "effective": effective}
    try:
        await state.channel.request("alter_broker_configs", args, timeout=30.0)
    except ControllerUnavailable as exc:
        return outcome(ErrorCode.REQUEST_TIMED_OUT, str(exc))
    except ControllerRequestError as exc:
        return outcome(ErrorCode(exc.error_code), str(exc))
    return outcome(ErrorCode.NONE)


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
