"""Transactions in the producer state (Kafka's ProducerAppendInfo rules) and its snapshots."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.crc import crc32c
from shardbroker.storage import file_names as fn
from shardbroker.storage.errors import (
    InvalidProducerEpochError,
    InvalidTxnStateError,
    OutOfOrderSequenceError,
    TransactionCoordinatorFencedError,
)
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.producer_snapshot import (
    CorruptSnapshotError,
    SnapshotEntry,
    decode_snapshot,
    encode_snapshot,
)
from shardbroker.storage.producer_state import ProducerStateManager
from tests.unit.storage_batches import Clock, build_batch, marker, txn_batch

CFG = LogConfig(segment_bytes=4096, index_interval_bytes=256)


def open_log(tmp_path: Path, cfg: LogConfig = CFG) -> PartitionLog:
    return PartitionLog.open(tmp_path / "t-0", cfg, clock=Clock())


def test_a_transactional_batch_opens_a_transaction_at_its_first_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(2))
    a = log.append(txn_batch(3, 0))
    log.append(txn_batch(2, 3))  # same transaction: the first offset stays
    entry = log.producer_state.producers[42]
    assert entry.current_txn_first_offset == a.first_offset == 2
    assert log.producer_state.ongoing == {2: 42}
    log.close()


def test_open_transactions_are_ordered_by_first_offset(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for pid in (9, 3, 7):
        log.append(txn_batch(1, 0, pid=pid))
    log.append(txn_batch(1, 1, pid=9))
    assert list(log.producer_state.ongoing.items()) == [(0, 9), (1, 3), (2, 7)]
    log.append(marker(False, pid=3), allow_control=True)
    assert list(log.producer_state.ongoing.items()) == [(0, 9), (2, 7)]
    assert log.producer_state.first_undecided_offset == 0
    log.close()


@pytest.mark.parametrize("abort", [False, True])
def test_a_marker_of_the_current_epoch_ends_the_transaction(tmp_path: Path, abort: bool) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(2, 0))
    info = log.append(marker(abort, coordinator_epoch=3), allow_control=True)
    entry = log.producer_state.producers[42]
    assert info.first_offset == 2 and entry.current_txn_first_offset == -1
    assert entry.coordinator_epoch == 3 and log.producer_state.ongoing == {}
    log.append(txn_batch(1, 2))  # the next transaction continues the sequence (same epoch)
    assert log.producer_state.ongoing == {3: 42}
    log.close()


def test_a_non_transactional_batch_during_a_transaction_is_refused(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0))
    size = log.size_in_bytes
    plain = build_batch(1, producer_id=42, producer_epoch=0, base_sequence=1)
    with pytest.raises(InvalidTxnStateError) as info:
        log.append(plain)  # the one-batch path
    assert info.value.error_code == 48
    with pytest.raises(InvalidTxnStateError):
        log.append([bytes(plain)])  # the general path
    assert log.size_in_bytes == size
    log.close()


def test_a_marker_with_an_older_epoch_is_fenced_and_not_written(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, epoch=1))
    size = log.size_in_bytes
    with pytest.raises(InvalidProducerEpochError) as info:
        log.append(marker(True, epoch=0), allow_control=True)
    assert info.value.error_code == 47
    assert log.size_in_bytes == size and log.producer_state.ongoing == {0: 42}
    log.append(marker(True, epoch=2), allow_control=True)  # a newer epoch (the coordinator bumped it)
    assert log.producer_state.producers[42].epoch == 2 and log.producer_state.ongoing == {}
    log.close()


def test_a_marker_from_an_older_coordinator_epoch_is_fenced(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0))
    log.append(marker(False, coordinator_epoch=5), allow_control=True)
    log.append(txn_batch(1, 1))
    with pytest.raises(TransactionCoordinatorFencedError) as info:
        log.append(marker(False, coordinator_epoch=4), allow_control=True)
    assert info.value.error_code == 52
    assert log.producer_state.ongoing == {2: 42}
    log.close()


def test_transaction_version_2_markers_must_bump_the_epoch_except_a_retry(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, epoch=3))
    with pytest.raises(InvalidProducerEpochError):
        log.append(marker(False, epoch=3), allow_control=True, transaction_version=2)
    log.append(marker(False, epoch=4), allow_control=True, transaction_version=2)
    # KAFKA-19999: the same marker again, nothing open: a retry, written without error.
    log.append(marker(False, epoch=4), allow_control=True, transaction_version=2)
    log.append(marker(False, epoch=4), allow_control=True, transaction_version=0)  # legacy: >= is fine
    assert log.log_end_offset == 4
    log.close()


def test_a_marker_for_an_unknown_producer_is_written_and_completes_nothing(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(txn_batch(1, 0, pid=1))
    info = log.append(marker(True, pid=77, epoch=2, coordinator_epoch=1), allow_control=True)
    assert info.first_offset == 1 and log.log_end_offset == 2
    assert log.producer_state.ongoing == {0: 1}
    assert log.segments[-1].txn_index.all_aborted_txns() == []
    entry = log.producer_state.producers[77]
    assert (entry.epoch, entry.coordinator_epoch, entry.current_txn_first_offset) == (2, 1, -1)
    # Its next data batch must start at sequence 0 (it has an epoch now, as in Kafka).
    with pytest.raises(OutOfOrderSequenceError):
        log.append(txn_batch(1, 5, pid=77, epoch=2))
    log.close()


def test_markers_and_data_in_one_append(tmp_path: Path) -> None:
    """Several batches of one producer in one append are checked as they come (ProducerAppendInfo)."""
    log = open_log(tmp_path)
    log.append(txn_batch(2, 0))
    info = log.append(
        [bytes(txn_batch(1, 2)), bytes(marker(True)), bytes(txn_batch(1, 3))], allow_control=True
    )
    assert info.first_offset == 2
    assert log.producer_state.ongoing == {4: 42}
    assert [t[:4] for t in log.segments[-1].txn_index.all_aborted_txns()] == [(42, 0, 3, 4)]
    plain = build_batch(1, producer_id=42, producer_epoch=0, base_sequence=5)
    with pytest.raises(InvalidTxnStateError):  # marker, a new transaction, plain data: refused whole
        log.append([bytes(marker(False)), bytes(txn_batch(1, 4)), bytes(plain)], allow_control=True)
    assert log.log_end_offset == 5 and log.producer_state.ongoing == {4: 42}
    log.close()


def test_retention_keeps_a_producer_with_an_open_transaction(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(segment_bytes=1024, index_interval_bytes=256))
    log.append(txn_batch(1, 0, pid=1, value_size=300))
    log.append(build_batch(1, producer_id=2, producer_epoch=0, base_sequence=0, value_size=300))
    for _ in range(6):
        log.append(build_batch(1, value_size=300))
    log.delete_records(log.log_end_offset - 1)
    assert set(log.producer_state.producers) == {1}  # 2's batches are gone; 1 still holds the LSO
    log.close()


# ---- snapshots ----------------------------------------------------------------------------------


def test_snapshot_bytes_are_kafkas_version_1_layout() -> None:
    entry = SnapshotEntry(7, 2, 41, 1000, 4, 1_700_000_000_000, 3, 990)
    data = encode_snapshot([entry])
    body = struct.pack(">i", 1) + struct.pack(">qhiqiqiq", 7, 2, 41, 1000, 4, 1_700_000_000_000, 3, 990)
    assert data == struct.pack(">hI", 1, crc32c(body)) + body
    assert decode_snapshot(data) == [entry]
    assert decode_snapshot(encode_snapshot([])) == []


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],  # torn
        lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:],  # a flipped bit: CRC
        lambda b: struct.pack(">h", 2) + b[2:],  # unknown version
        lambda b: b"",
    ],
)
def test_a_damaged_snapshot_is_refused(damage: object) -> None:
    data = encode_snapshot([SnapshotEntry(7, 2, 41, 1000, 4, 5, 3, -1)])
    with pytest.raises(CorruptSnapshotError):
        decode_snapshot(damage(data))  # type: ignore[operator]


def test_snapshot_round_trip_keeps_transactions_and_the_last_batch(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(3, producer_id=5, producer_epoch=1, base_sequence=10, timestamp=77_000))
    log.roll()  # a snapshot at 3 (the roll's), then one at 5 (the close's)
    log.append(txn_batch(2, 0, pid=6))
    log.close()
    snaps = sorted(p.name for p in (tmp_path / "t-0").glob("*.snapshot"))
    assert snaps == [fn.producer_snapshot_file(tmp_path, n).name for n in (3, 5)]
    ps = ProducerStateManager(tmp_path / "t-0")
    ps.rebuild([], 0, 5, [3, 5])  # from the newest snapshot alone
    e5, e6 = ps.producers[5], ps.producers[6]
    assert (e5.epoch, e5.last_seq, e5.last_offset, e5.batches[-1].first_seq, e5.last_timestamp) == (
        1,
        12,
        2,
        10,
        77_000,
    )
    assert e6.current_txn_first_offset == 3 and ps.ongoing == {3: 6}


def test_a_clean_open_replays_nothing_after_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    for i in range(60):
        log.append(txn_batch(1, i, value_size=100))
    assert log.segment_count > 2
    log.close()
    replayed: list[int] = []
    original = ProducerStateManager.load_headers
    monkeypatch.setattr(
        ProducerStateManager,
        "load_headers",
        lambda self, h, *a, **k: (replayed.append(len(h)), original(self, h, *a, **k))[1],
    )
    log = open_log(tmp_path)
    assert replayed == [] and log.producer_state.ongoing == {0: 42}
    assert log.producer_state.producers[42].last_seq == 59
    log.close()


def test_a_corrupt_snapshot_falls_back_to_an_older_one_or_the_log(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    for i in range(60):
        log.append(txn_batch(1, i, value_size=100))
    leo = log.log_end_offset
    log.close()
    d = tmp_path / "t-0"
    fn.producer_snapshot_file(d, leo).write_bytes(b"\x00\x01garbage")
    log = open_log(tmp_path)
    assert not fn.producer_snapshot_file(d, leo).exists()  # deleted as Kafka does
    assert log.producer_state.ongoing == {0: 42} and log.producer_state.producers[42].last_seq == 59
    log.close()


def test_roll_writes_a_snapshot_at_the_new_base_and_retention_deletes_it(tmp_path: Path) -> None:
    cfg = LogConfig(segment_bytes=1024, index_interval_bytes=256)
    log = open_log(tmp_path, cfg)
    for i in range(12):
        log.append(build_batch(1, producer_id=1, producer_epoch=0, base_sequence=i, value_size=300))
    d = tmp_path / "t-0"
    bases = [s.base_offset for s in log.segments]
    snaps = sorted(int(p.name.split(".")[0]) for p in d.glob("*.snapshot"))
    assert snaps == bases[1:]
    state = decode_snapshot(fn.producer_snapshot_file(d, bases[2]).read_bytes())
    assert [(e.producer_id, e.last_offset, e.last_sequence) for e in state] == [
        (1, bases[2] - 1, bases[2] - 1)
    ]
    log.delete_records(bases[3])
    snaps = sorted(int(p.name.split(".")[0]) for p in d.glob("*.snapshot"))
    assert snaps == bases[3:]
    log.close()
