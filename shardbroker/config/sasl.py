"""One SASL listener's settings, and the check that refuses what shardbroker cannot serve.

Each row may be set per listener (Kafka's ``listener.name.<listener>.<name>``, the listener's
name in lower case), which wins over the top-level row. ``sasl.enabled.mechanisms`` defaults to
Kafka's GSSAPI, which is not supported (no Kerberos): a SASL listener whose enabled mechanisms
include it, or any name other than PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER, stops the
start with a message naming the property (a deviation: Kafka would start and serve GSSAPI).
PLAIN's users are a TOML table (``[sasl.plain.users]`` or ``[listener.name.<l>.sasl.plain.users]``,
``alice = "password"``): the listener's table, when set, replaces the top-level one, as Kafka's
listener-prefixed JAAS configuration does. Enabling PLAIN without any user is refused too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, TypeVar

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    CONNECTIONS_MAX_REAUTH_MS,
    OAUTHBEARER_ALLOWABLE_CLOCK_SKEW_MS,
    OAUTHBEARER_PRINCIPAL_CLAIM_NAME,
    OAUTHBEARER_REQUIRED_SCOPE,
    OAUTHBEARER_SCOPE_CLAIM_NAME,
    SASL_ENABLED_MECHANISMS,
    SASL_PLAIN_USERS,
)
from shardbroker.config.config_def import ConfigError, ConfigKey
from shardbroker.config.listeners import LISTENER_PREFIX

__all__ = ["SUPPORTED_MECHANISMS", "SaslListenerConfig", "check_sasl_listeners", "sasl_listener_config"]

T = TypeVar("T")

SUPPORTED_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(frozen=True, slots=True)
class SaslListenerConfig:
    enabled_mechanisms: tuple[str, ...]
    max_reauth_ms: int
    plain_users: Mapping[str, str]
    oauthbearer_principal_claim_name: str
    oauthbearer_scope_claim_name: str
    oauthbearer_required_scope: tuple[str, ...]
    oauthbearer_allowable_clock_skew_ms: int


def sasl_listener_config(config: BrokerConfig, listener: str) -> SaslListenerConfig:
    """The SASL settings of ``listener``; ConfigError if it enables a mechanism we cannot serve."""
    mechanisms = config.listener_value(SASL_ENABLED_MECHANISMS, listener) or ()
    where = f"{LISTENER_PREFIX}{listener.lower()}.{SASL_ENABLED_MECHANISMS.name}"
    unsupported = [name for name in mechanisms if name not in SUPPORTED_MECHANISMS]
    if unsupported:
        default = " (Kafka's default)" if unsupported == ["GSSAPI"] else ""
        raise ConfigError(
            f"SASL listener {listener} enables {', '.join(unsupported)}{default}, which shardbroker does"
            f" not support: set {SASL_ENABLED_MECHANISMS.name} (or {where}) to some of"
            f" {', '.join(SUPPORTED_MECHANISMS)}"
        )
    users = config.listener_value(SASL_PLAIN_USERS, listener) or {}
    if "PLAIN" in mechanisms and not users:
        raise ConfigError(
            f"SASL listener {listener} enables PLAIN but has no users: set the table"
            f" [{SASL_PLAIN_USERS.name}] or [{LISTENER_PREFIX}{listener.lower()}.{SASL_PLAIN_USERS.name}]"
        )
    return SaslListenerConfig(
        enabled_mechanisms=tuple(mechanisms),
        max_reauth_ms=_get(config, CONNECTIONS_MAX_REAUTH_MS, listener),
        plain_users=users,
        oauthbearer_principal_claim_name=_get(config, OAUTHBEARER_PRINCIPAL_CLAIM_NAME, listener),
        oauthbearer_scope_claim_name=_get(config, OAUTHBEARER_SCOPE_CLAIM_NAME, listener),
        oauthbearer_required_scope=_get(config, OAUTHBEARER_REQUIRED_SCOPE, listener),
        oauthbearer_allowable_clock_skew_ms=_get(config, OAUTHBEARER_ALLOWABLE_CLOCK_SKEW_MS, listener),
    )


def _get(config: BrokerConfig, key: ConfigKey[T], listener: str) -> T:
    value = config.listener_value(key, listener)
    assert value is not None, f"{key.name} has a default"
    return value


def check_sasl_listeners(config: BrokerConfig, listeners: Iterable[tuple[str, str]]) -> None:
    """At start: every (listener name, security protocol) with SASL must have settings we can
    serve (ConfigError naming the property otherwise)."""
    for listener, protocol in listeners:
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            sasl_listener_config(config, listener)
