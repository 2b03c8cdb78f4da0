"""Clients that misbehave at the socket level: connect and never send, trickle bytes, or connect by
the thousand.

- Idle connections are closed after ``connections.max.idle.ms`` (listener.py's sweeper).
- Slow senders must not hold memory: forty connections each announce an 8 MiB request and trickle
  its bytes; the worker's resident memory must not grow by what they announced (it did, 320 MiB,
  until the receive buffer grew with what arrives: protocol/connection.py ``_grown_size``).
- A connection storm: ``max.connections`` and ``max.connections.per.ip`` (listener.py) close what
  is over the limit at once, the worker's memory stays bounded by the limit, the refusals are
  logged with their count, and real clients are served once the storm is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shardbroker.protocol import messages as m
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import (
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce_confluent,
)
from tests.integration.test_broker_protocol import RawConnection, connect
from tests.unit.test_broker_connection import run, serving

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """Whether the broker closes ``sock`` within ``within`` seconds (anything it sends is read)."""
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True


@contextlib.contextmanager
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for s in opened:
            s.close()


def open_socket(broker: BrokerProcess, node: int = 0, source: str | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if source is not None:
        s.bind((source, 0))
    s.connect((broker.host, broker.ports[node]))
    return s


def api_versions_answered(broker: BrokerProcess, node: int = 0) -> bool:
    with connect(broker, node) as conn:
        return bool(conn.request(m.ApiVersionsRequest(), 0).error_code == 0)


def test_idle_connections_are_closed_after_connections_max_idle_ms(broker_factory: Factory) -> None:
    broker = broker_factory(workers=1, config={"connections.max.idle.ms": 1000})
    with sockets() as opened:
        silent = open_socket(broker)
        opened.append(silent)
        answered = RawConnection(broker.host, broker.ports[0])  # one request, then nothing
        opened.append(answered.sock)
        assert answered.request(m.ApiVersionsRequest(), 0).error_code == 0
        started = time.monotonic()
        assert closed_by_peer(silent, 5.0), "a connection that never sent a byte was kept"
        assert closed_by_peer(answered.sock, 5.0), "an idle connection was kept after its request"
        assert time.monotonic() - started >= 0.5, "closed before connections.max.idle.ms"
        busy = RawConnection(broker.host, broker.ports[0])
        opened.append(busy.sock)
        for _ in range(6):  # a request every 0.4 s keeps a connection alive past the limit
            assert busy.request(m.ApiVersionsRequest(), 0).error_code == 0
            time.sleep(0.4)


def test_slow_senders_do_not_hold_memory(broker_factory: Factory) -> None:
    broker = broker_factory(workers=1, config={"connections.max.idle.ms": 60_000})
    worker = broker.worker_pid(0)
    announced = 8 * 1024 * 1024
    count = 40
    header = struct.pack(">ihhi", announced, 0, 9, 1) + b"\x00\x04slow\x00"  # Produce v9, then crawl
    with sockets() as opened:
        opened += [open_socket(broker) for _ in range(count)]
        time.sleep(0.5)
        before = rss_bytes(worker)
        for s in opened:
            s.sendall(header)
        for _ in range(3):  # one byte a second each: alive, never done
            time.sleep(1.0)
            for s in opened:
                s.sendall(b"\x00")
        grown = rss_bytes(worker) - before
        assert api_versions_answered(broker)
    assert grown < count * announced // 8, f"{count} slow senders grew the worker by {grown >> 20} MiB"


def test_connection_storm_is_bounded_by_max_connections(broker_factory: Factory) -> None:
    limit, storm = 300, 1500
    broker = broker_factory(workers=2, config={"max.connections": limit})
    create_topic(broker.bootstrap, "storm", 2)
    worker = broker.worker_pid(0)
    before = rss_bytes(worker)
    with sockets() as opened:
        for _ in range(storm):
            opened.append(open_socket(broker))
        wait_for(lambda: "refused so far" in broker.output(tail=50) or None, 30, "the refusals to be logged")
        # Over the limit means closed at once: within a second, not after the idle timeout.
        closed = sum(closed_by_peer(s, 0.002) for s in opened)
        wait_for(
            lambda: sum(closed_by_peer(s, 0.001) for s in opened) + closed >= storm - limit or None,
            10,
            f"{storm - limit} of {storm} connections to be refused",
        )
        grown = rss_bytes(worker) - before
        print(f"{storm} connections, max.connections {limit}: worker 0 grew by {grown >> 20} MiB")
        # Each admitted connection holds its 256 KiB receive buffer (protocol/connection.py):
        # the limit bounds the worker, the storm does not.
        assert grown < limit * 512 * 1024, f"{storm} connections grew worker 0 by {grown >> 20} MiB"
        assert api_versions_answered(broker, node=1), "worker 1 (no storm) must serve meanwhile"
    wait_for(lambda: api_versions_answered(broker, node=0) or None, 30, "worker 0 to admit again")
    messages = make_messages(500, keys=50, tag="storm")
    acked = produce_confluent(broker.bootstrap, "storm", messages)
    ends = end_offsets("confluent", broker.bootstrap, "storm", 2)
    assert len(consume("confluent", broker.bootstrap, "storm", ends)) == len(acked) == 500


def test_max_connections_per_ip(broker_factory: Factory) -> None:
    broker = broker_factory(workers=1, config={"max.connections.per.ip": 3})
    with sockets() as opened:
        opened += [open_socket(broker) for _ in range(3)]
        assert not any(closed_by_peer(s, 0.3) for s in opened), "connections within the limit closed"
        extra = open_socket(broker)
        opened.append(extra)
        assert closed_by_peer(extra, 2.0), "a fourth connection from one address was kept"
        other = open_socket(broker, source="127.0.0.2")  # another client address has its own quota
        opened.append(other)
        assert not closed_by_peer(other, 0.3)
        assert "max.connections.per.ip (3)" in broker.output(tail=50)
    wait_for(lambda: api_versions_answered(broker) or None, 10, "the address to get connections again")


def test_quota_bookkeeping_in_one_listener(tmp_path: Path) -> None:
    """In process (tests/unit/test_broker_connection.py's listener and client): refusals are
    counted, refused connections hold no slot, and closing admitted ones frees their slots."""

    async def scenario() -> None:
        async with serving(tmp_path, max_connections=2) as (listener, connect_client):
            first, second = await connect_client(), await connect_client()
            for _ in range(3):
                assert await (await connect_client()).closed(2.0), (
                    "a connection over max.connections was kept"
                )
            assert listener.refused == 3 and len(listener.connections) == 2
            assert not await first.closed(0.2) and not await second.closed(0.01)
            first.close()
            await wait_async(lambda: len(listener.connections) == 1)
            third = await connect_client()
            assert not await third.closed(0.2), "the slot of a closed connection was not freed"
            assert listener.refused == 3 and len(listener.connections) == 2

    run(scenario())


async def wait_async(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)
