"""What a worker serves: builds its shared state, partition logs and Kafka listener.

``shardbroker serve``'s per-worker setup registers the ``ControllerChannel`` first, then calls
:func:`install`, which registers, in this order (started in order, drained in reverse):

1. ``ReplicaManager``: opens the partitions this worker leads (after the channel delivered the
   first metadata image), flushes and closes them last on drain;
2. ``KafkaListener``: accepts clients once the logs are open; on drain it stops accepting and
   finishes in-flight requests first, while the logs are still open.

The handler registry is discovered here, in the worker, so a handler module that fails to import
is a boot failure (exit code 3: the supervisor halts) rather than an API silently missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardbroker.broker.dispatch import discover
from shardbroker.broker.listener import KafkaListener
from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config import BrokerConfig

if TYPE_CHECKING:
    from shardbroker.broker.controller_channel import ControllerChannel
    from shardbroker.worker import Worker

__all__ = ["install"]


def install(worker: Worker, config: BrokerConfig, channel: ControllerChannel) -> WorkerState:
    """Register this worker's ReplicaManager and KafkaListener (after the already-registered
    channel); return the ``WorkerState`` the handlers will see."""
    replicas = ReplicaManager(worker.node_id, config, channel)
    state = WorkerState(node_id=worker.node_id, config=config, channel=channel, replicas=replicas)
    worker.add_service(replicas)
    worker.add_service(KafkaListener(state, discover()))
    return state
