"""Flush policy, group commit, and disk errors (ENOSPC, EIO) on append and flush."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from shardbroker.config.log_config import LogConfig
from shardbroker.storage.errors import KafkaStorageError
from shardbroker.storage.group_commit import GroupCommit
from shardbroker.storage.log import PartitionLog
from tests.unit.storage_batches import Clock, batch_offsets, build_batch

CFG = LogConfig(segment_bytes=16 * 1024, index_interval_bytes=512)


def open_log(tmp_path: Path, config: LogConfig = CFG, clock: Clock | None = None) -> PartitionLog:
    return PartitionLog.open(tmp_path / "t-0", config, clock=clock or Clock())


def test_flush_advances_the_recovery_point_only_after_the_sync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    for _ in range(5):
        log.append(build_batch(2))
    seen: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        seen.append(log.recovery_point)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    assert log.recovery_point == 0
    assert log.flush() == 10
    assert seen == [0] and log.recovery_point == 10
    assert log.flush(10) == 10 and len(seen) == 1  # already durable: no sync
    log.close()


def test_flush_messages_policy(tmp_path: Path) -> None:
    log = open_log(tmp_path, LogConfig(flush_messages=5))
    assert not log.append(build_batch(2)).flush_required
    assert log.append(build_batch(3)).flush_required  # 5 unflushed messages
    log.flush()
    assert not log.append(build_batch(1)).flush_required
    log.close()


def test_flush_ms_policy(tmp_path: Path) -> None:
    clock = Clock()
    log = open_log(tmp_path, LogConfig(flush_ms=1000), clock)
    assert not log.flush_due()  # nothing to flush
    log.append(build_batch(1))
    clock.advance(999)
    assert not log.flush_due()
    clock.advance(1)
    assert log.flush_due()
    log.flush()
    assert not log.flush_due()
    log.close()


def test_flush_covers_rolled_segments_and_their_indexes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    for _ in range(100):
        log.append(build_batch(3, value_size=100))
    assert len(log.segments) > 2
    synced: list[int] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    log.flush()
    assert sorted(synced) == sorted(s.fd for s in log.segments)
    assert all(s.indexes_flushed for s in log.segments[:-1])
    synced.clear()
    log.append(build_batch(1))
    log.flush()
    assert synced == [log.segments[-1].fd]  # later flushes only touch what is new
    log.close()


def test_group_commit_shares_syncs_between_waiters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path, LogConfig(segment_bytes=1 << 30))
    real = os.fdatasync

    def slow_fdatasync(fd: int) -> None:
        time.sleep(0.01)  # a real disk: the syncs are what queue up
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_fdatasync)
    threads = 16
    rounds = 5
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def producer() -> None:
        try:
            start.wait()
            for _ in range(rounds):
                info = log.append(build_batch(1))
                assert log.flush(info.last_offset + 1) >= info.last_offset + 1
                assert log.recovery_point >= info.last_offset + 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    workers = [threading.Thread(target=producer) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    waiters = threads * rounds
    assert log.log_end_offset == waiters
    assert log.sync_count < waiters / 2, log.sync_count
    assert batch_offsets(log.read_bytes(0, 1 << 20)) == [(i, i) for i in range(waiters)]
    log.close()


def test_group_commit_protocol_in_isolation() -> None:
    end = [0]
    gate = threading.Event()
    actions: list[int] = []

    def prepare() -> tuple[int, object]:
        target = end[0]

        def action() -> None:
            actions.append(target)
            gate.wait(5)

        return target, action

    gc = GroupCommit(prepare)  # type: ignore[arg-type]
    end[0] = 10
    leader = threading.Thread(target=gc.flush, args=(10,))
    leader.start()
    while not actions:
        time.sleep(0.001)
    end[0] = 30  # more appends arrive while the first sync runs
    results: list[int] = []
    waiters = [threading.Thread(target=lambda x=x: results.append(gc.flush(x))) for x in (5, 10, 20, 25, 30)]
    for w in waiters:
        w.start()
    time.sleep(0.05)
    assert actions == [10]  # nobody started a second sync while one runs
    gate.set()
    leader.join()
    for w in waiters:
        w.join()
    assert actions == [10, 30]  # one more sync covered the three waiters beyond 10
    assert gc.durable_offset == 30 and gc.syncs == 2
    assert gc.flush(30) == 30 and gc.syncs == 2


def test_failed_sync_is_final(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(KafkaStorageError) as info:
        log.flush()
    assert info.value.error_code == 56
    monkeypatch.undo()
    with pytest.raises(KafkaStorageError):  # no retry can be trusted after a failed fsync
        log.flush()
    with pytest.raises(KafkaStorageError):
        log.append(build_batch(1))
    assert batch_offsets(log.read_bytes(0, 1000)) == [(0, 0)]  # still readable
    log.close()


@pytest.mark.parametrize("written", [0, 1, 60, 150])
@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO])
def test_write_error_truncates_the_partial_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: int, err: int
) -> None:
    log = open_log(tmp_path)
    for _ in range(3):
        log.append(build_batch(2))
    size = log.size_in_bytes
    real_pwrite = os.pwrite
    state = {"calls": 0}

    def failing_pwrite(fd: int, data: memoryview, pos: int) -> int:
        state["calls"] += 1
        if state["calls"] == 1 and written:
            return real_pwrite(fd, data[:written], pos)  # a short write first
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, "pwrite", failing_pwrite)
    with pytest.raises(KafkaStorageError) as info:
        log.append(build_batch(3, value_size=50))
    assert info.value.error_code == 56
    monkeypatch.undo()
    assert os.path.getsize(log.segments[-1].log_path) == size
    assert log.log_end_offset == 6 and not log.offline
    assert batch_offsets(log.read_bytes(0, 1 << 20)) == [(0, 1), (2, 3), (4, 5)]
    assert log.append(build_batch(1)).first_offset == 6  # the disk has room again
    log.close()
    log = open_log(tmp_path)
    assert log.log_end_offset == 7
    log.close()


def test_pwritev_error_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))
    real = os.pwritev

    def partial(fd: int, bufs: list[memoryview], pos: int) -> int:
        monkeypatch.setattr(os, "pwritev", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full")))
        return real(fd, [bufs[0]], pos)  # first batch lands, then the disk is full

    monkeypatch.setattr(os, "pwritev", partial)
    with pytest.raises(KafkaStorageError):
        log.append([build_batch(1), build_batch(1)])
    monkeypatch.undo()
    assert log.log_end_offset == 1 and batch_offsets(log.read_bytes(0, 1000)) == [(0, 0)]
    log.close()


def test_failed_truncate_takes_the_log_offline_but_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))
    real = os.pwrite

    def torn(fd: int, d: memoryview, p: int) -> int:
        if len(d) > 20:
            return real(fd, d[:20], p)
        raise OSError(errno.EIO, "io")

    monkeypatch.setattr(os, "pwrite", torn)
    monkeypatch.setattr(os, "ftruncate", lambda fd, n: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(KafkaStorageError):
        log.append(build_batch(1))
    monkeypatch.undo()
    assert log.offline
    with pytest.raises(KafkaStorageError):
        log.append(build_batch(1))
    assert batch_offsets(log.read_bytes(0, 1000)) == [(0, 0)]
    log.close()
    log = open_log(tmp_path)  # recovery cuts the torn 20 bytes
    assert log.log_end_offset == 1 and not log.offline
    log.close()


def test_failed_close_leaves_no_marker_so_the_next_open_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = open_log(tmp_path)
    for _ in range(3):
        log.append(build_batch(2))

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fdatasync", eio)
    with pytest.raises(KafkaStorageError):
        log.close()
    monkeypatch.undo()
    assert not (log.directory / ".kafka_cleanshutdown").exists()
    log = open_log(tmp_path)
    assert not log.recovery_stats.clean_shutdown and log.log_end_offset == 6
    log.close()


def test_close_after_offline_writes_no_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))
    monkeypatch.setattr(os, "fdatasync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "io")))
    with pytest.raises(KafkaStorageError):
        log.flush()
    monkeypatch.undo()
    log.close()
    assert not (log.directory / ".kafka_cleanshutdown").exists()


def test_rolled_segments_make_a_flush_due_and_are_checkpointed(tmp_path: Path) -> None:
    from shardbroker.storage.checkpoint import read_checkpoint

    log = open_log(tmp_path)  # flush.ms: never
    log.append(build_batch(1))
    assert not log.flush_due()
    while len(log.segments) < 2:
        log.append(build_batch(5, value_size=200))
    assert log.flush_due()  # Kafka flushes a segment when it rolls
    log.flush()
    assert not log.flush_due()
    cp = read_checkpoint(log.directory / "recovery-point-offset-checkpoint")
    assert cp == {("t", 0): log.log_end_offset}  # written because the recovery point crossed a segment
    for seg in log.segments:  # crash: only the active segment is scanned on the way back
        seg.close()
    log = open_log(tmp_path)
    assert log.recovery_stats.segments_recovered == 1
    log.close()


def test_flush_after_close_is_a_storage_error(tmp_path: Path) -> None:
    log = open_log(tmp_path)
    log.append(build_batch(1))
    log.close()
    with pytest.raises(KafkaStorageError):
        log.flush(5)


def test_no_disk_for_the_index_is_a_storage_error_before_any_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store into a sparse page of the mapped index on a full disk would be a SIGBUS: the
    # blocks are reserved with posix_fallocate first, so a full disk is an ENOSPC error instead.
    log = open_log(tmp_path, LogConfig(index_interval_bytes=0))
    log.append(build_batch(1))
    size = log.size_in_bytes
    idx = log.segments[-1].offset_index
    idx.reserved_entries = idx.entries  # as if the reserved blocks were used up

    def enospc(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", enospc)
    with pytest.raises(KafkaStorageError) as info:
        log.append(build_batch(1))
    assert info.value.error_code == 56
    assert log.size_in_bytes == size and os.path.getsize(log.segments[-1].log_path) == size
    monkeypatch.undo()
    assert log.append(build_batch(1)).first_offset == 1
    log.close()


def test_hand_over_leaves_a_clean_log_without_syncing_and_keeps_the_files_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partition moving to another worker: no fdatasync, the next owner opens without a scan,
    the recovery point still says what is durable, reads already handed out stay valid."""
    log = open_log(tmp_path)
    for _ in range(30):  # 1 KiB batches of 4 records: several segments
        log.append(build_batch([b"v" * 250] * 4))
    info = log.read(0, 1 << 20)
    syncs: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: syncs.append(fd))
    segments = log.hand_over()
    assert syncs == [] and len(segments) > 1 and log.segments == ()
    log.checkpoint()  # a late periodic checkpoint writes nothing: the files are the next owner's
    monkeypatch.undo()
    nxt = open_log(tmp_path)
    assert nxt.recovery_stats.clean_shutdown and nxt.recovery_stats.segments_recovered == 0
    assert nxt.log_end_offset == 120 and nxt.recovery_point == 0  # nothing was synced
    nxt.append(build_batch(1))
    assert os.pread(info.fd, 61, info.position) == nxt.read_bytes(0, 61)[:61]  # old fd still reads
    for seg in segments:
        seg.close()
    nxt.close()
    again = open_log(tmp_path)
    assert again.log_end_offset == 121 and again.recovery_point == 121  # a normal clean close
    again.close()


def test_a_hand_over_marker_is_trusted_only_in_the_same_boot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing of a handed-over log was synced: after a host crash (another boot id) its marker
    must not let the log skip recovery; an empty (fully synced) marker is trusted in any boot."""
    from shardbroker.storage import clean_shutdown

    boot = tmp_path / "boot_id"
    boot.write_text("boot-1\n")
    monkeypatch.setattr(clean_shutdown, "BOOT_ID_PATH", boot)
    log = open_log(tmp_path)
    for _ in range(30):
        log.append(build_batch([b"v" * 250] * 4))
    for seg in log.hand_over():
        seg.close()
    assert (tmp_path / "t-0" / ".kafka_cleanshutdown").read_bytes() == b"handover boot-1"
    boot.write_text("boot-2\n")  # the host crashed and came back
    after_crash = open_log(tmp_path)
    assert not after_crash.recovery_stats.clean_shutdown
    assert after_crash.recovery_stats.segments_recovered == len(after_crash.segments)  # from offset 0
    assert after_crash.log_end_offset == 120
    after_crash.close()  # a real clean close: empty marker, synced
    again = open_log(tmp_path)
    assert again.recovery_stats.clean_shutdown and again.recovery_stats.segments_recovered == 0
    again.close()
