"""One consumer group's membership state machine (Kafka's classic rebalance protocol). No I/O.

Pure: time is passed in (``now``, milliseconds of any monotonic clock) and waiting requests are
callbacks, so unit tests drive it with a fake clock. The coordinator (group_coordinator.py) wraps
callbacks in futures and calls :meth:`Group.tick` on a timer; its GroupMetadataManager
(group_metadata_manager.py) persists what :class:`Group` reports.

States (Kafka's GroupState)::

    Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
    CompletingRebalance --leader's SyncGroup--> Stable
    Stable / CompletingRebalance --join of a new member, leader rejoin, changed protocols,
                                   a member leaving or expiring--> PreparingRebalance
    PreparingRebalance --every member gone--> Empty        any --DeleteGroups / unload--> Dead

Rules kept from Kafka (GroupCoordinator.scala / GroupMetadata.scala):

- ``group.initial.rebalance.delay.ms``: the first rebalance of an Empty group waits that long,
  extended by the same delay each time a new member joins, up to the largest rebalance timeout;
  later rebalances complete as soon as every known member has rejoined, or at the rebalance
  timeout (members that did not rejoin are removed).
- JoinGroup v4+ with an empty member id gets MEMBER_ID_REQUIRED and a member id to rejoin with
  (a "pending" member until then, forgotten after its session timeout).
- Session timeouts: a member that is neither waiting in a JoinGroup or SyncGroup nor heard from
  within its session timeout is removed (rebalance). Heartbeat answers REBALANCE_IN_PROGRESS
  during PreparingRebalance, ILLEGAL_GENERATION for another generation, UNKNOWN_MEMBER_ID for
  an unknown member.
- Static membership (group.instance.id): a known instance id joining with an empty member id
  takes over (a new member id; the old id's waiting requests get FENCED_INSTANCE_ID); a request
  naming the instance with another member id gets FENCED_INSTANCE_ID. In Stable, when the
  rejoin does not change the group's protocol, there is no rebalance (KIP-345): the member gets
  the current generation and, on SyncGroup, its previous assignment.
- Protocol selection: the protocols every member supports, each member votes for its most
  preferred one of those, the most votes wins (INCONSISTENT_GROUP_PROTOCOL when a joining member
  shares no protocol with the group or has another protocol type).
- The leader (kept across generations while it stays a member, else the first member to have
  joined) receives every member's metadata; its SyncGroup assignments are relayed unchanged.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from shardbroker.protocol.consumer_protocol import decode_consumer_subscription
from shardbroker.protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "Group",
    "GroupState",
    "JoinRequest",
    "JoinResult",
    "Member",
    "OffsetAndMetadata",
    "SyncResult",
    "new_classic_member_id",
]

_NONE: Final = int(ErrorCode.NONE)


def new_classic_member_id(client_id: str, instance_id: str | None) -> str:
    """A member id as Kafka makes them for JoinGroup: the instance or client id, then a uuid."""
    return f"{instance_id or client_id or 'member'}-{uuid.uuid4()}"


#: Kafka's GroupCoordinator.NewMemberJoinTimeoutMs: a new member waiting in JoinGroup this long
#: (without a heartbeat) is dropped.
NEW_MEMBER_JOIN_TIMEOUT_MS: Final = 5 * 60 * 1000


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class JoinRequest:
    """A JoinGroup's fields, as the coordinator passes them to a group of either protocol."""

    member_id: str
    group_instance_id: str | None
    protocol_type: str
    #: (name, metadata), in the member's order of preference.
    protocols: list[tuple[str, bytes]]
    session_timeout_ms: int
    #: -1 for JoinGroup v0, which has none: the session timeout serves.
    rebalance_timeout_ms: int
    client_id: str
    client_host: str
    #: JoinGroup v4+ (KIP-394): a dynamic member without an id is given one to rejoin with.
    require_known_member_id: bool

    @property
    def rebalance_ms(self) -> int:
        return self.session_timeout_ms if self.rebalance_timeout_ms < 0 else self.rebalance_timeout_ms


