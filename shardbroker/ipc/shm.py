"""POSIX shared-memory segments and doorbell FIFOs: names, creation, attach, cleanup, stale reclaim.

This module opens files: ``/dev/shm`` entries through ``posix_ipc.SharedMemory`` (``shm_open``)
and named FIFOs created next to them with ``os.mkfifo``.

Names
    Every shardbroker object of a broker instance is named ``/shardbroker-<instance>-<object>``
    (``shm_open`` name; the file is ``/dev/shm/shardbroker-<instance>-<object>``). Doorbell FIFOs
    of a ring take the ring segment's file name plus a suffix (``.rbell``, ``.wbell``), so
    ``ls /dev/shm/shardbroker-<instance>-*`` lists everything an instance left behind. An instance
    name is ``[A-Za-z0-9_]+`` (no ``-``, so one instance's prefix is never a prefix of another's);
    an object name is ``[A-Za-z0-9_-]+`` (no ``.``, so FIFO suffixes are unambiguous).

Preamble (the first 32 bytes of every segment created here, native byte order)::

    0   8  magic       b"SHRDBRKR"
    8   4  kind        what follows (ring, counters, ...), chosen by the caller
    12  4  version     layout version of that kind
    16  8  owner_pid   pid of the creating process
    24  8  owner_start start time of that process (/proc/<pid>/stat field 22, clock ticks)

The owner is recorded with its start time because pids are reused: after a crash and a reboot-free
restart, the dead supervisor's pid may well belong to some other live process by then.

Ownership: the creating process (``SharedSegment.create``) unlinks the segment when it closes it,
through the context manager, an explicit ``close()``, or (as a last resort) a ``weakref.finalize``
at interpreter exit. Forked children inherit the object but never unlink: unlinking is tied to the
owner *pid*, not to the object. SIGKILL skips all of that; ``reclaim_stale`` at the next start
removes what a dead owner left.
"""

from __future__ import annotations

import contextlib
import hashlib
import mmap
import os
import re
import stat
import struct
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import posix_ipc  # type: ignore[import-not-found,unused-ignore]

from shardbroker.ipc.procfs import START_TIME, stat_fields
from shardbroker.ipc.ring_names import parse_ring_name

SHM_DIR = Path("/dev/shm")
PREFIX = "shardbroker"
MAGIC = b"SHRDBRKR"
PREAMBLE = struct.Struct("=8sIIQQ")
PREAMBLE_SIZE = 32
assert PREAMBLE.size == PREAMBLE_SIZE

_INSTANCE_RE = re.compile(r"[A-Za-z0-9_]{1,64}")
_OBJECT_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: A segment without a valid preamble is only reclaimed once it is this old: its creator may be
#: between ``shm_open`` and writing the preamble (a few microseconds, but be generous).
UNINITIALISED_GRACE_S = 10.0


class ShmError(Exception):
    """A shared-memory object cannot be created, attached or recognised."""


class ShmAccessError(ShmError):
    """A shared-memory object exists but its mode does not let this process open it."""


def instance_name(data_dir: Path) -> str:
    """``sb`` + 8 hex digits of the SHA-256 of the resolved data dir: the one naming rule by which
    the broker and its local clients find the same shared memory."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()
    return f"sb{digest[:8]}"


def validate_instance(instance: str) -> str:
    if not _INSTANCE_RE.fullmatch(instance):
        raise ValueError(f"instance name must match [A-Za-z0-9_]{{1,64}}: {instance!r}")
    return instance


def validate_object(name: str) -> str:
    if not _OBJECT_RE.fullmatch(name):
        raise ValueError(f"object name must match [A-Za-z0-9_-]{{1,128}}: {name!r}")
    return name


def shm_name(instance: str, name: str) -> str:
    """The ``shm_open`` name: ``/shardbroker-<instance>-<name>``."""
    return f"/{PREFIX}-{validate_instance(instance)}-{validate_object(name)}"


def fifo_path(shm: str, suffix: str) -> Path:
    """The doorbell FIFO of a segment: ``/dev/shm/<segment>.<suffix>``."""
    return SHM_DIR / f"{shm.lstrip('/')}.{suffix}"


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None when there is no such process."""
    try:
        return int(stat_fields(pid)[START_TIME])
    except (FileNotFoundError, ProcessLookupError):
        return None


