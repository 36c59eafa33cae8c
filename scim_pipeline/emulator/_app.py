"""The emulated tenant as an ASGI application: Delinea's token endpoint, SCIM API and test endpoints."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import math
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from . import _discovery
from ._config import EmulatorConfig
from ._errors import ScimError, invalid_syntax, invalid_value
from ._filters import parse_filter
from ._patch import read_operations
from ._profile import RULES, Operation, ResourceRules
from ._store import ResourceStore

TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"  # noqa: S105 - a URL path
SCIM_PREFIX = "/scim/v2"
SCIM_MEDIA_TYPE = "application/scim+json"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[[Request], Awaitable[Response]]

_METHOD_OPERATIONS = {
    ("collection", "GET"): Operation.SEARCH,
    ("collection", "POST"): Operation.CREATE,
    ("item", "GET"): Operation.GET,
    ("item", "PUT"): Operation.REPLACE,
    ("item", "PATCH"): Operation.PATCH,
    ("item", "DELETE"): Operation.DELETE,
}


_OWNER_GUARDED = frozenset({"Containers", "ContainerPermissions", "PrivilegedData"})
"""What Delinea answers 403 for when the service account lacks Owner-level rights on containers."""


class ConnectionDropped(Exception):
    """Raised to the client in place of an answer when no socket can be closed (in-process ASGI)."""


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the emulator saw it. ``status`` 0 means the connection was dropped unanswered."""

    method: str
    path: str
    query: str
    status: int
    latency_ms: float
    resource_type: str = ""
    note: str = ""
    """``dropped before write`` / ``dropped after write`` / ``fault`` / ``rate limited``."""


