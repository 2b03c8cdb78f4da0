"""The broker's settings (``BrokerConfig``): server.properties names from a TOML file and flags.

``BrokerConfig.load(path, flags)`` reads a TOML file of Kafka server.properties names (dotted
keys quoted or not; values TOML strings, integers or booleans), then the command-line flags on
top. Every name must be a row of ``BROKER_CONFIGS`` (broker_properties.py): unknown names are
refused with the closest known one (a typo such as ``log.retension.ms`` silently falling back to
a default is the mistake operators make most with Kafka configs), and every value, set or
default, is converted by its row's validator when the config is built, so a bad value stops the
start with the property's name and its valid range.

Readers ask ``config.get(ROW)`` for a row's typed value (``find`` for a row without a default,
None when unset); the data directory, listeners, workers and topic defaults (``log_defaults``, a
``LogConfig`` from the ``log.*`` synonyms with Kafka's time-unit fallbacks) are attributes. One
data dir; listeners as config/listeners.py parses and checks them: worker i of a single host
listens on every listener's port + i. A listener's own settings (Kafka's
``listener.name.<listener>.<name>`` of a ``per_listener`` row) win over the top-level ones:
``config.for_listener(NAME).get(ROW)``. ``dynamic`` holds the per-broker rows changed by
AlterConfigs (from the metadata image): they win over the file, each at its own name, as Kafka's
DYNAMIC_BROKER_CONFIG over STATIC_BROKER_CONFIG (``with_dynamic``).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from shardbroker.config.broker_properties import (
    ADVERTISED_LISTENERS,
    BROKER_CONFIGS,
    GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS,
    GROUP_CONSUMER_MAX_HEARTBEAT_INTERVAL_MS,
    GROUP_CONSUMER_MAX_SESSION_TIMEOUT_MS,
    GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS,
    GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS,
    GROUP_CONSUMER_SESSION_TIMEOUT_MS,
    GROUP_COORDINATOR_REBALANCE_PROTOCOLS,
    LISTENER_SECURITY_PROTOCOL_MAP,
    LISTENERS,
    LOG_DIR,
    LOG_DIRS,
    METRICS_LISTEN,
    TABLE_ROWS,
    TOPIC_CONFIG_SYNONYMS,
    WORKERS,
)
from shardbroker.config.config_def import ConfigError, ConfigKey
from shardbroker.config.listeners import (
    Endpoint,
    advertised_endpoints,
    bind_endpoints,
    check_port_ranges,
    listener_prefix,
    split_listener_prefix,
)
from shardbroker.config.log_config import LogConfig
from shardbroker.config.ssl_context import LISTENER_SSL, METRICS_SSL, check_stores

__all__ = ["BrokerConfig", "ListenerConfig", "read_toml_properties"]

T = TypeVar("T")

_DATA_DIR: Final = LOG_DIRS.typed_default()
_LISTENERS: Final = bind_endpoints(LISTENERS.typed_default(), LISTENER_SECURITY_PROTOCOL_MAP.typed_default())
_METRICS: Final = METRICS_LISTEN.typed_default()


def _available_cores() -> int:
    # The cores this process may run on (taskset/cgroup cpusets), not the machine's: one worker
    # per core we can actually use.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _flatten_toml(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    # TOML reads ``log.dirs = "x"`` (unquoted) as the table {"log": {"dirs": "x"}}; Kafka's
    # dotted names come back by joining the keys, so quoted and unquoted spellings both work.
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        split = split_listener_prefix(name)
        if isinstance(value, Mapping) and (split[1] if split else name) in TABLE_ROWS:
            out[name] = json.dumps(value)  # a table-valued row (sasl.plain.users) keeps its table
        elif isinstance(value, Mapping):
            out.update(_flatten_toml(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int | float | str):  # a float: the DOUBLE rows (log.cleaner.*)
            out[name] = str(value)
        else:
            raise ConfigError(
                f"Invalid value {value!r} for configuration {name}: expected a string, number or boolean"
            )
    return out


def read_toml_properties(path: Path) -> dict[str, str]:
    """The properties of a TOML config file by their Kafka (dotted) names, as property text;
    ConfigError for an unreadable file or bad TOML. Names are not checked here."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return _flatten_toml(table)


def _known_key(name: str) -> ConfigKey[Any] | None:
    """The row of ``name``, or of the property a listener-prefixed ``name`` overrides."""
    key = BROKER_CONFIGS.get(name)
    if key is None:
        split = split_listener_prefix(name)
        key = BROKER_CONFIGS.get(split[1]) if split is not None else None
        if key is not None and not key.per_listener:
            return None
    return key


def _check_known(props: Mapping[str, str], source: str) -> None:
    for name in props:
        if _known_key(name) is None:
            split = split_listener_prefix(name)
            if split is not None and split[1] in BROKER_CONFIGS:
                raise ConfigError(
                    f"Configuration {split[1]!r} cannot be set per listener ({name!r} in {source})"
                )
            close = difflib.get_close_matches(name, BROKER_CONFIGS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"Unknown configuration {name!r} in {source}{hint}")


