"""A server ``ssl.SSLContext`` from Kafka's PEM settings, for every TLS door: the SSL and SASL_SSL
listeners (``ssl.*``, ``listener.name.<l>.ssl.*``; broker/tls.py) and ``/metrics``
(``metrics.ssl.*``; observability/metrics_security.py). Reads key and trust store files.

It lives here, below both users, so that one builder serves the workers' listeners and the
supervisor's /metrics (observability may not import broker/). ``SslRows`` names the rows of one
family: the same code reads ``ssl.keystore.location`` for a listener and
``metrics.ssl.keystore.location`` for /metrics, and its messages name the property that was set.

The PEM key store (``*keystore.location``, key and chain in one file, or ``*keystore.key`` and
``*keystore.certificate.chain`` inline, read through an anonymous memory file so the key never
touches the disk), ``*key.password`` for an encrypted key (never a terminal prompt: a missing
password is an error), the trust store for client certificates (``*truststore.location`` or
inline ``*truststore.certificates``; the system's CAs when neither is set, as the JVM's default
trust store), the client authentication (none/requested/required: CERT_NONE/OPTIONAL/REQUIRED),
``*enabled.protocols`` (the range of TLS versions) and ``*cipher.suites`` (OpenSSL names for TLS
1.2; OpenSSL keeps its TLS 1.3 suites: Python cannot restrict them). Every problem is a
``TlsConfigError`` naming the property and the reason, never the secret. ``check_stores`` is the
static check of the same rows (one key store, at most one trust store) that ``BrokerConfig``
runs when it is built, with Kafka's DefaultSslEngineFactory messages.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from shardbroker.config.broker_properties import (
    METRICS_SSL_CIPHER_SUITES,
    METRICS_SSL_CLIENT_AUTH,
    METRICS_SSL_ENABLED_PROTOCOLS,
    METRICS_SSL_KEY_PASSWORD,
    METRICS_SSL_KEYSTORE_CERTIFICATE_CHAIN,
    METRICS_SSL_KEYSTORE_KEY,
    METRICS_SSL_KEYSTORE_LOCATION,
    METRICS_SSL_TRUSTSTORE_CERTIFICATES,
    METRICS_SSL_TRUSTSTORE_LOCATION,
    SSL_CIPHER_SUITES,
    SSL_CLIENT_AUTH,
    SSL_ENABLED_PROTOCOLS,
    SSL_KEY_PASSWORD,
    SSL_KEYSTORE_CERTIFICATE_CHAIN,
    SSL_KEYSTORE_KEY,
    SSL_KEYSTORE_LOCATION,
    SSL_TRUSTSTORE_CERTIFICATES,
    SSL_TRUSTSTORE_LOCATION,
)
from shardbroker.config.config_def import ConfigError, ConfigKey

__all__ = ["LISTENER_SSL", "METRICS_SSL", "SslRows", "TlsConfigError", "check_stores", "server_context"]

T = TypeVar("T")

_VERIFY: Final = {
    "none": ssl.CERT_NONE,
    "requested": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}
_VERSIONS: Final = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    """TLS settings that do not make a context (the message names the property)."""


class Settings(Protocol):
    """Where the rows' values come from: a ``ListenerConfig`` or the ``BrokerConfig`` itself."""

    def find(self, key: ConfigKey[T]) -> T | None: ...


@dataclass(frozen=True, slots=True)
class SslRows:
    """The rows of one family of TLS settings."""

    keystore_location: ConfigKey[str]
    keystore_key: ConfigKey[str]
    keystore_certificate_chain: ConfigKey[str]
    key_password: ConfigKey[str]
    truststore_location: ConfigKey[str]
    truststore_certificates: ConfigKey[str]
    client_auth: ConfigKey[str]
    enabled_protocols: ConfigKey[frozenset[str]]
    cipher_suites: ConfigKey[tuple[str, ...]]

    def rows(self) -> tuple[ConfigKey[Any], ...]:
        return tuple(getattr(self, name) for name in self.__slots__)


LISTENER_SSL: Final = SslRows(
    SSL_KEYSTORE_LOCATION,
    SSL_KEYSTORE_KEY,
    SSL_KEYSTORE_CERTIFICATE_CHAIN,
    SSL_KEY_PASSWORD,
    SSL_TRUSTSTORE_LOCATION,
    SSL_TRUSTSTORE_CERTIFICATES,
    SSL_CLIENT_AUTH,
    SSL_ENABLED_PROTOCOLS,
    SSL_CIPHER_SUITES,
)
METRICS_SSL: Final = SslRows(
    METRICS_SSL_KEYSTORE_LOCATION,
    METRICS_SSL_KEYSTORE_KEY,
    METRICS_SSL_KEYSTORE_CERTIFICATE_CHAIN,
    METRICS_SSL_KEY_PASSWORD,
    METRICS_SSL_TRUSTSTORE_LOCATION,
    METRICS_SSL_TRUSTSTORE_CERTIFICATES,
    METRICS_SSL_CLIENT_AUTH,
    METRICS_SSL_ENABLED_PROTOCOLS,
    METRICS_SSL_CIPHER_SUITES,
)


