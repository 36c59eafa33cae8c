"""The client's one retry policy.

A 429 is retried for as long as ``retry_budget_s`` allows (a time budget: while the target keeps answering,
throttling never fails an operation), honouring ``Retry-After`` (seconds or an HTTP date) up to
``max_retry_wait_s``; 500, 502, 503, 504, connection failures and timeouts get at most ``max_attempts`` attempts,
with jittered exponential backoff. Whether a lost answer may be resent is the caller's call (``resend_lost``): a
POST never is (see :meth:`.client.ScimClient.create`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

from ._logging import RETRY_LOGGER
from .errors import AuthenticationError
from .pacing import parse_retry_after
from .results import ClientStats
from .settings import ClientSettings

__all__ = [
    "ANSWER_LOST",
    "NEVER_SENT",
    "NOT_APPLIED_STATUSES",
    "OUTCOME_UNKNOWN_STATUSES",
    "RETRYABLE_STATUSES",
    "ProvedAbsent",
    "RetryPolicy",
    "RetryableAnswer",
]

_T = TypeVar("_T")

retry_logger = logging.getLogger(RETRY_LOGGER)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
NOT_APPLIED_STATUSES = frozenset({429, 503})
"""Answers that prove a request was not applied: even a POST may be sent again."""
OUTCOME_UNKNOWN_STATUSES = frozenset({500, 502, 504})
"""Answers after which a POST may or may not have been applied (a gateway gave up waiting)."""

NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before the request left: resending is always safe."""
ANSWER_LOST = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.CloseError,
)
"""Transport failures after the request may have reached the server (the overall deadline is a ReadTimeout)."""

_FIRST_BACKOFF_S = 0.1


class RetryableAnswer(Exception):
    """An answer worth another attempt (429, 5xx); carries it for the final error."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = parse_retry_after(response.headers.get("retry-after"))


class ProvedAbsent(Exception):
    """A create's outcome was unknown, and a lookup proved it did not land: resend."""

    def __init__(self, cause: httpx.TransportError | httpx.Response) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


class RetryPolicy:
    """When to try again and how long to wait, for one client (its settings, its counters)."""

    def __init__(self, settings: ClientSettings, stats: ClientStats) -> None:
        self.settings = settings
        self.stats = stats

    def backoff_s(self, failures: int) -> float:
        """Jittered exponential backoff after the ``failures``-th failure, capped at ``max_retry_wait_s``."""
        ceiling = min(self.settings.max_retry_wait_s, _FIRST_BACKOFF_S * 2 ** (failures - 1))
        return random.uniform(ceiling / 2, ceiling)

    async def run(
        self,
        method: str,
        resource_type: str | None,
        attempt_once: Callable[[int], Awaitable[_T]],
        *,
        resend_lost: bool,
    ) -> _T:
        """``attempt_once(n)`` until it returns, or until the policy gives up (then its error is raised).

        A 429 is retried while ``retry_budget_s`` lasts (time, not a count); any other retryable failure counts
        against ``max_attempts``."""
        first_throttled: float | None = None
        number = 0
        failures = 0
        throttled = 0
        while True:
            number += 1
            try:
                return await attempt_once(number)
            except Exception as error:
                wait, reason, is_throttle = self.decision(error, resend_lost=resend_lost)
                if reason is None:
                    raise
                if is_throttle:
                    throttled += 1
                    # The budget runs from this request's first 429: the time it waited for its turn in the pacer
                    # (a large onboarding queues every request behind the rate) is not spent retrying.
                    if first_throttled is None:
                        first_throttled = time.monotonic()
                    wait = self.backoff_s(throttled) if wait is None else wait
                    if time.monotonic() + wait - first_throttled > self.settings.retry_budget_s:
                        raise
                else:
                    failures += 1
                    if failures >= self.settings.max_attempts:
                        raise
                    wait = self.backoff_s(failures) if wait is None else wait
                self.stats.retries += 1
                retry_logger.info(
                    "%s %s: retrying in %.2f s after %s", method, resource_type or "SCIM endpoint", wait, reason
                )
                await asyncio.sleep(wait)

    def decision(self, error: Exception, *, resend_lost: bool) -> tuple[float | None, str | None, bool]:
        """``(wait, or None for a backoff; reason, or None when not retryable; whether it is throttling)``."""
        if isinstance(error, RetryableAnswer):
            wait = None
            if error.retry_after is not None:
                wait = min(error.retry_after, self.settings.max_retry_wait_s)
                self.stats.retry_wait_s += wait
            status = error.response.status_code
            return wait, f"HTTP {status}", status == httpx.codes.TOO_MANY_REQUESTS
        if isinstance(error, ProvedAbsent):
            return None, "an unknown outcome (proved absent)", False
        if isinstance(error, NEVER_SENT) or (resend_lost and isinstance(error, ANSWER_LOST)):
            return None, type(error).__name__, False
        if isinstance(error, AuthenticationError) and (error.status is None or error.status in RETRYABLE_STATUSES):
            return None, "the token endpoint being unavailable", False
        return None, None, False
