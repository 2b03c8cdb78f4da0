"""Per-broker dynamic configs: AlterConfigs/IncrementalAlterConfigs of a BROKER resource change the
TLS stores, checked by loading them, kept in the metadata log, described as DYNAMIC_BROKER_CONFIG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.worker_state import WorkerState
from shardbroker.control import controller_state
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from tests.integration.tls import TestCA
from tests.unit.test_handlers_admin import alter, call_sync, channel, describe, incremental, make_state

SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def tls_state(tmp_path: Path, ca: TestCA) -> WorkerState:
    return make_state(
        tmp_path,
        listeners="PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9192",
        **{"ssl.keystore.location": str(ca.server("static").keystore)},
    )


def change(
    state: WorkerState, name: str, *ops: tuple[str, int, str | None], validate_only: bool = False
) -> Any:
    req = m.IncrementalAlterConfigsRequest(
        resources=[incremental(name, *ops, rtype=4)], validate_only=validate_only
    )
    (response,) = call_sync(state, req, 1).responses
    return response


def described(state: WorkerState, name: str) -> Any:
    req = m.DescribeConfigsRequest(resources=[describe("0", rtype=4, keys=[name])], include_synonyms=True)
    (result,) = call_sync(state, req, 4).results
    (entry,) = result.configs
    return entry


def test_a_new_key_store_is_recorded_and_described_as_dynamic(tmp_path: Path, ca: TestCA) -> None:
    state = tls_state(tmp_path, ca)
    new = str(ca.server("rotated").keystore)
    assert change(state, "1", ("ssl.keystore.location", SET, new)).error_code == ErrorCode.NONE
    assert state.image.broker_configs == {"ssl.keystore.location": new}
    entry = described(state, "ssl.keystore.location")
    assert (entry.value, entry.config_source, entry.read_only) == (new, 2, False)  # DYNAMIC_BROKER_CONFIG
    assert [s.source for s in entry.synonyms] == [2, 4]  # then the file's value
    # DELETE goes back to the file's value.
    assert change(state, "0", ("ssl.keystore.location", DELETE, None)).error_code == ErrorCode.NONE
    assert state.image.broker_configs == {}
    assert described(state, "ssl.keystore.location").config_source == 4


def test_listener_prefixed_key_store_and_list_operations(tmp_path: Path, ca: TestCA) -> None:
    state = tls_state(tmp_path, ca)
    new = str(ca.server("ssl-only").keystore)
    response = change(
        state,
        "0",
        ("listener.name.ssl.ssl.keystore.location", SET, new),
        ("ssl.enabled.protocols", SUBTRACT, "TLSv1.2"),
    )
    assert response.error_code == ErrorCode.NONE, response.error_message
    assert state.image.broker_configs == {
        "listener.name.ssl.ssl.keystore.location": new,
        "ssl.enabled.protocols": "TLSv1.3",
    }


@pytest.mark.parametrize(
    ("name", "ops", "code", "fragment"),
    [
        (
            "0",
            [("ssl.keystore.location", SET, "/nonexistent.pem")],
            ErrorCode.INVALID_CONFIG,
            "cannot load the key store",
        ),
        (
            "0",
            [("num.partitions", SET, "3")],
            ErrorCode.INVALID_CONFIG,
            "Cannot update these configs dynamically",
        ),
        ("0", [("ssl.principal.mapping.rules", SET, "DEFAULT")], ErrorCode.INVALID_CONFIG, "dynamically"),
        ("0", [("ssl.client.auth", SET, "maybe")], ErrorCode.INVALID_CONFIG, "ssl.client.auth"),
        (
            "0",
            [("listener.name.nope.ssl.client.auth", SET, "none")],
            ErrorCode.INVALID_CONFIG,
            "names no listener",
        ),
        ("0", [("ssl.keystore.location", APPEND, "x")], ErrorCode.INVALID_CONFIG, "append is not allowed"),
        ("", [("ssl.keystore.location", SET, "x")], ErrorCode.INVALID_CONFIG, "default cluster level"),
        ("7", [("ssl.keystore.location", SET, "x")], ErrorCode.INVALID_REQUEST, "Unexpected broker id"),
    ],
)
def test_refusals_keep_the_old_configs(
    tmp_path: Path, ca: TestCA, name: str, ops: list[tuple[str, int, str]], code: ErrorCode, fragment: str
) -> None:
    state = tls_state(tmp_path, ca)
    response = change(state, name, *ops)
    assert response.error_code == code and fragment in response.error_message
    assert state.image.broker_configs == {}
    assert not [r for r in channel(state).requests if r[0] == "alter_broker_configs"]


def test_validate_only_changes_nothing_and_alter_configs_replaces_the_set(tmp_path: Path, ca: TestCA) -> None:
    state = tls_state(tmp_path, ca)
    new = str(ca.server("v").keystore)
    assert change(state, "0", ("ssl.keystore.location", SET, new), validate_only=True).error_code == 0
    assert state.image.broker_configs == {}
    change(state, "0", ("ssl.cipher.suites", SET, "ECDHE-ECDSA-AES128-GCM-SHA256"))
    req = m.AlterConfigsRequest(resources=[alter("0", rtype=4, **{"ssl.keystore.location": new})])
    (response,) = call_sync(state, req, 2).responses
    assert response.error_code == ErrorCode.NONE, response.error_message
    assert state.image.broker_configs == {"ssl.keystore.location": new}  # the whole set, as Kafka


def test_dynamic_configs_survive_replay_and_snapshot() -> None:
    records = [
        {"offset": 0, "type": "broker_configs", "configs": {"ssl.keystore.location": "/a.pem"}},
        {"offset": 1, "type": "producer_ids", "next": 1000},
        {"offset": 2, "type": "broker_configs", "configs": {"ssl.keystore.location": "/b.pem"}},
    ]
    state = controller_state.replay(records)
    assert state.broker_configs == {"ssl.keystore.location": "/b.pem"} and state.next_producer_id == 1000
    assert controller_state.ControllerState.from_dict(state.to_dict()) == state
    assert state.image("c", ()).broker_configs == {"ssl.keystore.location": "/b.pem"}
