"""kafkajs (Node) against a real broker: admin, idempotent produce, a consumer group.

Runs ``node js/kafkajs_client.js COMMAND JSON`` (kafkajs from ``js/node_modules``, installed by
``npm ci`` in tests/integration/js, as .ci/run does) and checks the JSON it prints; the records
are read back or written with confluent-kafka, so both sides of each exchange are checked by a
client other than the one under test. Skipped only when node or kafkajs is missing locally: CI
installs both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.kafka_clients import consume_confluent, create_topic, end_offsets

JS_DIR = Path(__file__).resolve().parent / "js"
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        NODE is None or not (JS_DIR / "node_modules" / "kafkajs").is_dir(),
        reason="node or kafkajs missing: apt-get install nodejs npm && (cd tests/integration/js && npm ci)",
    ),
]

PARTITIONS = 4
#: A kafkajs run starts node and connects; generous for a busy 2-core machine.
NODE_TIMEOUT = 180.0


def kafkajs(command: str, broker: BrokerProcess, **args: Any) -> Any:
    """Run one command of kafkajs_client.js; its JSON result (a failure shows node's stderr)."""
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "kafkajs_client.js", command, json.dumps({"brokers": [broker.bootstrap], **args})],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT,
        env={"PATH": "/usr/bin:/bin", "KAFKAJS_NO_PARTITIONER_WARNING": "1"},
    )
    assert proc.returncode == 0, f"kafkajs {command} exited {proc.returncode}:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.kafka_api(
    "ApiVersions",
    "Metadata",
    "CreateTopics",
    "ListGroups",
    "DescribeGroups",
    "DeleteTopics",
    "FindCoordinator",
    client="kafkajs",
)
def test_kafkajs_admin(module_broker: BrokerProcess) -> None:
    topic, group = "js-admin", "js-admin-group"
    consumer = confluent_kafka.Consumer(
        {"bootstrap.servers": module_broker.bootstrap, "group.id": group, "session.timeout.ms": 30000}
    )
    try:
        create_topic(module_broker.bootstrap, "js-admin-other", 1)
        consumer.subscribe(["js-admin-other"])
        wait_for(lambda: consumer.poll(0.2) is None and bool(consumer.assignment()), 60, "an assignment")
        out = kafkajs("admin", module_broker, topic=topic, partitions=PARTITIONS)
    finally:
        consumer.close()
    assert out["created"] is True
    assert out["createdAgain"] is False  # TOPIC_ALREADY_EXISTS
    assert [p["partition"] for p in out["partitions"]] == list(range(PARTITIONS))
    assert all(p["error"] == 0 and p["leader"] in (0, 1) for p in out["partitions"])
    assert {"groupId": group, "protocolType": "consumer"} in out["groups"]
    ours = next(g for g in out["described"] if g["groupId"] == group)
    assert ours == {
        "groupId": group,
        "state": "Stable",
        "protocolType": "consumer",
        "members": 1,
        "errorCode": 0,
    }
    assert topic not in out["topicsAfterDelete"]
    assert "js-admin-other" in out["topicsAfterDelete"]


@pytest.mark.kafka_api("ApiVersions", "Metadata", "InitProducerId", "Produce", client="kafkajs")
def test_kafkajs_idempotent_produce_reads_back(module_broker: BrokerProcess) -> None:
    topic, count = "js-produce", 1000
    create_topic(module_broker.bootstrap, topic, PARTITIONS)
    out = kafkajs("produce", module_broker, topic=topic, count=count, batch=100, keys=37, tag="js")
    assert all(a["errorCode"] == 0 for a in out["acked"])
    ends = end_offsets("confluent", module_broker.bootstrap, topic, PARTITIONS)
    assert sum(ends.values()) == count
    records = consume_confluent(module_broker.bootstrap, topic, ends)
    values = [r.value.decode() for r in records]
    assert sorted(values) == sorted(f"js:{i}" for i in range(count))
    for p in range(PARTITIONS):  # per partition in send order, keys hashed as Java's partitioner
        in_p = sorted((r for r in records if r.partition == p), key=lambda r: r.offset)
        mine = [int(r.value.split(b":")[1]) for r in in_p]
        assert mine == sorted(mine)
        assert {r.key for r in records if r.partition == p}.isdisjoint(
            {r.key for r in records if r.partition != p}
        )


@pytest.mark.kafka_api(
    "ApiVersions",
    "Metadata",
    "FindCoordinator",
    "JoinGroup",
    "SyncGroup",
    "Heartbeat",
    "OffsetFetch",
    "ListOffsets",
    "Fetch",
    "OffsetCommit",
    "LeaveGroup",
    "InitProducerId",
    "Produce",
    client="kafkajs",
)
def test_kafkajs_group_reads_every_record_once(module_broker: BrokerProcess) -> None:
    topic, group, count = "js-group", "js-group", 600
    create_topic(module_broker.bootstrap, topic, PARTITIONS)
    out = kafkajs(
        "group",
        module_broker,
        topic=topic,
        group=group,
        members=2,
        partitions=PARTITIONS,
        count=count,
        batch=50,
        keys=61,
        tag="g",
        timeoutMs=120_000,
    )
    read = Counter(r["value"] for r in out["records"])
    assert read == Counter(f"g:{i}" for i in range(count)), "every record read exactly once"
    by_member = {m: {r["partition"] for r in out["records"] if r["member"] == m} for m in (0, 1)}
    assert by_member[0] and by_member[1] and by_member[0].isdisjoint(by_member[1])
    ends = end_offsets("confluent", module_broker.bootstrap, topic, PARTITIONS)
    committed = {c["partition"]: c["offset"] for c in out["committed"]}
    assert committed == ends, "the group committed exactly what it read"
