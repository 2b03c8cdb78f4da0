"""ring_names.py: every kind of ring name parses back to what built it; other names do not parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shardbroker.ipc.ring_names import (
    WAKE_ROLE,
    Direction,
    RingName,
    RingRole,
    client_ring_name,
    control_ring,
    forward_role,
    is_client_ring,
    parse_ring_name,
    producer_role,
)
from shardbroker.ipc.shm import validate_object

numbers = st.integers(min_value=0, max_value=2**31)
directions = st.sampled_from(Direction)


@given(numbers, directions)
def test_control_round_trip(worker: int, direction: Direction) -> None:
    name = control_ring(worker, direction)
    assert parse_ring_name(validate_object(name)) == RingName(RingRole.CONTROL, direction, worker)
    assert not is_client_ring(name)


@given(numbers, numbers, numbers, directions)
def test_producer_round_trip(pid: int, serial: int, worker: int, direction: Direction) -> None:
    name = client_ring_name(pid, serial, producer_role(worker, direction))
    expected = RingName(RingRole.LOCAL_PRODUCER, direction, worker, pid=pid, serial=serial)
    assert parse_ring_name(validate_object(name)) == expected
    assert is_client_ring(name)


@given(numbers, numbers)
def test_wake_round_trip(pid: int, serial: int) -> None:
    name = client_ring_name(pid, serial, WAKE_ROLE)
    expected = RingName(RingRole.LOCAL_WAKE, Direction.FROM_WORKER, None, pid=pid, serial=serial)
    assert parse_ring_name(validate_object(name)) == expected
    assert is_client_ring(name)


@given(numbers, numbers, numbers, numbers, directions)
def test_forward_round_trip(pid: int, serial: int, source: int, target: int, direction: Direction) -> None:
    name = client_ring_name(pid, serial, forward_role(source, target, direction))
    expected = RingName(RingRole.FORWARD, direction, target, source=source, pid=pid, serial=serial)
    assert parse_ring_name(validate_object(name)) == expected
    assert is_client_ring(name)


def test_names_as_built_today() -> None:
    """The names other processes (and older clients of the same broker) see."""
    assert control_ring(3, Direction.TO_WORKER) == "ctl-w3-in"
    assert control_ring(3, Direction.FROM_WORKER) == "ctl-w3-out"
    assert client_ring_name(42, 7, producer_role(1, Direction.TO_WORKER)) == "lc42-7-req-w1"
    assert client_ring_name(42, 8, producer_role(1, Direction.FROM_WORKER)) == "lc42-8-ack-w1"
    assert client_ring_name(42, 9, WAKE_ROLE) == "lc42-9-wake"
    assert client_ring_name(5, 0, forward_role(0, 2, Direction.TO_WORKER)) == "lc5-0-fwd-w0-to-w2-req"
    assert client_ring_name(5, 1, forward_role(0, 2, Direction.FROM_WORKER)) == "lc5-1-fwd-w0-to-w2-ack"


@pytest.mark.parametrize(
    "name",
    [
        "",
        "local-dir",
        "local-hw",
        "counters",
        "ctl-w0",
        "ctl-w-in",
        "ctl-w0-in-",
        "ctl-w0-req",
        "xctl-w0-in",
        "lc1-2-req-w",
        "lc1-req-w0",
        "lcx-0-wake",
        "lc1-0-wake-2",
        "lc1-0-fwd-w0-to-w1",
        "lc1-0-fwd-w0-to-w1-in",
        "lc1-0-reqs-w0",
        "lc1-0-ack-w0.rbell",
        "lc-1-0-wake",
        "lc\u0663-0-wake",  # a non-ASCII digit
    ],
)
def test_foreign_names_rejected(name: str) -> None:
    assert parse_ring_name(name) is None
    assert not is_client_ring(name)
