"""The controller: its pure state machine, the metadata log on disk, and the controller's end of
the control rings (driven by hand here; test_controller_channel.py runs the worker's end)."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.log_config import LogConfig
from shardbroker.control import metadata_log
from shardbroker.control.controller import Controller
from shardbroker.control.controller_state import (
    ControllerState,
    OpContext,
    apply_record,
    handle,
    place,
    reassign_orphans,
    replay,
)
from shardbroker.control.metadata_log import (
    DataDirLock,
    MetadataLog,
    MetadataLogError,
    encode_frame,
    scan_frames,
)
from shardbroker.ipc.control import (
    ControlReply,
    ControlRequest,
    MetadataApplied,
    MetadataPush,
    decode_control,
    encode_control,
)
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_names import Direction, control_ring

SHM = Path("/dev/shm")


def ids() -> Iterator[uuid.UUID]:
    for i in itertools.count(1):
        yield uuid.UUID(int=i)


def ctx(workers: int = 3, **kw: Any) -> OpContext:
    gen = ids()
    return OpContext(workers=workers, new_topic_id=lambda: next(gen), **kw)


def create(name: str, n: int = -1, rf: int = -1, configs: dict[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "num_partitions": n, "replication_factor": rf, "configs": configs or {}}


def run(
    state: ControllerState, c: OpContext, op: str, args: dict[str, Any]
) -> tuple[ControllerState, dict[str, Any]]:
    out = handle(state, op, args, c)
    assert replay(out.records, state) == out.state  # the records say exactly what changed
    return out.state, out.result


def codes(result: dict[str, Any], key: str = "topics") -> dict[str, int]:
    return {item["name"]: item["error_code"] for item in result[key]}


# --- the state machine ----------------------------------------------------------------------


def test_create_topics_places_partitions_on_the_least_loaded_worker() -> None:
    c = ctx(workers=3, num_partitions=2)
    s, r = run(ControllerState(), c, "create_topics", {"topics": [create("a", 4), create("b")]})
    assert codes(r) == {"a": 0, "b": 0}
    assert r["version"] == 1 and s.version == 1
    assert [p.leader for p in s.topics["a"].partitions] == [0, 1, 2, 0]
    assert [p.leader for p in s.topics["b"].partitions] == [1, 2]  # num.partitions = 2; loads even out
    assert r["topics"][0]["topic_id"] == str(s.topics["a"].topic_id)
    assert r["topics"][1]["num_partitions"] == 2
    assert all(p.leader_epoch == 0 for p in s.topics["a"].partitions)


def test_create_topics_refusals_have_kafkas_codes() -> None:
    c = ctx()
    s, _ = run(ControllerState(), c, "create_topics", {"topics": [create("taken"), create("a.b")]})
    items = [
        create("taken"),
        create("bad name"),
        create("."),
        create("x" * 250),
        create("a_b"),
        create("zero", 0),
        create("neg", -5),
        create("rf3", 1, 3),
        create("badcfg", 1, 1, {"retention.ms": "soon"}),
        create("unknowncfg", 1, 1, {"no.such": "1"}),
        create("dup"),
        create("dup"),
        create("fine", 2, 1, {"retention.ms": "1000"}),
    ]
    s2, r = run(s, c, "create_topics", {"topics": items})
    got = [(i["name"], i["error_code"]) for i in r["topics"]]
    assert got == [
        ("taken", 36),
        ("bad name", 17),
        (".", 17),
        ("x" * 250, 17),
        ("a_b", 17),
        ("zero", 37),
        ("neg", 37),
        ("rf3", 38),
        ("badcfg", 40),
        ("unknowncfg", 40),
        ("dup", 42),
        ("dup", 42),
        ("fine", 0),
    ]
    assert "single-host" in r["topics"][7]["error_message"]
    assert "retention.ms" in r["topics"][8]["error_message"]
    assert set(s2.topics) == {"taken", "a.b", "fine"}
    assert s2.topics["fine"].configs == {"retention.ms": "1000"}


def test_validate_only_changes_nothing() -> None:
    c = ctx()
    out = handle(ControllerState(), "create_topics", {"topics": [create("a", 3)], "validate_only": True}, c)
    assert out.records == [] and out.state == ControllerState() and out.result["version"] == -1
    assert out.result["topics"][0]["error_code"] == 0 and out.result["topics"][0]["num_partitions"] == 3


def test_delete_topics_by_name_and_by_id() -> None:
    c = ctx()
    s, r = run(ControllerState(), c, "create_topics", {"topics": [create("a"), create("b")]})
    b_id = r["topics"][1]["topic_id"]
    s, r = run(
        s,
        c,
        "delete_topics",
        {
            "topics": [
                {"name": "a", "topic_id": None},
                {"name": None, "topic_id": b_id},
                {"name": "nope", "topic_id": None},
                {"name": None, "topic_id": str(uuid.UUID(int=999))},
                {"name": None, "topic_id": "not-a-uuid"},
            ]
        },
    )
    assert [(i["name"], i["error_code"]) for i in r["topics"]] == [
        ("a", 0),
        ("b", 0),
        ("nope", 3),
        (None, 100),
        (None, 100),
    ]
    assert r["topics"][1]["topic_id"] == b_id
    assert s.topics == {}


def test_create_partitions() -> None:
    c = ctx(workers=2)
    s, _ = run(ControllerState(), c, "create_topics", {"topics": [create("a", 1), create("b", 1)]})
    s, r = run(
        s,
        c,
        "create_partitions",
        {"topics": [{"name": "a", "count": 4}, {"name": "b", "count": 1}, {"name": "zz", "count": 2}]},
    )
    assert codes(r) == {"a": 0, "b": 37, "zz": 3}
    assert [p.leader for p in s.topics["a"].partitions] == [0, 0, 1, 0]  # b's partition sits on 1
    assert [p.partition for p in s.topics["a"].partitions] == [0, 1, 2, 3]
    s2, r = run(s, c, "create_partitions", {"topics": [{"name": "a", "count": 2}], "validate_only": True})
    assert codes(r) == {"a": 37} and "higher than the requested 2" in r["topics"][0]["error_message"]
    assert s2 == s


def test_one_request_adds_at_most_ten_thousand_partitions() -> None:
    """2**31 - 1 partitions in one request is refused before anything is built; the budget is
    the request's, over all its topics, for CreateTopics and CreatePartitions alike."""
    c = ctx(workers=2)
    s, r = run(ControllerState(), c, "create_topics", {"topics": [create("huge", 2**31 - 1)]})
    assert codes(r) == {"huge": 37} and "10000 per request" in r["topics"][0]["error_message"]
    assert s.topics == {}
    s, r = run(s, c, "create_topics", {"topics": [create("a", 6000), create("b", 4000), create("c", 1)]})
    assert codes(r) == {"a": 0, "b": 0, "c": 37}
    s, r = run(
        s,
        c,
        "create_partitions",
        {"topics": [{"name": "a", "count": 16_000}, {"name": "b", "count": 4_001}]},
    )
    assert codes(r) == {"a": 0, "b": 37}
    assert len(s.topics["a"].partitions) == 16_000 and len(s.topics["b"].partitions) == 4_000


