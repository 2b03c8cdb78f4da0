"""KIP-714 client telemetry on one worker: client instances, their subscriptions, push rules.

Kafka's ClientMetricsManager, per worker (a Kafka broker keeps the same state per broker):

- GetTelemetrySubscriptions with the zero uuid gets a new random client instance id; any other
  id names the instance (created when first seen, also by a push: the client may push to another
  worker than the one it asked, as to another broker).
- An instance's subscription is the union of the ``metrics`` of every client metrics resource
  whose ``match`` selectors all fully match the client's attributes (client id, software name and
  version from ApiVersions v3+, source address and port, instance id), with the smallest
  ``interval.ms`` (default 300,000 when none matches: the client is told to push nothing, and to
  ask again after that long). ``metrics=*`` in any matching resource makes it every metric (one
  empty prefix on the wire). When the resources change, the next request of each instance
  recomputes its subscription.
- The subscription id is a CRC-32C of the sorted prefixes and the interval, XORed with the
  instance id's Java ``hashCode`` (KIP-714: it changes when the subscription does). It depends
  on nothing else, so every worker gives an instance the same id and a push to any worker is
  checked alike.
- Throttling (THROTTLING_QUOTA_EXCEEDED): a GetTelemetrySubscriptions sooner than one push
  interval after the instance's last request, unless its last push failed with
  UNKNOWN_SUBSCRIPTION_ID or UNSUPPORTED_COMPRESSION_TYPE (it must re-subscribe at once); a push
  sooner than one interval after the last push, unless it is the first push after a
  GetTelemetrySubscriptions (clients jitter the interval) or it says ``terminating``.
- A push is checked in Kafka's order: after a terminating push nothing more is accepted
  (INVALID_REQUEST), then the throttle, then the subscription id (UNKNOWN_SUBSCRIPTION_ID), the
  compression type (UNSUPPORTED_COMPRESSION_TYPE), then the size against ``telemetry.max.bytes``
  (TELEMETRY_TOO_LARGE). The payload is decoded only after all of them (telemetry_payload.py).

State is bounded as Kafka's: at most 16,384 instances (least recently used go first), each
forgotten ``max(60 s, 3 x its push interval)`` after its last request. Unlike Kafka, an
instance is not dropped when its connection closes (its series expire with it instead).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from shardbroker.broker.topic_regex import TopicRegex, TopicRegexError, compile_topic_regex
from shardbroker.metadata.client_metrics import (
    ALL_METRICS,
    INTERVAL_MS_DEFAULT,
    MATCH,
    ClientMetricsConfigError,
    Subscription,
    parse_subscription,
    split_list,
)
from shardbroker.protocol.compression import CompressionType
from shardbroker.protocol.crc import crc32c
from shardbroker.protocol.errors import ErrorCode

__all__ = [
    "ACCEPTED_COMPRESSION_TYPES",
    "ClientAttributes",
    "ClientInstance",
    "ClientMetricsManager",
    "TelemetryRefusal",
    "check_match_value",
    "subscription_id",
]

log = logging.getLogger(__name__)

#: Kafka's order of preference (clients take the first they support).
ACCEPTED_COMPRESSION_TYPES: Final = (
    CompressionType.ZSTD,
    CompressionType.LZ4,
    CompressionType.GZIP,
    CompressionType.SNAPPY,
)
#: Kafka's ClientMetricsManager.CACHE_MAX_SIZE and DEFAULT_CACHE_EXPIRY_MS.
MAX_INSTANCES: Final = 16_384
CACHE_EXPIRY_MS: Final = 60_000
_NEVER: Final = -(1 << 62)
_COMPRESSION_IDS: Final = frozenset(int(c) for c in CompressionType)
_INT32: Final = 1 << 32


class TelemetryRefusal(Exception):
    """A telemetry request refused with a Kafka error (answered, never fatal)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = code


def check_match_value(value: str) -> None:
    """Compile every selector's regex of a ``match`` value (RE2 syntax, as Kafka's RE2/J);
    a bad one is INVALID_CONFIG "Illegal client matching pattern", as Kafka answers."""
    for item in split_list(value):
        parts = item.split("=")
        try:
            if len(parts) == 2:
                compile_topic_regex(parts[1].strip())
        except TopicRegexError:
            raise ClientMetricsConfigError(
                ErrorCode.INVALID_CONFIG, f"Illegal client matching pattern: {item}"
            ) from None


