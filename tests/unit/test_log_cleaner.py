"""storage/log_cleaner.py + log_cleaner_manager.py on real PartitionLogs: Kafka's compaction rules,
the swap and its recovery, several passes with a small key map, and refusals."""

from __future__ import annotations

import os
import random
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.control_records import ControlRecordType, build_control_batch
from shardbroker.protocol.record_batch import RecordBatch, iter_batches
from shardbroker.protocol.record_batch_builder import RecordBatchBuilder
from shardbroker.protocol.record_batch_header import DELETE_HORIZON_BIT
from shardbroker.protocol.uniform_batch import encode_uniform_batch, uniform_records_size
from shardbroker.storage import file_names as fn
from shardbroker.storage.log import PartitionLog
from shardbroker.storage.log_cleaner import SYSCALL_BYTES, Cleaner, Throttler, UncleanableLogError
from shardbroker.storage.log_cleaner_manager import clean_partition, read_cleaner_checkpoint

NOW = 1_700_000_000_000
DAY = 86_400_000
COMPACT = LogConfig().overrides({"cleanup.policy": "compact", "segment.bytes": "4096"})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock) -> Iterator[PartitionLog]:
    opened = PartitionLog.open(tmp_path / "t-0", COMPACT, clock=clock)
    yield opened
    opened.close()


def cleaner(max_keys: int = 10_000) -> Cleaner:
    return Cleaner(max_keys, Throttler(float("inf")))


def put(
    log: PartitionLog,
    records: list[tuple[bytes | None, bytes | None]],
    *,
    codec: CompressionType = CompressionType.NONE,
    ts: int = NOW,
    producer: tuple[int, int, int] | None = None,
    transactional: bool = False,
) -> int:
    """Append one batch; returns its base offset."""
    pid, epoch, seq = producer or (-1, -1, -1)
    b = RecordBatchBuilder(
        compression=codec,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        is_transactional=transactional,
    )
    for i, (key, value) in enumerate(records):
        b.append(value, key=key, timestamp=ts + i, headers=[("h", b"x")] if i == 0 else [])
    return log.append(bytearray(b.build())).first_offset


def marker(log: PartitionLog, kind: ControlRecordType, pid: int, epoch: int = 0) -> None:
    log.append(
        bytearray(
            build_control_batch(
                kind, producer_id=pid, producer_epoch=epoch, coordinator_epoch=0, timestamp=NOW
            )
        ),
        allow_control=True,
    )