def check_stores(settings: Settings, rows: SslRows, where: str, hint: str = "") -> None:
    """One key store (a file, or inline key and chain) and at most one trust store, else
    ConfigError (Kafka's DefaultSslEngineFactory messages, with ``where``; ``hint`` adds where
    else the key store may be set)."""
    location = settings.find(rows.keystore_location)
    key = settings.find(rows.keystore_key)
    chain = settings.find(rows.keystore_certificate_chain)
    if key is not None and location is not None:
        raise ConfigError(f"{where}: both SSL key store location and separate private key are specified")
    if key is not None and chain is None:
        raise ConfigError(f"{where}: SSL private key is specified, but certificate chain is not specified")
    if chain is not None and key is None:
        raise ConfigError(f"{where}: SSL certificate chain is specified, but private key is not specified")
    if key is None and location is None:
        raise ConfigError(
            f"{where} has no key store: set {rows.keystore_location.name}{hint}, "
            f"or {rows.keystore_key.name} with {rows.keystore_certificate_chain.name}"
        )
    trust = settings.find(rows.truststore_location), settings.find(rows.truststore_certificates)
    if trust[0] is not None and trust[1] is not None:
        raise ConfigError(
            f"{where}: both SSL trust store location and separate trust certificates are specified"
        )


def server_context(settings: Settings, rows: SslRows, where: str, client_auth: str) -> ssl.SSLContext:
    """The server context of ``settings`` (``client_auth``: none, requested or required);
    TlsConfigError says what is wrong."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    enabled = settings.find(rows.enabled_protocols)  # defaulted: never None
    versions = sorted(_VERSIONS[v] for v in enabled or ())
    context.minimum_version, context.maximum_version = versions[0], versions[-1]
    suites = settings.find(rows.cipher_suites)
    if suites:
        try:
            context.set_ciphers(":".join(suites))
        except ssl.SSLError:
            raise TlsConfigError(
                f"{where}: {rows.cipher_suites.name}: none of {', '.join(suites)} is a cipher suite this "
                "OpenSSL offers (use OpenSSL names, e.g. ECDHE-RSA-AES128-GCM-SHA256)"
            ) from None
    _load_keystore(context, settings, rows, where)
    context.verify_mode = _VERIFY[client_auth]
    if client_auth != "none":
        _load_truststore(context, settings, rows, where)
    return context


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


def _load_keystore(context: ssl.SSLContext, settings: Settings, rows: SslRows, where: str) -> None:
    password = settings.find(rows.key_password) or ""  # "" rather than None: OpenSSL would prompt
    location = settings.find(rows.keystore_location)
    try:
        if location is not None:
            context.load_cert_chain(location, password=password)
            return
        key, chain = settings.find(rows.keystore_key), settings.find(rows.keystore_certificate_chain)
        if key is None or chain is None:
            raise TlsConfigError(
                f"{where} has no key store ({rows.keystore_location.name} or {rows.keystore_key.name})"
            )
        with _memory_file(key.strip() + "\n" + chain.strip() + "\n") as path:
            context.load_cert_chain(path, password=password)
    except (ssl.SSLError, OSError) as exc:
        what = (
            f"{rows.keystore_location.name} {location}"
            if location
            else f"{rows.keystore_key.name}/certificate.chain"
        )
        bad_password = "BAD_DECRYPT" in str(exc) or "bad decrypt" in str(exc)
        hint = f" (is {rows.key_password.name} right?)" if bad_password else ""
        raise TlsConfigError(
            f"{where}: cannot load the key store from {what}: {_reason(exc)}{hint}"
        ) from None


def _load_truststore(context: ssl.SSLContext, settings: Settings, rows: SslRows, where: str) -> None:
    location, inline = settings.find(rows.truststore_location), settings.find(rows.truststore_certificates)
    try:
        if location is not None:
            context.load_verify_locations(cafile=location)
        elif inline is not None:
            context.load_verify_locations(cadata=inline)
        else:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
    except (ssl.SSLError, OSError, ValueError) as exc:
        what = (
            f"{rows.truststore_location.name} {location}" if location else rows.truststore_certificates.name
        )
        raise TlsConfigError(f"{where}: cannot load the trust store from {what}: {_reason(exc)}") from None
