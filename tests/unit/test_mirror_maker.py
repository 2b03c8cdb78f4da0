"""The mirror loop's backpressure: the produce thread takes fetched rounds only while its
unacknowledged batches stay under PENDING_MAX_BYTES (no sockets: rounds put on the queue by hand)."""

from __future__ import annotations

from collections import deque

from shardbroker.client.admin_cluster import TopicPartition
from shardbroker.mirror.batch_rewrite import Selection, SourceBatch
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.mirror_maker import PENDING_MAX_BYTES, QUEUE_ROUNDS, MirrorMaker, _Entry
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.mirror.source_fetcher import FetchedPartition

BATCH = PENDING_MAX_BYTES // 4
BUFFER = memoryview(bytearray(BATCH))


def round_at(offset: int) -> list[FetchedPartition]:
    out = []
    for p in range(2):
        batch = SourceBatch(BUFFER, offset, offset + 10, 10, 0, False)
        out.append(FetchedPartition("t", p, Selection(offset, offset + 10, [batch]), 1000, 0.0))
    return out


def test_rounds_stay_queued_while_the_pending_batches_fill_the_budget() -> None:
    config = MirrorConfig.from_properties(
        {
            "source.cluster.bootstrap.servers": "127.0.0.1:1",
            "target.cluster.bootstrap.servers": "127.0.0.1:2",
            "topics": "t",
        }
    )
    mirror = MirrorMaker(config, MirrorMetrics())
    for i in range(QUEUE_ROUNDS):
        mirror._queue.put(round_at(10 * i))
    pending: dict[TopicPartition, deque[_Entry]] = {}
    ready = mirror._take(pending, {}, 5, block=False)
    assert sum(len(q) for q in pending.values()) == 4  # two rounds of 2 x BATCH: the budget
    assert mirror._queue.qsize() == QUEUE_ROUNDS - 2  # the fetch thread waits on a full queue
    assert [e.next_offset for e in ready] == [10, 10]
    mirror._take(pending, {}, 5, block=False)
    assert mirror._queue.qsize() == QUEUE_ROUNDS - 2
    for q in pending.values():
        q.popleft()  # acknowledged
    mirror._take(pending, {}, 5, block=False)
    assert mirror._queue.qsize() == QUEUE_ROUNDS - 3
    assert [e.next_offset for e in pending[("t", 0)]] == [20, 30]
