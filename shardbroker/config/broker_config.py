"""Configuration with Kafka's names: topic-level ``LogConfig`` and the broker's ``BrokerConfig``.

Kafka's topic configs (TopicConfig.java / LogConfig.java, Kafka 3.x) mapped to typed fields with
Kafka's defaults and validators. Layering is Kafka's: built-in defaults, then the broker's
``log.*`` settings (each topic config has a broker synonym, listed in ``BROKER_SYNONYMS`` for
whoever adds the broker config), then the topic's own overrides::

    broker = LogConfig.from_properties(broker_props_translated)     # or LogConfig()
    topic = broker.overrides({"retention.ms": "3600000"})

Bad values raise ``ConfigError`` (Kafka's INVALID_CONFIG, error code 40) naming the property,
the value and what was expected, so CreateTopics/AlterConfigs can answer with the message.

``BrokerConfig.load(path, flags)`` reads a TOML file of Kafka server.properties names (dotted
keys quoted or not; values TOML strings, integers or booleans), then the command-line flags on
top. Unknown names are refused with the closest known one: a typo such as ``log.retension.ms``
silently falling back to a default is the mistake operators make most with Kafka configs.
One data dir and one PLAINTEXT listener: worker i of a single host listens on port + i.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

__all__ = [
    "BROKER_PROPERTIES",
    "BROKER_SYNONYMS",
    "LOG_CONFIG_NAMES",
    "BrokerConfig",
    "ConfigError",
    "LogConfig",
]

LONG_MAX: Final = (1 << 63) - 1
INT_MAX: Final = (1 << 31) - 1

TimestampType = Literal["CreateTime", "LogAppendTime"]


class ConfigError(ValueError):
    """An invalid config name or value (Kafka's InvalidConfigurationException)."""

    error_code: Final = 40  # INVALID_CONFIG


@dataclass(frozen=True, slots=True)
class _Prop:
    name: str
    attr: str
    parse: Callable[[str, str], Any]
    doc: str


def _int_parser(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ConfigError(f"Invalid value {raw!r} for configuration {name}: not a number") from None
        if not lo <= value <= hi:
            raise ConfigError(f"Invalid value {value} for configuration {name}: must be in [{lo}, {hi}]")
        return value

    return parse


def _timestamp_type(name: str, raw: str) -> str:
    value = raw.strip()
    if value not in ("CreateTime", "LogAppendTime"):
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {name}: must be one of CreateTime, LogAppendTime"
        )
    return value


def _cleanup_policy(name: str, raw: str) -> frozenset[str]:
    parts = frozenset(p.strip() for p in raw.split(",") if p.strip())
    if not parts or not parts <= {"delete", "compact"}:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: a list of delete and/or compact")
    return parts


#: Kafka's topic property -> field, parser (validator as in LogConfig.java), what it does.
_PROPS: Final[tuple[_Prop, ...]] = (
    # Kafka 3.x: atLeast(LegacyRecord.RECORD_OVERHEAD_V0 = 14); Kafka 4.0 raised the floor to 1 MiB.
    _Prop("segment.bytes", "segment_bytes", _int_parser(14, INT_MAX), "roll a segment at this size"),
    _Prop("segment.ms", "segment_ms", _int_parser(1, LONG_MAX), "roll a segment this old"),
    _Prop(
        "segment.index.bytes",
        "segment_index_bytes",
        _int_parser(4, INT_MAX),
        "preallocated size of each index file",
    ),
    _Prop(
        "index.interval.bytes", "index_interval_bytes", _int_parser(0, INT_MAX), "bytes between index entries"
    ),
    _Prop("retention.ms", "retention_ms", _int_parser(-1, LONG_MAX), "delete segments older (-1: never)"),
    _Prop(
        "retention.bytes",
        "retention_bytes",
        _int_parser(-1, LONG_MAX),
        "delete old segments beyond this size (-1: never)",
    ),
    _Prop("flush.messages", "flush_messages", _int_parser(1, LONG_MAX), "fdatasync after this many messages"),
    _Prop("flush.ms", "flush_ms", _int_parser(0, LONG_MAX), "fdatasync when data is this old"),
    _Prop("max.message.bytes", "max_message_bytes", _int_parser(0, INT_MAX), "largest batch accepted"),
    _Prop(
        "message.timestamp.type",
        "message_timestamp_type",
        _timestamp_type,
        "CreateTime (producer's) or LogAppendTime (broker's)",
    ),
    _Prop("cleanup.policy", "cleanup_policy", _cleanup_policy, "delete and/or compact"),
    _Prop(
        "file.delete.delay.ms",
        "file_delete_delay_ms",
        _int_parser(0, LONG_MAX),
        "wait before removing a .deleted file",
    ),
)

_BY_NAME: Final = {p.name: p for p in _PROPS}
LOG_CONFIG_NAMES: Final = tuple(p.name for p in _PROPS)

#: Broker-level synonym of each topic config (Kafka's ServerTopicConfigSynonyms), for the broker
#: config to translate ``log.*`` settings into a default ``LogConfig``.
BROKER_SYNONYMS: Final[Mapping[str, str]] = {
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",  # also log.roll.hours
    "segment.index.bytes": "log.index.size.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "retention.ms": "log.retention.ms",  # also log.retention.minutes / .hours
    "retention.bytes": "log.retention.bytes",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",  # falls back to log.flush.scheduler.interval.ms
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "cleanup.policy": "log.cleanup.policy",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
}


@dataclass(frozen=True, slots=True)
class LogConfig:
    """One partition's log settings. Defaults are Kafka's."""

    segment_bytes: int = 1024 * 1024 * 1024
    segment_ms: int = 7 * 24 * 3600 * 1000
    segment_index_bytes: int = 10 * 1024 * 1024
    index_interval_bytes: int = 4096
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    #: Long.MAX_VALUE: never force a flush by count; Kafka relies on replication, we on the page
    #: cache surviving process crashes (see the README's durability section).
    flush_messages: int = LONG_MAX
    flush_ms: int = LONG_MAX
    #: 1 MiB + LOG_OVERHEAD (Kafka's default, so a 1 MiB batch fits).
    max_message_bytes: int = 1024 * 1024 + 12
    message_timestamp_type: str = "CreateTime"
    cleanup_policy: frozenset[str] = frozenset({"delete"})
    file_delete_delay_ms: int = 60_000
    #: Names set explicitly (by overrides) rather than inherited: DescribeConfigs reports sources.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        for prop in _PROPS:
            value = getattr(self, prop.attr)
            raw = ",".join(sorted(value)) if isinstance(value, frozenset) else str(value)
            prop.parse(prop.name, raw)  # the same validation whether built from strings or fields

    @classmethod
    def from_properties(cls, props: Mapping[str, str], defaults: LogConfig | None = None) -> LogConfig:
        """Build from Kafka property strings, on top of ``defaults`` (Kafka's built-ins if None)."""
        return (defaults or cls()).overrides(props)

    def overrides(self, props: Mapping[str, str]) -> LogConfig:
        """A copy with ``props`` (topic-level names and string values) layered on top."""
        unknown = sorted(set(props) - set(_BY_NAME))
        if unknown:
            raise ConfigError(
                f"Unknown topic configuration(s) {', '.join(unknown)}; "
                f"supported: {', '.join(LOG_CONFIG_NAMES)}"
            )
        changes: dict[str, Any] = {}
        for name, raw in props.items():
            if not isinstance(raw, str):
                raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected a string")
            prop = _BY_NAME[name]
            changes[prop.attr] = prop.parse(name, raw)
        return dataclasses.replace(self, **changes, explicit=self.explicit | frozenset(props))

    def to_properties(self) -> dict[str, str]:
        """Every setting as Kafka property strings (DescribeConfigs)."""
        out = {}
        for prop in _PROPS:
            value = getattr(self, prop.attr)
            out[prop.name] = ",".join(sorted(value)) if isinstance(value, frozenset) else str(value)
        return out

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"


# --------------------------------------------------------------------------------------------
# Broker config (server.properties in Kafka; a TOML file here)


def _available_cores() -> int:
    # The cores this process may run on (taskset/cgroup cpusets), not the machine's: one worker
    # per core we can actually use.
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


#: Kafka's time-unit fallbacks (KafkaConfig): ``*.ms`` wins over ``*.minutes`` over ``*.hours``.
_TIME_SYNONYMS: Final[Mapping[str, tuple[tuple[str, int], ...]]] = {
    "segment.ms": (("log.roll.ms", 1), ("log.roll.hours", 3_600_000)),
    "retention.ms": (
        ("log.retention.ms", 1),
        ("log.retention.minutes", 60_000),
        ("log.retention.hours", 3_600_000),
    ),
}

#: The broker properties shardbroker understands (Kafka's names, plus ``workers`` and
#: ``metrics.listen`` of its own), with what each does: ``serve --help`` prints this table.
BROKER_PROPERTIES: Final[Mapping[str, str]] = {
    "log.dirs": "the data directory (one; log.dir is accepted too) [./shardbroker-data]",
    "log.dir": "synonym of log.dirs",
    "listeners": "PLAINTEXT://HOST:PORT or HOST:PORT; worker i listens on PORT+i [127.0.0.1:9092]",
    "advertised.listeners": "host given to clients in metadata: PLAINTEXT://HOST:PORT, HOST:PORT or HOST",
    "workers": "worker processes, one per core [cores available]",
    "metrics.listen": "HOST:PORT of the Prometheus /metrics endpoint [127.0.0.1:9404]",
    "num.partitions": "partitions of an auto-created or -1 topic [1]",
    "auto.create.topics.enable": "create unknown topics on Metadata/Produce [true]",
    "message.max.bytes": "largest record batch, default max.message.bytes of topics [1048588]",
    "socket.request.max.bytes": "largest request frame [104857600]",
    "connections.max.idle.ms": "close connections idle this long, -1 never [600000]",
    "max.connections": "connections a worker keeps open; newer ones are closed at once [2147483647]",
    "max.connections.per.ip": "connections a worker keeps open per client address [2147483647]",
    "fetch.max.bytes": "most bytes one Fetch response returns [57671680]",
    "auto.leader.rebalance.enable": "move partitions off a busy worker, and onto added workers [true]",
    "leader.imbalance.check.interval.seconds": "how often the controller compares the workers' load [300]",
    "leader.imbalance.per.broker.percentage": "load over the workers' mean that makes partitions move [10]",
    "log.roll.hours": "synonym of log.roll.ms in hours [168]",
    "log.retention.minutes": "synonym of log.retention.ms in minutes",
    "log.retention.hours": "synonym of log.retention.ms in hours [168]",
    "group.initial.rebalance.delay.ms": "first rebalance of a new group waits this long for members [3000]",
    "group.min.session.timeout.ms": "smallest session.timeout.ms a group member may ask for [6000]",
    "group.max.session.timeout.ms": "largest session.timeout.ms a group member may ask for [1800000]",
    "offsets.topic.num.partitions": "partitions of __consumer_offsets (fixed once created) [50]",
    "offsets.topic.segment.bytes": "segment.bytes of __consumer_offsets [104857600]",
    "offsets.retention.minutes": "committed offsets of an empty group are kept this long [10080]",
    "offsets.retention.check.interval.ms": "how often expired offsets are looked for [600000]",
    "offset.metadata.max.bytes": "largest metadata string of a committed offset [4096]",
    "log.retention.check.interval.ms": "how often segments past retention are deleted [300000]",
    "log.flush.offset.checkpoint.interval.ms": "how often recovery points are checkpointed [60000]",
    "log.flush.scheduler.interval.ms": "how often logs are checked against flush.ms [1000]",
    **{
        broker: f"default of the topic config {topic}"
        for topic, broker in BROKER_SYNONYMS.items()
        if broker != "message.max.bytes"
    },
}


def _split_host_port(name: str, raw: str, *, port_required: bool = True) -> tuple[str, int | None]:
    """``HOST:PORT``, ``[v6]:PORT`` or (if not required) ``HOST``; ``SCHEME://`` is stripped."""
    value = raw.strip()
    if "://" in value:
        scheme, _, value = value.partition("://")
        if scheme.upper() != "PLAINTEXT":
            raise ConfigError(
                f"Invalid value {raw!r} for configuration {name}: only PLAINTEXT listeners are supported"
            )
    if "," in value:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: one listener only")
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    elif ":" not in value:
        host, port_text = value, None
    else:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected HOST:PORT")
    if port_text is None:
        if port_required:
            raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected HOST:PORT")
        if not host:
            raise ConfigError(f"Invalid value {raw!r} for configuration {name}: empty host")
        return host, None
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: port is not a number") from None
    if not 0 < port <= 65535:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: port must be in [1, 65535]")
    # Kafka binds an empty host (PLAINTEXT://:9092) to every interface.
    return host or "0.0.0.0", port


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected true or false")
    return value == "true"


def _flatten_toml(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    # TOML reads ``log.dirs = "x"`` (unquoted) as the table {"log": {"dirs": "x"}}; Kafka's
    # dotted names come back by joining the keys, so quoted and unquoted spellings both work.
    out: dict[str, str] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
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


def _check_known(props: Mapping[str, str], source: str) -> None:
    for name in props:
        if name not in BROKER_PROPERTIES:
            close = difflib.get_close_matches(name, BROKER_PROPERTIES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"Unknown configuration {name!r} in {source}{hint}")


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    """The broker's settings: Kafka's server.properties names, read from TOML and flags.

    Every field is defaulted, so ``BrokerConfig(data_dir=tmp_path)`` is a valid test config.
    ``properties`` keeps what the operator set (file, then flags), by Kafka name, as strings:
    DescribeConfigs reports a topic config as STATIC_BROKER_CONFIG when its broker synonym
    (``BROKER_SYNONYMS``) is in there.
    """

    data_dir: Path = Path("shardbroker-data")
    workers: int = field(default_factory=_available_cores)
    listen_host: str = "127.0.0.1"
    listen_port: int = 9092
    advertised_host: str | None = None
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9404
    num_partitions: int = 1
    auto_create_topics_enable: bool = True
    #: Kafka's default: 1 MiB + the 12-byte log overhead, so a 1 MiB batch fits.
    message_max_bytes: int = 1048588
    socket_request_max_bytes: int = 104857600
    connections_max_idle_ms: int = 600000
    #: Kafka's defaults (Int.MaxValue: no limit). Each worker is a Kafka broker (node) with a
    #: listener of its own, so the limits apply per worker, as Kafka's apply per broker.
    max_connections: int = INT_MAX
    max_connections_per_ip: int = INT_MAX
    fetch_max_bytes: int = 57671680
    #: Kafka's names and defaults; what they mean on one host is in auto_rebalance.py.
    auto_leader_rebalance_enable: bool = True
    leader_imbalance_check_interval_seconds: int = 300
    leader_imbalance_per_broker_percentage: int = 10
    log_defaults: LogConfig = field(default_factory=LogConfig)
    properties: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

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
        """Build from Kafka property strings (already known names)."""
        _check_known(props, "the broker properties")
        kw: dict[str, Any] = {}

        def get(name: str) -> str | None:
            return props.get(name)

        dirs = get("log.dirs") or get("log.dir")
        if dirs is not None:
            parts = [d.strip() for d in dirs.split(",") if d.strip()]
            if len(parts) != 1:
                raise ConfigError(f"Invalid value {dirs!r} for configuration log.dirs: exactly one directory")
            kw["data_dir"] = Path(parts[0])
        if (raw := get("listeners")) is not None:
            kw["listen_host"], kw["listen_port"] = _split_host_port("listeners", raw)
        if (raw := get("advertised.listeners")) is not None:
            kw["advertised_host"], _ = _split_host_port("advertised.listeners", raw, port_required=False)
        if (raw := get("metrics.listen")) is not None:
            kw["metrics_host"], kw["metrics_port"] = _split_host_port("metrics.listen", raw)
        ints = {
            "workers": ("workers", 1, 1024),
            "num.partitions": ("num_partitions", 1, INT_MAX),
            "message.max.bytes": ("message_max_bytes", 0, INT_MAX),
            "socket.request.max.bytes": ("socket_request_max_bytes", 1, INT_MAX),
            "connections.max.idle.ms": ("connections_max_idle_ms", -1, LONG_MAX),
            "max.connections": ("max_connections", 0, INT_MAX),
            "max.connections.per.ip": ("max_connections_per_ip", 0, INT_MAX),
            "fetch.max.bytes": ("fetch_max_bytes", 0, INT_MAX),
            "leader.imbalance.check.interval.seconds": (
                "leader_imbalance_check_interval_seconds",
                1,
                INT_MAX,
            ),
            "leader.imbalance.per.broker.percentage": ("leader_imbalance_per_broker_percentage", 0, INT_MAX),
        }
        for name, (attr, lo, hi) in ints.items():
            if (raw := get(name)) is not None:
                kw[attr] = _int_parser(lo, hi)(name, raw)
        for name in ("auto.create.topics.enable", "auto.leader.rebalance.enable"):
            if (raw := get(name)) is not None:
                kw[name.replace(".", "_")] = _bool(name, raw)
        port = kw.get("listen_port", 9092)
        workers = kw.get("workers") or _available_cores()
        kw["workers"] = workers
        if port + workers - 1 > 65535:
            raise ConfigError(
                f"listeners port {port} with {workers} workers needs ports up to {port + workers - 1}"
                " (worker i listens on port + i): beyond 65535"
            )
        kw["log_defaults"] = _log_defaults(props)
        return cls(**kw, properties=MappingProxyType(dict(props)))


def _log_defaults(props: Mapping[str, str]) -> LogConfig:
    # Each broker synonym is validated with its topic config's parser but under its own name,
    # so the operator reads the property they actually wrote.
    changes: dict[str, Any] = {}
    for topic_name, broker_name in BROKER_SYNONYMS.items():
        prop = _BY_NAME[topic_name]
        units = _TIME_SYNONYMS.get(topic_name, ((broker_name, 1),))
        for name, factor in units:
            raw = props.get(name)
            if raw is None:
                continue
            if factor == 1:
                changes[prop.attr] = prop.parse(name, raw)
            else:
                value = _int_parser(-1 if topic_name == "retention.ms" else 1, INT_MAX)(name, raw)
                changes[prop.attr] = -1 if value < 0 else value * factor
            break
    return dataclasses.replace(LogConfig(), **changes)
