"""A group moving between the classic and the consumer protocol in place (KIP-848's online
migration, Kafka 4.0's ``group.consumer.migration.policy``). No I/O.

Upgrade: a ConsumerGroupHeartbeat that joins a classic group with members makes it a consumer
group, if the policy allows it and the classic group speaks the "consumer" embedded protocol.
Every classic member becomes a member of the new group at the classic generation as its epoch,
Stable, owning what its last SyncGroup gave it (the target assignment starts as exactly that);
the joining member then bumps the group epoch, so the classic members' next Heartbeat says
REBALANCE_IN_PROGRESS and their rejoin is served by the consumer group (consumer_group.py's
``classic_join``): no partition changes owner before its owner has given it up, and members on
either protocol can stay side by side as long as a rolling upgrade takes.

Downgrade: when the last member of the consumer protocol leaves (or is fenced) and the others all
speak the classic protocol, the group becomes classic again with the group epoch it had before
that member left as its generation (Kafka leaves the member out without a bump), so members that
were up to date are told REBALANCE_IN_PROGRESS rather than ILLEGAL_GENERATION; each member keeps
its current partitions as its assignment (Kafka's target: the same once the group is settled,
and never a partition another member still owns), and a rebalance starts at once.

A static classic member that takes the place of the last consumer-protocol member downgrades the
group too; Kafka then keeps the joining member's assignment without a rebalance, here the
downgrade starts one like any other (the joining member's SyncGroup is told to rejoin).
``group.max.size`` (the classic group's size limit) does not exist here, so it never refuses.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping

from shardbroker.broker import consumer_group_records as cgr
from shardbroker.broker.consumer_group import (
    CONSUMER_PROTOCOL_TYPE,
    ConsumerGroup,
    ConsumerGroupConfig,
    ConsumerGroupMember,
    MemberState,
    to_topic_partitions,
)
from shardbroker.broker.group_state import Group, GroupState, Member
from shardbroker.metadata.image import TopicImage
from shardbroker.protocol.consumer_protocol import (
    decode_consumer_assignment,
    decode_consumer_subscription,
    encode_consumer_assignment,
)
from shardbroker.protocol.errors import ProtocolError

__all__ = [
    "MigrationError",
    "MigrationPolicy",
    "classic_group_from_consumer",
    "consumer_group_from_classic",
    "downgrade_refusal",
    "upgrade_refusal",
]


class MigrationPolicy(enum.Enum):
    """Kafka's ConsumerGroupMigrationPolicy (the config's values)."""

    DISABLED = "disabled"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    BIDIRECTIONAL = "bidirectional"

    @property
    def upgrades(self) -> bool:
        return self in (MigrationPolicy.UPGRADE, MigrationPolicy.BIDIRECTIONAL)

    @property
    def downgrades(self) -> bool:
        return self in (MigrationPolicy.DOWNGRADE, MigrationPolicy.BIDIRECTIONAL)


class MigrationError(ValueError):
    """A member's embedded consumer protocol bytes cannot be read: the group cannot move."""


def upgrade_refusal(policy: MigrationPolicy, group: Group, max_size: int) -> str | None:
    """Why the non-empty classic ``group`` cannot become a consumer group (Kafka's
    validateOnlineUpgrade reasons), or None."""
    if not policy.upgrades:
        return "the online upgrade is disabled"
    if group.protocol_type != CONSUMER_PROTOCOL_TYPE:
        return "the group does not use the consumer embedded protocol"
    if len(group.members) > max_size:
        return "the group size exceeds the consumer group maximum size"
    return None


def downgrade_refusal(policy: MigrationPolicy, cg: ConsumerGroup) -> str | None:
    """Why ``cg`` (a consumer-protocol member just left it) stays a consumer group, or None."""
    if not cg.members or any(m.classic is None for m in cg.members.values()):
        return "members of the consumer protocol remain"
    if not policy.downgrades:
        return "the online downgrade is disabled"
    return None


