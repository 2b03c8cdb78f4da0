"""What the log cleaner reads of a log (PartitionLog.cleaning): a snapshot taken under the log's
lock, so a clean works on fixed segments while appends, fetches and retention go on. Plain data
(but the fds and the abort flag), so a clean can run in another process
(broker/cleaner_process.py) and a read-only tool can build one from files (verify/cleaner_state.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.transaction_index import AbortedTxn

__all__ = ["CleanerView", "SegmentFile"]


@dataclass(frozen=True, slots=True)
class SegmentFile:
    """One inactive segment as the cleaner needs it. ``inode`` tells it apart from a segment
    that took its base offset since (a cleaned one): PartitionLog.replace_segments checks it."""

    base_offset: int
    size: int
    #: Bytes of its offset index (groups are bounded by segment.index.bytes, as in Kafka).
    index_bytes: int
    largest_timestamp: int
    first_batch_timestamp: int
    inode: int = 0


class CleanerView(NamedTuple):
    """What the cleaner reads of a log, taken under the log's lock (PartitionLog.cleaning)."""

    config: LogConfig
    directory: Path
    #: Every segment but the active one, in order, with a dup of its fd (closed by the cleaner).
    segments: tuple[SegmentFile, ...]
    fds: tuple[int, ...]
    active_base: int
    log_start_offset: int
    last_stable_offset: int
    #: producer id -> last offset of its last data batch (those batches are kept).
    producer_last_offsets: dict[int, int]
    #: Every aborted transaction of those segments' ``.txnindex`` files.
    aborted: tuple[AbortedTxn, ...]
    #: Set when the log closes, is handed over or deleted: the clean stops at its next chunk.
    abort: threading.Event

    def portable(self) -> dict[str, Any]:
        """Every field but the fds and the abort flag (those do not cross a process boundary
        this way): what `received` rebuilds the view from, elsewhere."""
        fields = self._asdict()
        del fields["fds"], fields["abort"]
        return fields

    @classmethod
    def received(cls, fields: dict[str, Any], fds: tuple[int, ...], abort: threading.Event) -> CleanerView:
        return cls(fds=fds, abort=abort, **fields)
