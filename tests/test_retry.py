"""gateway.retry: `Policy.run` makes the first attempt without tenacity, then retries as the policy says."""

from __future__ import annotations

import asyncio

import pytest

from gateway import errors, retry


class Flaky:
    """Fails with `error` the first `failures` times it is called."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


async def test_a_call_that_works_is_made_once_with_no_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []

    async def no_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr("gateway.retry.asyncio.sleep", no_sleep)
    call = Flaky(0, errors.StoreBusy("busy"))
    assert await retry.Policy(errors.StoreBusy, 4, 0.1, 1.0).run(call) == "ok"
    assert call.calls == 1 and waits == []


async def test_retryable_failures_are_retried_up_to_the_attempts_then_the_last_error_is_raised() -> None:
    policy = retry.Policy(errors.StoreBusy, 4, 0.001, 0.004)
    call = Flaky(3, errors.StoreBusy("busy"))
    assert await policy.run(call) == "ok"
    assert call.calls == 4
    always = Flaky(10, errors.StoreBusy("still busy"))
    with pytest.raises(errors.StoreBusy, match="still busy"):
        await policy.run(always)
    assert always.calls == 4  # the same number of attempts as the tenacity policy


async def test_other_errors_are_not_retried() -> None:
    call = Flaky(1, errors.StoreError("down"))
    with pytest.raises(errors.StoreError, match="down"):
        await retry.Policy(errors.StoreBusy, 4, 0.001, 0.004).run(call)
    assert call.calls == 1


async def test_a_single_attempt_policy_raises_at_once() -> None:
    call = Flaky(1, errors.StoreBusy("busy"))
    with pytest.raises(errors.StoreBusy):
        await retry.Policy(errors.StoreBusy, 1, 10.0, 10.0).run(call)
    assert call.calls == 1


async def test_cancellation_during_the_wait_is_not_swallowed() -> None:
    call = Flaky(10, errors.StoreBusy("busy"))
    task = asyncio.ensure_future(retry.Policy(errors.StoreBusy, 4, 10.0, 10.0).run(call))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert call.calls == 1
