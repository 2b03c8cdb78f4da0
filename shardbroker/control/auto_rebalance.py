"""The controller's own partition moves: off a busy worker, and onto workers added since the last
start. Runs in the supervisor: reads the shared counter table, asks the controller to
move. The rule itself (which partition, where, when not to) is rebalance.py's, pure.

Kafka's knobs, with their names and defaults (config/broker_properties.py):

- ``auto.leader.rebalance.enable`` (true): Kafka moves leadership back to preferred replicas; on
  one host, where every partition has one replica, balancing means moving partitions between
  cores. Off: placement changes only by hand (``shardbroker partitions move``, or Kafka's
  AlterPartitionReassignments) or when the worker count shrinks.
- ``leader.imbalance.check.interval.seconds`` (300): how often the load is compared. Each check
  takes the bytes in + out of every partition since the previous check (the per-partition counters
  that /metrics exports; a partition that moved starts a new counter row on its new worker, and a
  count that went down is taken whole) and makes at most one move, so the next check sees what it
  did. A check while a move is in progress is skipped.
- ``leader.imbalance.per.broker.percentage`` (10): a worker must run that much over the workers'
  mean load before anything moves.

Workers added: at the controller's start (``Controller.open``), before any worker runs, partitions
are spread by count (the planner's no-load rule, as many moves as it takes) in one metadata change
with new leader epochs: no log is open anywhere, so the two steps of a live move are not needed.
Under load, a new worker is the least busy one and the checks move load onto it.

Cost: one read of the counter table per check (the same read as a /metrics scrape of the two
byte columns) and the plan over every partition (pure Python, ~1 ms per 1,000 partitions): once
every five minutes by default.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from shardbroker.config.broker_properties import (
    LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS,
    LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
)
from shardbroker.control.controller import Controller
from shardbroker.control.controller_state import owners_of
from shardbroker.control.rebalance import PartitionMove, plan_moves
from shardbroker.ipc import counters as ctr
from shardbroker.observability.metrics import RowLabels

__all__ = ["AutoRebalancer", "PartitionLoad"]

log = logging.getLogger(__name__)

TopicPartition = tuple[str, int]


class PartitionLoad:
    """Bytes in + out of every partition since the previous `sample`, from the counter table."""

    def __init__(self, table: ctr.CounterTable) -> None:
        self._rows: RowLabels[TopicPartition] = RowLabels(
            table, lambda row, topic, partition: (topic, partition)
        )
        self._last: dict[TopicPartition, int] = {}

    def sample(self) -> dict[TopicPartition, float]:
        keys, values = self._rows.read()
        totals: dict[TopicPartition, int] = {}
        both = (values[:, ctr.BYTES_IN] + values[:, ctr.BYTES_OUT]).tolist()
        for key, total in zip(keys, both, strict=True):
            totals[key] = totals.get(key, 0) + total  # two rows for a moment: old and new owner
        last = self._last
        self._last = totals
        return {k: float(v - last.get(k, 0) if v >= last.get(k, 0) else v) for k, v in totals.items()}


class AutoRebalancer:
    """Every ``leader.imbalance.check.interval.seconds``: sample the load, make at most one move."""

    def __init__(
        self,
        controller: Controller,
        load: PartitionLoad,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.controller = controller
        self.load = load
        self.clock = clock
        config = controller.config
        self.interval_s = float(config.get(LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS))
        self.percentage = float(config.get(LEADER_IMBALANCE_PER_BROKER_PERCENTAGE))
        self._next = clock() + self.interval_s
        self.moves: list[PartitionMove] = []  # every move made, for logs and tests

    def poll(self) -> None:
        """Cheap unless a check is due (the supervisor calls it after every loop step)."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + self.interval_s
        try:
            self._check()
        except Exception:  # the supervisor's loop must outlive a bad check
            log.exception("rebalancing check failed")

    def _check(self) -> None:
        loads = self.load.sample()
        c = self.controller
        if c.moves:
            return
        plan = plan_moves(
            loads, owners_of(c.state, c.workers), c.workers, imbalance_percentage=self.percentage
        )  # fmt: skip
        if not plan:
            return
        for m in plan:
            log.info(
                "rebalancing: moving %s-%d from worker %d to worker %d (%.0f bytes in+out over %.0f s)",
                m.topic, m.partition, m.from_worker, m.to_worker, loads.get((m.topic, m.partition), 0.0),
                self.interval_s,
            )  # fmt: skip
        self.moves += plan
        c.start(
            "move_partitions",
            {"partitions": [{"topic": m.topic, "partition": m.partition, "to": m.to_worker} for m in plan]},
        )
