"""Checking a partition's offset checkpoints (``recovery-point-offset-checkpoint``,
``log-start-offset-checkpoint``, ``cleaner-offset-checkpoint``; layout: checkpoint.py) and holding
them to the log.

A missing or malformed checkpoint is repairable (the broker rewrites it at open, recovering
every segment when the recovery point is unknown). A recovery point above the log's valid end,
or a log start offset outside the segments, is damage: flushed or acknowledged offsets are gone.
Read the recovery point before the segments (it only moves forward) and the log start offset
after them (retention writes it before deleting the segments it drops).

The cleaner checkpoint exists only in a compacted partition (the cleaner writes it at the end of
each clean) and is never needed to read the log: one that does not parse, or that lies beyond
the segments the cleaner may clean (past the active segment's base, or the log end), is
repairable: the cleaner ignores it and cleans from the log start offset (Kafka's reset: slower,
never wrong), then writes it anew. One below the log start offset is fine (retention of a
``compact,delete`` topic moved the start past it; the cleaner starts at the log start).
"""

from __future__ import annotations

from pathlib import Path

from shardbroker.storage.checkpoint import read_checkpoint
from shardbroker.storage.file_names import (
    CLEANER_OFFSET_CHECKPOINT,
    LOG_START_OFFSET_CHECKPOINT,
    RECOVERY_POINT_CHECKPOINT,
)
from shardbroker.storage.verify.problems import Problem, Severity
from shardbroker.storage.verify.segments import SegmentScan

__all__ = [
    "checkpoint_bounds",
    "cleaner_checkpoint_bounds",
    "read_cleaner_checkpoint",
    "read_offset_checkpoint",
]

#: What becomes of a cleaner checkpoint the cleaner cannot use.
_CLEANER_RESET = "the cleaner ignores it, cleans from the log start offset and then rewrites it"


def read_offset_checkpoint(path: Path, key: tuple[str, int], problems: list[Problem]) -> int | None:
    """This partition's entry of the checkpoint at ``path``; None, with a finding, if there is none."""
    if not path.exists():
        problems.append(
            Problem(
                Severity.REPAIRABLE, "checkpoint", path, "missing; the broker writes it when it opens the log"
            )
        )
        return None
    try:
        entries = read_checkpoint(path)
    except ValueError as exc:  # CheckpointError, UnicodeDecodeError
        problems.append(
            Problem(Severity.REPAIRABLE, "checkpoint", path, f"{exc}; the broker then recovers every segment")
        )
        return None
    except OSError as exc:
        problems.append(Problem(Severity.DAMAGE, "unreadable", path, f"cannot read: {exc.strerror or exc}"))
        return None
    if key not in entries:
        problems.append(
            Problem(Severity.REPAIRABLE, "checkpoint", path, f"has no entry for {key[0]}-{key[1]}")
        )
        return None
    return entries[key]


def read_cleaner_checkpoint(directory: Path, key: tuple[str, int], problems: list[Problem]) -> int | None:
    """This partition's ``cleaner-offset-checkpoint`` entry: None when the file does not exist (never
    compacted) and, with a finding, when it cannot be used."""
    path = directory / CLEANER_OFFSET_CHECKPOINT
    if not path.exists():
        return None
    try:
        entries = read_checkpoint(path)
    except ValueError as exc:  # CheckpointError, UnicodeDecodeError
        problems.append(Problem(Severity.REPAIRABLE, "cleaner-checkpoint", path, f"{exc}; {_CLEANER_RESET}"))
        return None
    except OSError as exc:
        problems.append(Problem(Severity.DAMAGE, "unreadable", path, f"cannot read: {exc.strerror or exc}"))
        return None
    if key not in entries:
        problems.append(
            Problem(
                Severity.REPAIRABLE,
                "cleaner-checkpoint",
                path,
                f"has no entry for {key[0]}-{key[1]}; {_CLEANER_RESET}",
            )
        )
    return entries.get(key)


def cleaner_checkpoint_bounds(
    d: Path, checkpoint: int | None, scans: list[SegmentScan], leo: int | None
) -> list[Problem]:
    """The cleaner checkpoint against the segments: it may not lie past the active (last)
    segment's base offset, which the cleaner never reaches (storage/log_cleaner_manager.py)."""
    if checkpoint is None or leo is None or not scans:
        return []
    active = scans[-1].base_offset
    if checkpoint > leo:
        where = f"beyond the log end offset {leo}"
    elif checkpoint > active:
        where = f"inside the active segment {scans[-1].path.name}, which is never cleaned"
    else:
        return []
    return [
        Problem(
            Severity.REPAIRABLE,
            "cleaner-checkpoint",
            d / CLEANER_OFFSET_CHECKPOINT,
            f"first dirty offset {checkpoint} is {where}; {_CLEANER_RESET}",
            None,
            checkpoint,
        )
    ]


def checkpoint_bounds(
    d: Path, scans: list[SegmentScan], leo: int | None, recovery_point: int | None, start: int | None
) -> list[Problem]:
    """The checkpoints against the log end offset recovery would arrive at (``leo``) and the
    first segment file."""
    out: list[Problem] = []
    if leo is None:
        return out
    if recovery_point is not None and recovery_point > leo:
        out.append(
            Problem(
                Severity.DAMAGE,
                "data-lost",
                d / RECOVERY_POINT_CHECKPOINT,
                f"offsets below {recovery_point} were flushed (recovery point) but the log's valid "
                f"part ends at offset {leo}: {recovery_point - leo} flushed offsets are missing",
                None,
                leo,
            )
        )
    if start is not None:
        first = scans[0].base_offset
        if start > leo:
            out.append(
                Problem(
                    Severity.DAMAGE,
                    "data-lost",
                    d / LOG_START_OFFSET_CHECKPOINT,
                    f"log start offset {start} is above the log end offset {leo}",
                    None,
                    leo,
                )
            )
        elif start < first:
            out.append(
                Problem(
                    Severity.DAMAGE,
                    "data-lost",
                    d / LOG_START_OFFSET_CHECKPOINT,
                    f"offsets {start} to {first - 1} are missing: the log starts at {start} but the first "
                    f"segment file is {scans[0].path.name}",
                    None,
                    start,
                )
            )
    return out