def test_alter_configs_incremental_and_replace() -> None:
    c = ctx()
    s, _ = run(ControllerState(), c, "create_topics", {"topics": [create("a", 1, 1, {"retention.ms": "5"})]})

    def alter(state: ControllerState, ops: list[dict[str, Any]], **kw: Any) -> tuple[ControllerState, int]:
        state, r = run(state, c, "alter_configs", {"resources": [{"name": "a", "ops": ops, **kw}]})
        return state, r["resources"][0]["error_code"]

    s, code = alter(s, [{"name": "segment.bytes", "op": "set", "value": "100000"}])
    assert code == 0 and s.topics["a"].configs == {"retention.ms": "5", "segment.bytes": "100000"}
    s, code = alter(s, [{"name": "retention.ms", "op": "delete", "value": None}])
    assert code == 0 and s.topics["a"].configs == {"segment.bytes": "100000"}
    s, code = alter(s, [{"name": "cleanup.policy", "op": "append", "value": "compact"}])
    assert code == 0 and s.topics["a"].configs["cleanup.policy"] == "delete,compact"
    s, code = alter(s, [{"name": "cleanup.policy", "op": "subtract", "value": "delete"}])
    assert code == 0 and s.topics["a"].configs["cleanup.policy"] == "compact"
    s2, code = alter(s, [{"name": "retention.ms", "op": "append", "value": "1"}])
    assert code == 40 and s2 == s
    s2, code = alter(s, [{"name": "retention.ms", "op": "set", "value": "-7"}])
    assert code == 40 and s2 == s
    s2, code = alter(s, [{"name": "nope.nope", "op": "set", "value": "1"}])
    assert code == 40 and s2 == s
    s2, code = alter(s, [{"name": "retention.ms", "op": "set", "value": "9"}], replace=True)
    assert code == 0 and s2.topics["a"].configs == {"retention.ms": "9"}
    s3, r = run(s, c, "alter_configs", {"resources": [{"name": "zz", "ops": []}]})
    assert r["resources"][0]["error_code"] == 3 and s3 == s
    s3, r = run(
        s,
        c,
        "alter_configs",
        {
            "resources": [{"name": "a", "ops": [{"name": "retention.ms", "op": "set", "value": "1"}]}],
            "validate_only": True,
        },
    )
    assert r["resources"][0]["error_code"] == 0 and s3 == s


