"""The client metrics each worker exports (KIP-714 telemetry), in POSIX shared memory for /metrics.

Opens and unlinks a POSIX shared-memory segment (ipc/shm.py's ``SharedSegment``, object name
``clienttelemetry``). Each worker's exporter (broker/client_telemetry.py) writes a small JSON
document into its own block on the worker's 1 s publish tick, only when something changed; the
supervisor's collector (observability/client_telemetry.py) reads every block at each scrape.

Why a document per worker rather than rows like ipc/group_offsets.py: the series are few and
bounded (``MAX_CLIENT_IDS`` client ids per worker), they change only when a client pushes
(every few seconds to minutes), and a client id is a label of several families at once, so the
whole set is rewritten at once: one copy and one encode per change (0.2-0.4 ms for 100 client
ids with 12 values each), no row allocator.

Layout (native byte order)::

    [0, 32)      ipc/shm.py preamble: kind b"CTEL", version 1, owner pid and start time
    [32, 96)     header, 8 x int64: workers, BLOCK_BYTES, 0...
    per worker, from 128, BLOCK_BYTES each: int64 sequence, int64 length, the document (UTF-8)

The sequence is a seqlock: odd while the worker writes, a new even value after; a reader that
sees it odd or changed across its copy retries (three times, then leaves the worker out of that
scrape). A worker zeroes its block when it starts and clears it on drain.
"""

from __future__ import annotations

import json
import struct
from typing import Any, Final

from shardbroker.ipc.shm import SharedSegment
from shardbroker.ipc.table import aligned, attach_segment, close_table, create_segment, read_header

__all__ = ["BLOCK_BYTES", "ClientTelemetryTable", "WorkerClientTelemetry"]

KIND: Final = int.from_bytes(b"CTEL", "little")
VERSION: Final = 1
OBJECT_NAME: Final = "clienttelemetry"
#: One worker's document, at most: 100 client ids of up to 255 characters (4 bytes each in
#: UTF-8) with 12 values each stay under 200 KiB.
BLOCK_BYTES: Final = 512 * 1024
_HEAD: Final = struct.Struct("=qq")
_BLOCKS_AT: Final = aligned(96)
_RETRIES: Final = 3


def _block(slot: int) -> int:
    return _BLOCKS_AT + slot * BLOCK_BYTES


class ClientTelemetryTable:
    """The mapped segment: the supervisor creates it before forking and reads it (`documents`);
    each worker writes through `worker`."""

    def __init__(self, segment: SharedSegment) -> None:
        self.segment = segment
        workers, block = read_header(segment)[:2]
        if block != BLOCK_BYTES or workers < 1:
            raise ValueError(f"{segment.name}: client telemetry layout does not match this build")
        self.workers = workers

    @classmethod
    def create(cls, instance: str, workers: int) -> ClientTelemetryTable:
        if workers < 1:
            raise ValueError(f"need workers >= 1, got {workers}")
        size = _block(workers)
        return cls(create_segment(instance, OBJECT_NAME, size, KIND, VERSION, [workers, BLOCK_BYTES]))

    @classmethod
    def attach(cls, instance: str) -> ClientTelemetryTable:
        return cls(attach_segment(instance, OBJECT_NAME, KIND, VERSION))

    def worker(self, slot: int) -> WorkerClientTelemetry:
        """The writer of worker ``slot`` (in that worker, after the fork): zeroes its block."""
        if not 0 <= slot < self.workers:
            raise IndexError(f"worker {slot} out of range 0..{self.workers - 1}")
        return WorkerClientTelemetry(memoryview(self.segment.mmap)[_block(slot) : _block(slot + 1)])

    def documents(self) -> list[tuple[int, dict[str, Any]]]:
        """(worker, document) of every worker that published one, read consistently."""
        mm = self.segment.mmap
        out = []
        for w in range(self.workers):
            at = _block(w)
            for _ in range(_RETRIES):
                seq, length = _HEAD.unpack_from(mm, at)
                if seq % 2 or not 0 <= length <= BLOCK_BYTES - _HEAD.size:
                    continue
                raw = mm[at + _HEAD.size : at + _HEAD.size + length]
                if _HEAD.unpack_from(mm, at)[0] != seq:
                    continue
                if length:
                    out.append((w, json.loads(raw)))
                break
        return out

    def close(self) -> None:
        """Unmap (and unlink, in the creating process)."""
        close_table(self, ())


class WorkerClientTelemetry:
    """One worker's writer. ``WorkerClientTelemetry.private()`` writes private memory (tests, a
    worker run without a supervisor): the same code path, nobody reads it."""

    def __init__(self, block: memoryview) -> None:
        self._block = block
        block[:] = bytes(len(block))
        self._seq = 0

    @classmethod
    def private(cls) -> WorkerClientTelemetry:
        return cls(memoryview(bytearray(BLOCK_BYTES)))

    def write(self, document: dict[str, Any]) -> bool:
        """Publish ``document``; False (nothing written) if it does not fit the block."""
        raw = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode() if document else b""
        if len(raw) > len(self._block) - _HEAD.size:
            return False
        self._seq += 1
        _HEAD.pack_into(self._block, 0, self._seq, 0)
        self._block[_HEAD.size : _HEAD.size + len(raw)] = raw
        self._seq += 1
        _HEAD.pack_into(self._block, 0, self._seq, len(raw))
        return True

    def read(self) -> dict[str, Any]:
        """What this writer published last (tests)."""
        _, length = _HEAD.unpack_from(self._block, 0)
        return json.loads(bytes(self._block[_HEAD.size : _HEAD.size + length])) if length else {}
