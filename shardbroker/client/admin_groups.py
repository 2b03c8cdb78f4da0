"""The admin client's group calls, as Kafka's ``kafka-consumer-groups`` makes them: ListGroups
(every broker; v5+ answers each group's type, "classic" or "consumer", and filters by it), the
group descriptions, OffsetFetch, OffsetCommit (as an admin: generation -1, empty member id,
accepted only while the group has no members; or as a member, for the consumer) and DeleteGroups,
each at the group's coordinator.

A group is described as Kafka's Java admin and librdkafka do it, since either protocol's group
may sit under an id: ConsumerGroupDescribe first when the coordinator serves it (a group of the
consumer protocol, KIP-848, is described only there: DescribeGroups answers it GROUP_ID_NOT_FOUND),
then DescribeGroups when that answers GROUP_ID_NOT_FOUND (a classic group, or none) or when the
coordinator does not serve it. A classic group's member subscriptions and assignments are decoded
with the consumer protocol (protocol/consumer_protocol.py); a consumer-protocol group's come from
the broker, which computes each member's target assignment and tracks its epoch."""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardbroker.client.admin_cluster import BrokerInfo, ClusterAdmin, TopicPartition
from shardbroker.client.connection import BrokerConnection, KafkaApiError, UnsupportedApi
from shardbroker.protocol import messages as m
from shardbroker.protocol.consumer_protocol import (
    ConsumerAssignment,
    ConsumerSubscription,
    decode_consumer_assignment,
    decode_consumer_subscription,
)
from shardbroker.protocol.errors import ErrorCode, ProtocolError

__all__ = ["GroupAdmin", "GroupDescription", "GroupListing", "MemberDescription"]

CLASSIC = "classic"
#: KIP-848's group type (also the protocol type of every consumer group, classic or not).
CONSUMER = "consumer"


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    #: "" when the broker's ListGroups is older than v4 (no state in it)
    state: str
    coordinator: int
    #: "classic" or "consumer"; "" when the broker's ListGroups is older than v5 (no type in it)
    group_type: str = ""


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    host: str
    #: classic members of protocol type "consumer": decoded, else None (raw bytes below)
    subscription: ConsumerSubscription | None
    assignment: ConsumerAssignment | None
    metadata_bytes: bytes = b""
    assignment_bytes: bytes = b""
    #: consumer-protocol members only (None for classic ones): the member's epoch, the partitions
    #: it owns now (see ``assigned``) and those the broker wants it to own, its subscription
    member_epoch: int | None = None
    current: list[TopicPartition] | None = None
    target: list[TopicPartition] | None = None
    subscribed_topic_names: list[str] | None = None
    subscribed_topic_regex: str | None = None

    @property
    def assigned(self) -> list[TopicPartition]:
        """The partitions the member owns now, whichever protocol its group speaks."""
        if self.current is not None:
            return self.current
        if self.assignment is None:
            return []
        return sorted((t, p) for t, parts in self.assignment.partitions.items() for p in parts)


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: str
    protocol_type: str
    #: the classic group's assignment strategy, or the consumer-protocol group's assignor
    protocol: str
    members: list[MemberDescription]
    coordinator: BrokerInfo
    #: "classic" (described by DescribeGroups, which a missing group also is) or "consumer"
    group_type: str = CLASSIC
    #: consumer-protocol groups only (None for classic ones): the epoch of the group's
    #: membership/subscriptions, that of its target assignment, the broker-side assignor
    group_epoch: int | None = None
    assignment_epoch: int | None = None
    assignor: str | None = None

    @property
    def exists(self) -> bool:
        return self.state != "Dead"