def test_producer_id_blocks_never_overlap() -> None:
    c = ctx()
    s, r1 = run(ControllerState(), c, "allocate_producer_ids", {"count": 1000})
    s, r2 = run(s, c, "allocate_producer_ids", {"count": 10})
    assert (r1["first"], r1["count"], r2["first"], r2["count"]) == (0, 1000, 1000, 10)
    assert s.next_producer_id == 1010
    _, bad = run(s, c, "allocate_producer_ids", {"count": 0})
    assert bad["error_code"] == 42


def test_malformed_requests_apply_nothing() -> None:
    c = ctx()
    for op, args in [
        ("create_topics", {}),
        ("create_topics", {"topics": [create("ok"), "garbage"]}),
        ("delete_topics", {"topics": 5}),
        ("no_such_op", {}),
    ]:
        out = handle(ControllerState(), op, args, c)
        assert out.result["error_code"] == 42 and out.records == [] and out.state == ControllerState()


def test_records_must_follow_the_version() -> None:
    with pytest.raises(ValueError, match="does not follow"):
        apply_record(ControllerState(), {"offset": 3, "type": "producer_ids", "next": 5})
    with pytest.raises(ValueError, match="unknown metadata record"):
        apply_record(ControllerState(), {"offset": 0, "type": "bogus"})


