"""The records of many batches decoded at once into numpy columns: the local consumer's line rate.

Owns :class:`RecordColumns` (offsets, timestamps, key and value positions and lengths, one
array each, in log order) and :func:`record_columns`, which decodes every record of a run of
batches found by :func:`~shardbroker.protocol.batch_scan.scan_batches` with whole-array
operations. Record layout: :mod:`shardbroker.protocol.record_batch`.

Invariant: the same records, values and refusals (InvalidRecordBatch) as
:meth:`RecordBatch.records <shardbroker.protocol.record_batch.RecordBatch.records>` per batch
(tests/unit/test_local_records.py): record starts are predicted, every field is decoded by
gathers at those starts and checked, and a batch that breaks the prediction is walked again;
whatever still does not decode is handed to the record decoder for its verdict.

Why: 89-138 ns a record on 4 MiB of 100-byte records against 240-3,200 ns for decoding one
batch at a time; 4 MiB at a time, because 64 MiB makes the gathers miss the cache (2.5x slower;
docs/notes/records.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple, TypeAlias, TypeVar

import numpy as np
import numpy.typing as npt

from shardbroker.protocol.batch_scan import BatchHeaders
from shardbroker.protocol.compression import DEFAULT_MAX_DECOMPRESSED_SIZE
from shardbroker.protocol.errors import ProtocolError
from shardbroker.protocol.primitives import BytesLike, decode_varint
from shardbroker.protocol.record_batch import Header, InvalidRecordBatch, Record, RecordBatch, decode_records
from shardbroker.protocol.record_batch_header import BATCH_HEADER_SIZE, COMPRESSION_MASK, TIMESTAMP_TYPE_BIT

__all__ = ["RecordColumns", "record_columns"]

#: A speculated stride that confirms fewer records than this hands the next ``_WALK`` records to a
#: plain Python walk (records of varied sizes), then speculates again.
_MIN_RUN: Final = 16
_WALK: Final = 256

_I64: TypeAlias = npt.NDArray[np.int64]
_Scalar = TypeVar("_Scalar", bound=np.generic)

_Run = tuple[int, int, int]  # first position, records, stride: equally long records


def _record_runs(
    data: memoryview, u8: npt.NDArray[np.uint8], count: int
) -> list[_Run | npt.NDArray[np.int64]]:
    """Where the records start: runs of equally long records, or arrays of starts. The length
    chain is sequential, so runs are found by speculation: the stride of a run's first record is
    checked against every later position at once (their length bytes must match)."""
    pieces: list[_Run | npt.NDArray[np.int64]] = []
    found = 0
    pos = 0
    end = u8.shape[0]
    while found < count:
        if pos >= end:
            raise InvalidRecordBatch(f"records end after {found} of {count} records")
        length, body = decode_varint(data, pos)
        stride = body - pos + length
        if length < 6 or pos + stride > end:
            raise InvalidRecordBatch(f"record length {length} out of bounds")
        k = min(count - found, (end - pos) // stride)
        rows = u8[pos : pos + k * stride].reshape(k, stride)
        differs = rows[:, 0] != rows[0, 0]
        for j in range(1, body - pos):  # column by column: 20x faster than any(axis=1) here
            differs |= rows[:, j] != rows[0, j]
        bad = np.flatnonzero(differs)
        run = int(bad[0]) if bad.size else k
        if run >= _MIN_RUN or run == k:
            pieces.append((pos, run, stride))
            found += run
            pos += run * stride
            continue
        walked = [pos]
        p = pos + stride
        while len(walked) < min(_WALK, count - found) and p < end:
            length, body = decode_varint(data, p)
            if length < 6:
                raise InvalidRecordBatch(f"record length {length} out of bounds")
            walked.append(p)
            p = body + length
        pieces.append(np.array(walked, dtype=np.int64))
        found += len(walked)
        pos = p
    if pos != end:
        raise InvalidRecordBatch(f"{end - pos} bytes left after the last of {count} records")
    return pieces


@dataclass(frozen=True, slots=True)
class RecordColumns:
    """Every record of a run of batches, in log order, as equal-length numpy arrays: what a
    reader that wants line rate takes instead of Record objects. Positions index ``data``;
    lengths are -1 for null keys and values; ``headers`` has each record's headers, or is None
    when no record has any. Timestamps are LogAppendTime where the batch says so, as in
    :class:`Record`."""

    data: memoryview
    offsets: _I64
    timestamps: _I64
    offset_deltas: _I64
    timestamp_deltas: _I64
    attributes: npt.NDArray[np.uint8]
    key_starts: _I64
    key_lengths: _I64
    value_starts: _I64
    value_lengths: _I64
    #: Where each record's bytes (from its length varint) start and end in ``data``: a record
    #: can be copied as written (the log cleaner keeps records without re-encoding them).
    record_starts: _I64
    record_ends: _I64
    headers: list[tuple[Header, ...]] | None = None

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def key(self, i: int) -> memoryview | None:
        n = int(self.key_lengths[i])
        return None if n < 0 else self.data[int(self.key_starts[i]) : int(self.key_starts[i]) + n]

    def value(self, i: int) -> memoryview | None:
        n = int(self.value_lengths[i])
        return None if n < 0 else self.data[int(self.value_starts[i]) : int(self.value_starts[i]) + n]

    def since(self, offset: int) -> RecordColumns:
        """The records at ``offset`` and later (a fetch from the middle of a batch skips the
        batch's earlier records, as Kafka's consumers do); slices, no copies."""
        i = int(np.searchsorted(self.offsets, offset, side="left"))
        if i == 0:
            return self
        return RecordColumns(
            self.data, self.offsets[i:], self.timestamps[i:], self.offset_deltas[i:],
            self.timestamp_deltas[i:], self.attributes[i:], self.key_starts[i:], self.key_lengths[i:],
            self.value_starts[i:], self.value_lengths[i:], self.record_starts[i:], self.record_ends[i:],
            None if self.headers is None else self.headers[i:],
        )  # fmt: skip

    def records(self) -> Iterator[Record]:
        """The records as :class:`Record` objects (keys and values: memoryviews of ``data``)."""
        data = self.data
        headers: Iterable[tuple[Header, ...]] = self.headers or itertools.repeat(())
        zipped = zip(
            self.offsets.tolist(), self.timestamps.tolist(), self.key_starts.tolist(),
            self.key_lengths.tolist(), self.value_starts.tolist(), self.value_lengths.tolist(),
            self.attributes.tolist(), self.offset_deltas.tolist(), self.timestamp_deltas.tolist(), headers,
            strict=False,  # headers: repeat() when no record has any
        )  # fmt: skip
        for offset, stamp, ks, kl, vs, vl, attrs, od, td, hs in zipped:
            key = None if kl < 0 else data[ks : ks + kl]
            value = None if vl < 0 else data[vs : vs + vl]
            yield Record(offset, stamp, key, value, hs, attrs, od, td)


_NONE: Final[_I64] = np.zeros(0, np.int64)
_payload = np.arange(1 << 14, dtype=np.int64)
#: The value of every 1- or 2-byte zig-zag varint, indexed by its 14 payload bits (128 KiB: stays
#: in the L2 cache). One lookup replaces widening to int64 and four zig-zag operations: a whole
#: decode of 100-byte records took 0.95-0.97 of the time with it (3 interleaved runs of 15).
_ZIGZAG_14: Final[_I64] = (_payload >> 1) ^ -(_payload & 1)
del _payload


def _varints(u8: npt.NDArray[np.uint8], pos: _I64, max_bytes: int) -> tuple[_I64, _I64, _I64]:
    """Zig-zag varints (``max_bytes`` 5) or varlongs (10) at each of ``pos``: ``(values,
    positions after them, indexes of the invalid ones)``, invalid as the record decoder judges.
    Positions past ``u8`` read its last byte (the caller's checks that fields end where their
    record does then fail). When every varint has 1 byte, or 1-2 bytes (the common cases), each
    is a few whole-array operations and a table lookup; longer ones take :func:`_long_varints`."""
    b = np.take(u8, pos, mode="clip")
    if not b.shape[0] or int(b.max()) < 0x80:
        return _ZIGZAG_14[b], pos + 1, _NONE
    more = b >= 0x80
    b1 = np.take(u8, pos + 1, mode="clip") * more  # 0 after a 1-byte varint
    if int(b1.max()) >= 0x80:
        return _long_varints(u8, pos, max_bytes)
    payload = (b1.astype(np.uint16) << 7) | (b & 0x7F)
    return _ZIGZAG_14[payload], pos + 1 + more, _NONE


def _long_varints(u8: npt.NDArray[np.uint8], pos: _I64, max_bytes: int) -> tuple[_I64, _I64, _I64]:
    """:func:`_varints` of any width: each byte gathered once, the first byte of every varint,
    then the second byte of those that go on, and so on."""
    b = np.take(u8, pos, mode="clip")
    more = np.flatnonzero(b >= 0x80)
    z = (b & 0x7F).astype(np.uint64)
    width = np.ones(pos.shape[0], np.int64)
    bad: list[_I64] = []
    j = 1
    while more.size and j < max_bytes:
        bj = np.take(u8, pos[more] + j, mode="clip")
        if j == 9:  # a varlong's 10th byte holds bit 63 only
            bad.append(more[bj > 1])
        z[more] |= (bj & 0x7F).astype(np.uint64) << np.uint64(7 * j)
        width[more] += 1
        more = more[bj >= 0x80]
        j += 1
    bad.append(more)  # still going after max_bytes bytes
    if max_bytes == 5:
        bad.append(np.flatnonzero(z > 0xFFFFFFFF))
    v = ((z >> np.uint64(1)) ^ -(z & np.uint64(1))).view(np.int64)
    return v, pos + width, np.concatenate(bad)


#: Where a zig-zag varint of a value >= 0 grows a byte: 2 * v needs 8, 15, 22, 29 bits.
_WIDER_AT: Final = (64, 8192, 1 << 20, 1 << 27)


def _varint_sizes(values: _I64) -> _I64:
    """Encoded size of each zig-zag varint (values of at most 32 bits: 1-5 bytes). Only the
    widths between the smallest and the largest value cost an operation per value (a run of
    offset deltas below 8192 takes one; bodies of 100-byte records, none)."""
    if not values.shape[0]:
        return values
    low, high = int(values.min()), int(values.max())
    if low < 0:
        z = ((values << 1) ^ (values >> 63)).view(np.uint64)
        size = np.ones(values.shape[0], np.int64)
        for bits in (7, 14, 21, 28):
            size += z >= np.uint64(1 << bits)
        return size
    base = 1 + sum(low >= at for at in _WIDER_AT)
    steps = [at for at in _WIDER_AT if low < at <= high]
    if not steps:
        return np.full(values.shape[0], base, np.int64)
    size = (values >= steps[0]).astype(np.int64)
    for at in steps[1:]:
        size += values >= at
    size += base
    return size


class _Fields(NamedTuple):
    """The fields of records at given starts (positions in the records' buffer)."""

    offset_deltas: _I64
    timestamp_deltas: _I64
    attributes: npt.NDArray[np.uint8]
    key_starts: _I64
    key_lengths: _I64
    value_starts: _I64
    value_lengths: _I64
    with_headers: _I64  # indexes of records whose header count is not 0
    bad: _I64  # indexes of records that do not decode as their start and the next one's say


def _fields(u8: npt.NDArray[np.uint8], starts: _I64, ends: _I64) -> _Fields:
    """Decode the records at ``starts`` that must end at ``ends`` (the next record's start, or
    the end of the batch's records): every check of the record decoder except inside headers
    (those records are left to it)."""
    length, body, bad0 = _varints(u8, starts, 5)
    attributes = np.take(u8, body, mode="clip")
    ts, p, bad1 = _varints(u8, body + 1, 10)
    od, p, bad2 = _varints(u8, p, 5)
    klen, kstart, bad3 = _varints(u8, p, 5)
    vlen, vstart, bad4 = _varints(u8, kstart + np.maximum(klen, 0), 5)
    p = vstart + np.maximum(vlen, 0)  # the header count
    count = np.take(u8, p, mode="clip")
    # Fields that end where the record does also make its length at least 6, as the decoder wants.
    ok = (body + length == ends) & (klen >= -1) & (vlen >= -1)
    ok &= np.where(count == 0, p + 1 == ends, p < ends)
    bad = _NONE if ok.all() else np.flatnonzero(~ok)
    if bad0.size or bad1.size or bad2.size or bad3.size or bad4.size:
        bad = np.concatenate([bad, bad0, bad1, bad2, bad3, bad4])
    with_headers = np.flatnonzero(count) if count.any() else _NONE
    return _Fields(od, ts, attributes, kstart, klen, vstart, vlen, with_headers, bad)


def _predicted_starts(u8: npt.NDArray[np.uint8], first: _I64, counts: _I64) -> _I64:
    """Where the records of each batch start if they are alike: every record as long as the
    batch's first one except for its offset delta's varint (which widens at 64 and 8192) and
    the length prefix that follows from it -- what fixed-size producers write. Only a guess:
    :func:`_fields` then checks that every record ends where the next one starts."""
    length, body, _ = _varints(u8, first, 5)
    _, p, _ = _varints(u8, body + 1, 10)
    od0, _, _ = _varints(u8, p, 5)
    n = int(counts.sum())
    batch_first = np.cumsum(counts) - counts
    deltas = np.arange(n, dtype=np.int64) + np.repeat(od0 - batch_first, counts)  # od0, od0 + 1, ...
    bodies = np.repeat(length - _varint_sizes(od0), counts) + _varint_sizes(deltas)
    sizes = bodies + _varint_sizes(bodies)
    before: _I64 = np.cumsum(sizes) - sizes
    starts: _I64 = np.repeat(first - before[batch_first], counts) + before
    return starts


def _walked_starts(data: memoryview, u8: npt.NDArray[np.uint8], start: int, end: int, count: int) -> _I64:
    """The starts of one batch's records, following the length chain (``_record_runs``)."""
    try:
        pieces = _record_runs(data[start:end], u8[start:end], count)
    except InvalidRecordBatch:
        raise
    except ProtocolError as exc:  # a malformed varint
        raise InvalidRecordBatch(str(exc)) from None
    arrays = [
        p if isinstance(p, np.ndarray) else p[0] + p[2] * np.arange(p[1], dtype=np.int64) for p in pieces
    ]
    return np.concatenate(arrays) + start


def _refusal(data: memoryview, start: int, end: int, count: int) -> InvalidRecordBatch:
    """Why the record decoder refuses the ``count`` records in ``data[start:end]`` (found not to
    decode as columns: the checks are the decoder's, so it refuses them too)."""
    try:
        for _ in decode_records(data[start:end], count, 0, 0, None):
            pass
    except InvalidRecordBatch as exc:
        return exc
    except (IndexError, ProtocolError) as exc:
        return InvalidRecordBatch(f"records do not decode: {exc}")
    return InvalidRecordBatch(f"records at {start}..{end} do not decode as columns")


def _record_headers(data: memoryview, start: int, end: int) -> tuple[Header, ...]:
    """The headers of the record at ``start`` (through the record decoder, with its checks)."""
    try:
        return next(decode_records(data[start:end], 1, 0, 0, None)).headers
    except InvalidRecordBatch:
        raise
    except (IndexError, ProtocolError) as exc:
        raise InvalidRecordBatch(f"record at {start}: {exc}") from None


def _records_data(
    buf: memoryview, positions: _I64, sizes: _I64, compressed: npt.NDArray[np.bool_], max_size: int
) -> tuple[memoryview, _I64, _I64]:
    """``(data, starts, ends)``: the buffer holding every batch's records and where each
    batch's records are in it: ``buf`` itself when no batch is compressed, else one buffer of
    every batch's records, decompressed where needed."""
    if not compressed.any():
        return buf, positions + BATCH_HEADER_SIZE, positions + sizes
    pieces = [
        RecordBatch(buf[p : p + s]).records_data(max_size)
        for p, s in zip(positions.tolist(), sizes.tolist(), strict=True)
    ]
    ends = np.cumsum([m.nbytes for m in pieces], dtype=np.int64)
    return memoryview(b"".join(pieces)), ends - np.array([m.nbytes for m in pieces], np.int64), ends


def record_columns(
    buf: BytesLike,
    batches: BatchHeaders,
    first: int = 0,
    stop: int | None = None,
    max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE,
) -> RecordColumns:
    """Every record of ``batches[first:stop]`` (found in ``buf`` by ``scan_batches``, whose
    positions minus its ``base_position`` index ``buf``), decoded in one vectorised pass.

    The same records, values and refusals (InvalidRecordBatch) as :meth:`RecordBatch.records`
    per batch. How: the record starts of all batches are predicted at once
    (:func:`_predicted_starts`), every field of every record is decoded by gathers at those
    starts and checked (:func:`_fields`); a batch whose records broke the prediction (records of
    different sizes) has its starts found by following its length chain, and is decoded again.
    Compressed batches are decompressed first (their records are then a copy: ``data`` is a new
    buffer); records with headers have their headers decoded by the record decoder.
    """
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        mv = mv.cast("B")
    stop = len(batches) if stop is None else stop
    positions = batches.positions[first:stop] - batches.base_position
    sizes = batches.sizes[first:stop]
    counts = batches.record_counts[first:stop].astype(np.int64)
    attrs = batches.attributes[first:stop]
    compressed = (attrs & COMPRESSION_MASK) != 0
    empty = np.flatnonzero(counts <= 0)
    for i in empty.tolist():  # no records, or a negative count: the record decoder's verdict
        p = int(positions[i])
        for _ in RecordBatch(mv[p : p + int(sizes[i])]).records(max_size):
            pass
    if empty.size:
        keep = counts > 0
        positions, sizes, counts = positions[keep], sizes[keep], counts[keep]
        attrs, compressed = attrs[keep], compressed[keep]
        index = np.flatnonzero(keep) + first
    else:
        index = np.arange(first, first + positions.shape[0])
    data, starts_of, ends_of = _records_data(mv, positions, sizes, compressed, max_size)
    u8 = np.frombuffer(data, dtype=np.uint8)
    n = int(counts.sum())
    batch_first = np.cumsum(counts) - counts
    batch_last = batch_first + counts - 1
    if n and not u8.shape[0]:
        raise _refusal(data, 0, 0, int(counts[0]))
    starts = _predicted_starts(u8, starts_of, counts)
    ends = np.empty(n, np.int64)
    ends[:-1] = starts[1:]
    ends[batch_last] = ends_of
    f = _fields(u8, starts, ends)
    if f.bad.size:
        redo = np.unique(np.searchsorted(batch_last, f.bad, side="left"))
        f, starts, ends = _redecode(data, u8, f, starts, ends, redo, starts_of, ends_of, counts, batch_first)
    offset_deltas, timestamp_deltas = f.offset_deltas, f.timestamp_deltas
    offsets = np.repeat(batches.base_offsets[index], counts) + offset_deltas
    timestamps = np.repeat(batches.base_timestamps[index], counts) + timestamp_deltas
    append_time = (attrs & TIMESTAMP_TYPE_BIT) != 0
    if append_time.any():
        timestamps = np.where(
            np.repeat(append_time, counts), np.repeat(batches.max_timestamps[index], counts), timestamps
        )
    headers: list[tuple[Header, ...]] | None = None
    if f.with_headers.size:
        headers = [()] * n
        for i in f.with_headers.tolist():
            headers[i] = _record_headers(data, int(starts[i]), int(ends[i]))
    return RecordColumns(
        data, offsets, timestamps, offset_deltas, timestamp_deltas, f.attributes, f.key_starts,
        f.key_lengths, f.value_starts, f.value_lengths, starts, ends, headers,
    )  # fmt: skip


def _redecode(
    data: memoryview,
    u8: npt.NDArray[np.uint8],
    f: _Fields,
    starts: _I64,
    ends: _I64,
    redo: _I64,
    starts_of: _I64,
    ends_of: _I64,
    counts: _I64,
    batch_first: _I64,
) -> tuple[_Fields, _I64, _I64]:
    """Batches ``redo`` again, with the record starts their length chains give; a batch that
    still does not decode gets the record decoder's refusal."""
    rows = np.concatenate([np.arange(batch_first[b], batch_first[b] + counts[b]) for b in redo.tolist()])
    walked = np.concatenate(
        [_walked_starts(data, u8, int(starts_of[b]), int(ends_of[b]), int(counts[b])) for b in redo.tolist()]
    )
    starts, ends = starts.copy(), ends.copy()
    starts[rows] = walked
    ends[rows[:-1]] = walked[1:]
    ends[batch_first[redo] + counts[redo] - 1] = ends_of[redo]
    again = _fields(u8, walked, ends[rows])
    if again.bad.size:
        b = int(redo[np.searchsorted(np.cumsum(counts[redo]), again.bad[0], side="right")])
        raise _refusal(data, int(starts_of[b]), int(ends_of[b]), int(counts[b]))
    redone = np.zeros(starts.shape[0], np.bool_)
    redone[rows] = True
    merged = _Fields(
        _put(f.offset_deltas, rows, again.offset_deltas),
        _put(f.timestamp_deltas, rows, again.timestamp_deltas),
        _put(f.attributes, rows, again.attributes),
        _put(f.key_starts, rows, again.key_starts),
        _put(f.key_lengths, rows, again.key_lengths),
        _put(f.value_starts, rows, again.value_starts),
        _put(f.value_lengths, rows, again.value_lengths),
        np.union1d(f.with_headers[~redone[f.with_headers]], rows[again.with_headers]),
        again.bad,
    )
    return merged, starts, ends


def _put(column: npt.NDArray[_Scalar], rows: _I64, fixed: npt.NDArray[_Scalar]) -> npt.NDArray[_Scalar]:
    out = column.copy()
    out[rows] = fixed
    return out
