"""The server-side assignors of the consumer protocol (broker/consumer_assignors.py): coverage,
balance, stickiness and stability of ``uniform``; ranges, ordering and co-partitioning of
``range``; random cases for both, and one run at 1,000 members x 10,000 partitions."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence

import pytest

from shardbroker.broker.consumer_assignors import (
    ASSIGNORS,
    RANGE,
    UNIFORM,
    AssignmentMember,
    AssignmentTopic,
    PartitionAssignor,
)

Result = dict[str, dict[uuid.UUID, frozenset[int]]]
Topics = dict[uuid.UUID, AssignmentTopic]

UNIFORM_ASSIGNOR = ASSIGNORS[UNIFORM]
RANGE_ASSIGNOR = ASSIGNORS[RANGE]


def topic_id(name: str) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_DNS, name)


def make_topics(**partitions: int) -> Topics:
    return {topic_id(name): AssignmentTopic(topic_id(name), name, n) for name, n in partitions.items()}


def member(
    member_id: str,
    *topic_names: str,
    current: Mapping[uuid.UUID, frozenset[int]] | None = None,
    instance_id: str | None = None,
) -> AssignmentMember:
    return AssignmentMember(
        member_id, instance_id, None, frozenset(topic_id(n) for n in topic_names), current or {}
    )


def with_current(members: Sequence[AssignmentMember], result: Result) -> list[AssignmentMember]:
    """``members`` again, each with its partitions in ``result`` as its current assignment."""
    return [
        AssignmentMember(
            m.member_id, m.instance_id, m.rack_id, m.subscribed_topic_ids, result.get(m.member_id, {})
        )
        for m in members
    ]


def flat(assignment: Mapping[uuid.UUID, frozenset[int]]) -> set[tuple[uuid.UUID, int]]:
    return {(tid, p) for tid, parts in assignment.items() for p in parts}


def size(assignment: Mapping[uuid.UUID, frozenset[int]]) -> int:
    return sum(len(parts) for parts in assignment.values())


def moved(before: Result, after: Result) -> int:
    """Partitions owned before that another member owns after."""
    owner = {tp: m for m, a in after.items() for tp in flat(a)}
    return sum(1 for m, a in before.items() for tp in flat(a) if owner.get(tp) != m)


def check_invariants(result: Result, members: Sequence[AssignmentMember], topics: Topics) -> None:
    """Every member has an entry; each partition of each subscribed, known topic goes to exactly
    one of its subscribers; nothing else is assigned; no empty topic entries."""
    assert set(result) == {m.member_id for m in members}
    subscribed = {m.member_id: m.subscribed_topic_ids & topics.keys() for m in members}
    owners: dict[tuple[uuid.UUID, int], str] = {}
    for member_id, assignment in result.items():
        for tid, parts in assignment.items():
            assert parts, (member_id, tid)
            assert tid in subscribed[member_id], (member_id, tid)
            for p in parts:
                assert 0 <= p < topics[tid].partitions
                assert (tid, p) not in owners, (tid, p)
                owners[(tid, p)] = member_id
    wanted = frozenset().union(*subscribed.values())
    assert set(owners) == {(tid, p) for tid in wanted for p in range(topics[tid].partitions)}


def assign(assignor: PartitionAssignor, members: Sequence[AssignmentMember], topics: Topics) -> Result:
    result = assignor.assign(members, topics)
    check_invariants(result, members, topics)
    return result


# --- uniform, homogeneous ---------------------------------------------------------------------


def test_names() -> None:
    assert {name: a.name for name, a in ASSIGNORS.items()} == {"uniform": "uniform", "range": "range"}


def test_uniform_homogeneous_balance() -> None:
    topics = make_topics(a=7, b=5, c=1)
    members = [member(f"m{i}", "a", "b", "c") for i in range(4)]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert sorted(size(a) for a in result.values()) == [3, 3, 3, 4]


def test_uniform_more_members_than_partitions() -> None:
    topics = make_topics(a=2)
    members = [member(f"m{i}", "a") for i in range(5)]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert sorted(size(a) for a in result.values()) == [0, 0, 0, 1, 1]


def test_uniform_no_members_and_no_subscriptions() -> None:
    topics = make_topics(a=3)
    assert UNIFORM_ASSIGNOR.assign([], topics) == {}
    assert assign(UNIFORM_ASSIGNOR, [member("m1"), member("m2")], topics) == {"m1": {}, "m2": {}}


def group_of(n: int) -> list[AssignmentMember]:
    return [member(f"m{i:02d}", "a") for i in range(n)]


def test_uniform_member_joining_moves_the_fewest() -> None:
    topics = make_topics(a=200)
    before = assign(UNIFORM_ASSIGNOR, group_of(10), topics)
    assert {size(a) for a in before.values()} == {20}
    joined = [*with_current(group_of(10), before), member("m10", "a")]
    after = assign(UNIFORM_ASSIGNOR, joined, topics)
    # 200 / 11: two members keep 19, eight keep 18, the new one takes 18.
    assert moved(before, after) == 18
    assert size(after["m10"]) == 18
    assert sorted(size(after[m]) for m in before) == [18] * 8 + [19] * 2
    for m, partitions in before.items():
        assert flat(after[m]) <= flat(partitions)  # nobody gains, nobody loses beyond balance


def test_uniform_member_leaving_moves_only_its_partitions() -> None:
    topics = make_topics(a=200)
    before = assign(UNIFORM_ASSIGNOR, group_of(11), topics)
    assert sorted(size(a) for a in before.values()) == [18] * 9 + [19] * 2
    leaver = max(before, key=lambda m: size(before[m]))
    remaining = [m for m in with_current(group_of(11), before) if m.member_id != leaver]
    after = assign(UNIFORM_ASSIGNOR, remaining, topics)
    assert {size(a) for a in after.values()} == {20}
    del before[leaver]
    assert moved(before, after) == 0
    for m, partitions in before.items():
        assert flat(partitions) <= flat(after[m])


def test_uniform_extras_stay_with_their_holders() -> None:
    """7 partitions over 3 members: the member already holding 3 keeps the extra one."""
    topics = make_topics(a=7)
    a = topic_id("a")
    current = {"m1": frozenset({0, 1}), "m2": frozenset({2, 3}), "m3": frozenset({4, 5, 6})}
    members = [member(m, "a", current={a: parts}) for m, parts in current.items()]
    assert assign(UNIFORM_ASSIGNOR, members, topics) == {m: {a: parts} for m, parts in current.items()}


def test_uniform_drops_invalid_current_partitions() -> None:
    topics = make_topics(a=4, b=2)
    a, b, gone = topic_id("a"), topic_id("b"), topic_id("gone")
    members = [
        # b is no longer subscribed, partitions 4 and 9 are beyond a's count, "gone" is unknown.
        member(
            "m1", "a", "gone", current={a: frozenset({0, 4, 9}), b: frozenset({0, 1}), gone: frozenset({0})}
        ),
        member("m2", "a", "gone", current={a: frozenset({1})}),
    ]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert result["m1"][a] >= {0} and result["m2"][a] >= {1}
    assert {size(x) for x in result.values()} == {2}


def test_uniform_duplicate_claims_are_settled() -> None:
    topics = make_topics(a=4)
    a = topic_id("a")
    members = [member(m, "a", current={a: frozenset({0, 1})}) for m in ("m2", "m1")]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert result["m1"] == {a: frozenset({0, 1})}  # the first in member-id order keeps them
    assert result["m2"] == {a: frozenset({2, 3})}


# --- uniform, heterogeneous -------------------------------------------------------------------


def test_uniform_heterogeneous_balanced_as_subscriptions_allow() -> None:
    topics = make_topics(t1=2, t2=7)
    t1, t2 = topic_id("t1"), topic_id("t2")
    members = [member("A", "t1"), member("B", "t1", "t2"), member("C", "t2")]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert result["A"] == {t1: frozenset({0, 1})}
    assert set(result["B"]) == {t2} and {size(result["B"]), size(result["C"])} == {3, 4}


def test_uniform_heterogeneous_evens_out_through_the_shared_member() -> None:
    topics = make_topics(t1=6, t2=6)
    t1, t2 = topic_id("t1"), topic_id("t2")
    members = [member("A", "t1"), member("B", "t1", "t2"), member("C", "t2")]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert {m: size(a) for m, a in result.items()} == {"A": 4, "B": 4, "C": 4}
    assert {tid: len(parts) for tid, parts in result["B"].items()} == {t1: 2, t2: 2}


def test_uniform_heterogeneous_balances_until_no_partition_moves() -> None:
    """Handed out: m0 5 (t0, t1, t2 0 and 2), m1 2 and m2 3 (t3 alternately, t2 1). Balancing
    t2 (m0 -> m2) unbalances t3, already looked at: a second round moves a t3 partition too."""
    topics = make_topics(t0=1, t1=2, t2=3, t3=4)
    t0, t1, t2, t3 = (topic_id(n) for n in ("t0", "t1", "t2", "t3"))
    members = [member("m0", "t0", "t1", "t2"), member("m1", "t3"), member("m2", "t2", "t3")]
    assert assign(UNIFORM_ASSIGNOR, members, topics) == {
        "m0": {t0: frozenset({0}), t1: frozenset({0, 1}), t2: frozenset({0})},
        "m1": {t3: frozenset({0, 2, 3})},
        "m2": {t2: frozenset({1, 2}), t3: frozenset({1})},
    }


def test_uniform_heterogeneous_is_sticky_when_a_member_joins() -> None:
    topics = make_topics(t1=6, t2=6)
    members = [member("A", "t1"), member("B", "t1", "t2"), member("C", "t2")]
    before = assign(UNIFORM_ASSIGNOR, members, topics)
    joined = [*with_current(members, before), member("D", "t2")]
    after = assign(UNIFORM_ASSIGNOR, joined, topics)
    # Each topic's subscribers end within one of each other (A 4 / B 3 on t1, B 3 / C 3 / D 2 on t2);
    # only the partitions D takes move.
    assert {m: size(a) for m, a in after.items()} == {"A": 4, "B": 3, "C": 3, "D": 2}
    assert moved(before, after) == 2
    for m, partitions in before.items():
        assert flat(after[m]) <= flat(partitions)


def test_uniform_heterogeneous_unsubscribed_topic() -> None:
    """A drops t2: its t2 partitions go to B, which then hands A its t1 partitions to even out."""
    topics = make_topics(t1=4, t2=4)
    t1, t2 = topic_id("t1"), topic_id("t2")
    members = [
        member("A", "t1", current={t1: frozenset({0, 1}), t2: frozenset({0, 1})}),
        member("B", "t1", "t2", current={t1: frozenset({2, 3}), t2: frozenset({2, 3})}),
    ]
    result = assign(UNIFORM_ASSIGNOR, members, topics)
    assert result == {"A": {t1: frozenset(range(4))}, "B": {t2: frozenset(range(4))}}


# --- range ------------------------------------------------------------------------------------


def test_range_kafka_example() -> None:
    topics = make_topics(t1=3, t2=3)
    t1, t2 = topic_id("t1"), topic_id("t2")
    result = assign(RANGE_ASSIGNOR, [member("M1", "t1", "t2"), member("M0", "t1", "t2")], topics)
    assert result == {
        "M0": {t1: frozenset({0, 1}), t2: frozenset({0, 1})},
        "M1": {t1: frozenset({2}), t2: frozenset({2})},
    }


def test_range_extras_go_first_and_empty_members_keep_an_entry() -> None:
    topics = make_topics(t=7, small=2)
    t, small = topic_id("t"), topic_id("small")
    result = assign(RANGE_ASSIGNOR, [member(m, "t", "small") for m in ("c", "b", "a")], topics)
    assert result == {
        "a": {t: frozenset({0, 1, 2}), small: frozenset({0})},
        "b": {t: frozenset({3, 4}), small: frozenset({1})},
        "c": {t: frozenset({5, 6})},
    }


def test_range_static_members_first_by_instance_id() -> None:
    topics = make_topics(t=6)
    t = topic_id("t")
    members = [member("a", "t"), member("b", "t", instance_id="i2"), member("c", "t", instance_id="i1")]
    result = assign(RANGE_ASSIGNOR, members, topics)
    assert result == {"c": {t: frozenset({0, 1})}, "b": {t: frozenset({2, 3})}, "a": {t: frozenset({4, 5})}}
    # A static member rejoining under a new member id gets the same range back.
    rejoined = [member("a", "t"), member("z", "t", instance_id="i2"), member("c", "t", instance_id="i1")]
    assert assign(RANGE_ASSIGNOR, rejoined, topics)["z"] == result["b"]


def test_range_heterogeneous_co_partitioning() -> None:
    topics = make_topics(t1=5, t2=5, t3=4)
    t1, t2, t3 = topic_id("t1"), topic_id("t2"), topic_id("t3")
    members = [member("A", "t1", "t2"), member("B", "t1", "t2", "t3"), member("C", "t3")]
    result = assign(RANGE_ASSIGNOR, members, topics)
    assert result == {
        "A": {t1: frozenset({0, 1, 2}), t2: frozenset({0, 1, 2})},
        "B": {t1: frozenset({3, 4}), t2: frozenset({3, 4}), t3: frozenset({0, 1})},
        "C": {t3: frozenset({2, 3})},
    }


def test_range_recomputes_and_ignores_current() -> None:
    topics = make_topics(t=6)
    t = topic_id("t")
    members = [
        member("a", "t", current={t: frozenset({4, 5})}),
        member("b", "t", current={t: frozenset({0})}),
    ]
    assert assign(RANGE_ASSIGNOR, members, topics) == {
        "a": {t: frozenset({0, 1, 2})},
        "b": {t: frozenset({3, 4, 5})},
    }


# --- both: random cases, scale ----------------------------------------------------------------


def random_case(rng: random.Random) -> tuple[list[AssignmentMember], Topics]:
    names = [f"t{i}" for i in range(rng.randint(1, 4))]
    topics = make_topics(**{n: rng.randint(0, 9) for n in names})
    if rng.random() < 0.3:
        del topics[topic_id(rng.choice(names))]  # subscribed but deleted / not yet known
    homogeneous = rng.random() < 0.4
    shared = rng.sample(names, rng.randint(1, len(names)))
    members = []
    for i in range(rng.randint(1, 6)):
        subscribed = shared if homogeneous else rng.sample(names, rng.randint(0, len(names)))
        current = {
            topic_id(n): frozenset(rng.sample(range(12), rng.randint(0, 4)))
            for n in rng.sample([*names, "old"], rng.randint(0, min(3, len(names) + 1)))
        }
        instance_id = f"i{rng.randint(0, 9)}" if rng.random() < 0.3 else None
        members.append(member(f"m{i}", *subscribed, current=current, instance_id=instance_id))
    return members, topics


@pytest.mark.parametrize("name", [UNIFORM, RANGE])
def test_random_cases(name: str) -> None:
    assignor = ASSIGNORS[name]
    rng = random.Random(848)
    for _ in range(400):
        members, topics = random_case(rng)
        result = assign(assignor, members, topics)
        assert assignor.assign(rng.sample(members, len(members)), topics) == result  # order-free
        again = with_current(members, result)
        assert assign(assignor, again, topics) == result  # stable
        if name == UNIFORM:
            check_uniform(members, topics, result)
        else:
            check_ranges(members, topics, result)


def check_uniform(members: Sequence[AssignmentMember], topics: Topics, result: Result) -> None:
    subscribed = {m.member_id: frozenset(m.subscribed_topic_ids & topics.keys()) for m in members}
    if len(set(subscribed.values())) > 1:
        # Balanced per topic: no holder of one of its partitions has more than one partition
        # beyond any of its subscribers.
        counts = {m: size(a) for m, a in result.items()}
        for tid in frozenset().union(*subscribed.values()):
            holders = [m for m, a in result.items() if tid in a]
            least = min(counts[m] for m, s in subscribed.items() if tid in s)
            assert all(counts[m] - least <= 1 for m in holders)
        return
    topic_ids = subscribed[members[0].member_id]
    q, r = divmod(sum(topics[tid].partitions for tid in topic_ids), len(members))
    assert sorted(size(a) for a in result.values()) == [q] * (len(members) - r) + [q + 1] * r
    valid = {
        m.member_id: {
            (tid, p) for tid, p in flat(m.current) if tid in topic_ids and p < topics[tid].partitions
        }
        for m in members
    }
    if sum(len(v) for v in valid.values()) == len(set().union(*valid.values())):  # no duplicate claims
        # The fewest moves: each member keeps what its count allows, the extra ones going to
        # the members holding the most.
        kept = sum(len(flat(result[m]) & v) for m, v in valid.items())
        held = sorted((len(v) for v in valid.values()), reverse=True)
        assert kept == sum(min(h, q + (k < r)) for k, h in enumerate(held))


def check_ranges(members: Sequence[AssignmentMember], topics: Topics, result: Result) -> None:
    ordered = sorted(members, key=lambda m: (m.instance_id is None, m.instance_id or "", m.member_id))
    for tid, t in topics.items():
        subscribers = [m.member_id for m in ordered if tid in m.subscribed_topic_ids]
        if not subscribers:
            continue
        q, r = divmod(t.partitions, len(subscribers))
        start = 0
        for k, member_id in enumerate(subscribers):
            n = q + (k < r)
            assert result[member_id].get(tid, frozenset()) == frozenset(range(start, start + n))
            start += n


@pytest.mark.parametrize("name", [UNIFORM, RANGE])
def test_scale(name: str) -> None:
    """1,000 members x 10,000 partitions (10 topics), homogeneous: runs once, checks the result."""
    topics = make_topics(**{f"t{i}": 1000 for i in range(10)})
    members = [member(f"member-{i:04d}", *(t.name for t in topics.values())) for i in range(1000)]
    result = assign(ASSIGNORS[name], members, topics)
    assert {size(a) for a in result.values()} == {10}
