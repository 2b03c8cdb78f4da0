"""MirrorMaker 2's checkpoints: each source group's committed offsets, translated to the target.

Record format (MirrorMaker 2's ``Checkpoint``, Kafka's ``protocol.types.Struct`` encoding): key
``{group: STRING, topic: STRING, partition: INT32}`` (the topic as named on the target), value an
int16 version (0) then ``{upstreamOffset: INT64, offset: INT64, metadata: STRING}``. Written to
``<source alias>.checkpoints.internal`` on the target (one partition, compacted), where Kafka's
``RemoteClusterUtils.translateOffsets`` and a real MirrorMaker 2 read them.

:class:`CheckpointTask` is MirrorMaker 2's MirrorCheckpointTask in one thread. Every
``emit.checkpoints.interval.seconds`` it reads the committed offsets (OffsetFetch) of the source
groups that ListGroups found (refreshed every ``refresh.groups.interval.seconds``) and that pass
``groups``/``groups.exclude`` (never ``shardbroker-mirror.*``, the mirror's own positions),
translates those of mirrored topics (:class:`~shardbroker.mirror.offset_syncs.OffsetSyncStore`)
and writes a checkpoint per partition whose translation moved: forwards, or backwards only when
the source group itself went back (MirrorMaker 2's rule, so a later, coarser sync never moves a
checkpoint back). Partitions without a usable sync get none. With
``sync.group.offsets.enabled``, every ``sync.group.offsets.interval.seconds`` the checkpointed
offsets are committed to the same group id on the target when that group has no active members
there (Empty or Dead, either group protocol), and only where they are ahead of the target
group's own committed offset.

Either cluster may be unreachable: each step retries with backoff (0.5 s to 30 s) and logs once
per failure kind until it recovers; checkpoints already emitted are read back at start, so a
restart neither repeats nor moves them back.
"""

from __future__ import annotations

import functools
import logging
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_groups import CONSUMER
from shardbroker.client.connection import AdminClientError, KafkaApiError
from shardbroker.client.producer import RecordMetadata, TcpProducer
from shardbroker.mirror.mirror_config import ClusterSettings, MirrorConfig
from shardbroker.mirror.mirror_metrics import MirrorMetrics
from shardbroker.mirror.offset_syncs import (
    CLIENT_TIMEOUT_S,
    Backoff,
    FailureLog,
    InternalTopic,
    MalformedRecord,
    OffsetSyncStore,
    StructReader,
    encode_string,
    require,
)

__all__ = [
    "CHECKPOINT_VERSION",
    "MAX_GROUPS",
    "POSITIONS_GROUP_PREFIX",
    "Checkpoint",
    "CheckpointTask",
    "latest_checkpoints",
]

log = logging.getLogger(__name__)

CHECKPOINT_VERSION: Final = 0
#: The mirror's own positions group (docs/notes/mirror.md) is never checkpointed.
POSITIONS_GROUP_PREFIX: Final = "shardbroker-mirror."
#: Groups checkpointed at most (sorted by id); more is almost surely a ``groups`` regex too wide,
#: and each one costs an OffsetFetch per interval and a metrics series.
MAX_GROUPS: Final = 10_000
#: Group states in which the target group has no active member (both group protocols).
_IDLE_STATES: Final = frozenset({"Empty", "Dead"})

CheckpointKey = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """``group`` had committed ``upstream_offset`` on the source; ``downstream_offset`` is where it
    resumes on ``topic`` (the target's name) ``partition``."""

    group: str
    topic: str
    partition: int
    upstream_offset: int
    downstream_offset: int
    metadata: str = ""

    @property
    def key_tuple(self) -> CheckpointKey:
        return (self.group, self.topic, self.partition)

    def key(self) -> bytes:
        return encode_string(self.group) + encode_string(self.topic) + struct.pack(">i", self.partition)

    def value(self) -> bytes:
        return struct.pack(
            ">hqq", CHECKPOINT_VERSION, self.upstream_offset, self.downstream_offset
        ) + encode_string(self.metadata)

    @classmethod
    def decode(cls, key: bytes | None, value: bytes | None) -> Checkpoint:
        """MalformedRecord when the bytes are not a version-0 checkpoint."""
        k = StructReader(require(key, "checkpoint", "key"), "checkpoint key")
        group, topic, partition = k.string("group"), k.string("topic"), k.int32("partition")
        v = StructReader(require(value, "checkpoint", "value"), "checkpoint value")
        version = v.int16("version")
        if version != CHECKPOINT_VERSION:
            raise MalformedRecord(f"checkpoint of group '{group}': unknown version {version}")
        upstream, downstream, metadata = v.int64("upstreamOffset"), v.int64("offset"), v.string("metadata")
        if partition < 0 or upstream < 0 or downstream < 0:
            raise MalformedRecord(f"checkpoint of group '{group}' for {topic}-{partition}: negative value")
        return cls(group, topic, partition, upstream, downstream, metadata)


