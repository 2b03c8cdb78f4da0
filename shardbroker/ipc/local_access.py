"""The OS side of the local-client door: a Unix socket peer's credentials, the allowed group, and
the modes of the shared memory its members map. Reads /etc/passwd and /etc/group (``pwd``,
``grp``), ``/proc``, and changes modes and groups of ``/dev/shm`` files.

Peer credentials: ``SO_PEERCRED`` (pid, uid, gid) and ``SO_PEERGROUPS`` (Linux 4.13+; every
group), both as the kernel recorded them when the client called connect(), so a client cannot
change them afterwards. The decision on them is security/local_peer.py's.

Modes with ``local.clients.allowed.group`` set (everything is 0600 without it, ipc/shm.py):
- the broker's ``local-dir`` and ``local-hw`` segments are made 0640 and given the group
  (``share_with_group``), and clients map them read-only: a member can read the directory and
  the high watermarks, not change them for the others;
- a member's own rings (segment and both doorbell FIFOs) are made 0660 and given the group when
  the broker runs as another, non-root user (``ring_group``), so that its worker (whose user is
  in the group: ``check_broker_in_group``, refused at start otherwise) can open them. Other
  members could then open them too: the group is one circle of trust for the rings' bytes, while
  ACLs decide what each attached peer may append (broker/local_clients.py).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import socket
import stat
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from shardbroker.ipc.procfs import stat_fields
from shardbroker.ipc.shm import SHM_DIR
from shardbroker.security.local_peer import PeerCredentials

__all__ = [
    "DIRECTORY_GROUP_MODE",
    "RING_GROUP_MODE",
    "LocalAccessError",
    "allowed_group",
    "check_broker_in_group",
    "is_sibling",
    "peer_credentials",
    "ring_group",
    "share_with_group",
    "shm_path",
    "user_name",
]

#: ``SO_PEERGROUPS`` (asm-generic/socket.h); Python's socket module does not name it.
SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)
_UCRED: Final = struct.Struct("=iII")
#: Bytes asked for the peer's groups at first (256 groups); ERANGE asks again for Linux's maximum.
_GROUPS_FIRST: Final = 4 * 256
_GROUPS_MAX: Final = 4 * 65536
_PPID: Final = 1  # stat_fields index of field 4, the parent pid
#: Modes of the broker's local segments and a member's rings when shared with the group.
DIRECTORY_GROUP_MODE: Final = 0o640
RING_GROUP_MODE: Final = 0o660


class LocalAccessError(Exception):
    """The allowed group cannot work as configured; the message says why."""


def user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def allowed_group(name: str) -> grp.struct_group | None:
    """The group named by ``local.clients.allowed.group`` (None when empty); LocalAccessError
    when no such group exists."""
    name = name.strip()
    if not name:
        return None
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise LocalAccessError(
            f"local.clients.allowed.group = {name!r}: no such group on this host (getent group {name})"
        ) from None


def check_broker_in_group(group: grp.struct_group) -> None:
    """The broker's workers open the members' rings through the group: its user must be in it
    (or be root)."""
    if os.geteuid() == 0 or group.gr_gid == os.getegid() or group.gr_gid in os.getgroups():
        return
    me = user_name(os.geteuid()) or str(os.geteuid())
    raise LocalAccessError(
        f"local.clients.allowed.group = {group.gr_name!r}: the broker's user {me} is not in that group, "
        f"so its workers could not open the members' rings (usermod -aG {group.gr_name} {me})"
    )


def peer_credentials(conn: socket.socket) -> PeerCredentials:
    """The peer of a connected Unix socket, as the kernel recorded it at connect()."""
    pid, uid, gid = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    try:
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_FIRST)
    except OSError as exc:
        if exc.errno != errno.ERANGE:
            raise
        raw = conn.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, _GROUPS_MAX)
    groups = frozenset(struct.unpack(f"={len(raw) // 4}I", raw[: len(raw) // 4 * 4]))
    return PeerCredentials(pid, uid, gid, groups, user_name(uid))


def is_sibling(peer: PeerCredentials) -> bool:
    """True when the peer is another worker of this broker (same user, same parent: the
    supervisor): a forwarding worker, whose batches its own handler already authorized."""
    if peer.uid != os.geteuid():
        return False
    try:
        return int(stat_fields(peer.pid)[_PPID]) == os.getppid()
    except (OSError, IndexError, ValueError):
        return False


def shm_path(name: str) -> Path:
    """The ``/dev/shm`` file of a ``shm_open`` name."""
    return SHM_DIR / name.lstrip("/")


def share_with_group(paths: Iterable[Path], gid: int, mode: int) -> None:
    """Give ``paths`` to group ``gid`` with ``mode`` (the owner keeps them; a non-root owner must
    be in the group)."""
    for path in paths:
        os.chown(path, -1, gid)
        os.chmod(path, mode)


def ring_group(directory: Path) -> int | None:
    """The group a client's rings must be shared with so that the broker's worker can open them:
    the group of the broker's ``local-dir`` segment when the broker shared it (0640) and runs as
    another user than this process, and not as root; else None (the rings stay 0600)."""
    st = os.stat(directory)
    if not st.st_mode & stat.S_IRGRP or st.st_uid in (0, os.geteuid()):
        return None
    return st.st_gid
