"""Client quota enforcement on one worker (Kafka's ClientQuotaManager, KIP-13/KIP-55/KIP-219).

Which quota applies: for each key separately, the most specific entity that has it, in Kafka's
order (``resolve``): /config/users/<user>/clients/<client-id>, /users/<user>/clients/<default>,
/users/<user>, /users/<default>/clients/<client-id>, /users/<default>/clients/<default>,
/users/<default>, /clients/<client-id>, /clients/<default>. Usage is shared by everyone the
matched entity covers, as Kafka's metric tags: a quota on /users/alice is one budget for all of
alice's client ids; /users/<default> is one budget per user; /clients/<default> one per client id.
The user is the connection's principal name (``ANONYMOUS`` without authentication).

How much: the bytes (or handler time, as percent-seconds) of the last ``(quota.window.num - 1) *
quota.window.size.seconds`` seconds (10 by default), kept in slices of a tenth of a window, over
that time; a new client is counted as if it had been there all along (Kafka pads a young sensor
to ``num - 1`` windows). A request is recorded first, then compared: over the bound, the throttle
is the time until enough of the oldest slices have left the window for the rate to be back at the
bound (a single burst: what Kafka's ``(rate - bound) / bound * window`` says; after steady
traffic, sooner). ``request_percentage`` throttles are capped at one window (Kafka's
RequestQuotaManager); byte-rate ones are not (its ClientQuotaManager).

Why not Kafka's Rate: it sums ``quota.window.num`` whole samples, each begun by the first record
after the previous one ended, over the time since the oldest began (at least ``num - 1``
windows), and throttles by the formula above, which assumes that window keeps growing. Against a
producer offering 3x its quota, a simulation of exactly that (one worker's share of 500 kB/s,
7.5 kB requests, 30 s) lets +3-10 % through (+5-14 % with 3 samples over 10 s), and
confluent-kafka measured +17 % (10 s, 3 samples) and +20 % (30 s, 11 samples) on 2 workers. The
sliding window in tenths with Kafka's formula still simulated +2-7 %; with the throttle computed
from the slices, +0.1-0.6 % (30 s, 11 samples) and +1-3 % (10 s, 3 samples). Measured end to end:
see "Workers" below.

Workers: a quota is per host here, and a host runs several workers that each see part of a
client's traffic (its partitions lead on different workers, or all on one). The workers share
usage: a sensor's slices live in its worker's column of a shared-memory table
(ipc/client_quotas.py; one writer per column, no lock), its bound is the host's, and it adds the
other workers' usage of the same budget, read with numpy once per slice (a tenth of a window)
while the host has used less than 1 / workers of the budget, and at every charge past that (a
consumer reading 50+ MB/s spent a whole 10 MB budget on each worker within one slice when the
others were read only once a slice: 1.78 MB/s against 1 MB/s over 10 s). Dividing
(each worker enforcing ``bound / workers``, the previous design) needed nothing shared but gave
a client whose traffic all lands on one worker 1/workers of its quota; it remains the fallback
for a budget that finds no cell in the table (4,096 a worker, taken back from budgets idle for a
horizon) and for ``controller_mutation_rate`` (admin requests, rare). Measured with
tests/integration/test_client_quotas.py (2 workers, a confluent-kafka producer offering 3 MB/s
of 1 kB records, ``producer_byte_rate`` 1,000,000 on its client id, acknowledged payload bytes
over the run, an unlimited producer beside it on the same partitions, under the bench lock,
2026-12-05): shared, partitions on both workers, 10 s: 0.990-1.007 MB/s (4 runs: median 0.997);
all partitions on worker 0, 10 s: 0.979 and 0.989 MB/s (dividing would give 0.5, by
construction: not measured); the unlimited producer kept its 4.0 MB/s each time. The earlier
divided figures (partitions on both workers): 30 s 1.060 and 1.066 MB/s, 10 s 0.987 and 1.014
MB/s. With ``quota.window.num`` 3 (a 1 MB budget, as large as librdkafka's batches after a
throttle) dividing held 0.68 MB/s: a window's budget should be many requests.

Cost on the produce path: a connection keeps its sensors (asked again only when the quotas or
its client id change) and leases 0.2 % of a budget at a time (``Sensor.lease``), so a Produce
within its credit pays two comparisons and two subtractions; shared memory is written only when
a lease is taken (every ~100 requests at 1 MB/s) and read once per slice. ``python -m perf
client-quotas`` (the in-process request path of perf/bench_request_path.py, one-record Produce,
single-partition path, modes alternated in one run, under the bench lock): 15 runs x 20,000
requests before sharing: no quota 17.10 us of CPU a request, quotas for another client x1.010
(per-run 0.95-1.05), ``producer_byte_rate`` and ``request_percentage`` charged x1.020 (0.98-1.07).
With sharing, 7 runs x 20,000 (2026-12-05): no quota 17.02 us, another client's x1.002
(0.996-1.015), both charged without a shared table x1.024 (1.007-1.039), both charged at 1 MB/s
and 1,000 % through a shared table x1.030 (1.026-1.049): sharing adds about 0.6 %, within the
runs' spread of the unshared figure.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from shardbroker.ipc.client_quotas import UsageCell, WorkerQuotaUsage, budget_key
from shardbroker.metadata.client_quotas import (
    CLIENT_ID,
    CONSUMER_BYTE_RATE,
    CONTROLLER_MUTATION_RATE,
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

__all__ = [
    "ClientQuotaManager",
    "ClientSensors",
    "ConnectionQuotas",
    "ControllerMutations",
    "Sensor",
    "TokenBucket",
    "resolve",
    "slices_of",
]


#: Quota key -> its index in the metrics' quota types (ipc/counters.py QUOTA_TYPES).
_TYPE_INDEX: Final = {
    PRODUCER_BYTE_RATE: 0,
    CONSUMER_BYTE_RATE: 1,
    REQUEST_PERCENTAGE: 2,
    CONTROLLER_MUTATION_RATE: 3,
}
#: Sensors (and memoised resolutions) kept per worker at most.
MAX_SENSORS: Final = 100_000
#: Slices per ``quota.window.size.seconds``: the granularity of the sliding window.
SLICES_PER_WINDOW: Final = 10
#: Share of a sensor's budget (bound x horizon) a connection takes ahead at once (``lease``): the
#: usage a sensor sees runs up to this much ahead of the traffic, per connection.
LEASE: Final = 0.002
#: Throttle times are int32 milliseconds on the wire.
_MAX_THROTTLE_MS: Final = (1 << 31) - 1


def slices_of(samples: int) -> int:
    """Slices of a sensor over ``quota.window.num`` samples (the shared table's cell size)."""
    return max(samples - 1, 1) * SLICES_PER_WINDOW


class Sensor:
    """One budget's usage: bytes (or percent-seconds) per second over the last ``(samples - 1) *
    window`` seconds, in slices of a tenth of a window (see the module docstring), and its bound.
    Times are seconds of a monotonic clock. A running total keeps ``charge`` O(1) but for the
    slices a gap clears.

    With a ``cell`` (ipc/client_quotas.py) the slices live in this worker's column of the shared
    table and the bound is the host's: the other workers' usage of the same budget is read once
    per slice (``_look``, numpy) and counted with this worker's. Without one the bound is this
    worker's share (the manager divides it)."""

    __slots__ = (
        "_cell",
        "_current",
        "_horizon",
        "_k",
        "_others",
        "_others_total",
        "_per_slice",
        "_seen",
        "_slices",
        "_total",
        "bound",
        "share",
        "throttled_ms",
    )

    def __init__(
        self, samples: int, window: float, now: float, bound: float = math.inf, cell: UsageCell | None = None
    ) -> None:
        self._per_slice = SLICES_PER_WINDOW / window
        self._horizon = max(samples - 1, 1) * window
        n = slices_of(samples)
        self._cell = cell
        self._slices: list[float] | memoryview[float] = [0.0] * n if cell is None else cell.values
        self._current = int(now * self._per_slice)
        self._k = self._current % n
        if cell is not None:
            cell.set_current(self._current)
        self._total = 0.0
        #: The other workers' usage per ring position, as of slice ``_seen``, and its sum.
        self._others = [0.0] * n
        self._others_total = 0.0
        self._seen = -1
        self.bound = bound
        #: With a cell: past this share of the budget the others are read at every charge, not
        #: once a slice (1 / workers: no two workers can each spend a whole budget unseen).
        self.share = 1.0
        #: Throttle time handed out, ms (the metrics' per-client series).
        self.throttled_ms = 0

    @property
    def cell(self) -> UsageCell | None:
        return self._cell

    def detach(self) -> None:
        """Give the shared cell back (its usage has left the horizon): private slices from now."""
        self._cell = None
        self._slices = [0.0] * len(self._slices)
        self._total = self._others_total = 0.0
        self._others = [0.0] * len(self._slices)

    def _advance(self, index: int) -> None:
        """Clear the slices that left the horizon, up to slice ``index``."""
        slices = self._slices
        n = len(slices)
        current = self._current
        for j in range(max(current + 1, index - n + 1), index + 1):
            k = j % n
            self._total -= slices[k]
            slices[k] = 0.0
        if index - current >= n:
            self._total = 0.0
        self._current = index
        self._k = index % n
        if self._cell is not None:
            self._cell.set_current(index)

    def _look(self) -> None:
        """Read the other workers' usage (once per slice: they are seen up to a slice late)."""
        assert self._cell is not None
        self._others = others = self._cell.others(self._current)
        self._others_total = sum(others)
        self._seen = self._current

    def charge(self, value: float, now: float) -> int:
        """Record ``value``, then the throttle time in ms: 0 while the rate is within the bound,
        else how long until enough of the oldest slices have left the window for the rate to be
        back at the bound (module docstring). The hot path: no call but this one while the slice
        is the same and the client within its quota."""
        index = int(now * self._per_slice)
        if index > self._current:  # (a clock that went back stays in the current slice)
            self._advance(index)
        if self._cell is not None and (
            self._seen != self._current
            or self._total + self._others_total + value > self.bound * self._horizon * self.share
        ):
            self._look()
        self._slices[self._k] += value
        total = self._total = self._total + value
        excess = total + self._others_total - self.bound * self._horizon
        if excess <= 0:
            return 0
        slices = self._slices
        others = self._others
        n = len(slices)
        slice_seconds = 1 / self._per_slice
        wait = (self._current + 1) * slice_seconds - now  # until the oldest slice leaves
        for i in range(n):
            k = (self._k + 1 + i) % n
            excess -= slices[k] + others[k]
            if excess <= 0:
                break
            wait += slice_seconds
        throttle = min(max(math.ceil(wait * 1000 - 1e-6), 1), _MAX_THROTTLE_MS)  # not before it leaves
        self.throttled_ms += throttle
        return throttle

    def lease(self, value: float, now: float) -> tuple[int, float]:
        """``charge(value)``, and when not throttled, a credit taken ahead: up to ``LEASE`` of the
        horizon's budget, recorded now, that the caller spends without calling again (so a
        connection pays a subtraction per request). Returns (throttle ms, credit granted)."""
        throttle = self.charge(value, now)
        if throttle:
            return throttle, 0.0
        budget = self.bound * self._horizon
        grant = min(budget * LEASE, budget - self._total - self._others_total)
        if grant <= 0:
            return 0, 0.0
        self._slices[self._k] += grant
        self._total += grant
        return 0, grant

    def record(self, value: float, now: float) -> None:
        """Record without a check (a negative value takes back what a throttled Fetch charged)."""
        index = int(now * self._per_slice)
        if index > self._current:
            self._advance(index)
        self._slices[self._k] += value
        self._total += value

    def measure(self, now: float) -> float:
        """The rate over the horizon (the host's, with a cell)."""
        index = int(now * self._per_slice)
        if index > self._current:
            self._advance(index)
        if self._cell is not None and self._seen != self._current:
            self._look()
        return max(self._total + self._others_total, 0.0) / self._horizon

    def max_in_window(self) -> float:
        """The most the budget lets through over the horizon (Kafka's getMaxValueInQuotaWindow)."""
        return self.bound * self._horizon


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


class TokenBucket:
    """``controller_mutation_rate`` (KIP-599): partitions created or deleted per second, as Kafka's
    TokenBucket: a burst of ``bound x controller.quota.window.num x controller.quota.window.size
    .seconds`` partitions, refilled at ``bound`` a second; the throttle is the time the missing
    tokens take to come back."""

    __slots__ = ("_burst_seconds", "_last", "bound", "throttled_ms", "tokens")

    def __init__(self, bound: float, burst_seconds: float, now: float) -> None:
        self.bound = bound
        self._burst_seconds = burst_seconds
        self.tokens = bound * burst_seconds
        self._last = now
        #: Throttle time handed out, ms (the metrics' per-client series).
        self.throttled_ms = 0

    def _refill(self, now: float) -> None:
        self.tokens = min(
            self.bound * self._burst_seconds, self.tokens + max(now - self._last, 0.0) * self.bound
        )
        self._last = now

    def exceeded(self, now: float) -> bool:
        self._refill(now)
        return self.tokens < 0

    def record(self, partitions: float, now: float) -> None:
        self._refill(now)
        self.tokens -= partitions

    def throttle_ms(self, now: float) -> int:
        self._refill(now)
        return 0 if self.tokens >= 0 else min(round(-self.tokens / self.bound * 1000), _MAX_THROTTLE_MS)


class ControllerMutations:
    """One CreateTopics/CreatePartitions/DeleteTopics request's side of KIP-599: ``admit`` each
    topic's partitions; ``strict`` (CreateTopics v6+, CreatePartitions v3+, DeleteTopics v5+)
    refuses a topic while the quota is already exceeded (THROTTLING_QUOTA_EXCEEDED; the one that
    crosses it passes, as Kafka's StrictControllerMutationQuota), older versions are only
    throttled; ``throttle_ms`` is the request's throttle time."""

    __slots__ = ("_bucket", "_clock", "_strict")

    def __init__(self, bucket: TokenBucket | None, strict: bool, clock: Callable[[], float]) -> None:
        self._bucket = bucket
        self._strict = strict
        self._clock = clock

    def admit(self, partitions: int) -> bool:
        bucket = self._bucket
        if bucket is None or partitions <= 0:
            return True
        now = self._clock()
        if self._strict and bucket.exceeded(now):
            return False
        bucket.record(partitions, now)
        return True

    def throttle_ms(self) -> int:
        """The request's throttle time (counted in the bucket's ``throttled_ms``)."""
        bucket = self._bucket
        if bucket is None:
            return 0
        throttle = bucket.throttle_ms(self._clock())
        bucket.throttled_ms += throttle
        return throttle


class ClientSensors:
    """The sensors one (user, client id) is charged to, None where no quota applies; valid while
    the manager's ``generation`` is ``generation`` (a connection keeps its own and asks again
    only when the quotas or its client id change)."""

    __slots__ = ("client_id", "fetch", "generation", "produce", "request")

    def __init__(
        self,
        generation: int,
        client_id: str | None,
        produce: Sensor | None,
        fetch: Sensor | None,
        request: Sensor | None,
    ) -> None:
        self.generation = generation
        self.client_id = client_id
        self.produce = produce
        self.fetch = fetch
        self.request = request


class ConnectionQuotas:
    """One connection's side: its sensors (asked of the manager again only when the quotas or the
    client id change) and the credit it leased from each, so that a request within its credit
    costs a subtraction (the module docstring's cost figure)."""

    __slots__ = (
        "_client_id",
        "_generation",
        "_manager",
        "_produce_credit",
        "_request_credit",
        "_user",
        "sensors",
    )

    def __init__(self, manager: ClientQuotaManager, user: str) -> None:
        self._manager = manager
        self._user = user
        self._generation = -1
        self._client_id: str | None = None
        self.sensors = ClientSensors(-1, None, None, None, None)
        self._produce_credit = 0.0
        self._request_credit = 0.0

    def of(self, client_id: str | None) -> ClientSensors:
        manager = self._manager
        if self._generation != manager.generation or client_id != self._client_id:
            self.sensors = manager.client(self._user, client_id)
            self._generation, self._client_id = manager.generation, client_id
            self._produce_credit = self._request_credit = 0.0
        return self.sensors

    def produce(self, client_id: str | None, size: float) -> int:
        """A Produce's bytes: the throttle time (ms)."""
        sensor = self.of(client_id).produce
        if sensor is None:
            return 0
        credit = self._produce_credit - size
        if credit >= 0:
            self._produce_credit = credit
            return 0
        # What the credit left does not cover; a fresh lease replaces it.
        throttle, self._produce_credit = sensor.lease(-credit, self._manager.clock())
        return throttle

    def produce_request(self, client_id: str | None, size: float, seconds: float) -> int:
        """A Produce's bytes and handler time (``seconds``) at once (the single-partition path):
        the longer throttle. Within both credits: one call, two comparisons, two subtractions."""
        if self._generation != self._manager.generation or client_id != self._client_id:
            self.of(client_id)
        sensors = self.sensors
        throttle = 0
        if sensors.produce is not None:
            credit = self._produce_credit - size
            if credit >= 0:
                self._produce_credit = credit
            else:
                throttle = self.produce(client_id, size)
        if sensors.request is not None:
            credit = self._request_credit - seconds * 100
            if credit >= 0:
                self._request_credit = credit
            else:
                throttle = max(throttle, self.busy(client_id, seconds))
        return throttle

    def busy(self, client_id: str | None, seconds: float) -> int:
        """A request's handler time (``request_percentage``): the throttle time (ms), capped at
        one window (Kafka's RequestQuotaManager)."""
        sensor = self.of(client_id).request
        if sensor is None:
            return 0
        percent = seconds * 100
        credit = self._request_credit - percent
        if credit >= 0:
            self._request_credit = credit
            return 0
        throttle, self._request_credit = sensor.lease(-credit, self._manager.clock())
        return min(throttle, self._manager.max_request_throttle_ms)


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
        mutation_burst_seconds: float = 11.0,
    ) -> None:
        self._channel = channel
        #: ``controller.quota.window.num x controller.quota.window.size.seconds``.
        self.mutation_burst_seconds = mutation_burst_seconds
        self.workers = max(1, workers)
        self.samples = samples
        self.window = window
        self.max_request_throttle_ms = round(window * 1000)
        self.clock = clock
        self.enabled = False
        #: Bumped by every change of quotas: cached ClientSensors of older ones are stale.
        self.generation = 0
        self._quotas: ClientQuotas = {}
        #: (user, client id) -> its sensors, for this generation.
        self._clients: dict[tuple[str, str | None], ClientSensors] = {}
        #: (key, user tag, client-id tag) -> its sensor (usage survives quota changes).
        self.sensors: dict[tuple[str, str, str], Sensor] = {}
        #: (user tag, client-id tag) -> its controller mutation bucket.
        self.buckets: dict[tuple[str, str], TokenBucket] = {}
        #: Throttle ms of sensors and buckets dropped (the totals stay counters), by quota type.
        self._retired = [0] * len(_TYPE_INDEX)
        #: This worker's column of the shared usage table (ipc/client_quotas.py; None: each
        #: worker enforces its share of every quota: `share`), and which sensor holds each cell.
        self.usage: WorkerQuotaUsage | None = None
        self._holders: dict[int, tuple[str, str, str]] = {}

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

    def share(self, usage: WorkerQuotaUsage) -> None:
        """Count usage host-wide through this worker's column of the shared table (before the
        first request)."""
        expected = slices_of(self.samples)
        if usage.slices != expected:
            raise ValueError(f"the shared quota table has {usage.slices} slices a cell, not {expected}")
        self.usage = usage

    # -- quotas --------------------------------------------------------------------------------

    def update(self, quotas: ClientQuotas) -> None:
        """New quotas: resolve again on the next request; sensors (usage so far) are kept, as
        Kafka keeps its sensors when a quota changes."""
        self._quotas = quotas
        self._clients.clear()
        self.generation += 1
        self.enabled = bool(quotas)

    def _sensor(self, key: str, user: str, client_id: str) -> Sensor | None:
        found = resolve(self._quotas, key, user, client_id)
        if found is None:
            return None
        bound, (user_tag, client_tag) = found
        sensor_key = (key, user_tag, client_tag)
        sensor = self.sensors.get(sensor_key)
        if sensor is None:
            if len(self.sensors) >= MAX_SENSORS:  # bounded whatever client ids are sent
                self._drop(list(self.sensors))
            now = self.clock()
            sensor = self.sensors[sensor_key] = Sensor(
                self.samples, self.window, now, cell=self._claim(sensor_key, now)
            )
        sensor.bound = bound if sensor.cell is not None else bound / self.workers
        sensor.share = 1 / self.workers
        return sensor

    def _claim(self, sensor_key: tuple[str, str, str], now: float) -> UsageCell | None:
        """A cell of the shared table for a new sensor (module docstring, "Workers"); when its
        probes are all taken, one whose sensor's usage has left the horizon is taken back; None
        (the budget divided between workers) when there is none either, or no table."""
        usage = self.usage
        if usage is None:
            return None
        key = budget_key(*sensor_key)
        now_slice = int(now * SLICES_PER_WINDOW / self.window)
        cell = usage.claim(key, now_slice)
        if cell is None:
            idle = [pos for pos in usage.idle_cells(key, now_slice) if pos in self._holders]
            if not idle:
                return None
            self._drop([self._holders[idle[0]]])
            cell = usage.claim(key, now_slice, idle=True)
        if cell is not None:
            self._holders[cell.pos] = sensor_key
        return cell

    def _drop(self, keys: list[tuple[str, str, str]]) -> None:
        """Forget these sensors: their throttle time kept in the totals, their cells given back,
        and every connection's sensors resolved again (none keeps charging a dropped one)."""
        for sensor_key in keys:
            sensor = self.sensors.pop(sensor_key)
            self._retired[_TYPE_INDEX[sensor_key[0]]] += sensor.throttled_ms
            cell = sensor.cell
            if cell is not None and self.usage is not None:
                del self._holders[cell.pos]
                self.usage.release(cell.pos)
                sensor.detach()
        self._clients.clear()
        self.generation += 1

    def report(self, top: int) -> tuple[list[int], list[tuple[int, str, str, int]]]:
        """The throttle time handed out (ms): totals by quota type (ipc/counters.py's
        QUOTA_TYPES order), and the ``top`` budgets throttled longest as (type, user tag,
        client-id tag, ms): the metrics' bounded per-client series, published on the tick."""
        totals = list(self._retired)
        ranked: list[tuple[int, int, str, str]] = []
        for (kind, user, client), sensor in self.sensors.items():
            if sensor.throttled_ms:
                totals[_TYPE_INDEX[kind]] += sensor.throttled_ms
                ranked.append((sensor.throttled_ms, _TYPE_INDEX[kind], user, client))
        mutation = _TYPE_INDEX[CONTROLLER_MUTATION_RATE]
        for (user, client), bucket in self.buckets.items():
            if bucket.throttled_ms:
                totals[mutation] += bucket.throttled_ms
                ranked.append((bucket.throttled_ms, mutation, user, client))
        return totals, [(kind, user, client, ms) for ms, kind, user, client in heapq.nlargest(top, ranked)]

    def mutations(self, user: str, client_id: str | None, strict: bool) -> ControllerMutations:
        """The controller mutation quota of one admin request (KIP-599)."""
        found = resolve(self._quotas, CONTROLLER_MUTATION_RATE, user, client_id or "")
        bucket = None
        if found is not None:
            bound = found[0] / self.workers
            bucket = self.buckets.get(found[1])
            if bucket is None:
                if len(self.buckets) >= MAX_SENSORS:
                    self._retired[_TYPE_INDEX[CONTROLLER_MUTATION_RATE]] += sum(
                        b.throttled_ms for b in self.buckets.values()
                    )
                    self.buckets.clear()
                bucket = self.buckets[found[1]] = TokenBucket(
                    bound, self.mutation_burst_seconds, self.clock()
                )
            bucket.bound = bound
        return ControllerMutations(bucket, strict, self.clock)

    def client(self, user: str, client_id: str | None) -> ClientSensors:
        """The sensors of (user, client id) under the current quotas."""
        memo = (user, client_id)
        found = self._clients.get(memo)
        if found is None:
            if len(self._clients) >= MAX_SENSORS:
                self._clients.clear()
            name = client_id or ""
            found = self._clients[memo] = ClientSensors(
                self.generation,
                client_id,
                self._sensor(PRODUCER_BYTE_RATE, user, name),
                self._sensor(CONSUMER_BYTE_RATE, user, name),
                self._sensor(REQUEST_PERCENTAGE, user, name),
            )
        return found
