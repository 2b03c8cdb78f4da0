"""Forwarding: a Produce for a partition that another worker owns is passed to that worker through
shared-memory rings and answered when the owner acks, instead of NOT_LEADER_OR_FOLLOWER (DESIGN.md,
"Rings"). Opens shared memory and a Unix socket per peer worker.

Why: clients route by their last Metadata answer. While a partition moves between workers
(controller.py) or right after, a client with stale metadata keeps sending to the old owner;
forwarded, its batches land in the right log with no error and no metadata round trip.

How: to the owner, the forwarding worker *is* a local producer (ipc/local_protocol.py): on first
use of a peer it creates a request ring and an ack ring (``lc<pid>-<n>-fwd-w<S>-to-w<D>-req`` /
``-ack``: owned by this worker, so a SIGKILL of either side leaves nothing behind: the owner
unlinks a dead client's rings, ``shm.reclaim_stale`` a dead broker's) and attaches them over the
owner's Unix socket, asynchronously (two workers attaching to each other at once must not wait for
each other's loop). Each forwarded batch is one request frame, copied once from the Produce
request straight into the ring; the owner's ring drain appends it exactly as a local producer's
(ReplicaManager.append_batches: CRC, idempotence, max.message.bytes, flush policy, counters) and
acks with the base offset or the Kafka error. The client's acks value travels in the frame
(acks=-1 waits for the owner's flush when its policy asks for one).

Order: frames to one peer keep the order in which handlers forwarded them (a FIFO lock once one
has to wait for ring space), so an idempotent producer's sequence numbers reach the owner in order.

Failures, each answered per partition so the client retries (every code below is retriable):
the owner not attachable or gone before acking -> NOT_LEADER_OR_FOLLOWER before the frame was
committed (not written), REQUEST_TIMED_OUT after (it may have been written; an idempotent
producer's retry is then a duplicate the owner recognises); no ring space or no ack within the
request's timeout -> REQUEST_TIMED_OUT. If the partition moved again before the owner drained the
frame, the owner forwards or holds it in turn (local_clients.py), so a batch follows its
partition; `produce_routing.reroute` keeps the order of one partition's batches through all of that.

Cost (``python -m perf.bench_moves --runs 3``: 100-record batches of 100 B, acks=1, 4 connections
with one request in flight each, final code): forwarded 397k records/s against 483k sent to the
owner in the same run, a ratio of 0.71 (0.66-0.83; 0.47, 0.32-0.68, on a busier machine): the
request crosses both workers' loops and the rings, and the answer waits for the owner's ack.
It is the path of stale clients and moves, not the steady state (clients follow Metadata to the
owner).

The forwarded answer carries the owner's log-append time (LogAppendTime topics) but no log start
offset (-1): the ack frame does not have it (ipc/local_protocol.py), and clients only log it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from shardbroker.ipc.local_attach import client_ring, ring_object
from shardbroker.ipc.local_directory import worker_socket_address
from shardbroker.ipc.local_protocol import (
    ACK,
    MAX_MESSAGE,
    decode_message,
    encode_message,
    pack_request_header,
    request_header_size,
)
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_layout import RingError
from shardbroker.ipc.ring_names import Direction, forward_role
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.ipc.ring_writer import RingWriter
from shardbroker.ipc.shm import ShmError
from shardbroker.protocol.errors import ErrorCode

__all__ = ["ForwardResult", "PartitionOrder", "ProduceForwarder"]

log = logging.getLogger(__name__)

#: Request ring per peer: room for a few max-size (1 MiB) batches in flight.
REQUEST_RING_CAPACITY: Final = 8 << 20
#: Ack ring: 32-byte entries.
ACK_RING_CAPACITY: Final = 1 << 20
ATTACH_TIMEOUT_S: Final = 5.0

NOT_LEADER: Final = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)
TIMED_OUT: Final = int(ErrorCode.REQUEST_TIMED_OUT)


@dataclass(frozen=True, slots=True)
class ForwardResult:
    error_code: int
    base_offset: int = -1
    log_append_time: int = -1
    #: Why, when the answer was not the owner's (a refused transaction verification) or came
    #: from this worker's own append; the owner's ack carries only the code.
    error_message: str | None = None
    #: The records that failed the batch, when this worker appended it (AppendResult's).
    record_errors: Sequence[tuple[int, str]] = ()


@dataclass(eq=False)
class _Peer:
    """This worker's attachment to one owner: its connection, rings and batches awaiting acks."""

    node_id: int
    conn: socket.socket
    rings: list[Ring]
    writer: RingWriter
    reader: RingReader
    pending: dict[int, asyncio.Future[ForwardResult]] = field(default_factory=dict)
    ids: itertools.count[int] = field(default_factory=itertools.count)
    #: Forwards waiting for ring space; while any wait, later ones queue behind them (order).
    queued: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False