def _typed_values(props: Mapping[str, str]) -> dict[str, Any]:
    """Every row's typed value: the operator's if set, else the default (None if it has none)."""
    _check_known(props, "the broker properties")
    values: dict[str, Any] = {}
    for name, key in BROKER_CONFIGS.items():
        raw = props.get(name, key.default)
        values[name] = key.parse(raw) if raw is not None else None
    return values


def _listener_values(props: Mapping[str, str], listeners: tuple[Endpoint, ...]) -> dict[str, dict[str, Any]]:
    """The listener-prefixed values, by listener name: each names a listener, in lower case."""
    by_prefix = {listener_prefix(e.listener): e.listener for e in listeners}
    out: dict[str, dict[str, Any]] = {e.listener: {} for e in listeners}
    for name, raw in props.items():
        split = split_listener_prefix(name)
        if split is None:
            continue
        listener = by_prefix.get(f"listener.name.{split[0]}.")
        if listener is None:
            known = ", ".join(sorted(by_prefix)) or "none"
            lower = f"listener.name.{split[0].lower()}." in by_prefix
            hint = " (the listener name goes in lower case)" if lower else ""
            raise ConfigError(
                f"Configuration {name!r} names no listener of listeners{hint}: prefixes are {known}"
            )
        out[listener][split[1]] = BROKER_CONFIGS[split[1]].validator.convert(name, raw)
    return out


def _check_metrics_tls(config: BrokerConfig, props: Mapping[str, str]) -> None:
    """/metrics speaks TLS when it has a key store; its other TLS settings without one would be
    ignored, so they are refused (unless set to their defaults, which change nothing)."""
    if any(config.find(key) is not None for key in (METRICS_SSL.keystore_location, METRICS_SSL.keystore_key)):
        check_stores(config, METRICS_SSL, "/metrics")
        return
    stray = sorted(
        key.name
        for key in METRICS_SSL.rows()
        if key.name in props and (key.default is None or config.find(key) != key.typed_default())
    )
    if stray:
        raise ConfigError(
            f"{', '.join(stray)} set, but /metrics has no key store: set "
            f"{METRICS_SSL.keystore_location.name} (or {METRICS_SSL.keystore_key.name} with "
            f"{METRICS_SSL.keystore_certificate_chain.name}) to serve /metrics over TLS"
        )


