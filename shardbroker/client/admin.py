"""A small synchronous Kafka admin client over TCP, built on our sans-IO codec. Opens sockets.

For the operator CLI (``shardbroker topics|groups|produce|consume``), the TCP producer and
consumer (which use it as their view of the cluster) and tests: bootstrap from
``host:port[,host:port]``, Metadata, per-node connections (see :mod:`shardbroker.client.connection`:
blocking sockets with timeouts, versions negotiated by ApiVersions); the topic admin calls of
Kafka's ``kafka-topics``/``kafka-configs`` tools: CreateTopics, DeleteTopics and CreatePartitions
(sent to the controller, as Kafka's admin client does, and retried on NOT_CONTROLLER),
DescribeConfigs and IncrementalAlterConfigs; and the group admin calls Kafka's
``kafka-consumer-groups`` tool makes: FindCoordinator, ListGroups (every broker), DescribeGroups
(member subscriptions and assignments decoded from the consumer protocol's public layouts),
OffsetFetch, ListOffsets (earliest, latest, by timestamp), OffsetCommit (as an admin: generation
-1, empty member id, accepted only while the group has no members; or as a member, for the
consumer) and DeleteGroups.

Errors: :class:`BrokerUnreachable` names the address; :class:`KafkaApiError` carries the Kafka
error code (``ErrorCode``) and says what failed. Retriable coordinator errors
(COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS) are retried, with a
fresh FindCoordinator, until the client's timeout.

Not thread-safe; one request in flight per connection.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from shardbroker.client.connection import (
    DEFAULT_TIMEOUT,
    AdminClientError,
    BrokerConnection,
    BrokerUnreachable,
    KafkaApiError,
    UnsupportedApi,
    format_address,
    parse_address,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.consumer_protocol import (
    ConsumerAssignment,
    ConsumerSubscription,
    decode_consumer_assignment,
    decode_consumer_subscription,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "EARLIEST",
    "LATEST",
    "AdminClient",
    "AdminClientError",
    "BrokerInfo",
    "BrokerUnreachable",
    "ClusterMetadata",
    "ConfigEntry",
    "GroupDescription",
    "GroupListing",
    "KafkaApiError",
    "MemberDescription",
    "NewTopic",
    "PartitionReassignment",
    "TopicInfo",
    "UnsupportedApi",
    "parse_bootstrap",
]

#: ListOffsets timestamps with a special meaning.
LATEST = -1
EARLIEST = -2

#: DescribeConfigs / IncrementalAlterConfigs resource type of a topic (Kafka's ConfigResource.Type).
RESOURCE_TOPIC = 2
#: IncrementalAlterConfigs operations (Kafka's AlterConfigOp.OpType).
CONFIG_SET = 0
CONFIG_DELETE = 1
#: DescribeConfigs config_source values, by the names Kafka's admin client and tools print
#: (ConfigEntry.ConfigSource).
CONFIG_SOURCES = {
    0: "UNKNOWN",
    1: "DYNAMIC_TOPIC_CONFIG",
    2: "DYNAMIC_BROKER_CONFIG",
    3: "DYNAMIC_DEFAULT_BROKER_CONFIG",
    4: "STATIC_BROKER_CONFIG",
    5: "DEFAULT_CONFIG",
    6: "DYNAMIC_BROKER_LOGGER_CONFIG",
    7: "CLIENT_METRICS_CONFIG",
    8: "GROUP_CONFIG",
}

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


# -- results ---------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class PartitionReassignment:
    """A partition move in progress (ListPartitionReassignments): its replicas now, the nodes it
    is moving to and the ones it is leaving."""

    replicas: list[int]
    adding_replicas: list[int]
    removing_replicas: list[int]


@dataclass(frozen=True)
class NewTopic:
    """A CreateTopics entry; -1 partitions or replication factor = the broker's default."""

    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigEntry:
    """One DescribeConfigs entry; ``source`` by Kafka's ConfigSource name (``DEFAULT_CONFIG``...)."""

    name: str
    value: str | None
    source: str
    read_only: bool
    sensitive: bool

    @property
    def is_default(self) -> bool:
        return self.source == "DEFAULT_CONFIG"


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    #: "" when the broker's ListGroups is older than v4 (no state in it)
    state: str
    coordinator: int


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    #: decoded for protocol type "consumer", else None (raw bytes below)
    subscription: ConsumerSubscription | None
    assignment: ConsumerAssignment | None
    metadata_bytes: bytes = b""
    assignment_bytes: bytes = b""

    @property
    def assigned(self) -> list[TopicPartition]:
        if self.assignment is None:
            return []
        return sorted((t, p) for t, parts in self.assignment.partitions.items() for p in parts)


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberDescription]
    coordinator: BrokerInfo

    @property
    def exists(self) -> bool:
        return self.state != "Dead"


