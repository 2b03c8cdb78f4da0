"""The ``shardbroker`` command: one entry point, one sub-command per operator task.

Sub-commands arrive with the issues that build them; each refusal says why and exits non-zero.
"""

from __future__ import annotations

import argparse
import sys

from shardbroker import __version__


def _serve(args: argparse.Namespace) -> int:
    print(
        "shardbroker serve: the broker (supervisor and workers) is not built yet; "
        "this release has the protocol codec, record batches and the partition log only.",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardbroker", description="A Kafka-compatible broker for one host."
    )
    parser.add_argument("--version", action="version", version=f"shardbroker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser("serve", help="run the broker in the foreground")
    serve.set_defaults(run=_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
