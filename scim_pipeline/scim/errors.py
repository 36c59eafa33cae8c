"""The exceptions of the SCIM core.

Callers catch a family, not a string::

    ScimPipelineError
    ├── ConfigurationError          settings or a mapping cannot work (names the variable)
    ├── ProfileViolation            refused by the service-provider profile, before any request
    │   ├── FilterRefused
    │   └── OperationRefused
    ├── AuthenticationError         the token endpoint refused us or could not be reached
    │   └── CredentialsRefused      refused for good (invalid_client, invalid_scope, 401/403, …): fatal, names
    │                               the setting to fix; also a ConfigurationError
    ├── ScimTransportError          no HTTP answer (connection refused, timeout) after the retries
    ├── ScimHTTPError               the SCIM server answered with an error status
    │   ├── ScimRedirected          3xx: redirects are never followed (names the Location's origin only)
    │   ├── ScimAnswerTooLarge      the answer passed SCIM_MAX_RESPONSE_BYTES (decoded); refused
    │   ├── ScimClientError         4xx
    │   │   ├── ScimBadRequest          400 (invalidFilter, invalidSyntax, noTarget, …)
    │   │   ├── ScimUnauthorized        401 (even after a fresh token)
    │   │   ├── ScimForbidden           403
    │   │   ├── ScimNotFound            404
    │   │   ├── ScimConflict            409 (uniqueness)
    │   │   ├── ScimPreconditionFailed  412 (invalidVers)
    │   │   └── ScimRateLimited         429 (after the retries)
    │   └── ScimServerError         5xx
    │       └── ScimServiceUnavailable  502, 503, 504 (after the retries)
    ├── PaginationError             a server's paging cannot be trusted (it ignores startIndex, or keeps
    │                               returning pages beyond its totalResults or SCIM_MAX_PAGES)
    ├── FallbackRefused             every PATCH form refused and no PUT possible (a group above
    │                               SCIM_GROUP_PUT_MAX_MEMBERS)
    └── AmbiguousMatchError         a lookup by a matching attribute found several resources

No message carries a secret, a token, or a filter value: every text a server sends passes through
:func:`~scim_pipeline.scim.redaction.scrub` first, and filter values are roster data (user names are
personal data), so a detail the server echoes has its quoted strings masked.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from .redaction import scrub

__all__ = [
    "AmbiguousMatchError",
    "AuthenticationError",
    "ConfigurationError",
    "CredentialsRefused",
    "FallbackRefused",
    "FilterRefused",
    "OperationRefused",
    "PaginationError",
    "ProfileViolation",
    "ScimAnswerTooLarge",
    "ScimBadRequest",
    "ScimClientError",
    "ScimConflict",
    "ScimForbidden",
    "ScimHTTPError",
    "ScimNotFound",
    "ScimPipelineError",
    "ScimPreconditionFailed",
    "ScimRateLimited",
    "ScimRedirected",
    "ScimServerError",
    "ScimServiceUnavailable",
    "ScimTransportError",
    "ScimUnauthorized",
    "error_from_response",
    "location_origin",
    "mask_quoted",
]

_DETAIL_LIMIT = 200
_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_TAGS = re.compile(r"<[^>]*>")


def mask_quoted(text: str) -> str:
    """Replace every quoted string in ``text`` by ``"…"``.

    Servers echo the filter they refused (``Invalid filter userName eq "alice"``); the value is
    personal data and must not reach a log or an exception message.
    """
    return _QUOTED.sub('"…"', text)


def _restore(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class ScimPipelineError(Exception):
    """The base of every error this package raises (picklable with its attributes, so errors
    cross process boundaries, e.g. Dagster's multiprocess executor)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class ConfigurationError(ScimPipelineError):
    """A setting cannot work; the message names the environment variable or field."""


class ProfileViolation(ScimPipelineError):
    """The service-provider profile refuses a request; raised before anything is sent."""


class FilterRefused(ProfileViolation):
    """A filter the profile does not allow (or that does not parse)."""


class OperationRefused(ProfileViolation):
    """An operation the profile does not allow on a resource type."""


class AuthenticationError(ScimPipelineError):
    """The OAuth token endpoint refused the client credentials, or could not be reached.

    ``status`` is the HTTP status of the token endpoint (``None`` when no answer came back),
    ``oauth_error`` the OAuth ``error`` code of its answer when it sent one. The client secret is
    never part of the message.
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str,
        status: int | None = None,
        oauth_error: str | None = None,
    ) -> None:
        super().__init__(message)
        self.token_url = token_url
        self.status = status
        self.oauth_error = oauth_error


class CredentialsRefused(AuthenticationError, ConfigurationError):
    """The token endpoint refused the client for good: wrong or revoked credentials, a method or scope it does not
    accept, or a wrong token URL. No retry can help, so it is never retried and stops the cycle at once (it is not
    one identity's failure). ``setting`` names the variable(s) to fix; the message is one line without any secret.
    """

    def __init__(
        self,
        message: str,
        *,
        token_url: str,
        setting: str,
        status: int | None = None,
        oauth_error: str | None = None,
    ) -> None:
        super().__init__(message, token_url=token_url, status=status, oauth_error=oauth_error)
        self.setting = setting


class ScimTransportError(ScimPipelineError):
    """No HTTP answer came back (connection refused or dropped, timeout) after the retries."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        resource_type: str | None,
        attempts: int,
        latency_s: float,
    ) -> None:
        super().__init__(message)
        self.method = method
        self.resource_type = resource_type
        self.attempts = attempts
        self.latency_s = latency_s


class ScimHTTPError(ScimPipelineError):
    """The SCIM server answered with an error status (RFC 7644 §3.12 body or anything else)."""

    def __init__(
        self,
        *,
        status: int,
        scim_type: str | None,
        detail: str | None,
        method: str,
        resource_type: str | None,
        attempts: int = 1,
        latency_s: float = 0.0,
    ) -> None:
        self.status = status
        self.scim_type = scim_type
        self.detail = detail
        self.method = method
        self.resource_type = resource_type
        self.attempts = attempts
        self.latency_s = latency_s
        super().__init__(self._message())

    def _message(self) -> str:
        target = self.resource_type or "SCIM endpoint"
        text = f"{self.method} {target} answered HTTP {self.status}"
        if self.scim_type:
            text += f" ({self.scim_type})"
        if self.detail:
            text += f": {self.detail}"
        if self.attempts > 1:
            text += f" after {self.attempts} attempts"
        return text


class ScimRedirected(ScimHTTPError):
    """A 3xx answer. Redirects are never followed (the bearer token would go along) and never taken as success
    (an empty answer read as "no resources" would make a reconcile forget what it manages)."""


class ScimAnswerTooLarge(ScimHTTPError):
    """The answer's body, decoded, passed ``SCIM_MAX_RESPONSE_BYTES``; it was not read further."""


class ScimClientError(ScimHTTPError):
    """A 4xx answer."""


class ScimBadRequest(ScimClientError):
    """400: an invalid filter, syntax, path or value; ``noTarget`` for a PATCH that matched nothing."""


class ScimUnauthorized(ScimClientError):
    """401, even after one fresh token was fetched and the request sent again."""


class ScimForbidden(ScimClientError):
    """403: the service account lacks a right (Delinea: Owner-level rights to read containers)."""


class ScimNotFound(ScimClientError):
    """404."""


class ScimConflict(ScimClientError):
    """409 or ``scimType: uniqueness``: the resource already exists."""


class ScimPreconditionFailed(ScimClientError):
    """412 or ``scimType: invalidVers``: the ETag given in ``If-Match`` is stale."""


class ScimRateLimited(ScimClientError):
    """429 still answered after the retries."""


class ScimServerError(ScimHTTPError):
    """A 5xx answer."""


class ScimServiceUnavailable(ScimServerError):
    """502, 503 or 504 still answered after the retries."""


class PaginationError(ScimPipelineError):
    """A paged read cannot be completed faithfully (the server ignores startIndex, or a page is
    missing); raised instead of looping forever or returning a truncated list."""


class FallbackRefused(ScimPipelineError):
    """The target refuses every PATCH form of a change, and the PUT that would say it instead cannot be sent (a
    group too large for ``SCIM_GROUP_PUT_MAX_MEMBERS``, or a profile without GET and PUT); names the setting."""


class AmbiguousMatchError(ScimPipelineError):
    """A lookup by a matching attribute found more than one resource, so none can be adopted."""


_BY_SCIM_TYPE: dict[str, type[ScimHTTPError]] = {
    "uniqueness": ScimConflict,
    "invalidvers": ScimPreconditionFailed,
    "invalidfilter": ScimBadRequest,
    "toomany": ScimBadRequest,
    "invalidsyntax": ScimBadRequest,
    "invalidpath": ScimBadRequest,
    "notarget": ScimBadRequest,
    "invalidvalue": ScimBadRequest,
    "mutability": ScimBadRequest,
    "sensitive": ScimBadRequest,
}

_BY_STATUS: dict[int, type[ScimHTTPError]] = {
    400: ScimBadRequest,
    401: ScimUnauthorized,
    403: ScimForbidden,
    404: ScimNotFound,
    409: ScimConflict,
    412: ScimPreconditionFailed,
    429: ScimRateLimited,
    502: ScimServiceUnavailable,
    503: ScimServiceUnavailable,
    504: ScimServiceUnavailable,
}


def _error_class(status: int, scim_type: str | None) -> type[ScimHTTPError]:
    if scim_type and (by_type := _BY_SCIM_TYPE.get(scim_type.lower())):
        return by_type
    if by_status := _BY_STATUS.get(status):
        return by_status
    if 400 <= status < 500:
        return ScimClientError
    if status >= 500:
        return ScimServerError
    return ScimHTTPError


def location_origin(response: httpx.Response) -> str:
    """The origin (scheme, host, port) a redirect points to, never its path or query (they may hold tokens)."""
    location = response.headers.get("location")
    if not location:
        return "nowhere (no Location header)"
    try:
        target = response.request.url.join(location.strip())
    except (httpx.InvalidURL, RuntimeError, ValueError):
        return "an unreadable Location"
    if not target.scheme or not target.host:
        return "an unreadable Location"
    origin = f"{target.scheme}://{target.host}"
    if target.port is not None:
        origin += f":{target.port}"
    return scrub(origin)


def _clean_detail(text: str) -> str | None:
    text = " ".join(mask_quoted(scrub(text)).split())
    if not text:
        return None
    if len(text) > _DETAIL_LIMIT:
        text = text[: _DETAIL_LIMIT - 1] + "…"
    return text


def parse_error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """Return ``(scimType, detail)`` from any error body, never raising.

    An RFC 7644 §3.12 JSON body gives both; a plain-text body gives a detail; an HTML page, an
    empty body or undecodable bytes give neither.
    """
    content_type = response.headers.get("content-type", "").lower()
    try:
        text = response.text
    except (UnicodeDecodeError, LookupError, httpx.ResponseNotRead):
        return None, None
    if not text.strip():
        return None, None
    if "json" in content_type or text.lstrip().startswith("{"):
        try:
            body: Any = json.loads(text)
        except ValueError:
            body = None
        if isinstance(body, dict):
            scim_type = body.get("scimType")
            detail = body.get("detail")
            return (
                scim_type if isinstance(scim_type, str) and scim_type else None,
                _clean_detail(detail) if isinstance(detail, str) else None,
            )
    if "html" in content_type or text.lstrip()[:1] == "<":
        # A proxy's error page: its title is the useful part, the markup is noise.
        return None, _clean_detail(_TAGS.sub(" ", text))
    return None, _clean_detail(text)


def error_from_response(
    response: httpx.Response,
    *,
    method: str,
    resource_type: str | None,
    attempts: int = 1,
    latency_s: float = 0.0,
) -> ScimHTTPError:
    """Build the typed exception for an error answer: by ``scimType`` when present, else by status."""
    scim_type, detail = parse_error_body(response)
    error_class = _error_class(response.status_code, scim_type)
    return error_class(
        status=response.status_code,
        scim_type=scim_type,
        detail=detail,
        method=method,
        resource_type=resource_type,
        attempts=attempts,
        latency_s=latency_s,
    )
