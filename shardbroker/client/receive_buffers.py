"""Reused receive buffers for large answers (the mirror's Fetch): no fresh pages per answer.

A Fetch answer of a few MiB read into a new ``bytearray`` costs a page fault per 4 KiB page on
this VM (first touch of fresh memory), about as much as everything else the mirror does with the
bytes. :class:`ReceiveBuffers` keeps up to ``keep`` buffers and hands out one that nothing
points into any more: the batches cut from an answer are memoryviews of its buffer, and CPython
refuses to resize a bytearray while a memoryview of it is alive, so a buffer is reused only once
the last batch cut from it is gone (acknowledged by the target and dropped), never earlier.
Not thread-safe: one connection's reader owns it.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ReceiveBuffers"]

#: buffers grow in steps of this much (answers of one Fetch size differ by a few KB)
_STEP: Final = 1024 * 1024


def _in_use(buf: bytearray) -> bool:
    """Whether a memoryview of ``buf`` is alive (a bytearray with exports cannot be resized)."""
    try:
        buf.append(0)
    except BufferError:
        return True
    del buf[-1]
    return False


class ReceiveBuffers:
    """Up to ``keep`` buffers, reused once no memoryview of them is alive."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._buffers: list[bytearray] = []

    def take(self, n: int) -> memoryview:
        """A writable view of ``n`` bytes in a buffer nothing else points into."""
        for i, buf in enumerate(self._buffers):
            if not _in_use(buf):
                if len(buf) < n:
                    buf = self._buffers[i] = bytearray(-(-n // _STEP) * _STEP)
                return memoryview(buf)[:n]
        buf = bytearray(-(-n // _STEP) * _STEP)
        if len(self._buffers) < self.keep:
            self._buffers.append(buf)
        return memoryview(buf)[:n]
