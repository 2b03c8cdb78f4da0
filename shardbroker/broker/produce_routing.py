"""Routing of a Produce batch for a partition this worker does not lead, or that still has
batches of its own in flight: forwarded to the owner (forwarding.py), held while nobody leads the
partition, or appended here once it moved here, always in the partition's arrival order.

Kept apart from forwarding.py, which owns the rings to peer workers and knows nothing of this
worker's replicas: this module is where the two meet.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from shardbroker.broker.forwarding import (
    NOT_LEADER,
    TIMED_OUT,
    ForwardResult,
    PartitionOrder,
    ProduceForwarder,
)
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.broker.worker_state import WorkerState

__all__ = ["reroute"]


def reroute(
    worker: WorkerState,
    forwarder: ProduceForwarder,
    topic: str,
    partition: int,
    batch: bytes | bytearray | memoryview,
    acks: int,
    timeout: float,
    *,
    ordered: bool = True,
) -> asyncio.Future[ForwardResult]:
    """Start `_reroute`; the batch takes its place in the partition's order now, before the task
    runs, so a request handled right after this one is queued behind it (`ProduceForwarder.busy`)."""
    order = forwarder.order((topic, partition)) if ordered else PartitionOrder()
    order.users += 1
    return asyncio.ensure_future(
        _reroute(worker, forwarder, topic, partition, batch, acks, timeout, order, ordered=ordered)
    )


async def _reroute(
    worker: WorkerState,
    forwarder: ProduceForwarder,
    topic: str,
    partition: int,
    batch: bytes | bytearray | memoryview,
    acks: int,
    timeout: float,
    order: PartitionOrder,
    *,
    ordered: bool,
) -> ForwardResult:
    """The answer for a batch of a partition this worker does not lead, or that has batches in
    flight here: forwarded to its owner; while nobody leads it (a move between its two steps:
    controller.py) held until the next images; appended here if the partition moved here -- but
    only after every batch this worker forwarded before it was acked. The batches of one
    partition go through here one after the other (a FIFO lock), and `ProduceForwarder.busy` sends
    later Produce requests of the partition here too, so they keep their arrival order whatever
    the moves: a batch forwarded to the old owner just before the partition came back may travel
    back (the old owner forwards what it no longer leads), and a later batch must not pass it (an
    idempotent producer's sequence numbers would be out of order).

    ``ordered=False`` is for batches that came through a ring (a local producer's, or another
    worker's forward): their session already sends them here one at a time, in order
    (local_clients.py), and they must not queue behind this worker's own forwards, which may be
    waiting for exactly them to come back."""
    replicas = worker.replicas
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    key = (topic, partition)
    acked: asyncio.Future[ForwardResult] | None = None
    try:
        async with order.lock if ordered else contextlib.nullcontext():
            while True:
                leader = replicas.leader_of(topic, partition)[0]
                left = deadline - loop.time()
                if leader == worker.node_id:
                    if ordered and order.unacked and not await _wait(order.drained, left):
                        return ForwardResult(TIMED_OUT)
                    r = replicas.append(topic, partition, batch)
                    if r.error_code != NOT_LEADER:
                        break
                elif leader >= 0:
                    sent = await forwarder.send(leader, topic, partition, batch, acks or 1, max(left, 0.0))
                    if isinstance(sent, ForwardResult):
                        return sent
                    acked = sent
                    order.unacked += 1
                    order.drained.clear()
                    break
                elif replicas.image.topics.get(topic) is None:
                    return ForwardResult(int(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION))
                if left <= 0 or not await replicas.next_image(left):
                    return ForwardResult(NOT_LEADER)
        if acked is None:
            p = replicas.get(topic, partition)
            if not r.error_code and r.flush_offset >= 0 and acks == -1 and p is not None:
                code = await replicas.flusher.wait_durable(
                    p, r.flush_offset, max(deadline - loop.time(), 0.0)
                )
                return ForwardResult(code, -1 if code else r.base_offset, r.log_append_time)
            return ForwardResult(
                r.error_code, r.base_offset, r.log_append_time, r.error_message, r.record_errors
            )
        try:
            return await asyncio.wait_for(asyncio.shield(acked), max(deadline - loop.time(), 0.0))
        except TimeoutError:
            return ForwardResult(TIMED_OUT)
    finally:
        order.users -= 1
        if ordered:
            if acked is not None:
                acked.add_done_callback(lambda _: forwarder.acked(key, order))
            forwarder.release(key, order)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), max(timeout, 0.0))
    except TimeoutError:
        return False
    return True
