"""The pacer on a fake clock: spacing, AIMD on 429s, announced limits, the ceiling, the concurrency window."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable

import httpx
import pytest

from scim_pipeline.scim.pacing import (
    PROBE_REQUESTS,
    UNDER_ANNOUNCED,
    UNDER_MEASURED,
    Pacer,
    read_rate_limit_headers,
)

from .rate_limited_target import adaptive_pacer, onboard

NO_HEADERS = httpx.Headers()


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def pacer(clock: FakeClock, **options: object) -> Pacer:
    values: dict[str, object] = {"max_concurrency": 16, **options}
    return Pacer(clock=clock, sleep=clock.sleep, **values)  # type: ignore[arg-type]


async def send(p: Pacer, clock: FakeClock, status: int = 200, headers: httpx.Headers = NO_HEADERS) -> None:
    """One request through the pacer, answered at once."""
    sent_at = await p.acquire()
    p.observe(status, headers, sent_at=sent_at)
    p.release()


def accept_for(p: Pacer, clock: FakeClock, *, per_s: float, seconds: float, latency_s: float = 0.0) -> None:
    """Answers the server accepted at ``per_s`` for ``seconds``, each ``latency_s`` after its request."""
    for _ in range(round(per_s * seconds)):
        clock.now += 1.0 / per_s
        p.observe(200, NO_HEADERS, sent_at=clock.now - latency_s)


async def test_an_unthrottled_pacer_lets_every_request_through_at_once() -> None:
    clock = FakeClock()
    p = pacer(clock)
    for _ in range(50):
        await send(p, clock)
    assert clock.slept == []
    assert p.rate_per_s is None


async def test_requests_are_spaced_at_the_ceiling() -> None:
    clock = FakeClock()
    p = pacer(clock, ceiling_per_s=20)
    started = clock.now
    for _ in range(21):
        await send(p, clock)
    assert clock.now - started == pytest.approx(1.0)
    assert max(clock.slept) == pytest.approx(0.05)


def answer_for(
    p: Pacer, clock: FakeClock, *, per_s: float, seconds: float, refused_every: int = 0, latency_s: float = 0.0
) -> None:
    """Answers to requests sent at ``per_s`` for ``seconds``; every ``refused_every``-th a 429 (0: none)."""
    for index in range(1, round(per_s * seconds) + 1):
        clock.now += 1.0 / per_s
        refused = refused_every > 0 and index % refused_every == 0
        p.observe(429 if refused else 200, NO_HEADERS, sent_at=clock.now - latency_s)


def measured_cut(clock: FakeClock, *, sending: float = 40, accepted: float = 30) -> Pacer:
    """A pacer that sent at ``sending`` until a 429, then measured the server accepting ``accepted`` of it."""
    p = pacer(clock)
    accept_for(p, clock, per_s=sending, seconds=2)
    p.observe(429, NO_HEADERS, sent_at=clock.now)  # the allowance is spent: a measurement begins
    refused_every = round(sending / (sending - accepted))
    for index in range(1, 1000):
        clock.now += 1.0 / sending
        p.observe(429 if index % refused_every == 0 else 200, NO_HEADERS, sent_at=clock.now)
        if p.snapshot().cuts:
            return p
    raise AssertionError("the measurement never ended")


async def test_a_429_measures_the_server_and_sets_the_rate_just_under_what_it_accepted() -> None:
    clock = FakeClock()
    p = pacer(clock)
    accept_for(p, clock, per_s=40, seconds=2)
    p.observe(429, NO_HEADERS, sent_at=clock.now)
    assert p.snapshot().cuts == 0, "one 429 starts a measurement; it does not guess"
    assert p.rate_per_s == pytest.approx(40, rel=0.05), "paced at what the client was sending, to measure"
    answer_for(p, clock, per_s=40, seconds=1.0, refused_every=4)  # the server accepts 30 of the 40 a second

    assert p.snapshot().cuts == 1
    assert p.rate_per_s == pytest.approx(30 * UNDER_MEASURED, rel=0.05)


async def test_429s_answering_requests_sent_before_the_cut_do_not_cut_again() -> None:
    clock = FakeClock()
    p = measured_cut(clock)
    sent_before = clock.now - 0.01
    rate = p.rate_per_s
    clock.now += 1.5
    for _ in range(30):
        p.observe(429, NO_HEADERS, sent_at=sent_before)
    answer_for(p, clock, per_s=20, seconds=1.0)
    assert p.snapshot().cuts == 1
    assert p.rate_per_s == rate


async def test_a_flood_of_429s_brings_the_rate_down_at_once() -> None:
    clock = FakeClock()
    p = pacer(clock)
    accept_for(p, clock, per_s=1000, seconds=0.2)  # unpaced: the server's allowance holds for a while
    p.observe(429, NO_HEADERS, sent_at=clock.now)
    started = clock.now
    answer_for(p, clock, per_s=1000, seconds=0.008, refused_every=1)  # the next 8 answers: all refused

    assert clock.now - started < 0.01, "backs off on the first answers, not after a second"
    assert p.snapshot().cuts == 1
    rate = p.rate_per_s
    assert rate is not None
    # No more than one answer in 9 could have been accepted; at most an eightfold descent per step.
    assert 1000 / 8 - 0.01 <= rate <= 1000 / 9 * 2


async def test_after_a_flood_the_rate_ramps_up_fast_until_the_next_429() -> None:
    clock = FakeClock()
    p = pacer(clock)
    accept_for(p, clock, per_s=1000, seconds=0.2)
    p.observe(429, NO_HEADERS, sent_at=clock.now)
    answer_for(p, clock, per_s=1000, seconds=0.008, refused_every=1)
    after_flood = p.rate_per_s
    assert after_flood is not None
    started = clock.now
    while clock.now - started < 2:
        await send(p, clock)  # each waits its turn: the pacer is what holds requests back

    # Slow start: doubling per second of success (like TCP), not a few per cent.
    assert p.rate_per_s == pytest.approx(after_flood * 4, rel=0.1)


async def test_near_the_limit_the_rate_returns_to_what_was_found_then_probes_gently_above_it() -> None:
    clock = FakeClock()
    p = measured_cut(clock, sending=40, accepted=30)
    cut = p.rate_per_s
    assert cut is not None
    found = cut / UNDER_MEASURED  # what the measurement found the server to accept (about 30)
    assert found == pytest.approx(30, rel=0.05)
    plateau_s = PROBE_REQUESTS / found  # the time 150 requests take at the rate found (5 s)
    started = clock.now
    rates: list[float] = []
    for checkpoint in (plateau_s / 2, plateau_s, 2 * plateau_s, 3 * plateau_s):
        while clock.now - started < checkpoint:
            await send(p, clock)
        assert p.rate_per_s is not None
        rates.append(p.rate_per_s)

    half, back, probe, further = rates
    depth = found - cut
    assert found - depth / 4 < half < found, "concave: most of the way back in half the time"
    assert back == pytest.approx(found, rel=0.01)
    assert probe == pytest.approx(found + depth, rel=0.01)
    assert further == pytest.approx(found + 4 * depth, rel=0.01)


async def test_the_rate_does_not_grow_while_it_holds_nothing_back() -> None:
    clock = FakeClock()
    p = measured_cut(clock)
    found = p.rate_per_s
    for _ in range(20):  # one request a second: far under the rate found
        clock.now += 1.0
        await send(p, clock)
    assert p.rate_per_s == found


class Bucket:
    """A server's token bucket holding one second of requests, as the emulator (and many gateways) limit."""

    def __init__(self, clock: FakeClock, rate: float) -> None:
        self.clock, self.rate, self.tokens, self.updated = clock, rate, rate, clock.now

    def admits(self) -> bool:
        self.tokens = min(self.rate, self.tokens + (self.clock.now - self.updated) * self.rate)
        self.updated = self.clock.now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


