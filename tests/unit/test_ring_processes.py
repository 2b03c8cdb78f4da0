"""The shared-memory ring across processes (fork + attach by name): every byte in order, back-pressure,
a writer SIGKILLed mid-frame, and no lost wake-ups over many sleep/wake cycles."""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator

import pytest

from shardbroker.ipc import ring_endpoint, shm
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.ring_layout import frame_size

_counter = itertools.count()


@pytest.fixture
def instance() -> Iterator[str]:
    """A fresh instance name; whatever the test leaves in /dev/shm is removed, then reported."""
    name = f"p{os.getpid()}x{next(_counter)}"
    yield name
    left = sorted(p.name for p in shm.SHM_DIR.iterdir() if p.name.startswith(f"shardbroker-{name}-"))
    for entry in left:
        (shm.SHM_DIR / entry).unlink(missing_ok=True)
    assert left == [], "test left shared memory behind"


@pytest.fixture
def no_safety_net(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a lost wake-up visible: without this, a sleeper re-checks every second anyway.
    And sleep at once instead of polling first, for as many sleep/wake cycles as possible."""
    monkeypatch.setattr(ring_endpoint, "IDLE_RECHECK_S", 60.0)
    monkeypatch.setattr(ring_endpoint, "SPIN_S", 0.0)


class Child:
    """A forked process running ``fn``; exit code 0 when it returned, 1 when it raised."""

    def __init__(self, fn: Callable[[], None]) -> None:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                fn()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        self.pid = pid
        self.code: int | None = None

    def join(self, timeout: float = 20.0) -> int:
        deadline = time.monotonic() + timeout
        while self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:
                self.kill()
                pytest.fail("child did not finish in time")
            else:
                time.sleep(0.002)
        return self.code

    def kill(self) -> None:
        if self.code is None:
            os.kill(self.pid, signal.SIGKILL)
            self.code = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for c in made:
        c.kill()


def frames(seed: int, count: int, max_size: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.choice((0, 1, 7, 8, 9, rng.randint(0, max_size), rng.randint(0, 64)))
        yield rng.randbytes(n)


def test_child_writer_parent_reader_every_byte(instance: str, children: list[Child]) -> None:
    """~4 MB of random frames (0..20000 bytes) through a 64 KiB ring; mixed APIs on both sides."""
    count, max_size = 3000, 20_000
    with Ring.create(instance, "data", 1 << 16) as ring:

        def writer() -> None:
            with Ring.attach(instance, "data") as r:
                w = r.writer()
                for i, f in enumerate(frames(7, count, max_size)):
                    if i % 3 == 0:
                        view = w.reserve(len(f) + 100, timeout=10)
                        view[: len(f)] = f
                        del view
                        w.commit(len(f))
                    else:
                        assert w.write(f, timeout=10)

        children.append(Child(writer))
        reader = ring.reader()
        expected = frames(7, count, max_size)
        got = total = 0
        while got < count:
            assert reader.wait(timeout=10), "reader timed out"
            if got % 2:  # in place
                views = reader.peek_batch(16)
                for v in views:
                    assert v == next(expected)
                    total += len(v)
                got += len(views)
                reader.release()
            else:  # copied out
                for b in reader.read_batch(16):
                    assert b == next(expected)
                    total += len(b)
                    got += 1
        assert next(expected, None) is None and total > 4_000_000
        assert children[0].join() == 0
        assert reader.read_batch() == [] and ring.used_bytes == 0


def test_parent_writer_child_reader_back_pressure(
    instance: str, children: list[Child], no_safety_net: None
) -> None:
    """A small ring and a slow reader: the writer blocks (sleeping) and nothing is dropped."""
    count = 3000
    with Ring.create(instance, "data", 1024) as ring:

        def reader() -> None:
            with Ring.attach(instance, "data") as r:
                rd = r.reader()
                expected = frames(3, count, 500)
                got = 0
                rng = random.Random(5)
                while got < count:
                    batch = rd.read(rng.randint(1, 8), timeout=10)
                    assert batch, "reader timed out"
                    for b in batch:
                        assert b == next(expected)
                    got += len(batch)
                    if rng.random() < 0.01:
                        time.sleep(0.002)

        children.append(Child(reader))
        w = ring.writer()
        for f in frames(3, count, 500):
            assert w.write(f, timeout=10)
        assert children[0].join() == 0
        assert ring.used_bytes == 0
        assert ring._q[25] >= 2, "the writer never had to sleep: the test did not test back-pressure"


def test_writer_killed_mid_frame_leaves_nothing_visible(instance: str, children: list[Child]) -> None:
    with Ring.create(instance, "data", 4096) as ring:
        rfd, wfd = os.pipe()

        def writer() -> None:
            r = Ring.attach(instance, "data")
            w = r.writer()
            for i in range(5):
                assert w.try_write(bytes([i]) * 300)
            view = w.reserve(1000)
            view[:500] = b"\xee" * 500  # half a frame, then die with it
            w._words[w._res_off // 4] = 1000  # even its header: still beyond the tail
            os.write(wfd, b"k")
            time.sleep(30)

        child = Child(writer)
        children.append(child)
        assert os.read(rfd, 1) == b"k"
        child.kill()
        os.close(rfd)
        os.close(wfd)
        assert child.code == -signal.SIGKILL
        assert ring.used_bytes == 5 * frame_size(300)
        reader = ring.reader()
        assert reader.read_batch() == [bytes([i]) * 300 for i in range(5)]
        assert reader.read_batch() == [] and ring.used_bytes == 0
        # A new writer (here: attached in the parent) resumes from the published tail.
        w = ring.writer()
        big = os.urandom(2000)  # over where the dead frame was
        assert w.try_write(b"after") and w.try_write(big)
        assert reader.read_batch() == [b"after", big]


def test_no_lost_wakeups_ping_pong(instance: str, children: list[Child], no_safety_net: None) -> None:
    """1000 round trips where both sides go to sleep between messages, with and without a delay
    before the reply (to hit both "peer already asleep" and "peer about to sleep"). A lost
    wake-up would hang until the 10 s timeout: the safety re-check is turned off."""
    rounds = 1000
    with Ring.create(instance, "ping", 4096) as ping, Ring.create(instance, "pong", 4096) as pong:

        def echo() -> None:
            with Ring.attach(instance, "ping") as a, Ring.attach(instance, "pong") as b:
                rd, w = a.reader(), b.writer()
                rng = random.Random(2)
                for _ in range(rounds):
                    (msg,) = rd.read(1, timeout=10)
                    if rng.random() < 0.3:
                        time.sleep(rng.random() * 0.0005)
                    assert w.write(msg, timeout=10)

        children.append(Child(echo))
        w, rd = ping.writer(), pong.reader()
        rng = random.Random(1)
        for i in range(rounds):
            msg = struct.pack("<Q", i)
            if rng.random() < 0.5:  # wait until the echo side is asleep
                deadline = time.monotonic() + 5
                while not ping._q[24] & 1 and time.monotonic() < deadline:
                    time.sleep(0)
            assert w.write(msg, timeout=10)
            assert rd.read(1, timeout=10) == [msg], f"round {i}: reply lost"
        assert children[0].join() == 0
        sleeps = ping._q[24] // 2
        assert sleeps > rounds // 4, f"echo side slept only {sleeps} times"


def test_async_reader_woken_across_processes(instance: str, children: list[Child]) -> None:
    with Ring.create(instance, "data", 4096) as ring:

        def writer() -> None:
            with Ring.attach(instance, "data") as r:
                w = r.writer()
                for i in range(20):
                    time.sleep(0.002)
                    assert w.write(bytes([i]), timeout=5)

        async def consume() -> list[bytes]:
            rd = ring.reader()
            got: list[bytes] = []
            while len(got) < 20:
                assert await rd.wait_async(timeout=10)
                got.extend(rd.read_batch())
            return got

        children.append(Child(writer))
        assert asyncio.run(consume()) == [bytes([i]) for i in range(20)]
        assert children[0].join() == 0


def test_watch_callback_across_processes(instance: str, children: list[Child], no_safety_net: None) -> None:
    """The event-loop consumer: the doorbell fd stays registered, the callback reads."""
    with Ring.create(instance, "data", 1024) as ring:

        def writer() -> None:
            with Ring.attach(instance, "data") as r:
                w = r.writer()
                rng = random.Random(4)
                for i in range(300):
                    if rng.random() < 0.2:
                        time.sleep(rng.random() * 0.002)  # let the reader fall asleep
                    assert w.write(struct.pack("<I", i) * rng.randint(1, 40), timeout=10)

        async def consume() -> list[int]:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[None] = loop.create_future()
            got: list[int] = []
            rd = ring.reader()

            def on_ready() -> None:
                for f in rd.read_batch(rng.randint(1, 3)):  # less than all: called again
                    got.append(struct.unpack_from("<I", f)[0])
                if len(got) == 300:
                    rd.unwatch()
                    done.set_result(None)

            rd.watch(loop, on_ready)
            await asyncio.wait_for(done, 20)
            return got

        rng = random.Random(9)
        children.append(Child(writer))
        assert asyncio.run(consume()) == list(range(300))
        assert children[0].join() == 0
        assert ring._q[24] % 2 == 0 and ring._q[24] > 2  # slept, and awake after unwatch


def test_unrelated_process_attaches_by_name(instance: str) -> None:
    """A process that shares nothing with the creator (not forked from it) attaches by name."""
    code = (
        "import sys\n"
        "from shardbroker.ipc.ring import Ring\n"
        "with Ring.attach(sys.argv[1], 'local') as r:\n"
        "    assert r.writer().write(b'from a stranger', timeout=5)\n"
    )
    with Ring.create(instance, "local", 4096) as ring:
        rd = ring.reader()
        proc = subprocess.run([sys.executable, "-c", code, instance], capture_output=True, timeout=30)
        assert proc.returncode == 0, proc.stderr.decode()
        assert rd.read(timeout=5) == [b"from a stranger"]
