"""The classic group state machine (broker/group_state.py), driven with a fake clock (ms)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shardbroker.broker.group_state import Group, GroupState, JoinRequest, JoinResult, SyncResult
from shardbroker.protocol.consumer_protocol import encode_consumer_subscription
from shardbroker.protocol.errors import ErrorCode

NONE = int(ErrorCode.NONE)


@dataclass
class Box:
    """Collects what a callback was given."""

    results: list[JoinResult | SyncResult] = field(default_factory=list)

    def __call__(self, result: JoinResult | SyncResult) -> None:
        self.results.append(result)

    @property
    def one(self) -> JoinResult | SyncResult:
        assert len(self.results) == 1, self.results
        return self.results[0]


def state(g: Group) -> GroupState:
    """The group's state (a call, so that mypy does not narrow it across calls that change it)."""
    return g.state


def join(
    g: Group,
    now: float,
    member_id: str = "",
    *,
    protocols: list[tuple[str, bytes]] | None = None,
    protocol_type: str = "consumer",
    instance: str | None = None,
    session: int = 10_000,
    rebalance: int = 30_000,
    require_known: bool = False,
) -> Box:
    box = Box()
    g.join(
        JoinRequest(
            member_id=member_id,
            group_instance_id=instance,
            protocol_type=protocol_type,
            protocols=protocols if protocols is not None else [("range", b"meta-" + member_id.encode())],
            session_timeout_ms=session,
            rebalance_timeout_ms=rebalance,
            client_id="client",
            client_host="/127.0.0.1",
            require_known_member_id=require_known,
        ),
        now=now,
        callback=box,
    )
    return box


def sync(
    g: Group, now: float, member_id: str, generation: int, assignments: dict[str, bytes] | None = None
) -> Box:
    box = Box()
    g.sync(
        member_id=member_id,
        group_instance_id=None,
        generation_id=generation,
        protocol_type=None,
        protocol_name=None,
        assignments=list((assignments or {}).items()),
        now=now,
        callback=box,
    )
    return box


def two_member_group(delay: int = 3000) -> tuple[Group, str, str]:
    """A Stable group of two members at generation 1; returns (group, leader id, follower id)."""
    g = Group("g", 0, initial_rebalance_delay_ms=delay)
    a = join(g, 0)
    b = join(g, 10)
    g.tick(delay + 10)
    ra, rb = a.one, b.one
    assert isinstance(ra, JoinResult) and isinstance(rb, JoinResult)
    leader = ra.leader_id
    follower = rb.member_id if leader == ra.member_id else ra.member_id
    s1 = sync(g, delay + 20, follower, 1)
    s2 = sync(g, delay + 30, leader, 1, {leader: b"A", follower: b"B"})
    assert isinstance(s1.one, SyncResult) and isinstance(s2.one, SyncResult)
    assert state(g) == GroupState.STABLE
    return g, leader, follower


def test_initial_delay_then_both_members_get_one_generation() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=3000)
    a = join(g, 0)
    assert state(g) == GroupState.PREPARING_REBALANCE and not a.results
    b = join(g, 1000)  # extends the delay to 4000
    g.tick(3500)
    assert not a.results and not b.results
    g.tick(4000)
    ra, rb = a.one, b.one
    assert isinstance(ra, JoinResult) and isinstance(rb, JoinResult)
    assert ra.error_code == rb.error_code == NONE
    assert ra.generation_id == rb.generation_id == 1
    assert ra.leader_id == rb.leader_id == ra.member_id  # the first to join leads
    assert ra.protocol_name == "range" and ra.protocol_type == "consumer"
    assert sorted(mid for mid, _, _ in ra.members) == sorted([ra.member_id, rb.member_id])
    assert dict((mid, meta) for mid, _, meta in ra.members)[rb.member_id] == b"meta-"  # relayed as sent
    assert rb.members == []  # only the leader sees the members
    assert state(g) == GroupState.COMPLETING_REBALANCE


def test_no_initial_delay_completes_at_once() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    a = join(g, 0)
    assert isinstance(a.one, JoinResult) and a.one.generation_id == 1


