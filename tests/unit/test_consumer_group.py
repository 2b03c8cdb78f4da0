"""The consumer-protocol group state machine (broker/consumer_group.py): epochs, reconciliation,
fencing, timers, static members, records and their replay. Pure: a fake clock, image topics."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping

import pytest

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker.consumer_group import (
    Assignment,
    ConsumerGroup,
    ConsumerGroupConfig,
    ConsumerGroupError,
    ConsumerGroupState,
    HeartbeatRequest,
    HeartbeatResult,
    MemberState,
    Record,
)
from shardbroker.metadata.image import PartitionImage, TopicImage
from shardbroker.protocol.errors import ErrorCode

CONFIG = ConsumerGroupConfig(session_timeout_ms=45_000, heartbeat_interval_ms=5_000)


def topic(name: str, partitions: int, topic_id: uuid.UUID | None = None) -> TopicImage:
    tid = topic_id or uuid.uuid5(uuid.NAMESPACE_DNS, name)
    return TopicImage(name, tid, tuple(PartitionImage(i, 0) for i in range(partitions)))


T1 = topic("t1", 6)
T1_ID = T1.topic_id
TOPICS: dict[str, TopicImage] = {"t1": T1}


def join(cg: ConsumerGroup, member_id: str, now: float = 0.0, **kw: object) -> HeartbeatResult:
    fields: dict[str, object] = {
        "member_id": member_id,
        "member_epoch": 0,
        "rebalance_timeout_ms": 30_000,
        "subscribed_topic_names": ("t1",),
        "owned": {},
    }
    fields.update(kw)
    return cg.heartbeat(HeartbeatRequest(**fields), TOPICS, now, "generated")  # type: ignore[arg-type]


def beat(
    cg: ConsumerGroup, member_id: str, epoch: int, owned: Assignment | None, now: float = 0.0
) -> HeartbeatResult:
    return cg.heartbeat(HeartbeatRequest(member_id, epoch, owned=owned), TOPICS, now, "generated")


def parts(result: HeartbeatResult | Assignment | None) -> set[int]:
    assignment = result.assignment if isinstance(result, HeartbeatResult) else result
    assert assignment is not None
    return set(assignment.get(T1_ID, frozenset()))


def owned(p: set[int]) -> dict[uuid.UUID, frozenset[int]]:
    return {T1_ID: frozenset(p)} if p else {}


def check_owners(cg: ConsumerGroup) -> None:
    """No partition is held (assigned or pending revocation) by two members."""
    seen: dict[tuple[uuid.UUID, int], str] = {}
    for m in cg.members.values():
        for a in (m.assigned, m.pending_revocation):
            for tid, ps in a.items():
                for p in ps:
                    assert (tid, p) not in seen, f"{(tid, p)} held by {seen[(tid, p)]} and {m.member_id}"
                    seen[(tid, p)] = m.member_id
    assert seen == cg.owners


def test_first_member_gets_everything_and_the_records_kafka_writes() -> None:
    cg = ConsumerGroup("g", CONFIG)
    r = join(cg, "a")
    assert (r.member_id, r.member_epoch, parts(r)) == ("a", 1, set(range(6)))
    assert 5_000 / 4 <= r.heartbeat_interval_ms < 5_000 * 5 / 4
    assert cg.state == ConsumerGroupState.STABLE
    kinds = [type(k).__name__ for k, _ in cg.take_records()]
    assert kinds == [
        "ConsumerGroupMemberMetadataKey",
        "ConsumerGroupPartitionMetadataKey",
        "ConsumerGroupMetadataKey",
        "ConsumerGroupTargetAssignmentMemberKey",
        "ConsumerGroupTargetAssignmentMetadataKey",
        "ConsumerGroupCurrentMemberAssignmentKey",
    ]


def test_member_id_generated_when_joining_without_one() -> None:
    cg = ConsumerGroup("g", CONFIG)
    assert join(cg, "").member_id == "generated"


def test_second_member_waits_for_revocation_before_getting_partitions() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    rb = join(cg, "b")
    assert rb.member_epoch == 2 and parts(rb) == set()  # its partitions are still a's
    assert cg.members["b"].state == MemberState.UNRELEASED_PARTITIONS
    assert rb.heartbeat_interval_ms == 500  # a tenth: to hear soon of what a releases
    ra = beat(cg, "a", 1, owned(set(range(6))))
    kept = parts(ra)
    assert ra.member_epoch == 1 and len(kept) == 3  # revoke first, at the same epoch
    assert cg.members["a"].state == MemberState.UNREVOKED_PARTITIONS
    assert ra.heartbeat_interval_ms != 500  # it acknowledges the revocation by itself
    check_owners(cg)
    # b asks again: a has not revoked yet, still nothing.
    assert parts(beat(cg, "b", 2, {})) == set()
    ra = beat(cg, "a", 1, owned(kept))  # revoked
    assert ra.member_epoch == 2 and cg.members["a"].state == MemberState.STABLE
    rb = beat(cg, "b", 2, {})
    assert parts(rb) == set(range(6)) - kept
    assert rb.heartbeat_interval_ms != 500
    assert cg.state == ConsumerGroupState.STABLE
    check_owners(cg)


def test_waiting_member_interval_has_a_floor_and_never_exceeds_the_configured_one() -> None:
    for configured, told in ((300, 50), (40, 40), (1_000, 100)):
        cg = ConsumerGroup("g", ConsumerGroupConfig(heartbeat_interval_ms=configured))
        join(cg, "a")
        assert join(cg, "b").heartbeat_interval_ms == told


def test_members_heartbeat_in_step_on_the_group_grid() -> None:
    """Heartbeats at any time are told intervals that bring the next heartbeat to the same
    points of the group's grid, between a quarter and five quarters of the interval away; one
    arriving a little after a grid point stays on the grid."""
    interval = 1_000
    cg = ConsumerGroup("g", ConsumerGroupConfig(heartbeat_interval_ms=interval))
    r = join(cg, "a", now=10_000.0)
    epoch = r.member_epoch
    rng = random.Random(7)
    landings = set()
    for now in sorted(rng.uniform(10_000, 20_000) for _ in range(50)):
        told = beat(cg, "a", epoch, None, now=now).heartbeat_interval_ms
        assert interval / 4 <= told < interval * 5 / 4
        landings.add(round(now + told) % interval)
    assert max(landings) - min(landings) <= 1 or landings <= {0, 1, interval - 1}  # rounding only
    grid_point = 30_000 + landings.pop()
    assert beat(cg, "a", epoch, None, now=grid_point + 3).heartbeat_interval_ms in (
        interval - 3,
        interval - 2,
    )


def test_no_assignment_in_answer_when_nothing_changed() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    assert beat(cg, "a", 1, None).assignment is None
    assert parts(beat(cg, "a", 1, owned(set(range(6))))) == set(range(6))  # a full heartbeat: sent


def test_epoch_checks() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    with pytest.raises(ConsumerGroupError) as e:
        beat(cg, "a", 5, None)
    assert e.value.code == ErrorCode.FENCED_MEMBER_EPOCH
    with pytest.raises(ConsumerGroupError) as e:
        beat(cg, "nobody", 1, None)
    assert e.value.code == ErrorCode.UNKNOWN_MEMBER_ID
    join(cg, "b")
    beat(cg, "a", 1, owned(set(range(6))))
    ra = beat(cg, "a", 1, owned(parts(cg.members["a"].assigned)))
    assert ra.member_epoch == 2
    # The answer with epoch 2 was lost: epoch 1 with owned partitions within the assignment passes.
    assert beat(cg, "a", 1, owned(parts(cg.members["a"].assigned))).member_epoch == 2
    with pytest.raises(ConsumerGroupError) as e:  # ... but not without its owned partitions
        beat(cg, "a", 1, None)
    assert e.value.code == ErrorCode.FENCED_MEMBER_EPOCH


def test_leave_bumps_the_epoch_and_writes_tombstones() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    join(cg, "b")
    cg.take_records()
    r = beat(cg, "b", -1, None)
    assert r.member_epoch == -1 and "b" not in cg.members
    records = cg.take_records()
    tombstones = [type(k).__name__ for k, v in records if v is None]
    assert tombstones == [
        "ConsumerGroupCurrentMemberAssignmentKey",
        "ConsumerGroupTargetAssignmentMemberKey",
        "ConsumerGroupMemberMetadataKey",
    ]
    assert cg.group_epoch == 3
    assert parts(beat(cg, "a", 1, owned(set(range(6))))) == set(range(6))
    assert cg.members["a"].member_epoch == 3


def test_session_timeout_fences_and_frees_the_partitions() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a", now=0)
    join(cg, "b", now=0)
    assert cg.next_deadline() == 45_000
    beat(cg, "b", 2, {}, now=40_000)
    assert cg.tick(45_000, TOPICS) == ["a"]
    assert cg.owners == {}  # a's partitions are free
    assert parts(beat(cg, "b", 2, {}, now=45_001)) == set(range(6))


def test_rebalance_timeout_fences_a_member_that_does_not_revoke() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a", now=0, rebalance_timeout_ms=1_000)
    join(cg, "b", now=0)
    beat(cg, "a", 1, owned(set(range(6))), now=100)  # asked to revoke at 100
    assert cg.members["a"].rebalance_deadline == 1_100
    beat(cg, "a", 1, owned(set(range(6))), now=500)  # still owns them: the deadline stays
    assert cg.members["a"].rebalance_deadline == 1_100
    assert cg.tick(1_100, TOPICS) == ["a"]


def test_static_member_comes_back_without_a_rebalance() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a", instance_id="i-a")
    join(cg, "b", instance_id="i-b")
    beat(cg, "a", 1, owned(set(range(6))))
    beat(cg, "a", 1, owned(parts(cg.members["a"].assigned)))
    beat(cg, "b", 2, {})
    before = {m.instance_id: (m.member_epoch, dict(m.assigned)) for m in cg.members.values()}
    epoch = cg.group_epoch
    with pytest.raises(ConsumerGroupError) as e:  # still held by a
        join(cg, "a2", instance_id="i-a")
    assert e.value.code == ErrorCode.UNRELEASED_INSTANCE_ID
    assert beat_static_leave(cg, "a").member_epoch == -2
    r = join(cg, "a2", instance_id="i-a")
    assert (r.member_id, r.member_epoch) == ("a2", before["i-a"][0])
    assert parts(r) == parts(before["i-a"][1])
    assert cg.group_epoch == epoch and "a" not in cg.members
    check_owners(cg)
    with pytest.raises(ConsumerGroupError) as e:  # the old member id is gone
        beat(cg, "a", 2, None)
    assert e.value.code == ErrorCode.UNKNOWN_MEMBER_ID


def beat_static_leave(cg: ConsumerGroup, member_id: str) -> HeartbeatResult:
    m = cg.members[member_id]
    req = HeartbeatRequest(member_id, -2, instance_id=m.instance_id)
    return cg.heartbeat(req, TOPICS, 0.0, "generated")


def test_group_max_size() -> None:
    cg = ConsumerGroup("g", ConsumerGroupConfig(max_size=1))
    join(cg, "a")
    with pytest.raises(ConsumerGroupError) as e:
        join(cg, "b")
    assert e.value.code == ErrorCode.GROUP_MAX_SIZE_REACHED


def test_new_partitions_reach_the_members() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    grown = {"t1": topic("t1", 8)}
    assert cg.refresh_metadata(grown, 0.0)
    assert cg.group_epoch == 2
    r = cg.heartbeat(HeartbeatRequest("a", 1, owned=owned(set(range(6)))), grown, 0.0, "x")
    assert (r.member_epoch, parts(r)) == (2, set(range(8)))
    assert not cg.refresh_metadata(grown, 0.0)


def test_commit_and_fetch_checks() -> None:
    cg = ConsumerGroup("g", CONFIG)
    assert cg.validate_commit("", -1, 9) == 0  # admin commit to an empty group
    join(cg, "a")
    assert cg.validate_commit("", -1, 9) == ErrorCode.UNKNOWN_MEMBER_ID
    assert cg.validate_commit("a", 1, 9) == 0
    assert cg.validate_commit("a", 0, 9) == ErrorCode.STALE_MEMBER_EPOCH
    assert cg.validate_commit("a", 1, 8) == ErrorCode.UNSUPPORTED_VERSION
    assert cg.validate_commit("zz", 1, 9) == ErrorCode.UNKNOWN_MEMBER_ID
    assert cg.validate_commit("a", 1, None) == 0  # TxnOffsetCommit
    assert cg.validate_fetch(None, -1) == 0
    assert cg.validate_fetch("a", 1) == 0
    assert cg.validate_fetch("a", 2) == ErrorCode.STALE_MEMBER_EPOCH
    assert cg.validate_fetch("zz", 1) == ErrorCode.UNKNOWN_MEMBER_ID


def test_preferred_assignor() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    assert cg.preferred_assignor() == "uniform"
    join(cg, "b", server_assignor="range")
    assert cg.preferred_assignor() == "range"


def _replayed(cg: ConsumerGroup, records: list[Record]) -> ConsumerGroup:
    """What a coordinator loading the log rebuilds: the records through their bytes."""
    fresh = ConsumerGroup(cg.group_id, CONFIG)
    for key, value in records:
        kb = cgr.encode_key(key)
        vb = None if value is None else cgr.encode_value(value)
        k = cgr.decode_key(kb)
        assert k is not None
        fresh.replay(k, cgr.decode_value(k, vb))
    fresh.finish_load(0.0)
    return fresh


def _snapshot(cg: ConsumerGroup) -> object:
    return (
        cg.group_epoch,
        cg.assignment_epoch,
        dict(cg.target),
        cg.subscription_metadata,
        cg.owners,
        cg.static_members,
        {
            m.member_id: (
                m.member_epoch,
                m.previous_member_epoch,
                m.state,
                dict(m.assigned),
                dict(m.pending_revocation),
                m.subscribed_topic_names,
                m.instance_id,
                m.rebalance_timeout_ms,
            )
            for m in cg.members.values()
        },
    )


def test_replay_rebuilds_the_group_mid_reconciliation() -> None:
    cg = ConsumerGroup("g", CONFIG)
    log: list[Record] = []
    join(cg, "a", instance_id="i-a")
    join(cg, "b")
    join(cg, "c")
    beat(cg, "a", 1, owned(set(range(6))))  # a revoking, b and c waiting
    log += cg.take_records()
    assert cg.state == ConsumerGroupState.RECONCILING
    assert _snapshot(_replayed(cg, log)) == _snapshot(cg)
    beat(cg, "c", -1, None)
    log += cg.take_records()
    assert _snapshot(_replayed(cg, log)) == _snapshot(cg)


def test_tombstones_replay_to_an_empty_shell() -> None:
    cg = ConsumerGroup("g", CONFIG)
    join(cg, "a")
    beat(cg, "a", -1, None)
    records = cg.take_records() + cg.tombstones()
    assert _replayed(cg, records).is_empty_shell


def test_random_membership_changes_never_double_assign() -> None:
    """Members join, heartbeat in random order (acknowledging what they were told), and leave;
    from the clients' side no partition is ever owned by two members, and once the churn stops
    every member converges to a balanced, stable assignment."""
    rnd = random.Random(7)
    cg = ConsumerGroup("g", CONFIG)
    clients: dict[str, tuple[int, set[int]]] = {}  # member id -> (epoch, owned)
    next_id = 0

    def heartbeat(mid: str) -> None:
        epoch, have = clients[mid]
        r = beat(cg, mid, epoch, owned(have))
        new = parts(r) if r.assignment is not None else have
        clients[mid] = (r.member_epoch, new)

    def check() -> None:
        seen: dict[int, str] = {}
        for mid, (_, have) in clients.items():
            for p in have:
                assert p not in seen, f"partition {p} owned by {seen[p]} and {mid}"
                seen[p] = mid
        check_owners(cg)

    for _ in range(400):
        action = rnd.random()
        if action < 0.1 or not clients:
            mid = f"m{next_id}"
            next_id += 1
            r = join(cg, mid)
            clients[mid] = (r.member_epoch, parts(r))
        elif action < 0.15 and len(clients) > 1:
            mid = rnd.choice(sorted(clients))
            beat(cg, mid, -1, None)
            del clients[mid]
        else:
            heartbeat(rnd.choice(sorted(clients)))
        check()
    for _ in range(5):
        for mid in sorted(clients):
            heartbeat(mid)
            check()
    assert cg.state == ConsumerGroupState.STABLE
    counts = sorted(len(have) for _, have in clients.values())
    assert sum(counts) == 6 and counts[-1] - counts[0] <= 1


def test_a_subscribed_topic_that_does_not_exist_is_ignored_until_it_does() -> None:
    topics: Mapping[str, TopicImage] = {"t1": T1}
    cg = ConsumerGroup("g", CONFIG)
    r = cg.heartbeat(
        HeartbeatRequest("a", 0, rebalance_timeout_ms=1, subscribed_topic_names=("t1", "missing"), owned={}),
        topics,
        0.0,
        "x",
    )
    assert parts(r) == set(range(6))
    t2 = topic("missing", 2)
    assert cg.refresh_metadata({"t1": T1, "missing": t2}, 0.0)
    r = cg.heartbeat(
        HeartbeatRequest("a", 1, owned=owned(set(range(6)))), {"t1": T1, "missing": t2}, 0.0, "x"
    )
    assert r.assignment is not None and r.assignment[t2.topic_id] == frozenset({0, 1})


def _regex_topics() -> dict[str, TopicImage]:
    offsets = TopicImage("__consumer_offsets", uuid.uuid4(), (PartitionImage(0, 0),), is_internal=True)
    return {
        "orders-eu": topic("orders-eu", 2),
        "orders-us": topic("orders-us", 2),
        "x-orders-eu": topic("x-orders-eu", 2),
        "__consumer_offsets": offsets,
    }


def _regex_join(
    cg: ConsumerGroup, member_id: str, regex: str, topics: Mapping[str, TopicImage]
) -> HeartbeatResult:
    request = HeartbeatRequest(
        member_id,
        0,
        rebalance_timeout_ms=30_000,
        subscribed_topic_names=(),
        subscribed_topic_regex=regex,
        owned={},
    )
    return cg.heartbeat(request, topics, 0.0, "generated")


def _topic_names(result: HeartbeatResult, topics: Mapping[str, TopicImage]) -> set[tuple[str, int]]:
    by_id = {t.topic_id: name for name, t in topics.items()}
    assert result.assignment is not None
    return {(by_id[tid], p) for tid, ps in result.assignment.items() for p in ps}


def test_regex_subscription_matches_whole_names_and_skips_internal_topics() -> None:
    topics = _regex_topics()
    cg = ConsumerGroup("g", CONFIG)
    r = _regex_join(cg, "a", "orders-.*|__.*", topics)
    # "x-orders-eu" only contains a match; "__consumer_offsets" is internal.
    assert _topic_names(r, topics) == {("orders-eu", 0), ("orders-eu", 1), ("orders-us", 0), ("orders-us", 1)}
    records = cg.take_records()
    regex_records = [(k, v) for k, v in records if isinstance(k, cgr.ConsumerGroupRegularExpressionKey)]
    assert len(regex_records) == 1
    key, value = regex_records[0]
    assert key == cgr.ConsumerGroupRegularExpressionKey("g", "orders-.*|__.*")
    assert isinstance(value, cgr.ConsumerGroupRegularExpressionValue)
    assert value.topics == ("orders-eu", "orders-us")


def test_regex_and_names_together_subscribe_to_both() -> None:
    topics = _regex_topics()
    cg = ConsumerGroup("g", CONFIG)
    request = HeartbeatRequest(
        "a",
        0,
        rebalance_timeout_ms=30_000,
        subscribed_topic_names=("x-orders-eu",),
        subscribed_topic_regex="orders-us",
        owned={},
    )
    r = cg.heartbeat(request, topics, 0.0, "generated")
    assert _topic_names(r, topics) == {
        ("x-orders-eu", 0),
        ("x-orders-eu", 1),
        ("orders-us", 0),
        ("orders-us", 1),
    }


def test_a_topic_created_later_is_matched_and_bumps_the_epoch() -> None:
    topics = _regex_topics()
    cg = ConsumerGroup("g", CONFIG)
    r = _regex_join(cg, "a", "orders-.*", topics)
    cg.take_records()
    unrelated = {**topics, "payments": topic("payments", 3)}
    assert not cg.refresh_metadata(unrelated, 1.0)
    grown = {**unrelated, "orders-apac": topic("orders-apac", 1)}
    assert cg.refresh_metadata(grown, 2.0)
    assert cg.group_epoch == 2
    assert cg.resolved_regexes == {"orders-.*": frozenset({"orders-eu", "orders-us", "orders-apac"})}
    r = cg.heartbeat(HeartbeatRequest("a", r.member_epoch, owned=r.assignment), grown, 3.0, "x")
    assert ("orders-apac", 0) in _topic_names(r, grown)
    deleted = {n: t for n, t in grown.items() if n != "orders-eu"}
    assert cg.refresh_metadata(deleted, 4.0)
    assert cg.resolved_regexes["orders-.*"] == frozenset({"orders-us", "orders-apac"})


def test_a_regex_nobody_uses_any_more_is_tombstoned_and_replay_restores_the_rest() -> None:
    topics = _regex_topics()
    cg = ConsumerGroup("g", CONFIG)
    log: list[Record] = []
    _regex_join(cg, "a", "orders-.*", topics)
    _regex_join(cg, "b", "orders-eu", topics)
    log += cg.take_records()
    replayed = _replayed(cg, log)
    assert (
        replayed.resolved_regexes
        == cg.resolved_regexes
        == {
            "orders-.*": frozenset({"orders-eu", "orders-us"}),
            "orders-eu": frozenset({"orders-eu"}),
        }
    )
    assert replayed.subscribed_topic_names() == {"orders-eu", "orders-us"}
    cg.heartbeat(HeartbeatRequest("b", cg.members["b"].member_epoch), topics, 1.0, "x")
    cg.fence("b", topics)
    records = cg.take_records()
    assert (cgr.ConsumerGroupRegularExpressionKey("g", "orders-eu"), None) in records
    log += records
    assert _replayed(cg, log).resolved_regexes == {"orders-.*": frozenset({"orders-eu", "orders-us"})}
    log += cg.tombstones()
    assert (cgr.ConsumerGroupRegularExpressionKey("g", "orders-.*"), None) in cg.tombstones()
