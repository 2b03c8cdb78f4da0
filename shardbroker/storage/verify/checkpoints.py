"""Checking a partition's offset checkpoints (``recovery-point-offset-checkpoint``,
``log-start-offset-checkpoint``; layout: checkpoint.py) and holding them to the log.

A missing or malformed checkpoint is repairable (the broker rewrites it at open, recovering
every segment when the recovery point is unknown). A recovery point above the log's valid end,
or a log start offset outside the segments, is damage: flushed or acknowledged offsets are gone.
Read the recovery point before the segments (it only moves forward) and the log start offset
after them (retention writes it before deleting the segments it drops).
"""

from __future__ import annotations

from pathlib import Path

from shardbroker.storage.checkpoint import CheckpointError, read_checkpoint
from shardbroker.storage.file_names import LOG_START_OFFSET_CHECKPOINT, RECOVERY_POINT_CHECKPOINT
from shardbroker.storage.verify.problems import Problem, Severity
from shardbroker.storage.verify.segments import SegmentScan

__all__ = ["checkpoint_bounds", "read_offset_checkpoint"]


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
    except CheckpointError as exc:
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
