"""DescribeClientQuotas / AlterClientQuotas handlers and KIP-599's controller_mutation_rate on
CreateTopics / CreatePartitions / DeleteTopics, over the fake controller channel of
test_handlers_admin (the controller's own state machine answers and publishes the image)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.session import ConnectionSession, SecurityProtocol
from shardbroker.broker.worker_state import WorkerState
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.principal import KafkaPrincipal
from tests.unit.test_handlers_admin import call as call_as
from tests.unit.test_handlers_admin import call_sync, channel, make_state, run

A = m.AlterClientQuotasRequest
D = m.DescribeClientQuotasRequest
AUTHZ = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:admin",
}


def alter(
    entity: list[tuple[str, str | None]], key: str, value: float | None, validate_only: bool = False
) -> Any:
    return A(
        entries=[
            A.EntryData(
                entity=[A.EntityData(entity_type=t, entity_name=n) for t, n in entity],
                ops=[A.OpData(key=key, value=0.0 if value is None else value, remove=value is None)],
            )
        ],
        validate_only=validate_only,
    )


def describe(*components: tuple[str, int, str | None], strict: bool = False) -> Any:
    return D(
        components=[D.ComponentData(entity_type=t, match_type=mt, match_=n) for t, mt, n in components],
        strict=strict,
    )


@pytest.mark.parametrize("version", [0, 1])
def test_alter_then_describe(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    out = call_sync(
        state, alter([("user", "alice"), ("client-id", None)], "producer_byte_rate", 1024.0), version
    )
    assert [(e.error_code, e.error_message) for e in out.entries] == [(0, None)]
    assert [(e.entity_type, e.entity_name) for e in out.entries[0].entity] == [
        ("user", "alice"),
        ("client-id", None),
    ]
    got = call_sync(state, describe(("user", 0, "alice")), version)
    assert got.error_code == 0
    ((entry,),) = [got.entries]
    assert sorted((e.entity_type, e.entity_name) for e in entry.entity) == [
        ("client-id", None),
        ("user", "alice"),
    ]
    assert [(v.key, v.value) for v in entry.values] == [("producer_byte_rate", 1024.0)]
    strict = call_sync(state, describe(("user", 0, "alice"), strict=True), version)
    assert strict.entries == []


@pytest.mark.parametrize("value", [0.0, -1.0, math.nan, 1e300, math.inf])
def test_bad_values_are_invalid_request_and_nothing_is_stored(tmp_path: Path, value: float) -> None:
    state = make_state(tmp_path)
    out = call_sync(state, alter([("user", "bob")], "producer_byte_rate", value), 1)
    assert out.entries[0].error_code == ErrorCode.INVALID_REQUEST and out.entries[0].error_message
    assert channel(state).state.client_quotas == {}


def test_validate_only_and_a_bad_filter(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    out = call_sync(state, alter([("user", "bob")], "request_percentage", 50.0, validate_only=True), 1)
    assert out.entries[0].error_code == 0 and channel(state).state.client_quotas == {}
    bad = call_sync(state, describe(("user", 1, "x")), 1)
    assert bad.error_code == ErrorCode.INVALID_REQUEST and bad.entries is None
    unknown = call_sync(state, describe(("group", 2, None)), 1)
    assert unknown.error_code == ErrorCode.UNSUPPORTED_VERSION


def _session(user: str) -> ConnectionSession:
    return ConnectionSession(
        "SASL_PLAINTEXT", SecurityProtocol.SASL_PLAINTEXT, "127.0.0.1", KafkaPrincipal("User", user)
    )


def test_without_cluster_acls_both_are_refused_and_nothing_reaches_the_controller(tmp_path: Path) -> None:
    state = make_state(tmp_path, **AUTHZ)
    alice = _session("alice")
    out = run(call_as(state, alter([("user", "bob")], "producer_byte_rate", 1.0), 1, alice))
    assert out.entries[0].error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    got = run(call_as(state, describe(), 1, alice))
    assert got.error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
    assert channel(state).requests == []
    admin = run(call_as(state, alter([("user", "bob")], "producer_byte_rate", 1.0), 1, _session("admin")))
    assert admin.entries[0].error_code == 0


# -- controller_mutation_rate (KIP-599) ------------------------------------------------------------


def _mutation_quota(state: WorkerState, rate: float) -> None:
    out = call_sync(state, alter([("client-id", "test")], "controller_mutation_rate", rate), 1)
    assert out.entries[0].error_code == 0
    state.quotas.update(channel(state).image.client_quotas)  # as the image subscription does
    state.quotas.workers = 1


def _create(state: WorkerState, name: str, partitions: int, version: int) -> Any:
    T = m.CreateTopicsRequest
    request = T(
        topics=[T.CreatableTopic(name=name, num_partitions=partitions, replication_factor=1)], timeout_ms=5000
    )
    return call_sync(state, request, version)


def test_create_topics_v6_is_refused_once_the_quota_is_exceeded(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    _mutation_quota(state, 1.0)  # 1 partition/s: a burst of 11 partitions
    first = _create(state, "a", 8, 7)
    assert first.topics[0].error_code == 0 and first.throttle_time_ms == 0
    crossing = _create(state, "b", 8, 7)  # the request that crosses the quota passes, throttled
    assert crossing.topics[0].error_code == 0
    assert crossing.throttle_time_ms == pytest.approx(5000, abs=100)
    refused = _create(state, "c", 1, 7)
    assert refused.topics[0].error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
    assert refused.throttle_time_ms > 0 and "c" not in channel(state).image.topics
    # Before v6, the topic is created and only the throttle time tells.
    old = _create(state, "d", 1, 5)
    assert old.topics[0].error_code == 0 and old.throttle_time_ms > 0


def test_delete_topics_and_create_partitions_count_partitions(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    assert _create(state, "a", 6, 7).topics[0].error_code == 0
    _mutation_quota(state, 1.0)
    P = m.CreatePartitionsRequest
    grow = call_sync(state, P(topics=[P.CreatePartitionsTopic(name="a", count=16)], timeout_ms=5000), 3)
    assert grow.results[0].error_code == 0 and grow.throttle_time_ms == pytest.approx(0, abs=100)
    X = m.DeleteTopicsRequest
    delete = X(topics=[X.DeleteTopicState(name="a")], timeout_ms=5000)
    crossing = call_sync(state, delete, 6)
    assert crossing.responses[0].error_code == 0 and crossing.throttle_time_ms == pytest.approx(
        15000, abs=200
    )
    assert _create(state, "b", 1, 7).topics[0].error_code == ErrorCode.THROTTLING_QUOTA_EXCEEDED
