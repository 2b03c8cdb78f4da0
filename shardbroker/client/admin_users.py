"""The admin client's SCRAM user calls (KIP-554), as ``kafka-configs --entity-type users`` makes
them: DescribeUserScramCredentials and AlterUserScramCredentials, at any broker (which forwards
to the controller, as Kafka's admin client sends them to the least loaded node).

The password never leaves the client: :func:`scram_upsertion` salts it with a fresh random salt
from ``secrets`` and iterates it (PBKDF2, security/scram_credential.py), and only the salted
password is sent; the broker derives and stores StoredKey and ServerKey from it.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from shardbroker.client.admin_cluster import ClusterAdmin
from shardbroker.client.connection import KafkaApiError
from shardbroker.protocol import messages as m
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.scram_credential import ScramMechanism, salted_password

__all__ = [
    "DEFAULT_ITERATIONS",
    "SALT_BYTES",
    "ScramCredentialInfo",
    "ScramDeletion",
    "ScramUpsertion",
    "UserAdmin",
    "alter_request",
    "scram_upsertion",
]

#: kafka-configs' default when ``iterations=`` is not given (the mechanisms' minimum).
DEFAULT_ITERATIONS = 4096
SALT_BYTES = 32


@dataclass(frozen=True)
class ScramCredentialInfo:
    """One credential of a user as DescribeUserScramCredentials shows it: no salt, no keys."""

    #: ``SCRAM-SHA-256`` / ``SCRAM-SHA-512`` (``UNKNOWN(n)`` for a wire value this client lacks)
    mechanism: str
    iterations: int


@dataclass(frozen=True)
class ScramUpsertion:
    """An AlterUserScramCredentials upsertion: what is sent, never the password itself."""

    user: str
    mechanism: ScramMechanism
    iterations: int
    salt: bytes = field(repr=False)
    salted_password: bytes = field(repr=False)


@dataclass(frozen=True)
class ScramDeletion:
    user: str
    mechanism: ScramMechanism


def scram_upsertion(
    user: str,
    mechanism: ScramMechanism,
    password: bytes,
    iterations: int = DEFAULT_ITERATIONS,
    salt: bytes | None = None,
) -> ScramUpsertion:
    """The upsertion setting ``user``'s ``mechanism`` credential to ``password`` (UTF-8 bytes, as
    Kafka's clients take it): salted with ``salt`` (a fresh random one unless given) and
    ``iterations`` rounds of PBKDF2 here, on the client."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return ScramUpsertion(
        user, mechanism, iterations, salt, salted_password(mechanism, password, salt, iterations)
    )


def alter_request(
    upsertions: Sequence[ScramUpsertion], deletions: Sequence[ScramDeletion]
) -> m.AlterUserScramCredentialsRequest:
    Deletion = m.AlterUserScramCredentialsRequest.ScramCredentialDeletion
    Upsertion = m.AlterUserScramCredentialsRequest.ScramCredentialUpsertion
    return m.AlterUserScramCredentialsRequest(
        deletions=[Deletion(name=d.user, mechanism=int(d.mechanism)) for d in deletions],
        upsertions=[
            Upsertion(
                name=u.user,
                mechanism=int(u.mechanism),
                iterations=u.iterations,
                salt=u.salt,
                salted_password=u.salted_password,
            )
            for u in upsertions
        ],
    )


def _mechanism_name(value: int) -> str:
    try:
        return ScramMechanism(value).mechanism_name
    except ValueError:
        return f"UNKNOWN({value})"


class UserAdmin(ClusterAdmin):
    """DescribeUserScramCredentials, AlterUserScramCredentials."""

    def describe_user_scram_credentials(
        self, users: Sequence[str] | None = None
    ) -> dict[str, list[ScramCredentialInfo] | KafkaApiError]:
        """Each user's credentials (every user with one when ``users`` is None), or the user's
        error: RESOURCE_NOT_FOUND for a named user without credentials, DUPLICATE_RESOURCE for
        one named twice. Raises KafkaApiError when the whole request is refused."""
        conn = self._any_conn()
        version = conn.version_for(
            m.DescribeUserScramCredentialsRequest.API_KEY, "DescribeUserScramCredentials"
        )
        wanted = (
            None if users is None else [m.DescribeUserScramCredentialsRequest.UserName(name=u) for u in users]
        )
        response: m.DescribeUserScramCredentialsResponse = conn.send(
            m.DescribeUserScramCredentialsRequest(users=wanted), version
        )
        error = self._result_error(
            response.error_code, response.error_message, "DescribeUserScramCredentials"
        )
        if error is not None:
            raise error
        out: dict[str, list[ScramCredentialInfo] | KafkaApiError] = {}
        for r in response.results:
            failed = self._result_error(r.error_code, r.error_message, f"user '{r.user}'")
            out[r.user] = (
                failed
                if failed is not None
                else [
                    ScramCredentialInfo(_mechanism_name(c.mechanism), c.iterations)
                    for c in r.credential_infos
                ]
            )
        return out

    def alter_user_scram_credentials(
        self, upsertions: Sequence[ScramUpsertion] = (), deletions: Sequence[ScramDeletion] = ()
    ) -> dict[str, KafkaApiError | None]:
        """Create or replace (``upsertions``) and delete (``deletions``) SCRAM credentials; per
        user None (done) or its error. A user may be named once per request (Kafka refuses a
        second alteration of the same user, even of another mechanism, as DUPLICATE_RESOURCE)."""
        request = alter_request(upsertions, deletions)
        conn = self._any_conn()
        version = conn.version_for(request.API_KEY, "AlterUserScramCredentials")
        response: m.AlterUserScramCredentialsResponse = conn.send(request, version)
        out = {
            r.user: self._result_error(r.error_code, r.error_message, f"user '{r.user}'")
            for r in response.results
        }
        if any(e is not None and e.error_code == ErrorCode.NOT_CONTROLLER for e in out.values()):
            raise KafkaApiError(ErrorCode.NOT_CONTROLLER, "AlterUserScramCredentials")
        names = list(dict.fromkeys([d.user for d in deletions] + [u.user for u in upsertions]))
        return self._answered(names, out)
