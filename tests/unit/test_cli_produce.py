"""``shardbroker produce``: the line reader (Kafka's LineMessageReader properties), reading lines
with flush points from a pipe, and argument checking. Opens a pipe; no broker."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from shardbroker.cli.common import UsageError
from shardbroker.cli.main import main
from shardbroker.cli.produce import (
    FLUSH,
    LineError,
    LineFormat,
    ParsedLine,
    line_format,
    parse_line,
    read_lines,
)
from tests.unit.kafka_fake import closed_port


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["produce", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- line format -----------------------------------------------------------------------------------


def test_defaults_read_the_whole_line_as_the_value() -> None:
    fmt = line_format(None)
    assert fmt == LineFormat()
    assert parse_line(b"a\tb:c", fmt) == ParsedLine(None, b"a\tb:c")
    assert parse_line(b"", fmt) == ParsedLine(None, b"")


def test_key_separator_splits_at_the_first_one() -> None:
    fmt = line_format([("parse.key", "true"), ("key.separator", ":")])
    assert parse_line(b"k:v:w", fmt) == ParsedLine(b"k", b"v:w")
    assert parse_line(b":v", fmt) == ParsedLine(b"", b"v")
    assert parse_line(b"k:", fmt) == ParsedLine(b"k", b"")
    assert line_format(None, key_separator="::") == LineFormat(parse_key=True, key_separator=b"::")
    assert parse_line(b"k::v", line_format(None, "::")) == ParsedLine(b"k", b"v")
    # the default separator is a tab, as Kafka's
    assert parse_line(b"k\tv", line_format([("parse.key", "true")])) == ParsedLine(b"k", b"v")


def test_missing_separator_is_refused_unless_ignore_error() -> None:
    fmt = line_format(None, key_separator=":")
    with pytest.raises(LineError, match="no key separator ':'"):
        parse_line(b"novalue", fmt)
    lax = line_format([("ignore.error", "true")], key_separator=":")
    assert parse_line(b"novalue", lax) == ParsedLine(None, b"novalue")


def test_headers_then_key_then_value() -> None:
    fmt = line_format([("parse.headers", "true"), ("parse.key", "true")])
    parsed = parse_line(b"h1:v1,h2:,h3:x:y\tkey\tvalue\twith tab", fmt)
    assert parsed == ParsedLine(b"key", b"value\twith tab", (("h1", b"v1"), ("h2", b""), ("h3", b"x:y")))
    assert parse_line(b"\tk\tv", fmt) == ParsedLine(b"k", b"v", ())
    with pytest.raises(LineError, match="headers delimiter"):
        parse_line(b"no delimiter", fmt)
    with pytest.raises(LineError, match="no key separator ':'"):
        parse_line(b"h1\tk\tv", fmt)
    custom = line_format(
        [
            ("parse.headers", "true"),
            ("headers.delimiter", "|"),
            ("headers.separator", ";"),
            ("headers.key.separator", "="),
        ]
    )
    assert parse_line(b"a=1;b=2|v", custom) == ParsedLine(None, b"v", (("a", b"1"), ("b", b"2")))


def test_null_marker_makes_nulls() -> None:
    fmt = line_format([("parse.headers", "true"), ("null.marker", "NULL")], key_separator=":")
    assert parse_line(b"h:NULL\tNULL:NULL", fmt) == ParsedLine(None, None, (("h", None),))
    assert parse_line(b"\tk:NULLx", fmt) == ParsedLine(b"k", b"NULLx")


def test_binary_bytes_pass_through() -> None:
    fmt = line_format(None, key_separator=":")
    raw = bytes(range(256)).replace(b"\n", b"").replace(b":", b"")
    assert parse_line(b"\xff\x00:" + raw, fmt) == ParsedLine(b"\xff\x00", raw)


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ([("parse.kye", "true")], "unknown --property 'parse.kye'"),
        ([("parse.key", "yes")], "must be true or false"),
        ([("key.separator", "")], "must not be empty"),
    ],
)
def test_bad_properties(props: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        line_format(props)


# -- reading ---------------------------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):  # a test closed it already
            os.close(fd)


def test_read_lines_strips_line_ends_and_keeps_a_last_partial_line(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.write(w, b"one\r\ntwo\n\nthree")
    os.close(w)
    with os.fdopen(r, "rb", closefd=False) as source:
        lines = [x for x in read_lines(source) if x is not FLUSH]
    assert lines == [b"one", b"two", b"", b"three"]


def test_read_lines_flushes_when_the_input_waits(pipe: tuple[int, int]) -> None:
    """An interactive line must be sent before the next one is typed: FLUSH comes between them."""
    r, w = pipe
    second_written = threading.Event()
    os.write(w, b"first\n")
    seen: list[bytes | None] = []
    with os.fdopen(r, "rb", closefd=False) as source:
        for item in read_lines(source):
            seen.append(item)
            if item is FLUSH and b"first" in seen and not second_written.is_set():
                os.write(w, b"second\n")
                os.close(w)
                second_written.set()
    first = seen.index(b"first")
    assert FLUSH in seen[first : seen.index(b"second")]


# -- arguments -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--topic", "t", "--acks", "2"],
        ["--topic", "t", "--compression", "brotli"],
        ["--topic", "t", "--partition", "-1"],
        ["--topic", "t", "--property", "novalue"],
        ["--topic", "t", "--property", "parse.kye=true"],
        ["--topic", "t", "--batch-size", "0"],
        ["--topic", "t", "--bootstrap-server", "host:port"],
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert "error" in err


def test_missing_file_is_bad_usage(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "--topic", "t", "--file", "/nonexistent/lines.txt")
    assert code == 2 and "cannot read --file /nonexistent/lines.txt" in err


def test_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    port = closed_port()
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    code, out, err = run(
        capsys, "--topic", "t", "--file", str(empty), "--bootstrap-server", f"127.0.0.1:{port}"
    )
    assert code == 1 and out == ""
    assert f"127.0.0.1:{port} unreachable" in err


def test_help_names_kafka_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for flag in ("--bootstrap-server", "--request-required-acks", "--compression-codec", "--key-separator"):
        assert flag in out
    assert "parse.key" in out
