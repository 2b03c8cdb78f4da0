"""The log cleaner's key map (Kafka's OffsetMap / SkimpyOffsetMap), built and probed with numpy.

The cleaner reads the dirty part of a log once to learn the latest offset of every key, then
copies the log keeping a record only when no later record of its key exists. The map holds no key
bytes: a key is its 128-bit MurmurHash3 (``murmur3_x64_128``), and the map is one ``(n, 3)``
uint64 array of rows (high word, low word, offset) sorted by hash: 24 bytes a key, as Kafka's map
with MD5 (16-byte digest + 8-byte offset), plus a directory of 2-4 bytes a key (below). Kafka's
map, an open-addressing table filled to ``log.cleaner.io.buffer.load.factor`` (0.9), spends
24 / 0.9 = 26.7 bytes a key; this one 26.1-27.4 (measured below).

Hashes: an ``(n, 2)`` uint64 array, column 0 the low 64 bits (h1 of the reference code) and
column 1 the high 64 bits (h2) of ``mmh3.hash128(key, seed, x64arch=True, signed=False)``; the
map's rows are in the order of that 128-bit integer.

Why 128 bits: the map trusts the hash, so two keys with one hash would lose a record. With n
keys, P(any collision) ~ n^2 / 2^129: ~1.5e-25 for 10 M keys, Kafka's argument for its 16-byte
MD5 digest. 64 bits would give ~3e-6 for 10 M keys, per clean.

Why numpy: the map is built and probed a chunk of records at a time (the cleaner reads 4 MiB,
~40,000 records of 100 B), with a few dozen numpy calls per chunk instead of Python work per
record, and it keeps no Python object per key. ``.venv/bin/python -m perf offsetmap`` (10 M
records of 100 B, keys ``key-%08d``, in 4 MB chunks; 2 shared cores, numpy 2.4, mmh3 5.3;
medians and ranges of 3 runs) against a ``dict[bytes, int]`` filled and probed record by record:
10 M distinct keys, build + probe 2.3 s vs 11.2 s, 5.1x (4.3-5.4; a second run 5.1x, 4.2-5.1);
1 M keys of 10 records each, 2.0 s vs 14.6 s, 6.7x (5.6-9.0; 7.4x, 5.2-8.1). Memory: 27.4 and
26.1 B a key vs 106.6 and 114.9 for the dict (``sys.getsizeof`` of the dict, its keys and
values); the build's peak is 67-69 B a record (``tracemalloc``: pending rows and the sort). The
build's time swings with the system time this VM spends faulting in fresh memory (0.2-1.2 s of a
0.7-2.5 s build over the runs so far); the benchmark reports it apart.

Hashing: MurmurHash3_x64_128 of every key at once. Its body mixes the 16-byte blocks of a key in
sequence, so the loop runs over block numbers, each step over every key that has that block: the
keys are read as unaligned little-endian uint64 pairs straight from the buffer (a strided view,
one gather a block), and keys are ordered by their number of blocks (when lengths differ) so that
the keys with a block ``j`` are a prefix and every step works in place on slices. The tail
(0-15 bytes) is the next two words with the bytes past the key shifted out; a zero tail word
leaves the state as it is, as the reference code's "no tail" branch does. Keys longer than
``LONG_KEY_BYTES`` (8 blocks) go to ``mmh3``, one call each (~0.35 us a key from here): in bulk
numpy would still win up to ~300 bytes (~17 ns a key and block), but each block is one more
sequential step of ~20 numpy calls for the batch however few keys have it, so a few long keys
among short ones would cost more than their C calls; 8 steps bound that (a 1 MiB key would be
65,536). The benchmark's 12-byte keys hash in ~26-35 ns each, ~4x faster than ``mmh3.hash128`` called per
key (~130 ns); keys packed end to end, 8-16 bytes: 12-25 ns.

Sorting 128-bit keys: one ``np.sort`` of uint64 (SIMD, ~10x faster than ``np.argsort`` of 10 M
here) of the high words carrying each row's index in their low ``log2(n)`` bits gives a stable
order by the remaining high bits; rows of different keys that tie on those bits (tens among 10 M
random keys) are put in order by a ``np.lexsort`` of just those runs.

Probing: ``np.searchsorted`` over a 10 M-key map costs ~1.3 us a random probe (a cache miss at
every level). The directory holds, for each value of the top ``log2(n / 4)`` bits of the high
word, where its rows start, so a probe reads the directory, then bisects its bucket (2-4 rows on
average, all probes at once, branch-free: ``np.where`` costs ~10 arithmetic operations), ~100 ns
a probe including the misses. Keys that share a high word (rare, but possible) are told apart by
a bisection on (high, low) within the bucket.

Building (``OffsetMapBuilder``): chunks are appended while the records held so far, counted with
their repeats, cannot exceed ``max_keys`` distinct keys; past that, they are compacted (sorted by
key, the last record of each key kept, merged into the sorted rows) and, if the chunk may still
overflow, it is probed to take its longest prefix that keeps ``max_keys`` distinct keys. Memory:
at most ``max_keys`` rows plus one chunk, and the sort's temporaries.
"""

