"""file_names, checkpoint files, offset and time indexes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.protocol.record_batch_header import NO_TIMESTAMP
from shardbroker.storage import file_names as fn
from shardbroker.storage.abstract_index import CorruptIndexError
from shardbroker.storage.checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.time_index import TimeIndex


def test_twenty_digit_names(tmp_path: Path) -> None:
    assert fn.filename_prefix(0) == "00000000000000000000"
    assert fn.log_file(tmp_path, 42).name == "00000000000000000042.log"
    assert fn.index_file(tmp_path, 42, fn.DELETED_SUFFIX).name == "00000000000000000042.index.deleted"
    assert fn.time_index_file(tmp_path, 9223372036854775807).name == "09223372036854775807.timeindex"
    assert fn.offset_from_file_name("00000000000000000042.log.deleted") == (42, ".log", ".deleted")
    assert fn.offset_from_file_name("00000000000000000042.timeindex") == (42, ".timeindex", "")
    assert fn.offset_from_file_name("42.log") is None
    assert fn.offset_from_file_name("recovery-point-offset-checkpoint") is None
    with pytest.raises(ValueError):
        fn.filename_prefix(-1)


def test_partition_dir_names() -> None:
    assert fn.partition_dir_name("orders", 3) == "orders-3"
    assert fn.parse_partition_dir("my-topic-12") == ("my-topic", 12)
    with pytest.raises(ValueError):
        fn.parse_partition_dir("nopartition")


def test_checkpoint_round_trip_is_kafkas_text_format(tmp_path: Path) -> None:
    path = tmp_path / fn.RECOVERY_POINT_CHECKPOINT
    assert read_checkpoint(path) == {}
    write_checkpoint(path, {("orders", 3): 1234, ("a-b", 0): 7})
    assert path.read_text() == "0\n2\na-b 0 7\norders 3 1234\n"
    assert read_checkpoint(path) == {("orders", 3): 1234, ("a-b", 0): 7}
    assert not (tmp_path / (path.name + fn.TMP_SUFFIX)).exists()


@pytest.mark.parametrize("text", ["", "1\n0\n", "0\n2\nt 0 1\n", "0\n1\nt x 1\n", "zero\n"])
def test_malformed_checkpoints_raise(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cp"
    path.write_text(text)
    with pytest.raises(CheckpointError):
        read_checkpoint(path)


def test_checkpoint_write_replaces_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "cp"
    write_checkpoint(path, {("t", 0): 1})

    def boom(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_checkpoint(path, {("t", 0): 2})
    monkeypatch.undo()
    assert read_checkpoint(path) == {("t", 0): 1}  # the old one survives a failed write


def test_offset_index_append_lookup_and_layout(tmp_path: Path) -> None:
    idx = OffsetIndex(tmp_path / "00000000000000000100.index", 100, 1024, writable=True)
    assert os.path.getsize(idx.path) == 1024  # preallocated
    assert idx.lookup(150) == (100, 0)
    for i in range(1, 11):
        idx.append(100 + i * 10, i * 5000)
    assert idx.lookup(99) == (100, 0)
    assert idx.lookup(110) == (110, 5000)
    assert idx.lookup(119) == (110, 5000)
    assert idx.lookup(10**9) == (200, 50000)
    with pytest.raises(ValueError):
        idx.append(200, 60000)
    idx.trim_to_valid_size()
    assert os.path.getsize(idx.path) == 80
    raw = idx.path.read_bytes()
    assert raw[:8] == (10).to_bytes(4, "big") + (5000).to_bytes(4, "big")
    idx.truncate_to(150)
    assert idx.entries == 4 and idx.last_offset == 140
    idx.close()
    again = OffsetIndex(tmp_path / "00000000000000000100.index", 100, 1024, writable=False)
    assert again.entries == 4 and again.lookup(145) == (140, 20000)
    again.sanity_check(10**6)
    with pytest.raises(CorruptIndexError):
        again.sanity_check(20000)  # an entry points past the log end
    again.close()


def _vm_flags(path: Path) -> list[str]:
    """The VmFlags of this process's mapping of ``path`` (proc(5) smaps: "rr" = MADV_RANDOM)."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            flags = next(x for x in lines[i + 1 :] if x.startswith("VmFlags:"))
            return flags.split()[1:]
    raise AssertionError(f"{path} is not mapped")


def test_a_writable_index_maps_its_sparse_file_without_readahead(tmp_path: Path) -> None:
    """A store into the preallocated (sparse) file would otherwise fault a readahead window of
    zero-filled holes in (ms per new segment, abstract_index.py); reopened read-only, the
    entries still load (through pread, not the map)."""
    path = tmp_path / "00000000000000000000.index"
    idx = OffsetIndex(path, 0, 1 << 20, writable=True)
    assert "rr" in _vm_flags(path)
    idx.append(5, 4096)
    idx.close()
    again = OffsetIndex(path, 0, 1 << 20, writable=True)
    assert "rr" in _vm_flags(path) and again.lookup(7) == (5, 4096)
    again.trim_to_valid_size()
    again.close()
    reader = OffsetIndex(path, 0, 1 << 20, writable=False)
    assert "rr" not in _vm_flags(path) and reader.entries == 1
    reader.close()


def test_offset_index_full_and_zero_tail_after_crash(tmp_path: Path) -> None:
    idx = OffsetIndex(tmp_path / "00000000000000000000.index", 0, 8 * 4 + 5, writable=True)
    assert idx.max_entries == 4
    for i in range(1, 5):
        idx.append(i, i * 100)
    assert idx.is_full()
    with pytest.raises(OverflowError):
        idx.append(9, 900)
    idx.close()  # not trimmed: as after a crash
    again = OffsetIndex(tmp_path / "00000000000000000000.index", 0, 64, writable=False)
    assert again.entries == 4
    again.close()
    with open(tmp_path / "00000000000000000000.index", "r+b") as f:
        f.truncate(8 * 6)  # zero tail
    again = OffsetIndex(tmp_path / "00000000000000000000.index", 0, 64, writable=False)
    assert again.entries == 4
    again.close()


def test_short_index_fails_sanity(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(b"\0\0\0\1\0\0\0\x10\0\0")
    idx = OffsetIndex(tmp_path / "x.index", 0, 64, writable=False)
    with pytest.raises(CorruptIndexError):
        idx.sanity_check(10**6)
    idx.close()


def test_time_index_only_grows_and_looks_up_floor(tmp_path: Path) -> None:
    ti = TimeIndex(tmp_path / "00000000000000000000.timeindex", 0, 12 * 100, writable=True)
    assert ti.last_entry() == (NO_TIMESTAMP, 0)
    ti.maybe_append(1000, 5)
    ti.maybe_append(1000, 9)  # same timestamp: skipped
    ti.maybe_append(900, 10)  # older: skipped
    ti.maybe_append(2000, 20)
    assert ti.entries == 2
    assert ti.lookup(999) == (NO_TIMESTAMP, 0)
    assert ti.lookup(1500) == (1000, 5)
    assert ti.lookup(5000) == (2000, 20)
    with pytest.raises(ValueError):
        ti.maybe_append(3000, 19)
    ti.trim_to_valid_size()
    assert ti.path.read_bytes() == (1000).to_bytes(8, "big") + (5).to_bytes(4, "big") + (2000).to_bytes(
        8, "big"
    ) + (20).to_bytes(4, "big")
    ti.truncate_to(20)
    assert ti.last_entry() == (1000, 5)
    ti.sanity_check(100)
    ti.close()
