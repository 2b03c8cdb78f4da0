"""A local client's view of a running broker: its directory, and sessions with its workers.

Opens shared memory (the broker's ``local-dir``/``local-hw`` segments, the client's own rings)
and Unix sockets (one per session). Used by ``client/local_producer.py`` and
``client/local_consumer.py``; the worker's side is ``broker/local_clients.py`` and the protocol
``local_protocol.py``.

A client names the broker by its data dir, as an operator does: the shared-memory instance is
derived from it exactly as ``shardbroker serve`` derives it (``shm.instance_name``), so no
address or port is needed and a client can only reach the broker that owns that directory.

Who may attach (the worker checks the peer's credentials, security/local_peer.py): the broker's
user, or a member of ``local.clients.allowed.group``, whose rings are then shared with that group
(``local_access.ring_group``). The broker's directory and high watermarks are mapped read-only.
A refusal's text names the reason; one with a Kafka error code (an ACL:
TOPIC_AUTHORIZATION_FAILED...) carries it in ``LocalClientError.error_code``, also when the
worker withdraws a session after an ACL change (``WorkerSession.worker_gone``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
from pathlib import Path
from typing import Final

from shardbroker.ipc.local_access import RING_GROUP_MODE, ring_group, share_with_group, shm_path
from shardbroker.ipc.local_directory import (
    DirectoryBody,
    DirectoryError,
    HighWatermarkTable,
    LocalDirectory,
    TopicEntry,
    worker_socket_address,
)
from shardbroker.ipc.local_protocol import MAX_MESSAGE, decode_message, encode_message
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_names import ClientRole, client_ring_name
from shardbroker.ipc.shm import ShmAccessError, ShmError, instance_name
from shardbroker.protocol.errors import ErrorCode

__all__ = ["LocalBroker", "LocalClientError", "WorkerSession", "client_ring", "ring_object"]

#: How long the handshake with a worker may take.
ATTACH_TIMEOUT_S: Final = 10.0

_ring_ids = itertools.count()


def client_ring(instance: str, role: ClientRole, capacity: int, group: int | None = None) -> Ring:
    """A ring owned by this process, named ``lc<pid>-<n>-<role>`` (ipc/ring_names.py): the kind
    of name a worker accepts from a local client (a worker forwarding to another worker is one
    too: broker/forwarding.py). ``group``: share it (segment and doorbells) with that group, 0660."""
    ring = Ring.create(instance, client_ring_name(os.getpid(), next(_ring_ids), role), capacity)
    if group is not None:
        try:
            share_with_group((shm_path(ring.name), *ring.segment.fifos), group, RING_GROUP_MODE)
        except OSError as exc:
            ring.close()
            raise LocalClientError(
                f"cannot share a ring with group {group} (local.clients.allowed.group): {exc.strerror or exc}"
            ) from None
    return ring


def ring_object(ring: Ring) -> str:
    """The object part of a ring's ``/shardbroker-<instance>-<object>`` name (what workers attach)."""
    return ring.name.split("-", 2)[2]


