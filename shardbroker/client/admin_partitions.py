"""The admin client's partition calls: CreatePartitions and Alter/ListPartitionReassignments
(sent to the controller, retried on NOT_CONTROLLER; a shardbroker partition has one replica, so
a move names one worker) and ListOffsets (earliest, latest, by timestamp; at each leader)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shardbroker.client.admin_cluster import ClusterAdmin, TopicPartition
from shardbroker.client.connection import BrokerConnection, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["EARLIEST", "LATEST", "PartitionAdmin", "PartitionReassignment"]

#: ListOffsets timestamps with a special meaning.
LATEST = -1
EARLIEST = -2


@dataclass(frozen=True)
class PartitionReassignment:
    """A partition move in progress (ListPartitionReassignments): its replicas now, the nodes it
    is moving to and the ones it is leaving."""

    replicas: list[int]
    adding_replicas: list[int]
    removing_replicas: list[int]


class PartitionAdmin(ClusterAdmin):
    """CreatePartitions, ListOffsets, AlterPartitionReassignments, ListPartitionReassignments."""

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
