"""Adaptive pacing: one pacer per client finds and holds the target's rate, and bounds its concurrency.

Every request of a client passes through one :class:`Pacer` (``async with pacer.slot() as slot``), which spaces
requests at its current rate (no bursts) and keeps at most its current concurrency window in flight. What the
answers say adjusts both:

- **announced limits** — ``RateLimit-Policy`` / ``RateLimit`` (draft-ietf-httpapi-ratelimit-headers, and its older
  ``RateLimit-Limit/-Remaining/-Reset`` form), ``X-RateLimit-Limit/-Remaining/-Reset`` and ``x-rate-limit-*`` (as
  SailPoint reads them): the pacer holds just under the announced rate, and stops until the reset when the server
  says nothing remains;
- **unannounced limits** — the pacer starts unpaced (at most the concurrency window in flight, the analogue of TCP's
  initial window). A 429 means the server's allowance was spent when its request was sent: from then on the server
  accepts its own rate whatever we send, so the answers to the requests sent since then measure it (what they were
  sent at, times the share accepted). The measurement ends after 20 accepted answers (and at least 0.25 s, unless a
  quarter were 429s), or after 1 s. Far over the limit (6 of the first 8 answers, or half of 16, refused) every
  moment costs 429s: the rate comes down at once to what was accepted (at most eightfold per step) and is measured
  again, then doubles per second of success (slow start) until its next 429, which is measured near the limit. Near
  the limit the rate is set to 97 % of what the server accepted (90 % when a quarter of the answers were 429s within
  0.25 s: few were counted), then follows CUBIC (RFC 9438): back at that rate after the time 150 requests take (1 to
  8 s), flat around it, then probing above it ever faster (1, 4, 9 times the cut's depth after two, three, four such
  times), so a raised limit is found again. 429s answering requests sent before a cut (or given their turn before
  it) say nothing new. The rate never goes under half of the most the server was found to accept in the last 30 s,
  and grows only while it is what holds requests back.
- **concurrency** — the window of requests in flight is cut by a quarter on the first 429 while unpaced; once per
  window of answers, it grows by one while few requests are only queued (latency near the lowest seen), and shrinks
  by one when many are (TCP Vegas) while this process is busy (80 % of a core): latency that varies on its own (a
  loaded machine, a network) must not shrink the window and the throughput with it. Once paced, it is also held to
  what the rate times the latency needs. A retry (``slot(retry=True)``) waits ahead of the requests not sent yet:
  behind an onboarding queued at the rate, it would wait for the whole queue again.
- **429s that do not depend on the rate** — when a measurement taken under the rate the previous one set (within 5 s)
  still sees at least half its share of 429s (a gateway throttling a share of requests; under a real limit the share
  drops to next to nothing), that share is tolerated from then on and the episode's starting rate restored; from
  then on only a count of 429s two standard deviations (plus one) over it cuts, and what the server accepted is
  counted without it. While the client sends under half its rate (few requests left to make), only a share of 25 %
  cuts. (A gateway refusing half of all requests looks like a flood, and is paced as a limit.)

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
"""How far back the client's own sending rate is measured when the first 429 arrives."""
MIN_SPAN_S = 0.01
SAMPLE_ACCEPTED = 20
"""A measurement of the server's rate ends after this many accepted answers..."""
SAMPLE_MIN_S = 0.25
SAMPLE_CLEAR_SHARE = 0.25
"""... and at least this long (a few dozen of a fast server's answers count its rate to ±20 %), unless this share
of them were 429s (every moment costs 429s, and the rate is clearly over the limit)..."""
SAMPLE_MIN_ANSWERS = 16
SAMPLE_MAX_S = 1.0
"""... or, with at least ``SAMPLE_MIN_ANSWERS`` answers, after this long..."""
FLOOD_SHARE = 0.5
"""... or as soon as ``SAMPLE_MIN_ANSWERS`` answers hold this share of 429s: far over the limit, every moment there
costs 429s, so the rate comes down at once, by at most ``MAX_DESCENT``, and is measured again."""
FLOOD_EARLY_ANSWERS = 8
FLOOD_EARLY_SHARE = 0.75
"""A flood is also 6 of the first 8 answers refused (a gateway refusing 10 % of requests at random does that once in
40,000 measurements)."""
MAX_DESCENT = 1 / 8
UNDER_MEASURED = 0.97
"""After a measurement near the limit, the rate is set to this share of what the server accepted."""
UNDER_FLOOD = 0.9
"""The share after a flood, whose few accepted answers measure the server's rate roughly."""
UNDER_ANNOUNCED = 0.98
"""The share of an announced limit the pacer holds (room for clock skew and the other requests of the run)."""
PROBE_REQUESTS = 150.0
"""After a cut near the limit, the rate is back at what the server accepted after the time this many requests take
(``PROBE_MIN_S`` to ``PROBE_MAX_S``), flat around it, then probes above it faster and faster: at 25/s one 429 per
about 300 requests, and a raised limit found again within a few such times."""
PROBE_MIN_S = 1.0
PROBE_POWER_ABOVE = 2.0
PROBE_MAX_S = 8.0
SLOW_START_PER_S = 2.0
"""After a flood, the rate doubles per second of success until the next 429."""
GROWTH_INTERVAL_S = 0.1
GROWTH_DEMAND = 0.8
GROWTH_SPAN_S = 0.25
RECENT_CUT_S = 5.0
SHARE_MARGIN = 0.02
"""A 429 share at or under this (above a tolerated background share) does not cut the rate."""
PEAK_FLOOR = 0.5
PEAK_MEMORY_S = 30.0
DEMAND_BOUND = 0.5
DEMAND_BOUND_SHARE = 0.25
"""Sending under half the rate, only a 429 share this high cuts: the client is not sending enough to find a
limit."""
WINDOW_CUT = 0.75
MIN_WINDOW = 2
QUEUED_LOW = 2.0
QUEUED_HIGH = 4.0
"""The concurrency window grows while fewer requests than this are queued, and shrinks past ``QUEUED_HIGH`` while
the process uses at least ``CPU_BOUND_SHARE`` of a core (measured over ``CPU_SPAN_S`` or more)."""
CPU_BOUND_SHARE = 0.8
CPU_SPAN_S = 0.25
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


