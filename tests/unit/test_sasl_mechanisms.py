"""The SASL server mechanisms as byte-in, byte-out state machines: PLAIN, SCRAM-SHA-256/512 (RFC
7677's example, kafka-python's SCRAM client, a client of our own for the corner cases) and
OAUTHBEARER with unsecured tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import warnings
from collections.abc import Callable

import pytest

from shardbroker.security.sasl import SaslAuthenticationFailed, unescape_saslname
from shardbroker.security.sasl_oauthbearer import (
    OAuthBearerSaslServer,
    UnsecuredValidatorOptions,
)
from shardbroker.security.sasl_plain import PlainSaslServer
from shardbroker.security.sasl_scram import ScramSaslServer, server_nonce
from shardbroker.security.scram_credential import ScramCredential, ScramMechanism, derive_credential

with warnings.catch_warnings():  # kafka-python's package import uses importlib.resources.read_text
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.net.sasl.scram import ScramClient

SHA256, SHA512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
GENERIC = None  # the client gets Kafka's generic text


def fails(server: object, message: bytes, client_message: str | None = GENERIC) -> SaslAuthenticationFailed:
    with pytest.raises(SaslAuthenticationFailed) as info:
        server.evaluate_response(message)  # type: ignore[attr-defined]
    assert info.value.client_message == client_message
    return info.value


# -- PLAIN ------------------------------------------------------------------------------------

USERS = {"alice": "alice-secret", "bob": "b\u00f6b-secret"}


def test_plain_accepts_the_right_password_and_names_the_user() -> None:
    server = PlainSaslServer(USERS)
    assert server.evaluate_response(b"\x00alice\x00alice-secret") == b""
    assert server.complete and server.authorization_id == "alice"
    other = PlainSaslServer(USERS)
    other.evaluate_response("bob\x00bob\x00b\u00f6b-secret".encode())  # authzid = the user: allowed
    assert other.authorization_id == "bob"


def test_plain_wrong_password_and_unknown_user_fail_alike() -> None:
    text = "Authentication failed: Invalid username or password"
    wrong = fails(PlainSaslServer(USERS), b"\x00alice\x00nope", text)
    unknown = fails(PlainSaslServer(USERS), b"\x00mallory\x00alice-secret", text)
    assert "nope" not in wrong.reason and "alice-secret" not in unknown.reason  # never log a password


@pytest.mark.parametrize(
    ("message", "client_message"),
    [
        (b"\x00\x00pw", "Authentication failed: username not specified"),
        (b"\x00alice\x00", "Authentication failed: password not specified"),
        (
            b"bob\x00alice\x00alice-secret",
            "Authentication failed: Client requested an authorization id that is different from username",
        ),
        (b"alice\x00alice-secret", GENERIC),  # two tokens
        (b"\x00alice\x00alice-secret\x00x", GENERIC),  # four
        (b"", GENERIC),
        (b"\x00alice\x00\xff\xfe", GENERIC),  # not UTF-8
    ],
)
def test_plain_refuses_malformed_messages(message: bytes, client_message: str | None) -> None:
    server = PlainSaslServer(USERS)
    fails(server, message, client_message)
    assert not server.complete


def test_plain_is_one_message() -> None:
    server = PlainSaslServer(USERS)
    server.evaluate_response(b"\x00alice\x00alice-secret")
    fails(server, b"\x00alice\x00alice-secret")


# -- SCRAM ------------------------------------------------------------------------------------


def rfc7677_credential() -> ScramCredential:
    salt = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
    return derive_credential(SHA256, b"pencil", 4096, salt)


def test_scram_sha_256_reproduces_rfc_7677s_example() -> None:
    server = ScramSaslServer(
        SHA256, {"user": rfc7677_credential()}.get, nonce=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    )
    first = server.evaluate_response(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
    assert first == (
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    final = server.evaluate_response(
        b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
        b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    )
    assert final == b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    assert server.complete and server.authorization_id == "user"
    assert server.credential_expiry_ms is None


def store(
    *users: tuple[str, str, ScramMechanism, int],
) -> Callable[[str, ScramMechanism], ScramCredential | None]:
    creds = {(name, mech): derive_credential(mech, pw.encode(), iters) for name, pw, mech, iters in users}
    return lambda name, mech: creds.get((name, mech))


STORE = store(
    ("alice", "alice-secret", SHA256, 4096),
    ("alice", "alice-512", SHA512, 8192),
    ("a,b=c", "odd", SHA256, 4096),
    ("weak", "weak", SHA256, 1000),
)


def server_for(mechanism: ScramMechanism, nonce: Callable[[], str] = server_nonce) -> ScramSaslServer:
    return ScramSaslServer(mechanism, lambda user: STORE(user, mechanism), nonce)


@pytest.mark.parametrize(("mechanism", "password"), [(SHA256, "alice-secret"), (SHA512, "alice-512")])
def test_scram_with_kafka_pythons_client(mechanism: ScramMechanism, password: str) -> None:
    client = ScramClient("alice", password, mechanism.mechanism_name)
    server = server_for(mechanism)
    client.process_server_first_message(server.evaluate_response(client.first_message()))
    client.process_server_final_message(server.evaluate_response(client.final_message()))  # checks v=
    assert server.complete and server.authorization_id == "alice"


class Client:
    """A SCRAM client of our own, for what kafka-python's never sends (escapes, authzid, ...)."""

    def __init__(self, mechanism: ScramMechanism, user: str, password: str, gs2: str = "n,,") -> None:
        self.mechanism, self.password, self.gs2 = mechanism, password.encode(), gs2
        self.saslname = user.replace("=", "=3D").replace(",", "=2C")
        self.nonce = "fyko+d2lbbFgONRv9qkxdawL"

    def first(self, extensions: str = "") -> bytes:
        self.bare = f"n={self.saslname},r={self.nonce}{extensions}"
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None, password: bytes | None = None) -> bytes:
        fields = dict(p.split("=", 1) for p in server_first.decode().split(","))
        salted = hashlib.pbkdf2_hmac(
            self.mechanism.hash_name,
            password or self.password,
            base64.b64decode(fields["s"]),
            int(fields["i"]),
        )
        channel = base64.b64encode(self.gs2.encode()).decode()
        without_proof = f"c={channel},r={nonce or fields['r']}"
        auth = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        client_key = hmac.digest(salted, b"Client Key", self.mechanism.hash_name)
        signature = hmac.digest(
            hashlib.new(self.mechanism.hash_name, client_key).digest(), auth, self.mechanism.hash_name
        )
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


