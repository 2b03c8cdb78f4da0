"""Fixtures that run real ``shardbroker serve`` processes (see broker_process.py).

Every broker a test starts gets a fresh temporary data dir on free loopback ports. Teardown, on
success and on failure alike: SIGTERM (a drain must exit 0), then SIGKILL of the whole process
group and every worker pid ever seen, then a check that the broker's instance left nothing in
``/dev/shm`` (after a graceful exit; after a forced kill the leftovers are removed, since
reclaiming them is the next start's job), then the temp dirs go. A broker that does not start
fails the test loudly: nothing here skips.

``SHARDBROKER_CHECK_API_MARKERS=1`` checks the ``kafka_api`` markers (tools/gen_compatibility.py)
against the brokers: after each test, every running broker's ``shardbroker_requests_total`` is
read, and a test fails if a marker names an API that no broker answered during its setup and call
(``SHARDBROKER_API_LOG=FILE`` also appends one JSON line per test: its id and the APIs answered).
It cannot check the client (the metric has no client label): that is the marker author's claim;
nor a test in which a worker restarted (its counts start again at 0), nor in-process listeners.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path

import pytest

from tests.integration.broker_process import BrokerProcess

#: Broker settings for every test broker unless a test overrides them: small segments, so that
#: segment rolling is exercised by the tests' data, and Kafka's defaults otherwise.
DEFAULT_CONFIG: Mapping[str, str | int | bool] = {
    "num.partitions": 4,
    "log.segment.bytes": 1024 * 1024,
}

BrokerFactory = Callable[..., BrokerProcess]

_CHECK_MARKERS = os.environ.get("SHARDBROKER_CHECK_API_MARKERS") == "1"
_API_LOG = os.environ.get("SHARDBROKER_API_LOG")
_REQUESTS_RE = re.compile(r'^shardbroker_requests_total\{api="([^"]+)",worker="(\d+)"\} ([0-9.e+]+)$', re.M)
_RESTARTS_RE = re.compile(r'^shardbroker_worker_restarts_total\{worker="(\d+)"\} ([0-9.e+]+)$', re.M)
#: The api name under which a worker's restart count is kept beside its request counts.
_RESTARTS = "(restarts)"
#: Longer than the workers' 1 s publication of their request counts (ipc/counters.py).
PUBLISH_WAIT = 1.2
_BASELINE = pytest.StashKey[dict[tuple[int, str, str], float]]()


@contextlib.contextmanager
def _brokers(label: str) -> Iterator[BrokerFactory]:
    root = Path(tempfile.mkdtemp(prefix=f"shardbroker-it-{label}-"))
    started: list[BrokerProcess] = []

    def start_broker(
        workers: int = 2,
        config: Mapping[str, str | int | bool] | None = None,
        *,
        data_dir: Path | None = None,
        defaults: bool = True,
        start: bool = True,
        extra_args: tuple[str, ...] = (),
        listeners: tuple[str, ...] = ("PLAINTEXT",),
    ) -> BrokerProcess:
        name = f"broker{len(started)}"
        merged = {**(DEFAULT_CONFIG if defaults else {}), **(config or {})}
        logs = root / f"{name}-logs"
        logs.mkdir()
        broker = BrokerProcess(
            data_dir or root / f"{name}-data",
            logs,
            workers=workers,
            config=merged,
            extra_args=extra_args,
            name=name,
            listeners=listeners,
        )
        started.append(broker)
        if start:
            broker.start()
        return broker

    problems: list[str] = []
    try:
        yield start_broker
    finally:
        for broker in started:
            problems += _shut_down(broker)
        shutil.rmtree(root, ignore_errors=True)
    if problems:
        pytest.fail("broker teardown:\n" + "\n".join(problems), pytrace=False)


def _shut_down(broker: BrokerProcess) -> list[str]:
    problems: list[str] = []
    try:
        if broker.proc is not None and broker.proc.poll() is None:
            code = broker.stop()
            if code != 0:
                problems.append(f"{broker}: SIGTERM drain exited with {code}, expected 0")
    except AssertionError as exc:
        problems.append(str(exc))
    finally:
        broker.kill()
    left = broker.remove_shm_leftovers()
    if left and broker.graceful_exit:
        problems.append(f"{broker}: /dev/shm leftovers after a graceful exit: {left}")
    if broker.proc is not None:
        print(broker.output())  # shown by pytest for failing tests only
    return problems


@pytest.fixture
def broker_factory() -> Iterator[BrokerFactory]:
    """Start brokers for one test: ``broker_factory(workers=2, config={...})`` -> a ready broker."""
    with _brokers("fn") as factory:
        yield factory


@pytest.fixture
def broker(broker_factory: BrokerFactory) -> BrokerProcess:
    """One ready broker with two workers and the default test config."""
    return broker_factory()


@pytest.fixture(scope="module")
def module_broker_factory() -> Iterator[BrokerFactory]:
    """Like ``broker_factory``, for brokers shared by a module's tests."""
    with _brokers("mod") as factory:
        yield factory


@pytest.fixture(scope="module")
def module_broker(module_broker_factory: BrokerFactory) -> BrokerProcess:
    """One broker (two workers, default test config) shared by a module's tests; each test uses
    topics of its own."""
    return module_broker_factory()


# -- the kafka_api marker check ------------------------------------------------------------------


def _requests_answered() -> dict[tuple[int, str, str], float]:
    """(broker, api, worker) -> requests answered, for every running broker that answers a scrape.

    Workers publish their request counts once a second: the scrape waits for one publication."""
    running = [b for b in list(BrokerProcess.started) if b.proc is not None and b.proc.poll() is None]
    if running:
        time.sleep(PUBLISH_WAIT)
    counts: dict[tuple[int, str, str], float] = {}
    for broker in running:
        url = f"http://{broker.host}:{broker.metrics_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                text = response.read().decode()
        except OSError:  # a test's TLS or authenticated metrics listener: not checked
            continue
        for api, worker, value in _REQUESTS_RE.findall(text):
            counts[id(broker), api, worker] = float(value)
        for worker, value in _RESTARTS_RE.findall(text):
            counts[id(broker), _RESTARTS, worker] = float(value)
    return counts


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None]:
    if _CHECK_MARKERS or _API_LOG:
        item.stash[_BASELINE] = _requests_answered()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None]:
    result = yield
    if _BASELINE not in item.stash:
        return result
    before = item.stash[_BASELINE]
    after = _requests_answered()
    answered = {key[1] for key, value in after.items() if value != before.get(key, 0)}
    # Unverifiable: no broker process scraped (an in-process listener), or a restarted worker,
    # whose counts start again at 0 (what it answered before is lost).
    verifiable = bool(after) and _RESTARTS not in answered
    answered.discard(_RESTARTS)
    if _API_LOG:
        with open(_API_LOG, "a", encoding="utf-8") as log:
            entry = {"test": item.nodeid, "apis": sorted(answered), "verifiable": verifiable}
            log.write(json.dumps(entry) + "\n")
    claimed = {str(api) for mark in item.iter_markers("kafka_api") for api in mark.args}
    if _CHECK_MARKERS and verifiable and claimed - answered:
        pytest.fail(
            f"kafka_api marker names {sorted(claimed - answered)}, which no broker answered during "
            f"this test (answered: {sorted(answered)})",
            pytrace=False,
        )
    return result
