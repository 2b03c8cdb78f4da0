"""``shardbroker acls add|list|remove``: ACL bindings, as ``kafka-acls.sh --add|--list|--remove``
with Kafka's option names and output (through :mod:`shardbroker.client.admin_acls`, so it works
against any Kafka cluster too).

Resources: ``--topic``, ``--group``, ``--transactional-id`` (each repeatable), ``--cluster``,
with ``--resource-pattern-type`` (literal, the default, or prefixed; list and remove also take
any and match). Entries: ``--allow-principal`` / ``--deny-principal`` (``Type:name``),
``--allow-host`` / ``--deny-host`` (default ``*``), ``--operation`` (repeatable, Kafka's names in
any case, default All). ``--producer`` makes WRITE, DESCRIBE, CREATE on the topics (with
``--idempotent`` also IDEMPOTENT_WRITE on the cluster; WRITE, DESCRIBE on each
``--transactional-id``), ``--consumer`` READ, DESCRIBE on the topics and READ on the groups.
``add`` skips, and reports, bindings that exist already; ``remove`` without principals removes
every ACL of each resource, and asks first on a terminal unless ``--force`` (without a terminal it
refuses: nobody could answer). ``list --principal P`` shows only P's entries.

Kafka's refusals, here before any connection with exit 2: an operation the resource type does not
support (``--operation Write --cluster``: "ResourceType CLUSTER only supports operations ..."),
``add`` without a principal or a resource, --operation/--deny-* with --producer/--consumer,
--consumer without --topic and --group. Deliberate differences: a host option without its
principal option is refused (kafka-acls ignores it, so ``remove --topic t --allow-host h`` would
remove every ACL of t), and so is ``--cluster`` with a prefixed pattern type (kafka-acls drops
the cluster silently). Refusals by the broker (CLUSTER_AUTHORIZATION_FAILED, SECURITY_DISABLED,
INVALID_REQUEST) exit 1 with the Kafka error's name, as every client command (cli/common.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from shardbroker.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    UsageError,
    admin_client,
    connection_options,
    run_reporting,
)
from shardbroker.security.acl import (
    CLUSTER_NAME,
    WILDCARD_HOST,
    AccessControlEntry,
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    PatternType,
    ResourcePattern,
    ResourceType,
)
from shardbroker.security.principal import KafkaPrincipal

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient

__all__ = ["acls_by_resource", "register", "resources"]

_O = AclOperation
#: kafka-acls' --operation names (AclEntry.ACL_OPERATIONS), as its help lists them.
OPERATION_NAMES = (
    "Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction", "DescribeConfigs",
    "AlterConfigs", "IdempotentWrite", "CreateTokens", "DescribeTokens", "TwoPhaseCommit", "All",
)  # fmt: skip
_SPECIFIC = ("literal", "prefixed")
_FILTERS = ("literal", "prefixed", "any", "match")

_PATTERN_HELP = "literal: the resource named; prefixed: every resource whose name starts with it [LITERAL]"
_PATTERN_FILTER_HELP = (
    "literal or prefixed: patterns of that type with the name; any: of either type, the name exact; "
    "match: every pattern that applies to the name [LITERAL]"
)

Acls = dict[ResourcePattern, list[AccessControlEntry]]
T = TypeVar("T")


# -- argument types --------------------------------------------------------------------------------


def operation(text: str) -> AclOperation:
    try:
        op = AclOperation.parse(text)
    except ValueError:
        op = AclOperation.UNKNOWN
    if op in (AclOperation.UNKNOWN, AclOperation.ANY):
        raise argparse.ArgumentTypeError(f"unknown operation {text!r}: one of {', '.join(OPERATION_NAMES)}")
    return op


def principal(text: str) -> str:
    try:
        return str(KafkaPrincipal.parse(text.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resource_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a resource name must not be empty")
    return text.strip()


def _pattern_type(text: str, allowed: tuple[str, ...]) -> PatternType:
    if text.strip().lower() not in allowed:
        raise argparse.ArgumentTypeError(
            f"unknown resource pattern type {text!r}: one of {', '.join(allowed)}"
        )
    return PatternType.parse(text)


def specific_pattern_type(text: str) -> PatternType:
    """``add``'s: literal or prefixed (kafka-acls: "not valid when adding acls")."""
    return _pattern_type(text, _SPECIFIC)


def pattern_filter_type(text: str) -> PatternType:
    """``list``'s and ``remove``'s: also any and match."""
    return _pattern_type(text, _FILTERS)


# -- what the options mean -------------------------------------------------------------------------


def _unique(items: Iterable[T]) -> list[T]:
    return list(dict.fromkeys(items))


def resources(args: argparse.Namespace, *, required: bool) -> list[ResourcePattern]:
    """The resource patterns (or, for list/remove, pattern filters) the options name, in
    kafka-acls' order: topics, the cluster, groups, transactional ids."""
    kind: PatternType = args.resource_pattern_type
    cluster = args.cluster or getattr(args, "idempotent", False)
    if cluster and kind is PatternType.PREFIXED:
        raise UsageError(
            "--cluster names the one LITERAL cluster resource: it takes no prefixed pattern type"
        )
    found = [ResourcePattern(ResourceType.TOPIC, t, kind) for t in args.topic]
    if cluster:
        found.append(ResourcePattern(ResourceType.CLUSTER, CLUSTER_NAME, kind))
    found += [ResourcePattern(ResourceType.GROUP, g, kind) for g in args.group]
    found += [ResourcePattern(ResourceType.TRANSACTIONAL_ID, t, kind) for t in args.transactional_id]
    if not found and required:
        raise UsageError(
            "You must provide at least one resource: --topic <topic> or --cluster or --group <group> "
            "or --transactional-id <id>"
        )
    return _unique(found)


def _entries(args: argparse.Namespace, operations: Iterable[AclOperation]) -> list[AccessControlEntry]:
    out: list[AccessControlEntry] = []
    ops = _unique(operations)
    for principals, hosts, permission in (
        (args.allow_principal, args.allow_host, AclPermissionType.ALLOW),
        (args.deny_principal, args.deny_host, AclPermissionType.DENY),
    ):
        for p in _unique(principals):
            for op in ops:
                for host in _unique(hosts or [WILDCARD_HOST]):
                    out.append(AccessControlEntry(p, host, op, permission))
    return out


def _check_combination(args: argparse.Namespace) -> None:
    """kafka-acls' AclCommandOptions.checkArgs, plus hosts without their principals."""
    if args.allow_host and not args.allow_principal:
        raise UsageError("--allow-host needs --allow-principal (the principals allowed from those hosts)")
    if args.deny_host and not args.deny_principal:
        raise UsageError("--deny-host needs --deny-principal (the principals denied from those hosts)")
    for role in ("producer", "consumer"):
        if getattr(args, role) and (args.operation or args.deny_principal or args.deny_host):
            raise UsageError(
                f"--{role} makes its own operations: it takes no --operation, --deny-principal or --deny-host"
            )
    if args.producer and not args.topic:
        raise UsageError("With --producer you must specify a --topic")
    if args.idempotent and not args.producer:
        raise UsageError("The --idempotent option is only available if --producer is set")
    if args.consumer and (
        not args.topic or not args.group or (not args.producer and (args.cluster or args.transactional_id))
    ):
        raise UsageError(
            "With --consumer you must specify a --topic and a --group and no --cluster or "
            "--transactional-id option should be specified."
        )


def acls_by_resource(args: argparse.Namespace) -> Acls:
    """Each resource (filter) with the entries the options make for it (kafka-acls'
    getResourceFilterToAcls), every operation checked against what the resource type supports;
    for ``add``, each with at least one entry."""
    from shardbroker.broker.auth_helper import SUPPORTED_OPERATIONS

    _check_combination(args)
    named = resources(args, required=True)
    out: Acls = {}
    if not args.producer and not args.consumer:
        entries = _entries(args, args.operation or [_O.ALL])
        out = {r: list(entries) for r in named}
    if args.producer:
        for r in named:
            if r.resource_type is ResourceType.TOPIC:
                out[r] = _entries(args, (_O.WRITE, _O.DESCRIBE, _O.CREATE))
            elif r.resource_type is ResourceType.TRANSACTIONAL_ID:
                out[r] = _entries(args, (_O.WRITE, _O.DESCRIBE))
            elif r.resource_type is ResourceType.CLUSTER and args.idempotent:
                out[r] = _entries(args, (_O.IDEMPOTENT_WRITE,))
    if args.consumer:
        for r in named:
            ops = {ResourceType.TOPIC: (_O.READ, _O.DESCRIBE), ResourceType.GROUP: (_O.READ,)}
            if r.resource_type in ops:
                out[r] = _unique([*out.get(r, []), *_entries(args, ops[r.resource_type])])
    for r, entries in out.items():
        valid = (*SUPPORTED_OPERATIONS.get(r.resource_type, ()), _O.ALL)
        if any(e.operation not in valid for e in entries):
            names = ", ".join(op.name for op in valid)
            raise UsageError(f"ResourceType {r.resource_type.name} only supports operations {names}")
    if args.acls_command == "add" and any(not entries for entries in out.values()):
        raise UsageError(
            "You must specify one of: --allow-principal, --deny-principal when trying to add ACLs."
        )
    return out