def test_scram_saslname_escapes_and_authzid() -> None:
    assert unescape_saslname("a=2Cb=3Dc=3D2C") == "a,b=c=2C"
    client = Client(SHA256, "a,b=c", "odd", gs2="n,a=a=2Cb=3Dc,")
    server = server_for(SHA256)
    first = server.evaluate_response(client.first())
    server.evaluate_response(client.final(first))
    assert server.complete and server.authorization_id == "a,b=c"


def test_scram_wrong_password_and_unknown_user_fail_at_the_same_step_with_the_same_text() -> None:
    for user, password in (("alice", "Tr0ub4dor"), ("mallory", "c0rrect-h0rse")):
        client, server = Client(SHA256, user, password), server_for(SHA256)
        first = server.evaluate_response(client.first())  # an unknown user gets a server-first too
        assert first.startswith(b"r=" + client.nonce.encode()) and first.endswith(b",i=4096")
        error = fails(server, client.final(first))
        assert password not in error.reason
    # The stand-in salt of an unknown user is stable, as a real user's is.
    salts = {
        server_for(SHA256).evaluate_response(Client(SHA256, "mallory", "x").first()).split(b",")[1]
        for _ in "ab"
    }
    assert len(salts) == 1


def test_scram_credential_of_the_other_mechanism_is_unknown() -> None:
    client, server = Client(SHA512, "a,b=c", "odd"), server_for(SHA512)  # has only SCRAM-SHA-256
    fails(server, client.final(server.evaluate_response(client.first())))


