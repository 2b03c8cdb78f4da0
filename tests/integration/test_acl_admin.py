"""CreateAcls / DescribeAcls / DeleteAcls against a whole broker with the authorizer on, through
confluent-kafka's AdminClient: Kafka's answers, persistence across a restart, and who may call them.

Opens loopback sockets and runs a broker (tests/integration/acl_broker.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.acl_broker import (
    TIMEOUT,
    AclBroker,
    acl_broker,
    admin_client,
    allow,
    clean_acls,
    deny,
    grant,
    python_config,
)
from tests.integration.broker_process import BrokerProcess

with warnings.catch_warnings():  # kafka-python 3.0 uses importlib.resources APIs 3.11 deprecates
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka.errors
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        KafkaAdminClient,
        ResourcePatternFilter,
    )
    from kafka.admin import ACLResourcePatternType as PythonPatternType
    from kafka.admin import ResourceType as PythonResourceType

EVERY = AclBindingFilter(
    ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AclBroker]:
    yield from acl_broker(tmp_path_factory, "acl-admin")


@pytest.fixture(autouse=True)
def _clean(broker: AclBroker) -> Iterator[None]:
    yield
    clean_acls(broker)


def _python_describe(**config: Any) -> None:
    """DescribeAcls of every binding through kafka-python, which raises the top-level error
    (librdkafka 2.x ignores DescribeAcls' top-level error and returns an empty list)."""
    admin = KafkaAdminClient(**config)
    try:
        every = ResourcePatternFilter(PythonResourceType.ANY, None, PythonPatternType.ANY)
        admin.describe_acls(ACLFilter(None, None, ACLOperation.ANY, ACLPermissionType.ANY, every))
    finally:
        admin.close()


def _described(broker: AclBroker, user: str | None = "admin") -> set[str]:
    admin = admin_client(broker, user)
    return {str(b) for b in admin.describe_acls(EVERY, request_timeout=TIMEOUT).result()}


@pytest.mark.kafka_api("CreateAcls", "DescribeAcls", "DeleteAcls", client="confluent-kafka")
def test_create_describe_delete(broker: AclBroker) -> None:
    read = allow("alice", AclOperation.READ, name="orders")
    prefix_deny = deny("bob", AclOperation.ALL, ResourceType.GROUP, "team-", ResourcePatternType.PREFIXED)
    grant(broker, read, prefix_deny)
    grant(broker, read)  # again: a success that adds nothing
    assert _described(broker) == {str(read), str(prefix_deny)}

    admin = admin_client(broker)
    only_groups = AclBindingFilter(
        ResourceType.GROUP, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    assert [str(b) for b in admin.describe_acls(only_groups).result()] == [str(prefix_deny)]
    match = AclBindingFilter(
        ResourceType.GROUP,
        "team-x",
        ResourcePatternType.MATCH,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    assert [str(b) for b in admin.describe_acls(match).result()] == [str(prefix_deny)]

    (deleted,) = admin.delete_acls([only_groups]).values()
    assert [str(b) for b in deleted.result()] == [str(prefix_deny)]
    assert _described(broker) == {str(read)}


def test_invalid_creation_is_refused_alone(broker: AclBroker) -> None:
    good = allow("alice", AclOperation.WRITE, name="t")
    bad_cluster = allow("alice", AclOperation.ALTER, ResourceType.BROKER, "not-the-cluster")
    admin = admin_client(broker)
    futures = admin.create_acls([good, bad_cluster])
    futures[good].result(timeout=TIMEOUT)
    with pytest.raises(KafkaException) as refused:
        futures[bad_cluster].result(timeout=TIMEOUT)
    assert refused.value.args[0].code() == KafkaError.INVALID_REQUEST
    assert "kafka-cluster" in refused.value.args[0].str()
    assert _described(broker) == {str(good)}


@pytest.mark.parametrize("user", ["alice", None])
def test_acl_apis_need_cluster_permissions(broker: AclBroker, user: str | None) -> None:
    python = python_config(broker, user) if user else {"bootstrap_servers": broker.plaintext_bootstrap}
    with pytest.raises(kafka.errors.ClusterAuthorizationFailedError):
        _python_describe(**python)
    admin = admin_client(broker, user)
    (future,) = admin.create_acls([allow("alice", AclOperation.ALL)], request_timeout=TIMEOUT).values()
    with pytest.raises(KafkaException) as refused:
        future.result(timeout=TIMEOUT)
    assert refused.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    assert _described(broker) == set()

    grant(broker, allow("alice", AclOperation.DESCRIBE, ResourceType.BROKER, "kafka-cluster"))
    if user == "alice":
        _python_describe(**python)
        assert len(_described(broker, "alice")) == 1


def test_acls_survive_a_restart(tmp_path: Path) -> None:
    process = AclBroker(tmp_path, workers=2, name="acl-restart")
    binding = allow("alice", AclOperation.READ, ResourceType.GROUP, "g")
    try:
        process.start()
        grant(process, binding)
        process.stop()
        process.start()
        assert _described(process) == {str(binding)}
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
        process.kill()


def test_without_authorizer_acl_apis_answer_security_disabled(tmp_path: Path) -> None:
    process = BrokerProcess(tmp_path / "data", tmp_path, workers=1, name="no-authorizer")
    try:
        process.start()
        from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

        with pytest.raises(kafka.errors.SecurityDisabledError):
            _python_describe(bootstrap_servers=process.bootstrap)
        admin = AdminClient({"bootstrap.servers": process.bootstrap})
        (future,) = admin.create_acls([allow("alice", AclOperation.ALL)], request_timeout=TIMEOUT).values()
        with pytest.raises(KafkaException) as refused:
            future.result(timeout=TIMEOUT)
        assert refused.value.args[0].code() == KafkaError.SECURITY_DISABLED
    finally:
        process.stop()
        process.kill()
