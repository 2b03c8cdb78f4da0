"""``shardbroker groups``, in-process, against the fake broker of kafka_fake.py: usage errors exit 2,
runtime errors exit 1 naming the address / group / topic, the describe table (lag = log end offset
- committed offset, '-' when nothing is committed), and reset-offsets' plans, clamping, refusal
while the group has members, dry run vs --execute. Groups of the consumer protocol (KIP-848): the
list's TYPE column and --type filter, their describe views (epochs, current and target
assignments), and how a group is described (ConsumerGroupDescribe first when served, DescribeGroups
on GROUP_ID_NOT_FOUND or when it is not). Opens loopback sockets (the fake broker's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shardbroker.cli.main import main
from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.consumer_protocol import (
    encode_consumer_assignment,
    encode_consumer_subscription,
)
from shardbroker.protocol.errors import ErrorCode
from tests.unit.kafka_fake import FakeBroker, closed_port, coordinator_at, running_fake

EARLIEST_OFFSET = 2
LATEST_OFFSET = 10
#: ListOffsets by timestamp: this timestamp finds offset 4; any later one finds nothing (-1).
TS_FOUND = 1_700_000_000_000
#: The consumer-protocol group "cg" (GroupFake.add_consumer_group): its epochs, assignor, state.
CG_EPOCH, CG_ASSIGNMENT_EPOCH, CG_ASSIGNOR, CG_STATE = 6, 5, "uniform", "Reconciling"

#: A consumer-protocol member: id, member epoch, current assignment, target assignment.
CgMember = tuple[str, int, dict[str, list[int]], dict[str, list[int]]]


class GroupFake:
    """The fake broker serving one topic ``t`` (2 partitions) and one classic group ``g``; after
    ``add_consumer_group`` also the consumer-protocol group ``cg``, and ConsumerGroupDescribe."""

    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.state = "Empty"
        self.members: list[tuple[str, dict[str, list[int]]]] = []
        self.committed: dict[tuple[str, int], int] = {("t", 0): 5}
        self.cg_members: list[CgMember] | None = None
        broker.topics = {"t": 2}
        broker.handlers.update(
            {
                2: self.list_offsets,
                8: self.offset_commit,
                9: self.offset_fetch,
                10: coordinator_at(broker),
                15: self.describe,
                16: self.list_groups,
                69: self.consumer_group_describe,
            }
        )

    def add_consumer_group(self, members: list[CgMember]) -> None:
        """Group ``cg`` of the consumer protocol, and ApiVersions advertising api key 69 (as a
        broker with ``group.coordinator.rebalance.protocols=classic,consumer``)."""
        self.cg_members = members
        self.broker.versions[69] = (0, 0)

    def consumer_group_describe(self, version: int, request: Any) -> Message:
        R = m.ConsumerGroupDescribeResponse

        def assignment(parts: dict[str, list[int]]) -> Any:
            return R.Assignment(
                topic_partitions=[R.TopicPartitions(topic_name=t, partitions=ps) for t, ps in parts.items()]
            )

        out = []
        for gid in request.group_ids:
            if gid != "cg" or self.cg_members is None:  # a classic group, or none: as Kafka
                out.append(R.DescribedGroup(group_id=gid, error_code=ErrorCode.GROUP_ID_NOT_FOUND))
                continue
            members = [
                R.Member(
                    member_id=mid,
                    member_epoch=epoch,
                    client_id="cli",
                    client_host="/127.0.0.1",
                    subscribed_topic_names=["t"],
                    assignment=assignment(current),
                    target_assignment=assignment(target),
                )
                for mid, epoch, current, target in self.cg_members
            ]
            out.append(
                R.DescribedGroup(
                    group_id="cg",
                    group_state=CG_STATE,
                    group_epoch=CG_EPOCH,
                    assignment_epoch=CG_ASSIGNMENT_EPOCH,
                    assignor_name=CG_ASSIGNOR,
                    members=members,
                )
            )
        return R(groups=out)

    def describe(self, version: int, request: Any) -> Message:
        D = m.DescribeGroupsResponse
        out = []
        for gid in request.groups:
            if gid == "cg" and self.cg_members is not None:  # Kafka 4's answer for such a group
                out.append(
                    D.DescribedGroup(
                        group_id=gid, group_state="Dead", error_code=ErrorCode.GROUP_ID_NOT_FOUND
                    )
                )
                continue
            if gid != "g":
                out.append(D.DescribedGroup(group_id=gid, group_state="Dead"))
                continue
            members = [
                D.DescribedGroupMember(
                    member_id=mid,
                    client_id="cli",
                    client_host="/127.0.0.1",
                    member_metadata=encode_consumer_subscription(list(parts)),
                    member_assignment=encode_consumer_assignment(parts),
                )
                for mid, parts in self.members
            ]
            out.append(
                D.DescribedGroup(
                    group_id="g",
                    group_state=self.state,
                    protocol_type="consumer",
                    protocol_data="range" if members else "",
                    members=members,
                )
            )
        return D(groups=out)

    def list_groups(self, version: int, request: Any) -> Message:
        """Both groups, with their types from v5 on, filtered by the request's types (v5+)."""
        L = m.ListGroupsResponse
        groups = [("g", self.state, "classic")]
        if self.cg_members is not None:
            groups.append(("cg", CG_STATE, "consumer"))
        wanted = {t.lower() for t in request.types_filter}
        return L(
            groups=[
                L.ListedGroup(
                    group_id=gid,
                    protocol_type="consumer",
                    group_state=state,
                    group_type=kind if version >= 5 else "",
                )
                for gid, state, kind in groups
                if not wanted or kind in wanted
            ]
        )

    def offset_fetch(self, version: int, request: Any) -> Message:
        R = m.OffsetFetchResponse
        gid = request.groups[0].group_id
        committed = self.committed if gid == "g" else {}
        parts = [
            R.OffsetFetchResponsePartitions(partition_index=p, committed_offset=o)
            for (_, p), o in committed.items()
        ]
        topics = [R.OffsetFetchResponseTopics(name="t", partitions=parts)] if parts else []
        return R(groups=[R.OffsetFetchResponseGroup(group_id=gid, topics=topics)])

    def list_offsets(self, version: int, request: Any) -> Message:
        R = m.ListOffsetsResponse

        def offset(ts: int) -> int:
            if ts == EARLIEST:
                return EARLIEST_OFFSET
            if ts == LATEST:
                return LATEST_OFFSET
            return 4 if ts <= TS_FOUND else -1

        return R(
            topics=[
                R.ListOffsetsTopicResponse(
                    name=t.name,
                    partitions=[
                        R.ListOffsetsPartitionResponse(
                            partition_index=p.partition_index, offset=offset(p.timestamp)
                        )
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )

    def offset_commit(self, version: int, request: Any) -> Message:
        R = m.OffsetCommitResponse
        for t in request.topics:
            for p in t.partitions:
                self.committed[(t.name, p.partition_index)] = p.committed_offset
        return R(
            topics=[
                R.OffsetCommitResponseTopic(
                    name=t.name,
                    partitions=[
                        R.OffsetCommitResponsePartition(partition_index=p.partition_index)
                        for p in t.partitions
                    ],
                )
                for t in request.topics
            ]
        )


@pytest.fixture
def gfake() -> Iterator[GroupFake]:
    with running_fake() as broker:
        yield GroupFake(broker)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["groups", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


# -- usage -----------------------------------------------------------------------------------------


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "list" in out and "describe" in out and "reset-offsets" in out
    code, out, _ = run(capsys, "reset-offsets", "--help")
    assert code == 0
    for flag in (
        "--bootstrap-server",
        "--to-earliest",
        "--to-datetime",
        "--shift-by",
        "--execute",
        "--dry-run",
    ):
        assert flag in out


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "--bootstrap-server", "host:port"],
        ["list", "--bootstrap-server", ""],
        ["list", "--timeout", "0"],
        ["describe"],
        ["describe", "g", "--members", "--state"],
        ["reset-offsets", "g", "--topic", "t"],
        ["reset-offsets", "g", "--to-earliest"],
        ["reset-offsets", "g", "--topic", "t:x", "--to-earliest"],
        ["reset-offsets", "g", "--topic", "t", "--to-datetime", "yesterday"],
        ["reset-offsets", "g", "--topic", "t", "--to-offset", "ten"],
        ["reset-offsets", "g", "--topic", "t", "--to-earliest", "--to-latest"],
        ["reset-offsets", "g", "--topic", "t", "--to-earliest", "--dry-run", "--execute"],
        ["list", "--type", "share"],
        ["list", "--type", ","],
        ["frobnicate"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "error" in err


def test_unreachable_broker_exits_1_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    for argv in (["list"], ["describe", "g"], ["reset-offsets", "g", "--topic", "t", "--to-earliest"]):
        code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
        assert code == 1
        assert f"127.0.0.1:{port}" in err and "unreachable" in err and out == ""


# -- list / describe -------------------------------------------------------------------------------


def test_list(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    bs = ["--bootstrap-server", gfake.broker.address]
    assert run(capsys, "list", *bs)[:2] == (0, "g\n")
    code, out, _ = run(capsys, "list", "--state", *bs)
    assert code == 0 and rows(out) == [["GROUP", "STATE"], ["g", "Empty"]]
    assert rows(run(capsys, "list", "--state", "Stable", *bs)[1]) == []
    code, out, _ = run(capsys, "list", "--json", *bs)
    assert json.loads(out) == [
        {"group": "g", "type": "classic", "state": "Empty", "protocol_type": "consumer", "coordinator": 0}
    ]


def test_describe_offsets_and_lag(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    gfake.state = "Stable"
    gfake.members = [("m-1", {"t": [0, 1]})]
    code, out, _ = run(capsys, "describe", "g", "--bootstrap-server", gfake.broker.address)
    assert code == 0
    assert rows(out) == [
        [
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        ["g", "t", "0", "5", "10", "5", "m-1", "/127.0.0.1", "cli"],
        ["g", "t", "1", "-", "10", "-", "m-1", "/127.0.0.1", "cli"],
    ]
    code, out, _ = run(capsys, "describe", "g", "--json", "--bootstrap-server", gfake.broker.address)
    (described,) = json.loads(out)
    assert described["state"] == "Stable"
    assert [(o["partition"], o["current_offset"], o["lag"]) for o in described["offsets"]] == [
        (0, 5, 5),
        (1, None, None),
    ]
    assert described["members"][0]["assignment"] == {"t": [0, 1]}


def test_describe_members_and_state(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    gfake.state = "Stable"
    gfake.members = [("m-1", {"t": [0]}), ("m-2", {"t": [1]})]
    bs = ["--bootstrap-server", gfake.broker.address]
    code, out, _ = run(capsys, "describe", "g", "--members", "--verbose", *bs)
    assert code == 0
    assert rows(out)[1:] == [
        ["g", "m-1", "-", "/127.0.0.1", "cli", "1", "t(0)"],
        ["g", "m-2", "-", "/127.0.0.1", "cli", "1", "t(1)"],
    ]
    code, out, _ = run(capsys, "describe", "g", "--state", *bs)
    assert code == 0 and rows(out)[1] == ["g", f"{gfake.broker.address}", "(0)", "range", "Stable", "2"]


def test_describe_empty_and_unknown_groups(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    bs = ["--bootstrap-server", gfake.broker.address]
    code, out, _ = run(capsys, "describe", "g", *bs)
    assert code == 0 and "Consumer group 'g' has no active members." in out
    assert ["g", "t", "0", "5", "10", "5", "-", "-", "-"] in rows(out)
    for argv in (["describe", "nope"], ["describe", "nope", "--members"], ["describe", "nope", "--state"]):
        code, out, err = run(capsys, *argv, *bs)
        assert code == 1 and "consumer group 'nope' does not exist" in err


# -- consumer-protocol groups (KIP-848) ----------------------------------------------------------

#: "m-a" has caught up with its target; "m-b" joined at an older epoch and owns nothing yet.
CG_MEMBERS: list[CgMember] = [("m-a", 5, {"t": [0]}, {"t": [0]}), ("m-b", 3, {}, {"t": [1]})]


def test_list_types(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    gfake.add_consumer_group(CG_MEMBERS)
    bs = ["--bootstrap-server", gfake.broker.address]
    assert run(capsys, "list", *bs)[:2] == (0, "cg\ng\n")
    code, out, _ = run(capsys, "list", "--type", *bs)
    assert code == 0 and rows(out) == [["GROUP", "TYPE"], ["cg", "Consumer"], ["g", "Classic"]]
    code, out, _ = run(capsys, "list", "--type", "--state", *bs)
    assert rows(out) == [["GROUP", "TYPE", "STATE"], ["cg", "Consumer", CG_STATE], ["g", "Classic", "Empty"]]
    # The filter is the broker's (ListGroups v5 types_filter), given in any case.
    code, out, _ = run(capsys, "list", "--type", "CONSUMER", *bs)
    assert code == 0 and rows(out) == [["GROUP", "TYPE"], ["cg", "Consumer"]]
    version, request = gfake.broker.apis(16)[-1]
    assert (version, request.types_filter) == (5, ["consumer"])
    code, out, _ = run(capsys, "list", "--type", "classic", "--state", "Empty", *bs)
    assert rows(out) == [["GROUP", "TYPE", "STATE"], ["g", "Classic", "Empty"]]
    code, out, _ = run(capsys, "list", "--type", "Classic,consumer", "--json", *bs)
    assert [(g["group"], g["type"]) for g in json.loads(out)] == [("cg", "consumer"), ("g", "classic")]


def test_list_types_on_a_broker_before_list_groups_v5(
    capsys: pytest.CaptureFixture[str], gfake: GroupFake
) -> None:
    gfake.broker.versions[16] = (0, 4)
    bs = ["--bootstrap-server", gfake.broker.address]
    code, out, _ = run(capsys, "list", "--type", *bs)
    assert code == 0 and rows(out) == [["GROUP", "TYPE"], ["g", "-"]]  # the type is unknown
    code, out, err = run(capsys, "list", "--type", "classic", *bs)  # and cannot be filtered on
    assert code == 1 and out == ""
    assert "ListGroups up to v4" in err and "needs v5" in err and gfake.broker.address in err


def test_describe_consumer_group(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    gfake.add_consumer_group(CG_MEMBERS)
    bs = ["--bootstrap-server", gfake.broker.address]
    code, out, _ = run(capsys, "describe", "cg", "--state", *bs)
    assert code == 0
    assert rows(out) == [
        [
            "GROUP",
            "COORDINATOR",
            "(ID)",
            "TYPE",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "GROUP-EPOCH",
            "TARGET-ASSIGNMENT-EPOCH",
            "#MEMBERS",
        ],
        ["cg", gfake.broker.address, "(0)", "Consumer", CG_ASSIGNOR, CG_STATE, "6", "5", "2"],
    ]
    code, out, _ = run(capsys, "describe", "cg", "--members", "--verbose", *bs)
    assert code == 0
    assert rows(out) == [
        [
            "GROUP",
            "CONSUMER-ID",
            "GROUP-INSTANCE-ID",
            "HOST",
            "CLIENT-ID",
            "#PARTITIONS",
            "CURRENT-EPOCH",
            "CURRENT-ASSIGNMENT",
            "TARGET-EPOCH",
            "TARGET-ASSIGNMENT",
        ],
        ["cg", "m-a", "-", "/127.0.0.1", "cli", "1", "5", "t(0)", "5", "t(0)"],
        ["cg", "m-b", "-", "/127.0.0.1", "cli", "0", "3", "-", "5", "t(1)"],
    ]
    code, out, _ = run(capsys, "describe", "cg", "--members", *bs)
    assert rows(out)[1:] == [["cg", "m-a", "/127.0.0.1", "cli", "1"], ["cg", "m-b", "/127.0.0.1", "cli", "0"]]
    # The offsets view, as for a classic group: partitions from the members' current assignments.
    code, out, _ = run(capsys, "describe", "cg", *bs)
    assert code == 0
    assert rows(out)[1:] == [
        ["cg", "t", "0", "-", "10", "-", "m-a", "/127.0.0.1", "cli"],
        ["cg", "-", "-", "-", "-", "-", "m-b", "/127.0.0.1", "cli"],
    ]
    code, out, _ = run(capsys, "describe", "cg", "--json", *bs)
    (described,) = json.loads(out)
    assert {k: described[k] for k in ("type", "state", "group_epoch", "assignment_epoch", "assignor")} == {
        "type": "consumer",
        "state": CG_STATE,
        "group_epoch": CG_EPOCH,
        "assignment_epoch": CG_ASSIGNMENT_EPOCH,
        "assignor": CG_ASSIGNOR,
    }
    assert described["assignment_strategy"] == CG_ASSIGNOR
    assert [
        (
            mem["consumer_id"],
            mem["member_epoch"],
            mem["assignment"],
            mem["target_assignment"],
            mem["subscription"],
        )
        for mem in described["members"]
    ] == [("m-a", 5, {"t": [0]}, {"t": [0]}, ["t"]), ("m-b", 3, {}, {"t": [1]}, ["t"])]
    assert [o["partition"] for o in described["offsets"]] == [0, None]
    assert gfake.broker.apis(15) == []  # described by ConsumerGroupDescribe alone


def test_describe_classic_group_json_has_no_consumer_protocol_fields(
    capsys: pytest.CaptureFixture[str], gfake: GroupFake
) -> None:
    gfake.state, gfake.members = "Stable", [("m-1", {"t": [0, 1]})]
    code, out, _ = run(capsys, "describe", "g", "--json", "--bootstrap-server", gfake.broker.address)
    assert code == 0
    (described,) = json.loads(out)
    assert (described["type"], described["group_epoch"], described["assignment_epoch"]) == (
        "classic",
        None,
        None,
    )
    assert described["assignor"] is None and described["assignment_strategy"] == "range"
    (mem,) = described["members"]
    assert (mem["member_epoch"], mem["target_assignment"], mem["assignment"]) == (None, None, {"t": [0, 1]})


def describe_with_admin(gfake: GroupFake, group_id: str) -> Any:
    with AdminClient(gfake.broker.address, timeout=5) as admin:
        return admin.describe_group(group_id)


def test_describe_asks_describe_groups_directly_when_69_is_not_served(gfake: GroupFake) -> None:
    gfake.state, gfake.members = "Stable", [("m-1", {"t": [1]})]
    desc = describe_with_admin(gfake, "g")
    assert gfake.broker.apis(69) == [] and [r.groups for _, r in gfake.broker.apis(15)] == [["g"]]
    assert (desc.group_type, desc.state, desc.protocol, desc.assignor) == ("classic", "Stable", "range", None)
    assert (desc.group_epoch, desc.assignment_epoch) == (None, None)
    (mem,) = desc.members
    assert (mem.assigned, mem.member_epoch, mem.target) == ([("t", 1)], None, None)


def test_describe_falls_back_to_describe_groups_on_group_id_not_found(gfake: GroupFake) -> None:
    gfake.add_consumer_group([])
    gfake.state, gfake.members = "Stable", [("m-1", {"t": [0]})]
    desc = describe_with_admin(gfake, "g")
    assert [r.group_ids for _, r in gfake.broker.apis(69)] == [["g"]]  # asked first...
    assert [r.groups for _, r in gfake.broker.apis(15)] == [["g"]]  # ...then DescribeGroups
    assert (desc.group_type, desc.state, [mem.assigned for mem in desc.members]) == (
        "classic",
        "Stable",
        [[("t", 0)]],
    )
    # A group of neither kind: both asked, "Dead" (DescribeGroups' word for it).
    assert describe_with_admin(gfake, "nope").exists is False
    assert [r.groups for _, r in gfake.broker.apis(15)][-1] == ["nope"]


def test_describe_fills_consumer_group_fields(gfake: GroupFake) -> None:
    gfake.add_consumer_group(CG_MEMBERS)
    desc = describe_with_admin(gfake, "cg")
    assert gfake.broker.apis(15) == []
    assert (desc.group_type, desc.state, desc.protocol_type, desc.protocol) == (
        "consumer",
        CG_STATE,
        "consumer",
        CG_ASSIGNOR,
    )
    assert (desc.group_epoch, desc.assignment_epoch, desc.assignor) == (
        CG_EPOCH,
        CG_ASSIGNMENT_EPOCH,
        CG_ASSIGNOR,
    )
    a, b = desc.members
    assert (a.member_id, a.member_epoch, a.assigned, a.target) == ("m-a", 5, [("t", 0)], [("t", 0)])
    assert (b.member_id, b.member_epoch, b.assigned, b.target) == ("m-b", 3, [], [("t", 1)])
    assert (a.client_id, a.host, a.subscribed_topic_names, a.subscription, a.assignment) == (
        "cli",
        "/127.0.0.1",
        ["t"],
        None,
        None,
    )


def test_describe_does_not_fall_back_on_other_errors(
    capsys: pytest.CaptureFixture[str], gfake: GroupFake
) -> None:
    gfake.add_consumer_group(CG_MEMBERS)
    R = m.ConsumerGroupDescribeResponse
    gfake.broker.handlers[69] = lambda version, request: R(
        groups=[
            R.DescribedGroup(
                group_id=request.group_ids[0],
                error_code=ErrorCode.GROUP_AUTHORIZATION_FAILED,
                error_message="no DESCRIBE on it",
            )
        ]
    )
    code, out, err = run(capsys, "describe", "cg", "--state", "--bootstrap-server", gfake.broker.address)
    assert code == 1 and out == ""
    assert "GROUP_AUTHORIZATION_FAILED" in err and "'cg'" in err and "no DESCRIBE on it" in err
    assert gfake.broker.apis(15) == []


# -- reset-offsets ---------------------------------------------------------------------------------


def reset(
    capsys: pytest.CaptureFixture[str], gfake: GroupFake, *argv: str
) -> tuple[int, dict[int, int], str]:
    code, out, err = run(capsys, "reset-offsets", "g", *argv, "--bootstrap-server", gfake.broker.address)
    plan = {int(r[2]): int(r[3]) for r in rows(out)[1:]} if code == 0 else {}
    if code == 0:
        assert rows(out)[0] == ["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"]
    return code, plan, err


def commits(gfake: GroupFake) -> int:
    return len(gfake.broker.apis(8))


@pytest.mark.parametrize(
    ("argv", "plan"),
    [
        (["--to-earliest"], {0: 2, 1: 2}),
        (["--to-latest"], {0: 10, 1: 10}),
        (["--to-offset", "7"], {0: 7, 1: 7}),
        (["--to-offset", "0"], {0: 2, 1: 2}),  # clamped to the log start
        (["--to-offset", "99"], {0: 10, 1: 10}),  # clamped to the log end
        (["--to-datetime", "2023-11-14T22:13:20Z"], {0: 4, 1: 4}),  # == TS_FOUND
        (["--to-datetime", "2030-01-01T00:00:00+00:00"], {0: 10, 1: 10}),  # nothing after: latest
    ],
)
def test_reset_plans_dry_run(
    capsys: pytest.CaptureFixture[str], gfake: GroupFake, argv: list[str], plan: dict[int, int]
) -> None:
    code, got, err = reset(capsys, gfake, "--topic", "t", *argv)
    assert (code, got) == (0, plan)
    assert commits(gfake) == 0 and "--execute" in err  # the default is a dry run, and says so
    code, got, err = reset(capsys, gfake, "--topic", "t", *argv, "--dry-run")
    assert (code, got, err) == (0, plan, "")
    assert commits(gfake) == 0


def test_reset_execute_commits_as_admin(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    code, plan, _ = reset(capsys, gfake, "--topic", "t:1", "--to-offset", "8", "--execute")
    assert (code, plan) == (0, {1: 8})
    assert gfake.committed == {("t", 0): 5, ("t", 1): 8}
    ((_, request),) = gfake.broker.apis(8)
    assert (request.group_id, request.generation_id_or_member_epoch, request.member_id) == ("g", -1, "")
    code, plan, _ = reset(capsys, gfake, "--all-topics", "--shift-by", "-4", "--execute")
    assert (code, plan) == (0, {0: 2, 1: 4})  # 5-4 clamped to the log start 2; 8-4
    assert gfake.committed == {("t", 0): 2, ("t", 1): 4}


def test_reset_refusals(capsys: pytest.CaptureFixture[str], gfake: GroupFake) -> None:
    code, _, err = reset(capsys, gfake, "--topic", "t", "--shift-by", "1")
    assert code == 1 and "needs a committed offset" in err and "t-1" in err  # t-1 has none
    code, _, err = reset(capsys, gfake, "--topic", "nosuch", "--to-earliest", "--execute")
    assert code == 1 and "topic 'nosuch' does not exist" in err
    code, _, err = reset(capsys, gfake, "--topic", "t:0,5", "--to-earliest", "--execute")
    assert code == 1 and "topic 't' has no partition 5" in err
    gfake.state, gfake.members = "Stable", [("m-1", {"t": [0, 1]})]
    code, _, err = reset(capsys, gfake, "--topic", "t", "--to-earliest", "--execute")
    assert code == 1 and "inactive" in err and "Stable" in err and "'g'" in err
    assert commits(gfake) == 0
