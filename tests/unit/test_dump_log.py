"""``shardbroker dump-log``, in-process: Kafka's line format for batches, records and index entries,
every codec decompressed, control markers, compacted segments (sparse offsets, empty batches,
delete horizons), JSON Lines, --verify-index, the exact report on a damaged batch, and the exit
codes (0 nothing wrong, 1 problems, 2 bad usage)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.offset_index import OffsetIndex
from tests.unit.compacted_logs import HORIZON, PRODUCER, make_compacted_partition
from tests.unit.storage_batches import Clock, build_batch

CFG = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, segment_index_bytes=4096)
TS = 1_700_000_000_000


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dump-log", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def jsonl(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


@pytest.fixture
def varied(tmp_path: Path) -> Path:
    """One segment file, written directly: a batch per codec (keys, headers), an idempotent
    transactional producer's batch, and its commit marker."""
    batches = []
    offset = 0
    for codec in CompressionType:
        b = RecordBatchBuilder(compression=codec, base_offset=offset, partition_leader_epoch=0)
        b.append(f"value-{codec.name}".encode(), key=b"k", timestamp=TS, headers=[("h1", b"x"), ("h2", None)])
        b.append(b"second\nline", key=None, timestamp=TS + 5)
        batches.append(b.build())
        offset += 2
    b = RecordBatchBuilder(
        base_offset=offset,
        partition_leader_epoch=0,
        producer_id=7,
        producer_epoch=0,
        base_sequence=0,
        is_transactional=True,
    )
    b.append(b"in-txn", timestamp=TS + 10)
    batches.append(b.build())
    batches.append(
        build_control_batch(
            ControlRecordType.COMMIT,
            producer_id=7,
            producer_epoch=0,
            coordinator_epoch=3,
            timestamp=TS + 11,
            base_offset=offset + 1,
            partition_leader_epoch=0,
        )
    )
    d = tmp_path / "t-0"
    d.mkdir()
    path = fn.log_file(d, 0)
    path.write_bytes(b"".join(batches))
    return path


def test_batch_lines_follow_kafka_dump_log(capsys: pytest.CaptureFixture[str], varied: Path) -> None:
    code, out, _ = run(capsys, str(varied))
    assert code == 0
    lines = out.splitlines()
    assert lines[:2] == [f"Dumping {varied}", "Log starting offset: 0"]
    batches = [line for line in lines if line.startswith("baseOffset:")]
    assert len(batches) == len(CompressionType) + 2
    assert batches[0].startswith(
        "baseOffset: 0 lastOffset: 1 count: 2 baseSequence: -1 lastSequence: -1 producerId: -1 "
        "producerEpoch: -1 partitionLeaderEpoch: 0 isTransactional: false isControl: false "
        f"deleteHorizonMs: OptionalLong.empty position: 0 CreateTime: {TS + 5} size: "
    )
    assert batches[0].endswith(
        "magic: 2 compresscodec: none crc: " + batches[0].split("crc: ")[1].split()[0] + " isvalid: true"
    )
    codecs = [line.split("compresscodec: ")[1].split()[0] for line in batches[: len(CompressionType)]]
    assert codecs == ["none", "gzip", "snappy", "lz4", "zstd"]
    assert "producerId: 7 producerEpoch: 0" in batches[-2] and "isTransactional: true" in batches[-2]
    assert "isControl: true" in batches[-1]
    assert not any(line.startswith("|") for line in lines)  # records only when asked


def test_deep_iteration_decompresses_and_prints_data(
    capsys: pytest.CaptureFixture[str], varied: Path
) -> None:
    code, out, _ = run(capsys, str(varied), "--print-data-log")
    assert code == 0
    records = [line for line in out.splitlines() if line.startswith("| ")]
    for codec in CompressionType:
        assert any(f"key: k payload: value-{codec.name}" in r for r in records), codec
    assert (
        f"| offset: 0 CreateTime: {TS} keySize: 1 valueSize: 10 sequence: -1 headerKeys: [h1,h2] key: k"
        in records[0]
    )
    assert records[1].endswith("key: null payload: second\\x0aline")  # one line per record, always
    assert "sequence: 0" in records[-2]
    assert records[-1].endswith("endTxnMarker: COMMIT coordinatorEpoch: 3")
    code, deep, _ = run(capsys, str(varied), "--deep-iteration")
    assert "payload:" not in deep and deep.count("\n| ") == len(records)


