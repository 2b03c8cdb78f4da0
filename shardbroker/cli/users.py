"""``shardbroker users add|list|delete``: SCRAM users (KIP-554), the short form of Kafka's
``kafka-configs --entity-type users --alter --add-config 'SCRAM-SHA-512=[iterations=8192,
password=...]'``. Opens sockets (through :mod:`shardbroker.client.admin`), so it works against
any Kafka cluster too; ``add --data-dir`` writes files instead.

``add NAME --mechanism M [--iterations N] [--password-file F]`` creates or replaces the user's
credential for one mechanism. The password is read from F, else from stdin (prompted for twice,
without echo, on a terminal); one trailing line break is dropped; an empty password is refused.
It is never a flag (flags end up in shell history and ``ps``) and never printed. The client salts
and iterates it (client/admin_users.py): only the salted password leaves this process.

``add ... --data-dir DIR`` bootstraps a broker that is not running, like ``kafka-storage format
--add-scram``: it takes the data dir's lock (so it refuses while a broker runs there), applies
the same checks as the controller, and appends the credential to DIR's metadata log, creating
the data dir when it is new. Unlike ``kafka-storage format``, it also works on a data dir that
already holds topics (e.g. to restore an admin user of a stopped broker).

Against a secured listener, ``--command-config FILE`` gives Kafka's client properties
(``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config``, ``ssl.truststore.location``...:
client/client_security.py), as ``kafka-configs --command-config``.

``list [NAME...]`` prints each user's mechanisms and iteration counts (never salts or keys),
``--format json`` for scripts; ``delete NAME --mechanism M`` removes one credential.

Exit codes as every client command (:mod:`shardbroker.cli.common`): 0 done; 1 a refusal, printed
with the Kafka error's name and the broker's reason (UNACCEPTABLE_CREDENTIAL, RESOURCE_NOT_FOUND,
UNSUPPORTED_SASL_MECHANISM...), an unreachable broker, a data dir in use; 2 bad usage (an empty
password, iterations out of range); 130 interrupted.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    CommandError,
    UsageError,
    admin_client,
    connection_options,
    integer,
    print_json,
    run_reporting,
    table,
)
from shardbroker.client.admin_users import DEFAULT_ITERATIONS
from shardbroker.security.scram_credential import MAX_ITERATIONS, ScramMechanism

if TYPE_CHECKING:
    from shardbroker.client.admin_users import ScramUpsertion

__all__ = ["read_password", "register", "run_interruptible"]

MECHANISMS = tuple(m.mechanism_name for m in ScramMechanism)
MIN_ITERATIONS = min(m.min_iterations for m in ScramMechanism)


def mechanism(text: str) -> ScramMechanism:
    try:
        return ScramMechanism.from_mechanism_name(text.upper())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"unknown SCRAM mechanism {text!r}: one of {', '.join(MECHANISMS)}"
        ) from None


def iterations(text: str) -> int:
    value = integer(text)
    if not MIN_ITERATIONS <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(
            f"must be in [{MIN_ITERATIONS}, {MAX_ITERATIONS}] (Kafka refuses others as "
            f"UNACCEPTABLE_CREDENTIAL), got {value}"
        )
    return value


# -- the password ------------------------------------------------------------------------------------


def _strip_line_break(data: bytes) -> bytes:
    """One trailing line break off: what ``echo pw >file`` or a here-string adds."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def read_password(user: str, password_file: Path | None) -> bytes:
    """The password as UTF-8 bytes (Kafka's clients encode it so): from ``password_file``, else
    from stdin, prompting twice without echo when stdin is a terminal. UsageError when empty."""
    if password_file is not None:
        try:
            password = _strip_line_break(password_file.read_bytes())
        except OSError as exc:
            raise CommandError(f"cannot read password file {password_file}: {exc.strerror or exc}") from None
    elif sys.stdin.isatty():
        first = getpass.getpass(f"Password for user '{user}': ")
        if getpass.getpass("Again: ") != first:
            raise UsageError("the two passwords differ")
        password = first.encode()
    else:
        password = _strip_line_break(sys.stdin.buffer.read())
    if not password:
        raise UsageError("refusing an empty password")
    return password


# -- actions ---------------------------------------------------------------------------------------


def _upsertion(args: argparse.Namespace) -> ScramUpsertion:
    from shardbroker.client.admin_users import scram_upsertion

    password = read_password(args.name, args.password_file)
    return scram_upsertion(args.name, args.mechanism, password, args.iterations)


def _add(args: argparse.Namespace) -> int:
    if args.data_dir is not None and (args.bootstrap_server is not None or args.command_config is not None):
        raise UsageError(
            "--data-dir writes into a stopped broker's data dir: "
            "it takes no --bootstrap-server or --command-config"
        )
    upsertion = _upsertion(args)
    what = f"{args.mechanism.mechanism_name} credential of user '{args.name}' ({args.iterations} iterations)"
    if args.data_dir is not None:
        cluster_id = _add_offline(args.data_dir, upsertion)
        print(f"set the {what} in data dir {args.data_dir} (cluster {cluster_id})")
        return EXIT_OK
    with admin_client(args) as admin:
        error = admin.alter_user_scram_credentials(upsertions=[upsertion])[args.name]
    if error is not None:
        raise error
    print(f"set the {what}")
    return EXIT_OK