async def drive(
    p: Pacer, clock: FakeClock, admits: Callable[[], bool], *, seconds: float, latency_s: float = 0.002
) -> tuple[int, int]:
    """One caller sending back to back through the pacer for ``seconds``; ``(accepted, throttled)``."""
    accepted = throttled = 0
    end = clock.now + seconds
    while clock.now < end:
        sent_at = await p.acquire()
        clock.now += latency_s
        if admits():
            accepted += 1
            p.observe(200, NO_HEADERS, sent_at=sent_at)
        else:
            throttled += 1
            p.observe(429, NO_HEADERS, sent_at=sent_at)
        p.release()
    return accepted, throttled


@pytest.mark.parametrize("limit", [25, 100, 400])
async def test_an_unannounced_limit_is_found_and_held(limit: int) -> None:
    clock = FakeClock()
    p = pacer(clock)
    accepted, throttled = await drive(p, clock, Bucket(clock, limit).admits, seconds=80)
    assert accepted / 80 >= 0.95 * limit
    assert throttled / (accepted + throttled) <= 0.03


async def test_a_share_of_429s_that_does_not_depend_on_the_rate_does_not_collapse_it() -> None:
    clock = FakeClock()
    p = pacer(clock)
    draws = random.Random(7)
    # A gateway refusing 10 % of requests whatever the rate; the caller alone could send 500 a second.
    accepted, _ = await drive(p, clock, lambda: draws.random() >= 0.1, seconds=60)
    assert accepted / 60 >= 0.6 * 500 * 0.9