from __future__ import annotations

from typing import Final

import mmh3
import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
_INTP = npt.NDArray[np.intp]
_BOOL = npt.NDArray[np.bool_]

BYTES_PER_KEY: Final = 24  # 16-byte hash + 8-byte offset: SkimpyOffsetMap's entry with MD5
LONG_KEY_BYTES: Final = 128  # longer keys are hashed by mmh3, one call each (module docstring)
_BATCH: Final = 1 << 15  # keys hashed per pass: the temporaries (8 B a key each) stay in cache
_KEYS_PER_BUCKET: Final = 4  # of the map's directory: 2-4 keys a bucket, 2-4 B a key
_JAVA_INT_MAX: Final = 2**31 - 1  # Kafka's per-thread map is one ByteBuffer
_LOW64: Final = (1 << 64) - 1

# MurmurHash3_x64_128's constants (Austin Appleby's reference MurmurHash3.cpp).
_C1: Final = np.uint64(0x87C37B91114253D5)
_C2: Final = np.uint64(0x4CF5AD432745937F)
_N1: Final = np.uint64(0x52DCE729)
_N2: Final = np.uint64(0x38495AB5)
_F1: Final = np.uint64(0xFF51AFD7ED558CCD)
_F2: Final = np.uint64(0xC4CEB9FE1A85EC53)
_FIVE: Final = np.uint64(5)


