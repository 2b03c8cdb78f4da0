"""The transaction coordinator over a real ReplicaManager (tests/unit/replica_fakes.py): its records
in ``__transaction_state``, markers here and (through a fake forwarder) on another worker,
reload after a restart, fencing, timeouts, expiry, and the transaction handlers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shardbroker.broker.dispatch import discover
from shardbroker.broker.forwarding import ForwardResult
from shardbroker.broker.group_metadata_manager import replay_records
from shardbroker.broker.handlers.add_offsets_to_txn import handle_add_offsets_to_txn
from shardbroker.broker.handlers.add_partitions_to_txn import handle_add_partitions_to_txn
from shardbroker.broker.handlers.end_txn import handle_end_txn
from shardbroker.broker.handlers.find_coordinator import handle_find_coordinator
from shardbroker.broker.handlers.init_producer_id import handle_init_producer_id
from shardbroker.broker.handlers.write_txn_markers import handle_write_txn_markers
from shardbroker.broker.local_clients import LocalClientService
from shardbroker.broker.transaction_coordinator import TransactionCoordinator
from shardbroker.broker.transaction_log import decode_transaction_log_key, decode_transaction_log_value
from shardbroker.broker.transaction_metadata import TransactionState
from shardbroker.broker.transaction_state_manager import TRANSACTION_STATE_TOPIC
from shardbroker.broker.txn_markers import MarkerWriter, TxnMarker
from shardbroker.ipc.local_protocol import ACK, FLAG_TXN_MARKER, FLAG_TXN_MARKER_V2
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.security.principal import KafkaPrincipal
from tests.unit.replica_fakes import Harness, image, run, topic
from tests.unit.test_authz_data import ALICE, AUTHORIZER, Op, Recorder, T, allow

S = TransactionState
NONE = int(ErrorCode.NONE)
PROPS = {"transaction.state.log.num.partitions": "1", "transaction.max.timeout.ms": "60000"}


def txn_image(state_leader: int = 0) -> Any:
    return image(
        topic(TRANSACTION_STATE_TOPIC, 1, leaders=[state_leader]),
        topic("t", 2),
        topic("r", 1, leaders=[1]),  # led by the other worker
        topic("__consumer_offsets", 1),
    )


class FakeForwarder:
    """ProduceForwarder's ``send``: records the frames; answers ``code``."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str, int, bytes, int]] = []
        self.code = NONE

    async def send(
        self, node: int, topic: str, partition: int, batch: bytes, acks: int, timeout: float, flags: int = 0
    ) -> ForwardResult:
        self.sent.append((node, topic, partition, bytes(batch), flags))
        return ForwardResult(self.code, 0 if not self.code else -1)


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def coordinator(h: Harness, forwarder: FakeForwarder, clock: Callable[[], float]) -> TransactionCoordinator:
    markers = MarkerWriter(0, h.replicas, forwarder)  # type: ignore[arg-type]
    coord = TransactionCoordinator(0, h.config, h.channel, h.replicas, markers, wall_clock=clock)
    h.state.transactions = coord
    return coord


def txn_batch(pid: int, epoch: int, seq: int = 0, count: int = 2) -> bytearray:
    b = RecordBatchBuilder(producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=True)
    for i in range(count):
        b.append(b"v%d" % i)
    return bytearray(b.build())


def state_records(h: Harness) -> list[tuple[str, int | None, int, int]]:
    """(id, state id or None for a tombstone, producer id, epoch) of every __transaction_state record."""
    p = h.replicas.get(TRANSACTION_STATE_TOPIC, 0)
    assert p is not None
    out = []
    for _, key, value in replay_records(p.log, "test"):
        tid = decode_transaction_log_key(key)
        assert tid is not None
        v = decode_transaction_log_value(value)
        out.append(
            (
                tid,
                None if v is None else v.transaction_status,
                -1 if v is None else v.producer_id,
                -1 if v is None else v.producer_epoch,
            )
        )
    return out


