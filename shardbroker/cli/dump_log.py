"""``shardbroker dump-log FILE...``: decode segment and index files, like Kafka's kafka-dump-log.
Reads files only (no broker needed), read-only, so it is safe on a running broker's data dir.

Output follows Kafka's DumpLogSegments, so scripts written for it keep working:

- ``.log``: ``Dumping FILE``, ``Log starting offset: N``, then one line per batch: baseOffset
  lastOffset count baseSequence lastSequence producerId producerEpoch partitionLeaderEpoch
  isTransactional isControl deleteHorizonMs position CreateTime|LogAppendTime (the batch's
  maxTimestamp) size magic compresscodec crc isvalid (``isvalid`` is the CRC-32C check, as in
  Kafka). With ``--deep-iteration`` one ``| offset: ...`` line per record follows its batch
  (offset, timestamp, keySize, valueSize, sequence, headerKeys; a transaction marker's type and
  coordinator epoch), compressed batches decompressed; ``--print-data-log`` adds ``key:`` and
  ``payload:`` (``null`` for a null key or value: a tombstone's payload).
- Compacted logs (storage/log_cleaner.py) print as they are: a batch keeps its baseOffset and
  lastOffset while records inside it are removed, so record offsets skip, batches skip offsets
  between them, and a batch kept only for its producer's sequence numbers shows ``count: 0`` and
  no records. ``deleteHorizonMs`` is printed as Kafka 3.1+ prints its OptionalLong:
  ``OptionalLong[<ms>]`` when the batch has the delete-horizon attribute (bit 6: its
  baseTimestamp is the horizon, after which the cleaner drops its tombstones and markers),
  ``OptionalLong.empty`` otherwise, so scripts that split Kafka's lines keep working. The
  offset-gap notes after a file are left out in a compacted partition (one with a
  ``cleaner-offset-checkpoint``), where gaps are normal.
- ``.index``: ``offset: O position: P`` per entry; ``.timeindex``: ``timestamp: T offset: O``.
- ``.txnindex``: ``version: V producerId: P firstOffset: F lastOffset: L lastStableOffset: S`` per
  aborted transaction; ``.snapshot`` (producer state): ``producerId: P producerEpoch: E
  coordinatorEpoch: C currentTxnFirstOffset: F lastTimestamp: T`` and, when the producer has a
  batch, ``firstSequence: lastSequence: lastOffset: offsetDelta: timestamp:`` (Kafka's lines;
  ``currentTxnFirstOffset`` is -1 for none where Kafka prints an empty OptionalLong).
- ``--verify-index``: every entry of the segment's ``.index`` and ``.timeindex`` is checked
  against the batches of its ``.log`` (storage/verify/indexes.py says what is checked); a
  ``.txnindex`` against the ABORT markers of the partition's log, replayed up to that segment
  (storage/verify/transactions.py).
- After each file, every problem found (a batch failing a check the broker's recovery makes, a
  torn tail, records that do not decode, index entries that disagree with the log), one line
  each: ``SEVERITY: FILE: position P, offset O, batch B: what is wrong``.
- ``--json``: the same as JSON Lines, one object per file, batch, record, index entry and
  problem, each with a ``type`` field.

Exit codes: 0 every file read and nothing wrong, 1 a problem found (or a file that cannot be
read), 2 bad usage (no such file, a name that is not a segment or index file, bad options).
Every file named is checked before anything is printed.

Speed: the batch headers come from the vectorised scan of storage/verify/segments.py; printing is a Python
line per batch (and per record with ``--deep-iteration``), so its speed is what a terminal or a
pipe takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from shardbroker.protocol.control_records import ControlRecord
from shardbroker.protocol.record_batch import InvalidRecordBatch, Record, RecordBatch
from shardbroker.protocol.record_batch_header import NO_SEQUENCE, TimestampType
from shardbroker.storage.file_names import (
    CLEANER_OFFSET_CHECKPOINT,
    INDEX_SUFFIX,
    LOG_SUFFIX,
    SNAPSHOT_SUFFIX,
    TIME_INDEX_SUFFIX,
    TXN_INDEX_SUFFIX,
    list_segment_files,
    log_file,
    offset_from_file_name,
)
from shardbroker.storage.offset_index import OffsetIndex
from shardbroker.storage.producer_snapshot import CorruptSnapshotError, read_snapshot
from shardbroker.storage.time_index import TimeIndex
from shardbroker.storage.verify.indexes import read_segment_indexes, verify_segment_indexes
from shardbroker.storage.verify.problems import Problem, Severity
from shardbroker.storage.verify.segments import LogChunk, batch_problems, scan_segment
from shardbroker.storage.verify.transactions import read_txn_index, verify_snapshots, verify_txn_indexes

__all__ = ["register"]

EXIT_OK: Final = 0
EXIT_PROBLEMS: Final = 1
EXIT_USAGE: Final = 2
_KINDS: Final = (LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, SNAPSHOT_SUFFIX)
_TIMESTAMP_NAMES: Final = {
    TimestampType.CREATE_TIME: "CreateTime",
    TimestampType.LOG_APPEND_TIME: "LogAppendTime",
}
_CONTROL_TYPES: Final = {0: "ABORT", 1: "COMMIT"}


class _Out:
    """Text lines or JSON Lines on stdout; counts the problems it was given."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        self.problems = 0

    def emit(self, kind: str, fields: dict[str, Any], text: Callable[[dict[str, Any]], str]) -> None:
        if self.json:
            print(json.dumps({"type": kind, **fields}))
        else:
            print(text(fields))

    def problem(self, p: Problem) -> None:
        if p.severity is not Severity.NOTE:
            self.problems += 1
        self.emit("problem", p.to_dict(), lambda _: p.describe())


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _optional_long(value: int | None) -> str:
    """Java's OptionalLong.toString, which Kafka's DumpLogSegments prints for deleteHorizonMs."""
    return "OptionalLong.empty" if value is None else f"OptionalLong[{value}]"


