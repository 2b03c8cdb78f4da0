"""Checkpoints: MirrorMaker 2's record bytes, which checkpoints are emitted, and which target groups
get offsets (fakes stand in for the clusters)."""

from __future__ import annotations

import struct
from typing import Any

import pytest

from shardbroker.client.admin_groups import GroupListing
from shardbroker.client.connection import KafkaApiError
from shardbroker.mirror.checkpoints import MAX_GROUPS, Checkpoint, CheckpointTask, latest_checkpoints
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.mirror.offset_syncs import MalformedRecord, OffsetSync
from shardbroker.protocol.errors import ErrorCode


def config(**extra: str) -> MirrorConfig:
    props = {
        "source.cluster.alias": "east",
        "source.cluster.bootstrap.servers": "127.0.0.1:1",
        "target.cluster.bootstrap.servers": "127.0.0.1:2",
        **extra,
    }
    return MirrorConfig.from_properties(props)


def test_checkpoint_bytes_are_mirrormaker_struct_encoding() -> None:
    cp = Checkpoint("g1", "east.orders", 2, 100, 40, "meta")
    assert cp.key() == b"\x00\x02g1" + b"\x00\x0beast.orders" + b"\x00\x00\x00\x02"
    # int16 version 0, then Struct{upstreamOffset: INT64, offset: INT64, metadata: STRING}
    assert cp.value() == b"\x00\x00" + struct.pack(">qq", 100, 40) + b"\x00\x04meta"
    assert Checkpoint.decode(cp.key(), cp.value()) == cp


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"\x00\x01" + struct.pack(">qq", 1, 1) + b"\x00\x00", "unknown version 1"),
        (b"\x00\x00" + struct.pack(">qq", 1, 1), "inside field 'metadata'"),
        (b"\x00\x00" + struct.pack(">qq", 1, -5) + b"\x00\x00", "negative"),
        (None, "no value"),
    ],
)
def test_malformed_checkpoints_say_what_is_wrong(value: bytes | None, message: str) -> None:
    with pytest.raises(MalformedRecord, match=message):
        Checkpoint.decode(Checkpoint("g", "t", 0, 1, 1).key(), value)


def test_latest_checkpoints_keeps_the_newest_and_reports_junk() -> None:
    a, b = Checkpoint("g", "t", 0, 1, 1), Checkpoint("g", "t", 0, 9, 5)
    latest, problems = latest_checkpoints([(a.key(), a.value()), (b"x", b"y"), (b.key(), b.value())])
    assert latest == {("g", "t", 0): b}
    assert len(problems) == 1 and "checkpoint key" in problems[0]


class FakeSource:
    def __init__(self, groups: list[GroupListing], offsets: dict[str, dict[tuple[str, int], int]]) -> None:
        self.groups, self.offsets, self.list_calls = groups, offsets, 0

    def list_groups(self) -> list[GroupListing]:
        self.list_calls += 1
        return self.groups

    def committed_offsets(self, group: str) -> dict[tuple[str, int], int]:
        if group not in self.offsets:
            raise KafkaApiError(ErrorCode.GROUP_AUTHORIZATION_FAILED, group)
        return self.offsets[group]


def task_with(source: FakeSource, **extra: str) -> CheckpointTask:
    task = CheckpointTask(config(**extra), MirrorMetrics())
    task._source = source  # type: ignore[assignment]
    task._started = True
    task.store.mark_read_to_end()
    task.store.update = lambda: None  # type: ignore[method-assign]
    written: list[Checkpoint] = []
    task._write = written.extend  # type: ignore[method-assign]
    task.written = written  # type: ignore[attr-defined]
    return task


def sync(task: CheckpointTask, topic: str, partition: int, upstream: int, downstream: int) -> None:
    s = OffsetSync(topic, partition, upstream, downstream)
    task.store.handle_record(s.key(), s.value())


def listing(group: str, protocol_type: str = "consumer") -> GroupListing:
    return GroupListing(group, protocol_type, "Stable", 0)


def test_groups_are_filtered_and_refreshed_per_interval() -> None:
    source = FakeSource(
        [
            listing("app"),
            listing("shardbroker-mirror.east"),  # the mirror's own positions
            listing("console-consumer-1"),  # groups.exclude by default
            listing("connect-cluster", "connect"),  # not a consumer group
            listing("other"),
        ],
        {},
    )
    task = task_with(
        source, **{"groups": "app, other, shardbroker-.*", "refresh.groups.interval.seconds": "10"}
    )
    assert task.groups(100.0) == ["app", "other"]
    assert task.groups(105.0) == ["app", "other"] and source.list_calls == 1
    task.groups(111.0)
    assert source.list_calls == 2


