"""The async SCIM client: one stock ``httpx.AsyncClient``, one token, one pacer shared by all callers; typed errors;
one retry policy; safe creates; faithful, bounded index pagination.

Each request has one overall deadline (``timeout``: connect, send and the whole answer) and a size cap on its
answer (``max_response_bytes``, counted after decompression). Redirects are errors, never followed. Every text a
server sends passes through :func:`~scim_pipeline.scim.redaction.scrub` before it reaches a message or a log.

Retries follow :mod:`.retries` (429 within a time budget honouring ``Retry-After``; 5xx and transport
failures a bounded number of times); listings follow :mod:`.paging` (bounded, faithful index pagination). A POST
is never resent blindly once it may have reached the server: a lost answer (dropped connection, deadline passed,
500/502/504) or a 409 is resolved by looking the resource up by its matching attribute; only when the lookup
proves the resource absent is the POST sent again. 429 and 503 answers mean the request was not applied, so they
are retried like any other. /Bulk is never used.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import quote

import httpx
from scim2_models import Resource

from . import lookup, patch_forms
from ._exchange import AnswerTooLarge, send_bounded
from ._logging import install_library_log_redaction
from .auth import ClientCredentialsAuth, load_signing_key
from .errors import (
    ConfigurationError,
    ScimAnswerTooLarge,
    ScimHTTPError,
    ScimPipelineError,
    ScimRedirected,
    ScimTransportError,
    ScimUnauthorized,
    error_from_response,
    location_origin,
    parse_error_body,
)
from .filters import check_filter
from .models import resource_payload
from .pacing import Pacer, parse_retry_after
from .paging import fetch_pages
from .profiles import Operation, Profile, ResourceTypeRules, get_profile
from .redaction import scrub
from .results import ClientStats, ScimResult
from .retries import (
    ANSWER_LOST,
    NOT_APPLIED_STATUSES,
    OUTCOME_UNKNOWN_STATUSES,
    RETRYABLE_STATUSES,
    ProvedAbsent,
    RetryableAnswer,
    RetryPolicy,
)
from .settings import ConnectionSettings
from .target_quirks import TargetQuirks

__all__ = ["ClientStats", "ScimClient", "ScimResult", "parse_retry_after"]

logger = logging.getLogger("scim_pipeline.scim")
install_library_log_redaction()

SCIM_MEDIA_TYPE = "application/scim+json"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

_HTTP2_AVAILABLE = importlib.util.find_spec("h2") is not None
"""HTTP/2 is offered when the optional ``h2`` package is installed (``httpx[http2]``), as httpx documents."""


_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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
        write_guard: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.write_guard = write_guard
        """Called right before every write request is sent, retries included; it raises to stop the write (the sync
        engine's lease fence: a writer that lost its lease sends nothing more)."""
        self.quirks = quirks if quirks is not None else TargetQuirks()
        """What this target drops and which PATCH forms it refuses (persist ``quirks.to_dict()`` per target)."""
        self.profile: Profile = get_profile(settings.profile)
        self._base_url = settings.base_url.rstrip("/")
        self._stats = ClientStats()
        self._retries = RetryPolicy(settings, self._stats)
        self.pacer = Pacer(
            max_concurrency=settings.concurrency,
            ceiling_per_s=settings.rate_limit,
            adaptive=settings.adaptive_pacing,
        )
        # Every request, the token request and look-ups included, holds a pacer slot: no more connections are needed.
        pool = settings.concurrency
        # httpx's stock transport: with ``transport=None`` httpx builds it from these settings and honours the
        # proxies of the environment (``trust_env``); a transport passed in (tests) is used as it is.
        self._http = httpx.AsyncClient(
            transport=transport,
            verify=_tls_context(settings) if transport is None else True,
            http2=_HTTP2_AVAILABLE and transport is None,
            trust_env=True,
            follow_redirects=False,
            timeout=httpx.Timeout(settings.timeout),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            headers={"Accept": f"{SCIM_MEDIA_TYPE}, application/json"},
        )
        self._auth: ClientCredentialsAuth | None = None
        if settings.uses_oauth:
            self._auth = _client_authentication(settings, self.quirks)
            self._auth.bind(self._http, deadline_s=settings.timeout)

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
        self._stats.pacing = self.pacer.snapshot()
        return self._stats

    async def authenticate(self) -> None:
        """Obtain an access token now, when the client uses OAuth: exactly one request to the token endpoint and none
        to the SCIM server (none at all while a valid token is cached). A cycle calls it first, so a revoked secret
        fails the next run, even one with nothing to change.

        Raises :class:`~scim_pipeline.scim.CredentialsRefused` (naming the setting to fix) when the token endpoint
        refuses the client for good, :class:`~scim_pipeline.scim.AuthenticationError` when it cannot be reached."""
        if self._auth is not None:
            await self._auth.token()

    @property
    def auth(self) -> ClientCredentialsAuth | None:
        """The token source (``None`` when no client credentials are configured)."""
        return self._auth

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
        resource_type: str | None = None,
        retry: bool = False,
    ) -> httpx.Response:
        """One request through the pacer, with the bearer token (one refetch and resend after a 401); a ``retry``
        goes ahead of the requests not sent yet."""
        headers = {"Content-Type": SCIM_MEDIA_TYPE} if body is not None else {}
        if if_match is not None:
            headers["If-Match"] = if_match
        content = json.dumps(body).encode() if body is not None else None
        async with self.pacer.slot(retry=retry) as slot:
            token = await self._auth.token() if self._auth is not None else None
            response = await self._exchange(method, resource_type, url, params, content, headers, token)
            if response.status_code == httpx.codes.UNAUTHORIZED and self._auth is not None and token is not None:
                logger.info("the SCIM server refused the access token; fetching a new one once")
                token = await self._auth.refetch_after_401(token)
                response = await self._exchange(method, resource_type, url, params, content, headers, token)
            slot.observe(response.status_code, response.headers)
        return response

    async def _exchange(
        self,
        method: str,
        resource_type: str | None,
        url: str,
        params: Mapping[str, str] | None,
        content: bytes | None,
        headers: dict[str, str],
        token: str | None,
    ) -> httpx.Response:
        if self.write_guard is not None and method in _WRITE_METHODS:
            self.write_guard()
        request = self._http.build_request(method, url, params=params, content=content, headers=headers)
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        logger.debug("%s %s", method, request.url)
        try:
            response = await send_bounded(
                self._http,
                request,
                deadline_s=self.settings.timeout,
                max_bytes=self.settings.max_response_bytes,
            )
        except httpx.TransportError:
            self._stats.transport_errors += 1
            raise
        except AnswerTooLarge as too_large:
            self._count(too_large.status)
            raise ScimAnswerTooLarge(
                status=too_large.status,
                scim_type=None,
                detail=f"the answer is larger than SCIM_MAX_RESPONSE_BYTES ({too_large.limit} bytes); refused",
                method=method,
                resource_type=resource_type,
            ) from None
        self._count(response.status_code)
        if 300 <= response.status_code < 400:
            raise ScimRedirected(
                status=response.status_code,
                scim_type=None,
                detail=f"a redirect to {location_origin(response)}; redirects are never followed (the access "
                "token would go along): set SCIM_BASE_URL to the final address",
                method=method,
                resource_type=resource_type,
            )
        return response

    def _count(self, status: int) -> None:
        self._stats.requests += 1
        self._stats.by_status[status] += 1

    def _final_error(
        self,
        error: Exception,
        method: str,
        resource_type: str | None,
        attempts: int,
        started: float,
    ) -> NoReturn:
        latency = time.perf_counter() - started
        cause: object = error.cause if isinstance(error, ProvedAbsent) else error
        if isinstance(cause, RetryableAnswer):
            cause = cause.response
        if isinstance(cause, httpx.Response):
            raise self._http_error(cause, method, resource_type, attempts, latency) from None
        if isinstance(cause, httpx.TransportError):
            raise ScimTransportError(
                f"{method} {resource_type or 'SCIM endpoint'}: no answer after {attempts} "
                f"attempt(s) ({type(cause).__name__}: {scrub(str(cause))})",
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
            response = await self._send_once(
                method, url, params=params, body=body, if_match=if_match, resource_type=resource_type, retry=number > 1
            )
            status = response.status_code
            if status in RETRYABLE_STATUSES and status not in passthrough:
                raise RetryableAnswer(response)
            return response

        try:
            response = await self._retries.run(method, resource_type, attempt_once, resend_lost=True)
        except (RetryableAnswer, httpx.TransportError) as error:
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
        ``startIndex`` (the same resources again), stops short of ``totalResults``, keeps returning
        pages beyond what its first ``totalResults`` and page size imply, or beyond ``max_pages``,
        raises :class:`~scim_pipeline.scim.PaginationError` instead of looping or truncating.
        """
        rules = self._require(resource_type, Operation.SEARCH)
        checked = check_filter(self.profile, resource_type, filter)
        projection = _projection(attributes, excluded_attributes)

        async def fetch(start: int, count: int) -> dict[str, Any]:
            params = {"startIndex": str(start), "count": str(count)}
            if checked is not None:
                params["filter"] = str(checked)
            params.update(projection)
            answer = await self._request("GET", resource_type, rules.endpoint, params=params)
            self._stats.pages += 1
            return _json_body(answer.response, "GET", resource_type)

        async for page in fetch_pages(
            fetch, resource_type, count=page_size or self.settings.page_size, max_pages=self.settings.max_pages
        ):
            yield page

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
                response = await self._send_once(
                    "POST", url, body=payload, resource_type=resource_type, retry=number > 1
                )
            except ANSWER_LOST as lost:
                if match_value is None:
                    raise
                if adopted := await adopt():
                    return adopted
                raise ProvedAbsent(lost) from None
            status = response.status_code
            if status in NOT_APPLIED_STATUSES:
                raise RetryableAnswer(response)
            if status in OUTCOME_UNKNOWN_STATUSES and match_value is not None:
                if adopted := await adopt():
                    return adopted
                raise ProvedAbsent(response)
            conflict = status == httpx.codes.CONFLICT or _scim_type(response) == "uniqueness"
            if conflict and (adopted := await adopt()):
                return adopted
            return response

        try:
            outcome = await self._retries.run("POST", resource_type, attempt_once, resend_lost=False)
            if isinstance(outcome, ScimResult):
                return outcome
            response = outcome
        except ANSWER_LOST as lost:
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
        except (RetryableAnswer, ProvedAbsent, httpx.TransportError) as error:
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
            etag=_etag(answer.response, resource),
        )


def _client_authentication(settings: ConnectionSettings, quirks: TargetQuirks) -> ClientCredentialsAuth:
    """The token source of ``settings``: its method, its key, and where the default method comes from."""
    assert settings.client_id is not None
    key_path = settings.client_key_path
    signing_key = load_signing_key(key_path, settings.client_key_id) if key_path is not None else None
    token_url = settings.resolved_token_url
    # Delinea's token endpoint takes the secret in the form, as Delinea documents, and publishes no RFC 8414 metadata:
    # asking for it there would only cost a request. A standard authorization server may publish its methods.
    delinea = settings.profile == "delinea"
    return ClientCredentialsAuth(
        token_url=token_url,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        scope=settings.scope or None,
        method=settings.token_auth_method,
        signing_key=signing_key,
        default_method="client_secret_post" if delinea else "client_secret_basic",
        discover=settings.token_auth_method is None and not delinea,
        quirks=quirks,
    )


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


def _etag(response: httpx.Response, resource: Mapping[str, Any] | None) -> str | None:
    """The version to send back in ``If-Match``: the ``ETag`` header, else ``meta.version`` (RFC 7644 §3.14)."""
    header: str | None = response.headers.get("etag")
    if header:
        return header
    meta = resource.get("meta") if resource is not None else None
    version = meta.get("version") if isinstance(meta, Mapping) else None
    return version if isinstance(version, str) and version else None


def _scim_type(response: httpx.Response) -> str | None:
    return parse_error_body(response)[0] if response.status_code >= 400 else None
