"""``shardbroker quotas``: usage errors exit 2 before any connection (the bootstrap address is a
closed port, so a connection attempt would exit 1 instead); the requests themselves are covered
against a real broker in tests/integration/test_client_quotas.py."""

from __future__ import annotations

import pytest

from shardbroker.cli.main import main
from tests.unit.kafka_fake import closed_port


@pytest.mark.parametrize(
    "argv",
    [
        ["--describe"],  # no entity type
        ["--alter", "--entity-type", "users", "--add-config", "producer_byte_rate=1"],  # no name
        ["--alter", "--entity-type", "users", "--entity-name", "a"],  # nothing to change
        ["--alter", "--entity-type", "users", "--entity-name", "a", "--add-config", "producer_byte_rate=x"],
        ["--alter", "--entity-type", "users", "--entity-name", "a", "--add-config", "producer_byte_rate"],
        ["--describe", "--entity-type", "users", "--entity-type", "users"],
        ["--describe", "--entity-type", "users", "--entity-name", "a", "--entity-name", "b"],
        ["--describe", "--entity-type", "groups"],
        ["--describe", "--alter", "--entity-type", "users"],
    ],
)
def test_usage_errors_exit_2_without_connecting(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        code = main(["quotas", *argv, "--bootstrap-server", f"127.0.0.1:{closed_port()}"])
        raise SystemExit(code)
    assert raised.value.code == 2, capsys.readouterr().err


def test_an_unreachable_broker_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["quotas", "--describe", "--entity-type", "clients", "--entity-default"]
    code = main([*argv, "--bootstrap-server", f"127.0.0.1:{closed_port()}", "--timeout", "500"])
    assert code == 1 and "127.0.0.1" in capsys.readouterr().err
