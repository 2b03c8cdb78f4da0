"""What every request handler of one worker shares: its node id, config, controller channel, logs.

One ``WorkerState`` per worker process, built by ``broker.server.install`` and reached by handlers
as ``ctx.worker``. The metadata image is read through the channel on every access (never cached
here), so a handler always sees the newest image the worker applied.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.ipc.counters import WorkerCounters
from shardbroker.metadata.image import MetadataImage

if TYPE_CHECKING:
    from shardbroker.broker.controller_channel import ControllerChannel
    from shardbroker.broker.forwarding import ProduceForwarder
    from shardbroker.broker.group_coordinator import GroupCoordinator
    from shardbroker.broker.replica_manager import ReplicaManager

__all__ = ["WorkerState"]


@dataclass(eq=False)
class WorkerState:
    node_id: int
    config: BrokerConfig
    channel: ControllerChannel
    replicas: ReplicaManager
    #: Background work started by handlers (auto-creation of topics): referenced here so that the
    #: tasks are not garbage-collected mid-flight, keyed so the same work is not started twice.
    background: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    #: The group coordinator (None in tests that do not need one: group APIs then answer
    #: COORDINATOR_NOT_AVAILABLE).
    groups: GroupCoordinator | None = None
    #: This worker's shared counters (ipc/counters.py; private memory when no supervisor reads them).
    counters: WorkerCounters = field(default_factory=WorkerCounters.private)
    #: Passes Produce batches of partitions led elsewhere to their owner (None: answer
    #: NOT_LEADER_OR_FOLLOWER instead, as in tests without shared memory).
    forwarder: ProduceForwarder | None = None

    @property
    def image(self) -> MetadataImage:
        return self.channel.image

    def start_background(self, key: str, coro: Coroutine[Any, Any, Any]) -> bool:
        """Run ``coro`` unless work under ``key`` is still running; False if it was (coro closed)."""
        running = self.background.get(key)
        if running is not None and not running.done():
            coro.close()
            return False
        task = asyncio.get_running_loop().create_task(coro, name=f"worker-{self.node_id}-{key}")
        self.background[key] = task
        task.add_done_callback(lambda t: self._forget(key, t))
        return True

    def _forget(self, key: str, task: asyncio.Task[Any]) -> None:
        if self.background.get(key) is task:
            del self.background[key]
