"""Our client's security settings and SASL (client/client_security.py, client/sasl_client.py):
Kafka's properties file format, the settings' checks (never echoing a secret), and the SASL
exchange against the broker's own PLAIN and SCRAM servers behind the fake broker, including a
wrong password, an unsupported mechanism and a server that cannot prove it knows the password.
Opens loopback sockets."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shardbroker.client.admin import AdminClient
from shardbroker.client.client_security import ClientSecurity, parse_properties
from shardbroker.client.connection import KafkaApiError
from shardbroker.client.sasl_client import SaslClientError, ScramClient
from shardbroker.protocol import messages as m
from shardbroker.protocol.codec import Message
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.sasl import SaslAuthenticationFailed, SaslServer
from shardbroker.security.sasl_plain import PlainSaslServer
from shardbroker.security.sasl_scram import ScramSaslServer
from shardbroker.security.scram_credential import ScramMechanism, derive_credential
from tests.unit.kafka_fake import FakeBroker, running_fake

SHA512 = ScramMechanism.SCRAM_SHA_512
SECRET = 's3cret=,;"x'
JAAS = 'org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="{}";'


# -- the properties file ---------------------------------------------------------------------------


def test_java_properties() -> None:
    text = (
        "# a comment\n! another\n\n"
        "security.protocol = SASL_SSL\n"
        "sasl.mechanism:SCRAM-SHA-512\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        '    username="admin" \\\n    password="a\\\\b";\n'
        "ssl.truststore.location /etc/ca.pem\n"
        "key\\=with\\:seps=\\u00e9\\t\n"
    )
    props = parse_properties(text)
    assert props["security.protocol"] == "SASL_SSL"
    assert props["sasl.mechanism"] == "SCRAM-SHA-512"
    assert props["sasl.jaas.config"].endswith('username="admin" password="a\\b";')
    assert props["ssl.truststore.location"] == "/etc/ca.pem"
    assert props["key=with:seps"] == "\u00e9\t"


def test_settings() -> None:
    sec = ClientSecurity.from_properties(
        {
            "security.protocol": "sasl_ssl",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.jaas.config": JAAS.format("pw"),
        }
    )
    assert (sec.tls, sec.sasl, sec.username, sec.password) == (True, True, "admin", "pw")
    assert "pw" not in repr(sec)
    assert ClientSecurity.from_properties({}) == ClientSecurity()
    plain = ClientSecurity.from_properties(
        {
            "security.protocol": "SSL",
            "ssl.truststore.location": "/ca.pem",
            "ssl.endpoint.identification.algorithm": "",
        }
    )
    assert (plain.tls, plain.sasl, plain.truststore_location, plain.check_hostname) == (
        True,
        False,
        Path("/ca.pem"),
        False,
    )


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"request.timeout.ms": "5"}, "unsupported client setting"),
        ({"security.protocol": "SASL_SSH"}, "security.protocol"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.jaas.config": JAAS.format(SECRET)}, "GSSAPI"),
        ({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN"}, "needs sasl.jaas.config"),
        (
            {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.jaas.config": "x"},
            "expected",
        ),
        (
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.jaas.config": f'M required username="u" passwd="{SECRET}";',
            },
            "needs username",
        ),
        ({"ssl.truststore.type": "JKS"}, "only PEM"),
        ({"ssl.endpoint.identification.algorithm": "none"}, "https"),
    ],
)
def test_bad_settings(props: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        ClientSecurity.from_properties(props)
    assert SECRET not in str(info.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read"):
        ClientSecurity.from_file(tmp_path / "missing.properties")


# -- SASL against the broker's own servers ---------------------------------------------------------


class SaslFake:
    """The fake broker with SaslHandshake v1 / SaslAuthenticate run by a broker SASL server."""

    def __init__(self, fake: FakeBroker, server: Any) -> None:
        self.fake = fake
        self.new_server = server
        self.server: SaslServer | None = None
        fake.versions.update({17: (0, 1), 36: (0, 2)})
        fake.handlers.update({17: self.handshake, 36: self.authenticate})

    def handshake(self, version: int, request: Any) -> Message:
        self.server = self.new_server()
        assert self.server is not None
        if request.mechanism != self.server.mechanism_name:
            return m.SaslHandshakeResponse(
                error_code=ErrorCode.UNSUPPORTED_SASL_MECHANISM, mechanisms=[self.server.mechanism_name]
            )
        return m.SaslHandshakeResponse(mechanisms=[self.server.mechanism_name])

    def authenticate(self, version: int, request: Any) -> Message:
        assert self.server is not None
        try:
            token = self.server.evaluate_response(request.auth_bytes)
        except SaslAuthenticationFailed as exc:
            return m.SaslAuthenticateResponse(
                error_code=ErrorCode.SASL_AUTHENTICATION_FAILED, error_message=exc.client_message or "failed"
            )
        return m.SaslAuthenticateResponse(auth_bytes=token)


def _security(mechanism: str, password: str) -> ClientSecurity:
    return ClientSecurity("SASL_PLAINTEXT", mechanism, "admin", password)


@pytest.fixture
def fake() -> Iterator[FakeBroker]:
    with running_fake() as broker:
        yield broker


def _scram_server() -> ScramSaslServer:
    credential = derive_credential(SHA512, SECRET.encode(), 4096)
    return ScramSaslServer(SHA512, lambda user: credential if user == "admin" else None)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_authenticates_before_requests(fake: FakeBroker, mechanism: str) -> None:
    sasl = SaslFake(
        fake, _scram_server if mechanism != "PLAIN" else lambda: PlainSaslServer({"admin": SECRET})
    )
    with AdminClient(fake.address, timeout=2, security=_security(mechanism, SECRET)) as admin:
        admin.metadata([])
    keys = [k for k, _, _ in fake.requests]
    rounds = 1 if mechanism == "PLAIN" else 2
    assert keys == [18, 17, *[36] * rounds, 3]
    assert fake.apis(17)[0][0] == 1  # v1: tokens in SaslAuthenticate frames
    assert sasl.server is not None and sasl.server.complete and sasl.server.authorization_id == "admin"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-512"])
def test_wrong_password(fake: FakeBroker, mechanism: str) -> None:
    SaslFake(fake, _scram_server if mechanism != "PLAIN" else lambda: PlainSaslServer({"admin": SECRET}))
    admin = AdminClient(fake.address, timeout=2, security=_security(mechanism, "wrong"))
    with admin, pytest.raises(KafkaApiError, match="SASL_AUTHENTICATION_FAILED") as info:
        admin.metadata([])
    assert "wrong" not in str(info.value)
    assert 3 not in [k for k, _, _ in fake.requests]


def test_unsupported_mechanism(fake: FakeBroker) -> None:
    SaslFake(fake, lambda: PlainSaslServer({"admin": SECRET}))
    admin = AdminClient(fake.address, timeout=2, security=_security("SCRAM-SHA-256", SECRET))
    with admin, pytest.raises(KafkaApiError, match=r"UNSUPPORTED_SASL_MECHANISM.*enabled: PLAIN"):
        admin.metadata([])


def test_scram_client_checks_the_server() -> None:
    """A server-first that does not extend the nonce, asks for too few iterations, or a server
    signature that is not the one derived from the password: the client refuses."""
    salt = base64.b64encode(b"salt").decode()
    client = ScramClient(SHA512, "admin", SECRET, nonce="abc")
    assert client.evaluate(b"") == b"n,,n=admin,r=abc"
    with pytest.raises(SaslClientError, match="nonce"):
        client.evaluate(f"r=xyz,s={salt},i=4096".encode())
    client = ScramClient(SHA512, "admin", SECRET, nonce="abc")
    client.evaluate(b"")
    with pytest.raises(SaslClientError, match="less than the minimum"):
        client.evaluate(f"r=abcdef,s={salt},i=1000".encode())
    client = ScramClient(SHA512, "admin", SECRET, nonce="abc")
    client.evaluate(b"")
    client.evaluate(f"r=abcdef,s={salt},i=4096".encode())
    forged = base64.b64encode(b"\x00" * 64).decode()
    with pytest.raises(SaslClientError, match="invalid server signature"):
        client.evaluate(f"v={forged}".encode())
    assert not client.complete
    assert ScramClient(SHA512, "a=b,c", SECRET, nonce="n").evaluate(b"") == b"n,,n=a=3Db=2Cc,r=n"