def _java_hash(instance_id: uuid.UUID) -> int:
    """Kafka's ``Uuid.hashCode``: the XOR of the 64-bit halves, folded to 32 bits."""
    h = (instance_id.int >> 64) ^ (instance_id.int & ((1 << 64) - 1))
    return ((h >> 32) ^ h) & 0xFFFFFFFF


def subscription_id(metrics: tuple[str, ...], interval_ms: int, instance_id: uuid.UUID) -> int:
    """The int32 id of an instance's subscription (see the module docstring)."""
    crc = crc32c(f"[{', '.join(metrics)}]{interval_ms}".encode())
    value = crc ^ _java_hash(instance_id)
    return value - _INT32 if value >= 1 << 31 else value


@dataclass(frozen=True, slots=True)
class ClientAttributes:
    """What ``match`` selectors look at, besides the instance id (None: not known)."""

    client_id: str | None
    software_name: str | None
    software_version: str | None
    source_address: str | None
    source_port: str | None

    def of(self, instance_id: uuid.UUID) -> dict[str, str | None]:
        return {
            "client_instance_id": str(instance_id),
            "client_id": self.client_id,
            "client_software_name": self.software_name,
            "client_software_version": self.software_version,
            "client_source_address": self.source_address,
            "client_source_port": self.source_port,
        }


@dataclass(slots=True)
class ClientInstance:
    instance_id: uuid.UUID
    attributes: ClientAttributes
    subscription_id: int
    subscription_version: int
    metrics: tuple[str, ...]
    push_interval_ms: int
    last_get_ms: int = _NEVER
    last_push_ms: int = _NEVER
    last_seen_ms: int = 0
    terminating: bool = False
    last_error: ErrorCode = ErrorCode.NONE

    def may_get(self, now: int) -> bool:
        if now - max(self.last_get_ms, self.last_push_ms) >= self.push_interval_ms:
            self.last_get_ms = now
            return True
        return False

    def may_push(self, now: int) -> bool:
        ok = self.last_get_ms > self.last_push_ms or now - self.last_push_ms >= self.push_interval_ms
        if ok:
            self.last_push_ms = now
        return ok

    def expires_at(self) -> int:
        return self.last_seen_ms + max(CACHE_EXPIRY_MS, 3 * self.push_interval_ms)


_Compiled = tuple[Subscription, tuple[tuple[str, TopicRegex], ...]]


