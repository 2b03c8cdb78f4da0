"""A test certificate authority, made in the test: keys and certificates never leave a temp dir.

Writes files only under the directory it is given. ``TestCA(dir)`` makes a CA (``ca.pem``);
``server()`` a broker key store for 127.0.0.1/localhost (key + chain in one PEM file, Kafka's
``ssl.keystore.location`` for PEM), ``client(cn)`` a client certificate for mTLS (key and
certificate in separate files, as librdkafka, kafka-python and kcat want them), each valid now
unless ``expired``. ``TestCA(dir, "Other CA")`` is a CA nobody trusts. ``ssl_properties`` gives
a TLS listener's broker settings; ``client_settings`` the TLS settings of each test client
(confluent-kafka, kcat, kafka-python, aiokafka); ``client_context`` a Python ``ssl`` client
context. Shared by the TLS and the SASL_SSL tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Issued", "TestCA", "client_context", "client_settings", "ssl_properties"]

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Issued:
    """One issued certificate's files: ``keystore`` holds the key then the chain."""

    key: Path
    cert: Path
    keystore: Path
    subject: x509.Name


def _name(cn: str, *extra: tuple[x509.ObjectIdentifier, str]) -> x509.Name:
    attributes = [x509.NameAttribute(oid, value) for oid, value in extra]
    return x509.Name([*attributes, x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    """A self-signed CA (EC P-256) writing its certificates into ``directory``."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "shardbroker test CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        subject = _name(name, (NameOID.ORGANIZATION_NAME, "shardbroker tests"))
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 30 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        stem = name.replace(" ", "-").lower()
        self.pem = directory / f"{stem}.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        stem: str,
        subject: x509.Name,
        *,
        server: bool,
        expired: bool = False,
        password: bytes | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 10 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        )
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
        chain = cert.public_bytes(serialization.Encoding.PEM) + self.cert.public_bytes(
            serialization.Encoding.PEM
        )
        paths = Issued(
            self.directory / f"{stem}.key",
            self.directory / f"{stem}.crt",
            self.directory / f"{stem}-keystore.pem",
            subject,
        )
        paths.key.write_bytes(key_pem)
        paths.cert.write_bytes(chain)
        paths.keystore.write_bytes(key_pem + chain)
        for path in (paths.key, paths.keystore):
            path.chmod(0o600)
        return paths

    def server(self, stem: str = "broker", *, cn: str = "localhost", password: bytes | None = None) -> Issued:
        return self._issue(
            stem, _name(cn, (NameOID.ORGANIZATION_NAME, "shardbroker")), server=True, password=password
        )

    def client(
        self,
        cn: str,
        *,
        stem: str | None = None,
        ou: str | None = None,
        expired: bool = False,
    ) -> Issued:
        extra = [(NameOID.COUNTRY_NAME, "US"), (NameOID.ORGANIZATION_NAME, "Example")]
        if ou is not None:
            extra.append((NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        return self._issue(stem or f"client-{cn}", _name(cn, *extra), server=False, expired=expired)


def ssl_properties(
    ca: TestCA, server: Issued, *, listener: str | None = None, client_auth: str = "none"
) -> dict[str, str]:
    """A TLS listener's broker settings (prefixed with ``listener.name.<l>.`` when given)."""
    prefix = f"listener.name.{listener.lower()}." if listener else ""
    props = {f"{prefix}ssl.keystore.location": str(server.keystore)}
    if client_auth != "none":
        props[f"{prefix}ssl.client.auth"] = client_auth
        props[f"{prefix}ssl.truststore.location"] = str(ca.pem)
    return props


def client_context(ca: TestCA, client: Issued | None = None) -> ssl.SSLContext:
    """A client context trusting ``ca``, presenting ``client`` when given."""
    context = ssl.create_default_context(cafile=str(ca.pem))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def client_settings(client: str, ca: TestCA, cert: Issued | None = None) -> dict[str, Any]:
    """TLS settings of one of the test clients (``confluent``, ``kcat``: librdkafka properties;
    ``kafka-python``, ``aiokafka``: constructor keywords), trusting ``ca``, presenting ``cert``."""
    if client in ("confluent", "kcat"):
        out: dict[str, Any] = {"security.protocol": "ssl", "ssl.ca.location": str(ca.pem)}
        if cert is not None:
            out |= {"ssl.certificate.location": str(cert.cert), "ssl.key.location": str(cert.key)}
        return out
    if client == "kafka-python":
        out = {"security_protocol": "SSL", "ssl_cafile": str(ca.pem)}
        if cert is not None:
            out |= {"ssl_certfile": str(cert.cert), "ssl_keyfile": str(cert.key)}
        return out
    if client == "aiokafka":
        return {"security_protocol": "SSL", "ssl_context": client_context(ca, cert)}
    raise ValueError(client)