def random_ops(seed: int, n: int) -> Iterator[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    names = [f"t{i}" for i in range(8)]
    for _ in range(n):
        kind = rng.choice(["create", "create", "delete", "grow", "alter", "pids"])
        name = rng.choice(names)
        if kind == "create":
            yield "create_topics", {"topics": [create(name, rng.randint(1, 5))]}
        elif kind == "delete":
            yield "delete_topics", {"topics": [{"name": name, "topic_id": None}]}
        elif kind == "grow":
            yield "create_partitions", {"topics": [{"name": name, "count": rng.randint(1, 8)}]}
        elif kind == "alter":
            op = {"name": "retention.ms", "op": "set", "value": str(rng.randint(1, 10**6))}
            yield "alter_configs", {"resources": [{"name": name, "ops": [op]}]}
        else:
            yield "allocate_producer_ids", {"count": rng.randint(1, 100)}


def test_replaying_the_records_equals_the_live_state() -> None:
    for seed in range(5):
        c = ctx(workers=3)
        state = ControllerState()
        records: list[dict[str, Any]] = []
        for op, args in random_ops(seed, 60):
            out = handle(state, op, args, c)
            records += out.records
            state = out.state
        assert replay(records) == state
        assert ControllerState.from_dict(state.to_dict()) == state


def test_placement_spreads_and_orphans_move_with_a_new_epoch() -> None:
    c = ctx(workers=4)
    s, _ = run(ControllerState(), c, "create_topics", {"topics": [create("a", 8), create("b", 3)]})
    loads = [sum(p.leader == w for t in s.topics.values() for p in t.partitions) for w in range(4)]
    assert max(loads) - min(loads) <= 1
    out = reassign_orphans(s, 2)
    moved = out.state
    assert all(p.leader < 2 for t in moved.topics.values() for p in t.partitions)
    for name, topic in moved.topics.items():
        for before, after in zip(s.topics[name].partitions, topic.partitions, strict=True):
            assert after.leader_epoch == before.leader_epoch + (before.leader >= 2)
            if before.leader < 2:
                assert after.leader == before.leader  # nothing else moves
    loads = [sum(p.leader == w for t in moved.topics.values() for p in t.partitions) for w in range(2)]
    assert max(loads) - min(loads) <= 1
    assert reassign_orphans(moved, 2).records == []  # stable once placed
    assert reassign_orphans(s, 8).records == []  # more workers: nothing moves
    assert place(ControllerState(), 3, 2) == [0, 1, 0]


# --- the metadata log on disk -------------------------------------------------------------------


def build(tmp_path: Path, n: int = 40, seed: int = 1, **kw: Any) -> tuple[MetadataLog, ControllerState]:
    mlog = MetadataLog(tmp_path, **kw)
    state = mlog.open()
    c = ctx()
    for op, args in random_ops(seed, n):
        out = handle(state, op, args, c)
        mlog.append(out.records, out.state)
        state = out.state
    return mlog, state


def test_log_reopen_rebuilds_the_state_and_keeps_the_cluster_id(tmp_path: Path) -> None:
    mlog, state = build(tmp_path)
    cluster = mlog.cluster_id
    mlog.close()
    again = MetadataLog(tmp_path)
    assert again.open() == state
    assert again.cluster_id == cluster and len(cluster) == 22
    assert "cluster.id=" + cluster in (tmp_path / "meta.properties").read_text()
    again.close()


@pytest.mark.parametrize("damage", ["torn", "bad_crc", "garbage_length"])
def test_a_torn_last_record_is_dropped_on_replay(tmp_path: Path, damage: str) -> None:
    mlog, state = build(tmp_path, n=10)
    good_size = mlog.log_path.stat().st_size
    mlog.close()
    frame = encode_frame({"offset": state.version + 1, "type": "producer_ids", "next": 10**9})
    if damage == "torn":
        tail = frame[: len(frame) - 5]
    elif damage == "bad_crc":
        tail = frame[:-1] + bytes([frame[-1] ^ 0xFF])
    else:
        tail = b"\xff\xff\xff\xff\x00\x00"
    with mlog.log_path.open("ab") as f:
        f.write(tail)
    again = MetadataLog(tmp_path)
    assert again.open() == state
    assert again.dropped_bytes == len(tail)
    assert again.log_path.stat().st_size == good_size  # cut, so the next append follows good data
    out = handle(state, "allocate_producer_ids", {"count": 5}, ctx())
    again.append(out.records, out.state)
    again.close()
    third = MetadataLog(tmp_path)
    assert third.open() == out.state and third.dropped_bytes == 0
    third.close()


def test_snapshot_then_log_and_a_crash_between_them(tmp_path: Path) -> None:
    mlog, state = build(tmp_path, n=80, snapshot_bytes=2000)
    assert mlog.snapshot_path.exists()
    assert mlog.log_path.stat().st_size < 2000
    mlog.close()
    again = MetadataLog(tmp_path)
    assert again.open() == state
    # A crash after the snapshot was renamed into place but before the log was emptied: the old
    # records (all <= the snapshot's version) are skipped.
    records = list(again.records())
    again.snapshot()
    with again.log_path.open("wb") as f:
        f.write(b"".join(encode_frame(r) for r in records))
    again.close()
    third = MetadataLog(tmp_path)
    assert third.open() == state
    third.close()


def test_a_corrupt_snapshot_refuses_to_start(tmp_path: Path) -> None:
    mlog, _ = build(tmp_path, n=5)
    mlog.snapshot()
    mlog.close()
    data = bytearray(mlog.snapshot_path.read_bytes())
    data[-2] ^= 0xFF
    mlog.snapshot_path.write_bytes(bytes(data))
    with pytest.raises(MetadataLogError, match="corrupt"):
        MetadataLog(tmp_path).open()


def test_scan_frames_stops_at_the_first_bad_frame() -> None:
    a, b = encode_frame({"x": 1}), encode_frame({"y": 2})
    assert scan_frames(a + b) == ([{"x": 1}, {"y": 2}], len(a + b))
    assert scan_frames(a + b[:-1]) == ([{"x": 1}], len(a))
    assert scan_frames(b"") == ([], 0)


def test_data_dir_lock(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path / "d")
    first.acquire()
    try:
        with pytest.raises(MetadataLogError, match=rf"in use by another shardbroker \(pid {os.getpid()}\)"):
            DataDirLock(tmp_path / "d").acquire()
    finally:
        first.release()
    second = DataDirLock(tmp_path / "d")
    second.acquire()  # released: free again
    second.release()


_ORPHAN = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, (sys.argv[2] + "\\n").encode(), 0)
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
"""


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("holds_for", [0.5, 60.0])
def test_a_restart_waits_for_the_orphaned_workers_of_a_killed_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holds_for: float
) -> None:
    """The lock records a supervisor that is gone; its orphaned workers (here: a process holding
    the flock) drain and exit. A start waits for them, up to ORPHAN_DRAIN_WAIT_S, then says why."""
    monkeypatch.setattr(metadata_log, "ORPHAN_DRAIN_WAIT_S", 3.0)
    (tmp_path / "d").mkdir()
    dead = _dead_pid()
    orphan = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, str(tmp_path / "d" / ".lock"), str(dead), str(holds_for)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline() == "locked\n"
        lock = DataDirLock(tmp_path / "d")
        if holds_for < 3.0:
            lock.acquire()  # waited for the orphan to exit
            assert orphan.wait(5) == 0
            lock.release()
        else:
            with pytest.raises(MetadataLogError, match=rf"workers of broker pid {dead}, which is gone"):
                lock.acquire()
    finally:
        orphan.kill()
        orphan.communicate()  # reaps it and closes its stdout pipe


def test_unusable_data_dirs_are_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(MetadataLogError, match="cannot create data dir"):
        DataDirLock(tmp_path / "file" / "sub").acquire()
    with pytest.raises(MetadataLogError, match="not a directory"):
        DataDirLock(tmp_path / "file").acquire()
    # Root ignores permission bits, so the refusal of a read-only dir is simulated.
    real_open = os.open

    def deny(path: Any, *args: Any, **kwargs: Any) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    with pytest.raises(MetadataLogError, match=r"is not writable \(Permission denied\)"):
        DataDirLock(tmp_path / "ro").acquire()


# --- the controller's end of the rings ------------------------------------------------------------


@pytest.fixture
def instance(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"tctl{os.getpid()}x{abs(hash(request.node.name)) % 10**6}"
    yield name
    for path in SHM.glob(f"shardbroker-{name}-*"):
        path.unlink()
    assert not list(SHM.glob(f"shardbroker-{name}-*"))


class FakeWorker:
    """A worker's two ring ends, attached by name, driven synchronously."""

    def __init__(self, instance: str, slot: int) -> None:
        self.in_ring = Ring.attach(instance, control_ring(slot, Direction.TO_WORKER))
        self.out_ring = Ring.attach(instance, control_ring(slot, Direction.FROM_WORKER))
        self.reader = self.in_ring.reader()
        self.writer = self.out_ring.writer()

    def send(self, message: Any) -> None:
        assert self.writer.try_write(encode_control(message))
        self.out_ring.reader_bell.ring()

    def receive(self) -> list[Any]:
        return [decode_control(f) for f in self.reader.read_batch(64)]

    def close(self) -> None:
        self.in_ring.close()
        self.out_ring.close()


