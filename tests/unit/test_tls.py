"""TLS: subjects in the JDK's RFC 2253 form, server contexts from Kafka's ssl.* settings, the mTLS
principal, and a worker's listener serving TLS and mTLS connections (in process, real sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from shardbroker.broker.listener import KafkaListener
from shardbroker.broker.session import SecurityProtocol
from shardbroker.broker.tls import TlsConfigError, TlsSettings
from shardbroker.broker.worker_state import WorkerState
from shardbroker.config.broker_config import BrokerConfig, ListenerConfig
from shardbroker.config.listeners import Endpoint
from shardbroker.ipc import counters as ctr
from shardbroker.metadata.image import MetadataImage
from shardbroker.protocol import messages as m
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.x500 import subject_name
from tests.integration.tls import TestCA, client_context
from tests.unit.test_broker_connection import Client, make_registry


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


# -- subjects -----------------------------------------------------------------------------------


def _der(*rdns: x509.RelativeDistinguishedName) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(list(rdns))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def _rdn(*pairs: tuple[x509.ObjectIdentifier, str]) -> x509.RelativeDistinguishedName:
    return x509.RelativeDistinguishedName([x509.NameAttribute(oid, value) for oid, value in pairs])


@pytest.mark.parametrize(
    ("rdns", "expected"),
    [
        # Most specific first: the JDK writes the relative names last to first.
        (
            [
                _rdn((NameOID.COUNTRY_NAME, "US")),
                _rdn((NameOID.ORGANIZATION_NAME, "Example")),
                _rdn((NameOID.ORGANIZATIONAL_UNIT_NAME, "apps")),
                _rdn((NameOID.COMMON_NAME, "Alice")),
            ],
            "CN=Alice,OU=apps,O=Example,C=US",
        ),
        ([_rdn((NameOID.COMMON_NAME, "Tkac, Adam"))], "CN=Tkac\\, Adam"),
        ([_rdn((NameOID.COMMON_NAME, 'a+b=c#d;e"f<g>h\\i'))], 'CN=a\\+b\\=c\\#d\\;e\\"f\\<g\\>h\\\\i'),
        ([_rdn((NameOID.COMMON_NAME, " padded "))], "CN=\\ padded\\ "),
        ([_rdn((NameOID.COMMON_NAME, "Zoë"))], "CN=Zoë"),
        (
            [_rdn((NameOID.DOMAIN_COMPONENT, "com")), _rdn((NameOID.DOMAIN_COMPONENT, "example"))],
            "DC=example,DC=com",
        ),
        # Types without an RFC 2253 keyword: the dotted OID and the value's DER in hex.
        ([_rdn((NameOID.EMAIL_ADDRESS, "a@b.c"))], "1.2.840.113549.1.9.1=#16056140622e63"),
        ([_rdn((NameOID.SERIAL_NUMBER, "123"))], "2.5.4.5=#1303313233"),
        ([_rdn((NameOID.STATE_OR_PROVINCE_NAME, "MD"), (NameOID.LOCALITY_NAME, "Fulton"))], None),
    ],
)
def test_subjects_in_the_jdk_rfc2253_form(
    rdns: list[x509.RelativeDistinguishedName], expected: str | None
) -> None:
    name = subject_name(_der(*rdns))
    if expected is None:  # a multi-valued relative name: its values joined by "+"
        assert sorted(name.split("+")) == ["L=Fulton", "ST=MD"]
    else:
        assert name == expected


def test_not_a_certificate_is_a_value_error() -> None:
    for junk in (b"", b"\x30\x03\x02\x01", b"\x04\x02ab", _der(_rdn((NameOID.COMMON_NAME, "x")))[:40]):
        with pytest.raises(ValueError):
            subject_name(junk)


# -- contexts -----------------------------------------------------------------------------------


def listener_config(props: dict[str, str], protocol: str = "SSL") -> ListenerConfig:
    config = BrokerConfig(listeners=(Endpoint(protocol, protocol, "127.0.0.1", 0),), properties=props)
    return config.for_listener(protocol)


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake over memory: (server side, client side), or the first side's SSLError."""
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    s = server.wrap_bio(s_in, s_out, server_side=True)
    c = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    done = {"s": False, "c": False}
    for _ in range(10):
        for side, obj in (("c", c), ("s", s)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return s, c
    raise AssertionError("handshake did not finish")


def test_principal_of_a_client_certificate_with_mapping_rules(ca: TestCA) -> None:
    server = ca.server()
    alice = ca.client("Alice", ou="apps")
    rules = {"ssl.principal.mapping.rules": "RULE:^CN=([^,]+),OU=apps,.*$/app-$1/L,DEFAULT"}
    settings = TlsSettings.load(
        listener_config(
            {"ssl.keystore.location": str(server.keystore), "ssl.client.auth": "required", **rules}
            | {"ssl.truststore.location": str(ca.pem)}
        )
    )
    s, _ = _handshake(settings.context, client_context(ca, alice))
    assert settings.principal(s) == KafkaPrincipal.user("app-alice")
    bob = ca.client("Bob")  # no OU: DEFAULT, the whole subject
    s, _ = _handshake(settings.context, client_context(ca, bob))
    assert settings.principal(s) == KafkaPrincipal.user("CN=Bob,O=Example,C=US")


def test_requested_client_auth_without_a_certificate_is_anonymous(ca: TestCA) -> None:
    server = ca.server()
    settings = TlsSettings.load(
        listener_config(
            {
                "ssl.keystore.location": str(server.keystore),
                "ssl.client.auth": "requested",
                "ssl.truststore.location": str(ca.pem),
            }
        )
    )
    assert settings.context.verify_mode is ssl.CERT_OPTIONAL
    s, _ = _handshake(settings.context, client_context(ca))
    assert settings.principal(s) == ANONYMOUS


def test_sasl_ssl_takes_only_the_listener_client_auth(ca: TestCA) -> None:
    # KIP-684: a top-level ssl.client.auth does not apply to SASL_SSL listeners.
    server = ca.server()
    top = {"ssl.keystore.location": str(server.keystore), "ssl.client.auth": "required"}
    assert TlsSettings.load(listener_config(top, "SASL_SSL")).client_auth == "none"
    own = top | {"listener.name.sasl_ssl.ssl.client.auth": "required", "ssl.truststore.location": str(ca.pem)}
    assert TlsSettings.load(listener_config(own, "SASL_SSL")).client_auth == "required"


def test_inline_pem_stores_and_an_encrypted_key(ca: TestCA) -> None:
    server = ca.server("inline")
    settings = TlsSettings.load(
        listener_config(
            {
                "ssl.keystore.key": server.key.read_text(),
                "ssl.keystore.certificate.chain": server.cert.read_text(),
                "ssl.client.auth": "required",
                "ssl.truststore.certificates": ca.pem.read_text(),
            }
        )
    )
    _handshake(settings.context, client_context(ca, ca.client("Carol")))
    locked = ca.server("locked", password=b"s3cret")
    props = {"ssl.keystore.location": str(locked.keystore), "ssl.key.password": "s3cret"}
    _handshake(TlsSettings.load(listener_config(props)).context, client_context(ca))


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        (
            {"ssl.keystore.location": "/nonexistent.pem"},
            "cannot load the key store from ssl.keystore.location",
        ),
        ({"ssl.keystore.location": "LOCKED", "ssl.key.password": "wrong"}, "cannot load the key store"),
        ({"ssl.keystore.location": "LOCKED"}, "cannot load the key store"),
        ({"ssl.cipher.suites": "NOT-A-CIPHER"}, "ssl.cipher.suites"),
        ({"ssl.principal.mapping.rules": "RULE:^CN=(.*$/$1/X"}, "ssl.principal.mapping.rules"),
        ({"ssl.client.auth": "required", "ssl.truststore.location": "/nonexistent.pem"}, "trust store"),
    ],
)
def test_bad_settings_name_the_property_and_never_the_secret(
    ca: TestCA, props: dict[str, str], fragment: str
) -> None:
    locked = ca.server("locked2", password=b"right")
    props = {"ssl.keystore.location": str(ca.server("plain").keystore)} | {
        k: str(locked.keystore) if v == "LOCKED" else v for k, v in props.items()
    }
    with pytest.raises(TlsConfigError) as info:
        TlsSettings.load(listener_config(props))
    assert fragment in str(info.value) and "right" not in str(info.value) and "wrong" not in str(info.value)


