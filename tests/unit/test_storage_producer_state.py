"""Idempotent producers: duplicates, sequence and epoch checks, rebuild from the log."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.errors import InvalidProducerEpochError, OutOfOrderSequenceError
from shardbroker.storage.log import PartitionLog
from tests.unit.storage_batches import Clock, build_batch

CFG = LogConfig(segment_bytes=4096, index_interval_bytes=256)


def idem(n: int, seq: int, pid: int = 42, epoch: int = 0) -> bytearray:
    return build_batch(n, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def test_sequences_duplicates_and_epochs(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", CFG, clock=Clock())
    a = log.append(idem(3, 0))
    b = log.append(idem(2, 3))
    size = log.size_in_bytes
    dup = log.append(idem(3, 0))  # a retry of the first batch
    assert dup.duplicate and (dup.first_offset, dup.last_offset) == (a.first_offset, a.last_offset)
    assert log.size_in_bytes == size
    with pytest.raises(OutOfOrderSequenceError) as info:
        log.append(idem(1, 7))
    assert info.value.error_code == 45
    with pytest.raises(OutOfOrderSequenceError):
        log.append(idem(1, 3, epoch=1))  # a new epoch starts at 0
    log.append(idem(1, 0, epoch=1))
    with pytest.raises(InvalidProducerEpochError) as info2:
        log.append(idem(1, 5, epoch=0))
    assert info2.value.error_code == 47
    log.append(idem(1, 99, pid=7))  # an unknown producer may start anywhere
    log.append(build_batch(1))  # non-idempotent batches are not tracked
    assert b.last_offset == 4
    assert set(log.producer_state.producers) == {42, 7}


def test_producer_state_is_rebuilt_on_open(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", CFG, clock=Clock())
    for i in range(40):
        last = log.append(
            build_batch(2, producer_id=42, producer_epoch=0, base_sequence=2 * i, value_size=50)
        )
    assert len(log.segments) >= 2
    log.close()
    for clean in (True, False):
        log = PartitionLog.open(tmp_path / "t-0", CFG, clock=Clock())
        dup = log.append(build_batch(2, producer_id=42, producer_epoch=0, base_sequence=78, value_size=50))
        assert dup.duplicate and dup.first_offset == last.first_offset
        with pytest.raises(OutOfOrderSequenceError):
            log.append(build_batch(1, producer_id=42, producer_epoch=0, base_sequence=81))
        if clean:
            log.close()
        else:
            for seg in log.segments:
                seg.close()


def test_retention_forgets_producers_whose_batches_are_gone(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", CFG, clock=Clock())
    log.append(idem(1, 0, pid=1))
    for i in range(30):
        log.append(idem(2, 2 * i, pid=2))
    log.delete_records(log.log_end_offset - 1)
    assert set(log.producer_state.producers) == {2}
    log.append(idem(1, 50, pid=1))  # its state is gone: any sequence is accepted again
    log.close()


def test_several_batches_of_one_producer_in_one_append(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path / "t-0", CFG, clock=Clock())
    info = log.append([idem(2, 0), idem(3, 2), idem(1, 0, pid=9)])
    assert (info.first_offset, info.last_offset) == (0, 5)
    with pytest.raises(OutOfOrderSequenceError):
        log.append([idem(1, 5), idem(1, 7)])  # the second is out of order: nothing is written
    assert log.log_end_offset == 6
    dup = log.append([idem(3, 2)])
    assert dup.duplicate and (dup.first_offset, dup.last_offset) == (2, 4)
    assert log.append([idem(1, 5), idem(1, 6)]).first_offset == 6
    log.close()
