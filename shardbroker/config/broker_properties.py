"""The broker's properties: one table of rows (Kafka's server.properties names, KafkaConfig).

``BROKER_CONFIGS`` holds a row per property shardbroker understands (Kafka's names, plus
``workers`` and the ``metrics.*`` rows of its own): type, default, valid range or choices, update
mode, documentation and the component that reads it. ``serve --help``, docs/configuration.md
(tools/gen_config_docs.py), ``BrokerConfig``'s validation and DescribeConfigs all read this
table. A reader asks ``BrokerConfig.get(ROW)`` for the typed value of a row constant below; the
rows feeding a ``BrokerConfig`` attribute (data directory, listeners, workers, topic defaults)
are read through that attribute. Rows are read-only (read once at start) but for the TLS stores,
Kafka's per-broker dynamic rows; ``per_listener`` rows may also be set per listener
(``listener.name.<listener>.<name>``, config/listeners.py).

The topic configs' broker synonyms (``log.segment.bytes`` ...) are rows derived from the topic
rows (same type, default and validator), then the time-unit synonyms (``log.roll.hours``,
``log.retention.minutes``/``.hours``); ``TOPIC_CONFIG_SYNONYMS`` lists them per topic config in
Kafka's precedence. A new property is one ``_D(...)`` row here and a ``config.get(ROW)`` where
it is read.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TypeVar

from shardbroker.config.config_def import (
    BOOLEAN,
    INT_MAX,
    LONG_MAX,
    ConfigDef,
    ConfigError,
    ConfigKey,
    ConfigType,
    UpdateMode,
    Validator,
    between,
    between_float,
    list_of,
    one_of,
    ordered_list_of,
)
from shardbroker.config.listeners import (
    ADVERTISED_VALIDATOR,
    DEFAULT_PROTOCOL_MAP,
    LISTENERS_VALIDATOR,
    PROTOCOL_MAP,
)
from shardbroker.config.log_config import BROKER_SYNONYMS, TOPIC_CONFIGS

T = TypeVar("T")


def _host_port(name: str, raw: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` (``PLAINTEXT://`` accepted and dropped); empty host: any."""
    value = raw.strip()
    if value.upper().startswith("PLAINTEXT://"):
        value = value[len("PLAINTEXT://") :]
    if "://" in value or "," in value:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: expected HOST:PORT")
    (address,) = LISTENERS_VALIDATOR.convert(name, value)
    assert address.port is not None
    return address.host, address.port


def _pem_store(name: str, raw: str) -> str:
    value = raw.strip().upper()
    if value != "PEM":
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {name}: shardbroker reads PEM stores only "
            "(JKS and PKCS12 are Java's: export the key and certificates to PEM with keytool/openssl)"
        )
    return value


def _text(name: str, raw: str) -> str:
    return raw


def _names(name: str, raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


def _directory(name: str, raw: str) -> Path:
    parts = [d.strip() for d in raw.split(",") if d.strip()]
    if len(parts) != 1:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: exactly one directory")
    return Path(parts[0])


#: ``HOST:PORT`` (metrics.listen).
HOST_PORT: Final = Validator(_host_port, "HOST:PORT, port in [1, 65535]")
DIRECTORY: Final = Validator(_directory, "one directory")
PEM_STORE: Final = Validator(_pem_store, "PEM")
TEXT: Final = Validator(_text, "text")
NAMES: Final = Validator(_names, "a comma-separated list")


def _non_empty_names(name: str, raw: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip() for p in raw.split(",") if p.strip()))
    if not parts:
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: an empty list")
    return parts


def _string_table(values: str) -> Callable[[str, str], Mapping[str, str]]:
    def convert(name: str, raw: str) -> Mapping[str, str]:
        # The TOML table arrives as JSON text (BrokerConfig's reader joins every other table into
        # dotted names); the message never repeats the value, which holds secrets.
        try:
            table = json.loads(raw)
        except ValueError:
            table = None
        if not isinstance(table, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in table.items()
        ):
            raise ConfigError(f"Invalid value for configuration {name}: a table of user names and {values}")
        return table

    return convert


def _non_blank(name: str, raw: str) -> str:
    if not raw.strip():
        raise ConfigError(f"Invalid value {raw!r} for configuration {name}: must not be blank")
    return raw.strip()


def _authorizer(name: str, raw: str) -> str:
    value = raw.strip()
    if value and value not in AUTHORIZER_CLASS_NAMES:
        raise ConfigError(
            f"Invalid value {raw!r} for configuration {name}: shardbroker's authorizer is Kafka's "
            f"StandardAuthorizer ({', '.join(AUTHORIZER_CLASS_NAMES)}), or empty for none"
        )
    return value


