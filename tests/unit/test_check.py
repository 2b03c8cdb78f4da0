"""``shardbroker check DATA_DIR``, in-process, on data dirs built with the storage and metadata-log
code and then damaged: the exit codes (0 clean, 1 damage, 2 usage, 3 repairable only), the exact
finding lines, the metadata log's frames and replay, JSON, progress on stderr, and that it changes
nothing it reads."""

from __future__ import annotations

import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli import check
from shardbroker.cli.main import main
from shardbroker.config.log_config import LogConfig
from shardbroker.control.controller_state import replay
from shardbroker.control.metadata_log import FRAME, LOCK_FILE, METADATA_DIR, MetadataLog, encode_frame
from shardbroker.storage import file_names as fn
from shardbroker.storage.leader_epoch_checkpoint import write_leader_epochs
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.partition_metadata import write_partition_metadata
from tests.unit.storage_batches import Clock, build_batch

CFG = LogConfig(segment_bytes=32 * 1024, index_interval_bytes=512, segment_index_bytes=4096)


def topic_record(name: str, partitions: int, offset: int) -> dict[str, Any]:
    return {
        "type": "topic",
        "name": name,
        "id": str(uuid.uuid4()),
        "configs": {},
        "partitions": [[0, 0]] * partitions,
        "offset": offset,
    }


def make_data_dir(root: Path, partitions: int = 2, batches: int = 200) -> Path:
    """A data dir as a cleanly stopped broker leaves it: metadata (topic ``t``) and logs."""
    records = [topic_record("t", partitions, 0), {"type": "producer_ids", "next": 1000, "offset": 1}]
    meta = MetadataLog(root)
    meta.open()
    meta.append(records, replay(records))
    meta.close()
    for p in range(partitions):
        log = PartitionLog.open(root / f"t-{p}", CFG, clock=Clock())
        for i in range(batches):
            log.append(build_batch(1 + i % 3, value_size=90 + i % 50, timestamp=1000 + i))
        log.close()
        write_partition_metadata(root / f"t-{p}", uuid.UUID(records[0]["id"]))
        write_leader_epochs(root / f"t-{p}", [(0, 0)])
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def lines(out: str, severity: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(f"{severity}: ")]


def flip(path: Path, position: int) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([os.pread(fd, 1, position)[0] ^ 0x01]), position)
    finally:
        os.close(fd)


def test_clean_data_dir_exits_0_and_changes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_data_dir(tmp_path)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}
    code, out, err = run(capsys, str(root), "--verbose")
    assert code == check.EXIT_CLEAN, out
    assert lines(out, "damage") == lines(out, "repairable") == lines(out, "note") == []
    assert "t-0: 2 segments, 200 batches, 399 records" in out
    assert "and 2 metadata records" in out and out.splitlines()[-1] == "result: clean"
    assert err == ""
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}
    assert after == before


