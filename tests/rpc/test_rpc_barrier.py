"""The RPC barrier (concurrency, deadline, retries of spec §6.7) and the HTTP RPC circuit breaker."""

from __future__ import annotations

import asyncio

import pytest

from pycable.exceptions import RPCError
from pycable.rpc.barrier import (
    DEADLINE_EXCEEDED,
    INVALID_ARGUMENT,
    RESOURCE_EXHAUSTED,
    UNAVAILABLE,
    Barrier,
    CallError,
)
from pycable.rpc.breaker import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class FakeTime:
    """A clock that only moves when the barrier sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(round(delay, 6))
        self.now += delay


def failing(codes: list[str], result: str = "ok"):
    """An attempt that fails with each code of *codes* in turn, then returns *result*."""
    calls: list[float | None] = []

    async def attempt(timeout: float | None) -> str:
        calls.append(timeout)
        if len(calls) <= len(codes):
            raise CallError(codes[len(calls) - 1], "scripted")
        return result

    return attempt, calls


class TestRetries:
    async def test_unavailable_is_retried_with_exponential_backoff(self):
        """UNAVAILABLE backs off 100, 200, 400 ms and the call then succeeds."""
        t = FakeTime()
        barrier = Barrier(4, None, 3.0, sleep=t.sleep, clock=t.clock)
        attempt, calls = failing([UNAVAILABLE] * 3)
        assert await barrier.call("Connect", attempt) == "ok"
        assert len(calls) == 4
        assert t.sleeps == [0.1, 0.2, 0.4]
        assert barrier.stats == {"calls": 1, "retries": 3, "failures": 0}

    async def test_resource_exhausted_uses_a_10ms_base_and_restarts_the_count(self):
        """RESOURCE_EXHAUSTED backs off from 10 ms; switching codes restarts the exponent."""
        t = FakeTime()
        barrier = Barrier(4, None, 3.0, sleep=t.sleep, clock=t.clock)
        attempt, _ = failing([RESOURCE_EXHAUSTED, RESOURCE_EXHAUSTED, UNAVAILABLE, RESOURCE_EXHAUSTED])
        assert await barrier.call("Command", attempt) == "ok"
        assert t.sleeps == [0.01, 0.02, 0.1, 0.01]

    async def test_retries_stop_at_the_command_timeout_with_a_last_attempt_at_the_deadline(self):
        """With the app down, attempts go on until rpc_command_timeout and no further."""
        t = FakeTime()
        barrier = Barrier(4, None, 3.0, sleep=t.sleep, clock=t.clock)
        attempt, calls = failing([UNAVAILABLE] * 100)
        with pytest.raises(CallError) as err:
            await barrier.call("Connect", attempt)
        assert err.value.code == UNAVAILABLE
        # 0.1+0.2+0.4+0.8 = 1.5 s, then 1.6 s would pass 3 s: cut to 1.5 s, one last try.
        assert t.sleeps == [0.1, 0.2, 0.4, 0.8, 1.5]
        assert len(calls) == 6
        assert t.now == pytest.approx(103.0)
        assert barrier.stats["failures"] == 1

    @pytest.mark.parametrize("code", [INVALID_ARGUMENT, DEADLINE_EXCEEDED, "INTERNAL", "UNAUTHENTICATED"])
    async def test_other_codes_fail_at_once(self, code):
        t = FakeTime()
        barrier = Barrier(4, None, 3.0, sleep=t.sleep, clock=t.clock)
        attempt, calls = failing([code])
        with pytest.raises(CallError):
            await barrier.call("Command", attempt)
        assert len(calls) == 1 and t.sleeps == []

    async def test_a_plain_rpc_error_is_not_retried(self):
        """Errors without a status code (an open circuit breaker) fail at once."""
        calls = 0

        async def attempt(timeout: float | None) -> str:
            nonlocal calls
            calls += 1
            raise RPCError("http rpc is temporarily unavailable")

        with pytest.raises(RPCError):
            await Barrier(4).call("Command", attempt)
        assert calls == 1


class TestConcurrencyAndDeadline:
    async def test_at_most_concurrency_attempts_in_flight(self):
        """28 is the default; with 3, the 10 calls never overlap more than 3 at a time."""
        barrier = Barrier(3)
        gate, full = asyncio.Event(), asyncio.Event()
        in_flight = peak = 0

        async def attempt(timeout: float | None) -> int:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            if in_flight == 3:
                full.set()
            await gate.wait()
            in_flight -= 1
            return 1

        tasks = [asyncio.create_task(barrier.call("Command", attempt)) for _ in range(10)]
        await asyncio.wait_for(full.wait(), 5)
        assert (barrier.busy, barrier.waiting, peak) == (3, 7, 3)
        gate.set()
        assert sum(await asyncio.gather(*tasks)) == 10
        assert peak == 3 and barrier.busy == 0

    async def test_a_cancelled_call_frees_its_slot(self):
        barrier = Barrier(1)
        never, started = asyncio.Event(), asyncio.Event()

        async def stuck(timeout: float | None) -> None:
            started.set()
            await never.wait()

        async def quick(timeout: float | None) -> str:
            return "ok"

        task = asyncio.create_task(barrier.call("Command", stuck))
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(barrier.call("Command", quick), 1) == "ok"

    async def test_the_deadline_is_passed_to_each_attempt(self):
        barrier = Barrier(2, request_timeout=0.25)
        attempt, calls = failing([])
        await barrier.call("Command", attempt)
        assert calls == [0.25]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class TestCircuitBreaker:
    def trip(self, cb: CircuitBreaker, ok: int = 2, bad: int = 8) -> None:
        for success in [True] * ok + [False] * bad:
            token = cb.allow()
            assert token is not None
            cb.record(token, success)

    def test_trips_at_80_percent_failures_over_10_requests(self):
        clock = FakeClock()
        cb = CircuitBreaker(clock=clock)
        self.trip(cb, ok=2, bad=7)
        assert cb.state == CLOSED, "9 requests are not enough"
        token = cb.allow()
        assert token is not None
        cb.record(token, False)
        assert cb.state == OPEN
        assert cb.allow() is None

    def test_not_tripped_below_the_ratio(self):
        cb = CircuitBreaker(clock=FakeClock())
        self.trip(cb, ok=3, bad=7)
        assert cb.state == CLOSED

    def test_counts_reset_every_interval(self):
        clock = FakeClock()
        cb = CircuitBreaker(clock=clock)
        self.trip(cb, ok=0, bad=9)
        clock.now = 10.0
        token = cb.allow()
        assert token is not None
        cb.record(token, False)
        assert cb.state == CLOSED

    def test_half_open_after_5s_then_closed_after_5_successes(self):
        clock = FakeClock()
        cb = CircuitBreaker(clock=clock)
        self.trip(cb)
        clock.now = 4.9
        assert cb.allow() is None
        clock.now = 5.0
        assert cb.state == HALF_OPEN
        tokens = [cb.allow() for _ in range(5)]
        assert None not in tokens
        assert cb.allow() is None, "only 5 trial requests"
        for token in tokens:
            assert token is not None
            cb.record(token, True)
        assert cb.state == CLOSED

    def test_a_failure_while_half_open_reopens(self):
        clock = FakeClock()
        cb = CircuitBreaker(clock=clock)
        self.trip(cb)
        clock.now = 5.0
        token = cb.allow()
        assert token is not None
        cb.record(token, False)
        assert cb.state == OPEN

    def test_results_from_an_older_generation_are_ignored(self):
        clock = FakeClock()
        cb = CircuitBreaker(clock=clock)
        stale = cb.allow()  # counts as one of the 10 requests
        assert stale is not None
        self.trip(cb, ok=1, bad=8)
        assert cb.state == OPEN
        clock.now = 5.0
        assert cb.state == HALF_OPEN
        cb.record(stale, False)
        assert cb.state == HALF_OPEN