def test_controller_pushes_images_and_answers_after_every_live_worker_acked(
    tmp_path: Path, instance: str
) -> None:
    config = BrokerConfig.from_properties(
        {
            "log.dirs": str(tmp_path),
            "workers": "2",
            "listeners": "127.0.0.1:19000",
            "advertised.listeners": "adv",
        }
    )
    controller = Controller(config, instance, in_capacity=1 << 16, out_capacity=1 << 16)
    controller.open()
    live = {0: True, 1: True}
    controller.is_live = lambda slot: live[slot]
    registered: list[int] = []
    controller.attach(lambda fd, events, cb: registered.append(fd))
    workers: list[FakeWorker] = []
    try:
        for slot in (0, 1):
            controller.before_spawn(slot)
            workers.append(FakeWorker(instance, slot))
        assert len(registered) == 2
        for w in workers:
            (push,) = w.receive()
            assert isinstance(push, MetadataPush) and push.image["version"] == -1
            assert push.image["brokers"] == [[0, "adv", 19000, "PLAINTEXT"], [1, "adv", 19001, "PLAINTEXT"]]
            w.send(MetadataApplied(-1))
        w0, w1 = workers
        w0.send(ControlRequest(7, "create_topics", {"topics": [create("a", 2)]}))
        controller.poll()
        for w in workers:
            (push,) = w.receive()
            assert isinstance(push, MetadataPush) and push.image["version"] == 0
            assert push.image["topics"][0]["partitions"] == [[0, 0, 0], [1, 1, 0]]
        w0.send(MetadataApplied(0))
        controller.poll()
        assert w0.receive() == []  # worker 1 has not applied it yet
        w1.send(MetadataApplied(0))
        controller.poll()
        (reply,) = w0.receive()
        assert isinstance(reply, ControlReply) and reply.request_id == 7
        assert reply.result["version"] == 0 and reply.result["topics"][0]["error_code"] == 0

        # A dead worker is not waited for; a request that changes nothing is answered at once.
        w0.send(ControlRequest(8, "allocate_producer_ids", {"count": 100}))
        controller.poll()
        w0.receive()
        live[1] = False
        controller.poll()
        assert w0.receive() == []  # worker 0 itself has not acked version 1
        w0.send(MetadataApplied(1))
        controller.poll()
        (reply,) = w0.receive()
        assert isinstance(reply, ControlReply) and reply.result == {
            "first": 0,
            "count": 100,
            "error_code": 0,
            "error_message": None,
            "version": 1,
        }
        w0.send(ControlRequest(9, "create_topics", {"topics": [create("a")]}))
        controller.poll()
        (reply,) = w0.receive()
        assert isinstance(reply, ControlReply) and reply.result["topics"][0]["error_code"] == 36

        # Respawn of slot 1: whatever the dead worker left unread or unsent is gone, the
        # current image is the first frame, and the new worker is not waited for until it acks.
        w1.send(ControlRequest(1, "create_topics", {"topics": [create("ghost")]}))
        w1.close()
        controller.before_spawn(1)
        live[1] = True
        controller.poll()
        assert "ghost" not in controller.state.topics
        w1 = FakeWorker(instance, 1)
        (push,) = w1.receive()
        assert isinstance(push, MetadataPush) and push.image["version"] == 1
        w0.send(ControlRequest(10, "delete_topics", {"topics": [{"name": "a", "topic_id": None}]}))
        controller.poll()
        w0.receive()
        w0.send(MetadataApplied(2))
        controller.poll()
        (reply,) = w0.receive()
        assert isinstance(reply, ControlReply) and reply.request_id == 10
        w1.close()
        w0.close()
    finally:
        controller.close()
    # restart: topics and producer ids are where they were, ids keep growing
    again = Controller(config, instance)
    again.open()
    try:
        assert again.state.topics == {} and again.state.next_producer_id == 100
        assert again.apply("allocate_producer_ids", {"count": 5})["first"] == 100
    finally:
        again.close()