def test_json_lines(capsys: pytest.CaptureFixture[str], varied: Path) -> None:
    code, out, _ = run(capsys, str(varied), "--deep-iteration", "--json")
    assert code == 0
    objs = jsonl(out)
    assert objs[0] == {"type": "file", "file": str(varied), "kind": "log"}
    batches = [o for o in objs if o["type"] == "batch"]
    assert [b["base_offset"] for b in batches] == [0, 2, 4, 6, 8, 10, 11]
    assert batches[3]["compression"] == "lz4" and batches[3]["is_valid"] is True
    assert [o["offset"] for o in objs if o["type"] == "record"] == list(range(12))


def test_index_files_print_their_entries(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG, clock=Clock())
    for i in range(60):
        log.append(build_batch(2, value_size=100, timestamp=TS + i))
    log.close()
    entries = OffsetIndex.read_entries(fn.index_file(d, 0))
    code, out, _ = run(capsys, str(fn.index_file(d, 0)))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"Dumping {fn.index_file(d, 0)}"
    assert lines[1:] == [
        f"offset: {k} position: {v}" for k, v in zip(entries.keys, entries.values, strict=True)
    ]
    code, out, _ = run(capsys, str(fn.time_index_file(d, 0)), "--json")
    entries_t = [o for o in jsonl(out) if o["type"] == "time_index_entry"]
    assert entries_t and entries_t[-1] == {"type": "time_index_entry", "timestamp": TS + 59, "offset": 119}


def test_verify_index_reports_the_entry_that_disagrees(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = tmp_path / "t-0"
    log = PartitionLog.open(d, CFG, clock=Clock())
    for i in range(60):
        log.append(build_batch(2, value_size=100, timestamp=TS + i))
    log.close()
    index = fn.index_file(d, 0)
    assert run(capsys, str(index), "--verify-index")[0] == 0
    entries = OffsetIndex.read_entries(index)
    fd = os.open(index, os.O_WRONLY)
    os.pwrite(fd, struct.pack(">i", int(entries.values[2]) + 8), 2 * 8 + 4)
    os.close(fd)
    for target in (index, fn.log_file(d, 0)):
        code, out, _ = run(capsys, str(target), "--verify-index")
        problems = [line for line in out.splitlines() if line.startswith("damage:")]
        assert code == 1
        assert problems == [
            f"damage: {index}: position 16, offset {int(entries.keys[2])}: "
            f"entry 2 (offset {int(entries.keys[2])}, position {int(entries.values[2]) + 8}) "
            "points at a position that is not the start of a batch "
            f"(inside the batch at position {int(entries.values[2])}); remove the index file and the broker "
            "rebuilds it from the log when it starts"
        ]
    assert run(capsys, str(index))[0] == 0  # without --verify-index only the entries are printed


def test_corrupted_batch_is_reported_exactly(capsys: pytest.CaptureFixture[str], varied: Path) -> None:
    code, out, _ = run(capsys, str(varied), "--json")
    lz4 = [o for o in jsonl(out) if o["type"] == "batch"][3]
    fd = os.open(varied, os.O_RDWR)
    pos = lz4["position"] + lz4["size"] - 2
    os.pwrite(fd, bytes([os.pread(fd, 1, pos)[0] ^ 0x10]), pos)
    os.close(fd)
    code, out, _ = run(capsys, str(varied), "--json", "--deep-iteration")
    assert code == 1
    objs = jsonl(out)
    assert [o["is_valid"] for o in objs if o["type"] == "batch"] == [
        True,
        True,
        True,
        False,
        True,
        True,
        True,
    ]
    problems = [o for o in objs if o["type"] == "problem"]
    kinds = {(p["kind"], p["severity"], p["position"], p["offset"], p["batch"]) for p in problems}
    assert ("batch-crc", "damage", lz4["position"], 6, 3) in kinds
    crc = next(p for p in problems if p["kind"] == "batch-crc")
    assert crc["file"] == str(varied) and "stored" in crc["message"] and "computed" in crc["message"]


def test_usage_errors_exit_2_before_printing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, varied: Path
) -> None:
    code, out, err = run(capsys, str(varied), str(tmp_path / "00000000000000000099.log"))
    assert (code, out) == (2, "")
    assert err == f"shardbroker dump-log: error: {tmp_path / '00000000000000000099.log'}: no such file\n"
    other = tmp_path / "notes.txt"
    other.write_text("x")
    code, _, err = run(capsys, str(other))
    assert code == 2 and "not a segment or index file" in err
    code, _, err = run(capsys, str(tmp_path))
    assert code == 2 and "not a regular file" in err
    code, _, err = run(capsys)
    assert code == 2 and "name at least one FILE" in err
    deleted = varied.with_name(varied.name + ".deleted")
    deleted.write_bytes(varied.read_bytes())
    assert run(capsys, str(deleted))[0] == 0  # a file on its way out can be dumped...
    code, _, err = run(capsys, str(deleted), "--verify-index")
    assert code == 2 and "renamed" in err  # ...but has no indexes of its own to verify
    with pytest.raises(SystemExit) as exc:
        main(["dump-log", "--files", ","])
    assert exc.value.code == 2


