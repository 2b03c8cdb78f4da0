"""The object names of an instance's rings (the ``<object>`` of ``/shardbroker-<instance>-<object>``,
``shm.shm_name``): one builder per kind and the one parser, so who creates a ring and who reads its
name (the worker accepting a client's rings, the metrics collector labelling them) agree.

Names, with ``W`` the worker at the ring's serving end (``Direction`` is relative to it)::

    ctl-w<W>-in                        controller -> worker W (images, replies)     TO_WORKER
    ctl-w<W>-out                       worker W -> controller (requests, acks)      FROM_WORKER
    lc<pid>-<n>-req-w<W>               a LocalProducer's batches to worker W         TO_WORKER
    lc<pid>-<n>-ack-w<W>               worker W's acks to that LocalProducer         FROM_WORKER
    lc<pid>-<n>-wake                   a LocalConsumer's wake-ups (W not named)     FROM_WORKER
    lc<pid>-<n>-fwd-w<S>-to-w<W>-req   worker S forwarding Produce batches to W     TO_WORKER
    lc<pid>-<n>-fwd-w<S>-to-w<W>-ack   W's acks back to S                          FROM_WORKER

Invariants: the controller creates (and owns) the ``ctl-*`` rings; every other ring is created
and owned by the process that attaches it to a worker, named ``lc<pid>-<n>-<role>`` with its pid
and a per-process counter (``local_attach.client_ring``), so a worker accepts only such names
from a client (``is_client_ring``) and ``shm.reclaim_stale`` finds a dead owner's rings. Numbers
are decimal ASCII digits; anything else is not a ring name (``parse_ring_name`` gives None).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final, NewType

__all__ = [
    "CLIENT_PREFIX",
    "WAKE_ROLE",
    "ClientRole",
    "Direction",
    "RingName",
    "RingRole",
    "client_ring_name",
    "control_ring",
    "forward_role",
    "is_client_ring",
    "parse_ring_name",
    "producer_role",
]


class RingRole(enum.Enum):
    CONTROL = "ctl"  # the controller's ring pair with one worker
    LOCAL_PRODUCER = "local"  # a LocalProducer's ring pair with one worker
    LOCAL_WAKE = "wake"  # a LocalConsumer's wake ring
    FORWARD = "fwd"  # a worker's ring pair to the owner of a partition it forwards to


class Direction(enum.Enum):
    TO_WORKER = enum.auto()  # the worker ``RingName.worker`` reads it
    FROM_WORKER = enum.auto()  # the worker ``RingName.worker`` writes it


@dataclass(frozen=True, slots=True)
class RingName:
    """What a ring's object name says (``parse_ring_name``)."""

    role: RingRole
    direction: Direction
    worker: int | None  # the serving worker; None for a wake ring (its name does not say)
    source: int | None = None  # FORWARD: the forwarding worker
    pid: int | None = None  # lc rings: the creating (owning) process
    serial: int | None = None  # lc rings: that process's ring counter


#: The part of a client ring's name after ``lc<pid>-<n>-`` (built by the ``*_role`` functions).
ClientRole = NewType("ClientRole", str)

CLIENT_PREFIX: Final = "lc"
WAKE_ROLE: Final = ClientRole("wake")
_CONTROL_SUFFIX: Final = {Direction.TO_WORKER: "in", Direction.FROM_WORKER: "out"}
_CLIENT_SUFFIX: Final = {Direction.TO_WORKER: "req", Direction.FROM_WORKER: "ack"}
_SUFFIX_DIRECTION: Final = {s: d for table in (_CONTROL_SUFFIX, _CLIENT_SUFFIX) for d, s in table.items()}


def control_ring(worker: int, direction: Direction) -> str:
    """``ctl-w<W>-in`` / ``ctl-w<W>-out``."""
    return f"ctl-w{worker}-{_CONTROL_SUFFIX[direction]}"


def producer_role(worker: int, direction: Direction) -> ClientRole:
    """``req-w<W>`` / ``ack-w<W>``: a LocalProducer's ring pair with worker W."""
    return ClientRole(f"{_CLIENT_SUFFIX[direction]}-w{worker}")


def forward_role(source: int, target: int, direction: Direction) -> ClientRole:
    """``fwd-w<S>-to-w<D>-req`` / ``-ack``: worker S forwarding to worker D."""
    return ClientRole(f"fwd-w{source}-to-w{target}-{_CLIENT_SUFFIX[direction]}")


def client_ring_name(pid: int, serial: int, role: ClientRole) -> str:
    """``lc<pid>-<serial>-<role>``: a ring that process ``pid`` creates and owns."""
    return f"{CLIENT_PREFIX}{pid}-{serial}-{role}"


_NAME = re.compile(
    r"ctl-w(?P<slot>[0-9]+)-(?P<ctl>in|out)"
    r"|lc(?P<pid>[0-9]+)-(?P<serial>[0-9]+)-(?:"
    r"(?P<local>req|ack)-w(?P<worker>[0-9]+)"
    r"|(?P<wake>wake)"
    r"|fwd-w(?P<source>[0-9]+)-to-w(?P<target>[0-9]+)-(?P<fwd>req|ack))"
)


def parse_ring_name(name: str) -> RingName | None:
    """The `RingName` of a ring object name built by this module; None for any other name."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    if m["ctl"] is not None:
        return RingName(RingRole.CONTROL, _SUFFIX_DIRECTION[m["ctl"]], int(m["slot"]))
    pid, serial = int(m["pid"]), int(m["serial"])
    if m["local"] is not None:
        direction = _SUFFIX_DIRECTION[m["local"]]
        return RingName(RingRole.LOCAL_PRODUCER, direction, int(m["worker"]), pid=pid, serial=serial)
    if m["wake"] is not None:
        return RingName(RingRole.LOCAL_WAKE, Direction.FROM_WORKER, None, pid=pid, serial=serial)
    direction = _SUFFIX_DIRECTION[m["fwd"]]
    return RingName(
        RingRole.FORWARD, direction, int(m["target"]), source=int(m["source"]), pid=pid, serial=serial
    )


def is_client_ring(name: str) -> bool:
    """True for the names a worker accepts from a client: ``lc<pid>-<n>-<role>`` of this module."""
    parsed = parse_ring_name(name)
    return parsed is not None and parsed.role is not RingRole.CONTROL
