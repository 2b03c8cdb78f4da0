"""Producer state snapshot files (Kafka's ProducerStateManager snapshot format, version 1), so
Kafka's tools read ours and a restart replays only the segments after the newest snapshot.

Byte layout of ``NNNNNNNNNNNNNNNNNNNN.snapshot`` (the producer state as of offset N), big-endian::

    0 version int16 (1) | 2 crc uint32: CRC-32C of every byte from 6 to the end
    6 entry count int32, then per producer 46 bytes:
      producerId int64 | epoch int16 | lastSequence int32 | lastOffset int64 | offsetDelta int32
      | timestamp int64 | coordinatorEpoch int32 | currentTxnFirstOffset int64 (-1: none)

``lastSequence``/``lastOffset``/``offsetDelta`` describe the producer's last data batch (-1/-1/0
when it has none, e.g. after only a marker); ``offsetDelta`` = its last minus first offset. Like
Kafka, a snapshot keeps only that last batch, so after a restart from a snapshot a retry of an
older one of the last five batches is no longer recognised as a duplicate.

Files are written to ``.tmp`` and renamed, without an fsync: a snapshot that did not reach the
disk is missing or fails its CRC after a host crash, and the loader then falls back to an older
one or to the log; a CRC-valid snapshot is the deterministic state at its offset whatever was
synced. Encoding and decoding go through one numpy structured array, not a struct call per
field (opening from a snapshot of 10,000 producers: 74 ms, producer_state.py's measurement).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np

from shardbroker.protocol.crc import crc32c
from shardbroker.storage.file_modes import FILE_MODE
from shardbroker.storage.file_names import TMP_SUFFIX

__all__ = [
    "CorruptSnapshotError",
    "SnapshotEntry",
    "decode_snapshot",
    "encode_snapshot",
    "read_snapshot",
    "write_snapshot",
]

#: Kafka's ProducerStateManager.PRODUCER_SNAPSHOT_VERSION.
SNAPSHOT_VERSION: Final = 1
_HEAD: Final = struct.Struct(">hIi")  # version, crc, entry count
_CRC_START: Final = 6
_ENTRY_DTYPE: Final = np.dtype(
    [
        ("producer_id", ">i8"),
        ("epoch", ">i2"),
        ("last_sequence", ">i4"),
        ("last_offset", ">i8"),
        ("offset_delta", ">i4"),
        ("timestamp", ">i8"),
        ("coordinator_epoch", ">i4"),
        ("current_txn_first_offset", ">i8"),
    ]
)
assert _ENTRY_DTYPE.itemsize == 46


class CorruptSnapshotError(Exception):
    """Kafka's CorruptSnapshotException: unknown version, bad CRC or bad framing."""


class SnapshotEntry(NamedTuple):
    producer_id: int
    epoch: int
    last_sequence: int
    last_offset: int
    offset_delta: int
    timestamp: int
    coordinator_epoch: int
    current_txn_first_offset: int


def encode_snapshot(entries: list[SnapshotEntry]) -> bytes:
    body = np.array(entries, dtype=_ENTRY_DTYPE).tobytes() if entries else b""
    count = struct.pack(">i", len(entries))
    crc = crc32c(count + body)
    return _HEAD.pack(SNAPSHOT_VERSION, crc, len(entries)) + body


def decode_snapshot(data: bytes) -> list[SnapshotEntry]:
    if len(data) < _HEAD.size:
        raise CorruptSnapshotError(f"{len(data)} bytes cannot hold a snapshot header")
    version, crc, count = _HEAD.unpack_from(data, 0)
    if version != SNAPSHOT_VERSION:
        raise CorruptSnapshotError(f"unknown snapshot version {version}")
    if crc32c(memoryview(data)[_CRC_START:]) != crc:
        raise CorruptSnapshotError("snapshot CRC mismatch")
    if count < 0 or len(data) != _HEAD.size + count * _ENTRY_DTYPE.itemsize:
        raise CorruptSnapshotError(f"{count} entries do not fill {len(data)} bytes")
    rows = np.frombuffer(data, dtype=_ENTRY_DTYPE, count=count, offset=_HEAD.size)
    return [SnapshotEntry(*(int(v) for v in row)) for row in rows.tolist()]


def write_snapshot(path: Path, entries: list[SnapshotEntry]) -> None:
    """Write-temp-then-rename (no fsync: see the module docstring)."""
    tmp = path.with_name(path.name + TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with open(fd, "wb") as f:
        f.write(encode_snapshot(entries))
    os.replace(tmp, path)


def read_snapshot(path: Path) -> list[SnapshotEntry]:
    with open(path, "rb") as f:
        return decode_snapshot(f.read())