#: Control characters as backslash escapes, so a key or value cannot break the line-per-record output.
_ESCAPES: Final = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)}


def _text(data: memoryview | bytes) -> str:
    """UTF-8 text as is; invalid bytes and control characters as backslash escapes."""
    return bytes(data).decode("utf-8", "backslashreplace").translate(_ESCAPES)


# ---- .log -----------------------------------------------------------------------------------------


def _batch_fields(batch: RecordBatch, position: int, valid: bool) -> dict[str, Any]:
    codec = (
        batch.compression_type.name.lower() if batch.compression_known else f"unknown({batch.attributes & 7})"
    )
    return {
        "base_offset": batch.base_offset,
        "last_offset": batch.last_offset,
        "count": batch.records_count,
        "base_sequence": batch.base_sequence,
        "last_sequence": batch.last_sequence,
        "producer_id": batch.producer_id,
        "producer_epoch": batch.producer_epoch,
        "partition_leader_epoch": batch.partition_leader_epoch,
        "is_transactional": batch.is_transactional,
        "is_control": batch.is_control,
        "delete_horizon_ms": batch.base_timestamp if batch.has_delete_horizon else None,
        "position": position,
        "timestamp_type": _TIMESTAMP_NAMES[batch.timestamp_type],
        "max_timestamp": batch.max_timestamp,
        "size": batch.size,
        "magic": batch.magic,
        "compression": codec,
        "crc": batch.crc,
        "is_valid": valid,
    }


def _batch_line(f: dict[str, Any]) -> str:
    return (
        f"baseOffset: {f['base_offset']} lastOffset: {f['last_offset']} count: {f['count']} "
        f"baseSequence: {f['base_sequence']} lastSequence: {f['last_sequence']} "
        f"producerId: {f['producer_id']} producerEpoch: {f['producer_epoch']} "
        f"partitionLeaderEpoch: {f['partition_leader_epoch']} "
        f"isTransactional: {_bool(f['is_transactional'])} isControl: {_bool(f['is_control'])} "
        f"deleteHorizonMs: {_optional_long(f['delete_horizon_ms'])} position: {f['position']} "
        f"{f['timestamp_type']}: {f['max_timestamp']} size: {f['size']} magic: {f['magic']} "
        f"compresscodec: {f['compression']} crc: {f['crc']} isvalid: {_bool(f['is_valid'])}"
    )