class GroupAdmin(ClusterAdmin):
    """ListGroups, ConsumerGroupDescribe/DescribeGroups, OffsetFetch, OffsetCommit and DeleteGroups."""

    def list_groups(self, types: Collection[str] = ()) -> list[GroupListing]:
        """Every group of every broker (ListGroups is answered per coordinator); with ``types``
        ("classic", "consumer") only those types, as the brokers filter them: a broker older than
        ListGroups v5 cannot, and is UnsupportedApi (as with Kafka's admin)."""
        brokers = self.metadata([]).brokers
        groups: dict[str, GroupListing] = {}
        for node_id in sorted(brokers):
            conn = self.node(node_id)
            version = conn.version_for(m.ListGroupsRequest.API_KEY, "ListGroups")
            if types and version < 5:
                raise UnsupportedApi(
                    f"broker {conn.address} serves ListGroups up to v{version}; "
                    "listing groups by type needs v5"
                )
            request = m.ListGroupsRequest(types_filter=list(types))
            response = self._retry(
                "ListGroups", functools.partial(self._checked_list_groups, conn, request, version)
            )
            for g in response.groups:
                state = g.group_state if version >= 4 else ""
                group_type = g.group_type if version >= 5 else ""
                groups[g.group_id] = GroupListing(g.group_id, g.protocol_type, state, node_id, group_type)
        return sorted(groups.values(), key=lambda g: g.group_id)

    @staticmethod
    def _checked_list_groups(
        conn: BrokerConnection, request: m.ListGroupsRequest, version: int
    ) -> m.ListGroupsResponse:
        response: m.ListGroupsResponse = conn.send(request, version)
        if response.error_code != ErrorCode.NONE:
            raise KafkaApiError(response.error_code, f"ListGroups on {conn.address}")
        return response

    def describe_group(self, group_id: str) -> GroupDescription:
        """State, protocol and members of one group of either type (asked as the module docstring
        says). A group that does not exist is "Dead"."""

        def call(conn: BrokerConnection) -> GroupDescription:
            coordinator = self._brokers.get(self._node_of(conn), BrokerInfo(-1, conn.host, conn.port))
            try:
                version = conn.version_for(m.ConsumerGroupDescribeRequest.API_KEY, "ConsumerGroupDescribe")
            except UnsupportedApi:
                return self._describe_classic(conn, group_id, coordinator)
            described = self._describe_consumer(conn, version, group_id, coordinator)
            return described or self._describe_classic(conn, group_id, coordinator)

        return self._coordinator_call(group_id, call)

    @staticmethod
    def _only_group(groups: Sequence[Any], api: str) -> Any:
        if len(groups) != 1:
            raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, f"{api} answered {len(groups)} groups")
        return groups[0]

    def _describe_consumer(
        self, conn: BrokerConnection, version: int, group_id: str, coordinator: BrokerInfo
    ) -> GroupDescription | None:
        """ConsumerGroupDescribe's answer; None when the group is not of the consumer protocol
        (GROUP_ID_NOT_FOUND: a classic group or none, for DescribeGroups to tell)."""
        request = m.ConsumerGroupDescribeRequest(group_ids=[group_id])
        response: m.ConsumerGroupDescribeResponse = conn.send(request, version)
        g = self._only_group(response.groups, "ConsumerGroupDescribe")
        if g.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
            return None
        error = self._result_error(g.error_code, g.error_message, f"describing group '{group_id}'")
        if error is not None:
            raise error
        members = [
            MemberDescription(
                mem.member_id,
                mem.instance_id,
                mem.client_id,
                mem.client_host,
                None,
                None,
                member_epoch=mem.member_epoch,
                current=self._partitions(mem.assignment),
                target=self._partitions(mem.target_assignment),
                subscribed_topic_names=list(mem.subscribed_topic_names),
                subscribed_topic_regex=mem.subscribed_topic_regex,
            )
            for mem in g.members
        ]
        return GroupDescription(
            g.group_id,
            g.group_state,
            CONSUMER,
            g.assignor_name,
            members,
            coordinator,
            group_type=CONSUMER,
            group_epoch=g.group_epoch,
            assignment_epoch=g.assignment_epoch,
            assignor=g.assignor_name,
        )

    @staticmethod
    def _partitions(assignment: m.ConsumerGroupDescribeResponse.Assignment) -> list[TopicPartition]:
        return sorted((tp.topic_name, p) for tp in assignment.topic_partitions for p in tp.partitions)

    def _describe_classic(
        self, conn: BrokerConnection, group_id: str, coordinator: BrokerInfo
    ) -> GroupDescription:
        response: m.DescribeGroupsResponse = conn.send(m.DescribeGroupsRequest(groups=[group_id]))
        g = self._only_group(response.groups, "DescribeGroups")
        if g.error_code == ErrorCode.GROUP_ID_NOT_FOUND:
            g.group_state = "Dead"
        elif g.error_code != ErrorCode.NONE:
            raise KafkaApiError(g.error_code, f"describing group '{group_id}'")
        consumer = g.protocol_type == CONSUMER
        members = [self._classic_member(mem, consumer) for mem in g.members]
        return GroupDescription(
            g.group_id, g.group_state, g.protocol_type, g.protocol_data, members, coordinator
        )

    @staticmethod
    def _classic_member(mem: Any, consumer: bool) -> MemberDescription:
        subscription = assignment = None
        if consumer:
            try:
                subscription = (
                    decode_consumer_subscription(mem.member_metadata) if mem.member_metadata else None
                )
            except ProtocolError:
                subscription = None
            try:
                assignment = decode_consumer_assignment(mem.member_assignment)
            except ProtocolError:
                assignment = None
        return MemberDescription(
            mem.member_id,
            mem.group_instance_id,
            mem.client_id,
            mem.client_host,
            subscription,
            assignment,
            bytes(mem.member_metadata),
            bytes(mem.member_assignment),
        )

    def committed_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets (all of them when ``partitions`` is None); partitions
        with nothing committed are left out."""
        return {
            tp: offset for tp, (offset, _) in self.committed_offsets_metadata(group_id, partitions).items()
        }

    def committed_offsets_metadata(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, tuple[int, str | None]]:
        """:meth:`committed_offsets` with each commit's metadata string."""
        wanted: dict[str, list[int]] | None = None
        if partitions is not None:
            wanted = defaultdict(list)
            for t, p in partitions:
                wanted[t].append(p)

        def call(conn: BrokerConnection) -> dict[TopicPartition, tuple[int, str | None]]:
            version = conn.version_for(m.OffsetFetchRequest.API_KEY, "OffsetFetch")
            out: dict[TopicPartition, tuple[int, str | None]] = {}
            if version >= 8:
                topics8 = (
                    None
                    if wanted is None
                    else [
                        m.OffsetFetchRequest.OffsetFetchRequestTopics(name=t, partition_indexes=ps)
                        for t, ps in wanted.items()
                    ]
                )
                group = m.OffsetFetchRequest.OffsetFetchRequestGroup(group_id=group_id, topics=topics8)
                response8: m.OffsetFetchResponse = conn.send(m.OffsetFetchRequest(groups=[group]), version)
                if len(response8.groups) != 1:
                    raise KafkaApiError(ErrorCode.UNKNOWN_SERVER_ERROR, "OffsetFetch answered no group")
                code = response8.groups[0].error_code
                topics_out: list[Any] = response8.groups[0].topics
            else:
                topics = (
                    None
                    if wanted is None
                    else [
                        m.OffsetFetchRequest.OffsetFetchRequestTopic(name=t, partition_indexes=ps)
                        for t, ps in wanted.items()
                    ]
                )
                response: m.OffsetFetchResponse = conn.send(
                    m.OffsetFetchRequest(group_id=group_id, topics=topics), version
                )
                code, topics_out = response.error_code, response.topics
            if code != ErrorCode.NONE:
                raise KafkaApiError(code, f"offsets of group '{group_id}'")
            for t in topics_out:
                for p in t.partitions:
                    if p.error_code not in (ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION):
                        raise KafkaApiError(
                            p.error_code, f"offset of group '{group_id}' for {t.name}-{p.partition_index}"
                        )
                    if p.error_code == ErrorCode.NONE and p.committed_offset >= 0:
                        out[(t.name, p.partition_index)] = (p.committed_offset, p.metadata)
            return out

        return self._coordinator_call(group_id, call)

    def commit_offsets(
        self,
        group_id: str,
        offsets: dict[TopicPartition, int],
        *,
        generation_id: int = -1,
        member_id: str = "",
        group_instance_id: str | None = None,
        metadata: Mapping[TopicPartition, str] | None = None,
    ) -> None:
        """Commit ``offsets`` for the group: by default as an admin (generation -1, empty member
        id, as Kafka's tool), which the coordinator accepts only while the group has no members;
        a consumer passes its generation and member id. ``metadata``: a commit's string, by
        partition."""
        notes = metadata or {}
        grouped: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for (t, p), offset in sorted(offsets.items()):
            grouped[t].append((p, offset))
        request = m.OffsetCommitRequest(
            group_id=group_id,
            generation_id_or_member_epoch=generation_id,
            member_id=member_id,
            group_instance_id=group_instance_id,
            topics=[
                m.OffsetCommitRequest.OffsetCommitRequestTopic(
                    name=t,
                    partitions=[
                        m.OffsetCommitRequest.OffsetCommitRequestPartition(
                            partition_index=p, committed_offset=o, committed_metadata=notes.get((t, p), "")
                        )
                        for p, o in parts
                    ],
                )
                for t, parts in grouped.items()
            ],
        )

        def call(conn: BrokerConnection) -> None:
            response: m.OffsetCommitResponse = conn.send(request)
            for rt in response.topics:
                for rp in rt.partitions:
                    if rp.error_code != ErrorCode.NONE:
                        raise KafkaApiError(
                            rp.error_code,
                            f"committing for group '{group_id}' on {rt.name}-{rp.partition_index}",
                        )

        self._coordinator_call(group_id, call)

    def delete_groups(self, group_ids: Sequence[str]) -> dict[str, KafkaApiError | None]:
        """Delete groups (each at its coordinator); per group None or the error it got."""
        out: dict[str, KafkaApiError | None] = {}
        for group_id in group_ids:

            def call(conn: BrokerConnection, g: str = group_id) -> None:
                response: m.DeleteGroupsResponse = conn.send(m.DeleteGroupsRequest(groups_names=[g]))
                for r in response.results:
                    if r.group_id == g and r.error_code != ErrorCode.NONE:
                        raise KafkaApiError(r.error_code, f"deleting group '{g}'")

            try:
                self._coordinator_call(group_id, call)
                out[group_id] = None
            except KafkaApiError as exc:
                out[group_id] = exc
        return out
