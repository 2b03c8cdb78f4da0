"""The ACL checks of the group, config, reassignment, DescribeCluster and SCRAM admin handlers, with
a StandardAuthorizer in force: each test fails if its handler's check is removed.

Group APIs run over a real coordinator and logs (replica_fakes.Harness); admin APIs over the fake
controller channel of test_handlers_admin (the controller's own state machine answers). The
principal is set on the request's session, as a SASL listener sets it; ``User:admin`` is the super
user, ``User:alice`` starts with no ACL (``allow.everyone.if.no.acl.found`` is false).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

from shardbroker.broker.auth_helper import NOT_REQUESTED, SUPPORTED_OPERATIONS
from shardbroker.broker.group_coordinator import GroupCoordinator
from shardbroker.broker.group_metadata_manager import OFFSETS_TOPIC
from shardbroker.broker.session import ConnectionSession, SecurityProtocol
from shardbroker.broker.worker_state import WorkerState
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    CLUSTER_NAME,
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.principal import KafkaPrincipal
from shardbroker.security.scram_credential import ScramMechanism, salted_password
from tests.unit.replica_fakes import Harness, image, run, topic
from tests.unit.test_handlers_admin import call, channel, make_state

AUTHZ = {
    "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "super.users": "User:admin",
}
GROUP_PROPS = {**AUTHZ, "offsets.topic.num.partitions": "1", "group.initial.rebalance.delay.ms": "0"}
Op, R = AclOperation, ResourceType
NONE = int(ErrorCode.NONE)
TOPIC_DENIED = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
GROUP_DENIED = int(ErrorCode.GROUP_AUTHORIZATION_FAILED)
CLUSTER_DENIED = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)


def session(user: str) -> ConnectionSession:
    return ConnectionSession(
        "SASL_PLAINTEXT", SecurityProtocol.SASL_PLAINTEXT, "127.0.0.1", KafkaPrincipal("User", user)
    )


ADMIN, ALICE = session("admin"), session("alice")


def acl(
    op: AclOperation,
    rtype: ResourceType,
    name: str,
    pattern: PatternType = PatternType.LITERAL,
    permission: AclPermissionType = AclPermissionType.ALLOW,
) -> AclBinding:
    """An ACL for User:alice from any host."""
    return AclBinding(
        ResourcePattern(rtype, name, pattern), AccessControlEntry("User:alice", "*", op, permission)
    )


def bits(*ops: AclOperation) -> int:
    return sum(1 << op for op in ops)


class RecordedDenials:
    """Stands for a worker's audit trail (``WorkerState.audit``): the denials, kept for the test."""

    def __init__(self) -> None:
        self.seen: list[tuple[Any, ...]] = []

    def denied(self, *args: Any) -> None:
        self.seen.append(args)


# -- group APIs, over a real coordinator -----------------------------------------------------------


class Groups:
    """A worker with a group coordinator and topics ``t`` and ``u`` (2 partitions each)."""

    def __init__(self, tmp_path: Path) -> None:
        img = image(
            topic(OFFSETS_TOPIC, 1, configs={"cleanup.policy": "compact"}), topic("t", 2), topic("u", 2)
        )
        self.h = Harness(tmp_path, img, props=GROUP_PROPS)
        self.state: WorkerState = self.h.state
        self.gc = GroupCoordinator(0, self.h.config, self.h.channel, self.h.replicas)
        self.state.groups = self.gc

    def acls(self, *bindings: AclBinding) -> None:
        """The ACLs in force from now on (a new image, as the controller would publish)."""
        self.h.channel.image = dataclasses.replace(self.h.channel.image, acls=bindings)

    async def call(self, request: Any, version: int, who: ConnectionSession = ALICE) -> Any:
        return await call(self.state, request, version, who)

    async def commit(
        self, group: str, who: ConnectionSession = ADMIN, **topics: int
    ) -> dict[tuple[str, int], int]:
        """A standalone commit (no member) of offset 5 to partitions 0-1 of ``topics``' keys."""
        C = m.OffsetCommitRequest
        request = C(
            group_id=group,
            generation_id_or_member_epoch=-1,
            topics=[
                C.OffsetCommitRequestTopic(
                    name=name,
                    partitions=[
                        C.OffsetCommitRequestPartition(partition_index=i, committed_offset=5)
                        for i in range(n)
                    ],
                )
                for name, n in topics.items()
            ],
        )
        response = await self.call(request, 8, who)
        return {(t.name, p.partition_index): p.error_code for t in response.topics for p in t.partitions}