def _record_fields(batch: RecordBatch, rec: Record, data: bool) -> dict[str, Any]:
    base_seq = batch.base_sequence
    f: dict[str, Any] = {
        "offset": rec.offset,
        "timestamp_type": _TIMESTAMP_NAMES[batch.timestamp_type],
        "timestamp": rec.timestamp,
        "key_size": -1 if rec.key is None else rec.key.nbytes,
        "value_size": -1 if rec.value is None else rec.value.nbytes,
        "sequence": NO_SEQUENCE if base_seq == NO_SEQUENCE else base_seq + rec.offset_delta,
        "header_keys": [h.key for h in rec.headers],
    }
    if batch.is_control:
        marker = ControlRecord.from_record(rec)
        f["end_txn_marker"] = _CONTROL_TYPES.get(marker.type, str(marker.type))
        f["coordinator_epoch"] = marker.coordinator_epoch
    elif data:
        f["key"] = None if rec.key is None else _text(rec.key)
        f["payload"] = None if rec.value is None else _text(rec.value)
    return f


def _record_line(f: dict[str, Any]) -> str:
    line = (
        f"| offset: {f['offset']} {f['timestamp_type']}: {f['timestamp']} keySize: {f['key_size']} "
        f"valueSize: {f['value_size']} sequence: {f['sequence']} headerKeys: [{','.join(f['header_keys'])}]"
    )
    if "end_txn_marker" in f:
        return f"{line} endTxnMarker: {f['end_txn_marker']} coordinatorEpoch: {f['coordinator_epoch']}"
    if "payload" in f:
        key, payload = ("null" if v is None else v for v in (f["key"], f["payload"]))
        return f"{line} key: {key} payload: {payload}"  # a tombstone's payload is null
    return line


def _dump_log(path: Path, base: int, args: argparse.Namespace, out: _Out) -> None:
    deep = args.deep_iteration or args.print_data_log
    found: list[Problem] = []
    indexes = read_segment_indexes(path.parent, base, found) if args.verify_index else (None, None)
    record_problems: list[Problem] = []
    batch_number = [0]

    def on_chunk(chunk: LogChunk) -> None:
        mv = chunk.data
        h = chunk.headers
        for i in range(len(h)):
            rel = int(h.positions[i]) - chunk.position
            batch = RecordBatch(mv[rel : rel + int(h.sizes[i])])
            f = _batch_fields(batch, int(h.positions[i]), bool(chunk.crc_ok[i]))
            out.emit("batch", f, _batch_line)
            if deep:
                try:
                    for rec in batch.records():
                        rf = _record_fields(batch, rec, args.print_data_log)
                        out.emit("record", rf, _record_line)
                except InvalidRecordBatch as exc:
                    record_problems.append(
                        Problem(
                            Severity.DAMAGE,
                            "records",
                            path,
                            f"records do not decode: {exc}",
                            int(h.positions[i]),
                            batch.base_offset,
                            batch_number[0] + i,
                        )
                    )
        batch_number[0] += len(h)

    out.emit(
        "file", {"file": str(path), "kind": "log"}, lambda f: f"Dumping {path}\nLog starting offset: {base}"
    )
    scan = scan_segment(path, base, on_chunk)
    later = _later_segments(path.parent, base)
    compacted = (path.parent / CLEANER_OFFSET_CHECKPOINT).exists()
    found += batch_problems(scan, last_segment=later == 0, later_segments=later, compacted=compacted)
    found += record_problems
    if args.verify_index:
        found += verify_segment_indexes(scan, *indexes, closed=later > 0, recovered=False)
    for p in found:
        out.problem(p)


def _later_segments(directory: Path, base: int) -> int:
    count = 0
    for name in os.listdir(directory):
        parsed = offset_from_file_name(name)
        if parsed is not None and parsed[1] == LOG_SUFFIX and not parsed[2] and parsed[0] > base:
            count += 1
    return count


# ---- indexes --------------------------------------------------------------------------------------


def _index_line(f: dict[str, Any]) -> str:
    return f"offset: {f['offset']} position: {f['position']}"


def _time_index_line(f: dict[str, Any]) -> str:
    return f"timestamp: {f['timestamp']} offset: {f['offset']}"