def test_member_id_required_then_join_with_it() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    first = join(g, 0, require_known=True).one
    assert isinstance(first, JoinResult)
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED and first.member_id
    assert state(g) == GroupState.EMPTY and first.member_id in g.pending_members
    second = join(g, 5, first.member_id, require_known=True).one
    assert isinstance(second, JoinResult)
    assert second.error_code == NONE and second.member_id == first.member_id


def test_pending_member_expires_after_session_timeout() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    first = join(g, 0, require_known=True, session=6000).one
    assert isinstance(first, JoinResult)
    g.tick(6001)
    assert not g.pending_members
    again = join(g, 6002, first.member_id).one
    assert isinstance(again, JoinResult) and again.error_code == ErrorCode.UNKNOWN_MEMBER_ID


def test_sync_relays_assignments_and_persists() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=100)
    a, b = join(g, 0), join(g, 0)
    g.tick(100)
    ra, rb = a.one, b.one
    assert isinstance(ra, JoinResult) and isinstance(rb, JoinResult)
    follower = sync(g, 110, rb.member_id, 1)
    assert not follower.results  # parks until the leader's assignments
    g.dirty = False
    leader = sync(g, 120, ra.member_id, 1, {ra.member_id: b"\x00\x01a", rb.member_id: b"\x00\x01b"})
    assert isinstance(leader.one, SyncResult) and leader.one.assignment == b"\x00\x01a"
    assert isinstance(follower.one, SyncResult) and follower.one.assignment == b"\x00\x01b"
    assert state(g) == GroupState.STABLE and g.dirty
    # A repeated SyncGroup in Stable gets the same assignment at once.
    again = sync(g, 130, rb.member_id, 1).one
    assert isinstance(again, SyncResult) and again.assignment == b"\x00\x01b"


def test_sync_fencing() -> None:
    g, leader, _ = two_member_group()
    bad = sync(g, 4000, leader, 7).one
    assert isinstance(bad, SyncResult) and bad.error_code == ErrorCode.ILLEGAL_GENERATION
    unknown = sync(g, 4000, "nobody", 1).one
    assert isinstance(unknown, SyncResult) and unknown.error_code == ErrorCode.UNKNOWN_MEMBER_ID
    box = Box()
    g.sync(
        member_id=leader,
        group_instance_id=None,
        generation_id=1,
        protocol_type="connect",
        protocol_name=None,
        assignments=[],
        now=4000,
        callback=box,
    )
    assert isinstance(box.one, SyncResult) and box.one.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_heartbeat_answers() -> None:
    g, _leader, follower = two_member_group()
    assert g.heartbeat(member_id=follower, group_instance_id=None, generation_id=1, now=4000) == NONE
    assert g.heartbeat(member_id=follower, group_instance_id=None, generation_id=0, now=4000) == (
        ErrorCode.ILLEGAL_GENERATION
    )
    assert g.heartbeat(member_id="x", group_instance_id=None, generation_id=1, now=4000) == (
        ErrorCode.UNKNOWN_MEMBER_ID
    )
    join(g, 4100)  # a third member: rebalance
    assert state(g) == GroupState.PREPARING_REBALANCE
    assert g.heartbeat(member_id=follower, group_instance_id=None, generation_id=1, now=4200) == (
        ErrorCode.REBALANCE_IN_PROGRESS
    )


def test_session_expiry_removes_member_and_rebalances() -> None:
    g, leader, follower = two_member_group()
    # Only the leader heartbeats.
    for t in range(4000, 14_000, 2000):
        assert g.heartbeat(member_id=leader, group_instance_id=None, generation_id=1, now=t) == NONE
    g.tick(13_100)  # follower last heard at 3020 (sync), session 10 s
    assert follower not in g.members and state(g) == GroupState.PREPARING_REBALANCE
    assert g.heartbeat(member_id=leader, group_instance_id=None, generation_id=1, now=13_200) == (
        ErrorCode.REBALANCE_IN_PROGRESS
    )
    rejoin = join(g, 13_300, leader).one  # every remaining member rejoined: completes at once
    assert isinstance(rejoin, JoinResult) and rejoin.generation_id == 2 and rejoin.leader_id == leader
    assert [mid for mid, _, _ in rejoin.members] == [leader]


