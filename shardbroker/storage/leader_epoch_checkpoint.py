"""Kafka's LeaderEpochCheckpointFile: ``leader-epoch-checkpoint``, a partition's leader epochs.

Layout (UTF-8 text, Kafka's CheckpointFile framing of checkpoint.py with LeaderEpochCheckpointFile's
entries)::

    0                       version
    2                       number of entries
    0 0                     leader epoch, its start offset (space separated)
    3 1234

Each entry says: from this offset on, batches were appended under this leader epoch. Epochs and
start offsets increase down the file. Written atomically (checkpoint.write_atomically).

Why: OffsetForLeaderEpoch and ListOffsets answer from this history (Kafka's
LeaderEpochFileCache). The broker treats a missing or malformed file as an empty history and
starts a new one at the current epoch, so a bad one is repairable; `shardbroker check` reports
it through `parse_leader_epochs`.
"""

from __future__ import annotations

from pathlib import Path

from shardbroker.storage.checkpoint import CheckpointError, read_checkpoint_lines, write_checkpoint_lines
from shardbroker.storage.file_names import LEADER_EPOCH_CHECKPOINT

__all__ = ["parse_leader_epochs", "read_leader_epochs", "write_leader_epochs"]


def parse_leader_epochs(path: Path) -> list[tuple[int, int]]:
    """The ``(epoch, start offset)`` entries of a leader-epoch checkpoint; ``[]`` if it does not
    exist; CheckpointError if malformed; OSError if it cannot be read."""
    out = []
    for line in read_checkpoint_lines(path) or ():
        try:
            epoch, start = line.split()
            out.append((int(epoch), int(start)))
        except ValueError:
            raise CheckpointError(f"{path}: entry {line!r} is not 'epoch startOffset'") from None
    return out


def read_leader_epochs(directory: Path) -> list[tuple[int, int]]:
    """The leader epochs recorded in ``directory``; ``[]`` (a new history) if the file is
    missing, unreadable or malformed."""
    try:
        return parse_leader_epochs(directory / LEADER_EPOCH_CHECKPOINT)
    except (OSError, ValueError):
        return []


def write_leader_epochs(directory: Path, epochs: list[tuple[int, int]]) -> None:
    write_checkpoint_lines(directory / LEADER_EPOCH_CHECKPOINT, [f"{e} {s}" for e, s in epochs])
