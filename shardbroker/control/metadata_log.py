"""The controller's metadata log on disk: cluster id, snapshot, append-only record log.

Opens, writes, fsyncs and renames files in the data dir; takes the data dir's lock.

Layout (all under the data dir; Kafka keeps ``meta.properties`` in each log dir too)::

    meta.properties                      version=1, cluster.id=<22-char base64 uuid>  (written once)
    .lock                                fcntl.flock'ed by the running broker; holds its pid
    __cluster_metadata/snapshot.bin      one frame: the whole ControllerState as JSON
    __cluster_metadata/metadata.log      frames, one metadata record each (controller_state.py)

Frame (big-endian, the same in both files)::

    u32 length of payload | u32 CRC-32C of payload | payload (UTF-8 JSON object)

Why this shape. Records are rare (admin operations) and small, so JSON keeps them readable with
``tail -c``; the CRC and the length prefix are what make a torn write detectable: the broker may
be SIGKILLed or the host lose power mid-append, and the last frame is then short or fails its
CRC. Replay stops at the first such frame and truncates the file there (Kafka's log recovery
does the same with batches), so a half-written record is never applied and the next append does
not land behind garbage. Each append is fsynced before the change is answered: a topic a client
was told exists survives a power loss (one fdatasync per admin operation, ~ms, is cheap here).

The directory name has no ``-<n>`` suffix, so nothing reading ``<topic>-<partition>`` directories
mistakes it for a partition (Kafka's own ``__cluster_metadata-0`` has it because it is one).

Snapshots: once the log passes ``snapshot_bytes`` (1 MiB), the whole state is written to a temp
file, fsynced, renamed over ``snapshot.bin`` and the directory fsynced; only then is the log
replaced by an empty one (same temp + rename). A crash between the two leaves a log whose
records are all <= the snapshot's version: replay skips records at or below it, so either order
of survival rebuilds the same state. A snapshot that fails its CRC is not guessed around: the
broker refuses to start (it was renamed into place whole; a bad one means the disk lies).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import json
import logging
import os
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

from shardbroker.control.controller_state import ControllerState, apply_record
from shardbroker.protocol.crc import crc32c
from shardbroker.storage.checkpoint import write_atomically
from shardbroker.storage.file_modes import FILE_MODE, make_dirs

log = logging.getLogger(__name__)

FRAME: Final = struct.Struct(">II")
METADATA_DIR: Final = "__cluster_metadata"
LOG_FILE: Final = "metadata.log"
SNAPSHOT_FILE: Final = "snapshot.bin"
META_PROPERTIES: Final = "meta.properties"
LOCK_FILE: Final = ".lock"
#: Snapshot once the log is this big (~5,000 topic records): replay stays in milliseconds.
SNAPSHOT_BYTES: Final = 1 << 20
#: Larger than any record we write (a topic of 100,000 partitions is ~1.5 MB): a bigger length
#: prefix is garbage, not a record.
MAX_FRAME: Final = 256 << 20


class MetadataLogError(Exception):
    """The data dir cannot be used: locked, not writable, or holds a corrupt snapshot."""


def encode_frame(obj: Mapping[str, Any]) -> bytes:
    payload = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return FRAME.pack(len(payload), crc32c(payload)) + payload


def scan_frames(data: bytes) -> tuple[list[dict[str, Any]], int]:
    """The records of a log file's bytes, and the length of its valid prefix (where it tears)."""
    out: list[dict[str, Any]] = []
    pos = 0
    while pos + FRAME.size <= len(data):
        length, crc = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + length
        if length > MAX_FRAME or end > len(data):
            break
        payload = data[pos + FRAME.size : end]
        if crc32c(payload) != crc:
            break
        try:
            obj = json.loads(payload)
        except ValueError:
            break
        if not isinstance(obj, dict):
            break
        out.append(obj)
        pos = end
    return out, pos


