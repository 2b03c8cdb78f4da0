"""The consumer protocol's member metadata and assignment bytes (Kafka's ``ConsumerProtocol``).

For protocol type "consumer", JoinGroup's ``protocol_metadata`` is a ConsumerProtocolSubscription
and SyncGroup's ``assignment`` a ConsumerProtocolAssignment, each an int16 version followed by the
message at that version (never flexible). The classes are generated from Kafka's specs into
:mod:`shardbroker.protocol.messages`; this module turns them into the views that the group
coordinator, the consumer and the admin client use (Kafka's ``ConsumerPartitionAssignor``
Subscription/Assignment, with partitions as ``{topic: [partition, ...]}``).

Reading follows ``ConsumerProtocol.deserialize*``: a newer version is read at our newest, bytes
after the message are ignored, anything truncated or null where the spec forbids it raises
:class:`ProtocolError`. An empty assignment means "no partitions", as Kafka's admin client reads
it (the coordinator hands out empty bytes to a member the leader gave nothing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shardbroker.protocol.messages import ConsumerProtocolAssignment, ConsumerProtocolSubscription

__all__ = [
    "ConsumerAssignment",
    "ConsumerSubscription",
    "decode_consumer_assignment",
    "decode_consumer_subscription",
    "encode_consumer_assignment",
    "encode_consumer_subscription",
]


@dataclass(frozen=True)
class ConsumerSubscription:
    """ConsumerProtocolSubscription (the metadata a consumer joins with) and its version."""

    version: int
    topics: list[str]
    user_data: bytes | None = None
    owned_partitions: dict[str, list[int]] = field(default_factory=dict)
    generation_id: int = -1
    rack_id: str | None = None


@dataclass(frozen=True)
class ConsumerAssignment:
    """ConsumerProtocolAssignment (what the leader gave a member) and its version."""

    version: int
    partitions: dict[str, list[int]]
    user_data: bytes | None = None


def _by_topic(
    parts: Sequence[ConsumerProtocolSubscription.TopicPartition | ConsumerProtocolAssignment.TopicPartition],
) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for tp in parts:
        out.setdefault(tp.topic, []).extend(tp.partitions)
    return out


def decode_consumer_subscription(data: bytes) -> ConsumerSubscription:
    """ConsumerProtocolSubscription from its version-prefixed bytes."""
    sub, version = ConsumerProtocolSubscription.decode_versioned(data)
    return ConsumerSubscription(
        version, sub.topics, sub.user_data, _by_topic(sub.owned_partitions), sub.generation_id, sub.rack_id
    )


def decode_consumer_assignment(data: bytes) -> ConsumerAssignment:
    """ConsumerProtocolAssignment from its version-prefixed bytes; empty bytes: no partitions."""
    if not data:
        return ConsumerAssignment(0, {})
    assignment, version = ConsumerProtocolAssignment.decode_versioned(data)
    return ConsumerAssignment(version, _by_topic(assignment.assigned_partitions), assignment.user_data)


def encode_consumer_subscription(topics: Sequence[str], version: int = 0) -> bytes:
    """What a member joins with: its topics, no user data."""
    return ConsumerProtocolSubscription(topics=list(topics)).encode_versioned(version)


def encode_consumer_assignment(partitions: Mapping[str, Sequence[int]], version: int = 0) -> bytes:
    """What the group leader sends in SyncGroup for one member, no user data."""
    TP = ConsumerProtocolAssignment.TopicPartition
    assigned = [TP(topic=t, partitions=list(ps)) for t, ps in partitions.items()]
    return ConsumerProtocolAssignment(assigned_partitions=assigned).encode_versioned(version)
