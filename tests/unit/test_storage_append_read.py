"""PartitionLog append (validation, offsets, one write), read (sendfile ranges), ListOffsets."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.crc import crc32c
from shardbroker.storage.errors import (
    CorruptRecordError,
    InvalidRecordError,
    LogOffsetOutOfRangeError,
    RecordBatchTooLargeError,
    RecordTooLargeError,
    StorageError,
    UnsupportedForMessageFormatError,
)
from shardbroker.storage.log import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP, MAX_TIMESTAMP, PartitionLog
from tests.unit.storage_batches import Clock, batch_of_size, batch_offsets, build_batch

SMALL = LogConfig(segment_bytes=64 * 1024, index_interval_bytes=1024, segment_index_bytes=4096)


def open_log(tmp_path: Path, config: LogConfig = SMALL, clock: Clock | None = None) -> PartitionLog:
    return PartitionLog.open(tmp_path / "t-0", config, clock=clock or Clock())


def test_append_assigns_dense_offsets_in_place(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    b = build_batch(3, base_offset=999)
    info = log.append(b)
    assert (info.first_offset, info.last_offset, info.record_count) == (0, 2, 3)
    assert info.log_append_time == -1 and info.log_start_offset == 0
    assert struct.unpack_from(">q", b, 0)[0] == 0  # patched in the caller's buffer
    info = log.append(build_batch(5))
    assert (info.first_offset, info.last_offset) == (3, 7)
    assert log.log_end_offset == 8
    data = log.read_bytes(0, 1 << 20)
    assert batch_offsets(data) == [(0, 2), (3, 7)]
    log.close()


def test_several_batches_go_out_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    calls: list[str] = []
    real_pwrite, real_pwritev = os.pwrite, os.pwritev

    def pwrite(fd: int, data: memoryview, pos: int) -> int:
        calls.append("pwrite")
        return real_pwrite(fd, data, pos)

    def pwritev(fd: int, bufs: list[memoryview], pos: int) -> int:
        calls.append("pwritev")
        return real_pwritev(fd, bufs, pos)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "pwritev", pwritev)
    log.append(build_batch(2) + build_batch(3) + build_batch(1))  # one buffer, three batches
    log.append([build_batch(2), memoryview(build_batch(2)), bytes(build_batch(4))])  # three buffers
    assert calls == ["pwrite", "pwritev"]
    assert batch_offsets(log.read_bytes(0, 1 << 20)) == [(0, 1), (2, 4), (5, 5), (6, 7), (8, 9), (10, 13)]
    log.close()


def test_readonly_buffers_are_copied_not_mutated(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))
    raw = bytes(build_batch(1, base_offset=77))
    log.append(raw)
    assert struct.unpack_from(">q", raw, 0)[0] == 77
    assert batch_offsets(log.read_bytes(1, 1000)) == [(1, 1)]
    log.close()


def corrupt_crc(b: bytearray) -> bytearray:
    b[-1] ^= 0xFF
    return b


def with_field(b: bytearray, fmt: str, pos: int, value: int, fix_crc: bool = True) -> bytearray:
    struct.pack_into(fmt, b, pos, value)
    if fix_crc:
        struct.pack_into(">I", b, 17, crc32c(b[21:]))
    return b


@pytest.mark.parametrize(
    ("make", "error", "code"),
    [
        (lambda: corrupt_crc(build_batch(2)), CorruptRecordError, 2),
        (lambda: build_batch(2)[:-3], CorruptRecordError, 2),  # torn: length runs past the data
        (lambda: build_batch(2) + b"\0\0\0", CorruptRecordError, 2),  # trailing garbage
        (lambda: bytearray(), CorruptRecordError, 2),
        (lambda: with_field(build_batch(2), ">i", 8, 10), CorruptRecordError, 2),  # length < header
        (lambda: build_batch(2, magic=1), UnsupportedForMessageFormatError, 43),
        (lambda: batch_of_size(3000), RecordTooLargeError, 10),
        (
            lambda: with_field(build_batch(3), ">i", 23, 5),
            InvalidRecordError,
            87,
        ),  # lastOffsetDelta != count-1
        (lambda: with_field(build_batch(3), ">i", 57, 0), InvalidRecordError, 87),
        (lambda: build_batch(1, producer_id=5, producer_epoch=0, base_sequence=-1), InvalidRecordError, 87),
        (lambda: build_batch(1, attributes=0x20), InvalidRecordError, 87),  # control batch from a client
    ],
)
@pytest.mark.parametrize("alone", [False, True], ids=["with-others", "alone"])
def test_bad_batches_are_refused_before_any_byte_is_written(
    tmp_path: Path, make: object, error: type[StorageError], code: int, alone: bool
) -> None:
    log = open_log(tmp_path, LogConfig(max_message_bytes=2048, segment_bytes=1 << 20))
    log.append(build_batch(2))
    size = log.size_in_bytes
    good = build_batch(1)
    with pytest.raises(error) as info:
        log.append(make() if alone else [good, make()])  # type: ignore[operator]
    assert info.value.error_code == code
    assert log.size_in_bytes == size and log.log_end_offset == 2
    assert os.path.getsize(log.segments[-1].log_path) == size
    log.append(build_batch(1))
    assert batch_offsets(log.read_bytes(0, 1 << 20)) == [(0, 1), (2, 2)]
    log.close()


def test_a_transaction_marker_from_the_coordinator_is_accepted(tmp_path: Path) -> None:
    """Markers carry the producer id and epoch with base sequence -1 (Kafka's EndTransactionMarker)."""
    log = open_log(tmp_path)
    marker = bytearray(
        build_control_batch(ControlRecordType.COMMIT, producer_id=5, producer_epoch=0, coordinator_epoch=0)
    )
    with pytest.raises(InvalidRecordError):
        log.append(bytearray(marker))  # from a client: refused
    not_a_marker = build_batch(1, producer_id=5, producer_epoch=0, base_sequence=-1, attributes=0x30)
    with pytest.raises(InvalidRecordError):
        log.append(not_a_marker, allow_control=True)  # a control batch must carry a marker record
    assert log.log_end_offset == 0
    assert log.append(marker, allow_control=True).first_offset == 0
    log.close()


def test_append_larger_than_a_segment_is_refused(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(segment_bytes=1000, max_message_bytes=1 << 20))
    with pytest.raises(RecordBatchTooLargeError) as info:
        log.append(batch_of_size(1200))
    assert info.value.error_code == 18
    log.close()


def test_log_append_time_rewrites_timestamp_and_crc(tmp_path: Path) -> None:
    clock = Clock(5_000)
    log = open_log(tmp_path, LogConfig(message_timestamp_type="LogAppendTime"), clock)
    info = log.append(build_batch(2, timestamp=1))
    assert info.log_append_time == 5_000 and info.max_timestamp == 5_000
    data = log.read_bytes(0, 1000)
    (attrs,) = struct.unpack_from(">h", data, 21)
    assert attrs & 0x08
    assert struct.unpack_from(">q", data, 35)[0] == 5_000
    assert struct.unpack_from(">I", data, 17)[0] == crc32c(data[21:])
    log.close()


def test_leader_epoch_is_stamped(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1), leader_epoch=7)
    assert struct.unpack_from(">i", log.read_bytes(0, 100), 12)[0] == 7
    log.close()


