"""The CLI on a topic a real broker's log cleaner compacted, as an operator runs it (``python -m
shardbroker`` in subprocesses): ``topics describe --data-dir`` shows the cleaner's state, ``check``
finds nothing to report in the sparse offsets (while the broker runs and after it stops), and
``dump-log`` prints each surviving record at its own offset.

Starts a broker process and CLI subprocesses; produces with confluent-kafka over loopback sockets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import REPO, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import IO_TIMEOUT, create_topic

pytestmark = pytest.mark.integration

CLI_TIMEOUT = 120.0
TOPIC = "cli-compacted"
#: Small segments, cleaned as soon as anything is dirty.
COMPACTED = {"cleanup.policy": "compact", "segment.bytes": "4096", "min.cleanable.dirty.ratio": "0.01"}
KEYS = 10
ROUNDS = 30


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", *argv],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def ok_json(*argv: str) -> Any:
    done = cli(*argv, "--json")
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}: {done.stderr}{done.stdout}"
    if argv[0] == "dump-log":
        return [json.loads(line) for line in done.stdout.splitlines()]
    return json.loads(done.stdout)


def test_describe_check_and_dump_a_compacted_partition(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=1, config={"log.cleaner.backoff.ms": 100})
    create_topic(broker.bootstrap, TOPIC, 1, COMPACTED)
    producer = confluent_kafka.Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 0})
    for r in range(ROUNDS):
        for k in range(KEYS):
            producer.produce(TOPIC, key=f"k{k}".encode(), value=f"{r}".encode() * 40, partition=0)
        producer.flush(IO_TIMEOUT)
    directory = broker.data_dir / f"{TOPIC}-0"
    checkpoint = directory / "cleaner-offset-checkpoint"

    def cleaned_up_to_the_active_segment() -> int | None:
        """The active segment's base once the cleaner's checkpoint reached it (nothing is left
        to clean: the numbers below stay put)."""
        active = int(max(directory.glob("*.log")).name[:20])
        done = checkpoint.exists() and checkpoint.read_text().split()[-1] == str(active)
        return active if done and active > 0 else None

    active = wait_for(cleaned_up_to_the_active_segment, 60, "a clean up to the active segment")

    (described,) = ok_json(
        "topics",
        "describe",
        "--topic",
        TOPIC,
        "--bootstrap-server",
        broker.bootstrap,
        "--data-dir",
        str(broker.data_dir),
    )
    cleaner = described["partitions"][0]["cleaner"]
    assert {k: cleaner[k] for k in ("log_start_offset", "log_end_offset", "cleaner_checkpoint")} == {
        "log_start_offset": 0,
        "log_end_offset": KEYS * ROUNDS,
        "cleaner_checkpoint": active,
    }
    assert (cleaner["first_dirty_offset"], cleaner["first_uncleanable_offset"]) == (active, active)
    assert (cleaner["dirty_ratio"], cleaner["due"]) == (0.0, False) and cleaner["clean_bytes"] > 0
    assert cleaner["last_clean_ms"] == checkpoint.stat().st_mtime_ns // 1_000_000

    doc = ok_json("check", str(broker.data_dir))  # live: read-only, no lock
    (part,) = [p for p in doc["partitions"] if p["topic"] == TOPIC]
    assert part["compacted"] and part["records"] < KEYS * ROUNDS
    assert [p for p in part["problems"] if p["severity"] != "note" or p["kind"] == "offset-gap"] == []

    logs = sorted(directory.glob("*.log"))
    dumped = [o for log in logs for o in ok_json("dump-log", str(log), "--deep-iteration")]
    offsets = [o["offset"] for o in dumped if o["type"] == "record"]
    assert offsets == sorted(set(offsets)) and len(offsets) < KEYS * ROUNDS  # each at its own offset
    assert KEYS * ROUNDS - 1 in offsets  # the latest value of the last key written
    batches = [(o["base_offset"], o["last_offset"], o["count"]) for o in dumped if o["type"] == "batch"]
    assert any(count < last - base + 1 for base, last, count in batches)  # records removed inside

    assert broker.stop() == 0
    doc = ok_json("check", str(broker.data_dir))
    assert doc["result"] == "clean", [p for p in doc["problems"] if p["severity"] != "note"]
