"""Test helpers: a scripted mock SCIM service on httpx.MockTransport, SCIM answers, settings."""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from scim_pipeline.scim import ConnectionSettings

from .loopback import CLIENT_ID, CLIENT_SECRET, LoopbackScimServer

BASE_URL = "https://tenant.example.test/scim/v2"
TOKEN_URL = "https://tenant.example.test/identity/api/oauth2/token/xpmplatform"
MOCK_SECRET = "mock-Secret-9a8b7c-never-logged"

Handler = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


def scim_json(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A SCIM JSON answer."""
    return httpx.Response(
        status,
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/scim+json", **(headers or {})},
    )


def scim_error(status: int, scim_type: str | None = None, detail: str | None = None, **headers: str) -> httpx.Response:
    """An RFC 7644 §3.12 error answer (``status`` as a string, as the RFC says)."""
    body: dict[str, Any] = {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
        "status": str(status),
    }
    if scim_type:
        body["scimType"] = scim_type
    if detail:
        body["detail"] = detail
    return scim_json(status, body, {k.replace("_", "-"): v for k, v in headers.items()})


def list_response(resources: list[dict[str, Any]], total: int, start: int = 1) -> httpx.Response:
    return scim_json(
        200,
        {
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
            "totalResults": total,
            "startIndex": start,
            "itemsPerPage": len(resources),
            "Resources": resources,
        },
    )


class MockScim:
    """A token endpoint plus a scripted SCIM handler, for ``httpx.MockTransport``.

    ``scim_requests`` records every SCIM request (token requests are counted apart).
    """

    def __init__(self, handler: Handler | None = None, *, token_lifetime_s: float = 3600) -> None:
        self.handler = handler or (lambda request: scim_json(200, {}))
        self.token_lifetime_s = token_lifetime_s
        self.token_requests = 0
        self.token_forms: list[dict[str, str]] = []
        self.token_answer: httpx.Response | None = None
        self.scim_requests: list[httpx.Request] = []
        self.issued: list[str] = []

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            self.token_requests += 1
            form = {k: v[0] for k, v in _parse_form(request.content).items()}
            self.token_forms.append(form)
            if self.token_answer is not None:
                return self.token_answer
            token = f"token-{self.token_requests}"
            self.issued.append(token)
            return httpx.Response(
                200,
                json={
                    "access_token": token,
                    "token_type": "bearer",
                    "expires_in": self.token_lifetime_s,
                },
            )
        self.scim_requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, httpx.Response)
        return answer


def _parse_form(content: bytes) -> dict[str, list[str]]:
    from urllib.parse import parse_qs

    return parse_qs(content.decode())


def mock_settings(**overrides: Any) -> ConnectionSettings:
    """Settings for the mock service; retries wait at most 10 ms so unit tests stay fast."""
    values: dict[str, Any] = {
        "base_url": BASE_URL,
        "client_id": "scim-client",
        "client_secret": MOCK_SECRET,
        "max_retry_wait_s": 0.01,
        "max_attempts": 4,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def loopback_settings(server: LoopbackScimServer, **overrides: Any) -> ConnectionSettings:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "token_url": server.token_url,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "profile": "rfc7644",
        "max_retry_wait_s": 1.0,
    }
    values.update(overrides)
    return ConnectionSettings(**values)


def user_payload(user_name: str) -> dict[str, Any]:
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": user_name}
