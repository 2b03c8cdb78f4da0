"""The state of one transactional id and its legal transitions (Kafka's TransactionMetadata, and the
decisions of Kafka's TransactionCoordinator before it appends). Pure: no I/O, no clock.

A change is two steps, as in Kafka: ``prepare_*`` checks that the transition is legal, returns
the target (`TxnTransitMetadata`) and sets ``pending_state``; once the record is in
``__transaction_state`` the coordinator calls `TransactionMetadata.complete_transition`, which
checks the target again and applies it (or `abort_pending` if the append failed). While a
transition is pending, requests get CONCURRENT_TRANSACTIONS (retriable).

States (Kafka's ids, written in the log): Empty 0, Ongoing 1, PrepareCommit 2, PrepareAbort 3,
CompleteCommit 4, CompleteAbort 5, Dead 6, PrepareEpochFence 7. Legal previous states: Empty <-
{Empty, CompleteCommit, CompleteAbort}; Ongoing <- {Ongoing, Empty, CompleteCommit,
CompleteAbort}; PrepareCommit <- {Ongoing}; PrepareAbort <- {Ongoing, PrepareEpochFence};
(transactions v2 also Empty, CompleteCommit, CompleteAbort: an abort with no partition);
CompleteCommit <- {PrepareCommit}; CompleteAbort <- {PrepareAbort}; Dead <- {Empty,
CompleteCommit, CompleteAbort}; PrepareEpochFence <- {Ongoing}. An illegal transition is a bug,
never a client's doing (`IllegalTransition`): client input is answered by the decision functions
below with Kafka's error codes before any transition is prepared.

Decisions (Kafka 3.x, before KIP-890 part 2): InitProducerId bumps the epoch (a new producer id
at epoch 0 once the epoch is exhausted at 32766), fences an Ongoing transaction first (epoch bump
to PrepareEpochFence, then an abort; the client gets CONCURRENT_TRANSACTIONS and retries), and
with KIP-360's producer id/epoch in the request accepts a retry or answers PRODUCER_FENCED;
AddPartitionsToTxn / EndTxn check the producer id (INVALID_PRODUCER_ID_MAPPING), the epoch
(PRODUCER_FENCED) and the state (CONCURRENT_TRANSACTIONS, INVALID_TXN_STATE).

Transactions v2 (KIP-890 part 2, an EndTxn v5 from the client: `prepare_end_transaction_v2`):
the Prepare record bumps the epoch, so the markers carry epoch + 1 and a late Produce of the
ended transaction is fenced at the partition; an exhausted epoch takes the next producer id
(allocated before the Prepare, applied at the Complete record, epoch 0); a retry (the request's
epoch one below the current one) is answered from the completed state; an abort is legal with
no transaction open. The transaction's version is written in the record (value v1).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "NO_PRODUCER_EPOCH",
    "NO_PRODUCER_ID",
    "IllegalTransition",
    "TransactionMetadata",
    "TransactionState",
    "TxnTransitMetadata",
    "is_epoch_exhausted",
    "prepare_add_partitions",
    "prepare_complete",
    "prepare_end_transaction",
    "prepare_end_transaction_v2",
    "prepare_init_producer_id",
]

NO_PRODUCER_ID: Final = -1
NO_PRODUCER_EPOCH: Final = -1
#: Kafka's Short.MaxValue - 1: an epoch at or above it needs a new producer id.
_EPOCH_EXHAUSTED: Final = 32766
_SHORT_MAX: Final = 32767

_NONE: Final = int(ErrorCode.NONE)
_CONCURRENT: Final = int(ErrorCode.CONCURRENT_TRANSACTIONS)
_FENCED: Final = int(ErrorCode.PRODUCER_FENCED)
_MAPPING: Final = int(ErrorCode.INVALID_PRODUCER_ID_MAPPING)
_INVALID_STATE: Final = int(ErrorCode.INVALID_TXN_STATE)

TopicPartition = tuple[str, int]


class TransactionState(IntEnum):
    EMPTY = 0
    ONGOING = 1
    PREPARE_COMMIT = 2
    PREPARE_ABORT = 3
    COMPLETE_COMMIT = 4
    COMPLETE_ABORT = 5
    DEAD = 6
    PREPARE_EPOCH_FENCE = 7

    @property
    def kafka_name(self) -> str:
        """Kafka's name (DescribeTransactions, ListTransactions): "PrepareCommit"..."""
        return "".join(w.capitalize() for w in self.name.split("_"))

    @property
    def expiration_allowed(self) -> bool:
        return self in (
            TransactionState.EMPTY,
            TransactionState.COMPLETE_COMMIT,
            TransactionState.COMPLETE_ABORT,
        )


