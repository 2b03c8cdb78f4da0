"""``shardbroker groups list|describe|reset-offsets``: consumer groups, like Kafka's
``kafka-consumer-groups`` tool. Opens sockets (through :mod:`shardbroker.client.admin`).

Output follows Kafka's tool: ``describe`` prints GROUP TOPIC PARTITION CURRENT-OFFSET
LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID per partition (lag = log end offset, i.e. the high
watermark, minus the committed offset; ``-`` when nothing is committed), ``--members`` and
``--state`` the other two views; ``reset-offsets`` prints GROUP TOPIC PARTITION NEW-OFFSET and,
as Kafka's tool, only plans (dry run) unless ``--execute`` is given, and is refused while the
group has members (state other than Empty or Dead).

Exit codes (shared by the client commands, see :mod:`shardbroker.cli.common`): 0 done, 1 a
runtime error (broker unreachable, unknown group or topic, a Kafka error; the message says which),
2 bad usage (argparse's).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    admin_client,
    connection_options,
    integer,
    print_json,
    run_reporting,
    table,
)

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient
    from shardbroker.client.admin_groups import GroupDescription

__all__ = ["register"]

INACTIVE_STATES = ("Empty", "Dead")

TopicSpec = tuple[str, list[int] | None]


# -- argument types ------------------------------------------------------------------------------


def _topic_spec(text: str) -> TopicSpec:
    """``TOPIC`` or ``TOPIC:P,P,...`` (Kafka's --topic syntax for reset-offsets)."""
    topic, sep, parts = text.partition(":")
    if not topic:
        raise argparse.ArgumentTypeError(f"no topic name in {text!r}")
    if not sep:
        return topic, None
    try:
        partitions = sorted({int(p) for p in parts.split(",") if p.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad partition list in {text!r}: expected TOPIC:P,P,...") from None
    if not partitions or partitions[0] < 0:
        raise argparse.ArgumentTypeError(f"bad partition list in {text!r}: expected TOPIC:P,P,...")
    return topic, partitions


def _datetime_ms(text: str) -> int:
    """ISO 8601 (``2026-11-25T07:00:00``, ``...Z``, ``...+02:00``, fractions allowed) -> epoch ms.
    Without a zone the local time zone is meant, as in Kafka's tool."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date-time: {text!r} (e.g. 2026-11-25T07:00:00.000 or 2026-11-25T07:00:00Z)"
        ) from None
    return int(value.timestamp() * 1000)


# -- running -------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    """Run the sub-command, mapping the client's errors to exit code 1 with a message."""
    return run_reporting(f"groups {args.groups_command}", lambda: int(args.action(args)))


# -- list ----------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        groups = admin.list_groups()
        rows = []
        for g in groups:
            state = g.state or (admin.describe_group(g.group_id).state if args.state is not None else "")
            rows.append((g.group_id, state, g.protocol_type, g.coordinator))
    if args.state:
        wanted = {s.strip().lower() for s in args.state.split(",") if s.strip()}
        rows = [r for r in rows if r[1].lower() in wanted]
    if args.json:
        print_json([{"group": g, "state": s, "protocol_type": p, "coordinator": c} for g, s, p, c in rows])
    elif args.state is not None:
        if rows:
            print(table(("GROUP", "STATE"), [(g, s) for g, s, _, _ in rows]))
    else:
        for row in rows:
            print(row[0])
    return EXIT_OK


# -- describe ------------------------------------------------------------------------------------


def _offset_rows(admin: AdminClient, desc: GroupDescription) -> list[dict[str, Any]]:
    """One row per partition the group has committed offsets for or has assigned to a member."""
    from shardbroker.client.admin_partitions import LATEST
    from shardbroker.client.connection import KafkaApiError

    committed = admin.committed_offsets(desc.group_id)
    owner: dict[tuple[str, int], Any] = {}
    for mem in desc.members:
        for tp in mem.assigned:
            owner[tp] = mem
    partitions = sorted(set(committed) | set(owner))
    ends: dict[tuple[str, int], int] = {}
    for topic in sorted({t for t, _ in partitions}):
        # A deleted topic: its end offset is unknown ('-'), as in Kafka's tool.
        with contextlib.suppress(KafkaApiError):
            ends.update(admin.list_offsets({tp: LATEST for tp in partitions if tp[0] == topic}))
    rows = []
    for tp in partitions:
        current = committed.get(tp)
        end = ends.get(tp)
        holder = owner.get(tp)
        rows.append(
            {
                "group": desc.group_id,
                "topic": tp[0],
                "partition": tp[1],
                "current_offset": current,
                "log_end_offset": end,
                "lag": None if current is None or end is None else max(end - current, 0),
                "consumer_id": holder.member_id if holder else None,
                "host": holder.host if holder else None,
                "client_id": holder.client_id if holder else None,
            }
        )
    # Members with nothing assigned still show, as in Kafka's tool.
    for mem in desc.members:
        if not mem.assigned:
            rows.append(
                {
                    "group": desc.group_id,
                    "topic": None,
                    "partition": None,
                    "current_offset": None,
                    "log_end_offset": None,
                    "lag": None,
                    "consumer_id": mem.member_id,
                    "host": mem.host,
                    "client_id": mem.client_id,
                }
            )
    return rows


def _member_json(mem: Any) -> dict[str, Any]:
    return {
        "consumer_id": mem.member_id,
        "group_instance_id": mem.group_instance_id,
        "host": mem.host,
        "client_id": mem.client_id,
        "assignment": {
            t: ps for t, ps in sorted((mem.assignment.partitions if mem.assignment else {}).items())
        },
        "subscription": list(mem.subscription.topics) if mem.subscription else None,
    }


def _describe_one(admin: AdminClient, group_id: str, args: argparse.Namespace) -> dict[str, Any]:
    desc = admin.describe_group(group_id)
    coordinator = f"{desc.coordinator.address} ({desc.coordinator.node_id})"
    out: dict[str, Any] = {
        "group": group_id,
        "state": desc.state,
        "coordinator": coordinator,
        "protocol_type": desc.protocol_type,
        "assignment_strategy": desc.protocol,
        "members": [_member_json(mem) for mem in desc.members],
        "_desc": desc,
    }
    if not args.members and not args.state:
        out["offsets"] = _offset_rows(admin, desc)
        if not desc.exists and not out["offsets"]:
            raise CommandError(f"consumer group '{group_id}' does not exist")
    elif not desc.exists:
        raise CommandError(f"consumer group '{group_id}' does not exist")
    return out


def _describe(args: argparse.Namespace) -> int:
    if not args.groups and not args.all_groups:
        print("shardbroker groups describe: error: give a GROUP or --all-groups", file=sys.stderr)
        return EXIT_USAGE
    with admin_client(args) as admin:
        group_ids = [g.group_id for g in admin.list_groups()] if args.all_groups else list(args.groups)
        results = [_describe_one(admin, g, args) for g in group_ids]
    if args.json:
        print_json([{k: v for k, v in r.items() if k != "_desc"} for r in results])
        return EXIT_OK
    for r in results:
        print()
        desc = r["_desc"]
        if args.state:
            print(
                table(
                    ("GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"),
                    [
                        (
                            r["group"],
                            r["coordinator"],
                            r["assignment_strategy"] or None,
                            r["state"],
                            len(r["members"]),
                        )
                    ],
                )
            )
            continue
        if not desc.members:
            print(f"Consumer group '{r['group']}' has no active members.")
            if args.members:
                continue
            print()
        if args.members:
            headers = ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
            if args.verbose:
                headers[2:2] = ["GROUP-INSTANCE-ID"]
                headers.append("ASSIGNMENT")
            rows = []
            for mem in desc.members:
                row: list[object] = [r["group"], mem.member_id, mem.host, mem.client_id, len(mem.assigned)]
                if args.verbose:
                    row[2:2] = [mem.group_instance_id]
                    parts = mem.assignment.partitions if mem.assignment else {}
                    row.append(
                        ", ".join(f"{t}({','.join(map(str, sorted(ps)))})" for t, ps in sorted(parts.items()))
                        or None
                    )
                rows.append(row)
            print(table(headers, rows))
            continue
        print(
            table(
                (
                    "GROUP",
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID",
                ),
                [
                    (
                        o["group"],
                        o["topic"],
                        o["partition"],
                        o["current_offset"],
                        o["log_end_offset"],
                        o["lag"],
                        o["consumer_id"],
                        o["host"],
                        o["client_id"],
                    )
                    for o in r["offsets"]
                ],
            )
        )
    return EXIT_OK


# -- reset-offsets -------------------------------------------------------------------------------


def _reset_partitions(admin: AdminClient, args: argparse.Namespace) -> list[tuple[str, int]]:
    from shardbroker.client.connection import KafkaApiError
    from shardbroker.protocol.errors import ErrorCode

    if args.all_topics:
        partitions = sorted(admin.committed_offsets(args.group))
        if not partitions:
            raise CommandError(f"consumer group '{args.group}' has no committed offsets (--all-topics)")
        return partitions
    out: set[tuple[str, int]] = set()
    for topic, wanted in args.topic:
        try:
            info = admin.topic(topic)
        except KafkaApiError as exc:
            if exc.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise CommandError(f"topic '{topic}' does not exist") from None
            raise
        if wanted is None:
            out.update((topic, p) for p in info.partitions)
            continue
        missing = [p for p in wanted if p not in info.partitions]
        if missing:
            raise CommandError(
                f"topic '{topic}' has no partition {', '.join(map(str, missing))} "
                f"(it has {len(info.partitions)}: 0-{len(info.partitions) - 1})"
            )
        out.update((topic, p) for p in wanted)
    return sorted(out)


def _reset(args: argparse.Namespace) -> int:
    from shardbroker.client.admin_partitions import EARLIEST, LATEST
    from shardbroker.client.connection import KafkaApiError
    from shardbroker.protocol.errors import ErrorCode

    with admin_client(args) as admin:
        desc = admin.describe_group(args.group)
        if desc.state not in INACTIVE_STATES:
            raise CommandError(
                f"assignments can only be reset if the group '{args.group}' is inactive, but the current "
                f"state is {desc.state} ({len(desc.members)} member(s)): stop its consumers first"
            )
        partitions = _reset_partitions(admin, args)
        earliest = admin.list_offsets({tp: EARLIEST for tp in partitions})
        latest = admin.list_offsets({tp: LATEST for tp in partitions})

        def clamp(tp: tuple[str, int], offset: int) -> int:
            return max(earliest[tp], min(latest[tp], offset))

        if args.to_earliest:
            plan = dict(earliest)
        elif args.to_latest:
            plan = dict(latest)
        elif args.to_offset is not None:
            plan = {tp: clamp(tp, args.to_offset) for tp in partitions}
        elif args.to_datetime is not None:
            found = admin.list_offsets({tp: args.to_datetime for tp in partitions})
            plan = {tp: latest[tp] if found[tp] < 0 else clamp(tp, found[tp]) for tp in partitions}
        else:
            committed = admin.committed_offsets(args.group, partitions)
            missing = [f"{t}-{p}" for t, p in partitions if (t, p) not in committed]
            if missing:
                raise CommandError(
                    f"--shift-by needs a committed offset, and group '{args.group}' has none for "
                    + ", ".join(missing)
                )
            plan = {tp: clamp(tp, committed[tp] + args.shift_by) for tp in partitions}
        if args.execute:
            try:
                admin.commit_offsets(args.group, plan)
            except KafkaApiError as exc:
                if exc.error_code in (
                    ErrorCode.UNKNOWN_MEMBER_ID,
                    ErrorCode.ILLEGAL_GENERATION,
                    ErrorCode.REBALANCE_IN_PROGRESS,
                ):
                    raise CommandError(
                        f"the broker refused the reset ({exc.name}): group '{args.group}' has active "
                        "members again; stop its consumers first"
                    ) from None
                raise
    if args.json:
        print_json(
            [
                {"group": args.group, "topic": t, "partition": p, "new_offset": o}
                for (t, p), o in sorted(plan.items())
            ]
        )
    else:
        print()
        print(
            table(
                ("GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"),
                [(args.group, t, p, o) for (t, p), o in sorted(plan.items())],
            )
        )
    if not args.execute and not args.dry_run:
        print(
            "\nDry run: nothing was committed. Add --execute to apply this plan (or --dry-run to say so).",
            file=sys.stderr,
        )
    return EXIT_OK


# -- registration --------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add ``groups`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    common = connection_options(command_config=True)
    groups = commands.add_parser(
        "groups",
        help="list, describe and reset consumer groups",
        description=(
            "List, describe and reset the offsets of consumer groups, like Kafka's kafka-consumer-groups. "
            "Exit codes: 0 done, 1 runtime error (unreachable broker, unknown group or topic, a group "
            "that is not inactive for a reset), 2 bad usage."
        ),
    )
    sub = groups.add_subparsers(dest="groups_command", metavar="ACTION", required=True)

    p_list = sub.add_parser("list", parents=[common], help="list the groups", description="List every group.")
    p_list.add_argument(
        "--state",
        nargs="?",
        const="",
        metavar="STATES",
        help="show each group's state; with a comma-separated list (e.g. Stable,Empty) only those",
    )
    p_list.add_argument("--json", action="store_true", help="print JSON")
    p_list.set_defaults(run=_run, action=_list)

    p_desc = sub.add_parser(
        "describe",
        parents=[common],
        help="offsets and lag, members or state of groups",
        description=(
            "Per partition: the committed offset, the log end offset (high watermark), lag = log end "
            "offset - committed offset ('-' when nothing is committed), and the member it is assigned to."
        ),
    )
    p_desc.add_argument("groups", nargs="*", metavar="GROUP", help="group id(s)")
    p_desc.add_argument("--all-groups", action="store_true", help="describe every group")
    view = p_desc.add_mutually_exclusive_group()
    view.add_argument("--members", action="store_true", help="the members view")
    view.add_argument("--state", action="store_true", help="the state view")
    p_desc.add_argument("--verbose", action="store_true", help="with --members: instance ids and assignments")
    p_desc.add_argument("--json", action="store_true", help="print JSON")
    p_desc.set_defaults(run=_run, action=_describe)

    p_reset = sub.add_parser(
        "reset-offsets",
        parents=[common],
        help="reset a group's committed offsets (dry run unless --execute)",
        description=(
            "Plan, and with --execute commit, new offsets for an inactive group (state Empty or Dead: "
            "refused while it has members). --to-offset and --shift-by are kept within the log's "
            "earliest..latest offsets; --to-datetime takes the first offset whose timestamp is at or "
            "after the time (the latest offset if none)."
        ),
    )
    p_reset.add_argument("group", metavar="GROUP", help="group id")
    which = p_reset.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--topic",
        type=_topic_spec,
        action="append",
        metavar="TOPIC[:P,P]",
        help="a topic (all its partitions, or those listed); may be repeated",
    )
    which.add_argument("--all-topics", action="store_true", help="every topic the group has offsets for")
    scenario = p_reset.add_mutually_exclusive_group(required=True)
    scenario.add_argument("--to-earliest", action="store_true", help="the log start offset")
    scenario.add_argument("--to-latest", action="store_true", help="the log end offset")
    scenario.add_argument(
        "--to-datetime", type=_datetime_ms, metavar="ISO8601", help="e.g. 2026-11-25T07:00:00Z"
    )
    scenario.add_argument("--to-offset", type=integer, metavar="N", help="this offset")
    scenario.add_argument(
        "--shift-by", type=integer, metavar="N", help="the committed offset + N (N may be < 0)"
    )
    mode = p_reset.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan only (the default)")
    mode.add_argument("--execute", action="store_true", help="commit the new offsets")
    p_reset.add_argument("--json", action="store_true", help="print JSON")
    p_reset.set_defaults(run=_run, action=_reset)
