"""What the log cleaner reads of a log (PartitionLog.cleaning): a snapshot taken under the log's
lock, so a clean works on fixed segments while appends, fetches and retention go on."""

from __future__ import annotations

import threading
from typing import NamedTuple

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.log_segment import LogSegment
from shardbroker.storage.transaction_index import AbortedTxn

__all__ = ["CleanerView"]


class CleanerView(NamedTuple):
    """What the cleaner reads of a log, taken under the log's lock (PartitionLog.cleaning)."""

    config: LogConfig
    #: Every segment but the active one, in order, with a dup of its fd (closed by the cleaner).
    segments: tuple[LogSegment, ...]
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
