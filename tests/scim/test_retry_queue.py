"""A large onboarding queues every request behind the rate: a request throttled late in it must neither lose its 429
budget to the time it waited for its first turn, nor wait behind the whole queue again for each retry (through
``ScimClient`` and a mock target; the one test here runs about 4 s of wall clock)."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from scim_pipeline.scim import ScimClient

from .mock_service import MockScim, mock_settings, scim_error, scim_json

REQUESTS = 40
RATE = 40.0
"""The 40 first attempts take a second to go out, twice the 429 budget below."""


async def test_requests_throttled_late_in_a_queue_keep_their_budget_and_retry_ahead_of_it() -> None:
    attempts: Counter[str] = Counter()

    def answer(request: httpx.Request) -> httpx.Response:
        attempts[request.url.path] += 1
        if attempts[request.url.path] <= 2:  # every request is throttled twice, then served
            return scim_error(429, retry_after="0")
        return scim_json(200, {"id": request.url.path.rsplit("/", 1)[-1], "userName": "u"})

    service = MockScim(answer)
    settings = mock_settings(
        rate_limit=RATE, concurrency=2, adaptive_pacing=False, retry_budget_s=0.5, max_retry_wait_s=0.01
    )
    async with ScimClient(settings, transport=service.transport) as client:
        results = await asyncio.gather(
            *(client.get("Users", f"id-{index}") for index in range(REQUESTS)), return_exceptions=True
        )

    assert [result for result in results if isinstance(result, BaseException)] == []
    assert set(attempts.values()) == {3}
