"""ElectLeaders (api key 43), v0-v2: nothing to elect on one host, answered as Kafka's controller.

Every partition has one replica, its owning worker, which is its leader: a preferred election
(type 0, the only one before v1) finds the preferred replica leading and an unclean one (type 1,
KIP-460) finds a leader, both Kafka's ELECTION_NOT_NEEDED (84) per partition. A partition whose
worker is away (being restarted: not among the image's brokers) or that is moving between
workers (leader -1) has no live replica to elect: PREFERRED_LEADER_NOT_AVAILABLE (80) for a
preferred election, ELIGIBLE_LEADERS_NOT_AVAILABLE (83) for an unclean one, as Kafka answers
when the only replica is offline; the worker takes it back when it returns, which no election
would hasten. An unknown topic or partition is UNKNOWN_TOPIC_OR_PARTITION (3) with Kafka's
message.

Null topic partitions ask for every partition; as Kafka's controller, partitions that need no
election are then left out, so each topic is listed with only the partitions it could not
elect. ALTER on the CLUSTER, else CLUSTER_AUTHORIZATION_FAILED (31) top-level (v1+) and for
every partition asked; an election type other than 0 and 1 is INVALID_REQUEST (42). The
request's timeout is not waited on: no election is started.
"""

from __future__ import annotations

from collections.abc import Iterable

from shardbroker.broker.auth_helper import authorize_cluster
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclOperation

__all__ = ["HANDLER", "election_result"]

_R = m.ElectLeadersResponse
_PREFERRED = 0
_UNCLEAN = 1
_NOT_NEEDED = "Leader election not needed for topic partition."


def election_result(
    image: MetadataImage, live: set[int], topic: str, index: int, election_type: int
) -> tuple[ErrorCode, str]:
    """The outcome of electing ``topic``-``index``'s leader: (error code, message)."""
    t = image.topics.get(topic)
    if t is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such topic as {topic}"
    p = t.partition(index)
    if p is None:
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"No such partition as {topic}-{index}"
    if p.leader in live:
        return ErrorCode.ELECTION_NOT_NEEDED, _NOT_NEEDED
    if election_type == _PREFERRED:
        return ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE, f"The only replica of {topic}-{index} is offline."
    return ErrorCode.ELIGIBLE_LEADERS_NOT_AVAILABLE, f"The only replica of {topic}-{index} is offline."


def _results(
    asked: Iterable[tuple[str, Iterable[int]]], outcome: dict[tuple[str, int], tuple[ErrorCode, str | None]]
) -> list[_R.ReplicaElectionResult]:
    return [
        _R.ReplicaElectionResult(
            topic=topic,
            partition_result=[
                _R.PartitionResult(partition_id=i, error_code=code, error_message=message)
                for i in dict.fromkeys(indexes)
                for code, message in (outcome[topic, i],)
            ],
        )
        for topic, indexes in asked
    ]


def _every_partition(image: MetadataImage, live: set[int], kind: int) -> list[_R.ReplicaElectionResult]:
    """Every topic, with the partitions that could not be elected (Kafka leaves out the others)."""
    outcome: dict[tuple[str, int], tuple[ErrorCode, str | None]] = {}
    asked: list[tuple[str, list[int]]] = []
    for t in image.topics.values():
        failed = []
        for p in t.partitions:
            result = election_result(image, live, t.name, p.partition, kind)
            if result[0] != ErrorCode.ELECTION_NOT_NEEDED:
                outcome[t.name, p.partition] = result
                failed.append(p.partition)
        asked.append((t.name, failed))
    return _results(asked, outcome)


async def handle(ctx: RequestContext, request: m.ElectLeadersRequest) -> m.ElectLeadersResponse:
    election_type = request.election_type if ctx.api_version >= 1 else _PREFERRED
    asked = [(t.topic, t.partitions) for t in request.topic_partitions or ()]
    outcome: dict[tuple[str, int], tuple[ErrorCode, str | None]]
    refusal: tuple[ErrorCode, str | None] | None = None
    if not authorize_cluster(ctx, AclOperation.ALTER):
        refusal = (ErrorCode.CLUSTER_AUTHORIZATION_FAILED, None)
    elif election_type not in (_PREFERRED, _UNCLEAN):
        refusal = (ErrorCode.INVALID_REQUEST, f"Unknown election type {election_type}")
    if refusal is not None:
        outcome = {(topic, i): refusal for topic, indexes in asked for i in indexes}
        return _R(error_code=refusal[0], replica_election_results=_results(asked, outcome))
    image = ctx.worker.image
    live = {b.node_id for b in image.brokers}
    if request.topic_partitions is None:
        return _R(error_code=0, replica_election_results=_every_partition(image, live, election_type))
    outcome = {
        (t, i): election_result(image, live, t, i, election_type) for t, indexes in asked for i in indexes
    }
    return _R(error_code=0, replica_election_results=_results(asked, outcome))


HANDLER = ApiHandler(api_key=43, min_version=0, max_version=2, handle=handle)
