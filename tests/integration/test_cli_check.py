"""``shardbroker check`` and ``shardbroker dump-log`` on the data dir of a real broker, as an operator
runs them (``python -m shardbroker`` in a subprocess): clean while the broker runs and after it
stops, then a flipped byte, a damaged index and a torn tail after a kill -9 each reported exactly,
and the torn tail gone after the broker's own recovery.

Starts broker processes and CLI subprocesses; produces with confluent-kafka over loopback sockets.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.broker_process import REPO, BrokerProcess
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic, make_messages, produce_confluent

CLI_TIMEOUT = 120.0
#: Small segments so a few hundred KiB of records span several, with indexes in each.
CONFIG = {"log.segment.bytes": 128 * 1024}


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", *argv],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def check(data_dir: Path) -> tuple[int, dict[str, Any]]:
    done = cli("check", str(data_dir), "--json")
    assert done.returncode in (0, 1, 3), f"check exited {done.returncode}: {done.stderr}"
    return done.returncode, json.loads(done.stdout)


def serious(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in doc["problems"] if p["severity"] != "note"]


def dump(path: Path, *flags: str) -> list[dict[str, Any]]:
    done = cli("dump-log", str(path), "--json", *flags)
    assert done.returncode in (0, 1), done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def produce(broker: BrokerProcess, topic: str, partitions: int, count: int) -> None:
    create_topic(broker.bootstrap, topic, partitions)
    produce_confluent(
        broker.bootstrap,
        topic,
        make_messages(count, keys=40, tag=topic, value_size=300),
        extra={"batch.size": 16384},  # librdkafka's 1 MB default exceeds these segments
    )


def test_clean_live_and_stopped_then_damage_reported_exactly(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=2, config=CONFIG)
    produce(broker, "orders", 2, 2000)
    code, doc = check(broker.data_dir)  # while it runs: read-only, no lock taken
    assert code == 0, serious(doc)
    assert any(p["kind"] == "live-broker" for p in doc["problems"])
    orders = [p for p in doc["partitions"] if p["topic"] == "orders"]
    assert sum(p["records"] for p in orders) == 2000
    assert all(p["segments"] >= 2 for p in orders)
    records = [
        o
        for part in ("orders-0", "orders-1")
        for log in sorted((broker.data_dir / part).glob("*.log"))
        for o in dump(log, "--deep-iteration")
        if o["type"] == "record"
    ]
    assert len(records) == 2000

    assert broker.stop() == 0
    code, doc = check(broker.data_dir)
    assert (code, serious(doc), doc["result"]) == (0, [], "clean")

    # One flipped byte in the second batch of orders-0's first segment.
    segment = broker.data_dir / "orders-0" / "00000000000000000000.log"
    batch = [o for o in dump(segment) if o["type"] == "batch"][1]
    position = batch["position"] + batch["size"] - 5
    fd = os.open(segment, os.O_RDWR)
    os.pwrite(fd, bytes([os.pread(fd, 1, position)[0] ^ 0x40]), position)
    os.close(fd)
    done = cli("check", str(broker.data_dir))
    assert done.returncode == 1, done.stdout
    damage = [line for line in done.stdout.splitlines() if line.startswith("damage:")]
    assert damage[0].startswith(
        f"damage: orders-0/00000000000000000000.log: position {batch['position']}, "
        f"offset {batch['base_offset']}, batch 1: CRC-32C mismatch: stored "
    )
    assert done.stdout.splitlines()[-1] == "result: DAMAGED"

    # An offset-index entry of orders-1's first (rolled, trusted) segment pointing inside a batch.
    index = broker.data_dir / "orders-1" / "00000000000000000000.index"
    entries = [o for o in dump(index) if o["type"] == "index_entry"]
    assert entries, "the first segment should have index entries"
    fd = os.open(index, os.O_RDWR)
    os.pwrite(fd, struct.pack(">i", entries[0]["position"] + 1), 4)
    os.close(fd)
    found = [o for o in dump(index, "--verify-index") if o["type"] == "problem"]
    assert [(p["kind"], p["position"], p["offset"]) for p in found] == [
        ("index-entry", 0, entries[0]["offset"])
    ]
    code, doc = check(broker.data_dir)
    assert code == 1
    assert {k: v for k, v in found[0].items() if k != "type"} in doc["problems"]


def test_torn_tail_after_kill_is_repairable_and_recovery_repairs_it(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=1, config=CONFIG)
    produce(broker, "events", 1, 600)
    broker.kill()  # no drain: no clean-shutdown marker, indexes left preallocated
    segment = sorted((broker.data_dir / "events-0").glob("*.log"))[-1]
    last = [o for o in dump(segment) if o["type"] == "batch"][-1]
    os.truncate(segment, segment.stat().st_size - 7)
    code, doc = check(broker.data_dir)
    assert code == 3, serious(doc)
    (torn,) = [p for p in serious(doc) if p["kind"] == "torn-tail"]
    assert (torn["file"], torn["position"], torn["offset"]) == (
        str(segment),
        last["position"],
        last["base_offset"],
    )
    assert all(p["severity"] == "repairable" for p in serious(doc))

    again = broker_factory(workers=1, config=CONFIG, data_dir=broker.data_dir)  # recovers the log
    assert again.stop() == 0
    code, doc = check(broker.data_dir)
    assert (code, serious(doc)) == (0, [])
    (events,) = [p for p in doc["partitions"] if p["topic"] == "events"]
    assert events["log_end_offset"] == last["base_offset"]