class ClientMetricsManager:
    """The instances of one worker and the subscriptions of its newest metadata image.
    ``on_forget`` is called with each instance dropped (expired or evicted)."""

    def __init__(
        self,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        on_forget: Callable[[ClientInstance], None] = lambda _: None,
        max_instances: int = MAX_INSTANCES,
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._on_forget = on_forget
        self._max_instances = max_instances
        self.instances: OrderedDict[uuid.UUID, ClientInstance] = OrderedDict()
        self._resources: Mapping[str, Mapping[str, str]] = {}
        self._subscriptions: list[_Compiled] = []
        self.version = 0

    def now_ms(self) -> int:
        return int(self._clock() * 1000)

    def update(self, resources: Mapping[str, Mapping[str, str]]) -> None:
        """Take the image's client metrics resources; a change makes every instance's next
        request recompute its subscription."""
        if resources is self._resources or resources == self._resources:
            self._resources = resources
            return
        compiled: list[_Compiled] = []
        for name, configs in sorted(resources.items()):
            try:
                check_match_value(configs.get(MATCH, ""))
                sub = parse_subscription(name, configs)
            except ClientMetricsConfigError as exc:  # a log written by another version
                log.warning("client metrics resource %r ignored: %s", name, exc)
                continue
            compiled.append((sub, tuple((attr, compile_topic_regex(rx)) for attr, rx in sub.match)))
        self._resources = resources
        self._subscriptions = compiled
        self.version += 1

    def _subscribe(self, instance_id: uuid.UUID, attributes: ClientAttributes) -> ClientInstance:
        values = attributes.of(instance_id)
        interval = None
        metrics: set[str] = set()
        for sub, selectors in self._subscriptions:
            if all((v := values[attr]) is not None and rx.matches(v) for attr, rx in selectors):
                metrics.update(sub.metrics)
                interval = sub.interval_ms if interval is None else min(interval, sub.interval_ms)
        prefixes = (ALL_METRICS,) if ALL_METRICS in metrics else tuple(sorted(metrics))
        interval = interval if interval is not None else INTERVAL_MS_DEFAULT
        return ClientInstance(
            instance_id=instance_id,
            attributes=attributes,
            subscription_id=subscription_id(prefixes, interval, instance_id),
            subscription_version=self.version,
            metrics=prefixes,
            push_interval_ms=interval,
        )

    def instance(self, instance_id: uuid.UUID, attributes: ClientAttributes, now: int) -> ClientInstance:
        """The instance (created, or re-subscribed after a change of the resources), marked seen."""
        inst = self.instances.get(instance_id)
        if inst is None or inst.subscription_version != self.version:
            fresh = self._subscribe(instance_id, inst.attributes if inst is not None else attributes)
            if inst is not None:
                fresh.last_get_ms, fresh.last_push_ms = inst.last_get_ms, inst.last_push_ms
                fresh.terminating, fresh.last_error = inst.terminating, inst.last_error
            inst = self.instances[instance_id] = fresh
        self.instances.move_to_end(instance_id)
        inst.last_seen_ms = now
        self.expire(now)
        return inst

    def new_instance_id(self) -> uuid.UUID:
        while True:
            candidate = uuid.uuid4()
            if candidate not in self.instances:
                return candidate

    def expire(self, now: int) -> None:
        """Forget instances unseen for their expiry time (oldest first) and any beyond the cap."""
        while self.instances:
            oldest = next(iter(self.instances.values()))
            if len(self.instances) <= self._max_instances and oldest.expires_at() > now:
                break
            del self.instances[oldest.instance_id]
            self._on_forget(oldest)

    def get_subscriptions(self, instance_id: uuid.UUID, attributes: ClientAttributes) -> ClientInstance:
        """GetTelemetrySubscriptions' checks; the instance to answer with, or TelemetryRefusal."""
        now = self.now_ms()
        if instance_id.int == 0:
            instance_id = self.new_instance_id()
        inst = self.instance(instance_id, attributes, now)
        if not inst.may_get(now) and inst.last_error not in (
            ErrorCode.UNKNOWN_SUBSCRIPTION_ID,
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
        ):
            raise TelemetryRefusal(
                ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                f"Request from the client [{instance_id}] arrived before the next push interval time",
            )
        inst.last_error = ErrorCode.NONE
        return inst

    def check_push(
        self,
        instance_id: uuid.UUID,
        attributes: ClientAttributes,
        subscription: int,
        terminating: bool,
        compression: int,
        size: int,
    ) -> ClientInstance:
        """PushTelemetry's checks before any decoding (Kafka's order); raises TelemetryRefusal
        (and remembers its error) or returns the instance."""
        if instance_id.int == 0 or instance_id == _RESERVED_METADATA_ID:
            raise TelemetryRefusal(
                ErrorCode.INVALID_REQUEST,
                f"Invalid request from the client [{instance_id}], invalid client instance id",
            )
        now = self.now_ms()
        inst = self.instance(instance_id, attributes, now)
        try:
            self._check_push(inst, subscription, terminating, compression, size, now)
        except TelemetryRefusal as exc:
            inst.last_error = exc.error_code
            raise
        finally:
            inst.terminating = terminating
        return inst

    def _check_push(
        self,
        inst: ClientInstance,
        subscription: int,
        terminating: bool,
        compression: int,
        size: int,
        now: int,
    ) -> None:
        who = inst.instance_id
        if inst.terminating:
            raise TelemetryRefusal(
                ErrorCode.INVALID_REQUEST,
                f"Client [{who}] sent the previous request with state terminating to TRUE, "
                "can not accept any requests after that",
            )
        if not inst.may_push(now) and not terminating:
            raise TelemetryRefusal(
                ErrorCode.THROTTLING_QUOTA_EXCEEDED,
                f"Request from the client [{who}] arrived before the next push interval time",
            )
        if subscription != inst.subscription_id:
            raise TelemetryRefusal(
                ErrorCode.UNKNOWN_SUBSCRIPTION_ID, f"Unknown client subscription id for the client [{who}]"
            )
        if compression not in _COMPRESSION_IDS:
            raise TelemetryRefusal(
                ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                f"Unknown compression type [{compression}] is received in telemetry request from [{who}]",
            )
        if size > self.max_bytes:
            raise TelemetryRefusal(
                ErrorCode.TELEMETRY_TOO_LARGE,
                f"Telemetry request from [{who}] is larger than the maximum allowed size [{self.max_bytes}]",
            )


#: Kafka's Uuid.RESERVED: the zero uuid and Uuid.METADATA_TOPIC_ID (0...01).
_RESERVED_METADATA_ID: Final = uuid.UUID(int=1)
