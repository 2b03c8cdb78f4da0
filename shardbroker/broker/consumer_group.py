"""One group of the new consumer group protocol (KIP-848, Kafka's ConsumerGroup and the
consumer part of its GroupMetadataManager): membership, the target assignment the broker
computes, and each member's reconciliation towards it. No I/O.

Pure like group_state.py: time is passed in (``now``, ms of a monotonic clock), topics come as a
mapping of the metadata image's topics, and every change Kafka persists is appended to
``records`` as (key, value or None) of consumer_group_records.py, in Kafka's order, for the
coordinator to write as one batch (all or nothing: a group is never half-written).

The three epochs (KIP-848):

- the **group epoch** is bumped when a member joins or leaves, a member's subscription changes,
  or the partitions of a subscribed topic change (the "subscription metadata");
- the **assignment epoch** is the group epoch the target assignment was computed at: when the
  group epoch is ahead, the next heartbeat recomputes the target with the group's assignor
  (consumer_assignors.py: the one most members ask for with ``server_assignor``, else the first
  of ``group.consumer.assignors``);
- each member's **member epoch** reaches the assignment epoch through reconciliation (Kafka's
  CurrentAssignmentBuilder): partitions the target takes away from a member are first *pending
  revocation* (the member stays at its epoch, state UNREVOKED_PARTITIONS, until a heartbeat no
  longer lists them as owned), and a partition is handed to its new member only once no other
  member owns it (UNRELEASED_PARTITIONS until then). ``owners`` maps every owned partition to
  its member, so no partition is ever assigned to two members at once.

Subscriptions are topic names, a regex (``resolved_regexes``: matched by topic_regex.py against
every non-internal topic when a member brings it and on every topic change), or both. Members
that speak the classic protocol (``classic``; group_migration.py) join, sync and heartbeat with
their JoinGroup fields and are told REBALANCE_IN_PROGRESS when they must rejoin to move on.

Timers: a member not heard from within ``group.consumer.session.timeout.ms`` is removed (fenced);
a member that does not revoke within its rebalance timeout is fenced too. A static member
(``instance_id``) leaving with epoch -2 keeps its assignment until its session times out; a new
member id joining with that instance id takes it over without a rebalance (KIP-345's rule here).
"""

from __future__ import annotations

