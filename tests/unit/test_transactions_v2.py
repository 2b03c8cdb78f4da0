"""Transactions v2 (KIP-890 part 2, EndTxn v5): the coordinator bumps the epoch at every end,
the markers carry the bumped epoch (and FLAG_TXN_MARKER_V2 through the rings), a late Produce
of the ended transaction is fenced at the partition, retries are answered from the completed
state, an exhausted epoch moves to the next producer id. (A restart after a prepared v2
transaction: test_transaction_coordinator.py.)"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shardbroker.broker.handlers.end_txn import handle_end_txn
from shardbroker.broker.transaction_coordinator import TransactionCoordinator as Coordinator
from shardbroker.broker.transaction_metadata import (
    TransactionMetadata,
    TransactionState,
    TxnTransitMetadata,
    prepare_end_transaction_v2,
)
from shardbroker.ipc.local_protocol import FLAG_TXN_MARKER, FLAG_TXN_MARKER_V2
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import iter_batches
from tests.unit.replica_fakes import Harness, run
from tests.unit.test_transaction_coordinator import (
    ABORT_KEY,
    COMMIT_KEY,
    PROPS,
    Clock,
    FakeForwarder,
    control_batches,
    coordinator,
    settle,
    state_records,
    txn_batch,
    txn_image,
)
from tests.unit.test_transaction_metadata import md

S = TransactionState
NONE = int(ErrorCode.NONE)
FENCED = int(ErrorCode.PRODUCER_FENCED)
ITS = int(ErrorCode.INVALID_TXN_STATE)


def end(m_: TransactionMetadata, epoch: int, commit: bool, pid: int = 7) -> TxnTransitMetadata | int:
    return prepare_end_transaction_v2(m_, pid, epoch, commit, now=500, next_producer_id=-1)


@contextlib.asynccontextmanager
async def started(
    tmp_path: Path, fwd: FakeForwarder | None = None
) -> AsyncIterator[tuple[Harness, Coordinator]]:
    """A coordinator over a fresh (or the same) data dir, started, drained on the way out."""
    async with Harness(tmp_path, txn_image(), props=PROPS) as h:
        coord = coordinator(h, fwd or FakeForwarder(), Clock())
        await coord.start(None)
        yield h, coord
        await coord.drain()


async def begin(
    h: Harness, coord: Coordinator, epoch: int = 0, parts: frozenset[tuple[str, int]] = frozenset({("t", 0)})
) -> None:
    """InitProducerId (producer id 1000) and one transaction open over ``parts`` at ``epoch``."""
    await coord.init_producer_id("tx", 30000, None)
    coord.state.transactions["tx"].producer_epoch = epoch
    assert await coord.add_partitions("tx", 1000, epoch, set(parts)) == NONE


# ---------------------------------------------------------------- the decision table (pure)


@pytest.mark.parametrize(
    ("state", "retry_abort", "abort", "retry_commit", "commit"),
    [  # Kafka's table (TransactionCoordinator, transactions v2); "EB": a bumped Prepare
        (S.EMPTY, FENCED, "EB", FENCED, ITS),
        (S.COMPLETE_ABORT, NONE, "EB", ITS, ITS),
        (S.COMPLETE_COMMIT, ITS, "EB", NONE, ITS),
    ],
)
def test_states_without_an_open_transaction(
    state: S, retry_abort: int | str, abort: int | str, retry_commit: int | str, commit: int | str
) -> None:
    for epoch, want_abort, want_commit in ((4, retry_abort, retry_commit), (5, abort, commit)):
        for is_commit, want in ((False, want_abort), (True, want_commit)):
            got = end(md(state, epoch=5), epoch, is_commit)
            if want == "EB":
                assert isinstance(got, TxnTransitMetadata)
                assert (got.state, got.producer_epoch, got.last_producer_epoch) == (S.PREPARE_ABORT, 6, 5)
                assert got.start_timestamp == 500 and got.client_transaction_version == 2
            else:
                assert got == want, (state, epoch, is_commit)


def test_an_open_transaction_ends_at_the_bumped_epoch() -> None:
    m_ = md(S.ONGOING, epoch=5)
    assert end(m_, 4, True) == FENCED and end(m_, 6, True) == FENCED
    assert end(m_, 5, True, pid=8) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
    t = end(m_, 5, True)
    assert isinstance(t, TxnTransitMetadata)
    assert (t.state, t.producer_id, t.producer_epoch, t.start_timestamp) == (S.PREPARE_COMMIT, 7, 6, 100)
    assert end(m_, 5, True) == ErrorCode.CONCURRENT_TRANSACTIONS  # while its record is written
    m_.complete_transition(t)
    assert (m_.producer_epoch, m_.last_producer_epoch, m_.client_transaction_version) == (6, 5, 2)
    assert end(m_, 5, True) == ErrorCode.CONCURRENT_TRANSACTIONS  # a retry while the markers go
    assert end(m_, 5, False) == ITS
    assert end(m_, 6, True) == FENCED  # the bumped epoch is not a retry of this end


# ---------------------------------------------------------------- the coordinator


def test_commit_bumps_the_epoch_and_fences_a_late_produce(tmp_path: Path) -> None:
    async def main() -> None:
        fwd = FakeForwarder()
        async with started(tmp_path, fwd) as (h, coord):
            await begin(h, coord, parts=frozenset({("t", 0), ("r", 0)}))
            assert h.replicas.append("t", 0, txn_batch(1000, 0)).error_code == NONE
            assert await coord.end_txn_v2("tx", 1000, 0, True) == (NONE, 1000, 1)
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            assert control_batches(h, "t", 0) == [(1000, 1, COMMIT_KEY)]
            ((_, name, _, batch, flags),) = fwd.sent
            assert (name, flags) == ("r", FLAG_TXN_MARKER | FLAG_TXN_MARKER_V2)
            (marker,) = iter_batches(batch)
            assert marker.producer_epoch == 1
            # a Produce of the ended transaction that arrives late is refused, not added to the next
            late = h.replicas.append("t", 0, txn_batch(1000, 0, seq=2))
            assert late.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
            assert await coord.end_txn_v2("tx", 1000, 0, True) == (NONE, 1000, 1)  # a retry
            assert (await coord.end_txn_v2("tx", 1000, 1, True))[0] == ITS  # nothing open
            # the next transaction goes on at epoch 1, its batches from sequence 0
            assert await coord.add_partitions("tx", 1000, 1, {("t", 0)}) == NONE
            assert h.replicas.append("t", 0, txn_batch(1000, 1)).error_code == NONE
            assert await coord.end_txn_v2("tx", 1000, 1, False) == (NONE, 1000, 2)
            await settle(coord, "tx", S.COMPLETE_ABORT)
            assert control_batches(h, "t", 0)[-1] == (1000, 2, ABORT_KEY)
            p = h.replicas.get("t", 0)
            assert p is not None and p.log.last_stable_offset == p.log.log_end_offset
            # an abort with nothing open bumps too (no marker: no partition)
            assert await coord.end_txn_v2("tx", 1000, 2, False) == (NONE, 1000, 3)
            await settle(coord, "tx", S.COMPLETE_ABORT)
            assert len(control_batches(h, "t", 0)) == 2
            # the records say transactions v2: value v1, client version 2
            assert state_records(h)[-2:] == [("tx", 3, 1000, 3), ("tx", 5, 1000, 3)]

    run(main())


def test_an_exhausted_epoch_moves_to_the_next_producer_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with started(tmp_path) as (h, coord):
            await begin(h, coord, epoch=32766)  # as after 32,766 transactions
            assert h.replicas.append("t", 0, txn_batch(1000, 32766)).error_code == NONE
            code, pid, epoch = await coord.end_txn_v2("tx", 1000, 32766, True)
            assert code == NONE and pid != 1000 and epoch == 0
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            assert control_batches(h, "t", 0) == [(1000, 32767, COMMIT_KEY)]  # the last epoch
            md_ = coord.state.transactions["tx"]
            assert (md_.producer_id, md_.producer_epoch, md_.last_producer_id) == (pid, 0, 1000)
            assert await coord.end_txn_v2("tx", 1000, 32766, True) == (NONE, pid, 0)  # a retry
            assert await coord.add_partitions("tx", pid, 0, {("t", 0)}) == NONE
        async with started(tmp_path) as (h, coord):  # the rotation is in the log
            md_ = coord.state.transactions["tx"]
            assert (md_.producer_id, md_.producer_epoch, md_.state) == (pid, 0, S.ONGOING)

    run(main())


def test_the_handler_answers_v5_with_the_producer_id_and_epoch_to_go_on_with(tmp_path: Path) -> None:
    async def main() -> None:
        async with started(tmp_path) as (h, coord):
            await begin(h, coord)
            request = m.EndTxnRequest(
                transactional_id="tx", producer_id=1000, producer_epoch=0, committed=True
            )
            answer = await handle_end_txn(h.ctx(26, 5), request)
            assert (answer.error_code, answer.producer_id, answer.producer_epoch) == (NONE, 1000, 1)
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            request.producer_epoch = 1
            # the same request: v1 takes it for a retry of the commit, v2 for a second commit
            assert (await handle_end_txn(h.ctx(26, 4), request)).error_code == NONE
            assert (await handle_end_txn(h.ctx(26, 5), request)).error_code == ITS

    run(main())
