"""The client's zero-copy paths: reused receive buffers and gathered sends (socketpair only)."""

from __future__ import annotations

import socket
import threading

from shardbroker.client.connection import _send_parts
from shardbroker.client.receive_buffers import ReceiveBuffers


def test_a_buffer_is_reused_only_once_no_view_of_it_is_alive() -> None:
    pool = ReceiveBuffers(keep=2)
    first = pool.take(1000)
    first[:3] = b"abc"
    batch = first[1:3]  # a batch cut from the answer
    del first
    second = pool.take(1000)
    assert second.obj is not batch.obj  # still pointed into: a second buffer
    second[:3] = b"xyz"
    assert bytes(batch) == b"bc"
    del batch
    third = pool.take(2000)
    assert third.obj is not second.obj and third.nbytes == 2000 and not third.readonly


def test_free_buffers_come_back_and_grow_for_larger_answers() -> None:
    pool = ReceiveBuffers(keep=1)
    view = pool.take(100)
    owner = view.obj
    del view
    again = pool.take(100)
    assert again.obj is owner
    del again
    big = pool.take(3 * 1024 * 1024 + 1)
    assert big.nbytes == 3 * 1024 * 1024 + 1
    held = big.obj
    del big
    assert pool.take(10).obj is held


def test_a_full_pool_still_gives_buffers_without_keeping_them() -> None:
    pool = ReceiveBuffers(keep=1)
    kept = pool.take(10)
    extra = pool.take(10)
    assert extra.obj is not kept.obj
    extra_owner = extra.obj
    del extra
    assert pool.take(10).obj is not extra_owner  # the kept one is still in use: a new one


def test_gathered_send_writes_every_part_in_order_across_partial_sends() -> None:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    parts = [b"head", bytearray(b"x" * 300_000), memoryview(b"0123456789" * 50_000)[7:], b"", b"tail"]
    expected = b"".join(parts)
    got = bytearray()

    def read() -> None:
        while len(got) < len(expected):
            chunk = b.recv(65536)
            if not chunk:
                return
            got.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _send_parts(a, list(parts))
        reader.join(10)
    finally:
        a.close()
        b.close()
    assert bytes(got) == expected
