"""Client quota enforcement on one worker (Kafka's ClientQuotaManager, KIP-13/KIP-55/KIP-219).

Which quota applies: for each key separately, the most specific entity that has it, in Kafka's
order (``resolve``): /config/users/<user>/clients/<client-id>, /users/<user>/clients/<default>,
/users/<user>, /users/<default>/clients/<client-id>, /users/<default>/clients/<default>,
/users/<default>, /clients/<client-id>, /clients/<default>. Usage is shared by everyone the
matched entity covers, as Kafka's metric tags: a quota on /users/alice is one budget for all of
alice's client ids; /users/<default> is one budget per user; /clients/<default> one per client id.
The user is the connection's principal name (``ANONYMOUS`` without authentication).

How much: Kafka's Rate over ``quota.window.num`` samples (default 11) of
``quota.window.size.seconds`` (default 1): the sum of the live samples over the time since the
oldest one began, that time counted as at least ``num - 1`` whole windows (a new client is not
judged on its first milliseconds). A value is recorded first, then the rate compared with the
bound; over it, the throttle time is Kafka's ``(rate - bound) / bound * window`` (how long the
client must stay silent for the rate to come back to the bound), in milliseconds. Byte-rate
throttles are not capped (as Kafka's ClientQuotaManager); ``request_percentage`` throttles are
capped at one window (Kafka's RequestQuotaManager).

Workers: a quota is per host here, and a host runs several workers that each see part of a
client's traffic (its partitions lead on different workers). Each worker enforces
``bound / workers`` of every quota: no worker needs to know what the others saw (no shared
counters to write on every request), and the host-wide rate can never pass the bound. The cost:
a client whose traffic all goes to one worker gets 1/workers of its quota. Measured
(tests/integration/test_client_quotas.py, 2 workers, one confluent-kafka producer writing 4
partitions spread over both, ``producer_byte_rate`` = 1,000,000): see ``SHARE_MEASUREMENT``.

Cost on the produce path (``python -m perf.bench_client_quotas``, same-run A/B against the
request path without quota accounting): see ``COST_MEASUREMENT``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from shardbroker.metadata.client_quotas import (
    CLIENT_ID,
    CONSUMER_BYTE_RATE,
    PRODUCER_BYTE_RATE,
    REQUEST_PERCENTAGE,
    USER,
    ClientQuotas,
    QuotaEntity,
)

if TYPE_CHECKING:
    from shardbroker.broker.controller_channel import ControllerChannel
    from shardbroker.metadata.image import MetadataImage
    from shardbroker.supervision.worker import Worker

__all__ = ["COST_MEASUREMENT", "SHARE_MEASUREMENT", "ClientQuotaManager", "Rate", "resolve"]

SHARE_MEASUREMENT: Final = "pending"
COST_MEASUREMENT: Final = "pending"

#: Sensors (and memoised resolutions) kept per worker at most.
MAX_SENSORS: Final = 100_000
#: Throttle times are int32 milliseconds on the wire.
_MAX_THROTTLE_MS: Final = (1 << 31) - 1


class Rate:
    """Kafka's Rate of a SampledStat: ``samples`` windows of ``window`` seconds (see the module
    docstring). Times are seconds of a monotonic clock."""

    __slots__ = ("_current", "_samples", "_starts", "_values", "_window")

    def __init__(self, samples: int, window: float, now: float) -> None:
        self._samples = samples
        self._window = window
        self._starts = [now] + [-float("inf")] * (samples - 1)
        self._values = [0.0] * samples
        self._current = 0

    def record(self, value: float, now: float) -> None:
        i = self._current
        if now - self._starts[i] >= self._window:
            i = self._current = (i + 1) % self._samples
            self._starts[i] = now
            self._values[i] = 0.0
        self._values[i] += value

    def window_size(self, now: float) -> float:
        """Seconds the rate is measured over: since the oldest live sample began, at least
        ``samples - 1`` windows."""
        expire = self._samples * self._window
        oldest = now
        for start in self._starts:
            if now - start < expire and start < oldest:
                oldest = start
        elapsed = now - oldest
        full = int(elapsed / self._window)
        if full < self._samples - 1:
            elapsed += (self._samples - 1 - full) * self._window
        return max(elapsed, 1e-3)

    def total(self, now: float) -> float:
        expire = self._samples * self._window
        return sum(v for s, v in zip(self._starts, self._values, strict=True) if now - s < expire)

    def measure(self, now: float) -> float:
        return self.total(now) / self.window_size(now)

    def throttle_ms(self, bound: float, now: float) -> int:
        """0 while the rate is within ``bound``; else Kafka's throttle time."""
        window = self.window_size(now)
        rate = self.total(now) / window
        if rate <= bound:
            return 0
        return min(round((rate - bound) / bound * window * 1000), _MAX_THROTTLE_MS)