def test_controller_outbox_holds_images_for_a_full_ring(tmp_path: Path, instance: str) -> None:
    config = BrokerConfig(data_dir=tmp_path, workers=1)
    controller = Controller(config, instance, in_capacity=4096, out_capacity=1024)
    controller.open()
    try:
        controller.before_spawn(0)
        w = FakeWorker(instance, 0)
        for i in range(12):  # the ring fills up: only the newest image waits in the outbox
            assert controller.apply("create_topics", {"topics": [create(f"topic-{i}", 1)]})["version"] == i
        assert len(controller.slots[0].outbox) == 1
        seen = [m.image["version"] for m in w.receive()]
        controller.poll()
        seen += [m.image["version"] for m in w.receive()]
        assert seen[-1] == 11 and seen == sorted(seen) and len(seen) < 13
        # An image that could never fit the ring is refused, and nothing changes.
        result = controller.apply("create_topics", {"topics": [create("huge", 500)]})
        assert result["error_code"] == 44 and "huge" not in controller.state.topics
        w.close()
    finally:
        controller.close()


def test_worker_count_shrinking_moves_partitions_at_open(tmp_path: Path, instance: str) -> None:
    big = Controller(BrokerConfig(data_dir=tmp_path, workers=4), instance)
    big.open()
    big.apply("create_topics", {"topics": [create("a", 8)]})
    big.close()
    small = Controller(BrokerConfig(data_dir=tmp_path, workers=2), instance)
    small.open()
    try:
        parts = small.state.topics["a"].partitions
        assert sorted(p.leader for p in parts) == [0, 0, 0, 0, 1, 1, 1, 1]
        assert [p.leader_epoch for p in parts] == [0, 0, 1, 1] * 2
        assert small.image.brokers[1].port == 9093
    finally:
        small.close()
    assert LogConfig() == small.config.log_defaults