def _dump_index(path: Path, base: int, kind: str, args: argparse.Namespace, out: _Out) -> None:
    cls = OffsetIndex if kind == INDEX_SUFFIX else TimeIndex
    entries = cls.read_entries(path)
    out.emit("file", {"file": str(path), "kind": kind.lstrip(".")}, lambda f: f"Dumping {path}")
    for i in range(entries.valid):
        key, value = int(entries.keys[i]), int(entries.values[i])
        if cls is OffsetIndex:
            f = {"offset": base + key, "position": value}
            out.emit("index_entry", f, _index_line)
        else:
            f = {"timestamp": key, "offset": base + value}
            out.emit("time_index_entry", f, _time_index_line)
    if not args.verify_index:
        return
    log_path = log_file(path.parent, base)
    found: list[Problem] = []
    indexes = read_segment_indexes(path.parent, base, found)
    try:
        scan = scan_segment(log_path, base)
    except FileNotFoundError:
        out.problem(
            Problem(Severity.DAMAGE, "log-missing", path, f"no {log_path.name} beside it to verify against")
        )
        return
    closed = _later_segments(path.parent, base) > 0
    found += verify_segment_indexes(scan, *indexes, closed=closed, recovered=False)
    for p in found:
        if p.path == path:  # the other index was only read to judge the severity
            out.problem(p)


# ---- transactions ---------------------------------------------------------------------------------


def _txn_line(f: dict[str, Any]) -> str:
    return (
        f"version: {f['version']} producerId: {f['producer_id']} firstOffset: {f['first_offset']} "
        f"lastOffset: {f['last_offset']} lastStableOffset: {f['last_stable_offset']}"
    )


def _dump_txn_index(path: Path, base: int, args: argparse.Namespace, out: _Out) -> None:
    txns, _ = read_txn_index(path)
    out.emit("file", {"file": str(path), "kind": "txnindex"}, lambda f: f"Dumping {path}")
    for t in txns:
        f = {
            "version": t.version,
            "producer_id": t.producer_id,
            "first_offset": t.first_offset,
            "last_offset": t.last_offset,
            "last_stable_offset": t.last_stable_offset,
        }
        out.emit("aborted_txn", f, _txn_line)
    if not args.verify_index:
        return
    d = path.parent
    bases = [b for b in list_segment_files(d).bases if b <= base]
    if base not in bases:
        out.problem(Problem(Severity.DAMAGE, "log-missing", path, f"no {log_file(d, base).name} beside it"))
        return
    scans = [scan_segment(log_file(d, b), b) for b in bases]
    compacted = (d / CLEANER_OFFSET_CHECKPOINT).exists()
    for p in verify_txn_indexes(d, scans, bases[0], recovered_from=1 << 63, compacted=compacted):
        if p.path == path:
            out.problem(p)


def _snapshot_line(f: dict[str, Any]) -> str:
    line = (
        f"producerId: {f['producer_id']} producerEpoch: {f['producer_epoch']} "
        f"coordinatorEpoch: {f['coordinator_epoch']} currentTxnFirstOffset: {f['current_txn_first_offset']} "
        f"lastTimestamp: {f['last_timestamp']}"
    )
    if f["last_offset"] < 0:
        return line
    return (
        f"{line} firstSequence: {f['first_sequence']} lastSequence: {f['last_sequence']} "
        f"lastOffset: {f['last_offset']} offsetDelta: {f['offset_delta']} timestamp: {f['last_timestamp']}"
    )


def _dump_snapshot(path: Path, base: int, out: _Out) -> None:
    out.emit("file", {"file": str(path), "kind": "snapshot"}, lambda f: f"Dumping {path}")
    try:
        entries = read_snapshot(path)
    except CorruptSnapshotError:
        for p in verify_snapshots(path.parent, [base]):
            out.problem(p)
        return
    for e in entries:
        f = {
            "producer_id": e.producer_id,
            "producer_epoch": e.epoch,
            "coordinator_epoch": e.coordinator_epoch,
            "current_txn_first_offset": e.current_txn_first_offset,
            "last_timestamp": e.timestamp,
            "first_sequence": (e.last_sequence - e.offset_delta) % (1 << 31) if e.last_sequence >= 0 else -1,
            "last_sequence": e.last_sequence,
            "last_offset": e.last_offset,
            "offset_delta": e.offset_delta,
        }
        out.emit("producer", f, _snapshot_line)


