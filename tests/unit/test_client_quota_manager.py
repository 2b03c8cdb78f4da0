"""Quota math (broker/client_quota_manager.py): Kafka's sampled Rate and throttle time, the
precedence of the eight entity levels, who shares a budget, and the per-worker share."""

from __future__ import annotations

import pytest

from shardbroker.broker.client_quota_manager import ClientQuotaManager, Rate, resolve


def test_rate_counts_at_least_num_minus_one_windows() -> None:
    rate = Rate(samples=11, window=1.0, now=0.0)
    rate.record(1000.0, 0.5)
    # A fresh sensor: 0.5 s elapsed, counted as 10 whole windows -> 1000 / 10.5 s.
    assert rate.window_size(0.5) == pytest.approx(10.5)
    assert rate.measure(0.5) == pytest.approx(1000 / 10.5)


def test_rate_over_a_full_history_and_expiry() -> None:
    rate = Rate(samples=3, window=1.0, now=0.0)
    for t in range(10):
        rate.record(100.0, float(t))
    # Live samples started at 7, 8, 9: 300 bytes over 9.5 - 7 = 2.5 s.
    assert rate.total(9.5) == 300.0
    assert rate.measure(9.5) == pytest.approx(300 / 2.5)
    # Samples older than samples x window no longer count.
    assert rate.total(50.0) == 0.0


def test_throttle_time_is_kafkas_formula() -> None:
    rate = Rate(samples=11, window=1.0, now=0.0)
    rate.record(2000.0, 0.0)
    # rate = 2000 / 10 s = 200/s over a bound of 100/s: (200 - 100) / 100 * 10 s = 10 s.
    assert rate.throttle_ms(100.0, 0.0) == 10_000
    assert rate.throttle_ms(200.0, 0.0) == 0
    # A steady 100/s, then a burst: the throttle is how long silence brings the rate back.
    steady = Rate(samples=11, window=1.0, now=0.0)
    for t in range(30):
        steady.record(100.0, float(t))
    steady.record(1000.0, 30.0)
    window, rate_now = steady.window_size(30.0), steady.measure(30.0)
    assert window == pytest.approx(10.0)
    assert steady.throttle_ms(100.0, 30.0) == round((rate_now - 100) / 100 * window * 1000) == 10_000


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


def test_a_user_quota_is_one_budget_for_all_its_client_ids_divided_by_workers() -> None:
    clock = Clock()
    manager = ClientQuotaManager(workers=2, samples=11, window=1.0, clock=clock)
    assert not manager.enabled
    manager.update({(("user", "u"),): {"producer_byte_rate": 2000.0}})
    assert manager.enabled
    # This worker's share: 1000/s, over 10 windows at first = 10,000 bytes before a throttle.
    assert manager.record("producer_byte_rate", "u", "a", 6000) == 0
    assert manager.record("producer_byte_rate", "u", "b", 4000) == 0
    assert manager.record("producer_byte_rate", "u", "a", 1000) == 1000  # (1100 - 1000) / 1000 * 10 s
    # Another user has no quota; nor has the same client id under another user.
    assert manager.record("producer_byte_rate", "v", "a", 10**9) == 0


def test_default_quotas_give_each_client_id_its_own_budget() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("client-id", None),): {"producer_byte_rate": 100.0}})
    assert manager.record("producer_byte_rate", "ANONYMOUS", "a", 1000) == 0
    assert manager.record("producer_byte_rate", "ANONYMOUS", "b", 1000) == 0
    assert manager.record("producer_byte_rate", "ANONYMOUS", "a", 1) > 0


def test_unrecord_and_a_changed_quota() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("client-id", "c"),): {"consumer_byte_rate": 100.0}})
    assert manager.record("consumer_byte_rate", "u", "c", 2000) > 0
    manager.unrecord("consumer_byte_rate", "u", "c", 2000)
    assert manager.record("consumer_byte_rate", "u", "c", 500) == 0
    # Raising the quota applies to the usage so far (sensors are kept, as Kafka's).
    manager.update({(("client-id", "c"),): {"consumer_byte_rate": 10_000.0}})
    assert manager.record("consumer_byte_rate", "u", "c", 5000) == 0
    manager.update({})
    assert not manager.enabled


def test_request_percentage_throttle_is_capped_at_one_window() -> None:
    manager = ClientQuotaManager(workers=1, clock=Clock())
    manager.update({(("user", None),): {"request_percentage": 1.0}})
    assert manager.record("request_percentage", "u", "c", 10_000.0) == 1000
