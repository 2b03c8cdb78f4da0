"""``shardbroker produce``: a console producer, like Kafka's ``kafka-console-producer``. Reads lines
from stdin (or ``--file``) and produces one record per line over TCP
(:class:`shardbroker.client.producer.TcpProducer`), so it works against any Kafka cluster too.

Lines are read as bytes and sent as they are (without the line end: ``\\n``, or ``\\r\\n``), so
any byte sequence without a newline round-trips exactly. Kafka's line reader properties, with
Kafka's defaults: ``--property parse.key=true`` and ``key.separator`` (a tab) split
``KEY<sep>VALUE`` at the first separator; ``parse.headers=true`` reads
``H1:V1,H2:V2<headers.delimiter>...`` before the key (``headers.delimiter`` a tab,
``headers.separator`` ``,``, ``headers.key.separator`` ``:``); ``null.marker`` turns a key, value
or header value equal to it into null (a value of null is a tombstone); ``ignore.error=true``
takes a line without a separator as a key-less value instead of refusing it.
``--key-separator SEP`` is the short form of ``parse.key=true`` + ``key.separator=SEP``.

Batching: records go into record batches per partition; the producer sends what it has whenever
the input has no further line ready (so an interactive line is sent at once, and a piped file
in requests of up to 1 MiB). ``--acks`` (``--request-required-acks``) 0, 1 or -1/all (the
default, as Kafka's tool); ``--compression`` (``--compression-codec``) none, gzip, snappy, lz4,
zstd.

Each record that fails is reported on stderr with its line number and the Kafka error name
(e.g. ``MESSAGE_TOO_LARGE``); the exit code is then 1, after every line was tried. Exit codes as
every client command (:mod:`shardbroker.cli.common`): 0 all produced, 1 a record failed or a
runtime error (unknown topic when auto-creation is off, unreachable broker), 2 bad usage, 130
interrupted (what was read is still sent first).
"""

from __future__ import annotations

