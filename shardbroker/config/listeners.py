"""Kafka's listeners: ``listeners``, ``listener.security.protocol.map``, ``advertised.listeners``.

A listener is a name, a security protocol and an address: ``listeners`` is Kafka's
comma-separated list of ``NAME://HOST:PORT`` (``PLAINTEXT://127.0.0.1:9092,SASL_SSL://:9192``),
and ``listener.security.protocol.map`` gives each name its protocol (Kafka's default maps the
four protocol names to themselves, so ``SSL://...`` needs no entry; ``CLIENTS:SASL_SSL`` names a
custom one). Names are case-insensitive and normalised to upper case, as Kafka's
``ListenerName.normalised``; a listener's own settings are ``listener.name.<lower-case
name>.<property>`` (Kafka's listener prefix). An empty host binds every interface.

One host, many workers: worker ``i`` listens on every listener's ``PORT + i``, so each
listener's port range ``[PORT, PORT + workers - 1]`` must stay within 65535 and may not overlap
another's (``check_port_ranges``). shardbroker's short form ``HOST:PORT`` (``--listen``) is one
PLAINTEXT listener.

``advertised.listeners`` (Kafka's syntax) gives the address clients are told to use, per
listener; worker ``i`` advertises its port + i. Kafka's rules: names must be listeners', the
meta-address 0.0.0.0 is refused, an empty host is the machine's host name. Deviation: a listener
that ``advertised.listeners`` leaves out is advertised at its ``listeners`` address (Kafka would
not advertise it at all, so clients bootstrapping on it would find no broker). Short forms of
shardbroker's ``--advertise``: a bare ``HOST`` for every listener (each keeps its port), or
``HOST:PORT`` when there is one listener.
"""

from __future__ import annotations

import itertools
import re
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from shardbroker.config.config_def import ConfigError, Validator

__all__ = [
    "DEFAULT_PROTOCOL_MAP",
    "LISTENER_PREFIX",
    "PROTOCOL_MAP",
    "SECURITY_PROTOCOLS",
    "TLS_PROTOCOLS",
    "Endpoint",
    "ListenerAddress",
    "advertised_endpoints",
    "bind_endpoints",
    "check_port_ranges",
    "listener_prefix",
    "split_listener_prefix",
]

#: Kafka's SecurityProtocol names.
SECURITY_PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS: Final = frozenset({"SSL", "SASL_SSL"})
DEFAULT_PROTOCOL_MAP: Final = ",".join(f"{p}:{p}" for p in SECURITY_PROTOCOLS)
LISTENER_PREFIX: Final = "listener.name."

# Kafka's listener URI: NAME://HOST:PORT, HOST possibly empty or a bracketed IPv6 address.
_URI: Final = re.compile(r"^([^:/\s]+)://(\[[0-9a-fA-F:.%]*\]|[0-9a-zA-Z\-%._]*)(?::(-?\d+))?$")


@dataclass(frozen=True, slots=True)
class ListenerAddress:
    """One entry of ``listeners`` or ``advertised.listeners`` as written (host None: any)."""

    name: str
    host: str
    port: int | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Kafka's Endpoint: a listener's name, security protocol, host and worker 0's port."""

    listener: str
    security_protocol: str
    host: str
    port: int

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in TLS_PROTOCOLS

    def port_of(self, node_id: int) -> int:
        """Worker ``node_id``'s port on this listener."""
        return self.port + node_id


def _refuse(name: str, raw: str, why: str) -> ConfigError:
    return ConfigError(f"Invalid value {raw!r} for configuration {name}: {why}")


def _port(name: str, raw: str, text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise _refuse(name, raw, "port is not a number") from None
    if not 0 < port <= 65535:
        raise _refuse(name, raw, "port must be in [1, 65535]")
    return port


def _short_form(name: str, raw: str, value: str) -> tuple[str, str | None]:
    """shardbroker's ``HOST[:PORT]`` / ``[V6][:PORT]`` without a listener name."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise _refuse(name, raw, "expected [IPV6]:PORT")
        return host, rest[1:] if rest else None
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, port
    if ":" not in value:
        return value, None
    raise _refuse(name, raw, "expected NAME://HOST:PORT or HOST:PORT")


def _addresses(name: str, raw: str, *, port_required: bool) -> tuple[ListenerAddress, ...]:
    """The entries of a listener list; ``name`` None for a short form without ``NAME://``."""
    out: list[ListenerAddress] = []
    parts = [p.strip() for p in raw.split(",") if p.strip()]
    if not parts:
        raise _refuse(name, raw, "no listener")
    for part in parts:
        if "://" in part:
            match = _URI.match(part)
            if match is None:
                raise _refuse(name, raw, f"unable to parse {part!r} as NAME://HOST:PORT")
            listener, host, port_text = match.group(1).upper(), match.group(2), match.group(3)
            host = host[1:-1] if host.startswith("[") else host
        else:
            if len(parts) > 1:
                raise _refuse(name, raw, f"{part!r}: every entry of a list needs its NAME://")
            listener = ""
            host, port_text = _short_form(name, raw, part)
            if not host and port_text is None:
                raise _refuse(name, raw, "empty host")
        if port_text is None and port_required:
            raise _refuse(name, raw, f"{part!r} has no port (expected HOST:PORT or NAME://HOST:PORT)")
        port = _port(name, raw, port_text) if port_text is not None else None
        out.append(ListenerAddress(listener, host, port))
    names = [a.name for a in out]
    if len(set(names)) != len(names):
        raise _refuse(name, raw, "each listener must have a different name")
    return tuple(out)


def _listeners(name: str, raw: str) -> tuple[ListenerAddress, ...]:
    # The short form HOST:PORT is one PLAINTEXT listener; an empty host binds every interface.
    return tuple(
        ListenerAddress(a.name or "PLAINTEXT", a.host or "0.0.0.0", a.port)
        for a in _addresses(name, raw, port_required=True)
    )


def _advertised(name: str, raw: str) -> tuple[ListenerAddress, ...]:
    addresses = _addresses(name, raw, port_required=False)
    for a in addresses:
        if a.host == "0.0.0.0":
            raise _refuse(
                name,
                raw,
                "advertised.listeners cannot use the nonroutable meta-address 0.0.0.0. "
                "Use a routable IP address.",
            )
        if a.name and a.port is None:
            raise _refuse(name, raw, f"{a.name} has no port (expected NAME://HOST:PORT)")
    return addresses


def _protocol_map(name: str, raw: str) -> Mapping[str, str]:
    out: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",") if p.strip()):
        listener, sep, protocol = part.partition(":")
        listener, protocol = listener.strip().upper(), protocol.strip().upper()
        if not sep or not listener:
            raise _refuse(name, raw, f"{part!r} is not LISTENER_NAME:SECURITY_PROTOCOL")
        if protocol not in SECURITY_PROTOCOLS:
            raise _refuse(name, raw, f"{protocol!r} is not one of {', '.join(SECURITY_PROTOCOLS)}")
        if listener in out:
            raise _refuse(name, raw, f"listener {listener} is mapped twice")
        out[listener] = protocol
    if not out:
        raise _refuse(name, raw, "an empty map")
    return out