def fill(log: PartitionLog, count: int, size: int = 300, ts0: int = 1000) -> list[tuple[int, int]]:
    out = []
    for i in range(count):
        n = 1 + i % 4
        info = log.append(build_batch(n, value_size=size // n, timestamp=ts0 + 10 * i))
        out.append((info.first_offset, info.last_offset))
    return out


def test_read_every_offset_returns_the_batch_that_holds_it(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    batches = fill(log, 600)
    assert len(log.segments) > 2
    for first, last in batches[::7] + batches[-3:]:
        for offset in {first, last, (first + last) // 2}:
            got = batch_offsets(log.read_bytes(offset, 1))
            assert got[0] == (first, last), offset
    log.close()


def test_reads_stop_at_the_segment_boundary(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    batches = fill(log, 600)
    seg0, seg1 = log.segments[0], log.segments[1]
    last_in_0 = seg1.base_offset - 1
    r = log.read(last_in_0, 1 << 30)
    assert r.segment_base_offset == seg0.base_offset
    assert r.position + r.length == seg0.size  # rest of segment 0 only
    assert batch_offsets(r.read())[-1][1] == last_in_0
    r = log.read(seg1.base_offset, 1 << 30)
    assert (r.segment_base_offset, r.position) == (seg1.base_offset, 0)
    assert log.read(batches[-1][1] + 1, 100).length == 0  # at the log end: empty
    with pytest.raises(LogOffsetOutOfRangeError) as info:
        log.read(batches[-1][1] + 2, 100)
    assert info.value.error_code == 1
    log.close()


def test_max_bytes_is_kafkas(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    sizes = [500, 700, 900]
    for s in sizes:
        log.append(batch_of_size(s))
    assert log.read(0, 0).length == 500  # min one message: the whole first batch
    assert log.read(0, 10).length == 500
    assert log.read(0, 10, min_one_message=False).length == 10
    assert log.read(0, 1000).length == 1000  # partial second batch, like Kafka
    assert log.read(1, 100).length == 700 and log.read(1, 100).position == 500
    assert log.read(0, 10**9).length == 2100
    log.close()


def test_list_offsets(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    assert log.fetch_offset_by_timestamp(EARLIEST_TIMESTAMP) == (-1, 0)
    assert log.fetch_offset_by_timestamp(0) is None
    batches = fill(log, 500)  # batch i has max timestamp 1000 + 10 i
    assert len(log.segments) > 2
    assert log.fetch_offset_by_timestamp(LATEST_TIMESTAMP) == (-1, log.log_end_offset)
    assert log.fetch_offset_by_timestamp(MAX_TIMESTAMP) == (1000 + 10 * 499, batches[-1][1])
    for i in (0, 1, 37, 250, 251, 499):
        assert log.fetch_offset_by_timestamp(1000 + 10 * i) == (1000 + 10 * i, batches[i][0])
        assert log.fetch_offset_by_timestamp(1000 + 10 * i - 5) == (1000 + 10 * i, batches[i][0])
    assert log.fetch_offset_by_timestamp(0) == (1000, 0)
    assert log.fetch_offset_by_timestamp(10**12) is None
    log.close()


def test_list_offsets_with_timestamps_out_of_order(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for ts in [100, 300, 200, 400, 150]:
        log.append(batch_of_size(700, timestamp=ts))
    assert log.fetch_offset_by_timestamp(250) == (300, 1)
    assert log.fetch_offset_by_timestamp(350) == (400, 3)
    assert log.fetch_offset_by_timestamp(120) == (300, 1)
    log.close()


def test_index_entries_follow_the_interval_rule(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(index_interval_bytes=1000))
    for s in [600, 600, 600, 1200, 100, 100, 900, 80]:
        log.append(batch_of_size(s))
    idx = log.segments[-1].offset_index
    # positions: 0 600 1200 1800 3000 3100 3200 4100; entries where bytes since last entry > 1000
    assert [idx.entry(i) for i in range(idx.entries)] == [(2, 1200), (4, 3000), (7, 4100)]
    log.close()


def test_roll_by_size_and_time(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, LogConfig(segment_bytes=2000, segment_ms=1000), clock)
    for _ in range(3):
        log.append(batch_of_size(600))
    assert len(log.segments) == 1
    log.append(batch_of_size(600))  # 2400 > 2000: roll first
    assert [s.base_offset for s in log.segments] == [0, 3]
    assert log.segments[0].offset_index.path.stat().st_size == 8 * log.segments[0].offset_index.entries
    log.append(batch_of_size(100, timestamp=1_700_000_000_000 + 999))
    assert len(log.segments) == 2
    log.append(batch_of_size(100, timestamp=1_700_000_000_000 + 1001))  # 1001 ms after the first batch
    assert [s.base_offset for s in log.segments] == [0, 3, 5]
    assert log.roll().base_offset == 6 and log.roll().base_offset == 6  # empty active: no new segment
    log.close()


def test_full_index_rolls_before_a_multi_batch_append(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(index_interval_bytes=0, segment_index_bytes=8 * 4))
    log.append([build_batch(1) for _ in range(3)])  # entries for batches 2 and 3 (bytes since > 0)
    assert len(log.segments) == 1 and log.segments[0].offset_index.entries == 2
    log.append([build_batch(1) for _ in range(3)])  # 2 + 3 > 4 entries: roll first
    assert [s.base_offset for s in log.segments] == [0, 3]
    assert batch_offsets(log.read_bytes(0, 1 << 20)) == [(0, 0), (1, 1), (2, 2)]
    log.close()


def test_list_offsets_finds_the_exact_record_inside_a_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(retention_ms=-1))  # 1970 timestamps: keep them
    log.append(build_batch(1, timestamp=50))
    log.append(build_batch(10, timestamp=100, timestamp_step=10))  # offsets 1..10 at 100, 110, ..., 190
    assert log.fetch_offset_by_timestamp(100) == (100, 1)
    assert log.fetch_offset_by_timestamp(101) == (110, 2)
    assert log.fetch_offset_by_timestamp(150) == (150, 6)
    assert log.fetch_offset_by_timestamp(190) == (190, 10)
    assert log.fetch_offset_by_timestamp(191) is None
    log.delete_records(7)
    assert log.fetch_offset_by_timestamp(120) == (160, 7)  # never below the log start offset
    log.close()


def test_list_offsets_in_compressed_batches(tmp_path: Path) -> None:
    from shardbroker.protocol.compression import CompressionType
    from shardbroker.protocol.record_batch_builder import RecordBatchBuilder

    log = open_log(tmp_path)
    builder = RecordBatchBuilder(compression=CompressionType.GZIP)
    for i in range(5):
        builder.append(b"v%d" % i, timestamp=1000 + i)
    log.append(bytearray(builder.build()))
    assert log.fetch_offset_by_timestamp(1003) == (1003, 3)
    log.close()
