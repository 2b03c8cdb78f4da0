"""The admin client's view of the cluster and its request plumbing (Kafka's AdminMetadataManager
and the call routing of KafkaAdminClient). Opens sockets.

:class:`ClusterAdmin` bootstraps from ``host:port[,host:port]``, keeps one connection per node
(:mod:`shardbroker.client.connection`: blocking sockets with timeouts, versions negotiated by
ApiVersions), answers Metadata, and routes calls: to the controller (retried with fresh metadata
while the answer is NOT_CONTROLLER, as Kafka's admin client does), or to a group's coordinator
(FindCoordinator, then the call; COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR and
COORDINATOR_LOAD_IN_PROGRESS are retried with a fresh FindCoordinator until the client's
timeout). The API families (admin_topics.py, admin_partitions.py, admin_groups.py) build on it;
admin.py mixes them into :class:`~shardbroker.client.admin.AdminClient`.

Every connection uses the client's ``security`` settings (TLS, SASL: client/client_security.py).

Errors: :class:`BrokerUnreachable` names the address; :class:`KafkaApiError` carries the Kafka
error code and says what failed. Not thread-safe; one request in flight per connection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Self, TypeVar
from uuid import UUID

from shardbroker.client.connection import (
    DEFAULT_TIMEOUT,
    AdminClientError,
    BrokerConnection,
    BrokerUnreachable,
    KafkaApiError,
    format_address,
    parse_address,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.client.client_security import ClientSecurity

__all__ = [
    "BrokerInfo",
    "ClusterAdmin",
    "ClusterMetadata",
    "TopicInfo",
    "TopicPartition",
    "parse_bootstrap",
]

TopicPartition = tuple[str, int]
_COORDINATOR_RETRIABLE = {
    ErrorCode.COORDINATOR_NOT_AVAILABLE,
    ErrorCode.NOT_COORDINATOR,
    ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
}
T = TypeVar("T")
K = TypeVar("K")


def parse_bootstrap(text: str) -> list[tuple[str, int]]:
    """``host:port[,host:port...]`` -> addresses; ValueError when malformed."""
    addresses = [parse_address(part) for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError(f"no address in {text!r}")
    return addresses


@dataclass(frozen=True)
class BrokerInfo:
    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        return format_address(self.host, self.port)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    error_code: int
    #: partition -> leader node id (-1: none)
    partitions: dict[int, int]
    #: None when the broker's Metadata is older than v10 (no topic ids)
    topic_id: UUID | None = None
    internal: bool = False
    #: partition -> replica node ids, and the in-sync ones
    replicas: dict[int, list[int]] = field(default_factory=dict)
    isr: dict[int, list[int]] = field(default_factory=dict)
    #: partition -> leader epoch (-1 when the broker's Metadata is older than v7)
    leader_epochs: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterMetadata:
    brokers: dict[int, BrokerInfo]
    topics: dict[str, TopicInfo]
    controller_id: int = -1
    cluster_id: str | None = None


class ClusterAdmin:
    """Connections, metadata and call routing shared by the admin client's API families.
    ``timeout`` (seconds) bounds each connect and each response, and the total time spent
    retrying retriable controller and coordinator errors."""

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        client_id: str = "shardbroker-admin",
        security: ClientSecurity | None = None,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.timeout = timeout
        self.client_id = client_id
        self.security = security
        self._bootstrap_conn: BrokerConnection | None = None
        self._nodes: dict[int, BrokerConnection] = {}
        self._brokers: dict[int, BrokerInfo] = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for conn in self._nodes.values():
            conn.close()
        self._nodes.clear()
        if self._bootstrap_conn is not None:
            self._bootstrap_conn.close()
            self._bootstrap_conn = None

    # -- connections ---------------------------------------------------------------------------

    def _new_conn(self, host: str, port: int) -> BrokerConnection:
        return BrokerConnection(
            host, port, timeout=self.timeout, client_id=self.client_id, security=self.security
        )

    def _any_conn(self) -> BrokerConnection:
        """A connection to some broker: the bootstrap one, else the first address that answers."""
        if self._bootstrap_conn is not None and self._bootstrap_conn.sock is not None:
            return self._bootstrap_conn
        failures: list[BrokerUnreachable] = []
        for host, port in self.bootstrap:
            try:
                self._bootstrap_conn = self._new_conn(host, port).connect()
                return self._bootstrap_conn
            except BrokerUnreachable as exc:
                failures.append(exc)
        if len(failures) == 1:
            raise failures[0]
        addresses = ",".join(f.address for f in failures)
        reasons = "; ".join(f"{f.address}: {f.reason}" for f in failures)
        raise BrokerUnreachable(addresses, reasons)

    def node(self, node_id: int) -> BrokerConnection:
        """The connection to broker ``node_id`` (from Metadata), opened on first use."""
        conn = self._nodes.get(node_id)
        if conn is not None and conn.sock is not None:
            return conn
        if node_id not in self._brokers:
            self.metadata([])
        info = self._brokers.get(node_id)
        if info is None:
            raise AdminClientError(f"no broker with node id {node_id} in the cluster metadata")
        conn = self._new_conn(info.host, info.port).connect()
        self._nodes[node_id] = conn
        return conn

    def _node_of(self, conn: BrokerConnection) -> int:
        for node_id, c in self._nodes.items():
            if c is conn:
                return node_id
        return -1

    # -- metadata ------------------------------------------------------------------------------

    def metadata(
        self, topics: Iterable[str] | None = None, *, allow_auto_topic_creation: bool = False
    ) -> ClusterMetadata:
        """Brokers and topics (all topics when ``topics`` is None). Unknown topics come back with
        error UNKNOWN_TOPIC_OR_PARTITION, unless ``allow_auto_topic_creation`` (what producers ask
        for) lets a broker with ``auto.create.topics.enable`` create them."""
        conn = self._any_conn()
        version = conn.version_for(m.MetadataRequest.API_KEY, "Metadata")
        wanted = None if topics is None else [m.MetadataRequest.MetadataRequestTopic(name=t) for t in topics]
        request = m.MetadataRequest(topics=wanted, allow_auto_topic_creation=allow_auto_topic_creation)
        response: m.MetadataResponse = conn.send(request, version)
        brokers = {b.node_id: BrokerInfo(b.node_id, b.host, b.port) for b in response.brokers}
        self._brokers = brokers
        found = {t.name or "": self._topic_info(t, version) for t in response.topics}
        return ClusterMetadata(brokers, found, response.controller_id, response.cluster_id)

    @staticmethod
    def _topic_info(t: m.MetadataResponse.MetadataResponseTopic, version: int) -> TopicInfo:
        parts = sorted(t.partitions, key=lambda p: p.partition_index)
        return TopicInfo(
            t.name or "",
            t.error_code,
            {p.partition_index: p.leader_id for p in parts},
            t.topic_id if version >= 10 else None,
            t.is_internal,
            {p.partition_index: list(p.replica_nodes) for p in parts},
            {p.partition_index: list(p.isr_nodes) for p in parts},
            {p.partition_index: p.leader_epoch for p in parts},
        )

    def topic(self, name: str) -> TopicInfo:
        """One topic's partitions and leaders; KafkaApiError (UNKNOWN_TOPIC_OR_PARTITION) if none."""
        info = self.metadata([name]).topics.get(name)
        if info is None or info.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise KafkaApiError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{name}' does not exist")
        if info.error_code != ErrorCode.NONE:
            raise KafkaApiError(info.error_code, f"topic '{name}'")
        return info

    # -- routing: the controller, a group's coordinator ----------------------------------------

    def _controller_call(self, what: str, call: Callable[[BrokerConnection], T]) -> T:
        """``call`` on the controller's connection (from Metadata; any broker when none is named),
        retried with fresh metadata while the answer is NOT_CONTROLLER."""
        deadline = time.monotonic() + self.timeout
        while True:
            md = self.metadata([])
            conn = self.node(md.controller_id) if md.controller_id in md.brokers else self._any_conn()
            try:
                return call(conn)
            except KafkaApiError as exc:
                if exc.error_code != ErrorCode.NOT_CONTROLLER or time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        deadline = time.monotonic() + self.timeout
        delay = 0.05
        while True:
            try:
                return call()
            except KafkaApiError as exc:
                if exc.error_code not in _COORDINATOR_RETRIABLE or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def find_coordinator(self, group_id: str) -> BrokerInfo:
        """The broker coordinating ``group_id`` (retried while the coordinator is not available)."""
        return self._retry(f"FindCoordinator({group_id})", lambda: self._find_coordinator(group_id))

    def _find_coordinator(self, group_id: str, key_type: int = 0) -> BrokerInfo:
        """``key_type`` 0: a group's coordinator, 1: a transactional id's."""
        conn = self._any_conn()
        version = conn.version_for(m.FindCoordinatorRequest.API_KEY, "FindCoordinator")
        if version >= 4:
            request = m.FindCoordinatorRequest(key_type=key_type, coordinator_keys=[group_id])
        else:
            request = m.FindCoordinatorRequest(key=group_id, key_type=key_type)
        response: m.FindCoordinatorResponse = conn.send(request, version)
        if version >= 4:
            if not response.coordinators:
                raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, "FindCoordinator answered no coordinator")
            c = response.coordinators[0]
            code, message, node_id, host, port = c.error_code, c.error_message, c.node_id, c.host, c.port
        else:
            code, message = response.error_code, response.error_message
            node_id, host, port = response.node_id, response.host, response.port
        if code != ErrorCode.NONE:
            what = "transactional id" if key_type else "group"
            raise KafkaApiError(
                code, f"coordinator of {what} '{group_id}'" + (f": {message}" if message else "")
            )
        info = BrokerInfo(node_id, host, port)
        self._brokers.setdefault(node_id, info)
        return info

    def _coordinator_call(self, group_id: str, call: Callable[[BrokerConnection], T], key_type: int = 0) -> T:
        """``call`` on the coordinator's connection (``key_type`` as `_find_coordinator`),
        retried (with a new FindCoordinator) on retriable coordinator errors."""

        def attempt() -> T:
            coordinator = self._find_coordinator(group_id, key_type)
            return call(self.node(coordinator.node_id))

        return self._retry(f"group '{group_id}'", attempt)

    # -- answers -------------------------------------------------------------------------------

    @staticmethod
    def _result_error(code: int, message: str | None, what: str) -> KafkaApiError | None:
        if code == ErrorCode.NONE:
            return None
        return KafkaApiError(code, f"{what}: {message}" if message else what)

    def _topic_results(self, results: Iterable[Any], api: str) -> dict[str, KafkaApiError | None]:
        """Per topic None or its error; NOT_CONTROLLER anywhere raises, so the call is retried on
        the controller."""
        out = {
            r.name or "": self._result_error(r.error_code, r.error_message, f"topic '{r.name}'")
            for r in results
        }
        if any(e is not None and e.error_code == ErrorCode.NOT_CONTROLLER for e in out.values()):
            raise KafkaApiError(ErrorCode.NOT_CONTROLLER, api)
        return out

    @staticmethod
    def _answered(names: Sequence[K], out: dict[K, KafkaApiError | None]) -> dict[K, KafkaApiError | None]:
        missing = [n for n in names if n not in out]
        if missing:
            raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, f"the broker did not answer for {missing}")
        return out
