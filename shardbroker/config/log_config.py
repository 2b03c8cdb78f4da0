"""Topic configs: the table of rows (Kafka's TopicConfig) and one partition's typed values (LogConfig).

``TOPIC_CONFIGS`` holds a row per topic config (Kafka 3.x names, defaults and validators, as in
TopicConfig.java / LogConfig.java); ``LogConfig`` has a field per row, named after it (dots as
underscores), defaulted from the row. Layering is Kafka's: built-in defaults, then the broker's
``log.*`` settings (each topic config has a broker synonym, ``BROKER_SYNONYMS``, Kafka's
ServerTopicConfigSynonyms), then the topic's own overrides::

    broker = LogConfig.from_properties(broker_props_translated)     # or LogConfig()
    topic = broker.overrides({"retention.ms": "3600000"})

Bad values raise ``ConfigError`` naming the property, the value and the valid range, so
CreateTopics/AlterConfigs answer with the message. A new topic config is a row here, a field of
``LogConfig`` and an entry of ``BROKER_SYNONYMS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shardbroker.config.config_def import (
    INT_MAX,
    LONG_MAX,
    ConfigDef,
    ConfigError,
    ConfigType,
    UpdateMode,
    between,
    between_float,
    list_of,
    one_of,
)

_LOG: Final = "log (storage/log.py)"
_SEGMENT: Final = "log segment (storage/log_segment.py)"
_CLEANER: Final = "log cleaner (storage/log_cleaner.py)"

#: Kafka's topic configs, in the order DescribeConfigs lists them.
TOPIC_CONFIGS: Final = ConfigDef(UpdateMode.TOPIC)
_D = TOPIC_CONFIGS.define
# Kafka 3.x: atLeast(LegacyRecord.RECORD_OVERHEAD_V0 = 14); Kafka 4.0 raised the floor to 1 MiB.
SEGMENT_BYTES: Final = _D(
    "segment.bytes",
    ConfigType.INT,
    "1073741824",
    between(14, INT_MAX),
    "roll a segment at this size",
    _SEGMENT,
)
SEGMENT_MS: Final = _D(
    "segment.ms", ConfigType.LONG, "604800000", between(1, LONG_MAX), "roll a segment this old", _SEGMENT
)
SEGMENT_INDEX_BYTES: Final = _D(
    "segment.index.bytes",
    ConfigType.INT,
    "10485760",
    between(4, INT_MAX),
    "preallocated size of each index file",
    _SEGMENT,
)
INDEX_INTERVAL_BYTES: Final = _D(
    "index.interval.bytes",
    ConfigType.INT,
    "4096",
    between(0, INT_MAX),
    "bytes between index entries",
    _SEGMENT,
)
RETENTION_MS: Final = _D(
    "retention.ms",
    ConfigType.LONG,
    "604800000",
    between(-1, LONG_MAX),
    "delete segments older (-1: never)",
    _LOG,
)
RETENTION_BYTES: Final = _D(
    "retention.bytes",
    ConfigType.LONG,
    "-1",
    between(-1, LONG_MAX),
    "delete old segments beyond this size (-1: never)",
    _LOG,
)
# Long.MAX_VALUE: never force a flush by count or age; Kafka relies on replication, we on the page
# cache surviving process crashes (see the README's durability section).
FLUSH_MESSAGES: Final = _D(
    "flush.messages",
    ConfigType.LONG,
    str(LONG_MAX),
    between(1, LONG_MAX),
    "fdatasync after this many messages",
    _LOG,
)
FLUSH_MS: Final = _D(
    "flush.ms",
    ConfigType.LONG,
    str(LONG_MAX),
    between(0, LONG_MAX),
    "fdatasync when data is this old",
    "log, replica manager (flush scheduler)",
)
# 1 MiB + LOG_OVERHEAD (Kafka's default, so a 1 MiB batch fits).
MAX_MESSAGE_BYTES: Final = _D(
    "max.message.bytes",
    ConfigType.INT,
    "1048588",
    between(0, INT_MAX),
    "largest batch accepted",
    _LOG,
)
MESSAGE_TIMESTAMP_TYPE: Final = _D(
    "message.timestamp.type",
    ConfigType.STRING,
    "CreateTime",
    one_of("CreateTime", "LogAppendTime"),
    "CreateTime (producer's) or LogAppendTime (broker's)",
    "log, produce path (LogAppendTime)",
)
CLEANUP_POLICY: Final = _D(
    "cleanup.policy",
    ConfigType.LIST,
    "delete",
    list_of("delete", "compact"),
    "delete and/or compact",
    _LOG,
)
FILE_DELETE_DELAY_MS: Final = _D(
    "file.delete.delay.ms",
    ConfigType.LONG,
    "60000",
    between(0, LONG_MAX),
    "wait before removing a .deleted file",
    "log, replica manager (hand-over)",
)
MIN_CLEANABLE_DIRTY_RATIO: Final = _D(
    "min.cleanable.dirty.ratio",
    ConfigType.DOUBLE,
    "0.5",
    between_float(0.0, 1.0),
    "clean once this share of the log is uncleaned",
    _CLEANER,
)
MIN_COMPACTION_LAG_MS: Final = _D(
    "min.compaction.lag.ms",
    ConfigType.LONG,
    "0",
    between(0, LONG_MAX),
    "a record stays uncompacted at least this long",
    _CLEANER,
)
MAX_COMPACTION_LAG_MS: Final = _D(
    "max.compaction.lag.ms",
    ConfigType.LONG,
    str(LONG_MAX),
    between(1, LONG_MAX),
    "a record is compacted at most this long after it was written",
    _CLEANER,
)
DELETE_RETENTION_MS: Final = _D(
    "delete.retention.ms",
    ConfigType.LONG,
    "86400000",
    between(0, LONG_MAX),
    "keep tombstones and transaction markers this long after the clean that first saw them",
    _CLEANER,
)

#: Broker-level synonym of each topic config (Kafka's ServerTopicConfigSynonyms): the broker
#: table defines a row for each, and the broker config translates them into a default LogConfig.
BROKER_SYNONYMS: Final[Mapping[str, str]] = {
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",  # also log.roll.hours
    "segment.index.bytes": "log.index.size.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "retention.ms": "log.retention.ms",  # also log.retention.minutes / .hours
    "retention.bytes": "log.retention.bytes",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "max.message.bytes": "message.max.bytes",
    "message.timestamp.type": "log.message.timestamp.type",
    "cleanup.policy": "log.cleanup.policy",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
}


def _attr(name: str) -> str:
    return name.replace(".", "_")


def _text(value: Any) -> str:
    return ",".join(sorted(value)) if isinstance(value, frozenset) else str(value)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """One partition's log settings: a field per row of ``TOPIC_CONFIGS``, defaulted from it."""

    segment_bytes: int = SEGMENT_BYTES.typed_default()
    segment_ms: int = SEGMENT_MS.typed_default()
    segment_index_bytes: int = SEGMENT_INDEX_BYTES.typed_default()
    index_interval_bytes: int = INDEX_INTERVAL_BYTES.typed_default()
    retention_ms: int = RETENTION_MS.typed_default()
    retention_bytes: int = RETENTION_BYTES.typed_default()
    flush_messages: int = FLUSH_MESSAGES.typed_default()
    flush_ms: int = FLUSH_MS.typed_default()
    max_message_bytes: int = MAX_MESSAGE_BYTES.typed_default()
    message_timestamp_type: str = MESSAGE_TIMESTAMP_TYPE.typed_default()
    cleanup_policy: frozenset[str] = CLEANUP_POLICY.typed_default()
    file_delete_delay_ms: int = FILE_DELETE_DELAY_MS.typed_default()
    min_cleanable_dirty_ratio: float = MIN_CLEANABLE_DIRTY_RATIO.typed_default()
    min_compaction_lag_ms: int = MIN_COMPACTION_LAG_MS.typed_default()
    max_compaction_lag_ms: int = MAX_COMPACTION_LAG_MS.typed_default()
    delete_retention_ms: int = DELETE_RETENTION_MS.typed_default()
    #: Names set explicitly (by overrides) rather than inherited: DescribeConfigs reports sources.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        for key in TOPIC_CONFIGS.values():  # the same validation whether built from strings or fields
            key.parse(_text(getattr(self, _attr(key.name))))
        if self.max_compaction_lag_ms < self.min_compaction_lag_ms:  # Kafka's LogConfig.validateValues
            raise ConfigError(
                f"conflict topic config setting max.compaction.lag.ms ({self.max_compaction_lag_ms}) < "
                f"min.compaction.lag.ms ({self.min_compaction_lag_ms})"
            )

    @classmethod
    def from_properties(cls, props: Mapping[str, str], defaults: LogConfig | None = None) -> LogConfig:
        """Build from Kafka property strings, on top of ``defaults`` (Kafka's built-ins if None)."""
        return (defaults or cls()).overrides(props)

    def overrides(self, props: Mapping[str, str]) -> LogConfig:
        """A copy with ``props`` (topic-level names and string values) layered on top."""
        unknown = sorted(set(props) - set(TOPIC_CONFIGS))
        if unknown:
            raise ConfigError(
                f"Unknown topic configuration(s) {', '.join(unknown)}; supported: {', '.join(TOPIC_CONFIGS)}"
            )
        changes: dict[str, Any] = {}
        for name, raw in props.items():
            if not isinstance(raw, str):
                raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected a string")
            changes[_attr(name)] = TOPIC_CONFIGS[name].parse(raw)
        return dataclasses.replace(self, **changes, explicit=self.explicit | frozenset(props))

    def to_properties(self) -> dict[str, str]:
        """Every setting as Kafka property strings (DescribeConfigs)."""
        return {name: _text(getattr(self, _attr(name))) for name in TOPIC_CONFIGS}

    def replaced(self, changes: Mapping[str, Any]) -> LogConfig:
        """A copy with typed values by topic config name (the broker's ``log.*`` defaults)."""
        return dataclasses.replace(self, **{_attr(name): value for name, value in changes.items()})

    @property
    def compact(self) -> bool:
        """``cleanup.policy`` has ``compact`` (alone or with ``delete``): the log cleaner's."""
        return "compact" in self.cleanup_policy

    @property
    def max_segment_ms(self) -> int:
        """When a segment rolls by age (Kafka's LogConfig.maxSegmentMs): ``segment.ms``, or
        ``max.compaction.lag.ms`` if smaller on a compacted topic (KIP-354: the active segment is
        never cleaned, so it must roll for a record to be compacted within the lag)."""
        if self.compact and self.max_compaction_lag_ms > 0:
            return min(self.segment_ms, self.max_compaction_lag_ms)
        return self.segment_ms

    @property
    def log_append_time(self) -> bool:
        return self.message_timestamp_type == "LogAppendTime"
