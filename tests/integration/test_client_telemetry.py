"""KIP-714 client telemetry on a real broker: client metrics resources set through two admin
clients, a confluent-kafka producer with ``enable.metrics.push`` on /metrics, and bad pushes.

Opens sockets (clients, raw requests, the HTTP scrape) and starts broker processes.
"""

from __future__ import annotations

import time
import uuid
import warnings

import confluent_kafka
import pytest

from shardbroker.client.connection import BrokerConnection
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.test_metrics_endpoint import scrape, values

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

pytestmark = pytest.mark.integration

INTERVAL_MS = 1000
QUEUE_TIME = "shardbroker_client_producer_record_queue_time_max_seconds"
LATENCY = "shardbroker_client_producer_request_latency_avg_seconds"


def raw(broker: BrokerProcess, client_id: str = "raw-telemetry") -> BrokerConnection:
    return BrokerConnection(broker.host, broker.ports[0], timeout=30.0, client_id=client_id).connect()


def describe(conn: BrokerConnection, name: str) -> dict[str, tuple[str | None, int]]:
    resource = m.DescribeConfigsRequest.DescribeConfigsResource(
        resource_type=16, resource_name=name, configuration_keys=None
    )
    (result,) = conn.send(m.DescribeConfigsRequest(resources=[resource])).results
    assert result.error_code == 0, result.error_message
    return {c.name: (c.value, c.config_source) for c in result.configs}


def alter(conn: BrokerConnection, name: str, **configs: str | None) -> tuple[int, str | None]:
    Req = m.IncrementalAlterConfigsRequest
    ops = [
        Req.AlterableConfig(name=k.replace("_", "."), config_operation=0 if v is not None else 1, value=v)
        for k, v in configs.items()
    ]
    request = Req(resources=[Req.AlterConfigsResource(resource_type=16, resource_name=name, configs=ops)])
    (res,) = conn.send(request).responses
    return res.error_code, res.error_message


def listed(conn: BrokerConnection) -> list[str]:
    response = conn.send(m.ListClientMetricsResourcesRequest(), 0)
    assert response.error_code == 0
    return [r.name for r in response.client_metrics_resources]


@pytest.mark.kafka_api("IncrementalAlterConfigs", "DescribeConfigs", client="kafka-python")
@pytest.mark.kafka_api(
    "IncrementalAlterConfigs", "DescribeConfigs", "ListClientMetricsResources", client="shardbroker"
)
def test_resources_through_kafka_python_and_raw_requests(broker: BrokerProcess) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap, client_id="cm-admin")
    try:
        result = admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.CLIENT_METRICS,
                    "producers",
                    configs={"metrics": "*", "interval.ms": "2000"},
                )
            ]
        )
        assert result == {"client_metrics": {"producers": "OK"}}
        (described,) = admin.describe_configs(
            [ConfigResource(ConfigResourceType.CLIENT_METRICS, "producers")]
        ).values()
        assert described["producers"]["interval.ms"]["value"] == "2000"
    finally:
        admin.close()
    with raw(broker) as conn:
        assert describe(conn, "producers") == {
            "metrics": ("*", 7),
            "interval.ms": ("2000", 7),
            "match": ("", 5),
        }
        assert describe(conn, "nothing") == {
            "metrics": ("", 5),
            "interval.ms": ("300000", 5),
            "match": ("", 5),
        }
        assert alter(conn, "producers", match="client_id=orders-.*") == (0, None)
        assert alter(conn, "other", metrics="org.apache.kafka.consumer.") == (0, None)
        assert listed(conn) == ["other", "producers"]
        # Kafka's refusals; nothing stored
        assert alter(conn, "producers", interval_ms="50")[0] == ErrorCode.INVALID_REQUEST
        assert alter(conn, "producers", match="client_id=(") == (
            ErrorCode.INVALID_CONFIG, "Illegal client matching pattern: client_id=("
        )  # fmt: skip
        assert alter(conn, "producers", colour="blue")[0] == ErrorCode.INVALID_REQUEST
        assert alter(conn, "", metrics="*")[0] == ErrorCode.INVALID_REQUEST
        assert describe(conn, "producers")["interval.ms"] == ("2000", 7)
        # deleting every config removes the resource
        assert alter(conn, "other", metrics=None) == (0, None)
        assert listed(conn) == ["producers"]


