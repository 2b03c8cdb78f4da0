"""``shardbroker perf produce|consume|e2e`` end to end against a live broker, with small counts.

The command runs as users run it (a subprocess of ``python -m shardbroker.cli.main``); its JSON
summary is checked against the broker's own end offsets, and the consumer must read back exactly
what the producer got acknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import confluent_kafka

from tests.integration.broker_process import BrokerProcess
from tests.ports import free_port_block

TIMEOUT = 120


def perf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker.cli.main", "perf", *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def perf_json(*args: str) -> dict[str, Any]:
    done = perf(*args, "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": "perf-test"})
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(confluent_kafka.TopicPartition(topic, p), timeout=30)[1]
            for p in partitions
        }
    finally:
        consumer.close()


def test_produce_then_consume_the_same_records(module_broker: BrokerProcess) -> None:
    common = ("--bootstrap-server", module_broker.bootstrap, "--topic", "perf-pc")
    produced = perf_json(
        "produce",
        *common,
        "--num-records",
        "3000",
        "--record-size",
        "200",
        "--partitions",
        "3",
        "--producers",
        "2",
        "--acks",
        "1",
    )
    assert produced["mode"] == "produce"
    assert produced["records"] == 3000 and produced["bytes"] == 600_000
    assert produced["errors"] == 0 and produced["failures"] == []
    assert produced["config"]["partitions"] == 3 and produced["config"]["producers"] == 2
    latency = produced["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["p99.9"] <= latency["max"]
    assert produced["records_per_s"] > 0 and produced["mb_per_s"] > 0
    offsets = end_offsets(module_broker.bootstrap, "perf-pc")
    assert len(offsets) == 3 and sum(offsets.values()) == 3000

    consumed = perf_json("consume", *common, "--num-records", "3000")
    assert (consumed["records"], consumed["bytes"], consumed["errors"]) == (3000, 600_000, 0)
    assert consumed["latency_ms"] is None

    # Asking for more than the topic holds: the summary of what came, then a refusal that says so.
    short = perf("consume", *common, "--num-records", "3500", "--idle-timeout", "2")
    assert short.returncode == 1
    assert "3,000 records (0.6 MB)" in short.stdout
    assert "3,000 of 3,500 records received" in short.stderr


def test_produce_for_a_duration_at_a_limited_rate_prints_progress(module_broker: BrokerProcess) -> None:
    done = perf(
        "produce",
        "--bootstrap-server",
        module_broker.bootstrap,
        "--topic",
        "perf-rate",
        "--duration",
        "2.5",
        "--throughput",
        "400",
    )
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if "records/s" in line]
    assert len(progress) >= 2, done.stderr
    assert "MB/s" in progress[-1] and "p99" in progress[-1]
    summary = done.stdout.splitlines()
    assert summary[0].startswith("produce: ") and summary[1].startswith("latency ms: avg")
    produced = sum(end_offsets(module_broker.bootstrap, "perf-rate").values())
    assert 500 <= produced <= 1100, f"{produced} records in 2.5 s at 400/s"


def test_e2e_measures_latency_of_every_record(module_broker: BrokerProcess) -> None:
    doc = perf_json(
        "e2e",
        "--bootstrap-server",
        module_broker.bootstrap,
        "--topic",
        "perf-e2e",
        "--num-records",
        "300",
        "--throughput",
        "300",
        "--record-size",
        "64",
    )
    assert doc["mode"] == "e2e"
    assert doc["records"] == 300 and doc["bytes"] == 300 * 64
    latency = doc["latency_ms"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"] < 10_000
    acks = doc["ack_latency_ms"]  # the producer's side of the same records
    assert 0 < acks["p50"] <= acks["p99"] <= acks["max"] < 10_000
    assert sum(end_offsets(module_broker.bootstrap, "perf-e2e").values()) == 300


def test_unreachable_broker_is_a_clear_runtime_error() -> None:
    port = free_port_block(1)  # nothing listens there
    done = perf(
        "produce", "--bootstrap-server", f"127.0.0.1:{port}", "--timeout", "2000", "--num-records", "10"
    )
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "error" in done.stderr


def test_ctrl_c_prints_the_summary_of_what_ran_and_exits_130(module_broker: BrokerProcess) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shardbroker.cli.main",
            "perf",
            "produce",
            "--bootstrap-server",
            module_broker.bootstrap,
            "--topic",
            "perf-interrupt",
            "--duration",
            "60",
            "--throughput",
            "500",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, signalled as a terminal's Ctrl-C would be
    )
    try:
        deadline = time.monotonic() + 60
        assert proc.stderr is not None
        while "records/s" not in proc.stderr.readline():  # the first progress line: producing
            assert time.monotonic() < deadline and proc.poll() is None, "no progress line"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    assert proc.returncode == 130, err
    assert "interrupted; the summary covers what ran" in err
    summary = out.splitlines()[0]
    assert summary.startswith("produce: ") and ", errors" not in summary and " errors" not in summary
    acknowledged = int(summary.split()[1].replace(",", ""))
    # Every acknowledged record is in the log (a record purged in flight may be there too).
    assert 0 < acknowledged <= sum(end_offsets(module_broker.bootstrap, "perf-interrupt").values())
