"""The mirror's loop: source batches fetched, rewritten, produced to the target, positions kept.

Three threads (sockets release the GIL, and a fetch overlaps a produce):

- the *fetch* thread owns a :class:`SourceFetcher` and the fetch positions; it puts each Fetch
  round's partitions (batches and the position after them) on a bounded queue
  (:data:`QUEUE_ROUNDS` rounds, taken while fewer than :data:`PENDING_MAX_BYTES` are
  unacknowledged: backpressure when the target is slower);
- the *produce* thread owns the :class:`TargetProducer`; it keeps per partition the batches not
  yet acknowledged, in order, and sends the next unsent batch of every ready partition in one
  Produce per leader, with up to :data:`MAX_IN_FLIGHT` Produce requests unanswered (idempotent
  mode; 1 in exactly-once mode): the sequences keep a partition's batches in order on the
  target, and after a failed batch the answers to its partition's later ones are ignored
  (a per-partition epoch) and those batches sent again after it, so never reordered, never
  skipped, never duplicated. It records each acknowledged batch with the offset-sync writer and saves the
  positions (mirror_positions.py) every :data:`COMMIT_INTERVAL_S`, or, exactly-once, commits the
  transaction with them every :data:`TXN_INTERVAL_S` or :data:`TXN_MAX_BYTES`;
- the *main* thread syncs topics (topic_sync.py) every ``refresh.topics.interval.seconds``,
  resumes new partitions (mirror_positions.resume), updates the lag gauges and logs a one-line
  summary every :data:`PROGRESS_INTERVAL_S`.

Faults: an unreachable cluster, a retriable error: retried with backoff (50 ms doubling to
5 s) from where the partition stands. A batch the target refuses (MESSAGE_TOO_LARGE,
CORRUPT_MESSAGE, an authorization error...): one ERROR line naming the partition, the offset
and the error, the partition paused (``shardbroker_mirror_partitions_paused``) until the mirror
restarts, the others go on. A source topic deleted: no longer mirrored, its target topic kept.
A target topic deleted while mirrored: its partitions paused (topic_sync.py says why).
A fenced transactional id (another mirror took over) stops the mirror (exit 1).

Throughput (perf/bench_mirror.py, ``flock /tmp/shardbroker-bench.lock .venv/bin/python -m perf
mirror --records 8000000 --runs 3``: 100 B records, 4 partitions, two local brokers of 1 worker,
this 2-core VM shared with other work, 2026-12-05): the mirror 2.12 M records/s median
(2.06-2.29; timed from the process start, so ~0.5 s of start-up included), against the same
fetch code alone 23.3 M (21.6-27.8: ratio 0.091) and the same produce code alone, with no
fetch, 3.25 M (3.14-14.2, the first run on fresh brokers the fast one: ratio 0.65). The issue's
ratio >= 0.6 to fetch-only is out of reach here for a reason outside the mirror: the target's
appends cost 3.0 ms of worker CPU per MB (first touch of page cache on this VM,
perf/bench_record_sizes.py's docstring), so the target takes ~3.5-4 M records/s of these
batches while a Fetch of 1 MiB per partition is served by sendfile at ~20-27 M.

CPU per mirrored MB (same runs): mirror 1.88 ms (1.70-1.91) for the whole process, 1.02 ms
(1.00-1.07) once mirroring (start-up, mostly imports, is ~0.7 s of CPU), source worker 0.54 ms,
target worker 3.0 ms; peak RSS of the mirror 138 MB (another 3 runs the same day, busier VM:
1.97 M records/s, 2.3 ms, running 1.37 ms). Before (same command, same day, the
previous commit): 3.3 ms (3.26-3.48), running 2.41 ms (2.40-2.74), peak RSS 443 MB (427-467:
the produce thread took every queued round, so the fetch thread ran ahead unbounded), at the
about the same throughput (2.05 M, 1.80-2.16: the target bounds it). The saving (py-spy
record -r 200 --threads, samples of the mirror's threads): the fetch thread spent 207 of 302
samples allocating receive buffers (page faults on fresh memory), now reused
(client/receive_buffers.py, :data:`PENDING_MAX_BYTES`); the produce thread 68 of 277 in
joining the Produce request and 12 copying batches, now sent gathered (sendmsg of the header
and the batches' views) and rewritten in place. Left (436 samples of both threads): the
kernel's socket copies (recv_into, sendmsg: 252), the first ~10 buffers' fresh pages (78, once
per process) and the CRC (20).
Earlier steps: 1 MiB instead of 16 MiB partition fetches and no copy of a received frame
1.45 -> 1.65-1.9 M; 5 Produce requests in flight instead of 1: -> 2.0-2.1 M.

Offset translation: the produce thread tells the :class:`OffsetSyncWriter` (offset_syncs.py)
of every acknowledged batch and flushes it with every position save or transaction commit; a
:class:`CheckpointTask` (checkpoints.py) runs in a fourth thread when ``emit.checkpoints.enabled``
or ``sync.group.offsets.enabled``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_cluster import TopicPartition
from shardbroker.client.admin_partitions import LATEST
from shardbroker.client.connection import AdminClientError, KafkaApiError
from shardbroker.mirror.checkpoints import CheckpointTask
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.mirror.mirror_positions import (
    Position,
    PositionStore,
    encode_metadata,
    positions_group,
    resume,
)
from shardbroker.mirror.offset_syncs import OffsetSyncWriter
from shardbroker.mirror.source_fetcher import FetchedPartition, SourceFetcher
from shardbroker.mirror.target_producer import InFlight, OutBatch, Outcome, Result, TargetProducer
from shardbroker.mirror.topic_sync import TopicSync

__all__ = [
    "MirrorMaker",
]

log = logging.getLogger("shardbroker.mirror")

QUEUE_ROUNDS: Final = 4
COMMIT_INTERVAL_S: Final = 1.0
TXN_INTERVAL_S: Final = 0.1
TXN_MAX_BYTES: Final = 16 * 1024 * 1024
PROGRESS_INTERVAL_S: Final = 10.0
#: How often the lag gauges are set (a scrape every 5 s sees a fresh value); a paused partition's
#: source end is asked for then (ListOffsets), as it is no longer fetched.
LAG_INTERVAL_S: Final = 1.0
DRAIN_TIMEOUT_S: Final = 20.0
#: Produce requests written and not yet answered (idempotent mode): the target appends one while
#: the next is sent. Kafka's idempotent producer allows 5 per connection.
MAX_IN_FLIGHT: Final = 5
#: Fetched batches taken from the queue and not yet acknowledged, at most (then the queue fills
#: and the fetch thread waits): room for MAX_IN_FLIGHT 1 MiB batches of several partitions.
#: Without it the produce thread took every queued round and the fetch thread ran ahead
#: unbounded (the whole backlog in memory, none of its buffers reused).
PENDING_MAX_BYTES: Final = 32 * 1024 * 1024
_BACKOFF_MIN_S: Final = 0.05
_BACKOFF_MAX_S: Final = 5.0
_CLIENT_TIMEOUT_S: Final = 30.0


@dataclass
class _Entry:
    """A partition's next step in the produce thread: a batch, or (``batch`` None) a position
    advance over markers/aborted batches once everything before is acknowledged."""

    tp: TopicPartition
    batch: OutBatch | None
    next_offset: int
    #: written in a Produce not answered yet, in the partition's ``epoch`` at that time
    sent: bool = False
    epoch: int = 0


class _Backoff:
    def __init__(self) -> None:
        self.delay = _BACKOFF_MIN_S

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, _BACKOFF_MAX_S)
        return delay

    def reset(self) -> None:
        self.delay = _BACKOFF_MIN_S


class MirrorMaker:
    """One mirror, source -> target. :meth:`run` until ``stop`` is set, then drain."""

    def __init__(
        self,
        config: MirrorConfig,
        metrics: MirrorMetrics,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.group = positions_group(config.source.alias)
        self._lock = threading.Lock()
        self._queue: queue.Queue[list[FetchedPartition]] = queue.Queue(QUEUE_ROUNDS)
        #: source partitions handed to the fetch thread (next offset), not yet taken
        self._to_fetch: dict[TopicPartition, int] = {}
        #: source partitions mirrored, with their acknowledged position
        self._acked: dict[TopicPartition, Position] = {}
        self._ends: dict[TopicPartition, int] = {}
        self._paused: set[TopicPartition] = set()
        self._dropped: set[TopicPartition] = set()
        self._records = 0
        self._bytes = 0
        self._fetch_done = threading.Event()
        self._failure: BaseException | None = None

    # -- shared state ---------------------------------------------------------------------------

    def pause(self, tp: TopicPartition, why: str) -> None:
        with self._lock:
            if tp in self._paused:
                return
            self._paused.add(tp)
            count = len(self._paused)
        log.error("%s-%d paused: %s (the other partitions go on; restart the mirror to retry it)", *tp, why)
        self.metrics.set_paused(count)

    def _target_tp(self, tp: TopicPartition) -> TopicPartition:
        return (self.config.remote_topic(tp[0]), tp[1])

    # -- main thread ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> int:
        """Mirror until ``stop`` is set; 0 after the drain. Raises what stops the mirror early
        (a fenced transactional id)."""
        self.metrics.set_up(True)
        source, target = (
            self.config.source.admin("shardbroker-mirror-main", _CLIENT_TIMEOUT_S),
            self.config.target.admin("shardbroker-mirror-main", _CLIENT_TIMEOUT_S),
        )
        sync = TopicSync(self.config, source, target)
        # no long poll: resuming reads an end offset and the records before it
        resumers = (SourceFetcher(source, max_wait_ms=0), SourceFetcher(target, max_wait_ms=0))
        store = PositionStore(target, self.group)
        threads = [
            threading.Thread(
                target=self._guard(self._fetch_loop), args=(stop,), name="mirror-fetch", daemon=True
            ),
            threading.Thread(
                target=self._guard(self._produce_loop), args=(stop,), name="mirror-produce", daemon=True
            ),
        ]
        if self.config.emit_checkpoints_enabled or self.config.sync_group_offsets_enabled:
            task = CheckpointTask(self.config, self.metrics)
            threads.append(
                threading.Thread(target=task.run, args=(stop,), name="mirror-checkpoints", daemon=True)
            )
        started = False
        next_sync = next_configs = 0.0
        next_progress = time.monotonic() + PROGRESS_INTERVAL_S
        next_lag, lag = 0.0, (0, 0)
        backoff = _Backoff()
        last = (time.monotonic(), 0)
        try:
            while not stop.is_set() and self._failure is None:
                now = time.monotonic()
                if now >= next_sync:
                    try:
                        self._sync_topics(sync, store, resumers)
                        if self.config.sync_topic_configs_enabled and now >= next_configs:
                            if next_configs:
                                sync.sync_configs(sorted({t for t, _ in self._acked}))
                            next_configs = now + self.config.sync_topic_configs_interval_s
                        next_sync = now + (
                            self.config.refresh_topics_interval_s
                            if self.config.refresh_topics_enabled
                            else 1e12
                        )
                        backoff.reset()
                    except AdminClientError as exc:
                        self.metrics.error("topic_sync")
                        delay = backoff.next()
                        log.warning("topic sync failed (retrying in %.1f s): %s", delay, exc)
                        source.close()
                        target.close()
                        next_sync = now + delay
                    if not started and self._acked:
                        for t in threads:
                            t.start()
                        started = True
                if now >= next_lag:
                    lag = self._update_lag(source)
                    next_lag = now + LAG_INTERVAL_S
                if now >= next_progress:
                    last = self._progress(last, lag)
                    next_progress = now + PROGRESS_INTERVAL_S
                stop.wait(min(0.5, max(0.0, min(next_sync, next_progress, next_lag) - time.monotonic())))
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(DRAIN_TIMEOUT_S + 10)
            source.close()
            target.close()
            self._progress(last, lag)
            self.metrics.set_up(False)
        if self._failure is not None:
            raise self._failure
        return 0

    def _guard(self, loop: Callable[[threading.Event], None]) -> Callable[[threading.Event], None]:
        def run(stop: threading.Event) -> None:
            try:
                loop(stop)
            except BaseException as exc:
                self._failure = exc
                stop.set()

        return run

    def _sync_topics(
        self, sync: TopicSync, store: PositionStore, resumers: tuple[SourceFetcher, SourceFetcher]
    ) -> None:
        with self._lock:
            active = {t for t, _ in self._acked if (t, _) not in self._dropped}
        decided = sync.sync({self.config.remote_topic(t) for t in active})
        for remote, (topic, _) in decided.create.items():
            if topic in active:
                for p in range(decided.mirrored[topic]):
                    self.pause(
                        (topic, p),
                        f"target topic {remote} was deleted; it is created again on the next start",
                    )
        gone = sync.deleted_on_source(active - set(decided.mirrored))
        for topic in sorted(gone):
            deleting = self.config.sync_topic_deletions_enabled
            log.warning(
                "source topic %s is gone: no longer mirrored (target topic %s %s)",
                topic,
                self.config.remote_topic(topic),
                "deleted" if deleting else "kept",
            )
            if deleting:
                sync.delete_remote(topic)
            with self._lock:
                tps = [tp for tp in self._acked if tp[0] == topic]
                self._dropped.update(tps)
                for tp in tps:
                    del self._acked[tp]
                    self._ends.pop(tp, None)
            self.metrics.forget_topic(topic, len(tps))
        new = [
            (t, p) for t, count in decided.mirrored.items() for p in range(count) if (t, p) not in self._acked
        ]
        if not new:
            return
        committed = store.load([self._target_tp(tp) for tp in new])
        for tp in new:
            position = resume(tp, self._target_tp(tp), committed.get(self._target_tp(tp)), *resumers)
            with self._lock:
                self._dropped.discard(tp)
                self._acked[tp] = position
                self._to_fetch[tp] = position.source_offset
        log.info("mirroring %d new partitions of %s", len(new), ", ".join(sorted({t for t, _ in new})))

    def _update_lag(self, source: AdminClient) -> tuple[int, int]:
        """Set every partition's lag gauge: the source's end (from the fetches; asked for a
        paused partition) minus the next offset to mirror. Returns (total lag, partitions)."""
        with self._lock:
            paused = sorted(self._paused & self._acked.keys())
        if paused:
            try:
                ends = source.list_offsets({tp: LATEST for tp in paused})
            except AdminClientError as exc:  # the gauges keep their last value until it answers
                log.debug("end offsets of paused partitions: %s", exc)
            else:
                with self._lock:
                    self._ends.update(ends)
        with self._lock:
            lags = {
                tp: max(0, self._ends.get(tp, pos.source_offset) - pos.source_offset)
                for tp, pos in self._acked.items()
            }
        for tp, lag in lags.items():
            self.metrics.set_lag(tp[0], tp[1], lag)
        return sum(lags.values()), len(lags)

    def _progress(self, last: tuple[float, int], lag: tuple[int, int]) -> tuple[float, int]:
        now = time.monotonic()
        with self._lock:
            records, paused = self._records, len(self._paused)
        rate = (records - last[1]) / max(now - last[0], 1e-9)
        log.info(
            "mirrored %d records (%.0f records/s), lag %d records over %d partitions, %d paused",
            records,
            rate,
            lag[0],
            lag[1],
            paused,
        )
        return now, records

    # -- fetch thread ---------------------------------------------------------------------------

    def _fetch_loop(self, stop: threading.Event) -> None:
        admin = self.config.source.admin("shardbroker-mirror-fetch", _CLIENT_TIMEOUT_S)
        fetcher = SourceFetcher(admin)
        positions: dict[TopicPartition, int] = {}
        backoff = _Backoff()
        try:
            while not stop.is_set():
                with self._lock:
                    positions.update(self._to_fetch)
                    self._to_fetch.clear()
                    for tp in self._paused | self._dropped:
                        positions.pop(tp, None)
                if not positions:
                    stop.wait(0.1)
                    continue
                try:
                    answers = fetcher.fetch(positions)
                except AdminClientError as exc:  # e.g. ListOffsets after OFFSET_OUT_OF_RANGE
                    self.metrics.error("fetch")
                    delay = backoff.next()
                    log.warning("fetching from the source failed (retrying in %.1f s): %s", delay, exc)
                    stop.wait(delay)
                    continue
                round_: list[FetchedPartition] = []
                failed = 0
                for a in answers:
                    if a.error is not None:
                        failed += 1
                        self.metrics.error("fetch")
                        if not (
                            a.error.retriable or a.error.name in ("UNKNOWN_TOPIC_ID", "NETWORK_EXCEPTION")
                        ):
                            self.pause(
                                a.tp, f"the source refused Fetch at offset {positions[a.tp]}: {a.error}"
                            )
                        continue
                    assert a.selection is not None
                    if a.reset_to is not None:
                        log.warning(
                            "%s-%d: records %d..%d were deleted at the source before they were mirrored",
                            a.topic,
                            a.partition,
                            positions[a.tp],
                            a.reset_to - 1,
                        )
                    with self._lock:
                        self._ends[a.tp] = a.end_offset
                    if a.selection.next_position > positions[a.tp]:
                        positions[a.tp] = a.selection.next_position
                        round_.append(a)
                if round_:
                    while not stop.is_set():
                        try:
                            self._queue.put(round_, timeout=0.1)
                            break
                        except queue.Full:
                            continue
                if failed and failed == len(answers):
                    delay = backoff.next()
                    if delay >= 1:
                        log.warning(
                            "fetching from the source failed (retrying in %.1f s): %s",
                            delay,
                            answers[0].error,
                        )
                    stop.wait(delay)
                else:
                    backoff.reset()
        finally:
            admin.close()
            self._fetch_done.set()

    # -- produce thread -------------------------------------------------------------------------

    def _produce_loop(self, stop: threading.Event) -> None:
        admin = self.config.target.admin("shardbroker-mirror-produce", _CLIENT_TIMEOUT_S)
        tid = (
            f"shardbroker-mirror-{self.config.source.alias}-{self.config.target.alias}"
            if self.config.exactly_once
            else None
        )
        # a transaction's commit needs every Produce answered: one at a time there
        limit = MAX_IN_FLIGHT if tid is None else 1
        # leaders and positions on connections of their own: Produce requests are pipelined on
        # admin's, and another request there would read their answers
        side = self.config.target.admin("shardbroker-mirror-positions", _CLIENT_TIMEOUT_S)
        producer = TargetProducer(admin, transactional_id=tid, metadata=side)
        store = PositionStore(side, self.group)
        syncs = OffsetSyncWriter(self.config, self.metrics)
        pending: dict[TopicPartition, deque[_Entry]] = {}
        retry_at: dict[TopicPartition, float] = {}
        backoffs: dict[TopicPartition, _Backoff] = {}
        epochs: dict[TopicPartition, int] = {}  # bumped by a failure: later answers are stale
        inflight: deque[tuple[InFlight, dict[int, _Entry]]] = deque()
        resets: list[Result] = []  # handled once nothing is in flight
        dirty: dict[TopicPartition, Position] = {}  # acknowledged, not yet saved
        in_txn: dict[TopicPartition, list[_Entry]] = {}
        txn_bytes = 0
        last_commit = time.monotonic()
        self._reset_producer(producer, stop)
        drain_deadline: float | None = None
        try:
            while True:
                if stop.is_set() and drain_deadline is None:
                    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
                idle = not inflight and not any(pending.values())
                ready = [] if resets else self._take(pending, retry_at, limit, block=idle)
                if drain_deadline is not None and (
                    time.monotonic() > drain_deadline
                    or (self._fetch_done.is_set() and self._queue.empty() and not any(pending.values()))
                ):
                    break
                heads = [e for e in ready if e.batch is not None]
                if heads and len(inflight) < limit:
                    epoch = epochs.get
                    for e in heads:
                        e.sent, e.epoch = True, epoch(e.tp, 0)
                    batches = [e.batch for e in heads if e.batch is not None]
                    inflight.append((producer.send(batches), {id(e.batch): e for e in heads}))
                elif inflight:
                    window, entries = inflight.popleft()
                    for r in producer.receive(window):
                        tp = r.batch.source_tp
                        e = entries[id(r.batch)]
                        q = pending.get(tp)
                        if not (q and q[0] is e and e.sent and e.epoch == epochs.get(tp, 0)):
                            continue  # answered after an earlier batch of its partition failed
                        if r.outcome is Outcome.WRITTEN:
                            q.popleft()
                            backoffs.pop(tp, None)
                            dirty[tp] = self._written(tp, r, syncs)
                            txn_bytes += r.batch.source.data.nbytes
                            if tid is not None:
                                in_txn.setdefault(tp, []).append(e)
                            continue
                        epochs[tp] = epochs.get(tp, 0) + 1
                        for x in q:
                            x.sent = False
                        if r.outcome is Outcome.RETRY:
                            self.metrics.error("produce_retriable")
                            delay = backoffs.setdefault(tp, _Backoff()).next()
                            retry_at[tp] = time.monotonic() + delay
                            if delay >= 1:
                                log.warning("%s-%d: retrying in %.1f s: %s", *r.batch.tp, delay, r.error)
                        elif r.outcome is Outcome.RESET:
                            self.metrics.error("producer_reset")
                            resets.append(r)
                        else:
                            self.metrics.error("refused")
                            offset = r.batch.source.base_offset
                            self.pause(
                                tp, f"the target refused the batch at source offset {offset}: {r.error}"
                            )
                            pending.pop(tp, None)
                elif resets:
                    self._after_resets(producer, stop, resets, pending, dirty, in_txn, syncs)
                    resets.clear()
                elif not ready:
                    time.sleep(0.005)  # every partition with data is backing off
                for e in ready:
                    if e.batch is None and pending.get(e.tp) and pending[e.tp][0] is e:
                        pending[e.tp].popleft()
                        with self._lock:
                            acked = self._acked.get(e.tp)
                            if acked is not None:
                                self._acked[e.tp] = dirty[e.tp] = Position(e.next_offset, acked.target_offset)
                now = time.monotonic()
                if tid is not None:
                    if (
                        dirty
                        and not inflight
                        and (now - last_commit >= TXN_INTERVAL_S or txn_bytes >= TXN_MAX_BYTES)
                    ):
                        self._commit_txn(producer, dirty, syncs)
                        in_txn.clear()
                        dirty.clear()
                        txn_bytes, last_commit = 0, now
                elif dirty and now - last_commit >= COMMIT_INTERVAL_S:
                    self._save(store, dirty, syncs)
                    last_commit = now
        finally:
            try:
                if tid is not None and dirty and not inflight:
                    self._commit_txn(producer, dirty, syncs)
                elif tid is None and dirty:
                    self._save(store, dirty, syncs)
            finally:
                admin.close()
                side.close()

    def _after_resets(
        self,
        producer: TargetProducer,
        stop: threading.Event,
        resets: list[Result],
        pending: dict[TopicPartition, deque[_Entry]],
        dirty: dict[TopicPartition, Position],
        in_txn: dict[TopicPartition, list[_Entry]],
        syncs: OffsetSyncWriter,
    ) -> None:
        """OUT_OF_ORDER_SEQUENCE_NUMBER & co., nothing in flight: a batch whose answer was lost
        but which landed is acknowledged; otherwise a new producer id (every sequence from 0)."""
        renew = False
        for r in resets:
            tp = r.batch.source_tp
            q = pending.get(tp)
            if not q or q[0].batch is not r.batch:
                continue
            if self._was_written(producer, r, tp):
                entry = q.popleft()
                dirty[tp] = self._written(tp, r, syncs)
                if producer.transactional:
                    in_txn.setdefault(tp, []).append(entry)
            else:
                log.warning("%s-%d: %s; starting a new producer id", *r.batch.tp, r.error)
                renew = True
        if renew:
            if producer.transactional:
                self._abort(producer, pending, in_txn)
                dirty.clear()
            self._reset_producer(producer, stop)

    def _take(
        self,
        pending: dict[TopicPartition, deque[_Entry]],
        retry_at: dict[TopicPartition, float],
        limit: int,
        *,
        block: bool,
    ) -> list[_Entry]:
        """Move fetched rounds into ``pending`` (up to :data:`PENDING_MAX_BYTES`); of every
        partition ready to send, the first entry not sent yet, if fewer than ``limit`` are in
        flight before it (a position advance only with nothing before it)."""
        rounds: list[list[FetchedPartition]] = []
        held = sum(e.batch.source.data.nbytes for q in pending.values() for e in q if e.batch is not None)
        try:
            while held < PENDING_MAX_BYTES:
                round_ = self._queue.get(timeout=0.05) if block and not rounds else self._queue.get_nowait()
                rounds.append(round_)
                held += sum(a.selection.nbytes for a in round_ if a.selection is not None)
        except queue.Empty:
            pass
        with self._lock:
            skip = self._paused | self._dropped
        for round_ in rounds:
            for a in round_:
                if a.tp in skip or a.selection is None:
                    continue
                q = pending.setdefault(a.tp, deque())
                target_tp = self._target_tp(a.tp)
                for b in a.selection.batches:
                    q.append(_Entry(a.tp, OutBatch(target_tp, b, a.tp, a.fetched_at), b.next_offset))
                last = a.selection.batches[-1].next_offset if a.selection.batches else a.selection.start
                if a.selection.next_position > last:
                    q.append(_Entry(a.tp, None, a.selection.next_position))
        now = time.monotonic()
        ready = []
        for tp, q in list(pending.items()):
            if tp in skip:
                del pending[tp]
            elif q and retry_at.get(tp, 0.0) <= now:
                sent = 0
                while sent < len(q) and q[sent].sent:
                    sent += 1
                if sent < min(limit, len(q)) and (sent == 0 or q[sent].batch is not None):
                    ready.append(q[sent])
        return ready

    def _written(self, tp: TopicPartition, r: Result, syncs: OffsetSyncWriter) -> Position:
        src = r.batch.source
        with self._lock:
            before = self._acked.get(tp)
            base = r.base_offset if r.base_offset >= 0 else (before.target_offset if before else 0)
            position = Position(src.next_offset, base + src.records)
            if before is not None:
                self._acked[tp] = position
            self._records += src.records
            self._bytes += src.data.nbytes
        latency = time.time() - (src.max_timestamp / 1000 if src.log_append_time else r.batch.fetched_at)
        self.metrics.batch_mirrored(tp[0], src.records, src.data.nbytes, latency)
        # The batch's last offset on each side: a group that read the whole batch translates to
        # just past its copy (the first record would have it read the batch again at a cut-over).
        # Past a compacted-away last record, the target's last record is an earlier source
        # record's copy: a re-read, never a skip.
        syncs.record(tp[0], tp[1], src.next_offset - 1, position.target_offset - 1)
        return position

    def _was_written(self, producer: TargetProducer, r: Result, tp: TopicPartition) -> bool:
        """After OUT_OF_ORDER_SEQUENCE_NUMBER & co.: did the batch land (its answer lost)? Only
        this mirror writes the partition, so the end offset tells."""
        with self._lock:
            before = self._acked.get(tp)
        if before is None:
            return False
        end = producer.cluster.list_offsets({r.batch.tp: LATEST})[r.batch.tp]
        return end >= before.target_offset + r.batch.source.records

    def _reset_producer(self, producer: TargetProducer, stop: threading.Event) -> None:
        backoff = _Backoff()
        while True:
            try:
                producer.reset()
                return
            except AdminClientError as exc:
                if isinstance(exc, KafkaApiError) and not exc.retriable:
                    raise
                delay = backoff.next()
                log.warning("InitProducerId on the target failed (retrying in %.1f s): %s", delay, exc)
                if stop.wait(delay):
                    raise

    def _save(
        self, store: PositionStore, dirty: dict[TopicPartition, Position], syncs: OffsetSyncWriter
    ) -> None:
        try:
            syncs.flush()
            store.commit({self._target_tp(tp): p for tp, p in dirty.items()})
            dirty.clear()
        except AdminClientError as exc:
            self.metrics.error("commit")
            log.warning("saving the mirror's positions failed (retried): %s", exc)

    def _commit_txn(
        self, producer: TargetProducer, dirty: dict[TopicPartition, Position], syncs: OffsetSyncWriter
    ) -> None:
        producer.commit(
            self.group,
            {
                self._target_tp(tp): (p.source_offset, encode_metadata(p.target_offset))
                for tp, p in dirty.items()
            },
        )
        syncs.flush()

    def _abort(
        self,
        producer: TargetProducer,
        pending: dict[TopicPartition, deque[_Entry]],
        in_txn: dict[TopicPartition, list[_Entry]],
    ) -> None:
        """Abort the open transaction and put its batches back in front of their partitions."""
        producer.abort()
        for tp, entries in in_txn.items():
            pending.setdefault(tp, deque()).extendleft(reversed(entries))
        in_txn.clear()
