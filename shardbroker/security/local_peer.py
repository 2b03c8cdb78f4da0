"""Who may attach through the local-client door, and as which principal: pure decisions over a
Unix socket peer's credentials (the kernel's SO_PEERCRED / SO_PEERGROUPS, read by
ipc/local_access.py).

The door (broker/local_clients.py) hands shared-memory rings to a process and appends what it
writes; the process then reads the broker's shared directory and, as a LocalConsumer, its segment
files. So only the broker's own OS user may attach, or a member of the group named by
``local.clients.allowed.group`` (Kafka has no such door, hence no Kafka name). A member is a peer
whose primary or supplementary group is that group, as the kernel reported them when it connected.

A local client's principal is ``User:<its OS user name>`` (``User:<uid>`` for a uid without a
passwd entry), from host ``localhost`` (``LOCAL_HOST``: not an IP address, so an ACL with host
``127.0.0.1`` written for TCP clients on loopback does not match a local client; ``*`` does).
The same ACLs then apply as on TCP (broker/local_clients.py checks them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shardbroker.security.principal import KafkaPrincipal

__all__ = ["LOCAL_HOST", "LocalDoorPolicy", "PeerCredentials", "local_principal", "peer_refusal"]

#: The host of every local client in ACL decisions and audit lines.
LOCAL_HOST: Final = "localhost"


@dataclass(frozen=True, slots=True)
class PeerCredentials:
    """A connected peer as the kernel saw it at connect(): pid, uid, primary gid, every group."""

    pid: int
    uid: int
    gid: int
    groups: frozenset[int]
    #: The uid's passwd name, None when it has none.
    user: str | None


@dataclass(frozen=True, slots=True)
class LocalDoorPolicy:
    """The broker's user, and the group allowed besides it (None: only the broker's user)."""

    broker_uid: int
    broker_user: str
    group_gid: int | None = None
    group_name: str = ""


def _who(uid: int, user: str | None) -> str:
    return f"uid {uid} ({user})" if user is not None else f"uid {uid}"


def peer_refusal(peer: PeerCredentials, policy: LocalDoorPolicy) -> str | None:
    """None if ``peer`` may attach, else why not (the text the refused client is told)."""
    if peer.uid == policy.broker_uid:
        return None
    gid = policy.group_gid
    if gid is not None and (peer.gid == gid or gid in peer.groups):
        return None
    who = _who(peer.uid, peer.user)
    if gid is None:
        return (
            f"{who} is not the broker's user {policy.broker_user} "
            "(local.clients.allowed.group is empty: only the broker's user may attach)"
        )
    return f"{who} is not the broker's user {policy.broker_user} nor in group {policy.group_name}"


def local_principal(uid: int, user: str | None) -> KafkaPrincipal:
    """``User:<name>``, or ``User:<uid>`` for a uid without a name."""
    return KafkaPrincipal.user(user if user is not None else str(uid))
