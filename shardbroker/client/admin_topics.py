"""The admin client's topic and config calls, as Kafka's ``kafka-topics``/``kafka-configs`` make
them: CreateTopics and DeleteTopics (sent to the controller, retried on NOT_CONTROLLER),
DescribeConfigs and IncrementalAlterConfigs of topics (any broker)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from shardbroker.client.admin_cluster import ClusterAdmin
from shardbroker.client.connection import BrokerConnection, KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode

__all__ = ["CONFIG_SOURCES", "ConfigEntry", "NewTopic", "TopicAdmin"]

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


class TopicAdmin(ClusterAdmin):
    """CreateTopics, DeleteTopics, DescribeConfigs and IncrementalAlterConfigs of topics."""

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
