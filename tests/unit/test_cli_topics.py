"""``shardbroker topics``: argument checking (exit 2 before any connection), and the output and
refusals of each action against the fake broker. Opens loopback sockets (the fake broker's)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.storage import file_names as fn
from tests.unit.compacted_logs import make_compacted_partition
from tests.unit.kafka_fake import FakeBroker, closed_port, running_fake


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["topics", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["create"], "--topic"),
        (["create", "--topic", "t", "--replication-factor", "3"], "only 1 is accepted, got 3"),
        (["create", "--topic", "t", "--partitions", "0"], "at least 1"),
        (["create", "--topic", "t", "--config", "retention.ms"], "expected NAME=VALUE"),
        (["create", "--topic", "t", "--config", "a=1", "--config", "a=2"], "--config a given twice"),
        (["alter", "--topic", "t"], "nothing to alter"),
        (["alter", "--topic", "t", "--config", "a=1", "--delete-config", "a"], "both name a"),
        (["delete"], "--topic"),
        (["describe", "--timeout", "0"], "at least 1 ms"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    port = closed_port()  # never reached: usage is checked first
    code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
    assert code == 2, err
    assert message in err and out == ""


def test_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    for argv in (["list"], ["describe"], ["create", "--topic", "t"], ["delete", "--topic", "t"]):
        code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
        assert code == 1 and out == ""
        assert f"shardbroker topics {argv[0]}: error: broker 127.0.0.1:{port} unreachable" in err


class TopicsFake:
    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        fake.versions.update({19: (0, 7), 20: (0, 6), 32: (0, 4), 37: (0, 3), 44: (0, 1)})
        fake.topics = {"orders": 2}
        fake.handlers.update({19: self.create, 20: self.delete, 32: self.describe_configs})
        plain_metadata = fake.handlers[3]

        def metadata(version: int, request: Any) -> Message | None:
            response = plain_metadata(version, request)
            for t in getattr(response, "topics", []):
                for part in t.partitions:
                    part.replica_nodes = part.isr_nodes = [part.leader_id]
            return response

        fake.handlers[3] = metadata

    def create(self, version: int, request: Any) -> Message:
        R = m.CreateTopicsResponse
        results = []
        for t in request.topics:
            exists = t.name in self.fake.topics
            if not exists:
                self.fake.topics[t.name] = max(t.num_partitions, 1)
            results.append(
                R.CreatableTopicResult(
                    name=t.name,
                    error_code=ErrorCode.TOPIC_ALREADY_EXISTS if exists else ErrorCode.NONE,
                    error_message=f"Topic '{t.name}' already exists." if exists else None,
                )
            )
        return R(topics=results)

    def delete(self, version: int, request: Any) -> Message:
        R = m.DeleteTopicsResponse
        out = []
        for t in request.topics:
            known = self.fake.topics.pop(t.name, None) is not None
            code = ErrorCode.NONE if known else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            out.append(R.DeletableTopicResult(name=t.name, error_code=code))
        return R(responses=out)

    def describe_configs(self, version: int, request: Any) -> Message:
        D = m.DescribeConfigsResponse
        entries = [
            D.DescribeConfigsResourceResult(name="retention.ms", value="1000", config_source=1),
            D.DescribeConfigsResourceResult(name="segment.bytes", value="1073741824", config_source=5),
        ]
        return D(
            results=[
                D.DescribeConfigsResult(resource_type=2, resource_name=r.resource_name, configs=entries)
                for r in request.resources
            ]
        )


@pytest.fixture
def tfake() -> Iterator[TopicsFake]:
    with running_fake() as broker:
        yield TopicsFake(broker)


def test_create_and_if_not_exists(capsys: pytest.CaptureFixture[str], tfake: TopicsFake) -> None:
    b = ["--bootstrap-server", tfake.fake.address]
    assert run(capsys, "create", "--topic", "new", "--partitions", "3", "--config", "x=a=b", *b) == (
        0,
        "Created topic new.\n",
        "",
    )
    request = tfake.fake.apis(19)[0][1]
    assert [(c.name, c.value) for c in request.topics[0].configs] == [("x", "a=b")]
    code, out, err = run(capsys, "create", "--topic", "new", *b)
    assert code == 1 and out == ""
    assert "TOPIC_ALREADY_EXISTS: topic 'new': Topic 'new' already exists." in err
    assert run(capsys, "create", "--topic", "new", "--if-not-exists", *b) == (0, "", "")


def test_describe_prints_kafkas_layout(capsys: pytest.CaptureFixture[str], tfake: TopicsFake) -> None:
    code, out, _ = run(capsys, "describe", "--topic", "orders", "--bootstrap-server", tfake.fake.address)
    assert code == 0
    lines = out.splitlines()
    head = lines[0].split("\t")
    assert head[0] == "Topic: orders" and head[2:] == [
        "PartitionCount: 2",
        "ReplicationFactor: 1",
        "Configs: retention.ms=1000",
    ]
    assert lines[1:] == [
        "\tTopic: orders\tPartition: 0\tLeader: 0\tReplicas: 0\tIsr: 0",
        "\tTopic: orders\tPartition: 1\tLeader: 0\tReplicas: 0\tIsr: 0",
    ]
    code, out, _ = run(
        capsys, "describe", "--topic", "orders", "--all-configs", "--bootstrap-server", tfake.fake.address
    )
    rows = [line.split() for line in out.splitlines()[3:]]
    assert rows == [
        ["CONFIG", "VALUE", "SOURCE"],
        ["retention.ms", "1000", "DYNAMIC_TOPIC_CONFIG"],
        ["segment.bytes", "1073741824", "DEFAULT_CONFIG"],
    ]


def test_describe_and_delete_unknown_topics(capsys: pytest.CaptureFixture[str], tfake: TopicsFake) -> None:
    b = ["--bootstrap-server", tfake.fake.address]
    code, out, err = run(capsys, "describe", "--topic", "nope", *b)
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION: topic 'nope' does not exist" in err
    assert run(capsys, "describe", "--topic", "nope", "--if-exists", *b) == (0, "", "")
    code, out, err = run(capsys, "delete", "--topic", "nope", "--topic", "orders", *b)
    assert code == 1 and out == "Deleted topic orders.\n"
    assert "UNKNOWN_TOPIC_OR_PARTITION" in err
    assert run(capsys, "delete", "--topic", "nope", "--if-exists", *b) == (0, "", "")


def compaction_configs(version: int, request: Any) -> Message:
    """DescribeConfigs: ``orders`` is compacted (a clean is due from a dirty ratio of 0.3), ``logs`` not."""
    D = m.DescribeConfigsResponse
    policy = {"orders": "compact", "logs": "delete"}
    return D(
        results=[
            D.DescribeConfigsResult(
                resource_type=2,
                resource_name=r.resource_name,
                configs=[
                    D.DescribeConfigsResourceResult(
                        name="cleanup.policy", value=policy[r.resource_name], config_source=1
                    ),
                    D.DescribeConfigsResourceResult(
                        name="min.cleanable.dirty.ratio", value="0.3", config_source=1
                    ),
                ],
            )
            for r in request.resources
        ]
    )


def test_describe_with_data_dir_shows_the_cleaner_state(
    capsys: pytest.CaptureFixture[str], tfake: TopicsFake, tmp_path: Path
) -> None:
    """Per partition of the compacted topic, read from its directory without changing a file;
    a partition without a directory here says so; the other topic's lines stay as they were."""
    tfake.fake.topics["logs"] = 1
    tfake.fake.handlers[32] = compaction_configs
    d = make_compacted_partition(tmp_path / "orders-0", checkpoint=20)
    last_clean = 1_767_323_045  # 2026-01-02T03:04:05Z
    os.utime(d / fn.CLEANER_OFFSET_CHECKPOINT, (last_clean, last_clean))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()}
    b = ["--bootstrap-server", tfake.fake.address, "--data-dir", str(tmp_path)]

    code, out, err = run(capsys, "describe", *b)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[3:5] == [
        "\tTopic: orders\tPartition: 0\tLeader: 0\tReplicas: 0\tIsr: 0\tLogStartOffset: 0\tLogEndOffset: 42"
        "\tFirstDirtyOffset: 20\tFirstUncleanableOffset: 40\tDirtyRatio: 0.351\tCleanDue: true"
        "\tLastClean: 2026-01-02T03:04:05Z",
        "\tTopic: orders\tPartition: 1\tLeader: 0\tReplicas: 0\tIsr: 0"
        f"\tCleaner: no directory {tmp_path / 'orders-1'}",
    ]
    assert lines[1] == "\tTopic: logs\tPartition: 0\tLeader: 0\tReplicas: 0\tIsr: 0"

    code, out, _ = run(capsys, "describe", "--json", *b)
    described = {t["topic"]: t["partitions"] for t in json.loads(out)}
    assert described["logs"][0]["cleaner"] is None
    assert described["orders"][1]["cleaner"] == {"error": f"no directory {tmp_path / 'orders-1'}"}
    assert described["orders"][0]["cleaner"] == {
        "log_start_offset": 0,
        "log_end_offset": 42,
        "cleaner_checkpoint": 20,
        "first_dirty_offset": 20,
        "first_uncleanable_offset": 40,
        "clean_bytes": 287,
        "dirty_bytes": 155,
        "dirty_ratio": 155 / 442,
        "min_cleanable_dirty_ratio": 0.3,
        "max_compaction_delay_ms": 0,
        "due": True,
        "last_clean_ms": last_clean * 1000,
    }
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in d.iterdir()} == before

    code, out, _ = run(capsys, "describe", "--json", "--bootstrap-server", tfake.fake.address)
    assert all("cleaner" not in p for t in json.loads(out) for p in t["partitions"])  # only when asked


def test_describe_with_a_missing_data_dir_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = closed_port()  # never reached
    code, out, err = run(
        capsys, "describe", "--data-dir", str(tmp_path / "nope"), "--bootstrap-server", f"127.0.0.1:{port}"
    )
    assert (code, out) == (2, "")
    assert err == f"shardbroker topics describe: error: --data-dir {tmp_path / 'nope'}: no such directory\n"