def control_batches(h: Harness, name: str, index: int) -> list[tuple[int, int, bytes]]:
    """(producer id, epoch, marker key) of the control batches of a partition."""
    p = h.replicas.get(name, index)
    assert p is not None
    data = p.log.read_bytes(0, 1 << 20)
    out = []
    for b in iter_batches(data):
        if b.is_control:
            (rec,) = list(b.records())
            assert rec.key is not None
            out.append((b.producer_id, b.producer_epoch, bytes(rec.key)))
    return out


COMMIT_KEY, ABORT_KEY = b"\x00\x00\x00\x01", b"\x00\x00\x00\x00"


async def settle(coord: TransactionCoordinator, tid: str, *states: S) -> None:
    for _ in range(300):
        md = coord.state.transactions.get(tid)
        if md is not None and md.state in states and not md.pending:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{tid} never reached {states}: {coord.state.transactions.get(tid)}")


def test_init_commit_and_markers_here_and_on_the_other_worker(tmp_path: Path) -> None:
    async def main() -> None:
        fwd = FakeForwarder()
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, fwd, Clock())
            await coord.start(None)
            assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, 0)
            assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, 1)  # re-init bumps
            parts = {("t", 0), ("t", 1), ("r", 0)}
            assert await coord.add_partitions("tx", 1000, 1, parts) == NONE
            assert h.replicas.append("t", 0, txn_batch(1000, 1)).error_code == NONE
            assert await coord.end_txn("tx", 1000, 1, True) == NONE
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            assert control_batches(h, "t", 0) == [(1000, 1, COMMIT_KEY)]
            assert control_batches(h, "t", 1) == [(1000, 1, COMMIT_KEY)]  # an empty partition too
            ((node, name, index, batch, flags),) = fwd.sent
            assert (node, name, index, flags) == (1, "r", 0, FLAG_TXN_MARKER)
            (marker,) = iter_batches(batch)
            assert marker.is_control and (marker.producer_id, marker.producer_epoch) == (1000, 1)
            assert state_records(h) == [
                ("tx", 0, 1000, 0),
                ("tx", 0, 1000, 1),
                ("tx", 1, 1000, 1),
                ("tx", 2, 1000, 1),
                ("tx", 4, 1000, 1),
            ]
            # the LSO moved past the transaction
            p = h.replicas.get("t", 0)
            assert p is not None and p.log.last_stable_offset == p.log.log_end_offset
            await coord.drain()

    run(main())