def consumer_group_from_classic(
    group: Group, config: ConsumerGroupConfig, topics: Mapping[str, TopicImage], now: float
) -> ConsumerGroup:
    """A consumer group holding ``group``'s members (Kafka's ConsumerGroup.fromClassicGroup),
    with the records that create it in ``records`` (Kafka's createConsumerGroupRecords order).
    ``group`` itself is not touched. Raises MigrationError."""
    cg = ConsumerGroup(group.group_id, config)
    generation = group.generation_id
    cg.group_epoch = cg.assignment_epoch = generation
    for m in group.members.values():
        try:
            subscription = decode_consumer_subscription(m.metadata(group.protocol_name))
            assignment = decode_consumer_assignment(m.assignment)
        except ProtocolError as exc:
            raise MigrationError(
                f"Cannot upgrade the classic group {group.group_id} to consumer group because the "
                "embedded consumer protocol is malformed."
            ) from exc
        assigned: dict[uuid.UUID, frozenset[int]] = {}
        for name, parts in assignment.partitions.items():
            topic = topics.get(name)
            if topic is not None and parts:
                assigned[topic.topic_id] = assigned.get(topic.topic_id, frozenset()) | frozenset(parts)
        member = ConsumerGroupMember(
            m.member_id,
            instance_id=m.group_instance_id,
            rack_id=subscription.rack_id,
            client_id=m.client_id,
            client_host=m.client_host,
            subscribed_topic_names=tuple(sorted(set(subscription.topics))),
            rebalance_timeout_ms=m.rebalance_timeout_ms,
            member_epoch=generation,
            previous_member_epoch=generation,
            state=MemberState.STABLE,
            assigned=assigned,
            classic=cgr.ClassicMemberMetadata(
                m.session_timeout_ms, tuple(cgr.ClassicProtocol(n, meta) for n, meta in m.protocols)
            ),
            session_deadline=now + m.session_timeout_ms,
        )
        cg.adopt(member)
        cg.target[member.member_id] = dict(assigned)
    members = list(cg.members.values())
    cg.records = [member.subscription_record(cg.group_id) for member in members]
    cg.records.append(
        (cgr.ConsumerGroupMetadataKey(cg.group_id), cgr.ConsumerGroupMetadataValue(cg.group_epoch))
    )
    cg.records += [
        (
            cgr.ConsumerGroupTargetAssignmentMemberKey(cg.group_id, member.member_id),
            cgr.ConsumerGroupTargetAssignmentMemberValue(to_topic_partitions(member.assigned)),
        )
        for member in members
    ]
    cg.records.append(
        (
            cgr.ConsumerGroupTargetAssignmentMetadataKey(cg.group_id),
            cgr.ConsumerGroupTargetAssignmentMetadataValue(cg.assignment_epoch),
        )
    )
    cg.records += [member.assignment_record(cg.group_id) for member in members]
    return cg


def classic_group_from_consumer(
    cg: ConsumerGroup, group: Group, topics: Mapping[str, TopicImage], now: float, generation_id: int
) -> None:
    """Move ``cg``'s members (all of the classic protocol) into ``group``, the Empty classic
    entry that holds the offsets, at ``generation_id`` (the group epoch before the last
    consumer-protocol member left: Kafka's ClassicGroup.fromConsumerGroup, then a rebalance).
    ``cg`` itself is not touched; the caller deletes it."""
    assert group.state == GroupState.EMPTY and not group.members
    names = {topic.topic_id: name for name, topic in topics.items()}
    members: list[Member] = []
    for cm in cg.members.values():
        classic = cm.classic
        assert classic is not None
        protocols = [(p.name, p.metadata) for p in classic.supported_protocols]
        try:
            version = decode_consumer_subscription(protocols[0][1]).version
        except ProtocolError:
            version = 0
        partitions = {names[tid]: sorted(parts) for tid, parts in sorted(cm.assigned.items()) if tid in names}
        members.append(
            Member(
                member_id=cm.member_id,
                group_instance_id=cm.instance_id,
                client_id=cm.client_id,
                client_host=cm.client_host,
                rebalance_timeout_ms=cm.rebalance_timeout_ms,
                session_timeout_ms=classic.session_timeout_ms,
                protocol_type=CONSUMER_PROTOCOL_TYPE,
                protocols=protocols,
                assignment=encode_consumer_assignment(partitions, min(version, 3)),
            )
        )
    group.adopt(generation_id, members, now)
