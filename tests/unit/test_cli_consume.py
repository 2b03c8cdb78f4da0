"""``shardbroker consume``: Kafka's DefaultMessageFormatter layout, JSON lines, the start options and
their combinations (bad ones exit 2 before any connection). No broker."""

from __future__ import annotations

import base64
import json

import pytest

from shardbroker.cli.common import UsageError
from shardbroker.cli.consume import OutputFormat, format_json, format_plain, output_format, start_offset
from shardbroker.cli.main import main
from shardbroker.client.admin_partitions import EARLIEST, LATEST
from shardbroker.client.consumer import ConsumerRecord
from tests.unit.kafka_fake import closed_port

REC = ConsumerRecord("orders", 2, 41, 1700000000123, 0, b"k1", b"v\x001", (("h1", b"a"), ("h2", None)))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["consume", *argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_plain_prints_the_value_by_default() -> None:
    assert format_plain(REC, output_format(None)) == b"v\x001\n"
    assert format_plain(REC._replace(value=None), OutputFormat()) == b"null\n"


def test_plain_fields_in_kafkas_order() -> None:
    props = [
        ("print.key", "true"),
        ("print.timestamp", "true"),
        ("print.partition", "true"),
        ("print.offset", "true"),
        ("print.headers", "true"),
    ]
    fmt = output_format(props)
    assert (
        format_plain(REC, fmt)
        == b"CreateTime:1700000000123\tPartition:2\tOffset:41\th1:a,h2:null\tk1\tv\x001\n"
    )
    bare = REC._replace(key=None, headers=(), timestamp_type=1)
    assert (
        format_plain(bare, fmt)
        == b"LogAppendTime:1700000000123\tPartition:2\tOffset:41\tNO_HEADERS\tnull\tv\x001\n"
    )
    assert format_plain(REC._replace(timestamp=-1), fmt).startswith(b"NO_TIMESTAMP\t")


def test_plain_separators_and_null_literal() -> None:
    fmt = output_format(
        [
            ("print.key", "true"),
            ("print.headers", "true"),
            ("print.value", "false"),
            ("key.separator", " | "),
            ("line.separator", ";"),
            ("headers.separator", "&"),
            ("headers.key.separator", "="),
            ("null.literal", "<nil>"),
        ]
    )
    assert format_plain(REC, fmt) == b"h1=a&h2=<nil> | k1;"


def test_json_lines_keep_bytes_exact() -> None:
    line = format_json(
        REC._replace(key=b"\xff\xfe", headers=(("h", b"\x80"), ("n", None), ("u", "é".encode())))
    )
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    doc = json.loads(line)
    assert doc == {
        "topic": "orders",
        "partition": 2,
        "offset": 41,
        "timestamp": 1700000000123,
        "timestamp_type": "CreateTime",
        "key": {"base64": base64.b64encode(b"\xff\xfe").decode()},
        "value": "v\x001",
        "headers": [["h", {"base64": "gA=="}], ["n", None], ["u", "é"]],
    }
    assert json.loads(format_json(REC._replace(key=None, value=None)))["key"] is None


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ([("print.keys", "true")], "unknown --property 'print.keys'"),
        ([("print.key", "1")], "must be true or false"),
    ],
)
def test_bad_properties(props: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        output_format(props)


def test_start_offset() -> None:
    assert start_offset("earliest") == EARLIEST
    assert start_offset("LATEST") == LATEST
    assert start_offset("17") == 17
    for bad in ("-3", "first", ""):
        with pytest.raises(Exception, match="offset"):
            start_offset(bad)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--topic", "t", "--offset", "3"], "--offset needs --partition"),
        (["--topic", "t", "--group", "g", "--partition", "0"], "cannot be combined"),
        (["--topic", "t", "--group", "g", "--timestamp", "5"], "committed offsets"),
        (["--topic", "t", "--partition", "0", "--offset", "3", "--from-beginning"], "cannot be combined"),
        (["--topic", "t", "--from-beginning", "--timestamp", "5"], "cannot be combined"),
        (["--topic", "t", "--property", "print.keys=true"], "unknown --property"),
        (["--topic", "t", "--offset", "minus-one", "--partition", "0"], "expected an offset"),
        (["--topic", "t", "--format", "xml"], "invalid choice"),
        (["--topic", "t", "--max-messages", "0"], "at least 1"),
        (["--topic", "t", "--timeout-ms", "x"], "not an integer"),
        (["--from-beginning"], "--topic"),
    ],
)
def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    port = closed_port()  # never reached: usage is checked before connecting
    code, out, err = run(capsys, *argv, "--bootstrap-server", f"127.0.0.1:{port}")
    assert code == 2, err
    assert message in err and out == ""


def test_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    port = closed_port()
    code, out, err = run(
        capsys, "--topic", "t", "--timeout-ms", "100", "--bootstrap-server", f"127.0.0.1:{port}"
    )
    assert code == 1 and out == ""
    assert f"127.0.0.1:{port} unreachable" in err