def _add_offline(data_dir: Path, upsertion: ScramUpsertion) -> str:
    """Append the credential to the metadata log of a data dir no broker runs, through the same
    request translation and controller op as AlterUserScramCredentials; its cluster id."""
    from shardbroker.broker.handlers.alter_user_scram_credentials import controller_args
    from shardbroker.client.admin_users import alter_request
    from shardbroker.control.controller_state import OpContext, handle
    from shardbroker.control.metadata_log import DataDirLock, MetadataLog, MetadataLogError
    from shardbroker.protocol.errors import ErrorCode

    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except MetadataLogError as exc:
        raise CommandError(str(exc)) from None
    metadata = MetadataLog(data_dir)
    try:
        state = metadata.open()
        args = controller_args(alter_request([upsertion], []))
        outcome = handle(state, "alter_scram_credentials", args, OpContext(1))
        (result,) = outcome.result["results"]
        if result["error_code"]:
            name = ErrorCode(result["error_code"]).name
            raise CommandError(f"{name}: user '{upsertion.user}': {result['error_message']}")
        metadata.append(outcome.records, outcome.state)
        return metadata.cluster_id
    except (MetadataLogError, OSError) as exc:
        raise CommandError(f"data dir {data_dir}: {exc}") from None
    finally:
        metadata.close()
        lock.release()


def _list(args: argparse.Namespace) -> int:
    from shardbroker.client.connection import KafkaApiError

    with admin_client(args) as admin:
        described = admin.describe_user_scram_credentials(args.name or None)
    rows = [
        (user, c.mechanism, c.iterations)
        for user, creds in sorted(described.items())
        if not isinstance(creds, KafkaApiError)
        for c in creds
    ]
    if args.format == "json":
        print_json([{"user": u, "mechanism": mech, "iterations": n} for u, mech, n in rows])
    elif rows:
        print(table(("USER", "MECHANISM", "ITERATIONS"), rows))
    elif not args.name:
        print("No SCRAM users.")
    errors = [str(e) for e in described.values() if isinstance(e, KafkaApiError)]
    if errors:
        raise CommandError("; ".join(errors))
    return EXIT_OK


def _delete(args: argparse.Namespace) -> int:
    from shardbroker.client.admin_users import ScramDeletion

    with admin_client(args) as admin:
        error = admin.alter_user_scram_credentials(deletions=[ScramDeletion(args.name, args.mechanism)])[
            args.name
        ]
    if error is not None:
        raise error
    print(f"deleted the {args.mechanism.mechanism_name} credential of user '{args.name}'")
    return EXIT_OK


# -- registration ----------------------------------------------------------------------------------


def run_interruptible(label: str, action: Callable[[], int]) -> int:
    """``run_reporting``, and Ctrl-C at the password prompt exits 130 without a traceback."""
    try:
        return run_reporting(label, action)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    return run_interruptible(f"users {args.users_command}", lambda: int(args.action(args)))


def register(commands: Any) -> None:
    """Add ``users`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    users = commands.add_parser(
        "users",
        help="SCRAM users: add, list, delete",
        description=(
            "Manage SCRAM-SHA-256/512 credentials (Describe/AlterUserScramCredentials, KIP-554). "
            "Passwords are read from a file or stdin, never from a flag. Exit codes: 0 done, 1 a refusal "
            "(the Kafka error and the broker's reason) or an unreachable broker, 2 bad usage."
        ),
    )
    sub = users.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    mechanism_help = f"the SCRAM mechanism: {' or '.join(MECHANISMS)}"

    p_add = sub.add_parser(
        "add",
        parents=[connection_options(bootstrap_default=None, command_config=True)],
        allow_abbrev=False,  # no `--password X` taken for --password-file: passwords are never flags
        help="create or replace a user's credential",
        description=(
            "Create or replace the user's credential for one mechanism. The password comes from "
            "--password-file, else from stdin (asked for twice, not echoed, on a terminal); the client "
            "salts and iterates it and sends only the result. With --data-dir, writes the credential into "
            "the metadata log of a data dir no broker is running (bootstrapping, like kafka-storage "
            "format --add-scram)."
        ),
    )
    p_add.add_argument("name", metavar="NAME", help="the user name (the SASL username)")
    p_add.add_argument("--mechanism", type=mechanism, required=True, metavar="MECHANISM", help=mechanism_help)
    p_add.add_argument(
        "--iterations",
        type=iterations,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"PBKDF2 iterations, {MIN_ITERATIONS}-{MAX_ITERATIONS} [{DEFAULT_ITERATIONS}]",
    )
    p_add.add_argument(
        "--password-file", type=Path, metavar="FILE", help="read the password from FILE [stdin]"
    )
    p_add.add_argument(
        "--data-dir",
        type=Path,
        metavar="DIR",
        help="write into this data dir's metadata log instead of asking a broker (which must be stopped)",
    )
    p_add.set_defaults(run=_run, action=_add)

    common = connection_options(command_config=True)
    p_list = sub.add_parser(
        "list",
        parents=[common],
        help="users with their mechanisms and iteration counts",
        description="One line per credential: user, mechanism, iterations (salts and keys are never shown).",
    )
    p_list.add_argument("name", nargs="*", metavar="NAME", help="users to show [every SCRAM user]")
    p_list.add_argument(
        "--format", choices=("text", "json"), default="text", help="text (a table) or json [text]"
    )
    p_list.set_defaults(run=_run, action=_list)

    p_delete = sub.add_parser(
        "delete",
        parents=[common],
        help="delete a user's credential",
        description="Delete the user's credential for one mechanism (RESOURCE_NOT_FOUND when there is none).",
    )
    p_delete.add_argument("name", metavar="NAME", help="the user name")
    p_delete.add_argument(
        "--mechanism", type=mechanism, required=True, metavar="MECHANISM", help=mechanism_help
    )
    p_delete.set_defaults(run=_run, action=_delete)
