"""The async SCIM client: one httpx connection pool, one token, one concurrency bound and one rate
limiter shared by all callers; typed errors; retries; safe creates; faithful index pagination.

Retries (stamina) cover 429, 500, 502, 503, 504, connection failures and timeouts, honouring
``Retry-After`` (seconds or an HTTP date) up to ``max_retry_wait_s``. A POST is never resent
blindly once it may have reached the server: a lost answer (dropped connection, read timeout,
500/502/504) or a 409 is resolved by looking the resource up by its matching attribute; only when
the lookup proves the resource absent is the POST sent again. 429 and 503 answers mean the
request was not applied, so they are retried like any other. /Bulk is never used.
"""

from __future__ import annotations

import asyncio
import functools
import http.cookiejar
import importlib.util
import json
import logging
import ssl
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import httpx
import stamina
from scim2_models import Resource

from . import lookup, patch_forms
from ._logging import install_httpx_log_redaction
from ._transport import Http11Transport
from .auth import ClientCredentialsAuth
from .errors import (
    AuthenticationError,
    ConfigurationError,
    PaginationError,
    ScimHTTPError,
    ScimPipelineError,
    ScimTransportError,
    ScimUnauthorized,
    error_from_response,
    parse_error_body,
)
from .filters import check_filter
from .models import resource_payload
from .profiles import Operation, Profile, ResourceTypeRules, get_profile
from .settings import ConnectionSettings
from .target_quirks import TargetQuirks

__all__ = ["ClientStats", "RateLimiter", "ScimClient", "ScimResult", "parse_retry_after"]

_T = TypeVar("_T")

logger = logging.getLogger("scim_pipeline.scim")
install_httpx_log_redaction()


def _skip_absent_sniffio_import() -> None:
    """Make httpcore's per-request ``import sniffio`` fail cheaply when sniffio is not installed.

    httpcore imports the optional ``sniffio`` inside every lock and semaphore it sets up (several per request)
    and falls back to asyncio on ImportError. anyio ≥ 4.11 no longer installs sniffio, and Python does not cache
    a failed import, so each request paid a full ``sys.path`` scan: about a third of the client's CPU
    (encode/httpcore#1103). A ``None`` entry in ``sys.modules`` makes that import fail at once; httpcore then
    picks asyncio exactly as before. An installed sniffio is left alone.
    """
    if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
        sys.modules["sniffio"] = None  # type: ignore[assignment]


_skip_absent_sniffio_import()

SCIM_MEDIA_TYPE = "application/scim+json"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

_RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
_NOT_APPLIED_STATUSES = frozenset({429, 503})
"""Answers that prove a request was not applied: even a POST may be sent again."""
_OUTCOME_UNKNOWN_STATUSES = frozenset({500, 502, 504})
"""Answers after which a POST may or may not have been applied (a gateway gave up waiting)."""

_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
"""Transport failures before the request left: resending is always safe."""
_ANSWER_LOST = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.CloseError,
)
"""Transport failures after the request may have reached the server."""


@dataclass
class ScimResult:
    """The outcome of one SCIM call."""

    resource: dict[str, Any] | None
    status: int
    attempts: int = 1
    latency_s: float = 0.0
    adopted: bool = False
    """The create found the resource already there (lost answer or 409) and returns it."""
    already_done: bool = False
    """A DELETE answered 404, or a member-remove PATCH answered 400 noTarget."""

    @property
    def scim_id(self) -> str | None:
        """The resource's ``id``, when the answer carried one."""
        if self.resource is None:
            return None
        value = self.resource.get("id")
        return value if isinstance(value, str) else None


@dataclass
class ClientStats:
    """What one client did, for logs, metadata and benchmarks."""

    requests: int = 0
    """SCIM requests that got an HTTP answer (token requests excluded)."""
    retries: int = 0
    token_requests: int = 0
    adoptions: int = 0
    already_done: int = 0
    transport_errors: int = 0
    pages: int = 0
    retry_wait_s: float = 0.0
    """Sum of the waits chosen from ``Retry-After`` (exponential backoffs not included)."""
    by_status: Counter[int] = field(default_factory=Counter)


