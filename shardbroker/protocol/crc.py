"""CRC-32C (Castagnoli), the checksum of Kafka record batches (magic v2).

Implementations with the same answers:

- :func:`crc32c` is the hot path: the ``crc32c`` package, which uses the CPU's CRC32 instruction
  (SSE4.2 / ARMv8).
- :func:`crc32c_numpy` (one long buffer, interleaved lanes), :func:`crc32c_ranges_numpy` (many
  short ranges of one buffer, no copy) and :func:`crc32c_many_numpy` (many short buffers) are the
  numpy fallbacks for hosts where the package cannot be built, and independent oracles in tests.
- :func:`crc32c_python` is the byte-at-a-time reference (~10 MB/s); the numpy code only uses it
  for tails under 128 bytes.

Hardware is 6-25x faster than the numpy code and is what the broker uses (``perf/bench_crc.py``;
docs/notes/crc32c.md, and ../shared/notes/crc32c-numpy.md).

How the numpy code works (the math, so the tables make sense). Let ``G`` be the CRC register
update over one zero byte, ``G(x) = T[x & 0xFF] ^ (x >> 8)``; it is linear over GF(2), and feeding
a little-endian 32-bit word ``w`` into register ``s`` gives ``G^4(s ^ w)``. So a message of ``R``
rows of ``L`` words can be run as ``L`` independent lanes, lane ``j`` taking word ``j`` of every
row: ``s_j <- M(s_j) ^ row[j]`` with ``M = G^(4L)``, one vectorised step per row. The ``L`` final
lane states, written out as ``4L`` bytes, have the same raw CRC as the rows they replace (lane
``j``'s contribution is weighted by ``G^(4(L-j))`` either way), so we shrink the message level by
level (L = 16384, 4096, ..., 16) and finish the last < 128 bytes byte by byte. ``M`` is applied
as two 65,536-entry tables (``M(s) = A[s & 0xFFFF] ^ B[s >> 16]``) built by squaring ``G``.
The standard 0xFFFFFFFF initial value is folded into the first word, so no length fix-up.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final, TypeAlias

import crc32c as _crc32c_hw
import numpy as np
import numpy.typing as npt

__all__ = [
    "POLY",
    "Buffer",
    "crc32c",
    "crc32c_many_numpy",
    "crc32c_numpy",
    "crc32c_python",
    "crc32c_ranges_numpy",
    "hardware_based",
]

Buffer: TypeAlias = bytes | bytearray | memoryview
U32Array: TypeAlias = npt.NDArray[np.uint32]

#: Castagnoli polynomial, bit-reflected (RFC 3720 appendix B.4; Kafka's Crc32C).
POLY: Final = 0x82F63B78
_MASK: Final = 0xFFFFFFFF

#: True when the ``crc32c`` package found a CPU instruction (it falls back to software otherwise).
hardware_based: Final[bool] = bool(_crc32c_hw.hardware_based)

_hw = _crc32c_hw.crc32c


def crc32c(data: Buffer | npt.NDArray[np.uint8], value: int = 0) -> int:
    """CRC-32C of ``data``, continuing from a previous result ``value`` (0 to start).

    ``crc32c(b, crc32c(a)) == crc32c(a + b)``.
    """
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).data
    return int(_hw(data, value))


def _byte_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ POLY if c & 1 else c >> 1
        table.append(c)
    return table


_T: Final[list[int]] = _byte_table()


def _raw_bytes(s: int, data: Buffer) -> int:
    """Run the raw register ``s`` over ``data`` (no init, no final xor), byte by byte."""
    t = _T
    for b in bytes(data):
        s = t[(s ^ b) & 0xFF] ^ (s >> 8)
    return s


def crc32c_python(data: Buffer, value: int = 0) -> int:
    """Pure Python CRC-32C (~10 MB/s): the reference the others are tested against."""
    return _raw_bytes(value ^ _MASK, data) ^ _MASK


# ---- linear-map helpers: a map is given by its images of the 32 unit vectors (columns) ----


def _apply(cols: list[int], x: int) -> int:
    out = 0
    i = 0
    while x:
        if x & 1:
            out ^= cols[i]
        x >>= 1
        i += 1
    return out


def _compose(p: list[int], q: list[int]) -> list[int]:
    """Columns of ``p o q``."""
    return [_apply(p, c) for c in q]


@functools.cache
def _zeros_map(nbytes: int) -> tuple[int, ...]:
    """Columns of ``G^nbytes`` (advance the register over ``nbytes`` zero bytes)."""
    g = [_T[(1 << i) & 0xFF] ^ ((1 << i) >> 8) for i in range(32)]
    result = [1 << i for i in range(32)]  # identity
    n = nbytes
    while n:
        if n & 1:
            result = _compose(g, result)
        g = _compose(g, g)
        n >>= 1
    return tuple(result)


def _table16(cols: Sequence[int]) -> U32Array:
    """65,536-entry table of the map restricted to 16 input bits (doubling construction)."""
    table = np.zeros(1 << 16, dtype=np.uint32)
    for i in range(16):
        half = 1 << i
        np.bitwise_xor(table[:half], np.uint32(cols[i]), out=table[half : 2 * half])
    return table


@functools.cache
def _split_tables(nbytes: int) -> tuple[U32Array, U32Array]:
    """``(A, B)`` with ``G^nbytes(s) == A[s & 0xFFFF] ^ B[s >> 16]``."""
    cols = _zeros_map(nbytes)
    return _table16(cols[:16]), _table16(cols[16:])


#: Lane counts, largest first; each level shrinks the message below 8 * 4 * lanes bytes.
_LEVELS: Final = (16384, 4096, 1024, 256, 64, 16)


def _as_u8(data: Buffer | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def _lanes(words: U32Array, lanes: int) -> U32Array:
    """Fold ``words`` (a whole number of rows of ``lanes`` words) into ``lanes`` lane states."""
    rows = words.reshape(-1, lanes)
    a, b = _split_tables(4 * lanes)
    s: U32Array = rows[0].copy()
    lo = np.empty(lanes, dtype=np.intp)
    hi = np.empty(lanes, dtype=np.intp)
    ta = np.empty(lanes, dtype=np.uint32)
    tb = np.empty(lanes, dtype=np.uint32)
    for r in range(1, rows.shape[0]):
        np.bitwise_and(s, 0xFFFF, out=lo, casting="unsafe")
        np.right_shift(s, 16, out=hi, casting="unsafe")
        np.take(a, lo, out=ta, mode="wrap")
        np.take(b, hi, out=tb, mode="wrap")
        np.bitwise_xor(ta, tb, out=s)
        np.bitwise_xor(s, rows[r], out=s)
    return s


def crc32c_numpy(data: Buffer | npt.NDArray[np.uint8], value: int = 0) -> int:
    """CRC-32C computed with numpy (0.5-1 GB/s on large buffers; see the module docstring)."""
    u8 = _as_u8(data)
    n = u8.size
    if n < 4 * 2 * _LEVELS[-1]:
        return crc32c_python(u8.tobytes(), value)
    head_len = n - n % 4
    # The only full copy: native words (little-endian on the wire) with the init folded into word 0.
    words = u8[:head_len].view("<u4").astype(np.uint32)
    words[0] ^= np.uint32((value ^ _MASK) & _MASK)
    tail = u8[head_len:].tobytes()
    for lanes in _LEVELS:
        rows = words.size // lanes
        if rows < 2:
            continue
        body = rows * lanes
        states = _lanes(words[:body], lanes)
        words = np.concatenate((states, words[body:])) if body < words.size else states
    s = _raw_bytes(0, words.astype("<u4", copy=False).tobytes() + tail)
    return s ^ _MASK


# ---- many small buffers ----


def _g_inverse(y: int) -> int:
    """``G^-1``: the top byte of ``T[i]`` is distinct for every ``i``, so it names the index."""
    top = y >> 24
    i = _T_TOP_INV[top]
    return (((y ^ _T[i]) << 8) & _MASK) | i


_T_TOP_INV: Final[list[int]] = [0] * 256
for _i, _v in enumerate(_T):
    _T_TOP_INV[_v >> 24] = _i


def _padded_inits() -> tuple[int, int, int, int]:
    """Register values that become 0xFFFFFFFF after 0, 1, 2, 3 zero bytes of left padding."""
    out = [_MASK]
    for _ in range(3):
        out.append(_g_inverse(out[-1]))
    return (out[0], out[1], out[2], out[3])


_PAD_INITS: Final = _padded_inits()
#: Masks that zero the 0-3 leading (padding) bytes of a buffer's first little-endian word.
_FIRST_WORD_MASKS: Final = (0xFFFFFFFF, 0xFFFFFF00, 0xFFFF0000, 0xFF000000)


def _any_offset_words(u8: npt.NDArray[np.uint8]) -> U32Array:
    """``w[i]`` = the little-endian uint32 at byte ``i`` of ``u8`` (an overlapping, unaligned view)."""
    return np.ndarray(shape=(max(u8.size - 3, 0),), dtype="<u4", buffer=u8, strides=(1,))


def crc32c_ranges_numpy(
    buf: Buffer | npt.NDArray[np.uint8], starts: npt.ArrayLike, ends: npt.ArrayLike
) -> U32Array:
    """CRC-32C of ``buf[starts[i]:ends[i]]`` for every ``i``, without copying the ranges.

    The short-buffer method (see :func:`crc32c_many_numpy`): ranges are right-aligned on whole
    32-bit words and sorted longest first, so the live ranges at each word step are a prefix;
    each range is read as if left-padded with 0-3 zero bytes (the bytes before it, masked off)
    and its register starts at the value that becomes 0xFFFFFFFF after that padding. One step
    costs ~8 numpy calls over the live ranges, and there are (longest range / 4) steps, so this
    suits many short ranges; use :func:`crc32c_numpy` on long ones.
    """
    u8 = _as_u8(buf)
    s = np.asarray(starts, dtype=np.int64).reshape(-1)
    e = np.asarray(ends, dtype=np.int64).reshape(-1)
    count = s.size
    if count == 0:
        return np.zeros(0, dtype=np.uint32)
    lengths = e - s
    if (lengths < 0).any() or (s < 0).any() or (e > u8.size).any():
        raise ValueError("ranges must lie inside the buffer")
    pads = (-lengths) & 3
    first = s - pads  # byte where each range's first (padded) word begins
    if (first < 0).any():
        u8 = np.concatenate((np.zeros(4, dtype=np.uint8), u8))
        first = first + 4
    nwords = (lengths + pads) >> 2
    order = np.argsort(-nwords, kind="stable")
    nw_sorted = nwords[order]
    maxw = int(nw_sorted[0])
    if maxw == 0:
        return np.zeros(count, dtype=np.uint32)
    words = _any_offset_words(u8)
    # At step t (0..maxw-1) range i reads its word t - (maxw - nw_i), at byte pos_i + 4t.
    base = first[order] + 4 * (nw_sorted - maxw)
    pads_sorted = pads[order]
    mask = np.array(_FIRST_WORD_MASKS, dtype=np.uint32)[pads_sorted]
    state = np.array(_PAD_INITS, dtype=np.uint32)[pads_sorted]
    live = np.searchsorted(-nw_sorted, np.arange(-maxw, 0, dtype=np.int64), side="right").tolist()
    a, b = _split_tables(4)
    lo = np.empty(count, dtype=np.intp)
    hi = np.empty(count, dtype=np.intp)
    ta = np.empty(count, dtype=np.uint32)
    tb = np.empty(count, dtype=np.uint32)
    pos = np.empty(count, dtype=np.intp)
    prev = 0
    for t in range(maxw):
        c = live[t]
        np.add(base[:c], 4 * t, out=pos[:c])
        x = words[pos[:c]]  # fancy indexing: np.take would copy the strided view first
        if c > prev:  # ranges starting now: zero their padding bytes
            x[prev:] &= mask[prev:c]
            prev = c
        x ^= state[:c]
        np.bitwise_and(x, 0xFFFF, out=lo[:c], casting="unsafe")
        np.right_shift(x, 16, out=hi[:c], casting="unsafe")
        np.take(a, lo[:c], out=ta[:c], mode="wrap")
        np.take(b, hi[:c], out=tb[:c], mode="wrap")
        np.bitwise_xor(ta[:c], tb[:c], out=state[:c])
    out = np.empty(count, dtype=np.uint32)
    out[order] = state ^ np.uint32(_MASK)
    # Ranges of length 0 were never live: 0xFFFFFFFF ^ 0xFFFFFFFF = 0, the CRC of nothing.
    return out


def crc32c_many_numpy(buffers: Sequence[Buffer]) -> U32Array:
    """CRC-32C of each buffer, all at once with numpy; returns a ``uint32`` array.

    Joins the buffers once (one copy; padding them individually cost ~5x more here, in page
    faults on the larger allocation) and runs :func:`crc32c_ranges_numpy` over the pieces.
    """
    if not buffers:
        return np.zeros(0, dtype=np.uint32)
    lengths = np.fromiter((len(memoryview(b).cast("B")) for b in buffers), dtype=np.int64, count=len(buffers))
    ends = np.cumsum(lengths) + 4
    joined = b"".join((b"\0\0\0\0", *buffers))  # 4 leading bytes: no range starts before byte 3
    return crc32c_ranges_numpy(joined, ends - lengths, ends)
