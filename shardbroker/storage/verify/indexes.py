"""Checking a segment's ``.index`` and ``.timeindex`` (layouts: offset_index.py, time_index.py)
against the batches of its ``.log``, as Kafka's ``--verify-index`` does.

Index files are read through :meth:`AbstractIndex.read_entries`, never an index instance (an
instance preallocates or trims its file), and before their ``.log`` (an entry is written after
the batch it names). Entries are checked against the batch headers with ``searchsorted``, all at
once. A wrong entry is repairable when the broker rebuilds the index on its next start (the
segment is recovered, or the broker's own sanity check fails), damage when it would be served.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from shardbroker.protocol.record_batch_header import NO_TIMESTAMP
from shardbroker.storage.abstract_index import IndexEntries
from shardbroker.storage.file_names import INDEX_SUFFIX, TIME_INDEX_SUFFIX, index_file, time_index_file
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.time_index import TimeIndex
from shardbroker.storage.verify.problems import Problem, Severity, capped
from shardbroker.storage.verify.segments import SegmentScan

__all__ = ["read_segment_indexes", "verify_offset_index", "verify_segment_indexes", "verify_time_index"]

_REBUILD_HINT: Final = {
    Severity.DAMAGE: "remove the index file and the broker rebuilds it from the log when it starts",
    Severity.REPAIRABLE: "the broker rebuilds this index from the log when it next starts",
}


def _locate(sorted_values: npt.NDArray[np.int64], wanted: npt.NDArray[np.int64]) -> tuple[Any, Any]:
    """``(j, found)``: for each wanted value the slot of the first element >= it (clipped to a
    valid slot) and whether that element equals it."""
    if sorted_values.shape[0] == 0:
        zeros = np.zeros(wanted.shape[0], dtype=np.int64)
        return zeros, np.zeros(wanted.shape[0], dtype=np.bool_)
    j = np.searchsorted(sorted_values, wanted)
    jc = np.minimum(j, sorted_values.shape[0] - 1)
    return jc, (j < sorted_values.shape[0]) & (sorted_values[jc] == wanted)


def _torn_index(entries: IndexEntries, path: Path, entry_size: int) -> list[Problem]:
    """A length that is not whole entries fails the broker's own sanity check: it rebuilds."""
    if entries.file_bytes % entry_size == 0:
        return []
    whole = entries.file_bytes - entries.file_bytes % entry_size
    return [
        Problem(
            Severity.REPAIRABLE,
            "index-torn",
            path,
            f"{entries.file_bytes} bytes is not a whole number of {entry_size}-byte entries; "
            + _REBUILD_HINT[Severity.REPAIRABLE],
            whole,
        )
    ]


def verify_offset_index(
    entries: IndexEntries, path: Path, scan: SegmentScan, severity: Severity = Severity.DAMAGE
) -> list[Problem]:
    """Kafka's --verify-index for a ``.index``: each entry names a batch start in the log and that
    batch's last offset, entries strictly increase in both fields, and lie within the log."""
    out = _torn_index(entries, path, OffsetIndex.entry_size)
    n = entries.valid
    rel = entries.keys[:n]
    pos = entries.values[:n]
    offsets = rel + scan.base_offset
    h = scan.headers
    j, at_batch = _locate(h.positions, pos)
    names_last = at_batch & (h.last_offsets[j] == offsets) if len(h) else at_batch
    increasing = np.ones(n, dtype=np.bool_)
    increasing[1:] = (np.diff(rel) > 0) & (np.diff(pos) > 0)
    for i in np.flatnonzero(~(names_last & increasing)).tolist():
        o, p = int(offsets[i]), int(pos[i])
        if not increasing[i]:
            why = f"is not above entry {i - 1} (offset {int(offsets[i - 1])}, position {int(pos[i - 1])})"
        elif p >= scan.size or p < 0:
            why = f"points past the end of the log ({scan.size} bytes)"
        elif p >= h.end:
            why = f"points at or past byte {h.end}, where the log's whole batches end"
        elif not at_batch[i]:
            k = int(np.searchsorted(h.positions, p, side="right")) - 1
            inside = f" (inside the batch at position {int(h.positions[k])})" if k >= 0 and len(h) else ""
            why = f"points at a position that is not the start of a batch{inside}"
        else:
            why = f"but the batch there has lastOffset {int(h.last_offsets[j[i]])}"
        out.append(
            Problem(
                severity,
                "index-entry",
                path,
                f"entry {i} (offset {o}, position {p}) {why}; {_REBUILD_HINT[severity]}",
                i * OffsetIndex.entry_size,
                o,
            )
        )
    return capped(out)


