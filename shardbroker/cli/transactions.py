"""``shardbroker transactions list|describe|describe-producers|abort|find-hanging``: Kafka
transactions, like Kafka's ``kafka-transactions.sh`` (its columns, its options). Opens sockets
(through :mod:`shardbroker.client.admin`).

``list`` asks every broker (each answers for the transactional ids it coordinates;
``--duration-filter`` keeps those running longer, KIP-994); ``describe`` asks the id's
coordinator; ``describe-producers`` the partition's leader (KIP-664). ``find-hanging`` lists the
transactions open in the partitions (``--topic`` [``--partition``] or every partition a
``--broker-id`` leads) with no write for ``--max-transaction-timeout`` minutes that no coordinator
holds as Ongoing with that partition; ``abort`` ends one with an ABORT marker (WriteTxnMarkers,
CLUSTER_ACTION needed), given its producer id, epoch and coordinator epoch, or ``--start-offset``
to look them up with DescribeProducers, as Kafka's tool.

Exit codes (:mod:`shardbroker.cli.common`): 0 done, 1 a runtime error (broker unreachable, an
unknown id or partition, a Kafka error), 2 bad usage.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_OK,
    CommandError,
    UsageError,
    admin_client,
    connection_options,
    integer,
    non_negative_int,
    print_json,
    run_reporting,
    table,
)

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient

__all__ = ["register"]

#: Kafka's default ``transaction.max.timeout.ms``, in minutes (its tool's default).
DEFAULT_MAX_TIMEOUT_MIN = 15


def _run(args: argparse.Namespace) -> int:
    return run_reporting(f"transactions {args.transactions_command}", lambda: int(args.action(args)))


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        found = admin.list_transactions(duration_ms=args.duration_filter)
    if args.json:
        print_json([t.__dict__ for t in found])
    else:
        rows = [(t.transactional_id, t.coordinator, t.producer_id, t.state) for t in found]
        print(table(("TransactionalId", "Coordinator", "ProducerId", "TransactionState"), rows))
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        d = admin.describe_transaction(args.transactional_id)
    now = int(time.time() * 1000)
    duration = now - d.start_time_ms if d.start_time_ms >= 0 and d.state == "Ongoing" else None
    if args.json:
        print_json({**d.__dict__, "duration_ms": duration})
        return EXIT_OK
    headers = (
        "CoordinatorId",
        "TransactionalId",
        "ProducerId",
        "ProducerEpoch",
        "TransactionState",
        "CurrentTransactionTimeoutMs",
        "CurrentTransactionStartTimeMs",
        "TransactionDurationMs",
        "TopicPartitions",
    )
    partitions = ",".join(f"{t}-{p}" for t, p in d.partitions)
    start = d.start_time_ms if d.start_time_ms >= 0 else None
    row = (d.coordinator, d.transactional_id, d.producer_id, d.producer_epoch, d.state, d.timeout_ms)
    print(table(headers, [(*row, start, duration, partitions)]))
    return EXIT_OK


def _describe_producers(args: argparse.Namespace) -> int:
    tp = (args.topic, args.partition)
    with admin_client(args) as admin:
        producers = admin.describe_producers([tp])[tp]
    if args.json:
        print_json([p.__dict__ for p in producers])
        return EXIT_OK
    headers = (
        "ProducerId",
        "ProducerEpoch",
        "LatestCoordinatorEpoch",
        "LastSequence",
        "LastTimestamp",
        "CurrentTransactionStartOffset",
    )
    rows = [
        (
            p.producer_id,
            p.producer_epoch,
            p.coordinator_epoch,
            p.last_sequence,
            p.last_timestamp,
            None if p.current_txn_start_offset < 0 else p.current_txn_start_offset,
        )
        for p in producers
    ]
    print(table(headers, rows))
    return EXIT_OK


def _abort(args: argparse.Namespace) -> int:
    tp = (args.topic, args.partition)
    if args.producer_id is not None and (args.producer_epoch is None or args.coordinator_epoch is None):
        raise UsageError("--producer-id needs --producer-epoch and --coordinator-epoch")
    with admin_client(args) as admin:
        if args.start_offset is not None:
            producers = admin.describe_producers([tp])[tp]
            open_here = [p for p in producers if p.current_txn_start_offset == args.start_offset]
            if not open_here:
                raise CommandError(f"no transaction open in {tp[0]}-{tp[1]} at offset {args.start_offset}")
            producer = open_here[0]
            ids = (producer.producer_id, producer.producer_epoch, producer.coordinator_epoch)
        else:
            ids = (args.producer_id, args.producer_epoch, args.coordinator_epoch)
        admin.abort_transaction(tp, *ids)
    print(f"Aborted the transaction of producer {ids[0]} (epoch {ids[1]}) in {tp[0]}-{tp[1]}")
    return EXIT_OK


def _partitions(admin: AdminClient, args: argparse.Namespace) -> list[tuple[str, int]]:
    if args.topic is not None:
        info = admin.topic(args.topic)
        if args.partition is not None:
            if args.partition not in info.partitions:
                raise CommandError(f"topic '{args.topic}' has no partition {args.partition}")
            return [(args.topic, args.partition)]
        return [(args.topic, p) for p in sorted(info.partitions)]
    topics = admin.metadata().topics
    return sorted(
        (name, p)
        for name, info in topics.items()
        for p, leader in info.partitions.items()
        if leader == args.broker_id and not info.internal
    )


def _find_hanging(args: argparse.Namespace) -> int:
    if args.partition is not None and args.topic is None:
        raise UsageError("--partition needs --topic")
    max_ms = args.max_transaction_timeout * 60_000
    with admin_client(args) as admin:
        hanging = admin.hanging_transactions(_partitions(admin, args), max_ms)
    now = int(time.time() * 1000)
    rows: list[dict[str, Any]] = [
        {
            "topic": h.partition[0],
            "partition": h.partition[1],
            "producer_id": h.producer.producer_id,
            "producer_epoch": h.producer.producer_epoch,
            "coordinator_epoch": h.producer.coordinator_epoch,
            "start_offset": h.producer.current_txn_start_offset,
            "last_timestamp": h.producer.last_timestamp,
            "duration_min": (now - h.producer.last_timestamp) // 60_000,
        }
        for h in hanging
    ]
    if args.json:
        print_json(rows)
    else:
        headers = (
            "Topic",
            "Partition",
            "ProducerId",
            "ProducerEpoch",
            "CoordinatorEpoch",
            "StartOffset",
            "LastTimestamp",
            "Duration(min)",
        )
        print(table(headers, [tuple(r.values()) for r in rows]))
    return EXIT_OK


def register(commands: Any) -> None:
    """Add ``transactions`` to the ``shardbroker`` sub-commands."""
    common = connection_options(command_config=True)
    txn = commands.add_parser(
        "transactions",
        help="list, describe, find hanging and abort transactions",
        description=(
            "Kafka transactions, like kafka-transactions.sh. Exit codes: 0 done, 1 runtime error "
            "(unreachable broker, unknown transactional id or partition, a Kafka error), 2 bad usage."
        ),
    )
    sub = txn.add_subparsers(dest="transactions_command", metavar="ACTION", required=True)

    p = sub.add_parser("list", parents=[common], help="the transactional ids of every broker")
    p.add_argument(
        "--duration-filter",
        type=non_negative_int,
        default=-1,
        metavar="MS",
        help="only transactions running longer than this (ms)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run, action=_list)

    p = sub.add_parser("describe", parents=[common], help="the coordinator's state of a transactional id")
    p.add_argument("--transactional-id", required=True, metavar="ID")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run, action=_describe)

    def partition_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--topic", required=True, metavar="TOPIC")
        parser.add_argument("--partition", required=True, type=non_negative_int, metavar="P")

    p = sub.add_parser("describe-producers", parents=[common], help="the active producers of a partition")
    partition_options(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run, action=_describe_producers)

    p = sub.add_parser(
        "abort",
        parents=[common],
        help="abort a hanging transaction (an ABORT marker in one partition)",
        description=(
            "Write an ABORT marker for a producer's open transaction in one partition (needs "
            "CLUSTER_ACTION). Give --start-offset (looked up with DescribeProducers), or "
            "--producer-id, --producer-epoch and --coordinator-epoch (find-hanging prints them)."
        ),
    )
    partition_options(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--start-offset", type=non_negative_int, metavar="OFFSET")
    which.add_argument("--producer-id", type=integer, metavar="ID")
    p.add_argument("--producer-epoch", type=integer, metavar="EPOCH")
    p.add_argument("--coordinator-epoch", type=integer, metavar="EPOCH")
    p.set_defaults(run=_run, action=_abort)

    p = sub.add_parser(
        "find-hanging",
        parents=[common],
        help="open transactions no coordinator will end",
        description=(
            "Transactions open in the partitions, with no write for --max-transaction-timeout "
            "minutes, that no coordinator holds as Ongoing with that partition."
        ),
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--topic", metavar="TOPIC")
    where.add_argument("--broker-id", type=integer, metavar="ID", help="every partition it leads")
    p.add_argument("--partition", type=non_negative_int, metavar="P", help="with --topic: only this one")
    p.add_argument(
        "--max-transaction-timeout",
        type=non_negative_int,
        default=DEFAULT_MAX_TIMEOUT_MIN,
        metavar="MINUTES",
        help=f"the brokers' transaction.max.timeout.ms, in minutes [{DEFAULT_MAX_TIMEOUT_MIN}]",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run, action=_find_hanging)
