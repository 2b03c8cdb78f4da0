"""The transaction state machine (Kafka's TransactionMetadata) and the coordinator's decisions."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from shardbroker.broker.transaction_metadata import (
    NO_PRODUCER_EPOCH,
    VALID_PREVIOUS,
    IllegalTransition,
    TransactionMetadata,
    TransactionState,
    prepare_add_partitions,
    prepare_complete,
    prepare_end_transaction,
    prepare_init_producer_id,
)
from shardbroker.protocol.errors import ErrorCode

S = TransactionState
NONE = int(ErrorCode.NONE)
FENCED = int(ErrorCode.PRODUCER_FENCED)
CONCURRENT = int(ErrorCode.CONCURRENT_TRANSACTIONS)
MAPPING = int(ErrorCode.INVALID_PRODUCER_ID_MAPPING)
INVALID_STATE = int(ErrorCode.INVALID_TXN_STATE)
TP = ("t", 0)


def md(
    state: S = S.EMPTY, epoch: int = 0, partitions: set[tuple[str, int]] | None = None
) -> TransactionMetadata:
    ongoing = state not in (S.EMPTY,)
    return TransactionMetadata(
        "tx",
        producer_id=7,
        last_producer_id=-1,
        producer_epoch=epoch,
        last_producer_epoch=NO_PRODUCER_EPOCH,
        txn_timeout_ms=60000,
        state=state,
        partitions=set(partitions if partitions is not None else ({TP} if ongoing else set())),
        start_timestamp=100 if ongoing else -1,
        last_update_timestamp=100,
    )


def test_kafka_state_ids_and_names() -> None:
    assert [(s.value, s.kafka_name) for s in S] == [
        (0, "Empty"),
        (1, "Ongoing"),
        (2, "PrepareCommit"),
        (3, "PrepareAbort"),
        (4, "CompleteCommit"),
        (5, "CompleteAbort"),
        (6, "Dead"),
        (7, "PrepareEpochFence"),
    ]
    assert {s for s in S if s.expiration_allowed} == {S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT}


@pytest.mark.parametrize(("target", "source"), list(itertools.product(S, S)))
def test_every_transition_is_legal_exactly_as_kafka_says(target: S, source: S) -> None:
    m = md(source, epoch=3)
    legal = source in VALID_PREVIOUS[target]
    try:
        m._prepare(target, 7, 3, -1, 60000, m.partitions, m.start_timestamp, 200)
    except IllegalTransition:
        assert not legal, f"{source.kafka_name} -> {target.kafka_name} refused"
        assert m.pending_state is None
        return
    assert legal, f"{source.kafka_name} -> {target.kafka_name} allowed"
    assert m.pending_state == target


def test_a_second_prepare_while_one_is_pending_is_a_bug() -> None:
    m = md(S.ONGOING)
    m.prepare_abort_or_commit(S.PREPARE_COMMIT, 200)
    with pytest.raises(IllegalTransition):
        m.prepare_abort_or_commit(S.PREPARE_ABORT, 200)


def test_full_commit_cycle() -> None:
    m = md(S.EMPTY, epoch=0)
    t = m.prepare_add_partitions({TP, ("u", 1)}, 1000)
    assert (t.state, t.start_timestamp, t.partitions) == (S.ONGOING, 1000, frozenset({TP, ("u", 1)}))
    m.complete_transition(t)
    assert (m.state, m.start_timestamp, m.partitions, m.pending_state) == (
        S.ONGOING,
        1000,
        {TP, ("u", 1)},
        None,
    )
    t = m.prepare_add_partitions({("v", 2)}, 1500)  # more partitions: the start stays
    m.complete_transition(t)
    assert m.start_timestamp == 1000 and len(m.partitions) == 3
    t = m.prepare_abort_or_commit(S.PREPARE_COMMIT, 2000)
    m.complete_transition(t)
    assert m.state == S.PREPARE_COMMIT and len(m.partitions) == 3
    t = m.prepare_complete(3000)
    assert t.state == S.COMPLETE_COMMIT and not t.partitions
    m.complete_transition(t)
    assert (m.state, m.partitions, m.last_update_timestamp) == (S.COMPLETE_COMMIT, set(), 3000)


def test_abort_completes_as_complete_abort() -> None:
    m = md(S.ONGOING)
    m.complete_transition(m.prepare_abort_or_commit(S.PREPARE_ABORT, 200))
    t = m.prepare_complete(300)
    assert t.state == S.COMPLETE_ABORT
    m.complete_transition(t)
    assert m.state == S.COMPLETE_ABORT


def test_abort_pending_leaves_the_state_unchanged() -> None:
    m = md(S.ONGOING)
    m.prepare_abort_or_commit(S.PREPARE_COMMIT, 200)
    m.abort_pending()
    assert (m.state, m.pending_state) == (S.ONGOING, None)


def test_complete_checks_the_target() -> None:
    m = md(S.ONGOING)
    t = m.prepare_abort_or_commit(S.PREPARE_COMMIT, 200)
    with pytest.raises(IllegalTransition):
        m.complete_transition(dataclasses.replace(t, state=S.PREPARE_ABORT))
    with pytest.raises(IllegalTransition):  # a different epoch than the one prepared for
        m.complete_transition(dataclasses.replace(t, producer_epoch=5))
    m.complete_transition(t)
    with pytest.raises(IllegalTransition):  # nothing pending
        m.complete_transition(t)


def test_dead_and_epoch_fence_are_never_completed() -> None:
    m = md(S.EMPTY)
    t = m.prepare_dead()
    with pytest.raises(IllegalTransition):
        m.complete_transition(t)
    m = md(S.ONGOING)
    with pytest.raises(IllegalTransition):
        m.complete_transition(m.prepare_fence_producer_epoch())


def test_epoch_fence_bumps_once_even_after_a_failed_fence() -> None:
    m = md(S.ONGOING, epoch=4)
    assert m.prepare_fence_producer_epoch().producer_epoch == 5
    m.abort_pending()
    m.has_failed_epoch_fence = True
    assert m.prepare_fence_producer_epoch().producer_epoch == 4
    m = md(S.ONGOING, epoch=32767)
    with pytest.raises(IllegalTransition):
        m.prepare_fence_producer_epoch()


# ---------------------------------------------------------------- InitProducerId


def test_init_bumps_the_epoch_of_an_idle_id() -> None:
    for state in (S.EMPTY, S.COMPLETE_COMMIT, S.COMPLETE_ABORT):
        m = md(state, epoch=2, partitions=set())
        t = prepare_init_producer_id(m, 30000, None, None, 500)
        assert not isinstance(t, int)
        assert (t.state, t.producer_id, t.producer_epoch, t.last_producer_epoch, t.txn_timeout_ms) == (
            S.EMPTY,
            7,
            3,
            NO_PRODUCER_EPOCH,
            30000,
        )
        m.complete_transition(t)
        assert (m.producer_epoch, m.txn_timeout_ms, m.state) == (3, 30000, S.EMPTY)


def test_init_of_a_new_id_starts_at_epoch_zero() -> None:
    m = md(S.EMPTY, epoch=NO_PRODUCER_EPOCH)
    t = prepare_init_producer_id(m, 1000, None, None, 1)
    assert not isinstance(t, int) and t.producer_epoch == 0


def test_init_of_an_ongoing_transaction_fences_it_first() -> None:
    m = md(S.ONGOING, epoch=2)
    t = prepare_init_producer_id(m, 1000, None, None, 1)
    assert not isinstance(t, int)
    assert (t.state, t.producer_epoch) == (S.PREPARE_EPOCH_FENCE, 3)
    # the abort of the fence takes the pending fence over, at the bumped epoch
    end = prepare_end_transaction(m, 7, 3, commit=False, from_client=False, now=2)
    assert not isinstance(end, int)
    assert (end.state, end.producer_epoch, m.producer_epoch) == (S.PREPARE_ABORT, 3, 3)
    m.complete_transition(end)
    assert m.state == S.PREPARE_ABORT


@pytest.mark.parametrize("state", [S.PREPARE_COMMIT, S.PREPARE_ABORT])
def test_init_while_completing_is_concurrent(state: S) -> None:
    assert prepare_init_producer_id(md(state), 1000, None, None, 1) == CONCURRENT


def test_init_while_a_transition_is_pending_is_concurrent() -> None:
    m = md(S.EMPTY)
    m.prepare_add_partitions({TP}, 1)
    assert prepare_init_producer_id(m, 1000, None, None, 1) == CONCURRENT


def test_init_rotates_the_producer_id_when_the_epoch_is_exhausted() -> None:
    m = md(S.COMPLETE_COMMIT, epoch=32766, partitions=set())
    assert prepare_init_producer_id(m, 1000, None, None, 1) == CONCURRENT  # no new id given
    t = prepare_init_producer_id(m, 1000, None, 99, 1)
    assert not isinstance(t, int)
    assert (t.producer_id, t.producer_epoch, t.last_producer_id, t.last_producer_epoch) == (99, 0, 7, -1)
    m.complete_transition(t)
    assert (m.producer_id, m.producer_epoch, m.last_producer_id) == (99, 0, 7)


def test_kip360_retry_and_fencing() -> None:
    m = md(S.EMPTY, epoch=5)
    t = prepare_init_producer_id(m, 1000, (7, 5), None, 1)  # the current epoch: bump, remember it
    assert not isinstance(t, int) and (t.producer_epoch, t.last_producer_epoch) == (6, 5)
    m.complete_transition(t)
    t = prepare_init_producer_id(m, 1000, (7, 5), None, 2)  # a retry of that bump: same answer
    assert not isinstance(t, int) and (t.producer_epoch, t.last_producer_epoch) == (6, 5)
    m.abort_pending()
    assert prepare_init_producer_id(m, 1000, (7, 3), None, 2) == FENCED  # an older epoch
    assert prepare_init_producer_id(m, 1000, (8, 6), None, 2) == FENCED  # another producer id


def test_kip360_retry_across_a_producer_id_rotation() -> None:
    m = md(S.COMPLETE_COMMIT, epoch=32766, partitions=set())
    t = prepare_init_producer_id(m, 1000, (7, 32766), 99, 1)
    assert not isinstance(t, int)
    assert (t.producer_id, t.producer_epoch, t.last_producer_epoch) == (99, 0, 32766)
    m.complete_transition(t)
    # the producer did not get the answer and asks again with its old id and exhausted epoch
    t = prepare_init_producer_id(m, 1000, (7, 32766), None, 2)
    assert not isinstance(t, int)
    assert (t.producer_id, t.producer_epoch) == (99, 0)
    m.abort_pending()
    assert prepare_init_producer_id(m, 1000, (7, 5), None, 2) == FENCED


# ---------------------------------------------------------------- AddPartitions


def test_add_partitions_checks() -> None:
    m = md(S.ONGOING, epoch=1)
    assert prepare_add_partitions(m, 8, 1, {TP}, 1) == MAPPING
    assert prepare_add_partitions(m, 7, 0, {TP}, 1) == FENCED
    assert prepare_add_partitions(m, 7, 1, {TP}, 1) == NONE  # already in: nothing to write
    t = prepare_add_partitions(m, 7, 1, {("new", 0)}, 1)
    assert not isinstance(t, int) and t.partitions == {TP, ("new", 0)}
    assert prepare_add_partitions(m, 7, 1, {("x", 0)}, 1) == CONCURRENT  # pending
    for state in (S.PREPARE_COMMIT, S.PREPARE_ABORT):
        assert prepare_add_partitions(md(state, epoch=1), 7, 1, {("x", 0)}, 1) == CONCURRENT


# ---------------------------------------------------------------- EndTxn


def test_end_transaction_answers() -> None:
    assert prepare_end_transaction(md(S.ONGOING), 8, 0, True, True, 1) == MAPPING
    assert prepare_end_transaction(md(S.ONGOING, epoch=2), 7, 1, True, True, 1) == FENCED
    assert (
        prepare_end_transaction(md(S.ONGOING, epoch=2), 7, 3, True, True, 1) == FENCED
    )  # strict for clients
    assert prepare_end_transaction(md(S.EMPTY), 7, 0, True, True, 1) == INVALID_STATE
    assert prepare_end_transaction(md(S.COMPLETE_COMMIT), 7, 0, True, True, 1) == NONE  # a retry
    assert prepare_end_transaction(md(S.COMPLETE_COMMIT), 7, 0, False, True, 1) == INVALID_STATE
    assert prepare_end_transaction(md(S.COMPLETE_ABORT), 7, 0, False, True, 1) == NONE
    assert prepare_end_transaction(md(S.COMPLETE_ABORT), 7, 0, True, True, 1) == INVALID_STATE
    assert prepare_end_transaction(md(S.PREPARE_COMMIT), 7, 0, True, True, 1) == CONCURRENT
    assert prepare_end_transaction(md(S.PREPARE_COMMIT), 7, 0, False, True, 1) == INVALID_STATE
    assert prepare_end_transaction(md(S.PREPARE_ABORT), 7, 0, False, True, 1) == CONCURRENT
    assert prepare_end_transaction(md(S.PREPARE_ABORT), 7, 0, True, True, 1) == INVALID_STATE
    m = md(S.ONGOING)
    m.prepare_add_partitions({("x", 1)}, 1)
    assert prepare_end_transaction(m, 7, 0, True, True, 1) == CONCURRENT
    t = prepare_end_transaction(md(S.ONGOING), 7, 0, True, True, 5)
    assert not isinstance(t, int) and (t.state, t.last_update_timestamp) == (S.PREPARE_COMMIT, 5)


def test_complete_after_the_prepare_record() -> None:
    m = md(S.PREPARE_COMMIT, epoch=1)
    assert prepare_complete(m, 8, 1, True, 1) == MAPPING
    assert prepare_complete(m, 7, 2, True, 1) == FENCED
    assert prepare_complete(m, 7, 1, False, 1) == INVALID_STATE
    t = prepare_complete(m, 7, 1, True, 9)
    assert not isinstance(t, int) and t.state == S.COMPLETE_COMMIT
    assert prepare_complete(m, 7, 1, True, 9) == CONCURRENT  # pending
    assert prepare_complete(md(S.ONGOING, epoch=1), 7, 1, True, 1) == INVALID_STATE


def test_rotation_of_an_open_transaction_is_a_bug() -> None:
    with pytest.raises(IllegalTransition):
        md(S.ONGOING).prepare_producer_id_rotation(9, 1000, 1, False)
