"""The Fetch handler: file regions, sizing rules, long poll woken by appends, errors, versions."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.file_region import FileRegion
from shardbroker.broker.handlers.fetch import HANDLER, handle_fetch
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import decode, encode_parts
from shardbroker.protocol.errors import ErrorCode
from shardbroker.protocol.record_batch import iter_batches
from tests.unit.replica_fakes import Harness, batch, image, run, topic

TID = uuid.UUID(int=42)
IMG = image(topic("t", 3, leaders=[0, 0, 1], topic_id=TID, epoch=2))


def request(
    parts: list[tuple[int, int]],
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
    partition_max_bytes: int = 1 << 20,
    name: str = "t",
    topic_id: uuid.UUID = TID,
    isolation_level: int = 0,
    current_leader_epoch: int = -1,
) -> m.FetchRequest:
    return m.FetchRequest(
        max_wait_ms=max_wait_ms,
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        isolation_level=isolation_level,
        topics=[
            m.FetchRequest.FetchTopic(
                topic=name,
                topic_id=topic_id,
                partitions=[
                    m.FetchRequest.FetchPartition(
                        partition=p,
                        fetch_offset=o,
                        partition_max_bytes=partition_max_bytes,
                        current_leader_epoch=current_leader_epoch,
                    )
                    for p, o in parts
                ],
            )
        ],
    )


def parts_of(resp: m.FetchResponse) -> dict[int, Any]:
    return {p.partition_index: p for t in resp.responses for p in t.partitions}


def records_of(p: Any) -> bytes:
    r = p.records
    return r.read() if isinstance(r, FileRegion) else bytes(r or b"")


def test_registered_for_v4_to_v16() -> None:
    assert (HANDLER.api_key, HANDLER.min_version, HANDLER.max_version) == (1, 4, 16)


@pytest.mark.parametrize("version", [4, 7, 11, 12, 13, 15, 16])
def test_fetch_returns_file_regions_and_offsets_at_every_version(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            for _ in range(3):
                h.replicas.append("t", 0, batch(4))
            resp = await handle_fetch(h.ctx(1, version), request([(0, 0), (1, 0), (2, 0)]))
            got = parts_of(resp)
            assert resp.session_id == 0
            p0 = got[0]
            assert (p0.error_code, p0.high_watermark, p0.last_stable_offset, p0.log_start_offset) == (
                0,
                12,
                12,
                0,
            )
            assert isinstance(p0.records, FileRegion) and p0.aborted_transactions is None
            assert [b.base_offset for b in iter_batches(records_of(p0))] == [0, 4, 8]
            assert (got[1].error_code, got[1].high_watermark, records_of(got[1])) == (0, 0, b"")
            assert got[2].error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            if version >= 12:
                assert got[2].current_leader.leader_id == 1 and got[2].current_leader.leader_epoch == 2
            if version >= 16:
                assert [e.node_id for e in resp.node_endpoints] == [1]
            if version >= 13:
                assert resp.responses[0].topic_id == TID
            else:
                assert resp.responses[0].topic == "t"
            # the response goes out as parts; the file region stays a part of its own
            wire = encode_parts(resp, version)
            assert any(isinstance(x, FileRegion) for x in wire)
            flat = b"".join(x.read() if isinstance(x, FileRegion) else bytes(x) for x in wire)
            back = decode(m.FetchResponse, flat, version)
            assert len(list(iter_batches(bytes(parts_of(back)[0].records)))) == 3

    run(main())


def test_unknown_topic_name_and_id(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            resp = await handle_fetch(h.ctx(1, 12), request([(0, 0)], name="nope"))
            assert parts_of(resp)[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            resp = await handle_fetch(h.ctx(1, 13), request([(0, 0)], topic_id=uuid.uuid4()))
            assert parts_of(resp)[0].error_code == ErrorCode.UNKNOWN_TOPIC_ID
            resp = await handle_fetch(h.ctx(1, 13), request([(9, 0)]))
            assert parts_of(resp)[9].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    run(main())


def test_offset_out_of_range_reports_the_log_bounds(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            h.replicas.append("t", 0, batch(5))
            for offset in (6, -1):
                got = parts_of(await handle_fetch(h.ctx(1, 11), request([(0, offset)], max_wait_ms=5000)))[0]
                assert got.error_code == ErrorCode.OFFSET_OUT_OF_RANGE
                assert (got.high_watermark, got.log_start_offset, records_of(got)) == (5, 0, b"")

    run(main())


def test_fetch_in_the_middle_of_a_batch_returns_the_whole_batch(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            h.replicas.append("t", 0, batch(10))
            h.replicas.append("t", 0, batch(10))
            got = parts_of(await handle_fetch(h.ctx(1, 11), request([(0, 14)])))[0]
            batches = list(iter_batches(records_of(got)))
            assert [(b.base_offset, b.records_count) for b in batches] == [(10, 10)]
            assert batches[0].is_crc_valid()

    run(main())


def test_max_bytes_rules(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, image(topic("t", 3, topic_id=TID))) as h:
            size = len(batch(10, value=b"x" * 100))
            for p in range(3):
                for _ in range(4):
                    h.replicas.append("t", p, batch(10, value=b"x" * 100))
            # a limit below one batch still returns one whole batch for the first partition only
            got = parts_of(await handle_fetch(h.ctx(1, 11), request([(0, 0), (1, 0)], max_bytes=10)))
            assert len(records_of(got[0])) == size
            assert records_of(got[1]) == b"" and got[1].high_watermark == 40
            # partition_max_bytes below a batch: the first partition still gets a whole batch
            got = parts_of(await handle_fetch(h.ctx(1, 11), request([(0, 0), (1, 0)], partition_max_bytes=1)))
            assert len(records_of(got[0])) == size and records_of(got[1]) == b""
            # the budget is shared in request order; the first partition has nothing
            got = parts_of(
                await handle_fetch(h.ctx(1, 11), request([(0, 40), (1, 0), (2, 0)], max_bytes=2 * size))
            )
            assert records_of(got[0]) == b""
            assert len(records_of(got[1])) == 2 * size and records_of(got[2]) == b""
            # the broker's fetch.max.bytes caps the request's max_bytes
            h.replicas.config = replace(h.replicas.config, properties={"fetch.max.bytes": str(size + 1)})
            got = parts_of(await handle_fetch(h.ctx(1, 11), request([(0, 0)])))
            data = records_of(got[0])
            assert len(data) == size + 1  # Kafka's sizing: may end inside a batch, which clients drop
            assert len(list(iter_batches(data, allow_partial_tail=True))) == 1

    run(main())


def test_long_poll_times_out_after_max_wait(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            loop = asyncio.get_running_loop()
            started = loop.time()
            resp = await handle_fetch(h.ctx(1, 11), request([(0, 0), (1, 0)], max_wait_ms=150))
            assert 0.14 <= loop.time() - started < 1.0
            assert all(records_of(p) == b"" and p.error_code == 0 for p in parts_of(resp).values())
            # max_wait_ms 0 answers at once
            started = loop.time()
            await handle_fetch(h.ctx(1, 11), request([(0, 0)], max_wait_ms=0))
            assert loop.time() - started < 0.1

    run(main())


def test_long_poll_is_woken_by_an_append_to_any_requested_partition(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            loop = asyncio.get_running_loop()
            fetch = asyncio.ensure_future(
                handle_fetch(h.ctx(1, 11), request([(0, 0), (1, 0)], max_wait_ms=10_000))
            )
            await asyncio.sleep(0.05)
            assert not fetch.done()
            started = loop.time()
            h.replicas.append("t", 1, batch(5))
            resp = await asyncio.wait_for(fetch, 2)
            assert loop.time() - started < 0.5
            got = parts_of(resp)
            assert [b.records_count for b in iter_batches(records_of(got[1]))] == [5]
            assert got[1].high_watermark == 5 and records_of(got[0]) == b""

    run(main())


def test_long_poll_waits_for_min_bytes(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            one = len(batch(2))
            fetch = asyncio.ensure_future(
                handle_fetch(h.ctx(1, 11), request([(0, 0)], max_wait_ms=10_000, min_bytes=2 * one))
            )
            await asyncio.sleep(0.02)
            h.replicas.append("t", 0, batch(2))
            await asyncio.sleep(0.02)
            assert not fetch.done()  # one batch is not min_bytes yet
            h.replicas.append("t", 0, batch(2))
            resp = await asyncio.wait_for(fetch, 2)
            assert len(records_of(parts_of(resp)[0])) == 2 * one

    run(main())


def test_parked_fetch_answers_when_its_partition_is_deleted(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            fetch = asyncio.ensure_future(handle_fetch(h.ctx(1, 11), request([(0, 0)], max_wait_ms=10_000)))
            await asyncio.sleep(0.02)
            await h.channel.push(image())
            resp = await asyncio.wait_for(fetch, 2)
            assert parts_of(resp)[0].error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    run(main())


def test_leader_epoch_fencing_and_read_committed(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            h.replicas.append("t", 0, batch())
            codes = {}
            for epoch in (1, 2, 3, -1):
                resp = await handle_fetch(h.ctx(1, 11), request([(0, 0)], current_leader_epoch=epoch))
                codes[epoch] = parts_of(resp)[0].error_code
            assert codes == {1: ErrorCode.FENCED_LEADER_EPOCH, 2: 0, 3: ErrorCode.UNKNOWN_LEADER_EPOCH, -1: 0}
            resp = await handle_fetch(h.ctx(1, 11), request([(0, 0)], isolation_level=1))
            got = parts_of(resp)[0]
            assert got.aborted_transactions == [] and got.last_stable_offset == 3

    run(main())
