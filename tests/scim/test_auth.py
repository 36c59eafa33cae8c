"""OAuth 2.0 client credentials: one shared refresh, one retry on 401, clear errors, no secret."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from scim_pipeline.scim import (
    AuthenticationError,
    ConfigurationError,
    ConnectionSettings,
    CredentialsRefused,
    ScimClient,
    ScimUnauthorized,
    TargetQuirks,
)
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
        with pytest.raises(CredentialsRefused) as caught:
            await client.get("Users", "u1")
        with pytest.raises(CredentialsRefused):
            await client.get("Users", "u2")  # refused for good: not asked again
    error = caught.value
    assert (error.token_url, error.status, error.oauth_error) == (TOKEN_URL, 400, "invalid_client")
    assert TOKEN_URL in str(error)
    assert "HTTP 400" in str(error)
    assert "SCIM_CLIENT_SECRET" in str(error)
    assert "\n" not in str(error)
    assert MOCK_SECRET not in str(error)
    assert MOCK_SECRET not in repr(error)
    assert service.scim_requests == []
    # The Delinea default (the secret in the form) first, then HTTP Basic once: never a third request.
    assert service.token_requests == 2
    assert "client_secret" in service.token_forms[0]
    assert "client_secret" not in service.token_forms[1]


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


# -- client authentication methods (RFC 6749 §2.3.1, RFC 7523, RFC 8414) ----------------------------------------------

RFC_TOKEN_URL = "https://login.example.test/oauth2/token"
METADATA_URL = "https://login.example.test/.well-known/oauth-authorization-server"
ODD_SECRET = "a:b%c d+é"


class TokenEndpoint:
    """A scripted token endpoint on MockTransport: accepts only ``accepts``, counts what it was sent."""

    def __init__(self, accepts: set[str], *, metadata: dict[str, object] | None = None) -> None:
        self.accepts = accepts
        self.metadata = metadata
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.metadata_requests = 0
        self.answer: httpx.Response | None = None
        self.public_key: object = None

    def method_of(self, request: httpx.Request, form: dict[str, str]) -> str:
        if request.headers.get("authorization", "").startswith("Basic "):
            return "client_secret_basic"
        if "client_assertion" in form:
            return "private_key_jwt"
        return "client_secret_post"

    def handle(self, request: httpx.Request) -> httpx.Response:
        if str(request.url) == METADATA_URL:
            self.metadata_requests += 1
            return httpx.Response(200, json=self.metadata) if self.metadata else httpx.Response(404)
        if str(request.url) != RFC_TOKEN_URL:
            return scim_json(200, USER)
        from urllib.parse import parse_qsl

        form = dict(parse_qsl(request.content.decode()))
        method = self.method_of(request, form)
        self.requests.append((method, form))
        if self.answer is not None:
            return self.answer
        if method not in self.accepts:
            return httpx.Response(401, json={"error": "invalid_client", "error_description": f"not {method}"})
        return httpx.Response(200, json={"access_token": f"t{len(self.requests)}", "token_type": "Bearer"})

    @property
    def methods(self) -> list[str]:
        return [method for method, _ in self.requests]


def rfc_settings(**overrides: object) -> ConnectionSettings:
    values: dict[str, object] = {
        "base_url": "https://scim.example.test/v2",
        "token_url": RFC_TOKEN_URL,
        "client_id": "svc:1",
        "client_secret": ODD_SECRET,
        "profile": "rfc7644",
        "max_retry_wait_s": 0.01,
        **overrides,
    }
    return ConnectionSettings(**values)


async def test_a_standard_server_gets_http_basic_with_form_urlencoded_credentials() -> None:
    endpoint = TokenEndpoint({"client_secret_basic"})
    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(endpoint.handle)) as client:
        await client.get("Users", "u1")
    ((method, form),) = endpoint.requests
    assert method == "client_secret_basic"
    assert "client_secret" not in form
    assert "client_id" not in form
    # RFC 6749 §2.3.1: id and secret form-urlencoded before Base64, so ':' and '%' stay unambiguous.
    assert endpoint.metadata_requests == 1


async def test_basic_credentials_decode_to_the_id_and_secret() -> None:
    import base64
    from urllib.parse import unquote

    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if str(request.url) == RFC_TOKEN_URL:
            seen.append(request.headers["authorization"].removeprefix("Basic "))
            return httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})
        return httpx.Response(404) if "well-known" in str(request.url) else scim_json(200, USER)

    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(handle)) as client:
        await client.authenticate()
    user, _, password = base64.b64decode(seen[0]).decode().partition(":")
    assert (unquote(user), unquote(password)) == ("svc:1", ODD_SECRET)


async def test_invalid_client_tries_the_other_secret_method_once_and_the_target_remembers_it() -> None:
    endpoint = TokenEndpoint({"client_secret_post"})
    quirks = TargetQuirks()
    transport = httpx.MockTransport(endpoint.handle)
    async with ScimClient(rfc_settings(), transport=transport, quirks=quirks) as client:
        await client.get("Users", "u1")
    assert endpoint.methods == ["client_secret_basic", "client_secret_post"]
    stored = TargetQuirks.from_dict(json.loads(json.dumps(quirks.to_dict())))
    endpoint.requests.clear()
    async with ScimClient(rfc_settings(), transport=transport, quirks=stored) as client:
        await client.get("Users", "u1")
    assert endpoint.methods == ["client_secret_post"], "the next run goes straight to what worked"


async def test_a_revoked_secret_after_the_method_was_learned_costs_exactly_one_token_request() -> None:
    endpoint = TokenEndpoint(set())
    quirks = TargetQuirks()
    quirks.record_token_auth(RFC_TOKEN_URL, "svc:1", "client_secret_basic")
    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(endpoint.handle), quirks=quirks) as client:
        with pytest.raises(CredentialsRefused) as caught:
            await client.authenticate()
        results = await asyncio.gather(*(client.get("Users", f"u{i}") for i in range(20)), return_exceptions=True)
    assert all(isinstance(result, CredentialsRefused) for result in results)
    assert endpoint.methods == ["client_secret_basic"]
    message = str(caught.value)
    assert "SCIM_CLIENT_ID and SCIM_CLIENT_SECRET" in message
    assert "invalid_client" in message
    assert ODD_SECRET not in message
    assert "\n" not in message
    assert isinstance(caught.value, ConfigurationError)


async def test_a_configured_method_is_never_swapped_for_another() -> None:
    endpoint = TokenEndpoint({"client_secret_basic"})
    settings = rfc_settings(token_auth="client_secret_post")
    async with ScimClient(settings, transport=httpx.MockTransport(endpoint.handle)) as client:
        with pytest.raises(CredentialsRefused, match="SCIM_TOKEN_AUTH"):
            await client.authenticate()
    assert endpoint.methods == ["client_secret_post"]
    assert endpoint.metadata_requests == 0


async def test_published_metadata_decides_the_first_method() -> None:
    metadata = {"token_endpoint": RFC_TOKEN_URL, "token_endpoint_auth_methods_supported": ["client_secret_post"]}
    endpoint = TokenEndpoint({"client_secret_post"}, metadata=metadata)
    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(endpoint.handle)) as client:
        await client.authenticate()
        await client.authenticate()  # a valid token is cached: nothing sent
    assert endpoint.methods == ["client_secret_post"]
    assert endpoint.metadata_requests == 1


async def test_metadata_of_another_token_endpoint_is_ignored() -> None:
    metadata = {"token_endpoint": "https://other.test/token", "token_endpoint_auth_methods_supported": ["none"]}
    endpoint = TokenEndpoint({"client_secret_basic"}, metadata=metadata)
    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(endpoint.handle)) as client:
        await client.authenticate()
    assert endpoint.methods == ["client_secret_basic"]


async def test_authenticate_asks_the_token_endpoint_once_and_the_scim_server_never() -> None:
    service = MockScim(lambda request: scim_json(200, USER))
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.authenticate()
        await client.authenticate()
    assert service.token_requests == 1
    assert service.scim_requests == []


@pytest.mark.parametrize(
    ("status", "oauth_error", "setting"),
    [
        (400, "invalid_scope", "SCIM_SCOPE"),
        (400, "unauthorized_client", "SCIM_CLIENT_ID"),
        (404, None, "SCIM_TOKEN_URL"),
        (403, None, "SCIM_CLIENT_SECRET"),
    ],
)
async def test_a_final_refusal_names_the_setting_to_fix(status: int, oauth_error: str | None, setting: str) -> None:
    endpoint = TokenEndpoint({"client_secret_basic"})
    endpoint.answer = httpx.Response(status, json={"error": oauth_error} if oauth_error else {})
    async with ScimClient(rfc_settings(), transport=httpx.MockTransport(endpoint.handle)) as client:
        with pytest.raises(CredentialsRefused) as caught:
            await client.get("Users", "u1")
    assert setting in caught.value.setting
    assert setting in str(caught.value)
    assert len(endpoint.requests) == 1


async def test_a_token_endpoint_failing_with_503_is_retried_not_final() -> None:
    answers = [httpx.Response(503), httpx.Response(200, json={"access_token": "t", "token_type": "bearer"})]
    service = MockScim(lambda request: scim_json(200, USER))

    async def handle(request: httpx.Request) -> httpx.Response:
        if str(request.url) == TOKEN_URL:
            return answers.pop(0)
        return await service._handle(request)

    async with ScimClient(mock_settings(), transport=httpx.MockTransport(handle)) as client:
        assert (await client.get("Users", "u1")).status == 200


async def test_a_refresh_refused_in_the_middle_of_a_cycle_is_final() -> None:
    service = MockScim(lambda request: scim_json(200, USER), token_lifetime_s=3600)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.get("Users", "u1")
        service.token_answer = httpx.Response(401, json={"error": "invalid_client"})
        service.handler = lambda request: scim_json(401, {"status": "401"})  # the token was revoked
        with pytest.raises(CredentialsRefused, match="SCIM_CLIENT_SECRET"):
            await client.get("Users", "u1")
        with pytest.raises(CredentialsRefused):
            await client.get("Users", "u2")
    # one token, then one refused refetch (and the other secret method once: the method was never learned)
    assert service.token_requests <= 3


async def test_private_key_jwt_signs_a_fresh_assertion_for_the_token_url(tmp_path: Path) -> None:
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    key_file = tmp_path / "client.pem"
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    endpoint = TokenEndpoint({"private_key_jwt"})
    settings = rfc_settings(client_secret=None, client_key_file=str(key_file), client_key_id="k1")
    async with ScimClient(settings, transport=httpx.MockTransport(endpoint.handle)) as client:
        await client.authenticate()
        assert client.auth is not None
        client.auth.expire()
        await client.authenticate()
    assertions = [form["client_assertion"] for _, form in endpoint.requests]
    claims = [
        jwt.decode(a, key.public_key(), algorithms=["ES256"], audience=RFC_TOKEN_URL, issuer="svc:1")
        for a in assertions
    ]
    assert {c["sub"] for c in claims} == {"svc:1"}
    assert claims[0]["jti"] != claims[1]["jti"]
    assert jwt.get_unverified_header(assertions[0])["kid"] == "k1"
    assert {form["client_assertion_type"] for _, form in endpoint.requests} == {
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    }


def test_a_key_file_that_is_not_a_private_key_names_the_setting(tmp_path: Path) -> None:
    bad = tmp_path / "key.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ConfigurationError, match="SCIM_CLIENT_KEY_FILE") as caught:
        ScimClient(rfc_settings(client_secret=None, client_key_file=str(bad)))
    assert "not a key" not in str(caught.value)
