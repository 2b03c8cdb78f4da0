"""``shardbroker partitions`` and the admin client's reassignment calls against the fake broker
(tests/unit/kafka_fake.py) playing a two-worker shardbroker that follows the partition-move
contract: argument checking (exit 2 before any connection), the request layouts, the output of
each action, every refusal with its Kafka error and reason (exit 1). Opens loopback sockets (the
fake broker's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import PartitionReassignment
from shardbroker.client.connection import KafkaApiError, UnsupportedApi
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from tests.unit.kafka_fake import FakeBroker, closed_port, running_fake

WORKERS = (0, 1)


class MovesFake:
    """Two workers (node 0 and 1, both served by the fake), partitions with a leader and a leader
    epoch, AlterPartitionReassignments with the contract's rules, ListPartitionReassignments
    answered from ``ongoing``."""

    def __init__(self, fake: FakeBroker) -> None:
        self.fake = fake
        fake.versions.update({45: (0, 0), 46: (0, 0)})
        #: (topic, partition) -> [leader, leader epoch]
        self.placement: dict[tuple[str, int], list[int]] = {
            ("orders", 0): [0, 3],
            ("orders", 1): [1, 5],
            ("__consumer_offsets", 0): [0, 0],
        }
        self.ongoing: dict[tuple[str, int], PartitionReassignment] = {}
        #: moves accepted but not applied (a broker that lies)
        self.ignore_moves = False
        self.not_controller_first = 0
        fake.handlers.update({3: self.metadata, 45: self.alter, 46: self.list})

    def metadata(self, version: int, request: Any) -> Message:
        R = m.MetadataResponse
        names = (
            sorted({t for t, _ in self.placement})
            if request.topics is None
            else [t.name for t in request.topics]
        )
        topics = []
        for name in names:
            parts = sorted((p, lead) for (t, p), lead in self.placement.items() if t == name)
            if not parts:
                topics.append(
                    R.MetadataResponseTopic(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
                )
                continue
            topics.append(
                R.MetadataResponseTopic(
                    name=name,
                    is_internal=name.startswith("__"),
                    partitions=[
                        R.MetadataResponsePartition(
                            partition_index=p, leader_id=leader, leader_epoch=epoch, replica_nodes=[leader]
                        )
                        for p, (leader, epoch) in parts
                    ],
                )
            )
        brokers = [
            R.MetadataResponseBroker(node_id=n, host="127.0.0.1", port=self.fake.port) for n in WORKERS
        ]
        return R(brokers=brokers, topics=topics, controller_id=0)

    def _one(self, topic: str, partition: int, replicas: list[int] | None) -> tuple[int, str | None]:
        tp = (topic, partition)
        if tp not in self.placement:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {topic} has no partition {partition}"
        if topic.startswith("__"):
            return ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"{topic} is an internal topic: its partitions stay"
        if replicas is None:
            if self.ongoing.pop(tp, None) is None:
                return ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, None
            return ErrorCode.NONE, None
        if len(replicas) != 1 or replicas[0] not in WORKERS:
            return ErrorCode.INVALID_REPLICA_ASSIGNMENT, f"{replicas} is not one worker of 0-1"
        lead = self.placement[tp]
        if lead[0] != replicas[0] and not self.ignore_moves:
            lead[:] = [replicas[0], lead[1] + 1]
        return ErrorCode.NONE, None

    def alter(self, version: int, request: Any) -> Message:
        R = m.AlterPartitionReassignmentsResponse
        if self.not_controller_first:
            self.not_controller_first -= 1
            return R(error_code=ErrorCode.NOT_CONTROLLER, error_message="ask node 0")
        responses = []
        for t in request.topics:
            parts = []
            for p in t.partitions:
                code, message = self._one(t.name, p.partition_index, p.replicas)
                parts.append(
                    R.ReassignablePartitionResponse(
                        partition_index=p.partition_index, error_code=code, error_message=message
                    )
                )
            responses.append(R.ReassignableTopicResponse(name=t.name, partitions=parts))
        return R(responses=responses)

    def list(self, version: int, request: Any) -> Message:
        R = m.ListPartitionReassignmentsResponse
        wanted = (
            None
            if request.topics is None
            else {(t.name, p) for t in request.topics for p in t.partition_indexes}
        )
        by_topic: dict[str, list[Any]] = {}
        for (t, p), r in sorted(self.ongoing.items()):
            if wanted is None or (t, p) in wanted:
                by_topic.setdefault(t, []).append(
                    R.OngoingPartitionReassignment(
                        partition_index=p,
                        replicas=r.replicas,
                        adding_replicas=r.adding_replicas,
                        removing_replicas=r.removing_replicas,
                    )
                )
        return R(topics=[R.OngoingTopicReassignment(name=t, partitions=ps) for t, ps in by_topic.items()])


@pytest.fixture
def moves() -> Iterator[MovesFake]:
    with running_fake() as fake:
        yield MovesFake(fake)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["partitions", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def cli(capsys: pytest.CaptureFixture[str], moves: MovesFake, *argv: str) -> tuple[int, str, str]:
    return run(capsys, *argv, "--bootstrap-server", moves.fake.address)


# -- usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["move", "orders", "0"], "one of the arguments --to-worker --cancel is required"),
        (["move", "orders", "0", "--to-worker", "1", "--cancel"], "not allowed with argument"),
        (["move", "orders", "0", "--to-worker", "-1"], "must be 0 or more, got -1"),
        (["move", "orders", "x", "--to-worker", "1"], "not an integer: 'x'"),
        (["move", "orders", "--to-worker", "1"], "PARTITION"),
        (["list", "--format", "xml"], "invalid choice: 'xml'"),
        (["reassignments", "--timeout", "0"], "at least 1 ms"),
        (["shuffle"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    port = closed_port()  # never reached: usage is checked first
    code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
    assert code == 2, err
    assert message in err and out == ""


def test_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    for argv in (["move", "t", "0", "--to-worker", "1"], ["list"], ["reassignments"]):
        code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
        assert code == 1 and out == ""
        assert f"shardbroker partitions {argv[0]}: error: broker 127.0.0.1:{port} unreachable" in err


# -- move ------------------------------------------------------------------------------------------


def test_move_prints_old_and_new_worker_and_epoch(
    capsys: pytest.CaptureFixture[str], moves: MovesFake
) -> None:
    code, out, err = cli(capsys, moves, "move", "orders", "0", "--to-worker", "1", "--timeout", "7000")
    assert (code, out, err) == (0, "moved orders-0 from worker 0 to worker 1 (leader epoch 4)\n", "")
    assert moves.placement[("orders", 0)] == [1, 4]
    ((version, request),) = moves.fake.apis(45)
    assert version == 0 and request.timeout_ms == 7000
    assert [(t.name, [(p.partition_index, p.replicas) for p in t.partitions]) for t in request.topics] == [
        ("orders", [(0, [1])])
    ]


def test_move_to_the_current_owner_changes_nothing(
    capsys: pytest.CaptureFixture[str], moves: MovesFake
) -> None:
    code, out, _ = cli(capsys, moves, "move", "orders", "1", "--to-worker", "1")
    assert (code, out) == (0, "orders-1 is already on worker 1 (leader epoch 5); nothing moved\n")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["nope", "0", "--to-worker", "1"],
            "UNKNOWN_TOPIC_OR_PARTITION: nope-0: topic nope has no partition 0",
        ),
        (
            ["orders", "9", "--to-worker", "1"],
            "UNKNOWN_TOPIC_OR_PARTITION: orders-9: topic orders has no partition 9",
        ),
        (
            ["orders", "0", "--to-worker", "7"],
            "INVALID_REPLICA_ASSIGNMENT: orders-0: [7] is not one worker of 0-1",
        ),
        (
            ["__consumer_offsets", "0", "--to-worker", "1"],
            "INVALID_REPLICA_ASSIGNMENT: __consumer_offsets-0: __consumer_offsets is an internal topic",
        ),
        (["orders", "0", "--cancel"], "NO_REASSIGNMENT_IN_PROGRESS: orders-0"),
    ],
)
def test_refusals_exit_1_with_the_error_and_reason(
    capsys: pytest.CaptureFixture[str], moves: MovesFake, argv: list[str], expected: str
) -> None:
    before = {tp: list(v) for tp, v in moves.placement.items()}
    code, out, err = cli(capsys, moves, "move", *argv)
    assert (code, out) == (1, "")
    assert err.startswith(f"shardbroker partitions move: error: {expected}"), err
    assert moves.placement == before


def test_cancel_a_move_in_progress(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    moves.ongoing[("orders", 0)] = PartitionReassignment([0, 1], [1], [0])
    code, out, _ = cli(capsys, moves, "move", "orders", "0", "--cancel")
    assert (code, out) == (0, "cancelled the move of orders-0\n")
    assert [p.replicas for p in moves.fake.apis(45)[0][1].topics[0].partitions] == [None]
    assert moves.ongoing == {}


def test_a_move_metadata_does_not_show_is_an_error(
    capsys: pytest.CaptureFixture[str], moves: MovesFake
) -> None:
    moves.ignore_moves = True
    code, out, err = cli(capsys, moves, "move", "orders", "0", "--to-worker", "1")
    assert (code, out) == (1, "")
    assert "accepted the move of orders-0 to worker 1, but Metadata shows leader 0" in err


def test_a_broker_without_partition_moves(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    del moves.fake.versions[45], moves.fake.versions[46]
    for argv in (["move", "orders", "0", "--to-worker", "1"], ["reassignments"]):
        code, _, err = cli(capsys, moves, *argv)
        assert code == 1
        assert (
            "does not serve "
            + ("AlterPartitionReassignments" if argv[0] == "move" else "ListPartitionReassignments")
            in err
        )
    assert moves.fake.apis(45) == moves.fake.apis(46) == []


# -- list ------------------------------------------------------------------------------------------


def test_list_shows_worker_and_leader_epoch(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    moves.placement[("orders", 2)] = [-1, -1]  # no leader right now
    code, out, _ = cli(capsys, moves, "list")
    assert code == 0
    assert out.splitlines() == [
        "TOPIC               PARTITION  WORKER  LEADER_EPOCH",
        "__consumer_offsets  0          0       0",
        "orders              0          0       3",
        "orders              1          1       5",
        "orders              2          -       -",
    ]
    code, out, _ = cli(capsys, moves, "list", "orders", "--exclude-internal", "--format", "json")
    assert code == 0
    assert json.loads(out) == [
        {"topic": "orders", "partition": 0, "worker": 0, "leader_epoch": 3},
        {"topic": "orders", "partition": 1, "worker": 1, "leader_epoch": 5},
        {"topic": "orders", "partition": 2, "worker": None, "leader_epoch": None},
    ]


def test_list_follows_a_move(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    assert cli(capsys, moves, "move", "orders", "1", "--to-worker", "0")[0] == 0
    code, out, _ = cli(capsys, moves, "list", "orders", "--format", "json")
    assert code == 0
    assert {(r["partition"], r["worker"], r["leader_epoch"]) for r in json.loads(out)} == {
        (0, 0, 3),
        (1, 0, 6),
    }


def test_list_of_an_unknown_topic_exits_1(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    code, out, err = cli(capsys, moves, "list", "orders", "nope")
    assert (code, out) == (1, "")
    assert (
        "shardbroker partitions list: error: UNKNOWN_TOPIC_OR_PARTITION: topic 'nope' does not exist" in err
    )


# -- reassignments ---------------------------------------------------------------------------------


def test_reassignments(capsys: pytest.CaptureFixture[str], moves: MovesFake) -> None:
    assert cli(capsys, moves, "reassignments") == (0, "No partition moves in progress.\n", "")
    assert moves.fake.apis(46)[0][1].topics is None
    moves.ongoing[("orders", 1)] = PartitionReassignment([1, 0], [0], [1])
    code, out, _ = cli(capsys, moves, "reassignments")
    assert (code, out.splitlines()) == (
        0,
        ["TOPIC   PARTITION  FROM  TO  REPLICAS", "orders  1          1     0   1,0"],
    )
    code, out, _ = cli(capsys, moves, "reassignments", "orders", "--format", "json")
    assert json.loads(out) == [
        {"topic": "orders", "partition": 1, "from_workers": [1], "to_workers": [0], "replicas": [1, 0]}
    ]
    topics = moves.fake.apis(46)[-1][1].topics
    assert [(t.name, sorted(t.partition_indexes)) for t in topics] == [("orders", [0, 1])]


# -- the admin client ------------------------------------------------------------------------------


def test_alter_groups_by_topic_and_answers_per_partition(moves: MovesFake) -> None:
    moves.placement[("audit", 0)] = [1, 0]
    with AdminClient(moves.fake.address, timeout=5) as admin:
        got = admin.alter_partition_reassignments({("orders", 0): 1, ("audit", 0): 0, ("orders", 1): 9})
    assert got[("orders", 0)] is None and got[("audit", 0)] is None
    bad = got[("orders", 1)]
    assert bad is not None and bad.error_code == ErrorCode.INVALID_REPLICA_ASSIGNMENT
    request = moves.fake.apis(45)[0][1]
    assert [(t.name, [p.partition_index for p in t.partitions]) for t in request.topics] == [
        ("orders", [0, 1]),
        ("audit", [0]),
    ]
    assert moves.placement[("audit", 0)] == [0, 1]


def test_not_controller_is_retried(moves: MovesFake) -> None:
    moves.not_controller_first = 2
    with AdminClient(moves.fake.address, timeout=5) as admin:
        assert admin.alter_partition_reassignments({("orders", 0): 1}) == {("orders", 0): None}
    assert len(moves.fake.apis(45)) == 3


def test_an_error_of_the_whole_answer_raises(moves: MovesFake) -> None:
    R = m.AlterPartitionReassignmentsResponse
    moves.fake.handlers[45] = lambda version, request: R(
        error_code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED, error_message="no"
    )
    moves.fake.handlers[46] = lambda version, request: m.ListPartitionReassignmentsResponse(
        error_code=ErrorCode.REQUEST_TIMED_OUT
    )
    with AdminClient(moves.fake.address, timeout=5) as admin:
        with pytest.raises(
            KafkaApiError, match=r"^CLUSTER_AUTHORIZATION_FAILED: AlterPartitionReassignments: no$"
        ):
            admin.alter_partition_reassignments({("orders", 0): 1})
        with pytest.raises(KafkaApiError, match=r"^REQUEST_TIMED_OUT: ListPartitionReassignments$"):
            admin.list_partition_reassignments()


def test_a_partition_left_unanswered_is_an_error(moves: MovesFake) -> None:
    moves.fake.handlers[45] = lambda version, request: m.AlterPartitionReassignmentsResponse()
    with (
        AdminClient(moves.fake.address, timeout=5) as admin,
        pytest.raises(KafkaApiError, match="did not answer"),
    ):
        admin.alter_partition_reassignments({("orders", 0): 1})


def test_unsupported_is_named(moves: MovesFake) -> None:
    moves.fake.versions[45] = (1, 1)  # a version this client does not speak
    with AdminClient(moves.fake.address, timeout=5) as admin, pytest.raises(UnsupportedApi, match="v0"):
        admin.alter_partition_reassignments({("orders", 0): 1})
