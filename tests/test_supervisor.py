"""Supervisor: tracked background tasks, cancelled and awaited on close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import types
import warnings

import pytest

from gateway.supervisor import Supervisor


async def test_spawn_tracks_and_forgets_finished() -> None:
    sup = Supervisor()
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "done"

    task = sup.spawn(work(), "worker")
    assert task.get_name() == "worker"
    assert len(sup) == 1
    gate.set()
    assert await task == "done"
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert len(sup) == 0
    await sup.aclose()


async def test_aclose_cancels_and_awaits() -> None:
    sup = Supervisor()
    cleaned: list[int] = []

    async def forever(i: int) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # cleanup that itself awaits
            cleaned.append(i)

    tasks = [sup.spawn(forever(i), f"t{i}") for i in range(3)]
    await asyncio.sleep(0)
    assert len(sup) == 3
    await asyncio.wait_for(sup.aclose(), 2)
    assert sorted(cleaned) == [0, 1, 2]
    assert all(t.cancelled() for t in tasks)
    assert len(sup) == 0


async def test_spawn_after_close_raises_and_closes_coroutine() -> None:
    sup = Supervisor()
    await sup.aclose()
    ran: list[bool] = []

    async def never() -> None:
        ran.append(True)

    coro = never()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be a leak
        with pytest.raises(RuntimeError):
            sup.spawn(coro, "late")
    assert isinstance(coro, types.CoroutineType) and coro.cr_frame is None  # closed
    assert ran == []
    assert len(sup) == 0


async def test_failing_task_is_logged_and_removed(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor()

    async def boom() -> None:
        raise ValueError("kaput")

    with caplog.at_level(logging.ERROR, logger="gateway.supervisor"):
        task = sup.spawn(boom(), "boomer")
        with pytest.raises(ValueError):
            await task
        await asyncio.sleep(0)
    assert len(sup) == 0
    records = [r for r in caplog.records if r.name == "gateway.supervisor"]
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert "boomer" in records[0].getMessage()
    assert records[0].exc_info is not None and isinstance(records[0].exc_info[1], ValueError)
    await sup.aclose()


async def test_cancelled_task_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor()
    with caplog.at_level(logging.ERROR, logger="gateway.supervisor"):
        task = sup.spawn(asyncio.sleep(3600), "sleeper")
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0)
    assert len(sup) == 0
    assert not [r for r in caplog.records if r.name == "gateway.supervisor"]


async def test_wait_gives_tasks_time() -> None:
    sup = Supervisor()
    finished: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.05)
        finished.append("quick")

    async def slow() -> None:
        await asyncio.sleep(3600)

    sup.spawn(quick(), "quick")
    slow_task = sup.spawn(slow(), "slow")
    await sup.wait(0.5)  # returns on timeout although `slow` still runs
    assert finished == ["quick"]
    assert not slow_task.done()
    await sup.wait(0)  # nothing to do is fine too
    await sup.aclose()
    assert slow_task.cancelled()
    await Supervisor().wait(1)  # empty supervisor returns at once


async def test_checkpoint_stops_a_loop_whose_cancellation_was_swallowed() -> None:
    """A library that swallows the CancelledError landing in its call must not keep a loop alive."""
    from gateway.supervisor import checkpoint

    rounds = 0

    async def swallowing_call() -> None:
        with contextlib.suppress(asyncio.CancelledError):  # what a client library may do with it
            await asyncio.sleep(10)

    async def loop() -> None:
        nonlocal rounds
        while True:
            checkpoint()
            rounds += 1
            await swallowing_call()

    task = asyncio.get_running_loop().create_task(loop())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 2)
    assert rounds == 1
