"""Reference measurements taken in the same run as the broker's figures: a plain sequential file
write, a plain socket sink over loopback, and a numpy memcpy. Opens files, sockets and a process.

Why: this VM's absolute speed swings with its neighbours (2 cores shared with other work), so a
throughput alone says little from one run to the next. Each figure of the harness is divided by
the reference that bounds the same kind of work, measured right before it, and the regression
check compares those ratios (see perf/report.py). All three return MB/s (10^6 bytes), the best of
a few short passes: a single pass of the socket sink ranged over 0.8-3.4 GB/s within one quick
run here, and the best of three is what the machine can do at that moment with less of that
scatter.

- ``file_write``: ``os.write`` of 1 MiB chunks into a fresh file in the temp dir (the broker's
  data dir lives there too), no fsync: what appending to a segment in the page cache costs at
  best.
- ``socket_sink``: one process sends 1 MiB chunks over a loopback TCP connection to another
  process that reads and drops them: the most any Kafka client can push through loopback here.
- ``memcpy``: ``np.copyto`` of a 64 MiB array (16 MiB in quick mode): the machine's memory bandwidth, for
  CPU-bound work (CRC-32C, batch building).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import tempfile
import time
from collections.abc import Callable

import numpy as np

__all__ = ["REFERENCES", "file_write", "memcpy", "socket_sink"]

MB = 1e6
CHUNK = 1 << 20


PASSES = 3


def best_of(fn: Callable[[int], float], total: int, passes: int = PASSES) -> float:
    """The highest of ``passes`` measurements of ``total / passes`` bytes each."""
    return max(fn(max(CHUNK, total // passes)) for _ in range(passes))


def file_write(total: int) -> float:
    chunk = os.urandom(CHUNK)
    fd, path = tempfile.mkstemp(prefix="shardbroker-ref-")
    try:
        os.write(fd, chunk)  # first touch of the file, untimed
        started = time.perf_counter()
        for _ in range(total // CHUNK):
            os.write(fd, chunk)
        elapsed = time.perf_counter() - started
    finally:
        os.close(fd)
        os.unlink(path)
    return (total // CHUNK) * CHUNK / elapsed / MB


def _sink(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    buf = bytearray(CHUNK)
    received = 0
    with conn:
        while n := conn.recv_into(buf):
            received += n
        conn.sendall(received.to_bytes(8, "big"))


def socket_sink(total: int) -> float:
    listener = socket.create_server(("127.0.0.1", 0))
    address = listener.getsockname()[:2]
    ctx = mp.get_context("fork")  # the child only reads a socket: no threads or state to worry about
    proc = ctx.Process(target=_sink, args=(listener,), daemon=True)
    proc.start()
    listener.close()
    chunk = os.urandom(CHUNK)
    count = total // CHUNK
    try:
        with socket.create_connection(address) as conn:
            started = time.perf_counter()
            for _ in range(count):
                conn.sendall(chunk)
            conn.shutdown(socket.SHUT_WR)
            received = int.from_bytes(_read_exactly(conn, 8), "big")
            elapsed = time.perf_counter() - started
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    if received != count * CHUNK:
        raise RuntimeError(f"socket sink got {received} of {count * CHUNK} bytes")
    return received / elapsed / MB


def _read_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        part = conn.recv(n - len(data))
        if not part:
            raise RuntimeError("socket sink closed early")
        data += part
    return data


def memcpy(total: int) -> float:
    src = np.frombuffer(os.urandom(total), dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch of dst
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - started)
    return total / best / MB


def _file_write_best(total: int) -> float:
    return best_of(file_write, total)


def _socket_sink_best(total: int) -> float:
    return best_of(socket_sink, total)


#: name -> (function of a byte count, what it is), as the report lists them.
REFERENCES: dict[str, tuple[Callable[[int], float], str]] = {
    "file_write": (
        _file_write_best,
        "sequential os.write of 1 MiB chunks to a temp file, no fsync; best of 3",
    ),
    "socket_sink": (
        _socket_sink_best,
        "1 MiB sendall over loopback TCP to a process that drops the bytes; best of 3",
    ),
    "memcpy": (memcpy, "numpy copyto of an array of the given size, best of 5"),
}
