"""Adaptive pacing: one pacer per client finds and holds the target's rate, and bounds its concurrency.

Every request of a client passes through one :class:`Pacer` (``async with pacer.slot() as slot``), which spaces
requests at its current rate (no bursts) and keeps at most its current concurrency window in flight. What the
answers say adjusts both:

- **announced limits** — ``RateLimit-Policy`` / ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers, and its older
  ``RateLimit-Limit/-Remaining/-Reset`` form), ``X-RateLimit-Limit/-Remaining/-Reset`` and ``x-rate-limit-*`` (as
  SailPoint reads them): the pacer holds just under the announced rate, and stops until the reset when the server
  says nothing remains;
- **unannounced limits** — a 429 sets the rate just under what the server actually accepted during the last second
  (a multiplicative cut when that cannot be measured; never more than a halving). 429s answering requests sent
  before the last cut do not cut again, and there is at most one cut per second. Before a full second of history
  only a flood of 429s (10 of the latest 16 answers to requests sent since the last cut: the server's burst
  allowance is spent) cuts. A cut never goes under half of the most the server accepted in the last 30 s.
  Sustained success while the pacer is what holds requests back raises the rate additively (1 % of the rate found
  per second, the step doubling every 10 s without a 429), so the pacer keeps probing just above the limit and finds
  a raised limit again.
- **concurrency** — the window of requests in flight is cut by a quarter on those events while unpaced; once per
  window of answers, it grows by one while few requests are only queued (latency near the lowest seen) and shrinks
  by one when many are (TCP Vegas). Once paced, it is also held to what the rate times the latency needs.
- **429s that do not depend on the rate** — when a cut within one congestion episode slowed the client down and
  the share of 429s stayed the same (a gateway throttling a share of requests), that share is tolerated from then
  on instead of cutting the rate down to nothing; a share up to 2 % above it never cuts. While the client sends
  far under its rate (few requests left to make), only a high share of 429s cuts. (A gateway refusing a
  third of all requests from the very first second looks like a flood, and is paced as a limit.)

``ceiling_per_s`` (``SCIM_RATE_LIMIT``) is never exceeded. With ``adaptive=False`` the pacer only applies the
ceiling and the fixed concurrency (the client's behaviour before adaptive pacing).
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from types import TracebackType

__all__ = ["Pacer", "PacingSnapshot", "RateLimitAnnouncement", "parse_retry_after", "read_rate_limit_headers"]

MEASURE_WINDOW_S = 1.0
"""How far back the accepted rate is measured when a 429 arrives."""
UNDER_MEASURED = 0.95
"""After a 429, the rate is set to this share of what the server accepted."""
UNDER_FLOOD = 0.85
"""The share after a flood in the first second, whose accepted count includes the server's burst allowance."""
UNDER_ANNOUNCED = 0.98
"""The share of an announced limit the pacer holds (room for clock skew and the other requests of the run)."""
FALLBACK_CUT = 0.7
"""The multiplicative cut when the accepted rate tells nothing (no answers, or not below the current rate)."""
GROWTH_PER_S = 0.01
"""Additive growth per second of sustained success, as a share of the rate found at the last cut."""
GROWTH_INTERVAL_S = 0.5
GROWTH_DOUBLING_S = 10.0
GROWTH_BOOST_CAP = 25.0
SETTLE_ANSWERS = 25
"""An accepted rate is measured after a cut over at least the time this many answers take (50 ms to 1 s)."""
MIN_CUT_INTERVAL_S = 1.0
"""At most one cut per second: the answers of one congestion event arrive over about that long."""
RECENT_CUT_S = 5.0
SHARE_MARGIN = 0.02
"""A 429 share at or under this (above a tolerated background share) does not cut the rate."""
LATEST = 16
FLOOD_THROTTLED = 10
"""A flood: this many of the latest answers were 429s (a gateway refusing even 15 % of requests at random makes one
about once in 100,000 answers)."""
MAX_CUT = 0.5
PEAK_FLOOR = 0.5
PEAK_MEMORY_S = 30.0
DEMAND_BOUND = 0.5
DEMAND_BOUND_SHARE = 0.25
"""Below half the rate, or with fewer than ``MIN_MEASURED_ANSWERS`` answers in the last second, only a 429 share
this high cuts: the client is not sending enough to find a limit."""
MIN_MEASURED_ANSWERS = 20
WINDOW_CUT = 0.75
MIN_WINDOW = 2
QUEUED_LOW = 2.0
QUEUED_HIGH = 4.0
"""The concurrency window grows while fewer requests than this are queued, and shrinks past ``QUEUED_HIGH``."""
BASE_LATENCY_DRIFT = 1.0005
MIN_RATE_PER_S = 0.2
_EPOCH_THRESHOLD = 1_000_000_000
"""A reset value above this is a Unix time (GitHub's convention), not a number of seconds."""

