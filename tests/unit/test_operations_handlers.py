"""The operators' APIs: DescribeLogDirs, AlterReplicaLogDirs, DescribeTopicPartitions (its paging
as a pure function and through the handler), ElectLeaders, UpdateFeatures and ApiVersions'
features, with their ACL checks and bad input.

Log-dir APIs run over a real ReplicaManager and logs (replica_fakes.Harness); the others over
the fake controller channel of test_handlers_admin (the controller's own state machine answers).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker import features
from shardbroker.broker.features import FeatureUpdate, refusal, with_features
from shardbroker.broker.handlers.describe_topic_partitions import Page, page
from shardbroker.metadata.image import BrokerEndpoint
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID
from shardbroker.security.acl import CLUSTER_NAME
from tests.unit.replica_fakes import Harness, batch, image, run, topic
from tests.unit.test_authz_admin import ADMIN, ALICE, AUTHZ, Op, R, acl, admin_state, grant
from tests.unit.test_handlers_admin import REGISTRY, call, call_sync, channel, create, make_state

NONE = int(ErrorCode.NONE)
CLUSTER_DENIED = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
UNKNOWN = int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)

# -- DescribeLogDirs -------------------------------------------------------------------------------


def _two_topics(tmp_path: Path, **props: str) -> Harness:
    """Worker 0 leads a-0, a-1 and b-0; worker 1 leads a-2."""
    return Harness(tmp_path, image(topic("a", 3, leaders=[0, 0, 1]), topic("b", 1)), props=props)


def _sizes(response: m.DescribeLogDirsResponse) -> dict[tuple[str, int], int]:
    (result,) = response.results
    return {(t.name, p.partition_index): p.partition_size for t in result.topics for p in t.partitions}


@pytest.mark.parametrize("version", range(0, 5))
def test_describe_log_dirs_sizes_per_partition_led_here(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path) as h:
            h.replicas.append("a", 0, batch(3))
            h.replicas.append("a", 0, batch(2))
            h.replicas.append("b", 0, batch(1))
            r = await call(h.state, m.DescribeLogDirsRequest(topics=None), version)
            (result,) = r.results
            assert result.error_code == NONE and result.log_dir == os.path.abspath(tmp_path)
            assert os.path.isabs(result.log_dir)
            expected = {
                ("a", 0): sum(s.stat().st_size for s in (tmp_path / "a-0").glob("*.log")),
                ("a", 1): 0,
                ("b", 0): sum(s.stat().st_size for s in (tmp_path / "b-0").glob("*.log")),
            }
            assert _sizes(r) == expected  # a-2 is worker 1's
            assert expected["a", 0] > expected["b", 0] > 0
            assert all(p.offset_lag == 0 and not p.is_future_key for t in result.topics for p in t.partitions)
            st = os.statvfs(tmp_path)
            assert result.total_bytes == st.f_blocks * st.f_frsize  # on the wire from v4
            assert 0 < result.usable_bytes <= result.total_bytes

    run(main())


def test_describe_log_dirs_asked_partitions_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path) as h:
            T = m.DescribeLogDirsRequest.DescribableLogDirTopic
            asked = [
                T(topic="a", partitions=[1, 2, 9]),
                T(topic="nope", partitions=[0]),
                T(topic="a", partitions=[0]),
            ]
            r = await call(h.state, m.DescribeLogDirsRequest(topics=asked), 4)
            assert set(_sizes(r)) == {("a", 0), ("a", 1)}  # a-2 led elsewhere, a-9 and nope unknown
            r = await call(h.state, m.DescribeLogDirsRequest(topics=[]), 4)
            (result,) = r.results
            assert result.error_code == NONE and result.topics == []  # the dir is listed, empty

    run(main())


def test_describe_log_dirs_storage_error_when_the_dir_is_gone(tmp_path: Path) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path / "data") as h:
            h.config = dataclasses.replace(h.config, data_dir=tmp_path / "missing")
            h.state.config = h.config
            r = await call(h.state, m.DescribeLogDirsRequest(topics=None), 4)
            (result,) = r.results
            assert result.error_code == ErrorCode.KAFKA_STORAGE_ERROR and result.topics == []

    run(main())


def test_describe_log_dirs_needs_describe_on_the_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path, **AUTHZ) as h:
            r = await call(h.state, m.DescribeLogDirsRequest(topics=None), 4, ALICE)
            assert (r.error_code, r.results) == (CLUSTER_DENIED, [])
            r = await call(h.state, m.DescribeLogDirsRequest(topics=None), 2, ALICE)
            assert r.results == []  # v0-2: no error field, no results
            h.channel.image = dataclasses.replace(
                h.channel.image, acls=(acl(Op.DESCRIBE, R.CLUSTER, CLUSTER_NAME),)
            )
            r = await call(h.state, m.DescribeLogDirsRequest(topics=None), 4, ALICE)
            assert r.error_code == NONE and len(_sizes(r)) == 3

    run(main())


# -- AlterReplicaLogDirs ---------------------------------------------------------------------------


def _alter(path: str, **topics: list[int]) -> m.AlterReplicaLogDirsRequest:
    D = m.AlterReplicaLogDirsRequest.AlterReplicaLogDir
    T = m.AlterReplicaLogDirsRequest.AlterReplicaLogDirTopic
    return m.AlterReplicaLogDirsRequest(
        dirs=[D(path=path, topics=[T(name=n, partitions=p) for n, p in topics.items()])]
    )


def _codes(response: m.AlterReplicaLogDirsResponse) -> dict[tuple[str, int], int]:
    return {(t.topic_name, p.partition_index): p.error_code for t in response.results for p in t.partitions}


@pytest.mark.parametrize("version", range(0, 3))
def test_alter_replica_log_dirs_answers_as_kafka(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path) as h:
            ours = os.path.abspath(tmp_path)
            r = await call(h.state, _alter(ours, a=[0, 2, 7], nope=[0]), version)
            assert _codes(r) == {
                ("a", 0): NONE,  # already there
                ("a", 2): ErrorCode.NOT_LEADER_OR_FOLLOWER,
                ("a", 7): UNKNOWN,
                ("nope", 0): UNKNOWN,
            }
            for elsewhere in ("/somewhere/else", ours + "/", str(tmp_path / "a-0")):
                r = await call(h.state, _alter(elsewhere, a=[0, 2], nope=[0]), version)
                assert set(_codes(r).values()) == {ErrorCode.LOG_DIR_NOT_FOUND}, elsewhere
            assert sorted(os.listdir(tmp_path)) == sorted(os.listdir(tmp_path))  # nothing created
            assert not list(tmp_path.glob("*-future"))

    run(main())


def test_alter_replica_log_dirs_needs_alter_on_the_cluster(tmp_path: Path) -> None:
    async def main() -> None:
        async with _two_topics(tmp_path, **AUTHZ) as h:
            r = await call(h.state, _alter("/elsewhere", a=[0, 1]), 2, ALICE)
            assert set(_codes(r).values()) == {CLUSTER_DENIED}
            r = await call(h.state, _alter("/elsewhere", a=[0]), 2, ADMIN)
            assert _codes(r) == {("a", 0): ErrorCode.LOG_DIR_NOT_FOUND}

    run(main())


# -- DescribeTopicPartitions: paging ---------------------------------------------------------------

COUNTS = {"a": 3, "b": 0, "c": 5, "d": 1}


def _page(names: list[str], cursor: tuple[str, int] | None, limit: int) -> Page:
    return page(names, COUNTS.get, cursor, limit)


def test_page_cuts_a_topic_and_points_at_the_rest() -> None:
    assert _page(["a", "b", "c", "d"], None, 5) == Page(
        [("a", range(3)), ("b", range(0)), ("c", range(2))], ("c", 2)
    )
    assert _page(["c", "d"], ("c", 2), 5) == Page([("c", range(2, 5)), ("d", range(1))], None)


def test_page_topic_reached_with_no_room_left_starts_the_next_page() -> None:
    assert _page(["a", "c"], None, 3) == Page([("a", range(3))], ("c", 0))


def test_page_unknown_topics_do_not_count_and_cursor_past_the_end() -> None:
    assert _page(["a", "x", "d"], ("a", 9), 1) == Page(
        [("a", range(9, 3)), ("x", None), ("d", range(1))], None
    )
    assert _page(["x", "y"], None, 1) == Page([("x", None), ("y", None)], None)


def test_page_walks_every_partition_once_whatever_the_limit() -> None:
    names = sorted(COUNTS)
    for limit in range(1, 11):
        seen: list[tuple[str, int]] = []
        cursor: tuple[str, int] | None = None
        for _ in range(20):
            result = _page([n for n in names if cursor is None or n >= cursor[0]], cursor, limit)
            got = [(n, i) for n, r in result.topics for i in r or ()]
            assert len(got) <= limit
            seen += got
            cursor = result.next_cursor
            if cursor is None:
                break
        assert seen == [(n, i) for n in names for i in range(COUNTS[n])], limit


# -- DescribeTopicPartitions: the handler ----------------------------------------------------------

DTP = m.DescribeTopicPartitionsRequest


def dtp(*names: str, limit: int = 2000, cursor: tuple[str, int] | None = None) -> DTP:
    return DTP(
        topics=[DTP.TopicRequest(name=n) for n in names],
        response_partition_limit=limit,
        cursor=None if cursor is None else DTP.Cursor(topic_name=cursor[0], partition_index=cursor[1]),
    )


def described(r: m.DescribeTopicPartitionsResponse) -> list[tuple[str | None, int, list[int]]]:
    return [(t.name, t.error_code, [p.partition_index for p in t.partitions]) for t in r.topics]


def cursor_of(r: m.DescribeTopicPartitionsResponse) -> tuple[str, int] | None:
    return None if r.next_cursor is None else (r.next_cursor.topic_name, r.next_cursor.partition_index)


def test_describe_topic_partitions_pages_every_topic(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    for name, n in (("b", 3), ("a", 2), ("c", 1)):
        create(state, name, n)
    r = call_sync(state, dtp(limit=3), 0)
    assert described(r) == [("a", 0, [0, 1]), ("b", 0, [0])] and cursor_of(r) == ("b", 1)
    (a, _) = r.topics
    assert a.topic_id == state.image.topics["a"].topic_id and not a.is_internal
    for p in a.partitions:
        assert p.replica_nodes == p.isr_nodes == [p.leader_id] and p.offline_replicas == []
        assert p.eligible_leader_replicas == p.last_known_elr == [] and p.error_code == 0
    assert a.topic_authorized_operations > 0
    r = call_sync(state, dtp(limit=3, cursor=("b", 1)), 0)
    assert described(r) == [("b", 0, [1, 2]), ("c", 0, [0])] and cursor_of(r) is None


def test_describe_topic_partitions_named_topics_unknown_and_invalid(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "b", 2)
    r = call_sync(state, dtp("zz", "b", "bad name!", "b"), 0)
    assert described(r) == [
        ("b", 0, [0, 1]),
        ("bad name!", ErrorCode.INVALID_TOPIC_EXCEPTION, []),
        ("zz", UNKNOWN, []),
    ]
    assert r.topics[2].topic_id == ZERO_UUID


@pytest.mark.parametrize("limit", [0, -1, -(2**31)])
def test_describe_topic_partitions_limit_below_one_is_one(tmp_path: Path, limit: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    r = call_sync(state, dtp(limit=limit), 0)
    assert described(r) == [("a", 0, [0])] and cursor_of(r) == ("a", 1)


def test_describe_topic_partitions_limit_capped_by_the_broker(tmp_path: Path) -> None:
    state = make_state(tmp_path, **{"max.request.partition.size.limit": "2"})
    create(state, "a", 5)
    r = call_sync(state, dtp(limit=2**31 - 1), 0)
    assert described(r) == [("a", 0, [0, 1])] and cursor_of(r) == ("a", 2)


def test_describe_topic_partitions_cursor_to_a_deleted_topic(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    for name in ("a", "b", "c"):
        create(state, name, 2)
    r = call_sync(state, dtp(limit=3), 0)
    assert cursor_of(r) == ("b", 1)
    deleted = call_sync(state, m.DeleteTopicsRequest(topic_names=["b"]), 5)
    assert deleted.responses[0].error_code == NONE
    r = call_sync(state, dtp(limit=3, cursor=("b", 1)), 0)  # every topic: on from the next name
    assert described(r) == [("c", 0, [0, 1])] and cursor_of(r) is None
    r = call_sync(state, dtp("b", "c", limit=3, cursor=("b", 1)), 0)  # named: b is unknown now
    assert described(r) == [("b", UNKNOWN, []), ("c", 0, [0, 1])] and cursor_of(r) is None


def test_describe_topic_partitions_bad_cursors(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    r = call_sync(state, dtp("a", cursor=("b", 0)), 0)  # the cursor's topic is not named
    assert described(r) == [("a", ErrorCode.INVALID_REQUEST, [])] and cursor_of(r) is None
    r = call_sync(state, dtp("a", cursor=("a", -1)), 0)
    assert described(r) == [("a", ErrorCode.INVALID_REQUEST, [])]
    assert call_sync(state, dtp(cursor=("a", -1)), 0).topics == []  # nothing named: nothing to flag


def test_describe_topic_partitions_of_a_missing_worker(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    fake = channel(state)
    fake.image = dataclasses.replace(fake.image, brokers=(BrokerEndpoint(0, "127.0.0.1", 9092),))
    (t,) = call_sync(state, dtp("a"), 0).topics
    by_leader = {p.partition_index: p for p in t.partitions}
    gone = [p for p in by_leader.values() if p.leader_id == -1]
    assert len(gone) == 1 and gone[0].isr_nodes == [] and gone[0].offline_replicas == [1]


def test_describe_topic_partitions_acls(tmp_path: Path) -> None:
    state = admin_state(tmp_path)  # topic "a"
    create_b = m.CreateTopicsRequest(
        topics=[m.CreateTopicsRequest.CreatableTopic(name="b", num_partitions=1, replication_factor=1)]
    )
    assert run(call(state, create_b, 7, ADMIN)).topics[0].error_code == NONE
    assert run(call(state, dtp(), 0, ALICE)).topics == []  # listing: hidden
    r = run(call(state, dtp("b", "a", "zz"), 0, ALICE))  # named: refused, unknown or not
    assert {(t.name, t.error_code, t.topic_id) for t in r.topics} == {
        (n, ErrorCode.TOPIC_AUTHORIZATION_FAILED, ZERO_UUID) for n in ("a", "b", "zz")
    }
    grant(state, acl(Op.DESCRIBE, R.TOPIC, "b"))
    r = run(call(state, dtp("b", "a"), 0, ALICE))
    assert [(t.name, t.error_code) for t in r.topics] == [
        ("b", 0),
        ("a", ErrorCode.TOPIC_AUTHORIZATION_FAILED),
    ]
    assert r.topics[0].topic_authorized_operations == 1 << Op.DESCRIBE
    assert r.topics[1].topic_authorized_operations == -(2**31)
    assert described(run(call(state, dtp(), 0, ALICE))) == [("b", 0, [0])]


# -- ElectLeaders ----------------------------------------------------------------------------------

EL = m.ElectLeadersRequest


def elect(kind: int, **topics: list[int]) -> EL:
    return EL(
        election_type=kind,
        topic_partitions=[EL.TopicPartitions(topic=t, partitions=p) for t, p in topics.items()],
    )


def outcomes(r: m.ElectLeadersResponse) -> dict[tuple[str, int], int]:
    return {
        (t.topic, p.partition_id): p.error_code
        for t in r.replica_election_results
        for p in t.partition_result
    }


@pytest.mark.parametrize("version", range(0, 3))
@pytest.mark.parametrize("kind", [0, 1])
def test_elect_leaders_nothing_to_elect(tmp_path: Path, version: int, kind: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    r = call_sync(state, elect(kind, a=[0, 1, 5], zz=[0]), version)
    assert outcomes(r) == {("a", 0): 84, ("a", 1): 84, ("a", 5): UNKNOWN, ("zz", 0): UNKNOWN}
    messages = {p.error_message for t in r.replica_election_results for p in t.partition_result}
    assert messages == {
        "Leader election not needed for topic partition.",
        "No such partition as a-5",
        "No such topic as zz",
    }
    r = call_sync(state, EL(election_type=kind, topic_partitions=None), version)
    assert [(t.topic, t.partition_result) for t in r.replica_election_results] == [("a", [])]


@pytest.mark.parametrize(("kind", "code"), [(0, 80), (1, 83)])
def test_elect_leaders_of_a_missing_worker(tmp_path: Path, kind: int, code: int) -> None:
    state = make_state(tmp_path)
    create(state, "a", 2)
    fake = channel(state)
    fake.image = dataclasses.replace(fake.image, brokers=(BrokerEndpoint(0, "127.0.0.1", 9092),))
    away = next(p.partition for p in fake.image.topics["a"].partitions if p.leader == 1)
    assert outcomes(call_sync(state, elect(kind, a=[0, 1]), 2))[("a", away)] == code
    (t,) = call_sync(state, EL(election_type=kind, topic_partitions=None), 2).replica_election_results
    assert [(p.partition_id, p.error_code) for p in t.partition_result] == [(away, code)]


def test_elect_leaders_bad_type_and_acl(tmp_path: Path) -> None:
    state = admin_state(tmp_path)  # topic "a", 2 partitions
    r = run(call(state, elect(7, a=[0]), 2, ADMIN))
    assert r.error_code == ErrorCode.INVALID_REQUEST and outcomes(r) == {("a", 0): ErrorCode.INVALID_REQUEST}
    r = run(call(state, elect(0, a=[0, 1]), 2, ALICE))
    assert r.error_code == CLUSTER_DENIED and set(outcomes(r).values()) == {CLUSTER_DENIED}
    r = run(call(state, EL(election_type=0, topic_partitions=None), 2, ALICE))
    assert (r.error_code, r.replica_election_results) == (CLUSTER_DENIED, [])
    grant(state, acl(Op.ALTER, R.CLUSTER, CLUSTER_NAME))
    assert set(outcomes(run(call(state, elect(0, a=[0, 1]), 2, ALICE))).values()) == {84}


# -- features: ApiVersions and UpdateFeatures ------------------------------------------------------


def test_api_versions_features(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    req = m.ApiVersionsRequest(client_software_name="t", client_software_version="1")
    v4 = call_sync(state, req, 4)
    assert [(f.name, f.min_version, f.max_version) for f in v4.supported_features] == [
        ("group.version", 0, 1)
    ]
    assert [(f.name, f.min_version_level, f.max_version_level) for f in v4.finalized_features] == [
        ("group.version", 1, 1)
    ]
    assert state.image.version == -1 and v4.finalized_features_epoch == 0  # an empty metadata log
    create(state, "a", 1)
    create(state, "b", 1)
    assert call_sync(state, req, 4).finalized_features_epoch == state.image.version > 0
    v3 = call_sync(state, req, 3)
    assert v3.supported_features == []  # v3 cannot carry a minimum of 0 (KAFKA-17011)
    assert [f.name for f in v3.finalized_features] == ["group.version"]


def test_features_follow_the_consumer_protocol() -> None:
    classic_only = [k for k in REGISTRY.versions if k != m.ConsumerGroupHeartbeatRequest.API_KEY]
    r = with_features(m.ApiVersionsResponse(), 4, classic_only, 7)
    assert r.finalized_features == [] and r.finalized_features_epoch == 7
    assert [f.name for f in r.supported_features] == ["group.version"]  # the software still can
    assert with_features(m.ApiVersionsResponse(), 2, REGISTRY.versions, 7).finalized_features_epoch == -1


@pytest.mark.parametrize(
    ("update", "why"),
    [
        (FeatureUpdate("group.version", 1, 1), None),
        (FeatureUpdate("group.version", 1, 2), None),
        (FeatureUpdate("group.version", 0, 2), "follows group.coordinator.rebalance.protocols"),
        (FeatureUpdate("group.version", 0, 1), "without setting the upgrade type to a downgrade"),
        (FeatureUpdate("group.version", 2, 1), "supports versions 0-1"),
        (FeatureUpdate("group.version", -1, 3), "cannot be less than 0"),
        (FeatureUpdate("group.version", 1, 0), "Upgrade type 0 is not one of"),
        (FeatureUpdate("metadata.version", 20, 1), "does not support this feature"),
        (FeatureUpdate("transaction.version", 2, 1), "does not support this feature"),
    ],
)
def test_feature_update_refusals(update: FeatureUpdate, why: str | None) -> None:
    got = refusal(update, {"group.version": 1})
    if why is None:
        assert got is None
    else:
        assert got is not None and why in got and got.startswith(f"Invalid update version {update.level} ")


def test_feature_upgrade_refused_when_classic_only() -> None:
    got = refusal(FeatureUpdate(features.GROUP_VERSION, 1, features.UPGRADE), {})
    assert got is not None and "It is at 0" in got


UF = m.UpdateFeaturesRequest


def update(*keys: tuple[str, int, int], validate_only: bool = False) -> UF:
    return UF(
        feature_updates=[
            UF.FeatureUpdateKey(
                feature=f, max_version_level=lvl, upgrade_type=kind, allow_downgrade=kind != 1
            )
            for f, lvl, kind in keys
        ],
        validate_only=validate_only,
    )


@pytest.mark.parametrize("version", range(0, 3))
def test_update_features(tmp_path: Path, version: int) -> None:
    state = make_state(tmp_path)
    ok = call_sync(state, update(("group.version", 1, 1), validate_only=True), version)
    assert (ok.error_code, ok.error_message) == (NONE, None)
    assert [(r.feature, r.error_code) for r in ok.results] == ([("group.version", 0)] if version <= 1 else [])
    down = call_sync(state, update(("group.version", 0, 2)), version)
    assert down.error_code == ErrorCode.INVALID_UPDATE_VERSION and down.results == []
    assert "group.coordinator.rebalance.protocols" in down.error_message
    mv = call_sync(state, update(("group.version", 1, 1), ("metadata.version", 20, 1)), version)
    assert mv.error_code == ErrorCode.INVALID_UPDATE_VERSION and "metadata.version" in mv.error_message
    twice = call_sync(state, update(("group.version", 1, 1), ("group.version", 1, 1)), version)
    assert twice.error_code == ErrorCode.INVALID_REQUEST
    assert call_sync(state, update(), version).error_code == NONE  # nothing to do
    after = call_sync(state, m.ApiVersionsRequest(client_software_name="t", client_software_version="1"), 4)
    assert [(f.name, f.max_version_level) for f in after.finalized_features] == [("group.version", 1)]


def test_update_features_needs_alter_on_the_cluster(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    r: Any = run(call(state, update(("group.version", 1, 1)), 1, ALICE))
    assert (r.error_code, r.results) == (CLUSTER_DENIED, [])
    grant(state, acl(Op.ALTER, R.CLUSTER, CLUSTER_NAME))
    assert run(call(state, update(("group.version", 1, 1)), 1, ALICE)).error_code == NONE