def test_abort_and_end_txn_errors(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            assert await coord.end_txn("nobody", 1, 0, True) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
            await coord.init_producer_id("tx", 30000, None)
            assert await coord.end_txn("tx", 1000, 0, True) == ErrorCode.INVALID_TXN_STATE  # Empty
            assert await coord.add_partitions("tx", 1000, 0, {("t", 0)}) == NONE
            assert h.replicas.append("t", 0, txn_batch(1000, 0)).error_code == NONE
            assert await coord.end_txn("tx", 1000, 1, False) == ErrorCode.PRODUCER_FENCED
            assert await coord.end_txn("tx", 1001, 0, False) == ErrorCode.INVALID_PRODUCER_ID_MAPPING
            assert await coord.end_txn("tx", 1000, 0, False) == NONE
            await settle(coord, "tx", S.COMPLETE_ABORT)
            assert control_batches(h, "t", 0) == [(1000, 0, ABORT_KEY)]
            assert await coord.end_txn("tx", 1000, 0, False) == NONE  # a retry
            assert await coord.end_txn("tx", 1000, 0, True) == ErrorCode.INVALID_TXN_STATE
            await coord.drain()

    run(main())


def test_timeouts_are_bounded_and_coordination_is_checked(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(state_leader=1), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            assert (await coord.init_producer_id("tx", 60001, None))[
                0
            ] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
            assert (await coord.init_producer_id("tx", 0, None))[0] == ErrorCode.INVALID_TRANSACTION_TIMEOUT
            assert (await coord.init_producer_id("tx", 1000, None))[0] == ErrorCode.NOT_COORDINATOR
            assert await coord.add_partitions("tx", 1, 0, {("t", 0)}) == ErrorCode.NOT_COORDINATOR
            assert coord.coordinator_of("tx") == (NONE, 1)
            await coord.drain()
        async with Harness(tmp_path / "x", image(topic("t", 1)), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            assert coord.check("tx") == ErrorCode.COORDINATOR_NOT_AVAILABLE  # no topic yet
            await coord.drain()

    run(main())


def test_a_new_producer_fences_the_open_transaction(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            await coord.init_producer_id("tx", 30000, None)
            assert await coord.add_partitions("tx", 1000, 0, {("t", 0)}) == NONE
            assert h.replicas.append("t", 0, txn_batch(1000, 0)).error_code == NONE
            # the second producer: its first InitProducerId aborts the open transaction
            assert (await coord.init_producer_id("tx", 30000, None))[0] == ErrorCode.CONCURRENT_TRANSACTIONS
            await settle(coord, "tx", S.COMPLETE_ABORT)
            assert control_batches(h, "t", 0) == [(1000, 1, ABORT_KEY)]  # at the bumped epoch
            assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, 2)
            # the first producer is fenced
            assert await coord.add_partitions("tx", 1000, 0, {("t", 1)}) == ErrorCode.PRODUCER_FENCED
            assert await coord.end_txn("tx", 1000, 0, True) == ErrorCode.PRODUCER_FENCED
            assert (
                h.replicas.append("t", 0, txn_batch(1000, 0, seq=2)).error_code
                == ErrorCode.INVALID_PRODUCER_EPOCH
            )
            await coord.drain()

    run(main())


@pytest.mark.parametrize("transaction_version", [1, 2])
def test_restart_reloads_and_finishes_a_prepared_commit(tmp_path: Path, transaction_version: int) -> None:
    """Also for transactions v2 (EndTxn v5): the bumped epoch and the version come back from the
    record (value v1), so the markers written after the restart are v2 ones at that epoch."""
    v2 = transaction_version == 2
    epoch = 1 if v2 else 0  # of the markers

    async def main() -> None:
        fwd = FakeForwarder()
        fwd.code = int(ErrorCode.NOT_LEADER_OR_FOLLOWER)  # the other worker is away
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, fwd, Clock())
            await coord.start(None)
            await coord.init_producer_id("tx", 30000, None)
            await coord.add_partitions("tx", 1000, 0, {("t", 0), ("r", 0)})
            if v2:
                assert await coord.end_txn_v2("tx", 1000, 0, True) == (NONE, 1000, 1)
            else:
                assert await coord.end_txn("tx", 1000, 0, True) == NONE  # answered after PrepareCommit
            await asyncio.sleep(0.3)
            md = coord.state.transactions["tx"]
            assert md.state == S.PREPARE_COMMIT and len(fwd.sent) > 1  # retried
            code = await coord.add_partitions("tx", 1000, epoch, {("t", 1)})
            assert code == ErrorCode.CONCURRENT_TRANSACTIONS
            await coord.drain()
        fwd.code, fwd.sent = NONE, []
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, fwd, Clock())
            await coord.start(None)  # the load finds PrepareCommit and finishes it
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            _, name, index, batch, flags = fwd.sent[-1]
            assert (name, index, flags) == ("r", 0, FLAG_TXN_MARKER | (FLAG_TXN_MARKER_V2 if v2 else 0))
            (marker,) = iter_batches(batch)
            assert marker.producer_epoch == epoch
            assert set(control_batches(h, "t", 0)) == {(1000, epoch, COMMIT_KEY)}  # written again: harmless
            assert [r[1] for r in state_records(h)] == [0, 1, 2, 4]
            assert await coord.init_producer_id("tx", 30000, None) == (NONE, 1000, epoch + 1)
            await coord.drain()

    run(main())


def test_timed_out_transactions_are_aborted_and_idle_ids_expire(tmp_path: Path) -> None:
    async def main() -> None:
        clock = Clock()
        async with Harness(
            tmp_path, txn_image(), props={**PROPS, "transactional.id.expiration.ms": "1000"}
        ) as h:
            coord = coordinator(h, FakeForwarder(), clock)
            await coord.start(None)
            await coord.init_producer_id("tx", 5000, None)
            await coord.add_partitions("tx", 1000, 0, {("t", 0)})
            assert await coord.abort_timed_out_transactions() == 0
            clock.now += 6
            assert await coord.abort_timed_out_transactions() == 1
            await settle(coord, "tx", S.COMPLETE_ABORT)
            md = coord.state.transactions["tx"]
            assert md.producer_epoch == 1  # fenced
            assert control_batches(h, "t", 0) == [(1000, 1, ABORT_KEY)]
            assert await coord.state.expire_transactional_ids(coord.state.wall_ms()) == 0
            clock.now += 2
            assert await coord.state.expire_transactional_ids(coord.state.wall_ms()) == 1
            assert "tx" not in coord.state.transactions
            assert state_records(h)[-1] == ("tx", None, -1, -1)  # the tombstone
            await coord.drain()
            coord = coordinator(h, FakeForwarder(), clock)
            await coord.start(None)
            assert "tx" not in coord.state.transactions  # stays forgotten after a reload
            await coord.drain()

    run(main())


# ---------------------------------------------------------------- handlers


def test_handlers(tmp_path: Path) -> None:
    async def main() -> None:
        fwd = FakeForwarder()
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, fwd, Clock())
            await coord.start(None)
            r = await handle_find_coordinator(h.ctx(10, 3), m.FindCoordinatorRequest(key="tx", key_type=1))
            assert (r.error_code, r.node_id, r.port) == (NONE, 0, 9092)
            r = await handle_find_coordinator(
                h.ctx(10, 4), m.FindCoordinatorRequest(key_type=1, coordinator_keys=[""])
            )
            assert r.coordinators[0].error_code == ErrorCode.INVALID_REQUEST
            init = await handle_init_producer_id(
                h.ctx(22, 4), m.InitProducerIdRequest(transactional_id="tx", transaction_timeout_ms=30000)
            )
            assert (init.error_code, init.producer_id, init.producer_epoch) == (NONE, 1000, 0)
            add = m.AddPartitionsToTxnRequest(
                v3_and_below_transactional_id="tx",
                v3_and_below_producer_id=1000,
                v3_and_below_producer_epoch=0,
                v3_and_below_topics=[
                    m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name="t", partitions=[0, 1]),
                    m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name="nope", partitions=[0]),
                ],
            )
            r = await handle_add_partitions_to_txn(h.ctx(24, 3), add)
            codes = {
                (t.name, p.partition_index): p.partition_error_code
                for t in r.results_by_topic_v3_and_below
                for p in t.results_by_partition
            }
            assert codes == {
                ("t", 0): ErrorCode.OPERATION_NOT_ATTEMPTED,
                ("t", 1): ErrorCode.OPERATION_NOT_ATTEMPTED,
                ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            }
            add.v3_and_below_topics.pop()
            r = await handle_add_partitions_to_txn(h.ctx(24, 3), add)
            assert {
                p.partition_error_code
                for t in r.results_by_topic_v3_and_below
                for p in t.results_by_partition
            } == {NONE}
            add.v3_and_below_producer_epoch = 7
            r = await handle_add_partitions_to_txn(h.ctx(24, 1), add)  # PRODUCER_FENCED before v2
            assert (
                r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
                == ErrorCode.INVALID_PRODUCER_EPOCH
            )
            # v4: verify only
            verify = m.AddPartitionsToTxnRequest(
                transactions=[
                    m.AddPartitionsToTxnRequest.AddPartitionsToTxnTransaction(
                        transactional_id="tx",
                        producer_id=1000,
                        producer_epoch=0,
                        verify_only=True,
                        topics=[
                            m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name="t", partitions=[1]),
                            m.AddPartitionsToTxnRequest.AddPartitionsToTxnTopic(name="r", partitions=[0]),
                        ],
                    )
                ]
            )
            r = await handle_add_partitions_to_txn(h.ctx(24, 4), verify)
            (res,) = r.results_by_transaction
            assert {
                (t.name, p.partition_error_code) for t in res.topic_results for p in t.results_by_partition
            } == {("t", NONE), ("r", ErrorCode.INVALID_TXN_STATE)}
            offsets = m.AddOffsetsToTxnRequest(
                transactional_id="tx", producer_id=1000, producer_epoch=0, group_id="g"
            )
            assert (
                await handle_add_offsets_to_txn(h.ctx(25, 3), offsets)
            ).error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE  # no group coordinator here
            end = await handle_end_txn(
                h.ctx(26, 1),
                m.EndTxnRequest(transactional_id="tx", producer_id=1000, producer_epoch=3, committed=True),
            )
            assert end.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
            end = await handle_end_txn(
                h.ctx(26, 3),
                m.EndTxnRequest(transactional_id="tx", producer_id=1000, producer_epoch=3, committed=True),
            )
            assert end.error_code == ErrorCode.PRODUCER_FENCED
            end = await handle_end_txn(
                h.ctx(26, 3),
                m.EndTxnRequest(transactional_id="tx", producer_id=1000, producer_epoch=0, committed=True),
            )
            assert end.error_code == NONE
            await settle(coord, "tx", S.COMPLETE_COMMIT)
            # WriteTxnMarkers: an admin's abort of a hanging transaction of producer 5
            assert h.replicas.append("t", 1, txn_batch(5, 0)).error_code == NONE
            W = m.WriteTxnMarkersRequest
            req = W(
                markers=[
                    W.WritableTxnMarker(
                        producer_id=5,
                        producer_epoch=0,
                        transaction_result=False,
                        coordinator_epoch=0,
                        topics=[
                            W.WritableTxnMarkerTopic(name="t", partition_indexes=[1]),
                            W.WritableTxnMarkerTopic(name="gone", partition_indexes=[0]),
                        ],
                    )
                ]
            )
            r = await handle_write_txn_markers(h.ctx(27, 1), req)
            assert {(t.name, p.error_code) for t in r.markers[0].topics for p in t.partitions} == {
                ("t", NONE),
                ("gone", ErrorCode.UNKNOWN_TOPIC_OR_PARTITION),
            }
            assert control_batches(h, "t", 1)[-1] == (5, 0, ABORT_KEY)
            await coord.drain()

    run(main())


