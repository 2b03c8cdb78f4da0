"""The local-client door against a real ``shardbroker serve``: the same ACLs as on TCP for
LocalProducer/LocalConsumer (principal ``User:<OS user>``, host ``localhost``), and the
peer-credential check at the Unix socket handshake, with clients run as other uids in forked
children (the tests run as root; those that need another uid skip otherwise)."""

from __future__ import annotations

import grp
import json
import os
import pwd
import select
import socket
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.connection import KafkaApiError
from shardbroker.client.local_consumer import LocalConsumer
from shardbroker.client.local_producer import LocalClientError, LocalProducer
from shardbroker.ipc.local_directory import DIRECTORY_NAME, worker_socket_address
from shardbroker.ipc.local_protocol import MAX_MESSAGE, decode_message, encode_message
from shardbroker.ipc.shm import SHM_DIR, instance_name, shm_name
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import (
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from tests.integration.broker_process import BrokerProcess, wait_for
from tests.integration.conftest import BrokerFactory
from tests.integration.kafka_clients import create_topic
from tests.integration.test_forwarding import batch, not_owner, produce

STANDARD_AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
ME = pwd.getpwuid(os.geteuid()).pw_name
#: A uid with no passwd entry (its principal is User:54321), and nobody.
NAMELESS_UID = 54321
NOBODY = pwd.getpwnam("nobody")
#: An existing group for local.clients.allowed.group (Debian's ``users``, gid 100).
GROUP = "users"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="running clients as other uids needs root")


def authorizing(**extra: str | bool) -> dict[str, str | bool]:
    """An authorizer whose TCP clients (User:ANONYMOUS, to create topics) are super users."""
    return {"authorizer.class.name": STANDARD_AUTHORIZER, "super.users": "User:ANONYMOUS", **extra}


def produce_one(data_dir: Path, topic: str) -> int:
    with LocalProducer(str(data_dir), timeout=20) as producer:
        futures = producer.send_batch(topic, [b"v"], partition=0)
        producer.flush(20)
        return futures[0].result()


def as_user(uid: int, gid: int, groups: list[int], work: Callable[[], Any]) -> Any:
    """``work()``'s JSON-able result, computed in a forked child running as uid/gid/groups
    (an exception comes back as {"error": str, "type": name, "code": error_code})."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(r)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(uid)
            try:
                out: Any = work()
            except Exception as exc:
                code = getattr(exc, "error_code", None)
                out = {"error": str(exc), "type": type(exc).__name__, "code": code}
            os.write(w, json.dumps(out).encode())
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 60)
        assert ready, "the child did not answer within 60 s"
        raw = b""
        while chunk := os.read(r, 65536):
            raw += chunk
    finally:
        os.close(r)
        _, status = os.waitpid(pid, 0)
    assert status == 0 and raw, f"child exited {status}"
    return json.loads(raw)


def hello(instance: str) -> dict[str, Any]:
    """A produce handshake with worker 0 naming rings that do not exist: the answer shows
    whether the peer check let the client in (then the rings are what is refused)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as conn:
        conn.settimeout(10)
        conn.connect(worker_socket_address(instance, 0))
        conn.send(encode_message({"op": "produce", "requests": "lc1-0-req", "acks": "lc1-0-ack"}))
        return decode_message(conn.recv(MAX_MESSAGE))


def test_no_acl_refuses_local_clients_with_topic_authorization_failed(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=1, config=authorizing())
    create_topic(broker.bootstrap, "guarded", 1)
    with pytest.raises(KafkaApiError) as produced:
        produce_one(broker.data_dir, "guarded")
    assert produced.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    with pytest.raises(KafkaApiError) as consumed:
        LocalConsumer(str(broker.data_dir), "guarded", 0)
    assert consumed.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    assert f"User:{ME} may not READ topic 'guarded'" in str(consumed.value)
    with pytest.raises(KafkaApiError) as grouped:
        LocalConsumer(str(broker.data_dir), "guarded", 0, group_id="app")
    assert grouped.value.error_code == ErrorCode.GROUP_AUTHORIZATION_FAILED
    wait_for(
        lambda: (
            f"Principal = User:{ME} is Denied operation = WRITE from host = localhost on resource = "
            "TOPIC:guarded for request = LocalProduce" in broker.output()
        ),
        10,
        "the audit line of the local denial",
    )