def test_scram_replayed_or_changed_nonce_fails() -> None:
    client = Client(SHA256, "alice", "alice-secret")
    server = server_for(SHA256)
    first = server.evaluate_response(client.first())
    final = client.final(first)
    server.evaluate_response(final)
    # The same client-final sent to a new exchange: that exchange's server nonce differs.
    again = server_for(SHA256)
    again.evaluate_response(client.first())
    fails(again, final)
    # A nonce that is not the combined one (the client's alone), with a proof over it.
    other = server_for(SHA256)
    first = other.evaluate_response(client.first())
    fails(other, client.final(first, nonce=client.nonce))


def test_scram_refuses_what_kafka_refuses() -> None:
    different = "Authentication failed: Client requested an authorization id that is different from username"
    cases = [
        (b"p=tls-unique,,n=alice,r=abc", GENERIC),  # channel binding
        (b"y,,n=alice,r=abc", GENERIC),  # Kafka's pattern takes the GS2 flag n only
        (b"n,,n=alice,r=abc,tokenauth=true", GENERIC),  # delegation tokens: not supported
        (b"n,a=bob,n=alice,r=abc", different),
        (b"n,,n=weak,r=abc", GENERIC),  # 1000 iterations < 4096
        (b"n,,n=al=ice,r=abc", GENERIC),  # '=' not escaped
        (b"n,,n=alice,r=a,bc", GENERIC),
        (b"n,,n=,r=abc", GENERIC),
        (b"n,,r=abc", GENERIC),
        (b"", GENERIC),
        (b"n,,n=alice,r=abc\xff", GENERIC),
    ]
    for message, client_message in cases:
        fails(server_for(SHA256), message, client_message)
    ok = server_for(SHA256)
    ok.evaluate_response(b"n,,n=alice,r=abc,tokenauth=false,foo=bar")  # other extensions are ignored


def test_scram_client_final_must_be_well_formed_and_match_the_gs2_header() -> None:
    client = Client(SHA256, "alice", "alice-secret")
    bad_finals: list[Callable[[bytes], bytes]] = [
        lambda f: f.replace(b"c=biws", b"c=eSws"),  # channel binding data "y,," differs from "n,,"
        lambda f: f[: f.index(b",p=")],  # no proof
        lambda f: f[: f.index(b",p=")] + b",p=AAAA",  # proof of the wrong length
        lambda f: f + b"==",
        lambda f: b"",
        lambda f: f.replace(b"c=", b"x="),
    ]
    for change in bad_finals:
        server = server_for(SHA256)
        fails(server, change(client.final(server.evaluate_response(client.first()))))
        fails(server, b"anything")  # a failed exchange stays failed


def test_scram_nothing_after_completion() -> None:
    client, server = Client(SHA256, "alice", "alice-secret"), server_for(SHA256)
    server.evaluate_response(client.final(server.evaluate_response(client.first())))
    fails(server, client.first())


# -- OAUTHBEARER --------------------------------------------------------------------------------

NOW_MS = 1_700_000_000_000


def b64url(obj: object) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token(claims: object, header: object = None, signature: str = "") -> str:
    return f"{b64url(header if header is not None else {'alg': 'none'})}.{b64url(claims)}.{signature}"


def initial(tok: str, authzid: str = "", extensions: str = "") -> bytes:
    a = f"a={authzid}" if authzid else ""
    return f"n,{a},\x01auth=Bearer {tok}\x01{extensions}\x01".encode()


def oauth(**options: object) -> OAuthBearerSaslServer:
    return OAuthBearerSaslServer(UnsecuredValidatorOptions(**options), lambda: NOW_MS)  # type: ignore[arg-type]


GOOD = {"sub": "alice", "exp": NOW_MS / 1000 + 60, "iat": NOW_MS / 1000 - 1, "scope": ["a", "b"]}


