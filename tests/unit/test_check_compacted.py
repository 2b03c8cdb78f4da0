"""``shardbroker check`` on logs the log cleaner compacted (tests/unit/compacted_logs.py): sparse
offsets, an empty batch and a delete horizon are clean there; gaps elsewhere are notes that say
why; a cleaner checkpoint the cleaner cannot use is repairable; a clean a crash interrupted is
checked as the next open will leave it (``.cleaned`` removed, ``.swap`` completed); the
transaction index holds what read_committed consumers need of what the cleaner left."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from shardbroker.cli import check
from shardbroker.cli.main import main
from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import TRANSACTIONAL_BIT
from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import write_checkpoint
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import Cleaner, Throttler
from shardbroker.storage.log_cleaner_manager import clean_partition
from shardbroker.storage.transaction_index import AbortedTxn
from shardbroker.storage.verify.partition import verify_partition
from tests.unit.compacted_logs import (
    CFG,
    CHECKPOINT,
    LAYOUT,
    TS,
    compacted_batch,
    make_compacted_partition,
    write_partition,
)
from tests.unit.storage_batches import Clock

GAP_NOTE = "normal in a compacted log, but this partition has no cleaner-offset-checkpoint"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out


def findings(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.split(":")[0] in ("damage", "repairable", "note")]


def test_a_compacted_partition_is_clean(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    make_compacted_partition(tmp_path / "t-0")
    code, out = run(capsys, str(tmp_path), "--verbose")
    assert code == check.EXIT_CLEAN, out
    # The metadata log is missing (no broker ran here): its two notes are the only findings.
    assert [line.split(":")[1].strip() for line in findings(out)] == ["meta.properties", "__cluster_metadata"]
    assert "t-0: 3 segments, 7 batches, 9 records" in out
    assert "offsets 0..42 (log start..end)" in out and f"compacted (cleaner checkpoint {CHECKPOINT})" in out
    code, out = run(capsys, str(tmp_path), "--json")
    part = json.loads(out)["partitions"][0]
    assert (part["compacted"], part["cleaner_checkpoint"], part["problems"]) == (True, CHECKPOINT, [])


def test_gaps_without_a_cleaner_checkpoint_are_notes_that_say_why(tmp_path: Path) -> None:
    d = make_compacted_partition(tmp_path / "t-0", checkpoint=None)
    report = verify_partition(d)
    assert not report.compacted and report.cleaner_checkpoint is None
    assert [(p.severity, p.path.name, p.offset, p.message) for p in report.problems] == [
        ("note", "00000000000000000000.log", 5, f"offsets jump from 2 to 5 ({GAP_NOTE})"),
        ("note", "00000000000000000000.log", 12, f"offsets jump from 9 to 12 ({GAP_NOTE})"),
        (
            "note",
            "00000000000000000020.log",
            23,
            f"the first batch starts at offset 23, above the file name's 20 ({GAP_NOTE})",
        ),
        ("note", "00000000000000000020.log", 30, f"offsets jump from 24 to 30 ({GAP_NOTE})"),
        (
            "note",
            "00000000000000000020.log",
            20,
            f"offsets jump from 13 (end of the previous segment) to 20 ({GAP_NOTE})",
        ),
        (
            "note",
            "00000000000000000040.log",
            40,
            f"offsets jump from 30 (end of the previous segment) to 40 ({GAP_NOTE})",
        ),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("0\n1\nt 0 not-a-number\n", "malformed checkpoint"),
        (b"\xff\xfe\x00garbage", "can't decode byte"),
        ("0\n1\nt 7 12\n", "has no entry for t-0"),
        ("0\n1\nt 0 100\n", "first dirty offset 100 is beyond the log end offset 42"),
        (
            "0\n1\nt 0 41\n",
            "first dirty offset 41 is inside the active segment 00000000000000000040.log, "
            "which is never cleaned",
        ),
    ],
)
def test_a_cleaner_checkpoint_the_cleaner_cannot_use_is_repairable(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str | bytes, message: str
) -> None:
    d = make_compacted_partition(tmp_path / "t-0")
    path = d / fn.CLEANER_OFFSET_CHECKPOINT
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    code, out = run(capsys, str(tmp_path))
    assert code == check.EXIT_REPAIRABLE, out
    [line] = [f for f in findings(out) if f.startswith("repairable")]
    assert line.startswith("repairable: t-0/cleaner-offset-checkpoint: ")
    assert message in line
    assert line.endswith("the cleaner ignores it, cleans from the log start offset and then rewrites it")
    assert not any("offset-gap" in f or "jump" in f for f in findings(out))  # still a compacted partition


def test_a_cleaner_checkpoint_below_the_log_start_is_fine(tmp_path: Path) -> None:
    """Retention of a compact,delete topic moves the log start past it: the cleaner starts there."""
    d = make_compacted_partition(tmp_path / "t-0", checkpoint=3)
    write_checkpoint(d / fn.LOG_START_OFFSET_CHECKPOINT, {("t", 0): 5})
    assert verify_partition(d).problems == []


def _swap_from(d: Path, scratch: Path, merged: dict[int, list[tuple[int, int, list[int]]]]) -> None:
    """The cleaner's output for ``merged`` (its first segment), as ``.swap`` files in ``d``."""
    make_compacted_partition(scratch, layout=merged)
    for kind in (fn.LOG_SUFFIX, fn.INDEX_SUFFIX, fn.TIME_INDEX_SUFFIX):
        shutil.copy(
            scratch / (fn.filename_prefix(0) + kind), d / (fn.filename_prefix(0) + kind + fn.SWAP_SUFFIX)
        )