@pytest.mark.kafka_api("GetTelemetrySubscriptions", "PushTelemetry", client="confluent-kafka")
def test_a_librdkafka_producer_shows_up_on_metrics_within_two_intervals(
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory()
    with raw(broker) as conn:
        assert alter(conn, "prod", metrics="org.apache.kafka.producer.", interval_ms=str(INTERVAL_MS)) == (
            0,
            None,
        )
    producer = confluent_kafka.Producer(
        {"bootstrap.servers": broker.bootstrap, "client.id": "orders-app", "enable.metrics.push": True}
    )
    started = time.monotonic()
    try:

        def exported() -> bool | None:
            for _ in range(50):
                producer.produce("telemetry-t", b"x" * 100)
            producer.poll(0.05)
            samples = scrape(broker)
            return (
                bool(
                    values(samples, QUEUE_TIME, client_id="orders-app")
                    and values(samples, LATENCY, client_id="orders-app")
                )
                or None
            )

        wait_for(exported, timeout=30, what="the producer's pushed metrics on /metrics", interval=0.2)
        took = time.monotonic() - started
        producer.flush(10)
    finally:
        producer.flush(10)
    # the first push comes right after the first subscription, then one per interval (jittered)
    assert took < 2 * INTERVAL_MS / 1000 + 3.0, f"{took:.1f} s"
    samples = scrape(broker)
    ((_, latency),) = values(samples, LATENCY, client_id="orders-app")
    assert 0 < latency < 5
    assert [v for _, v in values(samples, "shardbroker_client_telemetry_instances")] != []
    assert not values(samples, "shardbroker_client_consumer_fetch_latency_avg_seconds")


@pytest.mark.kafka_api("GetTelemetrySubscriptions", "PushTelemetry", client="shardbroker")
def test_bad_pushes_are_refused_with_kafkas_errors(broker: BrokerProcess) -> None:
    with raw(broker, "bad-pusher") as conn:
        assert alter(conn, "bad", metrics="*", interval_ms="60000", match="client_id=bad-pusher") == (0, None)
        sub = conn.send(m.GetTelemetrySubscriptionsRequest(client_instance_id=uuid.UUID(int=0)), 0)
        assert sub.error_code == 0 and sub.requested_metrics == [""] and sub.push_interval_ms == 60000
        assert sub.telemetry_max_bytes == 1048576 and sub.accepted_compression_types == [4, 3, 1, 2]
        iid, sid = sub.client_instance_id, sub.subscription_id

        def push(metrics: bytes, *, sid: int = sid, compression: int = 0, terminating: bool = False) -> int:
            request = m.PushTelemetryRequest(
                client_instance_id=iid,
                subscription_id=sid,
                terminating=terminating,
                compression_type=compression,
                metrics=metrics,
            )
            return int(conn.send(request, 0).error_code)

        assert push(b"\xff\xff\xff\xffnot OTLP") == ErrorCode.INVALID_RECORD
        assert push(b"") == ErrorCode.THROTTLING_QUOTA_EXCEEDED  # 60 s not over
        again = conn.send(m.GetTelemetrySubscriptionsRequest(client_instance_id=iid), 0)
        assert again.error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
        assert push(b"", sid=sid + 1, terminating=True) == ErrorCode.UNKNOWN_SUBSCRIPTION_ID
    with raw(broker, "bad-pusher") as conn:  # a new instance: unknown subscription ids, a big push
        sub = conn.send(m.GetTelemetrySubscriptionsRequest(client_instance_id=uuid.UUID(int=0)), 0)
        big = m.PushTelemetryRequest(
            client_instance_id=sub.client_instance_id,
            subscription_id=sub.subscription_id,
            metrics=bytes(2 * 1048576),
        )
        assert conn.send(big, 0).error_code == ErrorCode.TELEMETRY_TOO_LARGE
        alien = m.PushTelemetryRequest(client_instance_id=uuid.uuid4(), subscription_id=12345, metrics=b"")
        assert conn.send(alien, 0).error_code == ErrorCode.UNKNOWN_SUBSCRIPTION_ID
    with raw(broker, "bad-pusher") as conn:  # a 100 MiB push is refused before it is read whole
        sub = conn.send(m.GetTelemetrySubscriptionsRequest(client_instance_id=uuid.UUID(int=0)), 0)
        huge = m.PushTelemetryRequest(
            client_instance_id=sub.client_instance_id,
            subscription_id=sub.subscription_id,
            metrics=bytes(100 * 1024 * 1024 - 1024),
        )
        assert conn.send(huge, 0, timeout=60).error_code == ErrorCode.TELEMETRY_TOO_LARGE
    samples = scrape(broker)  # nothing of the refused pushes was kept
    assert {v for _, v in values(samples, "shardbroker_client_telemetry_unexported_pushes_total")} == {0.0}
    assert not [n for n, labels, _ in samples if labels.get("client_id") == "bad-pusher"]