def resolve(
    quotas: ClientQuotas, key: str, user: str, client_id: str
) -> tuple[float, tuple[str, str]] | None:
    """The bound of ``key`` for (user, client id) and the usage it is shared over as (user tag,
    client-id tag), Kafka's precedence (module docstring); None: no quota."""
    levels: tuple[tuple[QuotaEntity, tuple[str, str]], ...] = (
        (((CLIENT_ID, client_id), (USER, user)), (user, client_id)),
        (((CLIENT_ID, None), (USER, user)), (user, client_id)),
        (((USER, user),), (user, "")),
        (((CLIENT_ID, client_id), (USER, None)), (user, client_id)),
        (((CLIENT_ID, None), (USER, None)), (user, client_id)),
        (((USER, None),), (user, "")),
        (((CLIENT_ID, client_id),), ("", client_id)),
        (((CLIENT_ID, None),), ("", client_id)),
    )
    for entity, tags in levels:
        value = quotas.get(entity, {}).get(key)
        if value is not None:
            return value, tags
    return None


#: What a quota key is measured in per request: bytes, or percent of one core's time.
QUOTA_TYPES: Final = (PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE)


class ClientQuotaManager:
    """One worker's quota sensors. ``enabled`` is False while no quota is set: the request path
    then pays one attribute test. A Service: it reads the first image at start and follows the
    channel's images."""

    def __init__(
        self,
        workers: int,
        samples: int = 11,
        window: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        channel: ControllerChannel | None = None,
    ) -> None:
        self._channel = channel
        self.workers = max(1, workers)
        self.samples = samples
        self.window = window
        self.clock = clock
        self.enabled = False
        self._quotas: ClientQuotas = {}
        #: (key, user, client id) -> (this worker's bound, sensor key) or None: resolved once per image.
        self._resolved: dict[tuple[str, str, str], tuple[float, tuple[str, str, str]] | None] = {}
        #: (key, user tag, client-id tag) -> its rate.
        self._sensors: dict[tuple[str, str, str], Rate] = {}
        #: Throttle time handed out, ms, per (key, user tag, client-id tag) (metrics: top-N).
        self.throttled_ms: dict[tuple[str, str, str], int] = {}

    # -- Service -------------------------------------------------------------------------------

    async def start(self, worker: Worker) -> None:
        if self._channel is not None:
            self.update(self._channel.image.client_quotas)
            self._channel.subscribe(self._on_image)

    async def drain(self) -> None:
        return None

    async def _on_image(self, old: MetadataImage, new: MetadataImage) -> None:
        if new.client_quotas != old.client_quotas:
            self.update(new.client_quotas)

    # -- quotas --------------------------------------------------------------------------------

    def update(self, quotas: ClientQuotas) -> None:
        """New quotas: resolve again on the next request; sensors (usage so far) are kept, as
        Kafka keeps its sensors when a quota changes."""
        self._quotas = quotas
        self._resolved.clear()
        self.enabled = bool(quotas)

    def _sensor_of(self, key: str, user: str, client_id: str) -> tuple[float, tuple[str, str, str]] | None:
        memo = (key, user, client_id)
        try:
            return self._resolved[memo]
        except KeyError:
            pass
        found = resolve(self._quotas, key, user, client_id)
        out = None if found is None else (found[0] / self.workers, (key, *found[1]))
        if len(self._resolved) >= MAX_SENSORS:
            self._resolved.clear()
        self._resolved[memo] = out
        return out

    def record(self, key: str, user: str, client_id: str | None, value: float) -> int:
        """Record ``value`` against the quota of ``key`` that applies; the throttle time (ms)."""
        found = self._sensor_of(key, user, client_id or "")
        if found is None:
            return 0
        bound, sensor_key = found
        now = self.clock()
        rate = self._sensors.get(sensor_key)
        if rate is None:
            if len(self._sensors) >= MAX_SENSORS:
                self._sensors.clear()  # bounded whatever client ids are sent; usage restarts
            rate = self._sensors[sensor_key] = Rate(self.samples, self.window, now)
        rate.record(value, now)
        throttle = rate.throttle_ms(bound, now)
        if throttle and key == REQUEST_PERCENTAGE:
            throttle = min(throttle, round(self.window * 1000))
        if throttle:
            self.throttled_ms[sensor_key] = self.throttled_ms.get(sensor_key, 0) + throttle
        return throttle

    def unrecord(self, key: str, user: str, client_id: str | None, value: float) -> None:
        """Take back a recorded ``value`` (a throttled Fetch answers without its data, as Kafka)."""
        found = self._sensor_of(key, user, client_id or "")
        if found is not None:
            rate = self._sensors.get(found[1])
            if rate is not None:
                rate.record(-value, self.clock())
