"""The aborted-transaction index: Kafka's file format, its queries, and the log writing it."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.abstract_index import CorruptIndexError
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.transaction_index import AbortedTxn, TransactionIndex
from tests.unit.storage_batches import Clock, build_batch, marker, txn_batch

CFG = LogConfig(segment_bytes=4096, index_interval_bytes=256)


def index(tmp_path: Path, base: int = 0) -> TransactionIndex:
    return TransactionIndex(fn.txn_index_file(tmp_path, base), base)


def test_entries_are_kafkas_34_byte_big_endian_layout(tmp_path: Path) -> None:
    idx = index(tmp_path)
    assert not idx.path.exists()  # created with its first entry
    idx.append(AbortedTxn(7, 10, 20, 21))
    idx.append(AbortedTxn(8, 15, 30, 31))
    assert idx.path.read_bytes() == struct.pack(">hqqqq", 0, 7, 10, 20, 21) + struct.pack(
        ">hqqqq", 0, 8, 15, 30, 31
    )
    idx.close()
    assert index(tmp_path).all_aborted_txns() == [AbortedTxn(7, 10, 20, 21), AbortedTxn(8, 15, 30, 31)]


def test_last_offsets_must_increase(tmp_path: Path) -> None:
    idx = index(tmp_path)
    idx.append(AbortedTxn(7, 10, 20, 21))
    with pytest.raises(ValueError):
        idx.append(AbortedTxn(8, 11, 20, 21))
    idx.close()
    reopened = index(tmp_path)  # the last offset is read back on open
    with pytest.raises(ValueError):
        reopened.append(AbortedTxn(8, 11, 19, 21))


def test_collect_follows_kafkas_overlap_and_stop_rules(tmp_path: Path) -> None:
    idx = index(tmp_path)
    # (1)'s LSO is 3: (2) was open when (1) was aborted. (4) could not follow (3) in a real log
    # (it was open when (3) ended, whose LSO would then be 11): it shows where the search stops.
    for txn in (
        AbortedTxn(1, 0, 5, 3),
        AbortedTxn(2, 3, 10, 11),
        AbortedTxn(3, 12, 20, 21),
        AbortedTxn(4, 11, 30, 31),
    ):
        idx.append(txn)
    found, complete = idx.collect_aborted_txns(6, 12)
    # (1) ends before 6; (2) overlaps; (3) starts at 12, not below the bound, and its LSO 21 reaches
    # the bound: the search is complete and (4) is not looked at.
    assert [t.producer_id for t in found] == [2] and complete
    found, complete = idx.collect_aborted_txns(0, 100)
    assert [t.producer_id for t in found] == [1, 2, 3, 4] and not complete
    found, complete = idx.collect_aborted_txns(5, 6)
    assert [t.producer_id for t in found] == [1, 2] and complete


def test_truncate_reset_and_sanity_check(tmp_path: Path) -> None:
    idx = index(tmp_path, 10)
    for last in (12, 15, 19):
        idx.append(AbortedTxn(1, 10, last, last + 1))
    idx.truncate_to(15)
    assert [t.last_offset for t in idx.all_aborted_txns()] == [12]
    idx.append(AbortedTxn(1, 13, 14, 15))  # the last offset went back with the truncation
    idx.sanity_check()
    idx.reset()
    assert idx.all_aborted_txns() == [] and idx.path.stat().st_size == 0
    idx.append(AbortedTxn(1, 0, 9, 10))  # ends before the segment's base offset
    with pytest.raises(CorruptIndexError):
        idx.sanity_check()
    idx.reset()
    idx.append(AbortedTxn(1, 10, 12, 13))
    idx.close()
    with idx.path.open("ab") as f:
        f.write(b"\x00" * 5)  # torn
    with pytest.raises(CorruptIndexError):
        index(tmp_path, 10).sanity_check()


# ---- the log ------------------------------------------------------------------------------------


def open_log(tmp_path: Path, cfg: LogConfig = CFG) -> PartitionLog:
    return PartitionLog.open(tmp_path / "t-0", cfg, clock=Clock())


def test_an_abort_writes_an_entry_with_the_lso_after_it(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(2, 0, pid=1))  # 0-1
    log.append(txn_batch(1, 0, pid=2))  # 2
    log.append(txn_batch(1, 2, pid=1))  # 3
    log.append(marker(True, pid=1), allow_control=True)  # 4: abort of 0-4, txn of 2 still open
    log.append(marker(False, pid=2), allow_control=True)  # 5: a commit: no entry
    log.append(txn_batch(1, 1, pid=2))  # 6
    log.append(marker(True, pid=2), allow_control=True)  # 7: nothing open after it
    log.append(marker(True, pid=2), allow_control=True)  # 8: an empty transaction: no entry
    entries = log.segments[-1].txn_index.all_aborted_txns()
    assert entries == [AbortedTxn(1, 0, 4, 2), AbortedTxn(2, 6, 7, 8)]
    log.close()


def test_collect_aborted_transactions_spans_segments(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(segment_bytes=1024, index_interval_bytes=256))
    log.append(txn_batch(1, 0, pid=1, value_size=400))  # 0
    log.append(txn_batch(1, 0, pid=2, value_size=400))  # 1
    log.roll()
    log.append(marker(True, pid=1), allow_control=True)  # 2, in segment 2: LSO after = 1
    log.append(txn_batch(1, 1, pid=2, value_size=400))  # 3
    log.roll()
    log.append(marker(True, pid=2), allow_control=True)  # 4, in segment 5
    assert [s.base_offset for s in log.segments] == [0, 2, 4]
    assert log.collect_aborted_transactions(0, 5) == [(1, 0), (2, 1)]
    assert log.collect_aborted_transactions(3, 5) == [(2, 1)]  # from the segment holding 3
    assert log.collect_aborted_transactions(0, 1) == [(1, 0)]  # LSO 1 >= bound: stops there
    assert log.collect_aborted_transactions(5, 6) == []
    log.close()


def test_aborted_transactions_of_a_read(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(segment_bytes=1 << 20, index_interval_bytes=100))
    log.append(txn_batch(1, 0, pid=1, value_size=200))  # 0
    log.append(marker(True, pid=1), allow_control=True)  # 1
    for _ in range(5):
        log.append(build_batch(1, value_size=200))  # 2-6
    log.append(txn_batch(1, 1, pid=1, value_size=200))  # 7
    log.append(marker(True, pid=1), allow_control=True)  # 8
    small = log.read(0, 1)  # the first batch only: the bound is the next indexed offset
    assert log.aborted_transactions(small) == [(1, 0)]
    whole = log.read(0, 1 << 20)
    assert log.aborted_transactions(whole) == [(1, 0), (1, 7)]
    assert log.aborted_transactions(log.read(2, 1 << 20)) == [(1, 7)]
    log.close()


def test_the_index_follows_deleted_segments(tmp_path: Path) -> None:
    clock = Clock()
    cfg = LogConfig(segment_bytes=1024, index_interval_bytes=256, file_delete_delay_ms=1000)
    log = PartitionLog.open(tmp_path / "t-0", cfg, clock=clock)
    log.append(txn_batch(1, 0, value_size=400))
    log.append(marker(True), allow_control=True)
    log.roll()
    d = tmp_path / "t-0"
    assert fn.txn_index_file(d, 0).exists()
    log.append(build_batch(1, value_size=400))
    log.delete_records(2)
    # Renamed with its segment (readers may still hold it), then removed after the delay.
    assert [p.name for p in d.glob("*.txnindex*")] == [fn.txn_index_file(d, 0).name + fn.DELETED_SUFFIX]
    clock.advance(1000)
    log.remove_deleted_segments()
    assert not list(d.glob("*.txnindex*"))
    log.close()
