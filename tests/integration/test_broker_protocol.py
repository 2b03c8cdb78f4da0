"""Raw Kafka frames over a socket, built with our own codec: bad input, error codes, long polls.

Bad input must never kill a worker nor disturb other connections (DESIGN.md, "Contracts"): each
test ends by checking that no worker restarted (same pids) and that a fresh connection still gets
answers. Error codes are Kafka's: CORRUPT_MESSAGE (2), UNKNOWN_TOPIC_OR_PARTITION (3),
NOT_LEADER_OR_FOLLOWER (6), MESSAGE_TOO_LARGE (10), UNSUPPORTED_VERSION (35).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.headers import decode_response, encode_request
from shardbroker.protocol.record_batch import iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import create_topic

pytestmark = pytest.mark.integration

TOPIC = "raw"
PARTITIONS = 16  # so that both workers own some (placement is the broker's)
MESSAGE_MAX = 100_000
REQUEST_MAX = 1024 * 1024
PRODUCE_V = 9  # flexible
METADATA_V = 12
API_VERSIONS_KEY = 18


class RawConnection:
    """A blocking Kafka connection speaking our codec. Opens a socket."""

    def __init__(self, host: str, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.correlation = 0

    def close(self) -> None:
        self.sock.close()

    def send(self, msg: Message, version: int) -> int:
        self.correlation += 1
        header = m.RequestHeader(
            request_api_key=msg.API_KEY,
            request_api_version=version,
            correlation_id=self.correlation,
            client_id="raw-test",
        )
        self.sock.sendall(encode_request(header, msg))
        return self.correlation

    def read_frame(self) -> bytes:
        (size,) = struct.unpack(">i", self._read_exactly(4))
        return self._read_exactly(size)

    def _read_exactly(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
            buf += chunk
        return bytes(buf)

    def request(self, msg: Message, version: int) -> Any:
        correlation = self.send(msg, version)
        header, response = decode_response(self.read_frame(), msg.API_KEY, version)
        assert header.correlation_id == correlation
        return response

    def closed_by_peer(self, within: float) -> bool:
        """Whether the broker closes this connection within ``within`` seconds (answers ignored)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                if not self.sock.recv(65536):
                    return True
            except TimeoutError:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False


@contextlib.contextmanager
def connect(broker: BrokerProcess, node: int = 0) -> Iterator[RawConnection]:
    conn = RawConnection(broker.host, broker.ports[node])
    try:
        yield conn
    finally:
        conn.close()


def metadata(conn: RawConnection, topics: list[str] | None) -> Any:
    req = m.MetadataRequest(
        topics=None if topics is None else [m.MetadataRequest.MetadataRequestTopic(name=t) for t in topics],
        allow_auto_topic_creation=False,
    )
    return conn.request(req, METADATA_V)


def leaders(broker: BrokerProcess, topic: str) -> dict[int, int]:
    with connect(broker) as conn:
        (t,) = metadata(conn, [topic]).topics
    assert t.error_code == 0, t.error_code
    return {p.partition_index: p.leader_id for p in t.partitions}


def batch(count: int = 3, value_size: int = 10) -> bytes:
    builder = RecordBatchBuilder()
    for i in range(count):
        builder.append(b"v" * value_size, key=str(i).encode())
    return builder.build()


def produce(conn: RawConnection, topic: str, partition: int, records: bytes, acks: int = 1) -> Any:
    req = m.ProduceRequest(
        acks=acks,
        timeout_ms=10_000,
        topic_data=[
            m.ProduceRequest.TopicProduceData(
                name=topic,
                partition_data=[m.ProduceRequest.PartitionProduceData(index=partition, records=records)],
            )
        ],
    )
    (t,) = conn.request(req, PRODUCE_V).responses
    (p,) = t.partition_responses
    return p


def list_latest(conn: RawConnection, topic: str, partition: int, timestamp: int = -1) -> int:
    req = m.ListOffsetsRequest(
        replica_id=-1,
        topics=[
            m.ListOffsetsRequest.ListOffsetsTopic(
                name=topic,
                partitions=[
                    m.ListOffsetsRequest.ListOffsetsPartition(partition_index=partition, timestamp=timestamp)
                ],
            )
        ],
    )
    (t,) = conn.request(req, 7).topics
    (p,) = t.partitions
    assert p.error_code == 0, p.error_code
    return int(p.offset)


