"""SCRAM credentials in the metadata log: their records and AlterUserScramCredentials (KIP-554).

Kafka's ScramControlManager, pure: `alter_credentials` checks one request against the current
credentials and returns the records to append and one answer per user; `apply_scram_record`
replays a record. What is stored per (user, mechanism) is only the salt, StoredKey, ServerKey
and iteration count (security/scram_credential.py): the client sends a salted password, this
module derives the two keys from it and forgets it, so no password nor salted password is ever
in the log, the snapshot or an image. Records::

    {"type": "scram_credential", "name", "mechanism": 1|2, "salt", "stored_key", "server_key",
     "iterations"}                                   (bytes as hex) create or replace one credential
    {"type": "remove_scram_credential", "name", "mechanism"}

Semantics are those of Kafka's KRaft controller, error messages included: a user named more than
once in one request (deletions and upsertions together, whatever the mechanisms) is refused as
DUPLICATE_RESOURCE; an empty user name or an iteration count outside [4096, 16384] as
UNACCEPTABLE_CREDENTIAL; an unknown mechanism as UNSUPPORTED_SASL_MECHANISM; deleting a
credential that does not exist as RESOURCE_NOT_FOUND. A user is all or nothing: each valid user
gets exactly one record. Where we differ: an empty salt or salted password is refused as
UNACCEPTABLE_CREDENTIAL (Kafka accepts an empty salt and fails an empty salted password with
UNKNOWN_SERVER_ERROR); results come in the order users first appear in the request (Kafka's
follow a hash map).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.scram_credential import (
    MAX_ITERATIONS,
    ScramCredential,
    ScramMechanism,
    from_salted,
)

__all__ = [
    "REMOVE_RECORD",
    "UPSERT_RECORD",
    "Credentials",
    "alter_credentials",
    "apply_scram_record",
    "credential_record",
]

UPSERT_RECORD: Final = "scram_credential"
REMOVE_RECORD: Final = "remove_scram_credential"

#: user -> mechanism -> credential, as in `MetadataImage.scram_credentials`.
Credentials = Mapping[str, Mapping[ScramMechanism, ScramCredential]]

_DUPLICATE: Final = "A user credential cannot be altered twice in the same request"


def credential_record(user: str, credential: ScramCredential) -> dict[str, Any]:
    return {
        "type": UPSERT_RECORD,
        "name": user,
        "mechanism": int(credential.mechanism),
        "salt": credential.salt.hex(),
        "stored_key": credential.stored_key.hex(),
        "server_key": credential.server_key.hex(),
        "iterations": credential.iterations,
    }


def apply_scram_record(
    credentials: Credentials, record: Mapping[str, Any]
) -> dict[str, Mapping[ScramMechanism, ScramCredential]]:
    """The credentials after one of this module's records: a new outer mapping and a new one for
    the user (the others are shared: nothing mutates them). Removing a credential that is not
    there is a ValueError, as Kafka's replay."""
    user = str(record["name"])
    mechanism = ScramMechanism(int(record["mechanism"]))
    out = dict(credentials)
    mine = dict(out.get(user, {}))
    if record["type"] == UPSERT_RECORD:
        mine[mechanism] = ScramCredential(
            mechanism,
            bytes.fromhex(record["salt"]),
            bytes.fromhex(record["stored_key"]),
            bytes.fromhex(record["server_key"]),
            int(record["iterations"]),
        )
    elif record["type"] == REMOVE_RECORD:
        if mine.pop(mechanism, None) is None:
            raise ValueError(f"removal of a SCRAM credential that does not exist: {user} {mechanism.name}")
    else:
        raise ValueError(f"not a SCRAM record: {record['type']!r}")
    if mine:
        out[user] = mine
    else:
        out.pop(user, None)
    return out


def _error(code: ErrorCode, message: str) -> tuple[int, str]:
    return int(code), message