def test_protocol_range_follows_ssl_enabled_protocols(ca: TestCA) -> None:
    server = ca.server()
    settings = TlsSettings.load(
        listener_config({"ssl.keystore.location": str(server.keystore), "ssl.enabled.protocols": "TLSv1.3"})
    )
    assert settings.context.minimum_version is ssl.TLSVersion.TLSv1_3
    old = client_context(ca)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        _handshake(settings.context, old)


# -- a worker's listener over TLS -----------------------------------------------------------------


class _Channel:
    """The channel surface the listener uses: the image and its subscription."""

    def __init__(self, image: MetadataImage) -> None:
        self.image = image
        self.subscribers: list[Callable[[MetadataImage, MetadataImage], Any]] = []

    def subscribe(self, callback: Callable[[MetadataImage, MetadataImage], Any]) -> None:
        self.subscribers.append(callback)


def _serial(client: Client) -> int:
    der = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).serial_number


def test_listener_serves_tls_and_mtls_with_principals_and_reloads_its_key_store(ca: TestCA) -> None:
    first, second = ca.server("first"), ca.server("second")
    alice = ca.client("Alice", ou="apps")
    config = BrokerConfig(
        listeners=(
            Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 0),
            Endpoint("SSL", "SSL", "127.0.0.1", 0),
            Endpoint("MTLS", "SSL", "127.0.0.1", 0),
        ),
        properties={
            "ssl.keystore.location": str(first.keystore),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.truststore.location": str(ca.pem),
            "listener.name.mtls.ssl.principal.mapping.rules": "RULE:^CN=([^,]+),.*$/$1/L",
        },
    )
    image = MetadataImage(0, "c", 0, (), {})
    chan = _Channel(image)
    shared: dict[str, Any] = {}
    state = WorkerState(node_id=0, config=config, channel=cast(Any, chan), replicas=cast(Any, None))

    async def scenario() -> None:
        listener = KafkaListener(state, make_registry(shared), drain_timeout=2.0)
        await listener.start()
        ports = listener.bound_ports()

        async def ask(name: str, context: ssl.SSLContext | None) -> Client:
            client = Client(*await asyncio.open_connection("127.0.0.1", ports[name], ssl=context))
            await client.send(
                m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="t")]), 12
            )
            assert (await client.read())[1].topics[0].name == "t"
            return client

        try:
            clients = [await ask("PLAINTEXT", None), await ask("SSL", client_context(ca))]
            clients.append(await ask("MTLS", client_context(ca, alice)))
            sessions = shared["sessions"]
            assert [(s.listener, s.security_protocol, s.principal) for s in sessions] == [
                ("PLAINTEXT", SecurityProtocol.PLAINTEXT, ANONYMOUS),
                ("SSL", SecurityProtocol.SSL, ANONYMOUS),
                ("MTLS", SecurityProtocol.SSL, KafkaPrincipal.user("alice")),
            ]
            old_serial = _serial(clients[1])
            # AlterConfigs reached the image: new connections get the new key store.
            new = dataclasses.replace(
                image, version=1, broker_configs={"ssl.keystore.location": str(second.keystore)}
            )
            for callback in chan.subscribers:
                await callback(image, new)
            reloaded = await ask("SSL", client_context(ca))
            assert _serial(reloaded) != old_serial
            assert _serial(reloaded) == x509.load_pem_x509_certificate(second.cert.read_bytes()).serial_number
            # The connection opened before the reload still works.
            await clients[1].send(
                m.MetadataRequest(topics=[m.MetadataRequest.MetadataRequestTopic(name="u")]), 12
            )
            assert (await clients[1].read())[1].topics[0].name == "u"
            for client in [*clients, reloaded]:
                client.close()
        finally:
            await listener.drain()

    asyncio.run(scenario())