# ---------------------------------------------------------------- authorization (KafkaApis' checks)


def test_authorization(tmp_path: Path) -> None:
    async def main() -> None:
        acls = (allow(Op.WRITE, T.TRANSACTIONAL_ID, "tx"), allow(Op.WRITE, T.TOPIC, "t"))
        img = dataclasses.replace(txn_image(), acls=acls)
        async with Harness(tmp_path, img, props={**PROPS, **AUTHORIZER}) as h:
            h.state.audit = Recorder()  # type: ignore[assignment]
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)

            def ctx(key: int, version: int) -> Any:
                return dataclasses.replace(h.ctx(key, version), session=ALICE)

            def init(tid: str) -> m.InitProducerIdRequest:
                return m.InitProducerIdRequest(transactional_id=tid, transaction_timeout_ms=30000)

            assert (
                await handle_init_producer_id(ctx(22, 4), init("other"))
            ).error_code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            assert (await handle_init_producer_id(ctx(22, 4), init("tx"))).error_code == NONE
            Rq = m.AddPartitionsToTxnRequest

            def add(tid: str, *names: str) -> Rq:
                return Rq(
                    v3_and_below_transactional_id=tid,
                    v3_and_below_producer_id=1000,
                    v3_and_below_producer_epoch=0,
                    v3_and_below_topics=[Rq.AddPartitionsToTxnTopic(name=n, partitions=[0]) for n in names],
                )

            def codes(r: m.AddPartitionsToTxnResponse) -> dict[str, int]:
                return {
                    t.name: t.results_by_partition[0].partition_error_code
                    for t in r.results_by_topic_v3_and_below
                }

            assert codes(await handle_add_partitions_to_txn(ctx(24, 3), add("other", "t"))) == {
                "t": ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            }
            assert codes(await handle_add_partitions_to_txn(ctx(24, 3), add("tx", "t", "r"))) == {
                "t": ErrorCode.OPERATION_NOT_ATTEMPTED,
                "r": ErrorCode.TOPIC_AUTHORIZATION_FAILED,
            }
            assert codes(await handle_add_partitions_to_txn(ctx(24, 3), add("tx", "t"))) == {"t": NONE}
            v4 = Rq(
                transactions=[
                    Rq.AddPartitionsToTxnTransaction(
                        transactional_id="tx", producer_id=1000, verify_only=True
                    )
                ]
            )
            assert (
                await handle_add_partitions_to_txn(ctx(24, 4), v4)
            ).error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
            offsets = m.AddOffsetsToTxnRequest(
                transactional_id="tx", producer_id=1000, producer_epoch=0, group_id="g"
            )
            assert (
                await handle_add_offsets_to_txn(ctx(25, 3), offsets)
            ).error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED
            offsets.transactional_id = "other"
            assert (
                await handle_add_offsets_to_txn(ctx(25, 3), offsets)
            ).error_code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            end = m.EndTxnRequest(
                transactional_id="other", producer_id=1000, producer_epoch=0, committed=True
            )
            assert (
                await handle_end_txn(ctx(26, 3), end)
            ).error_code == ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            W = m.WriteTxnMarkersRequest
            req = W(
                markers=[
                    W.WritableTxnMarker(
                        producer_id=5, topics=[W.WritableTxnMarkerTopic(name="t", partition_indexes=[0])]
                    )
                ]
            )
            r = await handle_write_txn_markers(ctx(27, 1), req)
            assert r.markers[0].topics[0].partitions[0].error_code == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
            assert control_batches(h, "t", 0) == []
            assert ("CLUSTER_ACTION", "CLUSTER", "kafka-cluster") in h.state.audit.seen  # type: ignore[attr-defined]
            await coord.drain()

    run(main())


