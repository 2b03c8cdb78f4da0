"""The local-client door: the peer-credential decision and principal (security/local_peer.py),
peer credentials from a real Unix socket (ipc/local_access.py), and the worker's ACL decisions
for local clients with a StandardAuthorizer built from bindings (broker/local_clients.py)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from shardbroker.broker.local_clients import LocalClientService, _Refused, _WatchSession
from shardbroker.ipc.local_access import peer_credentials
from shardbroker.ipc.local_attach import LocalClientError, WorkerSession
from shardbroker.ipc.ring import Ring
from shardbroker.ipc.shm import reclaim_stale
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.authorizer import StandardAuthorizer
from shardbroker.security.local_peer import (
    LOCAL_HOST,
    LocalDoorPolicy,
    PeerCredentials,
    local_principal,
    peer_refusal,
)
from shardbroker.security.principal import KafkaPrincipal

ONLY_ROOT = LocalDoorPolicy(0, "root")
WITH_GROUP = LocalDoorPolicy(0, "root", 990, "kafka-local")
BOB = PeerCredentials(pid=42, uid=1001, gid=1001, groups=frozenset({1001, 27}), user="bob")


def test_the_brokers_own_user_may_attach() -> None:
    me = PeerCredentials(1, 0, 0, frozenset(), "root")
    assert peer_refusal(me, ONLY_ROOT) is None
    assert peer_refusal(me, WITH_GROUP) is None


def test_another_user_is_refused_without_a_group_and_told_why() -> None:
    assert peer_refusal(BOB, ONLY_ROOT) == (
        "uid 1001 (bob) is not the broker's user root "
        "(local.clients.allowed.group is empty: only the broker's user may attach)"
    )


def test_another_user_outside_the_group_is_refused_naming_the_group() -> None:
    why = peer_refusal(BOB, WITH_GROUP)
    assert why == "uid 1001 (bob) is not the broker's user root nor in group kafka-local"
    nameless = PeerCredentials(7, 54321, 54321, frozenset(), None)
    why = peer_refusal(nameless, WITH_GROUP)
    assert why == "uid 54321 is not the broker's user root nor in group kafka-local"


def test_a_member_by_primary_or_supplementary_group_may_attach() -> None:
    primary = PeerCredentials(42, 1001, 990, frozenset({990}), "bob")
    supplementary = PeerCredentials(42, 1001, 1001, frozenset({1001, 990}), "bob")
    assert peer_refusal(primary, WITH_GROUP) is None
    assert peer_refusal(supplementary, WITH_GROUP) is None
    assert peer_refusal(supplementary, ONLY_ROOT) is not None  # the group counts only when configured


def test_the_principal_is_the_os_user_name_or_the_uid() -> None:
    assert local_principal(1001, "bob") == KafkaPrincipal.user("bob")
    assert str(local_principal(54321, None)) == "User:54321"


def test_peer_credentials_of_a_real_unix_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with a, b:
        peer = peer_credentials(a)
    assert (peer.pid, peer.uid, peer.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert set(os.getgroups()) <= peer.groups
    assert peer.user is not None


# ---------------------------------------------------------------- the worker's ACL decisions


def acl(
    name: str,
    operation: AclOperation,
    permission: AclPermissionType = AclPermissionType.ALLOW,
    principal: str = "User:alice",
    resource_type: ResourceType = ResourceType.TOPIC,
    host: str = "*",
) -> AclBinding:
    return AclBinding(
        ResourcePattern(resource_type, name, PatternType.LITERAL),
        AccessControlEntry(principal, host, operation, permission),
    )


class Audit:
    def __init__(self) -> None:
        self.denials: list[tuple[Any, ...]] = []

    def denied(self, *args: Any) -> None:
        self.denials.append(args)


ALICE = KafkaPrincipal.user("alice")


def service(authorizer: StandardAuthorizer | None) -> tuple[LocalClientService, Any]:
    state = SimpleNamespace(replicas=None, node_id=0, authorizer=authorizer, audit=Audit())
    return LocalClientService(cast(Any, state)), state


def test_no_authorizer_allows_everything() -> None:
    svc, state = service(None)
    assert svc._allowed(ALICE, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")
    assert state.audit.denials == []


def test_write_needs_a_write_acl_and_a_denial_is_audited() -> None:
    svc, state = service(StandardAuthorizer([acl("t", AclOperation.WRITE)]))
    assert svc._allowed(ALICE, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")
    assert not svc._allowed(ALICE, AclOperation.WRITE, ResourceType.TOPIC, "u", "LocalProduce")
    bob = KafkaPrincipal.user("bob")
    assert not svc._allowed(bob, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")
    assert state.audit.denials == [
        ("User:alice", LOCAL_HOST, AclOperation.WRITE, ResourceType.TOPIC, "u", "LocalProduce"),
        ("User:bob", LOCAL_HOST, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce"),
    ]


def test_the_host_of_a_local_client_is_localhost() -> None:
    svc, _ = service(StandardAuthorizer([acl("t", AclOperation.WRITE, host="127.0.0.1")]))
    assert not svc._allowed(ALICE, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")
    svc, _ = service(StandardAuthorizer([acl("t", AclOperation.WRITE, host="localhost")]))
    assert svc._allowed(ALICE, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")


def test_a_sibling_worker_is_not_checked_again() -> None:
    svc, state = service(StandardAuthorizer())
    assert svc._allowed(None, AclOperation.WRITE, ResourceType.TOPIC, "t", "LocalProduce")
    assert state.audit.denials == []


def test_a_watch_needs_read_on_the_topic_and_on_its_group() -> None:
    svc, _ = service(
        StandardAuthorizer(
            [
                acl("t", AclOperation.READ),
                acl("g", AclOperation.READ, resource_type=ResourceType.GROUP),
                acl("w", AclOperation.WRITE),
            ]
        )
    )
    svc._authorize_watch(ALICE, "t", None)
    svc._authorize_watch(ALICE, "t", "g")
    with pytest.raises(_Refused) as topic:
        svc._authorize_watch(ALICE, "w", None)  # WRITE does not imply READ
    assert topic.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert str(topic.value) == "User:alice may not READ topic 'w'"
    with pytest.raises(_Refused) as group:
        svc._authorize_watch(ALICE, "t", "other")
    assert group.value.error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED


@pytest.fixture
def instance() -> Iterator[str]:
    name = f"sbtestdoor{os.getpid()}"
    yield name
    reclaim_stale(name)


def test_a_watch_an_acl_change_denies_is_withdrawn_with_the_reason(instance: str) -> None:
    allowed = StandardAuthorizer([acl("t", AclOperation.READ)])
    svc, state = service(allowed)
    svc._load_rows = lambda: None  # type: ignore[method-assign]
    svc.rows = {("t", 0): 0}
    worker_end, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ring = Ring.create(instance, "lc1-0-wake", 4096)
    watch = _WatchSession(worker_end, ring, ("t", 0), None)
    watch.principal = ALICE
    svc.watchers[("t", 0)] = [watch]
    svc.sessions.add(watch)
    client = WorkerSession(client_end, [], 0)
    image = cast(Any, None)

    asyncio.run(svc._on_image(image, image))
    assert not watch.closed and not client.worker_gone()

    state.authorizer = StandardAuthorizer()  # the ACL was deleted
    asyncio.run(svc._on_image(image, image))
    assert watch.closed and ("t", 0) not in svc.watchers
    with pytest.raises(LocalClientError) as refused:
        client.worker_gone()
    assert refused.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    why = "TOPIC_AUTHORIZATION_FAILED: worker 0 refused: User:alice may not READ topic 't'"
    assert str(refused.value) == why
    assert state.audit.denials == [
        ("User:alice", LOCAL_HOST, AclOperation.READ, ResourceType.TOPIC, "t", "LocalConsume")
    ]
    client_end.close()
    ring.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run reclaim_stale as another uid")
def test_reclaim_stale_leaves_another_users_objects_alone(instance: str) -> None:
    """A non-root broker meets a member's 0600 rings in /dev/shm: it cannot read or unlink them,
    and must not fail its start over them."""
    ring = Ring.create(instance, "lc1-0-wake", 4096)  # root's, 0600
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setgid(54321)
                os.setuid(54321)
                report = reclaim_stale(instance)
                os.write(w, repr((report.reclaimed, len(report.live))).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        with os.fdopen(r) as f:
            assert f.read() == "([], 1)"
    finally:
        ring.close()
