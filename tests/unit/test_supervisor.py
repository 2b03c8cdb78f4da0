"""The process-managing code with fork, waitpid and kill mocked; the worker main run in-process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import deque
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.supervision import supervisor as supervisor_module
from shardbroker.supervision.heartbeat import HeartbeatTable, SegmentInUse, read_owner, segment_name
from shardbroker.supervision.policy import BOOT_ERROR_EXIT, Phase, Policy, SlotState
from shardbroker.supervision.supervisor import Supervisor, SupervisorConfig, default_worker_count
from shardbroker.supervision.worker import Worker, WorkerConfig

_counter = iter(range(1_000_000))
FIRST_FAKE_PID = 4_000_000  # above any pid_max, so never a real process


def exited(code: int) -> int:
    """A waitpid status for a normal exit with ``code``."""
    return code << 8


def killed(sig: int) -> int:
    """A waitpid status for death by signal ``sig``."""
    return sig


class FakeOS:
    """Stands in for os.fork / os.waitpid / os.kill; children are just pids in a set."""

    def __init__(self) -> None:
        self.next_pid = FIRST_FAKE_PID
        self.alive: set[int] = set()
        self.forked: list[int] = []
        self.sent: list[tuple[int, int]] = []
        self.exits: deque[tuple[int, int]] = deque()
        self.fork_errors: deque[OSError] = deque()
        self.real_kill = os.kill

    def fork(self) -> int:
        if self.fork_errors:
            raise self.fork_errors.popleft()
        pid = self.next_pid
        self.next_pid += 1
        self.alive.add(pid)
        self.forked.append(pid)
        return pid

    def waitpid(self, pid: int, options: int) -> tuple[int, int]:
        if pid != -1:  # close(): a blocking wait for one child after SIGKILL
            self.alive.discard(pid)
            return pid, killed(signal.SIGKILL)
        if self.exits:
            return self.exits.popleft()
        if not self.alive:
            raise ChildProcessError(10, "No child processes")
        return 0, 0

    def kill(self, pid: int, sig: int) -> None:
        if pid < FIRST_FAKE_PID:
            self.real_kill(pid, sig)
            return
        if pid not in self.alive:
            raise ProcessLookupError(3, "No such process")
        self.sent.append((pid, sig))

    def die(self, pid: int, status: int) -> None:
        self.alive.discard(pid)
        self.exits.append((pid, status))

    def signals_to(self, pid: int) -> list[int]:
        return [sig for p, sig in self.sent if p == pid]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_os(monkeypatch: pytest.MonkeyPatch) -> FakeOS:
    fake = FakeOS()
    monkeypatch.setattr(os, "fork", fake.fork)
    monkeypatch.setattr(os, "waitpid", fake.waitpid)
    monkeypatch.setattr(os, "kill", fake.kill)
    return fake


@pytest.fixture
def clock() -> Clock:
    return Clock()


POLICY = Policy(heartbeat_timeout=10.0, abort_grace=2.0, drain_timeout=30.0, backoff_initial=0.1)


@pytest.fixture
def make_supervisor(fake_os: FakeOS, clock: Clock) -> Iterator[Any]:
    """Builds started supervisors on the fake OS; closes them (and their shm) afterwards."""
    made: list[Supervisor] = []

    def make(workers: int = 2, **kwargs: Any) -> Supervisor:
        config = SupervisorConfig(
            instance=f"u{os.getpid()}-{next(_counter)}",
            workers=workers,
            policy=POLICY,
            pin_cpus=False,
            **kwargs,
        )
        sup = Supervisor(config, clock=clock)
        made.append(sup)
        sup.start()
        return sup

    yield make
    for sup in made:
        sup.close()


def pids(sup: Supervisor) -> list[int | None]:
    return [rec.pid for rec in sup.supervision.slots]


def test_default_worker_count_is_the_usable_cores() -> None:
    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert default_worker_count() == expected


def test_start_forks_every_slot_and_resets_its_cell(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(3)
    assert pids(sup) == fake_os.forked == [FIRST_FAKE_PID, FIRST_FAKE_PID + 1, FIRST_FAKE_PID + 2]
    assert sup.heartbeats is not None
    snap = sup.heartbeats.snapshot()
    assert snap["state"].tolist() == [SlotState.STARTING] * 3
    assert snap["restarts"].tolist() == [0, 0, 0]
    assert sup.heartbeats.owner_pid == os.getpid()


def test_dead_worker_is_reaped_and_respawned_in_its_slot(
    make_supervisor: Any, fake_os: FakeOS, clock: Clock
) -> None:
    sup = make_supervisor(2)
    first, second = pids(sup)
    assert first is not None and second is not None
    fake_os.die(second, killed(signal.SIGKILL))
    sup.step(timeout=0)
    assert pids(sup) == [first, None]
    assert sup.heartbeats is not None
    cell = sup.heartbeats.cell(1)
    assert cell.read().state is SlotState.DEAD and cell.exit_code == -signal.SIGKILL
    clock.now += 0.1  # the first backoff
    sup.step(timeout=0)
    new = pids(sup)[1]
    assert new not in (None, second) and pids(sup)[0] == first
    assert cell.restarts == 1 and cell.read().state is SlotState.STARTING
    assert fake_os.sent == []  # the other worker was not disturbed


def test_reap_collects_every_exit_in_one_step(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(3)
    for pid in fake_os.forked:
        fake_os.die(pid, exited(1))
    fake_os.die(99, exited(0))  # not ours: ignored
    sup.step(timeout=0)
    assert pids(sup) == [None, None, None]


def test_sigterm_drains_and_exits_zero(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(2)
    workers = list(fake_os.alive)
    signal.raise_signal(signal.SIGTERM)  # the real handler: enqueue only
    assert list(sup._signals) == [signal.SIGTERM]
    assert fake_os.sent == []
    assert sup.step(timeout=0) is False
    assert sorted(fake_os.sent) == sorted((pid, signal.SIGTERM) for pid in workers)
    for pid in workers:
        fake_os.die(pid, exited(0))
    assert sup.step(timeout=0) is True
    assert sup.exit_code == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGHUP])
def test_sigint_and_sighup_drain_too(make_supervisor: Any, fake_os: FakeOS, signum: int) -> None:
    sup = make_supervisor(1)
    signal.raise_signal(signum)
    sup.step(timeout=0)
    assert fake_os.sent == [(fake_os.forked[0], signal.SIGTERM)]
    assert sup.supervision.phase is Phase.DRAINING


def test_drain_timeout_kills_what_is_left(make_supervisor: Any, fake_os: FakeOS, clock: Clock) -> None:
    sup = make_supervisor(2)
    stubborn, polite = fake_os.forked
    signal.raise_signal(signal.SIGTERM)
    sup.step(timeout=0)
    fake_os.die(polite, exited(0))
    clock.now += 29.9
    sup.step(timeout=0)
    assert fake_os.signals_to(stubborn) == [signal.SIGTERM]
    clock.now += 0.1
    sup.step(timeout=0)
    assert fake_os.signals_to(stubborn) == [signal.SIGTERM, signal.SIGKILL]
    fake_os.die(stubborn, killed(signal.SIGKILL))
    assert sup.step(timeout=0) is True
    assert sup.exit_code == 0


def test_second_sigterm_kills_at_once(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(1)
    (pid,) = fake_os.forked
    signal.raise_signal(signal.SIGTERM)
    sup.step(timeout=0)
    signal.raise_signal(signal.SIGINT)
    sup.step(timeout=0)
    assert fake_os.signals_to(pid) == [signal.SIGTERM, signal.SIGKILL]


def test_stale_heartbeat_gets_sigabrt_then_sigkill(
    make_supervisor: Any, fake_os: FakeOS, clock: Clock
) -> None:
    sup = make_supervisor(2)
    stuck, fine = fake_os.forked
    assert sup.heartbeats is not None
    cells = [sup.heartbeats.cell(0), sup.heartbeats.cell(1)]
    for cell, pid in zip(cells, (stuck, fine), strict=True):
        cell.claim(pid, SlotState.READY)
        cell.beat(clock.now)
    sup.step(timeout=0)
    clock.now += 10.0
    cells[1].beat(clock.now)  # only the second keeps beating
    sup.step(timeout=0)
    assert fake_os.sent == [(stuck, signal.SIGABRT)]
    clock.now += 2.0
    cells[1].beat(clock.now)
    sup.step(timeout=0)
    assert fake_os.sent == [(stuck, signal.SIGABRT), (stuck, signal.SIGKILL)]
    fake_os.die(stuck, killed(signal.SIGKILL))
    sup.step(timeout=0)  # reaped now: respawn after the backoff
    clock.now += 0.1
    cells[1].beat(clock.now)
    sup.step(timeout=0)
    assert pids(sup)[0] not in (None, stuck) and pids(sup)[1] == fine


def test_boot_failure_halts_with_its_code(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(2)
    bad, other = fake_os.forked
    fake_os.die(bad, exited(BOOT_ERROR_EXIT))
    sup.step(timeout=0)
    assert sup.halt_reason is not None and "worker 0 failed to boot" in sup.halt_reason
    assert fake_os.sent == [(other, signal.SIGTERM)]
    assert len(fake_os.forked) == 2  # no restart
    fake_os.die(other, exited(0))
    assert sup.step(timeout=0) is True
    assert sup.exit_code == BOOT_ERROR_EXIT


def test_ready_worker_killed_between_ticks_is_not_a_boot_failure(
    make_supervisor: Any, fake_os: FakeOS, clock: Clock
) -> None:
    """A worker that reached READY and died before any tick read its cell is restarted, however
    often that happens: its last beat is read when it is reaped."""
    sup = make_supervisor(1)
    assert sup.heartbeats is not None
    for _ in range(POLICY.max_boot_failures + 1):
        (pid,) = [p for p in pids(sup) if p is not None]
        sup.heartbeats.cell(0).claim(pid, SlotState.READY)
        fake_os.die(pid, killed(signal.SIGKILL))  # no step() between READY and the death
        sup.step(timeout=0)
        assert sup.halt_reason is None
        clock.now += 10.0  # past the backoff
        sup.step(timeout=0)
    assert sup.heartbeats.cell(0).restarts == POLICY.max_boot_failures + 1


def test_fork_failure_is_retried_after_backoff(make_supervisor: Any, fake_os: FakeOS, clock: Clock) -> None:
    fake_os.fork_errors.append(BlockingIOError(11, "Resource temporarily unavailable"))
    sup = make_supervisor(2)
    assert pids(sup)[0] is None and pids(sup)[1] is not None
    clock.now += 0.1
    sup.step(timeout=0)
    assert pids(sup)[0] is not None
    assert sup.heartbeats is not None and sup.heartbeats.cell(0).restarts == 1


def test_a_worker_gone_before_its_signal_is_tolerated(make_supervisor: Any, fake_os: FakeOS) -> None:
    sup = make_supervisor(1)
    (pid,) = fake_os.forked
    fake_os.alive.discard(pid)  # died, not yet reaped: kill() says ESRCH
    signal.raise_signal(signal.SIGTERM)
    sup.step(timeout=0)
    fake_os.exits.append((pid, exited(0)))
    assert sup.step(timeout=0) is True


def test_close_kills_reaps_restores_and_unlinks(make_supervisor: Any, fake_os: FakeOS) -> None:
    before = signal.getsignal(signal.SIGTERM)
    sup = make_supervisor(2)
    assert signal.getsignal(signal.SIGTERM) != before
    name = segment_name(sup.config.instance)
    live = sorted(fake_os.alive)
    sup.close()
    assert sorted(fake_os.sent) == [(pid, signal.SIGKILL) for pid in live]
    assert not fake_os.alive
    assert read_owner(name) is None
    assert signal.getsignal(signal.SIGTERM) == before
    sup.close()  # idempotent


def test_run_cleans_up_when_the_loop_fails(
    fake_os: FakeOS, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SupervisorConfig(
        instance=f"u{os.getpid()}-{next(_counter)}", workers=1, policy=POLICY, pin_cpus=False
    )
    sup = Supervisor(config, clock=clock)

    def boom(timeout: float | None = None) -> bool:
        raise RuntimeError("bug in the loop")

    monkeypatch.setattr(sup, "step", boom)
    with pytest.raises(RuntimeError, match="bug in the loop"):
        sup.run()
    assert not fake_os.alive
    assert read_owner(segment_name(config.instance)) is None


def test_a_second_supervisor_of_the_same_instance_is_refused(make_supervisor: Any, clock: Clock) -> None:
    first = make_supervisor(1)
    second = Supervisor(first.config, clock=clock)
    with pytest.raises(SegmentInUse, match="another shardbroker supervisor"):
        second.run()
    assert read_owner(segment_name(first.config.instance)) == os.getpid()  # untouched


def test_run_returns_the_exit_code(fake_os: FakeOS, clock: Clock) -> None:
    config = SupervisorConfig(
        instance=f"u{os.getpid()}-{next(_counter)}", workers=2, policy=POLICY, pin_cpus=False
    )
    sup = Supervisor(config, clock=clock)
    original_step = sup.step
    turns = 0

    def step(timeout: float | None = None) -> bool:
        nonlocal turns
        turns += 1
        if turns == 1:
            signal.raise_signal(signal.SIGTERM)
        elif turns == 2:
            for pid in list(fake_os.alive):
                fake_os.die(pid, exited(0))
        return original_step(timeout=0)

    sup.step = step  # type: ignore[method-assign]
    sup.start()  # run() goes on from an explicit start (the /metrics server registers in between)
    assert sup.run() == 0
    assert turns == 2
    assert len(fake_os.forked) == 2


def test_registered_file_objects_are_served_by_the_loop(make_supervisor: Any) -> None:
    sup = make_supervisor(1)
    read_fd, write_fd = os.pipe()
    seen: list[int] = []
    try:
        sup.register(read_fd, 1, lambda mask: seen.append(os.read(read_fd, 10)[0]))
        os.write(write_fd, b"\x07")
        sup.step(timeout=0)
        assert seen == [7]
        sup.unregister(read_fd)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_sleep_follows_the_policys_next_deadline(make_supervisor: Any, fake_os: FakeOS, clock: Clock) -> None:
    sup = make_supervisor(1, max_sleep=1.0)
    assert sup._sleep_time(clock.now) == 1.0  # heartbeat deadline 10 s away: capped
    fake_os.die(fake_os.forked[0], exited(1))
    sup.reap()
    assert sup._sleep_time(clock.now) == pytest.approx(0.1)  # the respawn backoff


def test_setup_failure_is_a_boot_error(make_supervisor: Any) -> None:
    sup = make_supervisor(1)

    def setup(worker: Worker) -> None:
        raise OSError("data dir is not writable")

    sup.setup = setup
    assert sup._boot(Worker(WorkerConfig(slot=0, parent_pid=os.getppid()))) == BOOT_ERROR_EXIT


def test_prctl_is_resolved_on_linux() -> None:
    prctl = supervisor_module._load_prctl()
    assert (prctl is not None) is os.uname().sysname.startswith("Linux")


# --- the worker main, run in this process --------------------------------------------------------


@pytest.fixture
def worker_table() -> Iterator[HeartbeatTable]:
    with HeartbeatTable.create(segment_name(f"w{os.getpid()}-{next(_counter)}"), 1) as table:
        yield table


@pytest.fixture(autouse=True)
def _restore_sigterm() -> Iterator[None]:
    before = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, before)


class Recorder:
    """A service that logs its calls, optionally failing at start or stopping the worker."""

    def __init__(
        self, name: str, log: list[str], *, fail: bool = False, stop_after: float | None = None
    ) -> None:
        self.name, self.log, self.fail, self.stop_after = name, log, fail, stop_after

    async def start(self, worker: Worker) -> None:
        self.log.append(f"start {self.name} {worker.state.name}")
        if self.fail:
            raise RuntimeError("cannot bind")
        if self.stop_after is not None:
            asyncio.get_running_loop().call_later(self.stop_after, worker.stop, "test")

    async def drain(self) -> None:
        self.log.append(f"drain {self.name}")


def config(**kwargs: Any) -> WorkerConfig:
    return WorkerConfig(**{"slot": 0, "parent_pid": os.getppid(), "beat_interval": 0.01, **kwargs})


def test_worker_starts_in_order_drains_in_reverse(worker_table: HeartbeatTable) -> None:
    log: list[str] = []
    worker = Worker(config(), worker_table.cell(0))
    worker.add_service(Recorder("store", log))
    worker.add_service(Recorder("listener", log, stop_after=0.05))

    async def flushed() -> None:
        log.append("flushed")

    worker.on_drain(flushed)
    assert worker.run() == 0
    assert log == [
        "start store BOOTING",
        "start listener BOOTING",
        "flushed",
        "drain listener",
        "drain store",
    ]
    beat = worker_table.cell(0).read()
    assert beat.pid == os.getpid() and beat.state is SlotState.STOPPED
    assert worker.stop_reason == "test"


def test_worker_boot_failure_exits_3_without_draining(worker_table: HeartbeatTable) -> None:
    log: list[str] = []
    worker = Worker(config(), worker_table.cell(0))
    worker.add_service(Recorder("store", log, fail=True))
    assert worker.run() == BOOT_ERROR_EXIT
    assert log == ["start store BOOTING"]
    assert worker_table.cell(0).read().state is SlotState.BOOTING


def test_worker_drains_on_sigterm() -> None:
    log: list[str] = []

    class SendTerm(Recorder):
        async def start(self, worker: Worker) -> None:
            await super().start(worker)
            asyncio.get_running_loop().call_soon(signal.raise_signal, signal.SIGTERM)

    worker = Worker(config())
    worker.add_service(SendTerm("listener", log))
    assert worker.run() == 0
    assert worker.stop_reason == "SIGTERM"
    assert log == ["start listener BOOTING", "drain listener"]


def test_worker_exits_when_its_parent_changes() -> None:
    worker = Worker(config(parent_pid=1 if os.getppid() != 1 else 2))
    assert worker.run() == 0
    assert worker.stop_reason is not None and "is gone" in worker.stop_reason


def test_worker_drain_is_bounded() -> None:
    class Hangs(Recorder):
        async def drain(self) -> None:
            await asyncio.Event().wait()

    worker = Worker(config(drain_timeout=0.05))
    worker.add_service(Hangs("stuck", [], stop_after=0.0))
    assert worker.run() == 0
    assert worker.state is SlotState.STOPPED


def test_worker_beats_while_ready(worker_table: HeartbeatTable) -> None:
    cell = worker_table.cell(0)
    readings: list[float] = []

    class Watch(Recorder):
        async def start(self, worker: Worker) -> None:
            async def watch() -> None:
                deadline = asyncio.get_running_loop().time() + 10
                while len(set(readings)) < 3 and asyncio.get_running_loop().time() < deadline:
                    readings.append(cell.read().at)
                    await asyncio.sleep(0.005)
                worker.stop("seen enough")

            self.task = asyncio.get_running_loop().create_task(watch())

    worker = Worker(config(), cell)
    worker.add_service(Watch("watch", []))
    assert worker.run() == 0
    assert len(set(readings)) >= 3 and readings == sorted(readings)


def test_stop_before_run_drains_right_after_boot() -> None:
    log: list[str] = []
    worker = Worker(config())
    worker.add_service(Recorder("store", log))
    worker.stop("early")
    assert worker.run() == 0
    assert log == ["start store BOOTING", "drain store"]
