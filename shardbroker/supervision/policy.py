"""Supervision policy: which worker to start, signal or give up on, decided without touching a process.

The supervisor (supervisor.py) owns the processes; this module owns the *decisions*, as a sans-IO
state machine in h11's manner. The supervisor feeds it what happened -- a worker was spawned, a
pid exited with some code, a heartbeat cell was read, a stop was requested -- with the current
monotonic time, and gets back a list of actions (`Spawn`, `Signal`, `Halt`, `Exit`) to carry out.
Nothing here calls ``os``, reads a clock or sleeps, so every rule is a row in a table of unit tests.

Slots, not pids: slot ``i`` is worker index ``i`` and Kafka node id ``i`` (DESIGN.md, "Process
model"); a dead worker is replaced *in its slot*, so its node id, port and partitions stay put and
the other slots are never disturbed.

The rules, each with where its default comes from:

- Restart with capped exponential backoff: after the n-th consecutive failure of a slot the
  respawn waits ``min(backoff_max, backoff_initial * 2**(n-1))``: 0.1 s, 0.2 s, 0.4 s ... 10 s.
  The first restart is quick because a dead worker is a Kafka node clients cannot reach; the cap
  is systemd's ``RestartSec``-scale pause for a worker that keeps dying. A worker that stayed
  ready for ``backoff_reset_after`` (30 s) is healthy again and its streak is forgotten.
- Give up instead of crash-looping: a worker that exits with ``BOOT_ERROR_EXIT`` (3, gunicorn's
  WORKER_BOOT_ERROR) failed in a way a restart will not fix (bad config, unusable data dir), so the
  supervisor halts at once; a slot whose worker dies before ever becoming ready
  ``max_boot_failures`` (3) times in a row halts it too. Halting drains the other workers and exits
  with ``BOOT_ERROR_EXIT``.
- Stuck workers: a ready worker whose heartbeat is older than ``heartbeat_timeout`` (10 s: Kafka
  clients' request.timeout.ms is 30 s, so a wedged node is replaced before clients give up on it)
  gets SIGABRT -- the worker enables faulthandler, so the stuck stack lands in its log -- and
  SIGKILL ``abort_grace`` (2 s) later if it is still there. A worker that has not become ready
  within ``boot_timeout`` (60 s: log recovery may scan segments) is treated the same.
- Drain: on a stop request every worker gets SIGTERM; whatever is still alive ``drain_timeout``
  (30 s, gunicorn's graceful_timeout) later gets SIGKILL; once every slot is empty the supervisor
  exits with the code of the stop (0, or ``BOOT_ERROR_EXIT`` after a halt). A second stop request
  during a drain kills at once (an operator pressing ^C twice).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

# gunicorn's WORKER_BOOT_ERROR: a worker that cannot boot says so with this exit code, and the
# supervisor halts rather than restart it into the same failure.
BOOT_ERROR_EXIT = 3


class SlotState(enum.IntEnum):
    """What a worker slot is doing, as written to its heartbeat cell (heartbeat.py)."""

    EMPTY = 0  # never started
    STARTING = 1  # supervisor reset the cell and is forking; the worker has not written yet
    BOOTING = 2  # worker runs its boot hooks (recovery, binding listeners)
    READY = 3  # serving; beats every beat interval
    DRAINING = 4  # SIGTERM received: stop accepting, finish in-flight, flush
    STOPPED = 5  # drained, about to exit 0
    DEAD = 6  # reaped by the supervisor; ``exitcode`` in the cell says how it ended


class Stop(enum.Enum):
    """How to stop a worker; the supervisor maps these to SIGTERM, SIGABRT and SIGKILL."""

    TERM = "term"  # graceful drain
    ABORT = "abort"  # stuck: dump its stack (faulthandler) and die
    KILL = "kill"  # no questions


@dataclass(frozen=True)
class Policy:
    """The knobs, in seconds; defaults and their origins are in the module docstring."""

    heartbeat_timeout: float = 10.0
    boot_timeout: float = 60.0
    abort_grace: float = 2.0
    drain_timeout: float = 30.0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0
    backoff_reset_after: float = 30.0
    max_boot_failures: int = 3

    def __post_init__(self) -> None:
        for name in ("heartbeat_timeout", "boot_timeout", "abort_grace", "drain_timeout", "backoff_max"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)!r}")
        if self.backoff_initial < 0 or self.backoff_reset_after < 0:
            raise ValueError("backoff_initial and backoff_reset_after must not be negative")
        if self.max_boot_failures < 1:
            raise ValueError(f"max_boot_failures must be at least 1, got {self.max_boot_failures}")

    def backoff(self, failures: int) -> float:
        """Delay before respawning a slot after its ``failures``-th consecutive failure."""
        if failures <= 0:
            return 0.0
        # Cap the exponent too, so a long streak cannot overflow the float.
        return min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 64))


# --- what the supervisor tells the policy ------------------------------------------------------


@dataclass(frozen=True)
class Beat:
    """One reading of a heartbeat cell: who wrote it, in which state, at which monotonic time."""

    pid: int
    state: SlotState
    at: float


# --- what the policy tells the supervisor ------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    """Start a worker in ``slot``; ``restarts`` is how many times the slot was started before."""

    slot: int
    restarts: int


@dataclass(frozen=True)
class Signal:
    """Send ``stop`` to worker ``pid`` of ``slot``."""

    slot: int
    pid: int
    stop: Stop


@dataclass(frozen=True)
class Halt:
    """Give up: ``reason`` is for the operator; a drain towards ``exit_code`` has begun."""

    reason: str
    exit_code: int


@dataclass(frozen=True)
class Exit:
    """Every slot is empty after a stop: the supervisor exits with ``code``."""

    code: int


Action = Spawn | Signal | Halt | Exit


class Phase(enum.Enum):
    RUNNING = "running"
    DRAINING = "draining"
    DONE = "done"


@dataclass
class SlotRecord:
    """The policy's view of one slot. ``pid is None`` means the slot is empty."""

    slot: int
    pid: int | None = None
    started_at: float = 0.0
    ready_at: float | None = None  # when the worker was first seen READY
    last_beat: float = 0.0
    aborted_at: float | None = None  # when SIGABRT was sent
    killed: bool = False  # SIGKILL sent: only the reap is left
    termed: bool = False  # SIGTERM sent (drain)
    spawns: int = 0  # times started: restarts = spawns - 1
    failures: int = 0  # consecutive deaths, forgotten after backoff_reset_after of readiness
    boot_failures: int = 0  # consecutive deaths before becoming ready
    not_before: float = 0.0  # backoff: earliest respawn
    last_exit: int | None = None  # exit code (negative: killed by that signal)

    @property
    def restarts(self) -> int:
        return max(0, self.spawns - 1)


