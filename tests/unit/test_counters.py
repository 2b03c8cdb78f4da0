"""ipc/counters.py: layout, one writer per cell, row allocation and reuse, overflow, fork inheritance."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shardbroker.broker.log_cleaner_service import CleanerCounters
from shardbroker.ipc import counters as ctr
from shardbroker.ipc.counters import CounterTable, WorkerCounters, error_index
from shardbroker.protocol import messages as m
from shardbroker.storage.errors import KafkaStorageError


@pytest.fixture
def table() -> Iterator[CounterTable]:
    t = CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=2, rows=8)
    try:
        yield t
    finally:
        t.close()


def live_rows(t: CounterTable) -> dict[tuple[str, int], int]:
    return {t.label(r): r for r in range(t.rows) if t.state[r] > 0 and t.state[r] % 2 == 0}


def dirty_ratios(t: CounterTable) -> dict[tuple[str, int], float]:
    """The live rows' dirty ratios (float64 words), NaN ones left out, as the collector reads them."""
    rows = live_rows(t)
    words = np.ascontiguousarray(t.counters[:, ctr.DIRTY_RATIO]).view(np.float64)
    return {key: float(words[r]) for key, r in rows.items() if not np.isnan(words[r])}


def test_header_and_ranges(table: CounterTable) -> None:
    assert (table.workers, table.rows, table.rows_per_worker) == (2, 8, 4)
    assert list(table.rows_of(1)) == [4, 5, 6, 7]
    assert ctr.WORKER_BLOCK % 64 == 0
    assert max(m.REQUESTS) < ctr.N_API


def test_attach_sees_the_same_memory(table: CounterTable) -> None:
    w = table.worker(1)
    w.request(0, 0.003, 0)
    w.publish()
    other = CounterTable.attach(table.name.split("-")[1])
    try:
        assert other.requests[1, 0] == 1 and other.rows == 8
    finally:
        other.close()


def test_requests_histogram_errors(table: CounterTable) -> None:
    w = table.worker(1)
    w.request(1, 0.00005, 0)  # first bucket (<= 100 us)
    w.request(1, 0.0001, 0)  # le is inclusive
    w.request(1, 0.3, 3)  # (0.25, 0.5]
    w.request(1, 99.0, 0)  # +Inf
    w.error(0, 2)
    w.error(500, 2)  # an out-of-range api key from a bad frame: last row
    assert table.requests[1, 1] == 0  # published on the tick, not per request
    w.publish()
    assert table.requests[1, 1] == 4 and table.requests[0].sum() == 0  # worker 0 untouched
    hist = table.hist[1, 1].tolist()
    assert hist[0] == 2 and hist[ctr.BUCKETS.index(0.5)] == 1 and hist[-1] == 1 and sum(hist) == 4
    assert table.hist_sum[1, 1] == pytest.approx(99.30015)
    assert table.errors[1, 1, error_index(3)] == 1
    assert table.errors[1, 0, error_index(2)] == 1
    assert table.errors[1, ctr.N_API - 1, error_index(2)] == 1
    assert error_index(-1) == 0 and error_index(10_000) == ctr.N_ERR - 1


def test_rows_labelled_freed_reused(table: CounterTable) -> None:
    w = table.worker(0)
    a = w.open_partition("orders", 0)
    b = w.open_partition("orders", 1)
    assert (a.row, b.row) == (0, 1)
    w.publish_partition(a, 5, 0, 0, 0, 0, 0, 0, 0)
    w.publish_partition(b, 0, 100, 0, 0, 0, 0, 0, 0)
    w.publish_cleaner(CleanerCounters(dirty_ratios={("orders", 0): 0.5}))
    assert table.counters[0, ctr.MESSAGES_IN] == 5 and table.counters[1, ctr.BYTES_IN] == 100
    assert live_rows(table) == {("orders", 0): 0, ("orders", 1): 1}
    assert dirty_ratios(table) == {("orders", 0): 0.5}
    assert table.misc[0, ctr.ROWS_IN_USE] == 2
    w.close_partition(a)
    w.close_partition(a)  # twice: no effect
    w.publish_partition(a, 1, 1, 1, 1, 1, 1, 1, 1)  # closed: not written
    assert live_rows(table) == {("orders", 1): 1} and table.counters[0, ctr.MESSAGES_IN] == 5
    c = w.open_partition("x" * 300, 7)  # reuses row 0, zeroed; the name is cut at 256 bytes
    cells = table.counters[0].tolist()
    assert c.row == 0 and cells[: ctr.DIRTY_RATIO] + cells[ctr.DIRTY_RATIO + 1 :] == [0] * (ctr.ROW_WORDS - 1)
    assert dirty_ratios(table) == {}  # NaN: no dirty ratio until the cleaner measures it
    assert table.label(0) == ("x" * ctr.MAX_NAME, 7)
    assert table.state[0] > 2  # a new generation: readers drop cached labels


