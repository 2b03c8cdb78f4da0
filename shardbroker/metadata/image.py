"""The metadata image: what every worker knows of the whole broker, as one immutable value.

Kafka brokers answer Metadata, route requests and check leadership against a ``MetadataImage``
built from the controller's metadata log; so do ours. The controller (in the supervisor) owns
the authoritative copy, and pushes a whole new image to every worker over its control ring when
anything changes. A whole image rather than deltas: changes are rare (admin operations,
partition moves), an image of 10,000 partitions encodes in a few milliseconds, and a worker that
restarts needs the whole thing anyway; one code path serves both.

``version`` is the offset of the last metadata-log record the image includes: a worker acks the
version it applied, and the controller answers an admin request once every live worker has acked
a version at least as new as the change.

A partition's leader is the worker (= Kafka node id) that owns it; ``leader_epoch`` grows each
time the partition changes owner, so clients and fetchers can fence stale leaders exactly as with
Kafka (OffsetForLeaderEpoch, the partition leader epoch stamped into appended batches).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from shardbroker.security.acl import AclBinding
from shardbroker.security.scram_credential import ScramCredential, ScramMechanism


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    """One worker on one listener as clients see it: Kafka node id, advertised host, port (a
    worker has one per listener; clients are answered with their own listener's)."""

    node_id: int
    host: str
    port: int
    listener: str = "PLAINTEXT"


@dataclass(frozen=True, slots=True)
class PartitionImage:
    partition: int
    leader: int
    leader_epoch: int = 0


@dataclass(frozen=True, slots=True)
class TopicImage:
    name: str
    topic_id: uuid.UUID
    partitions: tuple[PartitionImage, ...]
    #: Topic-level config overrides only (Kafka's names); broker defaults fill in the rest.
    configs: dict[str, str] = field(default_factory=dict)
    is_internal: bool = False

    def partition(self, index: int) -> PartitionImage | None:
        """The partition with this index, or None: partitions are dense, 0..n-1."""
        if 0 <= index < len(self.partitions):
            return self.partitions[index]
        return None


@dataclass(frozen=True, slots=True)
class MetadataImage:
    version: int
    cluster_id: str
    controller_id: int
    brokers: tuple[BrokerEndpoint, ...]
    topics: dict[str, TopicImage]
    #: SCRAM users: name -> mechanism -> the stored credential (never a password).
    scram_credentials: dict[str, dict[ScramMechanism, ScramCredential]] = field(default_factory=dict)
    #: Per-broker dynamic configs set by AlterConfigs (ssl.* key stores), by Kafka name; every
    #: worker applies them over its static config.
    broker_configs: dict[str, str] = field(default_factory=dict)
    #: The ACL bindings in force, in creation order (CreateAcls; enforced when an authorizer is set).
    acls: tuple[AclBinding, ...] = ()
    #: Client metrics resources (KIP-714 subscriptions): name -> configs (metadata/client_metrics.py).
    client_metrics: dict[str, dict[str, str]] = field(default_factory=dict)
    #: Client quotas (AlterClientQuotas): ((type, name or None), ..) sorted by type -> key -> value.
    client_quotas: dict[tuple[tuple[str, str | None], ...], dict[str, float]] = field(default_factory=dict)

    def scram_credential(self, user: str, mechanism: ScramMechanism) -> ScramCredential | None:
        return self.scram_credentials.get(user, {}).get(mechanism)

    @property
    def topics_by_id(self) -> dict[uuid.UUID, TopicImage]:
        return {topic.topic_id: topic for topic in self.topics.values()}

    def broker(self, node_id: int, listener: str = "PLAINTEXT") -> BrokerEndpoint | None:
        """Worker ``node_id``'s endpoint on ``listener`` (None: no such worker)."""
        for endpoint in self.brokers:
            if endpoint.node_id == node_id and endpoint.listener == listener:
                return endpoint
        return None

    def brokers_on(self, listener: str) -> list[BrokerEndpoint]:
        """Every worker's endpoint on ``listener``, by node id (what Metadata answers on it)."""
        return [b for b in self.brokers if b.listener == listener]

    def partitions_led_by(self, node_id: int) -> list[tuple[TopicImage, PartitionImage]]:
        """Every partition this worker owns: what it must open, serve and write."""
        return [
            (topic, partition)
            for topic in self.topics.values()
            for partition in topic.partitions
            if partition.leader == node_id
        ]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: what ``ipc.control.MetadataPush`` carries."""
        return _image_to_dict(self)

    @staticmethod
    def from_dict(data: dict[str, Any]) -> MetadataImage:
        return _image_from_dict(data)


def _image_to_dict(image: MetadataImage) -> dict[str, Any]:
    return {
        "version": image.version,
        "cluster_id": image.cluster_id,
        "controller_id": image.controller_id,
        "brokers": [[b.node_id, b.host, b.port, b.listener] for b in image.brokers],
        "topics": [
            {
                "name": t.name,
                "id": str(t.topic_id),
                "partitions": [[p.partition, p.leader, p.leader_epoch] for p in t.partitions],
                "configs": t.configs,
                "internal": t.is_internal,
            }
            for t in image.topics.values()
        ],
        "scram": {
            user: {
                int(mech): [c.salt.hex(), c.stored_key.hex(), c.server_key.hex(), c.iterations]
                for mech, c in creds.items()
            }
            for user, creds in image.scram_credentials.items()
        },
        "broker_configs": image.broker_configs,
        "acls": [b.to_record() for b in image.acls],
        "client_metrics": image.client_metrics,
        "client_quotas": [
            [[list(e) for e in entity], values] for entity, values in image.client_quotas.items()
        ],
    }


def _image_from_dict(data: dict[str, Any]) -> MetadataImage:
    topics = {
        t["name"]: TopicImage(
            name=t["name"],
            topic_id=uuid.UUID(t["id"]),
            partitions=tuple(PartitionImage(p, leader, epoch) for p, leader, epoch in t["partitions"]),
            configs=dict(t["configs"]),
            is_internal=bool(t["internal"]),
        )
        for t in data["topics"]
    }
    return MetadataImage(
        version=int(data["version"]),
        cluster_id=str(data["cluster_id"]),
        controller_id=int(data["controller_id"]),
        brokers=tuple(BrokerEndpoint(int(n), str(h), int(p), str(ln)) for n, h, p, ln in data["brokers"]),
        topics=topics,
        scram_credentials={
            user: {
                ScramMechanism(int(mech)): ScramCredential(
                    ScramMechanism(int(mech)),
                    bytes.fromhex(salt),
                    bytes.fromhex(stored),
                    bytes.fromhex(server),
                    int(iterations),
                )
                for mech, (salt, stored, server, iterations) in creds.items()
            }
            for user, creds in data.get("scram", {}).items()
        },
        broker_configs={str(k): str(v) for k, v in data.get("broker_configs", {}).items()},
        acls=tuple(AclBinding.from_record(r) for r in data.get("acls", ())),
        client_metrics={
            str(name): {str(k): str(v) for k, v in configs.items()}
            for name, configs in data.get("client_metrics", {}).items()
        },
        client_quotas={
            tuple((str(t), None if n is None else str(n)) for t, n in entity): {
                str(k): float(v) for k, v in values.items()
            }
            for entity, values in data.get("client_quotas", ())
        },
    )
