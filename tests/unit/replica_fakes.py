"""Test doubles for the data plane: a fake ControllerChannel, images, contexts, batches."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar

from shardbroker.broker.dispatch import RequestContext
from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage, PartitionImage, TopicImage
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder

T = TypeVar("T")

Callback = Callable[[MetadataImage, MetadataImage], Awaitable[None]]

BROKERS = (BrokerEndpoint(0, "127.0.0.1", 9092), BrokerEndpoint(1, "127.0.0.1", 9093))


def topic(
    name: str,
    partitions: int = 1,
    *,
    leaders: list[int] | None = None,
    configs: Mapping[str, str] | None = None,
    topic_id: uuid.UUID | None = None,
    epoch: int = 0,
) -> TopicImage:
    leaders = leaders or [0] * partitions
    return TopicImage(
        name=name,
        topic_id=topic_id or uuid.uuid5(uuid.NAMESPACE_DNS, name),
        partitions=tuple(PartitionImage(i, leaders[i], epoch) for i in range(partitions)),
        configs=dict(configs or {}),
    )


def image(*topics: TopicImage, version: int = 1) -> MetadataImage:
    return MetadataImage(
        version=version,
        cluster_id="test-cluster",
        controller_id=0,
        brokers=BROKERS,
        topics={t.name: t for t in topics},
    )


class FakeChannel:
    """ControllerChannel's surface: ``image``, ``subscribe``, ``request`` (producer ids only)."""

    def __init__(self, img: MetadataImage) -> None:
        self.image = img
        self.callbacks: list[Callback] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.next_pid = 1000
        self.fail = False

    def subscribe(self, callback: Callback) -> None:
        self.callbacks.append(callback)

    async def push(self, new: MetadataImage) -> None:
        old, self.image = self.image, new
        for cb in self.callbacks:
            await cb(old, new)

    async def request(self, op: str, args: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        self.requests.append((op, args))
        if self.fail:
            raise TimeoutError("controller unavailable")
        assert op == "allocate_producer_ids", op
        first = self.next_pid
        self.next_pid += args["count"]
        return {"first": first, "count": args["count"], "version": 1}


class Harness:
    """A started ReplicaManager over a tmp data dir, with handler contexts for it."""

    def __init__(
        self, data_dir: Path, img: MetadataImage, *, node_id: int = 0, props: Mapping[str, str] | None = None
    ) -> None:
        self.config = BrokerConfig(data_dir=data_dir, properties=dict(props or {}))
        self.channel = FakeChannel(img)
        self.replicas = ReplicaManager(node_id, self.config, self.channel)
        self.state = WorkerState(node_id, self.config, self.channel, self.replicas)  # type: ignore[arg-type]

    def ctx(self, api_key: int, version: int) -> RequestContext:
        return RequestContext(
            api_key=api_key, api_version=version, correlation_id=1, client_id="test", worker=self.state
        )

    async def __aenter__(self) -> Harness:
        await self.replicas.start(None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.replicas.drain()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def batch(
    count: int = 3,
    *,
    value: bytes = b"value",
    timestamp: int | None = None,
    timestamps: list[int] | None = None,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
) -> bytearray:
    """A v2 batch as a client sends it, in a writable buffer (like the receive buffer)."""
    builder = RecordBatchBuilder(
        producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence
    )
    for i in range(count):
        ts = timestamps[i] if timestamps is not None else timestamp
        builder.append(value, key=str(i).encode(), timestamp=ts)
    return bytearray(builder.build())


class FakeTransport:
    """What KafkaConnection needs of an asyncio transport: keeps what is written, calls
    ``on_write`` before each write."""

    def __init__(self, on_write: Callable[[], None] = lambda: None) -> None:
        self.written = bytearray()
        self.reading = True
        self.on_write = on_write

    def write(self, data: bytes) -> None:
        self.on_write()
        self.written += data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass
