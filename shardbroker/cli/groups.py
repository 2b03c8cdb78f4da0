"""``shardbroker groups list|describe|reset-offsets``: consumer groups, like Kafka's
``kafka-consumer-groups`` tool. Opens sockets (through :mod:`shardbroker.client.admin`).

Output follows Kafka's tool: ``list --type``/``--state`` add the TYPE ("Classic", or "Consumer"
for the consumer protocol of KIP-848) and STATE columns and filter by them; ``describe`` prints
GROUP TOPIC PARTITION CURRENT-OFFSET LOG-END-OFFSET LAG CONSUMER-ID HOST CLIENT-ID per partition
(lag = log end offset, i.e. the high watermark, minus the committed offset; ``-`` when nothing is
committed), ``--members`` and ``--state`` the other two views. A consumer-protocol group's
``--state`` adds TYPE GROUP-EPOCH TARGET-ASSIGNMENT-EPOCH (its assignor is the
ASSIGNMENT-STRATEGY), its ``--members --verbose`` CURRENT-EPOCH CURRENT-ASSIGNMENT TARGET-EPOCH
TARGET-ASSIGNMENT (Kafka's columns; a classic group keeps its ASSIGNMENT column).
``reset-offsets`` prints GROUP TOPIC PARTITION NEW-OFFSET and, as Kafka's tool, only plans (dry
run) unless ``--execute`` is given, and is refused while the group has members (state other than
Empty or Dead).

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
    from shardbroker.client.admin_groups import GroupDescription, MemberDescription

__all__ = ["register"]

INACTIVE_STATES = ("Empty", "Dead")
#: What ``list --type`` accepts, as Kafka's tool (which lower-cases the list first).
GROUP_TYPES = ("classic", "consumer")

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


def _group_types(text: str) -> frozenset[str]:
    """``classic``, ``consumer`` or both, comma-separated, in any case (Kafka's --type syntax)."""
    types = frozenset(t.strip() for t in text.lower().split(",") if t.strip())
    if not types or not types <= set(GROUP_TYPES):
        raise argparse.ArgumentTypeError(
            f"invalid types list {text!r}: valid types are {', '.join(GROUP_TYPES)}"
        )
    return types


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


def _type_label(group_type: str) -> str | None:
    """A group type as Kafka's tool prints it ("Classic", "Consumer"); None (``-``) if unknown."""
    return group_type.capitalize() or None


def _list(args: argparse.Namespace) -> int:
    with admin_client(args) as admin:
        listed = []
        for g in admin.list_groups(args.types or ()):
            state = g.state or (admin.describe_group(g.group_id).state if args.state is not None else "")
            listed.append((g, state))
    if args.state:
        wanted = {s.strip().lower() for s in args.state.split(",") if s.strip()}
        listed = [(g, s) for g, s in listed if s.lower() in wanted]
    if args.json:
        print_json(
            [
                {
                    "group": g.group_id,
                    "type": g.group_type,
                    "state": s,
                    "protocol_type": g.protocol_type,
                    "coordinator": g.coordinator,
                }
                for g, s in listed
            ]
        )
    elif args.state is not None or args.types is not None:
        show_type, show_state = args.types is not None, args.state is not None
        headers = ["GROUP", *(["TYPE"] if show_type else []), *(["STATE"] if show_state else [])]
        rows = [
            [g.group_id, *([_type_label(g.group_type)] if show_type else []), *([s] if show_state else [])]
            for g, s in listed
        ]
        if rows:
            print(table(headers, rows))
    else:
        for g, _ in listed:
            print(g.group_id)
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


def _by_topic(partitions: list[tuple[str, int]]) -> dict[str, list[int]]:
    """Sorted (topic, partition) pairs -> {topic: [partition, ...]}, in the same order."""
    out: dict[str, list[int]] = {}
    for t, p in partitions:
        out.setdefault(t, []).append(p)
    return out


def _assignment_text(partitions: list[tuple[str, int]] | None) -> str | None:
    """``t(0,1), u(2)``; None (``-``) when there is nothing, or nothing known."""
    by_topic = _by_topic(partitions or [])
    return ", ".join(f"{t}({','.join(map(str, ps))})" for t, ps in by_topic.items()) or None


def _member_json(mem: MemberDescription) -> dict[str, Any]:
    return {
        "consumer_id": mem.member_id,
        "group_instance_id": mem.group_instance_id,
        "host": mem.host,
        "client_id": mem.client_id,
        "assignment": _by_topic(mem.assigned),
        "subscription": list(mem.subscription.topics) if mem.subscription else mem.subscribed_topic_names,
        "subscription_regex": mem.subscribed_topic_regex,
        "member_epoch": mem.member_epoch,
        "target_assignment": None if mem.target is None else _by_topic(mem.target),
    }


def _describe_one(admin: AdminClient, group_id: str, args: argparse.Namespace) -> dict[str, Any]:
    desc = admin.describe_group(group_id)
    coordinator = f"{desc.coordinator.address} ({desc.coordinator.node_id})"
    out: dict[str, Any] = {
        "group": group_id,
        "type": desc.group_type,
        "state": desc.state,
        "coordinator": coordinator,
        "protocol_type": desc.protocol_type,
        "assignment_strategy": desc.protocol,
        "assignor": desc.assignor,
        "group_epoch": desc.group_epoch,
        "assignment_epoch": desc.assignment_epoch,
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
            print(_state_table(r, desc))
            continue
        if not desc.members:
            print(f"Consumer group '{r['group']}' has no active members.")
            if args.members:
                continue
            print()
        if args.members:
            print(_members_table(desc, args.verbose))
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


def _state_table(r: dict[str, Any], desc: GroupDescription) -> str:
    """Kafka's state view; a consumer-protocol group's adds its type and epochs (Kafka's tool
    shows the epochs with --verbose, but they are what tells such a group's progress)."""
    strategy = r["assignment_strategy"] or None
    if desc.group_type != "consumer":
        return table(
            ("GROUP", "COORDINATOR (ID)", "ASSIGNMENT-STRATEGY", "STATE", "#MEMBERS"),
            [(r["group"], r["coordinator"], strategy, r["state"], len(desc.members))],
        )
    return table(
        (
            "GROUP",
            "COORDINATOR (ID)",
            "TYPE",
            "ASSIGNMENT-STRATEGY",
            "STATE",
            "GROUP-EPOCH",
            "TARGET-ASSIGNMENT-EPOCH",
            "#MEMBERS",
        ),
        [
            (
                r["group"],
                r["coordinator"],
                _type_label(desc.group_type),
                strategy,
                r["state"],
                desc.group_epoch,
                desc.assignment_epoch,
                len(desc.members),
            )
        ],
    )


def _members_table(desc: GroupDescription, verbose: bool) -> str:
    """Kafka's members view. With ``verbose`` a classic group's members show their ASSIGNMENT, a
    consumer-protocol group's their epoch and current and target assignments (the member has
    caught up when they match and its epoch is the TARGET-EPOCH, the group's assignment epoch)."""
    consumer = desc.group_type == "consumer"
    headers = ["GROUP", "CONSUMER-ID", "HOST", "CLIENT-ID", "#PARTITIONS"]
    if verbose:
        headers[2:2] = ["GROUP-INSTANCE-ID"]
        if consumer:
            headers += ["CURRENT-EPOCH", "CURRENT-ASSIGNMENT", "TARGET-EPOCH", "TARGET-ASSIGNMENT"]
        else:
            headers.append("ASSIGNMENT")
    rows = []
    for mem in desc.members:
        row: list[object] = [desc.group_id, mem.member_id, mem.host, mem.client_id, len(mem.assigned)]
        if verbose:
            row[2:2] = [mem.group_instance_id]
            current = _assignment_text(mem.assigned)
            if consumer:
                row += [mem.member_epoch, current, desc.assignment_epoch, _assignment_text(mem.target)]
            else:
                row.append(current)
        rows.append(row)
    return table(headers, rows)


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
    p_list.add_argument(
        "--type",
        dest="types",
        nargs="?",
        const=frozenset(),
        type=_group_types,
        metavar="TYPES",
        help="show each group's type; with a comma-separated list (classic, consumer) only those",
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
    p_desc.add_argument(
        "--verbose",
        action="store_true",
        help="with --members: instance ids and assignments (consumer-protocol groups: epochs, targets)",
    )
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
