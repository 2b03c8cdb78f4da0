"""topic_sync decisions: which topics are mirrored, created, grown; which configs are copied."""

from __future__ import annotations

from shardbroker.client.admin_topics import ConfigEntry
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.topic_sync import configs_to_copy, plan

BASE = {
    "source.cluster.alias": "east",
    "target.cluster.alias": "west",
    "source.cluster.bootstrap.servers": "127.0.0.1:1",
    "target.cluster.bootstrap.servers": "127.0.0.1:2",
}


def test_plan_creates_grows_and_filters() -> None:
    config = MirrorConfig.from_properties({**BASE, "topics.exclude": "secret.*, __.*, .*[\\-\\.]internal"})
    source = {
        "orders": 3,
        "clicks": 4,
        "secret-x": 1,
        "__consumer_offsets": 50,
        "west.orders": 3,
        "mm2-offset-syncs.west.internal": 1,
    }
    target = {"east.clicks": 2, "orders": 9}
    decided = plan(config, source, target)
    assert decided.mirrored == {"clicks": 4, "orders": 3}  # west.orders came from the target: a cycle
    assert decided.create == {"east.orders": ("orders", 3)}
    assert decided.grow == {"east.clicks": 4}


def test_plan_identity_policy_and_more_target_partitions() -> None:
    config = MirrorConfig.from_properties({**BASE, "replication.policy.class": "IdentityReplicationPolicy"})
    decided = plan(config, {"orders": 3}, {"orders": 5})
    assert decided.mirrored == {"orders": 3} and not decided.create and not decided.grow


def test_configs_copied_are_the_topics_own_settings_that_matter() -> None:
    entries = [
        ConfigEntry("retention.ms", "1000", "DYNAMIC_TOPIC_CONFIG", False, False),
        ConfigEntry("max.message.bytes", "2048", "DYNAMIC_TOPIC_CONFIG", False, False),
        ConfigEntry("cleanup.policy", "delete", "DEFAULT_CONFIG", False, False),
        ConfigEntry("segment.bytes", "1048576", "STATIC_BROKER_CONFIG", False, False),
        ConfigEntry("min.insync.replicas", "2", "DYNAMIC_TOPIC_CONFIG", False, False),
    ]
    assert configs_to_copy(entries) == {"retention.ms": "1000", "max.message.bytes": "2048"}
