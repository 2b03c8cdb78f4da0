"""kill -9 at every step of a clean (storage/fault_points.py): while the cleaned segment is being
written (the worker's cleaner process dies: broker/cleaner_process.py), after it is durable but
before the swap, after the ``.swap`` rename, after the first old segment went ``.deleted``, after
all did, and after the swap completed (the worker dies: the supervisor respawns it). The process
is SIGKILLed at that exact point by itself, and what recovery and the next clean do must leave a log that
reads as before or as after the clean, never a mix: every client reads offsets strictly
increasing and the latest value of every key; the cleaner then finishes the job, and ``shardbroker
check`` finds no damage."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shardbroker.supervision.fault_injection import ENV
from tests.integration.broker_process import REPO, BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic
from tests.integration.test_broker_lifecycle import restarted
from tests.integration.test_compaction import BROKER, latest, produce, set_policy

pytestmark = pytest.mark.integration

POINTS = ("clean:writing", "swap:cleaned", "swap:swap", "swap:one-deleted", "swap:deleted", "swap:done")
TOPIC = "faulty"
#: Segments rolled every 50 ms, so a burst of writes is a segment and a clean has several
#: segments in a group (the one-deleted point is between two of them).
TOPIC_CONFIG = {
    "cleanup.policy": "delete",
    "segment.ms": "50",
    "segment.bytes": "1048576",
    "min.cleanable.dirty.ratio": "0.01",
}


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_every_step_of_a_clean_leaves_a_whole_log(
    broker_factory: BrokerFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    marker = tmp_path / "fired"
    monkeypatch.setenv(ENV, f"{point}:{marker}")
    broker: BrokerProcess = broker_factory(workers=1, config=BROKER)
    create_topic(broker.bootstrap, TOPIC, 1, TOPIC_CONFIG)
    expected: dict[bytes, bytes] = {}
    for burst in range(8):
        writes: list[tuple[bytes, bytes | None]] = []
        for k in range(10):
            key, value = f"key-{k}".encode(), f"value-{burst}-{k}".encode() * 10
            writes.append((key, value))
            expected[key] = value
        produce(broker.bootstrap, TOPIC, writes)
        time.sleep(0.1)
    produce(broker.bootstrap, TOPIC, [(b"last", b"x")])  # rolls the last burst's segment
    expected[b"last"] = b"x"
    first = broker.worker_pid(0)
    set_policy(broker.bootstrap, TOPIC, "compact")
    wait_for(marker.exists, 60, f"the clean to reach {point}")
    if point.startswith("clean:"):  # the worker's cleaner process died: the worker goes on
        assert broker.worker_pid(0) == first
    else:
        wait_for(functools.partial(restarted, broker, 0, [first]), 60, "worker 0 respawned")
    model, count = latest(broker.bootstrap, TOPIC)  # pre- or post-clean: either way whole
    assert model == expected and count in range(len(expected), 82), count
    # The respawned worker's cleaner finishes the job (the point fires once).
    wait_for(lambda: latest(broker.bootstrap, TOPIC)[1] <= len(expected) + 1, 60, "the clean after respawn")
    assert latest(broker.bootstrap, TOPIC)[0] == expected
    assert broker.stop() == 0
    done = subprocess.run(
        [sys.executable, "-m", "shardbroker", "check", str(broker.data_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