def test_huge_group_lists_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource([listing(f"g{i:06d}") for i in range(MAX_GROUPS + 5)], {})
    task = task_with(source)
    assert len(task.groups(0.0)) == MAX_GROUPS
    assert "narrow the 'groups' regexes" in caplog.text


def test_checkpoints_translate_only_mirrored_synced_partitions_and_never_move_back() -> None:
    source = FakeSource(
        [listing("app"), listing("gone")],
        {"app": {("orders", 0): 150, ("orders", 1): 7, ("__consumer_offsets", 0): 3, ("x.internal", 0): 1}},
    )
    task = task_with(source)
    sync(task, "orders", 0, 100, 10)
    sync(task, "__consumer_offsets", 0, 0, 0)
    assert task.emit_checkpoints(0.0) == 1  # partition 1 has no sync; "gone" is unreadable
    assert task.written == [Checkpoint("app", "east.orders", 0, 150, 11)]  # type: ignore[attr-defined]
    assert task.emit_checkpoints(1.0) == 0  # same translation: not repeated
    sync(task, "orders", 0, 200, 90)
    source.offsets["app"][("orders", 0)] = 210
    assert task.emit_checkpoints(2.0) == 1
    assert task.checkpoints[("app", "east.orders", 0)].downstream_offset == 91
    # the history restarts (both topics recreated): the translation would move back; the group
    # did not, so nothing is emitted
    sync(task, "orders", 0, 5, 80)
    source.offsets["app"][("orders", 0)] = 211
    assert task.emit_checkpoints(3.0) == 0
    # the group itself went back: emitted even though the target offset moves back
    source.offsets["app"][("orders", 0)] = 6
    assert task.emit_checkpoints(4.0) == 1
    assert task.checkpoints[("app", "east.orders", 0)].downstream_offset == 81


def test_identity_policy_keeps_names() -> None:
    source = FakeSource([listing("app")], {"app": {("orders", 0): 5}})
    task = task_with(source, **{"replication.policy.class": "IdentityReplicationPolicy"})
    sync(task, "orders", 0, 5, 5)
    task.emit_checkpoints(0.0)
    assert task.written == [Checkpoint("app", "orders", 0, 5, 5)]  # type: ignore[attr-defined]


class FakeTarget:
    def __init__(self, states: dict[str, str], offsets: dict[str, dict[tuple[str, int], int]]) -> None:
        self.states, self.offsets = states, offsets
        self.commits: list[tuple[str, dict[tuple[str, int], int]]] = []

    def describe_group(self, group: str) -> Any:
        return type("D", (), {"state": self.states.get(group, "Dead")})()

    def committed_offsets(self, group: str) -> dict[tuple[str, int], int]:
        return dict(self.offsets.get(group, {}))

    def commit_offsets(self, group: str, offsets: dict[tuple[str, int], int]) -> None:
        if group == "racing":
            raise KafkaApiError(ErrorCode.UNKNOWN_MEMBER_ID, group)
        self.commits.append((group, offsets))


def test_group_offsets_go_only_to_idle_groups_and_only_forward() -> None:
    task = task_with(FakeSource([], {}))
    for cp in [
        Checkpoint("new", "east.t", 0, 10, 8),
        Checkpoint("idle", "east.t", 0, 10, 8),
        Checkpoint("idle", "east.t", 1, 10, 8),
        Checkpoint("idle", "east.t", 2, 10, 8),
        Checkpoint("busy", "east.t", 0, 10, 8),
        Checkpoint("racing", "east.t", 0, 10, 8),
    ]:
        task.checkpoints[cp.key_tuple] = cp
    target = FakeTarget(
        {"idle": "Empty", "busy": "Stable", "racing": "Empty"},
        {"idle": {("east.t", 0): 9, ("east.t", 1): 3}},
    )
    task._target = target  # type: ignore[assignment]
    done = task.sync_group_offsets()
    assert done == {"new": {("east.t", 0): 8}, "idle": {("east.t", 1): 8, ("east.t", 2): 8}}
    assert sorted(g for g, _ in target.commits) == ["idle", "new"]
