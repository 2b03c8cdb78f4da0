"""``event.loop``: which loop the factory makes, the fallback when uvloop is missing, and the
worker running on the loop its config names (and freezing what boot made out of the collector)."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import sys

import pytest
import uvloop

from shardbroker.config.broker_config import BrokerConfig
from shardbroker.config.broker_properties import EVENT_LOOP
from shardbroker.config.config_def import ConfigError
from shardbroker.supervision.event_loop import loop_factory
from shardbroker.supervision.worker import Worker, WorkerConfig


def kind_of(factory: object) -> type[asyncio.AbstractEventLoop]:
    assert callable(factory)
    loop = factory()
    try:
        assert isinstance(loop, asyncio.AbstractEventLoop)
        return type(loop)
    finally:
        loop.close()


def test_uvloop_is_the_default_and_asyncio_the_choice() -> None:
    assert BrokerConfig().get(EVENT_LOOP) == "uvloop"
    assert kind_of(loop_factory("uvloop")) is uvloop.Loop
    assert not issubclass(kind_of(loop_factory("asyncio")), uvloop.Loop)


def test_an_unknown_loop_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"event\.loop"):
        BrokerConfig(properties={"event.loop": "trio"})
    with pytest.raises(ValueError, match="trio"):
        loop_factory("trio")


def test_without_uvloop_the_asyncio_loop_runs_and_the_log_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop -> ImportError
    with caplog.at_level(logging.WARNING):
        factory = loop_factory("uvloop")
    assert factory is asyncio.new_event_loop
    assert "cannot import uvloop" in caplog.text


@pytest.mark.parametrize("name", ["uvloop", "asyncio"])
def test_the_worker_runs_on_the_loop_of_its_config(name: str) -> None:
    seen: list[type[asyncio.AbstractEventLoop]] = []

    class Probe:
        async def start(self, worker: Worker) -> None:
            seen.append(type(asyncio.get_running_loop()))
            worker.stop("probed")

        async def drain(self) -> None:
            return None

    worker = Worker(WorkerConfig(slot=0, parent_pid=os.getppid(), loop_factory=loop_factory(name)))
    worker.add_service(Probe())
    gc.unfreeze()
    try:
        assert worker.run() == 0
        assert gc.get_freeze_count() > 0, "what boot made is frozen out of the collector's generations"
    finally:
        gc.unfreeze()
    assert (seen[0] is uvloop.Loop) == (name == "uvloop")
