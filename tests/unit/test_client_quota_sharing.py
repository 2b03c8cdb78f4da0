"""Quota usage shared by the workers (ipc/client_quotas.py, broker/client_quota_manager.py): a
client whose traffic all lands on one worker gets the host's whole quota, traffic spread over
workers is counted once against it, a budget finds no cell (divided then) or takes back an idle
one, and the segment is created, read by another process' view and removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.broker.client_quota_manager import ClientQuotaManager, ConnectionQuotas, slices_of
from shardbroker.ipc.client_quotas import SLOTS, ClientQuotaTable, WorkerQuotaUsage, budget_key

PRODUCE = "producer_byte_rate"
QUOTAS = {
    (("client-id", "app"),): {PRODUCE: 1000.0, "consumer_byte_rate": 1000.0, "request_percentage": 50.0}
}


class Clock:
    def __init__(self) -> None:
        self.now = 100.05

    def __call__(self) -> float:
        return self.now


def _workers(n: int, clock: Clock) -> list[ClientQuotaManager]:
    managers = []
    for usage in WorkerQuotaUsage.private(n, slices_of(11)):
        manager = ClientQuotaManager(workers=n, samples=11, window=1.0, clock=clock)
        manager.share(usage)
        manager.update(QUOTAS)
        managers.append(manager)
    return managers


def _charge(manager: ClientQuotaManager, value: float, client_id: str = "app") -> int:
    sensor = manager.client("ANONYMOUS", client_id).produce
    assert sensor is not None
    return sensor.charge(value, manager.clock())


def test_a_client_on_one_worker_gets_the_whole_host_quota() -> None:
    clock = Clock()
    a, _ = _workers(2, clock)
    # 1000 B/s over 10 s: 10,000 bytes for the host, all of them through worker a (dividing
    # would have throttled past 5,000).
    assert _charge(a, 9000) == 0
    assert _charge(a, 1000) == 0
    assert _charge(a, 500) > 0


def test_traffic_over_every_worker_counts_once_against_the_quota() -> None:
    clock = Clock()
    a, b = _workers(2, clock)
    assert _charge(a, 6000) == 0
    assert _charge(b, 3000) == 0  # b sees a's 6,000
    # The other's usage is read once a slice (0.1 s): b's 3,000 shows on a in the next one.
    clock.now += 0.1
    throttle = _charge(a, 2000)
    # 11,000 over a budget of 10,000: back within when the oldest 1,000 leave, at 10 s.
    assert 9_800 <= throttle <= 10_000
    # Everything has left the horizon: a fresh budget on both.
    clock.now += 10.0
    assert _charge(b, 9000) == 0


def test_fetch_and_request_budgets_are_shared_too() -> None:
    clock = Clock()
    a, b = _workers(2, clock)
    fetch = a.client("ANONYMOUS", "app").fetch
    assert fetch is not None and fetch.charge(9000, clock()) == 0
    other = b.client("ANONYMOUS", "app").fetch
    assert other is not None and other.charge(2000, clock()) > 0
    # request_percentage 50: 500 percent-seconds over the horizon; 4.5 s of handler time on a.
    assert ConnectionQuotas(a, "ANONYMOUS").busy("app", 4.5) == 0
    assert ConnectionQuotas(b, "ANONYMOUS").busy("app", 1.0) > 0


def test_leases_are_taken_from_the_host_budget() -> None:
    clock = Clock()
    a, b = _workers(2, clock)
    assert _charge(b, 9990) == 0
    conn = ConnectionQuotas(a, "ANONYMOUS")
    # Only 10 bytes left for the host: the lease grants no more than that.
    assert conn.produce("app", 5) == 0
    assert conn.produce("app", 10) > 0


def test_a_budget_without_a_cell_is_divided_and_an_idle_cell_is_taken_back() -> None:
    clock = Clock()
    (a, _) = _workers(2, clock)
    a.update({(("client-id", None),): {PRODUCE: 1000.0}})
    # Far more budgets than cells: every cell of the column ends up held by a sensor.
    for i in range(5 * SLOTS):
        a.client("ANONYMOUS", f"c{i}")
    assert len(a._holders) == SLOTS
    late = a.client("ANONYMOUS", "late").produce
    assert late is not None and late.cell is None
    # No cell: this worker enforces its share, 500 B/s (5,000 bytes over 10 s).
    assert late.charge(5000, clock()) == 0
    assert late.charge(100, clock()) > 0
    # Once a held cell's usage has left the horizon, a new budget takes it back from its sensor.
    clock.now += 11.0
    generation = a.generation
    later = a.client("ANONYMOUS", "later").produce
    assert later is not None and later.cell is not None
    assert a.generation > generation  # connections resolve their sensors again
    assert len(a._holders) == SLOTS and a._holders[later.cell.pos] == (PRODUCE, "", "later")
    assert later.charge(9000, clock()) == 0  # the host's whole budget again


def test_the_segment_is_shared_between_processes_and_removed_on_close() -> None:
    instance = f"sbtest{os.getpid()}"
    table = ClientQuotaTable.create(instance, workers=2, slices=slices_of(11))
    path = Path(f"/dev/shm/shardbroker-{instance}-clientquotas")
    try:
        assert path.exists()
        pid = os.fork()
        if pid == 0:  # worker 1: writes its column
            code = 1
            try:
                cell = table.worker(1).claim(budget_key("k"), 1000)
                if cell is not None:
                    cell.values[1000 % slices_of(11)] = 42.0
                    code = 0
            finally:
                os._exit(code)
        assert os.waitpid(pid, 0)[1] == 0
        attached = ClientQuotaTable.attach(instance)
        try:
            reader = attached.worker(0)
            cell = reader.claim(budget_key("k"), 1000)
            assert cell is not None
            assert sum(cell.others(1000)) == 42.0
            assert sum(cell.others(1000 + slices_of(11))) == 0.0  # left the horizon
        finally:
            attached.close()
    finally:
        table.close()
    assert not path.exists()
    with pytest.raises(ValueError):
        ClientQuotaTable.create(instance, workers=0, slices=1)


def test_past_a_workers_share_the_others_are_read_at_every_charge() -> None:
    clock = Clock()
    a, b = _workers(2, clock)
    assert _charge(b, 0) == 0  # b has read a's usage (none) for this slice
    assert _charge(a, 6000) == 0
    # Same slice: b's own view would be 6,000 of 10,000, but past half the budget it reads a's.
    assert _charge(b, 6000) > 0
