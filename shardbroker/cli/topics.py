"""``shardbroker topics create|list|describe|delete|alter``: topics and their configs, like Kafka's
``kafka-topics`` and ``kafka-configs`` tools. Opens sockets (through :mod:`shardbroker.client.admin`),
so it works against any Kafka cluster too.

Flags are Kafka's: ``--topic``, ``--partitions``, ``--replication-factor`` (only 1: shardbroker is
one host and keeps one copy of each partition, so anything else is refused as bad usage rather
than silently ignored), ``--config NAME=VALUE`` (repeatable), ``--delete-config NAME``,
``--if-not-exists``, ``--if-exists``. ``describe`` prints Kafka's layout: a topic line (id,
partition count, replication factor, the configs that are not defaults) and one line per
partition with its leader, which is the node id of the shardbroker worker that owns it;
``--all-configs`` adds every config with its value and source (DYNAMIC_TOPIC_CONFIG for the
topic's own settings, STATIC_BROKER_CONFIG for a broker-wide default from the config file,
DEFAULT_CONFIG). ``alter`` grows partitions (CreatePartitions) and sets or removes configs
through IncrementalAlterConfigs, so the topic's other settings stay as they are.

``describe --data-dir DIR`` adds, per partition of a compacted topic (``cleanup.policy`` has
``compact``), the log cleaner's state read from ``DIR/<topic>-<partition>`` on this host: log
start and end offsets, first dirty offset (from the cleaner checkpoint), first uncleanable offset,
dirty ratio, whether a clean is due, and when the last clean ended. Kafka has no API for it, so
the choice was between the broker's ``/metrics`` and its files. The files win: they give every
number exactly as the cleaner computes it (storage/verify/cleaner_state.py runs the cleaner's
own ``cleanable_offsets`` on them, read-only, never opening a file for writing), work with the
broker stopped, and need no metrics address or credentials; ``/metrics`` has only the dirty
ratio per partition, as of the cleaner's last look. Neither says which partition the cleaner gave
up on (uncleanable: a per-worker count in ``/metrics``, the partition in the broker's log).
Without ``--data-dir`` the output is unchanged.

Exit codes as every client command (:mod:`shardbroker.cli.common`): 0 done, 1 runtime error (a
Kafka error such as TOPIC_ALREADY_EXISTS or UNKNOWN_TOPIC_OR_PARTITION, an unreachable broker),
2 bad usage.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_OK,
    CommandError,
    UsageError,
    admin_client,
    connection_options,
    name_value,
    positive_int,
    print_json,
    run_reporting,
    table,
)

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient
    from shardbroker.client.admin_cluster import TopicInfo
    from shardbroker.client.admin_topics import ConfigEntry
    from shardbroker.storage.verify.cleaner_state import CleanerState

__all__ = ["register", "replication_factor"]


# -- argument types ------------------------------------------------------------------------------


def replication_factor(text: str) -> int:
    """Only 1: one host keeps one copy of each partition."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value != 1:
        raise argparse.ArgumentTypeError(
            "shardbroker runs on one host and keeps one copy of each partition: "
            f"only 1 is accepted, got {value}"
        )
    return value