#: ``listeners``: ``NAME://HOST:PORT,...`` or the short form ``HOST:PORT`` (PLAINTEXT).
LISTENERS_VALIDATOR: Final = Validator(_listeners, "NAME://HOST:PORT,... or HOST:PORT, ports in [1, 65535]")
#: ``advertised.listeners``: ``NAME://HOST:PORT,...``, or ``HOST[:PORT]`` (every listener).
ADVERTISED_VALIDATOR: Final = Validator(_advertised, "NAME://HOST:PORT,... or HOST[:PORT]")
PROTOCOL_MAP: Final = Validator(_protocol_map, "LISTENER_NAME:SECURITY_PROTOCOL,...")


def listener_prefix(listener: str) -> str:
    """Kafka's ``ListenerName.configPrefix``: ``listener.name.<lower-case name>.``."""
    return f"{LISTENER_PREFIX}{listener.lower()}."


def split_listener_prefix(name: str) -> tuple[str, str] | None:
    """``listener.name.<l>.<property>`` -> (``<l>``, ``<property>``); None for other names."""
    if not name.startswith(LISTENER_PREFIX):
        return None
    listener, sep, rest = name[len(LISTENER_PREFIX) :].partition(".")
    if not sep or not listener or not rest:
        return None
    return listener, rest


def bind_endpoints(
    listeners: Sequence[ListenerAddress], protocols: Mapping[str, str]
) -> tuple[Endpoint, ...]:
    """Each listener with its security protocol (Kafka's messages for a name not in the map)."""
    out = []
    for a in listeners:
        protocol = protocols.get(a.name)
        if protocol is None:
            raise ConfigError(
                f"No security protocol defined for listener {a.name}: add it to "
                f"listener.security.protocol.map (e.g. {a.name}:SASL_SSL)"
            )
        assert a.port is not None
        out.append(Endpoint(a.name, protocol, a.host, a.port))
    return tuple(out)


def check_port_ranges(endpoints: Sequence[Endpoint], workers: int) -> None:
    """Worker i listens on each listener's port + i: the ranges stay <= 65535 and apart."""
    for e in endpoints:
        if e.port + workers - 1 > 65535:
            raise ConfigError(
                f"listeners: {e.listener} port {e.port} with {workers} workers needs ports up to "
                f"{e.port + workers - 1} (worker i listens on port + i): beyond 65535"
            )
    ordered = sorted(endpoints, key=lambda e: e.port)
    for low, high in itertools.pairwise(ordered):
        if high.port <= low.port + workers - 1:
            raise ConfigError(
                f"listeners: {low.listener} uses ports {low.port}-{low.port + workers - 1} for "
                f"{workers} workers (worker i listens on port + i), which overlaps {high.listener}'s "
                f"port {high.port}: keep the listeners' ports at least {workers} apart"
            )


def advertised_endpoints(
    endpoints: Sequence[Endpoint], advertised: Sequence[ListenerAddress] | None
) -> tuple[Endpoint, ...]:
    """What worker 0 advertises per listener, in the listeners' order (see the module docstring)."""
    given: dict[str, ListenerAddress] = {}
    if advertised:
        if len(advertised) == 1 and not advertised[0].name:
            short = advertised[0]
            if short.port is not None and len(endpoints) > 1:
                raise ConfigError(
                    f"advertised.listeners {short.host}:{short.port} names no listener, and there are "
                    f"{len(endpoints)}: use NAME://HOST:PORT entries"
                )
            given = {e.listener: ListenerAddress(e.listener, short.host, short.port) for e in endpoints}
        else:
            names = {e.listener for e in endpoints}
            unknown = [a.name for a in advertised if a.name not in names]
            if unknown:
                raise ConfigError(
                    "advertised.listeners listener names must be equal to or a subset of the ones "
                    f"defined in listeners: {', '.join(unknown)} not in {', '.join(sorted(names))}"
                )
            given = {a.name: a for a in advertised}
    out = []
    for e in endpoints:
        a = given.get(e.listener)
        host = a.host if a is not None else e.host
        port = a.port if a is not None and a.port is not None else e.port
        if host in ("", "0.0.0.0", "::"):
            host = socket.gethostname()  # a wildcard bind advertises the host name, as Kafka
        out.append(Endpoint(e.listener, e.security_protocol, host, port))
    return tuple(out)