async def test_the_concurrency_window_is_cut_on_429s_and_grows_back_with_success() -> None:
    clock = FakeClock()
    p = pacer(clock, max_concurrency=16)
    accept_for(p, clock, per_s=40, seconds=2, latency_s=0.5)
    p.observe(429, NO_HEADERS, sent_at=clock.now - 0.5)
    assert p.concurrency == 12
    accept_for(p, clock, per_s=40, seconds=10, latency_s=0.5)
    assert p.concurrency == 16


class BusyCpu:
    """A process CPU clock: ``share`` of a core in use as the fake clock advances."""

    def __init__(self, clock: FakeClock, share: float) -> None:
        self.clock, self.share, self.started = clock, share, clock.now

    def __call__(self) -> float:
        return (self.clock.now - self.started) * self.share


async def test_a_window_whose_requests_only_queue_in_a_busy_process_shrinks() -> None:
    clock = FakeClock()
    queueing = pacer(clock, max_concurrency=16, cpu_clock=BusyCpu(clock, 1.0))
    accept_for(queueing, clock, per_s=500, seconds=0.2, latency_s=0.001)
    accept_for(queueing, clock, per_s=500, seconds=5, latency_s=0.032)  # 16 in flight, 31 ms of it queueing
    assert queueing.concurrency < 8


async def test_latency_that_varies_on_its_own_leaves_the_window_open() -> None:
    clock = FakeClock()
    draws = random.Random(3)
    idle = BusyCpu(clock, 0.1)  # a loaded machine or a jittery network: this process is mostly waiting
    jittery = pacer(clock, max_concurrency=16, cpu_clock=idle)
    for _ in range(5000):
        clock.now += 0.002
        jittery.observe(200, NO_HEADERS, sent_at=clock.now - 0.001 - draws.expovariate(1 / 0.02))
    assert jittery.concurrency == 16
    steady = pacer(clock, max_concurrency=16, cpu_clock=idle)
    accept_for(steady, clock, per_s=500, seconds=5, latency_s=0.02)  # the server's own 20 ms
    assert steady.concurrency == 16


async def test_once_paced_the_window_holds_to_what_the_rate_times_the_latency_needs() -> None:
    clock = FakeClock()
    p = pacer(clock, max_concurrency=32)
    accept_for(p, clock, per_s=100, seconds=2, latency_s=0.02)
    assert p.concurrency == 32  # not paced: the window alone
    for _ in range(6):
        p.observe(429, NO_HEADERS, sent_at=clock.now - 0.02)
    rate = p.rate_per_s
    assert rate is not None
    assert p.concurrency == math.ceil(rate * 0.02 * 2) + 2


async def test_the_concurrency_window_bounds_requests_in_flight() -> None:
    p = Pacer(max_concurrency=3)
    in_flight = peak = 0

    async def one() -> None:
        nonlocal in_flight, peak
        async with p.slot():
            in_flight += 1
            peak = max(peak, in_flight)
            await asyncio.sleep(0.001)
            in_flight -= 1

    await asyncio.gather(*(one() for _ in range(30)))
    assert peak == 3


