"""ReplicaManager over real storage in tmp_path, driven by a fake controller channel."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from shardbroker.broker.replica_manager import ReplicaManager
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage.checkpoint import read_checkpoint
from shardbroker.storage.file_names import (
    CLEAN_SHUTDOWN_FILE,
    LEADER_EPOCH_CHECKPOINT,
    PARTITION_METADATA_FILE,
    RECOVERY_POINT_CHECKPOINT,
)
from shardbroker.storage.leader_epoch_checkpoint import read_leader_epochs
from shardbroker.storage.partition_metadata import read_partition_metadata
from tests.unit.replica_fakes import Harness, batch, image, run, topic


def test_start_opens_only_the_partitions_this_worker_leads(tmp_path: Path) -> None:
    img = image(topic("a", 3, leaders=[0, 1, 0]), topic("b", 1, leaders=[1]))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            assert sorted((p.topic, p.index) for p in rm.iter_partitions()) == [("a", 0), ("a", 2)]
            assert rm.append("a", 1, batch()).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            assert rm.append("b", 0, batch()).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            assert rm.append("c", 0, batch()).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            assert rm.append("a", 7, batch()).error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

    run(main())
    assert sorted(d.name for d in tmp_path.iterdir()) == ["a-0", "a-2"]
    assert read_partition_metadata(tmp_path / "a-0") == img.topics["a"].topic_id
    assert (tmp_path / "a-0" / PARTITION_METADATA_FILE).read_text().startswith("version: 0\ntopic_id: ")


def test_append_assigns_offsets_and_stamps_the_leader_epoch(tmp_path: Path) -> None:
    img = image(topic("t", 1, epoch=7))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            r1 = rm.append("t", 0, batch(3))
            r2 = rm.append("t", 0, batch(2))
            assert (r1.error_code, r1.base_offset, r1.log_start_offset) == (0, 0, 0)
            assert (r2.error_code, r2.base_offset) == (0, 3)
            assert r1.log_append_time == -1 and r1.flush_offset == -1
            p = rm.get("t", 0)
            assert p is not None
            assert p.high_watermark == p.last_stable_offset == 5
            data = p.log.read_bytes(0, 1 << 20)
            assert int.from_bytes(data[12:16], "big") == 7  # partitionLeaderEpoch

    run(main())


def test_log_append_time_topic_answers_the_broker_time(tmp_path: Path) -> None:
    img = image(topic("t", configs={"message.timestamp.type": "LogAppendTime"}))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            r = h.replicas.append("t", 0, batch(timestamp=1000))
            assert r.error_code == 0 and r.log_append_time > 1_600_000_000_000

    run(main())


def test_validation_errors_leave_the_log_unchanged(tmp_path: Path) -> None:
    img = image(topic("t", configs={"max.message.bytes": "2000"}))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            bad_crc = batch()
            bad_crc[-1] ^= 0xFF
            assert rm.append("t", 0, bad_crc).error_code == ErrorCode.CORRUPT_MESSAGE
            big = batch(30, value=b"x" * 100)
            assert rm.append("t", 0, big).error_code == ErrorCode.MESSAGE_TOO_LARGE
            old = batch()
            old[16] = 1  # magic 1
            assert rm.append("t", 0, old).error_code == ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
            assert rm.append("t", 0, batch() + batch()).error_code == ErrorCode.INVALID_RECORD
            assert rm.append("t", 0, batch()[:-3]).error_code == ErrorCode.CORRUPT_MESSAGE
            assert rm.append("t", 0, b"").error_code == ErrorCode.INVALID_RECORD
            assert rm.append("t", 0, None).error_code == ErrorCode.INVALID_RECORD
            codec = batch()
            codec[22] |= 0x07  # compression id 7
            assert rm.append("t", 0, codec).error_code == ErrorCode.UNSUPPORTED_COMPRESSION_TYPE
            p = rm.get("t", 0)
            assert p is not None and p.log.log_end_offset == 0
            r = rm.append("t", 0, bytes(batch()))  # read-only buffers are fine too
            assert (r.error_code, r.base_offset) == (0, 0)

    run(main())


def test_restart_is_clean_and_keeps_data_and_epochs(tmp_path: Path) -> None:
    img = image(topic("t", 2))

    async def first() -> None:
        async with Harness(tmp_path, img) as h:
            for _ in range(4):
                h.replicas.append("t", 1, batch(5))

    run(first())
    assert (tmp_path / "t-1" / CLEAN_SHUTDOWN_FILE).exists()
    assert read_leader_epochs(tmp_path / "t-1") == [(0, 0)]

    async def second() -> None:
        async with Harness(tmp_path, image(topic("t", 2, epoch=3))) as h:
            p = h.replicas.get("t", 1)
            assert p is not None
            assert p.log.recovery_stats.clean_shutdown
            assert p.high_watermark == 20
            assert h.replicas.append("t", 1, batch()).base_offset == 20
            assert p.epochs == [(0, 0), (3, 20)]
            assert p.end_offset_for_epoch(0) == (0, 20)
            assert p.end_offset_for_epoch(3) == (3, 23)
            assert p.end_offset_for_epoch(1) == (0, 20)
            assert p.end_offset_for_epoch(4) == (-1, -1)

    run(second())
    assert (tmp_path / "t-1" / LEADER_EPOCH_CHECKPOINT).read_text() == "0\n2\n0 0\n3 20\n"


def test_new_image_opens_reconfigures_closes_and_deletes(tmp_path: Path) -> None:
    a = topic("a", 1)

    async def main() -> None:
        async with Harness(tmp_path, image(a)) as h:
            rm = h.replicas
            rm.append("a", 0, batch())
            # a new topic and a config change
            await h.channel.push(image(topic("a", 1, configs={"max.message.bytes": "100"}), topic("b", 2)))
            assert rm.get("b", 1) is not None
            assert rm.append("a", 0, batch(10)).error_code == ErrorCode.MESSAGE_TOO_LARGE
            # b-1 moves to worker 1: closed cleanly here, its files stay
            await h.channel.push(image(topic("a", 1), topic("b", 2, leaders=[0, 1])))
            assert rm.get("b", 1) is None
            assert (tmp_path / "b-1" / CLEAN_SHUTDOWN_FILE).exists()
            assert rm.append("b", 1, batch()).error_code == ErrorCode.NOT_LEADER_OR_FOLLOWER
            # a is deleted: renamed at once, removed after file.delete.delay.ms
            await h.channel.push(image(topic("b", 2, leaders=[0, 1])))
            assert rm.get("a", 0) is None
            assert not (tmp_path / "a-0").exists()
            doomed = [d for d in tmp_path.iterdir() if d.name.startswith("a-0.")]
            assert len(doomed) == 1 and doomed[0].name.endswith("-delete")
            rm.housekeeping(now=rm._clock() + 61)
            assert not doomed[0].exists()
            # recreated with the same name: a fresh, empty log
            await h.channel.push(image(topic("a", 1, topic_id=uuid.uuid4()), topic("b", 2, leaders=[0, 1])))
            assert rm.append("a", 0, batch()).base_offset == 0

    run(main())


def test_stale_incarnation_on_disk_is_not_served(tmp_path: Path) -> None:
    async def first() -> None:
        async with Harness(tmp_path, image(topic("t", topic_id=uuid.uuid4()))) as h:
            h.replicas.append("t", 0, batch())

    run(first())

    async def second() -> None:  # deleted and recreated while this worker was down
        async with Harness(tmp_path, image(topic("t", topic_id=uuid.uuid4()))) as h:
            p = h.replicas.get("t", 0)
            assert p is not None and p.high_watermark == 0

    run(second())


def test_leftover_delete_dirs_are_removed_at_start(tmp_path: Path) -> None:
    stale = tmp_path / f"x-0.{uuid.uuid4().hex}-delete"
    stale.mkdir()
    (stale / "00000000000000000000.log").write_bytes(b"junk")

    async def main() -> None:
        async with Harness(tmp_path, image()):
            pass

    run(main())
    assert not stale.exists()


def test_flush_messages_policy_flushes_in_a_thread(tmp_path: Path) -> None:
    img = image(topic("t", configs={"flush.messages": "2"}))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            p = rm.get("t", 0)
            assert p is not None
            r1 = rm.append("t", 0, batch(1))
            assert r1.flush_offset == -1
            r2 = rm.append("t", 0, batch(1))
            assert r2.flush_offset == 2
            assert await rm.flusher.wait_durable(p, r2.flush_offset, 5.0) == 0
            assert p.log.recovery_point >= 2
            # many concurrent waiters share the flushes
            before = p.log.sync_count
            results = []
            for _ in range(20):
                r = rm.append("t", 0, batch(2))
                results.append(rm.flusher.wait_durable(p, r.flush_offset, 5.0))
            assert await asyncio.gather(*results) == [0] * 20
            assert p.log.recovery_point == 42
            assert p.log.sync_count - before <= 3

    run(main())


def test_flush_ms_is_applied_by_the_timer(tmp_path: Path) -> None:
    img = image(topic("t", configs={"flush.ms": "0"}))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            p = rm.get("t", 0)
            assert p is not None
            rm.append("t", 0, batch(4))
            assert p.log.recovery_point == 0
            rm.housekeeping(now=rm._clock() + 2)
            for _ in range(100):
                if p.log.recovery_point == 4:
                    break
                await asyncio.sleep(0.01)
            assert p.log.recovery_point == 4

    run(main())


def test_retention_runs_on_the_check_interval(tmp_path: Path) -> None:
    img = image(topic("t", configs={"retention.bytes": "0", "segment.bytes": "200"}))

    async def main() -> None:
        async with Harness(tmp_path, img, props={"log.retention.check.interval.ms": "1000"}) as h:
            rm = h.replicas
            assert rm.logs.retention_check_interval_s == 1.0
            p = rm.get("t", 0)
            assert p is not None
            for _ in range(5):
                rm.append("t", 0, batch(2, value=b"v" * 60))
            assert len(p.log.segments) == 5
            rm.housekeeping(now=rm._clock() + 0.5)
            assert len(p.log.segments) == 5  # not yet due
            rm.housekeeping(now=rm._clock() + 1.5)
            assert p.log_start_offset == 10 and p.high_watermark == 10

    run(main())


def test_fetch_waiters_are_woken_by_an_append_not_by_polling(tmp_path: Path) -> None:
    """...once the appends to all their partitions together bring the bytes they need (Kafka's
    DelayedFetch: shorter appends leave the fetch parked, no re-read); a wake-all (markers,
    closing) wakes them whatever they still need."""
    img = image(topic("t", 2))

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            p0, p1 = rm.get("t", 0), rm.get("t", 1)
            assert p0 is not None and p1 is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            assert not await rm.wait_for_data([p0, p1], 0.05)
            assert loop.time() - started >= 0.045
            assert not p0.waiters and not p1.waiters
            waiter = asyncio.ensure_future(rm.wait_for_data([p0, p1], 10))
            await asyncio.sleep(0.01)
            assert len(p1.waiters) == 1
            rm.append("t", 1, batch())
            assert await asyncio.wait_for(waiter, 1)
            assert not p0.waiters and not p1.waiters

            one = len(batch())
            waiter = asyncio.ensure_future(rm.wait_for_data([p0, p1], 10, needed=2 * one + 1))
            await asyncio.sleep(0.01)
            rm.append("t", 0, batch())
            rm.append("t", 1, batch())
            await asyncio.sleep(0.01)
            assert not waiter.done() and len(p0.waiters) == len(p1.waiters) == 1
            rm.append("t", 1, batch())
            assert await asyncio.wait_for(waiter, 1)
            assert not p0.waiters and not p1.waiters

            waiter = asyncio.ensure_future(rm.wait_for_data([p0], 10, needed=1 << 30))
            await asyncio.sleep(0.01)
            p0.wake()
            assert await asyncio.wait_for(waiter, 1)

    run(main())


def test_drain_closes_cleanly_and_removes_nothing(tmp_path: Path) -> None:
    async def main() -> ReplicaManager:
        h = Harness(tmp_path, image(topic("t", 3)))
        await h.replicas.start(None)
        for i in range(3):
            h.replicas.append("t", i, batch())
        await h.replicas.drain()
        await h.replicas.drain()  # idempotent
        return h.replicas

    rm = run(main())
    assert not list(rm.iter_partitions())
    for i in range(3):
        assert (tmp_path / f"t-{i}" / CLEAN_SHUTDOWN_FILE).exists()


def test_producer_ids_come_in_blocks_from_the_controller(tmp_path: Path) -> None:
    async def main() -> None:
        async with Harness(tmp_path, image()) as h:
            ids = await asyncio.gather(*(h.replicas.allocate_producer_id() for _ in range(1500)))
            assert sorted(ids) == list(range(1000, 2500))
            assert [op for op, _ in h.channel.requests] == ["allocate_producer_ids"] * 2

    run(main())


def test_recovery_point_checkpoints_are_written_when_they_moved(tmp_path: Path) -> None:
    img = image(topic("t", 2, configs={"flush.messages": "1"}))
    checkpoint = tmp_path / "t-0" / RECOVERY_POINT_CHECKPOINT

    async def main() -> None:
        async with Harness(tmp_path, img) as h:
            rm = h.replicas
            p = rm.get("t", 0)
            assert p is not None
            r = rm.append("t", 0, batch(3))
            assert await rm.flusher.wait_durable(p, r.flush_offset, 5.0) == 0
            assert read_checkpoint(checkpoint) == {("t", 0): 0}  # flushed, not yet checkpointed
            untouched = (tmp_path / "t-1" / RECOVERY_POINT_CHECKPOINT).stat().st_mtime_ns
            rm.housekeeping(now=rm._clock() + 61)
            for _ in range(200):
                if read_checkpoint(checkpoint) == {("t", 0): 3}:
                    break
                await asyncio.sleep(0.01)
            assert read_checkpoint(checkpoint) == {("t", 0): 3}
            assert (tmp_path / "t-1" / RECOVERY_POINT_CHECKPOINT).stat().st_mtime_ns == untouched

    run(main())
