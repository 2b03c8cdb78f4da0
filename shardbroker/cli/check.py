"""``shardbroker check DATA_DIR``: offline verification of a whole data dir. Reads files only
(no broker needed), read-only and without taking the data dir's lock, so it is safe on a running
broker's data dir (what it then reports is a snapshot of files still being written).

What it checks: every ``<topic>-<partition>`` directory with storage/verify/ (each batch's
length chain, CRC-32C, magic and offsets as recovery checks them, offsets across batches and
segments, base offsets against file names, every ``.index``/``.timeindex`` entry against the
log, the recovery-point, log-start-offset and cleaner-offset checkpoints against the log,
``partition.metadata`` and ``leader-epoch-checkpoint``; ``-delete`` directories are noted); and
the controller's metadata (metadata_log.py): the snapshot and each metadata log frame (length,
CRC-32C, JSON), that the records replay, and that partition directories and topics agree.

Compacted partitions (those with a ``cleaner-offset-checkpoint``) have offset gaps, empty batches
and delete horizons by design; only the gaps of other partitions are noted. A clean a crash
interrupted is noted: the next open of the log removes its ``.cleaned`` files and completes its
``.swap``, and the log is checked as that open will leave it (storage/verify/partition.py).

Output: one line per finding, ``SEVERITY: FILE: position P, offset O, batch B: what is wrong``
(``damage``, ``repairable``: the broker fixes it by itself without losing an acknowledged write,
by its recovery on its next start (e.g. a torn tail) or its next clean (a cleaner checkpoint it
cannot use); ``note``), a line per partition with ``--verbose``, then a summary. Progress goes
to stderr once a second when a run takes longer than that. ``--json`` prints one JSON document
instead.

Exit codes: 0 clean (notes only), 1 damage found, 2 bad usage (no such directory, not a data
dir, bad options), 3 only repairable findings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from shardbroker.control.controller_state import ControllerState, apply_record
from shardbroker.control.metadata_log import (
    FRAME,
    LOCK_FILE,
    LOG_FILE,
    MAX_FRAME,
    META_PROPERTIES,
    METADATA_DIR,
    SNAPSHOT_FILE,
    scan_frames,
)
from shardbroker.protocol.crc import crc32c
from shardbroker.storage.file_names import LOG_SUFFIX, offset_from_file_name, parse_partition_dir
from shardbroker.storage.verify.partition import (
    PartitionReport,
    deleted_partition_dirs,
    partition_dirs,
    verify_partition,
)
from shardbroker.storage.verify.problems import Problem, Severity

__all__ = ["EXIT_CLEAN", "EXIT_DAMAGED", "EXIT_REPAIRABLE", "EXIT_USAGE", "register"]

EXIT_CLEAN: Final = 0
EXIT_DAMAGED: Final = 1
EXIT_USAGE: Final = 2
EXIT_REPAIRABLE: Final = 3
#: Seconds between progress lines on stderr (and before the first one).
PROGRESS_INTERVAL: Final = 1.0


class UsageError(Exception):
    """DATA_DIR cannot be checked at all: printed, exit 2."""


# ---- the metadata -----------------------------------------------------------------------------


def _frame_problem(data: bytes, pos: int) -> tuple[str, int | None]:
    """Why the metadata frame at ``pos`` was refused by ``scan_frames``, and where it ends (None:
    unknown)."""
    left = len(data) - pos
    if left < FRAME.size:
        return f"{left} bytes, too few for a frame header", len(data)
    length, crc = FRAME.unpack_from(data, pos)
    end = pos + FRAME.size + length
    if length > MAX_FRAME:
        return f"frame length {length} is beyond the {MAX_FRAME}-byte limit", None
    if end > len(data):
        return f"frame declares {length} bytes, only {left - FRAME.size} remain", len(data)
    computed = crc32c(data[pos + FRAME.size : end])
    if computed != crc:
        return f"CRC-32C mismatch: stored {crc:#010x}, computed {computed:#010x}", end
    return "the payload is not a JSON object", end


def _frame_positions(data: bytes, count: int) -> list[int]:
    positions = []
    pos = 0
    for _ in range(count):
        positions.append(pos)
        pos += FRAME.size + FRAME.unpack_from(data, pos)[0]
    return positions


@dataclass(slots=True)
class MetadataReport:
    problems: list[Problem] = field(default_factory=list)
    state: ControllerState | None = None
    records: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "version": None if self.state is None else self.state.version,
            "topics": None if self.state is None else len(self.state.topics),
            "problems": [p.to_dict() for p in self.problems],
        }


def check_metadata(data_dir: Path) -> MetadataReport:
    """The snapshot and log of ``__cluster_metadata``, as the broker's open reads them."""
    report = MetadataReport()
    out = report.problems
    d = data_dir / METADATA_DIR
    if not (data_dir / META_PROPERTIES).exists():
        out.append(
            Problem(
                Severity.NOTE, "meta-properties", data_dir / META_PROPERTIES, "missing (no cluster id yet)"
            )
        )
    if not d.is_dir():
        out.append(
            Problem(Severity.NOTE, "metadata-missing", d, "no metadata log: the broker has not run here")
        )
        return report
    state = ControllerState()
    snapshot = d / SNAPSHOT_FILE
    if snapshot.exists():
        data = snapshot.read_bytes()
        frames, valid = scan_frames(data)
        try:
            if len(frames) != 1 or valid != len(data):
                why = (
                    _frame_problem(data, valid)[0]
                    if valid < len(data)
                    else f"{len(frames)} frames, expected 1"
                )
                raise ValueError(why)
            state = ControllerState.from_dict(frames[0])
        except (KeyError, TypeError, ValueError) as exc:
            out.append(
                Problem(
                    Severity.DAMAGE,
                    "metadata-snapshot",
                    snapshot,
                    f"corrupt snapshot ({exc}): the broker refuses to start; restore it from a backup",
                    0,
                )
            )
            return report
    log_path = d / LOG_FILE
    data = log_path.read_bytes() if log_path.exists() else b""
    records, valid = scan_frames(data)
    report.records = len(records)
    positions = _frame_positions(data, len(records))
    for record, position in zip(records, positions, strict=True):
        try:
            if int(record.get("offset", -1)) <= state.version:
                continue
            state = apply_record(state, record)
        except (KeyError, TypeError, ValueError) as exc:
            out.append(
                Problem(
                    Severity.DAMAGE,
                    "metadata-record",
                    log_path,
                    f"record {record.get('offset')!r} does not apply ({exc}): the broker cannot start",
                    position,
                    None,
                )
            )
            return report
    report.state = state
    if valid < len(data):
        why, end = _frame_problem(data, valid)
        torn = end is not None and end >= len(data)
        out.append(
            Problem(
                Severity.REPAIRABLE if torn else Severity.DAMAGE,
                "torn-tail" if torn else "metadata-frame",
                log_path,
                f"frame {len(records)} after metadata offset {state.version}: {why}; the broker drops the "
                f"{len(data) - valid} bytes from here when it starts"
                + ("" if torn else ", including any later records"),
                valid,
            )
        )
    return report


