"""Reading a segment's ``.log`` read-only and judging its batches as recovery would (the
``.log`` layout is record_batch_header.py's).

Safe on a live broker's data dir: segments are read with ``preadv`` in chunks of
:data:`CHUNK_BYTES` into one reused private buffer, not mapped: a map of a file the broker cuts
back (a failed write is ``ftruncate``'d away) would kill the reader with SIGBUS. Reads stop at
the size seen at open, so a file that grows meanwhile reads as it was.

Vectorised like recovery: ``scan_batches`` reads every header of a chunk in a few numpy calls,
the hardware CRC-32C checks each batch, and recovery's own rules (log_segment.batch_checks) say
which batch recovery would cut at. The first failure is where recovery cuts the log: a torn
tail (repairable) at the end of the last segment with nothing valid after it, damage otherwise.

Why 4 MiB chunks into one reused buffer: it scans a page-cached 1 GiB segment at 2.0-2.4 GB/s,
ahead of 1, 16 and 64 MiB chunks and of a fresh buffer per read (docs/notes/storage.md).

Offset gaps (a batch above the previous one's last offset + 1, a segment above the previous
one's end) are what compaction leaves: the cleaner keeps every record's offset and removes
records, so gaps are normal in a compacted log (``compacted``: the partition has a
``cleaner-offset-checkpoint``) and not reported there; elsewhere each one is a note.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from shardbroker.protocol.batch_scan import BatchHeaders, scan_batches, verify_crcs
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE, CRC_START, LENGTH_OFFSET, LOG_OVERHEAD
from shardbroker.storage.file_names import offset_from_file_name
from shardbroker.storage.log_segment import batch_checks
from shardbroker.storage.verify.problems import Problem, Severity, capped

__all__ = [
    "CHUNK_BYTES",
    "LogChunk",
    "SegmentScan",
    "TailStop",
    "batch_problems",
    "log_end_offset",
    "read_log_chunks",
    "scan_segment",
    "segment_order",
]

#: Bytes of a segment read per preadv into one reused buffer (see the module docstring).
CHUNK_BYTES: Final = 4 << 20


@dataclass(frozen=True, slots=True)
class LogChunk:
    """Whole batches read from a segment: ``data`` starts at file position ``position``;
    ``headers.positions`` are file positions."""

    position: int
    data: memoryview
    headers: BatchHeaders
    crc_ok: npt.NDArray[np.bool_]


@dataclass(frozen=True, slots=True)
class TailStop:
    """Where the length chain of a segment ended before the end of the file."""

    position: int
    remaining: int
    #: LOG_OVERHEAD + batchLength of the header there; None when fewer than 12 bytes are left.
    declared_size: int | None
    #: The stored baseOffset there (garbage when the bytes are); None when fewer than 8 bytes.
    stored_base_offset: int | None
    #: Every remaining byte is zero (a preallocated or never-written tail).
    zeros: bool

    @property
    def runs_past_end(self) -> bool:
        return self.declared_size is None or self.declared_size > self.remaining

    def describe(self) -> str:
        if self.declared_size is None:
            return f"{self.remaining} bytes at the end are too few for a batch header's length field"
        if self.zeros:
            return f"{self.remaining} zero bytes where a batch should start"
        if self.declared_size < BATCH_HEADER_SIZE:
            return (
                f"invalid batchLength {self.declared_size - LOG_OVERHEAD} (a batch has at least "
                f"{BATCH_HEADER_SIZE - LOG_OVERHEAD}); {self.remaining} bytes from here cannot be read"
            )
        return f"batch declares {self.declared_size} bytes but only {self.remaining} remain in the file"


def read_log_chunks(
    path: Path, chunk_bytes: int = CHUNK_BYTES, start: int = 0
) -> tuple[int, Iterator[LogChunk], Callable[[], TailStop | None]]:
    """``(size, chunks, stop)``: the file size when opened, an iterator over its whole batches in
    chunks (CRCs checked), and, once the iterator is exhausted, where the chain ended early.

    Each chunk's ``data`` is a view of one reused buffer, valid until the next chunk is read.
    Reads no further than the size seen at open, so a file that grows meanwhile reads as it was.
    A batch larger than ``chunk_bytes`` is read whole on its own. ``start``: the file position of
    a batch to begin at (an offset index entry's), to read only a segment's tail. Raises OSError
    (the file went away, or cannot be read)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    size = os.fstat(fd).st_size
    stop: list[TailStop | None] = [None]

    def chunks() -> Iterator[LogChunk]:
        try:
            buf = memoryview(bytearray(min(chunk_bytes, max(size - start, 0))))
            pos = start
            while pos < size:
                want = min(buf.nbytes, size - pos)
                data = buf[: os.preadv(fd, [buf[:want]], pos)]
                if not data:
                    break
                h = scan_batches(data, base_position=pos)
                if len(h):
                    yield LogChunk(pos, data, h, verify_crcs(data, h))
                    pos = h.end
                    continue
                declared = _declared_size(data)
                if declared is not None and BATCH_HEADER_SIZE <= declared <= size - pos and declared > want:
                    buf = memoryview(bytearray(declared))  # one batch bigger than a chunk: read it whole
                    continue
                stop[0] = _tail_stop(fd, pos, size, data, declared)
                break
        finally:
            os.close(fd)

    return size, chunks(), lambda: stop[0]


def _declared_size(head: memoryview) -> int | None:
    """LOG_OVERHEAD + batchLength of the batch header at the start of ``head`` (None: too short)."""
    if head.nbytes < LOG_OVERHEAD:
        return None
    return int.from_bytes(head[LENGTH_OFFSET : LENGTH_OFFSET + 4], "big", signed=True) + LOG_OVERHEAD


def _tail_stop(fd: int, pos: int, size: int, head: memoryview, declared: int | None) -> TailStop:
    zeros = not np.frombuffer(head, dtype=np.uint8).any()
    at = pos + head.nbytes
    while zeros and at < size:
        more = os.pread(fd, min(CHUNK_BYTES, size - at), at)
        if not more:
            break
        zeros = not np.frombuffer(more, dtype=np.uint8).any()
        at += len(more)
    base = int.from_bytes(head[:8], "big", signed=True) if head.nbytes >= 8 else None
    return TailStop(pos, size - pos, declared, base, zeros)


def _concat(parts: list[BatchHeaders], end: int) -> BatchHeaders:
    if not parts:
        return dataclasses.replace(scan_batches(b""), end=end)
    if len(parts) == 1:
        return parts[0]
    arrays = {
        f.name: np.concatenate([getattr(p, f.name) for p in parts])
        for f in dataclasses.fields(BatchHeaders)
        if f.name not in ("end", "base_position")
    }
    return BatchHeaders(**arrays, end=end, base_position=0)


@dataclass(frozen=True, slots=True)
class SegmentScan:
    """Every whole batch of a segment with recovery's verdict on each (``checks``, from
    log_segment.batch_checks), and where the chain ended early (``stop``)."""

    path: Path
    base_offset: int
    size: int
    headers: BatchHeaders
    checks: dict[str, npt.NDArray[np.bool_]]
    #: CRC-32C computed over each batch whose stored CRC is wrong (batch number -> value).
    computed_crcs: dict[int, int]
    stop: TailStop | None

    @property
    def valid(self) -> npt.NDArray[np.bool_]:
        if not len(self.headers):
            return np.zeros(0, dtype=np.bool_)
        return np.asarray(np.logical_and.reduce(list(self.checks.values())), dtype=np.bool_)

    @property
    def first_invalid(self) -> int | None:
        bad = np.flatnonzero(~self.valid)
        return int(bad[0]) if bad.size else None

    @property
    def valid_batches(self) -> int:
        """Batches recovery keeps (those before the first one that fails a check)."""
        first = self.first_invalid
        return len(self.headers) if first is None else first

    @property
    def next_offset(self) -> int:
        """The offset after the last batch recovery keeps (the base offset if none)."""
        n = self.valid_batches
        return int(self.headers.last_offsets[n - 1]) + 1 if n else self.base_offset

    @property
    def record_count(self) -> int:
        return int(self.headers.record_counts.sum(dtype=np.int64))

    @property
    def file_suffix(self) -> str:
        """The temporary suffix of the scanned ``.log`` (``.swap``: a swap recovery completes),
        which its indexes share; ``""`` for a segment's own file."""
        parsed = offset_from_file_name(self.path.name)
        return parsed[2] if parsed is not None else ""


def scan_segment(
    path: Path,
    base_offset: int,
    on_chunk: Callable[[LogChunk], None] | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> SegmentScan:
    """Read a ``.log`` file whole (in chunks, read-only) and judge every batch as recovery would.
    ``on_chunk`` sees each chunk's bytes before they are dropped (dump-log prints from it)."""
    size, chunks, stop = read_log_chunks(path, chunk_bytes)
    parts: list[BatchHeaders] = []
    oks: list[npt.NDArray[np.bool_]] = []
    computed: dict[int, int] = {}
    count = 0
    for chunk in chunks:
        if on_chunk is not None:
            on_chunk(chunk)
        h = chunk.headers
        mv = chunk.data
        for i in np.flatnonzero(~chunk.crc_ok).tolist():
            rel = int(h.positions[i]) - chunk.position
            computed[count + i] = crc32c(mv[rel + CRC_START : rel + int(h.sizes[i])])
        parts.append(h)
        oks.append(chunk.crc_ok)
        count += len(h)
    tail = stop()
    headers = _concat(parts, tail.position if tail is not None else size)
    crc_ok = np.concatenate(oks) if oks else np.zeros(0, dtype=np.bool_)
    return SegmentScan(
        path, base_offset, size, headers, batch_checks(headers, crc_ok, base_offset), computed, tail
    )


# ---- judging a segment ------------------------------------------------------------------------


def _failure(scan: SegmentScan, i: int, rule: str) -> str:
    h = scan.headers
    base = int(h.base_offsets[i])
    if rule == "crc":
        return (
            f"CRC-32C mismatch: stored {int(h.crcs[i]):#010x}, computed {scan.computed_crcs.get(i, 0):#010x}"
        )
    if rule == "magic":
        return f"magic {int(h.magics[i])}: only record batch v2 (magic 2) is valid"
    if rule == "last_offset_delta":
        return f"negative lastOffsetDelta {int(h.last_offset_deltas[i])}"
    if rule == "base_offset":
        return f"baseOffset {base} is below the segment's base offset {scan.base_offset} (its file name)"
    if rule == "offset_range":
        return f"lastOffset {int(h.last_offsets[i])} is beyond 2^31-1 above the segment's base offset"
    return f"baseOffset {base} is not above the previous batch's lastOffset {int(h.last_offsets[i - 1])}"


def batch_problems(
    scan: SegmentScan, *, last_segment: bool, later_segments: int = 0, compacted: bool = False
) -> list[Problem]:
    """What is wrong with a segment's batches: every batch failing a recovery rule, where the chain
    of lengths breaks, offset gaps (unless ``compacted``: see the module docstring). The first
    failure is where recovery would cut the log; it is a torn tail (repairable) when it is the
    end of the last segment and nothing valid follows it, damage otherwise."""
    h = scan.headers
    n = len(h)
    out: list[Problem] = []
    valid = scan.valid
    first = scan.first_invalid
    cut = first is not None or scan.stop is not None
    cut_position = (
        int(h.positions[first]) if first is not None else (scan.stop.position if scan.stop else scan.size)
    )
    dropped_bytes = scan.size - cut_position
    consequence = f"recovery would cut the log here, dropping {dropped_bytes} bytes"
    if later_segments:
        consequence += f" and the {later_segments} later segment(s)"
    for i in np.flatnonzero(~valid).tolist():
        rules = [name for name, ok in scan.checks.items() if not ok[i]]
        what = "; ".join(_failure(scan, i, r) for r in rules)
        tail = last_segment and i == first and i == n - 1 and scan.stop is None and rules == ["crc"]
        if tail:
            severity, kind = Severity.REPAIRABLE, "torn-tail"
            what = f"the last batch fails its CRC (a write cut short): {what}; {consequence}"
        else:
            severity, kind = Severity.DAMAGE, f"batch-{rules[0].replace('_', '-')}"
            if i == first:
                what = f"{what}; {consequence}"
        out.append(Problem(severity, kind, scan.path, what, int(h.positions[i]), int(h.base_offsets[i]), i))
    if scan.stop is not None:
        stop = scan.stop
        expected = int(h.last_offsets[-1]) + 1 if n else scan.base_offset
        tail = last_segment and first is None and (stop.runs_past_end or stop.zeros)
        what = stop.describe()
        if first is None:
            what = f"{what}; {consequence}"
        out.append(
            Problem(
                Severity.REPAIRABLE if tail else Severity.DAMAGE,
                "torn-tail" if tail else "batch-length",
                scan.path,
                what,
                stop.position,
                expected,
                n,
            )
        )
    if not compacted:
        out += _offset_gaps(scan, valid)
    if not cut and n == 0 and not last_segment:
        out.append(
            Problem(Severity.NOTE, "empty-segment", scan.path, "an empty segment that is not the last")
        )
    return capped(out)


#: Why a gap is only a note, said with each one found in a partition without a cleaner checkpoint.
_GAP_NOTE: Final = "normal in a compacted log, but this partition has no cleaner-offset-checkpoint"


def _offset_gaps(scan: SegmentScan, valid: npt.NDArray[np.bool_]) -> list[Problem]:
    """A note per gap between valid batches of a segment, and above its file name."""
    h = scan.headers
    out: list[Problem] = []
    if len(h) and int(h.base_offsets[0]) > scan.base_offset and valid[0]:
        out.append(
            Problem(
                Severity.NOTE,
                "offset-gap",
                scan.path,
                f"the first batch starts at offset {int(h.base_offsets[0])}, above the file name's "
                f"{scan.base_offset} ({_GAP_NOTE})",
                int(h.positions[0]),
                int(h.base_offsets[0]),
                0,
            )
        )
    if len(h) > 1:
        gaps = np.flatnonzero((h.base_offsets[1:] > h.last_offsets[:-1] + 1) & valid[1:] & valid[:-1]) + 1
        for i in gaps.tolist():
            out.append(
                Problem(
                    Severity.NOTE,
                    "offset-gap",
                    scan.path,
                    f"offsets jump from {int(h.last_offsets[i - 1])} to {int(h.base_offsets[i])} "
                    f"({_GAP_NOTE})",
                    int(h.positions[i]),
                    int(h.base_offsets[i]),
                    i,
                )
            )
    return out


def segment_order(prev: SegmentScan, cur: SegmentScan, *, compacted: bool = False) -> list[Problem]:
    """Segments follow each other: a file name is at least the previous segment's next offset
    (above it is a gap: a note unless ``compacted``)."""
    if prev.valid_batches < len(prev.headers) or prev.stop is not None:
        return []  # already reported: recovery cuts in ``prev``
    end = prev.next_offset
    if cur.base_offset < end:
        return [
            Problem(
                Severity.DAMAGE,
                "segment-overlap",
                cur.path,
                f"segment named {cur.base_offset} overlaps the previous one, which ends at offset {end - 1}",
                0,
                cur.base_offset,
            )
        ]
    if cur.base_offset > end and len(prev.headers) and not compacted:
        return [
            Problem(
                Severity.NOTE,
                "offset-gap",
                cur.path,
                f"offsets jump from {end - 1} (end of the previous segment) to {cur.base_offset} "
                f"({_GAP_NOTE})",
                0,
                cur.base_offset,
            )
        ]
    return []


def log_end_offset(scans: list[SegmentScan]) -> int | None:
    """The log end offset recovery would arrive at: the end of the valid prefix of the log."""
    if not scans:
        return None
    leo = scans[0].base_offset
    for scan in scans:
        leo = scan.next_offset if scan.valid_batches else max(leo, scan.base_offset)
        if scan.valid_batches < len(scan.headers) or scan.stop is not None:
            break
    return leo
