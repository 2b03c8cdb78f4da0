"""The admin client's operator calls, as Kafka's Admin makes them: DescribeLogDirs and
AlterReplicaLogDirs (at each broker: each answers for its own replicas), DescribeTopicPartitions
(KIP-966: page after page by the response's cursor, at any broker), ElectLeaders and
UpdateFeatures (at the controller), and the features of ApiVersions v3+ (``describeFeatures``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from shardbroker import __version__
from shardbroker.client.admin_cluster import ClusterAdmin, TopicPartition
from shardbroker.client.connection import BrokerConnection, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["FeatureMetadata", "LogDir", "OperationsAdmin"]

_DTP = m.DescribeTopicPartitionsRequest


@dataclass(frozen=True)
class LogDir:
    """One broker's log dir: its partitions' sizes, its file system's space (-1 before v4)."""

    broker: int
    path: str
    error_code: int
    sizes: dict[TopicPartition, int]
    total_bytes: int
    usable_bytes: int


@dataclass(frozen=True)
class FeatureMetadata:
    #: feature -> (min, max) level the broker supports
    supported: dict[str, tuple[int, int]]
    #: feature -> finalized level
    finalized: dict[str, int]
    epoch: int


class OperationsAdmin(ClusterAdmin):
    def describe_log_dirs(self, topics: Mapping[str, Iterable[int]] | None = None) -> list[LogDir]:
        """Every broker's log dirs, with the partitions asked for (all when ``topics`` is None)."""
        wanted = None
        if topics is not None:
            T = m.DescribeLogDirsRequest.DescribableLogDirTopic
            wanted = [T(topic=t, partitions=list(p)) for t, p in topics.items()]
        out = []
        for node in sorted(self.metadata([]).brokers):
            response: m.DescribeLogDirsResponse = self.node(node).send(
                m.DescribeLogDirsRequest(topics=wanted)
            )
            if response.error_code:
                raise KafkaApiError(response.error_code, f"DescribeLogDirs at broker {node}")
            out += [
                LogDir(
                    node,
                    r.log_dir,
                    r.error_code,
                    {(t.name, p.partition_index): p.partition_size for t in r.topics for p in t.partitions},
                    r.total_bytes,
                    r.usable_bytes,
                )
                for r in response.results
            ]
        return out

    def alter_replica_log_dirs(
        self, broker: int, path: str, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """Ask ``broker`` to move its replicas of ``partitions`` to ``path``: the error code of each."""
        by_topic: dict[str, list[int]] = {}
        for t, i in partitions:
            by_topic.setdefault(t, []).append(i)
        D = m.AlterReplicaLogDirsRequest.AlterReplicaLogDir
        T = m.AlterReplicaLogDirsRequest.AlterReplicaLogDirTopic
        request = m.AlterReplicaLogDirsRequest(
            dirs=[D(path=path, topics=[T(name=t, partitions=p) for t, p in by_topic.items()])]
        )
        response: m.AlterReplicaLogDirsResponse = self.node(broker).send(request)
        return {
            (t.topic_name, p.partition_index): p.error_code for t in response.results for p in t.partitions
        }

    def describe_topic_partitions(
        self, topics: Iterable[str] = (), *, page_limit: int = 2000
    ) -> Iterator[m.DescribeTopicPartitionsResponse]:
        """The pages of DescribeTopicPartitions for ``topics`` (every topic when empty), each
        request carrying the previous answer's cursor, until an answer has none."""
        names = list(topics)
        cursor: _DTP.Cursor | None = None
        conn: BrokerConnection = self._any_conn()
        while True:
            request = _DTP(
                topics=[_DTP.TopicRequest(name=n) for n in names], response_partition_limit=page_limit
            )
            request.cursor = cursor
            response: m.DescribeTopicPartitionsResponse = conn.send(request)
            yield response
            nxt = response.next_cursor
            if nxt is None:
                return
            cursor = _DTP.Cursor(topic_name=nxt.topic_name, partition_index=nxt.partition_index)
            if names:  # Kafka: the cursor's topic and the ones after it
                names = [n for n in names if n >= nxt.topic_name]

    def elect_leaders(
        self, partitions: Iterable[TopicPartition] | None, election_type: int = 0
    ) -> dict[TopicPartition, int]:
        """Elect the leaders of ``partitions`` (all when None): the error code of each answered."""
        wanted = None
        if partitions is not None:
            by_topic: dict[str, list[int]] = {}
            for t, i in partitions:
                by_topic.setdefault(t, []).append(i)
            T = m.ElectLeadersRequest.TopicPartitions
            wanted = [T(topic=t, partitions=p) for t, p in by_topic.items()]

        def call(conn: BrokerConnection) -> dict[TopicPartition, int]:
            request = m.ElectLeadersRequest(election_type=election_type, topic_partitions=wanted)
            response: m.ElectLeadersResponse = conn.send(request)
            if response.error_code:
                raise KafkaApiError(response.error_code, "ElectLeaders")
            return {
                (r.topic, p.partition_id): p.error_code
                for r in response.replica_election_results
                for p in r.partition_result
            }

        return self._controller_call("ElectLeaders", call)

    def describe_features(self) -> FeatureMetadata:
        """The features a broker reports in its ApiVersions answer (v3+)."""
        request = m.ApiVersionsRequest(
            client_software_name=self.client_id, client_software_version=__version__
        )
        r: m.ApiVersionsResponse = self._any_conn().send(request)
        return FeatureMetadata(
            {f.name: (f.min_version, f.max_version) for f in r.supported_features},
            {f.name: f.max_version_level for f in r.finalized_features},
            r.finalized_features_epoch,
        )

    def update_features(self, levels: Mapping[str, tuple[int, int]], *, validate_only: bool = False) -> None:
        """Set each feature to (level, upgrade type); KafkaApiError with the broker's message."""
        K = m.UpdateFeaturesRequest.FeatureUpdateKey
        request = m.UpdateFeaturesRequest(
            feature_updates=[
                K(feature=f, max_version_level=lv, upgrade_type=kind) for f, (lv, kind) in levels.items()
            ],
            validate_only=validate_only,
        )

        def call(conn: BrokerConnection) -> None:
            response: m.UpdateFeaturesResponse = conn.send(request)
            if response.error_code != ErrorCode.NONE:
                raise KafkaApiError(response.error_code, response.error_message or "UpdateFeatures")

        self._controller_call("UpdateFeatures", call)
