"""MirrorMaker 2's replication policies: remote names, upstream names and the cycle check."""

from __future__ import annotations

import pytest

from shardbroker.mirror.replication_policy import (
    DEFAULT_POLICY,
    IDENTITY_POLICY,
    ReplicationPolicy,
)

DEFAULT = ReplicationPolicy()
IDENTITY = ReplicationPolicy(IDENTITY_POLICY)


def test_the_default_policy_prefixes_the_source_alias_and_reads_it_back() -> None:
    assert DEFAULT.format_remote_topic("east", "orders") == "east.orders"
    assert DEFAULT.topic_source("east.orders") == "east"
    assert DEFAULT.upstream_topic("east.orders") == "orders"
    # A dotted topic keeps its dots after the alias.
    assert DEFAULT.upstream_topic(DEFAULT.format_remote_topic("east", "a.b.c")) == "a.b.c"


@pytest.mark.parametrize("topic", ["orders", ".orders", "orders.", "."])
def test_a_name_without_alias_and_rest_has_no_source(topic: str) -> None:
    assert DEFAULT.topic_source(topic) is None
    assert DEFAULT.upstream_topic(topic) is None


def test_a_custom_separator_is_used_both_ways() -> None:
    policy = ReplicationPolicy(DEFAULT_POLICY, "__")
    assert policy.format_remote_topic("east", "a.b") == "east__a.b"
    assert policy.topic_source("east__a.b") == "east"
    assert policy.upstream_topic("east__a.b") == "a.b"


def test_the_cycle_check_finds_the_target_at_any_remove() -> None:
    # Mirroring east -> west: "west.orders" came from west; "central.west.orders" too, two hops back.
    assert DEFAULT.is_cycle("west.orders", "west")
    assert DEFAULT.is_cycle("central.west.orders", "west")
    assert not DEFAULT.is_cycle("central.orders", "west")
    assert not DEFAULT.is_cycle("orders", "west")


def test_the_identity_policy_keeps_names_and_cannot_see_cycles() -> None:
    assert IDENTITY.format_remote_topic("east", "orders") == "orders"
    assert IDENTITY.upstream_topic("west.orders") == "west.orders"
    assert IDENTITY.topic_source("west.orders") is None
    assert not IDENTITY.is_cycle("west.orders", "west")


def test_internal_topic_names_are_mirrormaker_2s() -> None:
    assert ReplicationPolicy.offset_syncs_topic("west") == "mm2-offset-syncs.west.internal"
    assert ReplicationPolicy.checkpoints_topic("east") == "east.checkpoints.internal"


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown replication policy"):
        ReplicationPolicy("com.example.MyPolicy")
    with pytest.raises(ValueError, match="separator"):
        ReplicationPolicy(DEFAULT_POLICY, "")
