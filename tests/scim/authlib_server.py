"""A real OAuth 2.0 authorization server for the client-authentication tests: Authlib's own ``AuthorizationServer``
(its Flask integration) issuing client-credentials tokens, with a SCIM server beside it on the same loopback origin
(the third-party scim2-server, whose bearer tokens are checked by Authlib's RFC 6750 validator against the tokens
this authorization server issued).

Each registered client authenticates with exactly one method, as Authlib's client model does
(``check_endpoint_auth_method``): ``client_secret_basic``, ``client_secret_post`` or ``private_key_jwt``, the last
verified for real by Authlib's RFC 7523 ``JWTBearerClientAssertion`` (signature against the registered public key,
audience the token URL, ``iss`` = ``sub`` = the client id, expiry, and a ``jti`` used only once).
RFC 8414 metadata is served at ``/.well-known/oauth-authorization-server`` unless ``publish_metadata`` is off.

Everything runs in one werkzeug server on 127.0.0.1 at an ephemeral port, in a background thread.
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from authlib.integrations.flask_oauth2 import AuthorizationServer  # type: ignore[import-untyped]
from authlib.oauth2.rfc6749 import ClientMixin, InvalidClientError, TokenMixin, grants  # type: ignore[import-untyped]
from authlib.oauth2.rfc6750 import BearerTokenValidator  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, Response, jsonify
from flask import request as flask_request
from joserfc.jwk import RSAKey
from scim2_models import ScimProvider, UnauthorizedException
from scim2_server.applications.wsgi import WSGIApplication
from scim2_server.memory import InMemoryStorage
from scim2_server.requests import ScimRequest
from scim2_server.service import ScimService
from scim2_server.utils import load_default_resource_types, load_default_schemas, load_default_service_provider_config
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

TOKEN_PATH = "/oauth/token"
METADATA_PATH = "/.well-known/oauth-authorization-server"
SCIM_MOUNT = "/scim"
PRIVATE_KEY_JWT = "private_key_jwt"
SECRET_METHODS = ("client_secret_basic", "client_secret_post")


def new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class RegisteredClient(ClientMixin):  # type: ignore[misc]
    """A client registered for one token-endpoint authentication method, as Authlib's own models hold it."""

    client_id: str
    token_endpoint_auth_method: str
    client_secret: str | None = None
    public_key_pem: bytes | None = None

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client_secret is not None and hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method == self.token_endpoint_auth_method

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


@dataclass
class IssuedToken(TokenMixin):  # type: ignore[misc]
    client_id: str
    scope: str
    expires_at: float
    revoked: bool = False

    def check_client(self, client: RegisteredClient) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked


