"""``shardbroker topics`` against a real broker, as an operator runs it (``python -m shardbroker``
in a subprocess: exit codes and output), cross-checked with confluent-kafka's admin client.

Starts a broker process and CLI subprocesses; opens sockets (through the clients).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from tests.integration.broker_process import REPO, BrokerProcess, wait_for
from tests.integration.kafka_clients import create_topic
from tests.unit.kafka_fake import closed_port

CLI_TIMEOUT = 120.0


def topics(bootstrap: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardbroker", "topics", *argv, "--bootstrap-server", bootstrap],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        cwd=REPO,
    )


def ok(bootstrap: str, *argv: str) -> str:
    done = topics(bootstrap, *argv)
    assert done.returncode == 0, f"topics {' '.join(argv)} exited {done.returncode}: {done.stderr}"
    return done.stdout


def describe_json(bootstrap: str, topic: str) -> dict[str, Any]:
    described = json.loads(ok(bootstrap, "describe", "--topic", topic, "--json"))
    assert [d["topic"] for d in described] == [topic]
    result: dict[str, Any] = described[0]
    return result


def confluent_view(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[str, tuple[str, bool]]]:
    """(partition -> leader, config -> (value, is_default)) as confluent-kafka sees them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    md = admin.list_topics(topic=topic, timeout=10).topics[topic]
    leaders = {p: part.leader for p, part in md.partitions.items()}
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    entries = admin.describe_configs([resource])[resource].result(timeout=30)
    return leaders, {name: (e.value, e.is_default) for name, e in entries.items()}


def test_create_describe_alter_delete(module_broker: BrokerProcess) -> None:
    b = module_broker.bootstrap
    out = ok(
        b,
        "create",
        "--topic",
        "cli-t1",
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=3600000",
    )
    assert out == "Created topic cli-t1.\n"
    wait_for(lambda: "cli-t1" in ok(b, "list").split(), 30, "cli-t1 in topics list")

    # describe (text): Kafka's layout; leaders are worker node ids, as confluent-kafka sees them
    text = ok(b, "describe", "--topic", "cli-t1")
    head, *parts = text.splitlines()
    assert head.startswith("Topic: cli-t1\tTopicId: ")
    assert "\tPartitionCount: 3\tReplicationFactor: 1\tConfigs: retention.ms=3600000" in head
    shown = {int(f[2].split(": ")[1]): int(f[3].split(": ")[1]) for f in (line.split("\t") for line in parts)}
    leaders, configs = confluent_view(b, "cli-t1")
    assert shown == leaders and set(shown.values()) <= set(range(len(module_broker.ports)))
    assert configs["retention.ms"] == ("3600000", False)

    # describe --json: every config with its source
    desc = describe_json(b, "cli-t1")
    sources = {c["name"]: (c["value"], c["source"]) for c in desc["configs"]}
    assert sources["retention.ms"] == ("3600000", "DYNAMIC_TOPIC_CONFIG")
    assert sources["cleanup.policy"] == ("delete", "DEFAULT_CONFIG")
    assert [p["partition"] for p in desc["partitions"]] == [0, 1, 2]

    # alter: more partitions, one config set, one removed (back to its default)
    out = ok(
        b,
        "alter",
        "--topic",
        "cli-t1",
        "--partitions",
        "5",
        "--config",
        "segment.bytes=2097152",
        "--delete-config",
        "retention.ms",
    )
    assert (
        out == "Altered topic cli-t1: partitions 3 -> 5; set segment.bytes=2097152; deleted retention.ms.\n"
    )
    desc = wait_for(
        lambda: (d := describe_json(b, "cli-t1"))["partition_count"] == 5 and d,
        30,
        "cli-t1 with 5 partitions",
    )
    sources = {c["name"]: (c["value"], c["source"]) for c in desc["configs"]}
    assert sources["segment.bytes"] == ("2097152", "DYNAMIC_TOPIC_CONFIG")
    assert sources["retention.ms"][1] != "DYNAMIC_TOPIC_CONFIG"
    leaders, configs = confluent_view(b, "cli-t1")
    assert len(leaders) == 5 and configs["segment.bytes"] == ("2097152", False)
    assert configs["retention.ms"][1] is True

    assert ok(b, "delete", "--topic", "cli-t1") == "Deleted topic cli-t1.\n"
    wait_for(lambda: "cli-t1" not in ok(b, "list").split(), 30, "cli-t1 gone from topics list")


def test_refusals_and_exit_codes(module_broker: BrokerProcess) -> None:
    b = module_broker.bootstrap
    create_topic(b, "cli-t2", 2)

    again = topics(b, "create", "--topic", "cli-t2")
    assert again.returncode == 1 and again.stdout == ""
    assert "shardbroker topics create: error: TOPIC_ALREADY_EXISTS" in again.stderr
    assert ok(b, "create", "--topic", "cli-t2", "--if-not-exists") == ""

    fewer = topics(b, "alter", "--topic", "cli-t2", "--partitions", "1")
    assert fewer.returncode == 1 and "INVALID_PARTITIONS" in fewer.stderr

    bad_config = topics(b, "create", "--topic", "cli-t3", "--config", "retention.ms=soon")
    assert bad_config.returncode == 1 and "INVALID_CONFIG" in bad_config.stderr

    rf = topics(b, "create", "--topic", "cli-t3", "--replication-factor", "3")
    assert rf.returncode == 2 and "only 1 is accepted" in rf.stderr

    for argv in (
        ["describe", "--topic", "cli-none"],
        ["delete", "--topic", "cli-none"],
        ["alter", "--topic", "cli-none", "--partitions", "3"],
    ):
        missing = topics(b, *argv)
        assert missing.returncode == 1, argv
        assert "UNKNOWN_TOPIC_OR_PARTITION" in missing.stderr and "cli-none" in missing.stderr
        assert ok(b, *argv, "--if-exists") == ""

    listed = ok(b, "list").split()
    assert "cli-t2" in listed and "cli-t3" not in listed and listed == sorted(listed)

    port = closed_port()
    down = topics(f"127.0.0.1:{port}", "list")
    assert down.returncode == 1 and f"broker 127.0.0.1:{port} unreachable" in down.stderr


@pytest.mark.parametrize("partitions", [1, 4])
def test_describe_every_topic(module_broker: BrokerProcess, partitions: int) -> None:
    b = module_broker.bootstrap
    name = f"cli-all-{partitions}"
    create_topic(b, name, partitions)
    deadline = time.monotonic() + 30
    while True:
        described = {d["topic"]: d for d in json.loads(ok(b, "describe", "--json"))}
        if name in described or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert described[name]["partition_count"] == partitions
    assert all(p["leader"] >= 0 for p in described[name]["partitions"])