def _cross_check(state: ControllerState, dirs: list[Path]) -> list[Problem]:
    """Partition directories against the topics of the metadata."""
    out = []
    seen: set[tuple[str, int]] = set()
    for d in dirs:
        topic, partition = parse_partition_dir(d.name)
        seen.add((topic, partition))
        image = state.topics.get(topic)
        if image is None:
            out.append(
                Problem(Severity.NOTE, "unknown-topic", d, f"topic {topic!r} is not in the metadata log")
            )
        elif partition >= len(image.partitions):
            out.append(
                Problem(
                    Severity.NOTE,
                    "unknown-partition",
                    d,
                    f"topic {topic!r} has {len(image.partitions)} partitions in the metadata log",
                )
            )
    return out


# ---- the data dir -----------------------------------------------------------------------------


def _live_broker(data_dir: Path) -> int | None:
    """The pid in ``.lock`` if that process runs (read only: taking the flock, even shared for a
    moment, could stop a broker that is starting)."""
    try:
        pid = int((data_dir / LOCK_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


class _Progress:
    """``check: 3/40 partitions, 1.2/4.0 GiB`` on stderr, at most once a second, after the first."""

    def __init__(self, partitions: int, total_bytes: int, enabled: bool) -> None:
        self.partitions = partitions
        self.total = total_bytes
        self.done_partitions = 0
        self.done_bytes = 0
        self.enabled = enabled
        self.start = time.monotonic()
        self.last = self.start

    def add_bytes(self, n: int) -> None:
        self.done_bytes += n
        self.show()

    def partition_done(self) -> None:
        self.done_partitions += 1
        self.show()

    def show(self) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        print(
            f"check: {self.done_partitions}/{self.partitions} partitions, "
            f"{_size(self.done_bytes)} of {_size(self.total)} read, {now - self.start:.0f} s",
            file=sys.stderr,
            flush=True,
        )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


def _log_bytes(directory: Path) -> int:
    total = 0
    for entry in os.scandir(directory):
        parsed = offset_from_file_name(entry.name)
        if parsed is not None and parsed[1] == LOG_SUFFIX and not parsed[2]:
            with contextlib.suppress(FileNotFoundError):  # retention, on a live broker
                total += entry.stat().st_size
    return total


def _verdict(problems: list[Problem]) -> int:
    severities = {p.severity for p in problems}
    if Severity.DAMAGE in severities:
        return EXIT_DAMAGED
    if Severity.REPAIRABLE in severities:
        return EXIT_REPAIRABLE
    return EXIT_CLEAN


_VERDICTS: Final = {
    EXIT_CLEAN: "clean",
    EXIT_DAMAGED: "DAMAGED",
    EXIT_REPAIRABLE: "repairable: the broker fixes every finding by itself (next start or clean)",
}


def _partition_line(r: PartitionReport) -> str:
    offsets = "empty" if r.log_end_offset is None else f"offsets {r.log_start_offset}..{r.log_end_offset}"
    compacted = f", compacted (cleaner checkpoint {r.cleaner_checkpoint})" if r.compacted else ""
    return (
        f"{r.directory.name}: {r.segments} segments, {r.batches} batches, {r.records} records, "
        f"{_size(r.bytes)}, {offsets} (log start..end), recovery point {r.recovery_point}, "
        f"{'clean shutdown' if r.clean_shutdown else 'no clean-shutdown marker'}{compacted}"
    )


def _run(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    try:
        if not data_dir.exists():
            raise UsageError(f"no such directory: {data_dir}")
        if not data_dir.is_dir():
            raise UsageError(f"not a directory: {data_dir}")
        try:
            dirs = partition_dirs(data_dir)
        except OSError as exc:
            raise UsageError(f"cannot read {data_dir}: {exc.strerror or exc}") from None
        if not dirs and not (data_dir / METADATA_DIR).is_dir():
            raise UsageError(
                f"{data_dir} is not a shardbroker data dir: "
                f"no <topic>-<partition> directories and no {METADATA_DIR}"
            )
    except UsageError as exc:
        print(f"shardbroker check: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    started = time.monotonic()
    live = _live_broker(data_dir)
    problems: list[Problem] = []
    if live is not None:
        problems.append(
            Problem(
                Severity.NOTE,
                "live-broker",
                data_dir / LOCK_FILE,
                f"broker pid {live} is running on this data dir: files may change while they are read",
            )
        )
    try:
        metadata = check_metadata(data_dir)
    except OSError as exc:
        where = Path(exc.filename) if exc.filename else data_dir / METADATA_DIR
        metadata = MetadataReport(
            [Problem(Severity.DAMAGE, "unreadable", where, f"cannot read: {exc.strerror}")]
        )
    problems += metadata.problems
    problems += deleted_partition_dirs(data_dir)
    if metadata.state is not None:
        problems += _cross_check(metadata.state, dirs)
    if not args.json:
        for p in problems:
            print(p.describe(data_dir))
    progress = _Progress(len(dirs), sum(_log_bytes(d) for d in dirs), not args.json)
    reports: list[PartitionReport] = []
    for d in dirs:
        try:
            report = verify_partition(d, on_bytes=progress.add_bytes, live=live is not None)
        except OSError as exc:  # the directory itself cannot be listed
            topic, partition = parse_partition_dir(d.name)
            report = PartitionReport(d, topic, partition)
            report.problems.append(
                Problem(Severity.DAMAGE, "unreadable", d, f"cannot read: {exc.strerror or exc}")
            )
        reports.append(report)
        problems += report.problems
        progress.partition_done()
        if not args.json:
            for p in report.problems:
                print(p.describe(data_dir))
            if args.verbose:
                print(_partition_line(report))
    code = _verdict(problems)
    elapsed = time.monotonic() - started
    counts = {s: sum(1 for p in problems if p.severity is s) for s in Severity}
    total_bytes = sum(r.bytes for r in reports)
    summary = {
        "partitions": len(reports),
        "damaged_partitions": sum(
            1 for r in reports if any(p.severity is Severity.DAMAGE for p in r.problems)
        ),
        "segments": sum(r.segments for r in reports),
        "batches": sum(r.batches for r in reports),
        "records": sum(r.records for r in reports),
        "bytes": total_bytes,
        "damage": counts[Severity.DAMAGE],
        "repairable": counts[Severity.REPAIRABLE],
        "notes": counts[Severity.NOTE],
        "seconds": round(elapsed, 3),
    }
    if args.json:
        doc = {
            "data_dir": str(data_dir),
            "live_broker_pid": live,
            "metadata": metadata.to_dict(),
            "partitions": [r.to_dict() for r in reports],
            "problems": [p.to_dict() for p in problems],
            "summary": summary,
            "result": _VERDICTS[code].split(":")[0].lower(),
            "exit_code": code,
        }
        print(json.dumps(doc, indent=2))
        return code
    print(
        f"checked {summary['partitions']} partitions ({summary['segments']} segments, {summary['batches']} "
        f"batches, {_size(total_bytes)}) and {metadata.records} metadata records in {elapsed:.1f} s: "
        f"{summary['damage']} damage, {summary['repairable']} repairable, {summary['notes']} notes "
        f"({summary['damaged_partitions']} damaged partitions)"
    )
    print(f"result: {_VERDICTS[code]}")
    return code


def register(commands: Any) -> None:
    """Add ``check`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    p = commands.add_parser(
        "check",
        help="verify a data dir offline: CRCs, offsets, indexes, checkpoints, metadata",
        description=(
            "Verify every partition of a data dir (batch framing and CRC-32C, offsets, indexes against "
            "the log, checkpoints) and the metadata log, reading files only (safe on a running broker's "
            "data dir). One line per finding: SEVERITY: FILE: position, offset, batch: what is wrong."
        ),
        epilog=(
            "exit codes: 0 clean, 1 damage found, 2 bad usage (no such directory, not a data dir), "
            "3 only findings the broker repairs by itself (a torn tail, an index it rebuilds "
            "on its next start, a cleaner checkpoint its next clean rewrites)"
        ),
    )
    p.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="the broker's data dir (log.dirs)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--verbose", action="store_true", help="also print a line per partition")
    p.set_defaults(run=_run)
