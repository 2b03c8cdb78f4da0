"""procfs.stat_fields: the one parser of /proc/<pid>/stat."""

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
