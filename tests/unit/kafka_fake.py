"""A tiny fake Kafka broker on a loopback socket, built with our own codec, for the admin client's
and the groups CLI's unit tests. Opens a listening socket and one thread per connection."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message, decode
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.headers import decode_request_header, encode_response

__all__ = ["FULL_VERSIONS", "FakeBroker", "Handler", "closed_port", "coordinator_at", "running_fake"]

Handler = Callable[[int, Any], Message | None]

#: What the fake serves unless a test says otherwise: Kafka 3.x-like ranges.
FULL_VERSIONS: dict[int, tuple[int, int]] = {
    2: (0, 10),
    3: (0, 12),
    8: (0, 9),
    9: (0, 9),
    10: (0, 6),
    15: (0, 5),
    16: (0, 5),
    18: (0, 4),
    42: (0, 2),
}


class FakeBroker:
    """Answers requests with ``handlers[api_key](version, request)``; None = never answer (the
    connection stays open, silent). Records every (api key, version, request) it decoded."""

    def __init__(self, versions: dict[int, tuple[int, int]] | None = None) -> None:
        self.versions = dict(FULL_VERSIONS if versions is None else versions)
        self.handlers: dict[int, Handler] = {3: self._metadata, 18: self._api_versions}
        self.requests: list[tuple[int, int, Any]] = []
        self.failures: list[Exception] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.topics: dict[str, int] = {}
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def close(self) -> None:
        self._stop.set()
        for sock in [self.listener, *self._conns]:  # shutdown wakes a thread blocked in accept/recv
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for t in self._threads:
            t.join(5)

    def apis(self, key: int) -> list[tuple[int, Any]]:
        return [(v, r) for k, v, r in self.requests if k == key]

    # -- default handlers --------------------------------------------------------------------------

    def _api_versions(self, version: int, request: Any) -> Message:
        return m.ApiVersionsResponse(
            api_keys=[
                m.ApiVersionsResponse.ApiVersion(api_key=k, min_version=lo, max_version=hi)
                for k, (lo, hi) in sorted(self.versions.items())
            ]
        )

    def _metadata(self, version: int, request: Any) -> Message:
        R = m.MetadataResponse
        names = list(self.topics) if request.topics is None else [t.name for t in request.topics]
        topics = []
        for name in names:
            if name in self.topics:
                parts = [
                    R.MetadataResponsePartition(partition_index=p, leader_id=0)
                    for p in range(self.topics[name])
                ]
                topics.append(R.MetadataResponseTopic(name=name, partitions=parts))
            else:
                topics.append(
                    R.MetadataResponseTopic(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                )
        brokers = [R.MetadataResponseBroker(node_id=0, host="127.0.0.1", port=self.port)]
        return R(brokers=brokers, topics=topics, controller_id=0)

    # -- serving -----------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _recv(self, conn: socket.socket, n: int) -> bytes | None:
        buf = b""
        while len(buf) < n:
            try:
                chunk = conn.recv(n - len(buf))
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf

    def _serve(self, conn: socket.socket) -> None:
        while True:
            head = self._recv(conn, 4)
            if head is None:
                return
            frame = self._recv(conn, struct.unpack(">i", head)[0])
            if frame is None:
                return
            header, offset = decode_request_header(frame)
            key, version = header.request_api_key, header.request_api_version
            lo, hi = self.versions.get(key, (0, -1))
            if key == 18 and not lo <= version <= hi:
                self.requests.append((key, version, None))
                answer = m.ApiVersionsResponse(
                    error_code=ErrorCode.UNSUPPORTED_VERSION,
                    api_keys=[m.ApiVersionsResponse.ApiVersion(api_key=18, min_version=lo, max_version=hi)],
                )
                self._send(conn, encode_response(header.correlation_id, 18, 0, answer))
                continue
            request = decode(m.REQUESTS[key], memoryview(frame)[offset:], version)
            self.requests.append((key, version, request))
            handler = self.handlers.get(key)
            try:
                response = handler(version, request) if handler is not None else None
            except Exception as exc:  # a test's handler failed: record it, drop the connection
                self.failures.append(exc)
                conn.close()
                return
            if response is None:
                continue  # silent: the client times out
            self._send(conn, encode_response(header.correlation_id, key, version, response))

    def _send(self, conn: socket.socket, data: bytes) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(data)


@contextlib.contextmanager
def running_fake(versions: dict[int, tuple[int, int]] | None = None) -> Iterator[FakeBroker]:
    """A fake broker for the block; on exit it is closed and its handlers must not have failed."""
    broker = FakeBroker(versions)
    try:
        yield broker
    finally:
        broker.close()
    assert not broker.failures, f"the fake broker's handlers failed: {broker.failures}"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens there now


def coordinator_at(fake: FakeBroker) -> Handler:
    """A FindCoordinator handler naming the fake's node 0, at any version."""

    def answer(version: int, request: Any) -> Message:
        if version >= 4:
            c = m.FindCoordinatorResponse.Coordinator(
                key=request.coordinator_keys[0], host="127.0.0.1", port=fake.port
            )
            return m.FindCoordinatorResponse(coordinators=[c])
        return m.FindCoordinatorResponse(node_id=0, host="127.0.0.1", port=fake.port)

    return answer