def _filter(resource: ResourcePattern, entry: AccessControlEntry | None = None) -> AclBindingFilter:
    if entry is None:
        return AclBindingFilter(resource.resource_type, resource.name, resource.pattern_type)
    return AclBindingFilter(
        resource.resource_type,
        resource.name,
        resource.pattern_type,
        entry.principal,
        entry.host,
        entry.operation,
        entry.permission_type,
    )


def _lines(entries: Iterable[AccessControlEntry]) -> str:
    return "\n".join(f"\t{e}" for e in entries)


# -- actions ---------------------------------------------------------------------------------------


def _add(args: argparse.Namespace) -> int:
    acls = acls_by_resource(args)
    if any(not entries for entries in acls.values()):
        raise UsageError(
            "You must specify one of: --allow-principal, --deny-principal when trying to add ACLs."
        )
    with admin_client(args) as admin:
        for resource, entries in acls.items():
            existing = set(admin.describe_acls(_filter(resource)))
            new = []
            for entry in entries:
                binding = AclBinding(resource, entry)
                if binding in existing:
                    print(f"Acl {_binding_text(binding)} already exists.")
                else:
                    new.append(binding)
            if new:
                print(f"Adding ACLs for resource `{resource}`: \n {_lines(b.entry for b in new)}\n")
                errors = [str(e) for e in admin.create_acls(new).values() if e is not None]
                if errors:
                    raise CommandError("; ".join(errors))
    return EXIT_OK


def _binding_text(binding: AclBinding) -> str:
    """Kafka's AclBinding.toString."""
    return f"(pattern={binding.pattern}, entry={binding.entry})"


def _grouped(bindings: Iterable[AclBinding]) -> Acls:
    out: Acls = {}
    for b in bindings:
        entries = out.setdefault(b.pattern, [])
        if b.entry not in entries:
            entries.append(b.entry)
    return out


def _print_acls(acls: Acls) -> None:
    for resource, entries in acls.items():
        print(f"Current ACLs for resource `{resource}`:\n{_lines(entries)}\n")


def _list(args: argparse.Namespace) -> int:
    wanted = resources(args, required=False)
    with admin_client(args) as admin:
        if wanted:
            found = [b for r in wanted for b in admin.describe_acls(_filter(r))]
        else:
            found = admin.describe_acls()
    acls = _grouped(found)
    if not args.principal:
        _print_acls(acls)
    for p in _unique(args.principal):
        print(f"ACLs for principal `{p}`")
        mine = {r: [e for e in entries if e.principal == p] for r, entries in acls.items()}
        _print_acls({r: entries for r, entries in mine.items() if entries})
    return EXIT_OK


def _confirm(question: str) -> bool:
    print(question, flush=True)
    return sys.stdin.readline().strip().lower() == "y"


def _remove(args: argparse.Namespace) -> int:
    acls = acls_by_resource(args)
    if not args.force and not sys.stdin.isatty():
        raise CommandError(
            "refusing to remove ACLs without confirmation: stdin is not a terminal to ask on "
            "(pass --force to remove without asking)"
        )
    with admin_client(args) as admin:
        for resource, entries in acls.items():
            if not entries:
                question = f"Are you sure you want to delete all ACLs for resource filter `{resource}`? (y/n)"
            else:
                question = (
                    f"Are you sure you want to remove ACLs: \n {_lines(entries)}\n"
                    f" from resource filter `{resource}`? (y/n)"
                )
            if args.force or _confirm(question):
                _remove_acls(admin, resource, entries)
    return EXIT_OK


def _remove_acls(admin: AdminClient, resource: ResourcePattern, entries: list[AccessControlEntry]) -> None:
    filters = [_filter(resource, e) for e in entries] if entries else [_filter(resource)]
    removed: list[AclBinding] = []
    errors: list[str] = []
    for result in admin.delete_acls(filters).values():
        if isinstance(result, list):
            removed += result
        else:
            errors.append(str(result))
    if errors:
        raise CommandError("; ".join(errors))
    if removed:
        print(f"Removed ACLs for resource filter `{resource}`:\n{_lines(b.entry for b in removed)}\n")
    else:
        print(f"No ACLs matched resource filter `{resource}`.")


