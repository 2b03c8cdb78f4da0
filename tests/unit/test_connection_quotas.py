"""Quotas on a KafkaConnection (KIP-219): a Produce over its client's ``producer_byte_rate`` is
answered at once with ``throttle_time_ms`` and the connection stops reading and starting requests
for that long, on the single-partition path and the generic one; a Fetch over
``consumer_byte_rate`` is answered empty with the throttle time and its bytes are not counted.
A connection over a stand-in transport, the real handlers, a real ReplicaManager in a temp dir.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from shardbroker.broker.connection import ConnectionLimits, KafkaConnection
from shardbroker.broker.dispatch import discover
from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_response, encode_request
from tests.unit.replica_fakes import FakeTransport, Harness, batch, image, topic
from tests.unit.test_single_produce_path import produce, responses

#: Horizon of one window (1 s): throttles of a few hundred ms.
PROPS = {"quota.window.num": "2"}


def _connect(h: Harness) -> tuple[KafkaConnection, FakeTransport]:
    h.state.quotas.workers = 1  # the whole quota on this worker
    conn = KafkaConnection(h.state, discover(), ConnectionLimits())
    transport = FakeTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def _send(conn: KafkaConnection, data: bytes) -> None:
    buf = conn.get_buffer(len(data))
    buf[: len(data)] = data
    conn.buffer_updated(len(data))


@pytest.mark.parametrize("single", [True, False])
def test_a_produce_over_quota_is_answered_with_the_throttle_and_mutes_the_connection(
    tmp_path: Path, single: bool
) -> None:
    frames = [produce([("t", 0, batch(1))], correlation_id=i) for i in range(3)]
    bound = (len(frames[0]) - 4) / 1.5  # the first request (its size prefix aside) is 1.5x the budget

    async def main() -> None:
        async with Harness(tmp_path, image(topic("t")), props=PROPS) as h:
            h.state.quotas.update({(("client-id", "c"),): {"producer_byte_rate": bound}})
            conn, transport = _connect(h)
            conn.conn.single_produce = single
            _send(conn, b"".join(frames))
            await asyncio.sleep(0.05)
            got = responses(bytes(transport.written))
            assert len(got) == 1  # the two behind it wait out the mute
            # Until the request leaves the 1 s window: 0.9-1 s (it began within a tenth).
            assert 900 <= got[0].throttle_time_ms <= 1000
            assert not transport.reading
            p = h.replicas.get("t", 0)
            assert p is not None and p.log.log_end_offset == 1  # throttled, yet appended (Kafka)
            await asyncio.sleep(got[0].throttle_time_ms / 1000 + 0.1)
            # Unmuted: the next one is served, over the quota on its own, and mutes again.
            got = responses(bytes(transport.written))
            assert len(got) == 2 and 900 <= got[1].throttle_time_ms <= 1000 and not transport.reading
            conn.connection_lost(None)

    asyncio.run(main())


def test_a_client_without_a_quota_is_not_throttled(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, image(topic("t")), props=PROPS) as h:
            h.state.quotas.update({(("client-id", "someone-else"),): {"producer_byte_rate": 1.0}})
            conn, transport = _connect(h)
            _send(conn, b"".join(produce([("t", 0, batch(1))], correlation_id=i) for i in range(20)))
            await asyncio.sleep(0.05)
            got = responses(bytes(transport.written))
            assert len(got) == 20 and all(r.throttle_time_ms == 0 for r in got)
            assert transport.reading
            conn.connection_lost(None)

    asyncio.run(main())


def _fetch(correlation_id: int) -> bytes:
    request = m.FetchRequest(
        max_wait_ms=0,
        min_bytes=1,
        max_bytes=1 << 20,
        topics=[
            m.FetchRequest.FetchTopic(
                topic="t",
                partitions=[
                    m.FetchRequest.FetchPartition(partition=0, fetch_offset=0, partition_max_bytes=1 << 20)
                ],
            )
        ],
    )
    header = m.RequestHeader(
        request_api_key=1, request_api_version=11, correlation_id=correlation_id, client_id="c"
    )
    return encode_request(header, request)


async def _fetched(conn: KafkaConnection, transport: FakeTransport, written: int) -> m.FetchResponse:
    """Send a Fetch of t-0 (client id "c") and decode its answer (what follows ``written``)."""
    _send(conn, _fetch(5))
    await asyncio.sleep(0.05)
    data = bytes(transport.written[written:])
    size = int.from_bytes(data[:4], "big")
    _, response = decode_response(data[4 : 4 + size], 1, 11)
    assert isinstance(response, m.FetchResponse)
    return response


def test_a_fetch_over_quota_is_answered_empty_and_not_counted(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, image(topic("t")), props=PROPS) as h:
            conn, transport = _connect(h)
            _send(conn, produce([("t", 0, batch(20))]))
            await asyncio.sleep(0.02)
            written = len(transport.written)
            h.state.quotas.update({(("client-id", "c"),): {"consumer_byte_rate": 10.0}})
            response = await _fetched(conn, transport, written)
            assert response.throttle_time_ms > 0 and response.responses == []
            sensor = h.state.quotas.client("ANONYMOUS", "c").fetch
            assert (
                sensor is not None
                and sensor.measure(asyncio.get_running_loop().time() * 0 + h.state.quotas.clock()) == 0
            )
            conn.connection_lost(None)

    asyncio.run(main())


def test_a_fetch_is_capped_to_what_the_quota_lets_through_in_its_window(tmp_path: Path) -> None:
    one = len(batch(1))

    async def main() -> None:
        async with Harness(tmp_path, image(topic("t")), props=PROPS) as h:
            conn, transport = _connect(h)
            _send(conn, b"".join(produce([("t", 0, batch(1))], correlation_id=i) for i in range(5)))
            await asyncio.sleep(0.02)
            written = len(transport.written)
            # 2.5 batches a second over a 1 s horizon: the fetch asks for 1 MiB, gets 2.5 batches
            # (Kafka's getMaxValueInQuotaWindow cap), and so is not throttled.
            h.state.quotas.update({(("client-id", "c"),): {"consumer_byte_rate": 2.5 * one}})
            response = await _fetched(conn, transport, written)
            assert response.throttle_time_ms == 0
            (partition,) = response.responses[0].partitions
            assert 2 * one <= len(partition.records) <= 2.5 * one
            conn.connection_lost(None)

    asyncio.run(main())


@pytest.mark.parametrize("version", [5, 6])
def test_a_client_from_before_kip_219_gets_its_answer_after_the_throttle(
    tmp_path: Path, version: int
) -> None:
    frame = produce([("t", 0, batch(1))], version=version)
    bound = (len(frame) - 4) / 1.5  # over the 1 s budget: throttled 0.9-1 s

    async def main() -> None:
        async with Harness(tmp_path, image(topic("t")), props=PROPS) as h:
            h.state.quotas.update({(("client-id", "c"),): {"producer_byte_rate": bound}})
            conn, transport = _connect(h)
            loop = asyncio.get_running_loop()
            sent = loop.time()
            _send(conn, frame)
            await asyncio.sleep(0.05)
            assert not transport.reading  # muted either way
            if version >= 6:  # KIP-219: answered at once, the client waits by itself
                (got,) = responses(bytes(transport.written), version)
            else:  # Produce v5 and older: Kafka holds the answer for the throttle time
                assert transport.written == b""
                while not transport.written:
                    await asyncio.sleep(0.01)
                (got,) = responses(bytes(transport.written), version)
                assert loop.time() - sent >= got.throttle_time_ms / 1000 - 0.01
            assert 900 <= got.throttle_time_ms <= 1000
            conn.connection_lost(None)

    asyncio.run(main())
