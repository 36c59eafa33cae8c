"""OAuth 2.0 client-credentials authentication for the SCIM client: every client-authentication method, and refusals
that are final.

The token request authenticates the client with one of the methods RFC 6749 §2.3 and RFC 7523 define:

- ``client_secret_basic`` — HTTP Basic with the form-urlencoded id and secret (every authorization server MUST accept
  it, RFC 6749 §2.3.1);
- ``client_secret_post`` — id and secret in the form body (what Delinea documents; NOT RECOMMENDED by the RFC);
- ``private_key_jwt`` — a JWT assertion signed with the client's private key (RFC 7523 §2.2), audience the token URL,
  a fresh ``jti`` each time, signed by PyJWT.

Unless ``SCIM_TOKEN_AUTH`` says which, the method is the one this target accepted before (target quirks), else what
the authorization server publishes (RFC 8414 ``token_endpoint_auth_methods_supported``), else the profile's default;
an ``invalid_client`` answer to one secret method tries the other once, and what worked is remembered.

A refusal no retry can mend (``invalid_client``, ``invalid_scope``, ``unauthorized_client``, 401, 403, 404, …) raises
:class:`~scim_pipeline.scim.CredentialsRefused` naming the setting to fix, and every later token request of the
client raises it again without asking: one refused token request per cycle, not one per change.

Why not authlib's client: its ``AsyncOAuth2Client`` *is* an ``httpx.AsyncClient`` rather than a token source for ours
(our transport, limits, deadlines, size caps and logging); the flow here is small: one ``asyncio.Lock`` makes
concurrent callers share one token request, and a 401 from the SCIM server triggers exactly one refetch.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from ._exchange import AnswerTooLarge, send_bounded
from .errors import AuthenticationError, ConfigurationError, CredentialsRefused, location_origin
from .redaction import register_secret, scrub

if TYPE_CHECKING:
    from .settings import TokenAuthMethod
    from .target_quirks import TargetQuirks

__all__ = ["SECRET_METHODS", "ClientCredentialsAuth", "SigningKey", "load_signing_key"]

logger = logging.getLogger("scim_pipeline.scim")

SECRET_METHODS: tuple[TokenAuthMethod, TokenAuthMethod] = ("client_secret_basic", "client_secret_post")
PRIVATE_KEY_JWT: TokenAuthMethod = "private_key_jwt"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
METADATA_PATH = "/.well-known/oauth-authorization-server"
ASSERTION_LIFETIME_S = 120

_MAX_REFRESH_MARGIN_S = 60.0
_REFRESH_MARGIN_SHARE = 0.1
_BEARER = "bearer"
_TOKEN_ANSWER_LIMIT = 1024 * 1024
"""A token answer is a few hundred bytes; anything near this is not one."""
_METADATA_LIMIT = 256 * 1024
_OAUTH_TEXT_LIMIT = 200
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
"""4xx answers a later attempt may not get (5xx are transient too); any other 4xx is final."""
_CREDENTIAL_SETTINGS = {
    "client_secret_basic": "SCIM_CLIENT_ID and SCIM_CLIENT_SECRET",
    "client_secret_post": "SCIM_CLIENT_ID and SCIM_CLIENT_SECRET",
    PRIVATE_KEY_JWT: "SCIM_CLIENT_ID, SCIM_CLIENT_KEY_FILE and SCIM_CLIENT_KEY_ID (the key registered for the client)",
}


@dataclass(frozen=True)
class SigningKey:
    """A private key read from a PEM file and the JWS algorithm it signs with (never printed)."""

    key: Any
    algorithm: str
    key_id: str | None = None

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm!r}, key_id={self.key_id!r})"


def load_signing_key(path: Path, key_id: str | None = None) -> SigningKey:
    """The private key of ``path`` (RSA → RS256, EC P-256/384/521 → ES256/384/512, Ed25519 → EdDSA).

    :class:`ConfigurationError` naming ``SCIM_CLIENT_KEY_FILE`` (never the key's content) when it cannot be used."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    label = f"SCIM_CLIENT_KEY_FILE (client_key_file) {path}"
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"{label}: cannot be read ({error.strerror})") from None
    try:
        key = load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(f"{label}: the key is encrypted; give an unencrypted PEM private key") from None
    except (ValueError, Exception):  # cryptography raises several types for a file that is not a key
        raise ConfigurationError(f"{label}: not a PEM private key (RSA, EC or Ed25519)") from None
    if isinstance(key, rsa.RSAPrivateKey):
        algorithm = "RS256"
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name not in by_curve:
            raise ConfigurationError(f"{label}: the EC curve {key.curve.name} has no JWS algorithm; use P-256")
        algorithm = by_curve[key.curve.name]
    elif isinstance(key, ed25519.Ed25519PrivateKey):
        algorithm = "EdDSA"
    else:
        raise ConfigurationError(f"{label}: an RSA, EC or Ed25519 private key is needed")
    return SigningKey(key=key, algorithm=algorithm, key_id=key_id)