def latest_checkpoints(
    records: Iterable[tuple[bytes | None, bytes | None]],
) -> tuple[dict[CheckpointKey, Checkpoint], list[str]]:
    """The newest checkpoint per (group, topic, partition) of a checkpoints topic's records, and
    what was wrong with the malformed ones (skipped)."""
    out: dict[CheckpointKey, Checkpoint] = {}
    problems: list[str] = []
    for key, value in records:
        try:
            cp = Checkpoint.decode(key, value)
        except MalformedRecord as exc:
            problems.append(str(exc))
            continue
        out[cp.key_tuple] = cp
    return out, problems


def is_more_recent(new: Checkpoint, last: Checkpoint | None) -> bool:
    """MirrorMaker 2's rule: emit the first one, one after the source group went back, or one
    that moves the target offset forward; never one that would move it back otherwise."""
    return (
        last is None
        or new.upstream_offset < last.upstream_offset
        or new.downstream_offset > last.downstream_offset
    )


class CheckpointTask:
    """Checkpoints and target group offsets for one mirror (module docstring); :meth:`run` in a
    thread until ``stop`` is set. :meth:`emit_checkpoints` and :meth:`sync_group_offsets` are
    one round each (raising AdminClientError/OSError/TimeoutError), for tests and ``run``."""

    def __init__(self, config: MirrorConfig, metrics: MirrorMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self.store = OffsetSyncStore(config, metrics)
        self.checkpoints_topic = InternalTopic(
            config.target, config.checkpoints_topic, config.replication_factor
        )
        self.checkpoints: dict[CheckpointKey, Checkpoint] = {}
        self._failures = FailureLog(metrics)
        self._source: AdminClient | None = None
        self._target: AdminClient | None = None
        self._producer: TcpProducer | None = None
        self._groups: list[str] = []
        self._groups_listed_at: float | None = None
        self._started = False

    # -- clients -----------------------------------------------------------------------------

    @staticmethod
    def _admin(cluster: ClusterSettings) -> AdminClient:
        return cluster.admin("shardbroker-mirror-checkpoints", CLIENT_TIMEOUT_S)

    def _source_admin(self) -> AdminClient:
        if self._source is None:
            self._source = self._admin(self.config.source)
        return self._source

    def _target_admin(self) -> AdminClient:
        if self._target is None:
            self._target = self._admin(self.config.target)
        return self._target

    def _drop_clients(self) -> None:
        """After a failure: new connections (and fresh metadata) on the next try."""
        for client in (self._source, self._target):
            if client is not None:
                client.close()
        if self._producer is not None:
            self._producer.cluster.close()
        self._source = self._target = self._producer = None

    def close(self) -> None:
        self._drop_clients()
        self.store.close()
        self.checkpoints_topic.close()

    # -- one round of each duty ----------------------------------------------------------------

    def start(self) -> None:
        """Create the checkpoints topic, read back what was emitted before, read the offset
        syncs to their end. Translation starts only after this."""
        if self._started:
            return
        self.checkpoints_topic.create()
        loaded, problems = latest_checkpoints(self.checkpoints_topic.read(to_end=True))
        if problems:
            self.metrics.error("malformed_checkpoint")
            log.warning(
                "%s: skipped %d malformed record(s), the first: %s",
                self.checkpoints_topic.name,
                len(problems),
                problems[0],
            )
        self.checkpoints = {k: cp for k, cp in loaded.items() if cp.group and self._group_wanted(cp.group)}
        self.store.start()
        self._started = True

    def _group_wanted(self, group: str) -> bool:
        return not group.startswith(POSITIONS_GROUP_PREFIX) and self.config.groups.matches(group)

    def groups(self, now: float) -> list[str]:
        """The source's consumer groups to checkpoint (ListGroups, refreshed per interval)."""
        config = self.config
        due = self._groups_listed_at is None or (
            config.refresh_groups_enabled and now - self._groups_listed_at >= config.refresh_groups_interval_s
        )
        if due:
            listed = self._source_admin().list_groups()
            names = sorted(
                g.group_id
                for g in listed
                if g.protocol_type in (CONSUMER, "") and self._group_wanted(g.group_id)
            )
            if len(names) > MAX_GROUPS:
                log.warning(
                    "%d source groups match groups/groups.exclude; checkpointing the first %d by id "
                    "(narrow the 'groups' regexes)",
                    len(names),
                    MAX_GROUPS,
                )
                names = names[:MAX_GROUPS]
            self._groups, self._groups_listed_at = names, now
        return self._groups

    def checkpoints_for_group(self, group: str, committed: Mapping[tuple[str, int], int]) -> list[Checkpoint]:
        """The checkpoints to emit for ``group`` given its committed source offsets."""
        out = []
        for (topic, partition), upstream in sorted(committed.items()):
            if not self.config.mirrors_topic(topic):
                continue
            downstream = self.store.translate(topic, partition, upstream)
            if downstream is None:
                continue
            cp = Checkpoint(group, self.config.remote_topic(topic), partition, upstream, downstream)
            if is_more_recent(cp, self.checkpoints.get(cp.key_tuple)):
                out.append(cp)
        return out

    def emit_checkpoints(self, now: float) -> int:
        """One round: translate every group's offsets, write the new checkpoints; how many."""
        self.start()
        self.store.update()
        fresh: list[Checkpoint] = []
        for group in self.groups(now):
            try:
                committed = self._source_admin().committed_offsets(group)
            except KafkaApiError as exc:  # the group went away meanwhile, or is not ours to read
                log.debug("offsets of source group %r: %s", group, exc)
                continue
            fresh += self.checkpoints_for_group(group, committed)
        if fresh and self.config.emit_checkpoints_enabled:
            self._write(fresh)
        counts: dict[str, int] = {}
        for cp in fresh:
            self.checkpoints[cp.key_tuple] = cp
            counts[cp.group] = counts.get(cp.group, 0) + 1
        for group, n in counts.items():
            self.metrics.checkpoint_emitted(group, n)
        return len(fresh)

    def _write(self, checkpoints: list[Checkpoint]) -> None:
        errors: list[KafkaApiError] = []

        def delivered(md: RecordMetadata) -> None:
            if md.error is not None:
                errors.append(md.error)

        if self._producer is None:
            self._producer = self.checkpoints_topic.producer()
        for cp in checkpoints:
            self._producer.send(
                self.checkpoints_topic.name, cp.value(), cp.key(), partition=0, on_delivery=delivered
            )
        self._producer.flush()
        if errors:
            raise errors[0]

    def sync_group_offsets(self) -> dict[str, dict[tuple[str, int], int]]:
        """One round: commit checkpointed offsets to idle target groups where ahead; what was
        committed, by group."""
        self.start()
        by_group: dict[str, dict[tuple[str, int], int]] = {}
        for cp in self.checkpoints.values():
            by_group.setdefault(cp.group, {})[(cp.topic, cp.partition)] = cp.downstream_offset
        target = self._target_admin()
        done: dict[str, dict[tuple[str, int], int]] = {}
        for group, translated in sorted(by_group.items()):
            try:
                state = target.describe_group(group).state
                if state not in _IDLE_STATES:
                    continue  # consumers are active there: their positions win
                current = target.committed_offsets(group) if state != "Dead" else {}
                ahead = {tp: o for tp, o in translated.items() if current.get(tp, -1) < o}
                if ahead:
                    target.commit_offsets(group, ahead)
                    done[group] = ahead
            except KafkaApiError as exc:
                # e.g. UNKNOWN_MEMBER_ID: a consumer joined between the describe and the commit
                log.info("not syncing offsets of target group %r: %s", group, exc)
        return done

    # -- the thread ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Emit checkpoints (and sync group offsets) on their intervals until ``stop``."""
        config = self.config
        emit_backoff, sync_backoff = Backoff(), Backoff()
        next_emit = time.monotonic()
        next_sync = next_emit + config.sync_group_offsets_interval_s
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= next_emit:
                    if self._duty("checkpoints", emit_backoff, functools.partial(self.emit_checkpoints, now)):
                        next_emit = now + config.emit_checkpoints_interval_s
                    else:
                        next_emit = emit_backoff.next_try
                if config.sync_group_offsets_enabled and now >= next_sync:
                    if self._duty("group_offsets_sync", sync_backoff, self.sync_group_offsets):
                        next_sync = now + config.sync_group_offsets_interval_s
                    else:
                        next_sync = sync_backoff.next_try
                wake = next_emit if not config.sync_group_offsets_enabled else min(next_emit, next_sync)
                stop.wait(max(0.01, wake - time.monotonic()))
        finally:
            self.close()

    def _duty(self, kind: str, backoff: Backoff, call: Callable[[], object]) -> bool:
        try:
            call()
        except (AdminClientError, OSError, TimeoutError) as exc:
            self._failures.failed(kind, exc)
            backoff.failed(time.monotonic())
            self._drop_clients()
            return False
        self._failures.succeeded(kind)
        backoff.succeeded()
        return True
