"""The read side of transactions on the broker: Fetch and ListOffsets with READ_COMMITTED over
logs holding transactional batches and COMMIT/ABORT markers (written through the storage API),
parked fetches woken by markers, and the LSO gauge."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.file_region import FileRegion
from shardbroker.broker.handlers.fetch import handle_fetch
from shardbroker.broker.handlers.list_offsets import handle_list_offsets
from shardbroker.config.log_config import LogConfig
from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import decode, encode, encode_parts
from shardbroker.protocol.record_batch import iter_batches
from shardbroker.storage.log import PartitionLog
from tests.unit.replica_fakes import Harness, batch, image, run, topic
from tests.unit.storage_batches import Clock, build_batch, marker, txn_batch
from tests.unit.test_handlers_fetch import parts_of, records_of, request

TID = uuid.UUID(int=42)
IMG = image(topic("t", 3, leaders=[0, 0, 1], topic_id=TID, epoch=2))
T0 = int(time.time() * 1000) - 60_000  # recent: retention must not delete the data


def txn(plog: PartitionLog, n: int, pid: int, seq: int) -> None:
    """A transactional batch of ``n`` records of producer ``pid`` (epoch 0)."""
    plog.append(
        build_batch(n, producer_id=pid, producer_epoch=0, base_sequence=seq, attributes=0x10, timestamp=T0)
    )


def end(plog: PartitionLog, pid: int, *, abort: bool) -> None:
    plog.append(marker(abort, pid=pid, timestamp=T0), allow_control=True)


def fill(h: Harness) -> PartitionLog:
    """t-0: committed, aborted and open transactions between plain batches::

    0-1 plain | 2-3 pid 1 | 4-5 pid 2 | 6 pid 1 | 7 COMMIT 1 | 8 ABORT 2 | 9 plain |
    10 pid 3 | 11 ABORT 3 | 12-13 pid 4 (open) | 14 plain
    """
    p = h.replicas.get("t", 0)
    assert p is not None
    plog = p.log
    h.replicas.append("t", 0, batch(2, timestamp=T0))
    txn(plog, 2, 1, 0)
    txn(plog, 2, 2, 0)
    txn(plog, 1, 1, 2)
    end(plog, 1, abort=False)
    end(plog, 2, abort=True)
    h.replicas.append("t", 0, batch(1, timestamp=T0))
    txn(plog, 1, 3, 0)
    end(plog, 3, abort=True)
    txn(plog, 2, 4, 0)
    h.replicas.append("t", 0, batch(1, timestamp=T0))
    assert (plog.last_stable_offset, plog.log_end_offset) == (12, 15)
    return plog


def fetch_parts(resp: m.FetchResponse, version: int) -> dict[int, Any]:
    """The response as a client decodes it (a null list and an empty one told apart)."""
    wire = encode_parts(resp, version)
    flat = b"".join(x.read() if isinstance(x, FileRegion) else bytes(x) for x in wire)
    return parts_of(decode(m.FetchResponse, flat, version))


def offsets(data: bytes) -> list[tuple[int, int]]:
    return [(b.base_offset, b.base_offset + b.last_offset_delta) for b in iter_batches(data)]


@pytest.mark.parametrize("version", [4, 11, 16])
def test_read_committed_stops_at_the_lso_and_lists_aborted_transactions(tmp_path: Path, version: int) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            fill(h)
            got = fetch_parts(
                await handle_fetch(h.ctx(1, version), request([(0, 0)], isolation_level=1)), version
            )[0]
            assert offsets(records_of(got)) == [
                (0, 1),
                (2, 3),
                (4, 5),
                (6, 6),
                (7, 7),
                (8, 8),
                (9, 9),
                (10, 10),
                (11, 11),
            ]
            assert (got.high_watermark, got.last_stable_offset) == (15, 12)
            aborted = [(a.producer_id, a.first_offset) for a in got.aborted_transactions]
            assert aborted == [(2, 4), (3, 10)]
            # From offset 9 on: the abort of pid 2 ended before the range, pid 3's is in it.
            got = fetch_parts(
                await handle_fetch(h.ctx(1, version), request([(0, 9)], isolation_level=1)), version
            )[0]
            assert offsets(records_of(got)) == [(9, 9), (10, 10), (11, 11)]
            assert [(a.producer_id, a.first_offset) for a in got.aborted_transactions] == [(3, 10)]
            # At the LSO (inside the open transaction's range): nothing, and an empty list.
            for at in (12, 14):
                got = fetch_parts(
                    await handle_fetch(h.ctx(1, version), request([(0, at)], isolation_level=1)), version
                )[0]
                assert got.error_code == 0 and records_of(got) == b"" and got.aborted_transactions == []
            # READ_UNCOMMITTED: everything, null aborted transactions, the same LSO.
            got = fetch_parts(await handle_fetch(h.ctx(1, version), request([(0, 0)])), version)[0]
            assert offsets(records_of(got))[-2:] == [(12, 13), (14, 14)]
            assert got.aborted_transactions is None and got.last_stable_offset == 12

    run(main())


def test_committed_data_flows_once_the_transaction_commits(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            plog = fill(h)
            end(plog, 4, abort=False)  # 15
            got = parts_of(await handle_fetch(h.ctx(1, 12), request([(0, 12)], isolation_level=1)))[0]
            assert offsets(records_of(got)) == [(12, 13), (14, 14), (15, 15)]
            assert got.last_stable_offset == got.high_watermark == 16 and got.aborted_transactions == []

    run(main())


def test_read_committed_size_limits_count_bytes_below_the_lso(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            fill(h)
            h.replicas.append("t", 1, batch(3, timestamp=T0))
            # Partition 0 gives what is below its LSO; partition 1 (plain) gets the rest.
            resp = await handle_fetch(h.ctx(1, 12), request([(0, 12), (1, 0)], isolation_level=1))
            got = parts_of(resp)
            assert records_of(got[0]) == b"" and offsets(records_of(got[1])) == [(0, 2)]
            assert got[1].aborted_transactions == [] and got[1].last_stable_offset == 3

    run(main())


def test_a_parked_read_committed_fetch_wakes_on_a_marker_not_on_data_above_the_lso(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            plog = fill(h)
            loop = asyncio.get_running_loop()
            fetch = asyncio.ensure_future(
                handle_fetch(h.ctx(1, 12), request([(0, 12)], isolation_level=1, max_wait_ms=10_000))
            )
            await asyncio.sleep(0.05)
            assert not fetch.done()
            h.replicas.append("t", 0, batch(2, timestamp=T0))  # wakes it, but above the LSO: parks again
            await asyncio.sleep(0.05)
            assert not fetch.done()
            started = loop.time()
            end(plog, 4, abort=True)  # a marker through the storage API: nothing else wakes it
            resp = await asyncio.wait_for(fetch, 2)
            assert loop.time() - started < 0.5
            got = parts_of(resp)[0]
            assert offsets(records_of(got)) == [(12, 13), (14, 14), (15, 16), (17, 17)]
            assert [(a.producer_id, a.first_offset) for a in got.aborted_transactions] == [(4, 12)]
            # READ_UNCOMMITTED at the same place answers at once.
            got = parts_of(await handle_fetch(h.ctx(1, 12), request([(0, 12)], max_wait_ms=10_000)))[0]
            assert offsets(records_of(got))[0] == (12, 13)

    run(main())


def test_list_offsets_answers_the_lso_for_read_committed(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, IMG) as h:
            fill(h)

            async def at(version: int, ts: int, isolation: int) -> int:
                req = m.ListOffsetsRequest(
                    replica_id=-1,
                    isolation_level=isolation,
                    topics=[
                        m.ListOffsetsRequest.ListOffsetsTopic(
                            name="t",
                            partitions=[
                                m.ListOffsetsRequest.ListOffsetsPartition(partition_index=0, timestamp=ts)
                            ],
                        )
                    ],
                )
                resp = await handle_list_offsets(h.ctx(2, version), req)
                encode(resp, version)
                r = resp.topics[0].partitions[0]
                assert r.error_code == 0
                return int(r.old_style_offsets[0] if version == 0 else r.offset)

            for version in (2, 5, 10):
                assert await at(version, -1, 1) == 12  # LATEST: the LSO
                assert await at(version, -1, 0) == 15  # the high watermark
                assert await at(version, -2, 1) == 0  # EARLIEST: unchanged
                assert await at(version, T0, 1) == 0  # found below the LSO
            # v1 has no isolation level (READ_UNCOMMITTED), v0 neither (the log end).
            assert await at(1, -1, 1) == 15 and await at(0, -1, 1) == 15
            # A timestamp (or -3) found at or past the LSO is not answered to READ_COMMITTED.
            p = h.replicas.get("t", 0)
            assert p is not None
            h.replicas.append("t", 0, batch(1, timestamp=T0 + 10_000))  # 15, the newest record
            assert await at(10, T0 + 5_000, 0) == 15 and await at(10, -3, 0) == 15
            assert await at(10, T0 + 5_000, 1) == -1 and await at(10, -3, 1) == -1
            end(p.log, 4, abort=False)
            assert await at(10, T0 + 5_000, 1) == 15 and await at(10, -1, 1) == 17

    run(main())


def test_the_lso_gauge_follows_markers_without_produce(tmp_path: Path) -> None:
    table = CounterTable.create(f"rc{uuid.uuid4().hex[:12]}", workers=1, rows=8)
    try:

        async def main() -> None:
            h = Harness(tmp_path, IMG)
            h.replicas.counters = table.worker(0)
            async with h:
                plog = fill(h)
                h.replicas.publish_metrics()
                row = h.replicas.get("t", 0).metrics.row  # type: ignore[union-attr]
                fields = table.counters[row]
                assert (fields[ctr.LOG_END_OFFSET], fields[ctr.LAST_STABLE_OFFSET]) == (15, 12)
                end(plog, 4, abort=True)  # no produce, no fetch: the marker marks it for the tick
                h.replicas.publish_metrics()
                assert table.counters[row, ctr.LAST_STABLE_OFFSET] == 16

        run(main())
    finally:
        table.close()


def test_the_log_calls_on_markers_for_marker_appends_only(tmp_path: Path) -> None:
    plog = PartitionLog.open(tmp_path / "t-0", LogConfig(), clock=Clock())
    calls: list[int] = []
    plog.on_markers = lambda: calls.append(plog.last_stable_offset)
    plog.append(build_batch(2))
    plog.append(txn_batch(1, 0, pid=5))
    assert calls == []
    plog.append(marker(False, pid=5), allow_control=True)
    assert calls == [4]  # called once the marker is in: the LSO it sees has moved
    plog.close()
