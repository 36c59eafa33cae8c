"""The SCIM client's settings, declared once.

:class:`ClientSettings` holds every setting of the client that a person sets (``SCIM_<FIELD>``: the field name upper-
cased), each with its bounds, default and description, in types YAML and Dagster config accept; the pipeline's own
settings model inherits it. :class:`ConnectionSettings` is what a :class:`~scim_pipeline.scim.ScimClient` is built
from: those settings plus the base URL and the secret, checked together (https off loopback, the token URL's default,
a private key file that exists).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigurationError

__all__ = [
    "DELINEA_TOKEN_PATH",
    "ENV_PREFIX",
    "ENV_VARIABLES",
    "ClientSettings",
    "ConnectionSettings",
    "EmailForm",
    "TokenAuthMethod",
    "is_loopback_host",
    "variable_of",
]

DELINEA_TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"  # noqa: S105 - a path
ENV_PREFIX: Final = "SCIM_"

TokenAuthMethod = Literal["client_secret_post", "client_secret_basic", "private_key_jwt"]
"""How the client authenticates to the token endpoint (RFC 6749 §2.3.1, RFC 7523)."""
_PRIVATE_KEY_JWT: Final = "private_key_jwt"
EmailForm = Literal["typed", "plain", "single"]
"""How the mapping's e-mail addresses are written (see :class:`ClientSettings.email_form`)."""