def owner_alive(pid: int, start_time: int) -> bool:
    """True when ``pid`` runs and is the same process that was started at ``start_time``.

    A zombie is not running: a worker SIGKILLed with its supervisor is reparented, and in a
    container whose init does not reap, it stays a zombie; its segments are stale all the same."""
    if pid <= 0:
        return False
    try:
        fields = stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return False
    if fields[0] in (b"Z", b"X"):
        return False
    return start_time == 0 or int(fields[START_TIME]) == start_time


@dataclass(frozen=True)
class Preamble:
    kind: int
    version: int
    owner_pid: int
    owner_start: int

    @classmethod
    def unpack(cls, buf: bytes | memoryview | mmap.mmap) -> Preamble | None:
        """The preamble at the start of ``buf``, or None when the magic is missing."""
        if len(buf) < PREAMBLE_SIZE:
            return None
        magic, kind, version, pid, start = PREAMBLE.unpack_from(buf, 0)
        if magic != MAGIC:
            return None
        return cls(kind, version, pid, start)


def _unlink_quietly(shm: str, fifos: tuple[Path, ...]) -> None:
    with contextlib.suppress(posix_ipc.ExistentialError):
        posix_ipc.unlink_shared_memory(shm)
    for path in fifos:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _finalize(owner_pid: int, shm: str, fifos: tuple[Path, ...]) -> None:
    if os.getpid() == owner_pid:
        _unlink_quietly(shm, fifos)


