"""The ``shardbroker`` command: one entry point, one sub-command per operator task.

Sub-commands arrive with the issues that build them; each refusal says why and exits non-zero
(2 for bad usage, as argparse; see serve.py for the others).

``serve`` flags are translated to the Kafka property names of the config file (``--listen`` is
``listeners``, ``--data-dir`` is ``log.dirs``...) and layered over it, so a flag and a config key
can never mean two different things, and ``BrokerConfig.load`` validates both the same way.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from shardbroker import __version__
from shardbroker.cli import acls as acls_cli
from shardbroker.cli import check as check_cli
from shardbroker.cli import consume as consume_cli
from shardbroker.cli import dump_log as dump_log_cli
from shardbroker.cli import groups as groups_cli
from shardbroker.cli import metrics_password as metrics_password_cli
from shardbroker.cli import mirror as mirror_cli
from shardbroker.cli import partitions as partitions_cli
from shardbroker.cli import perf as perf_cli
from shardbroker.cli import produce as produce_cli
from shardbroker.cli import quotas as quotas_cli
from shardbroker.cli import topics as topics_cli
from shardbroker.cli import transactions as transactions_cli
from shardbroker.cli import users as users_cli
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import BROKER_CONFIGS
from shardbroker.config.config_def import ConfigError
from shardbroker.config.sasl import check_sasl_listeners

EXIT_USAGE = 2

#: flag destination -> Kafka property name in the config file.
FLAG_PROPERTIES = {
    "data_dir": "log.dirs",
    "workers": "workers",
    "listen": "listeners",
    "advertise": "advertised.listeners",
    "metrics": "metrics.listen",
}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _config_keys_help() -> str:
    lines = ["config file keys (TOML; Kafka's server.properties names, quoted or dotted):"]
    column = max(map(len, BROKER_CONFIGS)) + 2  # a name never runs into its description
    for name, key in BROKER_CONFIGS.items():
        doc = key.doc if key.default is None or key.sensitive else f"{key.doc} [{key.default}]"
        lines.append(
            textwrap.fill(
                doc,
                width=100,
                initial_indent=f"  {name:<{column}}",
                subsequent_indent=" " * (column + 2),
                break_long_words=False,
            )
        )
    lines.append("")
    lines.append(
        'example: "log.retention.hours" = 24     "num.partitions" = 3     listeners = "127.0.0.1:9092"'
    )
    lines.append("the ssl.* keys may be set for one listener as listener.name.<listener in lower case>.ssl.*")
    lines.append("flags override the file. Exit codes: 0 after a drain, 1 could not start, 2 bad usage,")
    lines.append("3 a worker failed to boot.")
    return "\n".join(lines)


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        prop: str(getattr(args, dest))
        for dest, prop in FLAG_PROPERTIES.items()
        if getattr(args, dest) is not None
    }
    try:
        config = BrokerConfig.load(args.config, overrides)
        check_sasl_listeners(config, [(e.listener, e.security_protocol) for e in config.listeners])
    except ConfigError as exc:
        print(f"shardbroker serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from shardbroker.serve import run_cli  # the broker's machinery only for the command that runs it

    return run_cli(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shardbroker", description="A Kafka-compatible broker for one host."
    )
    parser.add_argument("--version", action="version", version=f"shardbroker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run the broker in the foreground",
        description=(
            "Run the broker in the foreground: a supervisor and one worker process per core. Worker i "
            "is Kafka node i and listens on PORT+i. Prints 'shardbroker: node I listening on HOST:PORT' "
            "for each worker once all are ready; SIGTERM or SIGINT drains and exits 0."
        ),
        epilog=_config_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file of broker settings (keys below)"
    )
    serve.add_argument(
        "--data-dir", metavar="DIR", help="where topics and metadata live (log.dirs) [./shardbroker-data]"
    )
    serve.add_argument(
        "--workers", type=_positive_int, metavar="N", help="worker processes (workers) [cores available]"
    )
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="worker 0's address, one PLAINTEXT listener, or Kafka's NAME://HOST:PORT,... list; "
        "worker i uses PORT+i (listeners) [127.0.0.1:9092]",
    )
    serve.add_argument(
        "--advertise",
        metavar="HOST",
        help="host name given to clients for every listener, or Kafka's NAME://HOST:PORT,... "
        "(advertised.listeners) [each listener's host]",
    )
    serve.add_argument(
        "--metrics", metavar="HOST:PORT", help="Prometheus /metrics address (metrics.listen) [127.0.0.1:9404]"
    )
    serve.set_defaults(run=_serve)
    topics_cli.register(commands)
    produce_cli.register(commands)
    consume_cli.register(commands)
    groups_cli.register(commands)
    partitions_cli.register(commands)
    users_cli.register(commands)
    acls_cli.register(commands)
    quotas_cli.register(commands)
    transactions_cli.register(commands)
    metrics_password_cli.register(commands)
    dump_log_cli.register(commands)
    check_cli.register(commands)
    perf_cli.register(commands)
    mirror_cli.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