class ClientCredentials(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """Authlib's client-credentials grant accepting every method a client may be registered for (Authlib's default
    is ``client_secret_basic`` only); each client's registration then admits just its own."""

    TOKEN_ENDPOINT_AUTH_METHODS = [*SECRET_METHODS, PRIVATE_KEY_JWT]


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    """RFC 7523 client authentication: Authlib verifies signature and claims; this says which audience, which key,
    and refuses a ``jti`` seen before."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, server: AuthlibServer) -> None:
        super().__init__(validate_jti=True)
        self._server = server

    def get_audiences(self) -> list[str]:
        return [self._server.token_url]

    def validate_jti(self, claims: dict[str, Any], jti: str) -> bool:
        key = (str(claims["sub"]), jti)
        with self._server.lock:
            if key in self._server.seen_jtis:
                return False
            self._server.seen_jtis.add(key)
            return True

    def resolve_client_public_key(self, client: RegisteredClient) -> RSAKey:
        if client.public_key_pem is None:
            raise InvalidClientError(description="The client has no registered key.")
        return RSAKey.import_key(client.public_key_pem)


class IssuedTokenValidator(BearerTokenValidator):  # type: ignore[misc]
    def __init__(self, server: AuthlibServer) -> None:
        super().__init__()
        self._server = server

    def authenticate_token(self, token_string: str) -> IssuedToken | None:
        with self._server.lock:
            return self._server.tokens.get(token_string)


class BearerCheckedScim(WSGIApplication):
    """scim2-server answering only requests whose bearer token the authorization server issued and still honours."""

    def __init__(self, server: AuthlibServer) -> None:
        config = load_default_service_provider_config()
        provider = ScimProvider.from_discovery(
            load_default_schemas().values(), load_default_resource_types().values(), config=config
        )
        self.memory = InMemoryStorage()
        super().__init__(self.memory, provider, ScimService(provider, secret="authlib-interop-cursor-secret"))
        self._server = server

    def check_auth(self, request: ScimRequest) -> None:
        scheme, _, token_string = dict(request.headers).get("AUTHORIZATION", "").partition(" ")
        token = self._server.validator.authenticate_token(token_string) if scheme.lower() == "bearer" else None
        if token is None or token.is_expired() or token.is_revoked():
            raise UnauthorizedException(detail="a valid bearer token from the authorization server is required")
        self._server.scim_requests += 1


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # one line per request would drown the test output


@dataclass
class TokenRequestSeen:
    """What the token endpoint received (for assertions about the method the client used)."""

    form: dict[str, str]
    basic: bool
    status: int


@dataclass
class AuthlibServer:
    """Authlib's authorization server and scim2-server on one loopback origin (``with AuthlibServer(...) as s``)."""

    clients: Iterable[RegisteredClient]
    publish_metadata: bool = True
    token_lifetime_s: int = 3600
    lock: threading.Lock = field(default_factory=threading.Lock)
    seen_jtis: set[tuple[str, str]] = field(default_factory=set)
    tokens: dict[str, IssuedToken] = field(default_factory=dict)
    token_requests: list[TokenRequestSeen] = field(default_factory=list)
    metadata_requests: int = 0
    scim_requests: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self.registered = {client.client_id: client for client in self.clients}
        self.validator = IssuedTokenValidator(self)
        self.scim = BearerCheckedScim(self)
        self._app = self._flask_app()
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    # -- addresses ------------------------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return f"{self.origin}{TOKEN_PATH}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}{SCIM_MOUNT}/v2"

    def methods_seen(self) -> list[str]:
        """The client-authentication method of each token request, oldest first."""
        return [
            "client_secret_basic"
            if seen.basic
            else PRIVATE_KEY_JWT
            if "client_assertion" in seen.form
            else "client_secret_post"
            for seen in self.token_requests
        ]

    def user_names(self) -> set[str]:
        users = [r for r in self.scim.memory.resources if type(r).__name__.startswith("User")]
        return {str(getattr(user, "user_name", "")) for user in users}

    def revoke_every_token(self) -> None:
        with self.lock:
            for token in self.tokens.values():
                token.revoked = True

    # -- the Flask application ------------------------------------------------------------------------------------

    def _flask_app(self) -> Flask:
        app = Flask("authlib-interop")
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": self.token_lifetime_s}
        authorization = AuthorizationServer(app, query_client=self.registered.get, save_token=self._save_token)
        authorization.register_grant(ClientCredentials)
        authorization.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJwt(self))

        @app.post(TOKEN_PATH)
        def token() -> ResponseReturnValue:
            response: Response = authorization.create_token_response()
            self.token_requests.append(
                TokenRequestSeen(
                    form=dict(flask_request.form),
                    basic=flask_request.headers.get("Authorization", "").lower().startswith("basic "),
                    status=response.status_code,
                )
            )
            return response

        @app.get(METADATA_PATH)
        def metadata() -> ResponseReturnValue:
            self.metadata_requests += 1
            if not self.publish_metadata:
                return jsonify(error="not_found"), 404
            # RFC 8414 §2: what this server accepts is what its registered clients may use.
            methods = sorted({client.token_endpoint_auth_method for client in self.registered.values()})
            return jsonify(
                issuer=self.origin,
                token_endpoint=self.token_url,
                grant_types_supported=["client_credentials"],
                token_endpoint_auth_methods_supported=methods,
                token_endpoint_auth_signing_alg_values_supported=["RS256"],
            )

        return app

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        with self.lock:
            self.tokens[token["access_token"]] = IssuedToken(
                client_id=request.client.client_id,
                scope=token.get("scope", ""),
                expires_at=time.time() + float(token["expires_in"]),
            )

    # -- lifecycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> AuthlibServer:
        application = DispatcherMiddleware(self._app, {SCIM_MOUNT: self.scim})
        self._server = make_server("127.0.0.1", 0, application, threaded=True, request_handler=_QuietHandler)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._server is not None
        assert self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
