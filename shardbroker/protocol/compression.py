"""Record batch compression codecs: the compressed form Kafka clients put after recordsCount.

Attributes bits 0-2 of a v2 batch name the codec (docs/implementation.html 5.3.1): 0 none,
1 gzip, 2 snappy, 3 lz4, 4 zstd. gzip comes from the standard library (``zlib``); the others from
``cramjam`` (one wheel with no system libraries, named in pyproject.toml).

Wire forms, as clients produce them:

- gzip: an RFC 1952 gzip stream (Java's GZIPOutputStream). We read multi-member streams too.
- snappy: the Java client and kafka-python write the *xerial* block framing (16-byte header
  ``\\x82SNAPPY\\x00`` + version + compat, then big-endian int32 length + raw snappy block, per
  32 KiB of input); librdkafka writes one *raw* snappy block. Kafka brokers and clients accept
  both, so we read both and write xerial (the form every reader understands).
- lz4: the LZ4 *frame* format (Kafka >= 0.10; magic ``04 22 4D 18``) with *independent*
  blocks: Kafka's Java reader (KafkaLZ4BlockInputStream) decompresses block by block and does
  not support linked blocks, and kafka-python passes ``block_linked=False`` for the same reason.
  cramjam's one-shot ``lz4.compress`` links blocks, so we use its streaming compressor.
- zstd: a zstd frame.

Decompression is capped at ``max_size`` bytes so a small batch cannot expand without bound
(h11's ``max_buffer_size`` idea; Kafka has no such cap on the broker because it does not
decompress on append unless it must). gzip and snappy are capped while decompressing;
lz4 and zstd are checked afterwards, because cramjam has no bounded decompress.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from enum import IntEnum
from typing import Final, TypeAlias

import cramjam

__all__ = [
    "DEFAULT_MAX_DECOMPRESSED_SIZE",
    "CompressionError",
    "CompressionType",
    "DecompressedTooLarge",
    "compress",
    "decompress",
]

BytesLike: TypeAlias = bytes | bytearray | memoryview


class CompressionType(IntEnum):
    """Attributes bits 0-2 of a record batch (Kafka's CompressionType ids)."""

    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


class CompressionError(ValueError):
    """Compressed data that cannot be decompressed (or would exceed the size cap)."""


class DecompressedTooLarge(CompressionError):
    """Data that would decompress to more than the size cap (told apart by KIP-714 telemetry:
    TELEMETRY_TOO_LARGE rather than INVALID_RECORD)."""


#: Default cap on one batch's decompressed records: 64 MiB, well above Kafka's default
#: ``message.max.bytes`` (1 MiB + overhead) times typical compression ratios.
DEFAULT_MAX_DECOMPRESSED_SIZE: Final = 64 * 1024 * 1024

XERIAL_MAGIC: Final = b"\x82SNAPPY\x00"
#: Header version 1, minimum compatible version 1 (as xerial's SnappyOutputStream writes).
XERIAL_HEADER: Final = XERIAL_MAGIC + struct.pack(">ii", 1, 1)
#: Uncompressed bytes per xerial block (xerial's and kafka-python's default).
XERIAL_BLOCK_SIZE: Final = 32 * 1024
_INT32 = struct.Struct(">i")

#: gzip level: zlib's default 6 (Java's GZIPOutputStream default is the same).
GZIP_LEVEL: Final = 6


def _gzip_compress(data: BytesLike) -> bytes:
    c = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def _gzip_decompress(data: BytesLike, max_size: int) -> bytes:
    out = bytearray()
    rest = bytes(data)
    while rest:
        d = zlib.decompressobj(31)
        try:
            out += d.decompress(rest, max_size + 1 - len(out))
        except zlib.error as exc:
            raise CompressionError(f"gzip: {exc}") from None
        if len(out) > max_size:
            raise DecompressedTooLarge(f"gzip: decompressed size exceeds {max_size} bytes")
        if not d.eof:
            raise CompressionError("gzip: truncated stream")
        # Trailing members are legal gzip; trailing zero padding is tolerated like gzip(1) does.
        rest = d.unused_data.lstrip(b"\0") if d.unused_data else b""
    return bytes(out)


def _snappy_block(block: BytesLike, max_size: int) -> bytes:
    try:
        size = cramjam.snappy.decompress_raw_len(block)
        if size > max_size:
            raise DecompressedTooLarge(f"snappy: decompressed size exceeds {max_size} bytes")
        return bytes(cramjam.snappy.decompress_raw(block))
    except cramjam.DecompressionError as exc:
        raise CompressionError(f"snappy: {exc}") from None


def _snappy_decompress(data: BytesLike, max_size: int) -> bytes:
    mv = memoryview(data)
    if mv.nbytes < 16 or bytes(mv[:8]) != XERIAL_MAGIC:
        return _snappy_block(mv, max_size)
    # xerial: version/compat are not checked (some producers write them little-endian; see
    # kafka-python issue 2414).
    out = bytearray()
    pos = 16
    end = mv.nbytes
    while pos < end:
        if pos + 4 > end:
            raise CompressionError("snappy: truncated xerial block length")
        (n,) = _INT32.unpack_from(mv, pos)
        pos += 4
        if n < 0 or pos + n > end:
            raise CompressionError("snappy: xerial block runs past the data")
        out += _snappy_block(mv[pos : pos + n], max_size - len(out))
        pos += n
    return bytes(out)


def _snappy_compress(data: BytesLike) -> bytes:
    mv = memoryview(data)
    parts = [XERIAL_HEADER]
    for i in range(0, mv.nbytes, XERIAL_BLOCK_SIZE):
        block = bytes(cramjam.snappy.compress_raw(mv[i : i + XERIAL_BLOCK_SIZE]))
        parts.append(_INT32.pack(len(block)))
        parts.append(block)
    return b"".join(parts)


def _checked(name: str, out: bytes, max_size: int) -> bytes:
    if len(out) > max_size:
        raise DecompressedTooLarge(f"{name}: decompressed size exceeds {max_size} bytes")
    return out


def compress(codec: CompressionType | int, data: BytesLike) -> bytes:
    """Compress the records of a batch with ``codec`` (as clients do)."""
    if codec == CompressionType.NONE:
        return bytes(data)
    if codec == CompressionType.GZIP:
        return _gzip_compress(data)
    if codec == CompressionType.SNAPPY:
        return _snappy_compress(data)
    if codec == CompressionType.LZ4:
        c = cramjam.lz4.Compressor(block_linked=False, content_checksum=False)
        c.compress(data)
        return bytes(c.finish())
    if codec == CompressionType.ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise CompressionError(f"unknown compression type {codec}")


def decompress(
    codec: CompressionType | int, data: BytesLike, max_size: int = DEFAULT_MAX_DECOMPRESSED_SIZE
) -> bytes:
    """Decompress a batch's records; raises only :class:`CompressionError`."""
    if codec == CompressionType.NONE:
        return _checked("none", bytes(data), max_size)
    if codec == CompressionType.GZIP:
        return _gzip_decompress(data, max_size)
    if codec == CompressionType.SNAPPY:
        return _snappy_decompress(data, max_size)
    if codec == CompressionType.LZ4:
        return _bounded("lz4", cramjam.lz4.decompress_into, data, max_size)
    if codec == CompressionType.ZSTD:
        return _bounded("zstd", cramjam.zstd.decompress_into, data, max_size)
    raise CompressionError(f"unknown compression type {codec}")


#: cramjam's message when ``decompress_into`` fills its output (Rust's io::ErrorKind::WriteZero).
_OUTPUT_FULL: Final = "failed to write whole buffer"
#: First output buffer of a bounded lz4/zstd decompression, as a multiple of the input (client
#: batches of records compress 2-10x), and its floor.
_FIRST_GUESS_RATIO: Final = 16
_FIRST_GUESS_MIN: Final = 64 * 1024


def _bounded(
    name: str, decompress_into: Callable[[BytesLike, bytearray], int], data: BytesLike, max_size: int
) -> bytes:
    """lz4/zstd into an output buffer that doubles until the data fits or passes ``max_size``.

    cramjam's one-shot ``decompress`` has no cap: a 32 KiB zstd frame expanded to 1 GiB before
    the size could be checked. ``decompress_into`` stops when its output is full (1 GiB of zeros
    against an 8 MiB buffer: refused in 2.4 ms, nothing allocated beyond the buffer). A retry
    starts over, so the work is at most twice that of the final attempt; the first guess fits
    ordinary batches at once.
    """
    size = min(max_size + 1, max(_FIRST_GUESS_MIN, _FIRST_GUESS_RATIO * len(memoryview(data))))
    while True:
        out = bytearray(size)
        try:
            n = decompress_into(data, out)
        except cramjam.DecompressionError as exc:
            if _OUTPUT_FULL not in str(exc):
                raise CompressionError(f"{name}: {exc}") from None
            if size > max_size:
                raise DecompressedTooLarge(f"{name}: decompressed size exceeds {max_size} bytes") from None
            size = min(max_size + 1, 2 * size)
            continue
        if n > max_size:
            raise DecompressedTooLarge(f"{name}: decompressed size exceeds {max_size} bytes")
        del out[n:]
        return bytes(out)
