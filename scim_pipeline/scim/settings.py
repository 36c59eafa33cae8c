"""Connection settings of the SCIM client, from code or from ``SCIM_*`` environment variables."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from .errors import ConfigurationError

__all__ = ["DELINEA_TOKEN_PATH", "ENV_VARIABLES", "ConnectionSettings", "is_loopback_host"]

DELINEA_TOKEN_PATH = "/identity/api/oauth2/token/xpmplatform"  # noqa: S105 - a path

ENV_VARIABLES: dict[str, str] = {
    "base_url": "SCIM_BASE_URL",
    "token_url": "SCIM_TOKEN_URL",
    "client_id": "SCIM_CLIENT_ID",
    "client_secret": "SCIM_CLIENT_SECRET",
    "scope": "SCIM_SCOPE",
    "profile": "SCIM_PROFILE",
    "ca_bundle": "SCIM_CA_BUNDLE",
    "max_concurrency": "SCIM_CONCURRENCY",
    "rate_limit_per_s": "SCIM_RATE_LIMIT",
    "timeout_s": "SCIM_TIMEOUT",
    "max_attempts": "SCIM_MAX_ATTEMPTS",
    "max_retry_wait_s": "SCIM_MAX_RETRY_WAIT_S",
    "retry_budget_s": "SCIM_RETRY_BUDGET_S",
    "adaptive_pacing": "SCIM_ADAPTIVE_PACING",
    "max_response_bytes": "SCIM_MAX_RESPONSE_BYTES",
    "max_pages": "SCIM_MAX_PAGES",
}
"""Which environment variable feeds which field (the error messages name the variable)."""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` is ``localhost``, an address in 127.0.0.0/8, or ``::1``."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _field_label(field: str) -> str:
    variable = ENV_VARIABLES.get(field)
    return f"{variable} ({field})" if variable else field


def _check_url(field: str, url: str) -> str:
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


class ConnectionSettings(BaseModel):
    """Everything the SCIM client needs to reach one service provider.

    Invalid values raise :class:`ConfigurationError` naming the field and its environment
    variable. The secret is a ``SecretStr``: it never shows in ``repr`` or ``str``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="SCIM base URL, e.g. https://tenant.delinea.app/scim/v2")
    token_url: str | None = Field(
        default=None,
        description=f"OAuth token endpoint; defaults to the base URL's origin + {DELINEA_TOKEN_PATH}",
    )
    client_id: str | None = Field(default=None, description="OAuth client id (service user)")
    client_secret: SecretStr | None = Field(default=None, description="OAuth client secret")
    scope: str = Field(default="xpm.platform", description="OAuth scope")
    profile: str = Field(default="delinea", description="Service-provider profile name")
    ca_bundle: Path | None = Field(default=None, description="CA bundle (PEM) to verify TLS")
    verify_tls: bool = Field(default=True, description="Verify TLS certificates")
    timeout_s: float = Field(
        default=30.0, gt=0, description="Overall deadline of one request: connect, send and the whole answer, seconds"
    )
    max_concurrency: int = Field(default=16, ge=1, description="Requests in flight at once")
    rate_limit_per_s: float | None = Field(
        default=None, gt=0, description="Client-side rate limit, requests per second"
    )
    max_attempts: int = Field(
        default=6, ge=1, description="Attempts per request after 5xx answers and transport failures (429 excepted)"
    )
    max_retry_wait_s: float = Field(default=60.0, ge=0, description="Longest wait before a retry (caps Retry-After)")
    retry_budget_s: float = Field(
        default=300.0,
        gt=0,
        description="How long one request keeps being retried after 429 answers (a time budget, not a count)",
    )
    adaptive_pacing: bool = Field(
        default=True, description="Find and hold the target's rate (429s, rate-limit headers); off = unpaced"
    )
    max_response_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024, description="Largest answer accepted, bytes after decompression"
    )
    max_pages: int = Field(default=50_000, ge=1, description="Most pages one paged read may take")
    page_size: int = Field(default=100, ge=1, description="count asked for per page")
    member_chunk: int = Field(default=100, ge=1, description="Members per PATCH")

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as error:
            raise ConfigurationError(_describe(error)) from None

    @field_validator("token_url", "client_id", "client_secret", "ca_bundle", "rate_limit_per_s", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # An environment variable or a Dagster EnvVar set to "" means "not given".
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, SecretStr) and not value.get_secret_value().strip():
            return None
        return value

    @model_validator(mode="after")
    def _check(self) -> ConnectionSettings:
        object.__setattr__(self, "base_url", _check_url("base_url", self.base_url))
        if self.token_url is None:
            parts = urlsplit(self.base_url)
            object.__setattr__(self, "token_url", f"{parts.scheme}://{parts.netloc}{DELINEA_TOKEN_PATH}")
        else:
            object.__setattr__(self, "token_url", _check_url("token_url", self.token_url))
        if (self.client_id is None) != (self.client_secret is None):
            raise ConfigurationError("SCIM_CLIENT_ID and SCIM_CLIENT_SECRET must be given together")
        if self.ca_bundle is not None and not self.ca_bundle.is_file():
            raise ConfigurationError(f"{_field_label('ca_bundle')}: no such file: {self.ca_bundle}")
        from .profiles import get_profile  # profiles import errors only; no cycle at runtime

        object.__setattr__(self, "profile", get_profile(self.profile).name)
        return self

    @property
    def resolved_token_url(self) -> str:
        """The token endpoint, default applied."""
        assert self.token_url is not None  # set by the validator
        return self.token_url

    @property
    def tls_verify(self) -> bool | str:
        """What httpx's ``verify`` receives: the CA bundle path, or a bool."""
        if not self.verify_tls:
            return False
        return str(self.ca_bundle) if self.ca_bundle is not None else True

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


def _describe(error: ValidationError) -> str:
    """Name each failing field and its variable; never echo the input (it may be the secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "settings"
        problems.append(f"{_field_label(field)}: {item['msg']}")
    return "invalid connection settings: " + "; ".join(problems)