_PARAMETER = re.compile(r"(?:^|;)\s*([a-z]+)\s*=\s*(\"[^\"]*\"|[^;,\s]+)")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); ``None`` if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


@dataclass(frozen=True, slots=True)
class RateLimitAnnouncement:
    """What one answer's rate-limit headers say (every field optional)."""

    quota: float | None = None
    """Requests allowed per window."""
    window_s: float | None = None
    """The window's length, when the headers give it (IETF ``w``)."""
    remaining: float | None = None
    """Requests left in the current window."""
    reset_s: float | None = None
    """Seconds until the quota is restored."""


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip().split(",")[0].split(";")[0].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _parameters(item: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for name, raw in _PARAMETER.findall(item):
        number = _number(raw.strip('"'))
        if number is not None:
            found[name] = number
    return found


def _reset_seconds(value: float | None, now_epoch: float) -> float | None:
    if value is None:
        return None
    return max(0.0, value - now_epoch) if value > _EPOCH_THRESHOLD else value


def read_rate_limit_headers(
    headers: Mapping[str, str], *, now_epoch: float | None = None
) -> RateLimitAnnouncement | None:
    """The rate limit an answer announces, from whichever header family it uses; ``None`` when it announces none.

    ``headers`` must look names up case-insensitively (``httpx.Headers`` does)."""
    epoch = time.time() if now_epoch is None else now_epoch
    quota = window = remaining = reset = None
    policy = headers.get("ratelimit-policy")
    if policy is not None:
        # Several policies may apply ("burst", "daily"): the one allowing the lowest rate binds.
        best: tuple[float, float] | None = None
        for item in policy.split(","):
            parameters = _parameters(item)
            q = parameters.get("q", _number(item) if not item.strip().startswith('"') else None)
            w = parameters.get("w", 1.0)
            if q is not None and w > 0 and (best is None or q / w < best[0] / best[1]):
                best = (q, w)
        if best is not None:
            quota, window = best
    current = headers.get("ratelimit")
    if current is not None:
        parameters = _parameters(current)
        remaining = parameters.get("r")
        reset = parameters.get("t")
    for prefix in ("ratelimit-", "x-ratelimit-", "x-rate-limit-"):
        if quota is None:
            quota = _number(headers.get(prefix + "limit"))
        if remaining is None:
            remaining = _number(headers.get(prefix + "remaining"))
        if reset is None:
            reset = _reset_seconds(_number(headers.get(prefix + "reset")), epoch)
    if quota is None and remaining is None:
        return None
    return RateLimitAnnouncement(quota=quota, window_s=window, remaining=remaining, reset_s=reset)


@dataclass(frozen=True, slots=True)
class PacingSnapshot:
    """Where a pacer stands, for stats, logs and benchmarks."""

    rate_per_s: float | None
    """The rate requests are spaced at (``None``: not paced)."""
    concurrency: int
    announced_per_s: float | None
    learned_per_s: float | None
    throttled: int
    """429 answers seen."""
    cuts: int
    """Times the rate was cut after a 429."""


class Pacer:
    """Spaces and bounds the requests of one client; see the module documentation."""

    def __init__(
        self,
        *,
        max_concurrency: int,
        ceiling_per_s: float | None = None,
        adaptive: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if ceiling_per_s is not None and ceiling_per_s <= 0:
            raise ValueError("ceiling_per_s must be positive")
        self.max_concurrency = max_concurrency
        self.ceiling_per_s = ceiling_per_s
        self.adaptive = adaptive
        self._clock = clock
        self._sleep = sleep
        self._window = max_concurrency
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._learned: float | None = None
        self._announced: float | None = None
        self._longest_reset_s = 0.0
        self._step = 0.0
        self._last_cut = -math.inf
        self._last_growth = clock()
        self._held_back = False
        self._successes_in_window = 0
        self._answers: deque[tuple[float, bool]] = deque()
        self._latest: deque[tuple[float, float, bool]] = deque(maxlen=LATEST)
        self._throttled = 0
        self._cuts = 0
        self._first_answer_at: float | None = None
        self._latency_s: float | None = None
        self._accepted_peaks: deque[tuple[float, float]] = deque()
        self._last_held_back_at = -math.inf
        self._base_latency_s = math.inf
        self._share_at_episode = 0.0
        self._last_measured_cut = -math.inf
        self._sending_at_episode = 0.0
        self._accepted_at_episode = 0.0
        self._background_share = 0.0

    # -- what the pacer holds -------------------------------------------------------------------------------------

    @property
    def rate_per_s(self) -> float | None:
        """The current spacing rate: the lowest of the ceiling, the announced and the learned rates."""
        candidates = [self.ceiling_per_s]
        if self.adaptive:
            candidates.append(self._learned)
            candidates.append(self._announced * UNDER_ANNOUNCED if self._announced is not None else None)
        known = [rate for rate in candidates if rate is not None]
        return min(known) if known else None

    @property
    def concurrency(self) -> int:
        """Requests allowed in flight at once right now: the AIMD window, and once the rate is paced no more than
        the rate times the latency needs (Little's law, twice over): idle connections cost every request a scan of
        httpcore's pool."""
        window = self._window
        rate = self.rate_per_s
        if self.adaptive and rate is not None and self._latency_s is not None:
            window = min(window, math.ceil(rate * self._latency_s * 2) + 2)
        return window

    def snapshot(self) -> PacingSnapshot:
        return PacingSnapshot(
            rate_per_s=self.rate_per_s,
            concurrency=self.concurrency,
            announced_per_s=self._announced,
            learned_per_s=self._learned,
            throttled=self._throttled,
            cuts=self._cuts,
        )

    # -- admission ------------------------------------------------------------------------------------------------

    def slot(self) -> PacedSlot:
        """``async with pacer.slot() as slot:`` send one request, then ``slot.observe(status, headers)``."""
        return PacedSlot(self)

    async def acquire(self) -> float:
        """Wait for a concurrency slot and for this request's turn; return the send time (pair with
        :meth:`release`)."""
        await self._enter()
        try:
            await self._pace()
        except BaseException:
            self.release()
            raise
        return self._clock()

    def release(self) -> None:
        self._in_flight -= 1
        self._wake()

    async def _enter(self) -> None:
        if self._in_flight < self.concurrency and not self._waiters:
            self._in_flight += 1
            return
        self._last_held_back_at = self._clock()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the slot was handed over as the waiter was cancelled: give it back
            elif granted in self._waiters:
                self._waiters.remove(granted)
            raise

    def _wake(self) -> None:
        limit = self.concurrency
        while self._waiters and self._in_flight < limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    async def _pace(self) -> None:
        now = self._clock()
        turn = max(now, self._hold_until)
        rate = self.rate_per_s
        if rate is not None:
            turn = max(turn, self._next_slot)
            self._next_slot = turn + 1.0 / rate
        if turn > now:
            self._held_back = True
            self._last_held_back_at = now
            await self._sleep(turn - now)

    # -- feedback -------------------------------------------------------------------------------------------------

    def observe(self, status: int, headers: Mapping[str, str], *, sent_at: float) -> None:
        """Learn from one answer: ``status``, its headers, and when its request was sent."""
        now = self._clock()
        throttled = status == 429
        latency = now - sent_at
        self._latency_s = latency if self._latency_s is None else self._latency_s * 0.95 + latency * 0.05
        # The lowest latency seen, forgotten slowly (the target may get slower for good).
        self._base_latency_s = min(latency, self._base_latency_s * BASE_LATENCY_DRIFT)
        if self._first_answer_at is None:
            self._first_answer_at = now
        self._answers.append((now, throttled))
        self._latest.append((sent_at, now, throttled))
        while self._answers and self._answers[0][0] < now - MEASURE_WINDOW_S:
            self._answers.popleft()
        if throttled:
            self._throttled += 1
        if not self.adaptive:
            return
        announcement = read_rate_limit_headers(headers)
        if announcement is not None:
            self._take(announcement, now)
        if throttled:
            if sent_at >= self._last_cut:  # answers to requests sent before the last cut say nothing new
                self._consider_cut(now)
        else:
            self._grow(now)

    def _take(self, announcement: RateLimitAnnouncement, now: float) -> None:
        if announcement.reset_s is not None:
            self._longest_reset_s = max(self._longest_reset_s, announcement.reset_s)
        if announcement.quota is not None and announcement.quota > 0:
            # Without an explicit window, the longest reset seen is the best estimate of it (at least 1 s).
            window = announcement.window_s or max(1.0, self._longest_reset_s)
            self._announced = announcement.quota / window
        if announcement.remaining is not None and announcement.remaining < 1 and announcement.reset_s:
            self._hold_until = max(self._hold_until, now + announcement.reset_s)

    def _consider_cut(self, now: float) -> None:
        """Cut the rate after a 429, unless the 429s say nothing about it (see the module documentation)."""
        answers = len(self._answers)
        throttled = sum(1 for _, was_throttled in self._answers if was_throttled)
        share = throttled / answers
        sending = answers / MEASURE_WINDOW_S
        first = self._first_answer_at if self._first_answer_at is not None else now
        if now - first < MEASURE_WINDOW_S:
            # Less than a window of history: only a flood of 429s (far over the limit, e.g. once the server's
            # burst allowance is spent) says anything; a few may be a gateway throttling a share of requests.
            since_cut = [throttled for sent_at, _, throttled in self._latest if sent_at >= self._last_cut]
            if sum(since_cut) >= FLOOD_THROTTLED:
                self._cut(now, share, sending, under=UNDER_FLOOD)
            return
        # Still refused often since the last cut: the rate found then counted a burst the server allowed once, and
        # what it accepted since (burst spent) measures its rate as soon as there is enough of it.
        since_cut = [throttled for sent_at, _, throttled in self._latest if sent_at >= self._last_cut]
        refused_often = len(since_cut) >= 4 and sum(since_cut) / len(since_cut) >= 0.1
        interval = self._settle_s() if refused_often else MIN_CUT_INTERVAL_S
        if now - self._last_cut < interval or share <= self._background_share + SHARE_MARGIN:
            return
        recent = now - self._last_measured_cut < RECENT_CUT_S
        accepted = self._accepted_rate(now)
        sending = self._accepted_rate(now, all_answers=True)
        current = self.rate_per_s
        few = answers < MIN_MEASURED_ANSWERS
        if share < DEMAND_BOUND_SHARE and (few or (current is not None and sending < DEMAND_BOUND * current)):
            # Sending far under the rate (few requests to make), or too few answers to measure: what the server
            # accepted measures our demand, not its limit, and a few 429s at this pace are no sign of one.
            return
        if recent and self._rate_independent(share, sending, accepted):
            # Slowing down did not make the 429s rarer, and the server accepted less in proportion: the 429s do not
            # depend on our rate (a gateway throttling a share of requests). Cutting again would only collapse the
            # rate; that share is tolerated from now on.
            self._background_share = share
            return
        if not recent:  # the first cut of a congestion episode
            self._share_at_episode = share
            self._sending_at_episode = sending
            self._accepted_at_episode = accepted
        self._cut(now, share, sending)
        self._last_measured_cut = now

    def _settle_s(self) -> float:
        rate = self.rate_per_s or len(self._answers) / MEASURE_WINDOW_S or 1.0
        return max(0.05, min(MEASURE_WINDOW_S, SETTLE_ANSWERS / rate))

    def _accepted_rate(self, now: float, *, all_answers: bool = False) -> float:
        """What the server accepted per second (``all_answers``: what it answered) over the last window, or since the
        last cut when that is shorter and long enough to measure (the answers before a cut may hold a burst the
        server allowed once, and came at the rate before the cut)."""
        since = max(now - MEASURE_WINDOW_S, self._last_cut)
        span = now - since
        if span < self._settle_s():
            since, span = now - MEASURE_WINDOW_S, MEASURE_WINDOW_S
        counted = sum(1 for at, throttled in self._answers if at >= since and (all_answers or not throttled))
        return counted / span

    def _rate_independent(self, share: float, sending: float, accepted: float) -> bool:
        """Whether, since the episode's first cut, the client slowed down while the share of 429s stayed the same and
        what the server accepted fell with it. (Against a real limit, the server keeps accepting its limit.)"""
        if self._sending_at_episode <= 0 or self._share_at_episode <= 0 or self._accepted_at_episode <= 0:
            return False
        slowed = sending / self._sending_at_episode
        return (
            slowed <= 0.85
            and 0.7 <= share / self._share_at_episode <= 1.4
            and accepted / self._accepted_at_episode <= slowed * 1.2
        )

    def _cut(self, now: float, share: float, sending: float, *, under: float = UNDER_MEASURED) -> None:
        accepted = self._accepted_rate(now)
        current = self.rate_per_s
        target = accepted * under if accepted > 0 else max(1.0, sending * FALLBACK_CUT)
        if current is not None:
            # At most a halving per cut: a measurement taken while sending little says little about the limit.
            target = current * FALLBACK_CUT if target >= current else max(target, current * MAX_CUT)
        # Never under half of the most the server accepted lately: 429s that keep coming whatever the rate (a
        # gateway refusing a share of requests) must not cut the rate down to nothing.
        target = max(target, PEAK_FLOOR * max((rate for _, rate in self._accepted_peaks), default=0.0))
        if self.ceiling_per_s is not None:
            target = min(target, self.ceiling_per_s)
        self._learned = max(MIN_RATE_PER_S, target)
        self._step = self._learned * GROWTH_PER_S
        if current is None:  # once paced, the rate bounds the load; the window only follows the latency
            self._window = max(1, math.ceil(self._window * WINDOW_CUT))
        self._successes_in_window = 0
        self._last_cut = now
        self._last_growth = now
        self._held_back = False
        self._cuts += 1

    def _grow(self, now: float) -> None:
        self._successes_in_window += 1
        if self._successes_in_window >= self._window and self._latency_s:
            # Once per window of answers (TCP Vegas): how many of the requests in flight are only queued, in this
            # process's event loop or the server's? Few: room for one more; many: one fewer. Queued requests cost
            # CPU (httpcore scans its whole pool for every request) and buy no throughput.
            self._successes_in_window = 0
            queued = self._window * (1.0 - self._base_latency_s / self._latency_s)
            if queued < QUEUED_LOW and self._window < self.max_concurrency:
                self._window += 1
                self._wake()
            elif queued > QUEUED_HIGH and self._window > MIN_WINDOW:
                self._window -= 1
        elapsed = now - self._last_growth
        if elapsed < GROWTH_INTERVAL_S:
            return
        self._accepted_peaks.append((now, sum(1 for _, throttled in self._answers if not throttled) / MEASURE_WINDOW_S))
        while self._accepted_peaks and self._accepted_peaks[0][0] < now - PEAK_MEMORY_S:
            self._accepted_peaks.popleft()
        if self._learned is None:
            self._last_growth = now
            return
        if self._held_back:  # only a rate that is what holds requests back needs to grow
            # The longer without a 429, the faster the probe (doubling every 10 s): a rate cut too deep, or a
            # limit that was raised, is found again in seconds rather than minutes.
            boost = min(GROWTH_BOOST_CAP, 2.0 ** ((now - self._last_cut) / GROWTH_DOUBLING_S))
            self._learned += self._step * boost * elapsed
        self._last_growth = now
        self._held_back = False


class PacedSlot:
    """One request's place in a :class:`Pacer` (an async context manager)."""

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self.sent_at = 0.0

    async def __aenter__(self) -> PacedSlot:
        self.sent_at = await self._pacer.acquire()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._pacer.release()

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self._pacer.observe(status, headers, sent_at=self.sent_at)