def test_overflow_is_counted_not_fatal(table: CounterTable) -> None:
    w = table.worker(1)
    rows = [w.open_partition("t", i) for i in range(4)]
    extra = w.open_partition("t", 4)
    assert extra.row == -1 and table.misc[1, ctr.PARTITION_OVERFLOW] == 1
    w.publish_partition(extra, 1, 1, 1, 1, 1, 1, 1, 1)  # nowhere
    assert int(table.counters[4:8, ctr.MESSAGES_IN].sum()) == 0
    w.close_partition(extra)
    assert table.misc[1, ctr.PARTITION_OVERFLOW] == 0
    w.close_partition(rows[0])
    assert w.open_partition("t", 5).row == 4


def test_a_restarted_worker_starts_from_zero(table: CounterTable) -> None:
    w = table.worker(0)
    w.publish_partition(w.open_partition("t", 0), 3, 0, 0, 0, 0, 0, 0, 0)
    w.request(3, 0.001, 0)
    w.publish()
    table.worker(0)  # the next incarnation of slot 0
    assert table.requests[0].sum() == 0 and live_rows(table) == {}
    assert table.counters[0, ctr.MESSAGES_IN] == 0


def test_security_cells() -> None:
    t = CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=2, rows=8, listeners=3)
    try:
        assert t.listeners == 3 and t.authentications.shape == (2, 3, ctr.N_MECHANISMS, 2)
        assert t.denied.shape == (2, ctr.N_OPERATIONS, ctr.N_RESOURCE_TYPES)
        # Each worker's security block starts on its own cache line, after every other section.
        assert ctr.security_block(3) % 64 == 0 and t.layout.security_at % 64 == 0
        assert t.layout.security_at >= t.layout.labels_at + ctr.LABEL_BYTES * t.rows
        assert t.layout.transactions_at == t.layout.security_at + 2 * ctr.security_block(3)
        w0, w1 = t.worker(0), t.worker(1)
        w1.authentication(2, ctr.MECHANISMS.index("SSL"), False)
        w1.authentication(2, ctr.MECHANISMS.index("SSL"), True)
        w1.authentication(0, 0, True)
        w0.denied(4, 2)  # WRITE on TOPIC
        w1.denied(15, 7)  # the last cell
        assert t.authentications[1, 2, ctr.MECHANISMS.index("SSL")].tolist() == [1, 1]
        assert t.authentications[1, 0, 0, 0] == 1 and t.authentications[0].sum() == 0
        assert t.denied[0, 4, 2] == 1 and t.denied[1, 15, 7] == 1 and t.denied.sum() == 2
        assert t.requests.sum() == 0 and t.state.sum() == 0  # nothing spilled into another section
        with pytest.raises(IndexError):
            w0.authentication(3, 0, True)  # no fourth listener
        other = CounterTable.attach(t.name.split("-")[1])
        try:
            assert other.listeners == 3 and other.denied[1, 15, 7] == 1
        finally:
            other.close()
        t.worker(1)  # a restarted worker starts from zero
        assert t.authentications[1].sum() == 0 and t.denied[1].sum() == 0 and t.denied[0, 4, 2] == 1
    finally:
        t.close()
    with pytest.raises(ValueError, match="listeners >= 1"):
        CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=1, listeners=0)


def test_worker_out_of_range(table: CounterTable) -> None:
    with pytest.raises(IndexError):
        table.worker(2)


