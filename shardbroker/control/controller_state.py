"""The controller's state machine: metadata records in, new state (and answers) out. No I/O.

The controller (controller.py) keeps the broker's metadata -- topics, their ids, partition counts,
configs, which worker leads each partition with which leader epoch, the producer-id high-water
mark, the SCRAM credentials -- as a `ControllerState`. It changes only by applying *records*,
small JSON objects that are also what the metadata log stores (metadata_log.py), so replaying the
log from empty (or from a snapshot) rebuilds exactly the live state: ``replay(records) == state``
is a unit test.

Records (every one carries ``"offset"``, its position in the metadata log; the state's
``version`` is the offset of the last record applied, -1 for none, and is the version of the
`MetadataImage` built from it)::

    {"type": "topic", "name", "id", "configs": {..}, "partitions": [[leader, leader_epoch], ..]}
        create a topic, or replace it whole (more partitions, moved partitions);
    {"type": "delete_topic", "id"}
    {"type": "configs", "id", "configs": {..}}          the topic's whole override set
    {"type": "producer_ids", "next": n}                 ids below n are handed out, forever
    {"type": "scram_credential", ..} / {"type": "remove_scram_credential", ..}
        one SCRAM credential set or removed (scram_control.py: salts and derived keys only)
    {"type": "broker_configs", "configs": {..}}         the per-broker dynamic configs, whole
    {"type": "acl", "id", ..} / {"type": "remove_acl", "id"}
        one ACL binding added or removed (acl_control.py)
    {"type": "client_metrics", "name", "configs": {..}}
        a client metrics resource's whole config set, empty: removed (client_metrics_control.py)
    {"type": "client_quota", "entity", "key", "value"} / {"type": "remove_client_quota", ..}
        one client quota key set or removed (quota_control.py)

Ops (`handle`) are what workers ask for over their control ring (ipc/control.py): they
validate each item with Kafka's rules and error codes, emit records for the valid ones and answer
per item. They never raise for bad input; a malformed request gets INVALID_REQUEST.

Placement (decided here, recorded in the log, so it is stable across restarts): each new
partition goes to the least-loaded worker (fewest partitions led), lowest node id first on a tie,
counting the partitions placed so far in the same request. So partitions spread evenly over the
workers whatever the mix of topics, a topic's partitions land on distinct workers while there
are enough of them, and nothing moves when topics come and go. When the broker restarts with
fewer workers, `reassign_orphans` moves the partitions of the missing workers, one at a time, to
the least-loaded remaining worker and bumps their leader epoch (Kafka's fencing for a leader
change); it also places a partition left between the two steps of a move (leader -1). With more
workers, ``place_directly`` spreads partitions onto the new ones at start (controller.py, when
``auto.leader.rebalance.enable``).

Moves of running partitions are the ops ``move_partitions`` (step one: leader -1, nobody writes)
and ``assign_partitions`` (step two: the new owner, leader epoch + 1), which the controller runs
in turn once the old owner let go (controller.py, "Partition moves").
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from shardbroker.config.config_def import ConfigError
from shardbroker.config.config_ops import apply_config_ops, check_dynamic_broker_configs, is_dynamic_list
from shardbroker.config.log_config import LogConfig
from shardbroker.control import acl_control, client_metrics_control, quota_control
from shardbroker.control.acl_control import Acls, apply_acl_record, create_acls, delete_acls
from shardbroker.control.client_metrics_control import (
    Resources,
    alter_client_metrics,
    apply_client_metrics_record,
)
from shardbroker.control.quota_control import alter_client_quotas, apply_quota_record
from shardbroker.control.scram_control import (
    REMOVE_RECORD,
    UPSERT_RECORD,
    Credentials,
    alter_credentials,
    apply_scram_record,
    credential_record,
)
from shardbroker.metadata.client_quotas import ClientQuotas
from shardbroker.metadata.image import BrokerEndpoint, MetadataImage, PartitionImage, TopicImage
from shardbroker.metadata.topic_names import INTERNAL_TOPICS, validate_topic_name
from shardbroker.protocol.errors import ErrorCode
from shardbroker.security.acl import AclBinding, AclBindingFilter

__all__ = [
    "ControllerState",
    "OpContext",
    "Outcome",
    "apply_record",
    "handle",
    "owners_of",
    "place_directly",
    "reassign_orphans",
    "replay",
]

Record = dict[str, Any]

#: Largest block of producer ids one request may take (Kafka's brokers take 1000 at a time).
MAX_PRODUCER_ID_BLOCK: Final = 1_000_000
#: Producer ids are int64 on the wire.
MAX_PRODUCER_ID: Final = (1 << 63) - 1
INT32_MAX: Final = (1 << 31) - 1


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything the metadata log says. Immutable: each change makes a new one."""

    version: int = -1
    topics: Mapping[str, TopicImage] = field(default_factory=dict)
    next_producer_id: int = 0
    #: user -> mechanism -> SCRAM credential (never a password).
    scram_credentials: Credentials = field(default_factory=dict)
    #: Per-broker dynamic configs (AlterConfigs of a BROKER resource), applied by every worker.
    broker_configs: Mapping[str, str] = field(default_factory=dict)
    #: ACL id -> binding, in creation order.
    acls: Acls = field(default_factory=dict)
    #: Client metrics resource name -> its configs (KIP-714 subscriptions).
    client_metrics: Resources = field(default_factory=dict)
    #: Client quotas: entity -> key -> value.
    client_quotas: ClientQuotas = field(default_factory=dict)

    def image(self, cluster_id: str, brokers: tuple[BrokerEndpoint, ...]) -> MetadataImage:
        return MetadataImage(
            version=self.version,
            cluster_id=cluster_id,
            controller_id=0,
            brokers=brokers,
            topics=dict(self.topics),
            scram_credentials={user: dict(creds) for user, creds in self.scram_credentials.items()},
            broker_configs=dict(self.broker_configs),
            acls=tuple(self.acls.values()),
            client_metrics={name: dict(configs) for name, configs in self.client_metrics.items()},
            client_quotas={entity: dict(values) for entity, values in self.client_quotas.items()},
        )

    def topic_by_id(self, topic_id: uuid.UUID) -> TopicImage | None:
        for topic in self.topics.values():
            if topic.topic_id == topic_id:
                return topic
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (the snapshot)."""
        return {
            "version": self.version,
            "next_producer_id": self.next_producer_id,
            "topics": [_topic_record(t) for t in self.topics.values()],
            "scram_credentials": [
                credential_record(user, credential)
                for user, creds in self.scram_credentials.items()
                for credential in creds.values()
            ],
            "broker_configs": dict(self.broker_configs),
            "acls": [
                {"type": acl_control.ADD_RECORD, "id": acl_id, **binding.to_record()}
                for acl_id, binding in self.acls.items()
            ],
            "client_metrics": {name: dict(configs) for name, configs in self.client_metrics.items()},
            "client_quotas": quota_control.quota_records(self.client_quotas),
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> ControllerState:
        topics = {}
        for rec in data["topics"]:
            topic = _topic_from_record(rec)
            topics[topic.name] = topic
        scram: Credentials = {}
        for rec in data.get("scram_credentials", ()):  # absent from snapshots older than SCRAM
            scram = apply_scram_record(scram, rec)
        acls: Acls = {}
        for rec in data.get("acls", ()):  # absent from snapshots older than ACLs
            acls = apply_acl_record(acls, rec)
        quotas: ClientQuotas = {}
        for rec in data.get("client_quotas", ()):  # absent from snapshots older than quotas
            quotas = apply_quota_record(quotas, rec)
        return ControllerState(
            int(data["version"]),
            topics,
            int(data["next_producer_id"]),
            scram,
            {str(k): str(v) for k, v in data.get("broker_configs", {}).items()},
            acls,
            client_metrics={  # absent from snapshots older than client metrics
                str(name): {str(k): str(v) for k, v in configs.items()}
                for name, configs in data.get("client_metrics", {}).items()
            },
            client_quotas=quotas,
        )


def _topic_record(topic: TopicImage) -> Record:
    return {
        "type": "topic",
        "name": topic.name,
        "id": str(topic.topic_id),
        "configs": dict(topic.configs),
        "partitions": [[p.leader, p.leader_epoch] for p in topic.partitions],
    }


def _topic_from_record(rec: Mapping[str, Any]) -> TopicImage:
    name = str(rec["name"])
    return TopicImage(
        name=name,
        topic_id=uuid.UUID(rec["id"]),
        partitions=tuple(
            PartitionImage(i, int(leader), int(epoch)) for i, (leader, epoch) in enumerate(rec["partitions"])
        ),
        configs={str(k): str(v) for k, v in rec["configs"].items()},
        is_internal=name in INTERNAL_TOPICS,
    )


def apply_record(state: ControllerState, record: Mapping[str, Any]) -> ControllerState:
    """The state after ``record``, whose ``offset`` must be ``state.version + 1``."""
    offset = int(record["offset"])
    if offset != state.version + 1:
        raise ValueError(f"metadata record at offset {offset} does not follow version {state.version}")
    kind = record["type"]
    if kind in (UPSERT_RECORD, REMOVE_RECORD):
        scram = apply_scram_record(state.scram_credentials, record)
        return dataclasses.replace(state, version=offset, scram_credentials=scram)
    if kind in (acl_control.ADD_RECORD, acl_control.REMOVE_RECORD):
        return dataclasses.replace(state, version=offset, acls=apply_acl_record(state.acls, record))
    if kind == client_metrics_control.RECORD:
        resources = apply_client_metrics_record(state.client_metrics, record)
        return dataclasses.replace(state, version=offset, client_metrics=resources)
    if kind in (quota_control.SET_RECORD, quota_control.REMOVE_RECORD):
        quotas = apply_quota_record(state.client_quotas, record)
        return dataclasses.replace(state, version=offset, client_quotas=quotas)
    topics = dict(state.topics)
    next_pid = state.next_producer_id
    broker_configs = state.broker_configs
    if kind == "topic":
        topic = _topic_from_record(record)
        for other in topics.values():
            if other.topic_id == topic.topic_id and other.name != topic.name:
                raise ValueError(f"topic id {topic.topic_id} already names {other.name}")
        topics[topic.name] = topic
    elif kind == "delete_topic":
        gone = state.topic_by_id(uuid.UUID(record["id"]))
        if gone is None:
            raise ValueError(f"delete of unknown topic id {record['id']}")
        del topics[gone.name]
    elif kind == "configs":
        old = state.topic_by_id(uuid.UUID(record["id"]))
        if old is None:
            raise ValueError(f"configs of unknown topic id {record['id']}")
        configs = {str(k): str(v) for k, v in record["configs"].items()}
        topics[old.name] = dataclasses.replace(old, configs=configs)
    elif kind == "producer_ids":
        nxt = int(record["next"])
        if nxt < next_pid:
            raise ValueError(f"producer id mark going back from {next_pid} to {nxt}")
        next_pid = nxt
    elif kind == "broker_configs":
        broker_configs = {str(k): str(v) for k, v in record["configs"].items()}
    else:
        raise ValueError(f"unknown metadata record type {kind!r}")
    return dataclasses.replace(
        state, version=offset, topics=topics, next_producer_id=next_pid, broker_configs=broker_configs
    )


def replay(records: Iterable[Mapping[str, Any]], start: ControllerState | None = None) -> ControllerState:
    state = start or ControllerState()
    for record in records:
        state = apply_record(state, record)
    return state


# --- ops --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpContext:
    """What ops need from outside the state: the broker's defaults and a source of topic ids."""

    workers: int
    num_partitions: int = 1
    log_defaults: LogConfig = field(default_factory=LogConfig)
    new_topic_id: Callable[[], uuid.UUID] = uuid.uuid4
    new_acl_id: Callable[[], uuid.UUID] = uuid.uuid4


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an op did: the records to append (in order), the resulting state, the answer."""

    state: ControllerState
    records: list[Record]
    result: dict[str, Any]


class _Builder:
    """Accumulates records while an op runs, applying each at once so later items see them."""

    def __init__(self, state: ControllerState) -> None:
        self.state = state
        self.records: list[Record] = []

    def add(self, record: Record) -> None:
        record = {"offset": self.state.version + 1, **record}
        self.state = apply_record(self.state, record)
        self.records.append(record)

    def add_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.add(record)

    def outcome(self, result: dict[str, Any]) -> Outcome:
        result["version"] = self.state.version
        return Outcome(self.state, self.records, result)


def _collision(state: ControllerState, name: str) -> str | None:
    # Kafka refuses names equal up to '.' <-> '_': both map to the same metric names.
    key = name.replace(".", "_")
    for other in state.topics:
        if other != name and other.replace(".", "_") == key:
            return other
    return None


def place(state: ControllerState, count: int, workers: int) -> list[int]:
    """Leaders for ``count`` new partitions: least-loaded worker first, lowest id on a tie."""
    load = Counter({w: 0 for w in range(workers)})
    for topic in state.topics.values():
        for p in topic.partitions:
            if 0 <= p.leader < workers:
                load[p.leader] += 1
    leaders = []
    for _ in range(count):
        worker = min(range(workers), key=lambda w: (load[w], w))
        load[worker] += 1
        leaders.append(worker)
    return leaders


def reassign_orphans(state: ControllerState, workers: int) -> Outcome:
    """Records moving every partition led by a worker >= ``workers`` (the broker restarted with
    fewer), or by nobody (the controller stopped halfway through a move), to the least-loaded
    remaining one, leader epoch + 1."""
    b = _Builder(state)
    for name in sorted(state.topics):
        topic = b.state.topics[name]
        if all(0 <= p.leader < workers for p in topic.partitions):
            continue
        parts = list(topic.partitions)
        for i, p in enumerate(parts):
            if not 0 <= p.leader < workers:
                # Place against the state with this topic's moves so far, so moves spread too.
                interim = dataclasses.replace(topic, partitions=tuple(parts))
                probe = ControllerState(b.state.version, {**b.state.topics, name: interim})
                (leader,) = place(probe, 1, workers)
                parts[i] = PartitionImage(i, leader, p.leader_epoch + 1)
        b.add(_topic_record(dataclasses.replace(topic, partitions=tuple(parts))))
    return b.outcome({"moved": sum(1 for _ in b.records)})


def owners_of(state: ControllerState, workers: int) -> dict[tuple[str, int], int]:
    """Every placed partition and its worker (a partition mid-move is nobody's: left out)."""
    return {
        (t.name, p.partition): p.leader
        for t in state.topics.values()
        for p in t.partitions
        if 0 <= p.leader < workers
    }


def place_directly(state: ControllerState, moves: Iterable[tuple[str, int, int]]) -> Outcome:
    """Records giving each ``(topic, partition, worker)`` to that worker, leader epoch + 1, in one
    step: only for a broker whose workers are not running yet (the controller's start), when no
    worker can hold the logs and the two steps of a live move are not needed."""
    b = _Builder(state)
    by_topic: dict[str, dict[int, tuple[int, int]]] = {}
    for name, index, worker in moves:
        part = state.topics[name].partitions[index]
        by_topic.setdefault(name, {})[index] = (worker, part.leader_epoch + 1)
    for name, leaders in by_topic.items():
        _set_leaders(b, b.state.topics[name], leaders)
    return b.outcome({"moved": sum(len(v) for v in by_topic.values())})


def _error(code: ErrorCode, message: str | None = None) -> dict[str, Any]:
    return {"error_code": int(code), "error_message": message}


def _ok() -> dict[str, Any]:
    return {"error_code": 0, "error_message": None}


def _string_configs(raw: object) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise TypeError("configs must be an object")
    # A null value in CreateTopics means "not set".
    return {str(k): str(v) for k, v in raw.items() if v is not None}


#: Most partitions one CreateTopics or CreatePartitions request may add, over all its topics (Kafka's
#: controller caps one operation at 10,000 records likewise). Without it, a request for 2**31 - 1
#: partitions made the controller build them all, stalling every admin request and the drain.
MAX_NEW_PARTITIONS_PER_REQUEST: Final = 10_000


def _over_budget(num: int, budget: int) -> dict[str, Any] | None:
    if num <= budget:
        return None
    return _error(
        ErrorCode.INVALID_PARTITIONS,
        f"{num} new partitions is more than this request may still add ({budget} of "
        f"{MAX_NEW_PARTITIONS_PER_REQUEST} per request): create them over several requests.",
    )


def _create_topics(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    validate_only = bool(args.get("validate_only", False))
    items = list(args["topics"])
    names = [item.get("name") for item in items]
    dupes = {n for n in names if names.count(n) > 1}
    budget = MAX_NEW_PARTITIONS_PER_REQUEST
    out = []
    for item in items:
        name = item.get("name")
        num = int(item.get("num_partitions", -1))
        rf = int(item.get("replication_factor", -1))
        res: dict[str, Any] = {"name": name, "topic_id": None, "num_partitions": num}
        if name in dupes:
            res.update(_error(ErrorCode.INVALID_REQUEST, f"Create topics request lists {name!r} twice"))
            out.append(res)
            continue
        why = validate_topic_name(name)
        if why is not None:
            res.update(_error(ErrorCode.INVALID_TOPIC_EXCEPTION, why))
            out.append(res)
            continue
        assert isinstance(name, str)
        if name in b.state.topics:
            res.update(_error(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists."))
            out.append(res)
            continue
        clash = _collision(b.state, name)
        if clash is not None:
            res.update(
                _error(
                    ErrorCode.INVALID_TOPIC_EXCEPTION,
                    f"Topic '{name}' collides with existing topic: {clash} ('.' and '_' are equivalent)",
                )
            )
            out.append(res)
            continue
        if num == -1:
            num = ctx.num_partitions
        if not 1 <= num <= INT32_MAX:
            res.update(_error(ErrorCode.INVALID_PARTITIONS, "Number of partitions must be larger than 0."))
            out.append(res)
            continue
        refusal = _over_budget(num, budget)
        if refusal is not None:
            res.update(refusal)
            out.append(res)
            continue
        if rf not in (-1, 1):
            res.update(
                _error(
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                    f"Replication factor {rf} is not possible: shardbroker is a single-host broker "
                    "with one replica per partition (use 1 or -1).",
                )
            )
            out.append(res)
            continue
        try:
            configs = _string_configs(item.get("configs"))
            ctx.log_defaults.overrides(configs)
        except ConfigError as exc:
            res.update(_error(ErrorCode.INVALID_CONFIG, str(exc)))
            out.append(res)
            continue
        budget -= num
        topic_id = ctx.new_topic_id()
        res["num_partitions"] = num
        res["topic_id"] = str(topic_id)
        if not validate_only:
            leaders = place(b.state, num, ctx.workers)
            b.add(
                {
                    "type": "topic",
                    "name": name,
                    "id": str(topic_id),
                    "configs": configs,
                    "partitions": [[leader, 0] for leader in leaders],
                }
            )
        res.update(_ok())
        out.append(res)
    return {"topics": out}


def _delete_topics(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    out = []
    for item in args["topics"]:
        name, raw_id = item.get("name"), item.get("topic_id")
        res: dict[str, Any] = {"name": name, "topic_id": raw_id}
        topic: TopicImage | None
        if raw_id is not None and raw_id != str(uuid.UUID(int=0)):
            try:
                topic = b.state.topic_by_id(uuid.UUID(str(raw_id)))
            except ValueError:
                topic = None
            if topic is None:
                res.update(_error(ErrorCode.UNKNOWN_TOPIC_ID, f"Topic id {raw_id} is unknown."))
                out.append(res)
                continue
        else:
            topic = b.state.topics.get(name) if isinstance(name, str) else None
            if topic is None:
                res.update(
                    _error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic.")
                )
                out.append(res)
                continue
        res["name"], res["topic_id"] = topic.name, str(topic.topic_id)
        b.add({"type": "delete_topic", "id": str(topic.topic_id)})
        res.update(_ok())
        out.append(res)
    return {"topics": out}


def _create_partitions(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    validate_only = bool(args.get("validate_only", False))
    items = list(args["topics"])
    names = [item.get("name") for item in items]
    budget = MAX_NEW_PARTITIONS_PER_REQUEST
    out = []
    for item in items:
        name = item.get("name")
        count = int(item["count"])
        res: dict[str, Any] = {"name": name}
        topic = b.state.topics.get(name) if isinstance(name, str) else None
        if names.count(name) > 1:
            res.update(_error(ErrorCode.INVALID_REQUEST, f"Create partitions request lists {name!r} twice"))
        elif topic is None:
            res.update(_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "This server does not host this topic."))
        elif count == len(topic.partitions):
            res.update(_error(ErrorCode.INVALID_PARTITIONS, f"Topic already has {count} partitions."))
        elif count < len(topic.partitions):
            res.update(
                _error(
                    ErrorCode.INVALID_PARTITIONS,
                    f"Topic currently has {len(topic.partitions)} partitions, which is higher than "
                    f"the requested {count}.",
                )
            )
        elif count > INT32_MAX:
            res.update(_error(ErrorCode.INVALID_PARTITIONS, f"{count} partitions is too many."))
        elif (refusal := _over_budget(count - len(topic.partitions), budget)) is not None:
            res.update(refusal)
        else:
            budget -= count - len(topic.partitions)
            if not validate_only:
                leaders = place(b.state, count - len(topic.partitions), ctx.workers)
                record = _topic_record(topic)
                record["partitions"] += [[leader, 0] for leader in leaders]
                b.add(record)
            res.update(_ok())
        out.append(res)
    return {"topics": out}


#: Configs whose value is a list (Kafka's ConfigDef.Type.LIST): the only ones APPEND/SUBTRACT apply to.
LIST_CONFIGS: Final = frozenset({"cleanup.policy"})


def _alter_one(topic: TopicImage, resource: Mapping[str, Any], ctx: OpContext) -> dict[str, str]:
    """The topic's new override set; raises ConfigError (INVALID_CONFIG) or KeyError."""
    replace = bool(resource.get("replace", False))
    effective = ctx.log_defaults.overrides(topic.configs).to_properties()
    new = apply_config_ops(
        {} if replace else topic.configs,
        resource["ops"],
        is_list=LIST_CONFIGS.__contains__,
        effective=effective,
    )
    ctx.log_defaults.overrides(new)  # validates every name and value
    return new


def _alter_configs(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    validate_only = bool(args.get("validate_only", False))
    out = []
    for resource in args["resources"]:
        name = resource.get("name")
        res: dict[str, Any] = {"name": name}
        topic = b.state.topics.get(name) if isinstance(name, str) else None
        if topic is None:
            res.update(_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic {name!r} does not exist."))
            out.append(res)
            continue
        try:
            new = _alter_one(topic, resource, ctx)
        except ConfigError as exc:
            res.update(_error(ErrorCode.INVALID_CONFIG, str(exc)))
            out.append(res)
            continue
        if not validate_only and new != dict(topic.configs):
            b.add({"type": "configs", "id": str(topic.topic_id), "configs": new})
        res.update(_ok())
        out.append(res)
    return {"resources": out}


def _alter_broker_configs(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """The per-broker dynamic configs after ``ops`` (``replace``: AlterConfigs' whole set).
    The asking worker has checked that the TLS stores load; this checks names and values."""
    current = {} if args.get("replace") else b.state.broker_configs
    try:
        new = apply_config_ops(
            current, args["ops"], is_list=is_dynamic_list, effective=args.get("effective", {})
        )
        check_dynamic_broker_configs(new)
    except ConfigError as exc:
        return _error(ErrorCode.INVALID_CONFIG, str(exc))
    if not args.get("validate_only") and new != dict(b.state.broker_configs):
        b.add({"type": "broker_configs", "configs": new})
    return _ok()


def _allocate_producer_ids(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    count = int(args["count"])
    if not 1 <= count <= MAX_PRODUCER_ID_BLOCK:
        raise ValueError(f"producer id block of {count}: must be in [1, {MAX_PRODUCER_ID_BLOCK}]")
    first = b.state.next_producer_id
    if first + count > MAX_PRODUCER_ID:
        return {**_error(ErrorCode.UNKNOWN_SERVER_ERROR, "producer ids exhausted"), "first": -1, "count": 0}
    b.add({"type": "producer_ids", "next": first + count})
    return {"first": first, "count": count, **_ok()}


def _set_leaders(b: _Builder, topic: TopicImage, leaders: Mapping[int, tuple[int, int]]) -> None:
    """One record replacing ``topic`` with partition -> (leader, leader epoch) changed."""
    parts = tuple(
        PartitionImage(p.partition, *leaders[p.partition]) if p.partition in leaders else p
        for p in topic.partitions
    )
    b.add(_topic_record(dataclasses.replace(topic, partitions=parts)))


def _move_partitions(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Step one of a partition move (AlterPartitionReassignments): validate each item and take
    the partition from its owner (leader -1: nobody appends while the log changes hands). The
    controller gives it to the new owner with `_assign_partitions` once the old one has acked
    (controller.py). Answers per item, plus ``release``: the items step two must assign."""
    out: list[dict[str, Any]] = []
    release: list[dict[str, Any]] = []
    taken: dict[str, dict[int, tuple[int, int]]] = {}
    for item in args["partitions"]:
        name, index, to = item.get("topic"), int(item["partition"]), item.get("to")
        res: dict[str, Any] = {"topic": name, "partition": index}
        out.append(res)
        topic = b.state.topics.get(name) if isinstance(name, str) else None
        part = None if topic is None else topic.partition(index)
        if topic is None or part is None:
            res.update(_error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{name}-{index} does not exist."))
        elif name in INTERNAL_TOPICS:
            res.update(
                _error(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"{name} is internal: its partitions stay where the group coordinators they "
                    "hold are found (by hash of the group id), so they do not move.",
                )
            )
        elif part.leader < 0 or index in taken.get(name, {}):
            if to is None:
                res.update(_error(ErrorCode.REASSIGNMENT_IN_PROGRESS, "A move cannot be cancelled halfway."))
            else:
                res.update(_error(ErrorCode.REASSIGNMENT_IN_PROGRESS, f"{name}-{index} is being moved."))
        elif to is None:
            res.update(
                _error(ErrorCode.NO_REASSIGNMENT_IN_PROGRESS, f"No move of {name}-{index} is running.")
            )
        elif not isinstance(to, int) or not 0 <= to < ctx.workers:
            res.update(
                _error(
                    ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                    f"Worker {to} does not exist: this broker has workers 0-{ctx.workers - 1} "
                    "(node id = worker).",
                )
            )
        else:
            res.update(_ok())
            if to != part.leader:
                taken.setdefault(topic.name, {})[index] = (-1, part.leader_epoch)
                release.append(
                    {"topic": topic.name, "id": str(topic.topic_id), "partition": index,
                     "from": part.leader, "to": to}
                )  # fmt: skip
    for name, leaders in taken.items():
        _set_leaders(b, b.state.topics[name], leaders)
    return {"partitions": out, "release": release}


def _assign_partitions(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Step two of a move: each released partition gets its new owner and leader epoch + 1.
    An item whose topic was deleted (or re-created) meanwhile, or that is no longer released, is
    answered with an error and left alone."""
    out: list[dict[str, Any]] = []
    given: dict[str, dict[int, tuple[int, int]]] = {}
    for item in args["partitions"]:
        name, index, to = item["topic"], int(item["partition"]), int(item["to"])
        res: dict[str, Any] = {"topic": name, "partition": index}
        out.append(res)
        topic = b.state.topics.get(name)
        part = None if topic is None else topic.partition(index)
        if topic is None or part is None or str(topic.topic_id) != item["id"]:
            res.update(
                _error(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"{name}-{index} was deleted during its move.")
            )
        elif part.leader >= 0 or not 0 <= to < ctx.workers:
            res.update(_error(ErrorCode.REASSIGNMENT_IN_PROGRESS, f"{name}-{index} was placed meanwhile."))
        else:
            given.setdefault(name, {})[index] = (to, part.leader_epoch + 1)
            res.update({**_ok(), "leader_epoch": part.leader_epoch + 1})
    for name, leaders in given.items():
        _set_leaders(b, b.state.topics[name], leaders)
    return {"partitions": out}


def _alter_scram_credentials(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """AlterUserScramCredentials (scram_control.py): one record per user altered, results per user."""
    records, results = alter_credentials(
        b.state.scram_credentials, list(args["deletions"]), list(args["upsertions"])
    )
    b.add_all(records)
    return {"results": results}


def _create_acls(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """CreateAcls (acl_control.py): one record per new binding, one result per creation."""
    creations = [AclBinding.from_record(dict(c)) for c in args["creations"]]
    records, results = create_acls(b.state.acls, creations, ctx.new_acl_id)
    b.add_all(records)
    return {"results": results}


def _delete_acls(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """DeleteAcls (acl_control.py): one record per binding removed, one result per filter."""
    filters = [AclBindingFilter.from_record(dict(f)) for f in args["filters"]]
    records, results = delete_acls(b.state.acls, filters)
    b.add_all(records)
    return {"results": results}


def _alter_client_metrics(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """Incremental/whole alteration of client metrics resources (client_metrics_control.py)."""
    records, results = alter_client_metrics(
        b.state.client_metrics, list(args["resources"]), bool(args.get("validate_only", False))
    )
    b.add_all(records)
    return {"resources": results}


def _alter_client_quotas(b: _Builder, args: Mapping[str, Any], ctx: OpContext) -> dict[str, Any]:
    """AlterClientQuotas (quota_control.py): one record per key changed, one result per entry."""
    records, results = alter_client_quotas(
        b.state.client_quotas, list(args["entries"]), bool(args.get("validate_only", False))
    )
    b.add_all(records)
    return {"results": results}


_OPS: Final[Mapping[str, Callable[[_Builder, Mapping[str, Any], OpContext], dict[str, Any]]]] = {
    "create_topics": _create_topics,
    "delete_topics": _delete_topics,
    "create_partitions": _create_partitions,
    "alter_configs": _alter_configs,
    "alter_broker_configs": _alter_broker_configs,
    "allocate_producer_ids": _allocate_producer_ids,
    "move_partitions": _move_partitions,
    "assign_partitions": _assign_partitions,
    "alter_scram_credentials": _alter_scram_credentials,
    "create_acls": _create_acls,
    "delete_acls": _delete_acls,
    "alter_client_metrics": _alter_client_metrics,
    "alter_client_quotas": _alter_client_quotas,
}
OPS: Final = frozenset(_OPS)


def handle(state: ControllerState, op: str, args: Mapping[str, Any], ctx: OpContext) -> Outcome:
    """Run one op against ``state``. Never raises for bad input: a request the controller cannot
    make sense of is answered ``{"error_code": 42 (INVALID_REQUEST), "error_message": ...}``."""
    fn = _OPS.get(op)
    b = _Builder(state)
    if fn is None:
        return b.outcome(_error(ErrorCode.INVALID_REQUEST, f"unknown controller op {op!r}"))
    try:
        result = fn(b, args, ctx)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # Nothing of a malformed request is applied.
        return _Builder(state).outcome(_error(ErrorCode.INVALID_REQUEST, f"malformed {op} request: {exc!r}"))
    return b.outcome(result)
