"""What the operating system says about the broker, on /metrics (`MetricsCollector.add_source`
sources added by serve.py): the workers' processes (`WorkerProcessSource`, from ``/proc``) and the
data dir's file system (`DataDirSource`, from ``statvfs``).

Families: ``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_virtual_memory_bytes``, ``process_start_time_seconds``, ``process_open_fds``,
``shardbroker_disk_written_bytes_total`` (each ``{worker}``), and
``shardbroker_data_dir_{size,free}_bytes``.

Invariants: read at scrape time, nothing cached but the boot time; a worker that exits while being
read is left out of that scrape, and a restarted worker's counters start again from 0, as a new
process's do.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shardbroker.ipc import procfs
from shardbroker.ipc.procfs import CLOCK_TICKS, stat_fields
from shardbroker.supervision.heartbeat import HeartbeatTable
from shardbroker.supervision.policy import SlotState

__all__ = ["DataDirSource", "WorkerProcessSource"]


class WorkerProcessSource:
    """``process_*{worker}``: each live worker's CPU, memory, start time and open files, read
    from ``/proc/<pid>`` at scrape time (Linux; elsewhere nothing), with the names and units of
    prometheus-client's ProcessCollector plus a ``worker`` label, so dashboards written for
    Prometheus' conventions work per worker. The supervisor itself is left out: it serves no
    client traffic, and its numbers under these names would read as a worker's.

    Also ``shardbroker_disk_written_bytes_total{worker}``: ``write_bytes`` of
    ``/proc/<pid>/io``, what the worker made the kernel send to the storage layer (segments,
    indexes, checkpoints, compaction; counted when pages are dirtied, so before writeback).
    Read here rather than counted in storage/ because it sees every write path at no cost to
    any of them; it resets when a worker restarts, as counters of a new process do.

    Cost: four small reads per worker plus a listdir of ``/proc/<pid>/fd`` (0.1-0.3 ms per worker
    with a few hundred files open; perf/bench_metrics.py).
    """

    def __init__(self, heartbeats: Callable[[], HeartbeatTable | None], proc: str = "/proc") -> None:
        self._heartbeats = heartbeats
        self._proc = proc
        self._page = float(os.sysconf("SC_PAGE_SIZE"))
        self._boot: float | None = None

    def _boot_time(self) -> float:
        if self._boot is None:
            with open(f"{self._proc}/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        self._boot = float(line.split()[1])
                        break
                else:
                    self._boot = 0.0
        return self._boot

    def pids(self) -> list[tuple[int, int]]:
        """(slot, pid) of the workers that may be running (not reaped yet)."""
        table = self._heartbeats()
        if table is None:
            return []
        cells: Any = table.snapshot()
        return [
            (slot, int(pid))
            for slot, (pid, state) in enumerate(
                zip(cells["pid"].tolist(), cells["state"].tolist(), strict=True)
            )
            if pid > 0 and state != SlotState.DEAD
        ]

    def __call__(self) -> Iterator[Metric]:
        w = ["worker"]
        cpu = CounterMetricFamily("process_cpu_seconds", "User and system CPU time", labels=w)
        rss = GaugeMetricFamily("process_resident_memory_bytes", "Resident memory", labels=w)
        vms = GaugeMetricFamily("process_virtual_memory_bytes", "Virtual memory", labels=w)
        start = GaugeMetricFamily(
            "process_start_time_seconds", "Start time, seconds since the epoch", labels=w
        )
        fds = GaugeMetricFamily("process_open_fds", "Open file descriptors", labels=w)
        written = CounterMetricFamily(
            "shardbroker_disk_written_bytes", "Bytes the worker sent to the storage layer", labels=w
        )
        for slot, pid in self.pids():
            base = f"{self._proc}/{pid}"
            try:
                fields = stat_fields(pid, self._proc)
                with open(f"{base}/io", "rb") as f:
                    io = dict(line.split(b": ", 1) for line in f.read().splitlines())
                open_fds = len(os.listdir(f"{base}/fd"))
            except (OSError, IndexError, ValueError):
                continue  # exited meanwhile, or not Linux
            label = [str(slot)]
            cpu.add_metric(label, (int(fields[procfs.UTIME]) + int(fields[procfs.STIME])) / CLOCK_TICKS)
            start.add_metric(label, self._boot_time() + int(fields[procfs.START_TIME]) / CLOCK_TICKS)
            vms.add_metric(label, float(fields[procfs.VSIZE]))
            rss.add_metric(label, int(fields[procfs.RSS_PAGES]) * self._page)
            fds.add_metric(label, float(open_fds))
            written.add_metric(label, float(io.get(b"write_bytes", b"0")))
        yield from (cpu, rss, vms, start, fds, written)


class DataDirSource:
    """``shardbroker_data_dir_{size,free}_bytes``: the file system holding the data dir
    (``statvfs``; free = what an unprivileged process may still use), for the disk-nearly-full
    alert. One system call per scrape."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self) -> Iterator[Metric]:
        try:
            st = os.statvfs(self.data_dir)
        except OSError:
            return
        size = GaugeMetricFamily("shardbroker_data_dir_size_bytes", "Size of the data dir's file system")
        size.add_metric([], float(st.f_blocks * st.f_frsize))
        free = GaugeMetricFamily("shardbroker_data_dir_free_bytes", "Bytes still available in the data dir")
        free.add_metric([], float(st.f_bavail * st.f_frsize))
        yield size
        yield free