# -- the client ------------------------------------------------------------------------------------


class AdminClient:
    """Synchronous admin client. ``timeout`` (seconds) bounds each connect and each response, and
    the total time spent retrying retriable coordinator errors."""

    def __init__(
        self, bootstrap: str, *, timeout: float = DEFAULT_TIMEOUT, client_id: str = "shardbroker-admin"
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap)
        self.timeout = timeout
        self.client_id = client_id
        self._bootstrap_conn: BrokerConnection | None = None
        self._nodes: dict[int, BrokerConnection] = {}
        self._brokers: dict[int, BrokerInfo] = {}

    def __enter__(self) -> AdminClient:
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
        return BrokerConnection(host, port, timeout=self.timeout, client_id=self.client_id)

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

    # -- topics --------------------------------------------------------------------------------

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

    @staticmethod
    def _result_error(code: int, message: str | None, what: str) -> KafkaApiError | None:
        if code == ErrorCode.NONE:
            return None
        return KafkaApiError(code, f"{what}: {message}" if message else what)

    def create_topics(
        self, topics: Sequence[NewTopic], *, validate_only: bool = False
    ) -> dict[str, KafkaApiError | None]:
        """CreateTopics; per topic None (created) or the error it got (TOPIC_ALREADY_EXISTS...)."""
        Topic, Config = m.CreateTopicsRequest.CreatableTopic, m.CreateTopicsRequest.CreatableTopicConfig
        request = m.CreateTopicsRequest(
            topics=[
                Topic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs=[Config(name=k, value=v) for k, v in t.configs.items()],
                )
                for t in topics
            ],
            timeout_ms=int(self.timeout * 1000),
            validate_only=validate_only,
        )

        def call(conn: BrokerConnection) -> dict[str, KafkaApiError | None]:
            response: m.CreateTopicsResponse = conn.send(request)
            return self._topic_results(response.topics, "CreateTopics")

        return self._answered([t.name for t in topics], self._controller_call("CreateTopics", call))

    def delete_topics(self, names: Sequence[str]) -> dict[str, KafkaApiError | None]:
        """DeleteTopics by name; per topic None (deleted) or its error (UNKNOWN_TOPIC_OR_PARTITION...)."""

        def call(conn: BrokerConnection) -> dict[str, KafkaApiError | None]:
            version = conn.version_for(m.DeleteTopicsRequest.API_KEY, "DeleteTopics")
            if version >= 6:
                request = m.DeleteTopicsRequest(
                    topics=[m.DeleteTopicsRequest.DeleteTopicState(name=n) for n in names],
                    timeout_ms=int(self.timeout * 1000),
                )
            else:
                request = m.DeleteTopicsRequest(topic_names=list(names), timeout_ms=int(self.timeout * 1000))
            response: m.DeleteTopicsResponse = conn.send(request, version)
            return self._topic_results(response.responses, "DeleteTopics")

        return self._answered(names, self._controller_call("DeleteTopics", call))

    def create_partitions(
        self, counts: dict[str, int], *, validate_only: bool = False
    ) -> dict[str, KafkaApiError | None]:
        """CreatePartitions: grow each topic to ``counts[topic]`` partitions (placement left to the
        broker); per topic None or its error (INVALID_PARTITIONS when the count does not grow)."""
        request = m.CreatePartitionsRequest(
            topics=[
                m.CreatePartitionsRequest.CreatePartitionsTopic(name=t, count=n, assignments=None)
                for t, n in counts.items()
            ],
            timeout_ms=int(self.timeout * 1000),
            validate_only=validate_only,
        )

        def call(conn: BrokerConnection) -> dict[str, KafkaApiError | None]:
            response: m.CreatePartitionsResponse = conn.send(request)
            return self._topic_results(response.results, "CreatePartitions")

        return self._answered(list(counts), self._controller_call("CreatePartitions", call))

    # -- partition reassignments ---------------------------------------------------------------

    def alter_partition_reassignments(
        self, moves: Mapping[TopicPartition, int | None]
    ) -> dict[TopicPartition, KafkaApiError | None]:
        """AlterPartitionReassignments (sent to the controller): move each partition to the worker
        (node id) ``moves[(topic, partition)]``, or cancel its move in progress with None. A
        shardbroker partition has one replica, so each move names one node; the broker answers
        once the move is complete. Per partition None (done) or its error:
        INVALID_REPLICA_ASSIGNMENT (no such worker, an internal topic), UNKNOWN_TOPIC_OR_PARTITION,
        NO_REASSIGNMENT_IN_PROGRESS (a cancel with nothing to cancel)."""
        by_topic: dict[str, list[tuple[int, int | None]]] = defaultdict(list)
        for (t, p), node in moves.items():
            by_topic[t].append((p, node))
        Topic, Partition = (
            m.AlterPartitionReassignmentsRequest.ReassignableTopic,
            m.AlterPartitionReassignmentsRequest.ReassignablePartition,
        )
        request = m.AlterPartitionReassignmentsRequest(
            timeout_ms=int(self.timeout * 1000),
            topics=[
                Topic(
                    name=t,
                    partitions=[
                        Partition(partition_index=p, replicas=None if node is None else [node])
                        for p, node in parts
                    ],
                )
                for t, parts in by_topic.items()
            ],
        )

        def call(conn: BrokerConnection) -> dict[TopicPartition, KafkaApiError | None]:
            response: m.AlterPartitionReassignmentsResponse = conn.send(request)
            error = self._result_error(
                response.error_code, response.error_message, "AlterPartitionReassignments"
            )
            if error is not None:
                raise error  # NOT_CONTROLLER is retried by _controller_call
            return {
                (t.name, r.partition_index): self._result_error(
                    r.error_code, r.error_message, f"{t.name}-{r.partition_index}"
                )
                for t in response.responses
                for r in t.partitions
            }

        return self._answered(list(moves), self._controller_call("AlterPartitionReassignments", call))

    def list_partition_reassignments(
        self, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, PartitionReassignment]:
        """ListPartitionReassignments (sent to the controller): the moves in progress, of the
        given partitions or of all (None). Raises KafkaApiError for an error of the whole answer."""
        wanted: dict[str, list[int]] | None = None
        if partitions is not None:
            wanted = defaultdict(list)
            for t, p in partitions:
                wanted[t].append(p)
        Topics = m.ListPartitionReassignmentsRequest.ListPartitionReassignmentsTopics
        request = m.ListPartitionReassignmentsRequest(
            timeout_ms=int(self.timeout * 1000),
            topics=None
            if wanted is None
            else [Topics(name=t, partition_indexes=ps) for t, ps in wanted.items()],
        )

        def call(conn: BrokerConnection) -> dict[TopicPartition, PartitionReassignment]:
            response: m.ListPartitionReassignmentsResponse = conn.send(request)
            error = self._result_error(
                response.error_code, response.error_message, "ListPartitionReassignments"
            )
            if error is not None:
                raise error
            return {
                (t.name, r.partition_index): PartitionReassignment(
                    list(r.replicas), list(r.adding_replicas), list(r.removing_replicas)
                )
                for t in response.topics
                for r in t.partitions
            }

        return self._controller_call("ListPartitionReassignments", call)

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

    def describe_topic_configs(self, topics: Sequence[str]) -> dict[str, list[ConfigEntry]]:
        """Every config of each topic with its value and source (DescribeConfigs); raises
        KafkaApiError (UNKNOWN_TOPIC_OR_PARTITION...) for the first topic that fails."""
        conn = self._any_conn()
        request = m.DescribeConfigsRequest(
            resources=[
                m.DescribeConfigsRequest.DescribeConfigsResource(
                    resource_type=RESOURCE_TOPIC, resource_name=t, configuration_keys=None
                )
                for t in topics
            ]
        )
        response: m.DescribeConfigsResponse = conn.send(request)
        out: dict[str, list[ConfigEntry]] = {}
        for r in response.results:
            error = self._result_error(r.error_code, r.error_message, f"configs of topic '{r.resource_name}'")
            if error is not None:
                raise error
            out[r.resource_name] = sorted(
                (
                    ConfigEntry(
                        c.name,
                        c.value,
                        CONFIG_SOURCES.get(c.config_source, f"SOURCE_{c.config_source}"),
                        c.read_only,
                        c.is_sensitive,
                    )
                    for c in r.configs
                ),
                key=lambda c: c.name,
            )
        missing = [t for t in topics if t not in out]
        if missing:
            raise KafkaApiError(
                ErrorCode.UNKNOWN_SERVER_ERROR, f"DescribeConfigs did not answer for {missing}"
            )
        return out

    def alter_topic_configs(
        self, topic: str, set_configs: dict[str, str], delete_configs: Sequence[str] = ()
    ) -> None:
        """IncrementalAlterConfigs on one topic: SET each of ``set_configs``, DELETE (back to the
        default) each of ``delete_configs``; other overrides stay. Raises KafkaApiError."""
        Op = m.IncrementalAlterConfigsRequest.AlterableConfig
        ops = [Op(name=k, config_operation=CONFIG_SET, value=v) for k, v in set_configs.items()]
        ops += [Op(name=k, config_operation=CONFIG_DELETE, value=None) for k in delete_configs]
        request = m.IncrementalAlterConfigsRequest(
            resources=[
                m.IncrementalAlterConfigsRequest.AlterConfigsResource(
                    resource_type=RESOURCE_TOPIC, resource_name=topic, configs=ops
                )
            ]
        )
        response: m.IncrementalAlterConfigsResponse = self._any_conn().send(request)
        for r in response.responses:
            error = self._result_error(r.error_code, r.error_message, f"configs of topic '{r.resource_name}'")
            if error is not None:
                raise error

    # -- groups --------------------------------------------------------------------------------

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

    def _find_coordinator(self, group_id: str) -> BrokerInfo:
        conn = self._any_conn()
        version = conn.version_for(m.FindCoordinatorRequest.API_KEY, "FindCoordinator")
        if version >= 4:
            request = m.FindCoordinatorRequest(key_type=0, coordinator_keys=[group_id])
        else:
            request = m.FindCoordinatorRequest(key=group_id, key_type=0)
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
            raise KafkaApiError(
                code, f"coordinator of group '{group_id}'" + (f": {message}" if message else "")
            )
        info = BrokerInfo(node_id, host, port)
        self._brokers.setdefault(node_id, info)
        return info

    def _coordinator_call(self, group_id: str, call: Callable[[BrokerConnection], T]) -> T:
        """``call`` on the coordinator's connection, retried (with a new FindCoordinator) on
        retriable coordinator errors."""

        def attempt() -> T:
            coordinator = self._find_coordinator(group_id)
            return call(self.node(coordinator.node_id))

        return self._retry(f"group '{group_id}'", attempt)

    def list_groups(self) -> list[GroupListing]:
        """Every group of every broker (ListGroups is answered per coordinator)."""
        brokers = self.metadata([]).brokers
        groups: dict[str, GroupListing] = {}
        for node_id in sorted(brokers):
            conn = self.node(node_id)
            version = conn.version_for(m.ListGroupsRequest.API_KEY, "ListGroups")
            response = self._retry("ListGroups", functools.partial(self._checked_list_groups, conn, version))
            for g in response.groups:
                state = g.group_state if version >= 4 else ""
                groups[g.group_id] = GroupListing(g.group_id, g.protocol_type, state, node_id)
        return sorted(groups.values(), key=lambda g: g.group_id)

    @staticmethod
    def _checked_list_groups(conn: BrokerConnection, version: int) -> m.ListGroupsResponse:
        response: m.ListGroupsResponse = conn.send(m.ListGroupsRequest(), version)
        if response.error_code != ErrorCode.NONE:
            raise KafkaApiError(response.error_code, f"ListGroups on {conn.address}")
        return response

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, protocol and members of one group. A group that does not exist is "Dead"."""

        def call(conn: BrokerConnection) -> GroupDescription:
            response: m.DescribeGroupsResponse = conn.send(m.DescribeGroupsRequest(groups=[group_id]))
            if len(response.groups) != 1:
                raise KafkaApiError(
                    ErrorCode.UNKNOWN_SERVER_ERROR, f"DescribeGroups answered {len(response.groups)} groups"
                )
            g = response.groups[0]
            if g.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
                g.group_state = "Dead"
            elif g.error_code != ErrorCode.NONE:
                raise KafkaApiError(g.error_code, f"describing group '{group_id}'")
            consumer = g.protocol_type == "consumer"
            members = [self._member(mem, consumer) for mem in g.members]
            info = self._brokers.get(self._node_of(conn), BrokerInfo(-1, conn.host, conn.port))
            return GroupDescription(
                g.group_id, g.group_state, g.protocol_type, g.protocol_data, members, info
            )

        return self._coordinator_call(group_id, call)

    def _node_of(self, conn: BrokerConnection) -> int:
        for node_id, c in self._nodes.items():
            if c is conn:
                return node_id
        return -1

    @staticmethod
    def _member(mem: Any, consumer: bool) -> MemberDescription:
        subscription = assignment = None
        if consumer:
            try:
                subscription = (
                    decode_consumer_subscription(mem.member_metadata) if mem.member_metadata else None
                )
            except ProtocolError:
                subscription = None
            try:
                assignment = decode_consumer_assignment(mem.member_assignment)
            except ProtocolError:
                assignment = None
        return MemberDescription(
            mem.member_id,
            mem.group_instance_id,
            mem.client_id,
            mem.client_host,
            subscription,
            assignment,
            bytes(mem.member_metadata),
            bytes(mem.member_assignment),
        )

    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (all of them when ``partitions`` is None); partitions
        with nothing committed are left out."""
        wanted: dict[str, list[int]] | None = None
        if partitions is not None:
            wanted = defaultdict(list)
            for t, p in partitions:
                wanted[t].append(p)

        def call(conn: BrokerConnection) -> dict[TopicPartition, int]:
            version = conn.version_for(m.OffsetFetchRequest.API_KEY, "OffsetFetch")
            out: dict[TopicPartition, int] = {}
            if version >= 8:
                topics8 = (
                    None
                    if wanted is None
                    else [
                        m.OffsetFetchRequest.OffsetFetchRequestTopics(name=t, partition_indexes=ps)
                        for t, ps in wanted.items()
                    ]
                )
                group = m.OffsetFetchRequest.OffsetFetchRequestGroup(group_id=group_id, topics=topics8)
                response8: m.OffsetFetchResponse = conn.send(m.OffsetFetchRequest(groups=[group]), version)
                if len(response8.groups) != 1:
                    raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, "OffsetFetch answered no group")
                code = response8.groups[0].error_code
                topics_out: list[Any] = response8.groups[0].topics
            else:
                topics = (
                    None
                    if wanted is None
                    else [
                        m.OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                        for t, ps in wanted.items()
                    ]
                )
                response: m.OffsetFetchResponse = conn.send(
                    m.OffsetFetchRequest(group_id=group_id, topics=topics), version
                )
                code, topics_out = response.error_code, response.topics
            if code != ErrorCode.NONE:
                raise KafkaApiError(code, f"offsets of group '{group_id}'")
            for t in topics_out:
                for p in t.partitions:
                    if p.error_code not in (ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                        raise KafkaApiError(
                            p.error_code, f"offset of group '{group_id}' for {t.name}-{p.partition_index}"
                        )
                    if p.error_code == ErrorCode.NONE and p.committed_offset >= 0:
                        out[(t.name, p.partition_index)] = p.committed_offset
            return out

        return self._coordinator_call(group_id, call)

    def list_offsets(self, specs: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """Offsets by ListOffsets: ``specs`` maps a partition to :data:`EARLIEST`, :data:`LATEST`
        or a timestamp (ms); the answer is the offset (-1 when no record has a timestamp at or
        after the one asked for). Raises KafkaApiError for an unknown topic or partition."""
        topics = {t for t, _ in specs}
        md = self.metadata(sorted(topics))
        by_leader: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
        for (t, p), ts in specs.items():
            info = md.topics.get(t)
            if info is None or info.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise KafkaApiError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic '{t}' does not exist")
            if info.error_code != ErrorCode.NONE:
                raise KafkaApiError(info.error_code, f"topic '{t}'")
            leader = info.partitions.get(p)
            if leader is None:
                raise KafkaApiError(
                    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                    f"topic '{t}' has no partition {p} (partitions 0-{len(info.partitions) - 1})",
                )
            if leader < 0:
                raise KafkaApiError(ErrorCode.LEADER_NOT_AVAILABLE, f"{t}-{p} has no leader")
            by_leader[leader][t].append((p, ts))
        out: dict[TopicPartition, int] = {}
        for leader, topic_map in sorted(by_leader.items()):
            conn = self.node(leader)
            version = conn.version_for(m.ListOffsetsRequest.API_KEY, "ListOffsets")
            request = m.ListOffsetsRequest(
                replica_id=-1,
                topics=[
                    m.ListOffsetsRequest.ListOffsetsTopic(
                        name=t,
                        partitions=[
                            m.ListOffsetsRequest.ListOffsetsPartition(partition_index=p, timestamp=ts)
                            for p, ts in parts
                        ],
                    )
                    for t, parts in topic_map.items()
                ],
                timeout_ms=int(self.timeout * 1000),
            )
            response: m.ListOffsetsResponse = conn.send(request, version)
            for rt in response.topics:
                for rp in rt.partitions:
                    if rp.error_code != ErrorCode.NONE:
                        raise KafkaApiError(rp.error_code, f"ListOffsets for {rt.name}-{rp.partition_index}")
                    out[(rt.name, rp.partition_index)] = rp.offset
        missing = set(specs) - set(out)
        if missing:
            raise KafkaApiError(
                ErrorCode.UNKNOWN_SERVER_ERROR, f"ListOffsets did not answer for {sorted(missing)}"
            )
        return out

    def commit_offsets(
        self,
        group_id: str,
        offsets: dict[TopicPartition, int],
        *,
        generation_id: int = -1,
        member_id: str = "",
        group_instance_id: str | None = None,
    ) -> None:
        """Commit ``offsets`` for the group: by default as an admin (generation -1, empty member
        id, as Kafka's tool), which the coordinator accepts only while the group has no members;
        a consumer passes its generation and member id."""
        grouped: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (t, p), offset in sorted(offsets.items()):
            grouped[t].append((p, offset))
        request = m.OffsetCommitRequest(
            group_id=group_id,
            generation_id_or_member_epoch=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            topics=[
                m.OffsetCommitRequest.OffsetCommitRequestTopic(
                    name=t,
                    partitions=[
                        m.OffsetCommitRequest.OffsetCommitRequestPartition(
                            partition_index=p, committed_offset=o
                        )
                        for p, o in parts
                    ],
                )
                for t, parts in grouped.items()
            ],
        )

        def call(conn: BrokerConnection) -> None:
            response: m.OffsetCommitResponse = conn.send(request)
            for rt in response.topics:
                for rp in rt.partitions:
                    if rp.error_code != ErrorCode.NONE:
                        raise KafkaApiError(
                            rp.error_code,
                            f"committing for group '{group_id}' on {rt.name}-{rp.partition_index}",
                        )

        self._coordinator_call(group_id, call)

    def delete_groups(self, group_ids: Sequence[str]) -> dict[str, KafkaApiError | None]:
        """Delete groups (each at its coordinator); per group None or the error it got."""
        out: dict[str, KafkaApiError | None] = {}
        for group_id in group_ids:

            def call(conn: BrokerConnection, g: str = group_id) -> None:
                response: m.DeleteGroupsResponse = conn.send(m.DeleteGroupsRequest(groups_names=[g]))
                for r in response.results:
                    if r.group_id == g and r.error_code != ErrorCode.NONE:
                        raise KafkaApiError(r.error_code, f"deleting group '{g}'")

            try:
                self._coordinator_call(group_id, call)
                out[group_id] = None
            except KafkaApiError as exc:
                out[group_id] = exc
        return out
