"""storage/verify/: what dump-log and check find in partition logs, damaged on purpose byte by byte."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import write_checkpoint
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.time_index import TimeIndex
from shardbroker.storage.verify.indexes import verify_offset_index
from shardbroker.storage.verify.partition import verify_partition
from shardbroker.storage.verify.problems import MAX_REPORTED, Problem, Severity
from shardbroker.storage.verify.segments import scan_segment
from tests.unit.storage_batches import Clock, batch_of_size, build_batch

CFG = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, segment_index_bytes=4096)


def make_log(d: Path, batches: int = 300, *, close: bool = True) -> PartitionLog:
    log = PartitionLog.open(d, CFG, clock=Clock())
    for i in range(batches):
        log.append(build_batch(1 + i % 3, value_size=90 + i % 50, timestamp=1000 + i))
    if close:
        log.close()
    return log


def crash(log: PartitionLog) -> None:
    """Drop the log without close(): no marker, no trimming (as if the broker was killed)."""
    for seg in log.segments:
        seg.close()


def segment_logs(d: Path) -> list[Path]:
    return sorted(d.glob("*.log"))


def batch_starts(path: Path) -> list[tuple[int, int, int]]:
    """``(position, size, base offset)`` of each batch of a .log file."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        out.append((pos, length + 12, base))
        pos += length + 12
    return out


def patch(path: Path, position: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, position)
    finally:
        os.close(fd)


def flip(path: Path, position: int) -> None:
    patch(path, position, bytes([path.read_bytes()[position] ^ 0xFF]))


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.iterdir())}


def serious(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity is not Severity.NOTE]