class ClientCredentialsAuth(httpx.Auth):
    """Bearer tokens from an OAuth 2.0 token endpoint (``grant_type=client_credentials``).

    The token is cached and fetched again shortly before it expires (60 s, or 10 % of its lifetime when that is
    shorter). Concurrent requests share one token request. ``http`` (set by :meth:`bind`) is the client used to reach
    the token endpoint. ``method`` is ``SCIM_TOKEN_AUTH`` (``None``: decided as the module documentation says);
    ``default_method`` the profile's choice when nothing else tells; ``discover`` whether to read RFC 8414 metadata.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: SecretStr | None,
        scope: str | None,
        method: TokenAuthMethod | None = None,
        signing_key: SigningKey | None = None,
        default_method: TokenAuthMethod = "client_secret_basic",
        discover: bool = False,
        quirks: TargetQuirks | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if method == PRIVATE_KEY_JWT and signing_key is None:
            raise ConfigurationError("SCIM_CLIENT_KEY_FILE is not set: private_key_jwt signs with a PEM private key")
        if method in SECRET_METHODS and client_secret is None:
            raise ConfigurationError(f"SCIM_CLIENT_SECRET is not set: SCIM_TOKEN_AUTH={method} sends the secret")
        if client_secret is None and signing_key is None:
            raise ConfigurationError("SCIM_CLIENT_SECRET is not set: the client has no credentials to send")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self._configured = method
        self._signing_key = signing_key
        self._default_method = default_method
        self._discover = discover
        self._quirks = quirks
        self._clock = clock
        self._http: httpx.AsyncClient | None = None
        self._deadline_s = 30.0
        if client_secret is not None:
            register_secret(client_secret.get_secret_value())
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self._method: TokenAuthMethod | None = None
        self._published: frozenset[str] | None = None
        self._refused: CredentialsRefused | None = None
        self.token_requests = 0
        self.metadata_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self.token_url!r}, client_id={self.client_id!r})"

    def bind(self, http: httpx.AsyncClient, *, deadline_s: float = 30.0) -> None:
        """Use ``http`` (no auth of its own) to reach the token endpoint, each request within ``deadline_s``."""
        self._http = http
        self._deadline_s = deadline_s

    def expire(self) -> None:
        """Forget the cached token's lifetime, so the next request fetches a new one."""
        self._refresh_at = 0.0

    @property
    def method(self) -> TokenAuthMethod | None:
        """The client-authentication method that obtained the current token (``None`` before the first)."""
        return self._method

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

    # -- choosing the method --------------------------------------------------------------------------------------

    async def _choose(self) -> tuple[TokenAuthMethod, TokenAuthMethod | None]:
        """The method to send first, and the one to try once if it is refused as ``invalid_client`` (or ``None``)."""
        if self._method is not None:
            return self._method, None  # it worked in this process: a refusal now is about the credentials
        if self._configured is not None:
            return self._configured, None
        learned = self._quirks.token_auth(self.token_url, self.client_id) if self._quirks is not None else None
        if learned in (*SECRET_METHODS, PRIVATE_KEY_JWT) and self._can_send(learned):
            return learned, None
        if self._client_secret is None:
            return PRIVATE_KEY_JWT, None
        if self._signing_key is not None:
            return PRIVATE_KEY_JWT, None  # a key given without a method: the stronger method was meant
        published = await self._published_methods() if self._discover else None
        candidates = [m for m in SECRET_METHODS if published is None or m in published]
        first = self._default_method if self._default_method in candidates or not candidates else candidates[0]
        other = next((m for m in SECRET_METHODS if m != first and (published is None or m in published)), None)
        return first, other

    def _can_send(self, method: str) -> bool:
        return self._signing_key is not None if method == PRIVATE_KEY_JWT else self._client_secret is not None

    async def _published_methods(self) -> frozenset[str] | None:
        """``token_endpoint_auth_methods_supported`` from RFC 8414 metadata at the token URL's origin, when that
        metadata describes this token endpoint; read once per client."""
        if self._published is not None:
            return self._published or None
        self._published = frozenset()
        parts = urlsplit(self.token_url)
        url = f"{parts.scheme}://{parts.netloc}{METADATA_PATH}"
        assert self._http is not None
        self.metadata_requests += 1
        try:
            request = self._http.build_request("GET", url, headers={"Accept": "application/json"})
            response = await send_bounded(self._http, request, deadline_s=self._deadline_s, max_bytes=_METADATA_LIMIT)
        except (httpx.HTTPError, AnswerTooLarge):
            return None
        body = _json_object(response) if response.status_code == httpx.codes.OK else {}
        endpoint, methods = body.get("token_endpoint"), body.get("token_endpoint_auth_methods_supported")
        if not isinstance(endpoint, str) or endpoint.rstrip("/") != self.token_url.rstrip("/"):
            return None  # no metadata, or another authorization server's
        if not isinstance(methods, list):
            methods = ["client_secret_basic"]  # RFC 8414 §2: the default when omitted
        self._published = frozenset(str(m) for m in methods)
        logger.debug("the authorization server publishes the methods %s", ", ".join(sorted(self._published)))
        return self._published

    # -- the token request ----------------------------------------------------------------------------------------

    async def _fetch(self) -> str:
        if self._http is None:
            raise RuntimeError("ClientCredentialsAuth.bind() was not called")
        if self._refused is not None:
            raise self._refused  # refused for good: asking again would only be refused again
        method, other = await self._choose()
        try:
            token = await self._request(method)
        except CredentialsRefused as refused:
            if other is None or refused.oauth_error != "invalid_client":
                self._refused = refused
                raise
            logger.info("the token endpoint refused %s (invalid_client); trying %s once", method, other)
            try:
                token = await self._request(other)
            except CredentialsRefused as again:
                if again.oauth_error == "invalid_client":
                    again = self._refusal(f"{method} and {other}", again.status, again.oauth_error, None)
                self._refused = again
                raise again from None
            method = other
        if self._method != method:
            self._method = method
            if self._quirks is not None:
                self._quirks.record_token_auth(self.token_url, self.client_id, method)
        return token

    def _form_and_headers(self, method: TokenAuthMethod) -> tuple[dict[str, str], dict[str, str]]:
        form = {"grant_type": "client_credentials"}
        headers = {"Accept": "application/json"}
        if self.scope:
            form["scope"] = self.scope
        if method == PRIVATE_KEY_JWT:
            assert self._signing_key is not None
            form.update(
                client_id=self.client_id,
                client_assertion_type=ASSERTION_TYPE,
                client_assertion=self._assertion(self._signing_key),
            )
            return form, headers
        assert self._client_secret is not None
        secret = self._client_secret.get_secret_value()
        if method == "client_secret_post":
            form.update(client_id=self.client_id, client_secret=secret)
        else:
            # RFC 6749 §2.3.1: each part form-urlencoded before Base64 (a ':' or '%' in a secret stays unambiguous).
            pair = f"{quote(self.client_id, safe='')}:{quote(secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        return form, headers

    def _assertion(self, key: SigningKey) -> str:
        import jwt

        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": self.token_url,
            "iat": now,
            "nbf": now,
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": uuid.uuid4().hex,
        }
        headers = {"kid": key.key_id} if key.key_id else None
        assertion = jwt.encode(claims, key.key, algorithm=key.algorithm, headers=headers)
        register_secret(assertion)  # a bearer credential until it expires: scrubbed if a server echoes it
        return assertion

    async def _request(self, method: TokenAuthMethod) -> str:
        assert self._http is not None
        form, headers = self._form_and_headers(method)
        self.token_requests += 1
        started = self._clock()
        request = self._http.build_request("POST", self.token_url, data=form, headers=headers)
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
            raise CredentialsRefused(
                f"the token endpoint {self.token_url} answered HTTP {response.status_code} redirecting to "
                f"{location_origin(response)}; redirects are not followed with client credentials: set "
                "SCIM_TOKEN_URL to the final address",
                token_url=self.token_url,
                setting="SCIM_TOKEN_URL",
                status=response.status_code,
            )
        body = _json_object(response)
        if response.status_code != httpx.codes.OK:
            oauth_error = _oauth_text(body.get("error"))
            description = _oauth_text(body.get("error_description"))
            status = response.status_code
            if 400 <= status < 500 and status not in _TRANSIENT_STATUSES:
                raise self._refusal(method, status, oauth_error, description)
            suffix = f" (OAuth error {oauth_error!r})" if oauth_error else ""
            if description:
                suffix += f": {description}"
            raise AuthenticationError(
                f"the token endpoint {self.token_url} answered HTTP {status}{suffix}",
                token_url=self.token_url,
                status=status,
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
        logger.debug("obtained an access token valid for %.0f s (%s)", lifetime, method)
        return access_token

    def _refusal(
        self, method: str, status: int | None, oauth_error: str | None, description: str | None
    ) -> CredentialsRefused:
        """The one-line error of a final refusal, naming what to fix."""
        if oauth_error == "invalid_scope":
            setting, problem = "SCIM_SCOPE", f"refused the scope {self.scope!r}" if self.scope else "wants a scope"
        elif oauth_error in ("unauthorized_client", "unsupported_grant_type"):
            setting = "SCIM_CLIENT_ID"
            problem = "does not let this client use the client_credentials grant (enable it for the client)"
        elif status in (404, 405):
            setting, problem = "SCIM_TOKEN_URL", "is not a token endpoint"
        else:
            setting = _CREDENTIAL_SETTINGS.get(method, _CREDENTIAL_SETTINGS["client_secret_basic"])
            if self._configured is not None and method in SECRET_METHODS:
                setting += " (or SCIM_TOKEN_AUTH, which asks for " + method + ")"
            problem = f"refused the client credentials sent with {method}"
        cause = f"HTTP {status}" if status is not None else "refused"
        if oauth_error:
            cause += f" {oauth_error}"
        if description:
            cause += f": {description}"
        return CredentialsRefused(
            f"the token endpoint {self.token_url} {problem} ({cause}); check {setting}",
            token_url=self.token_url,
            setting=setting,
            status=status,
            oauth_error=oauth_error,
        )

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
