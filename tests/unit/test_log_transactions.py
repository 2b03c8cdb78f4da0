"""The log with transactions: the last stable offset, read_committed reads, and recovery,
retention and hand-over of the producer state and the ``.txnindex``."""

from __future__ import annotations

import os
from pathlib import Path

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.transaction_index import AbortedTxn
from tests.unit.storage_batches import Clock, batch_offsets, build_batch, marker, txn_batch

CFG = LogConfig(segment_bytes=2048, index_interval_bytes=256)


def open_log(d: Path, cfg: LogConfig = CFG) -> PartitionLog:
    return PartitionLog.open(d, cfg, clock=Clock())


def crash(log: PartitionLog) -> None:
    """Drop the log without close(): no marker, no snapshot, no checkpoint (as if killed)."""
    for seg in log.segments:
        seg.close()


def state(log: PartitionLog) -> tuple[object, ...]:
    """What must survive a restart: LSO, open transactions, every segment's index entries."""
    entries = [(s.base_offset, s.txn_index.all_aborted_txns()) for s in log.segments]
    producers = {
        pid: (e.epoch, e.last_seq, e.last_offset, e.coordinator_epoch, e.current_txn_first_offset)
        for pid, e in log.producer_state.producers.items()
    }
    return log.last_stable_offset, dict(log.producer_state.ongoing), entries, producers


def workload(log: PartitionLog) -> None:
    """Three producers, aborted and committed transactions across segments, one left open."""
    seqs = {1: 0, 2: 0, 3: 0}
    for round_ in range(6):
        for pid in (1, 2, 3):
            log.append(txn_batch(2, seqs[pid], pid=pid, value_size=120))
            seqs[pid] += 2
        log.append(build_batch(1, value_size=120))
        for pid in (1, 2):
            log.append(marker(round_ % 2 == 0, pid=pid, coordinator_epoch=round_), allow_control=True)
    log.append(txn_batch(1, seqs[1], pid=1, value_size=120))  # 1 and 3 stay open