def test_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() -> None:
    g, leader, follower = two_member_group()
    newcomer = join(g, 5000, rebalance=20_000)
    old_leader = join(g, 5010, leader)  # the follower never rejoins but keeps heartbeating
    for t in range(5000, 35_000, 3000):
        g.heartbeat(member_id=follower, group_instance_id=None, generation_id=1, now=t)
        g.tick(t)
    assert not newcomer.results
    g.tick(35_000)  # rebalance timeout: max over members (30 s) after 5000
    r = old_leader.one
    assert isinstance(r, JoinResult) and r.generation_id == 2 and follower not in g.members
    assert isinstance(newcomer.one, JoinResult) and len(g.members) == 2


def test_leader_rejoin_in_stable_triggers_rebalance_follower_rejoin_does_not() -> None:
    g, leader, follower = two_member_group()
    changed = join(g, 3900, follower, protocols=[("range", b"other")])
    assert not changed.results and state(g) == GroupState.PREPARING_REBALANCE
    g, leader, follower = two_member_group()
    same = join(g, 4000, follower, protocols=[("range", b"meta-")]).one  # what it joined with
    assert isinstance(same, JoinResult) and same.generation_id == 1 and state(g) == GroupState.STABLE
    join(g, 4100, leader, protocols=[("range", b"meta-")])
    assert state(g) == GroupState.PREPARING_REBALANCE


def test_inconsistent_protocols() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    join(g, 0, protocols=[("range", b"")])
    other_type = join(g, 1, protocol_type="connect", protocols=[("range", b"")]).one
    assert (
        isinstance(other_type, JoinResult) and other_type.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    )
    no_common = join(g, 1, protocols=[("roundrobin", b"")]).one
    assert isinstance(no_common, JoinResult) and no_common.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    empty = join(Group("h", 0), 0, protocols=[]).one
    assert isinstance(empty, JoinResult) and empty.error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL


def test_protocol_selection_by_votes_among_common_protocols() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=50)
    a = join(g, 0, protocols=[("cooperative-sticky", b"1"), ("range", b"2")])
    join(g, 0, protocols=[("range", b"3"), ("cooperative-sticky", b"4")])
    join(g, 0, protocols=[("cooperative-sticky", b"5"), ("roundrobin", b"6"), ("range", b"7")])
    g.tick(50)
    r = a.one
    assert isinstance(r, JoinResult) and r.protocol_name == "cooperative-sticky"
    assert sorted(meta for _, _, meta in r.members) == [b"1", b"4", b"5"]


def test_static_member_rejoin_takes_over_and_fences_the_old_id() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    first = join(g, 0, instance="i-1").one
    assert isinstance(first, JoinResult) and first.error_code == NONE
    old_id = first.member_id
    sync(g, 5, old_id, 1, {old_id: b"x"})
    g.dirty = False
    again = join(g, 10, instance="i-1", protocols=[("range", b"meta-")]).one  # restarted: no member id
    assert isinstance(again, JoinResult) and again.error_code == NONE and again.member_id != old_id
    # Stable, same protocol: no rebalance, same generation, the old leader id (no reassignment).
    assert (again.generation_id, again.leader_id, again.members) == (1, old_id, [])
    assert state(g) == GroupState.STABLE and g.dirty and g.leader_id == again.member_id
    synced = sync(g, 12, again.member_id, 1).one
    assert isinstance(synced, SyncResult) and synced.assignment == b"x"
    assert g.static_members["i-1"] == again.member_id
    assert g.heartbeat(member_id=old_id, group_instance_id="i-1", generation_id=1, now=20) == (
        ErrorCode.FENCED_INSTANCE_ID
    )
    assert g.leave(member_id=old_id, group_instance_id="i-1", now=20) == ErrorCode.FENCED_INSTANCE_ID
    assert g.leave(member_id="", group_instance_id="i-1", now=20) == NONE
    assert state(g) == GroupState.EMPTY and not g.members