import argparse
import functools
import os
import select
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from shardbroker.cli.common import (
    EXIT_ERROR,
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
    from shardbroker.client.producer import RecordMetadata

__all__ = [
    "FLUSH",
    "LineError",
    "LineFormat",
    "ParsedLine",
    "line_format",
    "parse_line",
    "read_lines",
    "register",
]

#: The properties of Kafka's LineMessageReader, with their defaults.
LINE_PROPERTIES = {
    "parse.key": "false",
    "key.separator": "\t",
    "parse.headers": "false",
    "headers.delimiter": "\t",
    "headers.separator": ",",
    "headers.key.separator": ":",
    "null.marker": "",
    "ignore.error": "false",
}
COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
READ_CHUNK = 1 << 16
#: What :func:`read_lines` yields when the input has nothing more ready: time to send.
FLUSH = None


class LineError(ValueError):
    """A line that does not fit the line format (a missing separator)."""


@dataclass(frozen=True)
class LineFormat:
    parse_key: bool = False
    key_separator: bytes = b"\t"
    parse_headers: bool = False
    headers_delimiter: bytes = b"\t"
    headers_separator: bytes = b","
    headers_key_separator: bytes = b":"
    null_marker: bytes | None = None
    ignore_error: bool = False


@dataclass(frozen=True)
class ParsedLine:
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def _flag(name: str, text: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise UsageError(f"--property {name} must be true or false, not {text!r}")
    return text.lower() == "true"


def line_format(properties: list[tuple[str, str]] | None, key_separator: str | None = None) -> LineFormat:
    """The line format from ``--property NAME=VALUE`` pairs (Kafka's names) and the
    ``--key-separator`` short form. Unknown names and empty separators are usage errors."""
    values = dict(LINE_PROPERTIES)
    for name, value in properties or []:
        if name not in LINE_PROPERTIES:
            raise UsageError(f"unknown --property {name!r}; known: {', '.join(LINE_PROPERTIES)}")
        values[name] = value
    if key_separator is not None:
        values["parse.key"], values["key.separator"] = "true", key_separator
    for name in ("key.separator", "headers.delimiter", "headers.separator", "headers.key.separator"):
        if not values[name]:
            raise UsageError(f"--property {name} must not be empty")
    return LineFormat(
        parse_key=_flag("parse.key", values["parse.key"]),
        key_separator=values["key.separator"].encode(),
        parse_headers=_flag("parse.headers", values["parse.headers"]),
        headers_delimiter=values["headers.delimiter"].encode(),
        headers_separator=values["headers.separator"].encode(),
        headers_key_separator=values["headers.key.separator"].encode(),
        null_marker=values["null.marker"].encode() if values["null.marker"] else None,
        ignore_error=_flag("ignore.error", values["ignore.error"]),
    )


def parse_line(line: bytes, fmt: LineFormat) -> ParsedLine:
    """One input line (without its line end) -> key, value and headers, as Kafka's
    LineMessageReader reads it. Raises :class:`LineError` for a missing separator unless
    ``ignore_error``."""
    rest = line
    headers: tuple[tuple[str, bytes | None], ...] = ()
    if fmt.parse_headers:
        head, sep, after = rest.partition(fmt.headers_delimiter)
        if sep:
            rest = after
            headers = tuple(_header(h, fmt) for h in head.split(fmt.headers_separator) if h)
        elif not fmt.ignore_error:
            raise LineError(f"no headers delimiter {fmt.headers_delimiter.decode()!r} in the line")
    key: bytes | None = None
    if fmt.parse_key:
        k, sep, after = rest.partition(fmt.key_separator)
        if sep:
            key, rest = k, after
        elif not fmt.ignore_error:
            raise LineError(f"no key separator {fmt.key_separator.decode()!r} in the line")
    return ParsedLine(_nullable(key, fmt), _nullable(rest, fmt), headers)


def _header(text: bytes, fmt: LineFormat) -> tuple[str, bytes | None]:
    name, sep, value = text.partition(fmt.headers_key_separator)
    if not sep:
        raise LineError(
            f"header {text.decode(errors='replace')!r} has no key separator "
            f"{fmt.headers_key_separator.decode()!r}"
        )
    try:
        key = name.decode()
    except UnicodeDecodeError:
        raise LineError(f"header name {name!r} is not UTF-8") from None
    return key, _nullable(value, fmt)


def _nullable(data: bytes | None, fmt: LineFormat) -> bytes | None:
    if data is None or (fmt.null_marker is not None and data == fmt.null_marker):
        return None
    return data


def read_lines(source: BinaryIO) -> Iterator[bytes | None]:
    """Lines of ``source`` without their line ends, and :data:`FLUSH` whenever the input has no
    further byte ready (an interactive user, a slow pipe), so what was read can be sent."""
    fd = source.fileno()
    pending = b""
    while True:
        if not select.select([fd], [], [], 0)[0]:
            yield FLUSH
        chunk = os.read(fd, READ_CHUNK)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line[:-1] if line.endswith(b"\r") else line
    if pending:
        yield pending[:-1] if pending.endswith(b"\r") else pending


# -- the command ---------------------------------------------------------------------------------


def _acks(text: str) -> int:
    if text.lower() == "all":
        return -1
    if text not in ("-1", "0", "1"):
        raise argparse.ArgumentTypeError(f"acks must be 0, 1, -1 or all, not {text!r}")
    return int(text)


class _Outcome:
    """Counts the records and reports each failure as it is known."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sent = 0
        self.failed = 0

    def refuse(self, number: int, reason: str) -> None:
        self.failed += 1
        print(f"shardbroker produce: error: line {number}: {reason}", file=sys.stderr)

    def done(self, number: int, parsed: ParsedLine, meta: RecordMetadata) -> None:
        """The delivery callback of line ``number`` (bound with functools.partial)."""
        if meta.error is None:
            self.sent += 1
            return
        key = "null" if parsed.key is None else f"{len(parsed.key)} bytes"
        value = "null" if parsed.value is None else f"{len(parsed.value)} bytes"
        self.refuse(
            number, f"record (key {key}, value {value}) to {meta.topic}-{meta.partition}: {meta.error}"
        )


def _produce(args: argparse.Namespace) -> int:
    from shardbroker.client.producer import TcpProducer
    from shardbroker.protocol.compression import CompressionType

    fmt = line_format(args.property, args.key_separator)
    try:
        source: BinaryIO = open(args.file, "rb") if args.file else sys.stdin.buffer  # noqa: SIM115
    except OSError as exc:
        raise UsageError(f"cannot read --file {args.file}: {exc.strerror}") from None
    outcome = _Outcome(args.topic)
    interrupted = False
    producer = TcpProducer(
        args.bootstrap_server,
        acks=args.acks,
        compression=CompressionType[args.compression.upper()],
        batch_size=args.batch_size,
        timeout=args.timeout / 1000.0,
    )
    try:
        producer.partitions_for(args.topic)  # an unknown topic fails before any input is read
        if args.partition is not None:
            producer.choose_partition(args.topic, None, args.partition)
        number = 0
        try:
            for line in read_lines(source):
                if line is FLUSH:
                    producer.flush()
                    continue
                number += 1
                try:
                    parsed = parse_line(line, fmt)
                except LineError as exc:
                    outcome.refuse(number, f"{exc} (--property ignore.error=true reads it as a value)")
                    continue
                producer.send(
                    args.topic,
                    parsed.value,
                    parsed.key,
                    headers=parsed.headers,
                    partition=args.partition,
                    on_delivery=functools.partial(outcome.done, number, parsed),
                )
        except KeyboardInterrupt:
            interrupted = True
        producer.flush()
    finally:
        producer.close()
        if source is not sys.stdin.buffer:
            source.close()
    if outcome.failed:
        print(
            f"shardbroker produce: {outcome.failed} of {outcome.failed + outcome.sent} records failed",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_INTERRUPTED if interrupted else EXIT_OK


def _run(args: argparse.Namespace) -> int:
    return run_reporting("produce", lambda: _produce(args))


def register(commands: Any) -> None:
    """Add ``produce`` to the ``shardbroker`` sub-commands (``commands`` is argparse's subparsers)."""
    p = commands.add_parser(
        "produce",
        parents=[connection_options()],
        help="produce lines from stdin or a file as records",
        description=(
            "Produce one record per input line, like Kafka's kafka-console-producer. Exit codes: 0 all "
            "produced, 1 a record failed (each is reported with its Kafka error) or a runtime error, "
            "2 bad usage, 130 interrupted."
        ),
        epilog=(
            "line properties (--property NAME=VALUE, Kafka's names and defaults): "
            + ", ".join(f"{k}={v!r}" for k, v in LINE_PROPERTIES.items())
            + ". Example: --property parse.key=true --property key.separator=: reads KEY:VALUE lines."
        ),
    )
    p.add_argument("--topic", required=True, metavar="TOPIC", help="the topic to produce to")
    p.add_argument("--file", metavar="PATH", help="read lines from this file [stdin]")
    p.add_argument(
        "--partition",
        type=non_negative_int,
        metavar="P",
        help="produce every record to this partition [by key: murmur2 as Kafka; key-less: sticky]",
    )
    p.add_argument(
        "--property", type=name_value, action="append", metavar="NAME=VALUE", help="a line reader property"
    )
    p.add_argument(
        "--key-separator", metavar="SEP", help="read KEY<SEP>VALUE lines (parse.key=true, key.separator=SEP)"
    )
    p.add_argument(
        "--acks",
        "--request-required-acks",
        dest="acks",
        type=_acks,
        default=-1,
        metavar="ACKS",
        help="0 (no answer), 1 or -1/all [all]",
    )
    p.add_argument(
        "--compression",
        "--compression-codec",
        dest="compression",
        choices=COMPRESSIONS,
        default="none",
        help="compress record batches [none]",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=16384,
        metavar="BYTES",
        help="largest record batch per partition, as Kafka's batch.size [16384]",
    )
    p.set_defaults(run=_run)
