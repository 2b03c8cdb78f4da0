"""Property: any sequence of appends, rolls, flushes and (clean or unclean, torn) reopens keeps
offsets dense and every batch that should survive readable."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.log import PartitionLog
from tests.unit.storage_batches import Clock, batch_offsets, build_batch

CFG = LogConfig(segment_bytes=5000, index_interval_bytes=200, segment_index_bytes=240)

append_op = st.tuples(
    st.just("append"), st.lists(st.tuples(st.integers(1, 4), st.integers(0, 300)), min_size=1, max_size=3)
)
ops = st.lists(
    st.one_of(
        append_op,
        append_op,
        append_op,
        st.tuples(st.just("roll"), st.none()),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("reopen"), st.none()),
        st.tuples(st.just("crash"), st.none()),
        st.tuples(st.just("torn"), st.integers(1, 400)),
    ),
    max_size=25,
)


def check(log: PartitionLog, expected: list[tuple[int, int]]) -> None:
    assert log.log_end_offset == (expected[-1][1] + 1 if expected else log.log_start_offset)
    found: list[tuple[int, int]] = []
    for seg in log.segments:
        found += batch_offsets(os.pread(seg.fd, seg.size, 0))
    assert found == expected
    for a, b in itertools.pairwise(found):
        assert b[0] == a[1] + 1  # dense
    for first, last in expected:
        assert batch_offsets(log.read_bytes(last, 1))[0] == (first, last)
        assert batch_offsets(log.read_bytes(first, 1))[0] == (first, last)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_history_keeps_offsets_dense_and_batches_readable(history: list[tuple[str, object]]) -> None:
    # tmpfs when there is one: the property is about the logic; fsyncs on a disk made it 10x slower.
    root = Path(tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    try:
        d = root / "p-0"
        log = PartitionLog.open(d, CFG, clock=Clock())
        expected: list[tuple[int, int]] = []
        sizes: list[int] = []  # byte size of each expected batch
        for op, arg in history:
            if op == "append":
                bufs = [build_batch(n, value_size=size) for n, size in arg]  # type: ignore[attr-defined]
                info = log.append(bufs)
                sizes += [len(b) for b in bufs]
                off = info.first_offset
                for n, _ in arg:  # type: ignore[attr-defined]
                    expected.append((off, off + n - 1))
                    off += n
            elif op == "roll":
                log.roll()
            elif op == "flush":
                log.flush()
            elif op == "reopen":
                log.close()
                log = PartitionLog.open(d, CFG, clock=Clock())
            else:  # crash, or crash with the last batch torn
                active = log.segments[-1]
                path, size = active.log_path, active.size
                for seg in log.segments:
                    seg.close()
                if op == "torn" and size > 0 and expected:
                    cut = min(int(arg), sizes[-1])  # type: ignore[call-overload]  # inside the last batch
                    os.truncate(path, size - cut)
                    expected.pop()
                    sizes.pop()
                log = PartitionLog.open(d, CFG, clock=Clock())
            check(log, expected)
        log.close()
    finally:
        shutil.rmtree(root)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(80, 700), st.integers(-1, 50)), min_size=1, max_size=60),
    st.integers(0, 600),
    st.sampled_from([36, 120, 1200]),  # small ones fill up: rolls and skipped entries
    st.integers(1, 3),
)
def test_recovery_rebuilds_exactly_the_indexes_appends_wrote(
    batches: list[tuple[int, int]], interval: int, index_bytes: int, per_append: int
) -> None:
    """The vectorised rebuild and the per-batch append path follow one rule: same bytes."""
    from tests.unit.storage_batches import batch_of_size

    root = Path(tempfile.mkdtemp(dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    try:
        d = root / "p-0"
        config = LogConfig(segment_bytes=4000, index_interval_bytes=interval, segment_index_bytes=index_bytes)
        log = PartitionLog.open(d, config, clock=Clock())
        bufs = [batch_of_size(size, timestamp=ts if ts < 0 else 1000 + 37 * ts % 500) for size, ts in batches]
        for i in range(0, len(bufs), per_append):
            group = bufs[i : i + per_append]
            log.append(group[0] if len(group) == 1 and i % 2 else group)  # fast path and general path
        before = [(s.offset_index.contents(), s.time_index.contents()) for s in log.segments]
        for seg in log.segments:
            seg.close()
        (d / "recovery-point-offset-checkpoint").unlink()
        log = PartitionLog.open(d, config, clock=Clock())
        assert log.recovery_stats.segments_recovered == len(before)
        after = [(s.offset_index.contents(), s.time_index.contents()) for s in log.segments]
        assert after == before
        log.close()
    finally:
        shutil.rmtree(root)