def test_oauthbearer_accepts_an_unsecured_token_and_its_expiry_caps_the_credential() -> None:
    server = oauth()
    assert server.evaluate_response(initial(token(GOOD), extensions="traceId=123\x01")) == b""
    assert server.complete and server.authorization_id == "alice"
    assert server.credential_expiry_ms == NOW_MS + 60_000
    named = oauth(principal_claim_name="user", scope_claim_name="scp", required_scope=("x",))
    named.evaluate_response(
        initial(token({"user": "bob", "exp": NOW_MS / 1000 + 1, "scp": "x"}), authzid="bob")
    )
    assert named.authorization_id == "bob"


INVALID = b'{"status":"invalid_token"}'


@pytest.mark.parametrize(
    "tok",
    [
        token({**GOOD, "exp": NOW_MS / 1000}),  # expired (now >= exp)
        token({k: v for k, v in GOOD.items() if k != "exp"}),  # no exp
        token({**GOOD, "exp": "soon"}),
        token({**GOOD, "exp": True}),
        token({**GOOD, "exp": 1e308 * 10}),  # Infinity is not JSON: json.dumps writes it anyway
        token({**GOOD, "sub": "  "}),
        token({**GOOD, "sub": 7}),
        token({**GOOD, "iat": NOW_MS / 1000 + 10}),  # issued in the future
        token({**GOOD, "iat": GOOD["exp"]}),  # not before exp
        token({**GOOD, "scope": {"a": 1}}),
        token(GOOD, header={"alg": "HS256"}),
        token(GOOD, header={}),
        token(GOOD, signature="c2ln"),
        token(GOOD).rstrip("."),  # two parts
        token(GOOD) + ".x.y",
        b64url(b"{not json") + "." + b64url(GOOD) + ".",
        b64url(b"[1]") + "." + b64url(GOOD) + ".",
        b64url(b"[" * 10000) + "." + b64url(GOOD) + ".",  # nesting: RecursionError inside json
        b64url({"alg": "none"}) + "." + b64url(b'{"exp": 1' + b"0" * 5000 + b"}") + ".",
        b64url({"alg": "none"}) + "..",
        "a.b",
        "abc.d.",  # base64 of 3 chars: no
    ],
)
def test_oauthbearer_refuses_bad_tokens_with_kafkas_json_then_the_clients_ack(tok: str) -> None:
    server = oauth()
    assert server.evaluate_response(initial(tok)) == INVALID
    assert not server.complete
    fails(server, b"\x01", INVALID.decode())


def test_oauthbearer_clock_skew_and_required_scope() -> None:
    late = token({"sub": "alice", "exp": NOW_MS / 1000 - 1})
    assert oauth(allowable_clock_skew_ms=2000).evaluate_response(initial(late)) == b""
    server = oauth(required_scope=("a", "c"))
    assert server.evaluate_response(initial(token(GOOD))) == b'{"status":"insufficient_scope", "scope":"a c"}'


def test_oauthbearer_malformed_messages_and_authzid() -> None:
    good = token(GOOD)
    for message in [
        b"",
        b"\x01",  # an ack with no error pending is just a bad message
        initial(good)[:-1],  # truncated
        b"y" + initial(good)[1:],
        initial(good).replace(b"Bearer", b"Basic"),
        initial(good).replace(b"auth=", b"xauth="),
        initial(good).replace(b"Bearer ", b"Bearer"),
        initial(good) + b"\x00",
        initial(good, extensions="bad key=v\x01"),
        b"n,,\x01auth=Bearer \xff\x01\x01",
    ]:
        fails(oauth(), message)
    fails(
        oauth(),
        initial(good, authzid="bob"),
        "Authentication failed: Client requested an authorization id (bob) that is different from "
        "the token's principal name (alice)",
    )


def test_oauthbearer_a_new_initial_response_may_follow_an_error() -> None:
    server = oauth()  # as Kafka's server: the error is pending only until the next message
    assert server.evaluate_response(initial("x.y.")) == INVALID
    assert server.evaluate_response(initial(token(GOOD))) == b""
    fails(server, initial(token(GOOD)))  # complete: nothing more