import enum
import uuid
import zlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker.consumer_assignors import ASSIGNORS, AssignmentMember, AssignmentTopic
from shardbroker.broker.group_state import JoinRequest, JoinResult, OffsetAndMetadata, SyncResult
from shardbroker.broker.topic_regex import TopicRegex, compile_topic_regex
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol.consumer_protocol import (
    ConsumerSubscription,
    decode_consumer_subscription,
    encode_consumer_assignment,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError

__all__ = [
    "Assignment",
    "ConsumerGroup",
    "ConsumerGroupConfig",
    "ConsumerGroupError",
    "ConsumerGroupMember",
    "ConsumerGroupState",
    "HeartbeatRequest",
    "HeartbeatResult",
    "MemberState",
    "Record",
]

#: topic id -> partitions.
Assignment = Mapping[uuid.UUID, frozenset[int]]
#: A record for ``__consumer_offsets``: a key of consumer_group_records.py and its value (None: a
#: tombstone).
Record = tuple[cgr.Key, cgr.Value | None]

#: What ``_member_for`` says of the member it found.
_JOINED: Final = object()
_TAKEN_OVER: Final = object()

#: The protocol type of every classic-protocol member a consumer group accepts.
CONSUMER_PROTOCOL_TYPE: Final = "consumer"
_NONE: Final = int(ErrorCode.NONE)

#: The shortest heartbeat interval told to a member waiting for partitions (``_heartbeat_interval``).
UNRELEASED_HEARTBEAT_FLOOR_MS: Final = 50

JOIN_EPOCH: Final = 0
LEAVE_EPOCH: Final = -1
STATIC_LEAVE_EPOCH: Final = -2


class ConsumerGroupError(Exception):
    """A heartbeat refused with a Kafka error code and message (the answer's ErrorMessage)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = int(code)
        self.message = message


class MemberState(enum.IntEnum):
    """Kafka's MemberState, with its byte values (stored in the current assignment record)."""

    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127


class ConsumerGroupState(enum.Enum):
    EMPTY = "Empty"
    ASSIGNING = "Assigning"
    RECONCILING = "Reconciling"
    STABLE = "Stable"
    DEAD = "Dead"


@dataclass(frozen=True, slots=True)
class ConsumerGroupConfig:
    """The broker's ``group.consumer.*`` settings."""

    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 5_000
    max_size: int = 2**31 - 1
    assignors: tuple[str, ...] = ("uniform", "range")


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    """A ConsumerGroupHeartbeat's fields (None: unchanged since the last heartbeat)."""

    member_id: str
    member_epoch: int
    instance_id: str | None = None
    rack_id: str | None = None
    rebalance_timeout_ms: int = -1
    subscribed_topic_names: tuple[str, ...] | None = None
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    owned: Assignment | None = None
    client_id: str = ""
    client_host: str = ""


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    member_id: str
    member_epoch: int
    heartbeat_interval_ms: int
    #: The partitions the member may own now; None: unchanged, not sent.
    assignment: Assignment | None


@dataclass(slots=True)
class ConsumerGroupMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: tuple[str, ...] = ()
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    rebalance_timeout_ms: int = -1
    member_epoch: int = 0
    previous_member_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Assignment = field(default_factory=dict)
    pending_revocation: Assignment = field(default_factory=dict)
    #: A member speaking the classic protocol (JoinGroup/SyncGroup/Heartbeat) in this group:
    #: its session timeout and JoinGroup protocols (KIP-848's migration); None for the others.
    classic: cgr.ClassicMemberMetadata | None = None
    #: Timers (not persisted): when the session ends, and when a pending revocation (or, for a
    #: classic member told to rejoin, its JoinGroup) must be done.
    session_deadline: float = 0.0
    rebalance_deadline: float | None = None

    def session_timeout_ms(self, config: ConsumerGroupConfig) -> int:
        return config.session_timeout_ms if self.classic is None else self.classic.session_timeout_ms

    def subscription_record(self, group_id: str) -> Record:
        return (
            cgr.ConsumerGroupMemberMetadataKey(group_id, self.member_id),
            cgr.ConsumerGroupMemberMetadataValue(
                instance_id=self.instance_id,
                rack_id=self.rack_id,
                client_id=self.client_id,
                client_host=self.client_host,
                subscribed_topic_names=self.subscribed_topic_names,
                subscribed_topic_regex=self.subscribed_topic_regex,
                rebalance_timeout_ms=self.rebalance_timeout_ms,
                server_assignor=self.server_assignor,
                classic_member_metadata=(
                    None if self.classic is None else cgr.encode_classic_member_metadata(self.classic)
                ),
            ),
        )

    def assignment_record(self, group_id: str) -> Record:
        return (
            cgr.ConsumerGroupCurrentMemberAssignmentKey(group_id, self.member_id),
            cgr.ConsumerGroupCurrentMemberAssignmentValue(
                member_epoch=self.member_epoch,
                previous_member_epoch=self.previous_member_epoch,
                state=int(self.state),
                assigned_partitions=to_topic_partitions(self.assigned),
                partitions_pending_revocation=to_topic_partitions(self.pending_revocation),
            ),
        )

    def same_subscription(self, other: ConsumerGroupMember) -> bool:
        return (
            self.subscribed_topic_names == other.subscribed_topic_names
            and self.subscribed_topic_regex == other.subscribed_topic_regex
            and self.server_assignor == other.server_assignor
            and self.rack_id == other.rack_id
            and self.instance_id == other.instance_id
            and self.rebalance_timeout_ms == other.rebalance_timeout_ms
            and self.client_id == other.client_id
            and self.client_host == other.client_host
            and self.classic == other.classic
        )


def to_topic_partitions(assignment: Assignment) -> tuple[cgr.TopicPartitions, ...]:
    return tuple(
        cgr.TopicPartitions(topic_id, tuple(sorted(parts)))
        for topic_id, parts in sorted(assignment.items())
        if parts
    )


def from_topic_partitions(items: Iterable[cgr.TopicPartitions]) -> dict[uuid.UUID, frozenset[int]]:
    out: dict[uuid.UUID, frozenset[int]] = {}
    for tp in items:
        if tp.partitions:
            out[tp.topic_id] = out.get(tp.topic_id, frozenset()) | frozenset(tp.partitions)
    return out


def _is_subset(owned: Assignment | None, assigned: Assignment) -> bool:
    if owned is None:
        return False
    return all(parts <= assigned.get(topic_id, frozenset()) for topic_id, parts in owned.items())


def _owns_any(owned: Assignment | None, revoking: Assignment) -> bool:
    """Whether the heartbeat's owned partitions still include any of ``revoking`` (no owned
    list: assume it does, as Kafka)."""
    if owned is None:
        return True
    return any(parts & revoking.get(topic_id, frozenset()) for topic_id, parts in owned.items())


class ConsumerGroup:
    """One consumer-protocol group; its committed offsets live here too."""

    protocol_type: Final = "consumer"

    def __init__(self, group_id: str, config: ConsumerGroupConfig) -> None:
        self.group_id = group_id
        self.config = config
        #: Where the group's heartbeat grid starts (``_heartbeat_interval``): from the group id,
        #: so that groups on one coordinator do not all heartbeat at the same instants.
        self._grid_offset_ms = zlib.crc32(group_id.encode())
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.members: dict[str, ConsumerGroupMember] = {}
        #: instance id -> member id of the static members.
        self.static_members: dict[str, str] = {}
        #: member id -> its partitions in the target assignment.
        self.target: dict[str, Assignment] = {}
        #: Subscribed topics as last computed: name -> (topic id, partition count).
        self.subscription_metadata: dict[str, tuple[uuid.UUID, int]] = {}
        #: Each regex a member subscribes with -> the topics it matches (Kafka's resolved
        #: regular expressions, persisted); ``_patterns`` holds them compiled (not persisted).
        self.resolved_regexes: dict[str, frozenset[str]] = {}
        self._patterns: dict[str, TopicRegex] = {}
        #: (topic id, partition) -> the member that owns it (assigned or pending revocation).
        self.owners: dict[tuple[uuid.UUID, int], str] = {}
        self.offsets: dict[tuple[str, int], OffsetAndMetadata] = {}
        self.dead = False
        #: What to persist, in order; the coordinator takes and writes them.
        self.records: list[Record] = []
        #: The group epoch before a member of the consumer protocol left or was fenced (the
        #: coordinator then checks whether the group goes back to the classic protocol, at that
        #: epoch as its generation as Kafka, which leaves the member out without a bump; and
        #: clears it); None when none did.
        self.consumer_member_left_at: int | None = None

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.group_id!r}, {self.state.value}, epoch {self.group_epoch})"

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> ConsumerGroupState:
        if self.dead:
            return ConsumerGroupState.DEAD
        if not self.members:
            return ConsumerGroupState.EMPTY
        if self.group_epoch != self.assignment_epoch:
            return ConsumerGroupState.ASSIGNING
        for m in self.members.values():
            if m.state != MemberState.STABLE or m.member_epoch != self.assignment_epoch:
                return ConsumerGroupState.RECONCILING
        return ConsumerGroupState.STABLE

    def preferred_assignor(self) -> str:
        """The assignor most members ask for (ties: the configured order), else the default."""
        asked = Counter(m.server_assignor for m in self.members.values() if m.server_assignor)
        if not asked:
            return self.config.assignors[0]
        best = max(asked.values())
        return next(a for a in (*self.config.assignors, *sorted(asked)) if asked.get(a) == best)

    def member_topic_names(self, member: ConsumerGroupMember) -> set[str]:
        """The topics ``member`` subscribes to: by name, and those its regex matches."""
        names = set(member.subscribed_topic_names)
        if member.subscribed_topic_regex is not None:
            names |= self.resolved_regexes.get(member.subscribed_topic_regex, frozenset())
        return names

    def subscribed_topic_names(self) -> set[str]:
        names: set[str] = set()
        for m in self.members.values():
            names |= self.member_topic_names(m)
        return names

    def _drop_unused_regexes(self) -> bool:
        """Forget (and tombstone) the regexes no member subscribes with any more."""
        unused = set(self.resolved_regexes) - {m.subscribed_topic_regex for m in self.members.values()}
        for regex in sorted(unused):
            del self.resolved_regexes[regex]
            self._patterns.pop(regex, None)
            self.records.append((cgr.ConsumerGroupRegularExpressionKey(self.group_id, regex), None))
        return bool(unused)

    def _resolve_regexes(self, topics: Mapping[str, TopicImage], now: float) -> bool:
        """Match every regex in use against the topics (internal ones excepted, as Kafka); a
        record for each resolution that changed, a tombstone for each regex no longer used;
        True if any changed. The work is bounded: topic_regex.py matches in linear time."""
        changed = self._drop_unused_regexes()
        in_use = {m.subscribed_topic_regex for m in self.members.values()}
        for regex in sorted(r for r in in_use if r is not None):
            pattern = self._patterns.get(regex)
            if pattern is None:
                pattern = self._patterns[regex] = compile_topic_regex(regex)
            matched = frozenset(n for n, t in topics.items() if not t.is_internal and pattern.matches(n))
            if self.resolved_regexes.get(regex) != matched:
                self.resolved_regexes[regex] = matched
                self.records.append(
                    (
                        cgr.ConsumerGroupRegularExpressionKey(self.group_id, regex),
                        # Kafka's version (its metadata image's offset) and timestamp schedule
                        # its next refresh; this broker resolves on every topic change instead.
                        cgr.ConsumerGroupRegularExpressionValue(tuple(sorted(matched)), 0, int(now)),
                    )
                )
                changed = True
        return changed

    # ------------------------------------------------------------------ heartbeat

    def heartbeat(
        self, req: HeartbeatRequest, topics: Mapping[str, TopicImage], now: float, new_member_id: str
    ) -> HeartbeatResult:
        """One ConsumerGroupHeartbeat (already validated for shape by the handler).
        ``new_member_id``: the id to give a joining member that brought none. Raises
        ConsumerGroupError with Kafka's code and message when refused."""
        if self.dead:
            raise ConsumerGroupError(ErrorCode.NOT_COORDINATOR, "the group is being unloaded")
        if req.member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            return self._leave(req, topics, now)
        member, fresh = self._member_for(req, now, new_member_id)
        is_new = fresh is _JOINED
        updated = replace(member)
        if req.instance_id is not None:
            updated.instance_id = req.instance_id
        if req.rack_id is not None:
            updated.rack_id = req.rack_id
        if req.rebalance_timeout_ms > 0:
            updated.rebalance_timeout_ms = req.rebalance_timeout_ms
        if req.subscribed_topic_names is not None:
            updated.subscribed_topic_names = tuple(sorted(set(req.subscribed_topic_names)))
        if req.subscribed_topic_regex is not None:
            updated.subscribed_topic_regex = req.subscribed_topic_regex or None
        if req.server_assignor is not None:
            updated.server_assignor = req.server_assignor
        updated.client_id, updated.client_host = req.client_id, req.client_host
        bump = is_new or (
            member.subscribed_topic_names != updated.subscribed_topic_names
            or member.subscribed_topic_regex != updated.subscribed_topic_regex
            or member.server_assignor != updated.server_assignor
        )
        if fresh is not None or not member.same_subscription(updated):
            self.records.append(updated.subscription_record(self.group_id))
        self._put_member(updated)
        if member.subscribed_topic_regex != updated.subscribed_topic_regex:
            self._resolve_regexes(topics, now)
        bump = self._refresh_subscription_metadata(topics) or bump
        if bump:
            self._bump_group_epoch()
        if self.group_epoch > self.assignment_epoch:
            self._update_target_assignment()
        reconciled = self._reconcile(updated, req.owned, now, force_record=fresh is not None)
        reconciled.session_deadline = now + self.config.session_timeout_ms
        send = (
            req.member_epoch == JOIN_EPOCH or req.owned is not None or reconciled.assigned != member.assigned
        )
        return HeartbeatResult(
            reconciled.member_id,
            reconciled.member_epoch,
            self._heartbeat_interval(reconciled, now),
            dict(reconciled.assigned) if send else None,
        )

    def _heartbeat_interval(self, member: ConsumerGroupMember, now: float) -> int:
        """The interval to tell ``member``, from ``group.consumer.heartbeat.interval.ms`` (I).

        The coordinator cannot push, so a member hears of a new target assignment only on its
        next heartbeat, and a rebalance waits for the member that heartbeats last. Two choices
        shorten that wait (Kafka always answers I; perf/bench_rebalance.py has the times):

        - the members of a group heartbeat in step: each answer lands the member's next
          heartbeat on the group's grid (multiples of I from an offset of the group id's hash),
          in [I/4, 5I/4) from now, so all members learn of a join or a leave at the same next
          grid point, within one I of the event and half of one on average, instead of at the
          spread-out phases they joined at (measured: with 10 members one of them nearly always
          had just heartbeat, so a join took one whole I). The cost is a burst of the group's
          heartbeats at each grid point instead of a steady trickle;
        - a member waiting for partitions other members still own is told a tenth of I (at
          least ``UNRELEASED_HEARTBEAT_FLOOR_MS``): the owners revoke at the grid point and
          acknowledge at once, and the waiting member picks the partitions up soon after
          instead of at its next grid point. At most ~10 extra heartbeats per member and
          reconciliation.
        """
        interval = self.config.heartbeat_interval_ms
        if member.state == MemberState.UNRELEASED_PARTITIONS:
            return min(interval, max(UNRELEASED_HEARTBEAT_FLOOR_MS, interval // 10))
        wait = interval - (now - self._grid_offset_ms) % interval
        return round(wait if wait >= interval / 4 else wait + interval)

    def _member_for(
        self, req: HeartbeatRequest, now: float, new_member_id: str
    ) -> tuple[ConsumerGroupMember, object | None]:
        """The member a heartbeat speaks for, epoch checked, and whether it is new to the group
        (``_JOINED``), a static member taking over another member id's place (``_TAKEN_OVER``)
        or known (None)."""
        if req.member_epoch == JOIN_EPOCH:
            if req.instance_id is not None:
                previous_id = self.static_members.get(req.instance_id)
                if previous_id is not None:
                    return self._replace_static_member(previous_id, req, new_member_id), _TAKEN_OVER
            member_id = req.member_id or new_member_id
            existing = self.members.get(member_id)
            if existing is not None:
                # A member rejoining with epoch 0 (after being fenced by its client, say)
                # starts again from nothing: its partitions are given up first.
                self._remove_member(existing)
                self._bump_group_epoch()
            if len(self.members) >= self.config.max_size:
                raise ConsumerGroupError(
                    ErrorCode.GROUP_MAX_SIZE_REACHED,
                    f"The consumer group has reached its maximum capacity of {self.config.max_size} members.",
                )
            return ConsumerGroupMember(
                member_id, session_deadline=now + self.config.session_timeout_ms
            ), _JOINED
        member = self.members.get(req.member_id)
        if member is None:
            raise ConsumerGroupError(
                ErrorCode.UNKNOWN_MEMBER_ID,
                f"Member {req.member_id} is not a member of group {self.group_id}.",
            )
        if req.instance_id is not None and self.static_members.get(req.instance_id) != member.member_id:
            raise ConsumerGroupError(
                ErrorCode.FENCED_INSTANCE_ID,
                f"Static member {req.member_id} with instance id {req.instance_id} was fenced by "
                "another member.",
            )
        if req.member_epoch > member.member_epoch:
            raise ConsumerGroupError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The consumer group member has a greater member epoch ({req.member_epoch}) than the one "
                f"known by the group coordinator ({member.member_epoch}). The member must abandon all its "
                "partitions and rejoin.",
            )
        if req.member_epoch < member.member_epoch and not (
            req.member_epoch == member.previous_member_epoch and _is_subset(req.owned, member.assigned)
        ):
            raise ConsumerGroupError(
                ErrorCode.FENCED_MEMBER_EPOCH,
                f"The consumer group member has a smaller member epoch ({req.member_epoch}) than the one "
                f"known by the group coordinator ({member.member_epoch}). The member must abandon all its "
                "partitions and rejoin.",
            )
        return member, None

    def _replace_static_member(
        self, previous_id: str, req: HeartbeatRequest, new_member_id: str
    ) -> ConsumerGroupMember:
        """A static member rejoins under a new member id: it takes over the previous member's
        epoch and assignment if that one left with epoch -2; else the instance is still taken."""
        previous = self.members[previous_id]
        if previous.member_epoch != STATIC_LEAVE_EPOCH:
            raise ConsumerGroupError(
                ErrorCode.UNRELEASED_INSTANCE_ID,
                f"Static member {previous_id} with instance id {req.instance_id} is not released yet.",
            )
        member_id = req.member_id or new_member_id
        self._remove_member(previous)
        self.records.extend(self._member_tombstones(previous_id))
        taken = replace(
            previous,
            member_id=member_id,
            member_epoch=previous.previous_member_epoch,
            previous_member_epoch=-1,
        )
        target = self.target.pop(previous_id, None)
        if target is not None:
            self.target[member_id] = target
            self.records.append(self._target_member_record(member_id, target))
        return taken

    def _leave(self, req: HeartbeatRequest, topics: Mapping[str, TopicImage], now: float) -> HeartbeatResult:
        member = self.members.get(req.member_id)
        if member is None:
            raise ConsumerGroupError(
                ErrorCode.UNKNOWN_MEMBER_ID,
                f"Member {req.member_id} is not a member of group {self.group_id}.",
            )
        if req.member_epoch == STATIC_LEAVE_EPOCH:
            if member.instance_id is None:
                raise ConsumerGroupError(ErrorCode.INVALID_REQUEST, "InstanceId can't be null.")
            # Kept with its partitions until the session ends; the instance may come back.
            member.previous_member_epoch, member.member_epoch = member.member_epoch, STATIC_LEAVE_EPOCH
            self.records.append(member.assignment_record(self.group_id))
            return HeartbeatResult(
                member.member_id, STATIC_LEAVE_EPOCH, self.config.heartbeat_interval_ms, None
            )
        self.fence(member.member_id, topics)
        return HeartbeatResult(member.member_id, LEAVE_EPOCH, self.config.heartbeat_interval_ms, None)

    def fence(self, member_id: str, topics: Mapping[str, TopicImage]) -> None:
        """Remove a member (left, session or rebalance timeout) and bump the group epoch."""
        member = self.members.get(member_id)
        if member is None:
            return
        if member.classic is None and self.consumer_member_left_at is None:
            self.consumer_member_left_at = self.group_epoch
        self._remove_member(member)
        self.records.extend(self._member_tombstones(member_id))
        self.target.pop(member_id, None)
        self._drop_unused_regexes()
        self._refresh_subscription_metadata(topics)
        self._bump_group_epoch()

    # ------------------------------------------------------------------ internals

    def _member_tombstones(self, member_id: str) -> list[Record]:
        return [
            (cgr.ConsumerGroupCurrentMemberAssignmentKey(self.group_id, member_id), None),
            (cgr.ConsumerGroupTargetAssignmentMemberKey(self.group_id, member_id), None),
            (cgr.ConsumerGroupMemberMetadataKey(self.group_id, member_id), None),
        ]

    def _put_member(self, member: ConsumerGroupMember) -> None:
        """Store ``member`` (new or updated) and keep ``owners`` and ``static_members`` in step."""
        old = self.members.get(member.member_id)
        if old is not None:
            self._release(old)
        self.members[member.member_id] = member
        for assignment in (member.assigned, member.pending_revocation):
            for topic_id, parts in assignment.items():
                for p in parts:
                    self.owners[(topic_id, p)] = member.member_id
        if member.instance_id is not None:
            self.static_members[member.instance_id] = member.member_id

    def adopt(self, member: ConsumerGroupMember) -> None:
        """Take ``member`` in as it is (a group made from a classic one: group_migration.py)."""
        self._put_member(member)

    def _release(self, member: ConsumerGroupMember) -> None:
        for assignment in (member.assigned, member.pending_revocation):
            for topic_id, parts in assignment.items():
                for p in parts:
                    if self.owners.get((topic_id, p)) == member.member_id:
                        del self.owners[(topic_id, p)]

    def _remove_member(self, member: ConsumerGroupMember) -> None:
        self._release(member)
        self.members.pop(member.member_id, None)
        if member.instance_id is not None and self.static_members.get(member.instance_id) == member.member_id:
            del self.static_members[member.instance_id]

    def _bump_group_epoch(self) -> None:
        self.group_epoch += 1
        self.records.append(
            (cgr.ConsumerGroupMetadataKey(self.group_id), cgr.ConsumerGroupMetadataValue(self.group_epoch))
        )

    def _refresh_subscription_metadata(self, topics: Mapping[str, TopicImage]) -> bool:
        """Recompute the subscribed topics' ids and partition counts; True (and a record) if
        they changed."""
        fresh: dict[str, tuple[uuid.UUID, int]] = {}
        for name in sorted(self.subscribed_topic_names()):
            topic = topics.get(name)
            if topic is not None:
                fresh[name] = (topic.topic_id, len(topic.partitions))
        if fresh == self.subscription_metadata:
            return False
        self.subscription_metadata = fresh
        self.records.append(
            (
                cgr.ConsumerGroupPartitionMetadataKey(self.group_id),
                cgr.ConsumerGroupPartitionMetadataValue(
                    tuple(cgr.TopicMetadata(tid, name, n) for name, (tid, n) in sorted(fresh.items()))
                ),
            )
        )
        return True

    def refresh_metadata(self, topics: Mapping[str, TopicImage], now: float) -> bool:
        """Topics were created, deleted or grew: regexes are matched again, and the group epoch
        bumped if what its members subscribe to changed (the next heartbeat recomputes the
        target)."""
        if self.dead or not self.members:
            return False
        resolved = self._resolve_regexes(topics, now)
        if not self._refresh_subscription_metadata(topics) and not resolved:
            return False
        self._bump_group_epoch()
        return True

    def _target_member_record(self, member_id: str, assignment: Assignment) -> Record:
        return (
            cgr.ConsumerGroupTargetAssignmentMemberKey(self.group_id, member_id),
            cgr.ConsumerGroupTargetAssignmentMemberValue(to_topic_partitions(assignment)),
        )

    def _update_target_assignment(self) -> None:
        by_name = self.subscription_metadata
        assignment_topics = {tid: AssignmentTopic(tid, name, n) for name, (tid, n) in by_name.items()}
        members = [
            AssignmentMember(
                member_id=m.member_id,
                instance_id=m.instance_id,
                rack_id=m.rack_id,
                subscribed_topic_ids=frozenset(
                    by_name[n][0] for n in self.member_topic_names(m) if n in by_name
                ),
                current=self.target.get(m.member_id, {}),
            )
            for m in sorted(self.members.values(), key=lambda m: m.member_id)
        ]
        result = ASSIGNORS[self.preferred_assignor()].assign(members, assignment_topics)
        for member_id in sorted(result):
            new = {tid: parts for tid, parts in result[member_id].items() if parts}
            if new != self.target.get(member_id):
                self.target[member_id] = new
                self.records.append(self._target_member_record(member_id, new))
        self.assignment_epoch = self.group_epoch
        self.records.append(
            (
                cgr.ConsumerGroupTargetAssignmentMetadataKey(self.group_id),
                cgr.ConsumerGroupTargetAssignmentMetadataValue(self.assignment_epoch),
            )
        )

    def _reconcile(
        self, member: ConsumerGroupMember, owned: Assignment | None, now: float, *, force_record: bool = False
    ) -> ConsumerGroupMember:
        """Kafka's CurrentAssignmentBuilder: one step of ``member`` towards its target; stores
        the result (and its record, if anything changed or ``force_record``)."""
        target = self.target.get(member.member_id, {})
        if member.state == MemberState.STABLE:
            nxt = (
                member
                if member.member_epoch == self.assignment_epoch
                else self._next_assignment(member, member.member_epoch, target, owned)
            )
        elif member.state == MemberState.UNREVOKED_PARTITIONS:
            if _owns_any(owned, member.pending_revocation):
                nxt = member
            else:
                nxt = self._next_assignment(member, member.member_epoch + 1, target, owned)
        elif member.state == MemberState.UNRELEASED_PARTITIONS:
            nxt = self._next_assignment(member, member.member_epoch, target, owned)
        else:
            if owned is None or any(owned.values()):
                raise ConsumerGroupError(
                    ErrorCode.FENCED_MEMBER_EPOCH,
                    "The consumer group member is in a unknown state. The member must abandon all its "
                    "partitions and rejoin.",
                )
            nxt = self._next_assignment(member, self.assignment_epoch, target, owned)
        if nxt.state == MemberState.UNREVOKED_PARTITIONS:
            if member.state != MemberState.UNREVOKED_PARTITIONS or member.rebalance_deadline is None:
                nxt.rebalance_deadline = now + max(nxt.rebalance_timeout_ms, 0)
        else:
            nxt.rebalance_deadline = None
        changed = (
            nxt.member_epoch != member.member_epoch
            or nxt.state != member.state
            or nxt.assigned != member.assigned
            or nxt.pending_revocation != member.pending_revocation
            or force_record
        )
        self._put_member(nxt)
        if changed:
            self.records.append(nxt.assignment_record(self.group_id))
        return nxt

    def _next_assignment(
        self, member: ConsumerGroupMember, epoch: int, target: Assignment, owned: Assignment | None
    ) -> ConsumerGroupMember:
        kept: dict[uuid.UUID, frozenset[int]] = {}
        revoking: dict[uuid.UUID, frozenset[int]] = {}
        adding: dict[uuid.UUID, frozenset[int]] = {}
        unreleased = False
        for topic_id in set(target) | set(member.assigned):
            want = target.get(topic_id, frozenset())
            have = member.assigned.get(topic_id, frozenset())
            keep = have & want
            if keep:
                kept[topic_id] = keep
            if have - keep:
                revoking[topic_id] = have - keep
            new = want - keep
            free = frozenset(p for p in new if self.owners.get((topic_id, p)) in (None, member.member_id))
            if len(free) != len(new):
                unreleased = True
            if free:
                adding[topic_id] = free
        if revoking and _owns_any(owned, revoking):
            return self._with(member, MemberState.UNREVOKED_PARTITIONS, epoch, kept, revoking)
        assigned = dict(kept)
        for topic_id, parts in adding.items():
            assigned[topic_id] = assigned.get(topic_id, frozenset()) | parts
        state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
        return self._with(member, state, self.assignment_epoch, assigned, {})

    @staticmethod
    def _with(
        member: ConsumerGroupMember,
        state: MemberState,
        epoch: int,
        assigned: Assignment,
        revoking: Assignment,
    ) -> ConsumerGroupMember:
        previous = member.member_epoch if epoch != member.member_epoch else member.previous_member_epoch
        return replace(
            member,
            state=state,
            member_epoch=epoch,
            previous_member_epoch=previous,
            assigned=dict(assigned),
            pending_revocation=dict(revoking),
        )

    # ------------------------------------------------------------------ classic-protocol members

    def supports_classic_protocols(self, protocol_type: str, names: Iterable[str]) -> bool:
        """Kafka's supportsClassicProtocols: a JoinGroup may enter if its protocol type is
        "consumer" and one of its protocols is one every classic member of the group has."""
        wanted = set(names)
        if protocol_type != CONSUMER_PROTOCOL_TYPE or not wanted:
            return False
        for m in self.members.values():
            if m.classic is not None:
                wanted &= {p.name for p in m.classic.supported_protocols}
        return bool(wanted)

    def classic_join(
        self, request: JoinRequest, *, topics: Mapping[str, TopicImage], now: float, new_member_id: str
    ) -> JoinResult:
        """A JoinGroup from a classic-protocol member (Kafka's classicGroupJoinToConsumerGroup):
        the member takes part in the group like any other, its subscription and owned
        partitions read from its first protocol's ConsumerProtocolSubscription. The answer
        comes at once: generation = its member epoch, no leader (the broker assigns), and its
        SyncGroup gets its partitions. A member that must revoke or wait for partitions is
        told REBALANCE_IN_PROGRESS by its heartbeats until it rejoins."""
        member_id, instance_id, protocols = request.member_id, request.group_instance_id, request.protocols
        try:
            subscription = decode_consumer_subscription(protocols[0][1])
        except (ProtocolError, IndexError):
            return JoinResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL), member_id=member_id)
        if instance_id is not None:
            previous_id = self.static_members.get(instance_id)
            if previous_id is not None and member_id and member_id != previous_id:
                return JoinResult(int(ErrorCode.FENCED_INSTANCE_ID), member_id=member_id)
            member = self._classic_static_member(previous_id, member_id or new_member_id)
        else:
            member = self.members.get(member_id) or ConsumerGroupMember(member_id or new_member_id)
        if member.member_id not in self.members and len(self.members) >= self.config.max_size:
            return JoinResult(int(ErrorCode.GROUP_MAX_SIZE_REACHED), member_id=member_id)
        is_new = member.member_id not in self.members
        updated = replace(
            member,
            instance_id=instance_id,
            rack_id=subscription.rack_id or member.rack_id,
            rebalance_timeout_ms=request.rebalance_ms,
            subscribed_topic_names=tuple(sorted(set(subscription.topics))),
            subscribed_topic_regex=None,
            server_assignor=None,
            client_id=request.client_id,
            client_host=request.client_host,
            classic=cgr.ClassicMemberMetadata(
                request.session_timeout_ms,
                tuple(cgr.ClassicProtocol(n, bytes(meta)) for n, meta in protocols),
            ),
        )
        if is_new or not member.same_subscription(updated):
            self.records.append(updated.subscription_record(self.group_id))
        bump = is_new or member.subscribed_topic_names != updated.subscribed_topic_names
        self._put_member(updated)
        if self._refresh_subscription_metadata(topics) or bump:
            self._bump_group_epoch()
        if self.group_epoch > self.assignment_epoch:
            self._update_target_assignment()
        reconciled = self._reconcile(updated, self._owned(subscription, topics), now, force_record=is_new)
        reconciled.session_deadline = now + request.session_timeout_ms
        return JoinResult(
            _NONE,
            reconciled.member_epoch,
            CONSUMER_PROTOCOL_TYPE,
            protocols[0][0],
            "",
            reconciled.member_id,
        )

    def _classic_static_member(self, previous_id: str | None, member_id: str) -> ConsumerGroupMember:
        """The member a static classic JoinGroup speaks for: a new instance is a new member; an
        instance joining under a new member id takes over its previous member's place."""
        if previous_id is None or previous_id == member_id:
            return self.members.get(member_id) or ConsumerGroupMember(member_id)
        previous = self.members[previous_id]
        self._remove_member(previous)
        self.records.extend(self._member_tombstones(previous_id))
        if previous.classic is None and self.consumer_member_left_at is None:
            self.consumer_member_left_at = self.group_epoch
        epoch = previous.previous_member_epoch if previous.member_epoch == STATIC_LEAVE_EPOCH else None
        taken = replace(previous, member_id=member_id)
        if epoch is not None:
            taken.member_epoch, taken.previous_member_epoch = epoch, -1
        target = self.target.pop(previous_id, None)
        if target is not None:
            self.target[member_id] = target
            self.records.append(self._target_member_record(member_id, target))
        self._put_member(taken)
        self.records.append(taken.subscription_record(self.group_id))
        self.records.append(taken.assignment_record(self.group_id))
        return taken

    @staticmethod
    def _owned(subscription: ConsumerSubscription, topics: Mapping[str, TopicImage]) -> Assignment:
        """The partitions a JoinGroup says its member still owns (none before subscription v1:
        an eager member has given everything up before it rejoins)."""
        owned: dict[uuid.UUID, frozenset[int]] = {}
        for name, parts in subscription.owned_partitions.items():
            topic = topics.get(name)
            if topic is not None and parts:
                owned[topic.topic_id] = owned.get(topic.topic_id, frozenset()) | frozenset(parts)
        return owned

    def _classic_member(self, member_id: str, instance_id: str | None) -> ConsumerGroupMember | int:
        """Kafka's validateConsumerGroupMember + throwIfMemberDoesNotUseClassicProtocol: the
        member, or the error code."""
        if instance_id is not None:
            owner = self.static_members.get(instance_id)
            if owner is None:
                return int(ErrorCode.UNKNOWN_MEMBER_ID)
            if member_id and owner != member_id:
                return int(ErrorCode.FENCED_INSTANCE_ID)
            member_id = owner
        member = self.members.get(member_id)
        if member is None or member.classic is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        return member

    def _must_rejoin(self, member: ConsumerGroupMember) -> bool:
        """Kafka's rule for a classic member's heartbeat: rejoin when the group epoch moved on,
        partitions must be revoked, or the partitions it waits for are free now."""
        if member.member_epoch < self.group_epoch or member.state == MemberState.UNREVOKED_PARTITIONS:
            return True
        if member.state != MemberState.UNRELEASED_PARTITIONS:
            return False
        for topic_id, parts in self.target.get(member.member_id, {}).items():
            for p in parts - member.assigned.get(topic_id, frozenset()):
                if self.owners.get((topic_id, p)) not in (None, member.member_id):
                    return False
        return True

    def _told_to_rejoin(self, member: ConsumerGroupMember, now: float) -> int:
        if member.rebalance_deadline is None:
            member.rebalance_deadline = now + max(member.rebalance_timeout_ms, 0)
        return int(ErrorCode.REBALANCE_IN_PROGRESS)

    def classic_sync(
        self,
        *,
        member_id: str,
        instance_id: str | None,
        generation_id: int,
        protocol_type: str | None,
        protocol_name: str | None,
        now: float,
    ) -> SyncResult:
        """A classic member's SyncGroup: its current partitions, as a ConsumerProtocolAssignment
        of its subscription's version (Kafka's classicGroupSyncToConsumerGroup)."""
        found = self._classic_member(member_id, instance_id)
        if isinstance(found, int):
            return SyncResult(found)
        member = found
        assert member.classic is not None
        name = member.classic.supported_protocols[0].name
        if generation_id != member.member_epoch:
            return SyncResult(int(ErrorCode.ILLEGAL_GENERATION))
        if (protocol_type is not None and protocol_type != CONSUMER_PROTOCOL_TYPE) or (
            protocol_name is not None and protocol_name != name
        ):
            return SyncResult(int(ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
        if self.group_epoch > member.member_epoch and member.state != MemberState.UNREVOKED_PARTITIONS:
            return SyncResult(self._told_to_rejoin(member, now))
        member.session_deadline = now + member.classic.session_timeout_ms
        names = {tid: topic for topic, (tid, _) in self.subscription_metadata.items()}
        partitions = {
            names[tid]: sorted(parts) for tid, parts in sorted(member.assigned.items()) if tid in names
        }
        try:
            version = decode_consumer_subscription(member.classic.supported_protocols[0].metadata).version
        except ProtocolError:
            version = 0
        return SyncResult(
            _NONE, CONSUMER_PROTOCOL_TYPE, name, encode_consumer_assignment(partitions, min(version, 3))
        )

    def classic_heartbeat(
        self, *, member_id: str, instance_id: str | None, generation_id: int, now: float
    ) -> int:
        """A classic member's Heartbeat (Kafka's classicGroupHeartbeatToConsumerGroup)."""
        found = self._classic_member(member_id, instance_id)
        if isinstance(found, int):
            return found
        if generation_id != found.member_epoch:
            return int(ErrorCode.ILLEGAL_GENERATION)
        assert found.classic is not None
        found.session_deadline = now + found.classic.session_timeout_ms
        return self._told_to_rejoin(found, now) if self._must_rejoin(found) else _NONE

    def classic_leave(self, member_id: str, instance_id: str | None, topics: Mapping[str, TopicImage]) -> int:
        """One member of a LeaveGroup (a static one may be named by its instance id alone)."""
        found = self._classic_member(member_id, instance_id)
        if isinstance(found, int):
            return found
        self.fence(found.member_id, topics)
        return _NONE

    # ------------------------------------------------------------------ timers

    def tick(self, now: float, topics: Mapping[str, TopicImage]) -> list[str]:
        """Fence members whose session or revocation time ran out; the ids fenced."""
        if self.dead:
            return []
        expired = [
            m.member_id
            for m in self.members.values()
            if m.session_deadline <= now or (m.rebalance_deadline is not None and m.rebalance_deadline <= now)
        ]
        for member_id in expired:
            self.fence(member_id, topics)
        return expired

    def next_deadline(self) -> float | None:
        times: list[float] = []
        for m in self.members.values():
            times.append(m.session_deadline)
            if m.rebalance_deadline is not None:
                times.append(m.rebalance_deadline)
        return min(times, default=None)

    def kill(self) -> None:
        """Dead (deleted or unloaded): later requests are answered NOT_COORDINATOR."""
        self.dead = True

    # ------------------------------------------------------------------ offsets

    def validate_commit(self, member_id: str, member_epoch: int, api_version: int | None) -> int:
        """Kafka's ConsumerGroup.validateOffsetCommit: an OffsetCommit (``api_version``; None for
        a TxnOffsetCommit) from a member must carry its current epoch (STALE_MEMBER_EPOCH) and
        come at v9+ (UNSUPPORTED_VERSION); an admin commit (no member id, epoch < 0) only to a
        group without members."""
        if self.dead:
            return int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
        if member_epoch < 0 and not member_id:
            return int(ErrorCode.NONE) if not self.members else int(ErrorCode.UNKNOWN_MEMBER_ID)
        member = self.members.get(member_id)
        if member is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        if member.classic is not None:
            # A classic-protocol member commits with its generation (its member epoch).
            return _NONE if member_epoch == member.member_epoch else int(ErrorCode.ILLEGAL_GENERATION)
        if api_version is not None and api_version < 9:
            return int(ErrorCode.UNSUPPORTED_VERSION)
        if member_epoch != member.member_epoch:
            return int(ErrorCode.STALE_MEMBER_EPOCH)
        return int(ErrorCode.NONE)

    def validate_fetch(self, member_id: str | None, member_epoch: int) -> int:
        """Kafka's validateOffsetFetch: a fetch naming a member must carry its epoch."""
        if member_id is None or (member_epoch < 0 and not member_id):
            return int(ErrorCode.NONE)
        member = self.members.get(member_id)
        if member is None:
            return int(ErrorCode.UNKNOWN_MEMBER_ID)
        if member_epoch != member.member_epoch:
            return int(ErrorCode.STALE_MEMBER_EPOCH)
        return int(ErrorCode.NONE)

    # ------------------------------------------------------------------ loading

    def replay(self, key: cgr.Key, value: cgr.Value | None) -> None:
        """Apply one record of this group read back from the log (Kafka's replay): the latest
        record of each key wins, a tombstone removes what its key held. ``finish_load`` then
        rebuilds what is derived (owners, static members) and starts the timers."""
        if isinstance(key, cgr.ConsumerGroupMetadataKey):
            self.group_epoch = value.epoch if isinstance(value, cgr.ConsumerGroupMetadataValue) else 0
        elif isinstance(key, cgr.ConsumerGroupRegularExpressionKey):
            if isinstance(value, cgr.ConsumerGroupRegularExpressionValue):
                self.resolved_regexes[key.regex] = frozenset(value.topics)
            else:
                self.resolved_regexes.pop(key.regex, None)
        elif isinstance(key, cgr.ConsumerGroupPartitionMetadataKey):
            topics = value.topics if isinstance(value, cgr.ConsumerGroupPartitionMetadataValue) else ()
            self.subscription_metadata = {t.topic_name: (t.topic_id, t.num_partitions) for t in topics}
        elif isinstance(key, cgr.ConsumerGroupTargetAssignmentMetadataKey):
            epoch = (
                value.assignment_epoch
                if isinstance(value, cgr.ConsumerGroupTargetAssignmentMetadataValue)
                else 0
            )
            self.assignment_epoch = epoch
        elif isinstance(key, cgr.ConsumerGroupTargetAssignmentMemberKey):
            if isinstance(value, cgr.ConsumerGroupTargetAssignmentMemberValue):
                self.target[key.member_id] = from_topic_partitions(value.topic_partitions)
            else:
                self.target.pop(key.member_id, None)
        elif isinstance(key, cgr.ConsumerGroupMemberMetadataKey):
            if isinstance(value, cgr.ConsumerGroupMemberMetadataValue):
                subscriber = self.members.setdefault(key.member_id, ConsumerGroupMember(key.member_id))
                subscriber.instance_id = value.instance_id
                subscriber.rack_id = value.rack_id
                subscriber.client_id = value.client_id
                subscriber.client_host = value.client_host
                subscriber.subscribed_topic_names = tuple(value.subscribed_topic_names)
                subscriber.subscribed_topic_regex = value.subscribed_topic_regex
                subscriber.rebalance_timeout_ms = value.rebalance_timeout_ms
                subscriber.server_assignor = value.server_assignor
                raw = value.classic_member_metadata
                subscriber.classic = None if raw is None else cgr.decode_classic_member_metadata(raw)
            else:
                self.members.pop(key.member_id, None)
        elif isinstance(key, cgr.ConsumerGroupCurrentMemberAssignmentKey):
            known = self.members.get(key.member_id)
            if isinstance(value, cgr.ConsumerGroupCurrentMemberAssignmentValue):
                member = known or self.members.setdefault(key.member_id, ConsumerGroupMember(key.member_id))
                member.member_epoch = value.member_epoch
                member.previous_member_epoch = value.previous_member_epoch
                try:
                    member.state = MemberState(value.state)
                except ValueError:
                    member.state = MemberState.UNKNOWN
                member.assigned = from_topic_partitions(value.assigned_partitions)
                member.pending_revocation = from_topic_partitions(value.partitions_pending_revocation)
            elif known is not None:
                known.member_epoch, known.previous_member_epoch = 0, -1
                known.state = MemberState.STABLE
                known.assigned, known.pending_revocation = {}, {}

    def finish_load(self, now: float) -> None:
        """After ``replay``: ownership and static members from the members' assignments; every
        member gets a full session from now (as Kafka, on loading a partition)."""
        members = list(self.members.values())
        self.members, self.owners, self.static_members = {}, {}, {}
        for member in members:
            member.session_deadline = now + member.session_timeout_ms(self.config)
            member.rebalance_deadline = (
                now + max(member.rebalance_timeout_ms, 0)
                if member.state == MemberState.UNREVOKED_PARTITIONS
                else None
            )
            self._put_member(member)
        self.records = []

    @property
    def is_empty_shell(self) -> bool:
        """Nothing left to keep: no members, epoch record deleted (a fully deleted group)."""
        return not self.members and self.group_epoch == 0 and not self.target

    # ------------------------------------------------------------------ deletion

    def tombstones(self) -> list[Record]:
        """Every record of the group's state, as tombstones (DeleteGroups; members gone)."""
        out: list[Record] = []
        for member_id in sorted(set(self.members) | set(self.target)):
            out.extend(self._member_tombstones(member_id))
        out += [
            (cgr.ConsumerGroupRegularExpressionKey(self.group_id, r), None)
            for r in sorted(self.resolved_regexes)
        ]
        out += [
            (cgr.ConsumerGroupTargetAssignmentMetadataKey(self.group_id), None),
            (cgr.ConsumerGroupPartitionMetadataKey(self.group_id), None),
            (cgr.ConsumerGroupMetadataKey(self.group_id), None),
        ]
        return out

    def take_records(self) -> list[Record]:
        out, self.records = self.records, []
        return out