@dataclass(slots=True)
class _Sample:
    """The answers to the requests sent since a measurement of the server's rate began (since the request whose 429
    began it, which is not one of them)."""

    started_at: float
    answered: int = 0
    throttled: int = 0
    first_sent: float = math.inf
    last_sent: float = -math.inf

    @property
    def accepted(self) -> int:
        return self.answered - self.throttled

    def add(self, sent_at: float, throttled: bool) -> None:
        self.answered += 1
        self.throttled += throttled
        self.first_sent = min(self.first_sent, sent_at)
        self.last_sent = max(self.last_sent, sent_at)

    def sending_rate(self) -> float | None:
        """Requests per second these answers were sent at (``None`` from fewer than two)."""
        span = self.last_sent - self.first_sent
        return (self.answered - 1) / span if self.answered > 1 and span > 0 else None


@dataclass(slots=True)
class _Episode:
    """A congestion episode (measurements less than ``RECENT_CUT_S`` apart belong to one)."""

    last_at: float
    share: float
    """The share of 429s the latest measurement saw."""
    rate: float | None
    """The rate before the episode's first cut."""
    set_to: float | None
    """The rate the latest measurement set."""


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
        cpu_clock: Callable[[], float] = time.process_time,
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
        self._retry_waiters: deque[asyncio.Future[None]] = deque()
        self._next_slot = 0.0
        self._hold_until = 0.0
        self._learned: float | None = None
        self._announced: float | None = None
        self._longest_reset_s = 0.0
        self._last_cut = -math.inf
        self._measured_after = -math.inf
        self._last_growth = clock()
        self._held_back = False
        self._successes_in_window = 0
        self._answers: deque[tuple[float, bool]] = deque()
        self._throttled = 0
        self._cuts = 0
        self._first_answer_at: float | None = None
        self._latency_s: float | None = None
        self._found_lately: deque[tuple[float, float]] = deque()
        self._found: float | None = None
        """What the last measurement near the limit found the server to accept (``None``: none, or a flood's)."""
        self._plateau_s = PROBE_MIN_S
        self._gap = 0.0
        self._episode: _Episode | None = None
        self._sample: _Sample | None = None
        self._last_held_back_at = -math.inf
        self._base_latency_s = math.inf
        self._background_share = 0.0
        self._cpu_clock = cpu_clock
        self._cpu_at = (clock(), cpu_clock())
        self._cpu_share_seen = 0.0

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

    def slot(self, *, retry: bool = False) -> PacedSlot:
        """``async with pacer.slot() as slot:`` send one request, then ``slot.observe(status, headers)``.

        ``retry``: the request was sent before (a 429 or a failure): it goes ahead of the requests not sent yet, so a
        retry waits for the next free place rather than behind a whole onboarding queued at the rate."""
        return PacedSlot(self, retry=retry)

    async def acquire(self, *, retry: bool = False) -> float:
        """Wait for a concurrency slot and for this request's turn; return the send time (pair with
        :meth:`release`)."""
        await self._enter(retry)
        try:
            await self._pace()
        except BaseException:
            self.release()
            raise
        return self._clock()

    def release(self) -> None:
        self._in_flight -= 1
        self._wake()

    async def _enter(self, retry: bool) -> None:
        queue = self._retry_waiters if retry else self._waiters
        if self._in_flight < self.concurrency and not queue and not self._retry_waiters:
            self._in_flight += 1
            return
        self._last_held_back_at = self._clock()
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release()  # the slot was handed over as the waiter was cancelled: give it back
            elif granted in queue:
                queue.remove(granted)
            raise

    def _wake(self) -> None:
        limit = self.concurrency
        for queue in (self._retry_waiters, self._waiters):  # retries first, each queue in its order
            while queue and self._in_flight < limit:
                waiter = queue.popleft()
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
        while self._answers and self._answers[0][0] < now - MEASURE_WINDOW_S:
            self._answers.popleft()
        if throttled:
            self._throttled += 1
        if not self.adaptive:
            return
        announcement = read_rate_limit_headers(headers)
        if announcement is not None:
            self._take(announcement, now)
        self._measure(now, sent_at, throttled)
        if not throttled and self._sample is None:
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

    def _measure(self, now: float, sent_at: float, throttled: bool) -> None:
        """Count one answer towards the measurement of the server's rate that a 429 starts; conclude it when it has
        seen enough (see the module documentation)."""
        sample = self._sample
        if sample is None:
            if not throttled or sent_at < self._measured_after:
                return  # answers to requests sent before the last cut say nothing new
            if self._learned is None:
                # Unpaced until now: pace at the rate the client was sending, so that what follows is measured.
                self._learned = max(MIN_RATE_PER_S, self._sending_rate(now))
                if self.ceiling_per_s is not None:
                    self._learned = min(self._learned, self.ceiling_per_s)
                self._window = max(1, math.ceil(self._window * WINDOW_CUT))
            # The 429 says the server's allowance was spent when its request was sent: from then on the server
            # accepts its own rate, whatever we send. The requests sent since measure it (this one, picked for being
            # a 429, would bias the measurement).
            self._sample = _Sample(started_at=sent_at)
            return
        if sent_at <= sample.started_at:
            return
        sample.add(sent_at, throttled)
        refused = sample.throttled / sample.answered
        flooding = (sample.answered >= FLOOD_EARLY_ANSWERS and refused >= FLOOD_EARLY_SHARE) or (
            sample.answered >= SAMPLE_MIN_ANSWERS and refused >= FLOOD_SHARE
        )
        settled = now - sample.started_at >= SAMPLE_MIN_S or refused >= SAMPLE_CLEAR_SHARE
        enough = (sample.accepted >= SAMPLE_ACCEPTED and settled) or (
            sample.answered >= SAMPLE_MIN_ANSWERS and now - sample.started_at >= SAMPLE_MAX_S
        )
        if flooding or enough:
            self._sample = None
            self._last_growth = now  # the rate does not grow while it is measured
            self._conclude(now, sample)

    def _recent_answers_per_s(self, now: float) -> float:
        """Answers per second over the last ``GROWTH_SPAN_S`` (a rate that doubles per second is this close)."""
        since = now - GROWTH_SPAN_S
        count = 0
        for at, _ in reversed(self._answers):
            if at < since:
                break
            count += 1
        first = self._first_answer_at if self._first_answer_at is not None else now
        return count / max(MIN_SPAN_S, min(GROWTH_SPAN_S, now - first))

    def _sending_rate(self, now: float) -> float:
        """Answers per second over the last ``MEASURE_WINDOW_S`` (or since the first answer, when sooner)."""
        first = self._first_answer_at if self._first_answer_at is not None else now
        span = max(MIN_SPAN_S, min(MEASURE_WINDOW_S, now - first))
        return len(self._answers) / span

    def _conclude(self, now: float, sample: _Sample) -> None:
        """Set the rate from a finished measurement: just under what the server accepted, unless the 429s turn out
        not to depend on the rate."""
        current = self.rate_per_s
        sending = sample.sending_rate() or current or 0.0
        share = sample.throttled / sample.answered
        accepted = sending * (1.0 - share)
        background = self._background_share
        if background > 0:
            # A share of 429s is tolerated: only clearly more cuts (two standard deviations of the count over the
            # tolerated share, plus one), and what the server accepted is counted without it.
            expected = sample.answered * background
            spread = 2.0 * math.sqrt(expected * (1.0 - background)) + 1.0
            if sample.throttled <= expected + spread:
                return
            accepted = sending * (1.0 - max(0.0, share - background))
        if 0 < share <= background + SHARE_MARGIN:
            return  # no more 429s than the tolerated background
        if current is not None and sending < DEMAND_BOUND * current and share < DEMAND_BOUND_SHARE:
            return  # sending far under the rate (few requests left): what the server accepted measures our demand
        if sample.throttled == 0 and (self._found is None or sending < self._found * UNDER_MEASURED):
            # Nothing refused since the 429 that began the measurement, and the rate is not where a limit was found:
            # a stray 429 (or one sent at the rate before the last cut).
            return
        if self._rate_independent(now, share, current):
            return
        if share >= FLOOD_SHARE:
            # Far over the limit: down at once to what the server accepted (roughly: few answers were accepted),
            # by at most ``MAX_DESCENT``; then slow start, whose first step over the limit is measured again.
            # The count is small: one more accepted answer than seen (Laplace's rule) keeps one unlucky count from
            # sending the rate far under the limit.
            rough = sending * (sample.accepted + 1) / (sample.answered + 1)
            # The send times of a few answers can say far less than was sent when this process stalls (a loaded
            # machine): the rate it paced at bounds the step too.
            target = max(rough * UNDER_FLOOD, max(sending, current or sending) * MAX_DESCENT)
            self._found = None
        else:
            # Just under what the server accepted; then CUBIC holds around it. A measurement cut short by many 429s
            # counted few answers: the cut is deeper, so the probe above climbs faster.
            short = now - sample.started_at < SAMPLE_MIN_S and share >= SAMPLE_CLEAR_SHARE
            target = min(accepted, current or accepted) * (UNDER_FLOOD if short else UNDER_MEASURED)
            self._found = accepted
        if self._found is not None:
            self._found_lately.append((now, accepted))
        while self._found_lately and self._found_lately[0][0] < now - PEAK_MEMORY_S:
            self._found_lately.popleft()
        # Never under half of the most the server was found to accept lately near its limit (a flood's rough count
        # is not one): a gateway refusing a share of requests must not bring the rate down to nothing before it is
        # recognised.
        floor = max((found for _, found in self._found_lately), default=0.0) * PEAK_FLOOR
        target = max(target, floor, MIN_RATE_PER_S)
        if self.ceiling_per_s is not None:
            target = min(target, self.ceiling_per_s)
        if current is not None:
            target = min(target, current)
        self._learned = target
        if self._episode is not None:
            self._episode.set_to = target
        if self._found is not None:
            self._gap = max(0.0, 1.0 - target / self._found) if self._found > 0 else 0.0
            self._plateau_s = min(PROBE_MAX_S, max(PROBE_MIN_S, PROBE_REQUESTS / max(self._found, MIN_RATE_PER_S)))
        self._successes_in_window = 0
        self._last_cut = now
        # Requests already given a turn at the old rate go out after the cut: their 429s say nothing new either.
        self._measured_after = max(now, self._next_slot)
        self._last_growth = now
        self._held_back = False
        self._cuts += 1

    def _rate_independent(self, now: float, share: float, current: float | None) -> bool:
        """Whether the 429s do not depend on our rate: a measurement taken under the rate the previous one set (the
        client slowed down to just under what the server accepted) still sees at least half its share of 429s. Against
        a real limit the share drops to next to nothing there; a gateway refusing a share of requests at random keeps
        refusing it. That share is tolerated from then on, and the rate before the episode's first cut restored."""
        if share >= FLOOD_SHARE:
            self._episode = None  # far over a limit (a gateway refusing half the requests at random is one too)
            return False
        episode = self._episode
        if episode is None or now - episode.last_at >= RECENT_CUT_S:
            self._episode = _Episode(last_at=now, share=share, rate=current, set_to=None)
            return False
        unchanged = current is not None and episode.set_to is not None and current <= episode.set_to * 1.01
        if unchanged and episode.share > 0 and share >= 0.5 * episode.share:
            self._background_share = share
            if episode.rate is not None:
                self._learned = episode.rate
            self._episode = None
            return True
        episode.last_at, episode.share = now, share
        return False

    def _cpu_share(self, now: float) -> float:
        """The share of one core this process used since the last look (at most every ``CPU_SPAN_S``)."""
        span = now - self._cpu_at[0]
        if span < CPU_SPAN_S:
            return self._cpu_share_seen
        cpu = self._cpu_clock()
        self._cpu_share_seen = (cpu - self._cpu_at[1]) / span
        self._cpu_at = (now, cpu)
        return self._cpu_share_seen

    def _grow(self, now: float) -> None:
        self._successes_in_window += 1
        if self._successes_in_window >= self._window and self._latency_s:
            # Once per window of answers (TCP Vegas): how many of the requests in flight are only queued, in this
            # process's event loop or the server's? Few: room for one more; many: one fewer. Queued requests cost
            # CPU (httpcore scans its whole pool for every request) and buy no throughput.
            self._successes_in_window = 0
            queued = self._window * (1.0 - self._base_latency_s / self._latency_s)
            cpu_bound = self._cpu_share(now) >= CPU_BOUND_SHARE
            if (queued < QUEUED_LOW or not cpu_bound) and self._window < self.max_concurrency:
                self._window += 1
                self._wake()
            elif queued > QUEUED_HIGH and cpu_bound and self._window > MIN_WINDOW:
                # Only while this process is busy is the latency above the lowest its own queue: latency that
                # varies on its own (a loaded machine, a network, a server's jitter) would shrink the window to
                # nothing and the throughput with it.
                self._window -= 1
        elapsed = now - self._last_growth
        if elapsed < GROWTH_INTERVAL_S:
            return
        if self._learned is None:
            self._last_growth = now
            return
        if self._held_back and self._recent_answers_per_s(now) >= GROWTH_DEMAND * self._learned:
            # Only a rate that is what holds requests back needs to grow (not one over what the concurrency window,
            # the client's CPU or its demand allow).
            if self._found is None:
                # Slow start: after a flood the server's rate is known roughly; double until the next 429 (the
                # server's allowance is spent: the first step over its rate is refused at once, and measured).
                self._learned *= SLOW_START_PER_S**elapsed
            else:
                # CUBIC (RFC 9438): back at the rate found after the plateau time, flat around it, then probing
                # faster and faster above it: a limit that was raised is found again in a few plateaus.
                since = now - self._last_cut
                rise = _cubic(since, self._plateau_s) - _cubic(since - elapsed, self._plateau_s)
                self._learned += self._found * self._gap * rise
            if self.ceiling_per_s is not None:
                self._learned = min(self._learned, self.ceiling_per_s)
        self._last_growth = now
        self._held_back = False


def _cubic(since_cut_s: float, plateau_s: float) -> float:
    """The rate's curve after a cut, in units of the cut's depth: CUBIC's concave return (-1 at the cut, 0 after the
    plateau time), then a gentler probe than CUBIC's above the rate found (1, 4, 9 after two, three, four plateau
    times): a limit's allowance stored while under it hides how far over it the rate has gone."""
    x = (since_cut_s - plateau_s) / plateau_s
    return x**3 if x < 0 else x**PROBE_POWER_ABOVE


class PacedSlot:
    """One request's place in a :class:`Pacer` (an async context manager)."""

    def __init__(self, pacer: Pacer, *, retry: bool = False) -> None:
        self._pacer = pacer
        self._retry = retry
        self.sent_at = 0.0

    async def __aenter__(self) -> PacedSlot:
        self.sent_at = await self._pacer.acquire(retry=self._retry)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._pacer.release()

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        self._pacer.observe(status, headers, sent_at=self.sent_at)
