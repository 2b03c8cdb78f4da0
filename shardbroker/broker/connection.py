"""One client connection on the worker's event loop: asyncio in, handlers, responses out. Uses sockets.

``KafkaConnection`` is an ``asyncio.BufferedProtocol`` around the sans-IO
``protocol.connection.ServerConnection``: the kernel copies received bytes straight into the
connection's preallocated, reused buffer (``get_buffer``), frames are decoded where they lie, and
Produce records reach the log as memoryview slices of that buffer. A request that must wait (a
long-poll Fetch, acks=all, a forward) goes on as its own task, so it does not hold up the
requests behind it, while responses are written strictly in request order (the sans-IO object
queues them by sequence number).

Eager start (what Python 3.12's eager task factory does): a handler runs at once, in the callback
that decoded its request, up to its first real wait; only then does the rest become a task
(``_Rest``). Most requests (Produce acks=0/1, Metadata, offsets) never wait, and skip the task,
its scheduling and its done callback: in-process (a KafkaConnection over a fake transport fed
one-record Produce frames, uvloop, 2026-12-05) 32.4 -> 28.0-28.6 us of CPU a request.
Handlers must therefore not need a current task before their first wait (``asyncio.timeout()``
does: use ``asyncio.wait_for``).

Single-partition Produce (protocol/single_produce.py, broker/handlers/produce.py's
``append_single``): a Produce for one partition is read without the generic codec, passes the
SASL gate like any request, is appended, and is answered with pre-encoded bytes, in the callback
that read it; its rare paths (an authorizer, forwarding, a transaction check, an error, a flush
to wait for) take the generic objects and handler. Measured in-process as above: 28.0-28.6 ->
15.3-15.7 us of CPU a one-record Produce (3 runs each; ``python -m perf request-path``).

Buffer lifetime: a request whose body holds views of the receive buffer (records: Produce) pins
that buffer until its handler has returned; the task releases it in a ``finally``. So handlers
may use ``records`` views until they return, and must copy (``bytes(view)``) anything they keep
longer. While pinned, new input goes to a fresh (or the spare) buffer instead of overwriting.

Sending: response parts are bytes, or ``FileRegion`` objects (Fetch records straight from segment
files). A region of at most ``SMALL_REGION`` (16 KiB) is read and sent with the bytes around it;
a larger one is sent with ``os.sendfile`` when the transport's write buffer is empty (so
nothing queued could be overtaken); otherwise, or for what sendfile could not take at once, the
rest is ``os.pread`` and written through the transport, which keeps the order and applies its
back-pressure. sendfile is 1.7-2x faster on 1 MiB fetches. Over TLS (SSL, SASL_SSL listeners)
sendfile cannot be used, since the bytes must be encrypted on their way: every region is
``os.pread`` into memory and written through the TLS transport, which encrypts it (one copy more
than plaintext, plus the cipher). Measured (perf/bench_tls.py: confluent-kafka consuming
1,000,000 x 100 B, one consumer, PLAINTEXT and SSL listeners of one broker, rounds alternated):
TLS/plaintext msgs/s 0.59 and 0.98 (medians of two runs on a busy 2-core machine: the Python
consumer is the limit either way); the workers' CPU for the 100 MB was 0.10 s over TLS against
0.075 s with sendfile. kTLS is not used. Responses finished in the same loop
iteration are written together on the next one ("corking", ``_schedule_flush``): the ``send``
syscall is the largest per-request cost, and corking gains 30-50% on produce.

Flow control: at most ``ConnectionLimits.max_in_flight`` handlers run per connection (frames
decoded beyond that wait in a backlog: one recv may carry hundreds of small requests), and
reading pauses while the backlog is not empty, while that many responses are owed, or while the
transport's write buffer is over its high-water mark (``pause_writing``); it resumes when all are
back under. A connection with no request in flight and no input for ``connections.max.idle.ms``
is closed by the listener's sweeper (Kafka's default: 10 minutes). The receive buffer is 256 KiB:
1 MiB helps small pipelined requests but costs 4x the memory per connection.

SASL listeners: until the session's SaslAuthenticator (security/sasl_authenticator.py) is
complete, only ApiVersions, SaslHandshake and SaslAuthenticate pass (``_gate``); anything else
closes the connection as Kafka does, counted as an ILLEGAL_SASL_STATE error and, as Kafka's
IllegalSaslStateException, as a failed authentication (the audit trail's rate-limited log line).
Frames are limited to ``sasl.server.max.receive.size`` (512 KiB) until then. After SaslHandshake
v0 the frames are raw SASL tokens (``raw_sasl``: Kafka's legacy framing). Once the KIP-368
session lifetime has passed, the next request that is not a re-authentication closes the
connection. An unauthenticated connection is closed ``connections.max.idle.ms`` after it was
accepted, however active (Kafka has no handshake timeout of its own; its idle timeout alone
would let a client that sends a byte now and then hold a connection unauthenticated forever).
Measurements: docs/notes/connection.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from shardbroker.broker import sasl_exchange
from shardbroker.broker.client_quota_manager import ConnectionQuotas
from shardbroker.broker.dispatch import HandlerRegistry, RequestContext
from shardbroker.broker.file_region import FileRegion
from shardbroker.broker.handlers import produce
from shardbroker.broker.session import ConnectionSession, SecurityProtocol
from shardbroker.config.broker_properties import SASL_SERVER_MAX_RECEIVE_SIZE
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.connection import (
    BadRequest,
    ConnectionClosed,
    Event,
    RequestReceived,
    SaslTokenReceived,
    ServerConnection,
    SingleProduceReceived,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError
from shardbroker.protocol.messages import REQUESTS
from shardbroker.protocol.single_produce import success_response
from shardbroker.security.sasl_authenticator import SASL_AUTHENTICATE, SASL_HANDSHAKE, Gate, SaslState

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState

__all__ = ["SMALL_REGION", "ConnectionLimits", "KafkaConnection", "start_eagerly"]

log = logging.getLogger(__name__)

_UNKNOWN_SERVER_ERROR = int(ErrorCode.UNKNOWN_SERVER_ERROR)
#: File regions up to this size are ``pread`` and sent in one write with the bytes around them
#: instead of a write and a sendfile: a small Fetch answer is one syscall and one segment for the
#: client to wake up for. A/B alternated (``perf requests``, 2026-12-05, 2 runs each): Fetch CPU
#: per request 36.4/34.6 -> 33.3/33.3 us at 10 connections, 45.0/47.4 -> 40.3/40.7 at 100,
#: requests/s +13-17 %; 1 connection unchanged (29-30 us). Large regions keep sendfile.
SMALL_REGION = 16 * 1024
_GATED = (RequestReceived, BadRequest)
#: APIs not held to ``request_percentage``, as Kafka's exempt ones: what a client needs to
#: authenticate and find its way (ApiVersions, SaslHandshake, SaslAuthenticate).
_REQUEST_QUOTA_EXEMPT = frozenset({m.ApiVersionsRequest.API_KEY, SASL_HANDSHAKE, SASL_AUTHENTICATE})
_ILLEGAL_SASL_STATE = int(ErrorCode.ILLEGAL_SASL_STATE)
_PRODUCE = m.ProduceRequest.API_KEY
#: The first version of each API whose client throttles itself (KIP-219, Kafka 2.0: the
#: responses' ``shouldClientThrottle``); APIs added since throttle from v0. A throttled response
#: to an older version is held for the throttle time instead (what brokers did before KIP-219).
_CLIENT_THROTTLES_FROM: dict[int, int] = {
    request.API_KEY: version
    for request, version in (
        (m.ProduceRequest, 6),
        (m.FetchRequest, 8),
        (m.ListOffsetsRequest, 3),
        (m.MetadataRequest, 6),
        (m.OffsetCommitRequest, 4),
        (m.OffsetFetchRequest, 4),
        (m.FindCoordinatorRequest, 2),
        (m.JoinGroupRequest, 3),
        (m.HeartbeatRequest, 2),
        (m.LeaveGroupRequest, 2),
        (m.SyncGroupRequest, 2),
        (m.DescribeGroupsRequest, 2),
        (m.ListGroupsRequest, 2),
        (m.ApiVersionsRequest, 2),
        (m.CreateTopicsRequest, 3),
        (m.DeleteTopicsRequest, 2),
        (m.DeleteRecordsRequest, 1),
        (m.InitProducerIdRequest, 1),
        (m.AddPartitionsToTxnRequest, 1),
        (m.AddOffsetsToTxnRequest, 1),
        (m.EndTxnRequest, 1),
        (m.TxnOffsetCommitRequest, 1),
        (m.DescribeAclsRequest, 1),
        (m.CreateAclsRequest, 1),
        (m.DeleteAclsRequest, 1),
        (m.DescribeConfigsRequest, 1),
        (m.AlterConfigsRequest, 1),
        (m.AlterReplicaLogDirsRequest, 1),
        (m.DescribeLogDirsRequest, 1),
        (m.CreatePartitionsRequest, 1),
        (m.CreateDelegationTokenRequest, 1),
        (m.RenewDelegationTokenRequest, 1),
        (m.ExpireDelegationTokenRequest, 1),
        (m.DescribeDelegationTokenRequest, 1),
        (m.DeleteGroupsRequest, 1),
        (m.SaslAuthenticateRequest, 1),
    )
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    #: ``socket.request.max.bytes`` (Kafka's default 100 MiB).
    max_request_size: int = 104857600
    #: ``connections.max.idle.ms`` (Kafka's default 600000); -1 or 0: never.
    max_idle_ms: int = 600000
    #: Requests read but not answered before reading pauses. librdkafka keeps up to
    #: ``max.in.flight`` (5 with idempotence) produce requests and a fetch per connection; 64
    #: leaves pipelining clients unthrottled while bounding the pinned buffers and tasks.
    max_in_flight: int = 64
    #: Transport write buffer high/low water marks (asyncio's default high is 64 KiB): one Fetch
    #: response of a few MiB should not stop reading requests on the other partitions.
    write_high_water: int = 4 * 1024 * 1024
    write_low_water: int = 1024 * 1024
    #: Use os.sendfile for file regions (False: always pread + write).
    sendfile: bool = True
    #: ``max.connections`` and ``max.connections.per.ip`` (Kafka's defaults: Int.MaxValue), per
    #: worker; enforced by the listener when a connection is made.
    max_connections: int = 2147483647
    max_connections_per_ip: int = 2147483647


class KafkaConnection(asyncio.BufferedProtocol):
    """The asyncio side of one Kafka client connection (see the module docstring)."""

    def __init__(
        self,
        state: WorkerState,
        registry: HandlerRegistry,
        limits: ConnectionLimits,
        on_lost: Callable[[KafkaConnection], None] | None = None,
        admit: Callable[[KafkaConnection], str | None] | None = None,
        *,
        listener: str = "PLAINTEXT",
        security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT,
    ) -> None:
        self.state = state
        self.registry = registry
        self.limits = limits
        self._on_lost = on_lost
        #: Called once the peer is known; a reason (str) refuses the connection: it is closed at
        #: once, before a byte is read (Kafka's connection quotas do the same).
        self._admit = admit
        self.admitted = False
        #: The protocol state and its receive buffer (256 KiB), made once the connection is
        #: admitted (connection_made): a connection refused for a quota never allocates one, so a
        #: storm of them costs the worker no buffers (measured: 1,500 connections against
        #: ``max.connections`` 300 grew the worker by 256 MiB when every refused connection got
        #: its buffer first, and by 78 MiB, the 300 admitted ones' buffers, once they did not:
        #: tests/faults/test_connections.py).
        self.conn: ServerConnection
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_host = "?"
        #: Who the peer is (broker/session.py); its host is set once the peer is known.
        self.session = ConnectionSession.accepted(listener, security_protocol, "")
        self._sock_fd = -1
        self._sendfile = limits.sendfile
        self._tls = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._backlog: deque[Event] = deque()  # decoded, waiting for a handler slot
        self._flush_pending = False
        self._paused_for_requests = False
        self._paused_for_writing = False
        self._draining = False
        self._eof = False
        #: Muted for a quota's throttle time (KIP-219): no reading, no new request started.
        self._muted: asyncio.TimerHandle | None = None
        #: The quota sensors this connection's requests are charged to (once quotas are set).
        self._quotas: ConnectionQuotas | None = None
        self._closing = False
        self.last_active = time.monotonic()
        self._idle = asyncio.Event()  # set while nothing is in flight
        self._idle.set()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sasl_deadline: asyncio.TimerHandle | None = None

    # -- asyncio.BufferedProtocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (not a subclass; the same API).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(self.limits.write_high_water, self.limits.write_low_water)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = f"{peer[0]}:{peer[1]}"
            self.peer_host = str(peer[0])
            self.session.client_host = self.peer_host
        if self._admit is not None and self._admit(self) is not None:
            self._closing = True
            transport.close()
            return
        self.admitted = True
        self.conn = ServerConnection(self.limits.max_request_size, supported=self.registry.versions)
        # The path is the Produce handler's own: only where that handler serves Produce.
        self.conn.single_produce = self.registry.handlers.get(0) is produce.HANDLER
        sock = transport.get_extra_info("socket")
        self._sock_fd = sock.fileno() if sock is not None else -1
        if transport.get_extra_info("ssl_object") is not None:
            self._tls = True
            self._sendfile = False  # the socket carries TLS records: file bytes must be encrypted
        self.state.counters.add_connections(1)
        if self.session.sasl is not None:
            self._sasl_settled()
            if self.limits.max_idle_ms > 0:
                self._sasl_deadline = asyncio.get_running_loop().call_later(
                    self.limits.max_idle_ms / 1000, self._sasl_timed_out
                )

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.conn.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self.last_active = time.monotonic()
        self._backlog.extend(self.conn.buffer_updated(nbytes))
        self._pump()
        self._update_reading()

    def _pump(self) -> None:
        """Start held requests while fewer than ``max_in_flight`` handlers run (one recv may carry
        many frames: the limit is on handlers, not only on reads)."""
        backlog = self._backlog
        while backlog and not self._closing and self._muted is None:
            event = backlog[0]
            if (
                isinstance(event, RequestReceived | SingleProduceReceived)
                and len(self._tasks) >= self.limits.max_in_flight
            ):
                break
            backlog.popleft()
            self._on_event(event)

    def eof_received(self) -> bool:
        # The client half-closed: answer what it sent, then close (keep the transport open). TLS
        # has no half-close: its transport closes after the peer's close_notify whatever we say.
        self._eof = True
        self._maybe_finish()
        return not self._tls

    def pause_writing(self) -> None:
        self._paused_for_writing = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._paused_for_writing = False
        self._update_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._muted is not None:
            self._muted.cancel()
        if self._sasl_deadline is not None:
            self._sasl_deadline.cancel()
        if self.admitted:
            self.state.counters.add_connections(-1)
        for task in list(self._tasks):
            task.cancel()
        if not self.lost.done():
            self.lost.set_result(None)
        self._idle.set()
        if self._on_lost is not None:
            self._on_lost(self)

    # -- requests ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if type(event) is SingleProduceReceived:
            sasl = self.session.sasl
            if sasl is None or sasl.gate(event.api_key, time.monotonic()) is Gate.SERVE:
                self._idle.clear()
                self._single_produce(event)
                return
            event = self._as_generic(event)  # for the gate below to refuse, as any request
        # The gate is SASL's: a connection without SASL skips even the call.
        if self.session.sasl is not None and isinstance(event, _GATED) and not self._gate(event):
            return
        if isinstance(event, RequestReceived):
            self._idle.clear()
            self._start(self._serve(event, self._context(event)))
        elif isinstance(event, BadRequest):
            self._idle.clear()
            self.state.counters.error(event.api_key, int(event.error_code))
            log.info(
                "worker %d: %s from %s (api key %d v%d, correlation %d)",
                self.state.node_id,
                event.message,
                self.peer,
                event.api_key,
                event.api_version,
                event.correlation_id,
            )
            response, version = self.registry.bad_request_response(event)
            try:
                self.conn.respond(event, response, version=version, close_after=response is None)
            except ProtocolError:
                log.exception("worker %d: cannot encode the answer to a bad request", self.state.node_id)
                self.conn.respond(event, None, close_after=True)
            self._flush()
        elif isinstance(event, SaslTokenReceived):
            self._idle.clear()
            task = asyncio.get_running_loop().create_task(self._serve_token(event))
            self._tasks.add(task)
            task.add_done_callback(self._task_done)
        elif isinstance(event, ConnectionClosed):
            self.state.counters.error(-1, int(event.error_code))  # api unknown: a broken frame
            log.warning(
                "worker %d: closing connection from %s: %s", self.state.node_id, self.peer, event.reason
            )
            self._flush()
            self.close()

    def _context(self, event: RequestReceived) -> RequestContext:
        return RequestContext(
            api_key=event.api_key,
            api_version=event.api_version,
            correlation_id=event.correlation_id,
            client_id=event.header.client_id,
            worker=self.state,
            registry=self.registry,
            peer=self.peer,
            session=self.session,
        )

    def _single_produce(self, event: SingleProduceReceived) -> None:
        """Append and answer a single-partition Produce without message objects (see the module
        docstring); what needs them goes the generic way with the same sequence number."""
        single = event.request
        started = time.perf_counter()
        failure: Exception | None = None
        try:
            r = produce.append_single(self.state, single)
        except Exception as exc:
            r, failure = None, exc
        elapsed = time.perf_counter() - started
        throttle = None
        if self.state.quotas.enabled and r is not None:
            # Bytes and handler time charged once appended, as Kafka's; a throttle needs the
            # response objects.
            quotas = self._quotas or self._connection_quotas()
            throttle = quotas.produce_request(single.client_id, event.size, elapsed)
        if r is None or throttle or produce.needs_response_objects(single, r):
            generic = self._as_generic(event)
            ctx = self._context(generic)
            rest: Coroutine[Any, Any, Message | None] | None
            if failure is not None:
                rest = _failed(self.registry, ctx, generic.request, failure)
            else:  # None: the whole handler, from the start (nothing was appended)
                rest = None if r is None else produce.finish_single(ctx, single, r)
            self._start(self._serve(generic, ctx, rest, throttle))
            return
        self.conn.release(event)
        self.state.counters.request(0, elapsed, 0)
        if self._closing:
            return
        if single.acks == 0:
            self.conn.respond(event, None)
        else:
            self.conn.respond_encoded(
                event,
                success_response(
                    single.api_version,
                    single.correlation_id,
                    single.topic,
                    single.partition,
                    r.base_offset,
                    r.log_append_time,
                    r.log_start_offset,
                ),
            )
        self._schedule_flush()

    @staticmethod
    def _as_generic(event: SingleProduceReceived) -> RequestReceived:
        header, request = event.request.as_request()
        return RequestReceived(
            header,
            request,
            event.api_key,
            event.api_version,
            event.correlation_id,
            event.size,
            event.seq,
            event.lease,
        )

    # -- SASL --------------------------------------------------------------------------------

    def _gate(self, event: RequestReceived | BadRequest) -> bool:
        """Whether the SASL state lets ``event`` be served; if not, it is refused here (see the
        module docstring): closed, or answered ILLEGAL_SASL_STATE and closed."""
        sasl = self.session.sasl
        if sasl is None:
            return True
        now = time.monotonic()
        if isinstance(event, RequestReceived):
            gate = sasl.gate(event.api_key, now)
        else:
            gate = sasl.gate_bad_request(event.api_key, now)
        if gate is Gate.SERVE:
            return True
        cls = REQUESTS.get(event.api_key)
        api = cls.API_NAME if cls is not None else f"api key {event.api_key}"
        self.state.counters.error(event.api_key, _ILLEGAL_SASL_STATE)
        why = f"{api} during SASL state {sasl.state.value}"
        if gate is Gate.EXPIRED:
            why = "SASL session expired"
        if gate is not Gate.EXPIRED and sasl.state not in (SaslState.COMPLETE, SaslState.FAILED):
            # Mid-authentication (a failed exchange was counted when it failed).
            self._authentication_failed(why)
        else:
            log.info(
                "worker %d: closing connection from %s on %s: %s",
                self.state.node_id,
                self.peer,
                self.session.listener,
                why,
            )
        self.conn.release(event)
        response = None
        if gate is Gate.ILLEGAL_STATE and isinstance(event, RequestReceived):
            message = f"Unexpected Kafka request of type {api} during SASL authentication."
            response = self.registry.error_response(
                event.api_key, event.api_version, event.request, ErrorCode.ILLEGAL_SASL_STATE, message
            )
        try:
            self.conn.respond(event, response, close_after=True)
        except ProtocolError:
            self.conn.respond(event, None, close_after=True)
        self._flush()
        return False

    async def _serve_token(self, event: SaslTokenReceived) -> None:
        """A raw SASL token (legacy framing): answered raw; a failure closes without an answer."""
        try:
            result = await sasl_exchange.authenticate(self.state, self.session, event.token, None)
        except Exception:
            log.exception("worker %d: SASL token from %s failed", self.state.node_id, self.peer)
            self.conn.respond_token(event, None)
            self._schedule_flush()
            return
        if self._closing:
            return
        if result.close:
            self.conn.respond_token(event, None)
        else:
            self.conn.respond_token(event, result.auth_bytes)
        self._sasl_settled()
        self._schedule_flush()

    def _sasl_settled(self) -> None:
        """Follow the SASL state: raw frames during a legacy exchange, the SASL frame limit until
        authenticated, and no more handshake deadline once authenticated."""
        sasl = self.session.sasl
        assert sasl is not None
        self.conn.raw_sasl = sasl.legacy and sasl.state is SaslState.AUTHENTICATE
        if sasl.state is SaslState.COMPLETE:
            self.conn.max_request_size = self.limits.max_request_size
            if self._sasl_deadline is not None:
                self._sasl_deadline.cancel()
                self._sasl_deadline = None
        else:
            sasl_max = self.state.config.get(SASL_SERVER_MAX_RECEIVE_SIZE)
            self.conn.max_request_size = min(self.limits.max_request_size, sasl_max)

    def _sasl_timed_out(self) -> None:
        self._sasl_deadline = None
        sasl = self.session.sasl
        if sasl is not None and sasl.principal is None and not self._closing:
            self._authentication_failed(f"not authenticated after {self.limits.max_idle_ms} ms: closed")
            self.close()

    def _authentication_failed(self, reason: str) -> None:
        sasl = self.session.sasl
        assert sasl is not None
        session = self.session
        self.state.audit.authentication(
            session.listener,
            session.client_host,
            sasl.mechanism,
            False,
            reason=reason,
            reauthentication=sasl.reauthenticating,
        )

    def _start(self, serve: Coroutine[Any, Any, None]) -> None:
        task = start_eagerly(serve)
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._backlog:
            self._pump()
            self._update_reading()

    async def _serve(
        self,
        event: RequestReceived,
        ctx: RequestContext,
        handling: Coroutine[Any, Any, Message | None] | None = None,
        produce_throttle: int | None = None,
    ) -> None:
        """Run the request's handler (or ``handling``, the rest of one begun elsewhere: the
        single-partition Produce path, with its ``produce_throttle`` when it charged the Produce
        and request quotas already), answer, count."""
        started = time.perf_counter()
        try:
            response = await (self.registry.dispatch(ctx, event.request) if handling is None else handling)
        except Exception:
            # The handler failed and its response cannot carry an error (logged by dispatch).
            self.state.counters.request(event.api_key, time.perf_counter() - started, _UNKNOWN_SERVER_ERROR)
            self._respond_or_close(event, None, close=True)
            return
        finally:
            self.conn.release(event)  # the handler is done with the records views
        close = False
        sasl = self.session.sasl
        if sasl is not None and event.api_key in (SASL_HANDSHAKE, SASL_AUTHENTICATE):
            close = sasl.state is SaslState.FAILED  # answered, then closed (Kafka)
            if not self._closing:
                self._sasl_settled()
        # Counted before the response is encoded and written: duration = handler time. Top-level
        # errors here; per-partition ones are counted by the Produce and Fetch handlers.
        elapsed = time.perf_counter() - started
        self.state.counters.request(event.api_key, elapsed, getattr(response, "error_code", 0))
        if self.state.quotas.enabled:
            held = self._throttle(event, response, elapsed, produce_throttle)
            if held:  # a client from before KIP-219: the answer waits out the throttle
                asyncio.get_running_loop().call_later(
                    held / 1000, self._respond_or_close, event, response, close
                )
                return
        self._respond_or_close(event, response, close=close)

    def _throttle(
        self, event: RequestReceived, response: Message | None, elapsed: float, produce_throttle: int | None
    ) -> int:
        """Record the request against its quotas (Produce bytes: the request's size; handler time;
        the Fetch handler recorded its bytes), answer the longest throttle in
        ``throttle_time_ms`` and mute the connection for that long (KIP-219). Returns how long
        the response is to be held (ms): the throttle, for a version from before KIP-219
        (whose client does not wait by itself, so Kafka delays its answer), else 0."""
        if event.api_key in _REQUEST_QUOTA_EXEMPT:  # (all a client may send before it authenticates)
            return 0
        quotas = self._connection_quotas()
        client_id = event.header.client_id
        throttle = getattr(response, "throttle_time_ms", 0) or 0
        if produce_throttle is not None:
            throttle = max(throttle, produce_throttle)
        else:
            if event.api_key == _PRODUCE:
                throttle = max(throttle, quotas.produce(client_id, event.size))
            throttle = max(throttle, quotas.busy(client_id, elapsed))
        if not throttle:
            return 0
        if response is not None and hasattr(response, "throttle_time_ms"):
            response.throttle_time_ms = throttle
        self.mute(throttle)
        return throttle if event.api_version < _CLIENT_THROTTLES_FROM.get(event.api_key, 0) else 0

    def _connection_quotas(self) -> ConnectionQuotas:
        quotas = self._quotas
        if quotas is None:  # first asked after authentication: the principal names the user
            quotas = self._quotas = ConnectionQuotas(self.state.quotas, self.session.principal.name)
        return quotas

    def mute(self, throttle_ms: int) -> None:
        """Stop reading and starting requests for ``throttle_ms`` (a longer mute wins)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + throttle_ms / 1000
        if self._muted is not None:
            if self._muted.when() >= until:
                return
            self._muted.cancel()
        self._muted = loop.call_at(until, self._unmute)
        self._update_reading()

    def _unmute(self) -> None:
        self._muted = None
        if self._backlog:
            self._pump()
        self._update_reading()

    def _respond_or_close(
        self, event: RequestReceived, response: Message | None, close: bool = False
    ) -> None:
        if self._closing:
            return
        try:
            self.conn.respond(event, response, close_after=close)
        except ProtocolError as exc:
            # The handler built a response that does not encode at this version: a bug, answered
            # like a handler exception.
            log.error(
                "worker %d: %s v%d response does not encode: %s",
                self.state.node_id,
                type(event.request).API_NAME,
                event.api_version,
                exc,
            )
            error = self.registry.error_response(
                event.api_key, event.api_version, event.request, ErrorCode.UNKNOWN_SERVER_ERROR, str(exc)
            )
            try:
                self.conn.respond(event, error, close_after=error is None)
            except ProtocolError:
                self.conn.respond(event, None, close_after=True)
        self._schedule_flush()

    # -- writing -----------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        """Write on the next loop iteration: responses finished in the same iteration (pipelined
        requests) leave in one send instead of one each (see the module docstring)."""
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush_soon)

    def _flush_soon(self) -> None:
        self._flush_pending = False
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        parts = self.conn.data_to_send()
        if parts:
            self.last_active = time.monotonic()
            try:
                self._write(transport, parts)
            except OSError as exc:
                # A file region that cannot be read in full: the size prefix already promised
                # its bytes, so the stream is broken.
                log.error("worker %d: response to %s broken off: %s", self.state.node_id, self.peer, exc)
                self.abort()
                return
        if self.conn.must_close:
            self.close()
            return
        self._update_reading()
        self._maybe_finish()

    def _write(self, transport: asyncio.Transport, parts: list[Any]) -> None:
        pending: list[Any] = []  # small byte parts gathered into one send
        for part in parts:
            if isinstance(part, FileRegion) and part.length <= SMALL_REGION:
                pending.append(part.read())  # one send with the header, not a sendfile of its own
            elif isinstance(part, FileRegion):
                if pending:
                    transport.write(b"".join(pending) if len(pending) > 1 else pending[0])
                    pending = []
                self._write_region(transport, part)
            elif len(part) >= 65536:
                if pending:
                    transport.write(b"".join(pending) if len(pending) > 1 else pending[0])
                    pending = []
                transport.write(part)
            else:
                pending.append(part)
        if pending:
            transport.write(b"".join(pending) if len(pending) > 1 else pending[0])

    def _write_region(self, transport: asyncio.Transport, region: FileRegion) -> None:
        position, left = region.position, region.length
        if self._sendfile and self._sock_fd >= 0 and transport.get_write_buffer_size() == 0:
            while left:
                try:
                    sent = os.sendfile(self._sock_fd, region.fd, position, left)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                        self._sendfile = False  # this file or socket cannot: stop trying
                        break
                    raise ConnectionError(f"sendfile: {exc}") from exc
                if sent == 0:
                    raise OSError(f"file region at {position} ends early ({left} bytes unread)")
                position += sent
                left -= sent
        if left:
            transport.write(FileRegion(region.fd, position, left).read())

    # -- flow control, closing ---------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        in_flight = self.conn.in_flight
        if in_flight == 0:
            self._idle.set()
        if self._paused_for_requests:
            if in_flight <= self.limits.max_in_flight // 2:
                self._paused_for_requests = False
        elif in_flight >= self.limits.max_in_flight:
            self._paused_for_requests = True
        paused = (
            self._paused_for_requests
            or bool(self._backlog)
            or self._paused_for_writing
            or self._draining
            or self._eof
            or self._muted is not None
        )
        if paused and transport.is_reading():
            transport.pause_reading()
        elif not paused and not transport.is_reading():
            transport.resume_reading()

    def _maybe_finish(self) -> None:
        if (self._eof or self._draining) and self.conn.in_flight == 0:
            self.close()

    def idle_seconds(self, now: float) -> float:
        """How long nothing happened on this connection (0 while a request is in flight)."""
        if self.conn.in_flight:
            return 0.0
        return now - self.last_active

    def close(self) -> None:
        """Close after writing what is buffered; requests still running are cancelled."""
        if self.transport is not None and not self._closing:
            self._closing = True
            for task in list(self._tasks):
                task.cancel()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self._closing = True
            self.transport.abort()

    async def drain(self, timeout: float) -> None:
        """Stop reading, let the requests in flight finish (up to ``timeout``), then close."""
        self._draining = True
        self._update_reading()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        self._flush()
        self.close()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), 1.0)
        except TimeoutError:
            self.abort()


async def _failed(
    registry: HandlerRegistry, ctx: RequestContext, request: Message, exc: Exception
) -> Message | None:
    """A handler's exception raised outside ``dispatch``, answered as ``dispatch`` answers it."""
    response = registry.failure_response(ctx, request, exc)
    if response is None:
        raise exc
    return response


