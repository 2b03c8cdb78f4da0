"""A partition directory as the log cleaner leaves it, built byte by byte for check, dump-log and
``topics describe --data-dir`` tests: sparse offsets inside batches, between batches and between
segments, an empty batch kept for its producer, a tombstone batch with a delete horizon, and a
``cleaner-offset-checkpoint``. The broker opens and closes it once, so its indexes, checkpoints
and clean-shutdown marker are the broker's own."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.record_batch_builder import encode_record
from shardbroker.protocol.record_batch_header import (
    BATCH_HEADER_SIZE,
    CRC_COVERED_HEADER,
    DELETE_HORIZON_BIT,
    HEADER_PREFIX,
    LOG_OVERHEAD,
    MAGIC,
)
from shardbroker.storage import file_names as fn
from shardbroker.storage.checkpoint import write_checkpoint
from shardbroker.storage.log import PartitionLog
from tests.unit.storage_batches import Clock

TS: Final = 1_700_000_000_000
#: The delete horizon of the tombstone batch (a clean at TS with delete.retention.ms one day).
HORIZON: Final = TS + 86_400_000
CFG: Final = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, segment_index_bytes=4096)
#: (base offset, last offset, record offsets) of every batch, by segment (file name base offset).
LAYOUT: Final = {
    0: [(0, 2, [0, 2]), (5, 5, [5]), (6, 9, []), (12, 13, [13])],
    20: [(23, 24, [23, 24]), (30, 30, [30])],
    40: [(40, 41, [40, 41])],
}
#: The cleaner's checkpoint: segments below the active one (at 40) are clean.
CHECKPOINT: Final = 40
PRODUCER: Final = 9


def compacted_batch(
    base_offset: int,
    last_offset: int,
    offsets: list[int],
    *,
    attributes: int = 0,
    base_timestamp: int = TS,
    producer: tuple[int, int, int] = (-1, -1, -1),
    value: bytes | None = b"v",
) -> bytes:
    """A batch as the cleaner writes it: records at ``offsets`` only (none: an empty batch), its
    original ``last_offset``; with DELETE_HORIZON_BIT, ``base_timestamp`` is the horizon and the
    record timestamps are re-based on it so that each still reads TS + its offset."""
    parts: list[bytes | bytearray | memoryview] = []
    for o in offsets:
        encode_record(o - base_offset, TS + o - base_timestamp, f"k{o}".encode(), value, [], parts)
    records = b"".join(parts)
    max_ts = TS + (offsets[-1] if offsets else last_offset)
    pid, epoch, seq = producer
    covered = CRC_COVERED_HEADER.pack(
        attributes, last_offset - base_offset, base_timestamp, max_ts, pid, epoch, seq, len(offsets)
    )
    crc = crc32c(covered + records)
    prefix = HEADER_PREFIX.pack(base_offset, BATCH_HEADER_SIZE - LOG_OVERHEAD + len(records), 0, MAGIC)
    return prefix + crc.to_bytes(4, "big") + covered + records


def write_partition(d: Path, segments: dict[int, bytes], *, checkpoint: int | None) -> Path:
    """``d`` with these segment files (base offset -> bytes), opened and closed once by the
    broker (its indexes, checkpoints and marker), and ``checkpoint`` as its cleaner checkpoint."""
    d.mkdir(parents=True)
    for base, data in segments.items():
        fn.log_file(d, base).write_bytes(data)
    PartitionLog.open(d, CFG, clock=Clock(TS)).close()
    if checkpoint is not None:
        topic, partition = fn.parse_partition_dir(d.name)
        write_checkpoint(d / fn.CLEANER_OFFSET_CHECKPOINT, {(topic, partition): checkpoint})
    return d


def make_compacted_partition(
    d: Path,
    *,
    checkpoint: int | None = CHECKPOINT,
    layout: dict[int, list[tuple[int, int, list[int]]]] = LAYOUT,
) -> Path:
    """``d`` (a ``<topic>-<partition>`` directory) with ``layout``'s segments: the empty batch
    (6..9) is producer PRODUCER's last, the batch 12..13 holds a tombstone with HORIZON."""
    segments: dict[int, bytes] = {}
    for base, batches in layout.items():
        data = b""
        for first, last, offsets in batches:
            if not offsets:
                data += compacted_batch(first, last, offsets, producer=(PRODUCER, 0, first))
            elif first == 12:
                data += compacted_batch(
                    first, last, offsets, attributes=DELETE_HORIZON_BIT, base_timestamp=HORIZON, value=None
                )
            else:
                data += compacted_batch(first, last, offsets)
        segments[base] = data
    return write_partition(d, segments, checkpoint=checkpoint)