def fetch(conn: RawConnection, topic: str, partition: int, offset: int, max_wait_ms: int) -> Any:
    req = m.FetchRequest(
        replica_id=-1,
        max_wait_ms=max_wait_ms,
        min_bytes=1,
        max_bytes=1 << 20,
        session_id=0,
        session_epoch=-1,
        topics=[
            m.FetchRequest.FetchTopic(
                topic=topic,
                partitions=[
                    m.FetchRequest.FetchPartition(
                        partition=partition,
                        fetch_offset=offset,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
    )
    (t,) = conn.request(req, 12).responses
    (p,) = t.partitions
    return p


def sized(frame: bytes) -> bytes:
    return struct.pack(">i", len(frame)) + frame


@dataclass
class RawSetup:
    broker: BrokerProcess
    workers: list[int]


@pytest.fixture(scope="module")
def raw_setup(module_broker_factory: Callable[..., BrokerProcess]) -> RawSetup:
    broker = module_broker_factory(
        workers=2,
        config={
            "message.max.bytes": MESSAGE_MAX,
            "socket.request.max.bytes": REQUEST_MAX,
            "auto.create.topics.enable": False,
        },
    )
    create_topic(broker.bootstrap, TOPIC, PARTITIONS)
    owners = set(leaders(broker, TOPIC).values())
    assert owners == {0, 1}, f"{PARTITIONS} partitions over 2 workers, led by {owners}"
    return RawSetup(broker, broker.worker_pids())


@pytest.fixture
def raw(raw_setup: RawSetup) -> Iterator[BrokerProcess]:
    """The shared broker; after the test: no worker restarted, and it still answers every node."""
    broker = raw_setup.broker
    yield broker
    assert len(raw_setup.workers) == broker.workers, raw_setup.workers
    assert broker.worker_pids() == raw_setup.workers, "a worker died and was restarted"
    for node in range(broker.workers):
        with connect(broker, node) as conn:
            response = conn.request(m.ApiVersionsRequest(), 0)
            assert response.error_code == 0
            assert any(k.api_key == 0 for k in response.api_keys)


def partition_led_by(broker: BrokerProcess, node: int) -> int:
    for partition, leader in sorted(leaders(broker, TOPIC).items()):
        if leader == node:
            return partition
    raise AssertionError(f"worker {node} leads no partition of {TOPIC}: {leaders(broker, TOPIC)}")


# -- frames ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(struct.pack(">i", 3) + b"\x00\x03\x00", id="shorter-than-a-header"),
        pytest.param(
            # Metadata v12 (flexible): a good header v2 (empty client id, no tags), then a topics
            # count of 2**32 - 2 in a frame that has 5 bytes left: cannot be read.
            sized(struct.pack(">hhi", 3, METADATA_V, 1) + b"\x00\x00" + b"\x00" + b"\xff\xff\xff\xff\x0f"),
            id="body-overruns-frame",
        ),
        pytest.param(struct.pack(">i", -5) + b"\x00" * 8, id="negative-size"),
    ],
)
def test_malformed_frame_closes_only_its_connection(raw: BrokerProcess, frame: bytes) -> None:
    with connect(raw) as bystander, connect(raw) as bad:
        assert bystander.request(m.ApiVersionsRequest(), 0).error_code == 0
        bad.sock.sendall(frame)
        assert bad.closed_by_peer(within=10), "the broker kept a connection that sent a malformed frame"
        response = metadata(bystander, [TOPIC])  # the other connection is unaffected
        assert response.topics[0].error_code == 0


def test_frame_over_socket_request_max_bytes_is_refused_unbuffered(raw: BrokerProcess) -> None:
    """Only the size prefix and a header are sent: a broker that waited to buffer 256 MiB would
    keep the connection open; it must close it as soon as it reads the size."""
    with connect(raw) as conn:
        conn.sock.sendall(struct.pack(">ihhi", 256 * 1024 * 1024, 0, PRODUCE_V, 1))
        assert conn.closed_by_peer(within=10), "oversized frame not refused"
    with connect(raw) as conn:  # just over the configured limit, body actually sent
        body = struct.pack(">hhi", 18, 0, 1) + b"\x00\x00" + b"x" * (REQUEST_MAX + 1 - 10)
        conn.sock.sendall(struct.pack(">i", len(body)) + body[:65536])
        assert conn.closed_by_peer(within=10), "frame of socket.request.max.bytes + 1 not refused"


def test_unsupported_api_versions_version_answers_v0_with_the_range(raw: BrokerProcess) -> None:
    with connect(raw) as conn:
        version = m.ApiVersionsRequest.VALID_VERSIONS[1] + 20
        # header v2 (client id int16 string, empty tagged fields), body as flexible ApiVersions
        body = struct.pack(">hhih", API_VERSIONS_KEY, version, 42, 3) + b"raw" + b"\x00"
        body += b"\x04raw\x021\x00"
        conn.sock.sendall(struct.pack(">i", len(body)) + body)
        header, decoded = decode_response(conn.read_frame(), API_VERSIONS_KEY, 0)
        assert header.correlation_id == 42
        assert isinstance(decoded, m.ApiVersionsResponse)
        response = decoded
        assert response.error_code == ErrorCode.UNSUPPORTED_VERSION
        ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
        assert API_VERSIONS_KEY in ranges, ranges
        lo, hi = ranges[API_VERSIONS_KEY]
        assert lo == 0 and 3 <= hi < version
        # the connection stays usable at a supported version
        assert conn.request(m.ApiVersionsRequest(), 0).error_code == 0


def test_api_versions_is_honest_and_wide(raw: BrokerProcess) -> None:
    with connect(raw) as conn:
        response = conn.request(
            m.ApiVersionsRequest(client_software_name="raw", client_software_version="1"), 3
        )
    assert response.error_code == 0
    ranges = {k.api_key: (k.min_version, k.max_version) for k in response.api_keys}
    # this step's APIs (DESIGN.md): every one advertised, within what the specs define
    step = {0: "Produce", 1: "Fetch", 2: "ListOffsets", 3: "Metadata", 18: "ApiVersions", 19: "CreateTopics",
            20: "DeleteTopics", 21: "DeleteRecords", 22: "InitProducerId", 23: "OffsetForLeaderEpoch",
            32: "DescribeConfigs", 33: "AlterConfigs", 37: "CreatePartitions", 44: "IncrementalAlterConfigs",
            50: "DescribeUserScramCredentials", 51: "AlterUserScramCredentials",
            60: "DescribeCluster", 17: "SaslHandshake", 36: "SaslAuthenticate",
            24: "AddPartitionsToTxn", 25: "AddOffsetsToTxn", 26: "EndTxn", 27: "WriteTxnMarkers",
            61: "DescribeProducers", 65: "DescribeTransactions", 66: "ListTransactions"}  # fmt: skip
    missing = [name for key, name in step.items() if key not in ranges]
    assert not missing, f"not advertised: {missing}"
    for key, (lo, hi) in ranges.items():
        cls = m.REQUESTS[key]
        assert cls.VALID_VERSIONS[0] <= lo <= hi <= cls.VALID_VERSIONS[1], (cls.API_NAME, lo, hi)
    # Produce v2 stays advertised: librdkafka disables gzip/snappy/lz4 without it (DESIGN.md)
    assert ranges[0][0] <= 2


# -- produce errors ----------------------------------------------------------------------------


def test_bad_crc_is_corrupt_message_and_nothing_is_appended(raw: BrokerProcess) -> None:
    partition = partition_led_by(raw, 0)
    with connect(raw, 0) as conn:
        before = list_latest(conn, TOPIC, partition)
        corrupt = bytearray(batch())
        corrupt[-1] ^= 0xFF  # inside the CRC-covered records
        assert produce(conn, TOPIC, partition, bytes(corrupt)).error_code == ErrorCode.CORRUPT_MESSAGE
        assert list_latest(conn, TOPIC, partition) == before
        good = produce(conn, TOPIC, partition, batch())
        assert good.error_code == 0 and good.base_offset == before


def test_unknown_topic_or_partition(raw: BrokerProcess) -> None:
    with connect(raw, 0) as conn:
        p = produce(conn, "no-such-topic", 0, batch())
        assert p.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        p = produce(conn, TOPIC, PARTITIONS + 95, batch())  # a partition the topic lacks
        assert p.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        assert "no-such-topic" not in {t.name for t in metadata(conn, None).topics}


def test_produce_to_another_workers_partition_is_forwarded_and_fetch_is_not_leader(
    raw: BrokerProcess,
) -> None:
    partition = partition_led_by(raw, 1)
    with connect(raw, 1) as owner:
        start = list_latest(owner, TOPIC, partition)
    with connect(raw, 0) as conn:
        forwarded = produce(conn, TOPIC, partition, batch(count=3))
        assert (forwarded.error_code, forwarded.base_offset) == (0, start)  # the owner's answer
        # Fetches are not forwarded: the client is sent to the leader.
        assert fetch(conn, TOPIC, partition, start, 0).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    with connect(raw, 1) as conn:  # the owner has the forwarded batch, and takes its own
        assert produce(conn, TOPIC, partition, batch()).base_offset == start + 3


def test_oversized_batch_is_message_too_large(raw: BrokerProcess) -> None:
    partition = partition_led_by(raw, 0)
    with connect(raw, 0) as conn:
        before = list_latest(conn, TOPIC, partition)
        big = batch(count=4, value_size=MESSAGE_MAX // 3)  # ~133 kB: over message.max.bytes,
        assert MESSAGE_MAX < len(big) < REQUEST_MAX  # under socket.request.max.bytes
        assert produce(conn, TOPIC, partition, big).error_code == ErrorCode.MESSAGE_TOO_LARGE
        assert list_latest(conn, TOPIC, partition) == before
        fits = batch(count=2, value_size=MESSAGE_MAX // 3)
        assert produce(conn, TOPIC, partition, fits).error_code == 0


# -- fetch, offsets ----------------------------------------------------------------------------


def test_fetch_long_poll_waits_and_wakes_on_produce(raw: BrokerProcess) -> None:
    partition = partition_led_by(raw, 0)
    with connect(raw, 0) as conn:
        end = list_latest(conn, TOPIC, partition)
        started = time.monotonic()
        empty = fetch(conn, TOPIC, partition, end, max_wait_ms=800)
        waited = time.monotonic() - started
        assert empty.error_code == 0 and not empty.records
        assert waited >= 0.7, f"fetch at the end returned after {waited:.3f} s, not max_wait_ms"

        def produce_later() -> None:
            time.sleep(0.3)
            with connect(raw, 0) as other:
                produce(other, TOPIC, partition, batch(count=5))

        thread = threading.Thread(target=produce_later)
        thread.start()
        started = time.monotonic()
        woken = fetch(conn, TOPIC, partition, end, max_wait_ms=10_000)
        waited = time.monotonic() - started
        thread.join()
    assert woken.error_code == 0
    assert 0.2 <= waited < 5, f"long poll answered after {waited:.3f} s"
    batches = list(iter_batches(bytes(woken.records)))
    assert batches and batches[0].base_offset == end and batches[0].records_count == 5
    assert woken.high_watermark == end + 5


def test_fetch_in_the_middle_of_a_batch_returns_the_whole_batch(raw: BrokerProcess) -> None:
    partition = partition_led_by(raw, 1)
    with connect(raw, 1) as conn:
        base = produce(conn, TOPIC, partition, batch(count=10)).base_offset
        got = fetch(conn, TOPIC, partition, base + 4, max_wait_ms=0)
    first = next(iter(iter_batches(bytes(got.records), allow_partial_tail=True)))
    assert (first.base_offset, first.records_count) == (base, 10)
    assert first.is_crc_valid()


@pytest.mark.kafka_api("Produce", "ListOffsets", "Metadata", "OffsetForLeaderEpoch", client="shardbroker")
def test_offset_for_leader_epoch_and_list_offsets_by_timestamp(raw: BrokerProcess) -> None:
    partition = partition_led_by(raw, 0)
    t0 = int(time.time() * 1000) + 3_600_000  # later than anything else in the partition
    with connect(raw, 0) as conn:
        builder = RecordBatchBuilder()
        for i in range(3):
            builder.append(b"t", timestamp=t0 + i * 1000)
        base = produce(conn, TOPIC, partition, builder.build()).base_offset
        assert list_latest(conn, TOPIC, partition, timestamp=t0 + 1000) == base + 1
        assert list_latest(conn, TOPIC, partition, timestamp=-2) == 0  # earliest
        end = list_latest(conn, TOPIC, partition)
        (t,) = metadata(conn, [TOPIC]).topics
        epoch = next(p.leader_epoch for p in t.partitions if p.partition_index == partition)
        req = m.OffsetForLeaderEpochRequest(
            replica_id=-1,
            topics=[
                m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                    topic=TOPIC,
                    partitions=[
                        m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                            partition=partition, current_leader_epoch=epoch, leader_epoch=epoch
                        )
                    ],
                )
            ],
        )
        (topic_result,) = conn.request(req, 4).topics
    (p,) = topic_result.partitions
    assert p.error_code == 0
    assert (p.leader_epoch, p.end_offset) == (epoch, end)