def _check_group_coordinator(config: BrokerConfig) -> None:
    """Kafka's start-up checks of the group coordinator: the classic protocol always served;
    the consumer protocol's timeouts each within its min/max, the heartbeat interval below the
    session timeout."""
    if "classic" not in config.get(GROUP_COORDINATOR_REBALANCE_PROTOCOLS):
        raise ConfigError(f"{GROUP_COORDINATOR_REBALANCE_PROTOCOLS.name} must contain classic")
    for value, lo, hi in (
        (
            GROUP_CONSUMER_SESSION_TIMEOUT_MS,
            GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS,
            GROUP_CONSUMER_MAX_SESSION_TIMEOUT_MS,
        ),
        (
            GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS,
            GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS,
            GROUP_CONSUMER_MAX_HEARTBEAT_INTERVAL_MS,
        ),
    ):
        if not config.get(lo) <= config.get(value) <= config.get(hi):
            raise ConfigError(
                f"{value.name} ({config.get(value)}) must be within {lo.name} ({config.get(lo)}) "
                f"and {hi.name} ({config.get(hi)})"
            )
    if config.get(GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS) >= config.get(GROUP_CONSUMER_SESSION_TIMEOUT_MS):
        interval, session = GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS.name, GROUP_CONSUMER_SESSION_TIMEOUT_MS.name
        raise ConfigError(f"{interval} must be less than {session}")


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """One listener's view of the config: its ``listener.name.<l>.`` values over the top-level ones."""

    endpoint: Endpoint
    _own: Mapping[str, Any]
    _top: BrokerConfig

    def is_set(self, key: ConfigKey[Any]) -> bool:
        """Whether the listener's own prefixed form of ``key`` is set."""
        return key.name in self._own

    def find(self, key: ConfigKey[T]) -> T | None:
        if key.name in self._own:
            return cast(T, self._own[key.name])
        return self._top.find(key)

    def get(self, key: ConfigKey[T]) -> T:
        value = self.find(key)
        if value is None:
            raise LookupError(f"{key.name} is not set for listener {self.endpoint.listener}")
        return value


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """The broker's settings: Kafka's server.properties names, read from TOML and flags.

    Every field is defaulted, so ``BrokerConfig(data_dir=tmp_path)`` is a valid test config.
    ``properties`` keeps what the operator set (file, then flags), by Kafka name, as strings;
    building the config validates them all (``ConfigError`` names the property and its range).
    DescribeConfigs reports a property as STATIC_BROKER_CONFIG when it is in there.
    """

    data_dir: Path = _DATA_DIR
    workers: int = field(default_factory=_available_cores)
    #: Kafka's listeners, each with its security protocol and worker 0's port.
    listeners: tuple[Endpoint, ...] = _LISTENERS
    #: What worker 0 advertises per listener (empty: each listener's own address).
    advertised_listeners: tuple[Endpoint, ...] = ()
    metrics_host: str = _METRICS[0]
    metrics_port: int = _METRICS[1]
    log_defaults: LogConfig = field(default_factory=LogConfig)
    #: Not in the repr: it may hold secrets (ssl.key.password, inline keys).
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    #: Per-broker rows set by AlterConfigs (kept in the metadata log), over ``properties``.
    dynamic: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    _values: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    _listener_values: Mapping[str, Mapping[str, Any]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_known(self.dynamic, "the dynamic broker configs")
        props = {**self.properties, **self.dynamic}
        object.__setattr__(self, "_values", _typed_values(props))
        object.__setattr__(self, "_listener_values", _listener_values(props, self.listeners))
        for endpoint in self.listeners:
            if endpoint.uses_tls:
                where = f"listener {endpoint.listener} ({endpoint.security_protocol})"
                hint = f" (or {listener_prefix(endpoint.listener)}{LISTENER_SSL.keystore_location.name})"
                check_stores(self.for_listener(endpoint.listener), LISTENER_SSL, where, hint)
        _check_metrics_tls(self, props)
        _check_group_coordinator(self)

    def get(self, key: ConfigKey[T]) -> T:
        """The typed value of a row of ``BROKER_CONFIGS`` that has a default (the others are
        read with ``find``, or through the attribute they feed: ``workers``, ``log_defaults``)."""
        value = self._values[key.name]
        if value is None:
            raise LookupError(f"{key.name} has no default and is not set")
        return cast(T, value)

    def find(self, key: ConfigKey[T]) -> T | None:
        """The typed value of a row, None when it has no default and is not set."""
        return cast("T | None", self._values[key.name])

    def listener(self, name: str) -> Endpoint:
        """The listener called ``name`` (KeyError if there is none)."""
        for endpoint in self.listeners:
            if endpoint.listener == name:
                return endpoint
        raise KeyError(name)

    def for_listener(self, name: str) -> ListenerConfig:
        """The settings of one listener: its prefixed values over the top-level ones."""
        return ListenerConfig(self.listener(name), self._listener_values[name], self)

    def advertised(self) -> tuple[Endpoint, ...]:
        """What worker 0 advertises per listener, in the listeners' order (a wildcard bind
        advertises the host name, as Kafka)."""
        return self.advertised_listeners or advertised_endpoints(self.listeners, None)

    def with_dynamic(self, dynamic: Mapping[str, str]) -> BrokerConfig:
        """This config with ``dynamic`` as its per-broker dynamic values (ConfigError if bad)."""
        return dataclasses.replace(self, dynamic=MappingProxyType(dict(dynamic)))

    def listener_value(self, key: ConfigKey[T], listener: str) -> T | None:
        """A per-listener row's value for ``listener``: Kafka's ``listener.name.<listener>.<name>``
        if set, else the row's own (None: neither set nor defaulted)."""
        return self.for_listener(listener).find(key)

    @classmethod
    def load(cls, path: Path | None, overrides: Mapping[str, str]) -> BrokerConfig:
        """The TOML file at ``path`` (if any), then ``overrides`` (flags, Kafka names) on top.

        Raises ``ConfigError`` naming the property for an unreadable file, bad TOML, an unknown
        property (with the closest known name) or a bad value.
        """
        props: dict[str, str] = {}
        if path is not None:
            file_props = read_toml_properties(path)
            _check_known(file_props, str(path))
            props.update(file_props)
        _check_known(overrides, "the command line")
        props.update(overrides)
        return cls.from_properties(props)

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> BrokerConfig:
        """Build from Kafka property strings; ConfigError for an unknown name or a bad value."""
        values = _typed_values(props)
        kw: dict[str, Any] = {}
        if LOG_DIRS.name in props or LOG_DIR.name in props:
            kw["data_dir"] = values[LOG_DIRS.name if LOG_DIRS.name in props else LOG_DIR.name]
        listeners = bind_endpoints(values[LISTENERS.name], values[LISTENER_SECURITY_PROTOCOL_MAP.name])
        kw["listeners"] = listeners
        kw["advertised_listeners"] = advertised_endpoints(listeners, values[ADVERTISED_LISTENERS.name])
        kw["metrics_host"], kw["metrics_port"] = values[METRICS_LISTEN.name]
        workers = kw["workers"] = values.get(WORKERS.name) or _available_cores()
        check_port_ranges(listeners, workers)
        kw["log_defaults"] = _log_defaults(props, values)
        return cls(**kw, properties=MappingProxyType(dict(props)))


def _log_defaults(props: Mapping[str, str], values: Mapping[str, Any]) -> LogConfig:
    # Each topic config takes its first broker synonym the operator set, in Kafka's precedence,
    # scaled to the topic config's unit (-1, "never", stays -1).
    changes: dict[str, Any] = {}
    for topic_name, synonyms in TOPIC_CONFIG_SYNONYMS.items():
        for name, factor in synonyms:
            if name in props:
                value = values[name]
                changes[topic_name] = value if factor == 1 else -1 if value < 0 else value * factor
                break
    return LogConfig().replaced(changes)
