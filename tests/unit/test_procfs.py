"""procfs: the one parser of /proc/<pid>/stat, and /proc/stat's host-wide line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shardbroker.ipc import procfs


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    rest = " ".join(str(i) for i in range(3, 53))  # fields 3..52 hold their own numbers
    (tmp_path / "42" / "stat").write_text(f"42 (evil) name ) x) {rest}\n")
    fields = procfs.stat_fields(42, str(tmp_path))
    assert fields[procfs.STATE] == b"3"
    assert int(fields[procfs.UTIME]) == 14 and int(fields[procfs.STIME]) == 15
    assert int(fields[procfs.START_TIME]) == 22 and int(fields[procfs.RSS_PAGES]) == 24


def test_this_process() -> None:
    assert procfs.stat_fields(os.getpid())[procfs.STATE] in (b"R", b"S")
    assert procfs.cpu_seconds(os.getpid()) > 0
    with pytest.raises(FileNotFoundError):
        procfs.stat_fields(2**22 + 1)  # above pid_max's largest value


def test_host_cpu_seconds_counts_all_but_idle_and_iowait(tmp_path: Path) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice, in clock ticks
    (tmp_path / "stat").write_text("cpu  100 2 30 500 40 5 6 7 50 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
    busy, every = procfs.host_cpu_seconds(str(tmp_path))
    ticks = procfs.CLOCK_TICKS
    assert busy == pytest.approx((100 + 2 + 30 + 5 + 6 + 7) / ticks)
    assert every == pytest.approx((100 + 2 + 30 + 500 + 40 + 5 + 6 + 7) / ticks)