# -- registration ----------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    try:
        return run_reporting(f"acls {args.acls_command}", lambda: int(args.action(args)))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _resource_options(parser: argparse.ArgumentParser, pattern_types: tuple[str, ...]) -> None:
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        type=resource_name,
        metavar="TOPIC",
        help="a topic ('*': every topic); repeatable",
    )
    parser.add_argument(
        "--group",
        action="append",
        default=[],
        type=resource_name,
        metavar="GROUP",
        help="a consumer group ('*': every group); repeatable",
    )
    parser.add_argument(
        "--transactional-id",
        action="append",
        default=[],
        type=resource_name,
        metavar="ID",
        help="a transactional id ('*': every one); repeatable",
    )
    parser.add_argument("--cluster", action="store_true", help="the cluster resource")
    parser.add_argument(
        "--resource-pattern-type",
        type=specific_pattern_type if pattern_types == _SPECIFIC else pattern_filter_type,
        default=PatternType.LITERAL,
        metavar="|".join(pattern_types).upper(),
        help=_PATTERN_HELP if pattern_types == _SPECIFIC else _PATTERN_FILTER_HELP,
    )


def _entry_options(parser: argparse.ArgumentParser) -> None:
    for permission, done in (("allow", "allowed"), ("deny", "denied")):
        parser.add_argument(
            f"--{permission}-principal",
            action="append",
            default=[],
            type=principal,
            metavar="TYPE:NAME",
            help=f"principal to {permission} (User:alice; User:* for every user); repeatable",
        )
        parser.add_argument(
            f"--{permission}-host",
            action="append",
            default=[],
            metavar="HOST",
            help=f"host the {done} principals connect from; repeatable [*]",
        )
    parser.add_argument(
        "--operation",
        action="append",
        default=[],
        type=operation,
        metavar="OPERATION",
        help=f"operation, any case: {', '.join(OPERATION_NAMES)}; repeatable [All]",
    )
    parser.add_argument(
        "--producer", action="store_true", help="ACLs of a producer: WRITE, DESCRIBE, CREATE on the topics"
    )
    parser.add_argument(
        "--idempotent",
        action="store_true",
        help="with --producer: IDEMPOTENT_WRITE on the cluster too",
    )
    parser.add_argument(
        "--consumer",
        action="store_true",
        help="ACLs of a consumer: READ, DESCRIBE on the topics, READ on the groups",
    )


def register(commands: Any) -> None:
    """Add ``acls`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    acls = commands.add_parser(
        "acls",
        help="ACLs: add, list, remove (kafka-acls)",
        description=(
            "Manage ACL bindings (CreateAcls, DescribeAcls, DeleteAcls) with kafka-acls' options. "
            "Exit codes: 0 done, 1 a refusal (the Kafka error) or an unreachable broker, 2 bad usage."
        ),
    )
    sub = acls.add_subparsers(dest="acls_command", metavar="ACTION", required=True)
    common = connection_options(command_config=True)

    p_add = sub.add_parser(
        "add",
        parents=[common],
        help="add ACLs",
        description="Add ACLs: each principal x operation x host, on each resource (existing ones reported).",
    )
    _resource_options(p_add, _SPECIFIC)
    _entry_options(p_add)
    p_add.set_defaults(run=_run, action=_add)

    p_list = sub.add_parser(
        "list",
        parents=[common],
        help="list ACLs",
        description="List the ACLs of the resources named (every ACL without a resource option).",
    )
    _resource_options(p_list, _FILTERS)
    p_list.add_argument(
        "--principal",
        action="append",
        default=[],
        type=principal,
        metavar="TYPE:NAME",
        help="only this principal's ACLs; repeatable",
    )
    p_list.set_defaults(run=_run, action=_list)

    p_remove = sub.add_parser(
        "remove",
        parents=[common],
        help="remove ACLs",
        description=(
            "Remove the ACLs the options describe; without --allow-principal/--deny-principal every ACL "
            "of each resource. Asks for confirmation on a terminal unless --force."
        ),
    )
    _resource_options(p_remove, _FILTERS)
    _entry_options(p_remove)
    p_remove.add_argument("--force", action="store_true", help="remove without asking")
    p_remove.set_defaults(run=_run, action=_remove)
