"""storage/file_modes.py and its users: under the usual umask 022, everything the broker creates in
a data dir is 0600 (files) or 0700 (directories); existing looser modes are reported, not changed."""

from __future__ import annotations

import logging
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardbroker.control.controller_state import OpContext, handle
from shardbroker.control.metadata_log import DataDirLock, MetadataLog
from shardbroker.serve import warn_loose_modes
from shardbroker.storage.file_modes import DIR_MODE, FILE_MODE, loose_paths, make_dirs
from shardbroker.storage.leader_epoch_checkpoint import write_leader_epochs
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.partition_metadata import write_partition_metadata
from tests.unit.storage_batches import build_batch


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def modes(root: Path) -> dict[str, int]:
    """Every entry under ``root`` (and root itself) -> its permission bits."""
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        out[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return out


def test_make_dirs_creates_every_missing_component_0700(tmp_path: Path, umask_022: None) -> None:
    target = tmp_path / "a" / "b" / "c"
    make_dirs(target)
    for d in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert stat.S_IMODE(d.stat().st_mode) == DIR_MODE, d
    make_dirs(target)  # exists: fine
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(FileExistsError):
        make_dirs(tmp_path / "file")


def test_make_dirs_leaves_existing_directories_as_they_are(tmp_path: Path, umask_022: None) -> None:
    (tmp_path / "open").mkdir(mode=0o755)
    make_dirs(tmp_path / "open" / "inner")
    assert stat.S_IMODE((tmp_path / "open").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "open" / "inner").stat().st_mode) == DIR_MODE


def test_a_data_dir_written_by_the_broker_is_private(tmp_path: Path, umask_022: None) -> None:
    data = tmp_path / "new" / "data"  # the broker creates it and its parent
    lock = DataDirLock(data)
    lock.acquire()
    try:
        metadata = MetadataLog(data, snapshot_bytes=1)  # every append snapshots: all files appear
        state = metadata.open()
        out = handle(state, "create_topics", {"topics": [{"name": "t", "num_partitions": 1}]}, OpContext(1))
        metadata.append(out.records, out.state)
        metadata.close()
        log = PartitionLog.open(data / "t-0")
        log.append(build_batch(3))
        log.roll()
        log.append(build_batch(2))
        write_leader_epochs(log.directory, [(0, 0)])
        write_partition_metadata(log.directory, uuid.uuid4())
        log.close()
    finally:
        lock.release()
    found = modes(data)
    assert {"__cluster_metadata/snapshot.bin", "t-0/00000000000000000003.log", ".lock"} <= set(found)
    assert {"t-0/.kafka_cleanshutdown", "t-0/leader-epoch-checkpoint", "meta.properties"} <= set(found)
    wrong = {
        name: oct(mode)
        for name, mode in found.items()
        if mode != (DIR_MODE if (data / name).is_dir() else FILE_MODE)
    }
    assert not wrong
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == DIR_MODE
    assert loose_paths(data) == []


def test_loose_paths_names_what_group_or_others_may_access(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir(mode=0o700)
    (root / "t-0").mkdir(mode=0o750)
    (root / "t-0" / "private.log").write_bytes(b"")
    (root / "t-0" / "private.log").chmod(0o600)
    (root / "t-0" / "open.log").write_bytes(b"")
    (root / "t-0" / "open.log").chmod(0o604)
    (root / "link").symlink_to(root / "t-0" / "private.log")  # 0777, but a link's mode means nothing
    assert loose_paths(root) == [root / "t-0", root / "t-0" / "open.log"]


def test_serve_warns_naming_the_loose_paths_and_changes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "data"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    for i in range(7):
        (root / f"f{i}").write_bytes(b"")
        (root / f"f{i}").chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="shardbroker.serve"):
        warn_loose_modes(root)
    (record,) = caplog.records
    assert f"data dir {root}: 8 files and directories are open to group or others" in record.message
    assert f"{root}, " in record.message and "and 3 more" in record.message
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    caplog.clear()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    warn_loose_modes(private)
    assert not caplog.records
