"""``GET /metrics`` over HTTP/1.1 on the supervisor's selectors loop. Opens sockets.

Why not ``prometheus_client.start_http_server`` or ``http.server``: both run a thread, and the
supervisor forks workers (restarts) for its whole life; a thread in a forking process leaves its
locks held in every child (DESIGN.md, fork hygiene). So the listener and its connections are
non-blocking sockets registered on the supervisor's selector (``Supervisor.register``), which
also makes forked children close them (supervisor.py closes every registered file object).

What it speaks: one request per connection, answered with ``Connection: close``. ``GET /metrics``
(any query string) gets the text exposition (``MetricsCollector.exposition``), any other path
404, any other method 405, a request head over 16 KiB or a malformed request line 400. At most
``MAX_CONNECTIONS`` connections are open at once: a new one beyond that closes the oldest (an idle
peer cannot starve the scraper). Prometheus needs nothing more (it reconnects per scrape when
the server closes).

The scrape itself runs on the loop: the supervisor does nothing else meanwhile (its reaping is
delayed by the scrape time, measured in perf/bench_metrics.py).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import functools
import logging
import selectors
import socket
from collections.abc import Callable
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["MetricsServer", "respond"]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16 * 1024
MAX_CONNECTIONS: Final = 32

#: Returns the text exposition (metrics.MetricsCollector.exposition).
Render = Callable[[], bytes]
Register = Callable[[socket.socket, int, Callable[[int], None]], None]
Unregister = Callable[[socket.socket], None]


def _response(status: str, body: bytes, content_type: str = "text/plain; charset=utf-8") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def respond(head: bytes, render: Render) -> bytes:
    """The whole HTTP response to a request head (pure: no sockets)."""
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) != 3 or not line[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", b"bad request line\n")
    method, target = line[0], line[1]
    if method not in (b"GET", b"HEAD"):
        return _response("405 Method Not Allowed", b"only GET\n")
    if target.split(b"?", 1)[0] != b"/metrics":
        return _response("404 Not Found", b"try /metrics\n")
    try:
        body = render()
    except Exception as exc:  # a collector bug must not take the supervisor down
        log.exception("collecting metrics")
        return _response("500 Internal Server Error", f"{exc}\n".encode())
    out = _response("200 OK", body, CONTENT_TYPE_LATEST)
    return out[: len(out) - len(body)] if method == b"HEAD" else out


class _Conn:
    __slots__ = ("inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox = memoryview(b"")


class MetricsServer:
    """The listener and its connections on someone else's selector loop."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.host = host
        self.port = port
        self.render = render
        self.sock: socket.socket | None = None
        self._register: Register | None = None
        self._unregister: Unregister | None = None
        self._conns: collections.OrderedDict[int, _Conn] = collections.OrderedDict()

    def start(self, register: Register, unregister: Unregister) -> None:
        """Bind, listen and register (raises OSError when the address is taken)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.port = sock.getsockname()[1]
        self._register, self._unregister = register, unregister
        register(sock, selectors.EVENT_READ, self._on_accept)

    def close(self) -> None:
        for conn in list(self._conns.values()):
            self._drop(conn)
        if self.sock is not None:
            if self._unregister is not None:
                with contextlib.suppress(KeyError, ValueError, AssertionError):
                    self._unregister(self.sock)
            self.sock.close()
            self.sock = None

    # -- on the loop -------------------------------------------------------------------------

    def _on_accept(self, mask: int) -> None:
        assert self.sock is not None and self._register is not None
        while True:
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next wake-up
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("metrics listener: accept: %s", exc)
                    return
                continue
            sock.setblocking(False)
            if len(self._conns) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._conns.values())))
            conn = _Conn(sock)
            self._conns[sock.fileno()] = conn
            self._register(sock, selectors.EVENT_READ, functools.partial(self._on_io, conn))

    def _on_io(self, conn: _Conn, mask: int) -> None:
        if conn.outbox:
            self._send(conn)
            return
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if not data:
            self._drop(conn)
            return
        conn.inbox += data
        end = conn.inbox.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbox) > MAX_HEAD:
                self._reply(conn, _response("400 Bad Request", b"request head too large\n"))
            return
        self._reply(conn, respond(bytes(conn.inbox[:end]), self.render))

    def _reply(self, conn: _Conn, data: bytes) -> None:
        conn.outbox = memoryview(data)
        self._send(conn)
        if conn.outbox and self._unregister is not None and self._register is not None:
            self._unregister(conn.sock)
            self._register(conn.sock, selectors.EVENT_WRITE, functools.partial(self._on_io, conn))

    def _send(self, conn: _Conn) -> None:
        try:
            while conn.outbox:
                sent = conn.sock.send(conn.outbox)
                conn.outbox = conn.outbox[sent:]
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        fd = conn.sock.fileno()
        if fd >= 0 and self._conns.get(fd) is conn:
            del self._conns[fd]
            if self._unregister is not None:
                with contextlib.suppress(KeyError, ValueError, AssertionError):
                    self._unregister(conn.sock)
        conn.sock.close()
