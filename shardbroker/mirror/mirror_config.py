"""``shardbroker mirror``'s settings: MirrorMaker 2's connector property names, read from TOML.

``MIRROR_CONFIGS`` is the table (one ``ConfigKey`` row each: MirrorMaker 2's name, type, default,
validator, documentation), ``MirrorConfig.load(path, flags)`` reads a TOML file of those names
(dotted or quoted keys, as the broker's config file) with the command line's flags on top, and
checks everything before a connection is made: an unknown name (with the closest known one), a
bad value, a regex that does not compile, an unknown client setting. Each side's client security
settings are Kafka's client names behind ``source.cluster.`` / ``target.cluster.``
(``source.cluster.security.protocol = "SASL_SSL"``), read by
:class:`~shardbroker.client.client_security.ClientSecurity`; secrets never appear in an error.

Deliberate differences from MirrorMaker 2 (README): ``replication.factor`` defaults to -1 (the
target broker's ``default.replication.factor``, KIP-464) instead of 2, because a one-host target
refuses 2; lists are comma-separated strings as in a properties file; regexes are Python's
(``re.fullmatch``), which read MirrorMaker 2's default patterns and the usual ones alike.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.client_security import KNOWN_SETTINGS, ClientSecurity
from shardbroker.config.broker_config import read_toml_properties
from shardbroker.config.config_def import (
    BOOLEAN,
    LONG_MAX,
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    UpdateMode,
    Validator,
    between,
    one_of,
)
from shardbroker.mirror.replication_policy import DEFAULT_POLICY, POLICY_CLASSES, ReplicationPolicy

__all__ = [
    "MIRROR_CONFIGS",
    "ClusterSettings",
    "MirrorConfig",
    "NameFilter",
]

MIRROR_CONFIGS: Final = ConfigDef(UpdateMode.READ_ONLY)
_D = MIRROR_CONFIGS.define
_READER: Final = "mirror"


def _text(name: str, raw: str) -> str:
    return raw.strip()


def _alias(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {name}: "
            "a cluster alias of letters, digits, '.', '_', '-'"
        )
    return value


def _servers(name: str, raw: str) -> tuple[str, ...]:
    servers = tuple(p.strip() for p in raw.split(",") if p.strip())
    if not servers:
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {name}: expected HOST:PORT[,HOST:PORT...]"
        )
    return servers


def _patterns(name: str, raw: str) -> tuple[re.Pattern[str], ...]:
    out = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            out.append(re.compile(part))
        except re.error as exc:
            raise ConfigError(
                f"Invalid value {part!r} for configuration {name}: not a regex ({exc})"
            ) from None
    return tuple(out)


def _policy(name: str, raw: str) -> str:
    value = raw.strip()
    if value not in POLICY_CLASSES:
        choices = ", ".join(sorted(set(POLICY_CLASSES.values())))
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: one of {choices}")
    return POLICY_CLASSES[value]


_S, _L, _I, _B, _LIST = (
    ConfigType.STRING,
    ConfigType.LONG,
    ConfigType.INT,
    ConfigType.BOOLEAN,
    ConfigType.LIST,
)
_SECONDS: Final = between(1, LONG_MAX // 1000)
_PATTERNS: Final = Validator(_patterns, "a comma-separated list of regexes")

SOURCE_ALIAS: Final = _D(
    "source.cluster.alias",
    _S,
    "source",
    Validator(_alias, "an alias"),
    "the source cluster's name (topic prefix on the target with the default policy)",
    _READER,
)
TARGET_ALIAS: Final = _D(
    "target.cluster.alias", _S, "target", Validator(_alias, "an alias"), "the target cluster's name", _READER
)
SOURCE_BOOTSTRAP: Final = _D(
    "source.cluster.bootstrap.servers",
    _LIST,
    None,
    Validator(_servers, "HOST:PORT,..."),
    "the source cluster's brokers (required; flag --source)",
    _READER,
)
TARGET_BOOTSTRAP: Final = _D(
    "target.cluster.bootstrap.servers",
    _LIST,
    None,
    Validator(_servers, "HOST:PORT,..."),
    "the target cluster's brokers (required; flag --target)",
    _READER,
)
TOPICS: Final = _D(
    "topics", _LIST, ".*", _PATTERNS, "regexes of the source topics to mirror (flag --topics)", _READER
)
TOPICS_EXCLUDE: Final = _D(
    "topics.exclude",
    _LIST,
    r".*[\-\.]internal, .*\.replica, __.*",
    _PATTERNS,
    "regexes of topics never mirrored",
    _READER,
)
GROUPS: Final = _D(
    "groups", _LIST, ".*", _PATTERNS, "regexes of the consumer groups whose offsets are translated", _READER
)
GROUPS_EXCLUDE: Final = _D(
    "groups.exclude",
    _LIST,
    "console-consumer-.*, connect-.*, __.*",
    _PATTERNS,
    "regexes of groups never checkpointed",
    _READER,
)
POLICY_CLASS: Final = _D(
    "replication.policy.class",
    ConfigType.STRING,
    DEFAULT_POLICY,
    Validator(_policy, "DefaultReplicationPolicy, IdentityReplicationPolicy"),
    "how a source topic is named on the target",
    _READER,
)
POLICY_SEPARATOR: Final = _D(
    "replication.policy.separator",
    _S,
    ".",
    Validator(_text, "text"),
    "between the source alias and the topic name (DefaultReplicationPolicy)",
    _READER,
)
REPLICATION_FACTOR: Final = _D(
    "replication.factor",
    _I,
    "-1",
    between(-1, 32767),
    "replication factor of topics created on the target (-1: the target's default)",
    _READER,
)
SYNC_TOPIC_CONFIGS: Final = _D(
    "sync.topic.configs.enabled",
    _B,
    "true",
    BOOLEAN,
    "copy the source topics' configs to the target",
    _READER,
)
SYNC_TOPIC_CONFIGS_INTERVAL: Final = _D(
    "sync.topic.configs.interval.seconds", _L, "600", _SECONDS, "how often topic configs are copied", _READER
)
SYNC_GROUP_OFFSETS: Final = _D(
    "sync.group.offsets.enabled",
    _B,
    "false",
    BOOLEAN,
    "write translated offsets to the target's groups that have no active members",
    _READER,
)
SYNC_GROUP_OFFSETS_INTERVAL: Final = _D(
    "sync.group.offsets.interval.seconds",
    _L,
    "60",
    _SECONDS,
    "how often group offsets are written to the target",
    _READER,
)
EMIT_CHECKPOINTS: Final = _D(
    "emit.checkpoints.enabled",
    _B,
    "true",
    BOOLEAN,
    "write translated group offsets to the checkpoints topic",
    _READER,
)
EMIT_CHECKPOINTS_INTERVAL: Final = _D(
    "emit.checkpoints.interval.seconds", _L, "60", _SECONDS, "how often checkpoints are written", _READER
)
REFRESH_TOPICS: Final = _D(
    "refresh.topics.enabled", _B, "true", BOOLEAN, "look for new topics and partitions on the source", _READER
)
REFRESH_TOPICS_INTERVAL: Final = _D(
    "refresh.topics.interval.seconds",
    _L,
    "600",
    _SECONDS,
    "how often new topics and partitions are looked for",
    _READER,
)
REFRESH_GROUPS: Final = _D(
    "refresh.groups.enabled", _B, "true", BOOLEAN, "look for new consumer groups on the source", _READER
)
REFRESH_GROUPS_INTERVAL: Final = _D(
    "refresh.groups.interval.seconds", _L, "600", _SECONDS, "how often new groups are looked for", _READER
)
OFFSET_SYNCS_LOCATION: Final = _D(
    "offset-syncs.topic.location",
    _S,
    "source",
    one_of("source", "target"),
    "the cluster holding the offset-syncs topic",
    _READER,
)
SYNC_TOPIC_DELETIONS: Final = _D(
    "sync.topic.deletions.enabled",
    _B,
    "false",
    BOOLEAN,
    "shardbroker's own (MirrorMaker 2 never deletes): delete a mirrored topic's target copy when "
    "the source topic is deleted while the mirror runs",
    _READER,
)
OFFSET_LAG_MAX: Final = _D(
    "offset.lag.max",
    _L,
    "100",
    between(0, LONG_MAX),
    "records mirrored between two offset syncs of a partition at most",
    _READER,
)
EXACTLY_ONCE: Final = _D(
    "exactly.once.source.support",
    _S,
    "disabled",
    one_of("enabled", "disabled"),
    "enabled: records and source positions written in one target transaction (KIP-618)",
    _READER,
)

_PREFIXES: Final = {"source": "source.cluster.", "target": "target.cluster."}


def _security_name(name: str) -> tuple[str, str] | None:
    """``(side, client setting)`` for ``source.cluster.<client setting>``, else None."""
    for side, prefix in _PREFIXES.items():
        if name.startswith(prefix) and name[len(prefix) :] in KNOWN_SETTINGS:
            return side, name[len(prefix) :]
    return None


@dataclass(frozen=True, slots=True)
class NameFilter:
    """Include and exclude regexes (MirrorMaker 2's topic and group filters): a name passes when
    one include regex matches all of it and no exclude regex does."""

    include: tuple[re.Pattern[str], ...]
    exclude: tuple[re.Pattern[str], ...]

    def matches(self, name: str) -> bool:
        return any(p.fullmatch(name) for p in self.include) and not any(
            p.fullmatch(name) for p in self.exclude
        )


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """One side: its alias, its bootstrap servers and how a client reaches them."""

    alias: str
    bootstrap_servers: tuple[str, ...]
    security: ClientSecurity

    @property
    def bootstrap(self) -> str:
        """``bootstrap.servers`` as the client takes it."""
        return ",".join(self.bootstrap_servers)

    def admin(self, client_id: str, timeout: float) -> AdminClient:
        """An admin client of this side (not yet connected), with its security settings."""
        return AdminClient(self.bootstrap, timeout=timeout, client_id=client_id, security=self.security)


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """Every setting of one mirror (source -> target), typed; intervals in seconds."""

    source: ClusterSettings
    target: ClusterSettings
    topics: NameFilter
    groups: NameFilter
    policy: ReplicationPolicy
    replication_factor: int
    sync_topic_configs_enabled: bool
    sync_topic_configs_interval_s: int
    sync_topic_deletions_enabled: bool
    sync_group_offsets_enabled: bool
    sync_group_offsets_interval_s: int
    emit_checkpoints_enabled: bool
    emit_checkpoints_interval_s: int
    refresh_topics_enabled: bool
    refresh_topics_interval_s: int
    refresh_groups_enabled: bool
    refresh_groups_interval_s: int
    offset_syncs_on_source: bool
    offset_lag_max: int
    exactly_once: bool

    @property
    def offset_syncs_topic(self) -> str:
        return self.policy.offset_syncs_topic(self.target.alias)

    @property
    def checkpoints_topic(self) -> str:
        return self.policy.checkpoints_topic(self.source.alias)

    def remote_topic(self, source_topic: str) -> str:
        """The target's name for ``source_topic``."""
        return self.policy.format_remote_topic(self.source.alias, source_topic)

    def mirrors_topic(self, source_topic: str) -> bool:
        """Whether ``source_topic`` is replicated: it passes ``topics``/``topics.exclude``, is not
        one of the mirrors' internal topics and did not come from the target (the cycle check)."""
        return (
            self.topics.matches(source_topic)
            and not source_topic.endswith((".internal", "-internal"))
            and not self.policy.is_cycle(source_topic, self.target.alias)
        )

    @classmethod
    def load(cls, path: Path | None, overrides: Mapping[str, str]) -> MirrorConfig:
        """The TOML file at ``path`` (if any) with ``overrides`` (MirrorMaker 2 names) on top;
        ConfigError naming the property for anything wrong."""
        props: dict[str, str] = {}
        if path is not None:
            props.update(read_toml_properties(path))
        props.update(overrides)
        return cls.from_properties(props)

    @classmethod
    def from_properties(cls, props: Mapping[str, str]) -> MirrorConfig:
        security: dict[str, dict[str, str]] = {"source": {}, "target": {}}
        for name, raw in props.items():
            split = _security_name(name)
            if split is not None:
                security[split[0]][split[1]] = raw
            elif name not in MIRROR_CONFIGS:
                known = [*MIRROR_CONFIGS, *(p + s for p in _PREFIXES.values() for s in KNOWN_SETTINGS)]
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"Unknown configuration {name!r}{hint}")
        values: dict[str, Any] = {}
        for name, key in MIRROR_CONFIGS.items():
            text: str | None = props.get(name, key.default)
            if text is None:
                raise ConfigError(f"Missing required configuration {name!r}: {key.doc}")
            values[name] = key.parse(text)

        def get(key: ConfigKey[Any]) -> Any:
            return values[key.name]

        def cluster(
            side: str, alias: ConfigKey[str], bootstrap: ConfigKey[tuple[str, ...]]
        ) -> ClusterSettings:
            try:
                client = ClientSecurity.from_properties(security[side])
            except ValueError as exc:
                raise ConfigError(f"{_PREFIXES[side]}*: {exc}") from None
            return ClusterSettings(get(alias), get(bootstrap), client)

        source = cluster("source", SOURCE_ALIAS, SOURCE_BOOTSTRAP)
        target = cluster("target", TARGET_ALIAS, TARGET_BOOTSTRAP)
        if source.alias == target.alias:
            raise ConfigError(f"source.cluster.alias and target.cluster.alias are both {source.alias!r}")
        try:
            policy = ReplicationPolicy(get(POLICY_CLASS), get(POLICY_SEPARATOR))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return cls(
            source=source,
            target=target,
            topics=NameFilter(get(TOPICS), get(TOPICS_EXCLUDE)),
            groups=NameFilter(get(GROUPS), get(GROUPS_EXCLUDE)),
            policy=policy,
            replication_factor=get(REPLICATION_FACTOR),
            sync_topic_configs_enabled=get(SYNC_TOPIC_CONFIGS),
            sync_topic_configs_interval_s=get(SYNC_TOPIC_CONFIGS_INTERVAL),
            sync_topic_deletions_enabled=get(SYNC_TOPIC_DELETIONS),
            sync_group_offsets_enabled=get(SYNC_GROUP_OFFSETS),
            sync_group_offsets_interval_s=get(SYNC_GROUP_OFFSETS_INTERVAL),
            emit_checkpoints_enabled=get(EMIT_CHECKPOINTS),
            emit_checkpoints_interval_s=get(EMIT_CHECKPOINTS_INTERVAL),
            refresh_topics_enabled=get(REFRESH_TOPICS),
            refresh_topics_interval_s=get(REFRESH_TOPICS_INTERVAL),
            refresh_groups_enabled=get(REFRESH_GROUPS),
            refresh_groups_interval_s=get(REFRESH_GROUPS_INTERVAL),
            offset_syncs_on_source=get(OFFSET_SYNCS_LOCATION) == "source",
            offset_lag_max=get(OFFSET_LAG_MAX),
            exactly_once=get(EXACTLY_ONCE) == "enabled",
        )
