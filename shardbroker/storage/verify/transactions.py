"""Checking a partition's ``.txnindex`` files against its ABORT markers, and its producer state
snapshots (layouts: transaction_index.py, producer_snapshot.py).

The expected entries come from replaying the whole log from the log start offset with the
broker's own ProducerStateManager (no snapshot), each aborted transaction landing in the
segment that holds its marker: every ABORT that ends an open transaction has its entry, and
every entry names such a marker. An entry whose transaction began below the log start (its
data deleted by retention) cannot be recomputed: the marker must exist, its first offset and
LSO are taken as written. A wrong index is repairable in the segments the broker's recovery
scans (it rebuilds their index), damage in the others: a read_committed consumer would be told
the wrong aborted transactions and deliver aborted records (or drop committed ones).

In a compacted partition the cleaner has removed aborted records and kept their markers (and
the entries of those whose records it removed, as Kafka does, until the markers' delete
horizon), so the replay cannot recompute every entry. There the rule is what a read_committed
consumer needs: every aborted transaction that still has records in the log has an entry whose
range covers them (its first offset and last stable offset at or below the replay's), and every
entry names an ABORT marker of its producer; a transaction left with empty batches only (kept
for their producer's sequence numbers) needs none.

A snapshot that fails its CRC or framing is repairable: the broker deletes it and replays the
log instead.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

import numpy as np

from shardbroker.protocol.record_batch_header import CONTROL_BIT
from shardbroker.storage.errors import InvalidRecordError
from shardbroker.storage.file_names import producer_snapshot_file, txn_index_file
from shardbroker.storage.producer_snapshot import CorruptSnapshotError, read_snapshot
from shardbroker.storage.producer_state import ProducerStateManager, read_marker
from shardbroker.storage.transaction_index import ENTRY_SIZE, AbortedTxn, decode_entries
from shardbroker.storage.verify.problems import Problem, Severity, capped
from shardbroker.storage.verify.segments import SegmentScan

__all__ = ["read_txn_index", "verify_snapshots", "verify_txn_indexes"]

_HINT: Final = {
    Severity.REPAIRABLE: "the broker rebuilds this index when it next starts (the segment is recovered)",
    Severity.DAMAGE: (
        "with the broker stopped, remove recovery-point-offset-checkpoint: the broker then recovers "
        "every segment and rebuilds every index"
    ),
}


def read_txn_index(path: Path) -> tuple[list[AbortedTxn], int]:
    """The whole entries of a ``.txnindex`` (none if the file does not exist) and its size."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    rows = decode_entries(data)
    txns = [
        AbortedTxn(
            int(r["producer_id"]),
            int(r["first_offset"]),
            int(r["last_offset"]),
            int(r["last_stable_offset"]),
            int(r["version"]),
        )
        for r in rows
    ]
    return txns, len(data)


def _aborts(scan: SegmentScan, fd: int) -> dict[int, int]:
    """ABORT markers of a segment: offset -> producer id."""
    h = scan.headers
    n = scan.valid_batches
    found: dict[int, int] = {}
    for i in np.flatnonzero((h.attributes[:n] & CONTROL_BIT) != 0).tolist():
        try:
            marker = read_marker(os.pread(fd, int(h.sizes[i]), int(h.positions[i])))
        except InvalidRecordError:
            continue
        if marker.is_abort:
            found[int(h.base_offsets[i])] = int(h.producer_ids[i])
    return found