@asynccontextmanager
async def groups(tmp_path: Path) -> AsyncIterator[Groups]:
    g = Groups(tmp_path)
    async with g.h:
        await g.gc.start(None)
        try:
            yield g
        finally:
            await g.gc.drain()


def join(group: str) -> m.JoinGroupRequest:
    protocols = [m.JoinGroupRequest.JoinGroupRequestProtocol(name="range", metadata=b"\x00\x00")]
    return m.JoinGroupRequest(
        group_id=group,
        session_timeout_ms=10_000,
        rebalance_timeout_ms=10_000,
        protocol_type="consumer",
        protocols=protocols,
    )


def test_join_group_needs_read_on_the_group_prefixed_and_deny_wins(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with groups(tmp_path) as g:
            r = await g.call(join("app-1"), 7)
            assert (r.error_code, r.member_id, r.generation_id, r.protocol_name) == (
                GROUP_DENIED,
                "",
                -1,
                None,
            )
            assert r.members == []
            assert g.gc.describe("app-1")[1] is None  # the coordinator never saw it
            r = await g.call(join("app-1"), 5)
            assert (r.error_code, r.protocol_name) == (GROUP_DENIED, "")
            g.acls(acl(Op.READ, R.GROUP, "app-", PatternType.PREFIXED))
            r = await g.call(join("app-1"), 5)
            assert r.error_code == ErrorCode.MEMBER_ID_REQUIRED and r.member_id
            assert (await g.call(join("other"), 5)).error_code == GROUP_DENIED
            g.acls(
                acl(Op.READ, R.GROUP, "app-", PatternType.PREFIXED),
                acl(Op.READ, R.GROUP, "app-1", permission=AclPermissionType.DENY),
            )
            assert (await g.call(join("app-1"), 5)).error_code == GROUP_DENIED
            # WRITE on the group is not READ
            g.acls(acl(Op.DESCRIBE, R.GROUP, "app-1"), acl(Op.WRITE, R.GROUP, "*"))
            assert (await g.call(join("app-1"), 5)).error_code == GROUP_DENIED

    run(scenario())


def test_sync_heartbeat_leave_need_read_on_the_group(tmp_path: Path) -> None:
    S = m.SyncGroupRequest
    L = m.LeaveGroupRequest

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            sync = S(
                group_id="g", generation_id=1, member_id="m", protocol_type="consumer", protocol_name="range"
            )
            beat = m.HeartbeatRequest(group_id="g", generation_id=1, member_id="m")
            leave = L(group_id="g", members=[L.MemberIdentity(member_id="m")])
            assert (await g.call(sync, 5)).error_code == GROUP_DENIED
            assert (await g.call(beat, 4)).error_code == GROUP_DENIED
            r = await g.call(leave, 3)
            assert (r.error_code, r.members) == (GROUP_DENIED, [])
            assert (await g.call(L(group_id="g", member_id="m"), 0)).error_code == GROUP_DENIED
            # v5's mandatory protocol type and name are checked first, as Kafka
            nameless = S(group_id="g", generation_id=1, member_id="m", protocol_type="consumer")
            assert (await g.call(nameless, 5)).error_code == ErrorCode.INCONSISTENT_GROUP_PROTOCOL
            g.acls(acl(Op.READ, R.GROUP, "g"))
            assert (await g.call(sync, 5)).error_code == ErrorCode.UNKNOWN_MEMBER_ID
            assert (await g.call(beat, 4)).error_code == ErrorCode.UNKNOWN_MEMBER_ID
            r = await g.call(leave, 3)
            assert r.error_code == NONE and [x.error_code for x in r.members] == [ErrorCode.UNKNOWN_MEMBER_ID]

    run(scenario())


def test_offset_commit_needs_read_on_the_group_then_on_each_topic(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with groups(tmp_path) as g:
            assert set((await g.commit("g", ALICE, t=2, nope=1)).values()) == {GROUP_DENIED}
            g.acls(acl(Op.READ, R.GROUP, "g"))
            # authorization before existence: an unknown topic one may not read is refused
            assert await g.commit("g", ALICE, t=1, nope=1) == {
                ("t", 0): TOPIC_DENIED,
                ("nope", 0): TOPIC_DENIED,
            }
            g.acls(acl(Op.READ, R.GROUP, "g"), acl(Op.READ, R.TOPIC, "t"))
            assert await g.commit("g", ALICE, t=2, u=1) == {
                ("t", 0): NONE,
                ("t", 1): NONE,
                ("u", 0): TOPIC_DENIED,
            }
            g.acls(acl(Op.READ, R.GROUP, "g"), acl(Op.READ, R.TOPIC, "*"))
            codes = await g.commit("g", ALICE, u=1, nope=1)
            assert codes == {("u", 0): NONE, ("nope", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}

    run(scenario())


def test_offset_fetch_needs_describe_on_the_group_and_hides_topics(tmp_path: Path) -> None:
    F = m.OffsetFetchRequest

    def named(version: int) -> Any:
        topics = [F.OffsetFetchRequestTopic(name=n, partition_indexes=[0]) for n in ("t", "u")]
        if version >= 8:
            groups8 = [F.OffsetFetchRequestGroup(group_id="g", topics=[
                F.OffsetFetchRequestTopics(name=n, partition_indexes=[0]) for n in ("t", "u")
            ])]  # fmt: skip
            return F(groups=groups8)
        return F(group_id="g", topics=topics)

    def offsets(response: Any, version: int) -> dict[tuple[str, int], tuple[int, int]]:
        topics = response.groups[0].topics if version >= 8 else response.topics
        return {
            (t.name, p.partition_index): (p.committed_offset, p.error_code)
            for t in topics
            for p in t.partitions
        }

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            assert set((await g.commit("g", t=2, u=2)).values()) == {NONE}
            r = await g.call(named(8), 8)
            assert (r.groups[0].error_code, r.groups[0].topics) == (GROUP_DENIED, [])
            r = await g.call(named(5), 5)
            assert (r.error_code, r.topics) == (GROUP_DENIED, [])
            r = await g.call(named(1), 1)  # v0-v1: the group's error in every partition
            assert set(offsets(r, 1).values()) == {(-1, GROUP_DENIED)}
            g.acls(acl(Op.DESCRIBE, R.GROUP, "g"), acl(Op.DESCRIBE, R.TOPIC, "t"))
            for version in (1, 5, 8):
                r = await g.call(named(version), version)
                assert offsets(r, version) == {("t", 0): (5, NONE), ("u", 0): (-1, TOPIC_DENIED)}, version
            # every offset of the group: the topics one may not describe are left out
            r = await g.call(F(groups=[F.OffsetFetchRequestGroup(group_id="g", topics=None)]), 8)
            assert offsets(r, 8) == {("t", 0): (5, NONE), ("t", 1): (5, NONE)}
            r = await g.call(F(group_id="g", topics=None), 7)
            assert offsets(r, 7) == {("t", 0): (5, NONE), ("t", 1): (5, NONE)}
            r = await g.call(F(group_id="g", topics=None), 7, ADMIN)
            assert len(offsets(r, 7)) == 4

    run(scenario())


def test_offset_delete_needs_delete_on_the_group_and_read_on_each_topic(tmp_path: Path) -> None:
    D = m.OffsetDeleteRequest
    request = D(
        group_id="g",
        topics=[
            D.OffsetDeleteRequestTopic(name=n, partitions=[D.OffsetDeleteRequestPartition()]) for n in "tu"
        ],
    )

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            await g.commit("g", t=1, u=1)
            r = await g.call(request, 0)
            assert (r.error_code, r.topics) == (GROUP_DENIED, [])
            g.acls(acl(Op.READ, R.GROUP, "g"), acl(Op.READ, R.TOPIC, "*"))  # READ on the group is not DELETE
            assert (await g.call(request, 0)).error_code == GROUP_DENIED
            g.acls(acl(Op.DELETE, R.GROUP, "g"), acl(Op.READ, R.TOPIC, "t"))
            r = await g.call(request, 0)
            assert r.error_code == NONE
            assert {t.name: t.partitions[0].error_code for t in r.topics} == {"t": NONE, "u": TOPIC_DENIED}
            _, left = g.gc.fetch("g", None)
            assert list(left) == ["u"]  # only the authorized topic's offset went

    run(scenario())


def test_describe_groups_needs_describe_and_reports_authorized_operations(tmp_path: Path) -> None:
    request = m.DescribeGroupsRequest(groups=["g", "h"], include_authorized_operations=True)

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            await g.commit("g", t=1)
            r = await g.call(request, 5)
            assert [(d.group_id, d.error_code, d.authorized_operations) for d in r.groups] == [
                ("g", GROUP_DENIED, NOT_REQUESTED),
                ("h", GROUP_DENIED, NOT_REQUESTED),
            ]
            g.acls(acl(Op.READ, R.GROUP, "g"))  # READ implies DESCRIBE
            described, denied = (await g.call(request, 5)).groups
            assert (described.error_code, described.group_state) == (NONE, "Empty")
            assert described.authorized_operations == bits(Op.READ, Op.DESCRIBE)
            assert denied.error_code == GROUP_DENIED
            r = await g.call(m.DescribeGroupsRequest(groups=["g"]), 5)
            assert r.groups[0].authorized_operations == NOT_REQUESTED
            (described, _) = (await g.call(request, 5, ADMIN)).groups
            assert described.authorized_operations == bits(*SUPPORTED_OPERATIONS[R.GROUP])

    run(scenario())


def test_list_groups_lists_what_one_may_describe(tmp_path: Path) -> None:
    async def names(g: Groups) -> list[str]:
        return sorted(x.group_id for x in (await g.call(m.ListGroupsRequest(), 4)).groups)

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            for group in ("a-1", "a-2", "b-1"):
                await g.commit(group, t=1)
            audit = RecordedDenials()
            g.state.audit = cast(Any, audit)
            assert await names(g) == []
            g.acls(acl(Op.DESCRIBE, R.GROUP, "a-", PatternType.PREFIXED))
            assert await names(g) == ["a-1", "a-2"]
            g.acls(acl(Op.DESCRIBE, R.CLUSTER, CLUSTER_NAME))
            assert await names(g) == ["a-1", "a-2", "b-1"]
            assert audit.seen == []  # filtering is not a denial (Kafka's logIfDenied = false)

    run(scenario())


def test_delete_groups_needs_delete_on_each_group(tmp_path: Path) -> None:
    request = m.DeleteGroupsRequest(groups_names=["g", "h"])

    async def scenario() -> None:
        async with groups(tmp_path) as g:
            await g.commit("g", t=1)
            await g.commit("h", t=1)
            r = await g.call(request, 2)
            assert [(x.group_id, x.error_code) for x in r.results] == [
                ("g", GROUP_DENIED),
                ("h", GROUP_DENIED),
            ]
            g.acls(acl(Op.DELETE, R.GROUP, "g"))
            r = await g.call(request, 2)
            assert [(x.group_id, x.error_code) for x in r.results] == [("g", NONE), ("h", GROUP_DENIED)]
            assert g.gc.describe("h")[1] is not None

    run(scenario())


# -- config, reassignment, cluster and SCRAM APIs, over the fake controller -------------------------


def admin_state(tmp_path: Path) -> WorkerState:
    state = make_state(tmp_path, **AUTHZ)
    req = m.CreateTopicsRequest(
        topics=[m.CreateTopicsRequest.CreatableTopic(name="a", num_partitions=2, replication_factor=1)]
    )
    assert run(call(state, req, 7, ADMIN)).topics[0].error_code == NONE
    return state


def grant(state: WorkerState, *bindings: AclBinding) -> None:
    creations = [m.CreateAclsRequest.AclCreation(**_wire(b)) for b in bindings]
    response = run(call(state, m.CreateAclsRequest(creations=creations), 3, ADMIN))
    assert [r.error_code for r in response.results] == [NONE] * len(bindings)


def _wire(b: AclBinding) -> dict[str, Any]:
    record = b.to_record()
    return {"resource_name" if k == "name" else "resource_pattern_type" if k == "pattern_type" else k: v
            for k, v in record.items()}  # fmt: skip


def asked(state: WorkerState) -> list[str]:
    return [op for op, _, _ in channel(state).requests]


def test_describe_configs_needs_describe_configs(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    Res = m.DescribeConfigsRequest.DescribeConfigsResource
    request = m.DescribeConfigsRequest(
        resources=[Res(resource_type=2, resource_name=n, configuration_keys=None) for n in ("a", "nope")]
        + [Res(resource_type=4, resource_name="0", configuration_keys=None)]
    )

    def results() -> list[tuple[str, int, str | None, int]]:
        r = run(call(state, request, 4, ALICE))
        return [(x.resource_name, x.error_code, x.error_message, len(x.configs)) for x in r.results]

    assert results() == [
        ("a", TOPIC_DENIED, "Topic authorization failed.", 0),
        ("nope", TOPIC_DENIED, "Topic authorization failed.", 0),  # before existence
        ("0", CLUSTER_DENIED, "Cluster authorization failed.", 0),
    ]
    grant(state, acl(Op.ALTER_CONFIGS, R.TOPIC, "a"))  # implies DESCRIBE_CONFIGS
    a, nope, broker = results()
    assert a[1] == NONE and a[3] > 0
    assert nope[1] == TOPIC_DENIED and broker[1] == CLUSTER_DENIED
    grant(state, acl(Op.DESCRIBE_CONFIGS, R.TOPIC, "*"), acl(Op.DESCRIBE_CONFIGS, R.CLUSTER, CLUSTER_NAME))
    a, nope, broker = results()
    assert nope[1] == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert broker[1] == NONE and broker[3] > 0


def test_alter_configs_need_alter_configs(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    A, Inc = m.AlterConfigsRequest, m.IncrementalAlterConfigsRequest

    def legacy(rtype: int, name: str) -> Any:
        configs = [A.AlterableConfig(name="retention.ms", value="1000")]
        return A.AlterConfigsResource(resource_type=rtype, resource_name=name, configs=configs)

    def incremental(rtype: int, name: str) -> Any:
        configs = [Inc.AlterableConfig(name="retention.ms", config_operation=0, value="2000")]
        return Inc.AlterConfigsResource(resource_type=rtype, resource_name=name, configs=configs)

    def codes(request: Any, version: int) -> list[tuple[str, int]]:
        return [(x.resource_name, x.error_code) for x in run(call(state, request, version, ALICE)).responses]

    before = len(channel(state).requests)
    assert codes(A(resources=[legacy(2, "a"), legacy(2, "nope"), legacy(4, "0")]), 2) == [
        ("a", TOPIC_DENIED),
        ("nope", TOPIC_DENIED),
        ("0", CLUSTER_DENIED),
    ]
    assert codes(Inc(resources=[incremental(2, "a"), incremental(4, "0")]), 1) == [
        ("a", TOPIC_DENIED),
        ("0", CLUSTER_DENIED),
    ]
    assert "alter_configs" not in asked(state)[before:]
    # the request's own checks come first, as Kafka
    assert codes(A(resources=[legacy(2, "a"), legacy(2, "a")]), 2) == [("a", 42), ("a", 42)]
    grant(state, acl(Op.ALTER_CONFIGS, R.TOPIC, "a"), acl(Op.ALTER_CONFIGS, R.CLUSTER, CLUSTER_NAME))
    assert codes(A(resources=[legacy(2, "a")]), 2) == [("a", NONE)]
    assert state.image.topics["a"].configs["retention.ms"] == "1000"
    assert codes(Inc(resources=[incremental(2, "a")]), 1) == [("a", NONE)]
    assert state.image.topics["a"].configs["retention.ms"] == "2000"
    # past the check, the broker resource meets its own validation (not a dynamic config)
    assert codes(Inc(resources=[incremental(4, "0")]), 1) == [("0", ErrorCode.INVALID_CONFIG)]


def test_partition_reassignments_need_alter_and_describe_on_the_cluster(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    A, L = m.AlterPartitionReassignmentsRequest, m.ListPartitionReassignmentsRequest
    move = A(
        topics=[
            A.ReassignableTopic(
                name="a", partitions=[A.ReassignablePartition(partition_index=1, replicas=[0])]
            )
        ]
    )
    listing = L(topics=[L.ListPartitionReassignmentsTopics(name="a", partition_indexes=[0, 1])])
    before = len(channel(state).requests)
    r = run(call(state, move, 0, ALICE))
    assert (r.error_code, r.error_message) == (CLUSTER_DENIED, "Cluster authorization failed.")
    assert [(t.name, [(p.partition_index, p.error_code) for p in t.partitions]) for t in r.responses] == [
        ("a", [(1, CLUSTER_DENIED)])
    ]
    r = run(call(state, listing, 0, ALICE))
    assert r.error_code == CLUSTER_DENIED
    assert [(t.name, [(p.partition_index, p.replicas) for p in t.partitions]) for t in r.topics] == [
        ("a", [(0, []), (1, [])])
    ]
    assert asked(state)[before:] == []
    grant(state, acl(Op.DESCRIBE, R.CLUSTER, CLUSTER_NAME))
    channel(state).answer = {"moves": []}
    r = run(call(state, listing, 0, ALICE))
    assert (r.error_code, r.topics) == (NONE, [])
    assert run(call(state, move, 0, ALICE)).error_code == CLUSTER_DENIED  # DESCRIBE is not ALTER
    channel(state).answer = None
    grant(state, acl(Op.ALTER, R.CLUSTER, CLUSTER_NAME))
    channel(state).answer = {"partitions": [{"error_code": 0}]}
    r = run(call(state, move, 0, ALICE))
    assert r.error_code == NONE and r.responses[0].partitions[0].error_code == NONE
    assert [op for op in asked(state)[before:] if op != "create_acls"] == ["list_moves", "move_partitions"]


def test_describe_cluster_authorized_operations(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    asking = m.DescribeClusterRequest(include_cluster_authorized_operations=True)
    assert run(call(state, asking, 1, ALICE)).cluster_authorized_operations == 0
    assert (
        run(call(state, m.DescribeClusterRequest(), 1, ALICE)).cluster_authorized_operations == NOT_REQUESTED
    )
    grant(state, acl(Op.IDEMPOTENT_WRITE, R.CLUSTER, CLUSTER_NAME))
    assert run(call(state, asking, 1, ALICE)).cluster_authorized_operations == 0  # no DESCRIBE: none shown
    grant(state, acl(Op.ALTER, R.CLUSTER, CLUSTER_NAME))  # implies DESCRIBE
    ops = run(call(state, asking, 1, ALICE)).cluster_authorized_operations
    assert ops == bits(Op.IDEMPOTENT_WRITE, Op.ALTER, Op.DESCRIBE)
    every = bits(*SUPPORTED_OPERATIONS[R.CLUSTER])
    assert run(call(state, asking, 1, ADMIN)).cluster_authorized_operations == every


def test_scram_credentials_admin_needs_describe_and_alter_on_the_cluster(tmp_path: Path) -> None:
    state = admin_state(tmp_path)
    mech = ScramMechanism.SCRAM_SHA_512
    A = m.AlterUserScramCredentialsRequest
    upsert = A(
        upsertions=[
            A.ScramCredentialUpsertion(
                name="bob",
                mechanism=int(mech),
                iterations=4096,
                salt=b"salt",
                salted_password=salted_password(mech, b"pw", b"salt", 4096),
            )
        ]
    )
    describe = m.DescribeUserScramCredentialsRequest(
        users=[m.DescribeUserScramCredentialsRequest.UserName(name="bob")]
    )
    before = len(channel(state).requests)
    r = run(call(state, upsert, 0, ALICE))
    assert [(x.user, x.error_code, x.error_message) for x in r.results] == [
        ("bob", CLUSTER_DENIED, "Cluster authorization failed.")
    ]
    assert asked(state)[before:] == []
    r = run(call(state, describe, 0, ALICE))
    assert (r.error_code, [x.error_code for x in r.results]) == (CLUSTER_DENIED, [CLUSTER_DENIED])
    r = run(call(state, upsert, 0, ADMIN))
    assert [(x.user, x.error_code) for x in r.results] == [("bob", NONE)]
    grant(state, acl(Op.DESCRIBE, R.CLUSTER, CLUSTER_NAME))
    r = run(call(state, describe, 0, ALICE))
    assert (r.error_code, r.results[0].user, r.results[0].error_code) == (NONE, "bob", NONE)
    assert run(call(state, upsert, 0, ALICE)).results[0].error_code == CLUSTER_DENIED  # DESCRIBE is not ALTER