def _configs(pairs: list[tuple[str, str]] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in pairs or []:
        if name in out and out[name] != value:
            raise UsageError(f"--config {name} given twice with different values")
        out[name] = value
    return out


# -- actions -------------------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    from shardbroker.client.admin_topics import NewTopic
    from shardbroker.protocol.errors import ErrorCode

    configs = _configs(args.config)
    with admin_client(args) as admin:
        spec = NewTopic(args.topic, args.partitions or -1, args.replication_factor or -1, configs)
        error = admin.create_topics([spec])[args.topic]
    if error is not None:
        if error.error_code == ErrorCode.TOPIC_ALREADY_EXISTS and args.if_not_exists:
            return EXIT_OK
        raise error
    print(f"Created topic {args.topic}.")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        topics = admin.metadata().topics
    for name, info in sorted(topics.items()):
        if not (args.exclude_internal and info.internal):
            print(name)
    return EXIT_OK


def _described(admin: AdminClient, args: argparse.Namespace) -> list[tuple[TopicInfo, list[ConfigEntry]]]:
    """The topics to describe with their configs: those named (missing ones are an error unless
    ``--if-exists``), else every topic."""
    from shardbroker.client.connection import KafkaApiError
    from shardbroker.protocol.errors import ErrorCode

    md = admin.metadata(args.topic or None)
    infos = []
    for name, info in sorted(md.topics.items()):
        if info.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            if args.if_exists:
                continue
            raise CommandError(f"UNKNOWN_TOPIC_OR_PARTITION: topic '{name}' does not exist")
        if info.error_code != ErrorCode.NONE:
            raise KafkaApiError(info.error_code, f"topic '{name}'")
        if not (args.exclude_internal and info.internal):
            infos.append(info)
    configs = admin.describe_topic_configs([i.name for i in infos]) if infos else {}
    return [(info, configs[info.name]) for info in infos]


def _cleaner_states(
    data_dir: Path, described: list[tuple[TopicInfo, list[ConfigEntry]]]
) -> dict[tuple[str, int], CleanerState | str]:
    """The cleaner state of every partition of the compacted topics, from ``data_dir``."""
    from shardbroker.config.config_def import ConfigError
    from shardbroker.config.log_config import (
        CLEANUP_POLICY,
        MAX_COMPACTION_LAG_MS,
        MIN_CLEANABLE_DIRTY_RATIO,
        MIN_COMPACTION_LAG_MS,
        LogConfig,
    )
    from shardbroker.storage.file_names import partition_dir_name
    from shardbroker.storage.verify.cleaner_state import read_cleaner_state

    wanted = {
        k.name
        for k in (CLEANUP_POLICY, MIN_CLEANABLE_DIRTY_RATIO, MIN_COMPACTION_LAG_MS, MAX_COMPACTION_LAG_MS)
    }
    now_ms = int(time.time() * 1000)
    out: dict[tuple[str, int], CleanerState | str] = {}
    for info, configs in described:
        try:
            config = LogConfig().overrides(
                {c.name: c.value for c in configs if c.name in wanted and c.value is not None}
            )
        except ConfigError as exc:
            raise CommandError(f"topic '{info.name}': {exc}") from None
        if not config.compact:
            continue
        for p in info.partitions:
            directory = data_dir / partition_dir_name(info.name, p)
            try:
                state = read_cleaner_state(directory, config, now_ms)
            except FileNotFoundError:
                out[(info.name, p)] = f"no directory {directory}"
                continue
            except OSError as exc:
                out[(info.name, p)] = f"cannot read {directory}: {exc.strerror or exc}"
                continue
            out[(info.name, p)] = state if state is not None else f"no segment in {directory}"
    return out


def _cleaner_fields(state: CleanerState | str) -> str:
    """Tab-separated fields appended to a partition line (Kafka's tools add fields that way)."""
    if isinstance(state, str):
        return f"\tCleaner: {state}"
    o = state.offsets
    last = "never"
    if state.last_clean_ms is not None:
        last = datetime.fromtimestamp(state.last_clean_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"\tLogStartOffset: {state.log_start_offset}\tLogEndOffset: {state.log_end_offset}"
        f"\tFirstDirtyOffset: {o.first_dirty}\tFirstUncleanableOffset: {o.first_uncleanable}"
        f"\tDirtyRatio: {o.dirty_ratio:.3f}\tCleanDue: {'true' if state.due else 'false'}\tLastClean: {last}"
    )


def _topic_json(
    info: TopicInfo, configs: list[ConfigEntry], cleaner: dict[tuple[str, int], CleanerState | str] | None
) -> dict[str, Any]:
    return {
        "topic": info.name,
        "topic_id": str(info.topic_id) if info.topic_id is not None else None,
        "internal": info.internal,
        "partition_count": len(info.partitions),
        "replication_factor": _replication(info),
        "partitions": [
            {
                "partition": p,
                "leader": leader,
                "replicas": info.replicas.get(p, []),
                "isr": info.isr.get(p, []),
                **({} if cleaner is None else {"cleaner": _cleaner_json(cleaner.get((info.name, p)))}),
            }
            for p, leader in sorted(info.partitions.items())
        ],
        "configs": [
            {
                "name": c.name,
                "value": c.value,
                "source": c.source,
                "read_only": c.read_only,
                "sensitive": c.sensitive,
            }
            for c in configs
        ],
    }


def _cleaner_json(state: CleanerState | str | None) -> dict[str, Any] | None:
    """A partition's ``cleaner`` object: its state, ``{"error": ...}``, or null (not compacted)."""
    if isinstance(state, str):
        return {"error": state}
    return None if state is None else state.to_dict()


def _replication(info: TopicInfo) -> int:
    return max((len(r) for r in info.replicas.values()), default=0)


def _nodes(nodes: list[int]) -> str:
    return ",".join(str(n) for n in nodes)


def _describe(args: argparse.Namespace) -> int:
    data_dir: Path | None = args.data_dir
    if data_dir is not None and not data_dir.is_dir():
        raise UsageError(f"--data-dir {data_dir}: no such directory")
    with admin_client(args) as admin:
        described = _described(admin, args)
    cleaner = None if data_dir is None else _cleaner_states(data_dir, described)
    if args.json:
        print_json([_topic_json(info, configs, cleaner) for info, configs in described])
        return EXIT_OK
    for info, configs in described:
        overrides = ",".join(
            f"{c.name}={'<sensitive>' if c.sensitive else c.value}" for c in configs if not c.is_default
        )
        print(
            f"Topic: {info.name}\tTopicId: {info.topic_id or '-'}\tPartitionCount: {len(info.partitions)}\t"
            f"ReplicationFactor: {_replication(info)}\tConfigs: {overrides}"
        )
        for p, leader in sorted(info.partitions.items()):
            state = cleaner.get((info.name, p)) if cleaner is not None else None
            print(
                f"\tTopic: {info.name}\tPartition: {p}\tLeader: {leader if leader >= 0 else 'none'}\t"
                f"Replicas: {_nodes(info.replicas.get(p, []))}\tIsr: {_nodes(info.isr.get(p, []))}"
                + (_cleaner_fields(state) if state is not None else "")
            )
        if args.all_configs:
            rows = [(c.name, "<sensitive>" if c.sensitive else c.value, c.source) for c in configs]
            for line in table(("CONFIG", "VALUE", "SOURCE"), rows).splitlines():
                print(f"\t{line}")
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from shardbroker.protocol.errors import ErrorCode

    with admin_client(args) as admin:
        results = admin.delete_topics(args.topic)
    failed = []
    for name in args.topic:
        error = results[name]
        if error is None:
            print(f"Deleted topic {name}.")
        elif not (error.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and args.if_exists):
            failed.append(error)
    if len(failed) == 1:
        raise failed[0]
    if failed:
        raise CommandError("; ".join(str(e) for e in failed))
    return EXIT_OK


def _alter(args: argparse.Namespace) -> int:
    from shardbroker.protocol.errors import ErrorCode

    configs = _configs(args.config)
    deletes = list(dict.fromkeys(args.delete_config or []))
    if args.partitions is None and not configs and not deletes:
        raise UsageError("nothing to alter: give --partitions, --config or --delete-config")
    both = sorted(set(configs) & set(deletes))
    if both:
        raise UsageError(f"--config and --delete-config both name {', '.join(both)}")
    with admin_client(args) as admin:
        info = admin.metadata([args.topic]).topics.get(args.topic)
        if info is None or info.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            if args.if_exists:
                return EXIT_OK
            raise CommandError(f"UNKNOWN_TOPIC_OR_PARTITION: topic '{args.topic}' does not exist")
        done = []
        if args.partitions is not None:
            before = len(info.partitions)
            error = admin.create_partitions({args.topic: args.partitions})[args.topic]
            if error is not None:
                raise error
            done.append(f"partitions {before} -> {args.partitions}")
        if configs or deletes:
            admin.alter_topic_configs(args.topic, configs, deletes)
            done += [f"set {k}={v}" for k, v in configs.items()]
            done += [f"deleted {k}" for k in deletes]
    print(f"Altered topic {args.topic}: {'; '.join(done)}.")
    return EXIT_OK


# -- registration --------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    return run_reporting(f"topics {args.topics_command}", lambda: int(args.action(args)))


def register(commands: Any) -> None:
    """Add ``topics`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    common = connection_options(command_config=True)
    topics = commands.add_parser(
        "topics",
        help="create, list, describe, delete and alter topics",
        description=(
            "Create, list, describe, delete and alter topics, like Kafka's kafka-topics and kafka-configs. "
            "Exit codes: 0 done, 1 runtime error (a Kafka error such as TOPIC_ALREADY_EXISTS or "
            "UNKNOWN_TOPIC_OR_PARTITION, an unreachable broker), 2 bad usage."
        ),
    )
    sub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    config_help = "a topic config, e.g. retention.ms=86400000 (repeatable; Kafka's names)"

    p_create = sub.add_parser(
        "create",
        parents=[common],
        help="create a topic",
        description="Create a topic (CreateTopics). Prints 'Created topic TOPIC.'",
    )
    p_create.add_argument("--topic", required=True, metavar="TOPIC", help="the topic's name")
    p_create.add_argument(
        "--partitions",
        type=positive_int,
        metavar="N",
        help="number of partitions [the broker's num.partitions]",
    )
    p_create.add_argument(
        "--replication-factor",
        type=replication_factor,
        metavar="1",
        help="copies of each partition: only 1 (one host)",
    )
    p_create.add_argument(
        "--config", type=name_value, action="append", metavar="NAME=VALUE", help=config_help
    )
    p_create.add_argument(
        "--if-not-exists", action="store_true", help="succeed without a change if the topic exists"
    )
    p_create.set_defaults(run=_run, action=_create)

    p_list = sub.add_parser(
        "list", parents=[common], help="list topic names", description="List every topic."
    )
    p_list.add_argument("--exclude-internal", action="store_true", help="leave out internal topics")
    p_list.set_defaults(run=_run, action=_list)

    p_desc = sub.add_parser(
        "describe",
        parents=[common],
        help="partitions, leaders and configs of topics",
        description=(
            "Each topic: its id, partition count, replication factor and the configs that are not "
            "defaults, then per partition its leader (the node id of the worker that owns it), "
            "replicas and in-sync replicas."
        ),
    )
    p_desc.add_argument(
        "--topic", action="append", metavar="TOPIC", help="a topic to describe (repeatable) [every topic]"
    )
    p_desc.add_argument("--if-exists", action="store_true", help="skip named topics that do not exist")
    p_desc.add_argument("--exclude-internal", action="store_true", help="leave out internal topics")
    p_desc.add_argument(
        "--all-configs", action="store_true", help="also list every config with its value and source"
    )
    p_desc.add_argument("--json", action="store_true", help="print JSON (every config included)")
    p_desc.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help=(
            "the broker's data dir on this host (log.dirs): add the log cleaner's state to each "
            "partition of a compacted topic, read from its files (read-only)"
        ),
    )
    p_desc.set_defaults(run=_run, action=_describe)

    p_delete = sub.add_parser(
        "delete", parents=[common], help="delete topics", description="Delete topics (DeleteTopics)."
    )
    p_delete.add_argument(
        "--topic", action="append", required=True, metavar="TOPIC", help="a topic to delete (repeatable)"
    )
    p_delete.add_argument("--if-exists", action="store_true", help="succeed if a topic does not exist")
    p_delete.set_defaults(run=_run, action=_delete)

    p_alter = sub.add_parser(
        "alter",
        parents=[common],
        help="add partitions, set or remove configs",
        description=(
            "Grow a topic to N partitions (CreatePartitions; existing keys may then map to other "
            "partitions) and set or remove its configs (IncrementalAlterConfigs: other settings stay)."
        ),
    )
    p_alter.add_argument("--topic", required=True, metavar="TOPIC", help="the topic to alter")
    p_alter.add_argument(
        "--partitions", type=positive_int, metavar="N", help="the new, larger partition count"
    )
    p_alter.add_argument("--config", type=name_value, action="append", metavar="NAME=VALUE", help=config_help)
    p_alter.add_argument(
        "--delete-config",
        action="append",
        metavar="NAME",
        help="remove the topic's own setting, back to the default (repeatable)",
    )
    p_alter.add_argument(
        "--if-exists", action="store_true", help="succeed without a change if the topic is missing"
    )
    p_alter.set_defaults(run=_run, action=_alter)
