"""The single-partition Produce path of KafkaConnection (protocol/single_produce.py, handlers/
produce.py's ``append_single``) against the generic one: for every case the bytes written to the
client are the same with the path on and off, and the cases it must leave to the handler reach
the handler. A KafkaConnection over a stand-in transport (no sockets), the real handlers, a real
ReplicaManager in a temp dir.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.connection import ConnectionLimits, KafkaConnection
from shardbroker.broker.dispatch import HandlerRegistry, discover
from shardbroker.broker.session import SecurityProtocol
from shardbroker.protocol import messages as m
from shardbroker.protocol.headers import decode_response, encode_request
from shardbroker.security.sasl_authenticator import SaslState
from tests.unit.replica_fakes import FakeTransport, Harness, batch, image, topic

IMG = image(
    topic("t", 2, leaders=[0, 1]),
    topic("flushed", configs={"flush.messages": "1"}),
    topic("lat", configs={"message.timestamp.type": "LogAppendTime"}),
)
NOW_MS = 1_800_000_000_000
AUTHORIZER = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "allow.everyone.if.no.acl.found": "true",
}


def produce(
    parts: Sequence[tuple[str, int, bytes]], version: int = 9, acks: int = 1, correlation_id: int = 1
) -> bytes:
    topics: dict[str, list[m.ProduceRequest.PartitionProduceData]] = {}
    for name, index, records in parts:
        topics.setdefault(name, []).append(
            m.ProduceRequest.PartitionProduceData(index=index, records=records)
        )
    request = m.ProduceRequest(
        acks=acks,
        timeout_ms=5000,
        topic_data=[m.ProduceRequest.TopicProduceData(name=n, partition_data=p) for n, p in topics.items()],
    )
    header = m.RequestHeader(
        request_api_key=0, request_api_version=version, correlation_id=correlation_id, client_id="c"
    )
    return encode_request(header, request)


class Dispatches:
    """Counts the requests the registry's handlers were asked to serve."""

    def __init__(self, registry: HandlerRegistry) -> None:
        self.count = 0
        inner = registry.dispatch

        async def dispatch(ctx: Any, request: Any) -> Any:
            self.count += 1
            return await inner(ctx, request)

        registry.dispatch = dispatch  # type: ignore[method-assign]


def answers(
    tmp_path: Path,
    frames: Sequence[bytes],
    *,
    single: bool,
    props: dict[str, str] | None = None,
    tweak: Callable[[Harness], None] | None = None,
    on_write: Callable[[Harness], None] | None = None,
) -> tuple[bytes, int]:
    """What a connection writes back for ``frames`` (sent in one piece), and how many of them
    the registry dispatched; ``single``: the single-partition path on or off; ``on_write``:
    called before each write to the client."""

    async def main() -> tuple[bytes, int]:
        async with Harness(tmp_path / ("on" if single else "off"), IMG, props=props) as h:
            for by_index in h.replicas.partitions.values():
                for p in by_index.values():
                    p.log._clock = lambda: NOW_MS  # LogAppendTime answers compare too
            if tweak is not None:
                tweak(h)
            registry = discover()
            dispatches = Dispatches(registry)
            conn = KafkaConnection(h.state, registry, ConnectionLimits())
            transport = FakeTransport(lambda: on_write(h) if on_write is not None else None)
            conn.connection_made(transport)  # type: ignore[arg-type]
            assert conn.conn.single_produce  # the default for a connection without SASL
            conn.conn.single_produce = single
            data = b"".join(frames)
            buf = conn.get_buffer(len(data))
            buf[: len(data)] = data
            conn.buffer_updated(len(data))
            for _ in range(200):  # the handlers that wait (a flush) and the flush of the answers
                await asyncio.sleep(0.005)
                if conn.conn.in_flight == 0:
                    break
            return bytes(transport.written), dispatches.count

    return asyncio.run(main())


def same_both_ways(tmp_path: Path, frames: Sequence[bytes], **kw: Any) -> tuple[bytes, int, int]:
    """The answer bytes (equal with the path on and off) and each way's dispatch count."""
    on, dispatched_on = answers(tmp_path, frames, single=True, **kw)
    off, dispatched_off = answers(tmp_path, frames, single=False, **kw)
    assert on == off
    return on, dispatched_on, dispatched_off