def start_eagerly(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` at once, up to its first real wait; only then does the rest become a task
    (None: it finished in that first step). See the module docstring: "eager start"."""
    try:
        waiting_on = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_Rest(coro, waiting_on))


class _Rest(Coroutine[Any, Any, None]):
    """The rest of a coroutine whose first step has run and yielded ``waiting_on`` (what its
    ``await`` waits for: a future, or None for a bare yield), as a coroutine a task can drive.

    The task's first ``send`` gets ``waiting_on``; everything after goes on to ``serve``. A
    ``throw`` goes to ``serve`` even before the first ``send``: a task cancelled before its first
    step throws at once, and ``serve`` (suspended in its ``await``) must see that cancellation,
    or it would be dropped half-way (a generator function cannot do this: a throw into an
    unstarted generator never reaches its body).
    """

    __slots__ = ("_serve", "_started", "_waiting_on")

    def __init__(self, serve: Coroutine[Any, Any, None], waiting_on: Any) -> None:
        self._serve = serve
        self._waiting_on = waiting_on
        self._started = False

    def send(self, value: Any) -> Any:
        if not self._started:
            self._started = True
            waiting_on, self._waiting_on = self._waiting_on, None
            return waiting_on
        return self._serve.send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None) -> Any:
        self._started = True
        self._waiting_on = None
        if val is None and tb is None:
            return self._serve.throw(typ)
        return self._serve.throw(typ, val, tb)

    def close(self) -> None:
        self._serve.close()

    def __await__(self) -> Generator[Any, None, None]:
        raise TypeError("_Rest is driven by a task, not awaited")
