"""Target topics follow the source's: created, grown, their configs copied. Opens sockets.

Decisions (:func:`plan`, pure) from the two clusters' topic lists:

- a mirrored source topic (``topics``/``topics.exclude``, not internal, no cycle) missing on the
  target is created with the source's partition count, ``replication.factor`` and the configs
  below; one with fewer target partitions is grown (CreatePartitions); more is left alone;
- a source topic that is gone stops being mirrored; its target topic is kept (deletions are not
  propagated: MirrorMaker 2's behaviour), unless ``sync.topic.deletions.enabled`` (ours) asks
  for it: then the target copy of a topic deleted while the mirror runs is deleted too (one
  deleted while the mirror is stopped is not noticed: the mirror keeps no list of what it
  mirrored);
- a target topic deleted while mirrored is not recreated while the mirror runs (its partitions
  are paused: recreating it would leave a target without the records mirrored before); on the
  next start it is created again and mirrored from the source's start (mirror_positions.py).

Configs copied (``sync.topic.configs.enabled``, every ``sync.topic.configs.interval.seconds``):
those the source topic sets itself (DescribeConfigs source DYNAMIC_TOPIC_CONFIG, as MirrorMaker
2's default filter keeps), among :data:`SYNCED_CONFIGS`: what decides how long records stay, how
big they may be and how they are stored. Not copied: ``min.insync.replicas`` and the
replica/leader settings (they belong to the target's own layout), ``message.downconversion.*``
and the follower throttles.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_topics import ConfigEntry, NewTopic
from shardbroker.mirror.mirror_config import MirrorConfig
from shardbroker.protocol.errors import ErrorCode

__all__ = ["SYNCED_CONFIGS", "TopicPlan", "TopicSync", "configs_to_copy", "plan"]

log = logging.getLogger("shardbroker.mirror")

_UNKNOWN_TOPIC: Final = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION

SYNCED_CONFIGS: Final = frozenset(
    {
        "cleanup.policy",
        "compression.type",
        "delete.retention.ms",
        "max.compaction.lag.ms",
        "max.message.bytes",
        "message.timestamp.type",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "retention.bytes",
        "retention.ms",
        "segment.bytes",
        "segment.index.bytes",
        "segment.jitter.ms",
        "segment.ms",
    }
)


def configs_to_copy(entries: list[ConfigEntry]) -> dict[str, str]:
    """The source topic's own settings worth copying (module docstring)."""
    return {
        e.name: e.value
        for e in entries
        if e.name in SYNCED_CONFIGS and e.source == "DYNAMIC_TOPIC_CONFIG" and e.value is not None
    }


@dataclass
class TopicPlan:
    """What :func:`plan` decided: source topic -> partition count to mirror, target topics to
    create (by target name), target topics to grow (target name -> count)."""

    mirrored: dict[str, int] = field(default_factory=dict)
    create: dict[str, tuple[str, int]] = field(default_factory=dict)
    grow: dict[str, int] = field(default_factory=dict)


def plan(config: MirrorConfig, source: Mapping[str, int], target: Mapping[str, int]) -> TopicPlan:
    """Decisions from the source's and the target's ``{topic: partition count}``."""
    out = TopicPlan()
    for topic, count in sorted(source.items()):
        if not config.mirrors_topic(topic) or count <= 0:
            continue
        out.mirrored[topic] = count
        remote = config.remote_topic(topic)
        have = target.get(remote)
        if have is None:
            out.create[remote] = (topic, count)
        elif have < count:
            out.grow[remote] = count
    return out


class TopicSync:
    """Applies :func:`plan` with its own admin clients of both sides (owned by the caller)."""

    def __init__(self, config: MirrorConfig, source: AdminClient, target: AdminClient) -> None:
        self.config = config
        self.source = source
        self.target = target

    @staticmethod
    def _counts(admin: AdminClient) -> dict[str, int]:
        return {
            name: len(t.partitions) for name, t in admin.metadata(None).topics.items() if t.error_code == 0
        }

    def sync(self, mirroring: Collection[str] = ()) -> TopicPlan:
        """Create and grow target topics; the plan (``mirrored``: what to mirror now). Target
        topics in ``mirroring`` (being mirrored, so deleted on the target) are not created again:
        the caller pauses them (module docstring)."""
        decided = plan(self.config, self._counts(self.source), self._counts(self.target))
        creating = {k: v for k, v in decided.create.items() if k not in mirroring}
        if creating:
            sources = [s for s, _ in creating.values()]
            configs = (
                self.source.describe_topic_configs(sources) if self.config.sync_topic_configs_enabled else {}
            )
            new = [
                NewTopic(remote, count, self.config.replication_factor, configs_to_copy(configs.get(src, [])))
                for remote, (src, count) in creating.items()
            ]
            for name, error in self.target.create_topics(new).items():
                if error is not None and error.name != "TOPIC_ALREADY_EXISTS":
                    raise error
                log.info("created target topic %s (%d partitions)", name, decided.create[name][1])
        if decided.grow:
            for name, error in self.target.create_partitions(decided.grow).items():
                if error is not None:
                    raise error
                log.info("grew target topic %s to %d partitions", name, decided.grow[name])
        return decided

    def deleted_on_source(self, topics: Collection[str]) -> set[str]:
        """Those of ``topics`` the source says do not exist (UNKNOWN_TOPIC_OR_PARTITION): a topic
        missing from a listing for another reason (no leader during a broker restart) is not
        taken for deleted."""
        if not topics:
            return set()
        answer = self.source.metadata(sorted(topics)).topics
        return {t for t in topics if t not in answer or answer[t].error_code == _UNKNOWN_TOPIC}

    def delete_remote(self, topic: str) -> None:
        """Delete the target copy of the source ``topic`` (``sync.topic.deletions.enabled``)."""
        remote = self.config.remote_topic(topic)
        error = self.target.delete_topics([remote])[remote]
        if error is not None and error.name != "UNKNOWN_TOPIC_OR_PARTITION":
            raise error
        log.info("deleted target topic %s: its source topic %s was deleted", remote, topic)

    def sync_configs(self, topics: list[str]) -> None:
        """Copy the configs of the mirrored source ``topics`` to their target topics."""
        if not topics:
            return
        configs = self.source.describe_topic_configs(topics)
        remote = {t: self.config.remote_topic(t) for t in topics}
        current = self.target.describe_topic_configs(list(remote.values()))
        for topic, entries in configs.items():
            wanted = configs_to_copy(entries)
            have = {e.name: e.value for e in current.get(remote[topic], [])}
            changed = {k: v for k, v in wanted.items() if have.get(k) != v}
            if changed:
                self.target.alter_topic_configs(remote[topic], changed)
                log.info("copied configs %s to %s", sorted(changed), remote[topic])
