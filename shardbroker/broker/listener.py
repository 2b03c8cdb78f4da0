"""The worker's Kafka listeners: binds every listener at its port + node_id and serves connections.

One service for all of a worker's listeners (Kafka's ``listeners``, config/listeners.py): one
asyncio server per listener, but one set of connections, one idle sweeper and one drain, so
Kafka's ``max.connections`` and ``max.connections.per.ip`` count a worker's connections over
all its listeners, as Kafka counts a broker's. Each connection knows the listener it came in on
and its security protocol (``KafkaConnection.session``): Metadata and the other handlers answer
with that listener's endpoints.

A worker ``Service``: ``start`` binds (with SO_REUSEADDR, so a worker restarted by the
supervisor rebinds at once even while the dead worker's connections sit in TIME_WAIT) and logs
the addresses (``shardbroker serve`` prints the ready lines once every worker is up). ``drain``
stops accepting, lets every connection finish its requests in flight (bounded by
``drain_timeout``), then closes them.

TLS (SSL, SASL_SSL listeners): the context comes from broker/tls.py. The TCP connection is
accepted plain and upgraded with ``loop.start_tls`` (handshake bounded by
``HANDSHAKE_TIMEOUT``), so that a failed handshake -- a plaintext client on a TLS port, an
untrusted or expired client certificate, a timeout -- is a failed authentication of mechanism
``SSL`` in the audit trail (counted, and logged rate-limited with the peer and the reason), and
the socket is closed (asyncio's own server-side TLS drops those silently). A peer that leaves
mid-handshake (a port probe) is not an authentication: a debug line, as Kafka's IOException. A
handshake that succeeds on an SSL listener is a successful ``SSL`` authentication (the principal
from the client certificate, or ANONYMOUS); on SASL_SSL the SASL exchange that follows counts. A
``_TlsGate`` holds the bytes that arrive with the end of the handshake until the
``KafkaConnection`` is made. An SSL connection's principal is its client certificate's
(``TlsSettings.principal``), set before its first request. The key store is reloadable: when
the metadata image brings new per-broker ssl.* values (AlterConfigs), each TLS listener whose
settings changed gets a new context for its new connections; the open ones keep theirs.

A sweeper task closes connections idle for ``connections.max.idle.ms`` (Kafka's Selector does
the same on its poll loop), checking ten times per idle period (at most every 10 s), so a
connection lives at most 10% longer than the limit; one timer per worker, not per connection.

Connection quotas, Kafka's ``max.connections`` and ``max.connections.per.ip`` (defaults
Int.MaxValue), per worker (each worker is a Kafka broker): a connection over either limit is
closed as soon as it is made, before a byte of it is read, and counted in ``refused``; a storm is
logged once a second with the running count, not once per socket. Kafka's per-IP quota does this
(``TooManyConnectionsException``); for the broker-wide one Kafka stops accepting until a slot
frees, which leaves the storm in the kernel's backlog: closing keeps the backlog (``BACKLOG``)
free for the clients that will be let in. On a TLS listener the quota is applied once the
handshake is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

from shardbroker.broker.connection import ConnectionLimits, KafkaConnection, start_eagerly
from shardbroker.broker.dispatch import HandlerRegistry, discover
from shardbroker.broker.security_audit import SSL_MECHANISM
from shardbroker.broker.session import SecurityProtocol
from shardbroker.broker.tls import TlsConfigError, TlsSettings
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    CONNECTIONS_MAX_IDLE_MS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    SOCKET_REQUEST_MAX_BYTES,
)
from shardbroker.config.listeners import Endpoint

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState
    from shardbroker.metadata.image import MetadataImage
    from shardbroker.supervision.worker import Worker

__all__ = ["HANDSHAKE_TIMEOUT", "KafkaListener"]

log = logging.getLogger(__name__)

#: Pending connections the kernel queues (Kafka's default socket listen backlog is 50; a
#: connection storm of clients on a restart wants more, and the kernel caps it at somaxconn).
BACKLOG = 1024
#: Seconds a client has to finish the TLS handshake.
HANDSHAKE_TIMEOUT = 10.0


@dataclass(eq=False)
class _Door:
    """One listener of this worker: its endpoint, its bind address, its TLS settings."""

    endpoint: Endpoint
    host: str
    port: int
    protocol: SecurityProtocol
    tls: TlsSettings | None = None
    server: asyncio.Server | None = None
    bound_port: int | None = None


class _TlsGate(asyncio.BufferedProtocol):
    """The application protocol during a TLS handshake: keeps what arrives with the handshake's
    end (a client's first request may come in the same read) until the connection takes over."""

    def __init__(self) -> None:
        self.pending = bytearray()
        self._buffer = bytearray(65536)
        self.eof = False
        self.lost = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self.pending += self._buffer[:nbytes]

    def eof_received(self) -> bool:
        # TLS has no half-close: the transport closes whatever is returned (True only earns
        # asyncio's "returning true from eof_received() has no effect when using ssl" warning).
        self.eof = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


class KafkaListener:
    """Serves the Kafka protocol on every listener of one worker (see the module docstring)."""

    def __init__(
        self,
        state: WorkerState,
        registry: HandlerRegistry | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        limits: ConnectionLimits | None = None,
        drain_timeout: float = 10.0,
    ) -> None:
        """``host``/``port`` bind the first listener there instead of its configured address
        (tests: port 0)."""
        config = state.config
        self.state = state
        self.registry = registry if registry is not None else discover()
        self.doors = [
            _Door(e, e.host, e.port_of(state.node_id), SecurityProtocol(e.security_protocol))
            for e in config.listeners
        ]
        first = self.doors[0]
        first.host = host if host is not None else first.host
        first.port = port if port is not None else first.port
        self.limits = limits or ConnectionLimits(
            max_request_size=config.get(SOCKET_REQUEST_MAX_BYTES),
            max_idle_ms=config.get(CONNECTIONS_MAX_IDLE_MS),
            max_connections=config.get(MAX_CONNECTIONS),
            max_connections_per_ip=config.get(MAX_CONNECTIONS_PER_IP),
        )
        self.drain_timeout = drain_timeout
        #: Admitted connections (within the quotas), and how many each client address holds.
        self.connections: set[KafkaConnection] = set()
        self._per_host: dict[str, int] = {}
        #: Connections closed at once for a quota, since start.
        self.refused = 0
        self._refusal_logged_at = float("-inf")
        self._sweeper: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return (
            "KafkaListener(" + ", ".join(f"{d.endpoint.listener}@{d.host}:{d.port}" for d in self.doors) + ")"
        )

    @property
    def bound_port(self) -> int:
        """The first listener's port actually bound (differs from its ``port`` when that was 0)."""
        port = self.doors[0].bound_port
        assert port is not None, "not started"
        return port

    def bound_ports(self) -> dict[str, int]:
        """Each listener's bound port, by listener name."""
        return {d.endpoint.listener: d.bound_port for d in self.doors if d.bound_port is not None}

    async def start(self, worker: Worker | None = None) -> None:
        loop = asyncio.get_running_loop()
        config = self._effective_config(self.state.config, self._image())
        for door in self.doors:
            if door.protocol.uses_tls:
                door.tls = TlsSettings.load(config.for_listener(door.endpoint.listener))
        if self._image() is not None:
            self.state.channel.subscribe(self._on_image)
        for door in self.doors:
            door.server = await loop.create_server(
                lambda door=door: self._new_connection(door),  # type: ignore[misc]
                door.host,
                door.port,
                family=socket.AF_UNSPEC,
                reuse_address=True,
                backlog=BACKLOG,
                start_serving=True,
            )
            door.bound_port = int(door.server.sockets[0].getsockname()[1])
            log.info(
                "worker %d: Kafka listener %s (%s) on %s:%d",
                self.state.node_id,
                door.endpoint.listener,
                door.endpoint.security_protocol,
                door.host,
                door.bound_port,
            )
        if self.limits.max_idle_ms > 0:
            self._sweeper = loop.create_task(self._sweep_idle(), name=f"{self!r}-idle-sweeper")

    async def drain(self) -> None:
        servers = [d.server for d in self.doors if d.server is not None]
        if not servers:
            return
        for server in servers:
            server.close()  # stop accepting; the connections stay
        for task in list(self._handshakes):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.connections:
            await asyncio.gather(*(c.drain(self.drain_timeout) for c in list(self.connections)))
        for server in servers:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1.0)

    # -- TLS settings, reloaded from the metadata image ---------------------------------------

    def _image(self) -> MetadataImage | None:
        # Unit tests run listeners without a controller channel.
        channel = self.state.channel
        return channel.image if channel is not None else None

    @staticmethod
    def _effective_config(config: BrokerConfig, image: MetadataImage | None) -> BrokerConfig:
        if image is None or not image.broker_configs:
            return config
        return config.with_dynamic(image.broker_configs)

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if old.broker_configs == new.broker_configs:
            return
        try:
            config = self._effective_config(self.state.config, new)
        except ValueError as exc:  # the controller validated them: only a newer broker's log
            log.error("worker %d: dynamic broker configs not applied: %s", self.state.node_id, exc)
            return
        for door in self.doors:
            if door.tls is None:
                continue
            name = door.endpoint.listener
            try:
                settings = TlsSettings.load(config.for_listener(name))
            except TlsConfigError as exc:
                log.error("worker %d: listener %s keeps its TLS settings: %s", self.state.node_id, name, exc)
                continue
            door.tls = settings
            log.info(
                "worker %d: listener %s: TLS settings reloaded for new connections", self.state.node_id, name
            )

    # -- connections ------------------------------------------------------------------------

    def _connection(self, door: _Door) -> KafkaConnection:
        return KafkaConnection(
            self.state,
            self.registry,
            self.limits,
            on_lost=self._lost,
            admit=self._admit,
            listener=door.endpoint.listener,
            security_protocol=door.protocol,
        )

    def _new_connection(self, door: _Door) -> asyncio.BaseProtocol:
        if door.tls is None:
            return self._connection(door)
        return _TlsAccept(self, door)

    async def _handshake(self, transport: asyncio.Transport, door: _Door) -> None:
        settings = door.tls
        assert settings is not None
        peer = transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) and len(peer) >= 2 else "?"
        gate = _TlsGate()
        loop = asyncio.get_running_loop()
        audit = self.state.audit
        listener = door.endpoint.listener
        try:
            tls = await loop.start_tls(
                transport, gate, settings.context, server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT
            )
        except ssl.SSLError as exc:
            reason = f"TLS handshake: {exc.reason or exc}"
            audit.authentication(listener, host, SSL_MECHANISM, False, reason=reason)
            transport.abort()
            return
        except (TimeoutError, ConnectionAbortedError):  # asyncio's handshake timeout aborts
            reason = f"TLS handshake not finished within {HANDSHAKE_TIMEOUT:.0f} s"
            audit.authentication(listener, host, SSL_MECHANISM, False, reason=reason)
            transport.abort()
            return
        except OSError as exc:  # the peer left mid-handshake
            log.debug("worker %d: TLS handshake with %s on %s: %s", self.state.node_id, host, listener, exc)
            transport.abort()
            return
        if tls is None or gate.lost:  # the peer left as the handshake ended
            transport.abort()
            return
        conn = self._connection(door)
        if door.protocol is SecurityProtocol.SSL:
            try:
                conn.session.principal = settings.principal(tls.get_extra_info("ssl_object"))
            except ValueError as exc:
                reason = f"client certificate: {exc}"
                audit.authentication(listener, host, SSL_MECHANISM, False, reason=reason)
                tls.abort()
                return
            audit.authentication(listener, host, SSL_MECHANISM, True)
        conn.connection_made(tls)
        if not conn.admitted:
            return
        tls.set_protocol(conn)
        view = memoryview(gate.pending)
        while view and conn.transport is not None and not tls.is_closing():
            buffer = conn.get_buffer(len(view))
            n = min(len(buffer), len(view))
            buffer[:n] = view[:n]
            view = view[n:]
            conn.buffer_updated(n)
        if gate.eof and not tls.is_closing():
            conn.eof_received()

    def _admit(self, conn: KafkaConnection) -> str | None:
        """None (and the connection counts against the quotas), or why it is refused."""
        limits = self.limits
        held = self._per_host.get(conn.peer_host, 0)
        if len(self.connections) >= limits.max_connections:
            reason = f"max.connections ({limits.max_connections}) reached"
        elif held >= limits.max_connections_per_ip:
            reason = f"{conn.peer_host} already has max.connections.per.ip ({limits.max_connections_per_ip})"
        else:
            self.connections.add(conn)
            self._per_host[conn.peer_host] = held + 1
            return None
        self.refused += 1
        now = time.monotonic()
        if now - self._refusal_logged_at >= 1.0:
            self._refusal_logged_at = now
            log.warning(
                "worker %d: closed new connection from %s: %s (%d refused so far)",
                self.state.node_id,
                conn.peer,
                reason,
                self.refused,
            )
        return reason

    def _lost(self, conn: KafkaConnection) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            left = self._per_host[conn.peer_host] - 1
            if left:
                self._per_host[conn.peer_host] = left
            else:
                del self._per_host[conn.peer_host]

    async def _sweep_idle(self) -> None:
        limit = self.limits.max_idle_ms / 1000
        interval = min(max(limit / 10, 0.01), 10.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                if conn.idle_seconds(now) > limit:
                    log.info(
                        "worker %d: closing %s, idle over connections.max.idle.ms (%d)",
                        self.state.node_id,
                        conn.peer,
                        self.limits.max_idle_ms,
                    )
                    conn.close()


class _TlsAccept(asyncio.Protocol):
    """A TLS listener's accepted socket until ``KafkaListener._handshake`` upgrades it."""

    def __init__(self, listener: KafkaListener, door: _Door) -> None:
        self.listener = listener
        self.door = door

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (not a subclass; the same API).
        transport = cast(asyncio.Transport, transport)
        # start_tls must take the socket over before any byte is read: its first step (which
        # swaps in the TLS protocol) runs here, before the loop reads (start_eagerly). Pausing
        # reading instead works with asyncio's loop, but uvloop's start_tls never resumes a
        # transport paused before it (its handshake then times out).
        listener = self.listener
        task = start_eagerly(listener._handshake(transport, self.door))
        if task is not None:
            listener._handshakes.add(task)
            task.add_done_callback(listener._handshakes.discard)
