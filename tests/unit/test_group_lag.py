"""Consumer group lag: the committed-offsets table (ipc/group_offsets.py), the coordinator's
publisher, and the supervisor's join with the log end offsets (group_lag.GroupLagSource)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardbroker.broker.group_coordinator import CommitItem, GroupCoordinator
from shardbroker.ipc import group_offsets as go
from shardbroker.ipc.counters import CounterTable, PartitionRow, WorkerCounters
from shardbroker.ipc.group_offsets import GroupOffsetTable, WorkerGroupOffsets
from shardbroker.observability.group_lag import GroupLagSource
from shardbroker.observability.metrics import MetricsCollector
from tests.unit.replica_fakes import run


@pytest.fixture
def instance() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def offsets(instance: str) -> Iterator[GroupOffsetTable]:
    t = GroupOffsetTable.create(instance, workers=2, rows=8)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def counters(instance: str) -> Iterator[CounterTable]:
    t = CounterTable.create(instance, workers=2, rows=8)
    try:
        yield t
    finally:
        t.close()


def end_offset(w: WorkerCounters, topic: str, partition: int, end: int) -> PartitionRow:
    row = w.open_partition(topic, partition)
    w.publish_partition(row, 0, 0, 0, end, 0, 0, 0, 0)
    return row


def lag_of(source: GroupLagSource) -> dict[tuple[str, str, str], float]:
    families = {f.name: f for f in source()}
    return {
        (s.labels["group"], s.labels["topic"], s.labels["partition"]): s.value
        for s in families["shardbroker_consumergroup_lag"].samples
    }


# -- the table ---------------------------------------------------------------------------------


def test_rows_follow_the_published_set(offsets: GroupOffsetTable) -> None:
    w = offsets.worker(1)
    w.publish([("g", "t", 0, 5), ("g", "t", 1, 7)])
    assert sorted(offsets.snapshot()) == [("g", "t", 0, 5), ("g", "t", 1, 7)]
    assert all(r in range(4, 8) for r in range(offsets.rows) if offsets.state[r] > 0)  # worker 1's rows
    assert w.misc(go.ROWS_IN_USE) == 2
    w.publish([("g", "t", 0, 9)])  # offset moved; t-1 gone (deleted, expired, unloaded)
    assert offsets.snapshot() == [("g", "t", 0, 9)]
    assert w.misc(go.ROWS_IN_USE) == 1
    w.clear()
    assert offsets.snapshot() == []
    assert w.misc(go.ROWS_IN_USE) == 0


def test_writers_of_two_workers_never_share_rows(offsets: GroupOffsetTable) -> None:
    w0, w1 = offsets.worker(0), offsets.worker(1)
    w0.publish([("a", "t", 0, 1)])
    w1.publish([("b", "t", 0, 2)])
    assert sorted(offsets.snapshot()) == [("a", "t", 0, 1), ("b", "t", 0, 2)]
    w1.clear()
    assert offsets.snapshot() == [("a", "t", 0, 1)]


def test_overflow_is_counted_not_exported(offsets: GroupOffsetTable) -> None:
    w = offsets.worker(0)  # 4 rows
    long_group = "x" * (go.MAX_GROUP + 1)
    w.publish([*(("g", "t", p, p) for p in range(6)), (long_group, "t", 0, 1)])
    assert len(offsets.snapshot()) == 4
    assert w.misc(go.OVERFLOW) == 3
    assert offsets.misc[0, go.OVERFLOW] == 3
    w.publish([("g", "t", 0, 0)])
    assert w.misc(go.OVERFLOW) == 0 and len(offsets.snapshot()) == 1


def test_reused_row_gets_its_new_label(offsets: GroupOffsetTable) -> None:
    w = offsets.worker(0)
    w.publish([("old", "t", 0, 1)])
    assert offsets.snapshot() == [("old", "t", 0, 1)]
    w.publish([("new", "u", 3, 2)])  # the same row, a new generation
    assert offsets.snapshot() == [("new", "u", 3, 2)]


def test_a_restarted_worker_starts_empty(offsets: GroupOffsetTable) -> None:
    offsets.worker(0).publish([("g", "t", 0, 1)])
    offsets.worker(0)  # the restarted worker's writer zeroes its rows
    assert offsets.snapshot() == []


def test_unicode_names_and_attach(instance: str, offsets: GroupOffsetTable) -> None:
    offsets.worker(0).publish([("grüppe", "tópic", 2, 3)])
    other = GroupOffsetTable.attach(instance)
    try:
        assert other.snapshot() == [("grüppe", "tópic", 2, 3)]
    finally:
        other.close()


def test_private_writer() -> None:
    w = WorkerGroupOffsets.private()
    w.publish([("g", "t", 0, 1)])
    assert len(w) == 1 and w.misc(go.ROWS_IN_USE) == 1


# -- the join ---------------------------------------------------------------------------------


def test_lag_is_end_minus_committed(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    c = counters.worker(0)
    end_offset(c, "t", 0, 100)
    end_offset(counters.worker(1), "t", 1, 50)
    offsets.worker(1).publish([("g", "t", 0, 40), ("g", "t", 1, 50), ("h", "t", 0, 0)])
    assert lag_of(GroupLagSource(counters, offsets)) == {
        ("g", "t", "0"): 60,
        ("g", "t", "1"): 0,  # fully consumed: committed == end (the offset of the next record)
        ("h", "t", "0"): 100,
    }


def test_nothing_committed_no_series(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    end_offset(counters.worker(0), "t", 0, 10)
    assert lag_of(GroupLagSource(counters, offsets)) == {}


def test_unknown_end_is_skipped(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    c = counters.worker(0)
    row = end_offset(c, "t", 0, 10)
    offsets.worker(0).publish([("g", "t", 0, 4), ("g", "elsewhere", 0, 1)])
    source = GroupLagSource(counters, offsets)
    assert lag_of(source) == {("g", "t", "0"): 6}
    c.close_partition(row)  # the partition left: its end offset is unknown now
    assert lag_of(source) == {}


def test_committed_beyond_the_end_is_zero(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    # The log was truncated, or the topic deleted and created again: nothing to read, lag 0
    # (Kafka's tool would show end - committed < 0; group_lag.py says why not here).
    end_offset(counters.worker(0), "t", 0, 10)
    offsets.worker(0).publish([("g", "t", 0, 25)])
    assert lag_of(GroupLagSource(counters, offsets)) == {("g", "t", "0"): 0}
    assert GroupLagSource.lag(10, 25) == 0 and GroupLagSource.lag(10, 3) == 7


def test_committed_behind_the_log_start_counts_from_the_end(
    counters: CounterTable, offsets: GroupOffsetTable
) -> None:
    # DeleteRecords moved the log start to 80: the lag is still end - committed, as in Kafka.
    c = counters.worker(0)
    c.publish_partition(c.open_partition("t", 0), 0, 0, 0, 100, 80, 0, 0, 0)
    offsets.worker(0).publish([("g", "t", 0, 30)])
    assert lag_of(GroupLagSource(counters, offsets)) == {("g", "t", "0"): 70}


def test_no_offset_and_duplicates_are_left_out(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    end_offset(counters.worker(0), "t", 0, 10)
    offsets.worker(0).publish([("g", "t", 0, -1)])
    offsets.worker(1).publish([("h", "t", 0, 2)])
    offsets.worker(0).publish([("g", "t", 0, -1), ("h", "t", 0, 2)])  # a group moving: two rows
    assert lag_of(GroupLagSource(counters, offsets)) == {("h", "t", "0"): 8}


def test_through_the_collector_with_overflow(counters: CounterTable, offsets: GroupOffsetTable) -> None:
    end_offset(counters.worker(0), "t", 0, 10)
    offsets.worker(0).publish([("g", "t", 0, 4), *(("g", "u", p, 0) for p in range(4))])
    collector = MetricsCollector(counters)
    collector.add_source(GroupLagSource(counters, offsets))
    text = collector.exposition().decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert (
        samples[("shardbroker_consumergroup_lag", (("group", "g"), ("partition", "0"), ("topic", "t")))] == 6
    )
    assert samples[("shardbroker_consumergroup_offsets_overflow", (("worker", "0"),))] == 1
    assert samples[("shardbroker_consumergroup_offsets_overflow", (("worker", "1"),))] == 0
    assert sum(1 for name, _ in samples if name == "shardbroker_consumergroup_lag") == 1


# -- the coordinator's publisher -------------------------------------------------------------


def test_coordinator_publishes_on_the_tick_and_frees_rows(tmp_path: Path, instance: str) -> None:
    from tests.unit.test_group_coordinator import group_on, img, started

    table = GroupOffsetTable.create(f"{instance}g", workers=1, rows=16)
    kept, gone = group_on(0), group_on(2)

    async def commit(gc: GroupCoordinator, group: str, *items: CommitItem) -> None:
        codes = await gc.commit(
            group, member_id="", group_instance_id=None, generation_id=-1, retention_ms=-1, items=items
        )
        assert codes == [0] * len(items)

    async def scenario() -> None:
        async with started(tmp_path) as (h, gc):
            gc.offsets_table = table.worker(0)
            await commit(gc, kept, CommitItem("t", 0, 5), CommitItem("t", 1, 9))
            await commit(gc, gone, CommitItem("t", 0, 2))
            assert table.snapshot() == []  # nothing written per OffsetCommit: the tick copies
            h.replicas.publish_metrics()  # the worker's 1 s tick
            assert sorted(table.snapshot()) == [(gone, "t", 0, 2), (kept, "t", 0, 5), (kept, "t", 1, 9)]
            await commit(gc, kept, CommitItem("t", 0, 7))
            assert await gc.delete_group(gone) == 0
            h.replicas.housekeeping()
            assert sorted(table.snapshot()) == [(kept, "t", 0, 7), (kept, "t", 1, 9)]
            await h.channel.push(img([1, 1, 1, 1]))  # the coordinator loses its partitions
            h.replicas.publish_metrics()
            assert table.snapshot() == []

    try:
        run(scenario())
    finally:
        table.close()