def test_static_member_rejoin_with_another_protocol_rebalances() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    first = join(g, 0, instance="i-1", protocols=[("range", b""), ("roundrobin", b"")]).one
    assert isinstance(first, JoinResult) and first.protocol_name == "range"
    sync(g, 5, first.member_id, 1, {first.member_id: b"x"})
    # Another preferred protocol: the group's selection would change, so it rebalances.
    again = join(g, 10, instance="i-1", protocols=[("roundrobin", b""), ("range", b"")])
    # The only member: the rebalance completes at once, with the new protocol.
    r = again.one
    assert isinstance(r, JoinResult) and (r.generation_id, r.protocol_name) == (2, "roundrobin")
    waiting = join(g, 20, first.member_id, instance="i-1").one
    assert isinstance(waiting, JoinResult) and waiting.error_code == ErrorCode.FENCED_INSTANCE_ID


def test_leave_last_member_makes_group_empty_and_dirty() -> None:
    g, leader, follower = two_member_group()
    g.dirty = False
    assert g.leave(member_id=follower, group_instance_id=None, now=4000) == NONE
    assert state(g) == GroupState.PREPARING_REBALANCE
    assert g.leave(member_id=leader, group_instance_id=None, now=4010) == NONE
    assert state(g) == GroupState.EMPTY and g.dirty and g.generation_id == 2
    assert g.leave(member_id=leader, group_instance_id=None, now=4020) == ErrorCode.UNKNOWN_MEMBER_ID


def test_leave_fails_waiting_requests_and_rebalance_answers_followers() -> None:
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    a = join(g, 0).one
    assert isinstance(a, JoinResult)
    b = join(g, 1)  # a must rejoin; b waits
    assert not b.results and state(g) == GroupState.PREPARING_REBALANCE
    ra = join(g, 2, a.member_id).one
    rb = b.one
    assert isinstance(ra, JoinResult) and isinstance(rb, JoinResult) and ra.generation_id == 2
    waiting = sync(g, 3, rb.member_id, 2)
    assert not waiting.results
    assert g.leave(member_id=ra.member_id, group_instance_id=None, now=4) == NONE  # leader leaves
    assert isinstance(waiting.one, SyncResult) and waiting.one.error_code == ErrorCode.REBALANCE_IN_PROGRESS


def test_commit_validation() -> None:
    g, leader, _ = two_member_group()
    assert g.validate_commit(leader, None, 1) == NONE
    assert g.validate_commit(leader, None, 0) == ErrorCode.ILLEGAL_GENERATION
    assert g.validate_commit("x", None, 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert g.validate_commit("", None, -1) == ErrorCode.UNKNOWN_MEMBER_ID  # admin commit, live group
    join(g, 4000)
    assert g.validate_commit(leader, None, 1) == NONE  # PreparingRebalance: revocation commits pass
    empty = Group("e", 0)
    assert empty.validate_commit("", None, -1) == NONE


def test_next_deadline_and_dead_group() -> None:
    g, leader, _follower = two_member_group()
    deadline = g.next_deadline()
    assert deadline is not None and deadline == 3020 + 10_000
    waiting = join(g, 4000)
    g.kill()
    assert state(g) == GroupState.DEAD
    assert isinstance(waiting.one, JoinResult) and waiting.one.error_code == ErrorCode.NOT_COORDINATOR
    assert g.heartbeat(member_id=leader, group_instance_id=None, generation_id=1, now=1) == (
        ErrorCode.COORDINATOR_NOT_AVAILABLE
    )


def test_subscribed_topics() -> None:
    # ConsumerProtocolSubscription v0: version, [topics], user data.
    data = b"\x00\x00" + b"\x00\x00\x00\x02" + b"\x00\x01a" + b"\x00\x02bc" + b"\xff\xff\xff\xff"
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    join(g, 0, protocols=[("range", data)])
    join(g, 1, protocols=[("range", encode_consumer_subscription(["d"]))])
    assert g.subscribed_topics() == {"a", "bc", "d"}
    for bad in (b"\x00", b"\x00\x00\x00\x00\x00\x01\x00\x09ab"):
        g = Group("g", 0, initial_rebalance_delay_ms=0)
        join(g, 0, protocols=[("range", bad)])
        assert g.subscribed_topics() is None  # undecodable: Kafka then treats every topic as subscribed
    g = Group("g", 0, initial_rebalance_delay_ms=0)
    join(g, 0, protocols=[("range", data)], protocol_type="connect")
    assert g.subscribed_topics() is None
