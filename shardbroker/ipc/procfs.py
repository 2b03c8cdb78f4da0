"""Reading a process's ``/proc/<pid>/stat`` (Linux; opens files). One parser for the shm owner
check, heartbeats, the per-worker ``process_*`` metrics and the benchmarks' CPU accounting
(and ``/proc/stat``'s host-wide line, for how busy the benchmarks' host was).

The command name (field 2) is in parentheses and may itself contain spaces and ``)``, so the
fields are split after the *last* ``)``. ``stat_fields(pid)[0]`` is field 3 of proc(5) (the
state letter); field N is index N - 3.
"""

from __future__ import annotations

import os

__all__ = ["CLOCK_TICKS", "cpu_seconds", "host_cpu_seconds", "stat_fields"]

#: Clock ticks per second, the unit of the times in ``stat``.
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Indexes into stat_fields (proc(5) field number - 3).
STATE = 0
UTIME = 11
STIME = 12
START_TIME = 19
VSIZE = 20
RSS_PAGES = 21


def stat_fields(pid: int, proc: str = "/proc") -> list[bytes]:
    """Fields 3.. of ``/proc/<pid>/stat``; raises OSError (FileNotFoundError once it is gone)."""
    with open(f"{proc}/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2 :].split()


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time the processes have used so far."""
    total = 0
    for pid in pids:
        fields = stat_fields(pid)
        total += int(fields[UTIME]) + int(fields[STIME])
    return total / CLOCK_TICKS


def host_cpu_seconds(proc: str = "/proc") -> tuple[float, float]:
    """(busy, all) CPU seconds of every CPU of the host since boot, from ``/proc/stat``'s
    ``cpu`` line: busy is everything but idle and iowait; steal counts as busy (the VM's
    neighbours took the CPU)."""
    with open(f"{proc}/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    every = sum(fields[:8])  # guest time is already inside user (proc(5))
    return (every - idle) / CLOCK_TICKS, every / CLOCK_TICKS
