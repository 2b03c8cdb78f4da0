"""ListOffsets, DeleteRecords, OffsetForLeaderEpoch and InitProducerId handlers."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.handlers.delete_records import delete_records_error_response, handle_delete_records
from shardbroker.broker.handlers.init_producer_id import handle_init_producer_id
from shardbroker.broker.handlers.list_offsets import handle_list_offsets, list_offsets_error_response
from shardbroker.broker.handlers.offset_for_leader_epoch import (
    handle_offset_for_leader_epoch,
    offset_for_leader_epoch_error_response,
)
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import encode
from shardbroker.protocol.errors import ErrorCode
from tests.unit.replica_fakes import Harness, batch, image, run, topic

IMG = image(topic("t", 2, leaders=[0, 1], epoch=5))
T0 = int(time.time() * 1000) - 3_600_000  # recent: retention (7 days) must not delete the data


def list_offsets(h: Harness, version: int, timestamp: int, partition: int = 0, epoch: int = -1) -> Any:
    async def go() -> Any:
        req = m.ListOffsetsRequest(
            replica_id=-1,
            topics=[
                m.ListOffsetsRequest.ListOffsetsTopic(
                    name="t",
                    partitions=[
                        m.ListOffsetsRequest.ListOffsetsPartition(
                            partition_index=partition, timestamp=timestamp, current_leader_epoch=epoch
                        )
                    ],
                )
            ],
        )
        resp = await handle_list_offsets(h.ctx(2, version), req)
        encode(resp, version)
        return resp.topics[0].partitions[0]

    return go()


async def fill(h: Harness) -> None:
    rm = h.replicas
    rm.append("t", 0, batch(3, timestamps=[T0, T0 + 1000, T0 + 2000]))  # offsets 0-2
    rm.append("t", 0, batch(3, timestamps=[T0 + 9000, T0 + 3000, T0 + 4000]))  # 3-5, max ts at 3
    rm.append("t", 0, batch(2, timestamps=[T0 + 5000, T0 + 6000]))  # 6-7


@pytest.mark.parametrize("version", [1, 4, 7, 9, 10])
def test_list_offsets_special_timestamps_and_by_time(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            await fill(h)

            async def at(ts: int) -> tuple[int, int, int]:
                r = await list_offsets(h, version, ts)
                assert r.error_code == 0
                return r.timestamp, r.offset, r.leader_epoch

            epoch = 5 if version >= 4 else -1
            assert await at(-1) == (-1, 8, epoch)
            assert await at(-2) == (-1, 0, epoch)
            assert await at(T0 + 1000) == (T0 + 1000, 1, epoch)  # the record, not its batch
            assert await at(T0 + 1500) == (T0 + 2000, 2, epoch)
            assert await at(T0 + 2500) == (T0 + 9000, 3, epoch)
            # Kafka's rule: the first batch whose max timestamp qualifies, then its first record that does
            assert await at(T0 + 5500) == (T0 + 9000, 3, epoch)
            assert (await at(T0 + 99_000))[:2] == (-1, -1)
            if version >= 7:
                assert await at(-3) == (T0 + 9000, 3, epoch)
            if version >= 9:
                assert (await at(-5))[:2] == (-1, -1)

    run(main())


def test_list_offsets_v0_errors_and_fencing(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            await fill(h)
            assert (await list_offsets(h, 0, -1)).old_style_offsets == [8]
            assert (await list_offsets(h, 0, -2)).old_style_offsets == [0]
            assert (await list_offsets(h, 0, T0 + 99_000)).old_style_offsets == []
            assert (await list_offsets(h, 5, -1, partition=1)).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            assert (
                await list_offsets(h, 5, -1, partition=9)
            ).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert (await list_offsets(h, 5, -1, epoch=4)).error_code == ErrorCode.FENCED_LEADER_EPOCH
            assert (await list_offsets(h, 5, -1, epoch=6)).error_code == ErrorCode.UNKNOWN_LEADER_EPOCH
            h.replicas.get("t", 0).log.delete_records(4)  # type: ignore[union-attr]
            assert (await list_offsets(h, 5, -2)).offset == 4
            assert (await list_offsets(h, 5, T0)).offset == 4  # never below the log start

    run(main())
    req = m.ListOffsetsRequest(
        topics=[
            m.ListOffsetsRequest.ListOffsetsTopic(
                name="t", partitions=[m.ListOffsetsRequest.ListOffsetsPartition()]
            )
        ]
    )
    resp = list_offsets_error_response(req, 5, ErrorCode.UNKNOWN_SERVER_ERROR, "x")
    assert resp.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR


def delete_records(h: Harness, offsets: dict[int, int]) -> Any:
    async def go() -> Any:
        req = m.DeleteRecordsRequest(
            topics=[
                m.DeleteRecordsRequest.DeleteRecordsTopic(
                    name="t",
                    partitions=[
                        m.DeleteRecordsRequest.DeleteRecordsPartition(partition_index=p, offset=o)
                        for p, o in offsets.items()
                    ],
                )
            ],
            timeout_ms=1000,
        )
        resp = await handle_delete_records(h.ctx(21, 2), req)
        encode(resp, 2)
        return {p.partition_index: (p.error_code, p.low_watermark) for p in resp.topics[0].partitions}

    return go()


def test_delete_records(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            await fill(h)
            assert await delete_records(h, {0: 2, 1: 0}) == {
                0: (0, 2),
                1: (ErrorCode.NOT_LEADER_OR_FOLLOWER, -1),
            }
            assert await delete_records(h, {0: 99}) == {0: (ErrorCode.OFFSET_OUT_OF_RANGE, -1)}
            assert await delete_records(h, {0: 1}) == {0: (0, 2)}  # never moves back
            assert await delete_records(h, {0: -1}) == {0: (0, 8)}  # -1: the high watermark

    run(main())
    req = m.DeleteRecordsRequest(
        topics=[
            m.DeleteRecordsRequest.DeleteRecordsTopic(
                name="t", partitions=[m.DeleteRecordsRequest.DeleteRecordsPartition(partition_index=3)]
            )
        ]
    )
    resp = delete_records_error_response(req, 1, ErrorCode.UNKNOWN_SERVER_ERROR, "x")
    assert resp.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR


def offset_for_leader_epoch(h: Harness, version: int, parts: list[tuple[int, int, int]]) -> Any:
    async def go() -> Any:
        req = m.OffsetForLeaderEpochRequest(
            replica_id=-1,
            topics=[
                m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                    topic="t",
                    partitions=[
                        m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition(
                            partition=p, leader_epoch=e, current_leader_epoch=c
                        )
                        for p, e, c in parts
                    ],
                )
            ],
        )
        resp = await handle_offset_for_leader_epoch(h.ctx(23, version), req)
        encode(resp, version)
        return [(r.error_code, r.leader_epoch, r.end_offset) for r in resp.topics[0].partitions]

    return go()


@pytest.mark.parametrize("version", [0, 1, 2, 3, 4])
def test_offset_for_leader_epoch(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            await fill(h)
            got = await offset_for_leader_epoch(h, version, [(0, 5, 5), (0, 9, -1), (1, 5, -1), (0, 5, 3)])
            e = 5 if version >= 1 else -1
            assert got[0] == (0, e, 8)
            assert got[1] == (0, -1, -1)
            assert got[2][0] == ErrorCode.NOT_LEADER_OR_FOLLOWER
            if version >= 2:
                assert got[3][0] == ErrorCode.FENCED_LEADER_EPOCH
            else:
                assert got[3] == (0, e, 8)

    run(main())
    req = m.OffsetForLeaderEpochRequest(
        topics=[
            m.OffsetForLeaderEpochRequest.OffsetForLeaderTopic(
                topic="t", partitions=[m.OffsetForLeaderEpochRequest.OffsetForLeaderPartition()]
            )
        ]
    )
    resp = offset_for_leader_epoch_error_response(req, 4, ErrorCode.UNKNOWN_SERVER_ERROR, "x")
    assert resp.topics[0].partitions[0].error_code == ErrorCode.UNKNOWN_SERVER_ERROR


def test_init_producer_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:

            async def init(version: int, **kw: Any) -> tuple[int, int, int]:
                req = m.InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60000, **kw)
                resp = await handle_init_producer_id(h.ctx(22, version), req)
                encode(resp, version)
                return resp.error_code, resp.producer_id, resp.producer_epoch

            assert await init(0) == (0, 1000, 0)
            assert await init(4) == (0, 1001, 0)
            assert await init(4, producer_id=1001, producer_epoch=0) == (0, 1001, 1)  # KIP-360 bump
            assert await init(5, producer_id=1001, producer_epoch=32766) == (0, 1002, 0)  # exhausted
            assert await init(2, producer_id=1001, producer_epoch=3) == (0, 1003, 0)  # no KIP-360 before v3
            # transactional: the transaction coordinator answers (none in this harness)
            txn = m.InitProducerIdRequest(transactional_id="txn-1", transaction_timeout_ms=60000)
            resp = await handle_init_producer_id(h.ctx(22, 4), txn)
            assert (resp.error_code, resp.producer_id) == (ErrorCode.COORDINATOR_NOT_AVAILABLE, -1)
            h.channel.fail = True
            h.replicas._pid_next = h.replicas._pid_end  # block used up, controller away
            assert (await init(4))[0] == ErrorCode.COORDINATOR_NOT_AVAILABLE
            assert [op for op, _ in h.channel.requests] == ["allocate_producer_ids"] * 2

    run(main())
