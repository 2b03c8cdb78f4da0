"""Quota math (broker/client_quota_manager.py): Kafka's sampled Rate and throttle time, the
precedence of the eight entity levels, who shares a budget, and the per-worker share."""

from __future__ import annotations

import pytest

from shardbroker.broker.client_quota_manager import (
    LEASE,
    MAX_SENSORS,
    ClientQuotaManager,
    ConnectionQuotas,
    Sensor,
    resolve,
)


def test_rate_is_over_num_minus_one_windows_from_the_start() -> None:
    sensor = Sensor(samples=11, window=1.0, now=0.0)
    sensor.record(1000.0, 0.5)
    # A fresh sensor is judged over the whole 10 s, as Kafka pads a young one.
    assert sensor.measure(0.5) == pytest.approx(100.0)


def test_rate_slides_in_tenths_of_a_window() -> None:
    sensor = Sensor(samples=3, window=1.0, now=0.0)
    for tenth in range(50):
        sensor.record(10.0, (tenth + 0.5) / 10)  # mid-slice: no float rounding at the edges
    # Horizon 2 s: the last 20 tenths, the current one included (3.0 .. 4.9).
    assert sensor.measure(4.95) == pytest.approx(200 / 2.0)
    assert sensor.measure(5.25) == pytest.approx(170 / 2.0)
    # Everything has left the horizon; a gap longer than it clears at once.
    assert sensor.measure(7.5) == 0.0
    sensor.record(50.0, 100.0)
    assert sensor.measure(100.0) == pytest.approx(25.0)
    # A clock that goes back charges the current slice.
    sensor.record(50.0, 99.0)
    assert sensor.measure(100.0) == pytest.approx(50.0)


def test_throttle_time_is_until_the_rate_is_back_within_the_bound() -> None:
    sensor = Sensor(samples=11, window=1.0, now=0.0, bound=100.0)
    # 2000 in 10 s over a bound of 100/s: within again when the burst leaves the window, after
    # 10 s (Kafka's (rate - bound) / bound * window says the same for one burst).
    assert sensor.charge(2000.0, 0.0) == 10_000
    assert sensor.throttled_ms == 10_000
    sensor.bound = 200.0
    assert sensor.charge(0.0, 0.0) == 0
    # Silent for the throttle time, the burst has left the window.
    sensor.bound = 100.0
    assert sensor.charge(0.0, 10.0) == 0
    # A steady 100/s for 10 s, then 300 more: the oldest seconds leave the window one by one
    # (at 10.0, 11.0, 12.0 s): within again after 2.5 s (Kafka's formula: 3 s).
    steady = Sensor(samples=11, window=1.0, now=0.0, bound=100.0)
    for second in range(10):
        assert steady.charge(100.0, second + 0.05) == 0
    assert steady.charge(300.0, 9.5) == 2500


LEVELS = [
    ((("client-id", "c"), ("user", "u")), ("u", "c")),
    ((("client-id", None), ("user", "u")), ("u", "c")),
    ((("user", "u"),), ("u", "")),
    ((("client-id", "c"), ("user", None)), ("u", "c")),
    ((("client-id", None), ("user", None)), ("u", "c")),
    ((("user", None),), ("u", "")),
    ((("client-id", "c"),), ("", "c")),
    ((("client-id", None),), ("", "c")),
]


def test_precedence_is_kafkas_eight_levels() -> None:
    quotas = {entity: {"producer_byte_rate": float(i + 1)} for i, (entity, _) in enumerate(LEVELS)}
    for i, (entity, tags) in enumerate(LEVELS):
        assert resolve(quotas, "producer_byte_rate", "u", "c") == (float(i + 1), tags), entity
        del quotas[entity]
    assert resolve(quotas, "producer_byte_rate", "u", "c") is None


def test_each_key_resolves_on_its_own() -> None:
    quotas = {
        (("user", "u"),): {"producer_byte_rate": 1.0},
        (("client-id", None),): {"consumer_byte_rate": 2.0},
    }
    assert resolve(quotas, "producer_byte_rate", "u", "c") == (1.0, ("u", ""))
    assert resolve(quotas, "consumer_byte_rate", "u", "c") == (2.0, ("", "c"))
    assert resolve(quotas, "request_percentage", "u", "c") is None


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _charge(manager: ClientQuotaManager, key: str, user: str, client_id: str, value: float) -> int:
    if key == "request_percentage":
        return ConnectionQuotas(manager, user).busy(client_id, value / 100)
    sensors = manager.client(user, client_id)
    sensor = sensors.produce if key == "producer_byte_rate" else sensors.fetch
    return 0 if sensor is None else sensor.charge(value, manager.clock())