async def test_a_retry_goes_ahead_of_the_requests_not_sent_yet() -> None:
    p = Pacer(max_concurrency=1)
    await p.acquire()
    order: list[str] = []

    async def wait(name: str, *, retry: bool) -> None:
        await p.acquire(retry=retry)
        order.append(name)
        p.release()

    queued = [asyncio.create_task(wait(f"new-{index}", retry=False)) for index in range(3)]
    await asyncio.sleep(0)
    retries = [asyncio.create_task(wait(f"retry-{index}", retry=True)) for index in range(2)]
    await asyncio.sleep(0)
    p.release()
    await asyncio.gather(*queued, *retries)

    assert order == ["retry-0", "retry-1", "new-0", "new-1", "new-2"]


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    p = Pacer(max_concurrency=1)
    await p.acquire()
    waiter = asyncio.create_task(p.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    p.release()
    await asyncio.wait_for(p.acquire(), timeout=1)


@pytest.mark.parametrize(
    "headers",
    [
        {"RateLimit-Policy": '"default";q=50;w=1', "RateLimit": '"default";r=49;t=1'},
        {"RateLimit-Policy": '"burst";q=100;w=1, "daily";q=3000;w=60'},
        {"RateLimit-Limit": "50", "RateLimit-Remaining": "49", "RateLimit-Reset": "1"},
        {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "49", "X-RateLimit-Reset": "1"},
        {"x-rate-limit-limit": "50", "x-rate-limit-remaining": "49", "x-rate-limit-reset": "1"},
    ],
    ids=["ietf", "ietf-two-policies", "ietf-draft-fields", "x-ratelimit", "x-rate-limit"],
)
async def test_an_announced_limit_is_held_just_under(headers: dict[str, str]) -> None:
    clock = FakeClock()
    p = pacer(clock)
    await send(p, clock, headers=httpx.Headers(headers))
    assert p.rate_per_s == pytest.approx(50 * UNDER_ANNOUNCED)


async def test_nothing_remaining_holds_every_request_until_the_reset() -> None:
    clock = FakeClock()
    p = pacer(clock)
    await send(p, clock, headers=httpx.Headers({"RateLimit-Policy": "600;w=60", "RateLimit": "r=0;t=7"}))
    before = clock.now
    await send(p, clock)
    assert clock.now - before == pytest.approx(7)


async def test_the_ceiling_wins_over_an_announced_or_learned_rate() -> None:
    clock = FakeClock()
    p = pacer(clock, ceiling_per_s=10)
    await send(p, clock, headers=httpx.Headers({"X-RateLimit-Limit": "500", "X-RateLimit-Reset": "1"}))
    assert p.rate_per_s == 10


async def test_without_adaptive_pacing_429s_and_headers_change_nothing() -> None:
    clock = FakeClock()
    p = pacer(clock, adaptive=False)
    accept_for(p, clock, per_s=40, seconds=2)
    await send(p, clock, status=429, headers=httpx.Headers({"X-RateLimit-Limit": "5"}))
    assert p.rate_per_s is None
    assert p.concurrency == 16
    assert p.snapshot().throttled == 1


def test_a_reset_given_as_a_unix_time_is_read_as_seconds_from_now() -> None:
    found = read_rate_limit_headers(
        httpx.Headers({"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "10", "X-RateLimit-Reset": "1700000060"}),
        now_epoch=1_700_000_000,
    )
    assert found is not None
    assert (found.quota, found.remaining, found.reset_s) == (5000, 10, 60)


def test_answers_without_rate_limit_headers_announce_nothing() -> None:
    assert read_rate_limit_headers(httpx.Headers({"Content-Type": "application/scim+json"})) is None


@pytest.mark.parametrize("burst_s", [0.1, 1.0, 3.0], ids=["burst-0.1s", "burst-1s", "burst-3s"])
@pytest.mark.parametrize("limit", [25, 100, 400])
def test_onboarding_finds_an_unannounced_limit_within_seconds_and_holds_it(limit: int, burst_s: float) -> None:
    # Many creates at once, in virtual time, against a server whose allowance holds ``burst_s`` of its rate, 20 ms
    # away with up to tens of ms of jitter; 40 s of work at the limit (at least 2,000 creates).
    users = max(2000, 40 * limit)
    run = onboard(adaptive_pacer(), limit=limit, users=users, latency_s=0.02, jitter_s=0.01, burst_s=burst_s)

    assert run.share_of_limit >= 0.95
    assert run.throttled_share <= 0.03
    held = run.hold_s()
    assert held is not None
    assert held <= 5.0, "0.9 of the limit held within 5 s of the first request"
