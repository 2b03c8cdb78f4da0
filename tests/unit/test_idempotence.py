"""Idempotent produce through the handler: retries, sequence gaps, epochs, restarts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shardbroker.broker.handlers.produce import handle_produce
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.file_names import CLEAN_SHUTDOWN_FILE
from tests.unit.replica_fakes import Harness, batch, image, run, topic

IMG = image(topic("t", 1))
PID = 4242


def produce(h: Harness, records: bytearray, version: int = 9) -> Any:
    async def go() -> Any:
        req = m.ProduceRequest(
            acks=-1,
            timeout_ms=5000,
            topic_data=[
                m.ProduceRequest.TopicProduceData(
                    name="t", partition_data=[m.ProduceRequest.PartitionProduceData(index=0, records=records)]
                )
            ],
        )
        resp = await handle_produce(h.ctx(0, version), req)
        assert resp is not None
        return resp.responses[0].partition_responses[0]

    return go()


def idem(seq: int, count: int = 2, epoch: int = 0, pid: int = PID) -> bytearray:
    return batch(count, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_a_retried_batch_is_answered_with_its_original_offset(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            assert (await produce(h, batch(3))).base_offset == 0  # a non-idempotent one first
            first = await produce(h, idem(0))
            second = await produce(h, idem(2))
            assert (first.error_code, first.base_offset, second.base_offset) == (0, 3, 5)
            again = await produce(h, idem(0))  # retry of an earlier batch, still in the last 5
            assert (again.error_code, again.base_offset) == (0, 3)
            again = await produce(h, idem(2))
            assert (again.error_code, again.base_offset) == (0, 5)
            p = h.replicas.get("t", 0)
            assert p is not None and p.high_watermark == 7  # nothing written twice

    run(main())


def test_out_of_order_sequence_and_stale_epoch_are_refused(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            assert (await produce(h, idem(0, epoch=1))).error_code == 0
            gap = await produce(h, idem(5, epoch=1))
            assert gap.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER and gap.base_offset == -1
            assert gap.error_message
            stale = await produce(h, idem(2, epoch=0))
            assert stale.error_code == ErrorCode.INVALID_PRODUCER_EPOCH
            bad_new_epoch = await produce(h, idem(3, epoch=2))
            assert bad_new_epoch.error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
            bumped = await produce(h, idem(0, epoch=2))  # KIP-360: a new epoch from sequence 0
            assert (bumped.error_code, bumped.base_offset) == (0, 2)
            p = h.replicas.get("t", 0)
            assert p is not None and p.high_watermark == 4

    run(main())


def test_unknown_producer_must_start_at_sequence_0(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            unknown = await produce(h, idem(7, pid=99))
            assert unknown.error_code == ErrorCode.UNKNOWN_PRODUCER_ID
            assert (await produce(h, idem(0, pid=99))).error_code == 0
            assert (await produce(h, idem(2, pid=99))).error_code == 0

    run(main())


def test_producer_state_survives_a_clean_restart(tmp_path: Path) -> None:
    async def first() -> None:
        async with Harness(tmp_path, IMG) as h:
            await produce(h, idem(0))
            await produce(h, idem(2))

    run(first())

    async def second() -> None:
        async with Harness(tmp_path, IMG) as h:
            dup = await produce(h, idem(2))
            assert (dup.error_code, dup.base_offset) == (0, 2)
            assert (await produce(h, idem(6))).error_code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
            nxt = await produce(h, idem(4))
            assert (nxt.error_code, nxt.base_offset) == (0, 4)

    run(second())


def test_producer_state_survives_a_crash(tmp_path: Path) -> None:
    async def first() -> None:
        h = Harness(tmp_path, IMG)
        await h.replicas.start(None)
        await produce(h, idem(0))
        await produce(h, idem(2))
        await h.replicas.drain()
        (tmp_path / "t-0" / CLEAN_SHUTDOWN_FILE).unlink()  # as if killed: the next open recovers

    run(first())

    async def second() -> None:
        async with Harness(tmp_path, IMG) as h:
            p = h.replicas.get("t", 0)
            assert p is not None and not p.log.recovery_stats.clean_shutdown
            dup = await produce(h, idem(0))
            assert (dup.error_code, dup.base_offset) == (0, 0)
            assert (await produce(h, idem(4))).base_offset == 4

    run(second())