# --- partition moves --------------------------------------------------------------------------


def leaders(state: ControllerState, name: str) -> list[tuple[int, int]]:
    return [(p.leader, p.leader_epoch) for p in state.topics[name].partitions]


def test_a_move_releases_then_assigns_with_a_new_epoch() -> None:
    c = ctx(workers=3)
    state, _ = run(
        ControllerState(), c, "create_topics", {"topics": [create("a", 3), create("__consumer_offsets", 1)]}
    )
    assert leaders(state, "a") == [(0, 0), (1, 0), (2, 0)]
    asked = [
        {"topic": "a", "partition": 0, "to": 2},
        {"topic": "a", "partition": 1, "to": 1},  # already there: fine, nothing to do
        {"topic": "a", "partition": 2, "to": 3},  # no worker 3
        {"topic": "a", "partition": 9, "to": 0},
        {"topic": "nope", "partition": 0, "to": 0},
        {"topic": "__consumer_offsets", "partition": 0, "to": 1},
        {"topic": "a", "partition": 2, "to": None},  # cancel, none running
    ]
    state, result = run(state, c, "move_partitions", {"partitions": asked})
    assert [r["error_code"] for r in result["partitions"]] == [0, 0, 39, 3, 3, 39, 85]
    assert "workers 0-2" in result["partitions"][2]["error_message"]
    assert "internal" in result["partitions"][5]["error_message"]
    assert result["release"] == [
        {"topic": "a", "id": str(state.topics["a"].topic_id), "partition": 0, "from": 0, "to": 2}
    ]
    assert leaders(state, "a") == [(-1, 0), (1, 0), (2, 0)]  # nobody appends while it moves
    # While it moves: a second move (or a cancel) is refused, placement ignores it.
    again, busy = run(state, c, "move_partitions", {"partitions": [{"topic": "a", "partition": 0, "to": 1}]})
    assert busy["partitions"][0]["error_code"] == 60 and again == state
    assert place(state, 3, 3) == [0, 1, 2]  # a-0 counts for no worker (else worker 0 came last)
    state, done = run(state, c, "assign_partitions", {"partitions": result["release"]})
    assert done["partitions"] == [{"topic": "a", "partition": 0, **_ok_answer(), "leader_epoch": 1}]
    assert leaders(state, "a") == [(2, 1), (1, 0), (2, 0)]
    # Step two of a move whose topic was deleted and re-created meanwhile touches nothing.
    state, result = run(
        state, c, "move_partitions", {"partitions": [{"topic": "a", "partition": 1, "to": 0}]}
    )
    state, _ = run(state, c, "delete_topics", {"topics": [{"name": "a", "topic_id": None}]})
    state, _ = run(state, c, "create_topics", {"topics": [create("a", 2)]})
    before = leaders(state, "a")
    state, late = run(state, c, "assign_partitions", {"partitions": result["release"]})
    assert late["partitions"][0]["error_code"] == 3 and leaders(state, "a") == before


