"""Client metrics resources (KIP-714): the configs ``kafka-configs --entity-type client-metrics`` sets.

A resource is a named subscription with three configs (Kafka's ClientMetricsConfigs):

- ``metrics``: a comma-separated list of metric name prefixes the matching clients should push
  (empty: none; ``*`` alone: all, sent to the client as one empty prefix);
- ``interval.ms``: how often they push, 100 to 3,600,000 (default 300,000: five minutes);
- ``match``: comma-separated ``<attribute>=<regex>`` selectors over client_instance_id,
  client_id, client_software_name, client_software_version, client_source_address and
  client_source_port; every selector must fully match (RE2 syntax, compiled by the worker:
  broker/client_metrics.py); none means every client.

Pure: the controller checks names and values here before it records a resource, and every worker
reads the parsed form from its metadata image. Errors are Kafka's: an empty resource name, an
unknown config name or an interval out of range INVALID_REQUEST; a value that is not an integer
or a malformed selector INVALID_CONFIG (``ClientMetricsConfigError.error_code`` says which).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "ALL_METRICS",
    "CONFIG_NAMES",
    "INTERVAL_MS",
    "INTERVAL_MS_DEFAULT",
    "LIST_CONFIGS",
    "MATCH",
    "MATCH_ATTRIBUTES",
    "METRICS",
    "ClientMetricsConfigError",
    "Subscription",
    "parse_subscription",
    "split_list",
]

METRICS: Final = "metrics"
INTERVAL_MS: Final = "interval.ms"
MATCH: Final = "match"
CONFIG_NAMES: Final = (METRICS, INTERVAL_MS, MATCH)
#: The LIST configs (APPEND and SUBTRACT apply to them).
LIST_CONFIGS: Final = frozenset({METRICS, MATCH})
#: ``metrics=*``: every metric.
ALL_METRICS: Final = "*"
#: Kafka's ClientMetricsConfigs.INTERVAL_MS_DEFAULT, and its bounds.
INTERVAL_MS_DEFAULT: Final = 5 * 60 * 1000
MIN_INTERVAL_MS: Final = 100
MAX_INTERVAL_MS: Final = 3_600_000
MATCH_ATTRIBUTES: Final = (
    "client_instance_id",
    "client_id",
    "client_software_name",
    "client_software_version",
    "client_source_address",
    "client_source_port",
)


class ClientMetricsConfigError(ValueError):
    """A client metrics resource refused, with Kafka's error code and message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = code


@dataclass(frozen=True, slots=True)
class Subscription:
    """One resource parsed: its metric prefixes, push interval and (attribute, regex) selectors."""

    name: str
    metrics: tuple[str, ...]
    interval_ms: int
    match: tuple[tuple[str, str], ...]


def split_list(value: str) -> list[str]:
    """A Kafka LIST value: comma-separated, items trimmed, empty items dropped."""
    return [item.strip() for item in value.split(",") if item.strip()]


def _interval(raw: str | None) -> int:
    if raw is None:
        return INTERVAL_MS_DEFAULT
    try:
        value = int(raw.strip())
    except ValueError:
        raise ClientMetricsConfigError(
            ErrorCode.INVALID_CONFIG,
            f"Invalid value {raw} for configuration {INTERVAL_MS}: Not a number of type INT",
        ) from None
    if not MIN_INTERVAL_MS <= value <= MAX_INTERVAL_MS:
        raise ClientMetricsConfigError(
            ErrorCode.INVALID_REQUEST,
            f"Invalid value {value} for {INTERVAL_MS}, interval must be between 100 and 3600000 (1 hour)",
        )
    return value


def _selector(item: str) -> tuple[str, str]:
    parts = item.split("=")
    if len(parts) != 2 or parts[0].strip() not in MATCH_ATTRIBUTES:
        raise ClientMetricsConfigError(ErrorCode.INVALID_CONFIG, f"Illegal client matching pattern: {item}")
    return parts[0].strip(), parts[1].strip()


def parse_subscription(name: str, configs: Mapping[str, str]) -> Subscription:
    """The resource ``name`` with ``configs`` parsed, or `ClientMetricsConfigError` (Kafka's
    ``ClientMetricsConfigs.validate``; the regexes themselves are compiled by the worker)."""
    if not name:
        raise ClientMetricsConfigError(ErrorCode.INVALID_REQUEST, "Subscription name can't be empty")
    for key in configs:
        if key not in CONFIG_NAMES:
            raise ClientMetricsConfigError(
                ErrorCode.INVALID_REQUEST, f"Unknown client metrics configuration: {key}"
            )
    selectors = tuple(_selector(item) for item in split_list(configs.get(MATCH, "")))
    return Subscription(
        name=name,
        metrics=tuple(split_list(configs.get(METRICS, ""))),
        interval_ms=_interval(configs.get(INTERVAL_MS)),
        match=selectors,
    )
