"""Kafka's listeners: parsing, refusals, per-listener settings, and endpoints per listener in the
metadata image and in Metadata, FindCoordinator and DescribeCluster answers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from shardbroker.broker.session import ConnectionSession, SecurityProtocol
from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import BROKER_CONFIGS, SSL_CLIENT_AUTH, SSL_KEYSTORE_LOCATION
from shardbroker.config.config_def import ConfigError, ConfigType
from shardbroker.config.listeners import Endpoint
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage
from shardbroker.protocol import messages as m
from tests.unit.test_handlers_admin import call, call_sync, channel, describe, make_state, run

KEYSTORE = {"ssl.keystore.location": "/etc/kafka/broker.pem"}


def load(**props: str) -> BrokerConfig:
    return BrokerConfig.load(None, {"workers": "2", **props})


def test_kafka_listener_lists_with_custom_names() -> None:
    c = load(
        listeners="PLAINTEXT://127.0.0.1:9092,clients://:9192,SSL://[::1]:9292",
        **{"listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CLIENTS:SASL_SSL,SSL:SSL"},
        **KEYSTORE,
    )
    assert c.listeners == (
        Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 9092),
        Endpoint("CLIENTS", "SASL_SSL", "0.0.0.0", 9192),  # names are upper-cased, as Kafka's
        Endpoint("SSL", "SSL", "::1", 9292),
    )
    assert [e.port_of(1) for e in c.listeners] == [9093, 9193, 9293]


@pytest.mark.parametrize(
    ("props", "fragment"),
    [
        ({"listeners": "CLIENTS://:9092"}, "No security protocol defined for listener CLIENTS"),
        ({"listeners": "A://:9092,a://:9192"}, "each listener must have a different name"),
        ({"listener.security.protocol.map": "PLAINTEXT:TLS"}, "'TLS' is not one of PLAINTEXT, SSL"),
        ({"listener.security.protocol.map": "PLAINTEXT"}, "is not LISTENER_NAME:SECURITY_PROTOCOL"),
        ({"listeners": "PLAINTEXT://:9092,SSL://:9093", **KEYSTORE}, "overlaps SSL's port 9093"),
        ({"listeners": "PLAINTEXT://:9092,SSL://:65535", **KEYSTORE}, "SSL port 65535 with 2 workers"),
        ({"listeners": "PLAINTEXT://:9092,127.0.0.1:9192"}, "every entry of a list needs its NAME://"),
        ({"listeners": "PLAINTEXT://host"}, "has no port"),
        (
            {"advertised.listeners": "SSL://h:1"},
            "must be equal to or a subset of the ones defined in listeners",
        ),
        ({"advertised.listeners": "PLAINTEXT://0.0.0.0:9092"}, "nonroutable meta-address 0.0.0.0"),
        (
            {"listeners": "PLAINTEXT://:9092,SSL://:9192", "advertised.listeners": "h:1", **KEYSTORE},
            "names no listener",
        ),
        ({"listeners": "SSL://:9192"}, "listener SSL (SSL) has no key store: set ssl.keystore.location"),
        ({"listeners": "SSL://:9192", "ssl.keystore.key": "k"}, "certificate chain is not specified"),
        (
            {
                "listeners": "SSL://:9192",
                "ssl.keystore.key": "k",
                "ssl.keystore.certificate.chain": "c",
                **KEYSTORE,
            },
            "both SSL key store location and separate private key",
        ),
        (
            {
                "listeners": "SSL://:9192",
                "ssl.truststore.location": "a",
                "ssl.truststore.certificates": "b",
                **KEYSTORE,
            },
            "both SSL trust store location and separate trust certificates",
        ),
        ({"ssl.keystore.type": "JKS"}, "PEM stores only"),
        ({"ssl.truststore.type": "PKCS12"}, "PEM stores only"),
        ({"listener.name.SSL.ssl.client.auth": "required"}, "names no listener"),
        ({"listeners": "SSL://:9192", "listener.name.SSL.ssl.client.auth": "none", **KEYSTORE}, "lower case"),
        ({"listener.name.plaintext.num.partitions": "3"}, "cannot be set per listener"),
        ({"listener.name.plaintext.ssl.client.auth": "maybe"}, "listener.name.plaintext.ssl.client.auth"),
    ],
)
def test_refusals_name_what_is_wrong(props: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**props)
    assert fragment in str(info.value)


def test_advertised_listeners_per_listener_and_short_forms() -> None:
    two = {"listeners": "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9192", **KEYSTORE}
    c = load(**two, **{"advertised.listeners": "SSL://tls.example:19192"})
    # SSL as given; PLAINTEXT, left out, keeps its listeners address (a documented deviation).
    assert c.advertised() == (
        Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 9092),
        Endpoint("SSL", "SSL", "tls.example", 19192),
    )
    short = load(**two, **{"advertised.listeners": "broker.example"})
    assert [(a.host, a.port) for a in short.advertised()] == [
        ("broker.example", 9092),
        ("broker.example", 9192),
    ]


def test_a_listener_setting_wins_over_the_top_level_one_and_dynamic_over_static() -> None:
    c = load(
        listeners="PLAINTEXT://:9092,SSL://:9192,MTLS://:9292",
        **{
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL",
            "ssl.client.auth": "requested",
            "listener.name.mtls.ssl.client.auth": "required",
        },
        **KEYSTORE,
    )
    assert c.for_listener("SSL").get(SSL_CLIENT_AUTH) == "requested"
    assert c.for_listener("MTLS").get(SSL_CLIENT_AUTH) == "required"
    assert c.for_listener("MTLS").is_set(SSL_CLIENT_AUTH) and not c.for_listener("SSL").is_set(
        SSL_CLIENT_AUTH
    )
    d = c.with_dynamic({"ssl.keystore.location": "/new.pem", "listener.name.mtls.ssl.client.auth": "none"})
    assert d.for_listener("SSL").get(SSL_KEYSTORE_LOCATION) == "/new.pem"
    assert d.for_listener("MTLS").get(SSL_CLIENT_AUTH) == "none"
    assert d.properties == c.properties  # what the operator wrote stays apart (DescribeConfigs' sources)
    with pytest.raises(ConfigError):
        c.with_dynamic({"ssl.client.auth": "maybe"})


def test_secret_rows_are_password_type_without_a_default() -> None:
    secrets = {n for n, k in BROKER_CONFIGS.items() if k.sensitive}
    assert secrets == {
        "ssl.keystore.key",
        "ssl.keystore.certificate.chain",
        "ssl.key.password",
        "ssl.truststore.certificates",
        "sasl.plain.users",
        "metrics.ssl.keystore.key",
        "metrics.ssl.keystore.certificate.chain",
        "metrics.ssl.key.password",
        "metrics.ssl.truststore.certificates",
        "metrics.basic.auth.users",
    }
    assert all(
        BROKER_CONFIGS[n].type is ConfigType.PASSWORD and BROKER_CONFIGS[n].default is None for n in secrets
    )


def test_describe_configs_never_shows_a_secret(tmp_path: Path) -> None:
    state = make_state(
        tmp_path, **{"ssl.key.password": "hunter2", "listener.name.plaintext.ssl.key.password": "x"}
    )
    req = m.DescribeConfigsRequest(resources=[describe("0", rtype=4)], include_synonyms=True)
    (result,) = call_sync(state, req, 4).results
    entries = {c.name: c for c in result.configs}
    for name in ("ssl.key.password", "listener.name.plaintext.ssl.key.password"):
        entry = entries[name]
        assert entry.is_sensitive and entry.value is None and entry.config_source == 4, name
        assert all(s.value is None for s in entry.synonyms)
    assert "hunter2" not in repr(result)
    assert entries["listener.name.plaintext.ssl.key.password"].read_only is False


# -- endpoints per listener --------------------------------------------------------------------

TWO_LISTENERS = tuple(
    BrokerEndpoint(node, "127.0.0.1", base + node, name)
    for node in (0, 1)
    for name, base in (("PLAINTEXT", 9092), ("SSL", 9192))
)


def test_the_image_carries_every_listener_through_its_json_form() -> None:
    image = MetadataImage(1, "c", 0, TWO_LISTENERS, {}, broker_configs={"ssl.keystore.location": "/k.pem"})
    again = MetadataImage.from_dict(image.to_dict())
    assert again == image
    assert again.broker(1, "SSL") == BrokerEndpoint(1, "127.0.0.1", 9193, "SSL")
    assert [b.port for b in again.brokers_on("PLAINTEXT")] == [9092, 9093]


def test_controller_advertises_every_listener_of_every_worker(tmp_path: Path) -> None:
    from shardbroker.control.controller import Controller

    c = load(
        **{"log.dirs": str(tmp_path)},
        listeners="PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9192",
        **{"advertised.listeners": "SSL://tls.example:19192"},
        **KEYSTORE,
    )
    brokers = Controller(c, "sbtest0000").brokers
    assert sorted(brokers, key=lambda b: (b.listener, b.node_id)) == [
        BrokerEndpoint(0, "127.0.0.1", 9092, "PLAINTEXT"),
        BrokerEndpoint(1, "127.0.0.1", 9093, "PLAINTEXT"),
        BrokerEndpoint(0, "tls.example", 19192, "SSL"),
        BrokerEndpoint(1, "tls.example", 19193, "SSL"),
    ]


def _ask(tmp_path: Path, listener: str, request: Any, version: int) -> Any:
    state = make_state(tmp_path)
    fake = channel(state)
    fake.image = dataclasses.replace(fake.image, brokers=TWO_LISTENERS)
    session = ConnectionSession.accepted(listener, SecurityProtocol(listener), "127.0.0.1")
    return run(call(state, request, version, session))


@pytest.mark.parametrize(("listener", "ports"), [("PLAINTEXT", [9092, 9093]), ("SSL", [9192, 9193])])
def test_metadata_and_describe_cluster_answer_with_the_request_listener(
    tmp_path: Path, listener: str, ports: list[int]
) -> None:
    metadata = _ask(tmp_path, listener, m.MetadataRequest(topics=[]), 12)
    assert sorted(b.port for b in metadata.brokers) == ports
    cluster = _ask(tmp_path, listener, m.DescribeClusterRequest(), 0)
    assert sorted(b.port for b in cluster.brokers) == ports


def test_ready_lines_keep_the_plaintext_form_and_name_other_listeners() -> None:
    from shardbroker.serve import ready_line

    assert ready_line(1, Endpoint("PLAINTEXT", "PLAINTEXT", "127.0.0.1", 9092)) == (
        "shardbroker: node 1 listening on 127.0.0.1:9093"
    )
    assert ready_line(0, Endpoint("CLIENTS", "SASL_SSL", "::1", 9192)) == (
        "shardbroker: node 0 listening on [::1]:9192 (CLIENTS, SASL_SSL)"
    )


def test_secrets_stay_out_of_the_config_repr() -> None:
    c = load(**{"ssl.key.password": "hunter2"})
    assert "hunter2" not in repr(c) and "hunter2" not in repr(c.with_dynamic({"ssl.key.password": "x2"}))
