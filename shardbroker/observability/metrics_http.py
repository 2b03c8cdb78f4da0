"""``GET /metrics`` over HTTP/1.1 (or HTTPS) on the supervisor's selectors loop. Opens sockets.

Why not ``prometheus_client.start_http_server`` or ``http.server``: both run a thread, and the
supervisor forks workers (restarts) for its whole life; a thread in a forking process leaves its
locks held in every child (DESIGN.md, fork hygiene). So the listener and its connections are
non-blocking sockets registered on the supervisor's selector (``Supervisor.register``), which
also makes forked children close them (supervisor.py closes every registered file object).

What it speaks: one request per connection, answered with ``Connection: close``. ``GET /metrics``
(any query string) gets the text exposition (``MetricsCollector.exposition``), any other path
404, any other method 405, a request head over 16 KiB or a malformed request line 400. With basic
auth (metrics_security.py), a request without the right credentials gets 401 (429 while wrong
guesses are held back) before anything else is looked at. At most ``MAX_CONNECTIONS``
connections are open at once: a new one beyond that closes the oldest, and each new one first
closes those older than ``REQUEST_TIMEOUT_S`` (an idle peer, or one that never finishes its TLS
handshake, cannot starve the scraper nor keep a descriptor). Prometheus needs nothing more (it
reconnects per scrape when the server closes).

TLS stays non-blocking: the accepted socket is wrapped (``do_handshake_on_connect=False``) once
its first byte is a TLS handshake record, and the handshake, reads and writes each go back to
the selector on ``SSLWantReadError``/``SSLWantWriteError``. A first byte that is not one (plain
HTTP to an HTTPS port) gets a plain-text 400 saying so, as Go's net/http answers, and a close;
a failed handshake (an untrusted client certificate, garbage) closes the connection and is
logged at most once a minute.

The scrape itself runs on the loop: the supervisor does nothing else meanwhile (its reaping is
delayed by the scrape time, measured in perf/bench_metrics.py).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import functools
import logging
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from shardbroker.observability.metrics_security import REALM, BasicAuth, RateLimitedLog, Verdict

__all__ = ["MetricsServer", "respond"]

log = logging.getLogger(__name__)

MAX_HEAD: Final = 16 * 1024
MAX_CONNECTIONS: Final = 32
#: A connection still open this long after its accept is closed at the next accept.
REQUEST_TIMEOUT_S: Final = 10.0
_TLS_HANDSHAKE_RECORD: Final = b"\x16"

#: Returns the text exposition (metrics.MetricsCollector.exposition).
Render = Callable[[], bytes]
Register = Callable[[socket.socket, int, Callable[[int], None]], None]
Unregister = Callable[[socket.socket], None]


def _response(
    status: str, body: bytes, content_type: str = "text/plain; charset=utf-8", extra: str = ""
) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _header(head: bytes, name: bytes) -> bytes | None:
    """The value of the first header called ``name`` (lower case), None if there is none."""
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip()
    return None


def respond(head: bytes, render: Render, auth: BasicAuth | None = None, peer: str = "") -> bytes:
    """The whole HTTP response to a request head (pure: no sockets)."""
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) != 3 or not line[2].startswith(b"HTTP/"):
        return _response("400 Bad Request", b"bad request line\n")
    if auth is not None:
        verdict = auth.check(_header(head, b"authorization"), peer)
        if verdict is Verdict.DENIED:
            challenge = f'WWW-Authenticate: Basic realm="{REALM}"\r\n'
            return _response("401 Unauthorized", b"authentication required\n", extra=challenge)
        if verdict is Verdict.THROTTLED:
            return _response(
                "429 Too Many Requests", b"too many failed attempts\n", extra="Retry-After: 1\r\n"
            )
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


class _Stage(enum.Enum):
    SNIFF = "sniff"  # TLS: waiting for the first byte, to tell a ClientHello from plain HTTP
    HANDSHAKE = "handshake"  # TLS: wrapped, handshaking
    OPEN = "open"  # reading the request head, then writing the response


class _Conn:
    __slots__ = ("events", "inbox", "outbox", "peer", "since", "sock", "stage")

    def __init__(self, sock: socket.socket, peer: str, stage: _Stage) -> None:
        self.sock = sock
        self.peer = peer
        self.stage = stage
        self.since = time.monotonic()
        self.events = selectors.EVENT_READ
        self.inbox = bytearray()
        self.outbox = memoryview(b"")


def _peer(address: object) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) and len(address) >= 2 else str(address)


class MetricsServer:
    """The listener and its connections on someone else's selector loop."""

    def __init__(
        self,
        host: str,
        port: int,
        render: Render,
        *,
        tls: ssl.SSLContext | None = None,
        auth: BasicAuth | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.render = render
        self.tls = tls
        self.auth = auth
        self.sock: socket.socket | None = None
        self._register: Register | None = None
        self._unregister: Unregister | None = None
        self._conns: collections.OrderedDict[int, _Conn] = collections.OrderedDict()
        self._tls_failures = RateLimitedLog("failed TLS handshakes")

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        auth = ", basic auth" if self.auth is not None else ""
        log.info("serving /metrics on %s://%s:%d%s", "https" if self.tls else "http", host, self.port, auth)

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
                sock, address = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again on the next wake-up
                if exc.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.warning("metrics listener: accept: %s", exc)
                    return
                continue
            sock.setblocking(False)
            deadline = time.monotonic() - REQUEST_TIMEOUT_S
            while self._conns and next(iter(self._conns.values())).since < deadline:
                self._drop(next(iter(self._conns.values())))
            if len(self._conns) >= MAX_CONNECTIONS:
                self._drop(next(iter(self._conns.values())))
            conn = _Conn(sock, _peer(address), _Stage.SNIFF if self.tls is not None else _Stage.OPEN)
            self._conns[sock.fileno()] = conn
            self._register(sock, selectors.EVENT_READ, functools.partial(self._on_io, conn))

    def _on_io(self, conn: _Conn, mask: int) -> None:
        if conn.sock.fileno() < 0:  # dropped by an earlier callback of the same select()
            return
        if conn.outbox:
            self._send(conn)
        elif conn.stage is _Stage.SNIFF:
            self._sniff(conn)
        elif conn.stage is _Stage.HANDSHAKE:
            self._handshake(conn)
        else:
            self._read(conn)

    def _watch(self, conn: _Conn, events: int) -> None:
        """Wait for ``events`` on the connection (from now on)."""
        if conn.events != events and self._unregister is not None and self._register is not None:
            self._unregister(conn.sock)
            self._register(conn.sock, events, functools.partial(self._on_io, conn))
            conn.events = events

    def _sniff(self, conn: _Conn) -> None:
        assert self.tls is not None and self._register is not None and self._unregister is not None
        try:
            first = conn.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        if first != _TLS_HANDSHAKE_RECORD:
            if first:
                # Read what was sent (closing on unread bytes would reset the connection, and the
                # client would not see the answer).
                with contextlib.suppress(OSError):
                    conn.sock.recv(MAX_HEAD)
                self._reply(conn, _response("400 Bad Request", b"this is an HTTPS endpoint: use https://\n"))
            else:
                self._drop(conn)
            return
        fd = conn.sock.fileno()
        self._unregister(conn.sock)
        try:
            conn.sock = self.tls.wrap_socket(conn.sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:  # ssl.SSLError too
            self._tls_failures.failed(f"{conn.peer}: {exc}")
            del self._conns[fd]
            conn.sock.close()
            return
        self._register(conn.sock, selectors.EVENT_READ, functools.partial(self._on_io, conn))
        conn.stage = _Stage.HANDSHAKE
        self._handshake(conn)

    def _handshake(self, conn: _Conn) -> None:
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except (ssl.SSLError, OSError) as exc:
            reason = exc.reason if isinstance(exc, ssl.SSLError) and exc.reason else str(exc)
            self._tls_failures.failed(f"{conn.peer}: {reason}")
            self._drop(conn)
            return
        conn.stage = _Stage.OPEN
        self._read(conn)

    def _read(self, conn: _Conn) -> None:
        while True:  # a TLS socket may hold decrypted bytes the selector does not know of
            try:
                data = conn.sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                self._watch(conn, selectors.EVENT_READ)
                return
            except ssl.SSLWantWriteError:
                self._watch(conn, selectors.EVENT_WRITE)
                return
            except OSError:  # ssl.SSLError too
                self._drop(conn)
                return
            if not data:
                self._drop(conn)
                return
            conn.inbox += data
            end = conn.inbox.find(b"\r\n\r\n")
            if end >= 0:
                self._reply(conn, respond(bytes(conn.inbox[:end]), self.render, self.auth, conn.peer))
                return
            if len(conn.inbox) > MAX_HEAD:
                self._reply(conn, _response("400 Bad Request", b"request head too large\n"))
                return

    def _reply(self, conn: _Conn, data: bytes) -> None:
        conn.outbox = memoryview(data)
        self._send(conn)

    def _send(self, conn: _Conn) -> None:
        try:
            while conn.outbox:
                sent = conn.sock.send(conn.outbox)
                conn.outbox = conn.outbox[sent:]
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._watch(conn, selectors.EVENT_WRITE)
            return
        except ssl.SSLWantReadError:
            self._watch(conn, selectors.EVENT_READ)
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
