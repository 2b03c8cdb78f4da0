"""DescribeTopicPartitions (api key 75, KIP-966), v0: topics and partitions, paged by a cursor.

What the Java admin client (3.7+) calls for ``describeTopics`` and ``kafka-topics.sh
--describe``. The same partitions as Metadata (leader = owning worker, replicas = ISR =
[leader]; a partition whose worker is away has leader -1, no ISR and its replica offline), plus
empty eligible-leader-replica lists (one replica: no ELR), answered as Kafka 3.7+'s handler:

- The topics: those named (once each), or every topic when none is named; only names at or
  after the cursor's topic, in name order. Named topics the principal may not DESCRIBE are
  TOPIC_AUTHORIZATION_FAILED (29) with a zero id, listed after the others; when listing every
  topic they are left out. Named unknown topics are UNKNOWN_TOPIC_OR_PARTITION (3), or
  INVALID_TOPIC_EXCEPTION (17) for an illegal name. Authorized operations are always answered.
- Paging: at most ``max(min(max.request.partition.size.limit, ResponsePartitionLimit), 1)``
  partitions (Kafka clamps 0 and negative limits to 1), from the cursor's partition for the
  cursor's topic and from 0 for the topics after it; ``NextCursor`` names the first partition
  left out (a topic cut by the limit is answered with the partitions that fit; a topic reached
  with no room left is not answered and the cursor names its partition 0). Unknown topics do
  not count toward the limit.
- A cursor to a topic that no longer exists (deleted between pages): when listing every topic,
  the page starts at the next topic by name, as Kafka's name filter does; when topics are named
  and the cursor's topic is among them, it is answered UNKNOWN_TOPIC_OR_PARTITION and the page
  goes on. Refused as Kafka refuses them, with INVALID_REQUEST (42) on every named topic (the
  response has no top-level error): a cursor whose topic is not among the named ones, and a
  cursor partition below 0.

Memory: the answer holds at most the limit's partitions, plus one entry per named topic, which
``socket.request.max.bytes`` bounds. Listing every topic pages through the image's names sorted
once per image (bisect to the cursor), not per request.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shardbroker.broker.auth_helper import authorize, authorized_operations
from shardbroker.broker.dispatch import ApiHandler, RequestContext
from shardbroker.config.broker_properties import MAX_REQUEST_PARTITION_SIZE_LIMIT
from shardbroker.metadata.image import MetadataImage, TopicImage
from shardbroker.metadata.topic_names import INTERNAL_TOPICS, validate_topic_name
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.schema import ZERO_UUID
from shardbroker.security.acl import AclOperation, ResourceType

__all__ = ["HANDLER", "Page", "page"]

_R = m.DescribeTopicPartitionsResponse
_Topic = _R.DescribeTopicPartitionsResponseTopic
_Partition = _R.DescribeTopicPartitionsResponsePartition
_DENIED = ErrorCode.TOPIC_AUTHORIZATION_FAILED


@dataclass(frozen=True, slots=True)
class Page:
    """What one response describes: per topic in order, the partition indexes answered (None:
    the topic does not exist), and the cursor of the next page (None: this is the last)."""

    topics: list[tuple[str, range | None]]
    next_cursor: tuple[str, int] | None


def page(
    names: Iterable[str],
    partition_count: Callable[[str], int | None],
    cursor: tuple[str, int] | None,
    limit: int,
) -> Page:
    """Kafka's paging over ``names`` (sorted, authorized, none before the cursor's topic):
    ``partition_count`` gives a topic's partitions (None: unknown), ``limit`` (>= 1) the
    partitions one page may hold."""
    remaining = limit
    out: list[tuple[str, range | None]] = []
    for name in names:
        if remaining <= 0:
            return Page(out, (name, 0))
        count = partition_count(name)
        if count is None:
            out.append((name, None))
            continue
        start = cursor[1] if cursor is not None and cursor[0] == name else 0
        end = min(count, start + remaining)
        out.append((name, range(start, end)))
        if end < count:
            return Page(out, (name, end))
        remaining -= len(range(start, end))
    return Page(out, None)


class _SortedNames:
    """The image's topic names in order, computed once per image."""

    def __init__(self) -> None:
        self._image: MetadataImage | None = None
        self._names: list[str] = []

    def after(self, image: MetadataImage, first: str) -> list[str]:
        """The names at or after ``first``."""
        if image is not self._image:
            self._image, self._names = image, sorted(image.topics)
        return self._names[bisect.bisect_left(self._names, first) :]


