"""Checkpoint files, written atomically (opens and writes files).

Format: Kafka's ``CheckpointFile`` (CheckpointFile.java), UTF-8 text, one item per line: the
version, the number of entries, then one entry per line. Here the entries of Kafka's
``OffsetCheckpointFile``::

    0                       version
    1                       number of entries
    orders 3 1234           topic, partition, offset (space separated)

The framing (`read_checkpoint_lines`, `write_checkpoint_lines`) is shared with
leader_epoch_checkpoint.py, whose entries are ``epoch startOffset``.

Kafka keeps one such file per log directory with a line per partition; we keep one per
partition directory (``recovery-point-offset-checkpoint``, ``log-start-offset-checkpoint``), so a
partition's worker never has to coordinate with the owners of other partitions to write it.
The same reader parses Kafka's multi-entry files.

Atomicity: write ``<name>.tmp``, fsync it, rename over ``<name>``, fsync the directory. A crash
leaves either the old or the new file, never a mix; a stray ``.tmp`` is ignored and overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from shardbroker.storage.file_modes import FILE_MODE
from shardbroker.storage.file_names import TMP_SUFFIX

__all__ = [
    "CheckpointError",
    "fsync_dir",
    "read_checkpoint",
    "read_checkpoint_lines",
    "write_atomically",
    "write_checkpoint",
    "write_checkpoint_lines",
]

_VERSION: Final = 0


class CheckpointError(ValueError):
    """A checkpoint file that does not parse: the caller falls back to full recovery."""


def fsync_dir(directory: Path) -> None:
    """Make a rename/create/unlink in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(path: Path, entries: dict[tuple[str, int], int]) -> None:
    write_checkpoint_lines(
        path, [f"{topic} {partition} {offset}" for (topic, partition), offset in sorted(entries.items())]
    )


def write_checkpoint_lines(path: Path, entries: list[str]) -> None:
    """Version, count and ``entries``, one per line, written atomically."""
    lines = [str(_VERSION), str(len(entries)), *entries]
    write_atomically(path, ("\n".join(lines) + "\n").encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``<name>.tmp``, fsync it, rename over ``path``, fsync the directory."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_checkpoint(path: Path) -> dict[tuple[str, int], int]:
    """Entries of a checkpoint file; ``{}`` if it does not exist; CheckpointError if malformed."""
    lines = read_checkpoint_lines(path)
    out: dict[tuple[str, int], int] = {}
    for line in lines or ():
        try:
            topic, partition, offset = line.rsplit(" ", 2)
            out[(topic, int(partition))] = int(offset)
        except ValueError as exc:
            raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from exc
    return out


def read_checkpoint_lines(path: Path) -> list[str] | None:
    """The entry lines of a checkpoint file (version and count checked); None if it does not
    exist; CheckpointError if malformed; OSError if it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as exc:  # garbage (a torn write of another file system, say)
        raise CheckpointError(f"{path}: not a checkpoint file: {exc}") from exc
    lines = text.splitlines()
    try:
        if int(lines[0]) != _VERSION:
            raise CheckpointError(f"{path}: unsupported checkpoint version {lines[0]!r}")
        count = int(lines[1])
    except (IndexError, ValueError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{path}: malformed checkpoint: {exc}") from exc
    body = lines[2 : 2 + count]
    if len(body) != count:
        raise CheckpointError(f"{path}: expected {count} entries, found {len(body)}")
    return body
