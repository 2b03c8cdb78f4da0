"""What the shared tables (ipc/counters.py, ipc/group_offsets.py) share: segment create/attach/close.

Both are an ipc/shm.py segment: the 32-byte preamble, then a header of 8 native int64 words at
offset 32 (the table's dimensions, checked on attach), then sections on 64-byte boundaries.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final

import numpy as np

from shardbroker.ipc.shm import SharedSegment, shm_name

__all__ = [
    "ALIGN",
    "HEADER_AT",
    "HEADER_WORDS",
    "TableLayout",
    "aligned",
    "attach_segment",
    "close_table",
    "create_segment",
    "read_header",
]

HEADER_AT: Final = 32
HEADER_WORDS: Final = 8
ALIGN: Final = 64


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class TableLayout:
    """Where the common sections start: header, one ``BLOCK``-byte block per worker, ``state``
    (int64 per row), then the table's own row sections from ``data_at``."""

    BLOCK: ClassVar[int] = ALIGN

    workers: int
    rows: int

    @property
    def rows_per_worker(self) -> int:
        return self.rows // self.workers

    @property
    def blocks_at(self) -> int:
        return aligned(HEADER_AT + 8 * HEADER_WORDS)

    @property
    def state_at(self) -> int:
        return self.blocks_at + self.BLOCK * self.workers

    @property
    def data_at(self) -> int:
        return aligned(self.state_at + 8 * self.rows)


def create_segment(
    instance: str, object_name: str, size: int, kind: int, version: int, header: Sequence[int]
) -> SharedSegment:
    """Create ``/shardbroker-<instance>-<object_name>`` and write its header words (padded with 0)."""
    seg = SharedSegment.create(shm_name(instance, object_name), size, kind, version)
    words = np.ndarray((HEADER_WORDS,), dtype=np.int64, buffer=seg.mmap, offset=HEADER_AT)
    words[:] = [*header, *[0] * (HEADER_WORDS - len(header))]
    del words
    return seg


def attach_segment(instance: str, object_name: str, kind: int, version: int) -> SharedSegment:
    return SharedSegment.attach(shm_name(instance, object_name), kind, version)


def read_header(segment: SharedSegment) -> list[int]:
    """The header words, as Python ints."""
    words = np.ndarray((HEADER_WORDS,), dtype=np.int64, buffer=segment.mmap, offset=HEADER_AT)
    return [int(x) for x in words]


def close_table(table: Any, views: Iterable[str]) -> None:
    """Drop the table's numpy views of the mapping, then unmap ``table.segment`` (and unlink, in
    the creating process). Views handed out elsewhere keep the mapping alive (BufferError ignored)."""
    for attr in views:
        setattr(table, attr, np.zeros(0))
    with contextlib.suppress(BufferError):
        table.segment.close()