@dataclass(eq=False)
class PartitionOrder:
    """Batches of one partition that this worker is forwarding or holding, in arrival order."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0  # reroutes holding or waiting for the lock
    unacked: int = 0  # forwarded, not yet acked by the owner
    drained: asyncio.Event = field(default_factory=asyncio.Event)


class ProduceForwarder:
    """A worker `Service` (registered before the Kafka listener, so drained after it)."""

    def __init__(self, node_id: int, instance: str) -> None:
        self.node_id = node_id
        self.instance = instance
        self.peers: dict[int, _Peer] = {}
        self._attaching: dict[int, asyncio.Future[_Peer]] = {}
        self._orders: dict[tuple[str, int], PartitionOrder] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    async def start(self, worker: object = None) -> None:
        self._loop = asyncio.get_running_loop()

    async def drain(self) -> None:
        """After the listener finished its requests: detach from every peer, unlink the rings."""
        self._closed = True
        for peer in list(self.peers.values()):
            self._detach(peer)

    # ------------------------------------------------------------------ forwarding

    def order(self, key: tuple[str, int]) -> PartitionOrder:
        """The arrival order of ``key``'s rerouted batches (made on first use)."""
        order = self._orders.get(key)
        if order is None:
            order = self._orders[key] = PartitionOrder()
        return order

    def busy(self, topic: str, partition: int) -> bool:
        """Whether batches of the partition are being forwarded or held here: a new one must
        queue behind them (`reroute`) instead of being appended at once. On every Produce
        partition, so the common case (nothing rerouted anywhere) is one truth test."""
        if not self._orders:
            return False
        order = self._orders.get((topic, partition))
        return order is not None and (order.users > 0 or order.unacked > 0)

    def acked(self, key: tuple[str, int], order: PartitionOrder) -> None:
        order.unacked -= 1
        if not order.unacked:
            order.drained.set()
        self.release(key, order)

    def release(self, key: tuple[str, int], order: PartitionOrder) -> None:
        """Forget an order with nothing in it any more."""
        if not order.unacked and not order.users and self._orders.get(key) is order:
            del self._orders[key]

    async def send(
        self,
        node: int,
        topic: str,
        partition: int,
        batch: bytes | bytearray | memoryview,
        acks: int,
        timeout: float,
        flags: int = 0,
    ) -> asyncio.Future[ForwardResult] | ForwardResult:
        """Commit one Produce partition's batch (``acks`` 1 or -1) to worker ``node``'s request
        ring; the future of its ack, or the error if it could not be sent (never raises).
        ``flags``: the frame's flags (ipc/local_protocol.py: a transaction marker)."""
        try:
            peer = self.peers.get(node) or await self._peer(node)
        except (OSError, ShmError, RingError, ValueError, TimeoutError) as exc:
            log.warning("worker %d: cannot forward to worker %d: %s", self.node_id, node, exc)
            return ForwardResult(NOT_LEADER)
        name = topic.encode()
        size = request_header_size(name) + len(batch)
        if size > peer.writer.max_payload:  # rare (> 8 MiB): the client can send it to the owner
            return ForwardResult(NOT_LEADER)
        batch_id = next(peer.ids)
        assert self._loop is not None
        fut: asyncio.Future[ForwardResult] = self._loop.create_future()
        peer.pending[batch_id] = fut
        try:
            if not (
                peer.queued == 0
                and self._try_write(peer, size, batch_id, partition, name, acks, batch, flags)
            ):
                frame = memoryview(bytearray(size))  # copied now: the request's buffer may be reused
                start = pack_request_header(frame, batch_id, partition, name, acks, flags)
                frame[start:] = batch
                peer.queued += 1
                try:
                    async with peer.lock:
                        if peer.closed or not await peer.writer.write_async(frame, timeout):
                            peer.pending.pop(batch_id, None)
                            return ForwardResult(NOT_LEADER if peer.closed else TIMED_OUT)
                finally:
                    peer.queued -= 1
        except RingError as exc:
            log.warning("worker %d: forwarding to worker %d failed: %s", self.node_id, node, exc)
            peer.pending.pop(batch_id, None)
            return ForwardResult(NOT_LEADER)
        return fut

    @staticmethod
    def _try_write(
        peer: _Peer,
        size: int,
        batch_id: int,
        partition: int,
        name: bytes,
        acks: int,
        batch: bytes | bytearray | memoryview,
        flags: int,
    ) -> bool:
        view = peer.writer.try_reserve(size)
        if view is None:
            return False
        start = pack_request_header(view, batch_id, partition, name, acks, flags)
        view[start:] = batch
        peer.writer.commit()
        return True

    # ------------------------------------------------------------------ peers

    async def _peer(self, node: int) -> _Peer:
        if self._closed:
            raise OSError("the worker is draining")
        attaching = self._attaching.get(node)
        if attaching is None:
            assert self._loop is not None
            attaching = self._loop.create_task(self._attach(node))
            self._attaching[node] = attaching
            attaching.add_done_callback(lambda _: self._attaching.pop(node, None))
        return await asyncio.shield(attaching)

    async def _attach(self, node: int) -> _Peer:
        loop = asyncio.get_running_loop()
        to_owner = forward_role(self.node_id, node, Direction.TO_WORKER)
        requests = client_ring(self.instance, to_owner, REQUEST_RING_CAPACITY)
        rings = [requests]
        conn = socket.socket(
            socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            acks = forward_role(self.node_id, node, Direction.FROM_WORKER)
            rings.append(client_ring(self.instance, acks, ACK_RING_CAPACITY))
            hello = {"op": "produce", "requests": ring_object(rings[0]), "acks": ring_object(rings[1])}
            async with asyncio.timeout(ATTACH_TIMEOUT_S):
                await loop.sock_connect(conn, worker_socket_address(self.instance, node))
                await loop.sock_sendall(conn, encode_message(hello))
                reply = decode_message(await loop.sock_recv(conn, MAX_MESSAGE) or b"null")
            if reply.get("ok") is not True:
                raise OSError(f"worker {node} refused: {reply.get('error', reply)}")
        except BaseException:
            conn.close()
            for ring in rings:
                with contextlib.suppress(BufferError):
                    ring.close()
            raise
        peer = _Peer(node, conn, rings, rings[0].writer(), rings[1].reader())
        self.peers[node] = peer
        loop.add_reader(conn.fileno(), self._on_conn, peer)
        peer.reader.watch(loop, lambda: self._on_acks(peer))
        log.info("worker %d: forwarding to worker %d", self.node_id, node)
        return peer

    def _on_acks(self, peer: _Peer) -> None:
        for frame in peer.reader.read_batch(64):
            for batch_id, base_offset, append_time, code, _ in ACK.iter_unpack(frame):
                fut = peer.pending.pop(batch_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(ForwardResult(code, base_offset if not code else -1, append_time))

    def _on_conn(self, peer: _Peer) -> None:
        """The owner closed the connection (it drained, or died): what it acked is in; the rest
        may or may not be written."""
        with contextlib.suppress(BlockingIOError):
            if peer.conn.recv(MAX_MESSAGE):
                return  # nothing is expected after the handshake; ignore it
        self._on_acks(peer)
        self._detach(peer)

    def _detach(self, peer: _Peer) -> None:
        if peer.closed:
            return
        peer.closed = True
        if self.peers.get(peer.node_id) is peer:
            del self.peers[peer.node_id]
        for fut in peer.pending.values():
            if not fut.done():
                fut.set_result(ForwardResult(TIMED_OUT))
        peer.pending.clear()
        if self._loop is not None:
            self._loop.remove_reader(peer.conn.fileno())
        peer.reader.unwatch()
        peer.conn.close()
        for ring in peer.rings:
            with contextlib.suppress(BufferError):
                ring.close()  # unlinks: this worker created them
        log.info("worker %d: stopped forwarding to worker %d", self.node_id, peer.node_id)
