"""``shardbroker consume``: a console consumer, like Kafka's ``kafka-console-consumer``. Reads a
topic over TCP (:class:`shardbroker.client.consumer.TcpConsumer`), so it works against any Kafka
cluster too, and writes one line per record to stdout.

Where to start: the log end (default), ``--from-beginning``, ``--offset N|earliest|latest``
(with ``--partition``), or ``--timestamp MS`` (the first record at or after that time, by
ListOffsets). ``--partition P`` reads one partition, else every partition is read. ``--group G``
reads as a member of consumer group G instead (FindCoordinator, JoinGroup/SyncGroup with the
range assignor, heartbeats): it starts from the group's committed offsets (``--from-beginning``
only applies where the group has none, Kafka's ``auto.offset.reset``), commits every 5 s and on
exit, and leaves the group on exit, so ``shardbroker groups describe G`` shows where it stopped.

Stops after ``--max-messages N`` records, after ``--timeout-ms MS`` without a record, or on
SIGINT/SIGTERM; then prints ``Processed a total of N messages`` on stderr, as Kafka's tool.

Output, as Kafka's DefaultMessageFormatter by default: the value, with ``--property
print.key=true`` (and ``print.timestamp``, ``print.partition``, ``print.offset``,
``print.headers``, ``print.value``) the other fields before it, separated by ``key.separator``
(a tab); ``line.separator`` ends each record (a newline), ``headers.separator`` (``,``) and
``headers.key.separator`` (``:``) lay out headers, ``null.literal`` (``null``) stands for a null
key or value. Keys, values and header values are written as the raw bytes they are.
``--format json`` prints JSON lines instead: ``{"topic", "partition", "offset", "timestamp",
"timestamp_type", "key", "value", "headers": [[name, value], ...]}``, where a key or value is a
string when it is UTF-8 and ``{"base64": "..."}`` when it is not, and null when null.

Exit codes as every client command (:mod:`shardbroker.cli.common`): 0 done (also when the
timeout ends it, as Kafka's tool, or stdout is closed by the reader), 1 runtime error (unknown
topic, unreachable broker, a Kafka error), 2 bad usage, 130 interrupted.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO

from shardbroker.cli.common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    UsageError,
    connection_options,
    name_value,
    non_negative_int,
    positive_int,
    run_reporting,
)

if TYPE_CHECKING:
    from shardbroker.client.consumer import ConsumerRecord, TcpConsumer

__all__ = ["OutputFormat", "format_json", "format_plain", "output_format", "register", "start_offset"]

#: The properties of Kafka's DefaultMessageFormatter, with their defaults.
PRINT_PROPERTIES = {
    "print.timestamp": "false",
    "print.key": "false",
    "print.offset": "false",
    "print.partition": "false",
    "print.headers": "false",
    "print.value": "true",
    "key.separator": "\t",
    "line.separator": "\n",
    "headers.separator": ",",
    "headers.key.separator": ":",
    "null.literal": "null",
}
TIMESTAMP_TYPES = {0: "CreateTime", 1: "LogAppendTime"}
#: How long one poll waits; also how often --timeout-ms is checked.
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class OutputFormat:
    print_timestamp: bool = False
    print_key: bool = False
    print_offset: bool = False
    print_partition: bool = False
    print_headers: bool = False
    print_value: bool = True
    key_separator: bytes = b"\t"
    line_separator: bytes = b"\n"
    headers_separator: bytes = b","
    headers_key_separator: bytes = b":"
    null_literal: bytes = b"null"


def output_format(properties: list[tuple[str, str]] | None) -> OutputFormat:
    """The plain output format from ``--property NAME=VALUE`` pairs (Kafka's names)."""
    values = dict(PRINT_PROPERTIES)
    for name, value in properties or []:
        if name not in PRINT_PROPERTIES:
            raise UsageError(f"unknown --property {name!r}; known: {', '.join(PRINT_PROPERTIES)}")
        values[name] = value
    flags = {}
    for name in (
        "print.timestamp",
        "print.key",
        "print.offset",
        "print.partition",
        "print.headers",
        "print.value",
    ):
        if values[name].lower() not in ("true", "false"):
            raise UsageError(f"--property {name} must be true or false, not {values[name]!r}")
        flags[name.replace(".", "_")] = values[name].lower() == "true"
    return OutputFormat(
        **flags,
        key_separator=values["key.separator"].encode(),
        line_separator=values["line.separator"].encode(),
        headers_separator=values["headers.separator"].encode(),
        headers_key_separator=values["headers.key.separator"].encode(),
        null_literal=values["null.literal"].encode(),
    )


def format_plain(rec: ConsumerRecord, fmt: OutputFormat) -> bytes:
    """One record as Kafka's DefaultMessageFormatter writes it (fields in its order)."""
    null = fmt.null_literal
    parts: list[bytes] = []
    if fmt.print_timestamp:
        kind = TIMESTAMP_TYPES.get(rec.timestamp_type)
        parts.append(f"{kind}:{rec.timestamp}".encode() if kind and rec.timestamp >= 0 else b"NO_TIMESTAMP")
    if fmt.print_partition:
        parts.append(b"Partition:%d" % rec.partition)
    if fmt.print_offset:
        parts.append(b"Offset:%d" % rec.offset)
    if fmt.print_headers:
        if rec.headers:
            parts.append(
                fmt.headers_separator.join(
                    k.encode() + fmt.headers_key_separator + (null if v is None else v)
                    for k, v in rec.headers
                )
            )
        else:
            parts.append(b"NO_HEADERS")
    if fmt.print_key:
        parts.append(null if rec.key is None else rec.key)
    if fmt.print_value:
        parts.append(null if rec.value is None else rec.value)
    return fmt.key_separator.join(parts) + fmt.line_separator


def _json_bytes(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def format_json(rec: ConsumerRecord) -> bytes:
    """One record as a JSON line (see the module docstring)."""
    return (
        json.dumps(
            {
                "topic": rec.topic,
                "partition": rec.partition,
                "offset": rec.offset,
                "timestamp": rec.timestamp,
                "timestamp_type": TIMESTAMP_TYPES.get(rec.timestamp_type, "NoTimestampType"),
                "key": _json_bytes(rec.key),
                "value": _json_bytes(rec.value),
                "headers": [[k, _json_bytes(v)] for k, v in rec.headers],
            },
            ensure_ascii=False,
        ).encode()
        + b"\n"
    )


def start_offset(text: str) -> int:
    """``--offset``: a non-negative offset, ``earliest`` or ``latest`` (as the ListOffsets
    sentinels -2 and -1)."""
    from shardbroker.client.admin_partitions import EARLIEST, LATEST

    if text.lower() == "earliest":
        return EARLIEST
    if text.lower() == "latest":
        return LATEST
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an offset, 'earliest' or 'latest', not {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"an offset is 0 or more, got {value}")
    return value


def _check(args: argparse.Namespace) -> None:
    """Kafka's console consumer's rules for combining the start options."""
    if args.offset is not None and args.partition is None:
        raise UsageError("--offset needs --partition (the offset of which partition?)")
    if args.group is not None and args.partition is not None:
        raise UsageError("--group and --partition cannot be combined (the group assigns partitions)")
    if args.group is not None and (args.offset is not None or args.timestamp is not None):
        raise UsageError(
            "--group starts from the group's committed offsets: use --offset/--timestamp without "
            "--group, or 'shardbroker groups reset-offsets' first"
        )
    starts = [
        n
        for n, v in (
            ("--from-beginning", args.from_beginning),
            ("--offset", args.offset),
            ("--timestamp", args.timestamp),
        )
        if v not in (None, False)
    ]
    if len(starts) > 1:
        raise UsageError(f"{' and '.join(starts)} cannot be combined: give one start position")


# -- the command ---------------------------------------------------------------------------------


def _starts(consumer: TcpConsumer, args: argparse.Namespace) -> dict[tuple[str, int], int]:
    from shardbroker.client.admin_partitions import EARLIEST, LATEST

    info = consumer.topic(args.topic)
    partitions = [args.partition] if args.partition is not None else sorted(info.partitions)
    tps = [(args.topic, p) for p in partitions]
    if args.timestamp is not None:
        found = consumer.cluster.list_offsets(dict.fromkeys(tps, args.timestamp))
        return {tp: (o if o >= 0 else LATEST) for tp, o in found.items()}
    if args.offset is not None:
        return dict.fromkeys(tps, args.offset)
    return dict.fromkeys(tps, EARLIEST if args.from_beginning else LATEST)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM ends the command like Ctrl-C does: commit, leave the group, exit 130."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _consume(args: argparse.Namespace) -> int:
    from shardbroker.client.consumer import TcpConsumer

    _check(args)
    fmt = output_format(args.property)
    out: BinaryIO = sys.stdout.buffer
    consumer = TcpConsumer(
        args.bootstrap_server,
        group_id=args.group,
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        timeout=args.timeout / 1000.0,
        client_id="shardbroker-console-consumer",
    )
    count = 0
    code = EXIT_OK
    try:
        with _sigterm_interrupts():
            try:
                if args.group is not None:
                    consumer.subscribe([args.topic])
                else:
                    consumer.assign(_starts(consumer, args))
                idle_since = time.monotonic()
                while args.max_messages is None or count < args.max_messages:
                    left = None if args.max_messages is None else args.max_messages - count
                    records = consumer.poll(POLL_SECONDS, max_records=left)
                    if records:
                        idle_since = time.monotonic()
                        out.write(
                            b"".join(
                                format_json(r) if args.format == "json" else format_plain(r, fmt)
                                for r in records
                            )
                        )
                        out.flush()
                        count += len(records)
                    elif (
                        args.timeout_ms is not None
                        and time.monotonic() - idle_since >= args.timeout_ms / 1000
                    ):
                        break
            except KeyboardInterrupt:
                code = EXIT_INTERRUPTED
            except BrokenPipeError:
                # The reader went away (``| head``): stop quietly, and keep Python from
                # complaining when it flushes stdout at exit.
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        consumer.close()
    print(f"Processed a total of {count} messages", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    return run_reporting("consume", lambda: _consume(args))


def register(commands: Any) -> None:
    """Add ``consume`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    p = commands.add_parser(
        "consume",
        parents=[connection_options()],
        help="print a topic's records",
        description=(
            "Print a topic's records, one per line, like Kafka's kafka-console-consumer. Exit codes: "
            "0 done, 1 runtime error (unknown topic, unreachable broker), 2 bad usage, 130 interrupted."
        ),
        epilog=(
            "output properties (--property NAME=VALUE, Kafka's names and defaults): "
            + ", ".join(f"{k}={v!r}" for k, v in PRINT_PROPERTIES.items())
        ),
    )
    p.add_argument("--topic", required=True, metavar="TOPIC", help="the topic to read")
    p.add_argument("--partition", type=non_negative_int, metavar="P", help="read only this partition [all]")
    p.add_argument("--from-beginning", action="store_true", help="start at the earliest offset [the log end]")
    p.add_argument(
        "--offset", type=start_offset, metavar="N|earliest|latest", help="start here (needs --partition)"
    )
    p.add_argument(
        "--timestamp",
        type=non_negative_int,
        metavar="MS",
        help="start at the first record with a timestamp at or after MS (epoch milliseconds)",
    )
    p.add_argument(
        "--group", metavar="GROUP", help="consume as a member of this consumer group, committing offsets"
    )
    p.add_argument("--max-messages", type=positive_int, metavar="N", help="stop after N records")
    p.add_argument(
        "--timeout-ms",
        type=positive_int,
        metavar="MS",
        help="stop when no record arrived for MS milliseconds",
    )
    p.add_argument(
        "--format",
        choices=("plain", "json"),
        default="plain",
        help="plain (Kafka's formatter) or JSON lines [plain]",
    )
    p.add_argument(
        "--property",
        type=name_value,
        action="append",
        metavar="NAME=VALUE",
        help="an output property (plain format)",
    )
    p.set_defaults(run=_run)
