"""ControllerChannel (the worker's end) against the real Controller over real rings: both ends in
one process and one event loop here; across fork and a worker respawn in test_cli_serve.py."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.controller_channel import (
    ControllerChannel,
    ControllerRequestError,
    ControllerUnavailable,
)
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.control.controller import Controller
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_names import Direction, control_ring
from shardbroker.metadata.image import MetadataImage

SHM = Path("/dev/shm")


@pytest.fixture
def instance(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"tchan{os.getpid()}x{abs(hash(request.node.name)) % 10**6}"
    yield name
    for path in SHM.glob(f"shardbroker-{name}-*"):
        path.unlink()
    assert not list(SHM.glob(f"shardbroker-{name}-*"))


class Harness:
    """A controller on the running loop (instead of the supervisor's selector) and N channels."""

    def __init__(self, tmp_path: Path, instance: str, workers: int, *, serve: bool = True) -> None:
        self.loop = asyncio.get_running_loop()
        self.controller = Controller(BrokerConfig(data_dir=tmp_path, workers=workers), instance)
        self.controller.open()
        self.fds: list[int] = []
        if serve:
            self.controller.attach(self._register)
        self.rings: list[Ring] = []
        self.channels: list[ControllerChannel] = []
        for slot in range(workers):
            self.controller.before_spawn(slot)
            in_ring = Ring.attach(instance, control_ring(slot, Direction.TO_WORKER))
            out_ring = Ring.attach(instance, control_ring(slot, Direction.FROM_WORKER))
            self.rings += [in_ring, out_ring]
            self.channels.append(ControllerChannel(slot, in_ring, out_ring))

    def _register(self, fd: int, events: int, callback: Any) -> None:
        self.fds.append(fd)
        self.loop.add_reader(fd, callback, events)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.drain()
        for fd in self.fds:
            self.loop.remove_reader(fd)
        for ring in self.rings:
            ring.close()
        self.controller.close()


def create(name: str, n: int = 1) -> dict[str, Any]:
    return {"topics": [{"name": name, "num_partitions": n, "replication_factor": -1, "configs": {}}]}


def test_first_image_then_a_request_answered_after_every_worker_applied(
    tmp_path: Path, instance: str
) -> None:
    async def main() -> None:
        h = Harness(tmp_path, instance, workers=2)
        try:
            applied: list[tuple[int, int, int, int | None]] = []

            def subscriber(node: int) -> Any:
                async def on_image(old: MetadataImage, new: MetadataImage) -> None:
                    await asyncio.sleep(0.01)  # a subscriber that takes a while (opening logs)
                    # Runs before this worker acks: the controller has not seen the ack yet.
                    applied.append((node, old.version, new.version, h.controller.slots[node].acked))

                return on_image

            for node, channel in enumerate(h.channels):
                channel.subscribe(subscriber(node))
                await channel.start()
                assert channel.image.version == -1 and channel.image.brokers[1].port == 9093
            result = await h.channels[0].request("create_topics", create("a", 2), timeout=5)
            assert result["topics"][0]["error_code"] == 0 and result["version"] == 0
            # Both workers had applied version 0 when the answer came.
            assert sorted(applied) == [(0, -1, 0, -1), (1, -1, 0, -1)]
            for channel in h.channels:
                topic = channel.image.topics["a"]
                assert [p.leader for p in topic.partitions] == [0, 1]
            again = await h.channels[1].request("create_topics", create("a"), timeout=5)
            assert again["topics"][0]["error_code"] == 36 and again["version"] == 0
            pids = await h.channels[1].request("allocate_producer_ids", {"count": 1000})
            assert (pids["first"], pids["count"]) == (0, 1000)
            with pytest.raises(ControllerRequestError) as err:
                await h.channels[0].request("make_coffee", {})
            assert err.value.error_code == 42
        finally:
            await h.close()

    asyncio.run(main())


def test_no_answer_is_controller_unavailable_and_drain_fails_waiters(tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        h = Harness(tmp_path, instance, workers=1, serve=False)  # nobody reads the controller's side
        channel = h.channels[0]
        try:
            await channel.start()
            with pytest.raises(ControllerUnavailable, match="within 0 s"):
                await channel.request("create_topics", create("a"), timeout=0.2)
            waiting = asyncio.create_task(channel.request("create_topics", create("b"), timeout=30))
            await asyncio.sleep(0.05)
            await channel.drain()
            with pytest.raises(ControllerUnavailable, match="draining"):
                await waiting
            with pytest.raises(ControllerUnavailable, match="closed"):
                await channel.request("create_topics", create("c"))
        finally:
            await h.close()

    asyncio.run(main())


def test_images_waiting_at_boot_are_applied_before_start_returns(tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        h = Harness(tmp_path, instance, workers=1, serve=False)
        try:
            for name in ("a", "b", "c"):  # three images queue up before the worker starts
                h.controller.apply("create_topics", create(name))
            await h.channels[0].start()
            assert h.channels[0].image.version == 2 and set(h.channels[0].image.topics) == {"a", "b", "c"}
            h.controller.poll()
            assert h.controller.slots[0].acked == 2
        finally:
            await h.close()

    asyncio.run(main())


def test_image_before_start_is_an_error(tmp_path: Path, instance: str) -> None:
    async def main() -> None:
        h = Harness(tmp_path, instance, workers=1)
        try:
            with pytest.raises(ControllerUnavailable):
                _ = h.channels[0].image
        finally:
            await h.close()

    asyncio.run(main())