def new_cluster_id() -> str:
    """Kafka's form: a random uuid as 22 characters of URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


#: How long a start waits for the orphaned workers of a killed broker to let go of the data dir.
ORPHAN_DRAIN_WAIT_S: Final = 30.0


def _holder_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode().strip())
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/.lock``, so two brokers never share a data dir.

    flock (not fcntl record locks): it belongs to the open file description, so forked workers
    share it and it goes away only when every process holding the fd is gone -- a new broker
    cannot start while orphaned workers of a killed one still write there. Also checks that the
    data dir can be written at all, with a message an operator can act on.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd = -1

    def acquire(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise MetadataLogError(f"data dir {self.data_dir} is not a directory")
        try:
            make_dirs(self.data_dir)
        except OSError as exc:
            raise MetadataLogError(f"cannot create data dir {self.data_dir}: {exc.strerror or exc}") from None
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        except OSError as exc:
            raise MetadataLogError(
                f"data dir {self.data_dir} is not writable ({exc.strerror or exc}): "
                "the broker needs to create files there"
            ) from None
        self._lock(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            # The lock file is writable; is the rest of the dir (a read-only bind mount of the
            # dir with an existing .lock would pass the open above)?
            probe = self.data_dir / f".write-probe-{os.getpid()}"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE))
            probe.unlink()
        except OSError as exc:
            os.close(fd)
            raise MetadataLogError(
                f"data dir {self.data_dir} is not writable: {exc.strerror or exc}"
            ) from None
        self._fd = fd

    def _lock(self, fd: int) -> None:
        """flock ``fd``. While the recorded holder is a dead supervisor, its orphaned workers
        still hold the lock as they notice and drain (about a second): wait for them, up to
        ``ORPHAN_DRAIN_WAIT_S``, instead of refusing a restart right after a kill -9."""
        deadline = time.monotonic() + ORPHAN_DRAIN_WAIT_S
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise MetadataLogError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            holder = _holder_pid(fd)
            dead = holder is not None and not _alive(holder)
            if dead and time.monotonic() < deadline:
                if not said:
                    log.warning(
                        "data dir %s: broker pid %d is gone but its workers still hold %s; waiting "
                        "up to %.0f s for them to exit",
                        self.data_dir,
                        holder,
                        self.path,
                        ORPHAN_DRAIN_WAIT_S,
                    )
                    said = True
                time.sleep(0.05)
                continue
            os.close(fd)
            if dead:
                raise MetadataLogError(
                    f"data dir {self.data_dir} is still locked by the workers of broker pid {holder}, "
                    f"which is gone, after {ORPHAN_DRAIN_WAIT_S:.0f} s: find them with "
                    f"`fuser {self.path}`"
                )
            who = "" if holder is None else f" (pid {holder})"
            raise MetadataLogError(
                f"data dir {self.data_dir} is in use by another shardbroker{who}: {self.path} is locked"
            )

    def release(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last fd of the description releases the flock
            self._fd = -1


class MetadataLog:
    """The files of one data dir's metadata. `open` replays; `append` persists records."""

    def __init__(self, data_dir: Path, *, snapshot_bytes: int = SNAPSHOT_BYTES) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / METADATA_DIR
        self.log_path = self.dir / LOG_FILE
        self.snapshot_path = self.dir / SNAPSHOT_FILE
        self.snapshot_bytes = snapshot_bytes
        self.cluster_id = ""
        self.state = ControllerState()
        self.dropped_bytes = 0  # torn tail cut off by the last open
        self._fd = -1
        self._size = 0

    def open(self) -> ControllerState:
        """Read (or create) the cluster id, load the snapshot, replay the log, cut a torn tail."""
        make_dirs(self.dir)
        self.cluster_id = self._cluster_id()
        state = ControllerState()
        if self.snapshot_path.exists():
            frames, valid = scan_frames(self.snapshot_path.read_bytes())
            if len(frames) != 1 or valid != self.snapshot_path.stat().st_size:
                raise MetadataLogError(
                    f"metadata snapshot {self.snapshot_path} is corrupt; refusing to guess the "
                    "topics (restore it from a backup, or move the data dir aside)"
                )
            state = ControllerState.from_dict(frames[0])
        data = self.log_path.read_bytes() if self.log_path.exists() else b""
        records, valid = scan_frames(data)
        for record in records:
            if int(record.get("offset", -1)) <= state.version:
                continue  # already in the snapshot (a crash between snapshot and log reset)
            state = apply_record(state, record)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        if valid < len(data):
            self.dropped_bytes = len(data) - valid
            log.warning(
                "%s: dropped a torn or corrupt tail of %d bytes after %d records (offset %d)",
                self.log_path,
                self.dropped_bytes,
                len(records),
                state.version,
            )
            os.ftruncate(self._fd, valid)
            os.fsync(self._fd)
        self._size = valid
        self.state = state
        return state

    def _cluster_id(self) -> str:
        path = self.data_dir / META_PROPERTIES
        if path.exists():
            props = {}
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep and not line.lstrip().startswith("#"):
                    props[key.strip()] = value.strip()
            if props.get("cluster.id"):
                return props["cluster.id"]
        cluster_id = new_cluster_id()
        write_atomically(path, f"#shardbroker\nversion=1\ncluster.id={cluster_id}\n".encode())
        return cluster_id

    def append(self, records: Iterable[Mapping[str, Any]], state: ControllerState) -> None:
        """Persist ``records`` (which took the state to ``state``): write, fsync, then maybe snapshot.

        On an I/O error nothing is adopted: the file is cut back to where it was.
        """
        data = b"".join(encode_frame(r) for r in records)
        if not data:
            return
        assert self._fd >= 0, "append before open"
        try:
            view = memoryview(data)
            pos = self._size
            while view:
                n = os.pwrite(self._fd, view, pos)
                view, pos = view[n:], pos + n
            os.fdatasync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)
        self.state = state
        if self._size >= self.snapshot_bytes:
            self.snapshot()

    def snapshot(self) -> None:
        """Write the state as the snapshot, then start an empty log."""
        write_atomically(self.snapshot_path, encode_frame(self.state.to_dict()))
        write_atomically(self.log_path, b"")
        os.close(self._fd)
        self._fd = os.open(self.log_path, os.O_WRONLY | os.O_CLOEXEC)
        self._size = 0
        log.info("metadata snapshot at version %d", self.state.version)

    def records(self) -> Iterator[dict[str, Any]]:
        """The records in the log file now (tests, debugging)."""
        yield from scan_frames(self.log_path.read_bytes())[0]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