def test_listener_counts_tls_outcomes_and_not_port_probes(ca: TestCA, tmp_path: Path) -> None:
    stranger = TestCA(tmp_path / "other", "Other CA").client("Mallory")
    config = BrokerConfig(
        listeners=(Endpoint("SSL", "SSL", "127.0.0.1", 0), Endpoint("MTLS", "SSL", "127.0.0.1", 0)),
        properties={
            "ssl.keystore.location": str(ca.server("s").keystore),
            "listener.name.mtls.ssl.client.auth": "required",
            "listener.name.mtls.ssl.truststore.location": str(ca.pem),
        },
    )
    channel = cast(Any, _Channel(MetadataImage(0, "c", 0, (), {})))
    state = WorkerState(node_id=0, config=config, channel=channel, replicas=cast(Any, None))
    ssl_cell = ctr.MECHANISMS.index("SSL")

    def counted(listener: int) -> list[int]:
        at = (listener * ctr.N_MECHANISMS + ssl_cell) * 2
        return list(state.counters._auth[at : at + 2])  # [success, failure]

    async def scenario() -> None:
        listener = KafkaListener(state, make_registry({}), drain_timeout=2.0)
        await listener.start()
        ports = listener.bound_ports()

        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                return await asyncio.wait_for(reader.read(), 5) == b""
            except (ConnectionResetError, ssl.SSLError):
                return True

        try:
            alice = client_context(ca, ca.client("A"))
            ok = [
                await asyncio.open_connection("127.0.0.1", ports["SSL"], ssl=client_context(ca)),
                await asyncio.open_connection("127.0.0.1", ports["MTLS"], ssl=alice),
            ]
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["SSL"])  # plaintext on TLS
            writer.write(b"\x00\x00\x00\x10" + b"\x00" * 16)
            assert await closed(reader)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", ports["MTLS"])  # a port probe
            writer.close()
            with contextlib.suppress(ConnectionResetError, ssl.SSLError):
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", ports["MTLS"], ssl=client_context(ca, stranger)
                )
                writer.write(b"\x00\x00\x00\x01x")
                assert await closed(reader)
                writer.close()
            for _ in range(100):
                if counted(0) == [1, 1] and counted(1) == [1, 1]:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)  # the probe's handshake ended too
            assert (counted(0), counted(1)) == ([1, 1], [1, 1])
            for _, w in ok:
                w.close()
        finally:
            await listener.drain()

    asyncio.run(scenario())