def contents(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    """(offset, key, value) of every data record from the log start, in order."""
    out = []
    for seg in log.segments:
        data = os.pread(seg.fd, seg.size, 0)
        for batch in iter_batches(memoryview(data)):
            if batch.is_control:
                continue
            for rec in batch.records():
                if rec.offset >= log.log_start_offset:
                    key = None if rec.key is None else bytes(rec.key)
                    value = None if rec.value is None else bytes(rec.value)
                    out.append((rec.offset, key, value))
    return out


def batches(log: PartitionLog) -> list[RecordBatch]:
    found = []
    for seg in log.segments:
        found += [
            RecordBatch(memoryview(bytes(b.buffer)))
            for b in iter_batches(memoryview(os.pread(seg.fd, seg.size, 0)))
        ]
    return found


def latest(log: PartitionLog) -> dict[bytes, tuple[int, bytes | None]]:
    model: dict[bytes, tuple[int, bytes | None]] = {}
    for offset, key, value in contents(log):
        assert key is not None
        model[key] = (offset, value)
    return model


def test_the_latest_record_of_each_key_survives_at_its_offset(log: PartitionLog, clock: Clock) -> None:
    for round_ in range(6):
        put(log, [(f"k{k}".encode(), f"v{round_}-{k}".encode()) for k in range(10)])
    log.roll()
    before = latest(log)
    offsets, stats = clean_partition(log, cleaner(), clock.now)
    assert stats is not None and stats.records_read == 60 and stats.records_retained == 10
    assert offsets.dirty_ratio == 1.0
    assert latest(log) == before
    assert [o for o, _, _ in contents(log)] == list(range(50, 60))  # offsets kept: gaps before
    assert log.log_end_offset == 60
    assert read_cleaner_checkpoint(log.directory, "t", 0) == 60
    # Nothing is dirty now: the next clean does nothing.
    assert clean_partition(log, cleaner(), clock.now)[1] is None


def test_untouched_batches_are_copied_and_partial_ones_keep_their_header(
    log: PartitionLog, clock: Clock
) -> None:
    first = put(log, [(b"a", b"1"), (b"b", b"1"), (b"c", b"1")], codec=CompressionType.ZSTD)
    put(log, [(b"b", b"2")])
    log.roll()
    clean_partition(log, cleaner(), clock.now)
    got = batches(log)
    kept = got[0]
    assert kept.base_offset == first and kept.last_offset == first + 2  # lastOffsetDelta kept
    assert kept.compression_type == CompressionType.ZSTD
    recs = list(kept.records())
    assert [(r.offset, bytes(r.key or b"")) for r in recs] == [(0, b"a"), (2, b"c")]
    assert [r.timestamp for r in recs] == [NOW, NOW + 2]
    assert recs[0].headers[0].key == "h"


def test_keyless_records_are_removed(tmp_path: Path, clock: Clock) -> None:
    log = PartitionLog.open(tmp_path / "t-0", LogConfig().overrides({"segment.bytes": "4096"}), clock=clock)
    try:
        put(log, [(None, b"nokey"), (b"k", b"v")])  # written while the topic was delete
        log.roll()
        log.update_config(COMPACT)
        _, stats = clean_partition(log, cleaner(), clock.now)
        assert stats is not None and stats.invalid_records == 1
        assert contents(log) == [(1, b"k", b"v")]
    finally:
        log.close()


def test_tombstones_stay_until_the_delete_horizon_set_by_the_first_clean(
    log: PartitionLog, clock: Clock
) -> None:
    put(log, [(b"a", b"1"), (b"b", b"1")])
    put(log, [(b"a", None)])
    log.roll()
    clean_partition(log, cleaner(), clock.now)
    assert contents(log) == [(1, b"b", b"1"), (2, b"a", None)]
    tomb = next(b for b in batches(log) if b.base_offset == 2)
    assert tomb.attributes & DELETE_HORIZON_BIT and tomb.base_timestamp == NOW + DAY
    assert [r.timestamp for r in tomb.records()] == [NOW]  # re-based, reads the same
    put(log, [(b"c", b"1")])
    log.roll()
    clock.now = NOW + DAY - 1
    clean_partition(log, cleaner(), clock.now, force=True)
    assert (2, b"a", None) in contents(log)
    put(log, [(b"d", b"1")])
    log.roll()
    clock.now = NOW + DAY
    clean_partition(log, cleaner(), clock.now, force=True)
    assert [k for _, k, _ in contents(log)] == [b"b", b"c", b"d"]


def test_the_last_batch_of_a_producer_stays_empty(log: PartitionLog, clock: Clock) -> None:
    put(log, [(b"a", b"1")], producer=(9, 0, 0))
    put(log, [(b"a", b"2")])
    put(log, [(b"z", b"1")])
    log.roll()
    clean_partition(log, cleaner(), clock.now)
    got = batches(log)
    empty = [b for b in got if b.producer_id == 9]
    assert len(empty) == 1 and empty[0].records_count == 0 and empty[0].base_sequence == 0
    assert contents(log) == [(1, b"a", b"2"), (2, b"z", b"1")]
    # The producer's next batch is in sequence after a restart.
    log.close()
    reopened = PartitionLog.open(log.directory, COMPACT, clock=clock)
    try:
        put(reopened, [(b"a", b"3")], producer=(9, 0, 1))
    finally:
        reopened.close()


def test_aborted_data_goes_and_markers_go_after_their_horizon(log: PartitionLog, clock: Clock) -> None:
    put(log, [(b"x", b"aborted")], producer=(5, 0, 0), transactional=True)
    marker(log, ControlRecordType.ABORT, 5)
    put(log, [(b"y", b"committed")], producer=(6, 0, 0), transactional=True)
    marker(log, ControlRecordType.COMMIT, 6)
    put(log, [(b"y", b"newer")])
    put(log, [(b"pad", b"1")])
    log.roll()
    assert log.collect_aborted_transactions(0, 10) == [(5, 0)]
    clean_partition(log, cleaner(), clock.now)
    assert [(k, v) for _, k, v in contents(log)] == [(b"y", b"newer"), (b"pad", b"1")]
    markers = [b for b in batches(log) if b.is_control]
    assert len(markers) == 2 and not any(b.has_delete_horizon for b in markers)  # data was met
    assert log.collect_aborted_transactions(0, 10) == [(5, 0)]  # the kept ABORT keeps its entry
    # The next clean meets no data of either transaction (their batches are empty now): the
    # markers may go, once the delete horizon this clean sets has passed.
    put(log, [(b"more", b"1")])
    log.roll()
    clock.now = NOW + 1000
    clean_partition(log, cleaner(), clock.now, force=True)
    markers = [b for b in batches(log) if b.is_control]
    assert [b.base_timestamp for b in markers] == [NOW + 1000 + DAY] * 2
    assert all(b.has_delete_horizon for b in markers)
    assert log.collect_aborted_transactions(0, 100) == []
    put(log, [(b"more", b"2")])
    log.roll()
    clock.now = NOW + 1000 + DAY
    clean_partition(log, cleaner(), clock.now, force=True)
    assert [b.is_control for b in batches(log)].count(True) == 0


def test_a_small_key_map_cleans_in_several_passes(log: PartitionLog, clock: Clock) -> None:
    for round_ in range(3):
        for k in range(0, 40, 10):
            put(log, [(f"k{j}".encode(), f"{round_}".encode()) for j in range(k, k + 10)])
    log.roll()
    before = latest(log)
    passes = 0
    while True:
        _, stats = clean_partition(log, cleaner(max_keys=15), clock.now, force=True)
        if stats is None:
            break
        passes += 1
        assert stats.map_keys <= 15
    assert passes >= 3
    assert latest(log) == before
    assert len(contents(log)) == 40


def test_the_active_segment_and_open_transactions_are_never_cleaned(log: PartitionLog, clock: Clock) -> None:
    put(log, [(b"a", b"1")])
    log.roll()
    put(log, [(b"a", b"open")], producer=(3, 0, 0), transactional=True)
    log.roll()
    put(log, [(b"a", b"3")])
    log.roll()
    put(log, [(b"a", b"active")])
    offsets, _ = clean_partition(log, cleaner(), clock.now)
    assert offsets.first_uncleanable == 1  # the segment holding the LSO
    assert [v for _, _, v in contents(log)] == [b"1", b"open", b"3", b"active"]


def test_min_compaction_lag_holds_young_segments(tmp_path: Path, clock: Clock) -> None:
    config = COMPACT.overrides({"min.compaction.lag.ms": "60000"})
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    try:
        put(log, [(b"a", b"1")], ts=NOW - 120_000)
        log.roll()
        put(log, [(b"a", b"2")], ts=NOW - 1000)
        log.roll()
        put(log, [(b"b", b"1")])
        offsets, _ = clean_partition(log, cleaner(), clock.now)
        assert offsets.first_uncleanable == 1
        assert [v for _, _, v in contents(log)] == [b"1", b"2", b"1"]
    finally:
        log.close()


def test_max_compaction_lag_forces_a_clean_below_the_ratio(tmp_path: Path, clock: Clock) -> None:
    config = COMPACT.overrides({"max.compaction.lag.ms": "1000", "min.cleanable.dirty.ratio": "1.0"})
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    try:
        put(log, [(b"a", b"1"), (b"b", b"1")], ts=NOW - 5000)
        put(log, [(b"a", b"2")], ts=NOW - 5000)
        log.roll()
        put(log, [(b"c", b"1")])
        put(log, [(b"c", b"2")])
        log.roll()
        clean_partition(log, cleaner(), clock.now)
        first = read_cleaner_checkpoint(log.directory, "t", 0)
        put(log, [(b"d", b"1")], ts=NOW - 5000)
        log.roll()
        offsets, stats = clean_partition(log, cleaner(), clock.now)
        assert offsets.dirty_ratio < 1.0 and offsets.max_compaction_delay_ms > 0
        assert stats is not None and read_cleaner_checkpoint(log.directory, "t", 0) != first
    finally:
        log.close()


def test_a_corrupt_batch_makes_the_log_uncleanable_and_changes_nothing(
    log: PartitionLog, clock: Clock
) -> None:
    put(log, [(b"a", b"1")])
    put(log, [(b"a", b"2")])
    log.roll()
    seg = log.segments[0]
    os.pwrite(seg.fd, b"\xff", seg.size - 1)  # a value byte: the CRC no longer checks
    with pytest.raises(UncleanableLogError, match="corrupt batch"):
        clean_partition(log, cleaner(), clock.now)
    assert not [p for p in log.directory.iterdir() if p.name.endswith(fn.CLEANED_SUFFIX)]
    assert log.segments[0] is seg


def test_disk_full_abandons_the_clean(
    log: PartitionLog, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    put(log, [(b"a", b"1")])
    put(log, [(b"a", b"2")])
    log.roll()
    before = contents(log)

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("shardbroker.storage.log_cleaner.write_fully", full)
    with pytest.raises(OSError, match="No space"):
        clean_partition(log, cleaner(), clock.now)
    monkeypatch.undo()
    assert contents(log) == before
    assert not [p for p in log.directory.iterdir() if p.name.endswith(fn.CLEANED_SUFFIX)]
    clean_partition(log, cleaner(), clock.now)
    assert contents(log) == [(1, b"a", b"2")]


@pytest.mark.parametrize("crash_at", range(12))
def test_a_crash_at_any_rename_of_the_swap_recovers_pre_or_post_clean(
    tmp_path: Path, clock: Clock, crash_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash simulated by failing the swap's ``crash_at``-th rename and reopening the directory
    (the process's memory is gone): the log reads as before or as after the clean, never a mix,
    and nothing of the swap is left."""
    log = PartitionLog.open(tmp_path / "t-0", COMPACT.overrides({"segment.bytes": "300"}), clock=clock)
    for round_ in range(4):
        put(log, [(f"k{k}".encode(), f"v{round_}".encode()) for k in range(3)])
    log.roll()
    put(log, [(b"tail", b"1")])
    before = contents(log)
    post = [r for r in before if r[0] >= 9]
    renames = 0
    real_rename = os.rename

    class Crash(Exception):
        pass

    def rename(src: str | Path, dst: str | Path) -> None:
        nonlocal renames
        if renames == crash_at:
            raise Crash
        renames += 1
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    crashed = False
    try:
        clean_partition(log, cleaner(), clock.now)
    except Crash:
        crashed = True
    monkeypatch.undo()
    for seg in [*log.segments, *(s for _, s in log._pending_deletes)]:
        seg.close()
    reopened = PartitionLog.open(tmp_path / "t-0", COMPACT, clock=clock)
    try:
        after = contents(reopened)
        assert after in (before, post), (crash_at, after)
        if not crashed:
            assert after == post
        assert not [p for p in reopened.directory.iterdir() if p.name.endswith(fn.LEFTOVER_SUFFIXES)]
        assert reopened.log_end_offset == 13
    finally:
        reopened.close()


@pytest.mark.parametrize("policy", ["compact", "compact,delete"])
def test_random_histories_match_a_dict_model(tmp_path: Path, clock: Clock, policy: str) -> None:
    """Random produce / tombstone / clean / restart sequences: reading the log from its start
    gives, for every key, the latest value (a tombstone's key may still show as a tombstone until
    its horizon, never an older value)."""
    rng = random.Random(policy)
    config = LogConfig().overrides(
        {
            "cleanup.policy": policy,
            "segment.bytes": "2000",
            "delete.retention.ms": "1000",
            "retention.ms": "-1",
        }
    )
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    model: dict[bytes, bytes | None] = {}
    try:
        for _ in range(300):
            op = rng.random()
            clock.now += rng.randint(0, 400)
            if op < 0.7:
                recs: list[tuple[bytes | None, bytes | None]] = []
                for _ in range(rng.randint(1, 5)):
                    key = f"k{rng.randint(0, 30)}".encode()
                    value = None if rng.random() < 0.15 else f"v{rng.random():.6f}".encode()
                    recs.append((key, value))
                    model[key] = value
                codec = rng.choice(list(CompressionType))
                put(log, recs, codec=codec, ts=clock.now)
            elif op < 0.9:
                log.roll()
                clean_partition(log, cleaner(max_keys=rng.choice([8, 40, 1000])), clock.now, force=True)
            else:
                log.close()
                log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
            seen: dict[bytes, bytes | None] = {}
            for _, seen_key, seen_value in contents(log):
                assert seen_key is not None
                seen[seen_key] = seen_value
            live = {k: v for k, v in model.items() if v is not None}
            assert {k: v for k, v in seen.items() if v is not None} == live
            assert all(k in model for k in seen)
    finally:
        log.close()


def test_a_key_of_one_mib(tmp_path: Path, clock: Clock) -> None:
    config = COMPACT.overrides({"max.message.bytes": str(3 << 20), "segment.bytes": str(8 << 20)})
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    try:
        big = bytes(range(256)) * 4096  # 1 MiB: hashed by mmh3 itself (offset_map.LONG_KEY_BYTES)
        put(log, [(big, b"1")])
        put(log, [(big, b"2"), (b"small", b"x")])
        log.roll()
        clean_partition(log, cleaner(), clock.now)
        assert contents(log) == [(1, big, b"2"), (2, b"small", b"x")]
    finally:
        log.close()


def distinct_keys_log(directory: Path, keys: int, clock: Clock) -> PartitionLog:
    """``keys`` records, every key distinct (nothing to remove: the worst case for the map)."""
    log = PartitionLog.open(directory, COMPACT.overrides({"segment.bytes": str(64 << 20)}), clock=clock)
    per_batch = 1000
    values = np.zeros((per_batch, 8), np.uint8)
    buf = bytearray(61 + uniform_records_size(per_batch, 12, 8))
    ids = np.arange(keys)
    digits = np.char.zfill(ids.astype("U12"), 12).astype("S12")
    raw = np.frombuffer(digits.tobytes(), np.uint8).reshape(keys, 12)
    for first in range(0, keys, per_batch):
        chunk = raw[first : first + per_batch]
        n = encode_uniform_batch(buf, values[: chunk.shape[0]], chunk, NOW)
        log.append(memoryview(buf)[:n])
    log.roll()
    return log


@pytest.mark.parametrize(
    ("keys", "max_keys"),
    [(200_000, 20_000), pytest.param(10_000_000, 1_000_000, marks=pytest.mark.slow)],
)
def test_more_distinct_keys_than_the_map_holds_take_several_bounded_passes(
    tmp_path: Path, clock: Clock, keys: int, max_keys: int
) -> None:
    log = distinct_keys_log(tmp_path / "t-0", keys, clock)
    try:
        passes = 0
        peak = 0
        while True:
            tracemalloc.start()
            try:
                _, stats = clean_partition(log, cleaner(max_keys), clock.now, force=True)
                peak = max(peak, tracemalloc.get_traced_memory()[1])
            finally:
                tracemalloc.stop()
            if stats is None:
                break
            passes += 1
            assert stats.map_keys <= max_keys and stats.records_retained == stats.records_read
        assert passes == -(-keys // max_keys)
        # The map (~70 B a key while it is built) and a few 4 MiB chunks with their decoded
        # columns, not the log: 10 M keys would need ~700 MB in one pass.
        assert peak < max_keys * 100 + (96 << 20), peak
        assert read_cleaner_checkpoint(log.directory, "t", 0) == keys
        assert log.log_end_offset == keys
    finally:
        log.close()


def test_a_clean_copies_at_most_syscall_bytes_per_system_call(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel lets a worker woken onto the cleaner's CPU in only between copies
    (log_cleaner.SYSCALL_BYTES): no read or write of a clean may copy more, even for a batch of
    3 MiB or 4 MiB chunks of small ones."""
    config = COMPACT.overrides({"max.message.bytes": str(4 << 20), "segment.bytes": str(16 << 20)})
    log = PartitionLog.open(tmp_path / "t-0", config, clock=clock)
    try:
        big = os.urandom(3 << 20)
        put(log, [(b"big", big)])
        for i in range(400):
            put(log, [(b"k%d" % (i % 50), os.urandom(16 << 10))])
        put(log, [(b"big", big)])
        log.roll()
        want = latest(log)
        sizes: list[int] = []

        def counted(call: Any, size: Callable[..., int]) -> Callable[..., Any]:
            def wrapper(*args: Any) -> Any:
                sizes.append(size(*args))
                return call(*args)

            return wrapper

        with monkeypatch.context() as m:
            m.setattr(os, "pread", counted(os.pread, lambda fd, n, pos: n))
            m.setattr(os, "preadv", counted(os.preadv, lambda fd, bufs, pos: sum(map(len, bufs))))
            m.setattr(os, "pwrite", counted(os.pwrite, lambda fd, data, pos: len(data)))
            m.setattr(os, "pwritev", counted(os.pwritev, lambda fd, bufs, pos: sum(map(len, bufs))))
            _, stats = clean_partition(log, cleaner(), clock.now)
        assert stats is not None and stats.bytes_read > 8 << 20 and stats.bytes_written > 3 << 20
        assert max(sizes) == SYSCALL_BYTES
        assert latest(log) == want
    finally:
        log.close()
