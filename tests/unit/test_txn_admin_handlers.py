"""DescribeTransactions, ListTransactions and DescribeProducers over a real ReplicaManager and a
transaction coordinator (the fixtures of test_transaction_coordinator.py), with their ACLs; the
coordinator's transaction metrics."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.dispatch import discover
from shardbroker.broker.handlers.describe_producers import handle_describe_producers
from shardbroker.broker.handlers.describe_transactions import handle_describe_transactions
from shardbroker.broker.handlers.list_transactions import handle_list_transactions
from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, run
from tests.unit.test_authz_data import ALICE, AUTHORIZER, Op, Recorder, T, allow
from tests.unit.test_transaction_coordinator import (
    PROPS,
    Clock,
    FakeForwarder,
    coordinator,
    settle,
    txn_batch,
    txn_image,
)
from tests.unit.test_transaction_coordinator import S as State

NONE = int(ErrorCode.NONE)


async def open_transactions(h: Harness, clock: Clock) -> Any:
    """tx (producer 1000) Ongoing over t-0 and t-1 since ``clock``; done (1001) CompleteCommit,
    started 10 s later (the clock is left there)."""
    coord = coordinator(h, FakeForwarder(), clock)
    await coord.start(None)
    assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, 0)
    assert await coord.add_partitions("tx", 1000, 0, {("t", 0), ("t", 1)}) == NONE
    clock.now += 10
    assert await coord.init_producer_id("done", 30000, None) == (NONE, 1001, 0)
    assert await coord.add_partitions("done", 1001, 0, {("t", 0)}) == NONE
    assert await coord.end_txn("done", 1001, 0, True) == NONE
    await settle(coord, "done", State.COMPLETE_COMMIT)
    return coord


def listed(r: m.ListTransactionsResponse) -> list[tuple[str, int, str]]:
    return sorted((s.transactional_id, s.producer_id, s.transaction_state) for s in r.transaction_states)


def test_describe_transactions(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            clock = Clock()
            start_ms = int(clock.now * 1000)
            coord = await open_transactions(h, clock)
            req = m.DescribeTransactionsRequest(transactional_ids=["tx", "done", "unknown", ""])
            r = await handle_describe_transactions(h.ctx(65, 0), req)
            tx, done, unknown, empty = r.transaction_states
            assert (tx.error_code, tx.transaction_state, tx.producer_id, tx.producer_epoch) == (
                NONE,
                "Ongoing",
                1000,
                0,
            )
            assert (tx.transaction_timeout_ms, tx.transaction_start_time_ms) == (30000, start_ms)
            assert [(t.topic, t.partitions) for t in tx.topics] == [("t", [0, 1])]
            assert (done.error_code, done.transaction_state, done.topics) == (NONE, "CompleteCommit", [])
            assert unknown.error_code == ErrorCode.TRANSACTIONAL_ID_NOT_FOUND
            assert empty.error_code == ErrorCode.INVALID_REQUEST
            await coord.drain()
        async with Harness(tmp_path / "b", txn_image(state_leader=1), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            r = await handle_describe_transactions(
                h.ctx(65, 0), m.DescribeTransactionsRequest(transactional_ids=["tx"])
            )
            assert r.transaction_states[0].error_code == ErrorCode.NOT_COORDINATOR
            await coord.drain()

    run(main())


def test_list_transactions_filters(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            clock = Clock()
            coord = await open_transactions(h, clock)

            async def ls(version: int = 1, **kw: Any) -> m.ListTransactionsResponse:
                r = await handle_list_transactions(h.ctx(66, version), m.ListTransactionsRequest(**kw))
                assert r.error_code == NONE
                return r

            everything = [("done", 1001, "CompleteCommit"), ("tx", 1000, "Ongoing")]
            assert listed(await ls()) == everything
            assert listed(await ls(state_filters=["Ongoing"])) == [("tx", 1000, "Ongoing")]
            r = await ls(state_filters=["Ongoing", "Bogus"])
            assert (listed(r), r.unknown_state_filters) == ([("tx", 1000, "Ongoing")], ["Bogus"])
            assert listed(await ls(state_filters=["Bogus"])) == everything  # as Kafka: no known filter
            assert listed(await ls(producer_id_filters=[1001])) == [("done", 1001, "CompleteCommit")]
            assert listed(await ls(producer_id_filters=[7])) == []
            # tx started 10 s ago, done 0 s ago (its start is its last transaction's)
            assert listed(await ls(duration_filter=5000)) == [("tx", 1000, "Ongoing")]
            assert listed(await ls(duration_filter=60000)) == []
            assert listed(await ls(version=0, duration_filter=60000)) == everything  # v0: no filter
            await coord.drain()
            r = await handle_list_transactions(h.ctx(66, 1), m.ListTransactionsRequest())
            assert r.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE

    run(main())


def test_transaction_apis_need_describe_on_the_transactional_id(tmp_path: Path) -> None:
    async def main() -> None:
        acls = (allow(Op.DESCRIBE, T.TRANSACTIONAL_ID, "tx"),)
        img = dataclasses.replace(txn_image(), acls=acls)
        async with Harness(tmp_path, img, props={**PROPS, **AUTHORIZER}) as h:
            recorder = Recorder()
            h.state.audit = recorder  # type: ignore[assignment]
            coord = await open_transactions(h, Clock())

            def ctx(key: int, version: int) -> Any:
                return dataclasses.replace(h.ctx(key, version), session=ALICE)

            req = m.DescribeTransactionsRequest(transactional_ids=["tx", "done"])
            tx, done = (await handle_describe_transactions(ctx(65, 0), req)).transaction_states
            # no DESCRIBE on topic t: the transaction is described without its partitions
            assert (tx.error_code, tx.transaction_state, tx.topics) == (NONE, "Ongoing", [])
            assert done.error_code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            assert ("DESCRIBE", "TRANSACTIONAL_ID", "done") in recorder.seen
            seen = len(recorder.seen)
            r = await handle_list_transactions(ctx(66, 1), m.ListTransactionsRequest())
            assert (r.error_code, listed(r)) == (NONE, [("tx", 1000, "Ongoing")])
            assert len(recorder.seen) == seen  # filtered silently
            await coord.drain()

    run(main())


def producers_request(*topics: tuple[str, list[int]]) -> m.DescribeProducersRequest:
    Rq = m.DescribeProducersRequest
    return Rq(topics=[Rq.TopicRequest(name=n, partition_indexes=ps) for n, ps in topics])


def test_describe_producers(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = await open_transactions(h, Clock())
            assert h.replicas.append("t", 1, txn_batch(1000, 0, count=3)).error_code == NONE
            assert h.replicas.append("t", 1, txn_batch(1000, 0, seq=3, count=2)).error_code == NONE
            req = producers_request(("t", [0, 1, 7]), ("r", [0]), ("nope", [0]), ("bad/name", [0]))
            r = await handle_describe_producers(h.ctx(61, 0), req)
            t, other, nope, bad = r.topics
            p0, p1, p7 = t.partitions
            # t-0: the marker of "done" only (no data batch of its own)
            (done,) = p0.active_producers
            assert (p0.error_code, done.producer_id, done.current_txn_start_offset) == (NONE, 1001, -1)
            assert done.coordinator_epoch == 0  # the coordinator's epoch in the marker
            (tx,) = p1.active_producers
            assert (tx.producer_id, tx.producer_epoch, tx.last_sequence, tx.current_txn_start_offset) == (
                1000,
                0,
                4,
                0,
            )
            assert tx.last_timestamp > 0
            assert p7.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert other.partitions[0].error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            assert nope.partitions[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert bad.partitions[0].error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
            assert bad.partitions[0].error_message
            await coord.drain()

    run(main())


def test_describe_producers_needs_read_on_the_topic(tmp_path: Path) -> None:
    async def main() -> None:
        img = dataclasses.replace(txn_image(), acls=(allow(Op.READ, T.TOPIC, "t"),))
        async with Harness(tmp_path, img, props={**PROPS, **AUTHORIZER}) as h:
            h.state.audit = Recorder()  # type: ignore[assignment]
            ctx = dataclasses.replace(h.ctx(61, 0), session=ALICE)
            r = await handle_describe_producers(ctx, producers_request(("t", [0]), ("missing", [0, 1])))
            t, missing = r.topics
            assert (t.partitions[0].error_code, t.partitions[0].active_producers) == (NONE, [])
            # denied before its existence is looked at, for every partition asked
            assert [p.error_code for p in missing.partitions] == [ErrorCode.TOPIC_AUTHORIZATION_FAILED] * 2

    run(main())


def test_transactions_are_counted_by_result(tmp_path: Path) -> None:
    async def main() -> None:
        table = CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=1, rows=64)
        try:
            async with Harness(tmp_path, txn_image(), props=PROPS) as h:
                h.replicas.counters = table.worker(0)
                clock = Clock()
                coord = await open_transactions(h, clock)  # "done": committed at once
                coord.publish_metrics()
                assert table.transactions[0, ctr.TXN_ONGOING] == 1  # tx
                # tx: 10 s old; timed out at 40 s (its timeout is 30 s)
                clock.now += 30
                assert await coord.abort_timed_out_transactions() == 1
                await settle(coord, "tx", State.COMPLETE_ABORT)
                # tx again (epoch 2 after the timeout's fence), then fenced by a new producer
                assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, 2)
                assert await coord.add_partitions("tx", 1000, 2, {("t", 0)}) == NONE
                clock.now += 1
                assert (await coord.init_producer_id("tx", 30000, None))[
                    0
                ] == ErrorCode.CONCURRENT_TRANSACTIONS
                await settle(coord, "tx", State.COMPLETE_ABORT)
                assert await coord.init_producer_id("done", 30000, None) == (NONE, 1001, 1)
                assert await coord.add_partitions("done", 1001, 1, {("t", 1)}) == NONE
                assert await coord.end_txn("done", 1001, 1, False) == NONE
                await settle(coord, "done", State.COMPLETE_ABORT)
                coord.publish_metrics()
                assert table.transactions[0].tolist()[:5] == [1, 1, 1, 1, 0]
                assert table.txn_hist[0].sum() == 4
                assert table.txn_sum[0] == pytest.approx(0 + 40 + 1 + 0)
                await coord.drain()
        finally:
            table.close()

    run(main())


def test_advertised_ranges() -> None:
    versions = discover().versions
    assert [versions[k] for k in (61, 65, 66)] == [(0, 0), (0, 0), (0, 1)]
