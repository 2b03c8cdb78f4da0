"""The supervision policy as tables of scenarios: no processes, no clock, no signals."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shardbroker.supervision.policy import (
    BOOT_ERROR_EXIT,
    Action,
    Beat,
    Exit,
    Halt,
    Phase,
    Policy,
    Signal,
    SlotState,
    Spawn,
    Stop,
    Supervision,
    cpu_for_slot,
)

POLICY = Policy(
    heartbeat_timeout=10.0,
    boot_timeout=60.0,
    abort_grace=2.0,
    drain_timeout=30.0,
    backoff_initial=0.1,
    backoff_max=10.0,
    backoff_reset_after=30.0,
    max_boot_failures=3,
)


def running(workers: int = 2, *, now: float = 0.0, ready: bool = True) -> Supervision:
    """A supervision whose slot i runs pid 100 + i, seen READY at ``now`` if ``ready``."""
    sup = Supervision(workers, POLICY)
    assert sup.tick(now) == [Spawn(slot, 0) for slot in range(workers)]
    for slot in range(workers):
        sup.spawned(slot, 100 + slot, now)
        if ready:
            sup.observe(slot, Beat(100 + slot, SlotState.READY, now), now)
    return sup


# --- backoff -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [(0, 0.0), (1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (7, 6.4), (8, 10.0), (50, 10.0), (10_000, 10.0)],
)
def test_backoff_doubles_and_is_capped(failures: int, delay: float) -> None:
    assert POLICY.backoff(failures) == pytest.approx(delay)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"heartbeat_timeout": 0},
        {"boot_timeout": -1},
        {"abort_grace": 0},
        {"drain_timeout": 0},
        {"backoff_max": 0},
        {"backoff_initial": -0.1},
        {"max_boot_failures": 0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Policy(**kwargs)  # type: ignore[arg-type]


def test_needs_a_worker() -> None:
    with pytest.raises(ValueError):
        Supervision(0)


# --- spawning and restarting -------------------------------------------------------------------


def test_start_spawns_every_slot_once() -> None:
    sup = Supervision(3, POLICY)
    assert sup.tick(0.0) == [Spawn(0, 0), Spawn(1, 0), Spawn(2, 0)]
    for slot in range(3):
        sup.spawned(slot, 10 + slot, 0.0)
    assert sup.tick(0.5) == []


@pytest.mark.parametrize(
    ("exit_code", "at", "expected"),
    [
        # (how the worker died, when we tick, what we expect): respawn only once the backoff passed
        (-9, 5.0, []),
        (-9, 5.09, []),
        (-9, 5.1, [Spawn(0, 1)]),
        (0, 5.1, [Spawn(0, 1)]),  # an unexpected clean exit is still a missing node
        (1, 5.2, [Spawn(0, 1)]),
        (-6, 6.0, [Spawn(0, 1)]),
    ],
)
def test_dead_slot_respawns_after_backoff(exit_code: int, at: float, expected: list[Action]) -> None:
    sup = running()
    assert sup.exited(100, exit_code, 5.0) == []
    assert sup.tick(at) == expected


def test_restart_leaves_other_slots_alone_and_counts() -> None:
    sup = running(3)
    sup.exited(101, -9, 1.0)
    assert sup.tick(1.1) == [Spawn(1, 1)]
    sup.spawned(1, 201, 1.1)
    assert [r.pid for r in sup.slots] == [100, 201, 102]
    assert [r.restarts for r in sup.slots] == [0, 1, 0]


def test_consecutive_failures_grow_the_backoff() -> None:
    sup = running(1)
    now = 1.0
    for n, delay in enumerate([0.1, 0.2, 0.4, 0.8], start=1):
        pid = sup.slots[0].pid
        assert pid is not None
        # ready each time, so these are crashes of a booted worker, not boot failures
        sup.observe(0, Beat(pid, SlotState.READY, now), now)
        sup.exited(pid, -11, now)
        assert sup.tick(now + delay - 0.01) == []
        assert sup.tick(now + delay) == [Spawn(0, n)]
        now += delay
        sup.spawned(0, 1000 + n, now)
    assert sup.slots[0].failures == 4


def test_backoff_forgotten_after_a_stable_run() -> None:
    sup = running(1)
    sup.exited(100, -9, 1.0)
    sup.tick(1.1)
    sup.spawned(0, 200, 1.1)
    sup.observe(0, Beat(200, SlotState.READY, 1.2), 1.2)
    sup.observe(0, Beat(200, SlotState.READY, 31.2), 31.2)
    sup.tick(31.2)  # ready for 30 s: healthy again
    assert sup.slots[0].failures == 0
    sup.exited(200, -9, 40.0)
    assert sup.tick(40.1) == [Spawn(0, 2)]


def test_fork_failure_backs_off() -> None:
    sup = Supervision(1, POLICY)
    assert sup.tick(0.0) == [Spawn(0, 0)]
    sup.spawn_failed(0, 0.0)
    assert sup.tick(0.05) == []
    assert sup.tick(0.1) == [Spawn(0, 1)]


def test_unknown_pid_changes_nothing() -> None:
    sup = running()
    assert sup.exited(4242, -9, 1.0) == []
    assert sup.live_pids() == [100, 101]


# --- giving up ---------------------------------------------------------------------------------


def test_boot_error_exit_halts_at_once_and_drains_the_rest() -> None:
    sup = running(3, ready=False)
    actions = sup.exited(101, BOOT_ERROR_EXIT, 1.0)
    assert isinstance(actions[0], Halt)
    assert "worker 1 failed to boot" in actions[0].reason
    assert actions[1:] == [Signal(0, 100, Stop.TERM), Signal(2, 102, Stop.TERM)]
    assert sup.phase is Phase.DRAINING
    assert sup.tick(1.2) == []  # no respawn of slot 1 while halting
    assert sup.exited(100, 0, 1.3) == []
    assert sup.exited(102, 0, 1.4) == [Exit(BOOT_ERROR_EXIT)]
    assert sup.halt_reason is not None


@pytest.mark.parametrize(
    ("deaths_before_ready", "halts"),
    [(1, False), (2, False), (3, True)],
)
def test_repeated_death_before_ready_halts(deaths_before_ready: int, halts: bool) -> None:
    sup = Supervision(1, POLICY)
    now = 0.0
    actions: list[Action] = []
    for n in range(deaths_before_ready):
        assert sup.tick(now) == [Spawn(0, n)]
        sup.spawned(0, 500 + n, now)
        actions = sup.exited(500 + n, 1, now + 0.01)
        now += 20.0  # past any backoff
    assert any(isinstance(a, Halt) for a in actions) is halts
    if halts:
        assert actions[-1] == Exit(BOOT_ERROR_EXIT)  # nothing else alive: done at once
        assert "3 times in a row" in (sup.halt_reason or "")


def test_becoming_ready_resets_the_boot_failure_streak() -> None:
    sup = Supervision(1, POLICY)
    now = 0.0
    for n in range(6):
        sup.tick(now)
        sup.spawned(0, 500 + n, now)
        if n % 2:  # every other worker gets ready before dying
            sup.observe(0, Beat(500 + n, SlotState.READY, now), now)
        assert not any(isinstance(a, Halt) for a in sup.exited(500 + n, 1, now))
        now += 20.0
    assert sup.phase is Phase.RUNNING


# --- stuck workers -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("last_beat", "at", "expected"),
    [
        (0.0, 9.9, []),
        (0.0, 10.0, [Signal(0, 100, Stop.ABORT)]),
        (5.0, 14.9, []),
        (5.0, 15.0, [Signal(0, 100, Stop.ABORT)]),
    ],
)
def test_stale_heartbeat_aborts(last_beat: float, at: float, expected: list[Action]) -> None:
    sup = running(1)
    sup.observe(0, Beat(100, SlotState.READY, last_beat), last_beat)
    assert sup.tick(at) == expected


def test_abort_then_kill_after_grace_then_respawn() -> None:
    sup = running(1)
    assert sup.tick(10.0) == [Signal(0, 100, Stop.ABORT)]
    assert sup.tick(11.9) == []
    assert sup.next_deadline() == pytest.approx(12.0)
    assert sup.tick(12.0) == [Signal(0, 100, Stop.KILL)]
    assert sup.tick(20.0) == []  # killed once; waiting for the reap
    assert sup.exited(100, -9, 20.0) == []
    assert sup.tick(20.1) == [Spawn(0, 1)]


def test_a_late_beat_after_abort_does_not_cancel_the_kill() -> None:
    sup = running(1)
    sup.tick(10.0)
    sup.observe(0, Beat(100, SlotState.READY, 11.0), 11.0)
    assert sup.tick(12.0) == [Signal(0, 100, Stop.KILL)]


def test_beats_keep_a_worker_alive() -> None:
    sup = running(1)
    for t in range(1, 100):
        sup.observe(0, Beat(100, SlotState.READY, float(t)), float(t))
        assert sup.tick(float(t)) == []


def test_beats_of_another_pid_are_ignored() -> None:
    sup = running(1)
    sup.observe(0, Beat(999, SlotState.READY, 9.0), 9.0)  # the previous worker's stale cell
    assert sup.tick(10.0) == [Signal(0, 100, Stop.ABORT)]


@pytest.mark.parametrize(("at", "expected"), [(59.9, []), (60.0, [Signal(0, 100, Stop.ABORT)])])
def test_boot_timeout_applies_until_ready(at: float, expected: list[Action]) -> None:
    sup = running(1, ready=False)
    # beating but never READY (a hung boot hook): the boot timeout still applies
    sup.observe(0, Beat(100, SlotState.BOOTING, 59.0), 59.0)
    assert sup.tick(at) == expected


# --- draining ----------------------------------------------------------------------------------


def test_drain_terms_waits_then_kills_then_exits_zero() -> None:
    sup = running(2)
    assert sup.stop(100.0) == [Signal(0, 100, Stop.TERM), Signal(1, 101, Stop.TERM)]
    assert sup.exited(100, 0, 101.0) == []
    assert sup.tick(129.9) == []
    assert sup.next_deadline() == pytest.approx(130.0)
    assert sup.tick(130.0) == [Signal(1, 101, Stop.KILL)]
    assert sup.tick(131.0) == []
    assert sup.exited(101, -9, 131.0) == [Exit(0)]
    assert sup.phase is Phase.DONE
    assert sup.tick(200.0) == []
    assert sup.next_deadline() is None


def test_drain_with_nothing_alive_exits_at_once() -> None:
    sup = running(1)
    sup.exited(100, -9, 1.0)
    assert sup.stop(1.05) == [Exit(0)]


def test_second_stop_kills_at_once() -> None:
    sup = running(2)
    sup.stop(0.0)
    assert sup.stop(1.0) == [Signal(0, 100, Stop.KILL), Signal(1, 101, Stop.KILL)]
    assert sup.stop(2.0) == []  # nothing left to kill twice


def test_no_spawn_and_no_abort_while_draining() -> None:
    sup = running(2)
    sup.stop(0.0)
    sup.exited(100, 0, 0.1)
    assert sup.tick(25.0) == []  # heartbeat of 101 is 25 s old: the drain deadline rules now


def test_stop_after_done_is_a_no_op() -> None:
    sup = running(1)
    sup.stop(0.0)
    sup.exited(100, 0, 0.1)
    assert sup.stop(1.0) == []


# --- deadlines ---------------------------------------------------------------------------------


def test_next_deadline_is_the_earliest_pending_decision() -> None:
    sup = running(2)
    sup.observe(0, Beat(100, SlotState.READY, 3.0), 3.0)
    assert sup.next_deadline() == pytest.approx(10.0)  # slot 1's last beat was at 0
    sup.exited(101, -9, 4.0)
    assert sup.next_deadline() == pytest.approx(4.1)  # slot 1's respawn


# --- pinning -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("slot", "cpus", "cpu"),
    [(0, [0, 1], 0), (1, [0, 1], 1), (2, [0, 1], 0), (1, [6, 2, 4], 4), (0, [], None)],
)
def test_cpu_for_slot(slot: int, cpus: list[int], cpu: int | None) -> None:
    assert cpu_for_slot(slot, cpus) == cpu


# --- invariants over random histories ------------------------------------------------------------

EVENTS = st.lists(
    st.tuples(
        st.sampled_from(["tick", "exit", "ready", "stop"]),
        st.integers(0, 2),  # slot
        st.sampled_from([0, 1, -9, -6, BOOT_ERROR_EXIT]),
        st.floats(0.0, 15.0),  # time step
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_invariants_hold_for_any_history(events: list[tuple[str, int, int, float]]) -> None:
    sup = Supervision(3, POLICY)
    now, next_pid, exits = 0.0, 1, 0
    for kind, slot, code, step in events:
        now += step
        if kind == "tick":
            actions = sup.tick(now)
        elif kind == "stop":
            actions = sup.stop(now)
        elif kind == "ready":
            pid = sup.slots[slot].pid
            if pid is not None:
                sup.observe(slot, Beat(pid, SlotState.READY, now), now)
            actions = []
        else:
            pid = sup.slots[slot].pid
            actions = sup.exited(pid, code, now) if pid is not None else []
        for action in actions:
            if isinstance(action, Spawn):
                assert sup.phase is Phase.RUNNING
                assert sup.slots[action.slot].pid is None, "spawn into an occupied slot"
                sup.spawned(action.slot, next_pid, now)
                next_pid += 1
            elif isinstance(action, Signal):
                assert sup.slots[action.slot].pid == action.pid
            elif isinstance(action, Exit):
                exits += 1
                assert not sup.live_pids()
        live = sup.live_pids()
        assert len(live) == len(set(live))
        assert all(r.restarts <= r.spawns for r in sup.slots)
    assert exits <= 1
    assert (exits == 1) is (sup.phase is Phase.DONE)
