"""Verifying one ``<topic>-<partition>`` directory (`verify_partition`) and walking a data dir
(`partition_dirs`), read-only; the files' own checks are in the sibling modules.

Order of reads, which makes a consistent picture of files still growing on a live broker: the
recovery-point checkpoint first, then per segment its indexes before its log, the log-start
checkpoint last (checkpoints.py says why). Leftovers (``.tmp``, ``.deleted``, ``.cleaned``, an
index without its ``.log``) are notes: the broker removes them when it starts.

A ``<base>.log.swap`` is a cleaned segment whose swap a crash interrupted (log_loader.py's
complete_swaps): when it is whole, the next open gives it its final name and deletes the old
segments inside its offsets (some may already be ``.deleted``), so the log is checked as that
open will leave it: the swap (and its ``.index.swap``, ``.timeindex.swap``) in place of those
segments. One that is not whole is deleted at open and the old segments stay; either is a note.

A partition with a ``cleaner-offset-checkpoint`` is compacted: offset gaps are not reported
there (segments.py), and the checkpoint is held to the log (checkpoints.py).
All of verify_partition on a 1 GiB page-cached partition: 0.87-1.18 s (docs/notes/storage.md).
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shardbroker.storage import clean_shutdown
from shardbroker.storage.file_names import (
    CLEANED_SUFFIX,
    CLEANER_OFFSET_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    LOG_SUFFIX,
    RECOVERY_POINT_CHECKPOINT,
    SWAP_SUFFIX,
    SegmentFiles,
    is_delete_dir,
    list_segment_files,
    log_file,
    offset_from_file_name,
    parse_partition_dir,
)
from shardbroker.storage.verify.checkpoints import (
    checkpoint_bounds,
    cleaner_checkpoint_bounds,
    read_cleaner_checkpoint,
    read_offset_checkpoint,
)
from shardbroker.storage.verify.indexes import read_segment_indexes, verify_segment_indexes
from shardbroker.storage.verify.partition_files import verify_partition_files
from shardbroker.storage.verify.problems import Problem, Severity
from shardbroker.storage.verify.segments import (
    SegmentScan,
    batch_problems,
    log_end_offset,
    scan_segment,
    segment_order,
)
from shardbroker.storage.verify.transactions import verify_snapshots, verify_txn_indexes

__all__ = ["PartitionReport", "deleted_partition_dirs", "partition_dirs", "verify_partition"]


@dataclass(slots=True)
class PartitionReport:
    """What :func:`verify_partition` found in one ``<topic>-<partition>`` directory."""

    directory: Path
    topic: str
    partition: int
    segments: int = 0
    batches: int = 0
    records: int = 0
    bytes: int = 0
    log_start_offset: int | None = None
    log_end_offset: int | None = None
    recovery_point: int | None = None
    clean_shutdown: bool = False
    #: The partition has a cleaner-offset-checkpoint: the log cleaner has compacted it.
    compacted: bool = False
    #: Its first dirty offset (None: not compacted, or the checkpoint cannot be read).
    cleaner_checkpoint: int | None = None
    problems: list[Problem] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "topic": self.topic,
            "partition": self.partition,
            "segments": self.segments,
            "batches": self.batches,
            "records": self.records,
            "bytes": self.bytes,
            "log_start_offset": self.log_start_offset,
            "log_end_offset": self.log_end_offset,
            "recovery_point": self.recovery_point,
            "clean_shutdown": self.clean_shutdown,
            "compacted": self.compacted,
            "cleaner_checkpoint": self.cleaner_checkpoint,
            "problems": [p.to_dict() for p in self.problems],
        }


def partition_dirs(data_dir: Path) -> list[Path]:
    """The ``<topic>-<partition>`` directories of a data dir, by topic then partition."""
    found: list[tuple[str, int, Path]] = []
    for entry in os.scandir(data_dir):
        if not entry.is_dir(follow_symlinks=False):
            continue
        try:
            topic, partition = parse_partition_dir(entry.name)
        except ValueError:
            continue
        found.append((topic, partition, Path(entry.path)))
    return [p for _, _, p in sorted(found)]


def deleted_partition_dirs(data_dir: Path) -> list[Problem]:
    """A note per ``<topic>-<partition>.<id>-delete`` directory (file_names.delete_dir): a deleted
    partition the broker removes after file.delete.delay.ms, or when it starts after a crash."""
    return [
        Problem(
            Severity.NOTE,
            "leftover",
            Path(entry.path),
            "a deleted partition's directory; the broker removes it (at the latest when it starts)",
        )
        for entry in sorted(os.scandir(data_dir), key=lambda e: e.name)
        if entry.is_dir(follow_symlinks=False) and is_delete_dir(entry.name)
    ]


def _leftover(path: Path, swaps: dict[int, SegmentScan]) -> Problem | None:
    """The note for a file the broker's open removes, or renames with the swap it belongs to
    (None for a whole ``.log.swap``: `_pending_swaps` notes it)."""
    parsed = offset_from_file_name(path.name)
    if parsed is None or parsed[2] not in (CLEANED_SUFFIX, SWAP_SUFFIX):
        why = "left by an interrupted write or delete; the broker removes it on start"
    elif parsed[2] == CLEANED_SUFFIX:
        why = "the output of a clean interrupted before its swap; the next open of the log removes it"
    elif parsed[0] not in swaps:
        why = (
            "an incomplete swap; the next open of the log removes it and keeps the segments it would replace"
        )
    elif parsed[1] == LOG_SUFFIX:
        return None
    else:
        why = "part of the interrupted swap of its .log.swap, which the next open of the log completes"
    return Problem(Severity.NOTE, "leftover", path, why)


def _pending_swaps(
    listing: SegmentFiles, problems: list[Problem], live: bool
) -> tuple[dict[int, SegmentScan], set[int]]:
    """The whole ``.log.swap`` files (base -> scan) that the next open completes, and the bases of
    the segments they replace; a note for each (the module docstring says what open does)."""
    swaps: dict[int, SegmentScan] = {}
    replaced: set[int] = set()
    for path in listing.leftovers:
        parsed = offset_from_file_name(path.name)
        if parsed is None or parsed[1:] != (LOG_SUFFIX, SWAP_SUFFIX):
            continue
        try:
            scan = scan_segment(path, parsed[0])
        except FileNotFoundError:
            if not live:
                raise
            continue  # the broker finished the swap meanwhile
        if scan.first_invalid is not None or scan.stop is not None or not scan.valid_batches:
            continue
        swaps[scan.base_offset] = scan
        old = [b for b in listing.bases if scan.base_offset <= b < scan.next_offset]
        replaced.update(old)
        names = ", ".join(log_file(path.parent, b).name for b in old) or "none left"
        problems.append(
            Problem(
                Severity.NOTE,
                "swap",
                path,
                f"a cleaned segment whose swap was interrupted; the next open of the log completes it: "
                f"it replaces offsets {scan.base_offset} to {scan.next_offset - 1} (segments: {names}), "
                "and is checked here in their place",
            )
        )
    return swaps, replaced


def verify_partition(
    directory: Path, *, on_bytes: Callable[[int], None] | None = None, live: bool = False
) -> PartitionReport:
    """Check every segment, index, checkpoint and partition file of one partition directory, read-only.

    ``on_bytes`` is told how many log bytes each segment had (progress). ``live``: a broker is
    running on this data dir, so a file may vanish (retention, a clean's swap) while we read."""
    topic, partition = parse_partition_dir(directory.name)
    report = PartitionReport(directory, topic, partition)
    problems = report.problems
    listing = list_segment_files(directory)
    swaps, replaced = _pending_swaps(listing, problems, live)
    bases = sorted((set(listing.bases) - replaced) | set(swaps))
    problems += filter(None, (_leftover(path, swaps) for path in listing.leftovers))
    problems += [
        Problem(Severity.NOTE, "leftover", path, "an index without its .log; the broker removes it on start")
        for path in listing.orphan_indexes
    ]
    key = (topic, partition)
    report.compacted = (directory / CLEANER_OFFSET_CHECKPOINT).exists()
    report.clean_shutdown = clean_shutdown.trusted(directory)
    recovery_point = read_offset_checkpoint(directory / RECOVERY_POINT_CHECKPOINT, key, problems)
    report.recovery_point = recovery_point
    first_recovered = len(bases)
    if not report.clean_shutdown or swaps:  # completing a swap makes the open recover (log_loader.py)
        first_recovered = max(0, bisect.bisect_right(bases, recovery_point or 0) - 1)

    scans: list[SegmentScan] = []
    for i, base in enumerate(bases):
        last = i == len(bases) - 1
        path = log_file(directory, base)
        try:
            if base in swaps:
                indexes = read_segment_indexes(directory, base, problems, file_suffix=SWAP_SUFFIX)
                scan = swaps[base]
            else:
                indexes = read_segment_indexes(directory, base, problems, listing.index_files)
                scan = scan_segment(path, base)
        except FileNotFoundError:
            if not live:
                raise
            problems.append(
                Problem(
                    Severity.NOTE,
                    "vanished",
                    path,
                    "deleted while being checked (retention, or a clean's swap)",
                )
            )
            continue
        except OSError as exc:
            problems.append(
                Problem(Severity.DAMAGE, "unreadable", path, f"cannot read: {exc.strerror or exc}")
            )
            continue
        if on_bytes is not None:
            on_bytes(scan.size)
        scans.append(scan)
        problems += batch_problems(
            scan, last_segment=last, later_segments=len(bases) - i - 1, compacted=report.compacted
        )
        problems += verify_segment_indexes(scan, *indexes, closed=not last, recovered=i >= first_recovered)
    for prev, cur in itertools.pairwise(scans):
        problems += segment_order(prev, cur, compacted=report.compacted)

    report.segments = len(scans)
    report.batches = sum(len(s.headers) for s in scans)
    report.records = sum(s.record_count for s in scans)
    report.bytes = sum(s.size for s in scans)
    report.log_end_offset = log_end_offset(scans)
    log_start = read_offset_checkpoint(directory / LOG_START_OFFSET_CHECKPOINT, key, problems)
    report.log_start_offset = log_start
    problems += checkpoint_bounds(directory, scans, report.log_end_offset, recovery_point, log_start)
    if report.compacted:
        report.cleaner_checkpoint = read_cleaner_checkpoint(directory, key, problems)
        problems += cleaner_checkpoint_bounds(
            directory, report.cleaner_checkpoint, scans, report.log_end_offset
        )
    start = log_start if log_start is not None else (scans[0].base_offset if scans else 0)
    recovered_from = bases[first_recovered] if first_recovered < len(bases) else 1 << 63
    problems += verify_txn_indexes(
        directory, scans, start, recovered_from, live=live, compacted=report.compacted
    )
    problems += verify_snapshots(directory, listing.snapshots)
    problems += verify_partition_files(directory)
    return report