def test_corrupt_batch_exits_1_naming_file_position_offset_batch(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_data_dir(tmp_path)
    seg = root / "t-1" / "00000000000000000000.log"
    data = seg.read_bytes()
    pos = 0
    for _ in range(25):  # the 26th batch
        pos += 12 + struct.unpack_from(">i", data, pos + 8)[0]
    base = struct.unpack_from(">q", data, pos)[0]
    flip(seg, pos + 70)
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_DAMAGED
    damage = lines(out, "damage")
    assert damage[0].startswith(
        f"damage: t-1/00000000000000000000.log: position {pos}, offset {base}, batch 25: "
        "CRC-32C mismatch: stored "
    )
    assert "recovery would cut the log here" in damage[0]
    assert out.splitlines()[-1] == "result: DAMAGED"
    assert "(1 damaged partitions)" in out


@pytest.mark.parametrize(
    ("name", "text", "finding"),
    [
        (
            fn.PARTITION_METADATA_FILE,
            "version: 0\ntopic_id: not-a-topic-id\n",
            "repairable: t-1/partition.metadata: topic_id 'not-a-topic-id' is not a base64 topic id of "
            "16 bytes; the broker rewrites it with the topic's id when it opens the partition",
        ),
        (
            fn.LEADER_EPOCH_CHECKPOINT,
            "0\n2\n0 0\n",
            "repairable: t-1/leader-epoch-checkpoint: {path}: expected 2 entries, found 1; "
            "the broker starts a new epoch history when it opens the partition",
        ),
    ],
)
def test_malformed_partition_files_exit_3(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, name: str, text: str, finding: str
) -> None:
    root = make_data_dir(tmp_path)
    (root / "t-1" / name).write_text(text)
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_REPAIRABLE, out
    assert lines(out, "repairable") == [finding.format(path=root / "t-1" / name)]
    assert lines(out, "damage") == []


def test_deleted_partition_dir_is_a_note(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = make_data_dir(tmp_path)
    doomed = fn.delete_dir(root / "t-1")
    os.rename(root / "t-1", doomed)
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_CLEAN, out
    assert lines(out, "note") == [
        f"note: {doomed.name}: a deleted partition's directory; the broker removes it "
        "(at the latest when it starts)"
    ]


def test_torn_tail_only_exits_3(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = make_data_dir(tmp_path, partitions=1)
    log = PartitionLog.open(root / "t-0", CFG, clock=Clock())  # opened again: no clean-shutdown marker
    log.append(build_batch(3, value_size=200))
    seg = log.segments[-1]
    path, size = seg.log_path, seg.size
    for s in log.segments:
        s.close()  # a crash: nothing flushed or trimmed
    os.truncate(path, size - 10)
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_REPAIRABLE, out
    assert [line.split(": ")[0:2] for line in lines(out, "repairable")] == [
        ["repairable", f"t-0/{path.name}"]
    ]
    assert "batch declares" in out and "only" in out


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run(capsys, str(tmp_path / "nope"))
    assert (code, out) == (
        2,
        "",
    ) and err == f"shardbroker check: error: no such directory: {tmp_path / 'nope'}\n"
    (tmp_path / "file").write_text("")
    assert run(capsys, str(tmp_path / "file"))[0] == 2
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, str(tmp_path / "empty"))
    assert code == 2 and "is not a shardbroker data dir" in err


def test_metadata_log_torn_tail_is_repairable_and_a_bad_middle_frame_is_damage(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_data_dir(tmp_path, partitions=1)
    log_path = root / METADATA_DIR / "metadata.log"
    frames = log_path.read_bytes()
    second = FRAME.size + FRAME.unpack_from(frames, 0)[0]
    log_path.write_bytes(frames + encode_frame(topic_record("u", 1, 2))[:-4])
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_REPAIRABLE
    assert lines(out, "repairable")[0].startswith(
        f"repairable: {METADATA_DIR}/metadata.log: position {len(frames)}: frame 2 after metadata offset 1: "
        "frame declares"
    )
    log_path.write_bytes(frames + encode_frame(topic_record("u", 1, 2)))
    flip(log_path, second + FRAME.size + 3)  # the second record's JSON, under its CRC; one follows
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_DAMAGED
    assert lines(out, "damage")[0].startswith(
        f"damage: {METADATA_DIR}/metadata.log: position {second}: "
        "frame 1 after metadata offset 0: CRC-32C mismatch"
    )


def test_metadata_record_that_does_not_replay_and_corrupt_snapshot(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_data_dir(tmp_path, partitions=1)
    log_path = root / METADATA_DIR / "metadata.log"
    with open(log_path, "ab") as f:
        f.write(encode_frame({"type": "delete_topic", "id": str(uuid.uuid4()), "offset": 2}))
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_DAMAGED
    assert "record 2 does not apply (delete of unknown topic id" in lines(out, "damage")[0]
    (root / METADATA_DIR / "snapshot.bin").write_bytes(b"\x00\x00\x00\x05\x00\x00\x00\x00junk!")
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_DAMAGED
    assert "corrupt snapshot" in lines(out, "damage")[0] and "refuses to start" in lines(out, "damage")[0]


def test_directories_and_topics_are_cross_checked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = make_data_dir(tmp_path, partitions=1)
    PartitionLog.open(root / "gone-0", CFG).close()
    PartitionLog.open(root / "t-5", CFG).close()
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_CLEAN
    assert lines(out, "note") == [
        "note: gone-0: topic 'gone' is not in the metadata log",
        "note: t-5: topic 't' has 1 partitions in the metadata log",
    ]


def test_a_running_broker_is_noted_and_its_lock_left_alone(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = make_data_dir(tmp_path, partitions=1)
    (root / LOCK_FILE).write_text(f"{os.getpid()}\n")
    code, out, _ = run(capsys, str(root))
    assert code == check.EXIT_CLEAN
    assert lines(out, "note") == [
        f"note: {LOCK_FILE}: broker pid {os.getpid()} is running on this data dir: "
        "files may change while they are read"
    ]


def test_json_document(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = make_data_dir(tmp_path)
    flip(root / "t-0" / "00000000000000000000.log", 500)
    code, out, _ = run(capsys, str(root), "--json")
    doc = json.loads(out)
    assert code == doc["exit_code"] == check.EXIT_DAMAGED and doc["result"] == "damaged"
    assert [p["topic"] + "-" + str(p["partition"]) for p in doc["partitions"]] == ["t-0", "t-1"]
    assert doc["partitions"][1]["problems"] == [] and doc["partitions"][1]["log_end_offset"] == 399
    problem = doc["partitions"][0]["problems"][0]
    assert problem["kind"] == "batch-crc" and problem["severity"] == "damage"
    assert problem["file"] == str(root / "t-0" / "00000000000000000000.log") and problem["batch"] == 2
    assert doc["metadata"] == {"records": 2, "version": 1, "topics": 1, "problems": []}
    assert doc["summary"]["damaged_partitions"] == 1


def test_progress_goes_to_stderr(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_data_dir(tmp_path)
    monkeypatch.setattr(check, "PROGRESS_INTERVAL", 0.0)
    code, out, err = run(capsys, str(root))
    assert code == 0 and "partitions" not in out.split("checked")[0]
    assert "check: 2/2 partitions, " in err and " read, " in err
