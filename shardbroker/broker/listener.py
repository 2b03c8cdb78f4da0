"""The worker's Kafka listener: binds ``listen_host:listen_port + node_id`` and serves connections.

Opens a listening socket. A worker ``Service``: ``start`` binds (with SO_REUSEADDR, so a worker
restarted by the supervisor rebinds at once even while the dead worker's connections sit in
TIME_WAIT) and logs the address (``shardbroker serve`` prints the ready lines once every worker
is up). ``drain`` stops accepting, lets every connection finish its requests in flight (bounded
by ``drain_timeout``), then closes them.

A sweeper task closes connections idle for ``connections.max.idle.ms`` (Kafka's Selector does
the same on its poll loop), checking ten times per idle period (at most every 10 s), so a
connection lives at most 10% longer than the limit; one timer per listener, not per connection.

Connection quotas, Kafka's ``max.connections`` and ``max.connections.per.ip`` (defaults
Int.MaxValue), per worker (each worker is a Kafka broker): a connection over either limit is
closed as soon as it is made, before a byte of it is read, and counted in ``refused``; a storm is
logged once a second with the running count, not once per socket. Kafka's per-IP quota does this
(``TooManyConnectionsException``); for the broker-wide one Kafka stops accepting until a slot
frees, which leaves the storm in the kernel's backlog: closing keeps the backlog (``BACKLOG``)
free for the clients that will be let in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from typing import TYPE_CHECKING

from shardbroker.broker.connection import ConnectionLimits, KafkaConnection
from shardbroker.broker.dispatch import HandlerRegistry, discover
from shardbroker.config.broker_properties import (
    CONNECTIONS_MAX_IDLE_MS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    SOCKET_REQUEST_MAX_BYTES,
)

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState
    from shardbroker.supervision.worker import Worker

__all__ = ["KafkaListener"]

log = logging.getLogger(__name__)

#: Pending connections the kernel queues (Kafka's default socket listen backlog is 50; a
#: connection storm of clients on a restart wants more, and the kernel caps it at somaxconn).
BACKLOG = 1024


class KafkaListener:
    """Serves the Kafka protocol for one worker (see the module docstring)."""

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
        config = state.config
        self.state = state
        self.registry = registry if registry is not None else discover()
        self.host = host if host is not None else config.listen_host
        self.port = port if port is not None else config.listen_port + state.node_id
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
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._bound_port: int | None = None

    def __repr__(self) -> str:
        return f"KafkaListener({self.host}:{self.port})"

    @property
    def bound_port(self) -> int:
        """The port actually bound (differs from ``port`` when that was 0)."""
        assert self._bound_port is not None, "not started"
        return self._bound_port

    async def start(self, worker: Worker | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_connection,
            self.host,
            self.port,
            family=socket.AF_UNSPEC,
            reuse_address=True,
            backlog=BACKLOG,
            start_serving=True,
        )
        self._bound_port = int(self._server.sockets[0].getsockname()[1])
        if self.limits.max_idle_ms > 0:
            self._sweeper = loop.create_task(self._sweep_idle(), name=f"{self!r}-idle-sweeper")
        log.info("worker %d: Kafka listener on %s:%d", self.state.node_id, self.host, self.bound_port)

    async def drain(self) -> None:
        if self._server is None:
            return
        self._server.close()  # stop accepting; the connections stay
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.connections:
            await asyncio.gather(*(c.drain(self.drain_timeout) for c in list(self.connections)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def _new_connection(self) -> KafkaConnection:
        return KafkaConnection(self.state, self.registry, self.limits, on_lost=self._lost, admit=self._admit)

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
