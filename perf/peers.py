"""Peers measured beside shardbroker in the same run: Redis Streams (XADD). Starts a process and
opens sockets and a temp dir.

``redis_server()`` starts Debian's ``redis-server`` on a free loopback port with a temp dir of its
own, append-only file on and ``appendfsync everysec`` (Redis' own durability default for AOF; the
nearest match to our page-cache acknowledgement plus periodic flush), RDB snapshots and automatic
AOF rewrites off (a rewrite forks a child that would compete for the 2 cores with whatever the
harness measures next), and each stream is deleted once measured; it is shut down and the dir
removed afterwards, on failure too. ``xadd_rate()`` drives it with
``redis-benchmark`` (C, like librdkafka on our side): ``XADD`` of one field whose value has the
record size, ``count`` times, over one connection with 256 commands pipelined (one producer
batching, as our producer does; 1 connection x 256 vs 4 x 64 measured 210k vs 222k XADDs/s of
100 B here). The
stream's length is checked afterwards, so every record counts as stored.

We do not add the ``redis`` Python package: redis-benchmark sends the load and three RESP
commands over a raw socket (PING, XLEN, SHUTDOWN) are all the harness needs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.ports import free_port_block

__all__ = ["XADD_MAX_VALUE", "RedisServer", "redis_available", "redis_server", "xadd_rate"]

REDIS_SERVER = "redis-server"
REDIS_BENCHMARK = "redis-benchmark"
PIPELINE = 256
CONNECTIONS = 1
MB = 1e6


def redis_available() -> str | None:
    """None when both programs are installed, else why the peer cannot run."""
    missing = [p for p in (REDIS_SERVER, REDIS_BENCHMARK) if shutil.which(p) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian: apt-get install redis-server redis-tools)"
    return None


@dataclass
class RedisServer:
    port: int
    version: str

    def command(self, *args: str | bytes, timeout: float = 10.0) -> bytes:
        """Send one RESP command, return the raw reply line (enough for PING, XLEN, SHUTDOWN)."""
        parts = [a.encode() if isinstance(a, str) else a for a in args]
        frame = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as conn:
            conn.sendall(frame)
            reply = b""
            while not reply.endswith(b"\r\n"):
                part = conn.recv(4096)
                if not part:
                    break
                reply += part
        return reply.strip()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    root = Path(tempfile.mkdtemp(prefix="shardbroker-redis-"))
    port = free_port_block(1)
    version = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True).stdout.split()
    args = [
        REDIS_SERVER,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(root),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "no",
        "--logfile",
        str(root / "redis.log"),
    ]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = RedisServer(port, next((v[2:] for v in version if v.startswith("v=")), "unknown"))
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}: {proc.stderr.read()!r}")  # type: ignore[union-attr]
            with contextlib.suppress(OSError):
                if server.command("PING", timeout=1.0) == b"+PONG":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 20 s")
            time.sleep(0.05)
        yield server
    finally:
        with contextlib.suppress(OSError):
            server.command("SHUTDOWN", "NOSAVE", timeout=5.0)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()
        shutil.rmtree(root, ignore_errors=True)


#: redis-benchmark takes the value on its command line, and Linux refuses a single argument of
#: MAX_ARG_STRLEN (128 KiB) or more (E2BIG): larger records have no Redis figure.
XADD_MAX_VALUE: Final = 128 * 1024 - 1


def xadd_rate(
    server: RedisServer,
    stream: str,
    record_size: int,
    count: int,
    *,
    connections: int = CONNECTIONS,
    pipeline: int = PIPELINE,
) -> dict[str, float]:
    """``count`` XADDs of ``record_size``-byte values over ``connections`` connections with
    ``pipeline`` commands in flight on each; records/s and MB/s (values only)."""
    if record_size > XADD_MAX_VALUE:
        raise ValueError(f"redis-benchmark cannot send {record_size} B values (at most {XADD_MAX_VALUE})")
    value = "x" * record_size
    out = subprocess.run(
        [
            REDIS_BENCHMARK,
            "-h",
            "127.0.0.1",
            "-p",
            str(server.port),
            "-n",
            str(count),
            "-c",
            str(connections),
            "-P",
            str(pipeline),
            "--csv",
            "XADD",
            stream,
            "*",
            "v",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    if not rows or "rps" not in rows[-1]:
        raise RuntimeError(f"unexpected redis-benchmark output: {out[:300]!r}")
    rate = float(rows[-1]["rps"])
    length = server.command("XLEN", stream)
    # redis-benchmark rounds the count up to whole pipelines, so the stream may hold a few more.
    if not length.startswith(b":") or not count <= int(length[1:]) < count + pipeline * connections:
        raise RuntimeError(f"redis stream {stream} holds {length!r} entries after {count} XADDs")
    server.command("DEL", stream)
    return {
        "records_per_s": rate,
        "mb_per_s": rate * record_size / MB,
        "p99_ms": float(rows[-1]["p99_latency_ms"]),
    }
