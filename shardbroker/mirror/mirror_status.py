"""``shardbroker mirror status --config mirror.toml``: how far the mirror is, and where each group
would resume on the target.

Two tables. Partitions: each mirrored source topic-partition with the source's end offset, the
mirrored position (the committed offset of the mirror's positions group
``shardbroker-mirror.<source alias>`` on the target, per target topic-partition: the next source
offset to mirror; docs/notes/mirror.md) and the lag (end - position; from the log start when
nothing was mirrored yet). Groups: every checkpoint in ``<source alias>.checkpoints.internal`` on
the target, with the group's committed offset on the source now, the source offset the checkpoint
translated, and the target offset it resumes at.

Read-only: nothing is created. A cluster that cannot be reached is one line on ``out`` naming it
and the reason, and exit code 1.
"""

from __future__ import annotations

from typing import Final, TextIO

from shardbroker.client.admin import AdminClient
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.connection import AdminClientError, KafkaApiError
from shardbroker.mirror.checkpoints import POSITIONS_GROUP_PREFIX, latest_checkpoints
from shardbroker.mirror.mirror_config import ClusterSettings, MirrorConfig
from shardbroker.mirror.offset_syncs import CLIENT_TIMEOUT_S, InternalTopic
from shardbroker.protocol.errors import ErrorCode

__all__ = ["print_status"]

EXIT_OK: Final = 0
EXIT_UNREACHABLE: Final = 1


def _admin(cluster: ClusterSettings) -> AdminClient:
    return cluster.admin("shardbroker-mirror-status", CLIENT_TIMEOUT_S)


def _table(out: TextIO, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    for row in (header, *rows):
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")


def _partition_rows(config: MirrorConfig, source: AdminClient, target: AdminClient) -> list[tuple[str, ...]]:
    topics = sorted(
        (name, info)
        for name, info in source.metadata(None).topics.items()
        if info.error_code == ErrorCode.NONE and not info.internal and config.mirrors_topic(name)
    )
    tps = [(name, p) for name, info in topics for p in sorted(info.partitions)]
    if not tps:
        return []
    ends = source.list_offsets(dict.fromkeys(tps, LATEST))
    starts = source.list_offsets(dict.fromkeys(tps, EARLIEST))
    positions = target.committed_offsets(POSITIONS_GROUP_PREFIX + config.source.alias)
    rows: list[tuple[str, ...]] = []
    for topic, p in tps:
        remote = config.remote_topic(topic)
        position = positions.get((remote, p))
        lag = ends[(topic, p)] - (starts[(topic, p)] if position is None else position)
        rows.append(
            (
                topic,
                str(p),
                remote,
                str(ends[(topic, p)]),
                "-" if position is None else str(position),
                str(max(0, lag)),
            )
        )
    return rows


def _group_rows(config: MirrorConfig, source: AdminClient, out: TextIO) -> list[tuple[str, ...]]:
    topic = InternalTopic(config.target, config.checkpoints_topic, config.replication_factor)
    try:
        latest, problems = latest_checkpoints(topic.read(to_end=True))
    except KafkaApiError as exc:
        if exc.error_code != ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise
        latest, problems = {}, []  # no checkpoint emitted yet
    finally:
        topic.close()
    if problems:
        out.write(f"warning: {len(problems)} malformed record(s) in {topic.name}, the first: {problems[0]}\n")
    rows: list[tuple[str, ...]] = []
    committed: dict[str, dict[tuple[str, int], int]] = {}
    for (group, remote, p), cp in sorted(latest.items()):
        if group not in committed:
            try:
                committed[group] = source.committed_offsets(group)
            except KafkaApiError:
                committed[group] = {}
        upstream_topic = config.policy.upstream_topic(remote) or remote
        now = committed[group].get((upstream_topic, p))
        rows.append(
            (
                group,
                remote,
                str(p),
                "-" if now is None else str(now),
                str(cp.upstream_offset),
                str(cp.downstream_offset),
            )
        )
    return rows


def print_status(config: MirrorConfig, out: TextIO) -> int:
    """Print both tables to ``out``; 0, or 1 when a cluster cannot be reached or read."""
    side = "source"
    try:
        with _admin(config.source) as source, _admin(config.target) as target:
            source.metadata([])
            side = "target"
            target.metadata([])
            side = "source and target"
            partitions = _partition_rows(config, source, target)
            groups = _group_rows(config, source, out)
    except (AdminClientError, OSError, TimeoutError) as exc:
        cluster = {"source": config.source, "target": config.target}.get(side)
        where = f" ({','.join(cluster.bootstrap_servers)})" if cluster is not None else ""
        out.write(f"error: cannot read the {side} cluster{where}: {exc}\n")
        return EXIT_UNREACHABLE
    out.write(f"Mirror {config.source.alias} -> {config.target.alias}\n\n")
    if partitions:
        _table(out, ("TOPIC", "PARTITION", "TARGET-TOPIC", "SOURCE-END", "MIRRORED", "LAG"), partitions)
    else:
        out.write("No source topic matches topics/topics.exclude.\n")
    out.write("\n")
    if groups:
        header = (
            "GROUP",
            "TARGET-TOPIC",
            "PARTITION",
            "SOURCE-COMMITTED",
            "CHECKPOINT-UPSTREAM",
            "TARGET-OFFSET",
        )
        _table(out, header, groups)
    else:
        out.write(f"No checkpoints yet in {config.checkpoints_topic}.\n")
    return EXIT_OK