def test_clean_log_has_no_findings_and_reports_its_offsets(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    before = snapshot(d)
    report = verify_partition(d)
    assert report.problems == []
    assert (report.segments, report.batches, report.records) == (3, 300, 600)
    assert (report.log_start_offset, report.log_end_offset, report.recovery_point) == (0, 600, 600)
    assert report.clean_shutdown
    assert snapshot(d) == before  # read-only: not a byte, not an mtime changed


def test_open_log_of_a_running_broker_reads_clean_and_untouched(tmp_path: Path) -> None:
    """The active segment's indexes are preallocated with a zero tail and lack the closing time
    entry; the log is open for writing. None of that is a finding, and nothing is resized."""
    d = tmp_path / "t-0"
    log = make_log(d, 250, close=False)
    try:
        active_index = fn.index_file(d, log.segments[-1].base_offset)
        assert active_index.stat().st_size == CFG.segment_index_bytes  # preallocated
        before = snapshot(d)
        report = verify_partition(d, live=True)
        assert serious(report.problems) == []
        assert report.log_end_offset == log.log_end_offset
        assert snapshot(d) == before
    finally:
        log.close()


def test_flipped_byte_names_file_position_offset_and_crc(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    middle = segment_logs(d)[1]
    pos, size, base = batch_starts(middle)[17]
    flip(middle, pos + size - 3)  # inside the records: covered by the CRC
    problems = serious(verify_partition(d).problems)
    assert len(problems) == 2, problems
    crc, lost = problems
    assert (crc.severity, crc.kind, crc.path) == (Severity.DAMAGE, "batch-crc", middle)
    assert (crc.position, crc.offset, crc.batch) == (pos, base, 17)
    assert "CRC-32C mismatch" in crc.message and "and the 1 later segment(s)" in crc.message
    # The checkpoint says everything was flushed: the cut would lose flushed records.
    assert lost.kind == "data-lost" and lost.offset == base


@pytest.mark.parametrize(
    ("field_position", "value", "kind", "words"),
    [
        (16, b"\x01", "batch-magic", "magic 1"),
        (0, struct.pack(">q", 5), "batch-offsets-increasing", "not above the previous batch's lastOffset"),
        (8, struct.pack(">i", 7), "batch-length", "invalid batchLength 7"),
    ],
)
def test_header_damage_outside_the_crc_is_named(
    tmp_path: Path, field_position: int, value: bytes, kind: str, words: str
) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    first = segment_logs(d)[0]
    pos, _, base = batch_starts(first)[40]
    patch(first, pos + field_position, value)
    found = [p for p in verify_partition(d).problems if p.kind == kind]
    assert len(found) == 1, verify_partition(d).problems
    assert found[0].severity is Severity.DAMAGE
    assert (found[0].path, found[0].position, found[0].offset, found[0].batch) == (
        first,
        pos,
        5 if kind == "batch-offsets-increasing" else base,
        40,
    )
    assert words in found[0].message


@pytest.mark.parametrize("cut", [1, 30, 61, 100])
def test_torn_tail_after_a_crash_is_repairable(tmp_path: Path, cut: int) -> None:
    d = tmp_path / "t-0"
    log = make_log(d, close=False)
    last_path, size = log.segments[-1].log_path, log.segments[-1].size
    crash(log)
    pos, _, base = batch_starts(last_path)[-1]
    os.truncate(last_path, size - cut)
    report = verify_partition(d)
    problems = serious(report.problems)
    assert {p.severity for p in problems} == {Severity.REPAIRABLE}, problems
    torn = [p for p in problems if p.kind == "torn-tail"]
    assert len(torn) == 1 and (torn[0].path, torn[0].position, torn[0].offset) == (last_path, pos, base)
    assert report.log_end_offset == base
    # What recovery then does agrees: the log ends where check said, with nothing left to report.
    PartitionLog.open(d, CFG).close()
    assert serious(verify_partition(d).problems) == []


def test_bad_crc_of_the_very_last_batch_is_a_torn_tail_but_earlier_ones_are_damage(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = make_log(d, close=False)
    last_path = log.segments[-1].log_path
    crash(log)
    batches = batch_starts(last_path)
    flip(last_path, batches[-1][0] + batches[-1][1] - 1)
    assert [p.kind for p in serious(verify_partition(d).problems)] == ["torn-tail"]
    flip(last_path, batches[-2][0] + batches[-2][1] - 1)  # now a bad batch with a good one behind
    kinds = {p.kind: p.severity for p in serious(verify_partition(d).problems)}
    assert kinds["batch-crc"] is Severity.DAMAGE


def test_chunked_reading_sees_the_same_batches(tmp_path: Path) -> None:
    path = fn.log_file(tmp_path, 0)
    data = b"".join(
        bytes(batch_of_size(size, base_offset=i)) for i, size in enumerate([100, 5000, 300, 20000, 90])
    )
    path.write_bytes(data + b"\x00\x00\x00")
    whole = scan_segment(path, 0)
    for chunk in (100, 1000, 4096):
        part = scan_segment(path, 0, chunk_bytes=chunk)
        assert part.headers.positions.tolist() == whole.headers.positions.tolist()
        assert part.headers.base_offsets.tolist() == [0, 1, 2, 3, 4]
        assert part.stop == whole.stop
    assert whole.stop is not None and whole.stop.position == len(data) and whole.stop.remaining == 3


def test_offset_index_entries_are_checked_against_the_log(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    index = fn.index_file(d, 0)
    entries = OffsetIndex.read_entries(index)
    assert entries.valid > 5
    rel, pos = int(entries.keys[3]), int(entries.values[3])
    patch(index, 3 * 8 + 4, struct.pack(">i", pos + 1))  # entry 3 now points inside a batch
    found = [p for p in verify_partition(d).problems if p.path == index]
    assert [(p.kind, p.position, p.offset) for p in found] == [("index-entry", 24, rel)]
    assert "not the start of a batch" in found[0].message
    # A cleanly closed log trusts its indexes: the broker would read from the wrong place.
    assert found[0].severity is Severity.DAMAGE and "remove the index file" in found[0].message
    PartitionLog.open(d, CFG).close()
    assert [p for p in verify_partition(d).problems if p.path == index] == found  # the broker kept it


def test_index_entries_the_brokers_sanity_check_catches_are_repairable(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    index = fn.index_file(d, 0)
    entries = OffsetIndex.read_entries(index)
    patch(index, 5 * 8, struct.pack(">i", int(entries.keys[3])))  # entry 5 names entry 3's offset
    found = [p for p in verify_partition(d).problems if p.path == index]
    assert [(p.kind, p.position) for p in found] == [("index-entry", 40)]
    assert "is not above entry 4" in found[0].message
    assert found[0].severity is Severity.REPAIRABLE  # out of order: the broker rebuilds it on start
    last = entries.valid - 1
    patch(index, 5 * 8, struct.pack(">i", int(entries.keys[5])))
    patch(index, last * 8, struct.pack(">i", int(entries.keys[last]) + 1))  # the last entry is wrong
    found = [p for p in verify_partition(d).problems if p.path == index]
    assert [(p.kind, p.position, p.severity) for p in found] == [
        ("index-entry", last * 8, Severity.REPAIRABLE)
    ]
    PartitionLog.open(d, CFG).close()
    assert verify_partition(d).problems == []  # as promised: the broker rebuilt it


def test_time_index_entries_and_closing_entry(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    timeindex = fn.time_index_file(d, 0)
    entries = TimeIndex.read_entries(timeindex)
    patch(timeindex, 2 * 12, struct.pack(">q", int(entries.keys[2]) - 1))  # still increasing, but wrong
    os.truncate(timeindex, (entries.valid - 1) * 12)  # the closing entry is gone
    found = {p.kind: p for p in verify_partition(d).problems if p.path == timeindex}
    assert set(found) == {"timeindex-entry", "timeindex-closing"}
    assert found["timeindex-entry"].position == 24
    assert "has maxTimestamp" in found["timeindex-entry"].message
    assert {p.severity for p in found.values()} == {Severity.DAMAGE}  # the sanity check misses both


def test_index_files_missing_or_torn_are_repairable(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    fn.time_index_file(d, 0).unlink()
    index = fn.index_file(d, 0)
    os.truncate(index, index.stat().st_size - 3)
    found = {(p.kind, p.path.name, p.severity) for p in verify_partition(d).problems}
    assert found == {
        ("index-missing", "00000000000000000000.timeindex", Severity.REPAIRABLE),
        ("index-torn", "00000000000000000000.index", Severity.REPAIRABLE),
    }
    PartitionLog.open(d, CFG).close()
    assert verify_partition(d).problems == []


def test_checkpoints_are_held_to_the_log(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    write_checkpoint(d / fn.RECOVERY_POINT_CHECKPOINT, {("t", 0): 700})
    for path in (fn.log_file(d, 0), fn.index_file(d, 0), fn.time_index_file(d, 0)):
        path.unlink()  # the first segment is lost; the log start checkpoint still says 0
    found = {p.path.name: p for p in verify_partition(d).problems}
    assert found[fn.RECOVERY_POINT_CHECKPOINT].kind == "data-lost"
    assert "offsets 0 to 212 are missing" in found[fn.LOG_START_OFFSET_CHECKPOINT].message
    (d / fn.LOG_START_OFFSET_CHECKPOINT).write_text("0\n1\nnot a checkpoint\n")
    found = {p.path.name: p for p in verify_partition(d).problems}
    assert found[fn.LOG_START_OFFSET_CHECKPOINT].severity is Severity.REPAIRABLE


def test_overlapping_segments_are_damage(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    second = segment_logs(d)[1]
    base = int(second.name[:20])
    for suffix in (fn.LOG_SUFFIX, fn.INDEX_SUFFIX, fn.TIME_INDEX_SUFFIX):
        os.rename(d / (second.name[:20] + suffix), d / (fn.filename_prefix(base - 5) + suffix))
    found = [p for p in verify_partition(d).problems if p.kind == "segment-overlap"]
    assert len(found) == 1 and found[0].offset == base - 5
    # The renamed segment's batches still start at ``base``, above its new name: a gap note.
    assert any(p.kind == "offset-gap" for p in verify_partition(d).problems)


def test_findings_are_capped_per_file_and_kind(tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    make_log(d)
    index = fn.index_file(d, 0)
    entries = OffsetIndex.read_entries(index)
    raw = bytearray(index.read_bytes())
    for i in range(entries.valid):
        struct.pack_into(">i", raw, i * 8 + 4, int(entries.values[i]) + 1)
    index.write_bytes(bytes(raw))
    scan = scan_segment(fn.log_file(d, 0), 0)
    found = verify_offset_index(OffsetIndex.read_entries(index), index, scan)
    assert entries.valid > MAX_REPORTED
    assert len(found) == MAX_REPORTED + 1
    assert found[-1].message == f"{entries.valid - MAX_REPORTED} more index-entry findings not listed"


def test_problem_describe_is_one_precise_line(tmp_path: Path) -> None:
    p = Problem(Severity.DAMAGE, "batch-crc", tmp_path / "t-0" / "x.log", "CRC-32C mismatch", 4162, 37, 12)
    assert p.describe(tmp_path) == "damage: t-0/x.log: position 4162, offset 37, batch 12: CRC-32C mismatch"
    assert Problem(Severity.NOTE, "leftover", Path("/a/b"), "gone").describe() == "note: /a/b: gone"


def test_a_live_segments_preallocated_index_reads_the_same_entries(tmp_path: Path) -> None:
    """An open segment's index is a sparse preallocated file: read only up to its first hole,
    with the same entries as the whole file and the file's real length."""
    d = tmp_path / "t-0"
    log = make_log(d, batches=40, close=False)  # still open: the active index is preallocated
    index = fn.index_file(d, log.segments[-1].base_offset)
    size = os.path.getsize(index)
    assert size == CFG.segment_index_bytes
    entries = OffsetIndex.read_entries(index)
    data = index.read_bytes()
    keys, values = OffsetIndex._decode(np.frombuffer(data, dtype=np.uint8))
    assert entries.file_bytes == size and entries.valid == OffsetIndex._valid_prefix((keys, values)) > 0
    assert entries.keys[: entries.valid].tolist() == keys[: entries.valid].tolist()
    log.close()
