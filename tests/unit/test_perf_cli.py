"""``shardbroker perf``: argument refusals and the missing-client message (no broker needed)."""

from __future__ import annotations

import importlib.util

import pytest

from shardbroker.cli.main import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["perf", "produce", "--record-size", "0"], "must be at least 1"),
        (["perf", "produce", "--throughput", "0"], "or -1 for no limit"),
        (["perf", "produce", "--duration", "-3"], "must be more than 0 s"),
        (["perf", "produce", "--producers", "two"], "not an integer"),
        (["perf", "produce", "--producer-prop", "linger.ms"], "expected NAME=VALUE"),
        (["perf", "produce", "--acks", "2"], "invalid choice"),
        (["perf", "consume", "--bootstrap-server", "127.0.0.1:99999"], "port 99999 out of range"),
        (["perf", "e2e", "--idle-timeout", "x"], "not a number of seconds"),
        (["perf"], "required"),
    ],
)
def test_bad_usage_exits_2_saying_why(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_e2e_needs_room_for_the_send_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["perf", "e2e", "--record-size", "7"]) == 2
    assert "at least 8" in capsys.readouterr().err


def test_missing_confluent_kafka_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "confluent_kafka" else real(name, *a)
    )
    assert main(["perf", "produce", "--num-records", "1"]) == 1
    err = capsys.readouterr().err
    assert "needs confluent-kafka" in err and "pip install 'confluent-kafka" in err