def _principals(name: str, raw: str) -> frozenset[str]:
    out = set()
    for part in raw.split(";"):
        text = part.strip()
        if not text:
            continue
        principal_type, sep, principal_name = text.partition(":")
        if not sep or not principal_type or not principal_name:
            raise ConfigError(
                f"Invalid value {raw!r} for configuration {name}: {text!r} is not a principal Type:name"
            )
        out.add(text)
    return frozenset(out)


#: Kafka's StandardAuthorizer, and the ZooKeeper-era AclAuthorizer accepted as its old name.
AUTHORIZER_CLASS_NAMES: Final = (
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
)
AUTHORIZER: Final = Validator(_authorizer, "empty, or " + " or ".join(AUTHORIZER_CLASS_NAMES))
#: Semicolon-separated principals (``User:alice;User:bob``), as Kafka's ``super.users``.
PRINCIPALS: Final = Validator(_principals, "Type:name;Type:name...")
#: A non-empty comma-separated list of names, in order, without repeats.
NON_EMPTY_NAMES: Final = Validator(_non_empty_names, "a non-empty comma-separated list")
NON_BLANK: Final = Validator(_non_blank, "a non-blank name")
#: A TOML table of user name = "password".
USER_TABLE: Final = Validator(_string_table("passwords"), 'a TOML table: user = "password"')
#: A TOML table of user name = "password hash" (security/password_hash.py checks the hashes).
HASH_TABLE: Final = Validator(_string_table("password hashes"), 'a TOML table: user = "pbkdf2_sha256$..."')

_GROUPS: Final = "group coordinator (broker/group_coordinator.py)"
_TXN: Final = "transaction coordinator (broker/transaction_coordinator.py)"
_HOUSEKEEPING: Final = "replica manager (housekeeping)"
_CLEANER: Final = "log cleaner (broker/log_cleaner_service.py)"
_LISTENER: Final = "listener (broker/listener.py)"
_REBALANCER: Final = "auto-rebalancer (control/auto_rebalance.py)"
_TLS: Final = "TLS listeners (broker/tls.py)"
_AUTHORIZER: Final = "authorizer (broker/auth_helper.py)"
_SERVE: Final = "serve (every process)"
_TOPIC_DEFAULTS: Final = "BrokerConfig.log_defaults"

BROKER_CONFIGS: Final = ConfigDef(UpdateMode.READ_ONLY)
_D = BROKER_CONFIGS.define
_S, _I, _L, _B = ConfigType.STRING, ConfigType.INT, ConfigType.LONG, ConfigType.BOOLEAN
_P, _LIST = ConfigType.PASSWORD, ConfigType.LIST
_PER_BROKER: Final = UpdateMode.PER_BROKER