@pytest.mark.parametrize(
    "config",
    [
        authorizing(**{"allow.everyone.if.no.acl.found": True}),
        authorizing(**{"super.users": f"User:ANONYMOUS;User:{ME}"}),
    ],
    ids=["allow-everyone-if-no-acl-found", "super-user"],
)
def test_local_clients_are_allowed_by_allow_everyone_or_as_super_user(
    broker_factory: BrokerFactory, config: dict[str, str | bool]
) -> None:
    broker = broker_factory(workers=1, config=config)
    create_topic(broker.bootstrap, "open", 1)
    assert produce_one(broker.data_dir, "open") == 0
    with LocalConsumer(str(broker.data_dir), "open", 0, group_id="app") as consumer:
        assert [bytes(r.value or b"") for r in consumer.records(timeout=5)] == [b"v"]


def no_rings_of(broker: BrokerProcess, uid: int) -> list[str]:
    prefix = f"shardbroker-{instance_name(broker.data_dir.absolute())}-lc"
    return [p.name for p in SHM_DIR.iterdir() if p.name.startswith(prefix) and p.stat().st_uid == uid]


@needs_root
def test_another_uid_is_refused_at_the_handshake(broker_factory: BrokerFactory) -> None:
    broker = broker_factory(workers=1)
    instance = instance_name(broker.data_dir.absolute())
    answer = as_user(NOBODY.pw_uid, NOBODY.pw_gid, [NOBODY.pw_gid], lambda: hello(instance))
    assert answer == {
        "ok": False,
        "error": f"may not attach: uid {NOBODY.pw_uid} (nobody) is not the broker's user {ME} "
        "(local.clients.allowed.group is empty: only the broker's user may attach)",
    }
    wait_for(
        lambda: f"refused: uid {NOBODY.pw_uid} (nobody) is not the broker's user" in broker.output(),
        10,
        "the refusal's log line",
    )
    # The shared directory is 0600: the LocalProducer of another user cannot even read it.
    directory = SHM_DIR / shm_name(instance, DIRECTORY_NAME).lstrip("/")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o600
    refused = as_user(NOBODY.pw_uid, NOBODY.pw_gid, [], lambda: produce_one(broker.data_dir, "t"))
    assert refused["type"] == "LocalClientError" and "may not open the shared directory" in refused["error"]
    assert no_rings_of(broker, NOBODY.pw_uid) == []
    assert hello(instance)["error"].startswith("ring name")  # root passes the peer check


@needs_root
@pytest.mark.skipif(GROUP not in {g.gr_name for g in grp.getgrall()}, reason=f"no group {GROUP} here")
def test_a_member_of_the_allowed_group_attaches_as_its_own_principal(broker_factory: BrokerFactory) -> None:
    config = authorizing(**{"local.clients.allowed.group": GROUP, "super.users": f"User:ANONYMOUS;User:{ME}"})
    broker = broker_factory(workers=1, config=config)
    create_topic(broker.bootstrap, "shared", 1)
    instance = instance_name(broker.data_dir.absolute())
    gid = grp.getgrnam(GROUP).gr_gid
    directory = SHM_DIR / shm_name(instance, DIRECTORY_NAME).lstrip("/")
    st = directory.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o640, gid)

    # A member (supplementary group) attaches; its principal has no ACL: WRITE is refused.
    member = as_user(NAMELESS_UID, NAMELESS_UID, [gid], lambda: produce_one(broker.data_dir, "shared"))
    assert member["type"] == "KafkaApiError" and member["code"] == ErrorCode.TOPIC_AUTHORIZATION_FAILED
    wait_for(
        lambda: (
            f"Principal = User:{NAMELESS_UID} is Denied operation = WRITE from host = localhost"
            in broker.output()
        ),
        10,
        "the member's audit line",
    )
    # Not a member: refused at the handshake, naming the group.
    outsider = as_user(NOBODY.pw_uid, NOBODY.pw_gid, [NOBODY.pw_gid], lambda: hello(instance))
    assert outsider["error"] == (
        f"may not attach: uid {NOBODY.pw_uid} (nobody) is not the broker's user {ME} nor in group {GROUP}"
    )
    # The broker's user (a super user here) still writes.
    assert produce_one(broker.data_dir, "shared") == 0
    wait_for(lambda: no_rings_of(broker, NAMELESS_UID) == [] or None, 10, "the member's rings unlinked")


