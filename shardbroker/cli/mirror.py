"""``shardbroker mirror``: replicate topics from a source cluster to a target cluster
(MirrorMaker 2's job; shardbroker/mirror/), and ``shardbroker mirror status``.

``shardbroker mirror --config mirror.toml [--source HOST:PORT] [--target HOST:PORT]
[--topics REGEXES] [--metrics HOST:PORT]``: the file holds MirrorMaker 2's property names
(mirror_config.py); the flags override ``source.cluster.bootstrap.servers``,
``target.cluster.bootstrap.servers`` and ``topics``. It runs until SIGTERM or SIGINT, then
drains (what was fetched is produced, positions saved) and exits 0. A cluster that cannot be
reached, at start or later, is retried with backoff, as MirrorMaker 2 does: the mirror logs each
failure and waits. Exit 1: it could not start (a bad config file, ``--metrics`` port in use) or
stopped on an error (another mirror with the same transactional id took over); 2: bad usage.
A one-line summary (records/s, lag) is logged every 10 s.

``shardbroker mirror status --config mirror.toml`` prints per partition lag and each group's
translated offsets (shardbroker/mirror/mirror_status.py).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from shardbroker.cli.common import EXIT_ERROR, EXIT_USAGE, bootstrap
from shardbroker.client.connection import AdminClientError, parse_address
from shardbroker.config.config_def import ConfigError

__all__ = ["register"]

#: flag destination -> MirrorMaker 2 property it overrides.
FLAG_PROPERTIES = {
    "source": "source.cluster.bootstrap.servers",
    "target": "target.cluster.bootstrap.servers",
    "topics": "topics",
}


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "mirror",
        help="replicate topics from a source cluster to a target cluster (MirrorMaker 2's job)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", nargs="?", choices=["status"], help="status: lag and translated offsets")
    parser.add_argument("--config", type=Path, help="TOML file of MirrorMaker 2 properties")
    parser.add_argument("--source", type=bootstrap, metavar="HOST:PORT", help=FLAG_PROPERTIES["source"])
    parser.add_argument("--target", type=bootstrap, metavar="HOST:PORT", help=FLAG_PROPERTIES["target"])
    parser.add_argument("--topics", metavar="REGEXES", help="comma-separated regexes (topics)")
    parser.add_argument("--metrics", metavar="HOST:PORT", help="serve Prometheus metrics here")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from shardbroker.mirror.mirror_config import MirrorConfig

    overrides = {prop: getattr(args, dest) for dest, prop in FLAG_PROPERTIES.items() if getattr(args, dest)}
    if args.config is None and not overrides:
        print("shardbroker mirror: error: give --config FILE (or --source and --target)", file=sys.stderr)
        return EXIT_USAGE
    try:
        config = MirrorConfig.load(args.config, overrides)
    except (ConfigError, OSError) as exc:
        print(f"shardbroker mirror: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.action == "status":
        return _status(config)
    return _mirror(config, args.metrics)


def _status(config: Any) -> int:
    try:
        status = importlib.import_module("shardbroker.mirror.mirror_status")
    except ImportError:
        print(
            "shardbroker mirror status: error: not available in this build (mirror_status)", file=sys.stderr
        )
        return EXIT_ERROR
    try:
        return int(status.print_status(config, sys.stdout))
    except AdminClientError as exc:
        print(f"shardbroker mirror status: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _mirror(config: Any, metrics_address: str | None) -> int:
    from shardbroker.mirror.mirror_maker import MirrorMaker
    from shardbroker.mirror.mirror_metrics import MirrorMetrics

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metrics = MirrorMetrics()
    if metrics_address:
        try:
            host, port = parse_address(metrics_address)
            metrics.serve(host, port)
        except (ValueError, OSError) as exc:
            print(f"shardbroker mirror: error: --metrics {metrics_address}: {exc}", file=sys.stderr)
            return EXIT_ERROR
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.getLogger("shardbroker.mirror").info(
        "mirroring %s (%s) -> %s (%s), %s",
        config.source.alias,
        ",".join(config.source.bootstrap_servers),
        config.target.alias,
        ",".join(config.target.bootstrap_servers),
        "exactly-once (target transactions)" if config.exactly_once else "idempotent",
    )
    try:
        return MirrorMaker(config, metrics).run(stop)
    except AdminClientError as exc:
        print(f"shardbroker mirror: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