@dataclass(slots=True)
class JoinResult:
    error_code: int
    generation_id: int = -1
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    member_id: str = ""
    #: (member id, group instance id, metadata): the leader's answer only.
    members: list[tuple[str, str | None, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class SyncResult:
    error_code: int
    protocol_type: str | None = None
    protocol_name: str | None = None
    assignment: bytes = b""


JoinCallback = Callable[[JoinResult], None]
SyncCallback = Callable[[SyncResult], None]


@dataclass(slots=True)
class OffsetAndMetadata:
    offset: int
    leader_epoch: int = -1
    metadata: str | None = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1


@dataclass(slots=True, eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    protocol_type: str
    #: (name, metadata), in the member's order of preference.
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_callback: JoinCallback | None = None
    sync_callback: SyncCallback | None = None
    last_heartbeat: float = 0.0
    is_new: bool = False

    def metadata(self, protocol: str | None) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def same_protocols(self, protocols: list[tuple[str, bytes]]) -> bool:
        return self.protocols == protocols

    def keep_alive(self, now: float) -> bool:
        """Kafka's MemberMetadata.shouldKeepAlive."""
        if self.join_callback is not None:
            return not (self.is_new and self.last_heartbeat + NEW_MEMBER_JOIN_TIMEOUT_MS < now)
        if self.sync_callback is not None:
            return True
        return self.last_heartbeat + self.session_timeout_ms > now


class Group:
    """One group: members, generation, state; its committed offsets live here too."""

    def __init__(self, group_id: str, now: float, *, initial_rebalance_delay_ms: int = 3000) -> None:
        self.group_id = group_id
        self.state = GroupState.EMPTY
        self.state_timestamp = now
        self.generation_id = 0
        self.protocol_type: str | None = None
        self.protocol_name: str | None = None
        self.leader_id: str | None = None
        self.members: dict[str, Member] = {}
        #: v4+ member ids handed out with MEMBER_ID_REQUIRED, not joined yet -> expiry time.
        self.pending_members: dict[str, float] = {}
        #: group.instance.id -> member id.
        self.static_members: dict[str, str] = {}
        self.offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        self.initial_rebalance_delay_ms = initial_rebalance_delay_ms
        #: PreparingRebalance: when the join phase ends at the latest; during the initial delay,
        #: when the delay ends (it is extended by new members up to ``_initial_limit``).
        self.join_deadline = 0.0
        self._initial_delay = False
        self._initial_limit = 0.0
        #: Set whenever membership reached a state Kafka persists (a generation completed with
        #: its assignments, or the group became Empty); the coordinator writes the group's
        #: metadata record and clears it.
        self.dirty = False
        #: The value of the group's last metadata record in the log (the coordinator's: what a
        #: compaction snapshot writes again), None if there is none.
        self.persisted: bytes | None = None

    def __repr__(self) -> str:
        return f"Group({self.group_id!r}, {self.state.value}, generation {self.generation_id})"

    # ------------------------------------------------------------------ helpers

    def _transition(self, state: GroupState, now: float) -> None:
        self.state = state
        self.state_timestamp = now

    def candidate_protocols(self) -> set[str]:
        names: set[str] | None = None
        for m in self.members.values():
            mine = {n for n, _ in m.protocols}
            names = mine if names is None else names & mine
        return names or set()

    def supports(self, protocol_type: str, protocols: list[tuple[str, bytes]]) -> bool:
        if not protocol_type or not protocols:
            return False
        if not self.members:
            return True
        if protocol_type != self.protocol_type:
            return False
        return bool(self.candidate_protocols() & {n for n, _ in protocols})

    def select_protocol(self) -> str | None:
        candidates = self.candidate_protocols()
        votes: dict[str, int] = {}
        for m in self.members.values():
            choice = next((n for n, _ in m.protocols if n in candidates), None)
            if choice is not None:
                votes[choice] = votes.get(choice, 0) + 1
        if not votes:
            return None
        return max(votes, key=lambda n: votes[n])

    def _max_rebalance_timeout(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def _all_joined(self) -> bool:
        return not self.pending_members and all(m.join_callback is not None for m in self.members.values())

    def _fenced(self, member_id: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return False
        owner = self.static_members.get(instance_id)
        return owner is not None and owner != member_id

    # ------------------------------------------------------------------ JoinGroup

    def join(self, request: JoinRequest, *, now: float, callback: JoinCallback) -> None:
        """Handle a JoinGroup; ``callback`` is called (maybe at once, maybe at a later tick)."""
        member_id, group_instance_id = request.member_id, request.group_instance_id
        protocol_type, protocols = request.protocol_type, request.protocols
        session_timeout_ms, rebalance_timeout_ms = request.session_timeout_ms, request.rebalance_ms
        client_id, client_host = request.client_id, request.client_host
        require_known_member_id = request.require_known_member_id
        if self.state == GroupState.DEAD:
            callback(JoinResult(int(ErrorCode.COORDINATOR_NOT_AVAILABLE), member_id=member_id))
            return
        if not self.supports(protocol_type, protocols):
            callback(JoinResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL), member_id=member_id))
            return
        if not member_id:
            if group_instance_id is not None and group_instance_id in self.static_members:
                self._replace_static_member(
                    group_instance_id,
                    protocols,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                    client_id,
                    client_host,
                    now,
                    callback,
                )
                return
            joining = new_classic_member_id(client_id, group_instance_id)
            if require_known_member_id and group_instance_id is None:
                self.pending_members[joining] = now + session_timeout_ms
                callback(JoinResult(int(ErrorCode.MEMBER_ID_REQUIRED), member_id=joining))
                return
        elif member_id in self.pending_members:  # the second join of KIP-394
            del self.pending_members[member_id]
            joining = member_id
        else:
            joining = ""
        if joining:
            self._add_member_and_rebalance(
                joining,
                group_instance_id,
                protocol_type,
                protocols,
                session_timeout_ms,
                rebalance_timeout_ms,
                client_id,
                client_host,
                now,
                callback,
            )
            return
        if self._fenced(member_id, group_instance_id):
            callback(JoinResult(int(ErrorCode.FENCED_INSTANCE_ID), member_id=member_id))
            return
        member = self.members.get(member_id)
        if member is None or self.state == GroupState.EMPTY:
            callback(JoinResult(int(ErrorCode.UNKNOWN_MEMBER_ID), member_id=member_id))
            return
        member.last_heartbeat = now
        if self.state == GroupState.PREPARING_REBALANCE:
            self._update_member(member, protocols, session_timeout_ms, rebalance_timeout_ms, callback)
            self.try_complete_join(now)
        elif self.state == GroupState.COMPLETING_REBALANCE:
            if member.same_protocols(protocols):
                # A retried JoinGroup (the response was lost): answer with this generation.
                callback(self._join_result(member))
            else:
                self._update_member(member, protocols, session_timeout_ms, rebalance_timeout_ms, callback)
                self.prepare_rebalance(now)
        else:  # Stable
            if member_id == self.leader_id or not member.same_protocols(protocols):
                self._update_member(member, protocols, session_timeout_ms, rebalance_timeout_ms, callback)
                self.prepare_rebalance(now)
            else:
                callback(self._join_result(member))

    def _update_member(
        self,
        member: Member,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        callback: JoinCallback,
    ) -> None:
        member.protocols = protocols
        member.session_timeout_ms = session_timeout_ms
        member.rebalance_timeout_ms = rebalance_timeout_ms
        old = member.join_callback
        member.join_callback = callback
        if old is not None and old is not callback:
            old(JoinResult(int(ErrorCode.REBALANCE_IN_PROGRESS), member_id=member.member_id))

    def _add_member_and_rebalance(
        self,
        member_id: str,
        group_instance_id: str | None,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        now: float,
        callback: JoinCallback,
    ) -> None:
        member = Member(
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms,
            session_timeout_ms,
            protocol_type,
            protocols,
            join_callback=callback,
            last_heartbeat=now,
            is_new=True,
        )
        if not self.members:
            self.protocol_type = protocol_type
        if self.leader_id is None or self.leader_id not in self.members:
            self.leader_id = member_id
        self.members[member_id] = member
        if group_instance_id is not None:
            self.static_members[group_instance_id] = member_id
        if self.state == GroupState.PREPARING_REBALANCE and self._initial_delay:
            self.join_deadline = min(now + self.initial_rebalance_delay_ms, self._initial_limit)
            self._initial_limit = max(self._initial_limit, now + rebalance_timeout_ms)
        self.prepare_rebalance(now)
        self.try_complete_join(now)

    def _replace_static_member(
        self,
        instance_id: str,
        protocols: list[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        client_id: str,
        client_host: str,
        now: float,
        callback: JoinCallback,
    ) -> None:
        old_id = self.static_members[instance_id]
        current_leader = self.leader_id
        old = self.members.pop(old_id, None)
        new_id = new_classic_member_id(client_id, instance_id)
        if old is None:
            del self.static_members[instance_id]
            self._add_member_and_rebalance(
                new_id,
                instance_id,
                self.protocol_type or "",
                protocols,
                session_timeout_ms,
                rebalance_timeout_ms,
                client_id,
                client_host,
                now,
                callback,
            )
            return
        fenced = int(ErrorCode.FENCED_INSTANCE_ID)
        if old.join_callback is not None:
            old.join_callback(JoinResult(fenced, member_id=old_id))
        if old.sync_callback is not None:
            old.sync_callback(SyncResult(fenced))
        old.member_id, old.join_callback, old.sync_callback = new_id, None, None
        old.client_id, old.client_host = client_id, client_host
        self.members[new_id] = old
        self.static_members[instance_id] = new_id
        if self.leader_id == old_id:
            self.leader_id = new_id
        old.last_heartbeat = now
        if self.state == GroupState.STABLE:
            old.protocols = protocols
            old.session_timeout_ms, old.rebalance_timeout_ms = session_timeout_ms, rebalance_timeout_ms
            if self.select_protocol() == self.protocol_name:
                # Kafka: no rebalance; persist the new member id, answer with the generation and
                # the *previous* leader id, so that a rejoining leader does not assign again.
                self.dirty = True
                callback(
                    JoinResult(
                        _NONE,
                        self.generation_id,
                        self.protocol_type,
                        self.protocol_name,
                        (old_id if current_leader == old_id else current_leader) or "",
                        new_id,
                    )
                )
                return
        self._update_member(old, protocols, session_timeout_ms, rebalance_timeout_ms, callback)
        self.prepare_rebalance(now)
        self.try_complete_join(now)

    def prepare_rebalance(self, now: float) -> None:
        """Enter PreparingRebalance (no-op if already there)."""
        if self.state == GroupState.PREPARING_REBALANCE:
            return
        if self.state == GroupState.COMPLETING_REBALANCE:
            for m in self.members.values():
                m.assignment = b""
                if m.sync_callback is not None:
                    cb, m.sync_callback = m.sync_callback, None
                    cb(SyncResult(int(ErrorCode.REBALANCE_IN_PROGRESS)))
        was_empty = self.state == GroupState.EMPTY
        self._transition(GroupState.PREPARING_REBALANCE, now)
        if was_empty and self.initial_rebalance_delay_ms > 0:
            self._initial_delay = True
            self._initial_limit = now + max(self._max_rebalance_timeout(), self.initial_rebalance_delay_ms)
            self.join_deadline = min(now + self.initial_rebalance_delay_ms, self._initial_limit)
        else:
            self._initial_delay = False
            self.join_deadline = now + self._max_rebalance_timeout()

    def try_complete_join(self, now: float) -> None:
        if self.state != GroupState.PREPARING_REBALANCE:
            return
        if self._initial_delay:
            if now < self.join_deadline:
                return
        elif not self._all_joined() and now < self.join_deadline and self.members:
            return
        self._complete_join(now)

    def _complete_join(self, now: float) -> None:
        self._initial_delay = False
        for mid in [mid for mid, m in self.members.items() if m.join_callback is None]:
            self._remove(mid)
        self.generation_id += 1
        if not self.members:
            self._transition(GroupState.EMPTY, now)
            self.protocol_name = None
            self.leader_id = None
            self.dirty = True
            return
        self.protocol_name = self.select_protocol()
        if self.leader_id not in self.members:
            self.leader_id = next(iter(self.members))
        self._transition(GroupState.COMPLETING_REBALANCE, now)
        for m in self.members.values():
            cb, m.join_callback = m.join_callback, None
            m.is_new = False
            m.last_heartbeat = now
            if cb is not None:
                cb(self._join_result(m))

    def _join_result(self, member: Member) -> JoinResult:
        members = []
        if member.member_id == self.leader_id:
            members = [
                (m.member_id, m.group_instance_id, m.metadata(self.protocol_name))
                for m in self.members.values()
            ]
        return JoinResult(
            _NONE,
            self.generation_id,
            self.protocol_type,
            self.protocol_name,
            self.leader_id or "",
            member.member_id,
            members,
        )

    def _remove(self, member_id: str) -> Member | None:
        m = self.members.pop(member_id, None)
        if m is None:
            return None
        if m.group_instance_id is not None and self.static_members.get(m.group_instance_id) == member_id:
            del self.static_members[m.group_instance_id]
        if self.leader_id == member_id:
            self.leader_id = next(iter(self.members), None)
        return m

    # ------------------------------------------------------------------ SyncGroup

    def sync(
        self,
        *,
        member_id: str,
        group_instance_id: str | None,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        assignments: Iterable[tuple[str, bytes]],
        now: float,
        callback: SyncCallback,
    ) -> None:
        if self.state == GroupState.DEAD:
            callback(SyncResult(int(ErrorCode.COORDINATOR_NOT_AVAILABLE)))
            return
        if self._fenced(member_id, group_instance_id):
            callback(SyncResult(int(ErrorCode.FENCED_INSTANCE_ID)))
            return
        member = self.members.get(member_id)
        if member is None:
            callback(SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID)))
            return
        if generation_id != self.generation_id:
            callback(SyncResult(int(ErrorCode.ILLEGAL_GENERATION)))
            return
        if (protocol_type is not None and protocol_type != self.protocol_type) or (
            protocol_name is not None and protocol_name != self.protocol_name
        ):
            callback(SyncResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)))
            return
        member.last_heartbeat = now
        if self.state == GroupState.PREPARING_REBALANCE:
            callback(SyncResult(int(ErrorCode.REBALANCE_IN_PROGRESS)))
        elif self.state == GroupState.STABLE:
            callback(self._sync_result(member))
        elif self.state == GroupState.COMPLETING_REBALANCE:
            member.sync_callback = callback
            if member_id == self.leader_id:
                given = dict(assignments)
                for m in self.members.values():
                    m.assignment = bytes(given.get(m.member_id, b""))
                self._transition(GroupState.STABLE, now)
                self.dirty = True
                for m in self.members.values():
                    cb, m.sync_callback = m.sync_callback, None
                    if cb is not None:
                        cb(self._sync_result(m))
        else:  # Empty
            callback(SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID)))

    def _sync_result(self, member: Member) -> SyncResult:
        return SyncResult(_NONE, self.protocol_type, self.protocol_name, member.assignment)

    # ------------------------------------------------------------------ Heartbeat, LeaveGroup

    def heartbeat(
        self, *, member_id: str, group_instance_id: str | None, generation_id: int, now: float
    ) -> int:
        if self.state == GroupState.DEAD:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if self._fenced(member_id, group_instance_id):
            return int(ErrorCode.FENCED_INSTANCE_ID)
        member = self.members.get(member_id)
        if member is None or self.state == GroupState.EMPTY:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        if generation_id != self.generation_id:
            return int(ErrorCode.ILLEGAL_GENERATION)
        member.last_heartbeat = now
        if self.state == GroupState.PREPARING_REBALANCE:
            return int(ErrorCode.REBALANCE_IN_PROGRESS)
        return _NONE

    def leave(self, *, member_id: str, group_instance_id: str | None, now: float) -> int:
        """One member of a LeaveGroup: its error code."""
        if self.state == GroupState.DEAD:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if group_instance_id is not None:
            owner = self.static_members.get(group_instance_id)
            if owner is None:
                return int(ErrorCode.UNKNOWN_MEMBER_ID)
            if member_id and owner != member_id:
                return int(ErrorCode.FENCED_INSTANCE_ID)
            member_id = owner
        if member_id in self.pending_members:
            del self.pending_members[member_id]
            self.try_complete_join(now)
            return _NONE
        if member_id not in self.members:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        self.remove_member(member_id, now)
        return _NONE

    def remove_member(self, member_id: str, now: float) -> None:
        """A member left or expired: its waiting requests fail, the group rebalances."""
        m = self._remove(member_id)
        if m is None:
            return
        if m.join_callback is not None:
            m.join_callback(JoinResult(int(ErrorCode.UNKNOWN_MEMBER_ID), member_id=member_id))
        if m.sync_callback is not None:
            m.sync_callback(SyncResult(int(ErrorCode.UNKNOWN_MEMBER_ID)))
        if self.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self.prepare_rebalance(now)
            if not self.members:
                self._complete_join(now)
        elif self.state == GroupState.PREPARING_REBALANCE:
            self.try_complete_join(now)

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Expire members and pending members, end a join phase whose time has come."""
        if self.state == GroupState.DEAD:
            return
        for mid, deadline in list(self.pending_members.items()):
            if deadline <= now:
                del self.pending_members[mid]
        for mid in [mid for mid, m in self.members.items() if not m.keep_alive(now)]:
            self.remove_member(mid, now)
        self.try_complete_join(now)

    def next_deadline(self) -> float | None:
        """The earliest time ``tick`` may change something (None: nothing pending)."""
        times = list(self.pending_members.values())
        for m in self.members.values():
            if m.join_callback is None and m.sync_callback is None:
                times.append(m.last_heartbeat + m.session_timeout_ms)
        if self.state == GroupState.PREPARING_REBALANCE:
            times.append(self.join_deadline)
        return min(times, default=None)

    def kill(self) -> None:
        """Dead (deleted or unloaded): every waiting request is answered NOT_COORDINATOR."""
        self._answer_waiting(int(ErrorCode.NOT_COORDINATOR))
        self.state = GroupState.DEAD

    def _answer_waiting(self, code: int) -> None:
        """Answer every waiting JoinGroup and SyncGroup with ``code``."""
        for m in self.members.values():
            if m.join_callback is not None:
                cb, m.join_callback = m.join_callback, None
                cb(JoinResult(code, member_id=m.member_id))
            if m.sync_callback is not None:
                scb, m.sync_callback = m.sync_callback, None
                scb(SyncResult(code))

    # ------------------------------------------------------------------ protocol migration

    def hand_over(self, now: float) -> None:
        """The members moved to a consumer-protocol group (group_migration.py): waiting
        JoinGroup/SyncGroup requests are answered REBALANCE_IN_PROGRESS (the members rejoin
        there) and this entry stays behind, Empty, holding the offsets."""
        self._answer_waiting(int(ErrorCode.REBALANCE_IN_PROGRESS))
        self.members.clear()
        self.pending_members.clear()
        self.static_members.clear()
        self.leader_id = self.protocol_name = None
        self._initial_delay = False
        self._transition(GroupState.EMPTY, now)

    def adopt(self, generation_id: int, members: Iterable[Member], now: float) -> None:
        """Members of a consumer-protocol group come back to the classic protocol (downgrade):
        Stable at ``generation_id`` with their assignments, then a rebalance at once (Kafka
        prepares one, so every member rejoins under the classic rules)."""
        for m in members:
            m.last_heartbeat = now
            self.members[m.member_id] = m
            if m.group_instance_id is not None:
                self.static_members[m.group_instance_id] = m.member_id
        self.generation_id = generation_id
        self.protocol_type = "consumer"
        self.protocol_name = self.select_protocol()
        self.leader_id = next(iter(self.members), None)
        self._transition(GroupState.STABLE, now)
        self.dirty = True
        self.prepare_rebalance(now)

    # ------------------------------------------------------------------ offsets

    def validate_commit(self, member_id: str, group_instance_id: str | None, generation_id: int) -> int:
        """Kafka's validateOffsetCommit for the classic protocol."""
        if self.state == GroupState.DEAD:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if generation_id >= 0 or member_id or group_instance_id is not None:
            if self._fenced(member_id, group_instance_id):
                return int(ErrorCode.FENCED_INSTANCE_ID)
            if member_id not in self.members:
                return int(ErrorCode.UNKNOWN_MEMBER_ID)
            if generation_id != self.generation_id:
                return int(ErrorCode.ILLEGAL_GENERATION)
            if self.state == GroupState.COMPLETING_REBALANCE:
                return int(ErrorCode.REBALANCE_IN_PROGRESS)
            return _NONE
        if self.state != GroupState.EMPTY:
            # An admin (generation -1) commit to a group with live members.
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        return _NONE

    def subscribed_topics(self) -> set[str] | None:
        """Topics the members subscribe to (consumer protocol), None if unknown."""
        if self.protocol_type != "consumer" or self.protocol_name is None:
            return None
        topics: set[str] = set()
        for m in self.members.values():
            try:
                topics.update(decode_consumer_subscription(m.metadata(self.protocol_name)).topics)
            except ProtocolError:
                return None
        return topics
