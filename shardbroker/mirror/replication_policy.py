"""MirrorMaker 2's replication policies: the name a source topic gets on the target, and back.

``replication.policy.class`` picks one, by MirrorMaker 2's class name (the short name works too):

- ``DefaultReplicationPolicy`` (the default): topic ``orders`` of the cluster aliased ``east``
  becomes ``east.orders`` on the target (``replication.policy.separator``, "."). A topic name
  then says where it came from, so a mirror never copies a topic back to the cluster it came
  from (MirrorMaker 2's cycle check: ``is_cycle``), and two mirrors in opposite directions can
  run at once.
- ``IdentityReplicationPolicy``: the same name on both sides (Kafka 3.0's, KIP-382's "legacy
  MirrorMaker" naming). A name no longer says its origin: the cycle check cannot work, so mirrors
  both ways on the same topics would copy records in a circle (the README says so).

The internal topics are MirrorMaker 2's names: ``mm2-offset-syncs.<target alias>.internal``
(offset syncs) and ``<source alias>.checkpoints.internal`` (a group's translated offsets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_POLICY",
    "IDENTITY_POLICY",
    "POLICY_CLASSES",
    "ReplicationPolicy",
]

_PACKAGE: Final = "org.apache.kafka.connect.mirror."
DEFAULT_POLICY: Final = _PACKAGE + "DefaultReplicationPolicy"
IDENTITY_POLICY: Final = _PACKAGE + "IdentityReplicationPolicy"
#: Accepted class names (MirrorMaker 2's, or without the package) -> MirrorMaker 2's name.
POLICY_CLASSES: Final = {
    DEFAULT_POLICY: DEFAULT_POLICY,
    "DefaultReplicationPolicy": DEFAULT_POLICY,
    IDENTITY_POLICY: IDENTITY_POLICY,
    "IdentityReplicationPolicy": IDENTITY_POLICY,
}


@dataclass(frozen=True, slots=True)
class ReplicationPolicy:
    """One policy (``class_name``, MirrorMaker 2's) with its ``separator``."""

    class_name: str = DEFAULT_POLICY
    separator: str = "."

    def __post_init__(self) -> None:
        if self.class_name not in (DEFAULT_POLICY, IDENTITY_POLICY):
            raise ValueError(f"unknown replication policy {self.class_name!r}")
        if not self.separator:
            raise ValueError("replication.policy.separator must not be empty")

    @property
    def identity(self) -> bool:
        return self.class_name == IDENTITY_POLICY

    def format_remote_topic(self, source_alias: str, topic: str) -> str:
        """The target's name for ``topic`` of the cluster ``source_alias``."""
        return topic if self.identity else f"{source_alias}{self.separator}{topic}"

    def topic_source(self, topic: str) -> str | None:
        """The alias of the cluster ``topic`` was mirrored from, if its name says (never with
        the identity policy)."""
        if self.identity:
            return None
        parts = re.split(re.escape(self.separator), topic, maxsplit=1)
        return parts[0] if len(parts) == 2 and parts[0] and parts[1] else None

    def upstream_topic(self, topic: str) -> str | None:
        """The topic's name on the cluster it came from; None if its name does not say."""
        if self.identity:
            return topic
        source = self.topic_source(topic)
        return None if source is None else topic[len(source) + len(self.separator) :]

    def is_cycle(self, topic: str, target_alias: str) -> bool:
        """True when ``topic`` (a source topic) came, at any remove, from the target cluster: a
        mirror to ``target_alias`` must not copy it back."""
        while True:
            source = self.topic_source(topic)
            if source is None:
                return False
            if source == target_alias:
                return True
            upstream = self.upstream_topic(topic)
            if upstream is None or upstream == topic:
                return False
            topic = upstream

    @staticmethod
    def offset_syncs_topic(target_alias: str) -> str:
        return f"mm2-offset-syncs.{target_alias}.internal"

    @staticmethod
    def checkpoints_topic(source_alias: str) -> str:
        return f"{source_alias}.checkpoints.internal"
