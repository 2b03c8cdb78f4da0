"""Names of everything in a partition directory, and the temporary suffixes.

Layout of ``<data_dir>/<topic>-<partition>/`` (Kafka's, LogFileUtils.java)::

    00000000000000000000.log        record batches, named by the segment's base offset (20 digits)
    00000000000000000000.index      offset index (see offset_index.py)
    00000000000000000000.timeindex  time index (see time_index.py)
    00000000000000000000.txnindex   aborted transactions whose ABORT marker is in that segment
                                    (see transaction_index.py); created with the first entry
    00000000000000000000.snapshot   producer state at that offset (see producer_snapshot.py)
    <name>.deleted                  a segment file on its way out (renamed, removed after
                                    file.delete.delay.ms so open readers can finish)
    <name>.cleaned / <name>.swap    compaction outputs (Kafka's log cleaner; removed at open)
    <name>.tmp                      a checkpoint being written (write, fsync, rename)
    recovery-point-offset-checkpoint, log-start-offset-checkpoint   see checkpoint.py
    cleaner-offset-checkpoint       compacted logs: where the uncleaned part starts (log_cleaner_manager.py)
    leader-epoch-checkpoint         the partition's leader epochs (see leader_epoch_checkpoint.py)
    partition.metadata              the topic id (see partition_metadata.py)
    .kafka_cleanshutdown            clean-shutdown marker (see clean_shutdown.py)

A deleted partition's directory is renamed to ``<topic>-<partition>.<32 hex digits>-delete``
(Kafka's LocalLog.logDeleteDirName) before it is removed, so the name is free at once; such a
directory is never parsed as a partition directory.

Every other module asks this one for names, so the 20-digit rule and the suffixes live in one
place (the broker, the dump-log tool and ``shardbroker check`` parse the same names).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = [
    "CLEANED_SUFFIX",
    "CLEANER_OFFSET_CHECKPOINT",
    "CLEAN_SHUTDOWN_FILE",
    "DELETED_SUFFIX",
    "DELETE_DIR_SUFFIX",
    "INDEX_SUFFIX",
    "LEADER_EPOCH_CHECKPOINT",
    "LEFTOVER_SUFFIXES",
    "LOG_START_OFFSET_CHECKPOINT",
    "LOG_SUFFIX",
    "PARTITION_METADATA_FILE",
    "RECOVERY_POINT_CHECKPOINT",
    "SNAPSHOT_SUFFIX",
    "SWAP_SUFFIX",
    "TIME_INDEX_SUFFIX",
    "TMP_SUFFIX",
    "TXN_INDEX_SUFFIX",
    "SegmentFiles",
    "delete_dir",
    "filename_prefix",
    "index_file",
    "is_delete_dir",
    "list_segment_files",
    "log_file",
    "offset_from_file_name",
    "parse_partition_dir",
    "partition_dir_name",
    "producer_snapshot_file",
    "time_index_file",
    "txn_index_file",
    "with_suffix",
]

LOG_SUFFIX: Final = ".log"
INDEX_SUFFIX: Final = ".index"
TIME_INDEX_SUFFIX: Final = ".timeindex"
TXN_INDEX_SUFFIX: Final = ".txnindex"  # Kafka's LogFileUtils.TXN_INDEX_FILE_SUFFIX
SNAPSHOT_SUFFIX: Final = ".snapshot"  # Kafka's LogFileUtils.PRODUCER_SNAPSHOT_FILE_SUFFIX
#: The per-segment index files: removed with their segment, orphans removed on open.
_INDEX_SUFFIXES: Final = (INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX)
DELETED_SUFFIX: Final = ".deleted"
CLEANED_SUFFIX: Final = ".cleaned"
SWAP_SUFFIX: Final = ".swap"
TMP_SUFFIX: Final = ".tmp"
#: Files an interrupted write, delete or compaction leaves; opening a log removes them.
LEFTOVER_SUFFIXES: Final = (TMP_SUFFIX, DELETED_SUFFIX, CLEANED_SUFFIX, SWAP_SUFFIX)
RECOVERY_POINT_CHECKPOINT: Final = "recovery-point-offset-checkpoint"
LOG_START_OFFSET_CHECKPOINT: Final = "log-start-offset-checkpoint"
#: Kafka's LogCleaner checkpoint name: where the next clean's dirty part starts.
CLEANER_OFFSET_CHECKPOINT: Final = "cleaner-offset-checkpoint"
#: Kafka's name (LogLoader.CleanShutdownFile); we keep one per partition directory.
CLEAN_SHUTDOWN_FILE: Final = ".kafka_cleanshutdown"
LEADER_EPOCH_CHECKPOINT: Final = "leader-epoch-checkpoint"  # Kafka's LeaderEpochCheckpointFile
PARTITION_METADATA_FILE: Final = "partition.metadata"  # Kafka's PartitionMetadataFile
DELETE_DIR_SUFFIX: Final = "-delete"  # Kafka's LocalLog.DeleteDirSuffix

_DIGITS: Final = 20
_SEGMENT_RE: Final = re.compile(r"^(\d{20})(\.[a-z]+)(\.[a-z]+)?$")
_PARTITION_RE: Final = re.compile(r"^(.+)-(\d+)$")


def filename_prefix(offset: int) -> str:
    """The 20-digit zero-padded base offset (Kafka's LogFileUtils.filenamePrefixFromOffset)."""
    if offset < 0:
        raise ValueError(f"negative offset {offset}")
    return f"{offset:0{_DIGITS}d}"


def log_file(directory: Path, offset: int, suffix: str = "") -> Path:
    return directory / (filename_prefix(offset) + LOG_SUFFIX + suffix)


def index_file(directory: Path, offset: int, suffix: str = "") -> Path:
    return directory / (filename_prefix(offset) + INDEX_SUFFIX + suffix)


def time_index_file(directory: Path, offset: int, suffix: str = "") -> Path:
    return directory / (filename_prefix(offset) + TIME_INDEX_SUFFIX + suffix)


def txn_index_file(directory: Path, offset: int, suffix: str = "") -> Path:
    return directory / (filename_prefix(offset) + TXN_INDEX_SUFFIX + suffix)


def producer_snapshot_file(directory: Path, offset: int, suffix: str = "") -> Path:
    return directory / (filename_prefix(offset) + SNAPSHOT_SUFFIX + suffix)


def offset_from_file_name(name: str) -> tuple[int, str, str] | None:
    """``'00000000000000000042.log.deleted'`` -> ``(42, '.log', '.deleted')``; None if not a segment file."""
    m = _SEGMENT_RE.match(name)
    if m is None:
        return None
    return int(m.group(1)), m.group(2), m.group(3) or ""


def with_suffix(path: Path, suffix: str) -> Path:
    """``path`` (a segment file, with or without a temporary suffix) with ``suffix`` instead:
    ``00..42.log.cleaned`` + ``.swap`` -> ``00..42.log.swap``; + ``""`` -> ``00..42.log``."""
    parsed = offset_from_file_name(path.name)
    if parsed is None:
        raise ValueError(f"not a segment file: {path}")
    base, kind, _ = parsed
    return path.with_name(filename_prefix(base) + kind + suffix)


def partition_dir_name(topic: str, partition: int) -> str:
    return f"{topic}-{partition}"


def parse_partition_dir(name: str) -> tuple[str, int]:
    """``'orders-3'`` -> ``('orders', 3)``; topics may contain '-', the partition is after the last one."""
    m = _PARTITION_RE.match(name)
    if m is None:
        raise ValueError(f"not a partition directory name: {name!r}")
    return m.group(1), int(m.group(2))


def delete_dir(directory: Path) -> Path:
    """``<topic>-<partition>.<uuid hex>-delete`` beside ``directory``: the name a deleted
    partition's directory is renamed to (Kafka's LocalLog.logDeleteDirName)."""
    return directory.with_name(f"{directory.name}.{uuid.uuid4().hex}{DELETE_DIR_SUFFIX}")


def is_delete_dir(name: str) -> bool:
    """Is ``name`` a directory name made by `delete_dir`?"""
    return name.endswith(DELETE_DIR_SUFFIX) and "." in name


@dataclass(frozen=True, slots=True)
class SegmentFiles:
    """The segment files of a partition directory, as `list_segment_files` found them."""

    #: Base offsets of the ``.log`` files, ascending.
    bases: list[int]
    #: ``(base offset, INDEX_SUFFIX, TIME_INDEX_SUFFIX or TXN_INDEX_SUFFIX)`` of every index file.
    index_files: set[tuple[int, str]]
    #: Files with a LEFTOVER_SUFFIXES suffix, by name.
    leftovers: list[Path]
    #: Index files without their ``.log``, by base offset.
    orphan_indexes: list[Path]
    #: Offsets of the producer state snapshots, ascending.
    snapshots: list[int]


def list_segment_files(directory: Path) -> SegmentFiles:
    """One listing of ``directory``: what opening the log removes (leftovers, orphan indexes)
    and the segments and snapshots it keeps. Other files (checkpoints, the marker) are not listed."""
    bases: list[int] = []
    index_files: set[tuple[int, str]] = set()
    leftovers: list[Path] = []
    snapshots: list[int] = []
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name.endswith(LEFTOVER_SUFFIXES):
            leftovers.append(Path(entry.path))
            continue
        parsed = offset_from_file_name(entry.name)
        if parsed is None or parsed[2]:
            continue
        base, kind, _ = parsed
        if kind == LOG_SUFFIX:
            bases.append(base)
        elif kind in _INDEX_SUFFIXES:
            index_files.add((base, kind))
        elif kind == SNAPSHOT_SUFFIX:
            snapshots.append(base)
    bases.sort()
    logs = set(bases)
    orphans = [
        directory / (filename_prefix(base) + kind) for base, kind in sorted(index_files) if base not in logs
    ]
    return SegmentFiles(bases, index_files, leftovers, orphans, sorted(snapshots))
