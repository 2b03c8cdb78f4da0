"""Transaction verification at the partition (KIP-890 part 1, broker/txn_verification.py): which
batches ask the coordinator, how its answers become Produce errors, the frame a sibling worker's
question travels in, and the gate that keeps a partition's later batches behind a waiting one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from shardbroker.broker.forwarding import ForwardResult
from shardbroker.broker.transaction_metadata import TransactionState
from shardbroker.broker.txn_verification import (
    TransactionVerifier,
    answer_verification,
    decode_verification,
    encode_verification,
)
from shardbroker.ipc.local_protocol import FLAG_TXN_VERIFY
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, run
from tests.unit.test_transaction_coordinator import (
    PROPS,
    Clock,
    FakeForwarder,
    coordinator,
    settle,
    txn_batch,
    txn_image,
)

NONE = int(ErrorCode.NONE)


class SlowForwarder:
    """The coordinator's worker answers each question when the test says so."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, str, int, bytes, int]] = []
        self.answers: list[asyncio.Future[ForwardResult]] = []

    async def send(
        self, node: int, topic: str, partition: int, body: bytes, acks: int, timeout: float, flags: int = 0
    ) -> asyncio.Future[ForwardResult]:
        self.asked.append((node, topic, partition, bytes(body), flags))
        fut: asyncio.Future[ForwardResult] = asyncio.get_running_loop().create_future()
        self.answers.append(fut)
        return fut


def test_the_question_frame_round_trips() -> None:
    body = encode_verification("tx-é", 1000, 7)
    assert decode_verification(body) == ("tx-é", 1000, 7)
    assert answer_verification(None, "t", 0, body) == ErrorCode.COORDINATOR_NOT_AVAILABLE


def test_the_coordinator_here_answers_and_produce_errors_are_kafkas(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())
            await coord.start(None)
            await coord.init_producer_id("tx", 30000, None)
            assert await coord.add_partitions("tx", 1000, 0, {("t", 0)}) == NONE
            assert answer_verification(coord, "t", 0, encode_verification("tx", 1000, 0)) == NONE
            assert (
                answer_verification(coord, "t", 1, encode_verification("tx", 1000, 0))
                == ErrorCode.INVALID_TXN_STATE
            )
            assert (
                answer_verification(coord, "t", 0, encode_verification("tx", 1000, 1))
                == ErrorCode.PRODUCER_FENCED
            )
            assert answer_verification(coord, "t", 0, b"\x00") == ErrorCode.INVALID_REQUEST

            v = TransactionVerifier(0, h.replicas, coord, None)
            appended: list[int] = []

            def refused(code: int) -> int:
                return -code

            async def produce(index: int, epoch: int, seq: int) -> int:
                batch = txn_batch(1000, epoch, seq=seq)

                def append() -> int:
                    appended.append(index)
                    return h.replicas.append("t", index, batch).error_code

                return await v.run("t", index, batch, "tx", 5.0, refused, append)

            batch = txn_batch(1000, 0)
            assert v.needed("t", 0, batch, "tx") and not v.needed("t", 0, batch, None)
            assert not v.needed("t", 0, txn_batch(1000, 0)[:20], "tx")  # not a whole header
            assert await produce(1, 0, 0) == -ErrorCode.INVALID_TXN_STATE  # never added
            assert await produce(0, 1, 0) == -ErrorCode.INVALID_PRODUCER_EPOCH  # PRODUCER_FENCED
            assert appended == []
            assert await produce(0, 0, 0) == NONE
            assert not v.needed("t", 0, txn_batch(1000, 0, seq=2), "tx")  # open here: no question
            assert await coord.end_txn("tx", 1000, 0, True) == NONE
            await settle(coord, "tx", TransactionState.COMPLETE_COMMIT)
            # a late batch of the committed transaction (transactions v1: the same epoch) is
            # asked about, and refused: the partition is in no open transaction
            assert v.needed("t", 0, txn_batch(1000, 0, seq=2), "tx")
            assert await produce(0, 0, 2) == -ErrorCode.INVALID_TXN_STATE
            assert appended == [0]
            await coord.drain()

    run(main())


def test_later_batches_of_a_partition_wait_behind_a_question(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, txn_image(state_leader=1), props=PROPS) as h:
            coord = coordinator(h, FakeForwarder(), Clock())  # the coordinator is worker 1's
            await coord.start(None)
            fwd = SlowForwarder()
            v = TransactionVerifier(0, h.replicas, coord, fwd)  # type: ignore[arg-type]
            order: list[str] = []

            def go(name: str, batch: Any, index: int = 0, tid: str | None = "tx") -> asyncio.Task[str]:
                def append() -> str:
                    order.append(name)
                    return name

                return asyncio.ensure_future(v.run("t", index, batch, tid, 5.0, str, append))

            first = go("first", txn_batch(1000, 0))
            await asyncio.sleep(0.01)
            plain = bytearray(txn_batch(1000, 0))
            assert v.needed("t", 0, plain, None)  # behind a waiting batch: waits too
            second = go("second", plain, tid=None)
            third = go("other partition", txn_batch(1000, 0), index=1)
            await asyncio.sleep(0.01)
            assert order == [] and len(fwd.asked) == 2  # partition 1 asks at once
            (node, topic, index, body, flags) = fwd.asked[0]
            assert (node, topic, index, flags, decode_verification(body)) == (
                1,
                "t",
                0,
                FLAG_TXN_VERIFY,
                ("tx", 1000, 0),
            )
            fwd.answers[0].set_result(ForwardResult(NONE))
            assert await first == "first"
            assert await second == "second"  # no transactional id: not asked, only queued
            assert order == ["first", "second"]
            fwd.answers[1].set_result(ForwardResult(int(ErrorCode.NOT_COORDINATOR)))
            assert await third == str(int(ErrorCode.NOT_ENOUGH_REPLICAS))
            assert not v.needed("t", 0, plain, None)  # the gate is gone
            await coord.drain()

    run(main())