class _TokenBucket:
    """A token bucket refilled at ``rate`` per second holding at most one second of requests."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def headers(self, style: str) -> list[tuple[bytes, bytes]]:
        """The bucket announced as ``style``: its quota per one-second window, what remains, and the seconds
        until it is full again."""
        self._refill()
        quota = math.floor(self.capacity)
        remaining = math.floor(self.tokens)
        reset = math.ceil((self.capacity - self.tokens) / self.rate)
        if style == "x-ratelimit":
            return [
                (b"x-ratelimit-limit", str(quota).encode()),
                (b"x-ratelimit-remaining", str(remaining).encode()),
                (b"x-ratelimit-reset", str(reset).encode()),
            ]
        return [
            (b"ratelimit-policy", f'"default";q={quota};w=1'.encode()),
            (b"ratelimit", f'"default";r={remaining};t={reset}'.encode()),
        ]


class Emulator:
    """The state and knobs of one emulated tenant; an ``EmulatorApp`` serves it over HTTP."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.store = ResourceStore(
            self.config.db_path,
            drop_attributes=self.config.drop_attributes,
            unique_names=not self.config.allow_duplicate_names,
        )
        self.rng = random.Random(self.config.seed)
        self._records: deque[RequestRecord] = deque(maxlen=self.config.request_log_size)
        self._counters: Counter[tuple[str, int]] = Counter()
        self._tokens: dict[str, float] = {}
        self._forced: deque[str] = deque()
        self._bucket = None if self.config.rate_limit_per_s is None else _TokenBucket(self.config.rate_limit_per_s)
        self._log_file: IO[str] | None = None
        if self.config.request_log_path is not None:
            self._log_file = Path(self.config.request_log_path).open("a", encoding="utf-8", buffering=1)  # noqa: SIM115

    @property
    def requests(self) -> list[RequestRecord]:
        """The latest requests, oldest first (bounded by ``request_log_size``)."""
        return list(self._records)

    @property
    def counters(self) -> dict[str, dict[int, int]]:
        """How many answers of each status each resource type (or ``token``, discovery endpoint) gave."""
        counters: dict[str, dict[int, int]] = {}
        for (resource_type, status), count in sorted(self._counters.items()):
            counters.setdefault(resource_type, {})[status] = count
        return counters

    def clear_requests(self) -> None:
        """Forget the recorded requests and the counters."""
        self._records.clear()
        self._counters.clear()

    def record(self, record: RequestRecord) -> None:
        self._records.append(record)
        self._counters[(record.resource_type, record.status)] += 1
        if self._log_file is not None:
            self._log_file.write(json.dumps(asdict(record)) + "\n")

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        self.store.close()

    # -- OAuth --------------------------------------------------------------------------------

    def issue_token(self, client_id: str) -> tuple[str, float]:
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self.config.token_lifetime_s
        token_hash = _hash(token)
        self._tokens[token_hash] = expires_at
        # Persisted (as a hash) so another process or a restart on the same file accepts it.
        self.store.save_token(token_hash, client_id, expires_at)
        return token, expires_at

    def check_token(self, authorization: str | None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise _unauthorized("a bearer token is required")
        token_hash = _hash(token.strip())
        expires_at = self._tokens.get(token_hash)
        if expires_at is None:
            expires_at = self.store.token_expiry(token_hash)
            if expires_at is None:
                raise _unauthorized("the access token is not valid")
            self._tokens[token_hash] = expires_at
        if time.time() >= expires_at:
            raise _unauthorized("the access token has expired")

    def check_client(self, client_id: str, client_secret: str) -> bool:
        expected = self.config.clients.get(client_id)
        # Compare even for an unknown client so timing does not reveal which client ids exist.
        return hmac.compare_digest((expected or "\0").encode(), client_secret.encode()) and (expected is not None)

    # -- knobs --------------------------------------------------------------------------------

    def latency_s(self) -> float:
        jitter = self.rng.uniform(0.0, self.config.latency_jitter_ms) if self.config.latency_jitter_ms else 0.0
        return (self.config.latency_ms + jitter) / 1000.0

    def within_rate_limit(self) -> bool:
        return self._bucket is None or self._bucket.take()

    def rate_limit_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers announcing the rate limit on a SCIM answer (none unless ``announce_rate_limit`` asks)."""
        if self._bucket is None or self.config.announce_rate_limit == "none":
            return []
        return self._bucket.headers(self.config.announce_rate_limit)

    def force(self, *misbehaviours: str) -> None:
        """Make the next SCIM requests misbehave in this order, before any random draw.

        Each is ``"429"``, ``"500"``, ``"503"``, ``"drop-before"`` or ``"drop-after"`` (or ``"none"``
        to let one request through), so a test can stage exactly the failure it is about.
        """
        unknown = set(misbehaviours) - {"429", "500", "503", "drop-before", "drop-after", "none"}
        if unknown:
            raise ValueError(f"unknown misbehaviour(s): {sorted(unknown)}")
        self._forced.extend(misbehaviours)

    def draw_misbehaviour(self, method: str = "", resource_type: str = "") -> str | None:
        """What this SCIM request suffers: a forced one, ``"429"`` over the rate limit, a random
        ``"500"``/``"503"``/``"429"``/``"drop-before"``/``"drop-after"`` (each knob its own share of one
        roll, for the requests ``fault_scope`` names), or ``None``."""
        if self._forced:
            forced = self._forced.popleft()
            return None if forced == "none" else forced
        if not self.within_rate_limit():
            return "429"
        config = self.config
        if not (config.fault_rate or config.unavailable_rate or config.throttle_rate or config.drop_rate):
            return None
        if not config.faults_apply(method, resource_type):
            return None
        roll = self.rng.random()
        if roll < config.fault_rate:
            return self.rng.choice(("500", "503"))
        roll -= config.fault_rate
        if roll < config.unavailable_rate:
            return "503"
        roll -= config.unavailable_rate
        if roll < config.throttle_rate:
            return "429"
        roll -= config.throttle_rate
        if roll < config.drop_rate:
            return self.rng.choice(("drop-before", "drop-after"))
        return None


def _announcing(emulator: Emulator, send: Send) -> Send:
    """``send`` with the rate-limit headers added to the answer's start (when the emulator announces its limit)."""
    if emulator.config.announce_rate_limit == "none" or emulator.config.rate_limit_per_s is None:
        return send

    async def announce(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *emulator.rate_limit_headers()]}
        await send(message)

    return announce


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unauthorized(detail: str) -> ScimError:
    return ScimError(401, detail, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def _json(
    body: Any, status: int = 200, headers: dict[str, str] | None = None, media_type: str = SCIM_MEDIA_TYPE
) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")).encode(),
        status_code=status,
        headers=headers,
        media_type=media_type,
    )


