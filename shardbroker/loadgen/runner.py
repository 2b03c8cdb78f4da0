"""Run load processes and fold what they report: ``produce``, ``consume`` and ``e2e``. Starts
processes (``multiprocessing``, spawn) and opens sockets (topic creation through confluent-kafka's
admin client).

Why processes, even for one producer: the producing loop and its delivery callbacks hold the GIL,
so the progress line and the bookkeeping run in this (parent) process, which only waits on a
queue. ``spawn`` rather than ``fork``: a child must not inherit librdkafka threads or a caller's
broker state.

The clock: the runner waits until every process has connected and fetched metadata, then sets
``go``; elapsed time runs from there to the last counted process's ``done`` (for producers that is
after the last acknowledgement). Records and bytes are the acknowledged (produce) or received
(consume, e2e) ones, never the merely enqueued.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue as queue_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from shardbroker.loadgen.clients import (
    ConsumerSettings,
    Done,
    ProducerSettings,
    consumer_main,
    producer_main,
)
from shardbroker.loadgen.stats import Summary, Tally, Window, progress_line

__all__ = ["LoadError", "Result", "ensure_topic", "run_consume", "run_e2e", "run_produce"]

Progress = Callable[[str], None]

#: Start-up allowance on top of the client's own connect timeout: spawning a process and
#: importing confluent-kafka takes ~0.5 s here, more on a loaded 2-core host.
SPAWN_ALLOWANCE = 30.0


#: How long a process that has exited may still have reports in flight (see ``_collect``).
DEAD_GRACE = 2.0


class LoadError(Exception):
    """A load run that could not start or whose clients failed (the message says which and why)."""


@dataclass
class Result:
    summary: Summary
    latencies: npt.NDArray[np.float64]  # seconds, every record's, for CDFs
    #: The first failure each process saw (delivery or fetch errors), if any.
    errors: list[str] = field(default_factory=list)
    interrupted: bool = False  # stopped by KeyboardInterrupt: the figures cover what ran until then
    #: e2e: the producer's produce() -> acknowledgement latencies (seconds), beside the
    #: consumer's end-to-end ones in ``latencies``; empty for produce and consume runs.
    ack_latencies: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))


def ensure_topic(bootstrap: str, topic: str, partitions: int, timeout: float = 10.0) -> dict[int, int]:
    """Create ``topic`` with ``partitions`` unless it exists; wait until every partition has a
    leader; return partition -> leader (an existing topic keeps its own partition count)."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 2})
    future = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic]
    try:
        future.result(timeout)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise LoadError(f"cannot create topic {topic!r} on {bootstrap}: {exc.args[0].str()}") from None
    except Exception as exc:  # concurrent.futures.TimeoutError and the like
        raise LoadError(
            f"no answer from {bootstrap} within {timeout:g} s creating {topic!r} ({exc!r})"
        ) from None
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(KafkaException):
            t = admin.list_topics(topic, timeout=timeout).topics.get(topic)
            if (
                t is not None
                and t.error is None
                and t.partitions
                and all(p.leader >= 0 for p in t.partitions.values())
            ):
                return {p.id: p.leader for p in t.partitions.values()}
        if time.monotonic() > deadline:
            raise LoadError(f"topic {topic!r} has no leader for every partition after {timeout:g} s")
        time.sleep(0.1)


@dataclass
class _Process:
    target: Callable[..., None]
    settings: Any
    counted: bool  # its windows make the figures (e2e: the consumer's, not the producer's)


def _split(total: int | None, parts: int) -> list[int | None]:
    if total is None:
        return [None] * parts
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run_produce(
    settings: ProducerSettings, producers: int, config: dict[str, Any], progress: Progress | None = None
) -> Result:
    """``producers`` processes sharing ``settings.records`` and ``settings.throughput``."""
    shares = _split(settings.records, producers)
    procs = [
        _Process(
            producer_main,
            replace(
                settings,
                records=share,
                throughput=settings.throughput / producers if settings.throughput > 0 else 0.0,
            ),
            counted=True,
        )
        for share in shares
    ]
    return _run("produce", settings.topic, procs, config, progress, settings.connect_timeout)


def run_consume(
    settings: ConsumerSettings, config: dict[str, Any], progress: Progress | None = None
) -> Result:
    return _run(
        "consume",
        settings.topic,
        [_Process(consumer_main, settings, True)],
        config,
        progress,
        settings.connect_timeout,
    )


def run_e2e(
    producer: ProducerSettings,
    consumer: ConsumerSettings,
    config: dict[str, Any],
    progress: Progress | None = None,
) -> Result:
    """One producer at a fixed rate, one consumer from the end offsets; the consumer stops once it
    has every record the producer got acknowledged."""
    procs = [_Process(consumer_main, consumer, True), _Process(producer_main, producer, False)]
    return _run("e2e", producer.topic, procs, config, progress, producer.connect_timeout, ordered=True)


