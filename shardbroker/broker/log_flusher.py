"""Flushes of the partitions this worker leads, and the acks=-1 waits on them.

What it owns: the executor threads (fdatasync releases the GIL) where flushes, and
log_manager.py's closes, hand-overs and checkpoints, run off the event loop. Per partition at
most one flush job runs (the log's group commit, storage/group_commit.py, merges concurrent
syncs) and at most one follow-up is queued behind it, whatever the number of requests waiting.

Durability (``flush.messages``, ``flush.ms``; default: never forced, as in Kafka): written data is
in the page cache, which survives a worker crash (SIGKILL) but not a host crash. ``acks=1`` is
answered once the batch is written; a flush the policy asks for is started, not waited for.
``acks=-1``: the in-sync replicas are this one, so the same, except that when the policy says a
flush is due after this append the answer waits for it (bounded by the request's
``timeout_ms``: REQUEST_TIMED_OUT otherwise). A failed flush takes the log offline:
KAFKA_STORAGE_ERROR (56) for that request and every later append.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from typing import Final

from shardbroker.broker.partition import Partition
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.errors import KafkaStorageError, StorageError

__all__ = ["LogFlusher"]

log = logging.getLogger(__name__)

#: Flush threads: fdatasync releases the GIL; group commit merges a partition's concurrent flushes.
FLUSH_THREADS: Final = 4

_NONE: Final = int(ErrorCode.NONE)


class LogFlusher:
    """Starts partitions' flushes in executor threads and answers who waits for them."""

    def __init__(self, node_id: int) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=FLUSH_THREADS, thread_name_prefix=f"flush-{node_id}"
        )

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True)

    def request_flush(self, p: Partition, offset: int) -> asyncio.Future[None]:
        """A future resolved once every offset below ``offset`` is durable (group commit in an
        executor thread; at most one job per partition runs, one more is queued behind it)."""
        loop = asyncio.get_running_loop()
        st = p.flush
        if p.log.recovery_point >= offset:
            done: asyncio.Future[None] = loop.create_future()
            done.set_result(None)
            return done
        if st.running is None:
            return self._start_flush(p, loop)
        if st.running_target >= offset:
            return st.running
        if st.follow_up is None:
            st.follow_up = loop.create_future()
        return st.follow_up

    def _start_flush(self, p: Partition, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        st = p.flush
        target = p.log.log_end_offset
        fut: asyncio.Future[None] = loop.create_future()
        st.running, st.running_target = fut, target
        job = loop.run_in_executor(self.executor, p.log.flush, target)

        def finished(job: asyncio.Future[int]) -> None:
            exc = job.exception()
            if exc is not None:
                log.error("flush of %s failed: %s", p, exc)
                p.published = None  # the row's offline flag goes up at the next tick
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: fire-and-forget flushes (acks=1) need no reader
            else:
                fut.set_result(None)
            st.running = None
            follow = st.follow_up
            if follow is not None:
                st.follow_up = None
                if exc is not None:
                    follow.set_exception(exc)
                    follow.exception()
                else:
                    nxt = self._start_flush(p, loop)
                    nxt.add_done_callback(lambda f: _chain(f, follow))

        job.add_done_callback(finished)
        return fut

    async def wait_durable(self, p: Partition, offset: int, timeout: float) -> int:
        """acks=-1: wait for the flush the policy asked for; the error code to answer with."""
        fut = self.request_flush(p, offset)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            return int(ErrorCode.REQUEST_TIMED_OUT)
        except KafkaStorageError:
            return int(ErrorCode.KAFKA_STORAGE_ERROR)
        except StorageError as exc:
            return exc.error_code
        return _NONE

    @staticmethod
    async def flushes_done(parts: list[Partition]) -> None:
        """Wait for the flush jobs of ``parts`` (before their files close or change hands)."""
        for p in parts:
            for fut in (p.flush.running, p.flush.follow_up):
                if fut is not None:
                    with contextlib.suppress(Exception):
                        await fut


def _chain(src: asyncio.Future[None], dst: asyncio.Future[None]) -> None:
    if dst.done():
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
        dst.exception()
    else:
        dst.set_result(None)