# ---- command --------------------------------------------------------------------------------------


def _classify(path: Path) -> tuple[int, str, str] | str:
    """``(base offset, kind, suffix)`` of a file to dump, or why it cannot be dumped."""
    if not path.exists():
        return f"{path}: no such file"
    if not path.is_file():
        return f"{path}: not a regular file"
    parsed = offset_from_file_name(path.name)
    if parsed is None or parsed[1] not in _KINDS:
        return (
            f"{path}: not a segment or index file (expected a 20-digit base offset and "
            f"{', '.join(_KINDS)}, e.g. 00000000000000000000.log)"
        )
    return parsed


def _file_list(text: str) -> list[Path]:
    paths = [Path(p) for p in text.split(",") if p.strip()]
    if not paths:
        raise argparse.ArgumentTypeError("no file named")
    return paths


def _run(args: argparse.Namespace) -> int:
    if not args.files and not args.file_list:
        print("shardbroker dump-log: error: name at least one FILE (or --files FILE,FILE)", file=sys.stderr)
        return EXIT_USAGE
    files: list[tuple[Path, int, str]] = []
    for path in [*args.files, *args.file_list]:
        found = _classify(path)
        if isinstance(found, str):
            print(f"shardbroker dump-log: error: {found}", file=sys.stderr)
            return EXIT_USAGE
        base, kind, suffix = found
        if args.verify_index and suffix:
            print(
                f"shardbroker dump-log: error: {path}: --verify-index needs a segment's own files, "
                "not a renamed (.deleted, .cleaned, .swap) one",
                file=sys.stderr,
            )
            return EXIT_USAGE
        files.append((path, base, kind))
    out = _Out(args.json)
    failed = False
    for path, base, kind in files:
        try:
            if kind == LOG_SUFFIX:
                _dump_log(path, base, args, out)
            elif kind == TXN_INDEX_SUFFIX:
                _dump_txn_index(path, base, args, out)
            elif kind == SNAPSHOT_SUFFIX:
                _dump_snapshot(path, base, out)
            else:
                _dump_index(path, base, kind, args, out)
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            break
        except OSError as exc:
            print(f"shardbroker dump-log: error: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            failed = True
    sys.stdout.flush()
    return EXIT_PROBLEMS if failed or out.problems else EXIT_OK


def register(commands: Any) -> None:
    """Add ``dump-log`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    p = commands.add_parser(
        "dump-log",
        help="decode segment (.log), index (.index, .timeindex, .txnindex) and .snapshot files",
        description=(
            "Decode segment and index files like Kafka's kafka-dump-log: one line per batch (offsets, "
            "position, timestamp, size, codec, CRC and whether it is valid, producer fields), or per "
            "index entry, aborted transaction or producer. Reads the files only; safe on a running "
            "broker's files. Exit codes: 0 nothing wrong, 1 a problem found (listed after the file's "
            "dump), 2 bad usage."
        ),
    )
    p.add_argument(
        "files",
        nargs="*",
        type=Path,
        metavar="FILE",
        help="NNNNNNNNNNNNNNNNNNNN.log/.index/.timeindex/.txnindex/.snapshot",
    )
    p.add_argument(
        "--files",
        dest="file_list",
        type=_file_list,
        default=[],
        metavar="FILE,FILE",
        help="the same, comma-separated (Kafka's kafka-dump-log spelling)",
    )
    p.add_argument(
        "--deep-iteration", action="store_true", help="also print every record (decompressing batches)"
    )
    p.add_argument(
        "--print-data-log",
        action="store_true",
        help="also print every record with its key and value (implies --deep-iteration)",
    )
    p.add_argument(
        "--verify-index",
        action="store_true",
        help=(
            "check the segment's .index and .timeindex entries against its .log, "
            "a .txnindex against the log's ABORT markers"
        ),
    )
    p.add_argument(
        "--json", action="store_true", help="print JSON Lines (one object per line, with a type field)"
    )
    p.set_defaults(run=_run)
