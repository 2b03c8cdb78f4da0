"""The broker's settings (``BrokerConfig``): server.properties names from a TOML file and flags.

``BrokerConfig.load(path, flags)`` reads a TOML file of Kafka server.properties names (dotted
keys quoted or not; values TOML strings, integers or booleans), then the command-line flags on
top. Every name must be a row of ``BROKER_CONFIGS`` (broker_properties.py): unknown names are
refused with the closest known one (a typo such as ``log.retension.ms`` silently falling back to
a default is the mistake operators make most with Kafka configs), and every value, set or
default, is converted by its row's validator when the config is built, so a bad value stops the
start with the property's name and its valid range.

Readers ask ``config.get(ROW)`` for a row's typed value; the data directory, listener, workers
and topic defaults (``log_defaults``, a ``LogConfig`` from the ``log.*`` synonyms with Kafka's
time-unit fallbacks) are attributes. One data dir and one PLAINTEXT listener: worker i of a
single host listens on port + i.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypeVar, cast

from shardbroker.config.broker_properties import (
    ADVERTISED_LISTENERS,
    BROKER_CONFIGS,
    LISTENERS,
    LOG_DIR,
    LOG_DIRS,
    METRICS_LISTEN,
    SASL_LISTENER_ROWS,
    TABLE_ROWS,
    TOPIC_CONFIG_SYNONYMS,
    WORKERS,
)
from shardbroker.config.config_def import ConfigError, ConfigKey
from shardbroker.config.log_config import LogConfig

__all__ = ["BrokerConfig"]

T = TypeVar("T")

_DATA_DIR: Final = LOG_DIRS.typed_default()
_LISTEN: Final = LISTENERS.typed_default()
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
        if isinstance(value, Mapping) and _listener_row(name) in TABLE_ROWS:
            out[name] = json.dumps(value)  # a table-valued row (sasl.plain.users) keeps its table
        elif isinstance(value, Mapping):
            out.update(_flatten_toml(value, f"{name}."))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, int | str):
            out[name] = str(value)
        else:
            raise ConfigError(
                f"Invalid value {value!r} for configuration {name}: expected a string, integer or boolean"
            )
    return out


#: Kafka's listener prefix: ``listener.name.<listener in lower case>.<property>``.
LISTENER_PREFIX: Final = "listener.name."


def _listener_row(name: str) -> str:
    """The property that ``name`` sets: itself, or what a listener-prefixed name overrides."""
    if name.startswith(LISTENER_PREFIX):
        _, _, rest = name[len(LISTENER_PREFIX) :].partition(".")
        return rest
    return name


def _check_known(props: Mapping[str, str], source: str) -> None:
    for name in props:
        row = _listener_row(name)
        if name != row and row in SASL_LISTENER_ROWS:
            BROKER_CONFIGS[row].validator.convert(name, props[name])  # checked now, read per listener
            continue
        if name not in BROKER_CONFIGS:
            close = difflib.get_close_matches(name, BROKER_CONFIGS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"Unknown configuration {name!r} in {source}{hint}")


def _typed_values(props: Mapping[str, str]) -> dict[str, Any]:
    """Every row's typed value: the operator's if set, else the default (rows without one left out)."""
    _check_known(props, "the broker properties")
    values = {}
    for name, key in BROKER_CONFIGS.items():
        raw = props.get(name, key.default)
        if raw is not None:
            values[name] = key.parse(raw)
    return values


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
    listen_host: str = _LISTEN[0]
    listen_port: int = _LISTEN[1]
    advertised_host: str | None = None
    metrics_host: str = _METRICS[0]
    metrics_port: int = _METRICS[1]
    log_defaults: LogConfig = field(default_factory=LogConfig)
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    _values: Mapping[str, Any] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_values", _typed_values(self.properties))

    def get(self, key: ConfigKey[T]) -> T:
        """The typed value of a row of ``BROKER_CONFIGS`` (rows without a default are read
        through the attribute they feed: ``workers``, ``advertised_host``, ``log_defaults``)."""
        return cast(T, self._values[key.name])

    def listener_value(self, key: ConfigKey[T], listener: str) -> T | None:
        """A per-listener row's value for ``listener``: Kafka's ``listener.name.<listener>.<name>``
        if set, else the row's own (None: neither set nor defaulted)."""
        raw = self.properties.get(f"{LISTENER_PREFIX}{listener.lower()}.{key.name}")
        return key.parse(raw) if raw is not None else cast("T | None", self._values.get(key.name))

    def advertised(self) -> str:
        """The host clients are told to connect to (a wildcard bind advertises the host name, as Kafka)."""
        if self.advertised_host:
            return self.advertised_host
        if self.listen_host in ("0.0.0.0", "::", ""):
            return socket.gethostname()
        return self.listen_host

    @classmethod
    def load(cls, path: Path | None, overrides: Mapping[str, str]) -> BrokerConfig:
        """The TOML file at ``path`` (if any), then ``overrides`` (flags, Kafka names) on top.

        Raises ``ConfigError`` naming the property for an unreadable file, bad TOML, an unknown
        property (with the closest known name) or a bad value.
        """
        props: dict[str, str] = {}
        if path is not None:
            try:
                with open(path, "rb") as f:
                    table = tomllib.load(f)
            except OSError as e:
                raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
            file_props = _flatten_toml(table)
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
        kw["listen_host"], kw["listen_port"] = values[LISTENERS.name]
        kw["metrics_host"], kw["metrics_port"] = values[METRICS_LISTEN.name]
        if ADVERTISED_LISTENERS.name in values:
            kw["advertised_host"], _ = values[ADVERTISED_LISTENERS.name]
        port = kw["listen_port"]
        workers = kw["workers"] = values.get(WORKERS.name) or _available_cores()
        if port + workers - 1 > 65535:
            raise ConfigError(
                f"listeners port {port} with {workers} workers needs ports up to {port + workers - 1}"
                " (worker i listens on port + i): beyond 65535"
            )
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
