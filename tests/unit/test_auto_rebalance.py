"""The controller's own moves: load sampled from the counter table, one check per interval, at
most one move per check, none while a move runs, and a failing check never escapes the loop."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.control.auto_rebalance import AutoRebalancer, PartitionLoad
from shardbroker.control.controller_state import ControllerState, OpContext, handle
from shardbroker.ipc.counters import CounterTable


@pytest.fixture
def table() -> Iterator[CounterTable]:
    t = CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=2, rows=8)
    try:
        yield t
    finally:
        t.close()


def test_partition_load_is_bytes_in_and_out_since_the_last_sample(table: CounterTable) -> None:
    w0, w1 = table.worker(0), table.worker(1)
    a, b = w0.open_partition("t", 0), w0.open_partition("t", 1)
    w0.publish_partition(a, 1, 100, 50, 0, 0, 0, 0, 0)
    load = PartitionLoad(table)
    assert load.sample() == {("t", 0): 150.0, ("t", 1): 0.0}
    w0.publish_partition(a, 2, 300, 60, 0, 0, 0, 0, 0)
    assert load.sample() == {("t", 0): 210.0, ("t", 1): 0.0}
    # t-0 moves to worker 1: its new row starts from zero; the drop is taken whole, not negative.
    w0.close_partition(a)
    moved = w1.open_partition("t", 0)
    w1.publish_partition(moved, 1, 40, 0, 0, 0, 0, 0, 0)
    assert load.sample()[("t", 0)] == 40.0
    assert b.row >= 0


class FakeController:
    def __init__(self, workers: int) -> None:
        self.config = BrokerConfig(
            workers=workers, properties={"leader.imbalance.check.interval.seconds": "10"}
        )
        self.workers = workers
        c = OpContext(workers=workers, new_topic_id=lambda: uuid.UUID(int=1))
        topics = {"topics": [{"name": "t", "num_partitions": 4, "replication_factor": -1, "configs": {}}]}
        self.state: ControllerState = handle(ControllerState(), "create_topics", topics, c).state
        self.moves: list[object] = []
        self.started: list[tuple[str, dict[str, Any]]] = []

    def start(self, op: str, args: dict[str, Any]) -> None:
        self.started.append((op, args))


class FakeLoad:
    def __init__(self) -> None:
        self.value: dict[tuple[str, int], float] = {}
        self.samples = 0

    def sample(self) -> dict[tuple[str, int], float]:
        self.samples += 1
        if self.value is None:
            raise RuntimeError("counter table gone")
        return self.value


def test_one_move_per_check_off_the_busy_worker() -> None:
    now = [0.0]
    controller = FakeController(2)
    load = FakeLoad()
    r = AutoRebalancer(controller, load, clock=lambda: now[0])  # type: ignore[arg-type]
    # t-0 and t-2 on worker 0, t-1 and t-3 on worker 1; only worker 0's partitions are busy.
    load.value = {("t", 0): 1000.0, ("t", 2): 900.0}
    r.poll()
    assert load.samples == 0  # not due yet
    now[0] = 10.0
    r.poll()
    assert controller.started == [
        ("move_partitions", {"partitions": [{"topic": "t", "partition": 2, "to": 1}]})
    ]
    now[0] = 20.0
    controller.moves = [object()]  # a move in progress: sampled, nothing more started
    r.poll()
    assert load.samples == 2 and len(controller.started) == 1
    controller.moves = []
    load.value = {("t", 0): 500.0, ("t", 1): 500.0}  # balanced: nothing moves
    now[0] = 30.0
    r.poll()
    assert len(controller.started) == 1


def test_a_failing_check_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    load = FakeLoad()
    load.value = None  # type: ignore[assignment]
    r = AutoRebalancer(FakeController(2), load, clock=lambda: now[0])  # type: ignore[arg-type]
    now[0] = 10.0
    r.poll()  # raises inside: logged, not propagated into the supervisor's loop
    assert "rebalancing check failed" in caplog.text
    load.value = {}
    now[0] = 20.0
    r.poll()
    assert load.samples == 2
