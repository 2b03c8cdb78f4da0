"""``shardbroker perf produce|consume|e2e``: load tools in the manner of Kafka's
kafka-producer-perf-test and kafka-consumer-perf-test, speaking the Kafka protocol through
confluent-kafka (librdkafka: what users measure with), so they work against any Kafka cluster.

A progress line goes to stderr every second (records/s, MB/s, and for produce and e2e the avg and
p99 latency of that second); the summary (p50/p95/p99/p99.9 latency and throughput; for e2e
the producer's produce->ack latency as well) goes to stdout, as text or, with ``--json``, as one
JSON document. The work is done by :mod:`shardbroker.loadgen` (processes, clients,
statistics); this module parses and prints.

Exit codes (shardbroker/cli/common.py's): 0 done; 1 a runtime failure (confluent-kafka missing,
broker unreachable, delivery or fetch errors, fewer records than asked for); 2 bad usage; 130
stopped by SIGINT (Ctrl-C), after printing the summary of what ran until then.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import TYPE_CHECKING, Any

from shardbroker.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    connection_options,
    name_value,
    positive_int,
)

if TYPE_CHECKING:
    from shardbroker.loadgen.runner import Result

__all__ = ["register"]

DEFAULT_TOPIC = "shardbroker-perf"
INSTALL_HINT = (
    "shardbroker perf needs confluent-kafka (librdkafka), the Kafka client it measures with: "
    "pip install 'confluent-kafka>=2.3' (it comes with pip install -e '.[test]')"
)


# -- argument types ------------------------------------------------------------------------------


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 s, got {text}")
    return value


def _throughput(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate in records/s: {text!r}") from None
    if value <= 0 and value != -1:
        raise argparse.ArgumentTypeError(f"must be more than 0 records/s, or -1 for no limit; got {text}")
    return value


# -- running -------------------------------------------------------------------------------------


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _report(args: argparse.Namespace, result: Result, wanted: int | None) -> int:
    from shardbroker.loadgen.stats import latency_percentiles

    summary = result.summary
    acks = latency_percentiles(result.ack_latencies)  # e2e only: the producer's side
    if args.json:
        doc = summary.as_json()
        if acks is not None:
            doc["ack_latency_ms"] = acks
        doc["failures"] = result.errors
        print(json.dumps(doc, indent=2))
    else:
        print(summary.text())
        if acks is not None:
            print("produce->ack latency ms: " + "  ".join(f"{k} {v:.2f}" for k, v in acks.items()))
    problems = list(result.errors)
    if summary.errors and not problems:
        problems.append(f"{summary.errors} records failed")
    if wanted is not None and summary.records < wanted:
        verb = "acknowledged" if args.perf_command == "produce" else "received"
        problems.append(f"{summary.records:,} of {wanted:,} records {verb}")
    for problem in problems:
        print(f"shardbroker perf {args.perf_command}: error: {problem}", file=sys.stderr)
    if result.interrupted:
        print(
            f"shardbroker perf {args.perf_command}: interrupted; the summary covers what ran", file=sys.stderr
        )
        return EXIT_INTERRUPTED
    return EXIT_ERROR if problems else EXIT_OK


def _producer_config(args: argparse.Namespace) -> dict[str, str]:
    config = {"acks": args.acks, "linger.ms": str(args.linger_ms)}
    if args.batch_size is not None:
        config["batch.size"] = str(args.batch_size)
    config.update(dict(args.producer_prop or []))
    return config


def _records(args: argparse.Namespace, default: int) -> int | None:
    """The count asked for; None with --duration alone (as many as the time allows)."""
    asked: int | None = args.num_records
    if asked is None and args.duration is None:
        return default
    return asked


def _produce(args: argparse.Namespace) -> int:
    from shardbroker.loadgen.clients import ProducerSettings
    from shardbroker.loadgen.runner import ensure_topic, run_produce

    partitions = len(ensure_topic(args.bootstrap_server, args.topic, args.partitions, args.timeout / 1000))
    records = _records(args, 1_000_000)
    settings = ProducerSettings(
        bootstrap=args.bootstrap_server,
        topic=args.topic,
        record_size=args.record_size,
        records=records,
        duration=args.duration,
        throughput=args.throughput,
        config=_producer_config(args),
        connect_timeout=args.timeout / 1000,
    )
    config = {
        "record_size": args.record_size,
        "partitions": partitions,
        "producers": args.producers,
        "throughput": args.throughput,
        "producer": settings.config,
    }
    return _report(args, run_produce(settings, args.producers, config, _progress), records)


def _consume(args: argparse.Namespace) -> int:
    from shardbroker.loadgen.clients import ConsumerSettings
    from shardbroker.loadgen.runner import run_consume

    settings = ConsumerSettings(
        bootstrap=args.bootstrap_server,
        topic=args.topic,
        records=args.num_records,
        duration=args.duration,
        idle_timeout=args.idle_timeout,
        group=args.group,
        config=dict(args.consumer_prop or []),
        connect_timeout=args.timeout / 1000,
    )
    config = {"group": args.group, "consumer": settings.config}
    return _report(args, run_consume(settings, config, _progress), args.num_records)


def _e2e(args: argparse.Namespace) -> int:
    from shardbroker.loadgen.clients import ConsumerSettings, ProducerSettings
    from shardbroker.loadgen.runner import ensure_topic, run_e2e

    partitions = len(ensure_topic(args.bootstrap_server, args.topic, args.partitions, args.timeout / 1000))
    records = _records(args, 10_000)
    producer = ProducerSettings(
        bootstrap=args.bootstrap_server,
        topic=args.topic,
        record_size=args.record_size,
        records=records,
        duration=args.duration,
        throughput=args.throughput,
        config=_producer_config(args),
        stamp=True,
        connect_timeout=args.timeout / 1000,
    )
    consumer = ConsumerSettings(
        bootstrap=args.bootstrap_server,
        topic=args.topic,
        records=None,
        duration=None,
        idle_timeout=args.idle_timeout,
        from_end=True,
        stamped=True,
        config=dict(args.consumer_prop or []),
        connect_timeout=args.timeout / 1000,
    )
    config = {
        "record_size": args.record_size,
        "partitions": partitions,
        "throughput": args.throughput,
        "producer": producer.config,
        "consumer": consumer.config,
    }
    return _report(args, run_e2e(producer, consumer, config, _progress), records)


def _run(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("confluent_kafka") is None:
        print(f"shardbroker perf: error: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_ERROR
    if args.perf_command == "e2e" and args.record_size < 8:
        print(
            "shardbroker perf e2e: error: --record-size must be at least 8 (the send time is in the value)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    from shardbroker.loadgen.runner import LoadError

    try:
        code: int = args.action(args)
        return code
    except LoadError as exc:
        print(f"shardbroker perf {args.perf_command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR


# -- parser --------------------------------------------------------------------------------------


def register(commands: Any) -> None:
    """Add ``perf`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    common = argparse.ArgumentParser(add_help=False, parents=[connection_options()])
    common.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic [{DEFAULT_TOPIC}]")
    common.add_argument(
        "--num-records",
        type=positive_int,
        metavar="N",
        help="records to produce or read (produce: 1,000,000 unless --duration; e2e: 10,000)",
    )
    common.add_argument("--duration", type=_seconds, metavar="S", help="run for S seconds instead of a count")
    common.add_argument("--json", action="store_true", help="print the summary as JSON")

    producing = argparse.ArgumentParser(add_help=False)
    producing.add_argument(
        "--record-size", type=positive_int, default=100, metavar="BYTES", help="value size [100]"
    )
    producing.add_argument(
        "--partitions",
        type=positive_int,
        default=4,
        metavar="N",
        help="partitions when the topic has to be created (an existing topic keeps its own) [4]",
    )
    producing.add_argument("--acks", choices=("0", "1", "all", "-1"), default="all", help="[all]")
    producing.add_argument(
        "--batch-size", type=positive_int, metavar="BYTES", help="batch.size [librdkafka's]"
    )
    producing.add_argument(
        "--producer-prop",
        type=name_value,
        action="append",
        metavar="KEY=VALUE",
        help="any librdkafka producer property (repeatable), e.g. compression.type=lz4",
    )

    consuming = argparse.ArgumentParser(add_help=False)
    consuming.add_argument(
        "--idle-timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="stop after S seconds without a record [5]",
    )
    consuming.add_argument(
        "--consumer-prop",
        type=name_value,
        action="append",
        metavar="KEY=VALUE",
        help="any librdkafka consumer property (repeatable)",
    )

    perf = commands.add_parser(
        "perf",
        help="load tools: produce, consume, end-to-end latency",
        description=(
            "Load tools like Kafka's kafka-producer-perf-test and kafka-consumer-perf-test, through "
            "confluent-kafka, so they work against any Kafka cluster. A progress line every second "
            "(stderr), then a summary with p50/p95/p99/p99.9 latency and throughput (stdout; --json). "
            "Exit codes: 0 done, 1 runtime failure, 2 bad usage, 130 interrupted (after the summary)."
        ),
    )
    sub = perf.add_subparsers(dest="perf_command", metavar="TOOL", required=True)

    p = sub.add_parser(
        "produce",
        parents=[common, producing],
        help="producer throughput and latency",
        description="Produce records as fast as allowed; latency = produce() to acknowledgement.",
    )
    p.add_argument(
        "--throughput",
        type=_throughput,
        default=-1.0,
        metavar="RECORDS/S",
        help="rate limit over all producers, -1 for none [-1]",
    )
    p.add_argument("--linger-ms", type=float, default=5.0, metavar="MS", help="linger.ms [5]")
    p.add_argument("--producers", type=positive_int, default=1, metavar="N", help="producer processes [1]")
    p.set_defaults(run=_run, action=_produce)

    c = sub.add_parser(
        "consume",
        parents=[common, consuming],
        help="consumer throughput",
        description=(
            "Read the topic from the beginning (every partition assigned, no group) or, with --group, "
            "as a member of a consumer group; stops after --num-records, --duration or --idle-timeout."
        ),
    )
    c.add_argument("--group", help="consume as this consumer group (subscribe) instead of assigning")
    c.set_defaults(run=_run, action=_consume)

    e = sub.add_parser(
        "e2e",
        parents=[common, producing, consuming],
        help="end-to-end latency at a fixed rate",
        description=(
            "Produce at a fixed rate with the send time in each value, consume from the end offsets, "
            "and report produce-to-consume latency (producer and consumer on this host's clock)."
        ),
    )
    e.add_argument(
        "--throughput", type=_throughput, default=1000.0, metavar="RECORDS/S", help="fixed rate [1000]"
    )
    e.add_argument("--linger-ms", type=float, default=0.0, metavar="MS", help="linger.ms [0]")
    e.set_defaults(run=_run, action=_e2e)
