"""``shardbroker quotas --describe|--alter``: client quotas, Kafka's ``kafka-configs
--entity-type users|clients`` for quotas (Describe/AlterClientQuotas, KIP-546). Opens sockets
(through :mod:`shardbroker.client.admin`), so it works against any Kafka cluster too.

An entity is one or two ``--entity-type`` (``users``, ``clients``), each followed by
``--entity-name NAME`` or ``--entity-default``, as kafka-configs takes them::

    shardbroker quotas --alter --entity-type users --entity-name alice \\
        --entity-type clients --entity-default --add-config producer_byte_rate=1048576
    shardbroker quotas --describe --entity-type users            # every user entity
    shardbroker quotas --alter --entity-type clients --entity-name etl --delete-config request_percentage

``--describe`` prints kafka-configs' lines (``Quota configs for user-principal 'alice',
the default client-id are producer_byte_rate=1048576.0``), or JSON with ``--format json``; a type
without a name matches every entity of that type. Exit codes as every client command: 0 done, 1 a
refusal (the Kafka error's name and the broker's reason, e.g. INVALID_REQUEST for an unknown key
or a value of 0), 2 bad usage.
"""

from __future__ import annotations

import argparse
from typing import Any

from shardbroker.cli.common import (
    EXIT_OK,
    UsageError,
    admin_client,
    connection_options,
    print_json,
    run_reporting,
)
from shardbroker.metadata.client_quotas import CLIENT_ID, USER, QuotaEntity

__all__ = ["register"]

_TYPES = {"users": USER, "clients": CLIENT_ID}
_DEFAULT = object()  # --entity-default in the parsed name list


class _Name(argparse.Action):
    """Append the name (or the default) to one list, in order, for pairing with the types."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: str | None = None) -> None:
        names = list(getattr(namespace, "names", None) or [])
        names.append(_DEFAULT if self.const is _DEFAULT else values)
        namespace.names = names


def _entity(args: argparse.Namespace) -> list[tuple[str, str | object | None]]:
    """(type, name) pairs: a name, ``_DEFAULT``, or ``...`` for a type without one (any name:
    --describe only)."""
    types = [_TYPES[t] for t in args.entity_type or []]
    names = list(args.names or [])
    if not types:
        raise UsageError("give --entity-type users and/or --entity-type clients")
    if len(set(types)) != len(types):
        raise UsageError("each --entity-type may be given once")
    if len(names) > len(types):
        raise UsageError("more --entity-name/--entity-default than --entity-type")
    return [(t, names[i] if i < len(names) else ...) for i, t in enumerate(types)]


def _configs(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--add-config wants key=value, got {item!r}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise UsageError(f"--add-config {key}: not a number: {value!r}") from None
    return out


def _text(entity: QuotaEntity) -> str:
    parts = []
    for kind, name in sorted(entity, key=lambda e: e[0] != USER):
        label = "user-principal" if kind == USER else "client-id"
        parts.append(f"the default {label}" if name is None else f"{label} '{name}'")
    return ", ".join(parts)


def _alter(args: argparse.Namespace) -> int:
    pairs = _entity(args)
    if any(name is ... for _, name in pairs):
        raise UsageError("--alter needs --entity-name or --entity-default after each --entity-type")
    entity: QuotaEntity = tuple(sorted((t, None if n is _DEFAULT else str(n)) for t, n in pairs))
    ops: dict[str, float | None] = dict(_configs(args.add_config or ""))
    for key in filter(None, (k.strip() for k in (args.delete_config or "").split(","))):
        ops[key] = None
    if not ops:
        raise UsageError("--alter needs --add-config and/or --delete-config")
    with admin_client(args) as admin:
        error = admin.alter_client_quotas({entity: ops})[entity]
    if error is not None:
        raise error
    print(f"Completed updating config for {_text(entity)}.")
    return EXIT_OK


def _describe(args: argparse.Namespace) -> int:
    from shardbroker.client.admin_quotas import MATCH_DEFAULT, MATCH_EXACT, MATCH_SPECIFIED

    components: list[tuple[str, int, str | None]] = []
    for kind, name in _entity(args):
        if name is ...:
            components.append((kind, MATCH_SPECIFIED, None))
        elif name is _DEFAULT:
            components.append((kind, MATCH_DEFAULT, None))
        else:
            components.append((kind, MATCH_EXACT, str(name)))
    with admin_client(args) as admin:
        found = admin.describe_client_quotas(components, strict=True)
    if args.format == "json":
        print_json(
            [
                {"entity": {kind: name for kind, name in entity}, "quotas": values}
                for entity, values in sorted(found.items(), key=lambda kv: _text(kv[0]))
            ]
        )
        return EXIT_OK
    for entity, values in sorted(found.items(), key=lambda kv: _text(kv[0])):
        configs = ", ".join(f"{k}={v}" for k, v in sorted(values.items()))
        print(f"Quota configs for {_text(entity)} are {configs}")
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    action = _alter if args.alter else _describe
    return run_reporting("quotas", lambda: action(args))


def register(commands: Any) -> None:
    """Add ``quotas`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    p = commands.add_parser(
        "quotas",
        parents=[connection_options(command_config=True)],
        help="client quotas: describe, alter (kafka-configs --entity-type users/clients)",
        description=(
            "Describe or alter client quotas (producer_byte_rate, consumer_byte_rate, request_percentage, "
            "controller_mutation_rate) of users, client ids, or (user, client id) pairs, <default> "
            "included. Exit codes: 0 done, 1 a refusal (the Kafka error and the broker's reason) or an "
            "unreachable broker, 2 bad usage."
        ),
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--describe", action="store_true", help="print the quotas of the matching entities")
    what.add_argument(
        "--alter", action="store_true", help="set (--add-config) or remove (--delete-config) quotas"
    )
    p.add_argument(
        "--entity-type", action="append", choices=sorted(_TYPES), help="users or clients (twice: both)"
    )
    p.add_argument("--entity-name", action=_Name, metavar="NAME", help="the entity's name")
    p.add_argument("--entity-default", action=_Name, nargs=0, const=_DEFAULT, help="the <default> entity")
    p.add_argument("--add-config", metavar="K=V[,K=V]", help="quotas to set, e.g. producer_byte_rate=1048576")
    p.add_argument("--delete-config", metavar="K[,K]", help="quotas to remove")
    p.add_argument("--format", choices=("text", "json"), default="text", help="--describe's output [text]")
    p.set_defaults(run=_run, names=[])