def test_kafka_files_option_takes_a_comma_separated_list(
    capsys: pytest.CaptureFixture[str], varied: Path
) -> None:
    code, out, _ = run(capsys, "--files", f"{varied},{varied}")
    assert code == 0 and out.count(f"Dumping {varied}") == 2


def test_a_compacted_segment_prints_its_sparse_offsets_as_kafka_does(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = make_compacted_partition(tmp_path / "t-0")
    segment = fn.log_file(d, 0)
    code, out, _ = run(capsys, str(segment), "--print-data-log")
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "Log starting offset: 0"
    batches = [line.split() for line in lines if line.startswith("baseOffset:")]
    assert [(b[1], b[3], b[5]) for b in batches] == [
        ("0", "2", "2"),
        ("5", "5", "1"),
        ("6", "9", "0"),
        ("12", "13", "1"),
    ]
    # The batch kept for its producer's sequence numbers: count 0, its offsets, no record lines.
    empty = next(i for i, line in enumerate(lines) if line.startswith("baseOffset: 6 "))
    assert f"count: 0 baseSequence: 6 lastSequence: 9 producerId: {PRODUCER} producerEpoch: 0" in lines[empty]
    assert lines[empty + 1].startswith("baseOffset: 12 ")
    horizons = [
        line.split("deleteHorizonMs: ")[1].split()[0] for line in lines if line.startswith("baseOffset:")
    ]
    assert horizons == ["OptionalLong.empty"] * 3 + [f"OptionalLong[{HORIZON}]"]
    records = [line for line in lines if line.startswith("| ")]
    assert [int(r.split()[2]) for r in records] == [0, 2, 5, 13]  # each record's own offset
    # The tombstone under a delete horizon: its timestamp reads as written (re-based on the horizon).
    assert records[-1] == (
        "| offset: 13 CreateTime: 1700000000013 keySize: 3 valueSize: -1 sequence: -1 headerKeys: [] "
        "key: k13 payload: null"
    )
    assert "note:" not in out  # gaps are normal in a partition with a cleaner-offset-checkpoint

    code, out, _ = run(capsys, str(segment), "--deep-iteration", "--json")
    objs = jsonl(out)
    assert [o["delete_horizon_ms"] for o in objs if o["type"] == "batch"] == [None, None, None, HORIZON]
    assert [(o["count"], o["last_offset"]) for o in objs if o["type"] == "batch"][2] == (0, 9)
    assert [o["offset"] for o in objs if o["type"] == "record"] == [0, 2, 5, 13]


def test_gaps_outside_a_compacted_partition_are_noted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    d = make_compacted_partition(tmp_path / "t-0", checkpoint=None)
    code, out, _ = run(capsys, str(fn.log_file(d, 0)))
    assert code == 0  # notes only
    why = "normal in a compacted log, but this partition has no cleaner-offset-checkpoint"
    assert [line.split(": ", 3)[3] for line in out.splitlines() if line.startswith("note:")] == [
        f"offsets jump from 2 to 5 ({why})",
        f"offsets jump from 9 to 12 ({why})",
    ]
