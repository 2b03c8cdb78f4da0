"""The transaction coordinator of one worker (Kafka's TransactionCoordinator): the entry points of
InitProducerId (with a transactional id), AddPartitionsToTxn, AddOffsetsToTxn and EndTxn, the
markers, the timers, and the creation of ``__transaction_state``.

A transactional id is coordinated by the worker leading its ``__transaction_state`` partition
(transaction_state_manager.py). Each call checks that (NOT_COORDINATOR,
COORDINATOR_LOAD_IN_PROGRESS otherwise), takes the decision of the state machine
(transaction_metadata.py) and answers once the record of the transition is in the log.

EndTxn (Kafka's two-phase commit): the PrepareCommit/PrepareAbort record is written, the client
is answered, then the COMMIT/ABORT markers go to every partition of the transaction
(txn_markers.py: appended here, or through the rings to the worker leading the partition),
retried while partitions move, and the CompleteCommit/CompleteAbort record ends it. Meanwhile
the id answers CONCURRENT_TRANSACTIONS. A Prepare record found when a partition is loaded
(restart, kill -9, move) is finished the same way, so a commit is never lost once answered.

``__transaction_state`` (``transaction.state.log.num.partitions``, ``cleanup.policy=compact``)
is created, as by Kafka, by the first FindCoordinator of a transactional id that finds it missing.

Timers: every ``transaction.abort.timed.out.transaction.cleanup.interval.ms`` the Ongoing
transactions past their ``transaction.timeout.ms`` are aborted (the epoch is bumped first, so
the late producer is fenced: Kafka's abortTimedOutTransactions); every
``transaction.remove.expired.transaction.cleanup.interval.ms`` idle ids expire.

Metrics (ipc/counters.py): a transaction is counted once, when its end is decided (the Prepare
record is written), by how it ended (commit, abort, timeout, fenced) with its duration from its
first partition to that decision; a Prepare finished after a reload is not counted again. The
number of open transactions (Ongoing, PrepareCommit, PrepareAbort) is published each 1 s tick.

DescribeTransactions/ListTransactions read the ids of this worker's partitions (Kafka's
handleDescribeTransactions, listTransactionStates): each worker answers for its own, as each
Kafka broker does, so a client asks every node.

Not here yet (issue 16): TxnOffsetCommit (the offsets of AddOffsetsToTxn are not held pending
until the marker), KIP-890 part 2 (EndTxn v5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final

from shardbroker.broker.group_coordinator import ensure_internal_topic
from shardbroker.broker.group_metadata_manager import partition_for
from shardbroker.broker.transaction_metadata import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
    needs_new_producer_id,
    prepare_add_partitions,
    prepare_complete,
    prepare_end_transaction,
    prepare_end_transaction_v2,
    prepare_init_producer_id,
)
from shardbroker.broker.transaction_state_manager import TRANSACTION_STATE_TOPIC, TransactionStateManager
from shardbroker.broker.txn_markers import RETRIABLE_MARKER_ERRORS, MarkerWriter, TxnMarker
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import (
    TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS,
    TRANSACTION_MAX_TIMEOUT_MS,
    TRANSACTION_REMOVE_EXPIRED_TRANSACTION_CLEANUP_INTERVAL_MS,
    TRANSACTION_STATE_LOG_NUM_PARTITIONS,
    TRANSACTION_STATE_LOG_SEGMENT_BYTES,
    TRANSACTIONAL_ID_EXPIRATION_MS,
)
from shardbroker.ipc import counters as ctr
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol.errors import ErrorCode

if TYPE_CHECKING:
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.supervision.worker import Worker

__all__ = ["TransactionCoordinator"]

log = logging.getLogger(__name__)

_NONE: Final = int(ErrorCode.NONE)
_NOT_AVAILABLE: Final = int(ErrorCode.COORDINATOR_NOT_AVAILABLE)
_CONCURRENT: Final = int(ErrorCode.CONCURRENT_TRANSACTIONS)
_MAPPING: Final = int(ErrorCode.INVALID_PRODUCER_ID_MAPPING)
_FENCED: Final = int(ErrorCode.PRODUCER_FENCED)
#: Seconds one round of markers may take before the unanswered ones are sent again.
MARKER_TIMEOUT_S: Final = 30.0
#: Pause between rounds of markers when some partition had no leader or moved.
MARKER_RETRY_S: Final = 0.1

TopicPartition = tuple[str, int]


class TransactionCoordinator:
    """Transactional ids of the ``__transaction_state`` partitions this worker leads (a Service)."""

    def __init__(
        self,
        node_id: int,
        config: BrokerConfig,
        channel: Any,
        replicas: ReplicaManager,
        markers: MarkerWriter,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id
        self.channel = channel
        self.replicas = replicas
        self.markers = markers
        self.max_timeout_ms = config.get(TRANSACTION_MAX_TIMEOUT_MS)
        self.num_partitions = config.get(TRANSACTION_STATE_LOG_NUM_PARTITIONS)
        self.segment_bytes = config.get(TRANSACTION_STATE_LOG_SEGMENT_BYTES)
        self.abort_interval_s = config.get(TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS) / 1000
        self.expire_interval_s = config.get(TRANSACTION_REMOVE_EXPIRED_TRANSACTION_CLEANUP_INTERVAL_MS) / 1000
        self.state = TransactionStateManager(
            self.node_id,
            self.channel,
            self.replicas,
            num_partitions=self.num_partitions,
            expiration_ms=config.get(TRANSACTIONAL_ID_EXPIRATION_MS),
            wall_clock=wall_clock,
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._create_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self, worker: Worker | None = None) -> None:
        self._resume(self.state.sync_partitions(self.channel.image))
        self.channel.subscribe(self._on_image)
        self.replicas.add_publisher(self.publish_metrics)
        self._spawn(self._every(self.abort_interval_s, self.abort_timed_out_transactions))
        self._spawn(self._every(self.expire_interval_s, self._expire))

    async def drain(self) -> None:
        """Stop the timers and marker rounds; what is in the log is finished by the next load."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        self.state.clear()

    def publish_metrics(self) -> None:
        """The open transactions' gauge (the worker's 1 s tick)."""
        ongoing = sum(md.has_pending_transaction for md in self.state.transactions.values())
        self.replicas.counters.set_transactions_ongoing(ongoing)

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if not self._closed:
            self._resume(self.state.sync_partitions(new))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _resume(self, transactional_ids: list[str]) -> None:
        """Finish the transactions a load found prepared (markers, then the Complete record)."""
        for tid in transactional_ids:
            md = self.state.transactions.get(tid)
            epoch = self.state.coordinator_epoch(tid)
            if md is not None and epoch is not None:
                commit = md.state == TransactionState.PREPARE_COMMIT
                self._spawn(self._complete(tid, epoch, md.producer_id, md.producer_epoch, commit))

    async def _every(self, interval_s: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except Exception:
                log.exception("transaction coordinator timer")

    # ------------------------------------------------------------------ routing

    def coordinator_of(self, transactional_id: str) -> tuple[int, int]:
        """``(error code, node id)`` of the coordinator of ``transactional_id`` (FindCoordinator)."""
        topic = self.state.topic()
        if topic is None or not topic.partitions:
            return _NOT_AVAILABLE, -1
        part = topic.partitions[partition_for(transactional_id, len(topic.partitions))]
        return (_NONE, part.leader) if part.leader >= 0 else (_NOT_AVAILABLE, -1)

    def check(self, transactional_id: str) -> int:
        """NONE if this worker coordinates ``transactional_id`` now, else why not."""
        if self._closed:
            return int(ErrorCode.NOT_COORDINATOR)
        topic = self.state.topic()
        if topic is None or not topic.partitions:
            return _NOT_AVAILABLE
        index = partition_for(transactional_id, len(topic.partitions))
        part = topic.partitions[index]
        if part.leader != self.node_id:
            return int(ErrorCode.NOT_COORDINATOR)
        if self.state.owned.get(index) != part.leader_epoch:
            if self.replicas.get(TRANSACTION_STATE_TOPIC, index) is None:
                return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
            self._resume(self.state.sync_partitions(self.channel.image))  # opened since the image came
            if self.state.owned.get(index) != part.leader_epoch:
                return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS)
        return _NONE

    async def ensure_topic(self) -> int:
        """Create ``__transaction_state`` if it does not exist; NONE once it does."""
        return await ensure_internal_topic(
            self.channel,
            self.node_id,
            TRANSACTION_STATE_TOPIC,
            self.num_partitions,
            self.segment_bytes,
            self._create_lock,
        )

    # ------------------------------------------------------------------ InitProducerId

    async def init_producer_id(
        self, transactional_id: str, timeout_ms: int, expected: tuple[int, int] | None
    ) -> tuple[int, int, int]:
        """``(error code, producer id, epoch)``. ``expected``: KIP-360's producer id and epoch."""
        fail = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        if not 0 < timeout_ms <= self.max_timeout_ms:
            return (int(ErrorCode.INVALID_TRANSACTION_TIMEOUT), *fail)
        code = self.check(transactional_id)
        if code != _NONE:
            return (code, *fail)
        new_pid: int | None = None
        md = self.state.transactions.get(transactional_id)
        if md is None or needs_new_producer_id(md, expected):
            try:
                new_pid = await self.replicas.allocate_producer_id()
            except Exception as exc:  # ControllerUnavailable, or a malformed answer
                log.warning("worker %d: no producer id block: %s", self.node_id, exc)
                return (_NOT_AVAILABLE, *fail)
            code = self.check(transactional_id)  # the world may have moved while we waited
            if code != _NONE:
                return (code, *fail)
            md = self.state.transactions.get(transactional_id)
            if md is None:
                md = TransactionMetadata(
                    transactional_id,
                    new_pid,
                    NO_PRODUCER_ID,
                    NO_PRODUCER_EPOCH,
                    NO_PRODUCER_EPOCH,
                    timeout_ms,
                    TransactionState.EMPTY,
                    last_update_timestamp=self.state.wall_ms(),
                )
                self.state.transactions[transactional_id] = md
        coordinator_epoch = self.state.coordinator_epoch(transactional_id)
        assert coordinator_epoch is not None
        result = prepare_init_producer_id(md, timeout_ms, expected, new_pid, self.state.wall_ms())
        if isinstance(result, int):
            return (result, *fail)
        if result.state == TransactionState.PREPARE_EPOCH_FENCE:
            # Abort the open transaction at the bumped epoch; the client retries and then gets
            # the epoch bumped once more (or a new producer id if that exhausted the epochs).
            code = await self._end_transaction(
                transactional_id,
                result.producer_id,
                result.producer_epoch,
                commit=False,
                from_client=False,
                outcome=ctr.TXN_FENCED,
            )
            return (code if code != _NONE else _CONCURRENT, *fail)
        code = await self.state.append(transactional_id, coordinator_epoch, result)
        if code != _NONE:
            return (code, *fail)
        log.info(
            "worker %d: initialized transactional id %r: producer id %d, epoch %d",
            self.node_id,
            transactional_id,
            result.producer_id,
            result.producer_epoch,
        )
        return _NONE, result.producer_id, result.producer_epoch

    # ------------------------------------------------------------------ AddPartitions / AddOffsets

    async def add_partitions(
        self, transactional_id: str, producer_id: int, epoch: int, partitions: set[TopicPartition]
    ) -> int:
        """AddPartitionsToTxn (and AddOffsetsToTxn: its group's ``__consumer_offsets`` partition)."""
        code = self.check(transactional_id)
        if code != _NONE:
            return code
        md = self.state.transactions.get(transactional_id)
        if md is None:
            return _MAPPING
        result = prepare_add_partitions(md, producer_id, epoch, partitions, self.state.wall_ms())
        if isinstance(result, int):
            return result
        coordinator_epoch = self.state.coordinator_epoch(transactional_id)
        assert coordinator_epoch is not None
        return await self.state.append(transactional_id, coordinator_epoch, result)

    def verify_partitions(
        self, transactional_id: str, producer_id: int, epoch: int, partitions: set[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """AddPartitionsToTxn v4+ ``verify_only`` (KIP-890 part 1): per partition, NONE if it is
        in the Ongoing transaction of this producer, else why not; nothing is written."""
        code = self.check(transactional_id)
        md = self.state.transactions.get(transactional_id)
        if code == _NONE:
            if md is None or md.producer_id != producer_id:
                code = _MAPPING
            elif md.producer_epoch != epoch:
                code = _FENCED
            elif md.pending or md.state in (TransactionState.PREPARE_COMMIT, TransactionState.PREPARE_ABORT):
                code = _CONCURRENT
        if code != _NONE or md is None:
            return dict.fromkeys(partitions, code)
        invalid = int(ErrorCode.INVALID_TXN_STATE)
        ongoing = md.state == TransactionState.ONGOING
        return {tp: _NONE if ongoing and tp in md.partitions else invalid for tp in partitions}

    # ------------------------------------------------------------------ EndTxn

    async def end_txn(self, transactional_id: str, producer_id: int, epoch: int, commit: bool) -> int:
        """EndTxn v0-v4 (transactions v1): the error code."""
        outcome = ctr.TXN_COMMIT if commit else ctr.TXN_ABORT
        return await self._end_transaction(
            transactional_id, producer_id, epoch, commit=commit, from_client=True, outcome=outcome
        )

    async def end_txn_v2(
        self, transactional_id: str, producer_id: int, epoch: int, commit: bool
    ) -> tuple[int, int, int]:
        """EndTxn v5 (KIP-890 part 2): ``(error code, producer id, epoch)`` the producer goes on
        with: the bumped epoch, or the next producer id at epoch 0 once the epoch is exhausted
        (Kafka answers the old id at the exhausted epoch there and lets the next InitProducerId
        sort it out; the id the coordinator moves to is what the client needs)."""
        fail = (NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        code = self.check(transactional_id)
        md = self.state.transactions.get(transactional_id)
        if code != _NONE or md is None:
            return (code if code != _NONE else _MAPPING, *fail)
        next_pid = NO_PRODUCER_ID
        if md.epoch_exhausted and md.producer_id == producer_id and md.producer_epoch == epoch:
            try:
                next_pid = await self.replicas.allocate_producer_id()
            except Exception as exc:  # ControllerUnavailable, or a malformed answer
                log.warning("worker %d: no producer id block: %s", self.node_id, exc)
                return (_NOT_AVAILABLE, *fail)
            code = self.check(transactional_id)
            if code != _NONE or self.state.transactions.get(transactional_id) is not md:
                return (code if code != _NONE else _CONCURRENT, *fail)
        result = prepare_end_transaction_v2(md, producer_id, epoch, commit, self.state.wall_ms(), next_pid)
        if result == _NONE:  # a retry of an end that is done
            return _NONE, md.producer_id, md.producer_epoch
        if isinstance(result, int):
            return (result, *fail)
        code = await self._write_prepare(transactional_id, md, result, commit, fencing=False)
        if code != _NONE:
            return (code, *fail)
        if md.next_producer_id != NO_PRODUCER_ID:
            return _NONE, md.next_producer_id, 0
        return _NONE, md.producer_id, md.producer_epoch

    async def _end_transaction(
        self,
        transactional_id: str,
        producer_id: int,
        epoch: int,
        *,
        commit: bool,
        from_client: bool,
        outcome: int,
    ) -> int:
        """Write PrepareCommit/PrepareAbort, start the markers, answer (Kafka's endTransaction);
        ``outcome``: how the metrics count it (`ctr.TXN_RESULTS`)."""
        code = self.check(transactional_id)
        md = self.state.transactions.get(transactional_id)
        if code != _NONE or md is None:
            if md is not None and md.pending_state == TransactionState.PREPARE_EPOCH_FENCE:
                md.abort_pending()
            return code if code != _NONE else _MAPPING
        fencing = md.pending_state == TransactionState.PREPARE_EPOCH_FENCE
        result = prepare_end_transaction(md, producer_id, epoch, commit, from_client, self.state.wall_ms())
        if isinstance(result, int):
            if md.pending_state == TransactionState.PREPARE_EPOCH_FENCE:
                md.abort_pending()
            return result
        return await self._write_prepare(transactional_id, md, result, commit, fencing, outcome)

    async def _write_prepare(
        self,
        transactional_id: str,
        md: TransactionMetadata,
        result: TxnTransitMetadata,
        commit: bool,
        fencing: bool,
        outcome: int | None = None,
    ) -> int:
        """Append the PrepareCommit/PrepareAbort record, count the end, start the markers."""
        coordinator_epoch = self.state.coordinator_epoch(transactional_id)
        assert coordinator_epoch is not None
        started_ms = md.start_timestamp
        code = await self.state.append(transactional_id, coordinator_epoch, result)
        if code != _NONE:
            if fencing:
                md.has_failed_epoch_fence = True  # the bumped epoch was never handed out
            return code
        seconds = max(0, result.last_update_timestamp - started_ms) / 1000
        if outcome is None:
            outcome = ctr.TXN_COMMIT if commit else ctr.TXN_ABORT
        self.replicas.counters.transaction_ended(outcome, seconds)
        self._spawn(
            self._complete(transactional_id, coordinator_epoch, md.producer_id, md.producer_epoch, commit)
        )
        return _NONE

    async def _complete(
        self, transactional_id: str, coordinator_epoch: int, producer_id: int, epoch: int, commit: bool
    ) -> None:
        """Write the markers into every partition of the prepared transaction (again, for those
        that failed, while this worker still coordinates it), then the Complete record."""
        md = self.state.transactions.get(transactional_id)
        if md is None:
            return
        todo = set(md.partitions)
        marker = TxnMarker(producer_id, epoch, coordinator_epoch, commit, md.client_transaction_version)
        while todo:
            if self._closed or self.state.transactions.get(transactional_id) is not md:
                return
            if self.state.coordinator_epoch(transactional_id) != coordinator_epoch:
                return  # resigned: the next coordinator finishes it from the log
            topics = self.replicas.image.topics
            gone = {(t, p) for t, p in todo if t not in topics or topics[t].partition(p) is None}
            if gone:
                log.info(
                    "transaction %r: no marker for deleted partitions %s", transactional_id, sorted(gone)
                )
                todo -= gone
            codes = await self.markers.write_all(todo, marker, MARKER_TIMEOUT_S)
            for tp, code in codes.items():
                if code == _NONE:
                    todo.discard(tp)
                elif code in (
                    int(ErrorCode.INVALID_PRODUCER_EPOCH),
                    int(ErrorCode.TRANSACTION_COORDINATOR_FENCED),
                ):
                    # Kafka's marker handler stops here too: a newer coordinator or epoch wrote.
                    log.warning(
                        "transaction %r: marker for %s refused (%d): stopped", transactional_id, tp, code
                    )
                    return
                elif code not in RETRIABLE_MARKER_ERRORS:
                    log.warning(
                        "transaction %r: marker for %s: error %d, retrying", transactional_id, tp, code
                    )
            if todo:
                await asyncio.sleep(MARKER_RETRY_S)
        result = prepare_complete(md, producer_id, epoch, commit, self.state.wall_ms())
        if isinstance(result, int):
            log.info("transaction %r: not completed: error %d", transactional_id, result)
            return
        code = await self.state.append(transactional_id, coordinator_epoch, result)
        if code != _NONE:
            log.warning(
                "transaction %r: writing %s failed: %d", transactional_id, result.state.kafka_name, code
            )

    # ------------------------------------------------------------------ describe, list

    def describe(self, transactional_id: str) -> tuple[int, TransactionMetadata | None]:
        """``(error, metadata)`` of one id (Kafka's handleDescribeTransactions): NOT_COORDINATOR
        or COORDINATOR_LOAD_IN_PROGRESS as `check`, TRANSACTIONAL_ID_NOT_FOUND for an unknown or
        Dead id, INVALID_REQUEST for an empty one."""
        if self._closed:
            return _NOT_AVAILABLE, None
        if not transactional_id:
            return int(ErrorCode.INVALID_REQUEST), None
        code = self.check(transactional_id)
        if code != _NONE:
            return code, None
        md = self.state.transactions.get(transactional_id)
        if md is None or md.state == TransactionState.DEAD:
            return int(ErrorCode.TRANSACTIONAL_ID_NOT_FOUND), None
        return _NONE, md

    def list_transactions(
        self, producer_ids: set[int], states: set[str], duration_ms: int = -1
    ) -> tuple[int, list[str], list[TransactionMetadata]]:
        """``(error, unknown state filters, matching ids)`` (Kafka's listTransactionStates): Dead
        ids never; an empty filter matches all (so does one of only unknown states, as in Kafka);
        ``duration_ms`` >= 0 keeps the transactions started more than that long ago.
        COORDINATOR_LOAD_IN_PROGRESS while a partition led here is not loaded yet."""
        if self._closed:
            return _NOT_AVAILABLE, [], []
        if set(self.state.led(self.channel.image).items()) - set(self.state.owned.items()):
            return int(ErrorCode.COORDINATOR_LOAD_IN_PROGRESS), [], []
        by_name = {s.kafka_name: s for s in TransactionState}
        wanted = {by_name[n] for n in states if n in by_name}
        unknown = sorted(n for n in states if n not in by_name)
        now = self.state.wall_ms()
        found = [
            md
            for md in self.state.transactions.values()
            if md.state != TransactionState.DEAD
            and (not producer_ids or md.producer_id in producer_ids)
            and (not wanted or md.state in wanted)
            and (duration_ms < 0 or now - md.start_timestamp > duration_ms)
        ]
        return _NONE, unknown, found

    # ------------------------------------------------------------------ timers

    async def abort_timed_out_transactions(self) -> int:
        """Abort every Ongoing transaction past its timeout, fencing its producer (epoch bump)."""
        aborted = 0
        for tid, producer_id, _ in self.state.timed_out(self.state.wall_ms()):
            md = self.state.transactions.get(tid)
            if md is None or md.producer_id != producer_id or md.pending:
                continue
            fence: TxnTransitMetadata = md.prepare_fence_producer_epoch()
            code = await self._end_transaction(
                tid,
                fence.producer_id,
                fence.producer_epoch,
                commit=False,
                from_client=False,
                outcome=ctr.TXN_TIMEOUT,
            )
            if code == _NONE:
                aborted += 1
                log.info("worker %d: aborted transaction %r after its timeout", self.node_id, tid)
        return aborted

    async def _expire(self) -> None:
        await self.state.expire_transactional_ids(self.state.wall_ms())