# ---------------------------------------------------------------- markers through the rings (owner side)


def test_a_forwarded_marker_is_appended_only_for_a_sibling_worker(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            svc = LocalClientService(h.state)
            assert h.replicas.append("t", 0, txn_batch(5, 0)).error_code == NONE
            marker = TxnMarker(5, 0, 0, commit=True).batch()
            out: list[bytes] = []
            durable: list[Any] = []
            local_app = SimpleNamespace(principal=KafkaPrincipal.user("bob"), rerouting={})
            svc._marker(local_app, ("t", 0), (1, -1, 0, marker), out, durable)  # type: ignore[arg-type]
            assert ACK.unpack(out[-1])[3] == ErrorCode.CLUSTER_AUTHORIZATION_FAILED
            assert control_batches(h, "t", 0) == []
            sibling = SimpleNamespace(principal=None, rerouting={})
            svc._marker(sibling, ("r", 0), (2, -1, 0, marker), out, durable)  # type: ignore[arg-type]
            assert ACK.unpack(out[-1])[3] == ErrorCode.NOT_LEADER_OR_FOLLOWER  # not led here
            svc._marker(sibling, ("t", 0), (3, -1, 0, marker), out, durable)  # type: ignore[arg-type]
            assert ACK.unpack(out[-1])[:4] == (3, 2, -1, NONE)
            assert control_batches(h, "t", 0) == [(5, 0, COMMIT_KEY)]
            # Transactions v2 (the frame's FLAG_TXN_MARKER_V2): the marker's epoch must be newer
            # than the transaction's data, so a marker at the data's epoch is a stale one.
            assert h.replicas.append("t", 0, txn_batch(6, 3)).error_code == NONE
            stale, bumped = (TxnMarker(6, e, 0, commit=False, transaction_version=2).batch() for e in (3, 4))
            svc._marker(sibling, ("t", 0), (4, -1, 2, stale), out, durable)  # type: ignore[arg-type]
            assert ACK.unpack(out[-1])[3] == ErrorCode.INVALID_PRODUCER_EPOCH
            svc._marker(sibling, ("t", 0), (5, -1, 2, bumped), out, durable)  # type: ignore[arg-type]
            assert ACK.unpack(out[-1])[3] == NONE
            assert control_batches(h, "t", 0)[-1] == (6, 4, ABORT_KEY)
            assert h.replicas.append("t", 0, txn_batch(6, 3)).error_code == ErrorCode.INVALID_PRODUCER_EPOCH

    run(main())


def test_advertised_ranges() -> None:
    versions = discover().versions
    # EndTxn v5: transactions v2 (KIP-890 part 2) for a client that sends it, as Kafka 4
    assert [versions[k] for k in (22, 24, 25, 26, 27)] == [(0, 5), (0, 5), (0, 4), (0, 5), (0, 1)]