def test_an_interrupted_swap_is_checked_as_the_next_open_completes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A crash after the swap was made durable and the first old segment renamed .deleted (the
    fault point ``swap:one-deleted``): offsets 0..19 are only in .deleted and .swap files, which
    is no damage: the next open completes the swap."""
    root = tmp_path / "data"
    d = make_compacted_partition(root / "t-0", checkpoint=20)
    # A clean of segments 0 and 20 into one: the record at 2 and the batch at 23 are gone.
    merged = {0: [(0, 2, [0]), (5, 5, [5]), (6, 9, []), (12, 13, [13]), (30, 30, [30])], 40: LAYOUT[40]}
    _swap_from(d, tmp_path / "scratch" / "t-0", merged)
    for kind in (fn.LOG_SUFFIX, fn.INDEX_SUFFIX, fn.TIME_INDEX_SUFFIX):
        name = fn.filename_prefix(0) + kind
        os.rename(d / name, d / (name + fn.DELETED_SUFFIX))
    (d / fn.CLEAN_SHUTDOWN_FILE).unlink()  # the broker was killed
    (d / "00000000000000000000.log.cleaned").write_bytes(b"")  # the next group's output, cut short

    code, out = run(capsys, str(root), "--verbose")
    assert code == check.EXIT_CLEAN, out
    notes = [f for f in findings(out) if f.startswith("note: t-0/")]
    assert notes == [
        "note: t-0/00000000000000000000.log.swap: a cleaned segment whose swap was interrupted; the next "
        "open of the log completes it: it replaces offsets 0 to 30 (segments: 00000000000000000020.log), "
        "and is checked here in their place",
        "note: t-0/00000000000000000000.index.deleted: left by an interrupted write or delete; the broker "
        "removes it on start",
        "note: t-0/00000000000000000000.index.swap: part of the interrupted swap of its .log.swap, which "
        "the next open of the log completes",
        "note: t-0/00000000000000000000.log.cleaned: the output of a clean interrupted before its swap; "
        "the next open of the log removes it",
        "note: t-0/00000000000000000000.log.deleted: left by an interrupted write or delete; the broker "
        "removes it on start",
        "note: t-0/00000000000000000000.timeindex.deleted: left by an interrupted write or delete; the "
        "broker removes it on start",
        "note: t-0/00000000000000000000.timeindex.swap: part of the interrupted swap of its .log.swap, "
        "which the next open of the log completes",
    ]
    assert "t-0: 2 segments, 6 batches, 6 records" in out and "offsets 0..42" in out

    PartitionLog.open(d, CFG, clock=Clock(TS)).close()  # the broker's open completes the swap
    report = verify_partition(d)
    assert report.problems == [] and (report.segments, report.batches, report.records) == (2, 6, 6)


def test_an_incomplete_swap_is_removed_at_open_and_the_old_segments_stay(tmp_path: Path) -> None:
    d = make_compacted_partition(tmp_path / "data" / "t-0")
    _swap_from(d, tmp_path / "scratch" / "t-0", {0: LAYOUT[0], 40: LAYOUT[40]})
    swap = d / "00000000000000000000.log.swap"
    os.truncate(swap, swap.stat().st_size - 3)
    report = verify_partition(d)
    assert [(p.kind, p.path.name) for p in report.problems if p.path.name.endswith(".swap")] == [
        ("leftover", "00000000000000000000.index.swap"),
        ("leftover", "00000000000000000000.log.swap"),
        ("leftover", "00000000000000000000.timeindex.swap"),
    ]
    assert all("removes it and keeps the segments it would replace" in p.message for p in report.problems)
    assert (report.segments, report.records) == (3, 9)


def _abort(producer_id: int, offset: int) -> bytes:
    return build_control_batch(
        ControlRecordType.ABORT,
        producer_id=producer_id,
        producer_epoch=0,
        coordinator_epoch=0,
        timestamp=TS,
        base_offset=offset,
    )


def _txn_partition(d: Path, *, leftover_records: bool) -> Path:
    """Aborted transactions after cleans: producer 42's records are gone but its marker (3) and
    index entry stay until the marker's horizon; producer 43's last batch is kept empty for its
    sequence numbers, its marker (7) has no entry. With ``leftover_records``, producer 44's
    aborted records at 8..9 are still there (its marker at 10), and so must be its entry."""
    seg0 = _abort(42, 3) + compacted_batch(5, 6, [], attributes=TRANSACTIONAL_BIT, producer=(43, 0, 0))
    seg0 += _abort(43, 7)
    if leftover_records:
        seg0 += compacted_batch(8, 9, [8, 9], attributes=TRANSACTIONAL_BIT, producer=(44, 0, 0))
        seg0 += _abort(44, 10)
    write_partition(d, {0: seg0, 20: compacted_batch(20, 20, [20])}, checkpoint=20)
    # The index the cleaner wrote (the entry of the marker whose records it removed), in place of
    # the one the broker's recovery rebuilt from its replay.
    fn.txn_index_file(d, 0).write_bytes(AbortedTxn(42, 0, 3, 0).encode())
    return d


def test_aborted_transactions_the_cleaner_emptied_are_no_finding(tmp_path: Path) -> None:
    assert verify_partition(_txn_partition(tmp_path / "t-0", leftover_records=False)).problems == []


def test_aborted_records_left_in_a_compacted_log_still_need_their_entry(tmp_path: Path) -> None:
    report = verify_partition(_txn_partition(tmp_path / "t-0", leftover_records=True))
    assert [(p.severity, p.kind, p.offset) for p in report.problems] == [("damage", "txnindex-missing", 10)]
    assert "read_committed consumers would deliver its records" in report.problems[0].message


def _put(
    log: PartitionLog,
    records: list[tuple[bytes, bytes | None]],
    producer: tuple[int, int, int] | None = None,
    *,
    transactional: bool = False,
) -> None:
    pid, epoch, seq = producer or (-1, -1, -1)
    b = RecordBatchBuilder(
        producer_id=pid, producer_epoch=epoch, base_sequence=seq, is_transactional=transactional
    )
    for key, value in records:
        b.append(value, key=key, timestamp=TS)
    log.append(bytearray(b.build()))


def test_a_log_the_cleaner_compacted_checks_clean_before_and_after_the_broker_reopens_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The real cleaner, twice: superseded records, an idempotent producer's emptied batch, a
    tombstone under its delete horizon, an aborted transaction (its records removed, its marker
    and index entry kept; then its marker alone) and a committed one."""
    config = LogConfig().overrides({"cleanup.policy": "compact", "segment.bytes": "4096"})
    clock = Clock(TS)
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, config, clock=clock)
    try:
        for r in range(5):
            _put(log, [(b"k%d" % k, b"v%d" % r * 20) for k in range(8)])
        _put(log, [(b"k0", b"idempotent")], producer=(9, 0, 0))
        _put(log, [(b"k0", b"latest"), (b"k1", None)])  # k1's tombstone
        _put(log, [(b"t", b"aborted")] * 3, producer=(42, 0, 0), transactional=True)
        log.append(bytearray(_abort(42, 0)), allow_control=True)
        _put(log, [(b"c", b"committed")], producer=(43, 0, 0), transactional=True)
        log.append(
            bytearray(
                build_control_batch(
                    ControlRecordType.COMMIT,
                    producer_id=43,
                    producer_epoch=0,
                    coordinator_epoch=0,
                    timestamp=TS,
                )
            ),
            allow_control=True,
        )
        log.roll()
        for round_ in range(2):
            assert clean_partition(log, Cleaner(10_000, Throttler(float("inf"))), clock(), force=True)[1]
            _put(log, [(b"filler%d" % round_, b"x")])
            log.roll()
    finally:
        log.close()
    report = verify_partition(d)
    assert report.compacted and report.problems == []
    assert report.records < 5 * 8
    for path in sorted(d.glob("*.log")):
        code, out = main(["dump-log", str(path), "--deep-iteration"]), capsys.readouterr().out
        assert code == 0 and "note:" not in out, out
    PartitionLog.open(d, config, clock=clock).close()  # a restart: what its open changes is fine too
    assert verify_partition(d).problems == []
