"""Onboarding through a :class:`~scim_pipeline.scim.pacing.Pacer` against a simulated rate-limited target, in
virtual time (``virtual_time.py``): many creates at once, each holding a pacer slot for its round trip, a 429 retried
after ``Retry-After`` outside the slot, as ``ScimClient`` does.

The target is a token bucket refilled at ``limit`` per second holding ``burst_s`` seconds of requests (full at the
start), as the emulator and many gateways limit, and announces nothing. The client's own CPU is a serial cost per
request (one event loop), so an unpaced client floods at a finite rate.
"""

from __future__ import annotations

import asyncio
import bisect
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from scim_pipeline.scim.pacing import Pacer

from .virtual_time import VirtualClock, run_virtual

NO_HEADERS = httpx.Headers()
HOLD_WINDOW_S = 2.0
HOLD_SHARE = 0.9


class TokenBucket:
    def __init__(self, clock: Callable[[], float], rate: float, burst_s: float = 1.0) -> None:
        self.clock, self.rate, self.capacity = clock, rate, max(1.0, rate * burst_s)
        self.tokens, self.updated = self.capacity, clock()

    def admits(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Onboarding:
    limit: float
    users: int
    wall_s: float = 0.0
    requests: int = 0
    throttled: int = 0
    done_at: list[float] = field(default_factory=list)
    """When each create succeeded, in seconds from the first request."""
    rates: list[tuple[float, float | None]] = field(default_factory=list)
    """(seconds from the first request, the pacer's rate) at each answer."""

    @property
    def share_of_limit(self) -> float:
        return self.users / self.wall_s / self.limit

    @property
    def throttled_share(self) -> float:
        return self.throttled / self.requests

    def hold_s(self) -> float | None:
        """Seconds from the first request until every ``HOLD_WINDOW_S`` window holds ``HOLD_SHARE`` of the limit in
        completed creates, judged while a window's worth of creates was still to come (the tail of an onboarding
        is demand running out, not pacing); ``None`` if never."""
        done = sorted(self.done_at)
        judged_until = done[max(0, len(done) - 1 - round(self.limit * HOLD_WINDOW_S))]
        need = HOLD_SHARE * self.limit * HOLD_WINDOW_S
        held: float | None = None
        for step in reversed(range(int((judged_until - HOLD_WINDOW_S) * 10) + 1)):
            start = step / 10
            if bisect.bisect_left(done, start + HOLD_WINDOW_S) - bisect.bisect_left(done, start) < need:
                break
            held = start
        return held


def onboard(
    make_pacer: Callable[[VirtualClock, Callable[[], float]], Pacer],
    *,
    limit: float,
    users: int,
    latency_s: float = 0.02,
    cpu_s: float = 0.0005,
    retry_after_s: float = 1.0,
    burst_s: float = 1.0,
    jitter_s: float = 0.0,
    stall_s: float = 0.0,
    stall_every_s: float = 0.5,
    seed: int = 7,
) -> Onboarding:
    """``users`` creates at once through the pacer ``make_pacer`` builds on the virtual clock and CPU clock; each
    round trip takes ``latency_s`` plus an exponentially distributed delay of mean ``jitter_s`` (a loaded machine or
    network); every ``stall_every_s`` the client's event loop stalls for ``stall_s`` (a loaded machine descheduling
    the process)."""
    clock = VirtualClock()
    draws = random.Random(seed)
    result = Onboarding(limit=limit, users=users)
    cpu_used = [0.0]

    async def main() -> None:
        pacer = make_pacer(clock, lambda: cpu_used[0])
        bucket = TokenBucket(clock, limit, burst_s)
        cpu = asyncio.Lock()
        started = clock.now

        async def create() -> None:
            while True:
                async with pacer.slot() as slot:
                    async with cpu:  # building and sending the request, in the client's one event loop
                        await asyncio.sleep(cpu_s)
                        cpu_used[0] += cpu_s
                    delay = latency_s + (draws.expovariate(1 / jitter_s) if jitter_s else 0.0)
                    await asyncio.sleep(delay / 2)
                    admitted = bucket.admits()
                    await asyncio.sleep(delay / 2)
                    result.requests += 1
                    slot.observe(200 if admitted else 429, NO_HEADERS)
                    result.rates.append((clock.now - started, pacer.rate_per_s))
                if admitted:
                    result.done_at.append(clock.now - started)
                    return
                result.throttled += 1
                await asyncio.sleep(retry_after_s)

        async def stall() -> None:
            while True:
                await asyncio.sleep(stall_every_s)
                async with cpu:
                    await asyncio.sleep(stall_s)

        stalls = asyncio.create_task(stall()) if stall_s > 0 else None
        await asyncio.gather(*(create() for _ in range(users)))
        result.wall_s = clock.now - started
        if stalls is not None:
            stalls.cancel()

    run_virtual(main(), clock)
    return result


def adaptive_pacer(concurrency: int = 16) -> Callable[[VirtualClock, Callable[[], float]], Pacer]:
    """The client's default pacer (``SCIM_CONCURRENCY`` 16, adaptive, no ceiling) on the virtual clocks."""
    return lambda clock, cpu_clock: Pacer(
        max_concurrency=concurrency, clock=clock, sleep=asyncio.sleep, cpu_clock=cpu_clock
    )
