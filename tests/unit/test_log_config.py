"""Topic configs: the TOPIC_CONFIGS rows and LogConfig (Kafka's names, defaults, validation, layering)."""

from __future__ import annotations

import dataclasses

import pytest

from shardbroker.config.config_def import ConfigError
from shardbroker.config.log_config import BROKER_SYNONYMS, TOPIC_CONFIGS, LogConfig


def test_defaults_are_kafkas() -> None:
    c = LogConfig()
    assert c.segment_bytes == 1073741824
    assert c.segment_ms == 604800000
    assert c.segment_index_bytes == 10485760
    assert c.index_interval_bytes == 4096
    assert c.retention_ms == 604800000
    assert c.retention_bytes == -1
    assert c.flush_messages == 9223372036854775807
    assert c.flush_ms == 9223372036854775807
    assert c.max_message_bytes == 1048588
    assert c.message_timestamp_type == "CreateTime"
    assert c.cleanup_policy == frozenset({"delete"})
    assert c.file_delete_delay_ms == 60000


def test_from_properties_parses_every_name() -> None:
    props = {
        "segment.bytes": "1048576",
        "segment.ms": "1000",
        "segment.index.bytes": "4096",
        "index.interval.bytes": "128",
        "retention.ms": "-1",
        "retention.bytes": "5000000",
        "flush.messages": "1",
        "flush.ms": "0",
        "max.message.bytes": "2000000",
        "message.timestamp.type": "LogAppendTime",
        "cleanup.policy": "compact, delete",
        "file.delete.delay.ms": "0",
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "100",
        "max.compaction.lag.ms": "200",
        "delete.retention.ms": "0",
    }
    assert set(props) == set(TOPIC_CONFIGS)
    c = LogConfig.from_properties(props)
    assert (c.segment_bytes, c.segment_ms, c.segment_index_bytes, c.index_interval_bytes) == (
        1048576,
        1000,
        4096,
        128,
    )
    assert (c.retention_ms, c.retention_bytes, c.flush_messages, c.flush_ms) == (-1, 5000000, 1, 0)
    assert c.max_message_bytes == 2000000 and c.log_append_time
    assert c.cleanup_policy == frozenset({"compact", "delete"})
    assert c.file_delete_delay_ms == 0
    assert (c.min_cleanable_dirty_ratio, c.min_compaction_lag_ms, c.max_compaction_lag_ms) == (0.01, 100, 200)
    assert c.delete_retention_ms == 0 and c.compact
    assert c.explicit == frozenset(props)
    assert LogConfig.from_properties(c.to_properties()) == c


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("segment.bytes", "13", "[14,"),
        ("segment.bytes", "abc", "not a number"),
        ("segment.ms", "0", "segment.ms"),
        ("retention.ms", "-2", "retention.ms"),
        ("flush.messages", "0", "flush.messages"),
        ("message.timestamp.type", "Now", "CreateTime, LogAppendTime"),
        ("cleanup.policy", "shred", "delete and/or compact"),
        ("min.cleanable.dirty.ratio", "1.5", "[0.0, 1.0]"),
        ("min.cleanable.dirty.ratio", "nan", "min.cleanable.dirty.ratio"),
        ("max.compaction.lag.ms", "0", "max.compaction.lag.ms"),
        ("delete.retention.ms", "-1", "delete.retention.ms"),
        ("cleanup.policy", "", "delete and/or compact"),
        ("max.message.bytes", "-1", "max.message.bytes"),
        ("segment.bytes", "4294967296", "segment.bytes"),
    ],
)
def test_bad_values_are_refused_with_the_name(name: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        LogConfig.from_properties({name: value})
    assert name in str(info.value) and fragment in str(info.value)
    assert info.value.error_code == 40


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"retention\.hours"):
        LogConfig.from_properties({"retention.hours": "1"})


def test_layering_broker_defaults_then_topic_overrides() -> None:
    broker = LogConfig.from_properties({"retention.ms": "1000", "segment.bytes": "2048"})
    topic = broker.overrides({"retention.ms": "5"})
    assert topic.retention_ms == 5 and topic.segment_bytes == 2048
    assert broker.retention_ms == 1000  # frozen: layering copies
    assert topic.explicit >= {"retention.ms"}
    assert LogConfig.from_properties({"flush.ms": "7"}, defaults=broker).segment_bytes == 2048


def test_field_construction_is_validated_too() -> None:
    with pytest.raises(ConfigError):
        LogConfig(index_interval_bytes=-1)


def test_every_topic_config_has_a_broker_synonym() -> None:
    assert set(BROKER_SYNONYMS) == set(TOPIC_CONFIGS)


def test_a_field_per_row_defaulted_from_it() -> None:
    fields = [f.name for f in dataclasses.fields(LogConfig) if f.name != "explicit"]
    assert fields == [name.replace(".", "_") for name in TOPIC_CONFIGS]
    assert LogConfig().to_properties() == {name: key.default for name, key in TOPIC_CONFIGS.items()}


def test_max_compaction_lag_below_min_compaction_lag_is_a_conflict() -> None:
    with pytest.raises(ConfigError, match=r"max.compaction.lag.ms \(10\) < min.compaction.lag.ms \(20\)"):
        LogConfig().overrides({"min.compaction.lag.ms": "20", "max.compaction.lag.ms": "10"})
