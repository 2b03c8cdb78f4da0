"""BrokerConfig: Kafka's server property names from TOML and flags, defaults, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    AUTO_CREATE_TOPICS_ENABLE,
    AUTO_LEADER_REBALANCE_ENABLE,
    BROKER_CONFIGS,
    CONNECTIONS_MAX_IDLE_MS,
    FETCH_MAX_BYTES,
    GROUP_INITIAL_REBALANCE_DELAY_MS,
    LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS,
    LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
    NUM_PARTITIONS,
    SOCKET_REQUEST_MAX_BYTES,
)
from shardbroker.config.config_def import ConfigError
from shardbroker.config.listeners import Endpoint
from shardbroker.config.log_config import BROKER_SYNONYMS, LogConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_contracts() -> None:
    c = BrokerConfig()
    assert c.data_dir == Path("shardbroker-data")
    assert c.workers >= 1
    assert c.listeners == (Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 9092),)
    assert (c.metrics_host, c.metrics_port) == ("127.0.0.1", 9404)
    assert c.advertised() == c.listeners
    assert c.get(NUM_PARTITIONS) == 1 and c.get(AUTO_CREATE_TOPICS_ENABLE) is True
    assert c.log_defaults.max_message_bytes == 1048588
    assert c.get(SOCKET_REQUEST_MAX_BYTES) == 104857600
    assert c.get(CONNECTIONS_MAX_IDLE_MS) == 600000
    assert c.get(FETCH_MAX_BYTES) == 57671680
    assert c.get(GROUP_INITIAL_REBALANCE_DELAY_MS) == 3000
    assert c.log_defaults == LogConfig()
    assert dict(c.properties) == {}


def test_load_without_anything_equals_defaults() -> None:
    c = BrokerConfig.load(None, {})
    assert c.listeners[0].port == 9092 and c.log_defaults == LogConfig() and c.properties == {}


def test_toml_quoted_and_dotted_keys_and_value_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '"log.dirs" = "/var/lib/sb"\n'
        "num.partitions = 3\n"  # unquoted: TOML makes a table of it; names are joined back
        "auto.create.topics.enable = false\n"
        'listeners = "PLAINTEXT://127.0.0.2:9500"\n'
        '"advertised.listeners" = "PLAINTEXT://broker.example:9500"\n'
        "workers = 2\n"
        '"metrics.listen" = "0.0.0.0:9999"\n'
        '"message.max.bytes" = "2000000"\n',
    )
    c = BrokerConfig.load(path, {})
    assert c.data_dir == Path("/var/lib/sb")
    assert c.get(NUM_PARTITIONS) == 3
    assert c.get(AUTO_CREATE_TOPICS_ENABLE) is False
    assert (c.listeners[0].host, c.listeners[0].port) == ("127.0.0.2", 9500)
    assert c.advertised()[0].host == "broker.example"
    assert c.workers == 2
    assert (c.metrics_host, c.metrics_port) == ("0.0.0.0", 9999)
    assert c.log_defaults.max_message_bytes == 2000000  # message.max.bytes is max.message.bytes' synonym
    assert c.properties["num.partitions"] == "3"
    assert c.properties["auto.create.topics.enable"] == "false"


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '"listeners" = "127.0.0.1:9000"\nworkers = 4\n"log.dirs" = "a"\n')
    c = BrokerConfig.load(path, {"listeners": "127.0.0.1:9100", "log.dirs": "b"})
    assert c.listeners[0].port == 9100 and c.workers == 4 and c.data_dir == Path("b")
    assert c.properties["listeners"] == "127.0.0.1:9100"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("PLAINTEXT://localhost:19092", ("localhost", 19092)),
        ("plaintext://:9092", ("0.0.0.0", 9092)),
        ("[::1]:9092", ("::1", 9092)),
    ],
)
def test_listener_forms(raw: str, expected: tuple[str, int]) -> None:
    c = BrokerConfig.load(None, {"listeners": raw, "workers": "1"})
    assert (c.listeners[0].listener, c.listeners[0].host, c.listeners[0].port) == ("PLAINTEXT", *expected)


def test_wildcard_listener_advertises_a_host_name() -> None:
    c = BrokerConfig.load(None, {"listeners": ":9092", "workers": "1"})
    assert c.advertised()[0].host not in ("", "0.0.0.0")
    short = BrokerConfig.load(None, {"listeners": ":9092", "advertised.listeners": "h"})
    assert (short.advertised()[0].host, short.advertised()[0].port) == ("h", 9092)


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        ({"listeners": "127.0.0.1"}, "HOST:PORT"),
        ({"listeners": "127.0.0.1:notaport"}, "port is not a number"),
        ({"listeners": "127.0.0.1:70000"}, "[1, 65535]"),
        ({"listeners": "CLIENTS://127.0.0.1:9093"}, "No security protocol defined for listener CLIENTS"),
        ({"listeners": "PLAINTEXT://a:1,plaintext://b:2"}, "each listener must have a different name"),
        ({"metrics.listen": "9404"}, "metrics.listen"),
        ({"workers": "0"}, "workers"),
        ({"workers": "two"}, "not a number"),
        ({"num.partitions": "0"}, "num.partitions"),
        ({"auto.create.topics.enable": "yes"}, "true or false"),
        ({"log.dirs": "/a,/b"}, "exactly one directory"),
        ({"listeners": "127.0.0.1:65535", "workers": "2"}, "beyond 65535"),
        ({"log.segment.bytes": "10"}, "log.segment.bytes"),
        ({"log.cleanup.policy": "shred"}, "log.cleanup.policy"),
        ({"log.retention.hours": "x"}, "log.retention.hours"),
    ],
)
def test_bad_values_name_the_property(props: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as err:
        BrokerConfig.load(None, props)
    assert fragment in str(err.value)


def test_unknown_property_suggests_the_close_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'log\.retension\.ms'.*did you mean log\.retention\.ms\?"):
        BrokerConfig.load(write(tmp_path, '"log.retension.ms" = 5\n'), {})
    with pytest.raises(ConfigError, match=r"Unknown configuration 'zookeeper\.connect'"):
        BrokerConfig.load(None, {"zookeeper.connect": "x"})


def test_file_errors_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        BrokerConfig.load(tmp_path / "missing.toml", {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        BrokerConfig.load(write(tmp_path, "this is = = not toml"), {})
    with pytest.raises(ConfigError, match="expected a string, number or boolean"):
        BrokerConfig.load(write(tmp_path, '"num.partitions" = [1]\n'), {})
    with pytest.raises(ConfigError, match=r"num\.partitions"):
        BrokerConfig.load(write(tmp_path, '"num.partitions" = 1.5\n'), {})
    ratio = BrokerConfig.load(write(tmp_path, '"log.cleaner.min.cleanable.ratio" = 0.25\n'), {})
    assert ratio.log_defaults.min_cleanable_dirty_ratio == 0.25


def test_every_broker_synonym_sets_the_log_default() -> None:
    samples = {
        "segment.bytes": "2048",
        "segment.ms": "1000",
        "segment.index.bytes": "4096",
        "index.interval.bytes": "100",
        "retention.ms": "5000",
        "retention.bytes": "123456",
        "flush.messages": "10",
        "flush.ms": "20",
        "max.message.bytes": "5000",
        "message.timestamp.type": "LogAppendTime",
        "cleanup.policy": "compact,delete",
        "file.delete.delay.ms": "7",
        "min.cleanable.dirty.ratio": "0.25",
        "min.compaction.lag.ms": "30",
        "max.compaction.lag.ms": "40",
        "delete.retention.ms": "50",
    }
    assert set(samples) == set(BROKER_SYNONYMS)
    c = BrokerConfig.load(None, {BROKER_SYNONYMS[k]: v for k, v in samples.items()})
    assert c.log_defaults == LogConfig().overrides(samples)
    assert c.log_defaults.explicit == frozenset()  # broker defaults are not topic overrides
    assert all(name in BROKER_CONFIGS for name in BROKER_SYNONYMS.values())


def test_time_unit_synonyms_and_their_precedence() -> None:
    assert BrokerConfig.load(None, {"log.retention.hours": "2"}).log_defaults.retention_ms == 7_200_000
    assert BrokerConfig.load(None, {"log.retention.minutes": "3"}).log_defaults.retention_ms == 180_000
    both = {"log.retention.hours": "2", "log.retention.minutes": "3", "log.retention.ms": "42"}
    assert BrokerConfig.load(None, both).log_defaults.retention_ms == 42
    assert BrokerConfig.load(None, {"log.retention.hours": "-1"}).log_defaults.retention_ms == -1
    assert BrokerConfig.load(None, {"log.roll.hours": "1"}).log_defaults.segment_ms == 3_600_000
    rolled = BrokerConfig.load(None, {"log.roll.hours": "1", "log.roll.ms": "5"})
    assert rolled.log_defaults.segment_ms == 5


@pytest.mark.parametrize(
    ("name", "raw", "fragment"),
    [
        ("group.initial.rebalance.delay.ms", "abc", "not a number (must be in [0, 2147483647])"),
        ("log.retention.check.interval.ms", "-5", "must be in [1, 9223372036854775807]"),
    ],
)
def test_values_the_workers_once_ignored_are_refused(name: str, raw: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig.load(None, {name: raw})
    assert name in str(info.value) and fragment in str(info.value)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match=r"offsets\.retention\.minutes"):
        BrokerConfig(properties={"offsets.retention.minutes": "0"})


def test_rebalance_properties() -> None:
    c = BrokerConfig.load(
        None,
        {
            "auto.leader.rebalance.enable": "false",
            "leader.imbalance.check.interval.seconds": "5",
            "leader.imbalance.per.broker.percentage": "25",
        },
    )
    assert not c.get(AUTO_LEADER_REBALANCE_ENABLE)
    assert c.get(LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS) == 5
    assert c.get(LEADER_IMBALANCE_PER_BROKER_PERCENTAGE) == 25
    assert BrokerConfig().get(AUTO_LEADER_REBALANCE_ENABLE)  # Kafka's default: on
    with pytest.raises(ConfigError, match=r"leader\.imbalance\.check\.interval\.seconds"):
        BrokerConfig.load(None, {"leader.imbalance.check.interval.seconds": "0"})
