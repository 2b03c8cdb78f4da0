"""TLS for the SSL and SASL_SSL listeners: each listener's server ``ssl.SSLContext`` from Kafka's
ssl.* settings, and the mTLS principal of a connection. Reads key and trust store files.

``TlsSettings.load(listener_config)`` builds one listener's context (its
``listener.name.<l>.ssl.*`` values over the top-level ones) with config/ssl_context.py, which
/metrics shares: the PEM key store (file or inline), ``ssl.key.password``, the trust store,
``ssl.client.auth`` (none/requested/required; on SASL_SSL only its listener-prefixed form counts,
Kafka's KIP-684), ``ssl.enabled.protocols`` and ``ssl.cipher.suites``. Every problem is a
``TlsConfigError`` naming the property and the reason, never the secret: ``serve`` refuses to
start with it, AlterConfigs answers INVALID_CONFIG with it and keeps the context it had.

The principal (Kafka's DefaultKafkaPrincipalBuilder for SSL): ``User:`` + the client
certificate's subject in RFC 2253 form (security/x500.py) mapped by
``ssl.principal.mapping.rules`` (security/ssl_principal_mapper.py); ``User:ANONYMOUS`` without a
certificate. SASL_SSL connections get theirs from SASL instead.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from shardbroker.config.broker_config import ListenerConfig
from shardbroker.config.broker_properties import SSL_CLIENT_AUTH, SSL_PRINCIPAL_MAPPING_RULES
from shardbroker.config.ssl_context import LISTENER_SSL, TlsConfigError, server_context
from shardbroker.security.principal import ANONYMOUS, KafkaPrincipal
from shardbroker.security.ssl_principal_mapper import SslPrincipalMapper
from shardbroker.security.x500 import subject_name

__all__ = ["TlsConfigError", "TlsSettings"]


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
        # KIP-684: on SASL_SSL the top-level ssl.client.auth is ignored, only the listener's counts.
        sasl = lc.endpoint.security_protocol == "SASL_SSL"
        client_auth = lc.get(SSL_CLIENT_AUTH) if not sasl or lc.is_set(SSL_CLIENT_AUTH) else "none"
        context = server_context(lc, LISTENER_SSL, where, client_auth)
        return cls(name, context, mapper, client_auth)

    def principal(self, ssl_object: ssl.SSLObject | None) -> KafkaPrincipal:
        """The connection's principal from its client certificate (ValueError: no rule applies or
        the certificate cannot be read)."""
        certificate = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not certificate:
            return ANONYMOUS
        return KafkaPrincipal.user(self.mapper.name(subject_name(certificate)))