LOG_DIRS: Final = _D(
    "log.dirs", _S, "shardbroker-data", DIRECTORY, "the data directory (one; log.dir is accepted too)", _SERVE
)
LOG_DIR: Final = _D("log.dir", _S, "shardbroker-data", DIRECTORY, "synonym of log.dirs", _SERVE)
LISTENERS: Final = _D(
    "listeners",
    _S,
    "PLAINTEXT://127.0.0.1:9092",
    LISTENERS_VALIDATOR,
    "NAME://HOST:PORT,... (or HOST:PORT, one PLAINTEXT listener); worker i listens on each PORT+i",
    _LISTENER,
)
LISTENER_SECURITY_PROTOCOL_MAP: Final = _D(
    "listener.security.protocol.map",
    _S,
    DEFAULT_PROTOCOL_MAP,
    PROTOCOL_MAP,
    "security protocol of each listener name, e.g. CLIENTS:SASL_SSL",
    _LISTENER,
)
ADVERTISED_LISTENERS: Final = _D(
    "advertised.listeners",
    _S,
    None,
    ADVERTISED_VALIDATOR,
    "NAME://HOST:PORT,... given to clients per listener (worker i: PORT+i), or a HOST for all"
    " [each listener's address]",
    "controller (brokers of the metadata image)",
)
WORKERS: Final = _D(
    "workers", _I, None, between(1, 1024), "worker processes, one per core [cores available]", _SERVE
)
#: The values of ``event.loop`` (supervision/event_loop.py makes the loops).
EVENT_LOOPS: Final = ("uvloop", "asyncio")
EVENT_LOOP: Final = _D(
    "event.loop",
    _S,
    "uvloop",
    one_of(*EVENT_LOOPS),
    "the workers' event loop: uvloop (one-record Produce requests cost ~10 % less CPU than on"
    " asyncio here: perf/bench_requests.py) or asyncio; uvloop falls back to asyncio where it"
    " cannot be imported",
    _SERVE,
)
RING_READER_SPIN_US: Final = _D(
    "ring.reader.spin.us",
    _I,
    "0",
    between(0, 1000),
    "microseconds a worker's ring reader that took a frame in the last 5 ms polls the ring before"
    " sleeping on its doorbell (shardbroker's own; no Kafka equivalent); 0: sleep at once. Only a"
    " spin longer than the gap between frames helps: 100 at 10,000 frames/s takes p50 from 14 to"
    " 4 us for a whole core (docs/notes/rings.md)",
    "ring readers (ipc/ring_reader.py, set in each worker by serve.py)",
)
METRICS_LISTEN: Final = _D(
    "metrics.listen",
    _S,
    "127.0.0.1:9404",
    HOST_PORT,
    "HOST:PORT of the Prometheus /metrics endpoint",
    "metrics endpoint (observability/)",
)
NUM_PARTITIONS: Final = _D(
    "num.partitions",
    _I,
    "1",
    between(1, INT_MAX),
    "partitions of an auto-created or -1 topic",
    "controller (CreateTopics)",
)
AUTO_CREATE_TOPICS_ENABLE: Final = _D(
    "auto.create.topics.enable",
    _B,
    "true",
    BOOLEAN,
    "create unknown topics on Metadata/Produce",
    "Metadata handler",
)
SOCKET_REQUEST_MAX_BYTES: Final = _D(
    "socket.request.max.bytes", _I, "104857600", between(1, INT_MAX), "largest request frame", _LISTENER
)
MAX_REQUEST_PARTITION_SIZE_LIMIT: Final = _D(
    "max.request.partition.size.limit",
    _I,
    "2000",
    between(1, INT_MAX),
    "most partitions one DescribeTopicPartitions response describes (KIP-966; the rest by its cursor)",
    "DescribeTopicPartitions (broker/handlers/describe_topic_partitions.py)",
)
CONNECTIONS_MAX_IDLE_MS: Final = _D(
    "connections.max.idle.ms",
    _L,
    "600000",
    between(-1, LONG_MAX),
    "close connections idle this long, -1 never",
    _LISTENER,
)
# Kafka's defaults (Int.MaxValue: no limit). Each worker is a Kafka broker (node) with a listener
# of its own, so the limits apply per worker, as Kafka's apply per broker.
MAX_CONNECTIONS: Final = _D(
    "max.connections",
    _I,
    str(INT_MAX),
    between(0, INT_MAX),
    "connections a worker keeps open; newer ones are closed at once",
    _LISTENER,
)
MAX_CONNECTIONS_PER_IP: Final = _D(
    "max.connections.per.ip",
    _I,
    str(INT_MAX),
    between(0, INT_MAX),
    "connections a worker keeps open per client address",
    _LISTENER,
)
FETCH_MAX_BYTES: Final = _D(
    "fetch.max.bytes",
    _I,
    "57671680",
    between(0, INT_MAX),
    "most bytes one Fetch response returns",
    "Fetch handler",
)
# Kafka's names and defaults; what they mean on one host is in control/auto_rebalance.py.
AUTO_LEADER_REBALANCE_ENABLE: Final = _D(
    "auto.leader.rebalance.enable",
    _B,
    "true",
    BOOLEAN,
    "move partitions off a busy worker, and onto added workers",
    "controller, " + _REBALANCER,
)
LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS: Final = _D(
    "leader.imbalance.check.interval.seconds",
    _L,
    "300",
    between(1, INT_MAX),
    "how often the controller compares the workers' load",
    _REBALANCER,
)
LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: Final = _D(
    "leader.imbalance.per.broker.percentage",
    _I,
    "10",
    between(0, INT_MAX),
    "load over the workers' mean that makes partitions move",
    "controller, " + _REBALANCER,
)
GROUP_INITIAL_REBALANCE_DELAY_MS: Final = _D(
    "group.initial.rebalance.delay.ms",
    _I,
    "3000",
    between(0, INT_MAX),
    "first rebalance of a new group waits this long for members",
    _GROUPS,
)
GROUP_MIN_SESSION_TIMEOUT_MS: Final = _D(
    "group.min.session.timeout.ms",
    _I,
    "6000",
    between(1, INT_MAX),
    "smallest session.timeout.ms a group member may ask for",
    _GROUPS,
)
GROUP_MAX_SESSION_TIMEOUT_MS: Final = _D(
    "group.max.session.timeout.ms",
    _I,
    "1800000",
    between(1, INT_MAX),
    "largest session.timeout.ms a group member may ask for",
    _GROUPS,
)
OFFSETS_TOPIC_NUM_PARTITIONS: Final = _D(
    "offsets.topic.num.partitions",
    _I,
    "50",
    between(1, INT_MAX),
    "partitions of __consumer_offsets (fixed once created)",
    _GROUPS,
)
OFFSETS_TOPIC_SEGMENT_BYTES: Final = _D(
    "offsets.topic.segment.bytes",
    _I,
    "104857600",
    between(1, INT_MAX),
    "segment.bytes of __consumer_offsets",
    _GROUPS,
)
OFFSETS_RETENTION_MINUTES: Final = _D(
    "offsets.retention.minutes",
    _I,
    "10080",
    between(1, INT_MAX),
    "committed offsets of an empty group are kept this long",
    _GROUPS,
)
OFFSETS_RETENTION_CHECK_INTERVAL_MS: Final = _D(
    "offsets.retention.check.interval.ms",
    _L,
    "600000",
    between(1, LONG_MAX),
    "how often expired offsets are looked for",
    _GROUPS,
)
#: The rebalance protocols the group coordinator serves (Kafka's names). "consumer" (KIP-848's
#: ConsumerGroupHeartbeat) is off by default until it is complete: README, "Differences".
REBALANCE_PROTOCOLS: Final = ("classic", "consumer")
GROUP_COORDINATOR_REBALANCE_PROTOCOLS: Final = _D(
    "group.coordinator.rebalance.protocols",
    _LIST,
    "classic,consumer",
    ordered_list_of({p: p for p in REBALANCE_PROTOCOLS}),
    "rebalance protocols served: classic (JoinGroup/SyncGroup) and/or consumer (KIP-848)",
    _GROUPS,
)
#: Server-side assignors of the consumer protocol: short names and Kafka's class names.
CONSUMER_GROUP_ASSIGNORS: Final = {
    "uniform": "uniform",
    "range": "range",
    "org.apache.kafka.coordinator.group.assignor.UniformAssignor": "uniform",
    "org.apache.kafka.coordinator.group.assignor.RangeAssignor": "range",
}
GROUP_CONSUMER_ASSIGNORS: Final = _D(
    "group.consumer.assignors",
    _LIST,
    "uniform,range",
    ordered_list_of(CONSUMER_GROUP_ASSIGNORS),
    "server-side assignors of consumer-protocol groups; the first is the default",
    _GROUPS,
)
GROUP_CONSUMER_SESSION_TIMEOUT_MS: Final = _D(
    "group.consumer.session.timeout.ms",
    _I,
    "45000",
    between(1, INT_MAX),
    "a consumer-protocol member not heard from this long is removed",
    _GROUPS,
)
GROUP_CONSUMER_MIN_SESSION_TIMEOUT_MS: Final = _D(
    "group.consumer.min.session.timeout.ms",
    _I,
    "45000",
    between(1, INT_MAX),
    "smallest group.consumer.session.timeout.ms allowed",
    _GROUPS,
)
GROUP_CONSUMER_MAX_SESSION_TIMEOUT_MS: Final = _D(
    "group.consumer.max.session.timeout.ms",
    _I,
    "60000",
    between(1, INT_MAX),
    "largest group.consumer.session.timeout.ms allowed",
    _GROUPS,
)
_QUOTAS: Final = "client quotas (broker/client_quota_manager.py)"
QUOTA_WINDOW_NUM: Final = _D(
    "quota.window.num", _I, "11", between(1, INT_MAX), "samples kept per client quota", _QUOTAS
)
QUOTA_WINDOW_SIZE_SECONDS: Final = _D(
    "quota.window.size.seconds",
    _I,
    "1",
    between(1, INT_MAX),
    "time span of each client quota sample",
    _QUOTAS,
)
CONTROLLER_QUOTA_WINDOW_NUM: Final = _D(
    "controller.quota.window.num",
    _I,
    "11",
    between(1, INT_MAX),
    "samples of controller_mutation_rate",
    _QUOTAS,
)
CONTROLLER_QUOTA_WINDOW_SIZE_SECONDS: Final = _D(
    "controller.quota.window.size.seconds",
    _I,
    "1",
    between(1, INT_MAX),
    "time span of each controller_mutation_rate sample",
    _QUOTAS,
)
GROUP_CONSUMER_HEARTBEAT_INTERVAL_MS: Final = _D(
    "group.consumer.heartbeat.interval.ms",
    _I,
    "5000",
    between(1, INT_MAX),
    "how often consumer-protocol members are told to heartbeat",
    _GROUPS,
)
GROUP_CONSUMER_MIN_HEARTBEAT_INTERVAL_MS: Final = _D(
    "group.consumer.min.heartbeat.interval.ms",
    _I,
    "5000",
    between(1, INT_MAX),
    "smallest group.consumer.heartbeat.interval.ms allowed",
    _GROUPS,
)
GROUP_CONSUMER_MAX_HEARTBEAT_INTERVAL_MS: Final = _D(
    "group.consumer.max.heartbeat.interval.ms",
    _I,
    "15000",
    between(1, INT_MAX),
    "largest group.consumer.heartbeat.interval.ms allowed",
    _GROUPS,
)
GROUP_CONSUMER_MAX_SIZE: Final = _D(
    "group.consumer.max.size",
    _I,
    str(INT_MAX),
    between(1, INT_MAX),
    "members a consumer-protocol group may have (GROUP_MAX_SIZE_REACHED beyond)",
    _GROUPS,
)
#: Kafka's ConsumerGroupMigrationPolicy values (read in any case).
MIGRATION_POLICIES: Final = ("disabled", "upgrade", "downgrade", "bidirectional")
GROUP_CONSUMER_MIGRATION_POLICY: Final = _D(
    "group.consumer.migration.policy",
    _S,
    "bidirectional",
    one_of(*MIGRATION_POLICIES, ignore_case=True),
    "whether a classic group is upgraded in place when a consumer-protocol member joins it "
    "(upgrade), a consumer group downgraded when its last consumer-protocol member leaves "
    "(downgrade), both, or neither",
    _GROUPS,
)
TRANSACTION_STATE_LOG_NUM_PARTITIONS: Final = _D(
    "transaction.state.log.num.partitions",
    _I,
    "50",
    between(1, INT_MAX),
    "partitions of __transaction_state (fixed once created)",
    _TXN,
)
TRANSACTION_STATE_LOG_SEGMENT_BYTES: Final = _D(
    "transaction.state.log.segment.bytes",
    _I,
    "104857600",
    between(1, INT_MAX),
    "segment.bytes of __transaction_state",
    _TXN,
)
TRANSACTION_MAX_TIMEOUT_MS: Final = _D(
    "transaction.max.timeout.ms",
    _I,
    "900000",
    between(1, INT_MAX),
    "largest transaction.timeout.ms a producer may ask for (else INVALID_TRANSACTION_TIMEOUT)",
    _TXN,
)
TRANSACTION_PARTITION_VERIFICATION_ENABLE: Final = _D(
    "transaction.partition.verification.enable",
    _B,
    "true",
    BOOLEAN,
    "ask the transaction coordinator before a producer's first transactional batch of a transaction "
    "goes into a partition (KIP-890 part 1: no hanging transactions from zombies)",
    _TXN,
)
TRANSACTIONAL_ID_EXPIRATION_MS: Final = _D(
    "transactional.id.expiration.ms",
    _I,
    "604800000",
    between(1, INT_MAX),
    "a transactional id with no transaction open and no update for this long is forgotten",
    _TXN,
)
TRANSACTION_ABORT_TIMED_OUT_TRANSACTION_CLEANUP_INTERVAL_MS: Final = _D(
    "transaction.abort.timed.out.transaction.cleanup.interval.ms",
    _I,
    "10000",
    between(1, INT_MAX),
    "how often transactions open past their timeout are looked for and aborted",
    _TXN,
)
TRANSACTION_REMOVE_EXPIRED_TRANSACTION_CLEANUP_INTERVAL_MS: Final = _D(
    "transaction.remove.expired.transaction.cleanup.interval.ms",
    _I,
    "3600000",
    between(1, INT_MAX),
    "how often expired transactional ids are looked for",
    _TXN,
)
OFFSET_METADATA_MAX_BYTES: Final = _D(
    "offset.metadata.max.bytes",
    _I,
    "4096",
    between(0, INT_MAX),
    "largest metadata string of a committed offset",
    _GROUPS,
)
LOG_RETENTION_CHECK_INTERVAL_MS: Final = _D(
    "log.retention.check.interval.ms",
    _L,
    "300000",
    between(1, LONG_MAX),
    "how often segments past retention are deleted",
    _HOUSEKEEPING,
)
LOG_CLEANER_ENABLE: Final = _D(
    "log.cleaner.enable",
    _B,
    "true",
    BOOLEAN,
    "run the log cleaner (compacted topics, __consumer_offsets, __transaction_state)",
    _CLEANER,
)
LOG_CLEANER_THREADS: Final = _D(
    "log.cleaner.threads", _I, "1", between(0, INT_MAX), "cleaner threads per worker", _CLEANER
)
LOG_CLEANER_IO_MAX_BYTES_PER_SECOND: Final = _D(
    "log.cleaner.io.max.bytes.per.second",
    ConfigType.DOUBLE,
    "1.7976931348623157E308",
    between_float(0.0, float("inf")),
    "read + write rate limit of each worker's cleaner",
    _CLEANER,
)
LOG_CLEANER_DEDUPE_BUFFER_SIZE: Final = _D(
    "log.cleaner.dedupe.buffer.size",
    _L,
    "134217728",
    between(0, LONG_MAX),
    "memory of the key maps of each worker's cleaner (24 bytes a key)",
    _CLEANER,
)
LOG_CLEANER_IO_BUFFER_LOAD_FACTOR: Final = _D(
    "log.cleaner.io.buffer.load.factor",
    ConfigType.DOUBLE,
    "0.9",
    between_float(0.0, 1.0),
    "how full a key map may get",
    _CLEANER,
)
LOG_CLEANER_BACKOFF_MS: Final = _D(
    "log.cleaner.backoff.ms",
    _L,
    "15000",
    between(0, LONG_MAX),
    "sleep of a cleaner that found nothing to clean",
    _CLEANER,
)
LOG_FLUSH_OFFSET_CHECKPOINT_INTERVAL_MS: Final = _D(
    "log.flush.offset.checkpoint.interval.ms",
    _I,
    "60000",
    between(1, INT_MAX),
    "how often recovery points are checkpointed",
    _HOUSEKEEPING,
)
# Kafka's default is Long.MAX_VALUE (flush.ms is then never acted on); we poll each second, and
# only partitions whose flush.ms is finite.
LOG_FLUSH_SCHEDULER_INTERVAL_MS: Final = _D(
    "log.flush.scheduler.interval.ms",
    _L,
    "1000",
    between(1, LONG_MAX),
    "how often logs are checked against flush.ms",
    _HOUSEKEEPING,
)
# SASL (broker/handlers/sasl_handshake.py, sasl_authenticate.py; config/sasl.py reads them per
# listener). Kafka's names and defaults, but PLAIN's users and OAUTHBEARER's unsecured validator
# options, which Kafka takes from JAAS (Java-only), are properties of their own.
_SASL: Final = "SASL handlers (config/sasl.py)"
SASL_ENABLED_MECHANISMS: Final = _D(
    "sasl.enabled.mechanisms",
    _LIST,
    "GSSAPI",
    NON_EMPTY_NAMES,
    "SASL mechanisms of SASL listeners: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER (GSSAPI,"
    " Kafka's default, is not supported: a SASL listener that enables it does not start)",
    _SASL,
    per_listener=True,
)
CONNECTIONS_MAX_REAUTH_MS: Final = _D(
    "connections.max.reauth.ms",
    _L,
    "0",
    between(0, LONG_MAX),
    "SASL session lifetime before the client must re-authenticate (KIP-368), 0 no limit",
    _SASL,
    per_listener=True,
)
SASL_SERVER_MAX_RECEIVE_SIZE: Final = _D(
    "sasl.server.max.receive.size",
    _I,
    "524288",
    between(1, INT_MAX),
    "largest request frame before a SASL connection is authenticated",
    _SASL,
)
CONNECTION_FAILED_AUTHENTICATION_DELAY_MS: Final = _D(
    "connection.failed.authentication.delay.ms",
    _I,
    "100",
    between(0, INT_MAX),
    "delay of the answer (and close) after a failed authentication",
    _SASL,
)
SASL_PLAIN_USERS: Final = _D(
    "sasl.plain.users",
    _P,
    None,
    USER_TABLE,
    'PLAIN users: a TOML table [sasl.plain.users] alice = "password" (Kafka\'s JAAS user_<name>)',
    _SASL,
    per_listener=True,
)
OAUTHBEARER_PRINCIPAL_CLAIM_NAME: Final = _D(
    "sasl.oauthbearer.unsecured.validator.principal.claim.name",
    _S,
    "sub",
    NON_BLANK,
    "claim holding the principal of an unsecured OAUTHBEARER token (unsecuredValidatorPrincipalClaimName)",
    _SASL,
    per_listener=True,
)
OAUTHBEARER_SCOPE_CLAIM_NAME: Final = _D(
    "sasl.oauthbearer.unsecured.validator.scope.claim.name",
    _S,
    "scope",
    NON_BLANK,
    "claim holding the scope of an unsecured OAUTHBEARER token (unsecuredValidatorScopeClaimName)",
    _SASL,
    per_listener=True,
)
OAUTHBEARER_REQUIRED_SCOPE: Final = _D(
    "sasl.oauthbearer.unsecured.validator.required.scope",
    _S,
    "",
    Validator(lambda name, raw: tuple(raw.split()), "space-separated scope values"),
    "scope values an unsecured OAUTHBEARER token must hold (unsecuredValidatorRequiredScope)",
    _SASL,
    per_listener=True,
)
OAUTHBEARER_ALLOWABLE_CLOCK_SKEW_MS: Final = _D(
    "sasl.oauthbearer.unsecured.validator.allowable.clock.skew.ms",
    _I,
    "0",
    between(0, INT_MAX),
    "clock skew allowed when checking exp and iat (unsecuredValidatorAllowableClockSkewMs)",
    _SASL,
    per_listener=True,
)
# TLS (Kafka's SslConfigs and BrokerSecurityConfigs names). Every row may be set per listener as
# listener.name.<listener>.<name>; the stores are reloaded without a restart (AlterConfigs).
SSL_KEYSTORE_TYPE: Final = _D(
    "ssl.keystore.type",
    _S,
    "PEM",
    PEM_STORE,
    "key store format: PEM only (Kafka's default JKS is refused)",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_KEYSTORE_LOCATION: Final = _D(
    "ssl.keystore.location",
    _S,
    None,
    TEXT,
    "PEM file with the private key and the certificate chain of a TLS listener",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_KEYSTORE_KEY: Final = _D(
    "ssl.keystore.key",
    _P,
    None,
    TEXT,
    "the private key in PEM, inline (instead of ssl.keystore.location)",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_KEYSTORE_CERTIFICATE_CHAIN: Final = _D(
    "ssl.keystore.certificate.chain",
    _P,
    None,
    TEXT,
    "the certificate chain in PEM, inline (with ssl.keystore.key)",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_KEY_PASSWORD: Final = _D(
    "ssl.key.password",
    _P,
    None,
    TEXT,
    "password of an encrypted private key",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_TRUSTSTORE_TYPE: Final = _D(
    "ssl.truststore.type",
    _S,
    "PEM",
    PEM_STORE,
    "trust store format: PEM only (Kafka's default JKS is refused)",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_TRUSTSTORE_LOCATION: Final = _D(
    "ssl.truststore.location",
    _S,
    None,
    TEXT,
    "PEM file of the CA certificates client certificates are checked against [the system's]",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_TRUSTSTORE_CERTIFICATES: Final = _D(
    "ssl.truststore.certificates",
    _P,
    None,
    TEXT,
    "the trusted CA certificates in PEM, inline (instead of ssl.truststore.location)",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_CLIENT_AUTH: Final = _D(
    "ssl.client.auth",
    _S,
    "none",
    one_of("none", "requested", "required"),
    "client certificates (mTLS): none, requested or required; on SASL_SSL only its listener.name form",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_PRINCIPAL_MAPPING_RULES: Final = _D(
    "ssl.principal.mapping.rules",
    _S,
    "DEFAULT",
    TEXT,
    "RULE:pattern/replacement/[LU],...,DEFAULT: client certificate subject -> principal name",
    _TLS,
    per_listener=True,
)
SSL_ENABLED_PROTOCOLS: Final = _D(
    "ssl.enabled.protocols",
    _LIST,
    "TLSv1.2,TLSv1.3",
    list_of("TLSv1.2", "TLSv1.3"),
    "TLS versions a TLS listener accepts",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
SSL_CIPHER_SUITES: Final = _D(
    "ssl.cipher.suites",
    _LIST,
    None,
    NAMES,
    "TLS 1.2 cipher suites, OpenSSL names (TLS 1.3's are OpenSSL's defaults) [OpenSSL's defaults]",
    _TLS,
    mode=_PER_BROKER,
    per_listener=True,
)
AUTHORIZER_CLASS_NAME: Final = _D(
    "authorizer.class.name",
    _S,
    "",
    AUTHORIZER,
    "ACL authorization: Kafka's StandardAuthorizer by its class name; empty: none (every client may"
    " do everything)",
    _AUTHORIZER,
)
SUPER_USERS: Final = _D(
    "super.users",
    _LIST,
    "",
    PRINCIPALS,
    "principals the authorizer allows everything, semicolon-separated (User:admin;User:CN=ops)",
    _AUTHORIZER,
)
ALLOW_EVERYONE_IF_NO_ACL_FOUND: Final = _D(
    "allow.everyone.if.no.acl.found",
    _B,
    "false",
    BOOLEAN,
    "with an authorizer: allow every principal on a resource no ACL applies to",
    _AUTHORIZER,
)
LOCAL_CLIENTS_ALLOWED_GROUP: Final = _D(
    "local.clients.allowed.group",
    _S,
    "",
    TEXT,
    "OS group whose members may attach LocalProducers/LocalConsumers besides the broker's own user"
    " (shardbroker's own; no Kafka equivalent); empty: only the broker's user",
    "local clients (broker/local_clients.py)",
)

# /metrics (observability/metrics_security.py): optional TLS and HTTP basic auth, off by default,
# read once at start. Kafka has no such endpoint: the TLS rows are the listener rows' twins under
# ``metrics.`` (same type, default and validator; config/ssl_context.py reads both families).
_METRICS_DOOR: Final = "metrics endpoint (observability/metrics_security.py)"


def _metrics_twin(row: ConfigKey[T], doc: str) -> ConfigKey[T]:
    return _D(f"metrics.{row.name}", row.type, row.default, row.validator, doc, _METRICS_DOOR)


METRICS_SSL_KEYSTORE_LOCATION: Final = _metrics_twin(
    SSL_KEYSTORE_LOCATION,
    "PEM file with the private key and certificate chain of /metrics: when set (or the inline key),"
    " /metrics speaks HTTPS only [plain HTTP]",
)
METRICS_SSL_KEYSTORE_KEY: Final = _metrics_twin(
    SSL_KEYSTORE_KEY, "the private key of /metrics in PEM, inline (instead of metrics.ssl.keystore.location)"
)
METRICS_SSL_KEYSTORE_CERTIFICATE_CHAIN: Final = _metrics_twin(
    SSL_KEYSTORE_CERTIFICATE_CHAIN,
    "the certificate chain of /metrics in PEM, inline (with metrics.ssl.keystore.key)",
)
METRICS_SSL_KEY_PASSWORD: Final = _metrics_twin(
    SSL_KEY_PASSWORD, "password of the encrypted private key of /metrics"
)
METRICS_SSL_TRUSTSTORE_LOCATION: Final = _metrics_twin(
    SSL_TRUSTSTORE_LOCATION,
    "PEM file of the CA certificates /metrics checks client certificates against [the system's]",
)
METRICS_SSL_TRUSTSTORE_CERTIFICATES: Final = _metrics_twin(
    SSL_TRUSTSTORE_CERTIFICATES,
    "the CA certificates /metrics trusts in PEM, inline (instead of metrics.ssl.truststore.location)",
)
METRICS_SSL_CLIENT_AUTH: Final = _metrics_twin(
    SSL_CLIENT_AUTH,
    "client certificates on /metrics (mTLS): none, requested or required; any certificate the trust"
    " store accepts may scrape",
)
METRICS_SSL_ENABLED_PROTOCOLS: Final = _metrics_twin(SSL_ENABLED_PROTOCOLS, "TLS versions /metrics accepts")
METRICS_SSL_CIPHER_SUITES: Final = _metrics_twin(
    SSL_CIPHER_SUITES, "TLS 1.2 cipher suites of /metrics, OpenSSL names [OpenSSL's defaults]"
)
METRICS_BASIC_AUTH_USERS: Final = _D(
    "metrics.basic.auth.users",
    _P,
    None,
    HASH_TABLE,
    "HTTP basic auth on /metrics: a TOML table [metrics.basic.auth.users] prometheus ="
    ' "pbkdf2_sha256$..." of password hashes (`shardbroker metrics-password NAME` makes one); needs'
    " metrics.ssl.* unless metrics.listen is a loopback address [no authentication]",
    _METRICS_DOOR,
)
TELEMETRY_MAX_BYTES: Final = _D(
    "telemetry.max.bytes",
    _I,
    "1048576",
    between(1, INT_MAX),
    "largest client telemetry push (KIP-714 PushTelemetry), compressed and decompressed",
    "client telemetry (broker/client_telemetry.py)",
)
#: Rows whose value is a TOML table (kept as JSON text).
TABLE_ROWS: Final = frozenset({SASL_PLAIN_USERS.name, METRICS_BASIC_AUTH_USERS.name})

for _topic, _broker in BROKER_SYNONYMS.items():
    _key = TOPIC_CONFIGS[_topic]
    _D(
        _broker,
        _key.type,
        _key.default,
        _key.validator,
        f"default {_topic} of topics: {_key.doc}",
        _TOPIC_DEFAULTS,
    )

_D("log.roll.hours", _I, "168", between(1, INT_MAX), "log.roll.ms in hours", _TOPIC_DEFAULTS)
_D("log.retention.minutes", _I, None, between(-1, INT_MAX), "log.retention.ms in minutes", _TOPIC_DEFAULTS)
_D("log.retention.hours", _I, "168", between(-1, INT_MAX), "log.retention.ms in hours", _TOPIC_DEFAULTS)

#: Every broker synonym of each topic config with the factor to the topic config's unit, highest
#: precedence first (KafkaConfig: ``*.ms`` before ``*.minutes`` before ``*.hours``).
TOPIC_CONFIG_SYNONYMS: Final[Mapping[str, tuple[tuple[str, int], ...]]] = {
    **{topic: ((broker, 1),) for topic, broker in BROKER_SYNONYMS.items()},
    "segment.ms": (("log.roll.ms", 1), ("log.roll.hours", 3_600_000)),
    "retention.ms": (
        ("log.retention.ms", 1),
        ("log.retention.minutes", 60_000),
        ("log.retention.hours", 3_600_000),
    ),
}
