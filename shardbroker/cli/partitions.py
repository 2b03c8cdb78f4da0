"""``shardbroker partitions move|list|reassignments``: where partitions live, and live moves between
workers, the one-host counterpart of Kafka's ``kafka-reassign-partitions`` tool. Opens sockets
(through :mod:`shardbroker.client.admin`).

A partition is led by the worker that owns it (node id = worker index), so placement is the
leader in Metadata, and a move is Kafka's AlterPartitionReassignments with one replica: the
partition's log is handed to the other worker on the same disk, no data is copied, and its
leader epoch grows. The broker answers once every worker serves the new placement, so ``move``
reads Metadata before and after and prints what happened::

    moved orders-3 from worker 0 to worker 1 (leader epoch 4)

``move --cancel`` cancels a move in progress (moves take milliseconds, so there is rarely one);
``list`` prints one line per partition with its worker and leader epoch, ``reassignments`` the
moves in progress (ListPartitionReassignments). ``--format json`` for scripts.

Exit codes as every client command (:mod:`shardbroker.cli.common`): 0 done; 1 a refusal, printed
with the Kafka error's name and the broker's reason (INVALID_REPLICA_ASSIGNMENT for a worker that
does not exist or an internal topic, UNKNOWN_TOPIC_OR_PARTITION, NO_REASSIGNMENT_IN_PROGRESS), or
an unreachable broker; 2 bad usage.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_OK,
    CommandError,
    admin_client,
    connection_options,
    non_negative_int,
    print_json,
    run_reporting,
    table,
)

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient
    from shardbroker.client.admin_cluster import TopicInfo

__all__ = ["register"]


# -- reading placement -----------------------------------------------------------------------------


def _topics(admin: AdminClient, names: list[str] | None) -> list[TopicInfo]:
    """The named topics (each must exist), else every topic; sorted by name."""
    from shardbroker.client.connection import KafkaApiError
    from shardbroker.protocol.errors import ErrorCode

    md = admin.metadata(names or None)
    for name in names or []:
        info = md.topics.get(name)
        if info is None or info.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
            raise CommandError(f"UNKNOWN_TOPIC_OR_PARTITION: topic '{name}' does not exist")
    for info in md.topics.values():
        if info.error_code != ErrorCode.NONE:
            raise KafkaApiError(info.error_code, f"topic '{info.name}'")
    return sorted(md.topics.values(), key=lambda t: t.name)


def _placement(admin: AdminClient, topic: str, partition: int) -> tuple[int, int] | None:
    """(leader, leader epoch) of one partition, None when Metadata does not know it."""
    from shardbroker.protocol.errors import ErrorCode

    info = admin.metadata([topic]).topics.get(topic)
    if info is None or info.error_code != ErrorCode.NONE or partition not in info.partitions:
        return None
    return info.partitions[partition], info.leader_epochs.get(partition, -1)


def _known(value: int) -> int | None:
    """-1 (no leader, or an epoch Metadata did not send) prints as ``-``."""
    return value if value >= 0 else None


# -- actions ---------------------------------------------------------------------------------------


def _move(args: argparse.Namespace) -> int:
    topic, partition = args.topic, args.partition
    name = f"{topic}-{partition}"
    with admin_client(args) as admin:
        before = _placement(admin, topic, partition)
        target = None if args.cancel else args.to_worker
        error = admin.alter_partition_reassignments({(topic, partition): target})[(topic, partition)]
        if error is not None:
            raise error
        if args.cancel:
            print(f"cancelled the move of {name}")
            return EXIT_OK
        after = _placement(admin, topic, partition)
    if after is None or after[0] != target:
        shown = "no leader" if after is None else f"leader {after[0]}"
        raise CommandError(
            f"the broker accepted the move of {name} to worker {target}, but Metadata shows {shown}"
        )
    epoch = after[1] if after[1] >= 0 else "unknown"
    if before is not None and before[0] == target:
        print(f"{name} is already on worker {target} (leader epoch {epoch}); nothing moved")
    else:
        source = before[0] if before is not None and before[0] >= 0 else "none"
        print(f"moved {name} from worker {source} to worker {target} (leader epoch {epoch})")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        topics = _topics(admin, args.topic)
    rows = [
        (t.name, p, _known(leader), _known(t.leader_epochs.get(p, -1)))
        for t in topics
        if not (args.exclude_internal and t.internal)
        for p, leader in sorted(t.partitions.items())
    ]
    if args.format == "json":
        print_json([{"topic": t, "partition": p, "worker": w, "leader_epoch": e} for t, p, w, e in rows])
    else:
        print(table(("TOPIC", "PARTITION", "WORKER", "LEADER_EPOCH"), rows))
    return EXIT_OK


def _reassignments(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        wanted = None
        if args.topic:
            wanted = [(t.name, p) for t in _topics(admin, args.topic) for p in t.partitions]
        ongoing = admin.list_partition_reassignments(wanted)
    rows = [
        (t, p, r.removing_replicas, r.adding_replicas, r.replicas) for (t, p), r in sorted(ongoing.items())
    ]
    if args.format == "json":
        print_json(
            [
                {"topic": t, "partition": p, "from_workers": old, "to_workers": new, "replicas": now}
                for t, p, old, new, now in rows
            ]
        )
    elif rows:
        print(table(("TOPIC", "PARTITION", "FROM", "TO", "REPLICAS"), [_joined(r) for r in rows]))
    else:
        print("No partition moves in progress.")
    return EXIT_OK


def _joined(row: tuple[str, int, list[int], list[int], list[int]]) -> tuple[Any, ...]:
    t, p, *nodes = row
    return (t, p, *(",".join(map(str, n)) or None for n in nodes))


# -- registration ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    return run_reporting(f"partitions {args.partitions_command}", lambda: int(args.action(args)))


def register(commands: Any) -> None:
    """Add ``partitions`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    common = connection_options(command_config=True)
    partitions = commands.add_parser(
        "partitions",
        help="where partitions live, and live moves between workers",
        description=(
            "Show which worker owns each partition and move partitions between workers while "
            "clients keep producing and consuming (no data is copied). Exit codes: 0 done, 1 a refusal "
            "(the Kafka error and the broker's reason) or an unreachable broker, 2 bad usage."
        ),
    )
    sub = partitions.add_subparsers(dest="partitions_command", metavar="ACTION", required=True)
    format_help = "text (a table) or json [text]"

    p_move = sub.add_parser(
        "move",
        parents=[common],
        help="move a partition to another worker",
        description=(
            "Move a partition to worker W (AlterPartitionReassignments): its log is handed over on the "
            "same disk and its leader epoch grows. Prints 'moved TOPIC-P from worker A to worker W "
            "(leader epoch E)' once every worker serves the new placement."
        ),
    )
    p_move.add_argument("topic", metavar="TOPIC", help="the partition's topic")
    p_move.add_argument("partition", type=non_negative_int, metavar="PARTITION", help="the partition")
    target = p_move.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--to-worker", type=non_negative_int, metavar="W", help="the worker (node id) to move it to"
    )
    target.add_argument("--cancel", action="store_true", help="cancel the partition's move in progress")
    p_move.set_defaults(run=_run, action=_move)

    p_list = sub.add_parser(
        "list",
        parents=[common],
        help="each partition's worker and leader epoch",
        description="One line per partition: its topic, number, worker (node id) and leader epoch.",
    )
    p_list.add_argument("topic", nargs="*", metavar="TOPIC", help="topics to show [every topic]")
    p_list.add_argument("--exclude-internal", action="store_true", help="leave out internal topics")
    p_list.add_argument("--format", choices=("text", "json"), default="text", help=format_help)
    p_list.set_defaults(run=_run, action=_list)

    p_moves = sub.add_parser(
        "reassignments",
        parents=[common],
        help="moves in progress",
        description="Partition moves in progress (ListPartitionReassignments): from and to which workers.",
    )
    p_moves.add_argument("topic", nargs="*", metavar="TOPIC", help="topics to show [every topic]")
    p_moves.add_argument("--format", choices=("text", "json"), default="text", help=format_help)
    p_moves.set_defaults(run=_run, action=_reassignments)