def _mechanism(raw: Any) -> ScramMechanism | None:
    try:
        return ScramMechanism(int(raw))
    except ValueError:
        return None


def _check_name_and_mechanism(name: str, mechanism: ScramMechanism | None) -> tuple[int, str] | None:
    if not name:
        return _error(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Username must not be empty")
    if mechanism is None:
        return _error(ErrorCode.UNSUPPORTED_SASL_MECHANISM, "Unknown SCRAM mechanism")
    return None


def _check_upsertion(name: str, mechanism: ScramMechanism | None, iterations: int) -> tuple[int, str] | None:
    refused = _check_name_and_mechanism(name, mechanism)
    if refused is not None:
        return refused
    assert mechanism is not None
    if iterations < mechanism.min_iterations:
        return _error(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too few iterations")
    if iterations > MAX_ITERATIONS:
        return _error(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Too many iterations")
    return None


def _finish_upsertion(name: str, item: Mapping[str, Any]) -> dict[str, Any] | tuple[int, str]:
    """The record of a checked upsertion (the keys derived from the salted password), or why not."""
    mechanism = ScramMechanism(int(item["mechanism"]))
    salt = bytes.fromhex(str(item["salt"]))
    salted = bytes.fromhex(str(item["salted_password"]))
    if not salt:
        return _error(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salt must not be empty")
    if not salted:
        return _error(ErrorCode.UNACCEPTABLE_CREDENTIAL, "Salted password must not be empty")
    return credential_record(name, from_salted(mechanism, salted, salt, int(item["iterations"])))


def alter_credentials(
    credentials: Credentials, deletions: list[Mapping[str, Any]], upsertions: list[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """AlterUserScramCredentials against ``credentials``: (records, one result per user).

    ``deletions``: ``{"name", "mechanism"}``; ``upsertions``: ``{"name", "mechanism",
    "iterations", "salt", "salted_password"}`` (bytes as hex). A result is ``{"user",
    "error_code", "error_message"}``. Malformed items raise (KeyError, TypeError, ValueError).
    """
    order: list[str] = []
    errors: dict[str, tuple[int, str]] = {}
    to_delete: dict[str, Mapping[str, Any]] = {}
    to_upsert: dict[str, Mapping[str, Any]] = {}

    def seen(name: str) -> None:
        if name not in order:
            order.append(name)

    for item in deletions:
        name = str(item["name"])
        seen(name)
        if name in errors:
            continue
        if to_delete.pop(name, None) is not None:
            errors[name] = _error(ErrorCode.DUPLICATE_RESOURCE, _DUPLICATE)
            continue
        mechanism = _mechanism(item["mechanism"])
        refused = _check_name_and_mechanism(name, mechanism)
        if refused is None and mechanism not in credentials.get(name, {}):
            refused = _error(
                ErrorCode.RESOURCE_NOT_FOUND, "Attempt to delete a user credential that does not exist"
            )
        if refused is not None:
            errors[name] = refused
        else:
            to_delete[name] = item
    for item in upsertions:
        name = str(item["name"])
        seen(name)
        if name in errors:
            continue
        if to_delete.pop(name, None) is not None or to_upsert.pop(name, None) is not None:
            errors[name] = _error(ErrorCode.DUPLICATE_RESOURCE, _DUPLICATE)
            continue
        refused = _check_upsertion(name, _mechanism(item["mechanism"]), int(item["iterations"]))
        if refused is not None:
            errors[name] = refused
        else:
            to_upsert[name] = item

    records: list[dict[str, Any]] = []
    for name, item in to_delete.items():
        records.append({"type": REMOVE_RECORD, "name": name, "mechanism": int(item["mechanism"])})
    for name, item in to_upsert.items():
        done = _finish_upsertion(name, item)
        if isinstance(done, tuple):
            errors[name] = done
        else:
            records.append(done)
    results = []
    for name in order:
        code, message = errors.get(name, (0, None))
        results.append({"user": name, "error_code": code, "error_message": message})
    return records, results