def verify_txn_indexes(
    directory: Path,
    scans: list[SegmentScan],
    log_start_offset: int,
    recovered_from: int,
    *,
    live: bool = False,
    compacted: bool = False,
) -> list[Problem]:
    """Findings in the ``.txnindex`` of each scanned segment (``scans`` in offset order; the
    segments based at or above ``recovered_from`` are the ones the broker's recovery scans).
    ``live``: a broker appends meanwhile, so entries for markers past the scanned end are new.
    ``compacted``: the log cleaner's rule (module docstring)."""
    state = ProducerStateManager()
    out: list[Problem] = []
    for k, scan in enumerate(scans):
        expected: list[AbortedTxn] = []
        try:
            fd = os.open(scan.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # deleted while checked (retention): the segment check said so
        try:
            state.load_headers(scan.headers, scan.valid_batches, log_start_offset, fd, expected.append)
            aborts = _aborts(scan, fd)
        finally:
            os.close(fd)
        severity = Severity.REPAIRABLE if scan.base_offset >= recovered_from else Severity.DAMAGE
        path = txn_index_file(directory, scan.base_offset, scan.file_suffix)
        recorded, size = read_txn_index(path)
        if live:
            recorded = [t for t in recorded if t.last_offset < scan.next_offset]
        if compacted:
            expected = [e for e in expected if _has_records(scans[: k + 1], e)]
        problems = _compare(
            path, scan, recorded, size, expected, aborts, log_start_offset, severity, compacted
        )
        out += capped(problems)
    return out


def _has_records(scans: list[SegmentScan], txn: AbortedTxn) -> bool:
    """Does a data batch of ``txn``'s producer with records lie in its offsets?"""
    for scan in scans:
        h = scan.headers
        n = scan.valid_batches
        base = h.base_offsets[:n]
        data = (
            (h.producer_ids[:n] == txn.producer_id)
            & ((h.attributes[:n] & CONTROL_BIT) == 0)
            & (h.record_counts[:n] > 0)
            & (base >= txn.first_offset)
            & (base <= txn.last_offset)
        )
        if data.any():
            return True
    return False


def _compare(
    path: Path,
    scan: SegmentScan,
    recorded: list[AbortedTxn],
    size: int,
    expected: list[AbortedTxn],
    aborts: dict[int, int],
    log_start: int,
    severity: Severity,
    compacted: bool,
) -> list[Problem]:
    out: list[Problem] = []
    if size % ENTRY_SIZE:
        out.append(
            Problem(
                Severity.REPAIRABLE,
                "txnindex-torn",
                path,
                f"{size} bytes is not whole {ENTRY_SIZE}-byte entries; the broker rebuilds it when it starts",
                size - size % ENTRY_SIZE,
            )
        )
    hint = _HINT[severity]
    want = {(t.producer_id, t.last_offset): t for t in expected}
    last = -1
    for n, t in enumerate(recorded):
        where = n * ENTRY_SIZE
        if t.version != 0 or t.last_offset <= last or t.last_offset < scan.base_offset:
            out.append(
                Problem(
                    Severity.REPAIRABLE,
                    "txnindex-order",
                    path,
                    f"entry {n} (version {t.version}, lastOffset {t.last_offset}) is out of order, "
                    f"before the segment or of an unknown version; the broker's sanity check "
                    f"refuses it and rebuilds the index when it starts",
                    where,
                    t.last_offset,
                )
            )
        last = max(last, t.last_offset)
        e = want.pop((t.producer_id, t.last_offset), None)
        if e is None:
            marker = aborts.get(t.last_offset) == t.producer_id
            if not (marker and (compacted or t.first_offset < log_start)):
                out.append(
                    Problem(
                        severity,
                        "txnindex-extra",
                        path,
                        f"entry for producer {t.producer_id} ending at {t.last_offset} names no "
                        f"aborted transaction of the log; {hint}",
                        where,
                        t.last_offset,
                    )
                )
        elif (e.first_offset, e.last_stable_offset) != (t.first_offset, t.last_stable_offset) and not (
            t.first_offset < log_start
            or t.last_stable_offset < log_start
            or (
                compacted
                and t.first_offset <= e.first_offset
                and t.last_stable_offset <= e.last_stable_offset
            )
        ):
            out.append(
                Problem(
                    severity,
                    "txnindex-wrong",
                    path,
                    f"entry for producer {t.producer_id} ending at {t.last_offset} says firstOffset "
                    f"{t.first_offset}, lastStableOffset {t.last_stable_offset}; the log says "
                    f"{e.first_offset}, {e.last_stable_offset}; {hint}",
                    where,
                    t.last_offset,
                )
            )
    for e in want.values():
        out.append(
            Problem(
                severity,
                "txnindex-missing",
                path,
                f"the ABORT marker at {e.last_offset} (producer {e.producer_id}, transaction from "
                f"{e.first_offset}) has no entry: read_committed consumers would deliver its "
                f"records; {hint}",
                None,
                e.last_offset,
            )
        )
    return out


def verify_snapshots(directory: Path, offsets: list[int]) -> list[Problem]:
    """A producer state snapshot that cannot be read back."""
    out: list[Problem] = []
    for off in offsets:
        path = producer_snapshot_file(directory, off)
        try:
            read_snapshot(path)
        except FileNotFoundError:
            continue
        except CorruptSnapshotError as exc:
            out.append(
                Problem(
                    Severity.REPAIRABLE,
                    "snapshot",
                    path,
                    f"{exc}; the broker deletes it and replays the log instead",
                )
            )
        except OSError as exc:
            out.append(Problem(Severity.DAMAGE, "unreadable", path, f"cannot read: {exc.strerror or exc}"))
    return out