class RateLimiter:
    """Paces acquisitions to ``rate_per_s``, shared by every caller of one client.

    Each caller reserves the next free slot synchronously (the event loop is single-threaded, so
    no lock is needed) and sleeps until it comes, so the rate holds under any concurrency.
    """

    def __init__(self, rate_per_s: float, *, clock: Any = time.monotonic) -> None:
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.interval = 1.0 / rate_per_s
        self._clock = clock
        self._next_slot = 0.0

    async def acquire(self) -> None:
        now = self._clock()
        slot = max(now, self._next_slot)
        self._next_slot = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date); ``None`` if
    absent or unreadable."""
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


class _RetryableAnswer(Exception):
    """An answer worth another attempt (429, 5xx); carries it for the final error."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = parse_retry_after(response.headers.get("retry-after"))


class _ProvedAbsent(Exception):
    """A create's outcome was unknown, and a lookup proved it did not land: resend."""

    def __init__(self, cause: httpx.TransportError | httpx.Response) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


@dataclass
class _Answer:
    response: httpx.Response
    attempts: int
    latency_s: float


class ScimClient:
    """An async SCIM client for one service provider (``async with ScimClient(settings) as c``).

    Every call checks the profile first (operations, filters) and raises
    :class:`~scim_pipeline.scim.ProfileViolation` before any request when it refuses.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        quirks: TargetQuirks | None = None,
    ) -> None:
        self.settings = settings
        self.quirks = quirks if quirks is not None else TargetQuirks()
        """What this target drops and which PATCH forms it refuses (persist ``quirks.to_dict()`` per target)."""
        self.profile: Profile = get_profile(settings.profile)
        self._base_url = settings.base_url.rstrip("/")
        self._stats = ClientStats()
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        self._limiter = RateLimiter(settings.rate_limit_per_s) if settings.rate_limit_per_s else None
        pool = settings.max_concurrency + 4  # room for the token request and lookups
        verify = _tls_context(settings) if transport is None else True
        if transport is None and not _proxies_configured():
            transport = Http11Transport(
                ssl_context=verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify=verify),
                max_connections=pool,
            )
        # Requests go straight to a transport we know (ours, or one passed in) rather than through
        # ``AsyncClient.send``: see :meth:`_send_direct`. With a proxy from the environment, httpx routes.
        self._direct_transport = transport
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            headers={"Accept": f"{SCIM_MEDIA_TYPE}, application/json"},
            cookies=_CookieJarSkippingAnswersWithoutCookies(),
            event_hooks={"response": [self._count_response]},
        )
        self._auth: ClientCredentialsAuth | None = None
        if settings.client_id is not None and settings.client_secret is not None:
            self._auth = ClientCredentialsAuth(
                token_url=settings.resolved_token_url,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                scope=settings.scope or None,
            )
            self._auth.bind(self._http)
        self._default_headers = list(self._http.headers.multi_items())
        self._timeout_extension = {"timeout": httpx.Timeout(settings.timeout_s).as_dict()}

    def __repr__(self) -> str:
        return f"ScimClient(base_url={self._base_url!r}, profile={self.profile.name!r})"

    async def __aenter__(self) -> ScimClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    @property
    def stats(self) -> ClientStats:
        """Counters of this client's activity."""
        self._stats.token_requests = self._auth.token_requests if self._auth else 0
        return self._stats

    @property
    def auth(self) -> ClientCredentialsAuth | None:
        """The token source (``None`` when no client credentials are configured)."""
        return self._auth

    async def _count_response(self, response: httpx.Response) -> None:
        if self._auth is not None and str(response.request.url) == self._auth.token_url:
            return
        self._stats.requests += 1
        self._stats.by_status[response.status_code] += 1

    # -- sending -------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        return f"{self._base_url}/{path.lstrip('/')}"

    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        if_match: str | None = None,
    ) -> httpx.Response:
        headers = {"Content-Type": SCIM_MEDIA_TYPE} if body is not None else {}
        if if_match is not None:
            headers["If-Match"] = if_match
        content = json.dumps(body).encode() if body is not None else None
        if self._limiter is not None:
            await self._limiter.acquire()
        async with self._semaphore:
            try:
                if self._direct_transport is not None:
                    return await self._send_direct(method, url, params, content, headers)
                request = self._http.build_request(method, url, params=params, content=content, headers=headers)
                logger.debug("%s %s", method, request.url)
                return await self._http.send(
                    request, auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT
                )
            except httpx.TransportError:
                self._stats.transport_errors += 1
                raise

    async def _send_direct(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        """Send through the transport itself, doing what ``AsyncClient.send`` would do for a SCIM call.

        Why: ``AsyncClient.send`` (URL merging, the generator-based auth and redirect flows, event hooks, the
        cookie jar's ``urllib`` request copy) cost about a fifth of the client's CPU per request in a profile, for
        nothing a SCIM call needs. Kept here: the client's default headers, its timeouts, the bearer token with
        one refetch and resend on a 401 (as :class:`ClientCredentialsAuth` does), cookies when the server sets
        any, the response counters and httpx's INFO line (with its query string redacted as before).
        """
        transport = self._direct_transport
        assert transport is not None
        target = _cached_url(url) if not params else httpx.URL(url, params=params)
        token = await self._auth.token() if self._auth is not None else None
        for attempt in (1, 2):
            request = httpx.Request(
                method,
                target,
                headers=self._request_headers(headers, token),
                content=content,
                extensions=self._timeout_extension,
            )
            cookies = self._http.cookies
            if cookies.jar:
                cookies.set_cookie_header(request)
            logger.debug("%s %s", method, target)
            response = await transport.handle_async_request(request)
            response.request = request
            await response.aread()
            if _sets_cookies(response):
                cookies.extract_cookies(response)
            self._stats.requests += 1
            self._stats.by_status[response.status_code] += 1
            if _httpx_logger.isEnabledFor(logging.INFO):
                _httpx_logger.info(
                    'HTTP Request: %s %s "%s %d %s"',
                    method,
                    target,
                    response.http_version,
                    response.status_code,
                    response.reason_phrase,
                )
            if response.status_code != httpx.codes.UNAUTHORIZED or self._auth is None or attempt == 2:
                return response
            logger.info("the SCIM server refused the access token; fetching a new one once")
            assert token is not None
            token = await self._auth.refetch_after_401(token)
        raise AssertionError("unreachable")

    def _request_headers(self, headers: dict[str, str], token: str | None) -> list[tuple[str, str]]:
        # The per-call headers (Content-Type, If-Match) are never among the client's defaults: no merging needed.
        merged = [*self._default_headers, *headers.items()]
        if token is not None:
            merged.append(("Authorization", f"Bearer {token}"))
        return merged

    def _retry_policy(self, method: str, resource_type: str | None, *, resend_lost: bool) -> Any:
        def decide(error: Exception) -> bool | float:
            retry: bool | float = False
            if isinstance(error, _RetryableAnswer):
                wait = error.retry_after
                if wait is not None:
                    retry = min(wait, self.settings.max_retry_wait_s)
                    self._stats.retry_wait_s += retry
                else:
                    retry = True
                reason = f"HTTP {error.response.status_code}"
            elif isinstance(error, _ProvedAbsent):
                retry, reason = True, "an unknown outcome (proved absent)"
            elif isinstance(error, _NEVER_SENT) or (resend_lost and isinstance(error, _ANSWER_LOST)):
                retry, reason = True, type(error).__name__
            elif isinstance(error, AuthenticationError) and (
                error.status is None or error.status in _RETRYABLE_STATUSES
            ):
                retry, reason = True, "the token endpoint being unavailable"
            if retry is not False:
                self._stats.retries += 1
                how = f"in {retry:.1f} s" if not isinstance(retry, bool) else "with backoff"
                logger.info("%s %s: retrying %s after %s", method, resource_type, how, reason)
            return retry

        return decide

    async def _with_retries(
        self,
        method: str,
        resource_type: str | None,
        attempt_once: Callable[[int], Awaitable[_T]],
        *,
        resend_lost: bool,
    ) -> _T:
        """``attempt_once(1)``, and only when it raises, the retry loop (attempt 2 onwards).

        Why: setting up stamina's retry context costs about a tenth of the client's CPU per request (tenacity
        inspects its callbacks every time), while nearly every call succeeds the first time. A first failure is
        handed to the loop as its attempt 1, so the policy, the waits and the attempt numbers are exactly those of
        a loop run from the start.
        """
        try:
            return await attempt_once(1)
        except Exception as error:  # the policy below decides what is retried; anything else is raised again
            first_failure = error
        async for attempt in self._retrying(method, resource_type, resend_lost=resend_lost):
            with attempt:
                if attempt.num == 1:
                    raise first_failure
                return await attempt_once(attempt.num)
        raise AssertionError("the retry loop ends by returning or raising")

    def _retrying(self, method: str, resource_type: str | None, *, resend_lost: bool) -> Any:
        return stamina.retry_context(
            on=self._retry_policy(method, resource_type, resend_lost=resend_lost),
            attempts=self.settings.max_attempts,
            timeout=None,
            wait_initial=0.1,
            wait_max=self.settings.max_retry_wait_s,
            wait_jitter=min(1.0, self.settings.max_retry_wait_s),
        )

    def _final_error(
        self,
        error: Exception,
        method: str,
        resource_type: str | None,
        attempts: int,
        started: float,
    ) -> NoReturn:
        latency = time.perf_counter() - started
        cause: object = error.cause if isinstance(error, _ProvedAbsent) else error
        if isinstance(cause, _RetryableAnswer):
            cause = cause.response
        if isinstance(cause, httpx.Response):
            raise self._http_error(cause, method, resource_type, attempts, latency) from None
        if isinstance(cause, httpx.TransportError):
            raise ScimTransportError(
                f"{method} {resource_type or 'SCIM endpoint'}: no answer after {attempts} "
                f"attempt(s) ({type(cause).__name__}: {cause})",
                method=method,
                resource_type=resource_type,
                attempts=attempts,
                latency_s=latency,
            ) from None
        raise error

    def _http_error(
        self,
        response: httpx.Response,
        method: str,
        resource_type: str | None,
        attempts: int,
        latency_s: float,
    ) -> ScimHTTPError:
        if response.status_code == httpx.codes.UNAUTHORIZED and self._auth is not None:
            return ScimUnauthorized(
                status=401,
                scim_type=None,
                detail="the server refused a freshly fetched access token too (check the "
                "service account's rights and the OAuth scope)",
                method=method,
                resource_type=resource_type,
                attempts=attempts,
                latency_s=latency_s,
            )
        return error_from_response(
            response,
            method=method,
            resource_type=resource_type,
            attempts=attempts,
            latency_s=latency_s,
        )

    async def _request(
        self,
        method: str,
        resource_type: str | None,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Mapping[str, Any] | None = None,
        passthrough: Collection[int] = (),
        if_match: str | None = None,
    ) -> _Answer:
        """Send an idempotent request with retries; error statuses not in ``passthrough`` raise."""
        started = time.perf_counter()
        attempts = 0
        url = self._url(path)

        async def attempt_once(number: int) -> httpx.Response:
            nonlocal attempts
            attempts = number
            response = await self._send_once(method, url, params=params, body=body, if_match=if_match)
            status = response.status_code
            if status in _RETRYABLE_STATUSES and status not in passthrough:
                raise _RetryableAnswer(response)
            return response

        try:
            response = await self._with_retries(method, resource_type, attempt_once, resend_lost=True)
        except (_RetryableAnswer, httpx.TransportError) as error:
            self._final_error(error, method, resource_type, attempts, started)
        latency = time.perf_counter() - started
        if response.status_code >= 400 and response.status_code not in passthrough:
            raise self._http_error(response, method, resource_type, attempts, latency)
        return _Answer(response, attempts, latency)

    # -- reading -------------------------------------------------------------------------------

    def _require(self, resource_type: str, operation: Operation) -> ResourceTypeRules:
        return self.profile.require(resource_type, operation)

    async def get(
        self,
        resource_type: str,
        scim_id: str,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
    ) -> ScimResult:
        """``GET /{rt}/{id}``; a 404 raises :class:`~scim_pipeline.scim.ScimNotFound`."""
        rules = self._require(resource_type, Operation.GET)
        answer = await self._request(
            "GET",
            resource_type,
            f"{rules.endpoint}/{_path_segment(scim_id)}",
            params=_projection(attributes, excluded_attributes),
        )
        return self._result(answer, "GET", resource_type)

    async def page(
        self,
        resource_type: str,
        filter: str | None = None,
        *,
        start_index: int = 1,
        count: int | None = None,
    ) -> dict[str, Any]:
        """One raw ListResponse page (``GET /{rt}?startIndex=…&count=…``), e.g. for a
        connection test; use :meth:`search` or :meth:`iter_pages` to read everything."""
        rules = self._require(resource_type, Operation.SEARCH)
        checked = check_filter(self.profile, resource_type, filter)
        params = {"startIndex": str(start_index), "count": str(count or self.settings.page_size)}
        if checked is not None:
            params["filter"] = str(checked)
        answer = await self._request("GET", resource_type, rules.endpoint, params=params)
        self._stats.pages += 1
        return _json_body(answer.response, "GET", resource_type)

    async def iter_pages(
        self,
        resource_type: str,
        filter: str | None = None,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Yield every page of a search (index pagination, 1-based ``startIndex``).

        A smaller ``itemsPerPage`` than asked is honoured (the next page starts after what was
        actually received); reading stops at ``totalResults``. A server that ignores
        ``startIndex`` (the same resources again) or stops short of ``totalResults`` raises
        :class:`~scim_pipeline.scim.PaginationError` instead of looping or truncating.
        """
        rules = self._require(resource_type, Operation.SEARCH)
        checked = check_filter(self.profile, resource_type, filter)
        count = page_size or self.settings.page_size
        start = 1
        seen: set[str] = set()
        previous_ids: list[str] | None = None
        while True:
            params = {"startIndex": str(start), "count": str(count)}
            if checked is not None:
                params["filter"] = str(checked)
            params.update(_projection(attributes, excluded_attributes))
            answer = await self._request("GET", resource_type, rules.endpoint, params=params)
            body = _json_body(answer.response, "GET", resource_type)
            self._stats.pages += 1
            resources = _list_resources(body)
            total = _int_or_none(body.get("totalResults"))
            ids = [_identity(resource) for resource in resources]
            if resources and (ids == previous_ids or (start > 1 and all(each in seen for each in ids))):
                raise PaginationError(
                    f"GET {resource_type}: the page at startIndex={start} repeats resources "
                    "already read; the server seems to ignore startIndex"
                )
            fresh = [r for r, key in zip(resources, ids, strict=True) if key not in seen]
            seen.update(ids)
            read_so_far = start - 1 + len(resources)
            if fresh:
                yield fresh
            if total is None:
                if not resources or len(resources) < count:
                    return
            elif read_so_far >= total:
                return
            elif not resources:
                raise PaginationError(
                    f"GET {resource_type}: an empty page at startIndex={start} while "
                    f"totalResults={total}; refusing to return a truncated list"
                )
            start += len(resources)
            previous_ids = ids

    async def search(
        self,
        resource_type: str,
        filter: str | None = None,
        *,
        attributes: Sequence[str] | None = None,
        excluded_attributes: Sequence[str] | None = None,
        page_size: int | None = None,
    ) -> list[dict[str, Any]]:
        """Every resource matching ``filter`` (all pages); see :meth:`iter_pages`."""
        found: list[dict[str, Any]] = []
        async for page in self.iter_pages(
            resource_type,
            filter,
            attributes=attributes,
            excluded_attributes=excluded_attributes,
            page_size=page_size,
        ):
            found.extend(page)
        return found

    async def find_one(self, resource_type: str, attribute: str, value: str) -> dict[str, Any] | None:
        """The one resource whose ``attribute`` equals ``value``, matched exactly on the client (see
        :func:`.lookup.find_one`: a value the target cannot match literally is looked up by a safe fragment).

        ``None`` when nothing matches; :class:`~scim_pipeline.scim.AmbiguousMatchError` when several do.
        """
        return await lookup.find_one(self, resource_type, attribute, value)

    async def find_existing(
        self, resource_type: str, payload: Mapping[str, Any], attribute: str, value: str
    ) -> dict[str, Any] | None:
        """The resource a create of ``payload`` may already have made (see :func:`.lookup.find_existing`)."""
        return await lookup.find_existing(self, resource_type, payload, attribute, value)

    async def get_json(self, path: str) -> dict[str, Any] | None:
        """GET a discovery endpoint (e.g. ``/ServiceProviderConfig``); ``None`` on 404/501 or an
        answer that is not a JSON object (a bare list is wrapped as ``{"Resources": [...]}``)."""
        answer = await self._request("GET", None, path, passthrough=(404, 405, 501))
        if answer.response.status_code >= 400:
            return None
        try:
            body = answer.response.json()
        except ValueError:
            return None
        if isinstance(body, list):
            return {"Resources": body}
        return body if isinstance(body, dict) else None

    # -- writing -------------------------------------------------------------------------------

    async def create(
        self,
        resource_type: str,
        resource: dict[str, Any] | Resource[Any],
        *,
        match_attribute: str | None = None,
    ) -> ScimResult:
        """``POST /{rt}``. A lost answer or a 409 is resolved by looking the resource up by
        ``match_attribute`` (default: the profile's, ``userName`` / ``displayName`` / ``name``)
        and returning it with ``adopted=True``; the POST is sent again only when the lookup proves
        it did not land."""
        rules = self._require(resource_type, Operation.CREATE)
        payload = resource_payload(resource)
        attribute = match_attribute or rules.match_attribute
        raw_value = _raw_value_of(payload, attribute) if attribute else None
        match_value = raw_value if isinstance(raw_value, str) and raw_value else None
        url = self._url(rules.endpoint)
        started = time.perf_counter()
        attempts = 0

        async def adopt() -> ScimResult | None:
            if attribute is None or match_value is None:
                return None
            found = await self.find_existing(resource_type, payload, attribute, match_value)
            if found is None:
                return None
            self._stats.adoptions += 1
            logger.debug("adopted %s %s after an unknown outcome", resource_type, found.get("id"))
            return ScimResult(
                resource=found,
                status=200,
                attempts=attempts,
                latency_s=time.perf_counter() - started,
                adopted=True,
            )

        async def attempt_once(number: int) -> httpx.Response | ScimResult:
            nonlocal attempts
            attempts = number
            try:
                response = await self._send_once("POST", url, body=payload)
            except _ANSWER_LOST as lost:
                if match_value is None:
                    raise
                if adopted := await adopt():
                    return adopted
                raise _ProvedAbsent(lost) from None
            status = response.status_code
            if status in _NOT_APPLIED_STATUSES:
                raise _RetryableAnswer(response)
            if status in _OUTCOME_UNKNOWN_STATUSES and match_value is not None:
                if adopted := await adopt():
                    return adopted
                raise _ProvedAbsent(response)
            conflict = status == httpx.codes.CONFLICT or _scim_type(response) == "uniqueness"
            if conflict and (adopted := await adopt()):
                return adopted
            return response

        try:
            outcome = await self._with_retries("POST", resource_type, attempt_once, resend_lost=False)
            if isinstance(outcome, ScimResult):
                return outcome
            response = outcome
        except _ANSWER_LOST as lost:
            if match_value is not None:
                self._final_error(lost, "POST", resource_type, attempts, started)
            raise ScimTransportError(
                f"POST {resource_type}: the answer was lost ({type(lost).__name__}); the outcome "
                "is unknown and the request was not sent again (no matching attribute to look "
                "the resource up by)",
                method="POST",
                resource_type=resource_type,
                attempts=attempts,
                latency_s=time.perf_counter() - started,
            ) from None
        except (_RetryableAnswer, _ProvedAbsent, httpx.TransportError) as error:
            self._final_error(error, "POST", resource_type, attempts, started)
        latency = time.perf_counter() - started
        if response.status_code >= 400:
            raise self._http_error(response, "POST", resource_type, attempts, latency)
        result = self._result(_Answer(response, attempts, latency), "POST", resource_type)
        self.quirks.observe_write(resource_type, payload, result.resource)
        return result

    async def replace(
        self,
        resource_type: str,
        scim_id: str,
        resource: dict[str, Any] | Resource[Any],
        *,
        if_match: str | None = None,
    ) -> ScimResult:
        """``PUT /{rt}/{id}`` with the full resource. ``if_match`` (an ETag, ``meta.version``)
        makes a stale write answer 412 (:class:`~scim_pipeline.scim.ScimPreconditionFailed`)."""
        rules = self._require(resource_type, Operation.REPLACE)
        body = resource_payload(resource, replacing=True)
        answer = await self._request(
            "PUT",
            resource_type,
            f"{rules.endpoint}/{_path_segment(scim_id)}",
            body=body,
            if_match=if_match,
        )
        result = self._result(answer, "PUT", resource_type)
        self.quirks.observe_write(resource_type, body, result.resource)
        return result

    async def patch(
        self,
        resource_type: str,
        scim_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: str | None = None,
    ) -> ScimResult:
        """``PATCH /{rt}/{id}`` (RFC 7644 §3.5.2), in a form the target accepts (see :mod:`.patch_forms`:
        a refused form falls back to another, remembered in :attr:`quirks`). A member removal answering
        400 noTarget is already done (the member is not there). ``if_match`` as for :meth:`replace`."""
        self._require(resource_type, Operation.PATCH)
        return await patch_forms.patch_with_fallback(self, resource_type, scim_id, operations, if_match=if_match)

    async def patch_request(
        self,
        resource_type: str,
        scim_id: str,
        operations: list[dict[str, Any]],
        *,
        if_match: str | None = None,
    ) -> ScimResult:
        """One ``PATCH /{rt}/{id}`` with exactly these operations: no fallback, every error status raises."""
        rules = self._require(resource_type, Operation.PATCH)
        answer = await self._request(
            "PATCH",
            resource_type,
            f"{rules.endpoint}/{_path_segment(scim_id)}",
            body={"schemas": [PATCH_SCHEMA], "Operations": operations},
            if_match=if_match,
        )
        return self._result(answer, "PATCH", resource_type)

    async def delete(self, resource_type: str, scim_id: str, *, if_match: str | None = None) -> ScimResult:
        """``DELETE /{rt}/{id}``; a 404 means already gone (``already_done=True``)."""
        rules = self._require(resource_type, Operation.DELETE)
        answer = await self._request(
            "DELETE",
            resource_type,
            f"{rules.endpoint}/{_path_segment(scim_id)}",
            passthrough=(404,),
            if_match=if_match,
        )
        if answer.response.status_code == httpx.codes.NOT_FOUND:
            self._stats.already_done += 1
            return ScimResult(None, 404, answer.attempts, answer.latency_s, already_done=True)
        return ScimResult(None, answer.response.status_code, answer.attempts, answer.latency_s)

    def _result(self, answer: _Answer, method: str, resource_type: str | None) -> ScimResult:
        resource = None
        if answer.response.status_code != httpx.codes.NO_CONTENT and answer.response.content:
            resource = _json_body(answer.response, method, resource_type)
        return ScimResult(
            resource=resource,
            status=answer.response.status_code,
            attempts=answer.attempts,
            latency_s=answer.latency_s,
        )


class _CookieJarSkippingAnswersWithoutCookies(http.cookiejar.CookieJar):
    """A cookie jar that returns at once for an answer with no ``Set-Cookie`` header (nearly every SCIM answer).

    The standard jar rebuilds every answer's headers as an ``email.message.Message`` (twice: once only for a debug
    log line) before finding no cookie in them: about a tenth of the client's CPU per request. Answers that do set
    cookies are handled exactly as before.
    """

    def extract_cookies(self, response: Any, request: Any) -> None:
        headers = getattr(getattr(response, "response", None), "headers", None)
        if isinstance(headers, httpx.Headers) and "set-cookie" not in headers and "set-cookie2" not in headers:
            return
        super().extract_cookies(response, request)


def _proxies_configured() -> bool:
    """Whether the environment names an HTTP(S) proxy: then httpx's own transport (which honours it) is used."""
    return any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies())


def _tls_context(settings: ConnectionSettings) -> ssl.SSLContext | bool:
    """What httpx verifies against: the system CAs, a CA bundle, or nothing (if asked)."""
    verify = settings.tls_verify
    if isinstance(verify, bool):
        return verify
    try:
        return ssl.create_default_context(cafile=verify)
    except (ssl.SSLError, OSError) as error:
        raise ConfigurationError(
            f"SCIM_CA_BUNDLE (ca_bundle): cannot load {verify} as PEM certificates ({error})"
        ) from None


def _path_segment(scim_id: str) -> str:
    if not scim_id or scim_id in (".", ".."):
        raise ScimPipelineError("a SCIM id must be a non-empty path segment")
    return quote(scim_id, safe="")


def _projection(attributes: Sequence[str] | None, excluded_attributes: Sequence[str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if attributes:
        params["attributes"] = ",".join(attributes)
    if excluded_attributes:
        params["excludedAttributes"] = ",".join(excluded_attributes)
    return params


def _json_body(response: httpx.Response, method: str, resource_type: str | None) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ScimHTTPError(
            status=response.status_code,
            scim_type=None,
            detail="the answer is not a JSON object",
            method=method,
            resource_type=resource_type,
        )
    return body


def _list_resources(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    for key in ("Resources", "resources"):
        value = body.get(key)
        if isinstance(value, list):
            return [item for item in value if isinstance(item, dict)]
    return []


def _int_or_none(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return None


def _identity(resource: Mapping[str, Any]) -> str:
    scim_id = resource.get("id")
    return scim_id if isinstance(scim_id, str) else json.dumps(resource, sort_keys=True)


def _raw_value_of(payload: Mapping[str, Any], attribute: str | None) -> object:
    """The value of a plain or dotted attribute of a payload (case-insensitive names)."""
    if attribute is None:
        return None
    current: object = payload
    for name in attribute.split("."):
        if not isinstance(current, Mapping):
            return None
        lowered = {str(key).lower(): value for key, value in current.items()}
        current = lowered.get(name.lower())
    return current


def _scim_type(response: httpx.Response) -> str | None:
    return parse_error_body(response)[0] if response.status_code >= 400 else None


_httpx_logger = logging.getLogger("httpx")


@functools.lru_cache(maxsize=4096)
def _cached_url(url: str) -> httpx.URL:
    """Parsed URLs of the paths the client sends to again and again (the collections, groups being patched):
    httpx validates every character of a URL it parses. ``httpx.URL`` is immutable, so sharing one is safe."""
    return httpx.URL(url)


def _sets_cookies(response: httpx.Response) -> bool:
    return any(name.lower() in (b"set-cookie", b"set-cookie2") for name, _ in response.headers.raw)
