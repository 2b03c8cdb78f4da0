"""DescribeUserScramCredentials and AlterUserScramCredentials handlers against the fake controller
channel of test_handlers_admin.py (which runs the controller's own state machine): the wiring,
the answers per user, Kafka's describe semantics, controller failures and crashes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from shardbroker.broker.controller_channel import ControllerRequestError, ControllerUnavailable
from shardbroker.broker.worker_state import WorkerState
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.scram_credential import ScramMechanism, salted_password
from tests.unit.test_handlers_admin import call_sync, channel, make_state

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
Alter = m.AlterUserScramCredentialsRequest
Describe = m.DescribeUserScramCredentialsRequest
SALT = b"pepper-and-salt!"


def upsertion(
    name: str, mech: ScramMechanism = SHA512, iterations: int = 4096, password: bytes = b"pw"
) -> Any:
    return Alter.ScramCredentialUpsertion(
        name=name,
        mechanism=int(mech),
        iterations=iterations,
        salt=SALT,
        salted_password=salted_password(mech, password, SALT, iterations),
    )


def alter(state: WorkerState, upsertions: list[Any] = [], deletions: list[Any] = []) -> list[tuple[str, int]]:  # noqa: B006
    response = call_sync(state, Alter(deletions=deletions, upsertions=upsertions), 0)
    return [(r.user, r.error_code) for r in response.results]


def describe(state: WorkerState, names: list[str] | None) -> Any:
    users = None if names is None else [Describe.UserName(name=n) for n in names]
    return call_sync(state, Describe(users=users), 0)


def infos(result: Any) -> list[tuple[int, int]]:
    return [(c.mechanism, c.iterations) for c in result.credential_infos]


@pytest.fixture
def state(tmp_path: Path) -> WorkerState:
    state = make_state(tmp_path)
    assert alter(state, [upsertion("alice", SHA256, 8192)]) == [("alice", 0)]
    assert alter(state, [upsertion("alice", SHA512)]) == [("alice", 0)]
    assert alter(state, [upsertion("bob")]) == [("bob", 0)]
    return state


def test_alter_goes_through_the_controller_and_reaches_the_image(state: WorkerState) -> None:
    op, args, timeout = channel(state).requests[-1]
    assert op == "alter_scram_credentials" and timeout == 30.0
    (item,) = args["upsertions"]
    assert item["salt"] == SALT.hex() and item["mechanism"] == 2 and item["iterations"] == 4096
    cred = state.image.scram_credential("alice", SHA256)
    assert cred is not None and cred.iterations == 8192 and cred.salt == SALT


@pytest.mark.parametrize("users", [None, []])
def test_describe_every_user_when_none_are_named(state: WorkerState, users: list[str] | None) -> None:
    response = describe(state, users)
    assert response.error_code == 0 and response.error_message is None
    assert [(r.user, r.error_code, infos(r)) for r in response.results] == [
        ("alice", 0, [(1, 8192), (2, 4096)]),
        ("bob", 0, [(2, 4096)]),
    ]


def test_describe_named_users_unknown_and_duplicates(state: WorkerState) -> None:
    response = describe(state, ["bob", "carol", "alice", "alice", ""])
    assert [(r.user, r.error_code, r.error_message, infos(r)) for r in response.results] == [
        ("bob", 0, None, [(2, 4096)]),
        (
            "carol",
            ErrorCode.RESOURCE_NOT_FOUND,
            "Attempt to describe a user credential that does not exist: carol",
            [],
        ),
        (
            "alice",
            ErrorCode.DUPLICATE_RESOURCE,
            "Cannot describe SCRAM credentials for the same user twice in a single request: alice",
            [],
        ),
        ("", ErrorCode.RESOURCE_NOT_FOUND, "Attempt to describe a user credential that does not exist: ", []),
    ]


def test_describe_with_no_users_at_all(tmp_path: Path) -> None:
    assert describe(make_state(tmp_path), None).results == []


def test_alter_answers_per_user_in_request_order(state: WorkerState) -> None:
    D = Alter.ScramCredentialDeletion
    answered = alter(
        state,
        upsertions=[upsertion("carol"), upsertion("dave", iterations=100), upsertion("", SHA256)],
        deletions=[D(name="bob", mechanism=2), D(name="alice", mechanism=3), D(name="erin", mechanism=1)],
    )
    assert answered == [
        ("bob", 0),
        ("alice", ErrorCode.UNSUPPORTED_SASL_MECHANISM),
        ("erin", ErrorCode.RESOURCE_NOT_FOUND),
        ("carol", 0),
        ("dave", ErrorCode.UNACCEPTABLE_CREDENTIAL),
        ("", ErrorCode.UNACCEPTABLE_CREDENTIAL),
    ]
    assert sorted(state.image.scram_credentials) == ["alice", "carol"]


def test_alter_with_nothing_to_do_asks_nobody(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    assert alter(state) == []
    assert channel(state).requests == []


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (ControllerUnavailable("gone"), ErrorCode.REQUEST_TIMED_OUT),
        (ControllerRequestError(ErrorCode.KAFKA_STORAGE_ERROR, "disk"), ErrorCode.KAFKA_STORAGE_ERROR),
    ],
)
def test_alter_controller_failures(tmp_path: Path, failure: Exception, code: ErrorCode) -> None:
    state = make_state(tmp_path)
    channel(state).fail = failure
    assert alter(state, [upsertion("a"), upsertion("b")]) == [("a", code), ("b", code)]


def test_alter_crash_answers_unknown_server_error_per_user(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    cast(Any, state.channel).request = None
    D = Alter.ScramCredentialDeletion
    assert alter(state, [upsertion("a")], [D(name="b", mechanism=1), D(name="a", mechanism=1)]) == [
        ("b", ErrorCode.UNKNOWN_SERVER_ERROR),
        ("a", ErrorCode.UNKNOWN_SERVER_ERROR),
    ]


def test_describe_crash_uses_the_top_level_error(tmp_path: Path) -> None:
    state = make_state(tmp_path)
    cast(Any, state.channel).image = None
    assert describe(state, ["a"]).error_code == ErrorCode.UNKNOWN_SERVER_ERROR