@dataclass(eq=False)
class SharedSegment:
    """One mapped POSIX shared-memory segment (plus the FIFOs that belong to it).

    ``create`` makes a new segment with ``O_CREAT | O_EXCL`` (never silently reusing a stale one:
    call ``reclaim_stale`` first), writes the preamble and makes the calling process its owner.
    ``attach`` maps an existing one by name, from any process. Both map the whole segment shared.
    """

    name: str
    mmap: mmap.mmap
    owner: bool
    fifos: tuple[Path, ...] = ()
    _finalizer: weakref.finalize[..., SharedSegment] | None = field(default=None, repr=False)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def create(
        cls, name: str, size: int, kind: int, version: int, fifo_suffixes: tuple[str, ...] = ()
    ) -> SharedSegment:
        fifos = tuple(fifo_path(name, s) for s in fifo_suffixes)
        try:
            shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
        except posix_ipc.ExistentialError as exc:
            raise ShmError(f"{name} exists: another instance is running, or call reclaim_stale") from exc
        pid = os.getpid()
        made: list[Path] = []
        try:
            try:
                mm = mmap.mmap(shm.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            finally:
                shm.close_fd()
            PREAMBLE.pack_into(mm, 0, MAGIC, kind, version, pid, process_start_time(pid) or 0)
            for path in fifos:
                os.mkfifo(path, 0o600)  # FileExistsError: never share a stale FIFO
                made.append(path)
        except BaseException:
            _unlink_quietly(name, tuple(made))
            raise
        seg = cls(name, mm, True, fifos)
        seg._finalizer = weakref.finalize(seg, _finalize, pid, name, fifos)
        return seg

    @classmethod
    def attach(
        cls,
        name: str,
        kind: int,
        version: int,
        fifo_suffixes: tuple[str, ...] = (),
        *,
        writable: bool = True,
    ) -> SharedSegment:
        """Map ``name``; ``writable=False`` opens and maps it read-only (a reader that must not,
        or may not, write: local clients and the broker's shared directory)."""
        try:
            shm = posix_ipc.SharedMemory(name, read_only=not writable)
        except posix_ipc.ExistentialError as exc:
            raise ShmError(f"{name} does not exist") from exc
        except posix_ipc.PermissionsError as exc:
            raise ShmAccessError(f"{name}: permission denied") from exc
        try:
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(shm.fd, shm.size, mmap.MAP_SHARED, prot)
        finally:
            shm.close_fd()
        pre = Preamble.unpack(mm)
        if pre is None or pre.kind != kind or pre.version != version:
            mm.close()
            raise ShmError(f"{name}: not a kind={kind} version={version} segment: {pre}")
        return cls(name, mm, False, tuple(fifo_path(name, s) for s in fifo_suffixes))

    @property
    def preamble(self) -> Preamble:
        pre = Preamble.unpack(self.mmap)
        assert pre is not None
        return pre

    def close(self) -> None:
        """Unmap; the owner (same pid as the creator) also unlinks the segment and its FIFOs.

        The name is unlinked first; then BufferError is raised (and the mapping kept until the
        views die) if memoryviews of the mapping are still alive.
        """
        if self._closed:
            return
        # Unlink before unmapping: a BufferError from a leaked memoryview must not leak the name.
        if self._finalizer is not None:
            self._finalizer()  # unlinks only in the owner pid; runs at most once
        self.mmap.close()
        self._closed = True

    def __enter__(self) -> SharedSegment:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class ReclaimReport:
    reclaimed: list[str] = field(default_factory=list)  # /dev/shm file names unlinked
    live: list[str] = field(default_factory=list)  # segments whose owner still runs


def _creator_in_name(obj: str) -> int | None:
    """The creating pid a client ring's name carries (``lc<pid>-...``, ring_names.py), else None."""
    parsed = parse_ring_name(obj)
    return None if parsed is None else parsed.pid


def reclaim_stale(instance: str, now: float | None = None) -> ReclaimReport:
    """Unlink the segments and FIFOs of ``instance`` whose owner process is gone.

    Called by the supervisor at start, before creating anything: a previous run killed with
    SIGKILL (or by the OOM killer) left its segments in /dev/shm, and ``create`` refuses to reuse
    them. A segment is stale when its preamble's owner pid is not running or is a different
    process (start time differs), or when it has no valid preamble and is older than
    ``UNINITIALISED_GRACE_S``, or sooner when its name says who created it (``lc<pid>-...``) and
    that pid is not running: a SIGKILL between ``shm_open`` and the preamble (a worker killed as
    it opened a forwarding ring) must not leave a segment the restarted broker keeps. A FIFO is
    stale when its segment is gone. Segments of live owners are left alone and listed in ``live``
    (the caller decides whether that means "already running").
    """
    prefix = f"{PREFIX}-{validate_instance(instance)}-"
    now = time.time() if now is None else now
    report = ReclaimReport()
    entries = sorted(p for p in SHM_DIR.iterdir() if p.name.startswith(prefix))
    for path in entries:
        if "." in path.name:
            continue  # FIFOs: second pass
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            with path.open("rb") as f:
                head = f.read(PREAMBLE_SIZE)
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's (a local client's, 0600): not ours to judge
            report.live.append(path.name)
            continue
        pre = Preamble.unpack(head)
        if pre is None:
            creator = _creator_in_name(path.name[len(prefix) :])
            stale = now - st.st_mtime > UNINITIALISED_GRACE_S or (
                creator is not None and not owner_alive(creator, 0)
            )
        else:
            stale = not owner_alive(pre.owner_pid, pre.owner_start)
        if stale:
            try:
                posix_ipc.unlink_shared_memory("/" + path.name)
            except posix_ipc.ExistentialError:
                pass
            except posix_ipc.PermissionsError:  # another user's in sticky /dev/shm: left to it
                report.live.append(path.name)
                continue
            report.reclaimed.append(path.name)
        else:
            report.live.append(path.name)
    for path in entries:
        if "." not in path.name:
            continue
        if not (SHM_DIR / path.name.split(".", 1)[0]).exists():
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except PermissionError:
                continue
            report.reclaimed.append(path.name)
    return report