def max_keys_for(dedupe_buffer_bytes: int, load_factor: float, threads: int) -> int:
    """How many keys a cleaner's map may hold, by Kafka's rule: ``log.cleaner.dedupe.buffer.size``
    is shared by the ``log.cleaner.threads`` (each share capped at 2 GiB - 1, one Java buffer),
    a share holds ``share // 24`` entries, and a map is full at ``log.cleaner.io.buffer.load.factor``
    of them (LogCleaner's SkimpyOffsetMap and Cleaner's ``maxDesiredMapSize``). Kafka's defaults,
    128 MiB, 0.9 and 1 thread, give 5,033,164 keys."""
    if threads < 1:
        raise ValueError(f"threads must be at least 1, not {threads}")
    if not 0.0 <= load_factor <= 1.0 or dedupe_buffer_bytes < 0:
        raise ValueError(f"dedupe buffer {dedupe_buffer_bytes} B and load factor {load_factor} out of range")
    slots = min(dedupe_buffer_bytes // threads, _JAVA_INT_MAX) // BYTES_PER_KEY
    return int(slots * load_factor)


def murmur3_x64_128(
    data: npt.NDArray[np.uint8], starts: npt.ArrayLike, lengths: npt.ArrayLike, seed: int = 0
) -> U64:
    """MurmurHash3_x64_128 of every key ``data[starts[i] : starts[i] + lengths[i]]``, as an
    ``(n, 2)`` uint64 array: column 0 the low 64 bits and column 1 the high 64 bits of
    ``mmh3.hash128(key, seed, x64arch=True, signed=False)``. Vectorised (module docstring)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if data.ndim != 1 or data.dtype != np.uint8 or starts.ndim != 1 or starts.shape != lengths.shape:
        raise ValueError("murmur3_x64_128 takes a 1-D uint8 buffer and 1-D starts and lengths of one size")
    if not 0 <= seed < 1 << 32:
        raise ValueError(f"seed must fit in 32 bits, not {seed}")
    columns = np.empty((2, starts.size), dtype=np.uint64)  # returned transposed: each column contiguous
    out: U64 = columns.T
    if not starts.size:
        return out
    if starts.min() < 0 or lengths.min() < 0 or int((starts + lengths).max()) > data.size:
        raise ValueError("a key lies outside the buffer")
    long = lengths > LONG_KEY_BYTES
    if long.any():  # mmh3 4.x hashes bytes only
        view = data.data
        hashes = [
            mmh3.hash128(bytes(view[s : s + n]), seed, x64arch=True, signed=False)
            for s, n in zip(starts[long].tolist(), lengths[long].tolist(), strict=True)
        ]
        columns[0, long] = [h & _LOW64 for h in hashes]
        columns[1, long] = [h >> 64 for h in hashes]
        rows = np.flatnonzero(~long)
        if not rows.size:
            return out
        h1, h2 = np.empty(rows.size, dtype=np.uint64), np.empty(rows.size, dtype=np.uint64)
        _hash_short(data, starts[rows], lengths[rows], seed, h1, h2)
        columns[0, rows], columns[1, rows] = h1, h2
    else:
        _hash_short(data, starts, lengths, seed, columns[0], columns[1])
    return out


def _hash_short(data: npt.NDArray[np.uint8], starts: I64, lengths: I64, seed: int, h1: U64, h2: U64) -> None:
    """Hashes of keys of at most ``LONG_KEY_BYTES`` into ``h1`` and ``h2``, a batch at a time."""
    blocks = _blocks(np.ascontiguousarray(data), int((starts + (lengths & ~15) + 16).max()))
    for s in range(0, starts.size, _BATCH):
        e = s + _BATCH
        _hash_batch(blocks, starts[s:e], lengths[s:e], seed, h1[s:e], h2[s:e])


def _blocks(data: npt.NDArray[np.uint8], need: int) -> U64:
    """Every 16 bytes of ``data`` by byte position as two little-endian uint64 (an ``(n, 2)``
    view), zero-padded to ``need`` bytes: a key's tail words may read 16 bytes past it."""
    if need > data.size:
        data = np.concatenate((data, np.zeros(need - data.size, dtype=np.uint8)))
    blocks: U64 = np.lib.stride_tricks.sliding_window_view(data, 16).view(np.dtype("<u8"))
    return blocks


def _rotl(x: U64, r: int, tmp: U64) -> None:
    np.right_shift(x, np.uint64(64 - r), out=tmp)
    np.left_shift(x, np.uint64(r), out=x)
    x |= tmp


def _mix_k1(k: U64, tmp: U64) -> None:
    k *= _C1
    _rotl(k, 31, tmp)
    k *= _C2


def _mix_k2(k: U64, tmp: U64) -> None:
    k *= _C2
    _rotl(k, 33, tmp)
    k *= _C1


def _fmix64(k: U64, tmp: U64) -> None:
    for factor in (_F1, _F2):
        k ^= np.right_shift(k, np.uint64(33), out=tmp)
        k *= factor
    k ^= np.right_shift(k, np.uint64(33), out=tmp)


def _low_bytes(k: U64, count: npt.NDArray[np.int64] | np.int64) -> None:
    """Keep the low ``count`` (0-8) bytes of each word: shifts of 64 give 0 in numpy."""
    shift = np.asarray(64 - 8 * count).astype(np.uint64)
    k <<= shift
    k >>= shift


def _hash_batch(data: U64, starts: I64, lengths: I64, seed: int, h1: U64, h2: U64) -> None:
    """The reference code's state (h1, h2) of each key, at most ``LONG_KEY_BYTES`` long, into
    ``h1`` and ``h2``."""
    n = starts.size
    blocks = lengths >> 4
    most, least = int(blocks.max()), int(blocks.min())
    order = None
    if most != least:  # keys with a block j first, so that each step works on a prefix
        order = np.argsort(blocks.astype(np.int16), kind="stable")
        live = n - np.searchsorted(blocks[order], np.arange(most), side="right")
        order = order[::-1]
        starts, lengths = starts[order], lengths[order]
    h1.fill(seed)
    h2.fill(seed)
    tmp = np.empty(n, dtype=np.uint64)
    for j in range(most):
        m = n if j < least else int(live[j])
        x1, x2, t = h1[:m], h2[:m], tmp[:m]
        k1, k2 = data[starts[:m] + 16 * j].T.copy()  # one gather, then each word contiguous
        _mix_k1(k1, t)
        x1 ^= k1
        _rotl(x1, 27, t)
        x1 += x2
        x1 *= _FIVE
        x1 += _N1
        _mix_k2(k2, t)
        x2 ^= k2
        _rotl(x2, 31, t)
        x2 += x1
        x2 *= _FIVE
        x2 += _N2
    tails = lengths & 15
    at = starts + (lengths - tails)
    low, high = tails.min(), tails.max()
    tail = low if low == high else tails  # one length: the masks are scalars
    if high > 8:
        k1, k2 = data[at].T.copy()
        _low_bytes(k2, np.maximum(tail - 8, 0))
        _mix_k2(k2, tmp)
        h2 ^= k2
    else:
        k1 = data[at, 0]
    _low_bytes(k1, np.minimum(tail, 8))
    _mix_k1(k1, tmp)
    h1 ^= k1
    size = lengths.view(np.uint64)
    h1 ^= size
    h2 ^= size
    h1 += h2
    h2 += h1
    _fmix64(h1, tmp)
    _fmix64(h2, tmp)
    h1 += h2
    h2 += h1
    if order is not None:
        h1[order], h2[order] = h1.copy(), h2.copy()


def _rough_order(hi: U64) -> tuple[_INTP, U64]:
    """An order of the rows by the high bits of ``hi`` (stable; the low ``log2(n)`` bits are
    ignored) and those bits in that order: one SIMD sort of the words carrying their row."""
    bits = max(hi.size - 1, 1).bit_length()
    low = np.uint64((1 << bits) - 1)
    packed = hi & ~low
    packed |= np.arange(hi.size, dtype=np.uint64)
    packed.sort()
    order: _INTP = (packed & low).view(np.intp)
    packed &= ~low
    return order, packed


def _key_order(rows: U64) -> tuple[_INTP, U64]:
    """The stable order of ``rows`` (columns: high word, low word, ...) by key, and the rows in
    that order."""
    order, top = _rough_order(rows[:, 0])
    out = np.take(rows, order, axis=0)  # ~3x faster than rows[order] (numpy 2.4)
    tie = top[1:] == top[:-1]
    mixed = tie & _differs(out[:, 0], out[:, 1])
    if mixed.any():  # runs of equal high bits holding several keys: order those rows exactly
        tops = np.unique(top[1:][mixed])
        starts = np.searchsorted(top, tops, side="left")
        ends = np.searchsorted(top, tops, side="right")
        at = np.concatenate([np.arange(s, e) for s, e in zip(starts.tolist(), ends.tolist(), strict=True)])
        exact = np.lexsort((at, out[at, 1], out[at, 0]))
        order[at], out[at] = order[at][exact], out[at][exact]
    return order, out


def _differs(s_hi: U64, s_lo: U64) -> _BOOL:
    """Row i+1 holds another key than row i (rows in key order)."""
    out: _BOOL = (s_hi[1:] != s_hi[:-1]) | (s_lo[1:] != s_lo[:-1])
    return out


def _lower_bound(hi: U64, q_hi: U64, first: I64, end: I64, steps: int) -> I64:
    """The first position in ``[first, end)`` whose high word is not below the probe's (or
    ``end``), by a bisection of all probes at once; ``steps`` bisects ranges of up to
    ``2**steps - 1`` entries."""
    last = hi.size - 1
    pos, count = first.copy(), end - first
    for _ in range(steps):  # std::lower_bound, branch-free: np.where costs ~10 arithmetic ops
        half = count >> 1
        below = hi[np.minimum(pos + half, last)] < q_hi
        below &= count > 0  # a row done stays (past the last row it would see a smaller word)
        step = below.astype(np.int64)
        pos += step * (half + 1)
        count = half - step * (1 - (count & 1))
    return pos


def _check_hashes(hashes: U64) -> None:
    if hashes.ndim != 2 or hashes.shape[1] != 2 or hashes.dtype != np.uint64:
        raise ValueError(f"hashes must be an (n, 2) uint64 array, not {hashes.dtype} {hashes.shape}")


class _KeyIndex:
    """Rows (hi, lo, offset) sorted by key without repeats, and a directory of where the rows of
    each value of the high words' top bits start, so that a probe bisects a handful of rows."""

    __slots__ = ("_buckets", "_shift", "_steps", "rows")

    def __init__(self, rows: U64) -> None:
        self.rows = rows
        bits = (rows.shape[0] // _KEYS_PER_BUCKET).bit_length()
        self._shift = np.uint64(64 - bits)  # numpy shifts by 64 give 0: one bucket
        counts = np.bincount((rows[:, 0] >> self._shift).view(np.int64), minlength=1 << bits)
        self._buckets = np.zeros(counts.size + 1, dtype=np.int64)
        np.cumsum(counts, out=self._buckets[1:])
        self._steps = int(counts.max(initial=0)).bit_length()  # to bisect the largest bucket

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self._buckets.nbytes)

    def find(self, q_hi: U64, q_lo: U64) -> tuple[I64, _BOOL]:
        """Where each key is or would go among the rows, and whether it is there."""
        if not self.rows.shape[0]:
            return np.zeros(q_hi.size, dtype=np.int64), np.zeros(q_hi.size, dtype=np.bool_)
        hi, lo, last = self.rows[:, 0], self.rows[:, 1], self.rows.shape[0] - 1
        bucket = (q_hi >> self._shift).view(np.int64)
        end = self._buckets[bucket + 1]
        pos = _lower_bound(hi, q_hi, self._buckets[bucket], end, self._steps)
        at = np.minimum(pos, last)
        same = hi[at] == q_hi
        ahead = same & (lo[at] < q_lo)
        if ahead.any():  # keys sharing the probe's high word (rare): bisect on (hi, lo)
            i = np.flatnonzero(ahead)
            first, stop, t_hi, t_lo = pos[i] + 1, end[i], q_hi[i], q_lo[i]
            while (live := first < stop).any():
                mid = (first + stop) >> 1
                m = np.minimum(mid, last)
                below = live & ((hi[m] < t_hi) | ((hi[m] == t_hi) & (lo[m] < t_lo)))
                first = np.where(below, mid + 1, first)
                stop = np.where(live & ~below, mid, stop)
            pos[i] = first
            at = np.minimum(pos, last)
            same = hi[at] == q_hi
        found: _BOOL = same & (lo[at] == q_lo)
        return pos, found


class OffsetMap:
    """Latest offset of each key hash: rows of (high word, low word, offset) sorted by hash, 24 B
    a key, and a directory of 2-4 B a key. Made by `OffsetMapBuilder.build`; read-only."""

    __slots__ = ("_index", "_sorted_offsets", "max_offset")

    def __init__(self, index: _KeyIndex) -> None:
        self._index = index
        self._sorted_offsets: I64 | None = None
        index.rows.flags.writeable = False
        offsets = index.rows[:, 2].view(np.int64)
        self.max_offset = int(offsets.max()) if offsets.size else -1  # the largest offset held, or -1

    def __len__(self) -> int:
        return int(self._index.rows.shape[0])

    @property
    def nbytes(self) -> int:
        return self._index.nbytes

    def latest(self, hashes: U64) -> I64:
        """The offset held for each ``(n, 2)`` hash, -1 where the map has none."""
        _check_hashes(hashes)
        if not hashes.size or not len(self):
            return np.full(hashes.shape[0], -1, dtype=np.int64)
        pos, found = self._index.find(hashes[:, 1].copy(), hashes[:, 0].copy())
        offsets = self._index.rows[np.minimum(pos, len(self) - 1), 2].view(np.int64)
        return np.where(found, offsets, -1)

    def holds(self, offsets: I64) -> npt.NDArray[np.bool_]:
        """Which of ``offsets`` the map holds as some key's latest offset. For a record of the
        part the map was built from this says "no later record of its key" without hashing the
        key (the log cleaner's second pass): one ``searchsorted`` over the map's offsets, sorted
        once (8 B a key, on first use); probes in log order read them in order."""
        if self._sorted_offsets is None:
            self._sorted_offsets = np.sort(self._index.rows[:, 2].view(np.int64))
        held = self._sorted_offsets
        if not held.size:
            return np.zeros(offsets.shape[0], dtype=np.bool_)
        at = np.minimum(np.searchsorted(held, offsets), held.size - 1)
        return np.asarray(held[at] == offsets, dtype=np.bool_)


class OffsetMapBuilder:
    """Builds an `OffsetMap` of at most ``max_keys`` keys from records fed in log order."""

    def __init__(self, max_keys: int) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self.max_keys = max_keys
        self._index = _KeyIndex(np.zeros((0, 3), dtype=np.uint64))  # what is compacted
        # Rows (hi, lo, offset) of the records not compacted yet: one buffer grown in place
        # (realloc moves the pages instead of copying and faulting them in again).
        self._pending = np.empty((0, 3), dtype=np.uint64)
        self._pending_rows = 0
        self._last_offset = -1
        self._built = False

    @property
    def distinct(self) -> int:
        """Distinct keys accepted so far (compacts what is pending)."""
        self._compact()
        return int(self._index.rows.shape[0])

    @property
    def last_offset(self) -> int:
        """The offset of the last record accepted, or -1."""
        return self._last_offset

    def add(self, hashes: U64, offsets: I64) -> int:
        """Take the records of a chunk (``(n, 2)`` hashes, offsets increasing across calls): all
        of them, or the longest prefix that keeps at most ``max_keys`` distinct keys. Returns how
        many leading records were taken."""
        if self._built:
            raise RuntimeError("add() after build()")
        _check_hashes(hashes)
        n = offsets.size
        if offsets.shape != (hashes.shape[0],):
            raise ValueError(f"{n} offsets for {hashes.shape[0]} hashes")
        if not n:
            return 0
        if offsets[0] <= self._last_offset or (offsets[1:] <= offsets[:-1]).any():
            raise ValueError(f"offsets must increase (after {self._last_offset})")
        compacted = self._index.rows.shape[0]
        if compacted + self._pending_rows + n > self.max_keys:  # may be too many keys: count them
            self._compact()
            compacted = self._index.rows.shape[0]
            if compacted + n > self.max_keys:
                n = self._fitting_prefix(hashes, self.max_keys - compacted)
        if n:
            start, end = self._pending_rows, self._pending_rows + n
            if end > self._pending.shape[0]:
                capacity = max(end, min(2 * self._pending.shape[0], self.max_keys))
                self._pending.resize((capacity, 3), refcheck=False)  # no views of it outlive a call
            rows = self._pending[start:end]
            rows[:, 0], rows[:, 1], rows[:, 2] = hashes[:n, 1], hashes[:n, 0], offsets[:n]
            self._pending_rows = end
            self._last_offset = int(offsets[n - 1])
        return n

    def build(self) -> OffsetMap:
        """The map of everything accepted; the builder takes no more records."""
        self._compact()
        self._built, self._pending = True, np.empty((0, 3), dtype=np.uint64)
        return OffsetMap(self._index)

    def _fitting_prefix(self, hashes: U64, room: int) -> int:
        """How many leading records of the chunk to take: as many as keep the keys among them
        that the (compacted) map lacks to at most ``room``."""
        order, keys = _key_order(hashes[:, ::-1])
        first = np.ones(order.size, dtype=np.bool_)
        first[1:] = _differs(keys[:, 0], keys[:, 1])
        _, found = self._index.find(keys[first, 0], keys[first, 1])
        fresh = np.zeros(order.size, dtype=np.int64)
        fresh[order[first][~found]] = 1  # each new key counted at its first record
        return int(np.searchsorted(np.cumsum(fresh), room, side="right"))

    def _compact(self) -> None:
        """Merge the pending records into the sorted rows: the last record of each key wins."""
        if not self._pending_rows:
            return
        _, rows = _key_order(self._pending[: self._pending_rows])
        self._pending_rows = 0
        last = np.ones(rows.shape[0], dtype=np.bool_)
        last[:-1] = _differs(rows[:, 0], rows[:, 1])
        if not last.all():
            rows = rows[last]
        old = self._index.rows
        if not old.shape[0]:
            self._index = _KeyIndex(rows)
            return
        pos, found = self._index.find(rows[:, 0].copy(), rows[:, 1].copy())
        old[pos[found], 2] = rows[found, 2]
        new = np.flatnonzero(~found)
        if new.size:
            at = pos[new] + np.arange(new.size)  # where the new keys land in the merged rows
            kept = np.ones(old.shape[0] + new.size, dtype=np.bool_)
            kept[at] = False
            merged = np.empty((kept.size, 3), dtype=np.uint64)
            merged[at] = rows[new]
            merged[kept] = old
            self._index = _KeyIndex(merged)