_S = TransactionState
VALID_PREVIOUS: Final[dict[TransactionState, frozenset[TransactionState]]] = {
    _S.EMPTY: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.ONGOING: frozenset({_S.ONGOING, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_COMMIT: frozenset({_S.ONGOING}),
    _S.PREPARE_ABORT: frozenset(
        {_S.ONGOING, _S.PREPARE_EPOCH_FENCE, _S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}
    ),
    _S.COMPLETE_COMMIT: frozenset({_S.PREPARE_COMMIT}),
    _S.COMPLETE_ABORT: frozenset({_S.PREPARE_ABORT}),
    _S.DEAD: frozenset({_S.EMPTY, _S.COMPLETE_COMMIT, _S.COMPLETE_ABORT}),
    _S.PREPARE_EPOCH_FENCE: frozenset({_S.ONGOING}),
}


class IllegalTransition(RuntimeError):
    """A transition the state machine does not allow (Kafka's IllegalStateException): a bug."""


def is_epoch_exhausted(epoch: int) -> bool:
    return epoch >= _EPOCH_EXHAUSTED


@dataclass(frozen=True, slots=True)
class TxnTransitMetadata:
    """The target of a prepared transition: what the log record holds."""

    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    partitions: frozenset[TopicPartition]
    start_timestamp: int
    last_update_timestamp: int
    #: Transactions v2: the producer id the Complete record moves to (the epoch is exhausted).
    next_producer_id: int = NO_PRODUCER_ID
    #: 2 for a transaction ended with EndTxn v5 (KIP-890 part 2), else 0.
    client_transaction_version: int = 0


@dataclass(slots=True)
class TransactionMetadata:
    transactional_id: str
    producer_id: int
    last_producer_id: int
    producer_epoch: int
    last_producer_epoch: int
    txn_timeout_ms: int
    state: TransactionState
    partitions: set[TopicPartition] = field(default_factory=set)
    start_timestamp: int = -1
    last_update_timestamp: int = -1
    #: The state a prepared transition goes to (None: no transition in flight).
    pending_state: TransactionState | None = None
    #: An epoch fence whose record could not be written: the next fence does not bump again.
    has_failed_epoch_fence: bool = False
    next_producer_id: int = NO_PRODUCER_ID
    client_transaction_version: int = 0

    @property
    def pending(self) -> bool:
        return self.pending_state is not None

    @property
    def epoch_exhausted(self) -> bool:
        return is_epoch_exhausted(self.producer_epoch)

    @property
    def has_pending_transaction(self) -> bool:
        return self.state in (_S.ONGOING, _S.PREPARE_ABORT, _S.PREPARE_COMMIT)

    def topics(self) -> list[tuple[str, list[int]]]:
        """The partitions grouped by topic, sorted (records, DescribeTransactions)."""
        out: dict[str, list[int]] = {}
        for topic, index in sorted(self.partitions):
            out.setdefault(topic, []).append(index)
        return list(out.items())

    # ------------------------------------------------------------------ prepare

    def _prepare(
        self,
        state: TransactionState,
        producer_id: int,
        epoch: int,
        last_epoch: int,
        timeout_ms: int,
        partitions: Iterable[TopicPartition],
        start: int,
        now: int,
        next_producer_id: int = NO_PRODUCER_ID,
        transaction_version: int | None = None,
    ) -> TxnTransitMetadata:
        if self.pending_state is not None:
            raise IllegalTransition(
                f"{self.transactional_id}: transition to {state.kafka_name} while "
                f"{self.pending_state.kafka_name} is pending"
            )
        if producer_id < 0:
            raise IllegalTransition(f"{self.transactional_id}: producer id {producer_id}")
        if state != _S.DEAD and epoch < 0:
            raise IllegalTransition(f"{self.transactional_id}: producer epoch {epoch}")
        if self.state not in VALID_PREVIOUS[state]:
            raise IllegalTransition(
                f"{self.transactional_id}: {state.kafka_name} cannot follow {self.state.kafka_name}"
            )
        self.pending_state = state
        return TxnTransitMetadata(
            producer_id,
            self.producer_id,
            epoch,
            last_epoch,
            timeout_ms,
            state,
            frozenset(partitions),
            start,
            now,
            next_producer_id,
            self.client_transaction_version if transaction_version is None else transaction_version,
        )

    def prepare_fence_producer_epoch(self) -> TxnTransitMetadata:
        """Bump the epoch of an Ongoing transaction before aborting it (InitProducerId from a new
        producer, or the transaction timed out): the old producer is fenced."""
        if self.producer_epoch >= _SHORT_MAX:
            raise IllegalTransition(f"{self.transactional_id}: cannot fence epoch {self.producer_epoch}")
        bumped = self.producer_epoch if self.has_failed_epoch_fence else self.producer_epoch + 1
        return self._prepare(
            _S.PREPARE_EPOCH_FENCE,
            self.producer_id,
            bumped,
            NO_PRODUCER_EPOCH,
            self.txn_timeout_ms,
            self.partitions,
            self.start_timestamp,
            self.last_update_timestamp,
        )

    def prepare_increment_producer_epoch(
        self, timeout_ms: int, expected_epoch: int | None, now: int
    ) -> TxnTransitMetadata | int:
        """InitProducerId on an id with no open transaction: the bumped epoch, or PRODUCER_FENCED
        for a KIP-360 request whose epoch is neither the current nor the previous one."""
        if self.epoch_exhausted:
            raise IllegalTransition(f"{self.transactional_id}: no epoch left for producer {self.producer_id}")
        bumped = self.producer_epoch + 1
        if expected_epoch is None:
            epoch, last = bumped, NO_PRODUCER_EPOCH
        elif self.producer_epoch == NO_PRODUCER_EPOCH or expected_epoch == self.producer_epoch:
            epoch, last = bumped, self.producer_epoch
        elif expected_epoch == self.last_producer_epoch:
            epoch, last = self.producer_epoch, self.last_producer_epoch  # a retry of a bump that succeeded
        else:
            return _FENCED
        return self._prepare(_S.EMPTY, self.producer_id, epoch, last, timeout_ms, (), -1, now)

    def prepare_producer_id_rotation(
        self, new_producer_id: int, timeout_ms: int, now: int, record_last_epoch: bool
    ) -> TxnTransitMetadata:
        if self.has_pending_transaction:
            raise IllegalTransition(
                f"{self.transactional_id}: rotating the producer id of an open transaction"
            )
        last = self.producer_epoch if record_last_epoch else NO_PRODUCER_EPOCH
        return self._prepare(_S.EMPTY, new_producer_id, 0, last, timeout_ms, (), -1, now)

    def prepare_add_partitions(self, added: Iterable[TopicPartition], now: int) -> TxnTransitMetadata:
        start = (
            now if self.state in (_S.EMPTY, _S.COMPLETE_ABORT, _S.COMPLETE_COMMIT) else self.start_timestamp
        )
        return self._prepare(
            _S.ONGOING,
            self.producer_id,
            self.producer_epoch,
            self.last_producer_epoch,
            self.txn_timeout_ms,
            self.partitions | set(added),
            start,
            now,
        )

    def prepare_abort_or_commit(
        self, state: TransactionState, now: int, transaction_version: int | None = None
    ) -> TxnTransitMetadata:
        """Transactions v1 (the epoch stays); ``transaction_version`` None keeps the id's own
        (the coordinator's abort after a fence or a timeout)."""
        return self._prepare(
            state,
            self.producer_id,
            self.producer_epoch,
            self.last_producer_epoch,
            self.txn_timeout_ms,
            self.partitions,
            self.start_timestamp,
            now,
            transaction_version=transaction_version,
        )

    def prepare_abort_or_commit_v2(
        self, state: TransactionState, now: int, next_producer_id: int
    ) -> TxnTransitMetadata:
        """Transactions v2: the Prepare record bumps the epoch (up to 32767, the last one, when
        ``next_producer_id`` takes over); with no partition in the transaction (an abort of an
        empty one) it starts now."""
        if self.producer_epoch >= _SHORT_MAX:
            raise IllegalTransition(f"{self.transactional_id}: cannot bump epoch {self.producer_epoch}")
        return self._prepare(
            state,
            self.producer_id,
            self.producer_epoch + 1,
            self.producer_epoch,
            self.txn_timeout_ms,
            self.partitions,
            self.start_timestamp if self.state == _S.ONGOING else now,
            now,
            next_producer_id,
            2,
        )

    def prepare_complete(self, now: int) -> TxnTransitMetadata:
        state = _S.COMPLETE_COMMIT if self.state == _S.PREPARE_COMMIT else _S.COMPLETE_ABORT
        self.has_failed_epoch_fence = False  # the PrepareAbort of a fence made it to the log
        rotate = self.client_transaction_version >= 2 and self.next_producer_id != NO_PRODUCER_ID
        return self._prepare(
            state,
            self.next_producer_id if rotate else self.producer_id,
            0 if rotate else self.producer_epoch,
            self.last_producer_epoch,
            self.txn_timeout_ms,
            (),
            self.start_timestamp,
            now,
        )

    def prepare_dead(self) -> TxnTransitMetadata:
        return self._prepare(
            _S.DEAD,
            self.producer_id,
            self.producer_epoch,
            self.last_producer_epoch,
            self.txn_timeout_ms,
            (),
            self.start_timestamp,
            self.last_update_timestamp,
        )

    # ------------------------------------------------------------------ complete

    def abort_pending(self) -> None:
        """The record of the pending transition was not written: nothing changes."""
        self.pending_state = None

    def complete_transition(self, t: TxnTransitMetadata) -> None:
        """Apply a prepared transition whose record is in the log (Kafka's completeTransitionTo)."""
        to = self.pending_state
        if to is None or to != t.state:
            raise IllegalTransition(f"{self.transactional_id}: completing {t.state.kafka_name}, pending {to}")
        same_producer = t.producer_epoch == self.producer_epoch and t.producer_id == self.producer_id
        if to == _S.EMPTY:
            bump = t.producer_epoch == self.producer_epoch + 1 or (
                t.producer_epoch == 0 and t.producer_id != self.producer_id
            )
            if (
                (t.producer_epoch != self.producer_epoch and not bump)
                or t.partitions
                or t.start_timestamp != -1
            ):
                raise IllegalTransition(f"{self.transactional_id}: bad InitProducerId transition {t}")
            self.txn_timeout_ms = t.txn_timeout_ms
            self.producer_epoch = t.producer_epoch
            self.last_producer_epoch = t.last_producer_epoch
            self.producer_id = t.producer_id
            self.last_producer_id = t.last_producer_id
        elif to == _S.ONGOING:
            if (
                not same_producer
                or not self.partitions <= t.partitions
                or self.txn_timeout_ms != t.txn_timeout_ms
            ):
                raise IllegalTransition(f"{self.transactional_id}: bad AddPartitions transition {t}")
            self.start_timestamp = t.start_timestamp
            self.partitions |= t.partitions
        elif to in (_S.PREPARE_ABORT, _S.PREPARE_COMMIT):
            v2 = t.client_transaction_version >= 2 and t.producer_id == self.producer_id
            if (
                not (same_producer or (v2 and t.producer_epoch == self.producer_epoch + 1))
                or self.partitions != t.partitions
                or self.txn_timeout_ms != t.txn_timeout_ms
                or (self.start_timestamp != t.start_timestamp and not (v2 and self.state != _S.ONGOING))
            ):
                raise IllegalTransition(f"{self.transactional_id}: bad EndTxn transition {t}")
            self.producer_epoch, self.last_producer_epoch = t.producer_epoch, t.last_producer_epoch
            self.start_timestamp = t.start_timestamp
            self.next_producer_id = t.next_producer_id
            self.client_transaction_version = t.client_transaction_version
        elif to in (_S.COMPLETE_ABORT, _S.COMPLETE_COMMIT):
            rotated = (
                self.next_producer_id != NO_PRODUCER_ID
                and t.producer_id == self.next_producer_id
                and t.producer_epoch == 0
            )
            if (
                not (same_producer or rotated)
                or self.txn_timeout_ms != t.txn_timeout_ms
                or t.start_timestamp == -1
            ):
                raise IllegalTransition(f"{self.transactional_id}: bad marker completion {t}")
            if rotated:
                self.last_producer_id, self.producer_id, self.producer_epoch = (
                    self.producer_id,
                    t.producer_id,
                    0,
                )
            self.next_producer_id = NO_PRODUCER_ID
            self.start_timestamp = t.start_timestamp
            self.partitions.clear()
        else:  # PrepareEpochFence becomes PrepareAbort before it completes; Dead is removed
            raise IllegalTransition(f"{self.transactional_id}: {to.kafka_name} is never completed")
        self.last_update_timestamp = t.last_update_timestamp
        self.pending_state = None
        self.state = to


# ---------------------------------------------------------------------- coordinator decisions


def prepare_init_producer_id(
    md: TransactionMetadata,
    timeout_ms: int,
    expected: tuple[int, int] | None,
    new_producer_id: int | None,
    now: int,
) -> TxnTransitMetadata | int:
    """InitProducerId on an existing (or just created) transactional id: the transition, or the
    error code. ``expected``: KIP-360's ``(producer id, epoch)`` from the request.
    ``new_producer_id``: a fresh id for the rotation an exhausted epoch needs (`needs_new_producer_id`);
    without one the answer is CONCURRENT_TRANSACTIONS and the client retries. A returned
    PrepareEpochFence target means: abort the open transaction, then answer CONCURRENT_TRANSACTIONS."""
    if md.pending:
        return _CONCURRENT
    if expected is not None and not (
        md.producer_epoch == NO_PRODUCER_EPOCH
        or expected[0] == md.producer_id
        or (expected[0] == md.last_producer_id and is_epoch_exhausted(expected[1]))
    ):
        return _FENCED
    if md.state in (_S.PREPARE_ABORT, _S.PREPARE_COMMIT):
        return _CONCURRENT
    if md.state == _S.ONGOING:
        return md.prepare_fence_producer_epoch()
    if md.state not in (_S.EMPTY, _S.COMPLETE_ABORT, _S.COMPLETE_COMMIT):
        raise IllegalTransition(f"{md.transactional_id} is {md.state.kafka_name}")
    if needs_new_producer_id(md, expected):
        if new_producer_id is None:
            return _CONCURRENT
        return md.prepare_producer_id_rotation(new_producer_id, timeout_ms, now, expected is not None)
    return md.prepare_increment_producer_epoch(timeout_ms, None if expected is None else expected[1], now)


def needs_new_producer_id(md: TransactionMetadata, expected: tuple[int, int] | None) -> bool:
    return md.epoch_exhausted and (expected is None or expected[1] == md.producer_epoch)


def prepare_add_partitions(
    md: TransactionMetadata, producer_id: int, epoch: int, partitions: set[TopicPartition], now: int
) -> TxnTransitMetadata | int:
    """AddPartitionsToTxn (and AddOffsetsToTxn, with the group's ``__consumer_offsets``
    partition): the transition, or an error code (NONE: the partitions are in already)."""
    if md.producer_id != producer_id:
        return _MAPPING
    if md.producer_epoch != epoch:
        return _FENCED
    if md.pending or md.state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
        return _CONCURRENT
    if md.state == _S.ONGOING and partitions <= md.partitions:
        return _NONE
    return md.prepare_add_partitions(partitions, now)


def prepare_end_transaction(
    md: TransactionMetadata, producer_id: int, epoch: int, commit: bool, from_client: bool, now: int
) -> TxnTransitMetadata | int:
    """EndTxn (``from_client``) or the coordinator's own abort (a fence, a timeout): the
    PrepareCommit/PrepareAbort transition, or an error code (NONE: already completed that way).
    The abort of a fence takes over the pending PrepareEpochFence and its bumped epoch."""
    if md.producer_id != producer_id:
        return _MAPPING
    if (from_client and epoch != md.producer_epoch) or epoch < md.producer_epoch:
        return _FENCED
    if md.pending and md.pending_state != _S.PREPARE_EPOCH_FENCE:
        return _CONCURRENT
    state = md.state
    if state == _S.ONGOING:
        if not commit and md.pending_state == _S.PREPARE_EPOCH_FENCE:
            md.pending_state = None
            md.producer_epoch = epoch
            md.last_producer_epoch = NO_PRODUCER_EPOCH
        return md.prepare_abort_or_commit(
            _S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT, now, 0 if from_client else None
        )
    if state in (_S.COMPLETE_COMMIT, _S.COMPLETE_ABORT):
        return _NONE if commit == (state == _S.COMPLETE_COMMIT) else _INVALID_STATE
    if state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
        return _CONCURRENT if commit == (state == _S.PREPARE_COMMIT) else _INVALID_STATE
    if state == _S.EMPTY:
        return _INVALID_STATE
    raise IllegalTransition(f"{md.transactional_id} is {state.kafka_name}")


def prepare_end_transaction_v2(
    md: TransactionMetadata, producer_id: int, epoch: int, commit: bool, now: int, next_producer_id: int
) -> TxnTransitMetadata | int:
    """EndTxn v5 (KIP-890 part 2) from the client: the PrepareCommit/PrepareAbort transition with
    the epoch bumped, or an error code (NONE: a retry of an end that was done, answered with the
    current producer id and epoch). ``next_producer_id``: allocated by the caller when the epoch
    is exhausted (NO_PRODUCER_ID otherwise). Kafka's table for the states without an open
    transaction (PF PRODUCER_FENCED, ITS INVALID_TXN_STATE, EB bump, retry = epoch one below)::

                        abort retry  abort current  commit retry  commit current
        Empty           PF           EB             PF            ITS
        CompleteAbort   NONE         EB             ITS           ITS
        CompleteCommit  ITS          EB             NONE          ITS
    """
    retry_on_bump = md.producer_epoch == epoch + 1
    retry_on_overflow = (
        md.last_producer_id == producer_id and epoch == _EPOCH_EXHAUSTED and md.producer_epoch == 0
    )
    if md.producer_id != producer_id and not retry_on_overflow:
        return _MAPPING
    state = md.state
    if state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
        valid = retry_on_bump
    elif state in (_S.COMPLETE_COMMIT, _S.COMPLETE_ABORT):
        valid = retry_on_bump or retry_on_overflow or epoch == md.producer_epoch
    else:
        valid = epoch == md.producer_epoch
    if not valid:
        return _FENCED
    if md.pending:
        return _CONCURRENT
    retry = retry_on_bump or retry_on_overflow
    if state == _S.ONGOING:
        prepare = _S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT
        return md.prepare_abort_or_commit_v2(prepare, now, next_producer_id)
    if state == _S.EMPTY and commit:
        return _INVALID_STATE
    if state == _S.EMPTY or (state in (_S.COMPLETE_COMMIT, _S.COMPLETE_ABORT) and not (commit or retry)):
        return md.prepare_abort_or_commit_v2(_S.PREPARE_ABORT, now, next_producer_id)
    if state in (_S.COMPLETE_COMMIT, _S.COMPLETE_ABORT):
        done_that_way = commit == (state == _S.COMPLETE_COMMIT)
        return _NONE if retry and done_that_way else _INVALID_STATE
    if state in (_S.PREPARE_COMMIT, _S.PREPARE_ABORT):
        return _CONCURRENT if commit == (state == _S.PREPARE_COMMIT) else _INVALID_STATE
    raise IllegalTransition(f"{md.transactional_id} is {state.kafka_name}")


def prepare_complete(
    md: TransactionMetadata, producer_id: int, epoch: int, commit: bool, now: int
) -> TxnTransitMetadata | int:
    """After the Prepare record is written: the CompleteCommit/CompleteAbort transition that
    follows the markers, or an error code if the id changed meanwhile."""
    if md.producer_id != producer_id:
        return _MAPPING
    if md.producer_epoch != epoch:
        return _FENCED
    if md.pending:
        return _CONCURRENT
    if md.state == (_S.PREPARE_COMMIT if commit else _S.PREPARE_ABORT):
        return md.prepare_complete(now)
    if md.state in (_S.DEAD, _S.PREPARE_EPOCH_FENCE):
        raise IllegalTransition(f"{md.transactional_id} is {md.state.kafka_name}")
    return _INVALID_STATE
