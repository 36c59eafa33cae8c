"""A real loopback SCIM service for the integration tests: the third-party scim2-server (its ASGI
application over an in-memory storage) behind a small OAuth token endpoint, served by uvicorn on
127.0.0.1 in a background thread, with optional fault injection in front of it.

scim2-server has no OAuth endpoint, so ``/oauth2/token`` here issues short random bearer tokens
for one client id and secret, and every SCIM request must carry one of them.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from scim2_models import ScimProvider, ServiceProviderConfig
from scim2_server.applications.asgi import ASGIApplication
from scim2_server.memory import AsyncInMemoryStorage
from scim2_server.service import ScimService
from scim2_server.utils import (
    load_default_resource_types,
    load_default_schemas,
    load_default_service_provider_config,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLIENT_ID = "scim-test-client"
CLIENT_SECRET = "s3cr3t-Do-Not-Log-7f9a"  # asserted absent from logs, reprs and errors


@dataclass
class FaultPlan:
    """What the server does to SCIM requests before (or after) scim2-server sees them."""

    rate: float = 0.0
    """Share of SCIM requests answered with one of ``statuses`` without being applied."""
    statuses: tuple[int, ...] = (429, 503)
    retry_after: str | None = "1"
    methods: frozenset[str] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
    drop_after_apply: int = 0
    """The next N POSTs are applied, then their connection is cut before the body is sent."""
    stall_after_apply_s: float = 0.0
    """When > 0, the next ``drop_after_apply`` POSTs stall this long after being applied
    (the client times out) instead of being cut."""
    ignore_start_index: bool = False
    """Answer every list request as if startIndex were 1."""
    refuse_user_patch: int | None = None
    """Answer this status (501, 405, 400) to every PATCH of a user, without passing it on."""
    refused_filter_operators: frozenset[str] = frozenset()
    """Answer 400 invalidFilter to every filter using one of these operators (``eq``, ``ew``, …)."""
    flood_users: bool = False
    """Answer every listing of users with totalResults 1,000,000,000 and fresh users on each page."""
    seed: int = 7
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class _ConnectionCut(Exception):
    """Raised after the response started, so uvicorn closes the connection mid-answer."""


class LoopbackScimServer:
    """scim2-server + a token endpoint + fault injection, on 127.0.0.1 at an ephemeral port."""

    token_path = "/oauth2/token"

    def __init__(self, *, page_cap: int | None = None, token_lifetime_s: float = 3600.0, app: Any = None) -> None:
        """``app``: another SCIM server's ASGI application serving ``/v2`` (django-scim2's, for instance) in place
        of scim2-server's."""
        config: ServiceProviderConfig = load_default_service_provider_config()
        if page_cap is not None and config.filter is not None:
            config.filter.max_results = page_cap
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(), load_default_resource_types().values(), config=config
        )
        self.storage = AsyncInMemoryStorage()
        self._scim2_server = ASGIApplication(
            self.storage, provider, ScimService(provider, secret=secrets.token_urlsafe(16))
        )
        self._scim: Any = app if app is not None else self._scim2_server
        self.token_lifetime_s = token_lifetime_s
        self.faults = FaultPlan()
        self.token_requests = 0
        self.token_forms: list[dict[str, str]] = []
        self.refuse_tokens_with: int | None = None
        self._tokens: dict[str, float] = {}
        self.scim_requests: list[tuple[str, str, str]] = []
        self.injected: list[int] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle --------------------------------------------------------------------------------

    def __enter__(self) -> LoopbackScimServer:
        config = uvicorn.Config(self, host="127.0.0.1", port=0, log_level="critical", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the loopback SCIM server did not start")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.should_exit = True
        self._thread.join(timeout=10)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v2"

    @property
    def token_url(self) -> str:
        return f"{self.origin}{self.token_path}"

    def revoke_tokens(self) -> None:
        """Make every issued token invalid (the next SCIM request answers 401)."""
        self._tokens.clear()

    def seed_users(self, user_names: list[str]) -> None:
        """Store users directly (no HTTP), for tests about reading."""
        provider = self._scim2_server.service.provider
        model = provider.model_for_endpoint("/Users")
        (resource_type,) = [rt for rt in provider.resource_types if rt.endpoint == "/Users"]
        for user_name in user_names:
            payload = {"schemas": [str(model.__schema__)], "userName": user_name}
            self.storage.storage.create(resource_type, model.model_validate(payload))

    def users(self) -> list[dict[str, Any]]:
        """The stored users, as dicts (reads the storage directly)."""
        return [r.model_dump() for r in self.storage.resources if type(r).__name__.startswith("User")]

    def scim_request_count(self, method: str | None = None, path_prefix: str = "/v2") -> int:
        return sum(1 for m, p, _ in self.scim_requests if (method is None or m == method) and p.startswith(path_prefix))

    # -- ASGI -------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == self.token_path:
            await self._token_endpoint(scope, receive, send)
            return
        if not self._authorized(scope):
            await _json(send, 401, {"status": "401", "detail": "unauthorized"})
            return
        method: str = scope["method"]
        self.scim_requests.append((method, path, scope["query_string"].decode()))
        faults = self.faults
        if method in faults.methods and faults.rate and faults.rng.random() < faults.rate:
            status = faults.rng.choice(faults.statuses)
            self.injected.append(status)
            headers = {"retry-after": faults.retry_after} if faults.retry_after else {}
            detail = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"]}
            await _json(send, status, {**detail, "status": str(status)}, headers)
            return
        refusal = _refusal(faults, method, path, parse_qs(scope["query_string"].decode()))
        if refusal is not None:
            status, scim_type = refusal
            self.injected.append(status)
            body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": str(status)}
            await _json(send, status, {**body, "scimType": scim_type} if scim_type else body)
            return
        if faults.flood_users and method == "GET" and path.rstrip("/").endswith("/Users"):
            await _json(send, 200, _flood_page(parse_qs(scope["query_string"].decode())))
            return
        if faults.ignore_start_index and method == "GET" and scope["query_string"]:
            query = parse_qs(scope["query_string"].decode())
            query["startIndex"] = ["1"]
            scope = {
                **scope,
                "query_string": "&".join(f"{k}={v}" for k, values in query.items() for v in values).encode(),
            }
        if method == "POST" and faults.drop_after_apply > 0:
            faults.drop_after_apply -= 1
            await self._apply_then_lose_answer(scope, receive, send, faults.stall_after_apply_s)
            return
        await self._scim(scope, receive, send)

    async def _apply_then_lose_answer(self, scope: Scope, receive: Receive, send: Send, stall_s: float) -> None:
        captured: list[Message] = []

        async def capture(message: Message) -> None:
            captured.append(message)

        await self._scim(scope, receive, capture)
        if stall_s > 0:
            await asyncio.sleep(stall_s)  # the client gives up reading first
            return
        await send(captured[0])  # headers announce a body that never comes
        raise _ConnectionCut

    def _authorized(self, scope: Scope) -> bool:
        headers = dict(scope["headers"])
        scheme, _, token = headers.get(b"authorization", b"").decode().partition(" ")
        expires = self._tokens.get(token)
        return scheme.lower() == "bearer" and expires is not None and expires > time.monotonic()

    async def _token_endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        basic = _basic_credentials(scope)
        if basic is not None:  # RFC 6749 §2.3.1: every authorization server accepts HTTP Basic
            form["client_id"], form["client_secret"] = basic
        self.token_requests += 1
        self.token_forms.append(form)
        if self.refuse_tokens_with is not None:
            await _json(send, self.refuse_tokens_with, {"error": "invalid_client"})
            return
        if (
            form.get("grant_type") != "client_credentials"
            or form.get("client_id") != CLIENT_ID
            or form.get("client_secret") != CLIENT_SECRET
        ):
            await _json(send, 401, {"error": "invalid_client"})
            return
        token = secrets.token_urlsafe(24)
        self._tokens[token] = time.monotonic() + self.token_lifetime_s
        await _json(
            send,
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s},
        )


