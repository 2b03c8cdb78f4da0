"""The rebalance planner: which partitions to move between workers, from their load. No I/O.

The controller calls :func:`plan_moves` each interval with every partition's load (bytes in +
bytes out over the interval, from the per-partition counters: a difference of counters or a rate
per second, the rule only compares them), its owning worker and the worker count, and carries the
answer out as partition moves (AlterPartitionReassignments' path).

The rule, and why:

- A worker's load is the sum of its partitions' loads. The planner acts only when the busiest
  worker runs more than ``leader.imbalance.per.broker.percentage`` (Kafka's knob, default 10)
  over the mean load. (Kafka's controller uses the knob for the share of a broker's partitions
  led by someone other than their preferred leader; the nearest meaning on one host is how far
  over its fair share one core may run before partitions move.)
- A move takes one partition from the busiest worker (load ``S``) to the least busy one (``D``).
  A partition of load ``L`` qualifies only if ``L > 0`` and ``D + L < S``: both workers then end
  below ``S``, so no move ever raises the maximum worker load, and the target can never become a
  hotter spot than the one relieved (a partition hotter than ``S - D`` stays where it is). Of
  those, the move chosen leaves the pair most even (smallest ``max(S - L, D + L)``), then moves
  the least load (fewer clients see the few milliseconds of retriable errors a move costs), then
  the first by (topic, partition): the same input always gives the same plan.
- No ping-pong: such a move lowers the sum of the squared worker loads by ``2L(S - D - L) > 0``,
  so on unchanged load no placement ever comes back and repeated plans converge.
- No load at all (a fresh broker, or workers added to an idle one: new workers own nothing yet):
  partitions are balanced by count instead, from the worker with the most to the one with the
  fewest while they differ by two or more (the same sum-of-squares argument, on counts). The
  partition moved is one whose topic has the fewest partitions on the target already (a topic
  spread over more cores spreads its traffic), then the first by (topic, partition). Under load,
  a new worker is simply the least busy one and receives load as above.
- Internal topics (``__consumer_offsets``, ``__transaction_state``) never move: their placement
  follows the group coordinator's hashing. Their load still counts in their worker's load (the
  core serves it), but not in the partition counts, and load on them alone moves nothing.
- At most ``max_moves`` moves per call (default 1): the next interval's counters then show what
  the move did before another is chosen. A partition moves at most once per plan.

Loads are compared exactly (as fractions), so float rounding can neither break the guarantees
above nor make two runs disagree.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping
from fractions import Fraction
from typing import Final, NamedTuple

from shardbroker.metadata.topic_names import INTERNAL_TOPICS

__all__ = ["DEFAULT_IMBALANCE_PERCENTAGE", "PartitionMove", "plan_moves"]

TopicPartition = tuple[str, int]

#: Kafka's ``leader.imbalance.per.broker.percentage`` default.
DEFAULT_IMBALANCE_PERCENTAGE: Final = 10.0


class PartitionMove(NamedTuple):
    topic: str
    partition: int
    from_worker: int
    to_worker: int


def plan_moves(
    load: Mapping[TopicPartition, float],
    owners: Mapping[TopicPartition, int],
    workers: int,
    *,
    imbalance_percentage: float = DEFAULT_IMBALANCE_PERCENTAGE,
    max_moves: int = 1,
    internal_topics: Collection[str] = INTERNAL_TOPICS,
) -> list[PartitionMove]:
    """The moves to make now, in order (see the module docstring for the rule).

    ``owners`` is the placement (every partition and its worker, ``0 <= worker < workers``);
    ``load`` each partition's load, non-negative and finite (a partition missing from it has no
    load; one not in ``owners`` is ignored: its topic was just deleted). Raises ValueError for
    input outside those bounds."""
    _check(load, owners, workers, imbalance_percentage, max_moves)
    placement = dict(owners)
    loads = {tp: Fraction(load.get(tp, 0)) for tp in placement}
    internal = {tp for tp in placement if tp[0] in internal_topics}
    limit = 1 + Fraction(imbalance_percentage) / 100
    fixed = set(internal)  # internal partitions, and those moved once in this plan
    plan: list[PartitionMove] = []
    while len(plan) < max_moves:
        if any(v for tp, v in loads.items() if tp not in internal):
            move = _load_move(loads, placement, workers, limit, fixed)
        else:
            movable = {tp: w for tp, w in placement.items() if tp not in internal}
            move = _count_move(movable, workers, limit, fixed)
        if move is None:
            break
        plan.append(move)
        fixed.add((move.topic, move.partition))
        placement[(move.topic, move.partition)] = move.to_worker
    return plan


def _check(
    load: Mapping[TopicPartition, float],
    owners: Mapping[TopicPartition, int],
    workers: int,
    imbalance_percentage: float,
    max_moves: int,
) -> None:
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if max_moves < 0:
        raise ValueError(f"max_moves must be 0 or more, got {max_moves}")
    if not (math.isfinite(imbalance_percentage) and imbalance_percentage >= 0):
        raise ValueError(
            f"leader.imbalance.per.broker.percentage must be 0 or more, got {imbalance_percentage}"
        )
    for (topic, partition), worker in owners.items():
        if not 0 <= worker < workers:
            raise ValueError(f"{topic}-{partition} is owned by worker {worker}, not one of 0-{workers - 1}")
    for (topic, partition), value in load.items():
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"load of {topic}-{partition} must be finite and 0 or more, got {value}")


def _busiest_and_idlest(totals: Mapping[int, Fraction | int], workers: int) -> tuple[int, int]:
    """(busiest, least busy) worker; ties go to the lowest node id."""
    busiest = min(range(workers), key=lambda w: (-totals.get(w, 0), w))
    idlest = min(range(workers), key=lambda w: (totals.get(w, 0), w))
    return busiest, idlest


def _imbalanced(highest: Fraction | int, total: Fraction | int, workers: int, limit: Fraction) -> bool:
    """The busiest worker runs more than ``limit`` times the mean."""
    return highest * workers > total * limit


def _load_move(
    loads: Mapping[TopicPartition, Fraction],
    placement: Mapping[TopicPartition, int],
    workers: int,
    limit: Fraction,
    fixed: Collection[TopicPartition],
) -> PartitionMove | None:
    totals: dict[int, Fraction] = defaultdict(Fraction)
    for tp, w in placement.items():
        totals[w] += loads[tp]
    source, target = _busiest_and_idlest(totals, workers)
    high, low = totals[source], totals[target]
    if source == target or not _imbalanced(high, sum(totals.values(), Fraction()), workers, limit):
        return None
    candidates = [
        (max(high - loads[tp], low + loads[tp]), loads[tp], tp)
        for tp, w in placement.items()
        if w == source and tp not in fixed and loads[tp] > 0 and low + loads[tp] < high
    ]
    if not candidates:
        return None
    _, _, (topic, partition) = min(candidates)
    return PartitionMove(topic, partition, source, target)


def _count_move(
    placement: Mapping[TopicPartition, int],
    workers: int,
    limit: Fraction,
    fixed: Collection[TopicPartition],
) -> PartitionMove | None:
    counts = Counter(placement.values())
    source, target = _busiest_and_idlest(counts, workers)
    most, fewest = counts[source], counts[target]
    if most - fewest < 2 or not _imbalanced(most, len(placement), workers, limit):
        return None
    on_target = Counter(t for (t, _), w in placement.items() if w == target)
    candidates = [(on_target[tp[0]], tp) for tp, w in placement.items() if w == source and tp not in fixed]
    if not candidates:
        return None
    _, (topic, partition) = min(candidates)
    return PartitionMove(topic, partition, source, target)
