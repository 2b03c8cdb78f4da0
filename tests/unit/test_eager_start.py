"""Eager start (broker/connection.py): a coroutine runs at once up to its first real wait, and
the rest goes on as a task that passes results and cancellations through to it."""

from __future__ import annotations

import asyncio

import pytest

from shardbroker.broker.connection import start_eagerly


async def started(fut: asyncio.Future[int], log: list[str]) -> asyncio.Task[None]:
    async def serve() -> None:
        try:
            log.append(f"got {await fut}")
        except asyncio.CancelledError:
            log.append("cancelled")
            raise
        finally:
            log.append("finally")

    task = start_eagerly(serve())
    assert task is not None
    assert log == []  # suspended in its await, not finished
    return task


def test_a_coroutine_that_does_not_wait_finishes_in_the_call_without_a_task() -> None:
    async def main() -> list[str]:
        log: list[str] = []

        async def serve() -> None:
            log.append("ran")

        assert start_eagerly(serve()) is None
        assert log == ["ran"]  # before any other callback of the loop
        return log

    asyncio.run(main())


def test_the_rest_resumes_when_the_awaited_future_is_done() -> None:
    async def main() -> list[str]:
        log: list[str] = []
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = await started(fut, log)
        await asyncio.sleep(0)
        assert not task.done()
        fut.set_result(7)
        await task
        return log

    assert asyncio.run(main()) == ["got 7", "finally"]


@pytest.mark.parametrize("steps_before_cancel", [0, 1])
def test_a_cancellation_reaches_the_handler_even_before_the_tasks_first_step(
    steps_before_cancel: int,
) -> None:
    async def main() -> list[str]:
        log: list[str] = []
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        task = await started(fut, log)
        for _ in range(steps_before_cancel):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return log

    assert asyncio.run(main()) == ["cancelled", "finally"]
