"""broker/log_cleaner_service.py's choices with an in-thread Cleaner (the child process is covered
by tests/integration/test_compaction.py): the most due partition first, nothing for partitions
that are not compacted or not due, uncleanable partitions left alone and forgotten when they go,
failures of every kind counted."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shardbroker.broker.log_cleaner_service import LogCleanerService
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import Cleaner, Throttler

NOW = 1_700_000_000_000
COMPACT = LogConfig().overrides({"cleanup.policy": "compact"})


@dataclass
class FakePartition:
    topic: str
    index: int
    log: PartitionLog


def filled(directory: Path, config: LogConfig, rounds: int) -> PartitionLog:
    log = PartitionLog.open(directory, config)
    for round_ in range(rounds):
        builder = RecordBatchBuilder()
        for k in range(4):
            builder.append(f"v{round_}".encode(), key=f"k{k}".encode(), timestamp=NOW)
        log.append(bytearray(builder.build()))
    log.roll()
    return log


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[list[FakePartition]]:
    made = [
        FakePartition("a", 0, filled(tmp_path / "a-0", COMPACT, 2)),
        FakePartition("b", 0, filled(tmp_path / "b-0", COMPACT, 10)),
        FakePartition("c", 0, filled(tmp_path / "c-0", LogConfig(), 10)),  # delete: never cleaned
    ]
    yield made
    for p in made:
        p.log.close()


def service(parts: list[FakePartition]) -> LogCleanerService:
    return LogCleanerService(0, BrokerConfig.load(None, {}), lambda: list(parts), wall_ms=lambda: NOW)  # type: ignore[arg-type,return-value]


def test_the_dirtiest_goes_first_and_only_compacted_partitions_are_looked_at(
    parts: list[FakePartition],
) -> None:
    svc = service(parts)
    cleaner = Cleaner(1000, Throttler(float("inf")))
    assert svc.clean_filthiest(cleaner)
    assert set(svc.counters.dirty_ratios) == {("a", 0), ("b", 0)}  # c is not compacted
    assert svc.clean_filthiest(cleaner)
    assert not svc.clean_filthiest(cleaner)  # both clean now: nothing due
    assert svc.counters.runs == 2 and svc.counters.bytes_written < svc.counters.bytes_read
    assert svc.counters.dirty_ratios == {("a", 0): 0.0, ("b", 0): 0.0}


def test_uncleanable_partitions_are_left_alone_then_forgotten_when_they_go(
    parts: list[FakePartition],
) -> None:
    seg = parts[0].log.segments[0]
    os.pwrite(seg.fd, b"\xff", seg.size - 1)  # a's data fails its CRC
    svc = service(parts)
    cleaner = Cleaner(1000, Throttler(float("inf")))
    assert not svc.clean_filthiest(cleaner)  # a first (as dirty as b, listed first): uncleanable
    assert svc.counters.uncleanable == {("a", 0)} and svc.counters.errors == 1
    assert svc.clean_filthiest(cleaner)  # b goes on
    assert not svc.clean_filthiest(cleaner)  # a is not tried again
    assert svc.counters.errors == 1
    parts[0].log.close()
    del parts[0]  # a moves away
    svc.clean_filthiest(cleaner)
    assert svc.counters.uncleanable == set()


def test_an_unexpected_failure_is_counted(parts: list[FakePartition]) -> None:
    class Broken:
        def clean(self, *_: object) -> Iterator[object]:
            raise RuntimeError("a bug")

    svc = service(parts)
    assert not svc.clean_filthiest(Broken())  # type: ignore[arg-type]
    assert svc.counters.errors == 1 and svc.counters.runs == 0


def test_progress_is_every_look_and_every_group_swapped_in(tmp_path: Path) -> None:
    """shardbroker_log_cleaner_last_progress_timestamp_seconds (the stuck-cleaner alert) moves
    at the end of every look, due partitions or not, and at every cleaned group of a clean."""
    small = COMPACT.overrides({"segment.bytes": "300"})  # one batch a segment: a group each
    log = PartitionLog.open(tmp_path / "s-0", small)
    try:
        for round_ in range(6):
            builder = RecordBatchBuilder()
            builder.append(f"v{round_}".encode() * 40, key=b"k", timestamp=NOW)
            log.append(bytearray(builder.build()))
        log.roll()
        clock = iter(range(NOW, NOW + 1000))
        stamps: list[int] = []
        svc = LogCleanerService(
            0,
            BrokerConfig.load(None, {}),
            lambda: [FakePartition("s", 0, log)],  # type: ignore[list-item]
            wall_ms=lambda: next(clock),
        )
        original = svc._progressed

        def progressed() -> None:
            original()
            stamps.append(svc.counters.last_progress_ms)

        svc._progressed = progressed  # type: ignore[method-assign]
        assert svc.counters.last_progress_ms == 0
        assert svc.clean_filthiest(Cleaner(1000, Throttler(float("inf"))))
        groups = len(stamps)
        assert groups >= 3 and stamps == sorted(set(stamps))  # each group a later moment
        looked = svc.counters.last_progress_ms
        assert not svc.clean_filthiest(Cleaner(1000, Throttler(float("inf"))))  # nothing due
        assert svc.counters.last_progress_ms > looked == stamps[-1]
    finally:
        log.close()