class LocalClientError(Exception):
    """The local client cannot do what was asked; the message says why. ``error_code``: the Kafka
    error code of a worker's refusal that has one (an ACL: TOPIC_AUTHORIZATION_FAILED...)."""

    def __init__(self, message: str, error_code: int | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code


def _refusal(node_id: int, reply: dict[str, object]) -> LocalClientError:
    why = f"worker {node_id} refused: {reply.get('error', reply)}"
    code = reply.get("error_code")
    if not isinstance(code, int):
        return LocalClientError(why)
    try:
        name = ErrorCode(code).name
    except ValueError:
        name = f"ERROR_{code}"
    return LocalClientError(f"{name}: {why}", code)


class WorkerSession:
    """An attached connection to one worker and the rings this client created for it.

    Closing it closes the connection (the worker detaches) and unlinks the rings (this process
    owns them)."""

    def __init__(self, conn: socket.socket, rings: list[Ring], node_id: int) -> None:
        self.conn = conn
        self.rings = rings
        self.node_id = node_id

    def worker_gone(self) -> bool:
        """True once the worker closed the connection (it drained or died); LocalClientError
        when it withdrew the session with a reason (an ACL no longer allows it)."""
        try:
            raw = self.conn.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False
        except OSError:
            return True
        if raw:
            try:
                reply = decode_message(raw)
            except ValueError:
                return True
            raise _refusal(self.node_id, reply)
        return True

    def close(self) -> None:
        self.conn.close()
        for ring in self.rings:
            with contextlib.suppress(BufferError):
                ring.close()


class LocalBroker:
    """The broker serving ``data_dir``, seen through its shared directory."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.instance = instance_name(self.data_dir)
        try:
            self.directory = LocalDirectory.attach(self.instance, writable=False)
        except ShmAccessError:
            raise LocalClientError(
                f"uid {os.geteuid()} may not open the shared directory of the broker serving "
                f"{self.data_dir}: only the broker's user or a member of its local.clients.allowed.group "
                "may attach"
            ) from None
        except ShmError:
            raise LocalClientError(
                f"no broker serves {self.data_dir} on this host (no shared directory for instance "
                f"{self.instance}): start `shardbroker serve --data-dir {self.data_dir}` first"
            ) from None
        self._high_watermarks: HighWatermarkTable | None = None
        #: The group this client's rings are shared with (None: 0600, local_access.ring_group).
        self.ring_group = ring_group(shm_path(self.directory.segment.name))
        self.body: DirectoryBody = self.read()

    def read(self) -> DirectoryBody:
        try:
            self.body = self.directory.read()
        except DirectoryError as exc:
            raise LocalClientError(str(exc)) from None
        return self.body

    def topic(self, name: str) -> TopicEntry:
        """The topic's entry, re-reading the directory once if it is not known yet."""
        t = self.body.topics.get(name) or self.read().topics.get(name)
        if t is None:
            raise LocalClientError(
                f"UNKNOWN_TOPIC_OR_PARTITION: topic {name!r} does not exist on the broker of {self.data_dir}"
            )
        return t

    def partition(self, topic: str, partition: int) -> tuple[TopicEntry, int]:
        """``(entry, owner worker)``; LocalClientError for a partition that does not exist."""
        t = self.topic(topic)
        if not 0 <= partition < len(t.owners):
            t = self.read().topics.get(topic, t)
            if not 0 <= partition < len(t.owners):
                raise LocalClientError(
                    f"UNKNOWN_TOPIC_OR_PARTITION: {topic} has {len(t.owners)} partitions, not {partition + 1}"
                )
        return t, t.owners[partition]

    @property
    def high_watermarks(self) -> HighWatermarkTable:
        if self._high_watermarks is None:
            try:
                self._high_watermarks = HighWatermarkTable.attach(self.instance, writable=False)
            except ShmError as exc:
                raise LocalClientError(f"the broker's high-watermark table is missing: {exc}") from None
        return self._high_watermarks

    def new_ring(self, role: ClientRole, capacity: int) -> Ring:
        return client_ring(self.instance, role, capacity, self.ring_group)

    def attach(self, node_id: int, hello: dict[str, object], rings: list[Ring]) -> WorkerSession:
        """Connect to worker ``node_id`` and hand it ``rings`` (closed on failure)."""
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            conn.settimeout(ATTACH_TIMEOUT_S)
            try:
                conn.connect(worker_socket_address(self.instance, node_id))
                conn.send(encode_message(hello))
                reply = decode_message(conn.recv(MAX_MESSAGE) or b"null")
            except (OSError, ValueError) as exc:
                raise LocalClientError(
                    f"cannot attach to worker {node_id} of {self.data_dir}: {exc}"
                ) from None
            if reply.get("ok") is not True:
                raise _refusal(node_id, reply)
            conn.setblocking(False)
        except BaseException:
            conn.close()
            for ring in rings:
                with contextlib.suppress(BufferError):
                    ring.close()
            raise
        return WorkerSession(conn, rings, node_id)

    def close(self) -> None:
        if self._high_watermarks is not None:
            with contextlib.suppress(BufferError):
                self._high_watermarks.close()
            self._high_watermarks = None
        with contextlib.suppress(BufferError):
            self.directory.close()