def variable_of(field: str) -> str:
    """The environment variable that feeds ``field`` (``concurrency`` → ``SCIM_CONCURRENCY``)."""
    return f"{ENV_PREFIX}{field.upper()}"


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost``, an address in 127.0.0.0/8, or ``::1``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ClientSettings(BaseModel):
    """Every setting of the SCIM client, with its variable ``SCIM_<FIELD>``; all have defaults.

    Types stay plain (``str``, numbers, ``bool``, ``Literal``) so YAML and Dagster config carry them; paths are
    strings here and become :class:`~pathlib.Path` on :class:`ConnectionSettings`.
    """

    model_config = ConfigDict(frozen=True)

    token_url: str | None = Field(
        default=None,
        description=f"OAuth token URL. Default: the base URL's origin + {DELINEA_TOKEN_PATH} (Delinea's).",
    )
    client_id: str | None = Field(default=None, description="OAuth client id of the dedicated SCIM service user.")
    scope: str = Field(
        default="xpm.platform", description="OAuth scope asked for with each token; empty sends no scope."
    )
    profile: Literal["delinea", "rfc7644"] = Field(
        default="delinea",
        description="Which operations and filters the target accepts: delinea (the Cloud Connector's published "
        "rules) or rfc7644 (any standard SCIM service provider).",
    )
    token_auth: Literal["auto", "client_secret_post", "client_secret_basic", "private_key_jwt"] = Field(
        default="auto",
        description="How the client authenticates to the token endpoint: client_secret_basic (HTTP Basic, "
        "RFC 6749 §2.3.1), client_secret_post (id and secret in the form) or private_key_jwt (a JWT signed with "
        "SCIM_CLIENT_KEY_FILE, RFC 7523). Default: what the authorization server publishes (RFC 8414 metadata), "
        "else client_secret_post for the delinea profile and client_secret_basic for rfc7644; on invalid_client "
        "the other secret method is tried once and the one that worked is remembered for the target (auto).",
    )
    client_key_file: str | None = Field(
        default=None,
        description="private_key_jwt only: PEM file of the private key (RSA or EC) that signs the client "
        "assertion; its public key is registered with the authorization server.",
    )
    client_key_id: str | None = Field(
        default=None,
        description="private_key_jwt only: the key id (kid) put in the assertion's header, when the authorization "
        "server holds several keys for the client.",
    )
    ca_bundle: str | None = Field(
        default=None,
        description="CA bundle (PEM) that TLS certificates are verified against (verification is always on). "
        "Default: the system's CAs.",
    )
    concurrency: int = Field(default=16, ge=1, le=256, description="Requests in flight at once towards the target.")
    rate_limit: float | None = Field(
        default=None,
        gt=0,
        description="Ceiling on requests per second towards the target. Default: none; the client finds and holds "
        "the target's rate from its 429s and rate-limit headers.",
    )
    timeout: float = Field(
        default=30.0,
        gt=0,
        description="One deadline per request, covering connect, send and the whole answer, seconds.",
    )
    adaptive_pacing: bool = Field(
        default=True,
        description="Find and hold the target's rate from its 429s, Retry-After and rate-limit headers "
        "(X-RateLimit-*, IETF RateLimit/RateLimit-Policy, x-rate-limit-*), never above SCIM_RATE_LIMIT; "
        "false sends unpaced.",
    )
    retry_budget_s: float = Field(
        default=300.0,
        gt=0,
        description="How long one request keeps retrying 429 answers while the target keeps answering, seconds "
        "(a time budget, not a count).",
    )
    max_attempts: int = Field(
        default=6, ge=1, description="Attempts per request on 5xx answers and transport errors (429 excepted)."
    )
    max_retry_wait_s: float = Field(
        default=60.0, ge=0, description="Longest single wait before a retry, seconds (caps Retry-After)."
    )
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest answer accepted, bytes after decompression."
    )
    max_pages: int = Field(
        default=20_000,
        ge=1,
        description="Most pages one listing may take (a listing whose totalResults needs more is refused before "
        "its second page). At the default page size of 100 that is 2,000,000 resources; a full read of "
        "1,000,000 users holds about 1 GB (benchmarks/README.md).",
    )
    lookup_max_pages: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="Most pages a look-up may list when the target refuses every filter on the matching attribute "
        "(a lost create is then found by listing and matching exactly); more and the look-up fails.",
    )
    member_chunk: int = Field(default=100, ge=1, le=10_000, description="Member operations per group PATCH.")
    group_put_max_members: int = Field(
        default=10_000,
        ge=0,
        le=1_000_000,
        description="Largest group updated by a PUT of the whole group when the target refuses every group PATCH "
        "(GET, change our members, PUT with If-Match); a larger group's change fails instead. 0 never PUTs groups.",
    )
    precondition_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Times a PUT refused with 412 (someone changed the resource since it was read) is read and "
        "sent again.",
    )
    email_form: EmailForm = Field(
        default="typed",
        description='How e-mail addresses are written: typed (emails[type eq "work"], the RFC 7643 form), plain '
        "(a multi-valued attribute of value and primary, no type: for targets that refuse type) or single (one "
        "address only, marked primary: for targets that keep one e-mail, such as AWS IAM Identity Center). A "
        "mapping may choose its own form (email_form in the mapping file).",
    )

    @field_validator("token_url", "client_id", "client_key_file", "client_key_id", "ca_bundle", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An environment variable or a Dagster EnvVar set to "" means "not given"; a path given as a Path is text.
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("rate_limit", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("token_auth", mode="before")
    @classmethod
    def _blank_is_auto(cls, value: object) -> object:
        return "auto" if value is None or (isinstance(value, str) and not value.strip()) else value

    @property
    def token_auth_method(self) -> TokenAuthMethod | None:
        """The method asked for, or None to choose it (``auto``)."""
        return None if self.token_auth == "auto" else self.token_auth  # noqa: S105 - a method name

    @field_validator("profile", "token_auth", "email_form", mode="before")
    @classmethod
    def _case_insensitive(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value


class ConnectionSettings(ClientSettings):
    """Everything the SCIM client needs to reach one service provider.

    Invalid values raise :class:`ConfigurationError` naming the field and its environment variable, never the value.
    The secret is a ``SecretStr``: it never shows in ``repr`` or ``str``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="SCIM base URL, e.g. https://tenant.delinea.app/scim/v2")
    client_secret: SecretStr | None = Field(default=None, description="OAuth client secret (never logged).")
    verify_tls: bool = Field(default=True, description="Verify TLS certificates (code only, never from a variable)")
    page_size: int = Field(default=100, ge=1, description="count asked for per page")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigurationError(_describe(error)) from None

    @field_validator("client_secret", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _check(self) -> ConnectionSettings:
        object.__setattr__(self, "base_url", _check_url("base_url", self.base_url))
        if self.token_url is None:
            scheme, _, rest = self.base_url.partition("://")
            origin = rest.split("/", 1)[0]
            object.__setattr__(self, "token_url", f"{scheme}://{origin}{DELINEA_TOKEN_PATH}")
        else:
            object.__setattr__(self, "token_url", _check_url("token_url", self.token_url))
        if self.token_auth == _PRIVATE_KEY_JWT or (self.client_key_file is not None and self.token_auth_method is None):
            self._check_key()
        elif self.client_id is not None and self.client_secret is None:
            raise ConfigurationError(
                "SCIM_CLIENT_SECRET is not set: SCIM_CLIENT_ID needs its secret (or SCIM_TOKEN_AUTH=private_key_jwt "
                "with SCIM_CLIENT_KEY_FILE)"
            )
        elif self.client_secret is not None and self.client_id is None:
            raise ConfigurationError("SCIM_CLIENT_ID is not set: SCIM_CLIENT_SECRET needs the client id it belongs to")
        if self.ca_bundle is not None and not Path(self.ca_bundle).is_file():
            raise ConfigurationError(f"{_field_label('ca_bundle')}: no such file: {self.ca_bundle}")
        return self

    def _check_key(self) -> None:
        if self.client_id is None:
            raise ConfigurationError("SCIM_CLIENT_ID is not set: private_key_jwt signs the assertion as a client id")
        if self.client_key_file is None:
            raise ConfigurationError(
                "SCIM_CLIENT_KEY_FILE is not set: SCIM_TOKEN_AUTH=private_key_jwt signs with a PEM private key"
            )
        if not Path(self.client_key_file).is_file():
            raise ConfigurationError(f"{_field_label('client_key_file')}: no such file: {self.client_key_file}")

    @property
    def resolved_token_url(self) -> str:
        """The token endpoint, default applied."""
        assert self.token_url is not None  # set by the validator
        return self.token_url

    @property
    def ca_bundle_path(self) -> Path | None:
        """The CA bundle as a path, when one is given."""
        return Path(self.ca_bundle) if self.ca_bundle is not None else None

    @property
    def client_key_path(self) -> Path | None:
        """The private key of ``private_key_jwt`` as a path, when one is given."""
        return Path(self.client_key_file) if self.client_key_file is not None else None

    @property
    def uses_oauth(self) -> bool:
        """Whether requests carry a bearer token from the token endpoint."""
        return self.client_id is not None and (self.client_secret is not None or self.client_key_file is not None)

    @property
    def tls_verify(self) -> bool | str:
        """What httpx's ``verify`` receives: the CA bundle path, or a bool."""
        if not self.verify_tls:
            return False
        return self.ca_bundle if self.ca_bundle is not None else True

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> ConnectionSettings:
        """Read the ``SCIM_*`` variables of ``env`` (default: ``os.environ``).

        ``overrides`` (e.g. command-line flags) win over the environment; ``None`` overrides are
        ignored so that unset flags fall through to the environment.
        """
        source = os.environ if env is None else env
        data: dict[str, Any] = {}
        for field, variable in ENV_VARIABLES.items():
            value = source.get(variable)
            if value is not None and value.strip() != "":
                data[field] = value.strip()
        data.update({key: value for key, value in overrides.items() if value is not None})
        if "base_url" not in data:
            raise ConfigurationError("SCIM_BASE_URL is not set: the SCIM base URL is required")
        return cls(**data)


_CODE_ONLY = frozenset({"verify_tls", "page_size"})
"""Fields no environment variable sets: TLS verification stays on for every configured target."""

ENV_VARIABLES: Final[Mapping[str, str]] = {
    name: variable_of(name) for name in ConnectionSettings.model_fields if name not in _CODE_ONLY
}
"""Which environment variable feeds which field (the error messages name the variable)."""


def _field_label(field: str) -> str:
    variable = ENV_VARIABLES.get(field)
    return f"{variable} ({field})" if variable else field


def _check_url(field: str, url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if "@" in parts.netloc:
        # Never echo the URL: what precedes the "@" is a password.
        raise ConfigurationError(
            f"{_field_label(field)}: credentials in the URL (user:password@host) are refused; "
            "give them as SCIM_CLIENT_ID and SCIM_CLIENT_SECRET"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{_field_label(field)}: expected an absolute http(s) URL such as https://tenant.delinea.app/scim/v2"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{_field_label(field)}: https is required (plain http is only accepted on loopback "
            f"hosts), got http://{parts.hostname}"
        )
    return url.rstrip("/")


def _describe(error: ValidationError) -> str:
    """Name each failing field and its variable; never echo the input (it may be the secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "settings"
        problems.append(f"{_field_label(field)}: {item['msg']}")
    return "invalid connection settings: " + "; ".join(problems)
