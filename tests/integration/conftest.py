"""Fixtures that run real ``shardbroker serve`` processes (see broker_process.py).

Every broker a test starts gets a fresh temporary data dir on free loopback ports. Teardown, on
success and on failure alike: SIGTERM (a drain must exit 0), then SIGKILL of the whole process
group and every worker pid ever seen, then a check that the broker's instance left nothing in
``/dev/shm`` (after a graceful exit; after a forced kill the leftovers are removed, since
reclaiming them is the next start's job), then the temp dirs go. A broker that does not start
fails the test loudly: nothing here skips.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
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
