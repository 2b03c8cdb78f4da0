"""The supervisor process: forks one worker per slot, reaps, restarts, aborts the stuck, drains.

Uses fork, signals, waitpid, kill, a self-pipe and POSIX shared memory (the heartbeat table).

Shape (gunicorn's arbiter, split in two): this module does the process work and nothing else;
every decision -- when to respawn, when a worker is stuck, when to give up, when a drain is over --
is made by the pure `policy.Supervision`, which returns actions that `_execute` carries out.

The loop. Signal handlers only append the signal to a queue; `signal.set_wakeup_fd` writes a
byte to a self-pipe, which wakes the one `selectors` loop (shared through `register` with the
controller's rings and the /metrics server). Each `step`: wait for I/O or the policy's next
deadline (at most ``max_sleep``), dispatch queued signals to ``handle_<name>()``, reap
(``waitpid(-1, WNOHANG)`` until nothing is left), read the heartbeat cells, and carry out what the
policy's ``tick`` says. SIGCHLD only wakes the loop, so a death is seen at once, not at the next tick.

Signals: SIGTERM, SIGINT and SIGHUP drain (SIGTERM to workers, SIGKILL after the drain timeout,
exit 0); a second one kills at once. SIGHUP drains rather than dying with its default action so
that a closed terminal does not leave the heartbeat segment behind. Workers ignore SIGINT: ^C
reaches the whole process group, and the drain is the supervisor's to run.

Fork hygiene: the heartbeat segment is created and the first workers forked before the supervisor
starts any thread (a warning is logged if one exists: locks held by other threads stay locked in
the child). The handled signals are blocked around fork; the child restores default dispositions,
drops the wakeup fd, closes the self-pipe and every file object registered on the parent's
selector (closing, never unregistering: the epoll set is shared with the parent), then unblocks.

Orphans: PR_SET_PDEATHSIG (SIGTERM, set via ctypes right after fork) ends workers within ~10 ms of
a SIGKILLed supervisor; the worker's ``os.getppid()`` check on each beat is the portable net, and a
getppid check right after prctl closes the race of a parent that died first. A SIGKILLed worker's
replacement is READY ~110 ms later (the 0.1 s first backoff plus fork and boot); other slots are
not touched. Measurements: docs/notes/supervisor.md.

Pinning: worker ``i`` is pinned (``os.sched_setaffinity``) to the i-th core this process may run
on, wrapping; the default worker count is the number of those cores (a cpuset may restrict it).

Shared memory is unlinked on every exit path the process survives (`close` runs from ``finally``,
after SIGKILLing and reaping any worker still alive); after a SIGKILL of the supervisor the next
start reclaims the segment (heartbeat.py: the recorded owner pid is dead).

``python -m shardbroker.supervision.supervisor --instance NAME`` runs a supervisor with no services
in the workers (tests, experiments); ``shardbroker serve`` subclasses `Supervisor` with the
broker's setup (serve.py). `Supervisor.run` must be called from the main thread.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import faulthandler
import importlib
import logging
import os
import selectors
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn, Protocol

from shardbroker.supervision import policy as supervision
from shardbroker.supervision.event_loop import LoopFactory
from shardbroker.supervision.heartbeat import HeartbeatCell, HeartbeatTable, SegmentInUse, segment_name
from shardbroker.supervision.policy import BOOT_ERROR_EXIT, Phase, Policy, Stop, Supervision
from shardbroker.supervision.worker import Worker, WorkerConfig

log = logging.getLogger(__name__)

STOP_SIGNALS: dict[Stop, signal.Signals] = {
    Stop.TERM: signal.SIGTERM,
    Stop.ABORT: signal.SIGABRT,
    Stop.KILL: signal.SIGKILL,
}
HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

WorkerSetup = Callable[[Worker], None]
IOCallback = Callable[[int], None]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


FileLike = int | _HasFileno


def default_worker_count() -> int:
    """One worker per core this process may run on (``os.cpu_count()`` when nothing restricts it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


@dataclass(frozen=True)
class SupervisorConfig:
    instance: str  # names the shared memory: /shardbroker-<instance>-...
    workers: int = field(default_factory=default_worker_count)
    policy: Policy = field(default_factory=Policy)
    beat_interval: float = 0.5  # how often workers beat and check their parent
    pin_cpus: bool = True
    #: The workers' event loop (supervision/event_loop.py); None: asyncio's default.
    loop_factory: LoopFactory | None = None
    # Read heartbeats at least this often; also bounds how late a stuck worker is noticed.
    max_sleep: float = 1.0

    @property
    def worker_drain_timeout(self) -> float:
        # Below the supervisor's, so a worker ends its own drain before being SIGKILLed.
        return self.policy.drain_timeout * 0.8


class Supervisor:
    """Runs the workers of one broker instance. `run` blocks until drained; returns the exit code."""

    def __init__(
        self,
        config: SupervisorConfig,
        setup: WorkerSetup | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.setup = setup
        self.clock = clock
        self.supervision = Supervision(config.workers, config.policy)
        self.pid = os.getpid()
        self.heartbeats: HeartbeatTable | None = None
        self.halt_reason: str | None = None
        self.exit_code: int | None = None
        self._cells: list[HeartbeatCell] = []
        self._cpus: list[int] = []
        self._selector: selectors.BaseSelector | None = None
        self._pipe: tuple[int, int] | None = None
        self._signals: deque[int] = deque()
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup_fd = -1
        self._prctl: Callable[..., int] | None = None
        self._warned_threads = False

    # --- extension points -----------------------------------------------------------------------

    def register(self, fileobj: FileLike, events: int, callback: IOCallback) -> None:
        """Serve another file object (the /metrics listener) from the supervisor's loop; the
        callback gets the ready event mask. Forked workers close it."""
        assert self._selector is not None, "register after start()"
        self._selector.register(fileobj, events, callback)

    def unregister(self, fileobj: FileLike) -> None:
        assert self._selector is not None
        self._selector.unregister(fileobj)

    # --- running --------------------------------------------------------------------------------

    def run(self) -> int:
        """Start (unless `start` was already called, e.g. to `register` the /metrics listener
        after the first fork), loop until every worker is gone after a stop or halt, clean up."""
        try:
            if self.heartbeats is None:
                self.start()
            while not self.step():
                pass
        finally:
            self.close()
        assert self.exit_code is not None
        return self.exit_code

    def start(self) -> None:
        """Create the heartbeat table, install the signal plumbing, spawn the workers."""
        assert self.heartbeats is None, "start() twice"
        self.pid = os.getpid()
        if self.config.pin_cpus and hasattr(os, "sched_getaffinity"):
            self._cpus = sorted(os.sched_getaffinity(0))
        self._prctl = _load_prctl()
        self.heartbeats = HeartbeatTable.create(segment_name(self.config.instance), self.config.workers)
        self._cells = [self.heartbeats.cell(slot) for slot in range(self.config.workers)]
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)
        self._pipe = (read_fd, write_fd)
        self._selector = selectors.DefaultSelector()
        self._selector.register(read_fd, selectors.EVENT_READ, self._drain_wakeups)
        for signum in HANDLED_SIGNALS:
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)
        self._old_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        log.info(
            "supervisor %d: %d workers, heartbeat table %s",
            self.pid,
            self.config.workers,
            self.heartbeats.name,
        )
        self._execute(self.supervision.tick(self.clock()))

    def step(self, timeout: float | None = None) -> bool:
        """One turn of the loop: wait, dispatch signals, reap, read heartbeats, act.
        ``timeout`` caps the wait (tests pass 0). True once the supervisor is done."""
        assert self._selector is not None, "step() before start()"
        wait = self._sleep_time(self.clock())
        if timeout is not None:
            wait = min(wait, timeout)
        for key, mask in self._selector.select(0.0 if self._signals else wait):
            key.data(mask)
        while self._signals:
            self._dispatch(self._signals.popleft())
        self.reap()
        now = self.clock()
        self._observe_heartbeats(now)
        self._execute(self.supervision.tick(now))
        return self.supervision.phase is Phase.DONE

    def reap(self) -> None:
        """Collect every exited child (waitpid(-1, WNOHANG) until none is left)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            slot = self.supervision.slot_of(pid)
            if slot is None:
                log.debug("reaped unknown child %d (exit code %d)", pid, code)
                continue
            # The dead worker's last beat is still in its cell: read it before judging the death,
            # or a worker that became ready and died between two ticks counts as a boot failure.
            self.supervision.observe(slot, self._cells[slot].read(), self.clock())
            self._cells[slot].mark_dead(code)
            level = logging.INFO if self.supervision.phase is not Phase.RUNNING else logging.WARNING
            log.log(level, "worker %d (pid %d) exited with %s", slot, pid, _describe_exit(code))
            self._execute(self.supervision.exited(pid, code, self.clock()))

    def close(self) -> None:
        """Leave nothing behind: SIGKILL and reap live workers, restore signals, unlink shm."""
        for pid in self.supervision.live_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.supervision.exited(pid, -signal.SIGKILL, self.clock())
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            for signum, handler in self._old_handlers.items():
                signal.signal(signum, handler)
            self._old_handlers.clear()
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._pipe is not None:
            for fd in self._pipe:
                os.close(fd)
            self._pipe = None
        self._cells = []
        if self.heartbeats is not None:
            self.heartbeats.close_and_unlink()
            self.heartbeats = None

    # --- signals --------------------------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        # Only enqueue: the loop does the work. Repeats of a queued signal collapse (a burst of
        # SIGCHLD is one reap), and a second SIGTERM after the first was handled still counts.
        if signum not in self._signals:
            self._signals.append(signum)

    def _drain_wakeups(self, mask: int) -> None:
        assert self._pipe is not None
        with contextlib.suppress(BlockingIOError):
            while os.read(self._pipe[0], 4096):
                pass

    def _dispatch(self, signum: int) -> None:
        name = signal.Signals(signum).name[3:].lower()
        handler: Callable[[], None] | None = getattr(self, f"handle_{name}", None)
        if handler is None:
            log.warning("ignoring unexpected signal %s", signal.Signals(signum).name)
            return
        handler()

    def handle_term(self) -> None:
        self._request_stop("SIGTERM")

    def handle_int(self) -> None:
        self._request_stop("SIGINT")

    def handle_hup(self) -> None:
        self._request_stop("SIGHUP")

    def handle_chld(self) -> None:
        """Nothing to do: its byte on the wakeup pipe woke the loop, whose reap follows."""

    def _request_stop(self, why: str) -> None:
        if self.supervision.phase is Phase.RUNNING:
            log.info(
                "%s: draining %d workers (SIGTERM, then SIGKILL after %.1f s)",
                why,
                len(self.supervision.live_pids()),
                self.config.policy.drain_timeout,
            )
        elif self.supervision.phase is Phase.DRAINING:
            log.warning("%s again during the drain: killing the remaining workers", why)
        self._execute(self.supervision.stop(self.clock()))

    # --- carrying out the policy ----------------------------------------------------------------

    def _execute(self, actions: Sequence[supervision.Action]) -> None:
        for action in actions:
            if isinstance(action, supervision.Spawn):
                self._spawn(action.slot, action.restarts)
            elif isinstance(action, supervision.Signal):
                self._send(action)
            elif isinstance(action, supervision.Halt):
                self.halt_reason = action.reason
                log.error("halting: %s", action.reason)
            else:
                self.exit_code = action.code

    def _send(self, action: supervision.Signal) -> None:
        sig = STOP_SIGNALS[action.stop]
        if action.stop is Stop.ABORT:
            log.error("worker %d (pid %d) stopped beating: SIGABRT", action.slot, action.pid)
        elif action.stop is Stop.KILL:
            log.warning("worker %d (pid %d): SIGKILL", action.slot, action.pid)
        with contextlib.suppress(ProcessLookupError):  # already dead: the reap will tell
            os.kill(action.pid, sig)

    def _observe_heartbeats(self, now: float) -> None:
        for rec in self.supervision.slots:
            if rec.pid is not None:
                self.supervision.observe(rec.slot, self._cells[rec.slot].read(), now)

    def _sleep_time(self, now: float) -> float:
        deadline = self.supervision.next_deadline()
        if deadline is None:
            return self.config.max_sleep
        return max(0.0, min(self.config.max_sleep, deadline - now))

    def _spawn(self, slot: int, restarts: int) -> None:
        now = self.clock()
        self._cells[slot].reset(restarts, now)
        if threading.active_count() > 1 and not self._warned_threads:
            self._warned_threads = True
            log.warning(
                "forking with %d threads alive: their locks stay held in the child", threading.active_count()
            )
        # Unflushed buffers would be written twice, once by each process.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
        try:
            pid = os.fork()
        except OSError as exc:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            log.error("worker %d: fork failed: %s", slot, exc)
            self.supervision.spawn_failed(slot, now)
            return
        if pid == 0:
            self._child(slot)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        self.supervision.spawned(slot, pid, now)
        log.info("worker %d: started pid %d (restarts %d)", slot, pid, restarts)

    # --- in the child ---------------------------------------------------------------------------

    def _child(self, slot: int) -> NoReturn:
        code = 1
        try:
            self._reset_after_fork(slot)
            worker = Worker(
                WorkerConfig(
                    slot=slot,
                    parent_pid=self.pid,
                    beat_interval=self.config.beat_interval,
                    drain_timeout=self.config.worker_drain_timeout,
                    loop_factory=self.config.loop_factory,
                ),
                self._cells[slot],
            )
            # A supervisor that died before prctl took effect: nothing to serve for.
            code = 0 if os.getppid() != self.pid else self._boot(worker)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    def _boot(self, worker: Worker) -> int:
        if self.setup is not None:
            try:
                self.setup(worker)
            except Exception:
                log.exception("worker %d: setup failed", worker.slot)
                return BOOT_ERROR_EXIT
        return worker.run()

    def _reset_after_fork(self, slot: int) -> None:
        signal.set_wakeup_fd(-1)
        for signum in HANDLED_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if self._selector is not None:
            for key in list(self._selector.get_map().values()):
                close = getattr(key.fileobj, "close", None)
                with contextlib.suppress(OSError):
                    if callable(close):
                        close()
                    elif self._pipe is None or key.fd not in self._pipe:
                        os.close(key.fd)
            self._selector.close()  # closes this process's epoll fd; never unregister
            self._selector = None
        if self._pipe is not None:
            for fd in self._pipe:
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pipe = None
        self._old_handlers.clear()
        # The heartbeat table is inherited on purpose (the worker's cell lives there); it must
        # not be unlinked by the child, which only ever leaves through os._exit.
        if self._prctl is not None:
            self._prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)
        pinned = supervision.cpu_for_slot(slot, self._cpus)
        if pinned is not None and hasattr(os, "sched_setaffinity"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, {pinned})
        faulthandler.enable()  # SIGABRT from the supervisor then dumps the stuck stack


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux (resolved before any fork, so children need no dlopen)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


# --- `python -m shardbroker.supervision.supervisor` ---------------------------------------------------------


def _load_setup(spec: str) -> WorkerSetup:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise argparse.ArgumentTypeError(f"--setup wants MODULE:FUNCTION, got {spec!r}")
    setup: WorkerSetup = getattr(importlib.import_module(module_name), attr)
    return setup


def build_parser() -> argparse.ArgumentParser:
    defaults = Policy()
    parser = argparse.ArgumentParser(
        prog="python -m shardbroker.supervision.supervisor",
        description="Run the supervisor and its workers in the foreground (workers without services).",
    )
    parser.add_argument("--instance", required=True, help="names the shared memory segments")
    parser.add_argument("--workers", type=int, default=default_worker_count())
    parser.add_argument("--heartbeat-timeout", type=float, default=defaults.heartbeat_timeout)
    parser.add_argument("--boot-timeout", type=float, default=defaults.boot_timeout)
    parser.add_argument("--abort-grace", type=float, default=defaults.abort_grace)
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout)
    parser.add_argument("--backoff-initial", type=float, default=defaults.backoff_initial)
    parser.add_argument("--backoff-max", type=float, default=defaults.backoff_max)
    parser.add_argument("--beat-interval", type=float, default=0.5)
    parser.add_argument("--no-pin", action="store_true", help="do not pin workers to cores")
    parser.add_argument(
        "--setup", type=_load_setup, default=None, help="MODULE:FUNCTION(worker) in each worker"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"
    )
    policy = Policy(
        heartbeat_timeout=args.heartbeat_timeout,
        boot_timeout=args.boot_timeout,
        abort_grace=args.abort_grace,
        drain_timeout=args.drain_timeout,
        backoff_initial=args.backoff_initial,
        backoff_max=args.backoff_max,
    )
    config = SupervisorConfig(
        instance=args.instance,
        workers=args.workers,
        policy=policy,
        beat_interval=args.beat_interval,
        pin_cpus=not args.no_pin,
    )
    supervisor = Supervisor(config, args.setup)
    try:
        code = supervisor.run()
    except SegmentInUse as exc:
        print(f"shardbroker supervisor: {exc}", file=sys.stderr)
        return 1
    if supervisor.halt_reason is not None:
        print(f"shardbroker supervisor: exit code {code}: {supervisor.halt_reason}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
