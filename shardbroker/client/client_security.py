"""How our client reaches a secured listener: Kafka's client security settings, read from a Java
properties file as Kafka's tools read ``--command-config``, and the TLS context they describe.

Settings (Kafka's names; a file written for ``kafka-acls.sh --command-config`` works unchanged
when it uses only these)::

    security.protocol=SASL_SSL                 # PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    sasl.mechanism=SCRAM-SHA-512               # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\
        username="admin" password="admin-secret";
    ssl.truststore.type=PEM                    # PEM only (no JKS/PKCS12)
    ssl.truststore.location=/etc/kafka/ca.pem  # default: the system's CAs
    ssl.keystore.type=PEM                      # mTLS: key and certificate chain in one PEM file
    ssl.keystore.location=/etc/kafka/client.pem
    ssl.key.password=...
    ssl.endpoint.identification.algorithm=https   # empty: no host name check (Kafka's switch)

Deliberate differences: Kafka's tools log and ignore keys they do not know; here an unknown key
is refused (a misspelt ``ssl.truststore.location`` would otherwise silently fall back to the
system's CAs), so a Kafka file with other client settings (``request.timeout.ms``...) must drop
them. Kafka's ``sasl.mechanism`` default, GSSAPI, is not supported: a SASL protocol needs an
explicit mechanism. The password never appears in ``repr`` or in an error message.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

__all__ = [
    "KNOWN_SETTINGS",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "ClientSecurity",
    "load_properties",
    "parse_properties",
]

SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
KNOWN_SETTINGS: Final = (
    "security.protocol",
    "sasl.mechanism",
    "sasl.jaas.config",
    "ssl.truststore.type",
    "ssl.truststore.location",
    "ssl.keystore.type",
    "ssl.keystore.location",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
)

_ESCAPES: Final = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}
_JAAS: Final = re.compile(
    r"^\s*(?P<module>\S+)\s+(?:required|requisite|sufficient|optional)(?P<options>.*?);?\s*$", re.DOTALL
)
_JAAS_OPTION: Final = re.compile(
    r'\s*(?P<key>[A-Za-z0-9_.]+)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s";]+))'
)


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c != "\\" or i + 1 == len(text):
            out.append(c)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _logical_lines(text: str) -> list[str]:
    """Java properties' logical lines: comments and blank lines dropped, a line ending in an odd
    number of backslashes continued on the next (whose leading blanks are dropped)."""
    lines: list[str] = []
    pending: str | None = None
    for raw in text.splitlines():
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        continued = trailing % 2 == 1
        piece = line[:-1] if continued else line
        pending = piece if pending is None else pending + piece
        if not continued:
            lines.append(pending)
            pending = None
    if pending is not None:
        lines.append(pending)
    return lines


def parse_properties(text: str) -> dict[str, str]:
    """A Java ``.properties`` text (Kafka's ``Utils.loadProps``): ``key=value``, ``key: value`` or
    ``key value``; ``#``/``!`` comments; backslash continuations and escapes (``\\uXXXX``)."""
    props: dict[str, str] = {}
    for line in _logical_lines(text):
        i = 0
        while i < len(line) and line[i] not in "=: \t\f":
            i += 2 if line[i] == "\\" else 1
        key = line[:i]
        rest = line[i:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        props[_unescape(key)] = _unescape(rest)
    return props


def load_properties(path: Path) -> dict[str, str]:
    """The properties of the file at ``path``; ValueError (naming the file) when unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"cannot read {path}: {reason}") from None
    return parse_properties(text)


@dataclass(frozen=True)
class ClientSecurity:
    """The security settings of a client connection (PLAINTEXT when built with no arguments)."""

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    truststore_location: Path | None = None
    keystore_location: Path | None = None
    key_password: str | None = field(default=None, repr=False)
    check_hostname: bool = True

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @classmethod
    def from_properties(cls, props: dict[str, str]) -> ClientSecurity:
        """From Kafka's client settings; ValueError names the first bad one (never a secret)."""
        unknown = sorted(set(props) - set(KNOWN_SETTINGS))
        if unknown:
            raise ValueError(
                f"unsupported client setting(s) {', '.join(unknown)}: this client reads only "
                f"{', '.join(KNOWN_SETTINGS)}"
            )
        protocol = props.get("security.protocol", "PLAINTEXT").strip().upper()
        if protocol not in SECURITY_PROTOCOLS:
            raise ValueError(f"security.protocol {protocol!r}: one of {', '.join(SECURITY_PROTOCOLS)}")
        for kind in ("truststore", "keystore"):
            store_type = props.get(f"ssl.{kind}.type", "PEM").strip().upper()
            if store_type != "PEM":
                raise ValueError(f"ssl.{kind}.type {store_type!r}: only PEM is supported")
        algorithm = props.get("ssl.endpoint.identification.algorithm", "https").strip().lower()
        if algorithm not in ("https", ""):
            raise ValueError(f"ssl.endpoint.identification.algorithm {algorithm!r}: 'https' or empty")
        mechanism, username, password = None, None, None
        if protocol.startswith("SASL_"):
            mechanism = props.get("sasl.mechanism", "GSSAPI").strip().upper()
            if mechanism not in SASL_MECHANISMS:
                raise ValueError(
                    f"sasl.mechanism {mechanism!r} is not supported: one of {', '.join(SASL_MECHANISMS)}"
                )
            username, password = _jaas_credentials(props.get("sasl.jaas.config"))

        def path(key: str) -> Path | None:
            value = props.get(key, "").strip()
            return Path(value) if value else None

        return cls(
            protocol,
            mechanism,
            username,
            password,
            path("ssl.truststore.location"),
            path("ssl.keystore.location"),
            props.get("ssl.key.password") or None,
            algorithm == "https",
        )

    @classmethod
    def from_file(cls, path: Path) -> ClientSecurity:
        try:
            return cls.from_properties(load_properties(path))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS client context: the truststore's CAs (else the system's), the keystore's key
        and chain for mTLS, host name checking unless switched off. ValueError when a file fails."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.check_hostname = self.check_hostname
        try:
            if self.truststore_location is not None:
                context.load_verify_locations(cafile=str(self.truststore_location))
            if self.keystore_location is not None:
                context.load_cert_chain(str(self.keystore_location), password=self.key_password)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
            raise ValueError(f"TLS settings: {reason}") from None
        return context


def _jaas_credentials(config: str | None) -> tuple[str, str]:
    """``username`` and ``password`` of a PlainLoginModule / ScramLoginModule JAAS entry."""
    if config is None or not config.strip():
        raise ValueError(
            "a SASL security.protocol needs sasl.jaas.config, e.g. org.apache.kafka.common.security."
            'scram.ScramLoginModule required username="admin" password="...";'
        )
    match = _JAAS.match(config)
    if match is None:
        raise ValueError(
            'sasl.jaas.config: expected \'<LoginModule> required username="..." password="...";\''
        )
    options = {
        o.group("key"): o.group("quoted") if o.group("quoted") is not None else o.group("bare")
        for o in _JAAS_OPTION.finditer(match.group("options"))
    }
    username, password = options.get("username"), options.get("password")
    if not username or password is None:
        raise ValueError('sasl.jaas.config: needs username="..." and password="..." options')
    return username, password
