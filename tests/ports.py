"""Free loopback ports for brokers started by tests.

A broker needs a block of consecutive ports (worker i listens on base + i). Blocks are taken below
the kernel's ephemeral range, so the client sockets of concurrent tests (whose source ports come
from that range) can never land on a port a broker is about to bind.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port_block(count: int, host: str = "127.0.0.1") -> int:
    """A base port such that ``base .. base + count - 1`` are all free now (racy, as all such)."""
    high = min(_ephemeral_low(), 65536) - count
    for _ in range(500):
        base = random.randrange(10000, high)
        if all(port_free(host, base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports on {host} below the ephemeral range")
