"""``shardbroker metrics-password NAME``: a password hash for ``metrics.basic.auth.users``.

Reads the password as ``users add`` does (``--password-file``, else stdin, asked for twice
without echo on a terminal; never a flag), and prints one TOML line to paste under
``[metrics.basic.auth.users]``: ``NAME = "pbkdf2_sha256$600000$<salt>$<hash>"``
(security/password_hash.py). Needs no broker. Exit codes: 0 printed, 1 an unreadable password
file, 2 bad usage (an empty password, a ':' in the name, iterations out of range), 130
interrupted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shardbroker.cli.common import EXIT_OK, UsageError, integer
from shardbroker.cli.users import read_password, run_interruptible
from shardbroker.security.password_hash import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    MIN_ITERATIONS,
    PasswordHash,
)

__all__ = ["register"]


def _iterations(text: str) -> int:
    value = integer(text)
    if not MIN_ITERATIONS <= value <= MAX_ITERATIONS:
        raise argparse.ArgumentTypeError(f"must be in [{MIN_ITERATIONS}, {MAX_ITERATIONS}], got {value}")
    return value


def _run(args: argparse.Namespace) -> int:
    def action() -> int:
        if not args.name or ":" in args.name:
            raise UsageError("a basic-auth user name is not empty and has no ':' (RFC 7617)")
        password = read_password(args.name, args.password_file)
        hashed = PasswordHash.create(password, args.iterations)
        print(f"{json.dumps(args.name)} = {json.dumps(hashed.text())}")
        return EXIT_OK

    return run_interruptible("metrics-password", action)


def register(commands: Any) -> None:
    """Add ``metrics-password`` to the ``shardbroker`` sub-commands (argparse's subparsers)."""
    parser = commands.add_parser(
        "metrics-password",
        allow_abbrev=False,  # no `--password X` taken for --password-file: passwords are never flags
        help="hash a password for metrics.basic.auth.users",
        description=(
            'Print a TOML line NAME = "pbkdf2_sha256$..." for the [metrics.basic.auth.users] table '
            "(HTTP basic auth on /metrics). The password comes from --password-file, else from stdin "
            "(asked for twice, not echoed, on a terminal); only its salted hash is printed."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the user name Prometheus sends (basic_auth username)")
    parser.add_argument(
        "--iterations",
        type=_iterations,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=f"PBKDF2-HMAC-SHA256 iterations, {MIN_ITERATIONS}-{MAX_ITERATIONS} [{DEFAULT_ITERATIONS}]",
    )
    parser.add_argument(
        "--password-file", type=Path, metavar="FILE", help="read the password from FILE [stdin]"
    )
    parser.set_defaults(run=_run)
