"""A live broker under a storm of mutated frames over TCP (the frame-reader fuzz target's inputs,
tests/fuzz): afterwards no worker has died or restarted, no handler failed (nothing logged at ERROR: a request
that decodes gets an answer or a Kafka error code), a real client produces and consumes, what
was acknowledged before the storm is intact, and every partition log on disk reopens through
storage recovery with every batch valid (tests/faults/logs.py; ``shardbroker check`` once it
lands).

Frames are every request API at its oldest and newest version, mutated structure-aware (lengths,
counts, varints, tagged fields, api key and version, the size prefix), one to four per connection,
four connections at a time; each connection half-closes after its frames and reads what comes
back (the broker answers what it understood, then closes). The seed is printed
(``FUZZ_SEED=... pytest`` replays a storm).
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.faults.logs import check_acked_exactly_once, read_data_dir
from tests.fuzz.mutate import mutate
from tests.fuzz.targets import Seed, request_frames
from tests.integration.broker_process import BrokerProcess
from tests.integration.kafka_clients import (
    consume,
    create_topic,
    end_offsets,
    make_messages,
    produce_confluent,
)

pytestmark = pytest.mark.integration

Factory = Callable[..., BrokerProcess]

TOPIC = "fuzzed"
#: Bytes of answers read per connection before it is closed anyway (long polls, joins that wait).
READ_FOR = 2.0


def send_and_drain(host: str, port: int, frames: list[bytes]) -> int:
    """Send ``frames`` on a fresh connection, half-close, read until the broker closes (or
    ``READ_FOR`` seconds pass); the bytes that came back."""
    with socket.create_connection((host, port), timeout=READ_FOR) as sock:
        try:
            sock.sendall(b"".join(frames))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            return 0  # the broker closed first: a refused frame
        received = 0
        deadline = time.monotonic() + READ_FOR
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            received += len(chunk)
        return received


def storm(broker: BrokerProcess, frames: int, rnd: random.Random) -> tuple[int, int]:
    seeds: list[Seed] = request_frames()
    batches: list[tuple[int, list[bytes]]] = []
    sent = 0
    while sent < frames:
        chosen = [rnd.choice(seeds) for _ in range(rnd.randint(1, 4))]
        batches.append(
            (
                rnd.randrange(broker.workers),
                [mutate(s.data, s.slots, rnd) if rnd.randint(0, 4) else s.data for s in chosen],
            )
        )
        sent += len(chosen)
    with ThreadPoolExecutor(4) as pool:
        answered = sum(pool.map(lambda b: send_and_drain(broker.host, broker.ports[b[0]], b[1]), batches))
    return sent, answered


def run_storm(broker_factory: Factory, frames: int) -> None:
    seed = int(os.environ.get("FUZZ_SEED") or random.randrange(2**32))
    print(f"FUZZ_SEED={seed}")
    broker = broker_factory(workers=2, config={"auto.create.topics.enable": False})
    create_topic(broker.bootstrap, TOPIC, 4)
    before = produce_confluent(broker.bootstrap, TOPIC, make_messages(1_000, keys=50, tag="before"))
    workers = broker.worker_pids()

    sent, answered = storm(broker, frames, random.Random(seed))
    print(f"{sent} mutated frames sent, {answered} bytes answered")

    assert broker.worker_pids() == workers, "a worker died (and was restarted) under the storm"
    failures = [line for line in broker.output(tail=1_000_000).splitlines() if " ERROR: " in line]
    assert not failures, f"handlers failed on mutated requests: {failures[:5]}"
    after = produce_confluent(broker.bootstrap, TOPIC, make_messages(1_000, keys=50, tag="after"))
    ends = end_offsets("confluent", broker.bootstrap, TOPIC, 4)
    assert sum(ends.values()) == 2_000
    read = consume("confluent", broker.bootstrap, TOPIC, ends)
    assert sorted(read) == sorted(before + after)
    assert broker.stop() == 0, "SIGTERM after the storm must drain and exit 0"
    logs = read_data_dir(broker.data_dir)  # every partition, incl. any topic the storm created
    check_acked_exactly_once(logs[TOPIC], before + after, "after the fuzz storm")


def test_mutated_frames_never_kill_a_worker_nor_corrupt_a_log(broker_factory: Factory) -> None:
    run_storm(broker_factory, frames=1_500)


@pytest.mark.slow
def test_mutated_frame_soak(broker_factory: Factory) -> None:
    run_storm(broker_factory, frames=100_000)
