"""Start and stop a real ``shardbroker serve`` on free loopback ports, for the integration tests.

Opens processes, files and sockets; reads ``/proc`` (Linux) to find the worker processes.

What it relies on (DESIGN.md, "Contracts" and "Process model"):

- ``shardbroker serve --data-dir DIR --workers N --listen HOST:PORT --metrics HOST:PORT
  [--config FILE]`` runs in the foreground and prints one line per listener when ready; worker
  ``i`` listens on ``PORT + i`` (``--listen NAME://HOST:PORT,...`` for several listeners, each on
  its own block of ports). Readiness here = N distinct ``HOST:PORT`` strings for the Kafka
  ports seen on stdout (or stderr: where a logger writes is not part of the contract), *and* a TCP
  connect to each of them succeeding, before a deadline. The process dying first fails at once,
  with its output.
- SIGTERM drains and exits 0. The workers are children of the serve process, in its process group
  (the broker is started in a session of its own, so a ``killpg`` reaches everything it forked).
- Shared memory objects are named ``/dev/shm/shardbroker-<instance>-<object>`` (ipc/shm.py). The
  instance name of ``serve`` is not fixed by the contract, so it is learnt from what the broker's
  processes have mapped or open; after a graceful exit nothing of that instance may remain.

The command defaults to ``python -m shardbroker.cli.main`` (what the ``shardbroker`` script runs);
``SHARDBROKER_SERVE_CMD`` overrides it (shlex-split, ``serve`` and the options are appended), to
point the suite at another build.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from tests.ports import free_port_block

__all__ = [
    "BrokerProcess",
    "free_port_block",
    "listening_socket_owner",
    "toml_text",
    "wait_for",
]

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
ADDRESS_RE = re.compile(r"(\d+\.\d+\.\d+\.\d+):(\d+)")
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "shardbroker-"
#: Generous: the 2-core CI machine may be busy with the client processes of the previous test.
READY_TIMEOUT = 60.0
DRAIN_TIMEOUT = 30.0


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something other than None or False; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def toml_text(config: Mapping[str, str | int | float | bool]) -> str:
    """A flat TOML document: Kafka property names are dotted, so every key is quoted."""
    lines = []
    for key, value in config.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | float):
            text = repr(value)
        else:
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f'"{key}" = {text}')
    return "\n".join(lines) + "\n"


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out.extend(int(p) for p in children.read_text().split())
    return sorted(set(out))


def _descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in seen:
                seen.append(child)
                todo.append(child)
    return seen


def _listen_inodes(port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != "0A":  # 0A = TCP_LISTEN
                    continue
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def _socket_inodes(pid: int) -> set[int]:
    found: set[int] = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    found.add(int(target[8:-1]))
    return found


def listening_socket_owner(port: int, candidates: Iterable[int]) -> list[int]:
    """Which of ``candidates`` (pids) hold a socket listening on ``port``."""
    inodes = _listen_inodes(port)
    return [pid for pid in candidates if inodes & _socket_inodes(pid)] if inodes else []


def _shm_names_used_by(pid: int) -> set[str]:
    """Names of /dev/shm/shardbroker-* objects a process has mapped or open."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[5] if len(line.split(maxsplit=5)) == 6 else ""
            if path.startswith(str(SHM_DIR / SHM_PREFIX)):
                names.add(Path(path.replace(" (deleted)", "")).name)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith(str(SHM_DIR / SHM_PREFIX)):
                    names.add(Path(target.replace(" (deleted)", "")).name)
    return names


def _instance_of(shm_name: str) -> str:
    # shardbroker-<instance>-<object>[.suffix]; instance names contain no "-" (ipc/shm.py).
    return shm_name[len(SHM_PREFIX) :].split("-", 1)[0]