def verify_time_index(
    entries: IndexEntries,
    path: Path,
    scan: SegmentScan,
    *,
    closed: bool,
    severity: Severity = Severity.DAMAGE,
) -> list[Problem]:
    """Kafka's --verify-index for a ``.timeindex``: each entry is (the largest batch maxTimestamp
    so far, the last offset of the batch that carried it), timestamps strictly increase, offsets
    never decrease; a ``closed`` (rolled) segment's last entry holds its largest timestamp."""
    out = _torn_index(entries, path, TimeIndex.entry_size)
    n = entries.valid
    ts = entries.keys[:n]
    offsets = entries.values[:n] + scan.base_offset
    h = scan.headers
    last = h.last_offsets
    running = (
        np.maximum.accumulate(np.maximum(h.max_timestamps, NO_TIMESTAMP)) if len(h) else h.max_timestamps
    )
    j, at_batch = _locate(last, offsets)
    carried = at_batch & (h.max_timestamps[j] == ts) & (running[j] == ts) if len(h) else at_batch
    increasing = np.ones(n, dtype=np.bool_)
    increasing[1:] = (np.diff(ts) > 0) & (np.diff(offsets) >= 0)
    for i in np.flatnonzero(~(carried & increasing)).tolist():
        t, o = int(ts[i]), int(offsets[i])
        if not increasing[i]:
            why = f"is not after entry {i - 1} (timestamp {int(ts[i - 1])}, offset {int(offsets[i - 1])})"
        elif not len(h) or o > int(last[-1]):
            why = f"names an offset past the log's last offset ({int(last[-1]) if len(h) else 'empty log'})"
        elif not at_batch[i]:
            why = "names an offset that is not the last offset of a batch"
        elif int(h.max_timestamps[j[i]]) != t:
            why = f"but the batch ending at offset {o} has maxTimestamp {int(h.max_timestamps[j[i]])}"
        else:
            why = f"but the largest timestamp up to offset {o} is {int(running[j[i]])}"
        out.append(
            Problem(
                severity,
                "timeindex-entry",
                path,
                f"entry {i} (timestamp {t}, offset {o}) {why}; {_REBUILD_HINT[severity]}",
                i * TimeIndex.entry_size,
                o,
            )
        )
    if closed and len(h) and int(running[-1]) >= 0 and (n == 0 or int(ts[-1]) != int(running[-1])):
        holder = int(np.flatnonzero(h.max_timestamps == running[-1])[0])
        out.append(
            Problem(
                severity,
                "timeindex-closing",
                path,
                f"a rolled segment's time index must end with its largest timestamp "
                f"{int(running[-1])} (offset {int(last[holder])}); "
                f"retention and ListOffsets read it there; {_REBUILD_HINT[severity]}",
                n * TimeIndex.entry_size,
                int(last[holder]),
            )
        )
    return capped(out)


def read_segment_indexes(
    directory: Path,
    base: int,
    problems: list[Problem],
    present: set[tuple[int, str]] | None = None,
    file_suffix: str = "",
) -> tuple[IndexEntries | None, IndexEntries | None]:
    """The offset and time index entries of segment ``base`` (None for a missing file, with a
    finding). ``present``: the ``(base, suffix)`` pairs a directory listing found; by default the
    files are looked for. ``file_suffix``: the indexes of a ``.swap`` segment. Read them before
    the ``.log`` (see the module docstring)."""
    out: list[IndexEntries | None] = []
    for kind, cls, name in (
        (INDEX_SUFFIX, OffsetIndex, index_file),
        (TIME_INDEX_SUFFIX, TimeIndex, time_index_file),
    ):
        path = name(directory, base, file_suffix)
        if (base, kind) not in present if present is not None else not path.exists():
            problems.append(
                Problem(
                    Severity.REPAIRABLE,
                    "index-missing",
                    path,
                    "missing; the broker rebuilds it from the log on start",
                )
            )
            out.append(None)
            continue
        out.append(cls.read_entries(path))
    return out[0], out[1]


def verify_segment_indexes(
    scan: SegmentScan,
    offset_entries: IndexEntries | None,
    time_entries: IndexEntries | None,
    *,
    closed: bool,
    recovered: bool,
) -> list[Problem]:
    """Both indexes of a segment against its scan. ``closed``: the segment was rolled (its time
    index ends with the closing entry). ``recovered``: the broker scans this segment when it next
    starts (no clean shutdown, at or past the recovery point), so index findings are repairable;
    otherwise they are damage unless the broker's own sanity check catches them."""
    rebuilt = recovered or _broker_rebuilds(offset_entries, time_entries, scan)
    severity = Severity.REPAIRABLE if rebuilt else Severity.DAMAGE
    directory, base, suffix = scan.path.parent, scan.base_offset, scan.file_suffix
    out: list[Problem] = []
    if offset_entries is not None:
        out += verify_offset_index(offset_entries, index_file(directory, base, suffix), scan, severity)
    if time_entries is not None:
        out += verify_time_index(
            time_entries, time_index_file(directory, base, suffix), scan, closed=closed, severity=severity
        )
    return out


def _broker_rebuilds(
    offset_entries: IndexEntries | None, time_entries: IndexEntries | None, scan: SegmentScan
) -> bool:
    """Does the sanity check the broker runs on the indexes of a segment it trusts
    (LogSegment.sanity_check and the index classes' sanity_check) fail, so that it rebuilds both
    indexes when it starts? Then wrong entries there are repairable; otherwise they are served."""
    if offset_entries is None or time_entries is None:
        return True
    if offset_entries.file_bytes % OffsetIndex.entry_size or time_entries.file_bytes % TimeIndex.entry_size:
        return True
    n = offset_entries.valid
    if n:
        rel = offset_entries.keys[:n]
        last_rel, last_pos = int(rel[-1]), int(offset_entries.values[n - 1])
        if last_rel <= 0 or last_pos <= 0 or last_pos >= scan.size or bool(np.any(np.diff(rel) <= 0)):
            return True
        j, at_batch = _locate(scan.headers.positions, np.array([last_pos], dtype=np.int64))
        # The broker reads the batch header at that position; inside a batch it reads garbage.
        if not at_batch[0] or int(scan.headers.last_offsets[j[0]]) != scan.base_offset + last_rel:
            return True
    m = time_entries.valid
    if m:
        offsets = time_entries.values[:m]
        if bool(np.any(np.diff(time_entries.keys[:m]) <= 0)) or offsets[0] < 0 or offsets[-1] < offsets[0]:
            return True
    return False
