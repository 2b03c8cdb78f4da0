"""SCRAM credentials in the controller (control/scram_control.py through controller_state.handle):
the records, their replay, the snapshot, the metadata log on disk, and every refusal of
AlterUserScramCredentials with Kafka's code and message."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from shardbroker.cli.check import check_metadata
from shardbroker.control import controller_state as cs
from shardbroker.control.metadata_log import MetadataLog
from shardbroker.control.scram_control import apply_scram_record
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.scram_credential import MAX_ITERATIONS, ScramMechanism, salted_password

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
CTX = cs.OpContext(workers=2)
SALT = b"0123456789abcdef"
SALTED = {mech: salted_password(mech, b"secret", SALT, 4096) for mech in ScramMechanism}


def upsert(
    name: str, mech: int = 2, iterations: int = 4096, salt: bytes = SALT, salted: bytes | None = None
) -> Any:
    if salted is None:
        salted = SALTED[ScramMechanism(mech)] if mech in (1, 2) else b"x"
    return {
        "name": name,
        "mechanism": mech,
        "iterations": iterations,
        "salt": salt.hex(),
        "salted_password": salted.hex(),
    }


def delete(name: str, mech: int = 2) -> Any:
    return {"name": name, "mechanism": mech}


def alter(
    state: cs.ControllerState,
    deletions: tuple[Any, ...] | list[Any] = (),
    upsertions: tuple[Any, ...] | list[Any] = (),
) -> cs.Outcome:
    args = {"deletions": list(deletions), "upsertions": list(upsertions)}
    return cs.handle(state, "alter_scram_credentials", args, CTX)


def results(outcome: cs.Outcome) -> list[tuple[str, int, str | None]]:
    return [(r["user"], r["error_code"], r["error_message"]) for r in outcome.result["results"]]


def with_alice() -> cs.ControllerState:
    out = alter(cs.ControllerState(), upsertions=[upsert("alice", 1)])
    assert results(out) == [("alice", 0, None)]
    return out.state


def test_upsertion_stores_salt_and_derived_keys_only() -> None:
    out = alter(cs.ControllerState(), upsertions=[upsert("alice", 2, 8192)])
    assert results(out) == [("alice", 0, None)]
    (record,) = out.records
    assert set(record) == {
        "offset",
        "type",
        "name",
        "mechanism",
        "salt",
        "stored_key",
        "server_key",
        "iterations",
    }
    assert record["type"] == "scram_credential" and record["iterations"] == 8192
    text = json.dumps(out.records) + json.dumps(out.state.to_dict())
    assert SALTED[SHA512].hex() not in text and b"secret".hex() not in text
    cred = out.state.image("c", ()).scram_credential("alice", SHA512)
    assert cred is not None and cred.salt == SALT and cred.iterations == 8192
    client_key = hmac.digest(SALTED[SHA512], b"Client Key", "sha512")
    assert cred.stored_key == hashlib.sha512(client_key).digest()
    assert cred.server_key == hmac.digest(SALTED[SHA512], b"Server Key", "sha512")
    assert out.result["version"] == 0 == out.state.version


def test_credential_verifies_a_scram_client_proof() -> None:
    """What the SCRAM server will do with the stored credential (RFC 5802 section 3): a client
    that knows the password proves it, one that does not fails."""
    state = with_alice()
    cred = state.image("c", ()).scram_credential("alice", SHA256)
    assert cred is not None
    auth_message = b"n=alice,r=abc,r=abcdef,s=" + base64.b64encode(SALT) + b",i=4096,c=biws,r=abcdef"

    def proof(password: bytes) -> bytes:
        salted = salted_password(SHA256, password, SALT, 4096)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        signature = hmac.digest(hashlib.sha256(client_key).digest(), auth_message, "sha256")
        return bytes(a ^ b for a, b in zip(client_key, signature, strict=True))

    def verifies(client_proof: bytes) -> bool:
        signature = hmac.digest(cred.stored_key, auth_message, "sha256")
        client_key = bytes(a ^ b for a, b in zip(client_proof, signature, strict=True))
        return hmac.compare_digest(hashlib.sha256(client_key).digest(), cred.stored_key)

    assert verifies(proof(b"secret"))
    assert not verifies(proof(b"Secret"))


def test_replace_and_delete_replay_to_the_same_state() -> None:
    state = with_alice()
    out = alter(state, upsertions=[upsert("alice", 1, 5000), upsert("bob", 2)])
    assert results(out) == [("alice", 0, None), ("bob", 0, None)]
    out2 = alter(out.state, deletions=[delete("alice", 1), delete("bob", 2)])
    assert results(out2) == [("alice", 0, None), ("bob", 0, None)]
    assert [r["type"] for r in out2.records] == ["remove_scram_credential"] * 2
    assert out2.state.scram_credentials == {}
    # states are immutable: the earlier ones still hold what they held
    assert (
        state.scram_credentials["alice"][SHA256].iterations == 4096 and "bob" not in state.scram_credentials
    )
    assert sorted(out.state.scram_credentials) == ["alice", "bob"]
    # the log replays to each state, and snapshots round-trip through JSON
    log = alter(cs.ControllerState(), upsertions=[upsert("alice", 1)]).records + out.records
    assert cs.replay(log) == out.state
    assert cs.replay(log + out2.records) == out2.state
    snap = json.loads(json.dumps(out.state.to_dict()))
    assert cs.ControllerState.from_dict(snap) == out.state
    assert out.state.scram_credentials["alice"][SHA256].iterations == 5000


def test_snapshot_without_scram_credentials_still_loads() -> None:
    """Snapshots written before SCRAM existed have no ``scram_credentials`` key."""
    old = {"version": 3, "next_producer_id": 7, "topics": []}
    assert cs.ControllerState.from_dict(old) == cs.ControllerState(3, {}, 7)


def test_replaying_a_removal_of_nothing_is_refused() -> None:
    with pytest.raises(ValueError, match="does not exist"):
        apply_scram_record({}, {"type": "remove_scram_credential", "name": "x", "mechanism": 1})
    with pytest.raises(ValueError, match="does not follow"):
        cs.apply_record(
            cs.ControllerState(),
            {"offset": 5, "type": "remove_scram_credential", "name": "x", "mechanism": 1},
        )


@pytest.mark.parametrize(
    ("deletions", "upsertions", "expected"),
    [
        ([], [upsert("")], [("", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")]),
        ([delete("")], [], [("", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")]),
        ([], [upsert("u", 3)], [("u", ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")]),
        ([], [upsert("u", 0)], [("u", ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")]),
        ([delete("u", 9)], [], [("u", ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")]),
        ([], [upsert("u", 1, 4095)], [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")]),
        ([], [upsert("u", 2, -1)], [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")]),
        (
            [],
            [upsert("u", 2, MAX_ITERATIONS + 1)],
            [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations")],
        ),
        ([], [upsert("u", salt=b"")], [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt must not be empty")]),
        (
            [],
            [upsert("u", salted=b"")],
            [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salted password must not be empty")],
        ),
        (
            [delete("bob", 2)],
            [],
            [
                (
                    "bob",
                    ErrorCode.RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist",
                )
            ],
        ),
        (  # alice has SCRAM-SHA-256 only
            [delete("alice", 2)],
            [],
            [
                (
                    "alice",
                    ErrorCode.RESOURCE_NOT_FOUND,
                    "Attempt to delete a user credential that does not exist",
                )
            ],
        ),
        (
            [delete("alice", 1)],
            [upsert("alice", 1)],
            [
                (
                    "alice",
                    ErrorCode.DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            ],
        ),
        (
            [],
            [upsert("u", 2), upsert("u", 2)],
            [
                (
                    "u",
                    ErrorCode.DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            ],
        ),
        (
            [delete("alice", 1), delete("alice", 1)],
            [],
            [
                (
                    "alice",
                    ErrorCode.DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            ],
        ),
        (  # Kafka's controller: one alteration per user and request, whatever the mechanisms
            [],
            [upsert("u", 1), upsert("u", 2)],
            [
                (
                    "u",
                    ErrorCode.DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            ],
        ),
        (  # a third mention of a refused user changes nothing
            [],
            [upsert("u", 1), upsert("u", 2), upsert("u", 1)],
            [
                (
                    "u",
                    ErrorCode.DUPLICATE_RESOURCE,
                    "A user credential cannot be altered twice in the same request",
                )
            ],
        ),
        (  # refused first for its iterations: the second mention is not a duplicate
            [],
            [upsert("u", 1, 1), upsert("u", 1)],
            [("u", ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")],
        ),
    ],
)
def test_refusals(deletions: list[Any], upsertions: list[Any], expected: list[tuple[str, int, str]]) -> None:
    state = with_alice()
    out = alter(state, deletions, upsertions)
    assert results(out) == expected
    assert out.records == [] and out.state == state


def test_each_user_is_all_or_nothing_and_answered_in_request_order() -> None:
    state = with_alice()
    out = alter(
        state,
        deletions=[delete("alice", 1), delete("ghost", 1)],
        upsertions=[upsert("carol", 2), upsert("dave", 1, 100), upsert("erin", 2), upsert("erin", 1)],
    )
    assert [(u, c) for u, c, _ in results(out)] == [
        ("alice", 0),
        ("ghost", ErrorCode.RESOURCE_NOT_FOUND),
        ("carol", 0),
        ("dave", ErrorCode.UNACCEPTABLE_CREDENTIAL),
        ("erin", ErrorCode.DUPLICATE_RESOURCE),
    ]
    assert sorted(out.state.scram_credentials) == ["carol"]
    assert [(r["type"], r["name"]) for r in out.records] == [
        ("remove_scram_credential", "alice"),
        ("scram_credential", "carol"),
    ]


def test_malformed_request_applies_nothing() -> None:
    state = with_alice()
    bad = {**upsert("carol"), "salt": "zz"}
    out = alter(state, upsertions=[upsert("bob"), bad])
    assert out.result["error_code"] == ErrorCode.INVALID_REQUEST
    assert out.records == [] and out.state == state
    out = cs.handle(state, "alter_scram_credentials", {"upsertions": []}, CTX)
    assert out.result["error_code"] == ErrorCode.INVALID_REQUEST


def test_metadata_log_keeps_credentials_across_reopen_and_snapshot(tmp_path: Path) -> None:
    log = MetadataLog(tmp_path, snapshot_bytes=1 << 30)
    state = log.open()
    out = alter(state, upsertions=[upsert("alice", 1), upsert("bob", 2)])
    log.append(out.records, out.state)
    out2 = alter(out.state, deletions=[delete("bob", 2)])
    log.append(out2.records, out2.state)
    log.close()
    raw = (tmp_path / "__cluster_metadata" / "metadata.log").read_bytes()
    assert SALTED[SHA256].hex().encode() not in raw and b"secret" not in raw

    again = MetadataLog(tmp_path)
    assert again.open() == out2.state
    assert again.state.image("c", ()).scram_credential("alice", SHA256) is not None
    again.snapshot()
    again.close()
    third = MetadataLog(tmp_path)
    assert third.open() == out2.state
    third.close()
    report = check_metadata(tmp_path)  # `shardbroker check` replays the records too
    assert report.problems == [] and report.state == out2.state
