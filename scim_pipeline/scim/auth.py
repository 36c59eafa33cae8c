"""OAuth 2.0 client-credentials authentication for the SCIM client, as an ``httpx.Auth``.

Why not authlib: its ``AsyncOAuth2Client`` *is* an ``httpx.AsyncClient`` rather than an
``httpx.Auth`` we can put on our own client (with our transport, limits, retries and logging);
it needs a first token fetched by hand (``MissingTokenError`` otherwise); it has no answer to a
401 (no refetch and resend); and its ``OAuth2Auth`` only signs with a fixed token. The flow here is
small: one ``asyncio.Lock`` makes concurrent callers share one token request, and a 401 triggers
exactly one refetch (shared too) and one resend.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx
from pydantic import SecretStr

from ._exchange import AnswerTooLarge, send_bounded
from .errors import AuthenticationError, location_origin
from .redaction import register_secret, scrub

__all__ = ["ClientCredentialsAuth"]

logger = logging.getLogger("scim_pipeline.scim")

_MAX_REFRESH_MARGIN_S = 60.0
_REFRESH_MARGIN_SHARE = 0.1
_BEARER = "bearer"
_TOKEN_ANSWER_LIMIT = 1024 * 1024
"""A token answer is a few hundred bytes; anything near this is not one."""
_OAUTH_TEXT_LIMIT = 200


class ClientCredentialsAuth(httpx.Auth):
    """Bearer tokens from an OAuth 2.0 token endpoint (``grant_type=client_credentials``).

    The token is cached and fetched again shortly before it expires (60 s, or 10 % of its
    lifetime when that is shorter). Concurrent requests share one token request. A 401 answer
    causes one refetch and one resend; a second 401 is returned to the caller.
    ``http`` (set by :meth:`bind`) is the client used to reach the token endpoint.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr,
        scope: str | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._deadline_s = 30.0
        register_secret(client_secret.get_secret_value())
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def bind(self, http: httpx.AsyncClient, *, deadline_s: float = 30.0) -> None:
        """Use ``http`` (no auth of its own) to reach the token endpoint, each request within ``deadline_s``."""
        self._http = http
        self._deadline_s = deadline_s

    def expire(self) -> None:
        """Forget the cached token's lifetime, so the next request fetches a new one."""
        self._refresh_at = 0.0

    def _is_fresh(self) -> bool:
        return self._token is not None and self._clock() < self._refresh_at

    async def token(self) -> str:
        """A valid access token, fetched (once, for all concurrent callers) when needed."""
        if self._is_fresh():
            assert self._token is not None
            return self._token
        async with self._lock:
            if self._is_fresh():
                assert self._token is not None
                return self._token
            return await self._fetch()

    async def refetch_after_401(self, rejected: str) -> str:
        """A new token after the server refused ``rejected`` (one refetch shared by every caller it refused)."""
        async with self._lock:
            if self._token is not None and self._token != rejected and self._is_fresh():
                return self._token  # another caller already replaced the rejected token
            return await self._fetch()

    async def _fetch(self) -> str:
        if self._http is None:
            raise RuntimeError("ClientCredentialsAuth.bind() was not called")
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret.get_secret_value(),
        }
        if self.scope:
            form["scope"] = self.scope
        self.token_requests += 1
        started = self._clock()
        request = self._http.build_request("POST", self.token_url, data=form, headers={"Accept": "application/json"})
        try:
            response = await send_bounded(
                self._http, request, deadline_s=self._deadline_s, max_bytes=_TOKEN_ANSWER_LIMIT
            )
        except httpx.TransportError as error:
            raise AuthenticationError(
                f"could not reach the token endpoint {self.token_url}: {type(error).__name__}",
                token_url=self.token_url,
            ) from None
        except AnswerTooLarge as error:
            raise AuthenticationError(
                f"the token endpoint {self.token_url} answered HTTP {error.status} with more than "
                f"{_TOKEN_ANSWER_LIMIT} bytes; refused",
                token_url=self.token_url,
                status=error.status,
            ) from None
        if response.is_redirect or 300 <= response.status_code < 400:
            raise AuthenticationError(
                f"the token endpoint {self.token_url} answered HTTP {response.status_code} redirecting to "
                f"{location_origin(response)}; redirects are not followed with the client secret "
                "(set SCIM_TOKEN_URL to the final address)",
                token_url=self.token_url,
                status=response.status_code,
            )
        body = _json_object(response)
        if response.status_code != httpx.codes.OK:
            oauth_error = _oauth_text(body.get("error"))
            description = _oauth_text(body.get("error_description"))
            suffix = f" (OAuth error {oauth_error!r})" if oauth_error else ""
            if description:
                suffix += f": {description}"
            raise AuthenticationError(
                f"the token endpoint {self.token_url} answered HTTP {response.status_code}{suffix}",
                token_url=self.token_url,
                status=response.status_code,
                oauth_error=oauth_error,
            )
        access_token = body.get("access_token")
        token_type = str(body.get("token_type", "bearer")).lower()
        if not isinstance(access_token, str) or not access_token or token_type != _BEARER:
            raise AuthenticationError(
                f"the token endpoint {self.token_url} answered HTTP 200 without a bearer access_token",
                token_url=self.token_url,
                status=response.status_code,
            )
        register_secret(access_token)
        lifetime = _lifetime(body.get("expires_in"))
        margin = min(_MAX_REFRESH_MARGIN_S, lifetime * _REFRESH_MARGIN_SHARE)
        self._token = access_token
        self._refresh_at = started + lifetime - margin
        logger.debug("obtained an access token valid for %.0f s", lifetime)
        return access_token

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        token = await self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == httpx.codes.UNAUTHORIZED:
            logger.info("the SCIM server refused the access token; fetching a new one once")
            token = await self.refetch_after_401(token)
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _oauth_text(value: object) -> str | None:
    """An OAuth ``error`` / ``error_description`` fit for a message: scrubbed, on one line, bounded."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = " ".join(scrub(value).split())
    return text if len(text) <= _OAUTH_TEXT_LIMIT else text[: _OAUTH_TEXT_LIMIT - 1] + "…"


def _lifetime(expires_in: object) -> float:
    """``expires_in`` in seconds; an absent or odd value counts as one hour (a 401 corrects it)."""
    try:
        lifetime = float(expires_in)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 3600.0
    return lifetime if lifetime > 0 else 3600.0
