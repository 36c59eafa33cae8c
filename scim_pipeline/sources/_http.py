"""HTTP for the REST connectors (Microsoft Graph, Okta): one httpx client, throttling honoured, paging links checked.

A 429 or 503 is retried after the server's `Retry-After` (or a short backoff), within a bound on attempts and on any
single wait; errors name the service and the path, never a query string, a token or a body the server sent back.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from scim_pipeline.scim.client import parse_retry_after
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.settings import is_loopback_host
from scim_pipeline.sources._incremental import Counters
from scim_pipeline.sources._raw import RosterError

__all__ = ["HttpReader", "check_base_url", "origin_of"]

_RETRYABLE = frozenset({429, 500, 502, 503, 504})


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def check_base_url(url: str) -> str:
    """`url` without a trailing slash; https is required except on loopback (the tests' local servers).

    Raises `ValueError` (for pydantic validators, which name the setting)."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("expected an https:// URL")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("https is required (plain http only on a loopback host)")
    return url.rstrip("/")


class HttpReader:
    """GETs and POSTs for one read, counted into `counters`, retried on throttling.

    `after_response(response)` may return seconds to wait before the next request (Okta's rate-limit headers).
    """

    def __init__(
        self,
        service: str,
        counters: Counters,
        *,
        ca_bundle: Path | None = None,
        timeout_s: float = 30.0,
        max_attempts: int = 6,
        max_wait_s: float = 120.0,
        sleep: Callable[[float], None] = time.sleep,
        after_response: Callable[[httpx.Response], float | None] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.service = service
        self.counters = counters
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.after_response = after_response
        verify: ssl.SSLContext | bool = True
        if ca_bundle is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_bundle))
            except (ssl.SSLError, OSError) as error:
                raise ConfigurationError(f"{service}: cannot load the CA bundle {ca_bundle} ({error})") from None
        self.client = httpx.Client(verify=verify, timeout=timeout_s, transport=transport, follow_redirects=False)

    def __enter__(self) -> HttpReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.client.close()

    def _wait(self, seconds: float, why: str) -> None:
        if seconds > self.max_wait_s:
            raise RosterError(
                f"{self.service} asked to wait {seconds:.0f} s ({why}), longer than {self.max_wait_s:g} s"
            )
        self.counters.throttled += 1
        self.counters.waited_s += seconds
        self.sleep(seconds)

    def request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """One request, retried on 429/5xx and transport errors. A status >= 400 not in `ok` raises `RosterError`."""
        path = urlsplit(url).path or "/"
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.client.request(method, url, params=params, headers=headers, data=data)
            except httpx.TransportError as error:
                self.counters.requests += 1
                if attempt == self.max_attempts:
                    raise RosterError(
                        f"{self.service}: {method} {path} failed after {attempt} attempts ({type(error).__name__})"
                    ) from None
                self._wait(min(2.0 ** (attempt - 1), 30.0), type(error).__name__)
                continue
            self.counters.requests += 1
            pause = self.after_response(response) if self.after_response is not None else None
            if response.status_code in _RETRYABLE and attempt < self.max_attempts:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                wait = retry_after if retry_after is not None else (pause or min(2.0 ** (attempt - 1), 30.0))
                self._wait(wait, f"HTTP {response.status_code}")
                continue
            if pause:
                self._wait(pause, "rate limit exhausted")
            if response.status_code >= 400 and response.status_code not in ok:
                raise RosterError(f"{self.service} answered HTTP {response.status_code} to {method} {path}")
            return response
        raise AssertionError("unreachable")  # the loop returns or raises

    def json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError:
            path = response.request.url.path
            raise RosterError(f"{self.service} answered {path} with something that is not JSON") from None

    def follow(self, link: str, base_url: str) -> str:
        """A paging link the server sent, refused unless it stays on the configured origin (tokens go with it)."""
        if origin_of(link) != origin_of(base_url):
            raise RosterError(f"{self.service} sent a paging link to another origin ({origin_of(link)}); refused")
        return link