def test_a_group_that_does_not_exist_stops_the_start(broker_factory: BrokerFactory) -> None:
    config = {"local.clients.allowed.group": "sbtest-no-such-group"}
    broker = broker_factory(workers=1, config=config, start=False)
    done = subprocess.run(broker.command(), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "local.clients.allowed.group = 'sbtest-no-such-group': no such group" in done.stderr


def test_a_local_client_error_without_a_code_stays_a_local_client_error(
    broker_factory: BrokerFactory,
) -> None:
    broker = broker_factory(workers=1, config=authorizing())
    with pytest.raises(LocalClientError, match="UNKNOWN_TOPIC_OR_PARTITION"):
        LocalConsumer(str(broker.data_dir), "missing", 0)


def test_a_forwarding_worker_is_not_checked_as_the_brokers_user(broker_factory: BrokerFactory) -> None:
    """A Produce sent to the worker that does not own the partition is forwarded through the
    owner's local door: the sibling worker passes without an ACL for the broker's OS user (the
    TCP handler checked the client's principal), so the client gets its offset."""
    broker = broker_factory(workers=2, config=authorizing())
    create_topic(broker.bootstrap, "fwd", 1)
    with AdminClient(broker.bootstrap) as admin:
        conn, _ = not_owner(broker, admin, "fwd")
        with conn:
            answer = produce(conn, "fwd", 0, batch(b"a", b"b"))
    assert (answer.error_code, answer.base_offset) == (0, 0)
    with pytest.raises(KafkaApiError) as local:  # while the broker's user itself has no WRITE
        produce_one(broker.data_dir, "fwd")
    assert local.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED


def test_acls_created_and_deleted_while_local_clients_are_attached(broker_factory: BrokerFactory) -> None:
    """CreateAcls lets an attached LocalProducer in from its next batch; DeleteAcls shuts it out
    again and withdraws an attached LocalConsumer with the reason."""
    broker = broker_factory(workers=1, config=authorizing())
    create_topic(broker.bootstrap, "moving", 1)
    principal = f"User:{ME}"
    write, read = (
        AclBinding(
            ResourcePattern(ResourceType.TOPIC, "moving", PatternType.LITERAL),
            AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW),
        )
        for op in (AclOperation.WRITE, AclOperation.READ)
    )
    with AdminClient(broker.bootstrap) as admin, LocalProducer(str(broker.data_dir), timeout=20) as producer:

        def send() -> int:
            (future,) = producer.send_batch("moving", [b"v"], partition=0)
            producer.flush(20)
            return future.result()

        with pytest.raises(KafkaApiError) as refused:
            send()
        assert refused.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
        assert admin.create_acls([write, read]) == {write: None, read: None}
        assert send() == 0  # the same attached producer, allowed from its next batch
        consumer = LocalConsumer(str(broker.data_dir), "moving", 0)
        try:
            assert [bytes(r.value or b"") for r in consumer.records(timeout=5)] == [b"v"]
            removed = admin.delete_acls(
                [AclBindingFilter(principal=principal, resource_type=ResourceType.TOPIC)]
            )
            assert sorted(next(iter(removed.values())), key=str) == sorted([write, read], key=str)
            with pytest.raises(KafkaApiError) as refused:
                send()
            assert refused.value.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED

            def withdrawn() -> KafkaApiError | None:
                try:
                    list(consumer.records(timeout=0.2))
                except KafkaApiError as exc:
                    return exc
                return None

            error = wait_for(withdrawn, 10, "the attached consumer's withdrawal")
            assert error.error_code == ErrorCode.TOPIC_AUTHORIZATION_FAILED
        finally:
            consumer.close()