def test_private_counters_work_alike() -> None:
    w = WorkerCounters.private()
    w.publish_partition(w.open_partition("t", 0), 1, 0, 0, 0, 0, 0, 0, 0)
    w.request(0, 0.1, 0)
    w.publish()
    w.add_connections(1)
    w.add_fetch_waiters(1)
    assert w.hist[ctr.BUCKETS.index(0.1)] == 1
    assert w.misc(ctr.CONNECTIONS) == 1 and w.misc(ctr.FETCH_WAITERS) == 1


def test_inherited_across_fork(table: CounterTable) -> None:
    pid = os.fork()
    if pid == 0:  # the worker: writes its cells through the inherited mapping
        code = 1
        try:
            w = table.worker(1)
            w.publish_partition(w.open_partition("forked", 2), 42, 0, 0, 0, 0, 0, 0, 0)
            w.request(0, 0.002, 0)
            w.publish()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert live_rows(table) == {("forked", 2): 4}
    assert table.counters[4, ctr.MESSAGES_IN] == 42 and table.requests[1, 0] == 1


def test_replica_manager_publishes_its_partitions(
    table: CounterTable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shardbroker.broker.replica_manager import ReplicaManager
    from shardbroker.config.broker_config import BrokerConfig
    from tests.unit.replica_fakes import FakeChannel, batch, image, run, topic

    async def scenario() -> None:
        channel = FakeChannel(image(topic("a", 2)))
        replicas = ReplicaManager(0, BrokerConfig(data_dir=tmp_path), channel, counters=table.worker(0))
        await replicas.start(None)
        try:
            rows = live_rows(table)
            assert set(rows) == {("a", 0), ("a", 1)}
            records = batch(3)
            size = len(records)
            assert replicas.append("a", 1, records).error_code == 0
            assert replicas.append("a", 1, b"\0" * 70).error_code != 0  # counted as a request
            assert table.counters[rows["a", 1], ctr.MESSAGES_IN] == 0  # not yet: the tick publishes
            replicas.publish_metrics()
            cells = table.counters[rows["a", 1], : ctr.DIRTY_RATIO].tolist()
            row = dict(zip(ctr.PARTITION_FIELDS[: ctr.DIRTY_RATIO], cells, strict=True))
            assert row == {
                "messages_in": 3,
                "bytes_in": size,
                "bytes_out": 0,
                "log_end_offset": 3,
                "log_start_offset": 0,
                "log_size_bytes": size,
                "produce_requests": 2,
                "fetch_requests": 0,
                "segment_count": 1,
                "offline": 0,
                "last_stable_offset": 3,
            }
            # Flushes are timed into the worker's flush histogram as they finish (no tick).
            assert table.flush[0].sum() == 0
            partition = replicas.get("a", 1)
            assert partition is not None
            await replicas.flusher.request_flush(partition, 3)
            assert table.flush[0].sum() == partition.log.sync_count == 1 and table.flush_sum[0] > 0
            assert table.flush[1].sum() == 0
            # A failed fdatasync takes the log offline: the row's flag says so at the next tick.
            assert replicas.append("a", 1, batch(1)).error_code == 0
            replicas.publish_metrics()  # nothing moves after this but the failed flush

            def failing(fd: int) -> None:
                raise OSError(errno.EIO, "injected")

            monkeypatch.setattr(os, "fdatasync", failing)
            with pytest.raises(KafkaStorageError):
                await replicas.flusher.request_flush(partition, 4)
            monkeypatch.undo()
            assert table.counters[rows["a", 1], ctr.OFFLINE] == 0
            replicas.publish_metrics()
            assert table.counters[rows["a", 1], ctr.OFFLINE] == 1
            assert table.counters[rows["a", 0], ctr.OFFLINE] == 0
            assert table.flush[0].sum() == 2  # the failed one is timed too
            await channel.push(image(topic("b", 1), version=2))  # "a" deleted: its rows freed
            assert set(live_rows(table)) == {("b", 0)}
        finally:
            await replicas.drain()

    run(scenario())


def test_produce_and_fetch_handlers_count_partition_errors(table: CounterTable, tmp_path: Path) -> None:
    from shardbroker.broker.handlers.fetch import handle_fetch
    from shardbroker.broker.handlers.produce import handle_produce
    from shardbroker.protocol import messages as m
    from shardbroker.protocol.errors import ErrorCode
    from tests.unit.replica_fakes import Harness, batch, image, run, topic

    async def scenario() -> None:
        h = Harness(tmp_path, image(topic("t", 2)))
        h.replicas.counters = table.worker(0)
        async with h:
            bad = batch()
            bad[-1] ^= 1
            parts = [
                m.ProduceRequest.PartitionProduceData(index=0, records=bad),
                m.ProduceRequest.PartitionProduceData(index=1, records=batch(2)),
            ]
            produce = m.ProduceRequest(
                acks=1,
                timeout_ms=1000,
                topic_data=[m.ProduceRequest.TopicProduceData(name="t", partition_data=parts)],
            )
            await handle_produce(h.ctx(0, 9), produce)
            fetch = m.FetchRequest(
                max_wait_ms=0,
                min_bytes=0,
                max_bytes=1 << 20,
                topics=[
                    m.FetchRequest.FetchTopic(
                        topic=name,
                        partitions=[
                            m.FetchRequest.FetchPartition(
                                partition=i, fetch_offset=0, partition_max_bytes=1 << 20
                            )
                        ],
                    )
                    for name, i in (("t", 1), ("nope", 0))
                ],
            )
            await handle_fetch(h.ctx(1, 12), fetch)
            h.replicas.publish_metrics()
            rows = live_rows(table)
            assert table.errors[0, 0, error_index(ErrorCode.CORRUPT_MESSAGE)] == 1
            assert table.errors[0, 1, error_index(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)] == 1
            assert table.counters[rows["t", 0], ctr.PRODUCE_REQUESTS] == 1
            assert table.counters[rows["t", 0], ctr.MESSAGES_IN] == 0
            assert table.counters[rows["t", 1], ctr.MESSAGES_IN] == 2
            assert table.counters[rows["t", 1], ctr.FETCH_REQUESTS] == 1
            assert (
                table.counters[rows["t", 1], ctr.BYTES_OUT] == table.counters[rows["t", 1], ctr.BYTES_IN] > 0
            )

    run(scenario())


def test_transaction_cells() -> None:
    t = CounterTable.create(f"t{uuid.uuid4().hex[:12]}", workers=2, rows=8, listeners=3)
    try:
        lay = t.layout
        assert lay.transactions_at % 64 == 0 and ctr.TXN_BLOCK % 64 == 0
        assert lay.transactions_at >= lay.security_at + 2 * ctr.security_block(3)
        assert lay.cleaner_at == lay.transactions_at + 2 * ctr.TXN_BLOCK
        w0, w1 = t.worker(0), t.worker(1)
        w1.transaction_ended(ctr.TXN_COMMIT, 0.02)  # (0.01, 0.025]
        w1.transaction_ended(ctr.TXN_FENCED, 1000.0)  # past 900 s: +Inf
        w0.set_transactions_ongoing(3)
        assert t.transactions[1].tolist()[:5] == [1, 0, 0, 1, 0]
        assert t.transactions[0, ctr.TXN_ONGOING] == 3
        assert t.txn_hist[1, 1] == 1 and t.txn_hist[1, -1] == 1 and t.txn_hist[0].sum() == 0
        assert t.txn_sum[1] == pytest.approx(1000.02)
        assert t.denied.sum() == 0 and t.authentications.sum() == 0  # nothing spilled
        t.worker(1)  # a restarted worker starts from zero
        assert t.transactions[1].sum() == 0 and t.txn_sum[1] == 0 and t.transactions[0, ctr.TXN_ONGOING] == 3
    finally:
        t.close()


def test_cleaner_cells(table: CounterTable) -> None:
    lay = table.layout
    assert lay.cleaner_at % 64 == 0 and ctr.CLEANER_BLOCK == 64  # one cache line per worker
    assert lay.cleaner_at >= lay.transactions_at + 2 * ctr.TXN_BLOCK
    assert lay.quotas_at == lay.cleaner_at + 2 * ctr.CLEANER_BLOCK
    assert lay.size == lay.quotas_at + 2 * ctr.QUOTA_BLOCK <= len(table.segment.mmap)
    w0, w1 = table.worker(0), table.worker(1)
    w1.open_partition("plain", 0)
    compacted = [w1.open_partition("compacted", i) for i in range(2)]
    w0.open_partition("compacted", 2)
    stats = CleanerCounters(
        bytes_read=5_000_000_000,  # past 32 bits
        bytes_written=1_200,
        runs=7,
        errors=2,
        aborted=1,
        max_compaction_delay_ms=90_500,
        # ("compacted", 2) is worker 0's, ("gone", 0) closed since the cleaner's look: no row here.
        dirty_ratios={("compacted", 0): 0.75, ("compacted", 1): 0.0, ("compacted", 2): 0.5, ("gone", 0): 1.0},
        uncleanable={("compacted", 1), ("gone", 0)},
        last_progress_ms=1_700_000_000_123,
    )
    w1.publish_cleaner(stats)
    assert dict(zip(ctr.CLEANER_FIELDS, table.cleaner[1].tolist(), strict=True)) == {
        "bytes_read": 5_000_000_000,
        "bytes_written": 1_200,
        "runs": 7,
        "errors": 2,
        "aborted": 1,
        "max_compaction_delay_ms": 90_500,
        "uncleanable_partitions": 2,
        "last_progress_ms": 1_700_000_000_123,
    }
    assert table.cleaner[0].sum() == 0  # worker 0's block
    assert dirty_ratios(table) == {("compacted", 0): 0.75, ("compacted", 1): 0.0}
    # The next look: ("compacted", 1) is no longer compacted (its ratio goes), 0 moved on.
    stats.dirty_ratios = {("compacted", 0): 0.125}
    w1.publish_cleaner(stats)
    assert dirty_ratios(table) == {("compacted", 0): 0.125}
    # A closed row is no longer the partition's; its next user starts without a ratio.
    freed = compacted[0].row
    w1.close_partition(compacted[0])
    w1.publish_cleaner(stats)
    assert w1.open_partition("other", 0).row == freed
    w1.publish_cleaner(stats)
    assert dirty_ratios(table) == {}
    w1.close_partition(compacted[1])  # ("compacted", 0) reopened on a new row gets its ratio again
    w1.open_partition("compacted", 0)
    w1.publish_cleaner(stats)
    assert dirty_ratios(table) == {("compacted", 0): 0.125}
    assert table.transactions.sum() == 0 and table.txn_sum.sum() == 0  # nothing spilled
    table.worker(1)  # a restarted worker starts from zero
    assert table.cleaner[1].sum() == 0 and dirty_ratios(table) == {}


def test_quota_cells(table: CounterTable) -> None:
    assert table.layout.quotas_at % 64 == 0 and ctr.QUOTA_BLOCK % 64 == 0
    w0, w1 = table.worker(0), table.worker(1)
    assert table.quota_throttles(1) == ([0, 0, 0, 0], [])
    long_name = "é" * 100  # 200 bytes of UTF-8: cut to 128 bytes
    w1.publish_quotas([1500, 0, 20, 0], [(0, "alice", "etl", 1000), (2, "", long_name, 20)])
    totals, top = table.quota_throttles(1) or ([], [])
    assert totals == [1500, 0, 20, 0]
    assert top == [("produce", "alice", "etl", 1000), ("request", "", "é" * 64, 20)]
    assert table.quota_throttles(0) == ([0, 0, 0, 0], [])  # nothing spilled into worker 0
    w1.publish_quotas([1500, 0, 20, 0], [])  # a client that left the top-N loses its series
    assert table.quota_throttles(1) == ([1500, 0, 20, 0], [])
    # A scrape in the middle of a write reads nothing of it (the seqlock is odd).
    seq = table.quota_blocks[1][:8].view(np.int64)
    seq[0] += 1
    assert table.quota_throttles(1) is None
    seq[0] += 1
    w0.publish_quotas([0, 7, 0, 0], [(1, "bob", "", 7)])
    assert table.quota_throttles(0) == ([0, 7, 0, 0], [("fetch", "bob", "", 7)])