_SORTED = _SortedNames()


def _partitions(topic: TopicImage, indexes: range, live: set[int]) -> list[_Partition]:
    out = []
    for index in indexes:
        p = topic.partitions[index]
        up = p.leader in live
        out.append(
            _Partition(
                error_code=0,
                partition_index=index,
                leader_id=p.leader if up else -1,
                leader_epoch=p.leader_epoch,
                replica_nodes=[p.leader] if p.leader >= 0 else [],
                isr_nodes=[p.leader] if up else [],
                eligible_leader_replicas=[],
                last_known_elr=[],
                offline_replicas=[] if up or p.leader < 0 else [p.leader],
            )
        )
    return out


def _refused(request: m.DescribeTopicPartitionsRequest, code: ErrorCode) -> m.DescribeTopicPartitionsResponse:
    """Kafka's error response: every named topic with ``code``."""
    return _R(topics=[_Topic(error_code=code, name=t.name, topic_id=ZERO_UUID) for t in request.topics])


def error_response(
    request: m.DescribeTopicPartitionsRequest, version: int, code: ErrorCode, message: str
) -> m.DescribeTopicPartitionsResponse:
    return _refused(request, code)


async def handle(
    ctx: RequestContext, request: m.DescribeTopicPartitionsRequest
) -> m.DescribeTopicPartitionsResponse:
    image = ctx.worker.image
    cursor = None if request.cursor is None else (request.cursor.topic_name, request.cursor.partition_index)
    first = "" if cursor is None else cursor[0]
    fetch_all = not request.topics
    if fetch_all:
        candidates = _SORTED.after(image, first)
    else:
        candidates = sorted({t.name for t in request.topics if t.name >= first})
        if cursor is not None and cursor[0] not in candidates:
            return _refused(request, ErrorCode.INVALID_REQUEST)
    if cursor is not None and cursor[1] < 0:
        return _refused(request, ErrorCode.INVALID_REQUEST)
    authorized: list[str] = []
    denied: list[_Topic] = []
    for name in candidates:
        if authorize(ctx, AclOperation.DESCRIBE, ResourceType.TOPIC, name, log_if_denied=not fetch_all):
            authorized.append(name)
        elif not fetch_all:
            denied.append(_Topic(error_code=_DENIED, name=name, topic_id=ZERO_UUID))
    most = ctx.worker.config.get(MAX_REQUEST_PARTITION_SIZE_LIMIT)
    limit = max(min(most, request.response_partition_limit), 1)

    def partition_count(name: str) -> int | None:
        t = image.topics.get(name)
        return None if t is None else len(t.partitions)

    planned = page(authorized, partition_count, cursor, limit)
    live = {b.node_id for b in image.brokers_on(ctx.session.listener)}
    topics = []
    for name, indexes in planned.topics:
        t = image.topics.get(name)
        if t is None or indexes is None:
            illegal = validate_topic_name(name) is not None
            code = ErrorCode.INVALID_TOPIC_EXCEPTION if illegal else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            out = _Topic(error_code=code, name=name, topic_id=ZERO_UUID, is_internal=name in INTERNAL_TOPICS)
        else:
            out = _Topic(
                error_code=0,
                name=name,
                topic_id=t.topic_id,
                is_internal=t.is_internal,
                partitions=_partitions(t, indexes, live),
            )
        out.topic_authorized_operations = authorized_operations(ctx, ResourceType.TOPIC, name)
        topics.append(out)
    next_cursor = (
        None
        if planned.next_cursor is None
        else _R.Cursor(topic_name=planned.next_cursor[0], partition_index=planned.next_cursor[1])
    )
    return _R(topics=topics + denied, next_cursor=next_cursor)


HANDLER = ApiHandler(api_key=75, min_version=0, max_version=0, handle=handle, error_response=error_response)
