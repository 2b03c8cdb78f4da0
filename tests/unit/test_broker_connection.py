"""The asyncio connection and listener over real loopback sockets, with test handlers.

Opens sockets and temporary files. Handlers here are stand-ins: Metadata requests whose topic
names script the handler ("sleep:0.2", "boom"), Produce that checks its records views after a
delay, Fetch that answers with a FileRegion of a temp file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from shardbroker.broker.connection import SMALL_REGION, ConnectionLimits, KafkaConnection
from shardbroker.broker.dispatch import ApiHandler, HandlerRegistry, RequestContext
from shardbroker.broker.file_region import FileRegion
from shardbroker.broker.handlers import api_versions
from shardbroker.broker.listener import KafkaListener
from shardbroker.broker.session import SecurityProtocol
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.listeners import Endpoint
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.headers import decode_response, encode_request
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.security.principal import ANONYMOUS
from tests.unit.replica_fakes import FakeChannel, FakeTransport, image

State = dict[str, Any]


def records_for(index: int, size: int = 20_000) -> bytes:
    b = RecordBatchBuilder()
    b.append(str(index).encode() * (size // max(1, len(str(index)))), timestamp=1_700_000_000_000)
    return b.build()


def make_registry(shared: State) -> HandlerRegistry:
    shared.setdefault("running", 0)
    shared.setdefault("max_running", 0)

    async def metadata(ctx: RequestContext, request: m.MetadataRequest) -> Message:
        shared.setdefault("sessions", []).append(ctx.session)
        shared["running"] += 1
        shared["max_running"] = max(shared["max_running"], shared["running"])
        try:
            for t in request.topics or []:
                name = t.name or ""
                if name.startswith("sleep:"):
                    await asyncio.sleep(float(name[6:]))
                elif name == "boom":
                    raise RuntimeError("scripted failure")
                elif name == "unencodable":
                    return m.MetadataResponse(
                        brokers=[m.MetadataResponse.MetadataResponseBroker(node_id="x")]
                    )
            return m.MetadataResponse(
                topics=[m.MetadataResponse.MetadataResponseTopic(name=t.name) for t in request.topics or []]
            )
        finally:
            shared["running"] -= 1

    async def produce(ctx: RequestContext, request: m.ProduceRequest) -> Message | None:
        pd = request.topic_data[0].partition_data[0]
        await asyncio.sleep(0.02)
        intact = bytes(pd.records) == records_for(pd.index)  # the view survived later input
        if request.acks == 0:
            shared.setdefault("acks0", []).append(intact)
            return None
        return m.ProduceResponse(
            responses=[
                m.ProduceResponse.TopicProduceResponse(
                    name="t",
                    partition_responses=[
                        m.ProduceResponse.PartitionProduceResponse(
                            index=pd.index, error_code=0 if intact else 2
                        )
                    ],
                )
            ]
        )

    async def fetch(ctx: RequestContext, request: m.FetchRequest) -> Message:
        fd, length = shared["region"]
        partition = m.FetchResponse.PartitionData(
            partition_index=0, high_watermark=1, records=FileRegion(fd, 0, length)
        )
        return m.FetchResponse(
            responses=[m.FetchResponse.FetchableTopicResponse(topic="t", partitions=[partition])]
        )

    return HandlerRegistry(
        [
            api_versions.HANDLER,
            ApiHandler(3, 0, 12, metadata),
            ApiHandler(0, 3, 11, produce),
            ApiHandler(1, 4, 12, fetch),
        ]
    )


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.correlation = 0
        self.sent: dict[int, tuple[int, int]] = {}

    def frame(self, msg: Message, version: int) -> bytes:
        self.correlation += 1
        self.sent[self.correlation] = (msg.API_KEY, version)
        header = m.RequestHeader(
            request_api_key=msg.API_KEY,
            request_api_version=version,
            correlation_id=self.correlation,
            client_id="t",
        )
        return encode_request(header, msg)

    async def send(self, msg: Message, version: int) -> int:
        self.writer.write(self.frame(msg, version))
        await self.writer.drain()
        return self.correlation

    async def read(self, timeout: float = 5.0) -> tuple[int, Any]:
        size = struct.unpack(">i", await asyncio.wait_for(self.reader.readexactly(4), timeout))[0]
        data = await asyncio.wait_for(self.reader.readexactly(size), timeout)
        correlation = struct.unpack(">i", data[:4])[0]
        api_key, version = self.sent[correlation]
        header, response = decode_response(data, api_key, version)
        return header.correlation_id, response

    async def closed(self, timeout: float = 5.0) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        return True

    def close(self) -> None:
        self.writer.close()


@asynccontextmanager
async def serving(
    tmp_path: Path,
    shared: State | None = None,
    *,
    config: BrokerConfig | None = None,
    registry: HandlerRegistry | None = None,
    channel: Any = None,
    protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT,
    **limits: Any,
) -> AsyncIterator[tuple[KafkaListener, Callable[[], Awaitable[Client]]]]:
    """A listener on a free loopback port (its connections on a ``protocol`` listener) and a
    way to connect clients to it; ``registry`` defaults to the stand-in handlers."""
    config = dataclasses.replace(
        config or BrokerConfig(data_dir=tmp_path),
        listeners=(Endpoint(protocol.value, protocol.value, "127.0.0.1", 9092),),  # bound on port 0
    )
    # ApiVersions reads the image's version (its finalized features epoch)
    channel = FakeChannel(image()) if channel is None else channel
    state = WorkerState(node_id=0, config=config, channel=cast(Any, channel), replicas=cast(Any, None))
    listener = KafkaListener(
        state,
        registry or make_registry(shared if shared is not None else {}),
        host="127.0.0.1",
        port=0,
        limits=ConnectionLimits(**limits),
        drain_timeout=2.0,
    )
    await listener.start()
    clients: list[Client] = []

    async def connect() -> Client:
        client = Client(*await asyncio.open_connection("127.0.0.1", listener.bound_port))
        clients.append(client)
        return client

    try:
        yield listener, connect
    finally:
        for c in clients:
            c.close()
        await listener.drain()


def metadata(*names: str) -> m.MetadataRequest:
    return m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name=n) for n in names])


def produce_request(index: int, acks: int = 1) -> m.ProduceRequest:
    pd = m.ProduceRequest.PartitionProduceData(index=index, records=records_for(index))
    return m.ProduceRequest(
        acks=acks,
        timeout_ms=1000,
        topic_data=[m.ProduceRequest.TopicProduceData(name="t", partition_data=[pd])],
    )


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 15))  # type: ignore[arg-type]


# -- ordering --------------------------------------------------------------------------------


def test_every_request_of_a_connection_sees_its_session(tmp_path: Path) -> None:
    shared: State = {}

    async def scenario() -> None:
        async with serving(tmp_path, shared) as (_, connect):
            a, b = await connect(), await connect()
            for c in (a, b, a):
                c.writer.write(c.frame(metadata(), 12))
                await c.read()

    run(scenario())
    first, second, again = shared["sessions"]
    assert first is again and first is not second  # one session per connection
    assert first.listener == "PLAINTEXT" and first.security_protocol is SecurityProtocol.PLAINTEXT
    assert first.client_host == "127.0.0.1" and first.principal == ANONYMOUS and first.authenticated


def test_pipelined_responses_come_back_in_request_order(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            c.writer.write(
                c.frame(metadata("sleep:0.3"), 12)
                + c.frame(metadata("sleep:0"), 12)
                + c.frame(metadata("sleep:0.1"), 1)
            )
            got = [await c.read() for _ in range(3)]
            assert [cid for cid, _ in got] == [1, 2, 3]
            assert [r.topics[0].name for _, r in got] == ["sleep:0.3", "sleep:0", "sleep:0.1"]

    run(scenario())


def test_acks_0_gets_no_response_and_records_views_survive_pipelining(tmp_path: Path) -> None:
    shared: State = {}

    async def scenario() -> None:
        async with serving(tmp_path, shared) as (_, connect):
            c = await connect()
            # ~1 MiB of produce requests in one write: the receive buffer (256 KiB) is refilled
            # many times while earlier handlers still hold views of it.
            data = b"".join(c.frame(produce_request(i, acks=0 if i % 5 == 0 else 1), 9) for i in range(50))
            data += c.frame(m.ApiVersionsRequest(), 0)
            c.writer.write(data)
            got = [await c.read() for _ in range(41)]
            produced = [r for _, r in got[:-1]]
            assert [r.responses[0].partition_responses[0].index for r in produced] == [
                i for i in range(50) if i % 5
            ]
            assert all(r.responses[0].partition_responses[0].error_code == 0 for r in produced)
            assert isinstance(got[-1][1], m.ApiVersionsResponse)
            assert shared["acks0"] == [True] * 10

    run(scenario())


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(struct.pack(">i", -5) + b"\x00" * 8, id="negative-size"),
        pytest.param(struct.pack(">i", 3) + b"\x00\x03\x00", id="short"),
        pytest.param(struct.pack(">ihhi", 256 * 1024 * 1024, 0, 9, 1), id="oversized-prefix-only"),
    ],
)
def test_bad_frames_close_only_their_connection(tmp_path: Path, data: bytes) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_request_size=1024 * 1024) as (_, connect):
            bystander, bad = await connect(), await connect()
            await bystander.send(m.ApiVersionsRequest(), 0)
            assert (await bystander.read())[1].error_code == 0
            bad.writer.write(data)
            assert await bad.closed()
            await bystander.send(metadata("still-here"), 12)
            assert (await bystander.read())[1].topics[0].name == "still-here"

    run(scenario())


def test_unsupported_api_versions_version_gets_v0_with_ranges(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (listener, connect):
            c = await connect()
            body = struct.pack(">hhih", 18, 99, 42, 1) + b"x\x00" + b"\x02x\x021\x00"
            c.writer.write(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", await c.reader.readexactly(4))[0]
            header, response = decode_response(await c.reader.readexactly(size), 18, 0)
            assert header.correlation_id == 42
            assert response.error_code == ErrorCode.UNSUPPORTED_VERSION  # type: ignore[attr-defined]
            ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}  # type: ignore[attr-defined]
            assert ranges == listener.registry.versions
            await c.send(m.ApiVersionsRequest(), 0)  # still usable
            assert (await c.read())[1].error_code == 0

    run(scenario())


def test_unserved_api_is_closed_and_unsupported_version_answered(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            await c.send(m.DescribeClusterRequest(), 0)  # no handler in this registry; has error_code
            assert (await c.read())[1].error_code == ErrorCode.UNSUPPORTED_VERSION
            await c.send(m.JoinGroupRequest(group_id="g"), 0)  # v0 response has an error code too
            assert (await c.read())[1].error_code == ErrorCode.UNSUPPORTED_VERSION
            await c.send(m.ListGroupsRequest(), 0)
            assert (await c.read())[1].error_code == ErrorCode.UNSUPPORTED_VERSION
            d = await connect()
            await d.send(m.MetadataRequest(topics=None), 12)  # served version, fine
            await d.read()
            bad = struct.pack(">hhih", 9999, 0, 5, -1)
            d.writer.write(struct.pack(">i", len(bad)) + bad)  # unknown api key: no response to give
            assert await d.closed()

    run(scenario())


def test_handler_crash_without_error_field_closes_after_earlier_responses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (listener, connect):
            c = await connect()
            c.writer.write(c.frame(metadata("sleep:0.05"), 12) + c.frame(metadata("boom"), 12))
            cid, _ = await c.read()
            assert cid == 1
            assert await c.closed()
            d = await connect()
            await d.send(metadata("x"), 12)
            assert (await d.read())[1].topics[0].name == "x"
            assert all(d.server is not None and d.server.is_serving() for d in listener.doors)

    run(scenario())


def test_unencodable_response_is_answered_as_an_error_or_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            await c.send(metadata("unencodable"), 12)  # Metadata has no error field: closed
            assert await c.closed()

    run(scenario())


# -- file regions ----------------------------------------------------------------------------


@pytest.mark.parametrize("use_sendfile", [True, False])
@pytest.mark.parametrize("size", [10, 100_000, 6 * 1024 * 1024])
def test_file_regions_are_sent(tmp_path: Path, use_sendfile: bool, size: int) -> None:
    payload = os.urandom(size)
    path = tmp_path / "segment.log"
    path.write_bytes(payload)
    fd = os.open(path, os.O_RDONLY)
    shared: State = {"region": (fd, size)}

    async def scenario() -> None:
        async with serving(tmp_path, shared, sendfile=use_sendfile) as (_, connect):
            c = await connect()
            fetch = m.FetchRequest(max_wait_ms=0, topics=[])
            c.writer.write(c.frame(fetch, 12) + c.frame(fetch, 12) + c.frame(metadata("after"), 12))
            for expected in (1, 2):
                cid, response = await c.read()
                assert cid == expected
                assert bytes(response.responses[0].partitions[0].records) == payload
            assert (await c.read())[0] == 3

    try:
        run(scenario())
    finally:
        os.close(fd)


def test_a_truncated_file_region_breaks_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "segment.log"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    shared: State = {"region": (fd, 1000)}  # longer than the file

    async def scenario() -> None:
        async with serving(tmp_path, shared, sendfile=False) as (_, connect):
            c = await connect()
            await c.send(m.FetchRequest(topics=[]), 12)
            assert await c.closed()

    try:
        run(scenario())
    finally:
        os.close(fd)


# -- flow control, idleness, drain -----------------------------------------------------------


def test_reading_pauses_at_max_in_flight(tmp_path: Path) -> None:
    shared: State = {}

    async def scenario() -> None:
        async with serving(tmp_path, shared, max_in_flight=2) as (_, connect):
            c = await connect()
            for _ in range(8):
                c.writer.write(c.frame(metadata("sleep:0.05"), 12))
                await asyncio.sleep(0.01)
            got = [await c.read() for _ in range(8)]
            assert [cid for cid, _ in got] == list(range(1, 9))
            assert shared["max_running"] <= 2

    run(scenario())


def test_idle_connections_are_closed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, max_idle_ms=200) as (_, connect):
            idle, busy = await connect(), await connect()
            await busy.send(metadata("sleep:0.6"), 12)  # in flight for longer than the limit
            assert await idle.closed(timeout=2)
            assert (await busy.read())[1].topics[0].name == "sleep:0.6"

    run(scenario())


def test_half_closed_client_gets_its_answers(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (_, connect):
            c = await connect()
            await c.send(metadata("sleep:0.1"), 12)
            c.writer.write_eof()
            assert (await c.read())[0] == 1
            assert await c.closed()

    run(scenario())


def test_drain_finishes_requests_in_flight_then_closes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (listener, connect):
            c = await connect()
            await c.send(metadata("sleep:0.3"), 12)
            await asyncio.sleep(0.05)
            draining = asyncio.create_task(listener.drain())
            cid, response = await c.read()
            assert cid == 1 and response.topics[0].name == "sleep:0.3"
            assert await c.closed()
            await draining
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", listener.bound_port)

    run(scenario())


def test_drain_is_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (listener, connect):
            listener.drain_timeout = 0.2
            c = await connect()
            await c.send(metadata("sleep:30"), 12)
            await asyncio.sleep(0.05)
            started = asyncio.get_running_loop().time()
            await listener.drain()
            assert asyncio.get_running_loop().time() - started < 2
            assert await c.closed()

    run(scenario())


def test_listener_rebinds_at_once_on_the_same_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (listener, connect):
            c = await connect()
            await c.send(metadata("x"), 12)
            await c.read()
            port = listener.bound_port
        # the old listener is drained; its connection was closed by the server side (TIME_WAIT)
        config = BrokerConfig(data_dir=tmp_path)
        state = WorkerState(node_id=0, config=config, channel=cast(Any, None), replicas=cast(Any, None))
        again = KafkaListener(state, make_registry({}), host="127.0.0.1", port=port)
        await again.start()
        assert again.bound_port == port
        await again.drain()

    run(scenario())


def test_listener_defaults_come_from_the_config(tmp_path: Path) -> None:
    config = BrokerConfig(
        data_dir=tmp_path,
        listeners=(Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 0),),
        properties={"socket.request.max.bytes": "1234", "connections.max.idle.ms": "-1"},
    )
    state = WorkerState(node_id=0, config=config, channel=cast(Any, None), replicas=cast(Any, None))

    async def scenario() -> None:
        listener = KafkaListener(state, make_registry({}))
        assert listener.limits.max_request_size == 1234
        await listener.start()
        assert listener._sweeper is None  # idle timeout off
        await listener.drain()

    run(scenario())


def test_a_small_file_region_leaves_in_the_send_of_its_response(tmp_path: Path) -> None:
    """A Fetch answer with a few records is one send (header, records, the rest), not a write
    and a sendfile: two syscalls and two segments for the client to wake up for."""
    path = tmp_path / "segment.log"
    path.write_bytes(b"r" * (SMALL_REGION + 10))
    fd = os.open(path, os.O_RDONLY)

    async def scenario() -> None:
        conn = KafkaConnection(cast(Any, None), make_registry({}), ConnectionLimits())
        transport = FakeTransport()
        writes: list[int] = []
        transport.on_write = lambda: writes.append(len(transport.written))
        conn._write(cast(Any, transport), [b"head", FileRegion(fd, 0, SMALL_REGION), b"tail"])
        assert len(writes) == 1 and bytes(transport.written) == b"head" + b"r" * SMALL_REGION + b"tail"
        conn._write(cast(Any, transport), [b"head", FileRegion(fd, 0, SMALL_REGION + 1), b"tail"])
        assert len(writes) == 4  # a larger region goes on its own (sendfile, or here pread + write)

    try:
        run(scenario())
    finally:
        os.close(fd)