@dataclass
class Supervision:
    """The state machine. Drive it with the event methods and `tick`; carry out what they return."""

    workers: int
    policy: Policy = field(default_factory=Policy)
    phase: Phase = Phase.RUNNING
    exit_code: int | None = None  # set when a stop or halt begins; final once phase is DONE
    halt_reason: str | None = None
    drain_deadline: float | None = None
    slots: list[SlotRecord] = field(init=False)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"need at least one worker, got {self.workers}")
        self.slots = [SlotRecord(slot) for slot in range(self.workers)]

    # --- events ---------------------------------------------------------------------------------

    def spawned(self, slot: int, pid: int, now: float) -> None:
        """The worker for ``slot`` was forked as ``pid``."""
        rec = self.slots[slot]
        rec.pid = pid
        rec.started_at = rec.last_beat = now
        rec.ready_at = rec.aborted_at = None
        rec.killed = rec.termed = False
        rec.spawns += 1

    def spawn_failed(self, slot: int, now: float) -> None:
        """fork() itself failed (EAGAIN, ENOMEM): back off like after a crash."""
        rec = self.slots[slot]
        rec.spawns += 1  # it counts as a (failed) start, so the next one is a restart
        rec.failures += 1
        rec.not_before = now + self.policy.backoff(rec.failures)

    def observe(self, slot: int, beat: Beat, now: float) -> None:
        """A reading of ``slot``'s heartbeat cell. Readings by another pid (the previous worker,
        or a cell the new one has not written yet) say nothing about the current worker."""
        rec = self.slots[slot]
        if rec.pid is None or beat.pid != rec.pid:
            return
        rec.last_beat = max(rec.last_beat, beat.at)
        if beat.state >= SlotState.READY and rec.ready_at is None:
            rec.ready_at = now
            rec.boot_failures = 0

    def exited(self, pid: int, exit_code: int, now: float) -> list[Action]:
        """Worker ``pid`` was reaped; ``exit_code`` as os.waitstatus_to_exitcode (-N = signal N)."""
        rec = next((r for r in self.slots if r.pid == pid), None)
        if rec is None:
            return []  # not one of ours (or reaped twice): nothing to decide
        was_ready = rec.ready_at is not None
        rec.pid = None
        rec.last_exit = exit_code
        if self.phase is not Phase.RUNNING:
            return self._finish_if_empty()
        rec.failures += 1
        rec.not_before = now + self.policy.backoff(rec.failures)
        if exit_code == BOOT_ERROR_EXIT:
            return self._halt(
                f"worker {rec.slot} failed to boot (exit code {BOOT_ERROR_EXIT}); "
                "halting instead of restarting it into the same failure",
                now,
            )
        if not was_ready:
            rec.boot_failures += 1
            if rec.boot_failures >= self.policy.max_boot_failures:
                return self._halt(
                    f"worker {rec.slot} died before becoming ready {rec.boot_failures} times in a row "
                    f"(last exit code {exit_code}); halting instead of crash-looping",
                    now,
                )
        return []

    def stop(self, now: float, exit_code: int = 0) -> list[Action]:
        """A stop was requested (SIGTERM/SIGINT): drain. A second request kills what is left."""
        if self.phase is Phase.DONE:
            return []
        if self.phase is Phase.DRAINING:
            return self._kill_all()
        self.phase = Phase.DRAINING
        self.exit_code = exit_code
        self.drain_deadline = now + self.policy.drain_timeout
        actions: list[Action] = []
        for rec in self.slots:
            if rec.pid is not None and not rec.killed and not rec.termed:
                rec.termed = True
                actions.append(Signal(rec.slot, rec.pid, Stop.TERM))
        return actions + self._finish_if_empty()

    def tick(self, now: float) -> list[Action]:
        """Periodic decisions: respawn after backoff, abort/kill stuck workers, end a drain."""
        if self.phase is Phase.DONE:
            return []
        if self.phase is Phase.DRAINING:
            assert self.drain_deadline is not None
            actions = self._kill_all() if now >= self.drain_deadline else []
            return actions + self._finish_if_empty()
        actions = []
        for rec in self.slots:
            if rec.pid is None:
                if now >= rec.not_before:
                    actions.append(Spawn(rec.slot, rec.spawns))
                continue
            if rec.ready_at is not None and now - rec.ready_at >= self.policy.backoff_reset_after:
                rec.failures = 0
            if rec.killed:
                continue
            if rec.aborted_at is not None:
                if now - rec.aborted_at >= self.policy.abort_grace:
                    rec.killed = True
                    actions.append(Signal(rec.slot, rec.pid, Stop.KILL))
                continue
            if now >= self._stuck_at(rec):
                rec.aborted_at = now
                actions.append(Signal(rec.slot, rec.pid, Stop.ABORT))
        return actions

    def next_deadline(self) -> float | None:
        """The earliest time at which `tick` may have something to do (None: only events will).

        The supervisor sleeps until then at most; heartbeats move the stuck-deadline later, so it
        also wakes at a bounded interval to read them."""
        if self.phase is Phase.DONE:
            return None
        if self.phase is Phase.DRAINING:
            return self.drain_deadline
        times: list[float] = []
        for rec in self.slots:
            if rec.pid is None:
                times.append(rec.not_before)
            elif rec.killed:
                continue
            elif rec.aborted_at is not None:
                times.append(rec.aborted_at + self.policy.abort_grace)
            else:
                times.append(self._stuck_at(rec))
        return min(times, default=None)

    # --- queries --------------------------------------------------------------------------------

    def live_pids(self) -> list[int]:
        return [rec.pid for rec in self.slots if rec.pid is not None]

    def slot_of(self, pid: int) -> int | None:
        return next((rec.slot for rec in self.slots if rec.pid == pid), None)

    # --- internals ------------------------------------------------------------------------------

    def _stuck_at(self, rec: SlotRecord) -> float:
        if rec.ready_at is None:
            return rec.started_at + self.policy.boot_timeout
        return rec.last_beat + self.policy.heartbeat_timeout

    def _halt(self, reason: str, now: float) -> list[Action]:
        self.halt_reason = reason
        return [Halt(reason, BOOT_ERROR_EXIT), *self.stop(now, exit_code=BOOT_ERROR_EXIT)]

    def _kill_all(self) -> list[Action]:
        actions: list[Action] = []
        for rec in self.slots:
            if rec.pid is not None and not rec.killed:
                rec.killed = True
                actions.append(Signal(rec.slot, rec.pid, Stop.KILL))
        return actions

    def _finish_if_empty(self) -> list[Action]:
        if self.phase is Phase.DRAINING and all(rec.pid is None for rec in self.slots):
            self.phase = Phase.DONE
            assert self.exit_code is not None
            return [Exit(self.exit_code)]
        return []


def cpu_for_slot(slot: int, cpus: Sequence[int]) -> int | None:
    """The core worker ``slot`` is pinned to: the allowed cores in order, wrapping around when
    there are more workers than cores (None when the OS reports none)."""
    if not cpus:
        return None
    ordered = sorted(cpus)
    return ordered[slot % len(ordered)]
