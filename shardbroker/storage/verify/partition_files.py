"""Checking a partition directory's own files: ``partition.metadata`` (layout:
partition_metadata.py) and ``leader-epoch-checkpoint`` (layout: leader_epoch_checkpoint.py).

A missing file is fine (the broker writes both when it opens the partition; a log opened
outside the broker has neither). A malformed one is repairable: the broker reads it as unknown
and rewrites it at open (a new epoch history starts at the current leader epoch). One it cannot
read at all is damage, as for every other file.
"""

from __future__ import annotations

from pathlib import Path

from shardbroker.storage.file_names import LEADER_EPOCH_CHECKPOINT, PARTITION_METADATA_FILE
from shardbroker.storage.leader_epoch_checkpoint import parse_leader_epochs
from shardbroker.storage.partition_metadata import parse_partition_metadata
from shardbroker.storage.verify.problems import Problem, Severity

__all__ = ["verify_partition_files"]


def verify_partition_files(directory: Path) -> list[Problem]:
    """Findings in ``partition.metadata`` and ``leader-epoch-checkpoint`` of ``directory``."""
    out: list[Problem] = []
    for name, parse, consequence in (
        (PARTITION_METADATA_FILE, _parse_metadata, "the broker rewrites it with the topic's id"),
        (LEADER_EPOCH_CHECKPOINT, parse_leader_epochs, "the broker starts a new epoch history"),
    ):
        path = directory / name
        try:
            parse(path)
        except FileNotFoundError:
            continue
        except ValueError as exc:  # CheckpointError, PartitionMetadataError, UnicodeDecodeError
            out.append(
                Problem(Severity.REPAIRABLE, name, path, f"{exc}; {consequence} when it opens the partition")
            )
        except OSError as exc:
            out.append(Problem(Severity.DAMAGE, "unreadable", path, f"cannot read: {exc.strerror or exc}"))
    return out


def _parse_metadata(path: Path) -> object:
    return parse_partition_metadata(path.read_text(encoding="utf-8"))