class BrokerProcess:
    """One ``shardbroker serve`` (its own session and process group), its ports and its output."""

    #: Every instance started and still referenced (conftest's kafka_api marker check reads them).
    started: weakref.WeakSet[BrokerProcess] = weakref.WeakSet()

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        *,
        workers: int = 2,
        config: Mapping[str, str | int | bool] | None = None,
        host: str = "127.0.0.1",
        base_port: int | None = None,
        extra_args: Iterable[str] = (),
        name: str = "broker",
        listeners: Sequence[str] = ("PLAINTEXT",),
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.workers = workers
        self.config = dict(config or {})
        self.host = host
        #: Listener names (Kafka's): the first one's ports are ``ports``; each gets a block of
        #: ``workers`` ports after the previous one's (protocols: ``listener.security.protocol.map``).
        self.listeners = tuple(listeners)
        blocks = workers * len(self.listeners)
        self.base_port = base_port if base_port is not None else free_port_block(blocks + 1, host)
        self.metrics_port = self.base_port + blocks
        self.extra_args = list(extra_args)
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        #: Every pid seen as a worker, and the shm instance names seen in use, over all starts.
        self.seen_pids: set[int] = set()
        self.instances: set[str] = set()
        self.graceful_exit = False
        self.returncodes: list[int] = []
        self._out_path = log_dir / f"{name}.stdout"
        self._err_path = log_dir / f"{name}.stderr"

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def ports(self) -> list[int]:
        return self.listener_ports(self.listeners[0])

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.base_port}"

    def listener_ports(self, name: str) -> list[int]:
        """Each worker's port on listener ``name``."""
        first = self.base_port + self.listeners.index(name) * self.workers
        return [first + i for i in range(self.workers)]

    def listener_bootstrap(self, name: str) -> str:
        return f"{self.host}:{self.listener_ports(name)[0]}"

    def all_ports(self) -> list[int]:
        return [port for name in self.listeners for port in self.listener_ports(name)]

    def _listen_value(self) -> str:
        if self.listeners == ("PLAINTEXT",):
            return f"{self.host}:{self.base_port}"
        return ",".join(f"{name}://{self.host}:{self.listener_ports(name)[0]}" for name in self.listeners)

    def command(self) -> list[str]:
        override = os.environ.get("SHARDBROKER_SERVE_CMD")
        base = shlex.split(override) if override else [sys.executable, "-m", "shardbroker.cli.main"]
        args = [
            *base,
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--workers",
            str(self.workers),
            "--listen",
            self._listen_value(),
            "--advertise",
            self.host,
            "--metrics",
            f"{self.host}:{self.metrics_port}",
        ]
        if self.config:
            config_path = self.log_dir / f"{self.name}.toml"
            config_path.write_text(toml_text(self.config))
            args += ["--config", str(config_path)]
        return args + self.extra_args

    def start(self, timeout: float = READY_TIMEOUT) -> BrokerProcess:
        """Start (or start again, on the same data dir and ports) and wait until ready."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        BrokerProcess.started.add(self)
        self.graceful_exit = False
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")
        with self._out_path.open("ab") as out, self._err_path.open("ab") as err:
            marker = f"===== start {self.starts}: {shlex.join(self.command())}\n".encode()
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            self._out_offset = out.tell()
            self._err_offset = err.tell()
            self.proc = subprocess.Popen(
                self.command(),
                cwd=self.log_dir,  # a relative default data dir must never land in the repo
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,
            )
        self.wait_ready(timeout)
        return self

    def _new_output(self) -> str:
        text = ""
        for path, offset in ((self._out_path, self._out_offset), (self._err_path, self._err_offset)):
            with path.open("rb") as f:
                f.seek(offset)
                text += f.read().decode(errors="replace")
        return text

    def announced_ports(self) -> set[int]:
        """Kafka ports of this broker that its output (since the last start) has named."""
        wanted = set(self.all_ports())
        return {int(m.group(2)) for m in ADDRESS_RE.finditer(self._new_output())} & wanted

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        proc = self._running()
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                raise AssertionError(
                    f"shardbroker serve exited with {code} before it was ready\n{self.output()}"
                )
            if self.announced_ports() == set(self.all_ports()) and all(
                self._probe(p) for p in self.all_ports()
            ):
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"shardbroker serve not ready after {timeout:.0f} s (announced "
                    f"{sorted(self.announced_ports())} of {self.all_ports()})\n{self.output()}"
                )
            time.sleep(0.05)
        self.worker_pids()  # remember them, and the shm instance, while everything runs

    def _probe(self, port: int) -> bool:
        try:
            with socket.create_connection((self.host, port), timeout=1.0):
                return True
        except OSError:
            return False

    def _running(self) -> subprocess.Popen[bytes]:
        if self.proc is None:
            raise RuntimeError("broker not started")
        return self.proc

    @property
    def pid(self) -> int:
        return self._running().pid

    def worker_pids(self) -> list[int]:
        """Pids of the serve process's live descendants (the workers), sorted."""
        pids = _descendants(self.pid)
        self.seen_pids.update(pids)
        for pid in [self.pid, *pids]:
            self.instances.update(_instance_of(n) for n in _shm_names_used_by(pid))
        return pids

    def worker_pid(self, node_id: int) -> int:
        """The pid of worker ``node_id``: the child holding the socket listening on port + id."""
        port = self.base_port + node_id

        def find() -> int | None:
            owners = listening_socket_owner(port, self.worker_pids())
            return owners[0] if len(owners) == 1 else None

        return wait_for(find, 10.0, f"the one worker process listening on port {port}")

    def send_signal(self, signum: int) -> None:
        self._running().send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = DRAIN_TIMEOUT) -> int:
        """Send ``signum`` (a graceful drain) and wait for the exit; return the exit code."""
        proc = self._running()
        if proc.poll() is None:
            self.worker_pids()
            proc.send_signal(signum)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"shardbroker serve still running {timeout:.0f} s after signal {signum}\n{self.output()}"
            ) from None
        self.returncodes.append(code)
        self.graceful_exit = code == 0
        self._wait_group_gone(timeout)
        return code

    def _wait_group_gone(self, timeout: float) -> None:
        """Workers must not outlive the serve process (orphans would hold ports and shm)."""

        def gone() -> bool:
            return not [pid for pid in self.seen_pids if _alive(pid)]

        try:
            wait_for(gone, timeout, "the worker processes to exit after the supervisor")
        except AssertionError:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL the whole process group and every worker ever seen; reap the serve process."""
        if self.proc is None:
            return
        victims = self.seen_pids | set(_descendants(self.proc.pid))
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in victims:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        # SIGKILL lands when a worker next runs: until then it is alive, and a broker started at
        # once would leave its shared memory alone as a live owner's.
        wait_for(lambda: not any(_alive(pid) for pid in victims), 10, "the killed workers' end")

    # -- shared memory -----------------------------------------------------------------------

    def shm_leftovers(self) -> list[str]:
        """/dev/shm entries of this broker's instance(s) that still exist."""
        return sorted(
            p.name for p in SHM_DIR.glob(f"{SHM_PREFIX}*") if _instance_of(p.name) in self.instances
        )

    def remove_shm_leftovers(self) -> list[str]:
        left = self.shm_leftovers()
        for name in left:
            with contextlib.suppress(OSError):
                (SHM_DIR / name).unlink()
        return left

    # -- output ------------------------------------------------------------------------------

    def output(self, tail: int = 200) -> str:
        parts = []
        for label, path in (("stdout", self._out_path), ("stderr", self._err_path)):
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {self.name} {label} (last {len(lines)} lines) ---\n" + "\n".join(lines))
        return "\n".join(parts)

    def __repr__(self) -> str:
        return f"BrokerProcess({self.bootstrap}, workers={self.workers}, data_dir={self.data_dir})"


def _alive(pid: int) -> bool:
    """A process that exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
