"""Produce + consume + consumer-group load for the fault tests: an idempotent acks=all producer and
a group of consumers, each in a thread of the test process, recording what was acknowledged and
what was consumed, while the test breaks the broker underneath.

The producer is tests/integration/test_broker_lifecycle.py's (librdkafka, idempotence on, acks all,
retries until ``message.timeout.ms``); messages are kafka_clients.make_messages (the production
index is in each value, so order and duplicates can be checked record by record).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, cast

import confluent_kafka

from tests.integration.broker_process import wait_for
from tests.integration.kafka_clients import IO_TIMEOUT, Rec, make_messages
from tests.integration.test_broker_lifecycle import idempotent_producer

__all__ = ["GroupLoad"]

#: Group timings for tests: Kafka's defaults (45 s session) would make a test wait minutes.
CONSUMER_SETTINGS: Mapping[str, Any] = {
    "auto.offset.reset": "earliest",
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 200,
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
    "reconnect.backoff.ms": 20,
    "reconnect.backoff.max.ms": 200,
}


class GroupLoad:
    """``count`` messages produced to ``topic`` (``rounds`` times, each round's messages tagged
    ``<tag><round>``; None: until ``stop_producing()``; at most ``rate`` a second if given) while
    ``members`` consumers of group ``group`` read it. ``start()``, break things,
    ``finish_producing()``, ``wait_consumed(ends)``, ``stop()``."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        count: int,
        *,
        rounds: int | None = 1,
        members: int = 2,
        group: str = "faults",
        tag: str = "fault",
        rate: float | None = None,
        producer: Mapping[str, Any] | None = None,
        consumer: Mapping[str, Any] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.group = group
        self.count = count
        self.rounds = rounds
        self.tag = tag
        self.rate = rate
        self.produced = 0
        self._stop_producing = threading.Event()
        self.producer_settings = dict(producer or {})
        self.consumer_settings = {**CONSUMER_SETTINGS, **(consumer or {})}
        self.acked: list[Rec] = []
        self.delivery_errors: list[str] = []
        self.unflushed = -1
        self.consumed: list[list[Rec]] = [[] for _ in range(members)]
        #: Assignments each member received (on_assign calls): a rebalance adds one per member.
        self.assignments = [0] * members
        self.failures: list[BaseException] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guard, args=(self._produce,), name="load-producer")]
        self._threads += [
            threading.Thread(target=self._guard, args=(self._consume, i), name=f"load-consumer-{i}")
            for i in range(members)
        ]

    def start(self) -> GroupLoad:
        for t in self._threads:
            t.start()
        return self

    def _guard(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except BaseException as exc:  # reported by the test's thread (check)
            self.failures.append(exc)

    def _produce(self) -> None:
        producer = idempotent_producer(self.bootstrap, **self.producer_settings)

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                self.delivery_errors.append(str(err))
            else:
                self.acked.append(Rec(msg.partition(), msg.offset(), msg.key(), msg.value()))

        started = time.monotonic()
        round_ = 0
        while (self.rounds is None or round_ < self.rounds) and not self._stop_producing.is_set():
            tag = self.tag if self.rounds == 1 else f"{self.tag}{round_}"
            for i, (key, value) in enumerate(make_messages(self.count, keys=499, tag=tag)):
                if self._stop_producing.is_set():
                    break
                while True:
                    try:
                        producer.produce(self.topic, value, key, on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
                self.produced += 1
                if i % 200 == 0:
                    producer.poll(0.002)  # a steady trickle rather than one burst: faults land mid-flow
                    if self.rate is not None:  # at most ``rate`` messages a second
                        time.sleep(max(0.0, started + self.produced / self.rate - time.monotonic()))
            round_ += 1
        self.unflushed = producer.flush(IO_TIMEOUT)

    def stop_producing(self) -> None:
        self._stop_producing.set()

    def _consume(self, member: int) -> None:
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": self.bootstrap, "group.id": self.group, **self.consumer_settings}
        )

        def on_assign(c: Any, partitions: Any) -> None:
            self.assignments[member] += 1

        consumer.subscribe([self.topic], on_assign=on_assign)
        try:
            while not self._stop.is_set():
                for msg in consumer.consume(1000, timeout=0.2):
                    err = msg.error()
                    if err is None:
                        rec = Rec(
                            cast(int, msg.partition()),
                            cast(int, msg.offset()),
                            msg.key(),
                            cast(bytes, msg.value()),
                        )
                        self.consumed[member].append(rec)
                    elif err.fatal():
                        raise AssertionError(f"consumer {member}: fatal error {err}")
        finally:
            consumer.close()

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        # None, not False or []: wait_for stops at the first other value.
        wait_for(
            lambda: len(self.acked) >= count or bool(self.failures) or None,
            timeout,
            f"{count} acknowledged records",
        )
        self.check()

    def finish_producing(self, timeout: float = IO_TIMEOUT + 30) -> list[Rec]:
        """Wait for the producer to deliver everything; every message must be acknowledged."""
        self._threads[0].join(timeout)
        self.check()
        assert not self._threads[0].is_alive(), "the producer did not finish"
        assert self.unflushed == 0, f"{self.unflushed} messages never delivered"
        assert not self.delivery_errors, (
            f"delivery errors: {self.delivery_errors[:5]} ({len(self.delivery_errors)})"
        )
        assert len(self.acked) == self.produced
        return list(self.acked)

    def wait_consumed(self, ends: Mapping[int, int], timeout: float = 90.0) -> None:
        """Until the group, its members together, has read every offset below ``ends``."""

        def covered() -> bool:
            self.check()
            seen = {(r.partition, r.offset) for recs in self.consumed for r in list(recs)}
            return all((p, o) in seen for p, end in ends.items() for o in range(end))

        wait_for(covered, timeout, f"group {self.group} to consume up to {dict(ends)}", interval=0.2)

    def stop(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + 60
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.check()

    def check(self) -> None:
        if self.failures:
            raise AssertionError(f"load thread failed: {self.failures[0]!r}") from self.failures[0]