def _run(
    mode: str,
    topic: str,
    procs: Sequence[_Process],
    config: dict[str, Any],
    progress: Progress | None,
    connect_timeout: float,
    ordered: bool = False,
) -> Result:
    """``ordered``: start (and wait for the readiness of) each process before the next one, so an
    e2e consumer has its start offsets before its producer exists."""
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    expected = ctx.Value("q", -1)
    children: list[Any] = []
    try:
        pending: set[int] = set()
        for i, p in enumerate(procs):
            args = (
                (p.settings, i, q, go, stop, expected)
                if p.target is consumer_main
                else (p.settings, i, q, go, stop)
            )
            child = ctx.Process(target=p.target, args=args, name=f"shardbroker-perf-{mode}-{i}", daemon=True)
            child.start()
            children.append(child)
            pending.add(i)
            if ordered:
                _await_ready(q, children, {i}, connect_timeout + SPAWN_ALLOWANCE)
                pending.clear()
        _await_ready(q, children, pending, connect_timeout + SPAWN_ALLOWANCE)
        return _collect(mode, topic, procs, children, q, go, stop, expected, config, progress)
    finally:
        stop.set()
        for child in children:
            child.join(5)
            if child.is_alive():
                child.kill()
                child.join(5)
        q.close()
        q.join_thread()


def _await_ready(q: Any, children: Sequence[Any], waiting: set[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(waiting)
    while waiting:
        try:
            kind, index, payload = q.get(timeout=min(0.5, max(0.01, deadline - time.monotonic())))
        except queue_mod.Empty:
            dead = [i for i in sorted(waiting) if not children[i].is_alive()]
            if dead:  # a crash at start-up (an import error in a spawned child, say) reports nothing
                codes = ", ".join(f"{i} exited with code {children[i].exitcode}" for i in dead)
                raise LoadError(f"load process {codes} before connecting") from None
            if time.monotonic() >= deadline:
                raise LoadError(
                    f"load processes {sorted(waiting)} not connected after {timeout:g} s"
                ) from None
            continue
        if kind == "error":
            raise LoadError(payload)
        if kind == "ready":
            waiting.discard(index)


def _collect(
    mode: str,
    topic: str,
    procs: Sequence[_Process],
    children: Sequence[Any],
    q: Any,
    go: Any,
    stop: Any,
    expected: Any,
    config: dict[str, Any],
    progress: Progress | None,
) -> Result:
    """Fold the processes' reports until every counted one is done. A process that exits
    without reporting (killed, crashed in librdkafka) fails the run after ``DEAD_GRACE``, the
    time its last messages could still be in the queue's pipe."""
    total, second, uncounted = Tally(), Tally(), Tally()
    dead_since: dict[int, float] = {}
    running = set(range(len(procs)))
    counted_running = {i for i, p in enumerate(procs) if p.counted}
    errors: list[str] = []
    interrupted = False
    go.set()
    started = last_line = time.perf_counter()
    finished = started
    try:
        while counted_running:
            try:
                kind, index, payload = q.get(timeout=0.2)
            except queue_mod.Empty:
                kind, index, payload = "", -1, None
            now = time.perf_counter()
            if not kind:
                for i in running:
                    if not children[i].is_alive() and now - dead_since.setdefault(i, now) > DEAD_GRACE:
                        raise LoadError(
                            f"load process {i} exited with code {children[i].exitcode} without reporting"
                        )
            if kind == "window":
                assert isinstance(payload, Window)
                if procs[index].counted:
                    total.add(payload)
                    second.add(payload)
                else:
                    uncounted.add(payload)
            elif kind == "done":
                assert isinstance(payload, Done)
                running.discard(index)
                if payload.first_error:
                    errors.append(f"{mode} process {index}: {payload.first_error}")
                if procs[index].counted:
                    counted_running.discard(index)
                    finished = now
                else:  # e2e: the producer is done; the consumer waits for what it had acknowledged
                    expected.value = payload.records
            elif kind == "error":
                raise LoadError(payload)
            if progress is not None and now - last_line >= 1.0:
                progress(progress_line(now - started, second, now - last_line, total))
                second, last_line = Tally(), now
    except KeyboardInterrupt:
        interrupted = True
        stop.set()  # what was acknowledged so far still makes a summary
        _drain(q, procs, total, running)
        finished = time.perf_counter()
    return Result(
        Summary.of(mode, topic, total, finished - started, config),
        total.latencies(),
        errors,
        interrupted,
        uncounted.latencies(),
    )


def _drain(q: Any, procs: Sequence[_Process], total: Tally, running: set[int]) -> None:
    deadline = time.monotonic() + 10
    while running and time.monotonic() < deadline:
        try:
            kind, index, payload = q.get(timeout=0.5)
        except queue_mod.Empty:
            continue
        if kind == "window" and procs[index].counted:
            total.add(payload)
        elif kind in ("done", "error"):
            running.discard(index)