def responses(data: bytes, version: int = 9) -> list[m.ProduceResponse]:
    out, pos = [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        _, response = decode_response(data[pos + 4 : pos + 4 + size], 0, version)
        assert isinstance(response, m.ProduceResponse)
        out.append(response)
        pos += 4 + size
    return out


def codes(data: bytes, version: int = 9) -> list[int]:
    return [r.responses[0].partition_responses[0].error_code for r in responses(data, version)]


@pytest.mark.parametrize("version", [3, 5, 8, 9, 11])
def test_appends_are_answered_without_the_handler_and_byte_for_byte_as_by_it(
    tmp_path: Path, version: int
) -> None:
    frames = [produce([("t", 0, batch(2))], version, correlation_id=i) for i in range(3)]
    frames.append(produce([("lat", 0, batch(1))], version, correlation_id=7))
    data, on, off = same_both_ways(tmp_path, frames)
    assert (on, off) == (0, 4)
    got = responses(data, version)
    assert [r.responses[0].partition_responses[0].base_offset for r in got] == [0, 2, 4, 0]
    if version >= 2:
        assert got[3].responses[0].partition_responses[0].log_append_time_ms > 0  # LogAppendTime


def test_acks_0_is_appended_without_an_answer(tmp_path: Path) -> None:
    frames = [produce([("t", 0, batch(1))], acks=0), produce([("t", 0, batch(1))], correlation_id=2)]
    data, on, _ = same_both_ways(tmp_path, frames)
    assert on == 0 and [r.responses[0].partition_responses[0].base_offset for r in responses(data)] == [1]


def test_errors_are_answered_as_the_handler_answers_them(
    tmp_path: Path,
) -> None:
    corrupt = batch(1)
    corrupt[20] ^= 0xFF  # inside the CRC-covered bytes
    frames = [
        produce([("t", 1, batch(1))], version=11),  # led by another worker, no forwarder here
        produce([("nope", 0, batch(1))], version=11, correlation_id=2),
        produce([("t", 0, bytes(corrupt))], version=11, correlation_id=3),
    ]
    data, on, _ = same_both_ways(tmp_path, frames)
    assert codes(data, 11) == [6, 3, 2]  # NOT_LEADER_OR_FOLLOWER, UNKNOWN_TOPIC, CORRUPT_MESSAGE
    assert on == 0  # answered from the append's result, without the handler's dispatch


def flushed_before_the_answer(h: Harness) -> None:
    p = h.replicas.get("flushed", 0)
    assert p is not None and p.log.recovery_point == 3


def test_acks_all_waits_for_the_flush_the_policy_asks_for(
    tmp_path: Path,
) -> None:
    frames = [produce([("flushed", 0, batch(3))], acks=-1)]
    data, _, _ = same_both_ways(tmp_path, frames, on_write=flushed_before_the_answer)
    assert codes(data) == [0]


def test_with_an_authorizer_the_handler_serves_every_produce(
    tmp_path: Path,
) -> None:
    data, on, off = same_both_ways(tmp_path, [produce([("t", 0, batch(1))])], props=AUTHORIZER)
    assert codes(data) == [0] and on == off == 1


def test_an_exception_in_the_append_is_answered_unknown_server_error(
    tmp_path: Path,
) -> None:
    def breaks(h: Harness) -> None:
        def append(*args: Any) -> Any:
            raise RuntimeError("disk on fire")

        h.replicas.append = append  # type: ignore[method-assign]

    data, _, _ = same_both_ways(tmp_path, [produce([("t", 0, batch(1))])], tweak=breaks)
    assert codes(data) == [-1]


def test_pipelined_single_and_generic_requests_are_answered_in_order(
    tmp_path: Path,
) -> None:
    frames = [
        produce([("t", 0, batch(1)), ("lat", 0, batch(1))], correlation_id=1),  # two partitions
        produce([("flushed", 0, batch(1))], acks=-1, correlation_id=2),  # waits for a flush
        produce([("t", 0, batch(1))], correlation_id=3),  # single, answered at once
    ]
    data, on, off = same_both_ways(tmp_path, frames)
    assert (on, off) == (1, 3)
    assert [len(r.responses) for r in responses(data)] == [2, 1, 1]
    got = [p for r in responses(data) for t in r.responses for p in t.partition_responses]
    assert [(p.error_code, p.base_offset) for p in got] == [(0, 0), (0, 0), (0, 0), (0, 1)]


@pytest.mark.parametrize(
    ("state", "expired", "appended"),
    [
        (SaslState.HANDSHAKE_OR_VERSIONS, False, False),  # not authenticated: closed, as Kafka
        (SaslState.COMPLETE, False, True),
        (SaslState.COMPLETE, True, False),  # KIP-368: the session expired
    ],
)
def test_on_a_sasl_connection_the_gate_decides_first(
    tmp_path: Path, state: SaslState, expired: bool, appended: bool
) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            registry = discover()
            dispatches = Dispatches(registry)
            conn = KafkaConnection(
                h.state,
                registry,
                ConnectionLimits(),
                listener="SASL_PLAINTEXT",
                security_protocol=SecurityProtocol.SASL_PLAINTEXT,
            )
            transport = FakeTransport()
            conn.connection_made(transport)  # type: ignore[arg-type]
            sasl = conn.session.sasl
            assert sasl is not None
            sasl.state = state
            if expired:
                sasl.session_expiry = time.monotonic() - 1
            data = produce([("t", 0, batch(1))])
            buf = conn.get_buffer(len(data))
            buf[: len(data)] = data
            conn.buffer_updated(len(data))
            await asyncio.sleep(0.01)
            p = h.replicas.get("t", 0)
            assert p is not None and p.log.log_end_offset == (1 if appended else 0)
            assert conn._closing is not appended and dispatches.count == 0
            if appended:
                assert codes(bytes(transport.written)) == [0]
            conn.connection_lost(None)

    asyncio.run(main())
