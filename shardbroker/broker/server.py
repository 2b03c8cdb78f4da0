"""What a worker serves: builds its shared state, partition logs and Kafka listener.

``shardbroker serve``'s per-worker setup registers the ``ControllerChannel`` first, then calls
:func:`install`, which registers, in this order (started in order, drained in reverse):

1. ``ReplicaManager``: opens the partitions this worker leads (after the channel delivered the
   first metadata image), flushes and closes them last on drain;
2. ``GroupCoordinator``: loads the groups of the ``__consumer_offsets`` partitions this worker
   leads (after the ReplicaManager opened them), stops its timers on drain before the logs close;
3. ``ProduceForwarder`` (broker/forwarding.py): Produce batches of partitions led by another
   worker go there through rings; drained after the listener, whose requests may be waiting on it;
4. ``TransactionCoordinator``: loads the transactional ids of the ``__transaction_state``
   partitions this worker leads and finishes their prepared transactions (markers go through the
   forwarder); drained after the listener, before the forwarder and the logs;
5. ``ClientQuotaManager`` (broker/client_quota_manager.py): reads the image's client quotas and
   follows them, before the first client is accepted; its throttle times are published on the
   ReplicaManager's metrics tick;
   ``KafkaListener``: accepts clients once the logs are open; on drain it stops accepting and
   finishes in-flight requests first, while the logs are still open;
6. ``LocalClientService`` (broker/local_clients.py): local producers' rings and consumers'
   wake-ups, after the listener (drained before it: committed frames are appended while the
   logs are open);
7. a drain hook, ``GroupCoordinator.stop_serving``, drained first of all: it answers parked
   JoinGroup/SyncGroup requests at once, so the listener's drain does not wait for rebalances.

The handler registry is discovered here, in the worker, so a handler module that fails to import
is a boot failure (exit code 3: the supervisor halts) rather than an API silently missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shardbroker.broker.dispatch import discover
from shardbroker.broker.forwarding import ProduceForwarder
from shardbroker.broker.group_coordinator import GroupCoordinator, disabled_apis
from shardbroker.broker.listener import KafkaListener
from shardbroker.broker.local_clients import LocalClientService
from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.broker.transaction_coordinator import TransactionCoordinator
from shardbroker.broker.txn_markers import MarkerWriter
from shardbroker.broker.txn_verification import TransactionVerifier
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import TRANSACTION_PARTITION_VERIFICATION_ENABLE
from shardbroker.ipc.client_quotas import WorkerQuotaUsage
from shardbroker.ipc.client_telemetry import WorkerClientTelemetry
from shardbroker.ipc.counters import QUOTA_TOP, WorkerCounters
from shardbroker.ipc.group_offsets import WorkerGroupOffsets
from shardbroker.ipc.shm import instance_name

if TYPE_CHECKING:
    from shardbroker.broker.controller_channel import ControllerChannel
    from shardbroker.supervision.worker import Worker

__all__ = ["install"]


def install(
    worker: Worker,
    config: BrokerConfig,
    channel: ControllerChannel,
    counters: WorkerCounters | None = None,
    group_offsets: WorkerGroupOffsets | None = None,
    client_telemetry: WorkerClientTelemetry | None = None,
    quota_usage: WorkerQuotaUsage | None = None,
) -> WorkerState:
    """Register this worker's ReplicaManager, GroupCoordinator, TransactionCoordinator and
    KafkaListener (after the already-registered channel); return the ``WorkerState`` the
    handlers will see. ``counters``: this worker's cells of the supervisor's counter table
    (ipc/counters.py), private if None;
    ``group_offsets``: its rows of the committed-offsets table (ipc/group_offsets.py), likewise;
    ``client_telemetry``: its block of the client metrics table (ipc/client_telemetry.py), likewise;
    ``quota_usage``: its column of the client quota usage table (ipc/client_quotas.py; None: each
    worker enforces its share of every quota)."""
    counters = counters if counters is not None else WorkerCounters.private()
    replicas = ReplicaManager(worker.node_id, config, channel, counters=counters)
    groups = GroupCoordinator(
        worker.node_id,
        config,
        channel,
        replicas,
        offsets_table=group_offsets,
        on_rebalance=counters.rebalance,
    )
    state = WorkerState(
        node_id=worker.node_id,
        config=config,
        channel=channel,
        replicas=replicas,
        groups=groups,
        counters=counters,
    )
    if client_telemetry is not None:
        state.telemetry.exporter.table = client_telemetry
    replicas.add_publisher(state.telemetry.publish)
    state.forwarder = ProduceForwarder(worker.node_id, instance_name(config.data_dir.absolute()))
    worker.add_service(replicas)
    worker.add_service(groups)
    worker.add_service(state.forwarder)
    markers = MarkerWriter(worker.node_id, replicas, state.forwarder)
    state.transactions = TransactionCoordinator(worker.node_id, config, channel, replicas, markers)
    worker.add_service(state.transactions)
    if config.get(TRANSACTION_PARTITION_VERIFICATION_ENABLE):
        state.verifier = TransactionVerifier(worker.node_id, replicas, state.transactions, state.forwarder)
    if quota_usage is not None:
        state.quotas.share(quota_usage)
    worker.add_service(state.quotas)
    replicas.add_publisher(lambda: counters.publish_quotas(*state.quotas.report(QUOTA_TOP)))
    worker.add_service(KafkaListener(state, discover(exclude=disabled_apis(config))))
    worker.add_service(LocalClientService(state))
    worker.on_drain(groups.stop_serving)
    return state
