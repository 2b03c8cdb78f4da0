"""A clean that runs out of disk (a real ENOSPC, on a small tmpfs mounted for the test): the clean
is abandoned, its ``.cleaned`` files removed, the original segments and their contents stay, and
once there is room again the next clean finishes the job. Both ways a clean runs: in the calling
thread and in the worker's cleaner process (broker/cleaner_process.py)."""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardbroker.broker.cleaner_process import CleanerProcess
from shardbroker.config.log_config import LogConfig
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import Cleaner, Throttler
from shardbroker.storage.log_cleaner_manager import CleanRunner, clean_partition, read_cleaner_checkpoint
from tests.unit.test_log_cleaner import NOW, contents, latest, put

CONFIG = LogConfig().overrides({"cleanup.policy": "compact", "segment.bytes": str(1 << 20)})


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs (needs root, as the CI runs)."""
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path, leave: int) -> Path:
    """A file taking all the free space of ``directory``'s file system but ``leave`` bytes."""
    filler = directory / "filler"
    with filler.open("wb") as f:
        chunk = bytes(1 << 16)
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    os.truncate(filler, max(0, filler.stat().st_size - max(0, leave - free)))
    return filler


@pytest.fixture(params=["thread", "process"])
def runner(request: pytest.FixtureRequest) -> Iterator[CleanRunner]:
    if request.param == "thread":
        yield Cleaner(100_000, Throttler(float("inf")))
        return
    process = CleanerProcess("test-cleaner", 100_000, float("inf"))
    try:
        yield process
    finally:
        process.stop()


def test_a_full_disk_abandons_the_clean_and_keeps_the_originals(small_fs: Path, runner: CleanRunner) -> None:
    log = PartitionLog.open(small_fs / "t-0", CONFIG, clock=lambda: NOW)
    try:
        for round_ in range(2):  # 3 MiB: every key twice, so the clean writes half of it back
            for k in range(0, 1500):
                put(log, [(b"key-%05d" % k, b"%d" % round_ * 1000)])
        log.roll()
        before = contents(log)
        want = latest(log)
        segments = sorted(p.name for p in log.directory.iterdir())
        filler = fill(small_fs, leave=64 << 10)
        with pytest.raises(OSError) as raised:
            clean_partition(log, runner, NOW)
        assert "No space left on device" in str(raised.value) or raised.value.errno == errno.ENOSPC
        assert sorted(p.name for p in log.directory.iterdir()) == segments  # nothing .cleaned left
        assert contents(log) == before
        assert read_cleaner_checkpoint(log.directory, log.topic, log.partition) is None
        filler.unlink()
        _, stats = clean_partition(log, runner, NOW)
        assert stats is not None and stats.records_retained == len(want)
        assert latest(log) == want
        assert not [p for p in log.directory.iterdir() if p.name.endswith(fn.CLEANED_SUFFIX)]
    finally:
        log.close()