def test_lso_follows_appends_markers_and_the_log_end(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0")
    log.append(build_batch(3))
    assert log.last_stable_offset == log.high_watermark == 3
    log.append(txn_batch(1, 0, pid=1))  # 3
    log.append(build_batch(1))
    log.append(txn_batch(1, 0, pid=2))  # 5
    assert log.last_stable_offset == 3 and log.high_watermark == 6
    log.append(marker(False, pid=1), allow_control=True)  # 6
    assert log.last_stable_offset == 5
    log.append(marker(True, pid=2), allow_control=True)  # 7
    assert log.last_stable_offset == log.log_end_offset == 8
    log.close()


def test_read_stops_at_max_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", LogConfig(segment_bytes=1 << 20))
    log.append(build_batch(2))  # 0-1
    log.append(txn_batch(2, 0, pid=1))  # 2-3: open
    log.append(build_batch(1))  # 4
    lso = log.last_stable_offset
    assert lso == 2
    assert batch_offsets(log.read(0, 1 << 20, max_offset=lso).read()) == [(0, 1)]
    assert log.read(2, 1 << 20, max_offset=lso).length == 0
    assert log.read(4, 1 << 20, max_offset=lso).length == 0
    assert batch_offsets(log.read(0, 1 << 20).read()) == [(0, 1), (2, 3), (4, 4)]
    log.append(marker(True, pid=1), allow_control=True)
    assert batch_offsets(log.read(0, 1 << 20, max_offset=log.last_stable_offset).read())[-1] == (5, 5)
    log.close()


def test_retention_of_a_transactions_start_holds_the_lso_at_the_log_start(tmp_path: Path) -> None:
    log = open_log(tmp_path / "t-0", LogConfig(segment_bytes=1024, index_interval_bytes=256))
    log.append(txn_batch(1, 0, pid=1, value_size=400))  # 0: opens a transaction
    for _ in range(6):
        log.append(build_batch(1, value_size=400))
    assert log.last_stable_offset == 0
    log.delete_records(3)  # the transaction's data is gone; it is still undecided (Kafka)
    assert log.log_start_offset == 3 and log.last_stable_offset == 3
    log.append(marker(True, pid=1), allow_control=True)
    assert log.last_stable_offset == log.log_end_offset
    # The abort names the transaction's real first offset (below the log start now).
    assert log.segments[-1].txn_index.all_aborted_txns()[-1][:3] == (1, 0, log.log_end_offset - 1)
    log.close()


def test_clean_restart_restores_everything(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d)
    workload(log)
    before = state(log)
    assert log.segment_count > 3 and before[0] < log.log_end_offset
    log.close()
    log = open_log(d)
    assert log.recovery_stats.clean_shutdown and state(log) == before
    log.close()


def test_recovery_after_a_crash_rebuilds_state_and_index(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d)
    workload(log)
    before = state(log)
    crash(log)
    # The active segment's index is rebuilt by recovery: damage it to prove it is rewritten.
    active = max(int(p.name[:20]) for p in d.glob("*.log"))
    fn.txn_index_file(d, active).write_bytes(b"\x07" * 50)
    log = open_log(d)
    assert not log.recovery_stats.clean_shutdown and log.recovery_stats.segments_recovered >= 1
    assert state(log) == before
    log.close()


def test_recovery_without_any_snapshot_replays_the_whole_log(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d)
    workload(log)
    before = state(log)
    crash(log)
    for p in d.glob("*.snapshot"):
        p.unlink()
    os.unlink(d / fn.RECOVERY_POINT_CHECKPOINT)  # recover every segment: every index is rebuilt
    for p in d.glob("*.txnindex"):
        p.unlink()
    log = open_log(d)
    assert log.recovery_stats.segments_recovered == log.segment_count
    assert state(log) == before
    log.close()


def test_a_torn_active_segment_loses_the_abort_and_its_entry(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d, LogConfig(segment_bytes=1 << 20))
    log.append(txn_batch(2, 0, pid=1))  # 0-1
    log.append(txn_batch(1, 0, pid=2))  # 2
    log.append(marker(True, pid=2), allow_control=True)  # 3
    log.append(marker(True, pid=1), allow_control=True)  # 4
    seg = log.segments[-1]
    assert [t.last_offset for t in seg.txn_index.all_aborted_txns()] == [3, 4]
    size = seg.size
    crash(log)
    os.truncate(fn.log_file(d, 0), size - 5)  # the last marker is torn
    log = open_log(d)
    assert log.log_end_offset == 4
    assert log.segments[-1].txn_index.all_aborted_txns() == [AbortedTxn(2, 2, 3, 0)]
    assert log.producer_state.ongoing == {0: 1} and log.last_stable_offset == 0
    log.close()


def test_snapshots_beyond_the_recovered_log_end_are_deleted(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d, LogConfig(segment_bytes=1 << 20))
    log.append(txn_batch(1, 0, pid=1))
    log.close()  # a snapshot at 1
    log = open_log(d, LogConfig(segment_bytes=1 << 20))
    log.append(marker(True, pid=1), allow_control=True)
    log.close()  # a snapshot at 2 (the one at 1 is now a stray, removed at the next open)
    assert fn.producer_snapshot_file(d, 2).exists()
    os.unlink(d / fn.CLEAN_SHUTDOWN_FILE)
    os.unlink(d / fn.RECOVERY_POINT_CHECKPOINT)
    os.truncate(fn.log_file(d, 0), len(txn_batch(1, 0, pid=1)))  # as if the marker never reached the disk
    log = open_log(d, LogConfig(segment_bytes=1 << 20))
    assert log.log_end_offset == 1 and not fn.producer_snapshot_file(d, 2).exists()
    assert log.producer_state.ongoing == {0: 1} and log.last_stable_offset == 0
    assert log.segments[0].txn_index.all_aborted_txns() == []
    log.close()


def test_a_live_move_hands_the_index_and_the_state_over(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = open_log(d)
    workload(log)
    before = state(log)
    collected = log.collect_aborted_transactions(0, log.log_end_offset)
    segments = log.hand_over()
    new_owner = open_log(d)  # what the next worker does, while the old one still holds the files
    assert new_owner.recovery_stats.clean_shutdown
    assert state(new_owner) == before
    assert new_owner.collect_aborted_transactions(0, new_owner.log_end_offset) == collected
    for seg in segments:
        seg.close()
    info = new_owner.append(marker(True, pid=1, coordinator_epoch=9), allow_control=True)
    assert list(new_owner.producer_state.ongoing.values()) == [3]
    assert new_owner.segments[-1].txn_index.all_aborted_txns()[-1].last_offset == info.first_offset
    new_owner.close()


def test_producers_retention_removed_stay_removed_after_a_crash(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    cfg = LogConfig(segment_bytes=1024, index_interval_bytes=256)
    log = open_log(d, cfg)
    log.append(build_batch(1, producer_id=1, producer_epoch=0, base_sequence=0, value_size=400))
    log.append(txn_batch(1, 0, pid=2, value_size=400))
    for _ in range(4):
        log.append(build_batch(1, value_size=400))  # rolls: snapshots that still hold producer 1
    log.delete_records(2)
    assert set(log.producer_state.producers) == {2}
    crash(log)
    log = open_log(d, cfg)
    assert set(log.producer_state.producers) == {2} and log.last_stable_offset == 2
    log.close()
