"""The rebalance planner (shardbroker/rebalance.py): scenarios with known answers, then properties
over random placements and loads (a plan never raises the busiest worker's load, never moves an
internal topic, is deterministic, converges)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.control.rebalance import PartitionMove, plan_moves

TP = tuple[str, int]


def worker_loads(load: Mapping[TP, float], owners: Mapping[TP, int], workers: int) -> list[Fraction]:
    """Exact sums: float rounding must not decide a comparison here either."""
    totals = [Fraction()] * workers
    for tp, w in owners.items():
        totals[w] += Fraction(load.get(tp, 0))
    return totals


def squares(values: Sequence[Fraction | int]) -> Fraction:
    return sum((Fraction(x) ** 2 for x in values), Fraction())


def user_counts(owners: Mapping[TP, int], workers: int) -> list[int]:
    counts = Counter(w for (t, _), w in owners.items() if t != "__consumer_offsets")
    return [counts[w] for w in range(workers)]


def apply(owners: Mapping[TP, int], plan: list[PartitionMove]) -> dict[TP, int]:
    after = dict(owners)
    for move in plan:
        assert after[(move.topic, move.partition)] == move.from_worker
        after[(move.topic, move.partition)] = move.to_worker
    return after


# -- load ------------------------------------------------------------------------------------------


def test_busiest_worker_gives_the_move_that_evens_the_pair() -> None:
    owners = {("t", 0): 0, ("t", 1): 0, ("t", 2): 0, ("t", 3): 1}
    load = {("t", 0): 50.0, ("t", 1): 30.0, ("t", 2): 20.0, ("t", 3): 10.0}
    # worker 0: 100, worker 1: 10. Moving 50 -> (50, 60); 30 -> (70, 40); 20 -> (80, 30).
    assert plan_moves(load, owners, 2) == [PartitionMove("t", 0, 0, 1)]


def test_a_partition_hotter_than_the_gap_stays() -> None:
    # one partition carries almost everything: moving it would only make worker 1 the hotspot
    owners = {("hot", 0): 0, ("cold", 0): 1}
    load = {("hot", 0): 100.0, ("cold", 0): 1.0}
    assert plan_moves(load, owners, 2) == []


def test_the_target_never_ends_hotter_than_the_source_was() -> None:
    # worker 0: 90 + 10; worker 1: 0. Both moves leave max 90: the smaller load moves.
    owners = {("a", 0): 0, ("a", 1): 0, ("b", 0): 1}
    load = {("a", 0): 90.0, ("a", 1): 10.0}
    assert plan_moves(load, owners, 2) == [PartitionMove("a", 1, 0, 1)]


def test_within_the_imbalance_percentage_nothing_moves() -> None:
    owners = {("t", 0): 0, ("t", 1): 1}
    load = {("t", 0): 104.0, ("t", 1): 96.0}  # mean 100: worker 0 runs 4 % over
    assert plan_moves(load, owners, 2) == []
    assert plan_moves(load, owners, 2, imbalance_percentage=3) == []  # no move would lower 104
    owners[("t", 2)] = 0
    load[("t", 2)] = 5.0  # worker 0 at 109 over a mean of 102.5: 6.3 % over
    assert plan_moves(load, owners, 2) == []
    assert plan_moves(load, owners, 2, imbalance_percentage=5) == [PartitionMove("t", 2, 0, 1)]


def test_ties_go_to_the_lowest_node_id_then_topic_and_partition() -> None:
    owners = {("b", 0): 0, ("a", 1): 0, ("a", 0): 1, ("c", 0): 1, ("z", 0): 2, ("z", 1): 3}
    load = {("b", 0): 10.0, ("a", 1): 10.0, ("a", 0): 10.0, ("c", 0): 10.0}
    # workers 0 and 1 tie at 20, workers 2 and 3 at 0: from 0 to 2, and a-1 before b-0
    assert plan_moves(load, owners, 4) == [PartitionMove("a", 1, 0, 2)]
    assert plan_moves(load, owners, 4, max_moves=2) == [
        PartitionMove("a", 1, 0, 2),
        PartitionMove("a", 0, 1, 3),
    ]


def test_max_moves_bounds_the_plan_and_a_partition_moves_once() -> None:
    owners = {("t", p): 0 for p in range(6)}
    load = {("t", p): 10.0 for p in range(6)}
    assert len(plan_moves(load, owners, 3)) == 1
    plan = plan_moves(load, owners, 3, max_moves=10)
    assert plan == [
        PartitionMove("t", 0, 0, 1),
        PartitionMove("t", 1, 0, 2),
        PartitionMove("t", 2, 0, 1),
        PartitionMove("t", 3, 0, 2),
    ]
    assert worker_loads(load, apply(owners, plan), 3) == [20.0, 20.0, 20.0]
    assert plan_moves(load, owners, 3, max_moves=0) == []


def test_added_workers_receive_load() -> None:
    # two busy workers, two new ones (owning nothing)
    owners = {("t", p): p % 2 for p in range(8)}
    load = {("t", p): float(10 + p) for p in range(8)}
    plan = plan_moves(load, owners, 4, max_moves=8)
    after = worker_loads(load, apply(owners, plan), 4)
    assert min(after) > 0
    assert max(after) < max(worker_loads(load, owners, 4))


def test_internal_load_counts_but_internal_partitions_stay() -> None:
    owners = {("__consumer_offsets", 0): 0, ("t", 0): 0, ("t", 1): 1}
    load = {("__consumer_offsets", 0): 100.0, ("t", 0): 10.0, ("t", 1): 60.0}
    # worker 0 carries 110 (100 of it the coordinator's), worker 1 60: t-0 leaves worker 0
    assert plan_moves(load, owners, 2) == [PartitionMove("t", 0, 0, 1)]


def test_internal_topics_never_move_and_are_left_out_of_counts() -> None:
    owners = {("__consumer_offsets", p): 0 for p in range(4)} | {("t", 0): 1}
    load = {("__consumer_offsets", p): 1000.0 for p in range(4)}
    assert plan_moves(load, owners, 2, max_moves=5) == []
    # an idle broker: only t-0 counts, so one partition on worker 1 is balanced
    assert plan_moves({}, owners, 2, max_moves=5) == []
    assert plan_moves(load, owners, 2, internal_topics=()) != []


def test_one_worker_has_nowhere_to_move() -> None:
    owners = {("t", p): 0 for p in range(4)}
    assert plan_moves({("t", 0): 5.0}, owners, 1) == []
    assert plan_moves({}, owners, 1) == []


def test_load_of_unknown_partitions_is_ignored() -> None:
    owners = {("t", 0): 0, ("t", 1): 0}
    load = {("gone", 0): 1e9, ("t", 0): 10.0, ("t", 1): 10.0}
    assert plan_moves(load, owners, 2) == [PartitionMove("t", 0, 0, 1)]


# -- no load: counts ------------------------------------------------------------------------------


def test_idle_broker_fills_added_workers_by_count() -> None:
    owners = {(t, p): p % 2 for t in ("a", "b") for p in range(3)}  # 4 on worker 0, 2 on worker 1
    plan = plan_moves({}, owners, 4, max_moves=10)
    after = apply(owners, plan)
    assert plan == [PartitionMove("a", 0, 0, 2), PartitionMove("a", 2, 0, 3)]
    assert sorted(Counter(after.values()).values()) == [1, 1, 2, 2]


def test_idle_broker_prefers_a_topic_the_target_lacks() -> None:
    owners = {("a", 0): 0, ("a", 1): 0, ("b", 0): 0, ("a", 2): 1}
    assert plan_moves({}, owners, 2) == [PartitionMove("b", 0, 0, 1)]


def test_counts_within_one_stay() -> None:
    owners = {("t", 0): 0, ("t", 1): 0, ("t", 2): 1}
    assert plan_moves({}, owners, 2) == []
    assert plan_moves({("t", 0): 0.0}, owners, 2) == []


def test_zero_load_partitions_are_left_alone_under_load() -> None:
    owners = {("busy", 0): 0, ("idle", 0): 0, ("idle", 1): 0, ("idle", 2): 0}
    assert plan_moves({("busy", 0): 50.0}, owners, 2) == []


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "owners", "workers", "kwargs", "match"),
    [
        ({}, {}, 0, {}, "workers must be at least 1"),
        ({}, {("t", 0): 2}, 2, {}, "t-0 is owned by worker 2, not one of 0-1"),
        ({}, {("t", 0): -1}, 2, {}, "owned by worker -1"),
        ({("t", 0): -1.0}, {("t", 0): 0}, 2, {}, "load of t-0 must be finite and 0 or more"),
        ({("t", 0): float("nan")}, {("t", 0): 0}, 2, {}, "load of t-0"),
        ({("t", 0): float("inf")}, {("t", 0): 0}, 2, {}, "load of t-0"),
        ({}, {}, 2, {"max_moves": -1}, "max_moves must be 0 or more"),
        ({}, {}, 2, {"imbalance_percentage": -5}, "leader.imbalance.per.broker.percentage"),
    ],
)
def test_bad_input_is_refused_with_the_reason(
    load: dict[TP, float], owners: dict[TP, int], workers: int, kwargs: dict[str, float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        plan_moves(load, owners, workers, **kwargs)  # type: ignore[arg-type]


# -- properties ------------------------------------------------------------------------------------

TOPICS = ("a", "b", "__consumer_offsets")


@st.composite
def clusters(draw: st.DrawFn) -> tuple[dict[TP, float], dict[TP, int], int]:
    workers = draw(st.integers(1, 5))
    keys = draw(st.sets(st.tuples(st.sampled_from(TOPICS), st.integers(0, 7)), max_size=24))
    owners = {tp: draw(st.integers(0, workers - 1)) for tp in sorted(keys)}
    loads = st.one_of(
        st.just(0.0),
        st.floats(0, 1e6, allow_nan=False, allow_infinity=False),
        st.integers(0, 1000).map(float),
    )
    idle = draw(st.booleans())
    load = {} if idle else {tp: draw(loads) for tp in owners}
    return load, owners, workers


@settings(max_examples=300, deadline=None)
@given(clusters(), st.integers(0, 6), st.sampled_from([0.0, 10.0, 50.0]))
def test_plan_properties(
    cluster: tuple[dict[TP, float], dict[TP, int], int], max_moves: int, pct: float
) -> None:
    load, owners, workers = cluster
    plan = plan_moves(load, owners, workers, max_moves=max_moves, imbalance_percentage=pct)
    assert plan == plan_moves(
        dict(reversed(load.items())),
        dict(reversed(owners.items())),
        workers,
        max_moves=max_moves,
        imbalance_percentage=pct,
    ), "order of input matters"
    assert len(plan) <= max_moves
    assert all(m.topic != "__consumer_offsets" for m in plan)
    assert all(m.from_worker != m.to_worker and 0 <= m.to_worker < workers for m in plan)
    assert len({(m.topic, m.partition) for m in plan}) == len(plan)
    after = apply(owners, plan)  # also: each move starts where the partition is
    before_loads, after_loads = worker_loads(load, owners, workers), worker_loads(load, after, workers)
    assert max(after_loads, default=0) <= max(before_loads, default=0)
    if plan:  # each move lowers the sum of squares (of loads; of counts when idle): no ping-pong
        if any(v for (t, _), v in load.items() if t != "__consumer_offsets"):
            assert squares(after_loads) < squares(before_loads)
        else:
            assert squares(user_counts(after, workers)) < squares(user_counts(owners, workers))


@settings(max_examples=100, deadline=None)
@given(clusters())
def test_repeated_plans_converge(cluster: tuple[dict[TP, float], dict[TP, int], int]) -> None:
    load, owners, workers = cluster
    placement = dict(owners)
    for _ in range(200):
        plan = plan_moves(load, placement, workers)
        if not plan:
            break
        placement = apply(placement, plan)
    else:
        pytest.fail("the planner still moves partitions after 200 rounds on unchanged load")
