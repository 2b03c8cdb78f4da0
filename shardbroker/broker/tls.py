"""TLS for the SSL and SASL_SSL listeners: the server ``ssl.SSLContext`` from Kafka's ssl.* settings,
and the mTLS principal of a connection. Reads key and trust store files.

``TlsSettings.load(listener_config)`` builds one listener's context (its
``listener.name.<l>.ssl.*`` values over the top-level ones): the PEM key store
(``ssl.keystore.location``, key and chain in one file, or ``ssl.keystore.key`` and
``ssl.keystore.certificate.chain`` inline, read through an anonymous memory file so the key never
touches the disk), ``ssl.key.password`` for an encrypted key (never a terminal prompt: a missing
password is an error), the trust store for client certificates (``ssl.truststore.location`` or
inline ``ssl.truststore.certificates``; the system's CAs when neither is set, as the JVM's
default trust store), ``ssl.client.auth`` (none/requested/required: CERT_NONE/OPTIONAL/REQUIRED;
on SASL_SSL only its listener-prefixed form counts, Kafka's KIP-684), ``ssl.enabled.protocols``
(the range of TLS versions) and ``ssl.cipher.suites`` (OpenSSL names for TLS 1.2; OpenSSL keeps
its TLS 1.3 suites: Python cannot restrict them). Every problem is a ``TlsConfigError`` naming
the property and the reason, never the secret: ``serve`` refuses to start with it, AlterConfigs
answers INVALID_CONFIG with it and keeps the context it had.

The principal (Kafka's DefaultKafkaPrincipalBuilder for SSL): ``User:`` + the client
certificate's subject in RFC 2253 form (security/x500.py) mapped by
``ssl.principal.mapping.rules`` (security/ssl_principal_mapper.py); ``User:ANONYMOUS`` without a
certificate. SASL_SSL connections get theirs from SASL instead.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from shardbroker.config.broker_config import ListenerConfig
from shardbroker.config.broker_properties import (
    SSL_CIPHER_SUITES,
    SSL_CLIENT_AUTH,
    SSL_ENABLED_PROTOCOLS,
    SSL_KEY_PASSWORD,
    SSL_KEYSTORE_CERTIFICATE_CHAIN,
    SSL_KEYSTORE_KEY,
    SSL_KEYSTORE_LOCATION,
    SSL_PRINCIPAL_MAPPING_RULES,
    SSL_TRUSTSTORE_CERTIFICATES,
    SSL_TRUSTSTORE_LOCATION,
)
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.ssl_principal_mapper import SslPrincipalMapper
from shardbroker.security.x500 import subject_name

__all__ = ["TlsConfigError", "TlsSettings"]

_VERIFY: Final = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    """A TLS listener's settings do not make a context (the message names the property)."""


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


@contextlib.contextmanager
def _memory_file(data: str) -> Iterator[str]:
    """A path to ``data`` that lives in memory only (Linux memfd), for ``load_cert_chain``."""
    fd = os.memfd_create("shardbroker-keystore", os.MFD_CLOEXEC)
    try:
        os.write(fd, data.encode())
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """One TLS listener's server context and principal rules."""

    listener: str
    context: ssl.SSLContext
    mapper: SslPrincipalMapper
    client_auth: str

    @classmethod
    def load(cls, lc: ListenerConfig) -> TlsSettings:
        """Build the listener's context from its settings; TlsConfigError says what is wrong."""
        name = lc.endpoint.listener
        where = f"listener {name}"
        try:
            mapper = SslPrincipalMapper(lc.get(SSL_PRINCIPAL_MAPPING_RULES))
        except ValueError as exc:
            raise TlsConfigError(f"{where}: ssl.principal.mapping.rules: {exc}") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        versions = sorted(_VERSIONS[v] for v in lc.get(SSL_ENABLED_PROTOCOLS))
        context.minimum_version, context.maximum_version = versions[0], versions[-1]
        suites = lc.find(SSL_CIPHER_SUITES)
        if suites:
            try:
                context.set_ciphers(":".join(suites))
            except ssl.SSLError:
                raise TlsConfigError(
                    f"{where}: ssl.cipher.suites: none of {', '.join(suites)} is a cipher suite this "
                    "OpenSSL offers (use OpenSSL names, e.g. ECDHE-RSA-AES128-GCM-SHA256)"
                ) from None
        _load_keystore(context, lc, where)
        # KIP-684: on SASL_SSL the top-level ssl.client.auth is ignored, only the listener's counts.
        sasl = lc.endpoint.security_protocol == "SASL_SSL"
        client_auth = lc.get(SSL_CLIENT_AUTH) if not sasl or lc.is_set(SSL_CLIENT_AUTH) else "none"
        context.verify_mode = _VERIFY[client_auth]
        if client_auth != "none":
            _load_truststore(context, lc, where)
        return cls(name, context, mapper, client_auth)

    def principal(self, ssl_object: ssl.SSLObject | None) -> KafkaPrincipal:
        """The connection's principal from its client certificate (ValueError: no rule applies or
        the certificate cannot be read)."""
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not certificate:
            return ANONYMOUS
        return KafkaPrincipal.user(self.mapper.name(subject_name(certificate)))


def _load_keystore(context: ssl.SSLContext, lc: ListenerConfig, where: str) -> None:
    password = lc.find(SSL_KEY_PASSWORD) or ""  # "" rather than None: OpenSSL would prompt
    location = lc.find(SSL_KEYSTORE_LOCATION)
    try:
        if location is not None:
            context.load_cert_chain(location, password=password)
            return
        key, chain = lc.find(SSL_KEYSTORE_KEY), lc.find(SSL_KEYSTORE_CERTIFICATE_CHAIN)
        if key is None or chain is None:
            raise TlsConfigError(f"{where} has no key store (ssl.keystore.location or ssl.keystore.key)")
        with _memory_file(key.strip() + "\n" + chain.strip() + "\n") as path:
            context.load_cert_chain(path, password=password)
    except (ssl.SSLError, OSError) as exc:
        what = f"ssl.keystore.location {location}" if location else "ssl.keystore.key/certificate.chain"
        hint = (
            " (is ssl.key.password right?)" if "BAD_DECRYPT" in str(exc) or "bad decrypt" in str(exc) else ""
        )
        raise TlsConfigError(
            f"{where}: cannot load the key store from {what}: {_reason(exc)}{hint}"
        ) from None


def _load_truststore(context: ssl.SSLContext, lc: ListenerConfig, where: str) -> None:
    location, inline = lc.find(SSL_TRUSTSTORE_LOCATION), lc.find(SSL_TRUSTSTORE_CERTIFICATES)
    try:
        if location is not None:
            context.load_verify_locations(cafile=location)
        elif inline is not None:
            context.load_verify_locations(cadata=inline)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (ssl.SSLError, OSError, ValueError) as exc:
        what = f"ssl.truststore.location {location}" if location else "ssl.truststore.certificates"
        raise TlsConfigError(f"{where}: cannot load the trust store from {what}: {_reason(exc)}") from None
