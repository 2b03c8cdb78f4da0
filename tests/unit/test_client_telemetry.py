"""KIP-714 client telemetry: client metrics resources, subscriptions, push rules, OTLP payloads,
the exported series (metadata/client_metrics.py, control/client_metrics_control.py,
broker/client_metrics.py, broker/client_telemetry.py, ipc/ and observability/client_telemetry.py)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)

from shardbroker.broker.client_metrics import (
    ClientAttributes,
    ClientMetricsManager,
    TelemetryRefusal,
    check_match_value,
    subscription_id,
)
from shardbroker.broker.client_telemetry import MAX_CLIENT_IDS, ClientTelemetry, decode_metrics
from shardbroker.control.controller_state import ControllerState, OpContext, handle, replay
from shardbroker.ipc.client_telemetry import WorkerClientTelemetry
from shardbroker.metadata.client_metrics import ClientMetricsConfigError, parse_subscription
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.compression import CompressionType, compress
from shardbroker.protocol.errors import ErrorCode

PRODUCER = ClientAttributes("orders-producer", "librdkafka", "2.16.0", "127.0.0.1", "50000")
CONSUMER = ClientAttributes("billing", "apache-kafka-java", "3.9.0", "10.0.0.7", "41000")
MAX_BYTES = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def manager(resources: dict[str, dict[str, str]], clock: Clock | None = None) -> ClientMetricsManager:
    mgr = ClientMetricsManager(MAX_BYTES, clock=clock or Clock())
    mgr.update(resources)
    return mgr


# -- resources ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "configs", "code", "message"),
    [
        ("", {}, ErrorCode.INVALID_REQUEST, "Subscription name can't be empty"),
        ("s", {"metric": "x"}, ErrorCode.INVALID_REQUEST, "Unknown client metrics configuration: metric"),
        ("s", {"interval.ms": "99"}, ErrorCode.INVALID_REQUEST, "interval must be between 100 and 3600000"),
        ("s", {"interval.ms": "3600001"}, ErrorCode.INVALID_REQUEST, "interval must be between"),
        ("s", {"interval.ms": "soon"}, ErrorCode.INVALID_CONFIG, "Not a number of type INT"),
        ("s", {"match": "client_id"}, ErrorCode.INVALID_CONFIG, "Illegal client matching pattern: client_id"),
        ("s", {"match": "host=a"}, ErrorCode.INVALID_CONFIG, "Illegal client matching pattern: host=a"),
        ("s", {"match": "client_id=a=b"}, ErrorCode.INVALID_CONFIG, "Illegal client matching pattern"),
    ],
)
def test_resource_refusals_are_kafkas(
    name: str, configs: dict[str, str], code: ErrorCode, message: str
) -> None:
    with pytest.raises(ClientMetricsConfigError, match=message) as err:
        parse_subscription(name, configs)
    assert err.value.error_code == code


def test_match_regexes_are_compiled_with_re2_rules() -> None:
    check_match_value("client_id=orders-.*, client_software_name=librdkafka")
    for bad in ("client_id=(unclosed", "client_id=a(?!b)", "client_software_version=\\1"):
        with pytest.raises(ClientMetricsConfigError, match="Illegal client matching pattern") as err:
            check_match_value(bad)
        assert err.value.error_code == ErrorCode.INVALID_CONFIG


def _alter(
    state: ControllerState, name: str, ops: list[dict[str, Any]]
) -> tuple[ControllerState, dict[str, Any]]:
    out = handle(
        state, "alter_client_metrics", {"resources": [{"name": name, "ops": ops}]}, OpContext(workers=2)
    )
    for record in out.records:
        assert record["type"] == "client_metrics"
    return out.state, out.result["resources"][0]


def test_resources_are_recorded_replayed_and_removed_with_their_last_config() -> None:
    state = ControllerState()
    state, res = _alter(
        state, "prod", [{"name": "metrics", "op": "set", "value": "org.apache.kafka.producer."}]
    )
    assert res["error_code"] == 0
    state, res = _alter(state, "prod", [{"name": "interval.ms", "op": "set", "value": "1000"}])
    state, res = _alter(
        state, "prod", [{"name": "metrics", "op": "append", "value": "org.apache.kafka.consumer."}]
    )
    assert dict(state.client_metrics["prod"]) == {
        "metrics": "org.apache.kafka.producer.,org.apache.kafka.consumer.",
        "interval.ms": "1000",
    }
    before = state
    state, res = _alter(state, "prod", [{"name": "interval.ms", "op": "set", "value": "10"}])
    assert res["error_code"] == ErrorCode.INVALID_REQUEST and state is not None
    assert dict(state.client_metrics) == dict(before.client_metrics)  # nothing half-stored
    assert ControllerState.from_dict(state.to_dict()).client_metrics == state.client_metrics
    image = state.image("c", ())
    assert MetadataImage.from_dict(image.to_dict()).client_metrics == image.client_metrics
    state, _ = _alter(
        state, "prod", [{"name": "metrics", "op": "delete"}, {"name": "interval.ms", "op": "delete"}]
    )
    assert "prod" not in state.client_metrics
    records = [{"offset": i, **r} for i, r in enumerate(_records_of_a_session())]
    assert replay(records).client_metrics == {"a": {"metrics": "*"}}


def _records_of_a_session() -> list[dict[str, Any]]:
    state, out = ControllerState(), []
    for name, ops in [
        ("a", [{"name": "metrics", "op": "set", "value": "*"}]),
        ("b", [{"name": "match", "op": "set", "value": "client_id=x"}]),
        ("b", [{"name": "match", "op": "delete"}]),
    ]:
        result = handle(
            state, "alter_client_metrics", {"resources": [{"name": name, "ops": ops}]}, OpContext(2)
        )
        state = result.state
        out += [{k: v for k, v in r.items() if k != "offset"} for r in result.records]
    return out


# -- subscriptions -----------------------------------------------------------------------------


def test_a_new_client_gets_an_id_and_without_a_matching_resource_an_empty_subscription() -> None:
    mgr = manager({"java-only": {"metrics": "*", "match": "client_software_name=apache-kafka-java"}})
    inst = mgr.get_subscriptions(uuid.UUID(int=0), PRODUCER)
    assert inst.instance_id.int != 0
    assert inst.metrics == () and inst.push_interval_ms == 300_000


def test_matching_resources_are_united_at_their_smallest_interval() -> None:
    mgr = manager(
        {
            "a": {
                "metrics": "org.apache.kafka.producer.",
                "interval.ms": "5000",
                "match": "client_id=orders-.*",
            },
            "b": {"metrics": "org.apache.kafka.producer.node.", "interval.ms": "2000"},
            "c": {"metrics": "org.apache.kafka.consumer.", "match": "client_id=orders"},  # not a full match
            "d": {"metrics": "x.", "match": "client_id=orders-.*,client_source_port=1"},  # one selector fails
        }
    )
    inst = mgr.get_subscriptions(uuid.UUID(int=0), PRODUCER)
    assert inst.metrics == ("org.apache.kafka.producer.", "org.apache.kafka.producer.node.")
    assert inst.push_interval_ms == 2000
    everything = manager({"all": {"metrics": "*,a."}, "other": {"metrics": "b."}})
    assert everything.get_subscriptions(uuid.UUID(int=0), CONSUMER).metrics == ("*",)


def test_subscription_ids_change_with_the_subscription_and_agree_between_workers() -> None:
    iid = uuid.uuid4()
    one = manager({"a": {"metrics": "x.", "interval.ms": "1000"}})
    two = manager({"a": {"metrics": "x.", "interval.ms": "1000"}})
    sid = one.get_subscriptions(iid, PRODUCER).subscription_id
    assert sid == two.get_subscriptions(iid, PRODUCER).subscription_id == subscription_id(("x.",), 1000, iid)
    assert -(1 << 31) <= sid < 1 << 31
    assert subscription_id(("x.",), 1000, uuid.uuid4()) != sid
    assert subscription_id(("x.",), 2000, iid) != sid
    assert subscription_id(("y.",), 1000, iid) != sid
    one.update({"a": {"metrics": "y.", "interval.ms": "1000"}})
    with pytest.raises(TelemetryRefusal) as err:  # the old id is unknown once the resource changed
        one.check_push(iid, PRODUCER, sid, False, 0, 10)
    assert err.value.error_code == ErrorCode.UNKNOWN_SUBSCRIPTION_ID
    # ... and the client may ask again at once after that error
    assert one.get_subscriptions(iid, PRODUCER).subscription_id == subscription_id(("y.",), 1000, iid)


def test_throttling_of_gets_and_pushes() -> None:
    clock = Clock()
    mgr = manager({"a": {"metrics": "*", "interval.ms": "1000"}}, clock)
    inst = mgr.get_subscriptions(uuid.UUID(int=0), PRODUCER)
    iid, sid = inst.instance_id, inst.subscription_id
    with pytest.raises(TelemetryRefusal) as err:
        mgr.get_subscriptions(iid, PRODUCER)
    assert err.value.error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    clock.t += 0.5
    mgr.check_push(iid, PRODUCER, sid, False, 0, 10)  # first push after a get: jitter allowed
    with pytest.raises(TelemetryRefusal) as err:
        mgr.check_push(iid, PRODUCER, sid, False, 0, 10)
    assert err.value.error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    clock.t += 1.0
    mgr.check_push(iid, PRODUCER, sid, False, 0, 10)
    mgr.check_push(iid, PRODUCER, sid, True, 0, 0)  # terminating: not throttled
    with pytest.raises(TelemetryRefusal) as err:
        clock.t += 5
        mgr.check_push(iid, PRODUCER, sid, False, 0, 10)
    assert err.value.error_code == ErrorCode.INVALID_REQUEST


@pytest.mark.parametrize(
    ("sid_delta", "compression", "size", "code"),
    [
        (1, 0, 10, ErrorCode.UNKNOWN_SUBSCRIPTION_ID),
        (0, 7, 10, ErrorCode.UNSUPPORTED_COMPRESSION_TYPE),
        (0, 4, MAX_BYTES + 1, ErrorCode.TELEMETRY_TOO_LARGE),
        (1, 7, MAX_BYTES + 1, ErrorCode.UNKNOWN_SUBSCRIPTION_ID),  # Kafka's order
    ],
)
def test_push_refusals(sid_delta: int, compression: int, size: int, code: ErrorCode) -> None:
    mgr = manager({"a": {"metrics": "*"}})
    inst = mgr.get_subscriptions(uuid.UUID(int=0), PRODUCER)
    with pytest.raises(TelemetryRefusal) as err:
        mgr.check_push(inst.instance_id, PRODUCER, inst.subscription_id + sid_delta, False, compression, size)
    assert err.value.error_code == code
    assert inst.last_error == code


def test_reserved_instance_ids_cannot_push() -> None:
    mgr = manager({})
    for reserved in (uuid.UUID(int=0), uuid.UUID(int=1)):
        with pytest.raises(TelemetryRefusal) as err:
            mgr.check_push(reserved, PRODUCER, 0, False, 0, 0)
        assert err.value.error_code == ErrorCode.INVALID_REQUEST


def test_instances_expire_and_are_capped() -> None:
    clock = Clock()
    forgotten: list[uuid.UUID] = []
    mgr = ClientMetricsManager(MAX_BYTES, clock, lambda i: forgotten.append(i.instance_id), max_instances=3)
    ids = [mgr.get_subscriptions(uuid.UUID(int=0), PRODUCER).instance_id for _ in range(4)]
    assert forgotten == ids[:1] and len(mgr.instances) == 3
    clock.t += 60 * 5 * 3 + 1  # 3 x the default interval
    mgr.expire(mgr.now_ms())
    assert forgotten == ids and not mgr.instances


# -- payloads ----------------------------------------------------------------------------------


def _gauge(name: str, *values: float, attr: str | None = None) -> Metric:
    points = []
    for i, v in enumerate(values):
        attrs = [KeyValue(key=attr, value=AnyValue(int_value=i))] if attr else []
        points.append(NumberDataPoint(as_double=v, attributes=attrs))
    return Metric(name=name, gauge=Gauge(data_points=points))


def _delta(name: str, value: int) -> Metric:
    return Metric(
        name=name,
        sum=Sum(data_points=[NumberDataPoint(as_int=value)], aggregation_temporality=1, is_monotonic=True),
    )


def payload(*metrics: Metric) -> bytes:
    data = MetricsData(
        resource_metrics=[ResourceMetrics(scope_metrics=[ScopeMetrics(metrics=list(metrics))])]
    )
    return data.SerializeToString()


P = "org.apache.kafka.producer."


@pytest.mark.parametrize("codec", list(CompressionType))
def test_payloads_decode_in_every_codec(codec: CompressionType) -> None:
    raw = payload(_gauge(P + "request.latency.avg", 2.0))
    data = decode_metrics(int(codec), compress(codec, raw), MAX_BYTES)
    assert data.resource_metrics[0].scope_metrics[0].metrics[0].name == P + "request.latency.avg"


@pytest.mark.parametrize("junk", [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\x0f", b"not OTLP at all, surely"])
def test_what_is_not_otlp_is_invalid_record(junk: bytes) -> None:
    with pytest.raises(TelemetryRefusal) as err:
        decode_metrics(0, junk, MAX_BYTES)
    assert err.value.error_code == ErrorCode.INVALID_RECORD
    with pytest.raises(TelemetryRefusal) as err:
        decode_metrics(int(CompressionType.ZSTD), junk, MAX_BYTES)  # not zstd either
    assert err.value.error_code == ErrorCode.INVALID_RECORD


def test_a_payload_that_decompresses_beyond_the_limit_is_too_large() -> None:
    bomb = compress(CompressionType.ZSTD, bytes(64 * MAX_BYTES))  # 64 MiB of zeros: a few KiB
    assert len(bomb) < MAX_BYTES
    with pytest.raises(TelemetryRefusal) as err:
        decode_metrics(int(CompressionType.ZSTD), bomb, MAX_BYTES)
    assert err.value.error_code == ErrorCode.TELEMETRY_TOO_LARGE


def _pushing(telemetry: ClientTelemetry, attrs: ClientAttributes) -> tuple[uuid.UUID, int]:
    inst = telemetry.manager.get_subscriptions(uuid.UUID(int=0), attrs)
    return inst.instance_id, inst.subscription_id


def test_pushed_metrics_are_exported_per_client_id_and_bad_pushes_store_nothing() -> None:
    clock = Clock()
    table = WorkerClientTelemetry.private()
    telemetry = ClientTelemetry(MAX_BYTES, table)
    telemetry.manager._clock = clock
    telemetry.update({"all": {"metrics": "*", "interval.ms": "1000"}})
    a, sid_a = _pushing(telemetry, PRODUCER)
    b, sid_b = _pushing(telemetry, PRODUCER)
    telemetry.push(a, PRODUCER, sid_a, False, 0, payload(
        _gauge(P + "request.latency.avg", 2.0, 4.0, attr="node.id"),
        _gauge(P + "request.latency.max", 9.0),
        _delta(P + "connection.creation.total", 2),
        _gauge("org.apache.kafka.producer.unexported.thing", 1.0),
    ))  # fmt: skip
    second = payload(_gauge(P + "request.latency.avg", 6.0), _delta(P + "connection.creation.total", 1))
    gzip = int(CompressionType.GZIP)
    telemetry.push(b, PRODUCER, sid_b, False, gzip, compress(CompressionType.GZIP, second))
    clock.t += 1.0
    with pytest.raises(TelemetryRefusal):
        telemetry.push(a, PRODUCER, sid_a, False, 0, b"\xff\xff\xff\xff")
    telemetry.publish()
    doc = table.read()
    assert doc["instances"] == 2
    assert doc["clients"] == {
        "orders-producer": {
            "producer_request_latency_avg_seconds": pytest.approx((0.003 + 0.006) / 2),
            "producer_request_latency_max_seconds": pytest.approx(0.009),
            "producer_connection_creations_total": 3.0,
        }
    }
    # an instance that expires takes its values along; the client id goes with its last one
    clock.t += 61
    telemetry.publish()
    assert table.read()["clients"] == {}


def test_client_ids_beyond_the_cap_are_counted_not_exported() -> None:
    table = WorkerClientTelemetry.private()
    telemetry = ClientTelemetry(MAX_BYTES, table)
    telemetry.update({"all": {"metrics": "*"}})
    body = payload(_gauge(P + "request.latency.max", 1.0))
    for i in range(MAX_CLIENT_IDS + 5):
        attrs = ClientAttributes(f"client-{i}", None, None, None, None)
        iid, sid = _pushing(telemetry, attrs)
        telemetry.push(iid, attrs, sid, False, 0, body)
    telemetry.publish()
    doc = table.read()
    assert len(doc["clients"]) == MAX_CLIENT_IDS and doc["unexported"] == 5


def test_the_source_combines_workers_and_names_families() -> None:
    from prometheus_client.core import Metric as PromMetric

    from shardbroker.observability.client_telemetry import ClientTelemetrySource

    class Table:
        def documents(self) -> list[tuple[int, dict[str, Any]]]:
            c = {"producer_request_latency_max_seconds": 0.002, "producer_connection_creations_total": 2.0}
            d = {"producer_request_latency_max_seconds": 0.005, "producer_connection_creations_total": 1.0}
            return [
                (0, {"clients": {"app": c}, "instances": 1, "unexported": 0}),
                (1, {"clients": {"app": d, "other": d}, "instances": 2, "unexported": 4}),
            ]

    families: dict[str, PromMetric] = {f.name: f for f in ClientTelemetrySource(Table())()}  # type: ignore[arg-type]
    samples = {(s.name, tuple(s.labels.values())): s.value for f in families.values() for s in f.samples}
    assert samples[("shardbroker_client_producer_request_latency_max_seconds", ("app",))] == 0.005
    assert samples[("shardbroker_client_producer_connection_creations_total", ("app",))] == 3.0
    assert samples[("shardbroker_client_telemetry_instances", ("1",))] == 2.0
    assert samples[("shardbroker_client_telemetry_unexported_pushes_total", ("1",))] == 4.0
    assert families["shardbroker_client_producer_connection_creations"].type == "counter"