def test_a_user_quota_is_one_budget_for_all_its_client_ids_divided_by_workers() -> None:
    clock = Clock()
    manager = ClientQuotaManager(workers=2, samples=11, window=1.0, clock=clock)
    assert not manager.enabled
    manager.update({(("user", "u"),): {"producer_byte_rate": 2000.0}})
    assert manager.enabled
    # This worker's share: 1000/s, over 10 windows at first = 10,000 bytes before a throttle.
    assert _charge(manager, "producer_byte_rate", "u", "a", 6000) == 0
    assert _charge(manager, "producer_byte_rate", "u", "b", 4000) == 0
    # Over by 1000 bytes, all of them in the slice of t=0: back within when it leaves, at 10 s.
    assert _charge(manager, "producer_byte_rate", "u", "a", 1000) == 10_000
    # Another user has no quota; nor has the same client id under another user.
    assert _charge(manager, "producer_byte_rate", "v", "a", 10**9) == 0
    assert manager.client("v", "a").produce is None


def test_default_quotas_give_each_client_id_its_own_budget() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("client-id", None),): {"producer_byte_rate": 100.0}})
    assert _charge(manager, "producer_byte_rate", "ANONYMOUS", "a", 1000) == 0
    assert _charge(manager, "producer_byte_rate", "ANONYMOUS", "b", 1000) == 0
    assert _charge(manager, "producer_byte_rate", "ANONYMOUS", "a", 1) > 0


def test_a_changed_quota_keeps_the_usage_and_stale_sensors_are_told() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("client-id", "c"),): {"consumer_byte_rate": 100.0}})
    before = manager.client("u", "c")
    assert _charge(manager, "consumer_byte_rate", "u", "c", 2000) > 0
    # Raising the quota applies to the usage so far (sensors are kept, as Kafka's).
    manager.update({(("client-id", "c"),): {"consumer_byte_rate": 10_000.0}})
    assert manager.generation != before.generation
    assert _charge(manager, "consumer_byte_rate", "u", "c", 5000) == 0
    manager.update({})
    assert not manager.enabled
    assert manager.client("u", "c").fetch is None


def test_request_percentage_throttle_is_capped_at_one_window() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("user", None),): {"request_percentage": 1.0}})
    assert _charge(manager, "request_percentage", "u", "c", 10_000.0) == 1000


def test_sensors_stay_bounded_whatever_client_ids_are_sent() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("client-id", None),): {"producer_byte_rate": 100.0}})
    for i in range(MAX_SENSORS + 10):
        manager.client("u", str(i))
    assert len(manager.sensors) <= MAX_SENSORS


def test_a_connection_spends_a_leased_credit_without_asking_and_is_throttled_all_the_same() -> None:
    clock = Clock()
    manager = ClientQuotaManager(workers=1, samples=11, window=1.0, clock=clock)
    manager.update({(("client-id", "c"),): {"producer_byte_rate": 1000.0}})
    conn = ConnectionQuotas(manager, "u")
    assert conn.produce("c", 100) == 0
    sensor = conn.sensors.produce
    assert sensor is not None
    # The first request took its bytes and a lease of LEASE (0.2 %) of the 10,000-byte budget.
    assert sensor.measure(0.0) == pytest.approx((100 + 10_000 * LEASE) / 10)
    assert conn.produce("c", 5) == 0 and conn.produce("c", 5) == 0
    assert sensor.measure(0.0) == pytest.approx((100 + 10_000 * LEASE) / 10)  # untouched
    # Spending on: the sensor sees it within one lease, and throttles past the budget.
    throttles = [conn.produce("c", 100) for _ in range(150)]
    first = throttles.index(next(t for t in throttles if t))
    assert 97 <= first <= 100
    # A new quota (a new generation) drops the credit: the next request asks the sensor again.
    manager.update({(("client-id", "c"),): {"producer_byte_rate": 10**9}})
    assert conn.produce("c", 100) == 0
    assert conn.sensors.produce is sensor and sensor.bound == 10**9