def _ok_answer() -> dict[str, Any]:
    return {"error_code": 0, "error_message": None}


def test_a_partition_left_mid_move_by_a_controller_crash_is_placed_at_open() -> None:
    c = ctx(workers=2)
    state, _ = run(ControllerState(), c, "create_topics", {"topics": [create("a", 2)]})
    state, _ = run(state, c, "move_partitions", {"partitions": [{"topic": "a", "partition": 1, "to": 0}]})
    moved = reassign_orphans(state, 2)
    assert replay(moved.records, state) == moved.state
    assert [p.leader >= 0 for p in moved.state.topics["a"].partitions] == [True, True]
    assert moved.state.topics["a"].partitions[1].leader_epoch == 1


def test_controller_assigns_a_move_only_after_the_old_owner_let_go(tmp_path: Path, instance: str) -> None:
    config = BrokerConfig(data_dir=tmp_path, workers=2)
    controller = Controller(config, instance, in_capacity=1 << 16, out_capacity=1 << 16)
    controller.open()
    live = {0: True, 1: True}
    controller.is_live = lambda slot: live[slot]
    workers: list[FakeWorker] = []
    try:
        for slot in (0, 1):
            controller.before_spawn(slot)
            workers.append(FakeWorker(instance, slot))
        w0, w1 = workers
        controller.apply("create_topics", {"topics": [create("a", 2)]})  # version 0: a-0 on 0, a-1 on 1
        for w in workers:
            w.receive()
            w.send(MetadataApplied(0))
        w1.send(
            ControlRequest(5, "move_partitions", {"partitions": [{"topic": "a", "partition": 0, "to": 1}]})
        )
        controller.poll()
        for w in workers:
            (push,) = w.receive()
            assert push.image["topics"][0]["partitions"][0] == [0, -1, 0]  # released
        w1.send(ControlRequest(6, "list_moves", {}))
        controller.poll()
        (listing,) = w1.receive()
        assert listing.result == {"moves": [{"topic": "a", "partition": 0, "from": 0, "to": 1}]}
        w1.send(MetadataApplied(1))  # the new owner acking is not enough: the old one holds it
        controller.poll()
        assert w1.receive() == [] and controller.moves
        w0.send(MetadataApplied(1))  # worker 0 handed the log over
        controller.poll()
        for w in workers:
            (push,) = w.receive()
            assert push.image["topics"][0]["partitions"][0] == [0, 1, 1]  # worker 1, epoch 1
            w.send(MetadataApplied(2))
        controller.poll()
        (reply,) = w1.receive()
        assert reply.request_id == 5 and reply.result["partitions"][0]["error_code"] == 0
        # An old owner that died holds nothing: the move completes without its ack.
        w1.send(
            ControlRequest(7, "move_partitions", {"partitions": [{"topic": "a", "partition": 1, "to": 0}]})
        )
        controller.poll()
        live[1] = False
        controller.poll()
        assert controller.state.topics["a"].partitions[1].leader == 0 and not controller.moves
        w0.close()
        w1.close()
    finally:
        controller.close()