def _error(error: ScimError) -> Response:
    return _json(error.body(), error.status, error.headers)


def _base_url(request: Request) -> str:
    """The SCIM root as the client addressed it (from the Host header, as Starlette's URL does)."""
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    if host is None:
        server_host, port = scope.get("server") or ("127.0.0.1", 80)
        return f"{scope['scheme']}://{server_host}:{port}{SCIM_PREFIX}"
    return f"{scope['scheme']}://{host.decode('latin-1')}{SCIM_PREFIX}"


def _resource_type_of(path: str) -> str:
    if path == TOKEN_PATH:
        return "token"
    if path.startswith(SCIM_PREFIX + "/"):
        return path[len(SCIM_PREFIX) + 1 :].split("/", 1)[0]
    return ""


class _Exchange:
    """One request being served, recorded once: when its answer starts, or when it ends unanswered.

    Recording before the answer leaves means a client that has its answer also finds it in the log.
    """

    def __init__(self, emulator: Emulator, scope: Scope) -> None:
        self.emulator = emulator
        self.scope = scope
        self.started = time.perf_counter()
        self.status = 0
        self.note = ""
        self._recorded = False

    def finish(self) -> None:
        if self._recorded:
            return
        self._recorded = True
        path: str = self.scope["path"]
        self.emulator.record(
            RequestRecord(
                method=self.scope["method"],
                path=path,
                query=self.scope.get("query_string", b"").decode("latin-1"),
                status=self.status,
                latency_ms=round((time.perf_counter() - self.started) * 1000.0, 3),
                resource_type=_resource_type_of(path),
                note=self.note,
            )
        )

    def forwarding(self, send: Send) -> Send:
        async def forward(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]
                self.finish()
            await send(message)

        return forward

    def swallowing(self) -> Send:
        async def swallow(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = message["status"]

        return swallow


class EmulatorApp:
    """The ASGI application; ``emulator`` holds the state tests can read and seed directly."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._fixed_routes: dict[str, tuple[Handler, frozenset[str]]] = {
            TOKEN_PATH: (self.token, frozenset({"POST"})),
            "/emulator/requests": (self.requests, frozenset({"GET", "DELETE"})),
            "/emulator/state": (self.state, frozenset({"GET"})),
            "/emulator/counters": (self.counters, frozenset({"GET"})),
        }
        self._discovery_routes: dict[str, Handler] = {
            "ServiceProviderConfig": self.service_provider_config,
            "ResourceTypes": self.resource_types,
            "Schemas": self.schemas,
        }

    def _route(self, path: str) -> tuple[Handler | None, dict[str, str]]:
        """The handler of a path and its parameters; a dict lookup, not a scan of patterns."""
        if not path.startswith(SCIM_PREFIX + "/"):
            fixed = self._fixed_routes.get(path)
            return (None, {}) if fixed is None else (fixed[0], {})
        parts = path[len(SCIM_PREFIX) + 1 :].rstrip("/").split("/")
        if len(parts) > 2 or not all(parts):
            return None, {}
        discovery = self._discovery_routes.get(parts[0])
        if discovery is not None:
            return discovery, ({"name": parts[1]} if len(parts) == 2 else {})
        if len(parts) == 1:
            return self.collection, {"resource_type": parts[0]}
        return self.item, {"resource_type": parts[0], "resource_id": parts[1]}

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan or websocket protocol to speak
            return
        handler, params = self._route(scope["path"])
        if handler is None:
            response = _error(ScimError(404, f"no endpoint at {scope['path']}"))
        else:
            fixed = self._fixed_routes.get(scope["path"])
            if fixed is not None and scope["method"] not in fixed[1]:
                response = _error(ScimError(405, "method not allowed", headers={"Allow": ", ".join(sorted(fixed[1]))}))
            else:
                scope["path_params"] = params
                response = await handler(Request(scope, receive))
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/emulator/"):
            await self._dispatch(scope, receive, send)
            return
        exchange = _Exchange(self.emulator, scope)
        try:
            await self._serve(scope, receive, send, exchange)
        finally:
            exchange.finish()

    async def _serve(self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange) -> None:
        """Serve one request through the knobs: latency, rate limit, faults, dropped connections."""
        emulator = self.emulator
        delay = emulator.latency_s()
        if delay > 0:
            await asyncio.sleep(delay)
        if not scope["path"].startswith(SCIM_PREFIX):
            await self._dispatch(scope, receive, exchange.forwarding(send))
            return
        misbehaviour = emulator.draw_misbehaviour(scope["method"], _resource_type_of(scope["path"]))
        send = _announcing(emulator, send)
        if misbehaviour == "429":
            exchange.note = "rate limited"
            retry_after = str(emulator.config.retry_after_s)
            error = ScimError(429, "too many requests", headers={"Retry-After": retry_after})
            await _error(error)(scope, receive, exchange.forwarding(send))
        elif misbehaviour in ("500", "503"):
            exchange.note = "fault"
            transient = misbehaviour == "503"
            error = ScimError(
                int(misbehaviour),
                "Secret Server is unreachable" if transient else "internal error",
                headers={"Retry-After": str(emulator.config.retry_after_s)} if transient else None,
            )
            await _error(error)(scope, receive, exchange.forwarding(send))
        elif misbehaviour == "drop-before":
            await _drain(receive)
            exchange.note = "dropped before write"
            exchange.finish()
            await _drop_connection(send)
        elif misbehaviour == "drop-after":
            await self._dispatch(scope, receive, exchange.swallowing())
            exchange.note = f"dropped after write (would have answered {exchange.status})"
            exchange.status = 0
            exchange.finish()
            await _drop_connection(send)
        else:
            await self._dispatch(scope, receive, exchange.forwarding(send))

    # -- OAuth token endpoint ---------------------------------------------------------------------

    async def token(self, request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
                client_id, _, client_secret = decoded.partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = client_secret = None
        grant_type = form.get("grant_type")
        if grant_type != "client_credentials":
            error = (
                ("invalid_request", "a form-encoded grant_type=client_credentials is required")
                if grant_type is None
                else ("unsupported_grant_type", "only client_credentials is supported")
            )
            return _json({"error": error[0], "error_description": error[1]}, 400, media_type="application/json")
        if not client_id or client_secret is None or not self.emulator.check_client(client_id, client_secret):
            return _json(
                {"error": "invalid_client", "error_description": "client authentication failed"},
                401,
                {"WWW-Authenticate": 'Basic realm="xpmplatform"'},
                media_type="application/json",
            )
        token, _ = self.emulator.issue_token(client_id)
        lifetime = self.emulator.config.token_lifetime_s
        return _json(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": max(1, math.ceil(lifetime)),
                "scope": form.get("scope") or "xpm.platform",
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
            media_type="application/json",
        )

    # -- test endpoints (no token) --------------------------------------------------------------

    async def requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.emulator.clear_requests()
            return Response(status_code=204)
        return _json([asdict(record) for record in self.emulator.requests], media_type="application/json")

    async def state(self, request: Request) -> Response:
        dump = self.emulator.store.dump(base_url=_base_url(request))
        return _json(dump, media_type="application/json")

    async def counters(self, request: Request) -> Response:
        counters = {
            resource_type: {str(status): count for status, count in by_status.items()}
            for resource_type, by_status in self.emulator.counters.items()
        }
        return _json(counters, media_type="application/json")

    # -- discovery ------------------------------------------------------------------------------

    async def service_provider_config(self, request: Request) -> Response:
        return await self._guarded(
            request,
            lambda: _json(_discovery.service_provider_config(_base_url(request), self.emulator.config.page_size_cap)),
        )

    async def resource_types(self, request: Request) -> Response:
        return await self._guarded(
            request,
            lambda: _one_or_list(
                request,
                _discovery.resource_types(
                    _base_url(request),
                    absolute_endpoints=self.emulator.config.absolute_endpoints,
                    dropped=self.emulator.config.drop_attributes,
                ),
            ),
        )

    async def schemas(self, request: Request) -> Response:
        dropped = self.emulator.config.drop_attributes
        return await self._guarded(
            request, lambda: _one_or_list(request, _discovery.schemas(_base_url(request), dropped))
        )

    async def _guarded(self, request: Request, answer: Callable[[], Response]) -> Response:
        try:
            self.emulator.check_token(request.headers.get("authorization"))
            if request.method not in ("GET", "HEAD"):
                raise ScimError(405, "discovery endpoints only answer GET", headers={"Allow": "GET"})
            return answer()
        except ScimError as error:
            return _error(error)

    # -- resources ------------------------------------------------------------------------------

    async def collection(self, request: Request) -> Response:
        try:
            rules, operation = self._authorize(request, "collection")
            if operation is Operation.SEARCH:
                return self._search(request, rules)
            return self._create(request, rules, await _json_body(request))
        except ScimError as error:
            return _error(error)

    async def item(self, request: Request) -> Response:
        try:
            rules, operation = self._authorize(request, "item")
            resource_id = request.path_params["resource_id"]
            store = self.emulator.store
            base_url = _base_url(request)
            attributes, excluded = _projection_params(request)
            if_match = request.headers.get("if-match")
            if operation is Operation.GET:
                resource = store.get(
                    rules.endpoint,
                    resource_id,
                    base_url=base_url,
                    with_members=_wants_members(rules, attributes, excluded),
                )
                return _resource_response(resource, rules, attributes, excluded)
            if operation is Operation.DELETE:
                store.delete(rules.endpoint, resource_id, if_match=if_match)
                return Response(status_code=204)
            body = await _json_body(request)
            if operation is Operation.REPLACE:
                resource = store.replace(rules.endpoint, resource_id, body, if_match=if_match, base_url=base_url)
                return _resource_response(resource, rules, attributes, excluded)
            operations = read_operations(body)
            _refuse_patch_forms(self.emulator.config, operations)
            # A group's answer would echo every member: like many SCIM servers, answer 204 unless asked.
            quiet = rules.endpoint == "Groups" and attributes is None and excluded is None
            resource = store.patch(
                rules.endpoint,
                resource_id,
                operations,
                if_match=if_match,
                base_url=base_url,
                with_members=not quiet and _wants_members(rules, attributes, excluded),
            )
            if quiet:
                return Response(status_code=204, headers={"ETag": resource["meta"]["version"]})
            return _resource_response(resource, rules, attributes, excluded)
        except ScimError as error:
            return _error(error)

    def _authorize(self, request: Request, kind: str) -> tuple[ResourceRules, Operation]:
        resource_type = request.path_params["resource_type"]
        rules = RULES.get(resource_type)
        if rules is None:
            raise ScimError(404, f"there is no {resource_type} endpoint")
        self.emulator.check_token(request.headers.get("authorization"))
        operation = _METHOD_OPERATIONS.get((kind, request.method))
        if operation is None or operation not in rules.operations:
            allowed = sorted(
                method
                for (where, method), offered in _METHOD_OPERATIONS.items()
                if where == kind and offered in rules.operations
            )
            raise ScimError(
                405,
                f"Delinea's SCIM Cloud Connector does not offer {request.method} on {kind} {resource_type}",
                headers={"Allow": ", ".join(allowed)},
            )
        if (
            not self.emulator.config.owner_rights
            and rules.endpoint in _OWNER_GUARDED
            and (rules.endpoint, operation) != ("Containers", Operation.CREATE)
        ):
            raise ScimError(403, "the service account lacks Owner-level rights on this container")
        return rules, operation

    def _search(self, request: Request, rules: ResourceRules) -> Response:
        params = {key.lower(): value for key, value in request.query_params.items()}
        conditions = parse_filter(
            rules, params.get("filter"), strict_literal=self.emulator.config.strict_literal_filters
        )
        cap = self.emulator.config.page_size_cap
        start_index = max(1, _int_param(params, "startindex", 1))
        count = min(cap, max(0, _int_param(params, "count", cap)))
        attributes, excluded = _projection_params(request)
        result = self.emulator.store.search(
            rules.endpoint,
            conditions,
            start_index=start_index,
            count=count,
            base_url=_base_url(request),
            with_members=_wants_members(rules, attributes, excluded),
        )
        resources = [_project(resource, rules, attributes, excluded) for resource in result.resources]
        return _json(_discovery.list_response(resources, total=result.total, start_index=start_index))

    def _create(self, request: Request, rules: ResourceRules, body: Any) -> Response:
        if not isinstance(body, dict):
            raise invalid_syntax(f"a {rules.endpoint} resource must be a JSON object")
        resource = self.emulator.store.create(rules.endpoint, body, base_url=_base_url(request))
        attributes, excluded = _projection_params(request)
        response = _resource_response(resource, rules, attributes, excluded, status=201)
        response.headers["Location"] = resource["meta"]["location"]
        return response


def _refuse_patch_forms(config: EmulatorConfig, operations: list[dict[str, Any]]) -> None:
    """501 for the PATCH forms the configuration refuses (an attribute path; a ``members[…]`` removal)."""
    for operation in operations:
        path = next((value for key, value in operation.items() if key.lower() == "path"), None)
        if not isinstance(path, str) or not path.strip():
            continue
        attribute = path.strip().lower()
        if attribute.startswith("members["):
            if config.refuse_member_filter_removal:
                raise ScimError(501, "removing members through a value filter is not implemented")
        elif not attribute.startswith("members") and config.refuse_attribute_path_patch:
            raise ScimError(501, "PATCH with an attribute path is not implemented; replace the resource")


async def _drain(receive: Receive) -> None:
    """Read the request body, so closing the socket sends a clean FIN rather than a reset."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return


async def _drop_connection(send: Send) -> None:
    """Close the client's connection without an answer, as a lost response looks on the wire."""
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        raise ConnectionDropped("the emulator dropped the connection (simulated)")
    transport.close()
    # Let the server see the disconnect, so it does not try to answer the request itself.
    for _ in range(3):
        await asyncio.sleep(0)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError:
        raise invalid_syntax("the request body is not valid JSON") from None


def _int_param(params: dict[str, str], name: str, default: int) -> int:
    value = params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise invalid_value(f"{name} must be an integer") from None


def _one_or_list(request: Request, documents: list[dict[str, Any]]) -> Response:
    name = request.path_params.get("name")
    if name is None:
        return _json(_discovery.list_response(documents))
    for document in documents:
        if document["id"] == name:
            return _json(document)
    return _error(ScimError(404, f"{name} not found"))


# -- attributes / excludedAttributes (RFC 7644 §3.9) ----------------------------------------------


def _projection_params(request: Request) -> tuple[list[str] | None, list[str] | None]:
    params = {key.lower(): value for key, value in request.query_params.items()}

    def names(key: str) -> list[str] | None:
        value = params.get(key)
        return [name.strip() for name in value.split(",") if name.strip()] if value else None

    return names("attributes"), names("excludedattributes")


def _wants_members(rules: ResourceRules, attributes: list[str] | None, excluded: list[str] | None) -> bool:
    """Whether the answer shows memberships (a group's ``members``, a user's ``groups``)."""
    attribute = "members" if rules.endpoint == "Groups" else "groups"
    if excluded is not None and any(name.lower() == attribute for name in excluded):
        return False
    return attributes is None or any(name.lower().split(".")[0] == attribute for name in attributes)


def _split_name(rules: ResourceRules, name: str) -> tuple[str | None, str, str | None]:
    """``(extension or None, attribute, sub-attribute or None)`` of an attribute name; lower-cased."""
    lowered = name.lower()
    extension = None
    for uri in (*rules.extensions, rules.schema):
        if lowered == uri.lower():
            return (uri if uri != rules.schema else None), "", None
        if lowered.startswith(uri.lower() + ":"):
            extension = uri if uri != rules.schema else None
            lowered = lowered[len(uri) + 1 :]
            break
    attribute, _, sub = lowered.partition(".")
    return extension, attribute, sub or None


def _project(
    resource: dict[str, Any],
    rules: ResourceRules,
    attributes: list[str] | None,
    excluded: list[str] | None,
) -> dict[str, Any]:
    if attributes is None and excluded is None:
        return resource
    if attributes is not None:
        projected: dict[str, Any] = {"schemas": resource["schemas"], "id": resource["id"]}
        for name in attributes:
            _copy_attribute(resource, projected, *_split_name(rules, name))
        return projected
    projected = dict(resource)
    for name in excluded or ():
        extension, attribute, sub = _split_name(rules, name)
        target = projected.get(extension) if extension else projected
        if not isinstance(target, dict) or attribute in ("id", "schemas"):
            continue
        key = next((k for k in target if k.lower() == attribute), None)
        if key is None:
            continue
        if extension:
            target = projected[extension] = dict(target)
        if sub is None:
            del target[key]
        elif isinstance(target[key], dict):
            target[key] = {k: v for k, v in target[key].items() if k.lower() != sub}
        elif isinstance(target[key], list):
            target[key] = [
                {k: v for k, v in item.items() if k.lower() != sub} if isinstance(item, dict) else item
                for item in target[key]
            ]
    return projected


def _copy_attribute(
    source: dict[str, Any], target: dict[str, Any], extension: str | None, attribute: str, sub: str | None
) -> None:
    if extension is not None:
        source_part = source.get(extension)
        if not isinstance(source_part, dict):
            return
        if not attribute:
            target[extension] = source_part
            return
        target_part = target.setdefault(extension, {})
        _copy_attribute(source_part, target_part, None, attribute, sub)
        return
    key = next((k for k in source if k.lower() == attribute), None)
    if key is None:
        return
    value = source[key]
    if sub is None:
        target[key] = value
    elif isinstance(value, dict):
        part = target.setdefault(key, {})
        if isinstance(part, dict):
            part.update({k: v for k, v in value.items() if k.lower() == sub})
    elif isinstance(value, list):
        target[key] = [{k: v for k, v in item.items() if k.lower() == sub} for item in value if isinstance(item, dict)]


def _resource_response(
    resource: dict[str, Any],
    rules: ResourceRules,
    attributes: list[str] | None,
    excluded: list[str] | None,
    *,
    status: int = 200,
) -> Response:
    return _json(
        _project(resource, rules, attributes, excluded),
        status,
        {"ETag": resource["meta"]["version"]},
    )


def create_app(config: EmulatorConfig | None = None) -> EmulatorApp:
    """An ASGI application serving a fresh emulated tenant (``app.emulator`` holds its state)."""
    return EmulatorApp(Emulator(config))
