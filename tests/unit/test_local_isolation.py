"""What a LocalConsumer leaves out (client/local_isolation.py): control batches always, aborted
transactions' batches with read_committed, over a log written through the storage API, checked
against the broker's own answer (Fetch's ``aborted_transactions``) and Kafka's consumer rules."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from shardbroker.client.local_isolation import AbortedTransactions, take_batches, visible_batches
from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.batch_scan import scan_batches
from shardbroker.protocol.record_columns import record_columns
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.transaction_index import AbortedTxn
from tests.unit.storage_batches import Clock, build_batch, marker, txn_batch


def open_log(d: Path, segment_bytes: int = 1 << 20) -> PartitionLog:
    return PartitionLog.open(
        d, LogConfig(segment_bytes=segment_bytes, index_interval_bytes=256), clock=Clock()
    )


def workload(log: PartitionLog) -> None:
    """0 plain | 1-2 pid 1 | 3-4 pid 2 | 5 pid 1 | 6 COMMIT 1 | 7 pid 2 | 8 ABORT 2 | 9 plain |
    10 pid 2 (a new transaction) | 11 COMMIT 2 | 12 pid 3 | 13 ABORT 3"""
    log.append(build_batch([b"p0"]))
    log.append(txn_batch(2, 0, pid=1))
    log.append(txn_batch(2, 0, pid=2))
    log.append(txn_batch(1, 2, pid=1))
    log.append(marker(False, pid=1), allow_control=True)
    log.append(txn_batch(1, 2, pid=2))
    log.append(marker(True, pid=2), allow_control=True)
    log.append(build_batch([b"p9"]))
    log.append(txn_batch(1, 3, pid=2))
    log.append(marker(False, pid=2), allow_control=True)
    log.append(txn_batch(1, 0, pid=3))
    log.append(marker(True, pid=3), allow_control=True)


def segment_view(log: PartitionLog) -> memoryview:
    return memoryview(fn.log_file(log.directory, 0).read_bytes())


def test_read_committed_keeps_committed_and_plain_batches_only(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    workload(log)
    view = segment_view(log)
    h = scan_batches(view)
    # The aborted transactions read from the index: what the broker lists for a read_committed
    # Fetch of it all, with the markers' offsets.
    reader = AbortedTransactions(log.directory)
    aborted = reader.collect(0, lambda: [0], 0, log.last_stable_offset)
    assert [(pid, first) for pid, first, _ in aborted] == log.collect_aborted_transactions(0, 14)
    assert aborted == [(2, 3, 8), (3, 12, 13)]
    # Kept: what Kafka's consumer keeps (plain batches, committed transactions: pid 2's second
    # transaction too, after its abort), never a marker.
    keep = visible_batches(h, 0, len(h), aborted)
    assert keep is not None
    assert h.base_offsets[keep].tolist() == [0, 1, 5, 9, 10]
    # From the middle (a new poll), with the index's answer for that range.
    aborted = reader.collect(0, lambda: [0], 7, 14)
    assert aborted == [(2, 3, 8), (3, 12, 13)]  # pid 2's abort ends at 8, inside [7, 14)
    keep = visible_batches(h, 5, len(h), aborted)  # batches from offset 7 on
    assert keep is not None and h.base_offsets[keep].tolist() == [9, 10]
    # read_uncommitted: every data batch, no marker.
    keep = visible_batches(h, 0, len(h), None)
    assert keep is not None and h.base_offsets[keep].tolist() == [0, 1, 3, 5, 7, 9, 10, 12]
    # The records of the kept batches decode from the subset of headers.
    sub = take_batches(h, visible_batches(h, 0, len(h), aborted))  # type: ignore[arg-type]
    cols = record_columns(view, sub, 0, len(sub))
    assert cols.offsets.tolist() == [0, 1, 2, 5, 9, 10]
    assert bytes(cols.value(0) or b"") == b"p0"
    log.close()


def test_nothing_to_leave_out_costs_no_copy(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(build_batch(3))
    log.append(build_batch(2))
    view = segment_view(log)
    h = scan_batches(view)
    assert visible_batches(h, 0, len(h), []) is None
    assert visible_batches(h, 0, len(h), None) is None
    log.close()


def test_index_reader_follows_growth_rewrites_and_later_segments(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    d.mkdir()
    reader = AbortedTransactions(d)
    assert reader.entries(0).shape[0] == 0  # no file: no entries
    path = fn.txn_index_file(d, 0)
    path.write_bytes(AbortedTxn(1, 0, 5, 6).encode())
    assert reader.entries(0)["producer_id"].tolist() == [1]
    with path.open("ab") as f:  # grows: only the new entry is read (the cached one is kept)
        f.write(AbortedTxn(2, 3, 9, 10).encode())
    assert reader.entries(0)["producer_id"].tolist() == [1, 2]
    # Rewritten in place (recovery), same size: a new last entry is noticed.
    with path.open("r+b") as f:
        f.write(
            AbortedTxn(7, 0, 5, 6).encode()
            + AbortedTxn(8, 3, 9, 10).encode()
            + AbortedTxn(9, 10, 12, 13).encode()
        )
    assert reader.entries(0)["producer_id"].tolist() == [7, 8, 9]
    os.truncate(path, 34)  # truncated: read again
    assert reader.entries(0)["producer_id"].tolist() == [7]
    # A transaction whose ABORT marker is in a later segment is found there, and only while the
    # search is not complete (an entry whose LSO reaches the bound ends it).
    fn.txn_index_file(d, 20).write_bytes(AbortedTxn(4, 15, 25, 26).encode())
    listed: list[int] = []

    def later() -> list[int]:
        listed.append(1)
        return [0, 20]

    assert reader.collect(0, later, 10, 20) == [(4, 15, 25)] and listed == [1]
    assert reader.collect(0, later, 0, 6) == [(7, 0, 5)] and listed == [1]  # complete in segment 0


def test_take_batches_keeps_positions(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    workload(log)
    view = segment_view(log)
    h = scan_batches(view, base_position=100)
    sub = take_batches(h, np.array([1, 3], dtype=np.int64))
    assert sub.positions.tolist() == h.positions[[1, 3]].tolist() and sub.base_position == 100
    assert sub.end == h.end and len(sub) == 2
    log.close()
