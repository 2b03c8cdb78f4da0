"""``check`` and ``dump-log`` on transactional logs: ``.txnindex`` against the ABORT markers,
producer snapshots, and Kafka's DumpLogSegments lines for both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.cli.main import main
from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.transaction_index import AbortedTxn
from shardbroker.storage.verify.partition import verify_partition
from shardbroker.storage.verify.problems import Problem, Severity
from tests.unit.storage_batches import Clock, build_batch, marker, txn_batch

CFG = LogConfig(segment_bytes=1024, index_interval_bytes=256)


def make_log(d: Path, *, close: bool = True) -> PartitionLog:
    """Segment 0: txn of 1 (offset 0), aborted at 2 while 2's txn (1) is open; segment 3: 2's
    abort at 3; then a committed txn and an abort in the active segment."""
    log = PartitionLog.open(d, CFG, clock=Clock())
    log.append(txn_batch(1, 0, pid=1, value_size=300))  # 0
    log.append(txn_batch(1, 0, pid=2, value_size=300))  # 1
    log.append(marker(True, pid=1, coordinator_epoch=4), allow_control=True)  # 2
    log.roll()
    log.append(marker(True, pid=2), allow_control=True)  # 3
    log.append(txn_batch(1, 1, pid=1, value_size=300))  # 4
    log.append(marker(False, pid=1, coordinator_epoch=4), allow_control=True)  # 5
    log.append(build_batch(1, value_size=300))  # 6
    log.roll()
    log.append(txn_batch(1, 2, pid=1, value_size=300))  # 7
    log.append(marker(True, pid=1, coordinator_epoch=4), allow_control=True)  # 8
    if close:
        log.close()
    return log


def txn_problems(d: Path) -> list[Problem]:
    return [p for p in verify_partition(d).problems if p.kind.startswith(("txnindex", "snapshot"))]


def test_a_consistent_transactional_log_has_no_findings(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    assert [s.name for s in sorted(d.glob("*.txnindex"))] == [fn.txn_index_file(d, b).name for b in (0, 3, 7)]
    assert verify_partition(d).problems == []


def test_a_missing_entry_is_damage_in_a_trusted_segment(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    fn.txn_index_file(d, 3).unlink()
    (p,) = txn_problems(d)
    assert (p.severity, p.kind, p.path, p.offset) == (
        Severity.DAMAGE,
        "txnindex-missing",
        fn.txn_index_file(d, 3),
        3,
    )
    assert "ABORT marker at 3 (producer 2, transaction from 1)" in p.message


def test_a_wrong_index_of_a_segment_recovery_scans_is_repairable(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = make_log(d, close=False)
    for seg in log.segments:
        seg.close()  # killed: the active segment (7) is recovered at the next start
    path = fn.txn_index_file(d, 7)
    path.write_bytes(AbortedTxn(1, 6, 8, 9).encode())  # wrong first offset
    (p,) = txn_problems(d)
    assert (p.severity, p.kind) == (Severity.REPAIRABLE, "txnindex-wrong")
    assert "says firstOffset 6, lastStableOffset 9; the log says 7, 9" in p.message


def test_an_entry_naming_no_abort_and_a_torn_file(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    path = fn.txn_index_file(d, 3)
    with path.open("ab") as f:
        f.write(AbortedTxn(1, 4, 5, 6).encode())  # 5 is a COMMIT
        f.write(b"\x00" * 7)
    kinds = {(p.kind, p.severity, p.offset) for p in txn_problems(d)}
    assert kinds == {("txnindex-extra", Severity.DAMAGE, 5), ("txnindex-torn", Severity.REPAIRABLE, None)}


def test_entries_of_transactions_begun_before_the_log_start_are_accepted(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = make_log(d, close=False)
    log.delete_records(3)  # segment 0 goes: 2's transaction (1) began before the log start
    log.close()
    assert txn_problems(d) == []
    # ... but an entry that names a COMMIT is wrong, however old its transaction.
    with fn.txn_index_file(d, 3).open("ab") as f:
        f.write(AbortedTxn(1, 0, 5, 6).encode())
    assert [(p.kind, p.offset) for p in txn_problems(d)] == [("txnindex-extra", 5)]


def test_a_transaction_cut_by_the_log_start_keeps_its_recorded_first_offset(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, LogConfig(segment_bytes=1 << 20), clock=Clock())
    log.append(txn_batch(1, 0, pid=9))  # 0
    log.append(build_batch(1))  # 1
    log.append(txn_batch(1, 1, pid=9))  # 2
    log.append(marker(True, pid=9), allow_control=True)  # 3: entry (9, 0, 3, 4)
    log.delete_records(2)  # a replay from 2 sees the transaction begin at 2
    log.close()
    assert fn.txn_index_file(d, 0).read_bytes() == AbortedTxn(9, 0, 3, 4).encode()
    assert txn_problems(d) == []


def test_a_corrupt_snapshot_is_repairable(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    snap = fn.producer_snapshot_file(d, 9)
    data = bytearray(snap.read_bytes())
    data[-1] ^= 1
    snap.write_bytes(bytes(data))
    (p,) = txn_problems(d)
    assert (p.severity, p.kind, p.path) == (Severity.REPAIRABLE, "snapshot", snap)


def test_check_exits_1_on_a_missing_entry(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    fn.txn_index_file(d, 7).unlink()
    code = main(["check", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 1
    assert any(
        line.startswith("damage: t-0/00000000000000000007.txnindex: offset 8: the ABORT marker at 8")
        for line in out.splitlines()
    ), out


# ---- dump-log -----------------------------------------------------------------------------------


def dump(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["dump-log", *argv])
    return code, capsys.readouterr().out.splitlines()


def test_dump_log_prints_txnindex_entries_as_kafka(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    code, lines = dump(capsys, str(fn.txn_index_file(d, 0)), "--verify-index")
    assert code == 0
    assert lines[1:] == ["version: 0 producerId: 1 firstOffset: 0 lastOffset: 2 lastStableOffset: 1"]
    fn.txn_index_file(d, 0).write_bytes(b"")
    code, lines = dump(capsys, str(fn.txn_index_file(d, 0)), "--verify-index")
    assert code == 1 and "txnindex" in lines[-1] and "ABORT marker at 2" in lines[-1]


def test_dump_log_prints_snapshot_producers_as_kafka(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG, clock=Clock())
    log.append(build_batch(3, producer_id=5, producer_epoch=1, base_sequence=10))
    log.append(txn_batch(1, 0, pid=6))
    log.close()
    code, lines = dump(capsys, str(fn.producer_snapshot_file(d, 4)))
    assert code == 0
    assert lines[1:] == [
        "producerId: 5 producerEpoch: 1 coordinatorEpoch: -1 currentTxnFirstOffset: -1 "
        "lastTimestamp: 1700000000000 firstSequence: 10 lastSequence: 12 lastOffset: 2 offsetDelta: 2 "
        "timestamp: 1700000000000",
        "producerId: 6 producerEpoch: 0 coordinatorEpoch: -1 currentTxnFirstOffset: 3 "
        "lastTimestamp: 1700000000000 firstSequence: 0 lastSequence: 0 lastOffset: 3 offsetDelta: 0 "
        "timestamp: 1700000000000",
    ]
    os.truncate(fn.producer_snapshot_file(d, 4), 20)
    code, lines = dump(capsys, str(fn.producer_snapshot_file(d, 4)))
    assert code == 1 and lines[-1].startswith("repairable: ")


def test_dump_log_marks_transactional_and_control_batches(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    code, lines = dump(capsys, str(fn.log_file(d, 0)), "--deep-iteration")
    assert code == 0
    batches = [line for line in lines if line.startswith("baseOffset:")]
    assert "isTransactional: true isControl: false" in batches[0]
    assert "isTransactional: true isControl: true" in batches[2]
    assert lines[-1].endswith("endTxnMarker: ABORT coordinatorEpoch: 4")
