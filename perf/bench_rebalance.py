"""Rebalance of a consumer group when an 11th member joins and when one of 11 leaves: KIP-848's
consumer protocol vs the classic one (eager and cooperative-sticky), on a real ``shardbroker
serve`` (issue 19). Starts processes and opens sockets (a broker in a temporary data dir,
confluent-kafka consumers and a producer).

Target (issue 19): "the new protocol's time to a stable assignment <= 0.5x classic cooperative,
and no member stops consuming its unaffected partitions (records/s of the unaffected partitions
during the rebalance >= 0.9x before)".

Run::

    . .venv/bin/activate
    flock /tmp/shardbroker-bench.lock python -m perf.bench_rebalance   # full: JSON on stdout
    python -m perf.bench_rebalance --quick                # small sizes, as the test suite runs it
    pytest perf/bench_rebalance.py --benchmark-enable -s  # full sizes, report printed
    pytest perf/bench_rebalance.py                        # quick mode

What is measured
    A broker (2 workers) with ``group.coordinator.rebalance.protocols=classic,consumer``, a topic
    of ``partitions`` (200) partitions and a confluent-kafka producer writing ``rate`` (2,000)
    records/s of 100 B round-robin over all of them (10/s each, linger.ms=20) the whole time.
    Per protocol, a fresh group of ``members`` (10) confluent-kafka consumers, each polled by a
    thread of its own (consume(500, timeout 0.1 s), counting records per partition in 10 ms
    buckets, nothing else; fetch.wait.max.ms=100 so that each fetches ~10 times a second):

    ``consumer``     group.protocol=consumer (KIP-848; the broker's default assignor, uniform)
    ``cooperative``  group.protocol=classic, partition.assignment.strategy=cooperative-sticky
    ``eager``        group.protocol=classic, partition.assignment.strategy=range

    then ``runs`` (10) times: ``join``, an 11th consumer subscribes; ``leave``, the oldest of
    the 11 is close()d (LeaveGroup, or the consumer protocol's leave heartbeat). Each event
    comes after a quiet time (2.5 heartbeat intervals + 2 s since the previous stable
    assignment) plus a random part of one heartbeat interval: the members' heartbeats fall into
    step after a rebalance, so without it every event would land at the same phase of their
    cycle (a first attempt without it measured the consumer protocol's leave at 0.9 s every run
    with 5 s heartbeats: a fixed phase, not the protocol).

Definitions
    time to stable assignment: from the 11th consumer's subscribe() (join) or the leaving one's
      close() (leave) to the last change of any member's assignment after which every member
      holds some partitions, every partition is held by exactly one member, and nothing changes
      for 1.2 heartbeat intervals + 2 s (the steps of a rebalance come at most one interval
      apart). Assignments are tracked on the client side from on_assign / on_revoke / on_lost
      (incremental for cooperative and consumer, whole for eager); times are time.monotonic().
    unaffected partitions: those with the same owner just before the event and once stable.
    unaffected rate ratio: records consumed from the unaffected partitions (by their owners)
      during the rebalance window [event, event + T] over those consumed in [event - T, event],
      T = the time to stable assignment, at least 1 s (``min_window_s``: shorter windows are
      mostly fetch granularity, 100 ms). ``stopped``: unaffected partitions with no record at
      all in the rebalance window (at 10 records/s each, one would have stopped).
    Figures: median [min..max] of the runs; ratios are of medians (new / classic).

Heartbeat intervals, and which comparison is fair
    Classic members learn of a rebalance from their next Heartbeat (REBALANCE_IN_PROGRESS:
    ``heartbeat.interval.ms``, librdkafka's default 3000), consumer-protocol members get a new
    target assignment in the answer to their next ConsumerGroupHeartbeat
    (``group.consumer.heartbeat.interval.ms``, the broker's, default 5000 and at least
    ``group.consumer.min.heartbeat.interval.ms``, default 5000). librdkafka (confluentinc/
    librdkafka src/rdkafka_cgrp.c, rd_kafka_cgrp_consumer_assignment_done) expedites the
    heartbeat that acknowledges a reconciled assignment ("Assignment Done: in steady state,
    waiting for ack", rd_kafka_cgrp_consumer_expedite_next_heartbeat: sent at once, with a
    backoff only on retries), so a member giving partitions up acknowledges at once; but the
    member receiving them only learns on its own next heartbeat (the coordinator cannot push).
    Two settings, both with 45 s session timeouts (classic session.timeout.ms and
    group.consumer.session.timeout.ms; neither matters for a graceful join or leave):

    ``defaults``      Kafka's: classic 3000 ms, consumer 5000 ms. What one gets out of the box.
    ``equal_1000ms``  both 1000 ms (classic clients' heartbeat.interval.ms; the broker's
                      group.consumer.heartbeat.interval.ms and .min.heartbeat.interval.ms).

    The fair comparison of the protocols is ``equal_1000ms``: both then wait for the same
    cadence, so what differs is the protocol (rounds, revocations, who waits for whom), not a
    default that gives the consumer protocol a 5/3 longer interval. ``defaults`` is what a user
    of Kafka's defaults sees.

Figures, latest (2026-12-05 18:05-18:22 UTC; ``flock /tmp/shardbroker-bench.lock python -m
perf.bench_rebalance --no-defaults``, the broker at 831853c plus the heartbeat grid of
consumer_group.py ``_heartbeat_interval``, committed right after; same VM, other work queued on
the lock; confluent-kafka 2.16.1 / librdkafka 2.16.0; median [min..max] of 10 runs; time to
stable assignment in s; rate = the unaffected partitions' rate ratio; no unaffected partition
stopped in any run; no client or broker errors)::

    equal_1000ms (both 1000 ms)
                  join time              join rate             leave time             leave rate
    consumer      0.758 [0.357..1.016]   0.99 [0.89..1.01]     0.518 [0.066..0.880]   1.00 [0.91..1.03]
    cooperative   1.415 [1.123..1.946]   1.01 [0.97..1.09]     0.702 [0.009..0.962]   0.97 [0.86..1.08]
    eager         0.742 [0.429..0.989]   0.80 [0.77..0.99]     0.600 [0.203..0.944]   0.81 [0.63..0.94]
    new / cooperative  0.54 (join)  0.74 (leave);  new / eager  1.02 (join)  0.86 (leave)

Before the grid (the broker at 2044cb1, 13:55-14:17 UTC, with ``--broker-rev HEAD``, both
settings)::

    defaults (classic 3000 ms, consumer 5000 ms)
                  join time              join rate             leave time             leave rate
    consumer      5.008 [5.005..5.057]   1.00 [0.98..1.01]     4.371 [1.598..4.964]   1.00 [0.98..1.03]
    cooperative   2.338 [0.528..5.664]   1.01 [0.86..1.04]     0.823 [0.118..2.917]   1.00 [0.89..1.05]
    eager         1.396 [0.186..2.698]   0.98 [0.81..1.00]     2.225 [0.274..2.886]   0.99 [0.83..1.06]
    new / cooperative  2.14 (join)  5.31 (leave);  new / eager  3.59 (join)  1.97 (leave)

    equal_1000ms (both 1000 ms)
    consumer      1.007 [1.004..1.013]   0.98 [0.93..1.07]     0.856 [0.330..0.970]   0.98 [0.86..1.10]
    cooperative   1.281 [1.092..3.449]   0.99 [0.96..1.06]     0.553 [0.152..1.014]   1.00 [0.88..1.09]
    eager         0.744 [0.428..0.988]   0.79 [0.76..0.99]     0.598 [0.258..1.003]   0.81 [0.77..1.02]
    new / cooperative  0.79 (join)  1.55 (leave)

Targets: time <= 0.5 x classic cooperative: not met, but close for the join (0.54 with the grid,
0.79 before) and 0.74 for the leave (1.55 before). Unaffected partitions >= 0.9 x: met on the
medians (0.99-1.00, as cooperative) and no unaffected partition ever stopped; the worst single
run of a join was 0.89 (at 1 s windows every protocol's ratio moves by ~+-10 % run to run:
cooperative's worst leave run 0.86).

Why: a consumer-protocol member learns of a new target only from the answer to its own next
heartbeat (the coordinator cannot push). Before the grid, the join took exactly one heartbeat
interval every run: the new member received the partitions at its own second heartbeat (one
interval after its first), and the owners, spread over the interval, had one among them that
had just heartbeat (a broker-side log of one run: 8 owners heartbeat 2-8 ms after the join,
one 17 ms before it, so it learned 1.0 s later). Now the members heartbeat in step on a grid
and the waiting member polls at a tenth of the interval: a join or a leave waits for the next
grid point, uniform in [0, 1) interval, median ~0.5, plus the revocation round trip. Classic
cooperative also waits for one heartbeat (its members are in step after each rebalance) and
then needs its join/sync rounds: its leave is one heartbeat wait plus one round, so 0.5 x its
leave would need the consumer protocol to learn in less than half a heartbeat wait, which only
a shorter interval gives. At Kafka's defaults the consumer protocol heartbeats 5/3 as rarely
as the classic one (5000 vs 3000 ms), which dominates those figures. Eager's rate ratio shows
its revoke-everything pause (0.80).

Quick mode (the test suite: 20 partitions, 4 + 1 members, 400 records/s, only the equal setting
at 500 ms, 2 runs, group.initial.rebalance.delay.ms=0) takes ~35-40 s; its figures are printed,
not judged. The broker runs the working tree's shardbroker/ unless ``--broker-rev REV`` is
given (the figures above used ``--broker-rev HEAD``: the working tree held edits in progress
that did not import).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import confluent_kafka

from perf import broker_load
from perf.sizes import pick, quick
from shardbroker.loadgen.runner import ensure_topic
from tests.integration.broker_process import BrokerProcess

__all__ = ["RebalanceBenchConfig", "Report", "main", "run"]

TARGET_TIME_RATIO: Final = 0.5  # consumer / classic cooperative
TARGET_RATE_RATIO: Final = 0.9  # unaffected partitions, during / before
#: Kafka's defaults: librdkafka's heartbeat.interval.ms and session.timeout.ms (classic), the
#: broker's group.consumer.heartbeat.interval.ms and group.consumer.session.timeout.ms (consumer).
KAFKA_CLASSIC_HEARTBEAT_MS: Final = 3000
KAFKA_CONSUMER_HEARTBEAT_MS: Final = 5000
SESSION_TIMEOUT_MS: Final = 45_000
PROTOCOLS: Final = ("consumer", "cooperative", "eager")
SCENARIOS: Final = ("join", "leave")
BUCKETS_PER_S: Final = 100  # consumed records are counted in 10 ms buckets
TOPIC: Final = "bench-rebalance"


@dataclass(frozen=True)
class Intervals:
    """One heartbeat setting: ``classic_ms`` for the classic clients (heartbeat.interval.ms),
    ``consumer_ms`` for the broker (group.consumer.heartbeat.interval.ms, and its minimum when
    below Kafka's 5000)."""

    name: str
    classic_ms: int
    consumer_ms: int

    def broker_config(self, initial_delay_ms: int) -> dict[str, str | int | bool]:
        config: dict[str, str | int | bool] = {
            "group.coordinator.rebalance.protocols": "classic,consumer",
            "group.initial.rebalance.delay.ms": initial_delay_ms,
            "group.consumer.session.timeout.ms": SESSION_TIMEOUT_MS,
        }
        if self.consumer_ms != KAFKA_CONSUMER_HEARTBEAT_MS:
            config["group.consumer.min.heartbeat.interval.ms"] = min(
                self.consumer_ms, KAFKA_CONSUMER_HEARTBEAT_MS
            )
            config["group.consumer.heartbeat.interval.ms"] = self.consumer_ms
        return config

    def client_config(self, protocol: str) -> dict[str, str | int]:
        if protocol == "consumer":
            # heartbeat.interval.ms, session.timeout.ms and the assignor are the broker's here.
            return {"group.protocol": "consumer"}
        strategy = "cooperative-sticky" if protocol == "cooperative" else "range"
        return {
            "group.protocol": "classic",
            "partition.assignment.strategy": strategy,
            "heartbeat.interval.ms": self.classic_ms,
            "session.timeout.ms": SESSION_TIMEOUT_MS,
        }


DEFAULTS: Final = Intervals("defaults", KAFKA_CLASSIC_HEARTBEAT_MS, KAFKA_CONSUMER_HEARTBEAT_MS)


@dataclass
class RebalanceBenchConfig:
    partitions: int = 200
    members: int = 10  # the group before the join: the join makes it members + 1
    runs: int = 10
    rate: int = 2000  # records/s produced, round-robin over every partition
    record_bytes: int = 100
    workers: int = 2
    equal_ms: int = 1000  # the "equal" setting: both heartbeat intervals
    with_defaults: bool = True  # also measure Kafka's default intervals
    initial_delay_ms: int = 3000  # group.initial.rebalance.delay.ms (only the group's creation)
    margin_s: float = 2.0  # added to the hold and to the quiet time before each event
    min_window_s: float = 1.0
    timeout_s: float = 90.0

    @classmethod
    def for_mode(cls) -> RebalanceBenchConfig:
        """Full sizes, or small ones when ``SHARDBROKER_PERF_QUICK`` is set (perf/sizes.py)."""
        return cls(
            partitions=pick(200, 20),
            members=pick(10, 4),
            runs=pick(10, 2),
            rate=pick(2000, 400),
            equal_ms=pick(1000, 500),
            with_defaults=not quick(),
            initial_delay_ms=pick(3000, 0),
            margin_s=2.0 if not quick() else 0.5,
            timeout_s=pick(90, 30),
        )

    def settings(self) -> list[Intervals]:
        equal = Intervals(f"equal_{self.equal_ms}ms", self.equal_ms, self.equal_ms)
        return [DEFAULTS, equal] if self.with_defaults else [equal]


class RebalanceError(RuntimeError):
    pass


# -- group members ------------------------------------------------------------------------------


class Tracker:
    """Every member's assignment, as its rebalance callbacks left it (incremental for the
    cooperative and consumer protocols, whole for eager), and when it last changed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last_change = 0.0
        self.changes = 0  # state-changing callbacks, all members
        self.errors: list[tuple[float, str]] = []

    def update(self, member: Member, partitions: Sequence[int], add: bool) -> None:
        now = time.monotonic()
        with self.lock:
            before = len(member.assigned)
            if add:
                member.assigned.update(partitions)
            else:
                member.assigned.difference_update(partitions)
            if len(member.assigned) != before:
                self.last_change = now
                self.changes += 1

    def error(self, who: str, err: Any) -> None:
        with self.lock:
            self.errors.append((time.monotonic(), f"{who}: {err}"))


class Member:
    """A confluent-kafka consumer polled by a thread of its own (consume(500, 0.1), counting
    records per partition in 10 ms buckets). ``leave()`` makes the thread close() it."""

    def __init__(
        self, index: int, bootstrap: str, group: str, conf: dict[str, str | int], tracker: Tracker
    ) -> None:
        self.index = index
        self.name = f"m{index}"
        self.tracker = tracker
        self.assigned: set[int] = set()
        self.counts: Counter[tuple[int, int]] = Counter()  # (bucket, partition) -> records
        self.lock = threading.Lock()
        self.subscribed_at = 0.0
        self.close_started = 0.0
        self.closed = threading.Event()
        self._stop = threading.Event()
        self._leave = threading.Event()
        self.failure: BaseException | None = None
        self.consumer = confluent_kafka.Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "client.id": self.name,
                "enable.auto.commit": False,
                "auto.offset.reset": "latest",
                # One fetch per 100 ms per connection rather than one per record or two.
                "fetch.wait.max.ms": 100,
                "fetch.min.bytes": 1_000_000,
                "error_cb": lambda err: tracker.error(self.name, err),
                **conf,
            }
        )
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> float:
        """Start the poll thread; returns when subscribe() was called (monotonic)."""
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.subscribed_at:
            if self.failure is not None or time.monotonic() > deadline:
                raise RebalanceError(f"{self.name} did not subscribe: {self.failure!r}")
            time.sleep(0.001)
        return self.subscribed_at

    def _on_assign(self, _consumer: Any, parts: list[Any]) -> None:
        self.tracker.update(self, [p.partition for p in parts], add=True)

    def _on_revoke(self, _consumer: Any, parts: list[Any]) -> None:
        self.tracker.update(self, [p.partition for p in parts], add=False)

    def _run(self) -> None:
        try:
            self.subscribed_at = time.monotonic()
            self.consumer.subscribe(
                [TOPIC], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
            while not self._stop.is_set():
                msgs = self.consumer.consume(500, 0.1)
                if not msgs:
                    continue
                bucket = int(time.monotonic() * BUCKETS_PER_S)
                batch: Counter[tuple[int, int]] = Counter()
                for msg in msgs:
                    partition = msg.partition()
                    if msg.error() is None and partition is not None:
                        batch[(bucket, partition)] += 1
                    else:
                        self.tracker.error(self.name, msg.error())
                with self.lock:
                    self.counts.update(batch)
        except BaseException as exc:  # reported by the main thread
            self.failure = exc
        finally:
            if self._leave.is_set() or self.failure is not None:
                self.close_started = time.monotonic()
                with contextlib.suppress(Exception):
                    self.consumer.close()  # LeaveGroup / leave heartbeat; on_revoke first
                self.closed.set()

    def request_leave(self) -> None:
        self._leave.set()
        self._stop.set()

    def leave(self) -> float:
        """close() in the poll thread; returns when close() was called (monotonic)."""
        self.request_leave()
        deadline = time.monotonic() + 30
        while not self.close_started:
            if time.monotonic() > deadline:
                raise RebalanceError(f"{self.name} did not start closing")
            time.sleep(0.001)
        return self.close_started

    def finish(self, timeout: float = 30.0) -> None:
        """Closed and its thread gone (closes it here if the thread never started)."""
        if self.thread.ident is None:
            with contextlib.suppress(Exception):
                self.consumer.close()
            self.closed.set()
            return
        self.request_leave()
        self.thread.join(timeout)

    def records(self, partitions: set[int], start: float, end: float) -> int:
        lo, hi = int(start * BUCKETS_PER_S), int(end * BUCKETS_PER_S)
        with self.lock:
            items = list(self.counts.items())
        return sum(n for (b, p), n in items if lo <= b < hi and p in partitions)

    def prune(self, before: float) -> None:
        cut = int(before * BUCKETS_PER_S)
        with self.lock:
            for key in [k for k in self.counts if k[0] < cut]:
                del self.counts[key]


class SteadyProducer:
    """A confluent-kafka producer thread: ``rate`` records/s, round-robin over the partitions,
    10 ms ticks. The producer lives in the thread: destroyed there, before the broker stops."""

    def __init__(self, bootstrap: str, partitions: int, rate: int, record_bytes: int) -> None:
        self.config = {"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": 1}
        self.partitions = partitions
        self.rate = rate
        self.value = b"r" * record_bytes
        self.sent = 0
        self.failed = 0
        self.failure: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1

    def _run(self) -> None:
        tick = 0.01
        start = time.monotonic()
        ticks = 0
        try:
            producer = confluent_kafka.Producer(self.config)
            while not self.stop.is_set():
                ticks += 1
                due = int(ticks * tick * self.rate)
                while self.sent < due:
                    partition = self.sent % self.partitions
                    producer.produce(TOPIC, self.value, partition=partition, on_delivery=self._delivered)
                    self.sent += 1
                producer.poll(0)
                time.sleep(max(0.0, start + ticks * tick - time.monotonic()))
            producer.flush(10)
        except BaseException as exc:  # reported by __exit__
            self.failure = exc

    def __enter__(self) -> SteadyProducer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        if self.failure is not None:
            raise RebalanceError(f"producer failed: {self.failure!r}")


# -- one group, one protocol --------------------------------------------------------------------


def owners(members: Sequence[Member]) -> dict[int, int]:
    return {p: mem.index for mem in members for p in mem.assigned}


def exact_cover(members: Sequence[Member], partitions: int) -> bool:
    """Every partition held by exactly one of ``members``, each of them holding some."""
    held = Counter(p for mem in members for p in mem.assigned)
    return (
        len(held) == partitions
        and all(n == 1 for n in held.values())
        and all(0 <= p < partitions for p in held)
        and all(mem.assigned for mem in members)
    )


def describe(members: Sequence[Member], partitions: int) -> str:
    held = Counter(p for mem in members for p in mem.assigned)
    missing = [p for p in range(partitions) if p not in held]
    doubled = sorted(p for p, n in held.items() if n > 1)
    sizes = {mem.name: len(mem.assigned) for mem in members}
    return f"missing {len(missing)} {missing[:10]}, held twice {doubled[:10]}, sizes {sizes}"


def wait_stable(
    tracker: Tracker, members: Sequence[Member], partitions: int, since: float, hold: float, timeout: float
) -> float:
    """Wait until ``members`` cover every partition exactly once (each holding some) with no
    assignment change for ``hold`` s; return when the last change came (monotonic). A change
    must come after ``since`` (the event)."""
    deadline = since + timeout
    while True:
        now = time.monotonic()
        with tracker.lock:
            ok = exact_cover(members, partitions)
            last = tracker.last_change
        if ok and last >= since and now - last >= hold:
            return last
        for mem in members:
            if mem.failure is not None:
                raise RebalanceError(f"{mem.name} failed: {mem.failure!r}")
        if now > deadline:
            with tracker.lock:
                state = describe(members, partitions)
            raise RebalanceError(f"no stable assignment {timeout:.0f} s after the event: {state}")
        time.sleep(0.01)


@dataclass
class Event:
    scenario: str
    time_s: float
    window_s: float
    unaffected: int
    rate_ratio: float | None
    stopped: int  # unaffected partitions with no record in the rebalance window
    changes: int  # state-changing callbacks from the event to stable
    balance: int  # largest - smallest assignment once stable
    quiet_before_s: float  # since the previous stable assignment (>= window_s: clean before-window)


def measure_event(
    scenario: str,
    cfg: RebalanceBenchConfig,
    tracker: Tracker,
    before_members: Sequence[Member],
    after_members: Sequence[Member],
    before_owner: dict[int, int],
    t0: float,
    changes0: int,
    previous_stable: float,
    hold: float,
) -> Event:
    """Wait for the stable assignment after the event at ``t0``; the rates of the partitions
    whose owner is the same in ``before_owner`` and after."""
    stable = wait_stable(tracker, after_members, cfg.partitions, t0, hold, cfg.timeout_s)
    with tracker.lock:
        after_owner = owners(after_members)
        sizes = [len(mem.assigned) for mem in after_members]
        changes = tracker.changes - changes0
    unaffected = {p for p, owner in before_owner.items() if after_owner.get(p) == owner}
    window = max(stable - t0, cfg.min_window_s)
    everyone = {mem.index: mem for mem in [*before_members, *after_members]}
    by_owner: dict[int, set[int]] = {}
    for p in unaffected:
        by_owner.setdefault(after_owner[p], set()).add(p)
    before = during = 0
    stopped = 0
    for owner, parts in by_owner.items():
        mem = everyone[owner]
        before += mem.records(parts, t0 - window, t0)
        during += mem.records(parts, t0, t0 + window)
        stopped += sum(1 for p in parts if mem.records({p}, t0, t0 + window) == 0)
    return Event(
        scenario=scenario,
        time_s=stable - t0,
        window_s=window,
        unaffected=len(unaffected),
        rate_ratio=during / before if before else None,
        stopped=stopped,
        changes=changes,
        balance=max(sizes) - min(sizes),
        quiet_before_s=t0 - previous_stable,
    )


def snapshot(tracker: Tracker, members: Sequence[Member]) -> tuple[dict[int, int], int]:
    """The owners of the partitions now, and the count of assignment changes so far."""
    with tracker.lock:
        return owners(members), tracker.changes


@dataclass
class ProtocolResult:
    events: list[Event] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    client_errors: list[str] = field(default_factory=list)
    initial_s: float | None = None


def run_protocol(
    bootstrap: str, cfg: RebalanceBenchConfig, intervals: Intervals, protocol: str, log: Callable[[str], None]
) -> ProtocolResult:
    """A fresh group of ``cfg.members``; then ``cfg.runs`` times: one member joins, one (the
    oldest) leaves."""
    result = ProtocolResult()
    tracker = Tracker()
    group = f"bench-rebalance-{intervals.name}-{protocol}-{os.getpid()}"
    conf = intervals.client_config(protocol)
    heartbeat_s = (intervals.consumer_ms if protocol == "consumer" else intervals.classic_ms) / 1000
    # Steps of one rebalance come at most one heartbeat interval apart; the before-window must
    # fit in the quiet time before the event (the rebalances seen take <= ~2 intervals).
    hold = 1.2 * heartbeat_s + cfg.margin_s
    quiet = 2.5 * heartbeat_s + cfg.margin_s
    # The members' heartbeats fall into step (they all restart their timers when a rebalance
    # ends): without a random phase every event would land at the same point of their cycle.
    phase = random.Random(f"{intervals.name}-{protocol}")
    every: list[Member] = []
    index = 0

    def new_member() -> Member:
        nonlocal index
        mem = Member(index, bootstrap, group, conf, tracker)
        index += 1
        every.append(mem)
        return mem

    try:
        members = [new_member() for _ in range(cfg.members)]
        t0 = time.monotonic()
        for mem in members:
            mem.start()
        setup_timeout = 120 + cfg.initial_delay_ms / 1000
        last_stable = wait_stable(tracker, members, cfg.partitions, t0, hold, setup_timeout)
        result.initial_s = last_stable - t0
        log(f"{intervals.name} {protocol}: {len(members)} members stable after {result.initial_s:.2f} s")
        for run_i in range(cfg.runs):
            for scenario in SCENARIOS:
                start = last_stable + quiet + phase.uniform(0, heartbeat_s)
                time.sleep(max(0.0, start - time.monotonic()))
                before_members = list(members)
                if scenario == "join":
                    joining = new_member()
                    before_owner, changes0 = snapshot(tracker, members)
                    t0 = joining.start()
                    members.append(joining)
                else:
                    leaving = members.pop(0)
                    before_owner, changes0 = snapshot(tracker, before_members)
                    t0 = leaving.leave()
                try:
                    event = measure_event(
                        scenario,
                        cfg,
                        tracker,
                        before_members,
                        members,
                        before_owner,
                        t0,
                        changes0,
                        last_stable,
                        hold,
                    )
                except RebalanceError as exc:
                    msg = f"run {run_i} {scenario}: {exc}"
                    log(f"{intervals.name} {protocol}: FAILED {msg}")
                    result.failures.append(msg)
                    return result
                last_stable = t0 + event.time_s
                result.events.append(event)
                ratio = "n/a" if event.rate_ratio is None else f"{event.rate_ratio:.3f}"
                log(
                    f"{intervals.name} {protocol} run {run_i} {scenario}: {event.time_s:.3f} s, "
                    f"{event.changes} changes, unaffected {event.unaffected} rate x{ratio}, "
                    f"stopped {event.stopped}, balance {event.balance}"
                )
                for mem in every:
                    mem.prune(time.monotonic() - 120)
        return result
    finally:
        for mem in every:
            mem.request_leave()  # every member closes in its own thread, at once
        for mem in every:
            mem.finish()
        result.client_errors = [f"{t:.3f} {e}" for t, e in tracker.errors]


# -- the run ------------------------------------------------------------------------------------


@dataclass
class Report:
    config: dict[str, Any]
    command: str
    conditions: dict[str, Any] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    ratios: dict[str, Any] = field(default_factory=dict)
    met: dict[str, dict[str, bool]] = field(default_factory=dict)
    broker_log_errors: dict[str, list[str]] = field(default_factory=dict)


def spread(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
        "runs": [round(v, 4) for v in values],
    }


def summarise(res: ProtocolResult) -> dict[str, Any]:
    out: dict[str, Any] = {"initial_s": None if res.initial_s is None else round(res.initial_s, 3)}
    for scenario in SCENARIOS:
        events = [e for e in res.events if e.scenario == scenario]
        ratios = [e.rate_ratio for e in events if e.rate_ratio is not None]
        out[scenario] = {
            "time_s": spread([e.time_s for e in events]),
            "unaffected_rate_ratio": spread(ratios),
            "unaffected_partitions": spread([e.unaffected for e in events]),
            "stopped_unaffected": sum(e.stopped for e in events),
            "assignment_changes": spread([e.changes for e in events]),
            "balance_max": max((e.balance for e in events), default=None),
            "window_s": spread([e.window_s for e in events]),
            "quiet_before_min_s": min((e.quiet_before_s - e.window_s for e in events), default=None),
        }
    out["failures"] = res.failures
    out["client_errors"] = res.client_errors[:20]
    out["client_errors_total"] = len(res.client_errors)
    return out


def _median(results: dict[str, Any], protocol: str, scenario: str, what: str) -> float | None:
    entry = results.get(protocol, {}).get(scenario, {}).get(what, {})
    median = entry.get("median")
    return None if median is None else float(median)


def ratios_of(results: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for scenario in SCENARIOS:
        new = _median(results, "consumer", scenario, "time_s")
        entry: dict[str, Any] = {}
        for classic in ("cooperative", "eager"):
            other = _median(results, classic, scenario, "time_s")
            entry[f"time_new_over_{classic}"] = round(new / other, 3) if new and other else None
        for protocol in PROTOCOLS:
            entry[f"rate_ratio_{protocol}"] = _median(results, protocol, scenario, "unaffected_rate_ratio")
        out[scenario] = entry
    return out


def targets(results: dict[str, Any], ratios: dict[str, Any]) -> dict[str, bool]:
    met: dict[str, bool] = {}
    for scenario in SCENARIOS:
        time_ratio = ratios[scenario]["time_new_over_cooperative"]
        met[f"{scenario}_time_new_le_{TARGET_TIME_RATIO}x_cooperative"] = (
            time_ratio is not None and time_ratio <= TARGET_TIME_RATIO
        )
        entry = results.get("consumer", {}).get(scenario, {})
        low = entry.get("unaffected_rate_ratio", {}).get("min")
        met[f"{scenario}_new_unaffected_rate_ge_{TARGET_RATE_RATIO}x"] = (
            low is not None and low >= TARGET_RATE_RATIO and entry.get("stopped_unaffected") == 0
        )
    return met


def _broker_errors(broker: BrokerProcess) -> list[str]:
    text = broker.output(tail=1_000_000)
    keys = ("ERROR", "Traceback", "Exception", "CRITICAL")
    return [line for line in text.splitlines() if any(k in line for k in keys)][:50]


def _git(*args: str) -> str:
    repo = Path(__file__).resolve().parents[1]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout
    return ""


@contextlib.contextmanager
def broker_source(rev: str | None) -> Iterator[str]:
    """With ``rev``, the broker runs ``shardbroker/`` as committed at ``rev`` (exported with
    ``git archive`` into a temporary directory put first on its PYTHONPATH, through
    ``SHARDBROKER_SERVE_CMD``): the working tree may hold someone's edits in progress. Yields
    what the broker runs (the commit, or "working tree")."""
    if rev is None:
        yield "working tree"
        return
    repo = Path(__file__).resolve().parents[1]
    commit = _git("rev-parse", "--verify", f"{rev}^{{commit}}").strip()
    if not commit:
        raise RebalanceError(f"no commit {rev!r}")
    root = Path(tempfile.mkdtemp(prefix="shardbroker-rebalance-src-"))
    saved = os.environ.get("SHARDBROKER_SERVE_CMD")
    try:
        command = ["git", "archive", "--format=tar", commit, "shardbroker"]
        archive = subprocess.run(command, cwd=repo, capture_output=True, check=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(root, filter="data")
        os.environ["SHARDBROKER_SERVE_CMD"] = shlex.join(
            ["env", f"PYTHONPATH={root}", sys.executable, "-m", "shardbroker.cli.main"]
        )
        yield commit
    finally:
        if saved is None:
            os.environ.pop("SHARDBROKER_SERVE_CMD", None)
        else:
            os.environ["SHARDBROKER_SERVE_CMD"] = saved
        shutil.rmtree(root, ignore_errors=True)


def conditions() -> dict[str, Any]:
    dirty = [line[3:] for line in _git("status", "--porcelain", "--", "shardbroker").splitlines()]
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "librdkafka": confluent_kafka.libversion()[0],
        "confluent_kafka": confluent_kafka.version(),
        "git_commit": _git("rev-parse", "HEAD").strip(),
        "shardbroker_uncommitted": dirty,
        "serve_cmd": os.environ.get("SHARDBROKER_SERVE_CMD", "python -m shardbroker.cli.main"),
    }


def run(
    cfg: RebalanceBenchConfig, log: Callable[[str], None] | None = None, broker_rev: str | None = None
) -> Report:
    with broker_source(broker_rev) as source:
        report = _run(cfg, log or (lambda line: print(line, file=sys.stderr, flush=True)))
    report.conditions["broker_runs"] = source
    if broker_rev is not None:
        report.command += f" --broker-rev {broker_rev}"
    return report


def _run(cfg: RebalanceBenchConfig, say: Callable[[str], None]) -> Report:
    mode = " --quick" if quick() else ""
    report = Report(asdict(cfg), f"python -m perf.bench_rebalance{mode}", conditions())
    for intervals in cfg.settings():
        config = intervals.broker_config(cfg.initial_delay_ms)
        report.config.setdefault("broker_config", {})[intervals.name] = config
        results: dict[str, Any] = {}
        with broker_load.running_broker(cfg.workers, config=config, name="perf-rebalance") as broker:
            ensure_topic(broker.bootstrap, TOPIC, cfg.partitions, timeout=60)
            with SteadyProducer(broker.bootstrap, cfg.partitions, cfg.rate, cfg.record_bytes) as producer:
                for protocol in PROTOCOLS:
                    res = run_protocol(broker.bootstrap, cfg, intervals, protocol, say)
                    results[protocol] = summarise(res)
            results["producer"] = {"sent": producer.sent, "failed": producer.failed}
            report.broker_log_errors[intervals.name] = _broker_errors(broker)
        report.results[intervals.name] = results
        report.ratios[intervals.name] = ratios_of(results)
        report.met[intervals.name] = targets(results, report.ratios[intervals.name])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perf.bench_rebalance", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (as in the test suite)")
    parser.add_argument("--runs", type=int, help="runs per protocol and setting (default 10)")
    parser.add_argument("--no-defaults", action="store_true", help="only the equal-interval setting")
    parser.add_argument(
        "--broker-rev",
        metavar="REV",
        help="run the broker's shardbroker/ as committed at REV (e.g. HEAD), not the working tree",
    )
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["SHARDBROKER_PERF_QUICK"] = "1"
    # SIGTERM unwinds like an exception: the consumers, the broker and the temp dirs go too.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    cfg = RebalanceBenchConfig.for_mode()
    if args.runs:
        cfg.runs = args.runs
    if args.no_defaults:
        cfg.with_defaults = False
    report = run(cfg, broker_rev=args.broker_rev)
    print(json.dumps(asdict(report), indent=2))
    return 0


def test_rebalance(benchmark: Any) -> None:
    cfg = RebalanceBenchConfig.for_mode()
    report: Report = benchmark.pedantic(run, args=(cfg,), rounds=1, iterations=1)
    print(json.dumps(asdict(report), indent=2))
    for setting in report.results.values():
        for protocol in PROTOCOLS:
            assert not setting[protocol]["failures"], setting[protocol]["failures"]
            for scenario in SCENARIOS:
                assert setting[protocol][scenario]["time_s"]["n"] == cfg.runs


if __name__ == "__main__":
    sys.exit(main())