def _refusal(faults: FaultPlan, method: str, path: str, query: dict[str, list[str]]) -> tuple[int, str | None] | None:
    """The status (and scimType) a misbehaving server answers instead of passing the request on."""
    if faults.refuse_user_patch is not None and method == "PATCH" and "/Users/" in path:
        return faults.refuse_user_patch, None
    filters = query.get("filter", [])
    if method == "GET" and filters and faults.refused_filter_operators:
        words = {word.lower() for word in filters[0].split()}
        if words & faults.refused_filter_operators:
            return 400, "invalidFilter"
    return None


def _flood_page(query: dict[str, list[str]]) -> dict[str, Any]:
    start = int(query.get("startIndex", ["1"])[0])
    count = int(query.get("count", ["100"])[0])
    users = [{"id": f"flood-{start + i}", "userName": f"flood{start + i}@example.test"} for i in range(count)]
    return {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
        "totalResults": 1_000_000_000,
        "startIndex": start,
        "itemsPerPage": count,
        "Resources": users,
    }


def _basic_credentials(scope: Scope) -> tuple[str, str] | None:
    import base64
    from urllib.parse import unquote

    scheme, _, value = dict(scope["headers"]).get(b"authorization", b"").decode().partition(" ")
    if scheme.lower() != "basic":
        return None
    user, _, password = base64.b64decode(value).decode().partition(":")
    return unquote(user), unquote(password)


async def _json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})
