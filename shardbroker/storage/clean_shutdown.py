"""The clean-shutdown marker (``.kafka_cleanshutdown``): whether a log may be opened without a
recovery scan. Opens, writes and reads the marker file.

Kafka's marker is an empty file written after everything was fsync'ed, so it stays true across
a host crash. A partition handed to another worker of the same broker (a move: log.py
``hand_over``) is not fsync'ed -- the next owner reads the same page cache, and syncing would make
every move wait for the disk -- so its marker says so: ``handover <boot id>``, the kernel's boot
id (``/proc/sys/kernel/random/boot_id``). It is trusted only while that boot lasts; after a host
crash (another boot id) the log is recovered from its recovery point as if there were no marker,
which is what the unsynced bytes need. An empty marker (a real clean shutdown, ours or Kafka's) is
trusted always; anything else is not trusted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from shardbroker.storage.checkpoint import fsync_dir
from shardbroker.storage.file_modes import FILE_MODE
from shardbroker.storage.file_names import CLEAN_SHUTDOWN_FILE

__all__ = ["trusted", "write_marker"]

BOOT_ID_PATH: Final = Path("/proc/sys/kernel/random/boot_id")
_HANDOVER: Final = b"handover "


def _boot_id() -> bytes | None:
    try:
        return BOOT_ID_PATH.read_bytes().strip() or None
    except OSError:  # not Linux: hand-over markers are never trusted (the next owner recovers)
        return None


def write_marker(directory: Path, *, synced: bool) -> None:
    """Write the marker last, durably: empty after a full sync, ``handover <boot id>`` without one."""
    path = directory / CLEAN_SHUTDOWN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        if not synced:
            os.write(fd, _HANDOVER + (_boot_id() or b"unknown"))  # a few dozen bytes: one write
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(directory)


def trusted(directory: Path) -> bool:
    """Whether ``directory``'s log may skip recovery (see the module docstring)."""
    try:
        content = (directory / CLEAN_SHUTDOWN_FILE).read_bytes()
    except OSError:
        return False
    if not content:
        return True
    boot = _boot_id()
    return boot is not None and content == _HANDOVER + boot
