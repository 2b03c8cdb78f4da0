"""The worker's side of the local fast path: attached LocalProducers' rings, drained into the log,
and LocalConsumers' high watermarks and wake-ups. Opens a Unix socket and maps shared memory.

Attach (protocol in ipc/local_protocol.py): the worker listens on its abstract-namespace
``SOCK_SEQPACKET`` socket; a client sends the names of rings it created, the worker maps them
(only names of the ``lc...`` form: a client cannot make the worker write into the broker's own
rings) and keeps the connection. EOF on it -- the client closed, exited or was SIGKILLed -- makes
the worker append what whole frames are still in the request ring (a frame is visible only once
committed whole: ring.py), then unmap and unlink the client's rings and FIFOs. A client that died
mid-frame therefore leaves nothing in the log and nothing in /dev/shm.

The door (security/local_peer.py, ipc/local_access.py): before a hello is acted on, the peer's
SO_PEERCRED/SO_PEERGROUPS credentials must be the broker's user or a member of
``local.clients.allowed.group``; a refused peer is told why and logged, and no ring is mapped.
An admitted client is ``User:<OS user>`` from host ``localhost`` and, with an authorizer, meets
Kafka's checks: WRITE on the topic for every drained partition's batches (refused batches are
acked TOPIC_AUTHORIZATION_FAILED, as TCP Produce answers), READ on the topic (and on the
consumer's group) at every watch, re-checked on each new image: a watch an ACL change denies is
withdrawn with the reason. A sibling worker forwarding Produce (same user, same parent) is not
checked again: its handler did; it alone may send transaction markers (``_marker``) and
transactional batches (a local producer has no transactional id: INVALID_TXN_STATE). Checked
per drain and partition rather than per image change: one memoised decision, 0.34 us measured
(0.16 us without an authorizer), so ~0.0002 us a record in 256 KiB batches against the
workers' 0.14 us; ``perf.bench_local --authorizer-cost`` (1 M records, 5 alternating runs,
shared VM at load ~1): ratio with/without 0.84 (0.69-1.10), noise.

Draining a producer's request ring (``_drain``, called from the loop by ``RingReader.watch``
whenever frames wait): every waiting frame in one pass -- up to ``MAX_FRAMES_PER_DRAIN`` -- is
parsed (a 16-byte header each), grouped by partition in arrival order, and each partition's
batches go to ``ReplicaManager.append_batches``: header checks, CRC-32C, ``max.message.bytes``,
offsets assigned in place *in the ring* (no copy), then one ``pwritev`` for the lot. So
idempotence, the high watermark, fetch long-poll wake-ups, the flush policy and the
per-partition counters are exactly those of a TCP Produce. A bad batch gets its Kafka error code
in its ack (CORRUPT_MESSAGE for a bad CRC...) and is counted in
``shardbroker_request_errors_total{api="Produce"}``; the others are still written. A frame too
short to hold its own header is a broken client: its session is closed. Then the ring space is
released and one ack frame goes back with an entry per batch (acks=-1 entries wait for
``wait_durable`` when the flush policy asks for a flush, as TCP Produce does).

Why a Python walk of the frames and not ``batch_scan.scan_batches`` over the ring: a frame is
one batch of hundreds to thousands of records, so a drain handles a few to a few dozen batches,
and the numpy scan's fixed cost dominates there. Measured (CPU time, 256 KiB batches of 2,259
records, busy VM): 1 / 8 / 32 batches cost 1.0 / 6.1 / 16.9 us with ``struct.unpack_from`` per
header, 140 / 143 / 157 us with ``scan_batches``; the per-record work is the log's CRC and write.

Worker cost, measured with perf/bench_local.py (CPU time of both workers over the run, 100-byte
records in 256 KiB batches): 0.14 us a record (0.11-0.25 over 9 runs), most of it the kernel's
copy into the page cache; a lot larger than ``segment.bytes`` (or 64 MiB) is appended in several writes.

Partitions led elsewhere (the partition moved while the client was sending, or the client's
directory is stale): their batches are copied out of the ring and forwarded to the owner, or held
while the partition is between the two steps of a move (broker/produce_routing.py, ``reroute``), then
acked like the others; so a local producer sees no error when a partition moves under it.

Back-pressure: when the client's ack ring is full, acks wait in an outbox and the request ring
is not drained until they are out, so a client that stops reading acks stops itself; nothing is
dropped. The client, in turn, blocks on its full request ring (client/local_producer.py).

High watermarks (for LocalConsumer): after every append to a partition that has a row in the
``local-hw`` table (ipc/local_directory.py) the worker stores the new high watermark and last
stable offset there (transaction markers are appends too: they move both) and,
if consumers watch the partition, writes an 8-byte wake-up frame into each one's wake ring
(whose sleep protocol rings the consumer's doorbell only when it sleeps). Local appends publish
right after their write; TCP appends are seen through the partition's fetch-waiter hook (a
future re-armed after each append, the long-poll mechanism Fetch uses), armed only while a
local consumer watches the partition, so TCP produce pays nothing when no local consumer runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import posix_ipc  # type: ignore[import-not-found,unused-ignore]

from shardbroker.broker.forwarding import ForwardResult
from shardbroker.broker.partition import FetchWaiter
from shardbroker.broker.produce_routing import reroute
from shardbroker.broker.txn_verification import answer_verification
from shardbroker.config.broker_properties import LOCAL_CLIENTS_ALLOWED_GROUP
from shardbroker.ipc.local_access import allowed_group, is_sibling, peer_credentials, user_name
from shardbroker.ipc.local_directory import HighWatermarkTable, LocalDirectory, worker_socket_address
from shardbroker.ipc.local_protocol import (
    ACK,
    FLAG_TXN_MARKER,
    FLAG_TXN_MARKER_V2,
    FLAG_TXN_VERIFY,
    MAX_MESSAGE,
    REQUEST_HEADER,
    WAKE,
    LocalProtocolError,
    decode_message,
    encode_message,
)
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_layout import RingError
from shardbroker.ipc.ring_names import CLIENT_PREFIX, is_client_ring
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.ipc.ring_writer import RingWriter
from shardbroker.ipc.shm import ShmError, instance_name
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch_header import ATTRIBUTES_OFFSET, TRANSACTIONAL_BIT
from shardbroker.security.acl import AclOperation, ResourceType
from shardbroker.security.local_peer import LOCAL_HOST, LocalDoorPolicy, local_principal, peer_refusal
from shardbroker.security.principal import KafkaPrincipal

if TYPE_CHECKING:
    from shardbroker.broker.leader_append import AppendResult
    from shardbroker.broker.partition import Partition
    from shardbroker.broker.worker_state import WorkerState
    from shardbroker.supervision.worker import Worker

__all__ = ["LocalClientService"]

log = logging.getLogger(__name__)

#: Frames handled per drain call; the ring's watch() calls again at once while more wait.
MAX_FRAMES_PER_DRAIN: Final = 1024
#: How long acks=-1 waits for its flush (Kafka's request.timeout.ms default).
DURABLE_TIMEOUT_S: Final = 30.0
#: Retry interval for acks waiting on a full ack ring.
ACK_RETRY_S: Final = 0.001
_PRODUCE_API_KEY: Final = 0
_CORRUPT: Final = int(ErrorCode.CORRUPT_MESSAGE)
_TOPIC_DENIED: Final = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
_GROUP_DENIED: Final = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
_READ, _WRITE = AclOperation.READ, AclOperation.WRITE
_TOPIC, _GROUP = ResourceType.TOPIC, ResourceType.GROUP
_NOT_LEADER: Final = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
_CLUSTER_DENIED: Final = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
_TXN_STATE: Final = int(ErrorCode.INVALID_TXN_STATE)
#: The low byte of a batch's attributes (the transactional bit).
_ATTRS: Final = ATTRIBUTES_OFFSET + 1

PartitionKey = tuple[str, int]


def _unlink(ring: Ring) -> None:
    """Remove a dead client's ring name and FIFOs (it created them; it cannot any more). Another
    user's (a member of local.clients.allowed.group) cannot be removed by a non-root broker in
    sticky /dev/shm: left to that user (``ls /dev/shm/shardbroker-*`` shows them)."""
    with contextlib.suppress(posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        posix_ipc.unlink_shared_memory(ring.name)
    for path in ring.segment.fifos:
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()


class _Refused(Exception):
    """An attach an ACL does not allow: the refusal's text and Kafka error code."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class _Session:
    """One attached client connection and the rings it brought."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.rings: list[Ring] = []
        self.closed = False
        #: Whose ACLs apply (the peer's OS user); None for a sibling worker forwarding Produce
        #: batches its handler already authorized.
        self.principal: KafkaPrincipal | None = None


class _ProducerSession(_Session):
    def __init__(self, conn: socket.socket, requests: Ring, acks: Ring) -> None:
        super().__init__(conn)
        self.rings = [requests, acks]
        self.reader: RingReader = requests.reader()
        self.ack_writer: RingWriter = acks.writer()
        self.outbox: list[bytes] = []
        #: Partitions whose batches are being forwarded or held (LocalClientService._reroute).
        self.rerouting: dict[PartitionKey, asyncio.Task[None]] = {}
        self.watching = False
        self.retry: asyncio.TimerHandle | None = None


class _WatchSession(_Session):
    def __init__(self, conn: socket.socket, ring: Ring, key: PartitionKey, group: str | None) -> None:
        super().__init__(conn)
        self.rings = [ring]
        self.writer: RingWriter = ring.writer()
        self.key = key
        #: The consumer's group.id, if it has one (READ on the group is checked too).
        self.group = group


class LocalClientService:
    """A worker `Service`: registered after the Kafka listener (server.install)."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state
        self.replicas = state.replicas
        self.node_id = state.node_id
        self.instance = ""
        self.directory: LocalDirectory | None = None
        self.high_watermarks: HighWatermarkTable | None = None
        self.rows: dict[PartitionKey, int] = {}
        self.sessions: set[_Session] = set()
        self.watchers: dict[PartitionKey, list[_WatchSession]] = {}
        self._armed: dict[PartitionKey, asyncio.Future[None]] = {}
        self._notified: dict[PartitionKey, int] = {}
        self._topic_names: dict[bytes, str] = {}
        self._listener: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._durable: set[asyncio.Task[None]] = set()
        self.policy = LocalDoorPolicy(os.geteuid(), user_name(os.geteuid()) or str(os.geteuid()))

    # ------------------------------------------------------------------ lifecycle

    async def start(self, worker: Worker) -> None:
        self._loop = asyncio.get_running_loop()
        self.instance = instance_name(self.state.config.data_dir.absolute())
        group = allowed_group(self.state.config.get(LOCAL_CLIENTS_ALLOWED_GROUP))  # checked by serve
        if group is not None:
            self.policy = LocalDoorPolicy(
                self.policy.broker_uid, self.policy.broker_user, group.gr_gid, group.gr_name
            )
        self.directory = LocalDirectory.attach(self.instance)
        self.high_watermarks = HighWatermarkTable.attach(self.instance)
        self._load_rows()
        self.state.channel.subscribe(self._on_image)
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            sock.bind(worker_socket_address(self.instance, self.node_id))
            sock.listen(64)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self._loop.add_reader(sock.fileno(), self._accept)

    async def drain(self) -> None:
        """Stop attaching; append what producers already committed; close every session."""
        loop = self._loop
        if self._listener is not None and loop is not None:
            loop.remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for s in list(self.sessions):
            if isinstance(s, _ProducerSession):
                self._drain_all(s)
            self._close(s, unlink=False)
        if self._durable:
            await asyncio.gather(*self._durable, return_exceptions=True)
        for fut in self._armed.values():
            fut.cancel()
        self._armed.clear()
        for table in (self.directory, self.high_watermarks):
            if table is not None:
                with contextlib.suppress(BufferError):
                    table.close()
        self.directory = self.high_watermarks = None

    # ------------------------------------------------------------------ directory rows

    def _load_rows(self) -> None:
        assert self.directory is not None
        body = self.directory.read()
        rows = {}
        for name, t in body.topics.items():
            for i, (owner, row) in enumerate(zip(t.owners, t.rows, strict=True)):
                if owner == self.node_id and row >= 0:
                    rows[(name, i)] = row
        self.rows = rows
        for key in rows:
            p = self.replicas.get(*key)
            if p is not None:
                self._publish(key, p)

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        # The controller publishes the directory before it pushes the image (controller.py).
        self._load_rows()
        authorizing = self.state.authorizer is not None
        for key, watchers in list(self.watchers.items()):
            if key not in self.rows:  # the partition went away (deleted, or led elsewhere)
                for w in list(watchers):
                    self._close(w, unlink=False)
                continue
            for w in list(watchers) if authorizing else ():
                try:
                    self._authorize_watch(w.principal, key[0], w.group)
                except _Refused as exc:  # an ACL changed: the consumer is told, then detached
                    log.info("worker %d: local consumer %s detached: %s", self.node_id, w.principal, exc)
                    with contextlib.suppress(OSError):
                        w.conn.send(
                            encode_message({"ok": False, "error": str(exc), "error_code": exc.error_code})
                        )
                    self._close(w, unlink=False)

    # ------------------------------------------------------------------ attach

    def _accept(self) -> None:
        assert self._listener is not None and self._loop is not None
        while True:
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("worker %d: local accept failed: %s", self.node_id, exc)
                return
            conn.setblocking(False)
            self._loop.add_reader(conn.fileno(), self._on_hello, conn)

    def _on_hello(self, conn: socket.socket) -> None:
        assert self._loop is not None
        self._loop.remove_reader(conn.fileno())
        try:
            raw = conn.recv(MAX_MESSAGE)
        except OSError:
            conn.close()
            return
        if not raw:
            conn.close()
            return
        try:
            peer = peer_credentials(conn)
        except OSError as exc:
            log.warning("worker %d: local client refused: no peer credentials: %s", self.node_id, exc)
            conn.close()
            return
        refusal = peer_refusal(peer, self.policy)
        if refusal is not None:
            log.warning("worker %d: local client pid %d refused: %s", self.node_id, peer.pid, refusal)
            self._refuse(conn, {"ok": False, "error": f"may not attach: {refusal}"})
            return
        principal = None if is_sibling(peer) else local_principal(peer.uid, peer.user)
        try:
            session = self._attach(conn, decode_message(raw), principal)
            session.principal = principal
        except _Refused as exc:
            log.info("worker %d: local client pid %d refused: %s", self.node_id, peer.pid, exc)
            self._refuse(conn, {"ok": False, "error": str(exc), "error_code": exc.error_code})
            return
        except (LocalProtocolError, ShmError, RingError, ValueError, KeyError, TypeError) as exc:
            log.info("worker %d: local client refused: %s", self.node_id, exc)
            self.state.counters.error(_PRODUCE_API_KEY, int(ErrorCode.INVALID_REQUEST))
            self._refuse(conn, {"ok": False, "error": str(exc)})
            return
        self.sessions.add(session)
        self._loop.add_reader(conn.fileno(), self._on_conn, session)
        try:
            conn.send(encode_message({"ok": True, "node_id": self.node_id}))
        except OSError:
            self._close(session, unlink=True)

    @staticmethod
    def _refuse(conn: socket.socket, answer: dict[str, object]) -> None:
        with contextlib.suppress(OSError):
            conn.send(encode_message(answer))
        conn.close()

    def _allowed(
        self,
        principal: KafkaPrincipal | None,
        operation: AclOperation,
        resource: ResourceType,
        name: str,
        api: str,
    ) -> bool:
        """May a local client's principal do this (None: a sibling worker, checked at its door)?"""
        authorizer = self.state.authorizer
        if principal is None or authorizer is None:
            return True
        if authorizer.authorize(principal, LOCAL_HOST, operation, resource, name):
            return True
        self.state.audit.denied(str(principal), LOCAL_HOST, operation, resource, name, api)
        return False

    def _authorize_watch(self, principal: KafkaPrincipal | None, topic: str, group: str | None) -> None:
        """A LocalConsumer's checks, as Kafka's for a consumer: READ on its group, READ on the topic."""
        if group is not None and not self._allowed(principal, _READ, _GROUP, group, "LocalConsume"):
            raise _Refused(f"{principal} may not READ group {group!r}", _GROUP_DENIED)
        if not self._allowed(principal, _READ, _TOPIC, topic, "LocalConsume"):
            raise _Refused(f"{principal} may not READ topic {topic!r}", _TOPIC_DENIED)

    def _ring(self, name: object) -> Ring:
        if not isinstance(name, str) or not is_client_ring(name):
            raise LocalProtocolError(f"ring name {name!r} is not a local client's ({CLIENT_PREFIX}...)")
        return Ring.attach(self.instance, name)

    def _attach(
        self, conn: socket.socket, hello: dict[str, object], principal: KafkaPrincipal | None
    ) -> _Session:
        op = hello.get("op")
        if op == "produce":
            requests = self._ring(hello["requests"])
            try:
                acks = self._ring(hello["acks"])
            except BaseException:
                requests.close()
                raise
            s = _ProducerSession(conn, requests, acks)
            self._watch(s)
            return s
        if op == "watch":
            topic, partition, group = hello["topic"], hello["partition"], hello.get("group")
            if not isinstance(topic, str) or not isinstance(partition, int):
                raise LocalProtocolError("watch needs a topic name and a partition number")
            if group is not None and not isinstance(group, str):
                raise LocalProtocolError("a watch's group must be a group id")
            self._authorize_watch(principal, topic, group)
            key = (topic, partition)
            p = self.replicas.get(topic, partition)
            if p is None or key not in self.rows:
                code = ErrorCode(self.replicas.not_here_error(topic, partition))
                raise LocalProtocolError(
                    f"{code.name}: worker {self.node_id} does not serve {topic}-{partition}"
                )
            w = _WatchSession(conn, self._ring(hello["ring"]), key, group)
            self.watchers.setdefault(key, []).append(w)
            self._notified.pop(key, None)
            self._publish(key, p)
            self._arm(key, p)
            return w
        raise LocalProtocolError(f"unknown op {op!r}")

    def _on_conn(self, s: _Session) -> None:
        """The client said something after the handshake: only EOF (or junk) is possible."""
        try:
            data = s.conn.recv(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            log.info("worker %d: local client sent data after its handshake: detached", self.node_id)
        if isinstance(s, _ProducerSession):
            self._drain_all(s)
        self._close(s, unlink=True)

    def _close(self, s: _Session, *, unlink: bool) -> None:
        if s.closed:
            return
        s.closed = True
        self.sessions.discard(s)
        loop = self._loop
        if loop is not None:
            loop.remove_reader(s.conn.fileno())
        s.conn.close()
        if isinstance(s, _ProducerSession):
            s.reader.unwatch()
            if s.retry is not None:
                s.retry.cancel()
        if isinstance(s, _WatchSession):
            watchers = self.watchers.get(s.key, [])
            if s in watchers:
                watchers.remove(s)
            if not watchers:
                self.watchers.pop(s.key, None)
        for ring in s.rings:
            if unlink:
                _unlink(ring)
            with contextlib.suppress(BufferError):
                ring.close()

    # ------------------------------------------------------------------ producers

    def _watch(self, s: _ProducerSession) -> None:
        assert self._loop is not None
        if not s.watching and not s.closed:
            s.watching = True
            s.reader.watch(self._loop, lambda: self._on_frames(s))

    def _on_frames(self, s: _ProducerSession) -> None:
        try:
            self._drain(s)
        except LocalProtocolError as exc:  # a broken client: it loses its session, nothing else
            log.warning("worker %d: local producer detached: %s", self.node_id, exc)
            self.state.counters.error(_PRODUCE_API_KEY, int(ErrorCode.INVALID_REQUEST))
            self._close(s, unlink=True)
        except Exception:  # never let one client's frames take the worker down
            log.exception("worker %d: local producer drain failed: detached", self.node_id)
            self._close(s, unlink=True)

    def _drain_all(self, s: _ProducerSession) -> None:
        try:
            while not s.closed and self._drain(s, acks=not s.outbox):
                pass
        except Exception:
            log.exception("worker %d: local producer drain failed", self.node_id)

    def _drain(self, s: _ProducerSession, *, acks: bool = True) -> int:
        """Append every waiting frame (up to MAX_FRAMES_PER_DRAIN); returns how many."""
        frames = s.reader.peek_batch(MAX_FRAMES_PER_DRAIN)
        if not frames:
            return 0
        groups: dict[PartitionKey, list[tuple[int, int, memoryview]]] = {}
        markers: list[tuple[PartitionKey, tuple[int, int, int, bytes]]] = []
        out: list[bytes] = []
        names = self._topic_names
        for f in frames:
            n = len(f)
            if n < REQUEST_HEADER.size:
                raise LocalProtocolError(f"a {n}-byte frame cannot hold a request header")
            batch_id, partition, topic_len, ack, flags = REQUEST_HEADER.unpack_from(f, 0)
            start = REQUEST_HEADER.size + (topic_len + 7) // 8 * 8
            if start > n:
                out.append(ACK.pack(batch_id, -1, -1, _CORRUPT, 0))
                self.state.counters.error(_PRODUCE_API_KEY, _CORRUPT)
                continue
            raw = bytes(f[REQUEST_HEADER.size : REQUEST_HEADER.size + topic_len])
            topic = names.get(raw)
            if topic is None:
                topic = raw.decode("utf-8", "replace")
                if len(names) < 10_000:
                    names[raw] = topic
            if flags & FLAG_TXN_VERIFY:  # a question for this worker's transaction coordinator
                verified = (
                    answer_verification(self.state.transactions, topic, partition, f[start:])
                    if s.principal is None
                    else _CLUSTER_DENIED
                )
                out.append(ACK.pack(batch_id, -1, -1, verified, 0))
            elif flags & FLAG_TXN_MARKER:
                version = 2 if flags & FLAG_TXN_MARKER_V2 else 0
                markers.append(((topic, partition), (batch_id, ack, version, bytes(f[start:]))))
            elif s.principal is not None and n > start + _ATTRS and f[start + _ATTRS] & TRANSACTIONAL_BIT:
                # A local producer has no transactional id, hence no coordinator to end it.
                out.append(ACK.pack(batch_id, -1, -1, _TXN_STATE, 0))
                self.state.counters.error(_PRODUCE_API_KEY, _TXN_STATE)
            else:
                groups.setdefault((topic, partition), []).append((batch_id, ack, f[start:]))
        durable: list[tuple[Partition, int, list[bytes]]] = []
        for key, items in groups.items():
            if not self._allowed(s.principal, _WRITE, _TOPIC, key[0], "LocalProduce"):
                for batch_id, ack, _ in items:  # as TCP Produce: each batch of the topic refused
                    self.state.counters.error(_PRODUCE_API_KEY, _TOPIC_DENIED)
                    if ack != 0:
                        out.append(ACK.pack(batch_id, -1, -1, _TOPIC_DENIED, 0))
                continue
            if key in s.rerouting or (
                self.replicas.get(*key) is None and self.replicas.not_here_error(*key) == _NOT_LEADER
            ):
                # Led elsewhere, or moving (or earlier batches still are): copied out of the ring,
                # forwarded or held, in order (reroute).
                self._reroute(s, key, [(batch_id, ack, bytes(v)) for batch_id, ack, v in items])
                continue
            results = self.replicas.append_batches(key[0], key[1], [v for _, _, v in items])
            p = self.replicas.get(*key)
            if p is not None:
                self._publish(key, p)
            waiting: list[bytes] = []
            flush_to = -1
            for (batch_id, ack, _), r in zip(items, results, strict=True):
                self._count_error(r)
                if ack == 0:
                    continue
                entry = ACK.pack(
                    batch_id, r.base_offset if not r.error_code else -1, r.log_append_time, r.error_code, 0
                )
                if ack == -1 and r.flush_offset >= 0 and not r.error_code:
                    waiting.append(entry)
                    flush_to = max(flush_to, r.flush_offset)
                else:
                    out.append(entry)
            if waiting and p is not None:
                durable.append((p, flush_to, waiting))
        for key, frame in markers:  # after the data batches that came with them
            self._marker(s, key, frame, out, durable)
        groups.clear()  # the batch views point into the ring: gone before its space is
        s.reader.release()
        if acks:
            if out:
                self._send_acks(s, out)
            for p, offset, entries in durable:
                self._after_flush(s, p, offset, entries)
        return len(frames)

    def _marker(
        self,
        s: _ProducerSession,
        key: PartitionKey,
        frame: tuple[int, int, int, bytes],
        out: list[bytes],
        durable: list[tuple[Partition, int, list[bytes]]],
    ) -> None:
        """A transaction marker from a sibling worker's transaction coordinator
        (broker/txn_markers.py): appended if led here, else NOT_LEADER_OR_FOLLOWER (it retries
        on the next image). From a local client (not a coordinator): CLUSTER_AUTHORIZATION_FAILED."""
        batch_id, ack, transaction_version, batch = frame
        p = self.replicas.get(*key) if s.principal is None and key not in s.rerouting else None
        r = self.replicas.append_marker(*key, batch, transaction_version) if p is not None else None
        code = _CLUSTER_DENIED if s.principal is not None else _NOT_LEADER if r is None else r.error_code
        if r is not None and p is not None and not code:
            self._publish(key, p)
        entry = ACK.pack(batch_id, r.base_offset if r is not None and not code else -1, -1, code, 0)
        if ack == -1 and r is not None and p is not None and r.flush_offset >= 0 and not code:
            durable.append((p, r.flush_offset, [entry]))
        elif ack != 0:
            out.append(entry)

    def _reroute(self, s: _ProducerSession, key: PartitionKey, items: list[tuple[int, int, bytes]]) -> None:
        """Batches of a partition this worker does not lead (it moved while the client sent):
        forwarded to the owner, or held while nobody leads it (produce_routing.reroute), then acked.
        One task per partition and session at a time, each after the previous one, so a
        client's batches reach the owner in the order it sent them."""
        forwarder = self.state.forwarder
        previous = s.rerouting.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            if forwarder is None:
                answers = [ForwardResult(_NOT_LEADER)] * len(items)
            else:
                answers = await asyncio.gather(
                    *(
                        reroute(
                            self.state,
                            forwarder,
                            key[0],
                            key[1],
                            batch,
                            ack,
                            DURABLE_TIMEOUT_S,
                            ordered=False,
                        )
                        for _, ack, batch in items
                    )
                )
            entries = []
            for (batch_id, ack, _), answer in zip(items, answers, strict=True):
                if answer.error_code:
                    self.state.counters.error(_PRODUCE_API_KEY, answer.error_code)
                if ack != 0:
                    entries.append(
                        ACK.pack(batch_id, answer.base_offset, answer.log_append_time, answer.error_code, 0)
                    )
            if entries and not s.closed:
                self._send_acks(s, entries)

        assert self._loop is not None
        task = self._loop.create_task(run())
        s.rerouting[key] = task
        self._durable.add(task)
        task.add_done_callback(self._durable.discard)
        task.add_done_callback(lambda t: s.rerouting.pop(key, None) if s.rerouting.get(key) is t else None)

    def _count_error(self, r: AppendResult) -> None:
        if r.error_code:
            self.state.counters.error(_PRODUCE_API_KEY, r.error_code)

    def _after_flush(self, s: _ProducerSession, p: Partition, offset: int, entries: list[bytes]) -> None:
        async def wait() -> None:
            code = await self.replicas.flusher.wait_durable(p, offset, DURABLE_TIMEOUT_S)
            if code:
                self.state.counters.error(_PRODUCE_API_KEY, code)
                entries[:] = [ACK.pack(ACK.unpack(e)[0], -1, -1, code, 0) for e in entries]
            if not s.closed:
                self._send_acks(s, entries)

        assert self._loop is not None
        task = self._loop.create_task(wait())
        self._durable.add(task)
        task.add_done_callback(self._durable.discard)

    def _send_acks(self, s: _ProducerSession, entries: list[bytes]) -> None:
        per_frame = max(1, s.ack_writer.max_payload // ACK.size)
        for i in range(0, len(entries), per_frame):
            frame = b"".join(entries[i : i + per_frame])
            if s.outbox or not s.ack_writer.try_write(frame):
                s.outbox.append(frame)
        if s.outbox and s.retry is None:
            # Back-pressure: stop draining requests until the client reads its acks.
            if s.watching:
                s.reader.unwatch()
                s.watching = False
            self._schedule_retry(s)

    def _schedule_retry(self, s: _ProducerSession) -> None:
        assert self._loop is not None
        s.retry = self._loop.call_later(ACK_RETRY_S, self._retry_acks, s)

    def _retry_acks(self, s: _ProducerSession) -> None:
        s.retry = None
        if s.closed:
            return
        while s.outbox and s.ack_writer.try_write(s.outbox[0]):
            s.outbox.pop(0)
        if s.outbox:
            self._schedule_retry(s)
        else:
            self._watch(s)

    # ------------------------------------------------------------------ high watermarks

    def _publish(self, key: PartitionKey, p: Partition) -> None:
        row = self.rows.get(key)
        if row is None or self.high_watermarks is None:
            return
        plog = p.log
        hw = plog.log_end_offset
        self.high_watermarks.publish(row, hw, plog.log_start_offset, plog.last_stable_offset)
        watchers = self.watchers.get(key)
        if watchers and self._notified.get(key) != hw:
            self._notified[key] = hw
            frame = WAKE.pack(hw)
            for w in watchers:
                w.writer.try_write(frame)  # full: the consumer has wake-ups to read, it is awake

    def _arm(self, key: PartitionKey, p: Partition) -> None:
        """Hear about TCP appends to a watched partition (see the module docstring)."""
        if key in self._armed or self._loop is None:
            return
        fut: asyncio.Future[None] = self._loop.create_future()
        fut.add_done_callback(self._appended(key))
        p.waiters.add(FetchWaiter(fut))
        self._armed[key] = fut

    def _appended(self, key: PartitionKey) -> Callable[[asyncio.Future[None]], None]:
        def done(fut: asyncio.Future[None]) -> None:
            if self._armed.get(key) is fut:
                del self._armed[key]
            if fut.cancelled() or key not in self.watchers:
                return
            p = self.replicas.get(*key)
            if p is not None:
                self._publish(key, p)
                self._arm(key, p)

        return done
