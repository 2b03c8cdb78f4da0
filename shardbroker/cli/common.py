"""What the client sub-commands (``topics``, ``produce``, ``consume``, ``groups``) share: the
connection options, argument types, exit codes, error reporting and table output.

Exit codes, the same for every client command: 0 done; 1 a runtime error (broker unreachable,
unknown topic or group, a Kafka error, a record that could not be produced: the message names
the Kafka error, e.g. ``UNKNOWN_TOPIC_OR_PARTITION``); 2 bad usage (argparse's); 130 stopped by
SIGINT/SIGTERM (the shell's 128 + SIGINT). The connection options are Kafka's tools' own
``--bootstrap-server HOST:PORT[,HOST:PORT]`` (default ``127.0.0.1:9092``) and ``--timeout MS``,
and for the admin commands that take it ``--command-config FILE`` (TLS and SASL settings).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardbroker.client.admin import AdminClient

__all__ = [
    "DEFAULT_BOOTSTRAP",
    "DEFAULT_TIMEOUT_MS",
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "UsageError",
    "admin_client",
    "connection_options",
    "integer",
    "name_value",
    "non_negative_int",
    "positive_int",
    "print_json",
    "run_reporting",
    "table",
    "timeout_ms",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TIMEOUT_MS = 10000


class CommandError(Exception):
    """A runtime refusal of a client command: printed, exit 1."""


class UsageError(Exception):
    """A combination of arguments argparse cannot check by itself: printed, exit 2."""


# -- argument types ------------------------------------------------------------------------------


def bootstrap(text: str) -> str:
    """``HOST:PORT[,HOST:PORT...]``, each address checked."""
    from shardbroker.client.connection import parse_address

    try:
        for part in text.split(","):
            if part.strip():
                parse_address(part)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not text.strip(" ,"):
        raise argparse.ArgumentTypeError("no address given")
    return text


def timeout_ms(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of milliseconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 ms, got {value}")
    return value


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def name_value(text: str) -> tuple[str, str]:
    """``NAME=VALUE`` (``--config``, ``--property``): the value may contain ``=`` or be empty."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE (e.g. retention.ms=86400000), got {text!r}")
    return name, value


def connection_options(
    *, bootstrap_default: str | None = DEFAULT_BOOTSTRAP, command_config: bool = False
) -> argparse.ArgumentParser:
    """A parent parser with ``--bootstrap-server`` and ``--timeout`` (``args.timeout`` in ms), and
    with ``command_config`` Kafka's ``--command-config FILE`` (client security settings for
    `admin_client`: client/client_security.py). ``bootstrap_default=None`` tells whether the flag
    was given (`admin_client` still connects to ``DEFAULT_BOOTSTRAP`` without it)."""
    common = argparse.ArgumentParser(add_help=False)
    if command_config:
        common.add_argument(
            "--command-config",
            type=Path,
            metavar="FILE",
            help="Kafka client properties: security.protocol, sasl.mechanism, sasl.jaas.config, "
            "ssl.truststore.location, ssl.keystore.location... [PLAINTEXT]",
        )
    common.add_argument(
        "--bootstrap-server",
        type=bootstrap,
        default=bootstrap_default,
        metavar="HOST:PORT[,HOST:PORT]",
        help=f"broker(s) to connect to [{DEFAULT_BOOTSTRAP}]",
    )
    common.add_argument(
        "--timeout",
        type=timeout_ms,
        default=DEFAULT_TIMEOUT_MS,
        metavar="MS",
        help=f"time to wait for a connection or an answer, in ms [{DEFAULT_TIMEOUT_MS}]",
    )
    return common


def admin_client(args: argparse.Namespace) -> AdminClient:
    """An admin client for the parsed connection options."""
    from shardbroker.client.admin import AdminClient
    from shardbroker.client.client_security import ClientSecurity

    security = None
    config_file: Path | None = getattr(args, "command_config", None)
    if config_file is not None:
        try:
            security = ClientSecurity.from_file(config_file)
        except ValueError as exc:
            raise UsageError(f"--command-config {exc}") from None
    return AdminClient(
        args.bootstrap_server or DEFAULT_BOOTSTRAP, timeout=args.timeout / 1000.0, security=security
    )


# -- running ---------------------------------------------------------------------------------------


def run_reporting(label: str, action: Callable[[], int]) -> int:
    """Run ``action``; a client error or :class:`CommandError` is printed as
    ``shardbroker LABEL: error: ...`` with exit 1, a :class:`UsageError` with exit 2."""
    from shardbroker.client.connection import AdminClientError

    try:
        return action()
    except (AdminClientError, CommandError) as exc:
        print(f"shardbroker {label}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except UsageError as exc:
        print(f"shardbroker {label}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


# -- output --------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns padded to their widest cell (None prints as ``-``), as Kafka's tools print."""
    cells = [list(headers), *[["-" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False))
