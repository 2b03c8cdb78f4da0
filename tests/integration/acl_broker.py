"""A broker with ACL authorization for integration tests: Kafka's StandardAuthorizer, a
SASL_PLAINTEXT listener with PLAIN users and a PLAINTEXT one (``User:ANONYMOUS``).

``User:admin`` is the super user; ``alice``, ``bob`` and ``eve`` start with no ACL (so, with
``allow.everyone.if.no.acl.found = false``, they may do nothing). Tests add the ACLs they need
with ``grant`` (CreateAcls through confluent-kafka's AdminClient as admin) and take them away
with ``revoke``; ``clean_acls`` removes every ACL, so a module-scoped broker can serve many tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from tests.integration.broker_process import BrokerProcess

__all__ = [
    "AUTHORIZER",
    "PASSWORDS",
    "TIMEOUT",
    "AclBroker",
    "acl_broker",
    "admin_client",
    "allow",
    "clean_acls",
    "confluent_config",
    "deny",
    "grant",
    "new_topic",
    "python_config",
    "revoke",
]

AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
PASSWORDS = {"admin": "admin-secret", "alice": "alice-secret", "bob": "bob-secret", "eve": "eve-secret"}
TIMEOUT = 30.0
SASL, PLAINTEXT = "SASL_PLAINTEXT", "PLAINTEXT"


class AclBroker(BrokerProcess):
    """A broker with the authorizer on, its SASL_PLAINTEXT listener first (``bootstrap``)."""

    def __init__(self, root: Path, config: Mapping[str, str | int | bool] | None = None, **kw: Any) -> None:
        logs = root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        settings: dict[str, str | int | bool] = {
            "authorizer.class.name": AUTHORIZER,
            "super.users": "User:admin",
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.plain.users": json.dumps(PASSWORDS),
            "connection.failed.authentication.delay.ms": 0,
            "num.partitions": 2,
            **(config or {}),
        }
        super().__init__(root / "data", logs, config=settings, listeners=(SASL, PLAINTEXT), **kw)

    @property
    def plaintext_bootstrap(self) -> str:
        return self.listener_bootstrap(PLAINTEXT)


def acl_broker(
    tmp_path_factory: pytest.TempPathFactory, name: str, **config: str | int | bool
) -> Iterator[AclBroker]:
    """Body of a module-scoped fixture: start an AclBroker, stop and clean it up afterwards."""
    process = AclBroker(tmp_path_factory.mktemp(name), config, workers=2, name=name)
    try:
        yield process.start()
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
        process.kill()


def confluent_config(broker: AclBroker, user: str | None) -> dict[str, Any]:
    """librdkafka settings for ``user`` over SASL PLAIN, or anonymous over PLAINTEXT (None)."""
    if user is None:
        return {"bootstrap.servers": broker.plaintext_bootstrap}
    return {
        "bootstrap.servers": broker.bootstrap,
        "security.protocol": SASL,
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": PASSWORDS[user],
    }


def python_config(broker: AclBroker, user: str) -> dict[str, Any]:
    """kafka-python's and aiokafka's settings for ``user`` over SASL PLAIN."""
    return {
        "bootstrap_servers": broker.bootstrap,
        "security_protocol": SASL,
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": user,
        "sasl_plain_password": PASSWORDS[user],
    }


def admin_client(broker: AclBroker, user: str | None = "admin") -> AdminClient:
    return AdminClient(confluent_config(broker, user))


def _binding(permission: AclPermissionType) -> Callable[..., AclBinding]:
    def make(
        user: str,
        operation: AclOperation,
        resource_type: ResourceType = ResourceType.TOPIC,
        name: str = "*",
        pattern: ResourcePatternType = ResourcePatternType.LITERAL,
        host: str = "*",
    ) -> AclBinding:
        return AclBinding(resource_type, name, pattern, f"User:{user}", host, operation, permission)

    return make


#: ``allow(user, operation, resource_type=TOPIC, name="*", pattern=LITERAL, host="*")``
allow = _binding(AclPermissionType.ALLOW)
deny = _binding(AclPermissionType.DENY)


def grant(broker: AclBroker, *bindings: AclBinding) -> None:
    """Create ``bindings`` as the super user; every worker enforces them when this returns."""
    admin = admin_client(broker)  # referenced until the futures are done: its handle serves them
    for future in admin.create_acls(list(bindings), request_timeout=TIMEOUT).values():
        future.result(timeout=TIMEOUT)


def _filter_of(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


def revoke(broker: AclBroker, *bindings: AclBinding) -> None:
    admin = admin_client(broker)
    for future in admin.delete_acls([_filter_of(b) for b in bindings], request_timeout=TIMEOUT).values():
        future.result(timeout=TIMEOUT)


def clean_acls(broker: AclBroker) -> None:
    every = AclBindingFilter(
        ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY
    )
    admin = admin_client(broker)
    for future in admin.delete_acls([every], request_timeout=TIMEOUT).values():
        future.result(timeout=TIMEOUT)


def new_topic(broker: AclBroker, prefix: str = "acl", partitions: int = 2) -> str:
    """A new topic, created by the super user."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = admin_client(broker)  # referenced until the future is done: its handle serves it
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    futures[topic].result(timeout=TIMEOUT)
    return topic
