"""The shared-memory ring in one process: framing, wrap-around, full ring, in-place APIs, traffic
counters, shm names, stale-segment reclaim. Cross-process behaviour is in test_ring_processes.py."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator

import numpy as np
import posix_ipc  # type: ignore[import-not-found,unused-ignore]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.config_def import ConfigError
from shardbroker.ipc import ring_endpoint, ring_reader, shm
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_layout import (
    FRAME_HEADER,
    HEADER_SIZE,
    PAD,
    Q_READER_SLEEP,
    RING_KIND,
    RingCorrupt,
    RingError,
    RingStats,
    frame_size,
    read_stats,
)
from shardbroker.ipc.ring_reader import RingReader
from shardbroker.serve import _worker_setup
from shardbroker.supervision.worker import Worker, WorkerConfig

_counter = itertools.count()


def leftovers(instance: str) -> list[str]:
    return sorted(p.name for p in shm.SHM_DIR.iterdir() if p.name.startswith(f"shardbroker-{instance}-"))


@pytest.fixture
def instance() -> Iterator[str]:
    """A fresh instance name; whatever the test leaves in /dev/shm is removed, then reported."""
    name = f"t{os.getpid()}x{next(_counter)}"
    yield name
    left = leftovers(name)
    for entry in left:
        (shm.SHM_DIR / entry).unlink(missing_ok=True)
    assert left == [], "test left shared memory behind"


@pytest.fixture
def ring(instance: str) -> Iterator[Ring]:
    with Ring.create(instance, "r", 256) as r:
        yield r


def drain(ring: Ring) -> list[bytes]:
    out: list[bytes] = []
    while got := ring.reader().read_batch(1000):
        out.extend(got)
    ring.reader().read_batch()  # skip a trailing pad, if any
    return out


# --- names, creation, cleanup -------------------------------------------------------------------


def test_create_makes_segment_and_doorbells_and_close_unlinks(instance: str) -> None:
    r = Ring.create(instance, "ctl-w0", 4096)
    base = f"shardbroker-{instance}-ctl-w0"
    assert leftovers(instance) == [base, f"{base}.rbell", f"{base}.wbell"]
    assert r.name == f"/{base}"
    assert r.capacity == 4096 and r.used_bytes == 0 and r.free_bytes == 4096
    assert os.path.getsize(f"/dev/shm/{base}") == HEADER_SIZE + 4096
    r.close()
    r.close()  # idempotent
    assert leftovers(instance) == []


def test_context_manager_unlinks_on_exception(instance: str) -> None:
    with pytest.raises(ZeroDivisionError), Ring.create(instance, "r", 256):
        1 / 0  # noqa: B018
    assert leftovers(instance) == []


def test_create_is_exclusive(instance: str, ring: Ring) -> None:
    with pytest.raises(shm.ShmError, match="exists"):
        Ring.create(instance, "r", 256)
    assert len(leftovers(instance)) == 3  # the failed create removed nothing of the live ring


def test_attach_by_name_does_not_unlink(instance: str, ring: Ring) -> None:
    ring.writer().try_write(b"hello")
    other = Ring.attach(instance, "r")
    assert other.used_bytes == frame_size(5) and other.capacity == 256
    assert other.reader().try_read() == b"hello"
    other.close()
    assert len(leftovers(instance)) == 3
    assert ring.used_bytes == 0


def test_attach_missing_or_foreign(instance: str) -> None:
    with pytest.raises(shm.ShmError, match="does not exist"):
        Ring.attach(instance, "nope")
    seg = posix_ipc.SharedMemory(shm.shm_name(instance, "foreign"), posix_ipc.O_CREX, size=4096)
    seg.close_fd()
    try:
        with pytest.raises(shm.ShmError, match="not a kind"):
            Ring.attach(instance, "foreign")
    finally:
        seg.unlink()


@pytest.mark.parametrize("inst,name", [("a-b", "r"), ("", "r"), ("a", "r.x"), ("a", "r/x"), ("a", "")])
def test_bad_names(inst: str, name: str) -> None:
    with pytest.raises(ValueError):
        shm.shm_name(inst, name)


@pytest.mark.parametrize("capacity", [0, 32, 100, 3 << 10, 1 << 32])
def test_bad_capacity(instance: str, capacity: int) -> None:
    with pytest.raises(ValueError):
        Ring.create(instance, "r", capacity)


# --- framing and wrap-around --------------------------------------------------------------------


def test_frames_round_trip_in_order(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    frames = [b"", b"a", b"bc" * 7, bytes(range(40))]
    for f in frames:
        assert w.try_write(f)
    assert ring.used_bytes == sum(frame_size(len(f)) for f in frames)
    assert r.read_batch() == frames
    assert ring.used_bytes == 0
    assert r.read_batch() == [] and r.try_read() is None


def test_write_accepts_any_contiguous_buffer(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    arr = np.arange(5, dtype=np.uint32)
    assert w.try_write(bytearray(b"xy"))
    assert w.try_write(arr.data)
    assert r.read_batch() == [b"xy", arr.tobytes()]


SIZES = [*range(0, 26), 63, 64, 65, 100, 127, 128, 129, 200, 248]


def test_wrap_around_at_every_alignment(ring: Ring) -> None:
    """Every (start position, frame size) pair of a 256-byte ring: the frame comes back intact,
    at the position the padding rule says (before the end if it fits, else at 0 after a pad)."""
    w, r = ring.writer(), ring.reader()
    cap = ring.capacity
    rng = random.Random(1)
    for start in range(0, cap, FRAME_HEADER):
        for n in SIZES:
            # Move the write position to `start` with filler frames, then empty the ring.
            pos = w._wr % cap
            gap = (start - pos) % cap
            if gap and pos + gap > cap:
                assert w.try_write(bytes(cap - pos - FRAME_HEADER))
                gap = start
            if gap:
                assert w.try_write(bytes(gap - FRAME_HEADER))
            drain(ring)
            assert w._wr % cap == start and ring.used_bytes == 0
            payload = rng.randbytes(n)
            wraps = start + frame_size(n) > cap
            if wraps and frame_size(n) + cap - start > cap:
                # Pad + frame exceed the ring: the pad goes out alone, the frame after it is read.
                assert not w.try_write(payload)
                assert ring._words[start // 4] == PAD and ring.used_bytes == cap - start
                assert r.read_batch() == []
                assert w.try_write(payload)
                assert ring.used_bytes == frame_size(n)
            else:
                assert w.try_write(payload)
                assert ring.used_bytes == frame_size(n) + (cap - start if wraps else 0)
                if wraps:
                    assert ring._words[start // 4] == PAD
            views = r.peek_batch()
            assert [bytes(v) for v in views] == [payload]
            assert (views[0].obj is not None) and len(views[0]) == n
            r.release()
            assert ring.used_bytes == 0


def test_peek_views_are_in_place_and_released(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    w.try_write(b"\x01" * 16)
    (view,) = r.peek_batch()
    arr = np.frombuffer(view, dtype=np.uint64)  # zero-copy: payloads are 8-aligned
    assert arr.tolist() == [0x0101010101010101] * 2
    del arr
    r.release()
    with pytest.raises(ValueError):
        view[0]  # released at release(): stale use fails loudly


def test_payload_alignment_is_8(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    for n in range(0, 30):
        w.try_write(bytes(n))
        (v,) = r.peek_batch()
        addr = np.frombuffer(v, dtype=np.uint8).ctypes.data if n else None
        if addr is not None:
            assert addr % 8 == 0
        r.release()


# --- full ring and back-pressure ------------------------------------------------------------------


def test_full_ring_try_write_false_then_space(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    n = 0
    while w.try_write(bytes(24)):  # 32-byte frames: exactly 8 fit
        n += 1
    assert n == 8 and ring.used_bytes == 256 and ring.free_bytes == 0
    assert not w.try_write(b"")
    assert r.read_batch(1) == [bytes(24)]
    assert w.try_write(bytes(24))
    assert not w.try_write(b"")
    assert len(r.read_batch()) == 8


def test_blocking_write_times_out_without_dropping(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    while w.try_write(b"x" * 24):
        pass
    t0 = time.monotonic()
    assert not w.write(b"late", timeout=0.05)
    elapsed = time.monotonic() - t0
    assert 0.045 <= elapsed < 1.0
    assert len(r.read_batch()) == 8  # nothing dropped, nothing half-written
    assert r.read_batch() == []
    assert w.write(b"late", timeout=0.05)
    assert r.read_batch() == [b"late"]


def test_reserve_times_out(ring: Ring) -> None:
    w = ring.writer()
    assert w.try_write(bytes(200))
    with pytest.raises(TimeoutError):
        w.reserve(100, timeout=0.02)


def test_largest_frame_needs_the_whole_ring(ring: Ring) -> None:
    """A frame of capacity - 8 fits from any position: the pad is published alone first."""
    w, r = ring.writer(), ring.reader()
    big = bytes(range(248))
    assert w.try_write(b"abc")  # position 16
    r.read_batch()
    assert not w.try_write(big)  # pad to the end published; reader must skip it first
    assert ring.used_bytes == 256 - 16
    assert r.read_batch() == []  # skips the pad, frees the end
    assert w.try_write(big)
    assert r.read_batch() == [big]
    with pytest.raises(RingError, match="cannot fit"):
        w.try_write(bytes(249))


# --- in-place writing ----------------------------------------------------------------------------


def test_reserve_commit_in_place(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    view = w.reserve(100)
    assert len(view) == 100
    view[:5] = b"hello"
    assert ring.used_bytes == 0 and r.read_batch() == []  # not visible before commit
    w.commit(5)
    with pytest.raises(ValueError):
        view[0] = 1  # released by commit
    assert r.read_batch() == [b"hello"]


def test_reserve_abort_and_misuse(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    view = w.try_reserve(10)
    assert view is not None
    with pytest.raises(RingError, match="pending"):
        w.try_write(b"x")
    with pytest.raises(RingError):
        w.commit(11)
    w.abort()
    assert r.read_batch() == []
    with pytest.raises(RingError, match="without reserve"):
        w.commit()
    arr = np.frombuffer(w.reserve(16), dtype=np.uint32)
    arr[:] = [1, 2, 3, 4]
    del arr
    w.commit()
    assert r.read_batch() == [np.array([1, 2, 3, 4], dtype=np.uint32).tobytes()]


def test_try_write_many_publishes_what_fits(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    frames = [bytes([i]) * 24 for i in range(10)]
    assert w.try_write_many(frames) == 8
    assert r.read_batch() == frames[:8]
    assert w.try_write_many(frames[8:]) == 2
    assert r.read_batch() == frames[8:]


# --- corruption, reset, counters ------------------------------------------------------------------


def test_corrupt_length_is_detected(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    w.try_write(b"abcd")
    ring._words[0] = 1000
    with pytest.raises(RingCorrupt):
        r.peek_batch()


def test_reset_drops_unread(ring: Ring) -> None:
    ring.writer().try_write(b"old")
    ring.reset()
    assert ring.used_bytes == 0
    assert ring.reader().read_batch() == []
    ring.writer().try_write(b"new")
    assert ring.reader().read_batch() == [b"new"]


def test_used_bytes_clamped(ring: Ring) -> None:
    ring._q[8] = 10_000  # a tail far ahead (as if read while both moved): still <= capacity
    assert ring.used_bytes == 256


# --- traffic counters (frames published, bytes published = tail) ---------------------------------


def test_frame_count_follows_every_publish_path_and_skips_pads(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    assert ring.stats() == RingStats(0, 256, 0, 0)
    assert w.try_write(b"abc")
    assert ring.stats().frames_published == 1
    assert w.try_write_many([bytes(24)] * 3) == 3
    assert ring.stats().frames_published == 4
    w.reserve(10)
    w.abort()
    assert ring.stats().frames_published == 4
    w.reserve(10)
    w.commit(7)
    assert ring.stats() == RingStats(16 + 3 * 32 + 16, 256, 16 + 3 * 32 + 16, 5)
    assert not w.try_write(bytes(200))  # full: nothing published, nothing counted
    assert ring.stats().frames_published == 5
    r.read_batch(1000)
    assert w.try_write(bytes(200))  # at 128: does not fit before the end, so pad + frame at 0
    stats = ring.stats()
    assert stats.frames_published == 6  # the pad is not a frame...
    assert stats.bytes_published == 256 + frame_size(200)  # ...but its bytes were published
    assert stats.used_bytes == frame_size(200)


def test_try_write_many_counts_frames_published_with_a_lone_pad(ring: Ring) -> None:
    """The frames before a pad that is published alone (the next frame must go at 0 and the
    reader has to skip the pad first) are counted with it, not lost."""
    w, r = ring.writer(), ring.reader()
    w.try_write(bytes(8))
    r.read_batch()  # head at 16
    assert w.try_write_many([bytes(8), bytes(240)]) == 1  # frame at 16, then pad 32..256 alone
    assert ring.stats().frames_published == 2
    assert ring.stats().bytes_published == 256
    assert r.read_batch() == [bytes(8)]
    assert w.try_write_many([bytes(240)]) == 1
    assert ring.stats().frames_published == 3


def test_frame_count_survives_new_writers_and_reset(instance: str, ring: Ring) -> None:
    ring.writer().try_write_many([b"a", b"b"])
    with Ring.attach(instance, "r") as other:  # a restarted writer process
        other.writer().try_write(b"c")
        assert other.stats().frames_published == 3
    ring.reset()
    assert ring.stats().frames_published == 3 and ring.stats().used_bytes == 0


def test_read_stats_reads_the_header_read_only(instance: str, ring: Ring) -> None:
    ring.writer().try_write_many([b"abc", bytes(30)])
    path = shm.SHM_DIR / ring.name.lstrip("/")
    before = path.read_bytes()
    assert read_stats(path) == ring.stats() == RingStats(56, 256, 56, 2)
    assert path.read_bytes() == before
    assert read_stats(shm.SHM_DIR / f"shardbroker-{instance}-nope") is None  # gone


@pytest.mark.parametrize("what", ["empty", "short", "not a ring", "old version", "no capacity yet"])
def test_read_stats_of_what_is_not_a_ring_of_this_layout(instance: str, what: str) -> None:
    name = shm.shm_name(instance, "x")
    size = {"empty": 0, "short": 100}.get(what, 4096)
    seg = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, size=size)
    seg.close_fd()
    try:
        path = shm.SHM_DIR / name.lstrip("/")
        if what in ("old version", "no capacity yet"):
            version = 1 if what == "old version" else 2
            with path.open("r+b") as f:
                f.write(shm.PREAMBLE.pack(shm.MAGIC, RING_KIND, version, os.getpid(), 0))
                f.write((256).to_bytes(8, sys.byteorder) if version == 1 else b"")
        assert read_stats(path) is None
    finally:
        seg.unlink()


# --- hypothesis: any sizes, any interleaving -------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.one_of(st.integers(0, 256 - FRAME_HEADER), st.just(-1)),  # -1: read a batch
        max_size=60,
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_model_any_frame_sizes(instance: str, ops: list[int], seed: int) -> None:
    with Ring.create(instance, f"h{next(_counter)}", 256) as ring:  # fresh per example
        check_against_model(ring, ops, seed)


def check_against_model(ring: Ring, ops: list[int], seed: int) -> None:
    w, r = ring.writer(), ring.reader()
    rng = random.Random(seed)
    model: deque[bytes] = deque()
    written = 0
    for op in ops:
        if op < 0:
            for got in r.read_batch(rng.randint(1, 4)):
                assert got == model.popleft()
            continue
        payload = rng.randbytes(op)
        for _ in range(3):  # full: reading everything must always make room
            if w.try_write(payload):
                model.append(payload)
                written += 1
                break
            for got in r.read_batch(1000):
                assert got == model.popleft()
        else:
            pytest.fail(f"a {op}-byte frame never fit")
        assert ring.used_bytes <= ring.capacity
        assert ring.stats().frames_published == written
    assert drain(ring) == list(model)
    assert ring.used_bytes == 0


# --- async ---------------------------------------------------------------------------------------


def test_wait_async_timeout_and_ready(ring: Ring) -> None:
    async def main() -> tuple[bool, bool]:
        empty = await ring.reader().wait_async(timeout=0.02)
        asyncio.get_running_loop().call_later(0.01, ring.writer().try_write, b"x")
        ready = await ring.reader().wait_async(timeout=5)
        return empty, ready

    assert asyncio.run(main()) == (False, True)
    assert ring.reader().read_batch() == [b"x"]


def test_watch_in_one_process(ring: Ring) -> None:
    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        rd, w = ring.reader(), ring.writer()
        w.try_write(b"before")  # already waiting when watch() starts
        rd.watch(loop, lambda: got.extend(rd.read_batch()))
        with pytest.raises(RingError, match="already"):
            rd.watch(loop, print)
        for i in range(5):
            await asyncio.sleep(0.005)
            w.try_write(bytes([i]))
        await asyncio.sleep(0.02)
        rd.unwatch()
        rd.unwatch()
        w.try_write(b"after")  # not delivered: unwatched
        await asyncio.sleep(0.01)
        return got

    assert asyncio.run(main()) == [b"before", *(bytes([i]) for i in range(5))]
    assert ring.reader().read_batch() == [b"after"]


# --- the active spin -------------------------------------------------------------------------------
# Deterministic: the spin is set far longer than any test (60 s), the pre-sleep poll SPIN_S is off,
# and the "other process" is a hook in the reader's ready check or in its doorbell's wait.


class Doorbell:
    """Stands in for the reader's doorbell: ``wait`` runs ``on_wait`` (the peer writing and
    ringing) instead of sleeping, and counts the sleeps."""

    def __init__(self, real: object, on_wait: Callable[[], object]) -> None:
        self.real = real
        self.on_wait = on_wait
        self.sleeps = 0

    def wait(self, timeout: float | None) -> bool:
        self.sleeps += 1
        self.on_wait()
        return True

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


@pytest.fixture
def spin(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """An active spin of 60 s (ended by a frame), no SPIN_S poll; the spin is off again afterwards."""
    monkeypatch.setattr(ring_endpoint, "SPIN_S", 0.0)
    ring_reader.set_active_spin(60.0)
    yield
    ring_reader.set_active_spin(0)


def write_on_poll(
    monkeypatch: pytest.MonkeyPatch, rd: RingReader, on_poll: int, write: Callable[[], object]
) -> None:
    """Make the reader's ``on_poll``-th ready check (from now) run ``write`` first; fail past 50
    checks, so a reader that spins where it should not fails at once instead of for 60 s."""
    real, calls = rd._available, itertools.count(1)

    def available() -> bool:
        n = next(calls)
        assert n <= 50, "the reader spun"
        if n == on_poll:
            write()
        return real()

    monkeypatch.setattr(rd, "_available", available)


def test_active_reader_spins_into_a_frame_without_the_doorbell(
    ring: Ring, spin: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    rd, w = ring.reader(), ring.writer()
    w.try_write(b"a")
    assert rd.read_batch() == [b"a"]  # active now
    bell = Doorbell(rd._sleep_bell, lambda: pytest.fail("the reader slept"))
    monkeypatch.setattr(rd, "_sleep_bell", bell)
    write_on_poll(monkeypatch, rd, 5, lambda: w.try_write(b"b"))
    epoch = ring._q[Q_READER_SLEEP]
    assert rd.wait(timeout=60)
    assert ring._q[Q_READER_SLEEP] == epoch  # never announced a sleep, so never rung
    assert rd.read_batch() == [b"b"] and bell.sleeps == 0


@pytest.mark.parametrize("case", ["idle", "off"])
def test_idle_or_spin_off_reader_sleeps_at_once(
    ring: Ring, spin: None, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    rd, w = ring.reader(), ring.writer()
    w.try_write(b"a")
    assert rd.read_batch() == [b"a"]
    if case == "idle":
        monkeypatch.setattr(rd, "_last_frame_ns", time.perf_counter_ns() - ring_reader.ACTIVE_WINDOW_NS)
    else:
        ring_reader.set_active_spin(0)
    bell = Doorbell(rd._sleep_bell, lambda: w.try_write(b"b"))
    monkeypatch.setattr(rd, "_sleep_bell", bell)
    write_on_poll(monkeypatch, rd, 51, lambda: None)  # only fails the test if it spins
    assert rd.wait(timeout=60)
    assert rd.read_batch() == [b"b"] and bell.sleeps == 1


@pytest.mark.parametrize("spin_on", [True, False])
def test_watch_spins_after_a_callback_only_when_on(
    ring: Ring, spin: None, monkeypatch: pytest.MonkeyPatch, spin_on: bool
) -> None:
    if not spin_on:
        ring_reader.set_active_spin(0)
    rd, w = ring.reader(), ring.writer()
    got: list[bytes] = []

    def on_ready() -> None:
        got.extend(rd.read_batch())
        if len(got) == 1:
            write_on_poll(monkeypatch, rd, 5, lambda: w.try_write(b"b"))
        else:
            rd.unwatch()

    async def main() -> int:
        w.try_write(b"a")
        rd.watch(asyncio.get_running_loop(), on_ready)  # reads "a" at once, then spins or sleeps
        after_a = ring._q[Q_READER_SLEEP]
        for _ in range(3):
            await asyncio.sleep(0)
        return after_a

    after_a = asyncio.run(main())
    rd.unwatch()
    if spin_on:  # "b" came within the spin: read without sleeping in between
        assert got == [b"a", b"b"] and after_a % 2 == 0
    else:  # asleep after "a" (odd epoch), and nothing polled the ring meanwhile
        assert got == [b"a"] and after_a % 2 == 1


def test_broker_property_sets_the_spin_of_the_workers_readers(ring: Ring, spin: None) -> None:
    with pytest.raises(ConfigError, match=r"ring\.reader\.spin\.us"):
        BrokerConfig.from_properties({"ring.reader.spin.us": "1001"})
    config = BrokerConfig.from_properties({"ring.reader.spin.us": "250"})

    class OneSlot:
        def for_child(self, slot: int) -> tuple[Ring, Ring]:
            return ring, ring

    setup = _worker_setup(OneSlot(), config, lambda *_: None, None, None, None, None)  # type: ignore[arg-type]
    setup(Worker(WorkerConfig(slot=0, parent_pid=os.getpid())))  # what each forked worker runs
    rd, w = ring.reader(), ring.writer()
    w.try_write(b"a")
    assert rd.read_batch() == [b"a"]
    assert rd._poll_ns() == 250_000


# --- stale segments --------------------------------------------------------------------------------


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_reclaim_stale_segments(instance: str) -> None:
    live = Ring.create(instance, "live", 256)
    # A crashed owner: a ring created in a child that dies without cleanup (no finalizers run).
    pid = os.fork()
    if pid == 0:
        kept = Ring.create(instance, "dead", 256)  # referenced: dropping it would clean up
        os._exit(0 if kept else 1)
    os.waitpid(pid, 0)
    # A reused pid: the header names a live pid but another start time.
    reused = Ring.create(instance, "reused", 256)
    reused.segment.mmap[24:32] = (12345).to_bytes(8, "little")
    try:
        report = shm.reclaim_stale(instance)
        assert sorted(report.reclaimed) == sorted(
            f"shardbroker-{instance}-{n}{s}" for n in ("dead", "reused") for s in ("", ".rbell", ".wbell")
        )
        assert report.live == [f"shardbroker-{instance}-live"]
        assert len(leftovers(instance)) == 3
        # The live ring still works; the reclaimed name can be created again.
        assert live.writer().try_write(b"ok") and live.reader().read_batch() == [b"ok"]
        Ring.create(instance, "dead", 256).close()
    finally:
        live.close()
        reused.close()  # its name is already gone: closing must not fail


def test_reclaim_uninitialised_segment_after_grace(instance: str) -> None:
    seg = posix_ipc.SharedMemory(shm.shm_name(instance, "half"), posix_ipc.O_CREX, size=4096)
    seg.close_fd()
    assert shm.reclaim_stale(instance).live == [f"shardbroker-{instance}-half"]
    report = shm.reclaim_stale(instance, now=time.time() + shm.UNINITIALISED_GRACE_S + 1)
    assert report.reclaimed == [f"shardbroker-{instance}-half"]


def test_reclaim_uninitialised_client_ring_of_a_dead_creator_at_once(instance: str) -> None:
    """A worker SIGKILLed between shm_open and the preamble of a ring it was opening (CI saw one:
    the restarted broker kept it and the graceful exit left it in /dev/shm)."""
    dead = _dead_pid()
    names = [f"lc{dead}-0-fwd-w1-to-w0-req", f"lc{os.getpid()}-0-req-w0"]
    for name in names:
        posix_ipc.SharedMemory(shm.shm_name(instance, name), posix_ipc.O_CREX, size=4096).close_fd()
    report = shm.reclaim_stale(instance)
    assert report.reclaimed == [f"shardbroker-{instance}-{names[0]}"]
    assert report.live == [f"shardbroker-{instance}-{names[1]}"]  # its creator may be writing it
    shm.reclaim_stale(instance, now=time.time() + shm.UNINITIALISED_GRACE_S + 1)


def test_forked_child_never_unlinks(instance: str, ring: Ring) -> None:
    pid = os.fork()
    if pid == 0:
        try:
            ring.close()  # the child's copy: unmaps, must not unlink the parent's names
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert len(leftovers(instance)) == 3


def test_owner_alive_checks_start_time() -> None:
    me = os.getpid()
    start = shm.process_start_time(me)
    assert start is not None
    assert shm.owner_alive(me, start)
    assert not shm.owner_alive(me, start + 1)
    assert not shm.owner_alive(_dead_pid(), start)
    assert not shm.owner_alive(0, 0)


def test_a_zombie_owner_is_not_alive() -> None:
    """A SIGKILLed worker left unreaped (its parent gone, a non-reaping init) owns nothing."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    try:
        deadline = time.monotonic() + 5
        while shm.stat_fields(pid)[0] != b"Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert shm.stat_fields(pid)[0] == b"Z"
        assert shm.process_start_time(pid) is not None  # /proc still lists it
        assert not shm.owner_alive(pid, 0)
    finally:
        os.waitpid(pid, 0)
