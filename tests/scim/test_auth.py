"""OAuth 2.0 client credentials: one shared refresh, one retry on 401, clear errors, no secret."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest
from pydantic import SecretStr

from scim_pipeline.scim import AuthenticationError, ScimClient, ScimUnauthorized
from scim_pipeline.scim.auth import ClientCredentialsAuth

from .mock_service import MOCK_SECRET, TOKEN_URL, MockScim, mock_settings, scim_json

USER = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "u1", "userName": "a"}


async def test_the_token_request_is_a_form_encoded_client_credentials_grant() -> None:
    service = MockScim(lambda request: scim_json(200, USER))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.get("Users", "u1")
    assert service.token_forms == [
        {
            "grant_type": "client_credentials",
            "client_id": "scim-client",
            "client_secret": MOCK_SECRET,
            "scope": "xpm.platform",
        }
    ]
    assert service.scim_requests[0].headers["Authorization"] == "Bearer token-1"


async def test_the_token_is_cached_across_requests() -> None:
    service = MockScim(lambda request: scim_json(200, USER))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        for _ in range(5):
            await client.get("Users", "u1")
        assert client.stats.token_requests == 1
    assert service.token_requests == 1


async def test_the_token_is_refreshed_before_it_expires() -> None:
    now = [1000.0]
    service = MockScim(token_lifetime_s=3600)
    auth = ClientCredentialsAuth(
        token_url=TOKEN_URL,
        client_id="scim-client",
        client_secret=SecretStr(MOCK_SECRET),
        scope="xpm.platform",
        clock=lambda: now[0],
    )
    async with httpx.AsyncClient(transport=service.transport) as http:
        auth.bind(http)
        assert await auth.token() == "token-1"
        now[0] += 3600 - 61  # still outside the 60 s margin
        assert await auth.token() == "token-1"
        now[0] += 2  # inside the margin: refreshed before the server would refuse it
        assert await auth.token() == "token-2"


async def test_a_short_lived_token_is_refreshed_at_ten_percent_of_its_life() -> None:
    now = [0.0]
    service = MockScim(token_lifetime_s=100)
    auth = ClientCredentialsAuth(
        token_url=TOKEN_URL,
        client_id="c",
        client_secret=SecretStr("s"),
        scope=None,
        clock=lambda: now[0],
    )
    async with httpx.AsyncClient(transport=service.transport) as http:
        auth.bind(http)
        await auth.token()
        now[0] = 89.0
        assert await auth.token() == "token-1"
        now[0] = 91.0
        assert await auth.token() == "token-2"
    assert "scope" not in service.token_forms[0]


async def test_100_concurrent_calls_with_an_expired_token_make_one_token_request() -> None:
    async def slow_answer(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.001)
        return scim_json(200, USER)

    service = MockScim(slow_answer)
    async with ScimClient(mock_settings(concurrency=100), transport=service.transport) as client:
        await client.get("Users", "u1")
        assert client.auth is not None
        client.auth.expire()
        await asyncio.gather(*(client.get("Users", "u1") for _ in range(100)))
    assert service.token_requests == 2  # the first one, then exactly one refresh for all 100
    assert {r.headers["Authorization"] for r in service.scim_requests[1:]} == {"Bearer token-2"}


async def test_a_401_causes_one_refetch_and_one_resend() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer token-1":
            return scim_json(401, {"status": "401"})
        return scim_json(200, USER)

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        result = await client.get("Users", "u1")
    assert result.status == 200
    assert service.token_requests == 2
    assert len(service.scim_requests) == 2


async def test_concurrent_401s_share_one_refetch() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer token-1":
            return scim_json(401, {"status": "401"})
        return scim_json(200, USER)

    service = MockScim(answer)
    async with ScimClient(mock_settings(concurrency=50), transport=service.transport) as client:
        await client.auth.token() if client.auth else None
        await asyncio.gather(*(client.get("Users", "u1") for _ in range(50)))
    assert service.token_requests == 2


async def test_a_second_401_is_a_clear_error_without_more_resends() -> None:
    service = MockScim(lambda request: scim_json(401, {"status": "401"}))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(ScimUnauthorized, match="freshly fetched access token") as caught:
            await client.get("Users", "u1")
    assert service.token_requests == 2
    assert len(service.scim_requests) == 2
    assert caught.value.status == 401


async def test_a_refused_token_names_the_url_status_and_oauth_error_never_the_secret() -> None:
    service = MockScim()
    service.token_answer = httpx.Response(
        400, json={"error": "invalid_client", "error_description": f"bad secret {MOCK_SECRET}"}
    )
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(AuthenticationError) as caught:
            await client.get("Users", "u1")
    error = caught.value
    assert (error.token_url, error.status, error.oauth_error) == (TOKEN_URL, 400, "invalid_client")
    assert TOKEN_URL in str(error)
    assert "HTTP 400" in str(error)
    assert MOCK_SECRET not in str(error)
    assert MOCK_SECRET not in repr(error)
    assert service.scim_requests == []
    assert service.token_requests == 1  # a refusal is not retried


async def test_a_token_answer_without_an_access_token_is_refused() -> None:
    service = MockScim()
    service.token_answer = httpx.Response(200, text="<html>login page</html>")
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(AuthenticationError, match="without a bearer access_token"):
            await client.get("Users", "u1")


async def test_an_unreachable_token_endpoint_is_retried_then_reported() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with ScimClient(mock_settings(max_attempts=3), transport=httpx.MockTransport(refuse)) as client:
        with pytest.raises(AuthenticationError, match="could not reach the token endpoint") as caught:
            await client.get("Users", "u1")
        assert client.stats.token_requests == 3
    assert caught.value.status is None


async def test_the_secret_and_tokens_stay_out_of_logs_and_reprs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    service = MockScim(lambda request: scim_json(200, USER))
    settings = mock_settings()
    async with ScimClient(settings, transport=service.transport) as client:
        await client.get("Users", "u1")
        assert client.auth is not None
        texts = [caplog.text, repr(client), repr(client.auth), repr(settings), str(client.stats)]
    for text in texts:
        assert MOCK_SECRET not in text
        assert "token-1" not in text
