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

from shardbroker.broker.client_quota_manager import ClientQuotaManager
from shardbroker.broker.client_telemetry import ClientTelemetry
from shardbroker.broker.security_audit import SecurityAudit
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    ALLOW_EVERYONE_IF_NO_ACL_FOUND,
    AUTHORIZER_CLASS_NAME,
    CONTROLLER_QUOTA_WINDOW_NUM,
    CONTROLLER_QUOTA_WINDOW_SIZE_SECONDS,
    QUOTA_WINDOW_NUM,
    QUOTA_WINDOW_SIZE_SECONDS,
    SUPER_USERS,
    TELEMETRY_MAX_BYTES,
)
from shardbroker.ipc.counters import WorkerCounters
from shardbroker.metadata.image import MetadataImage
from shardbroker.security.acl import AclBinding
from shardbroker.security.authorizer import StandardAuthorizer

if TYPE_CHECKING:
    from shardbroker.broker.controller_channel import ControllerChannel
    from shardbroker.broker.forwarding import ProduceForwarder
    from shardbroker.broker.group_coordinator import GroupCoordinator
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.broker.transaction_coordinator import TransactionCoordinator
    from shardbroker.broker.txn_verification import TransactionVerifier

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
    #: The transaction coordinator (None in tests that do not need one: transaction APIs then
    #: answer COORDINATOR_NOT_AVAILABLE).
    transactions: TransactionCoordinator | None = None
    #: Asks the transaction coordinator before a transaction's first batch in a partition
    #: (KIP-890 part 1; None: ``transaction.partition.verification.enable=false``, or tests).
    verifier: TransactionVerifier | None = None
    #: This worker's shared counters (ipc/counters.py; private memory when no supervisor reads them).
    counters: WorkerCounters = field(default_factory=WorkerCounters.private)
    #: Passes Produce batches of partitions led elsewhere to their owner (None: answer
    #: NOT_LEADER_OR_FOLLOWER instead, as in tests without shared memory).
    forwarder: ProduceForwarder | None = None
    #: Authentication outcomes and authorization denials: counted in ``counters``, logged
    #: rate-limited (broker/security_audit.py).
    audit: SecurityAudit = field(init=False, repr=False)
    #: KIP-714 client instances and the client metrics exported (broker/client_telemetry.py).
    telemetry: ClientTelemetry = field(init=False, repr=False)
    #: Client quotas (broker/client_quota_manager.py): a service, following the channel's images.
    quotas: ClientQuotaManager = field(init=False, repr=False)
    _authorizing: bool = field(default=False, init=False, repr=False)
    _authorizer: StandardAuthorizer | None = field(default=None, init=False, repr=False)
    _authorizer_acls: tuple[AclBinding, ...] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.audit = SecurityAudit(self.counters, [e.listener for e in self.config.listeners])
        self.telemetry = ClientTelemetry(self.config.get(TELEMETRY_MAX_BYTES))
        self._authorizing = bool(self.config.get(AUTHORIZER_CLASS_NAME))
        self.quotas = ClientQuotaManager(
            self.config.workers,
            self.config.get(QUOTA_WINDOW_NUM),
            float(self.config.get(QUOTA_WINDOW_SIZE_SECONDS)),
            channel=self.channel,
            mutation_burst_seconds=float(
                self.config.get(CONTROLLER_QUOTA_WINDOW_NUM)
                * self.config.get(CONTROLLER_QUOTA_WINDOW_SIZE_SECONDS)
            ),
        )

    @property
    def image(self) -> MetadataImage:
        return self.channel.image

    @property
    def authorizer(self) -> StandardAuthorizer | None:
        """The authorizer of the newest image's ACLs; None without ``authorizer.class.name``.

        Rebuilt when a new image brings different ACLs (the test is identity first, so a request
        pays one ``is`` while the image stays the same)."""
        if not self._authorizing:
            return None
        acls = self.image.acls
        if acls is not self._authorizer_acls:
            if self._authorizer is None or acls != self._authorizer_acls:
                super_users: frozenset[str] = self.config.get(SUPER_USERS)
                allow_if_no_acl = self.config.get(ALLOW_EVERYONE_IF_NO_ACL_FOUND)
                self._authorizer = StandardAuthorizer(acls, super_users, allow_if_no_acl)
            self._authorizer_acls = acls
        return self._authorizer

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
