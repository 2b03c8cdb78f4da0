"""Build record batches (magic v2) for storage tests: a small, dependency-free builder."""

from __future__ import annotations

import struct

from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.crc import crc32c


def _varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def build_batch(
    values: list[bytes] | int = 1,
    *,
    timestamp: int = 1_700_000_000_000,
    timestamp_step: int = 0,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    attributes: int = 0,
    value_size: int = 10,
    magic: int = 2,
    key: bytes | None = None,
) -> bytearray:
    """One batch; ``values`` is the record values or a record count (values of ``value_size`` bytes)."""
    if isinstance(values, int):
        values = [bytes([i % 251]) * value_size for i in range(values)]
    records = bytearray()
    for i, v in enumerate(values):
        k = _varint(-1) if key is None else _varint(len(key)) + key
        body = bytes([0]) + _varint(i * timestamp_step) + _varint(i) + k + _varint(len(v)) + v + _varint(0)
        records += _varint(len(body)) + body
    n = len(values)
    max_ts = timestamp + (n - 1) * timestamp_step
    after_crc = (
        struct.pack(
            ">hiqqqhii", attributes, n - 1, timestamp, max_ts, producer_id, producer_epoch, base_sequence, n
        )
        + records
    )
    crc = crc32c(after_crc)
    length = 4 + 1 + 4 + len(after_crc)
    return bytearray(struct.pack(">qiibI", base_offset, length, 0, magic, crc) + after_crc)


def batch_of_size(size: int, **kw: object) -> bytearray:
    """A batch of exactly ``size`` bytes (size >= 80): one record, or two next to a varint boundary."""
    overhead = len(build_batch([b""], **kw))  # type: ignore[arg-type]
    # Varint lengths grow with the value and can skip a size: a short key fills the gap.
    for extra in range(0, 8):
        for k in (None, b"", b"k", b"kk", b"kkk"):
            b = build_batch([b"x" * (size - overhead - extra)], key=k, **kw)  # type: ignore[arg-type]
            if len(b) == size:
                return b
    # Sizes next to a varint boundary (e.g. 126, 8255) need a second record.
    for extra in range(0, 12):
        b = build_batch([b"", b"x" * (size - overhead - 7 - extra)], **kw)  # type: ignore[arg-type]
        if len(b) == size:
            return b
    raise ValueError(f"cannot build a batch of exactly {size} bytes")


class Clock:
    """A settable millisecond clock for PartitionLog(clock=...)."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


def batch_offsets(data: bytes) -> list[tuple[int, int]]:
    """``(base_offset, last_offset)`` of every whole batch in ``data``."""
    out = []
    pos = 0
    while pos + 61 <= len(data):
        base, length = struct.unpack_from(">qi", data, pos)
        if pos + 12 + length > len(data):
            break
        (lod,) = struct.unpack_from(">i", data, pos + 23)
        out.append((base, base + lod))
        pos += 12 + length
    return out


def txn_batch(n: int, seq: int, *, pid: int = 42, epoch: int = 0, value_size: int = 10) -> bytearray:
    """A transactional data batch of ``n`` records (attributes bit 4)."""
    return build_batch(
        n, producer_id=pid, producer_epoch=epoch, base_sequence=seq, attributes=0x10, value_size=value_size
    )


def marker(
    abort: bool,
    *,
    pid: int = 42,
    epoch: int = 0,
    coordinator_epoch: int = 0,
    timestamp: int = 1_700_000_000_000,
) -> bytearray:
    """A COMMIT or ABORT transaction marker, as the coordinator writes it (at ``build_batch``'s
    default timestamp, so that a marker does not roll a segment by segment.ms)."""
    kind = ControlRecordType.ABORT if abort else ControlRecordType.COMMIT
    return bytearray(
        build_control_batch(
            kind,
            producer_id=pid,
            producer_epoch=epoch,
            coordinator_epoch=coordinator_epoch,
            timestamp=timestamp,
        )
    )
