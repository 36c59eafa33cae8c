"""The pipeline's settings: one pydantic-settings model over the documented ``SCIM_*`` environment variables.

The CLI, the Dagster resources and the Dagster Component all build their configuration from
:class:`PipelineSettings` (the Component from its ``defs.yaml`` fields, the others from the environment), so each
variable is parsed, validated and defaulted in exactly one place. A bad value raises ``ConfigurationError`` naming
the variable — never echoing the value, which may be the secret.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.settings import ClientSettings

__all__ = [
    "ENV_PREFIX",
    "SETTING_GROUPS",
    "AlertSettings",
    "HealthSettings",
    "LeaverSettings",
    "PipelineSettings",
    "PolicySettings",
    "ShardSettings",
    "SourceSettings",
    "StoreSettings",
    "default_dagster_home",
    "settings_table",
    "variable_of",
]

ENV_PREFIX = "SCIM_"

_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("scim_pipeline_settings_environment", default=None)


def variable_of(field: str) -> str:
    """The environment variable that feeds ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


def default_dagster_home() -> Path:
    """Where the CLI keeps its Dagster home when ``DAGSTER_HOME`` is unset: one per user, whatever the working
    directory (a sync started from another folder must not silently start a fresh state store and run history)."""
    state_root = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state_root) / "scim-pipeline" / "dagster_home"


class _MappingEnvSource(EnvSettingsSource):
    """The environment source, reading a given mapping instead of ``os.environ`` inside
    :meth:`PipelineSettings.from_env` (tests and the CLI pass their own environment)."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        given = _ENVIRONMENT.get()
        if given is None:
            return super()._load_env_vars()
        return {name.lower(): value for name, value in given.items()}


class SourceSettings(BaseModel):
    """Where the roster (and Delinea's access file) come from."""

    source: Literal["file", "ldap", "entra", "okta", "scim", "sql"] = Field(
        default="file",
        description="Where the roster comes from. file: the SCIM_ROSTER folder; the connectors read their own "
        "SCIM_<SOURCE>_* settings (docs/sources.md).",
    )
    roster: str | None = Field(
        default=None,
        description="Roster folder (users, optional groups, memberships as .csv, .parquet or .jsonl). Required with "
        "a target: the bundled sample roster is used in demo mode only.",
    )
    mapping: str | None = Field(default=None, description="Mapping file (YAML); default the built-in columns.")
    access: str | None = Field(
        default=None,
        description="Access file (YAML or CSV, docs/access.md): Delinea containers, the rights of groups and users on "
        "them, and privileged-data placement. Unset = no container sync (demo mode: the bundled sample).",
    )


class StoreSettings(BaseModel):
    """Where the pipeline remembers what it manages, and how long a cycle waits for another writer."""

    state_url: str | None = Field(
        default=None,
        description="Provisioning state store and audit trail: sqlite:///path or postgresql+psycopg://user@host/db "
        "(migrated in place on first use). Default $DAGSTER_HOME/scim_pipeline/state.sqlite.",
    )
    lease_wait: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a cycle waits for another cycle writing to the same target (one writer per target, "
        "across processes and machines) before it stops with a message naming it.",
    )
    lease_ttl: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="Seconds a writer's lease lasts unless renewed (every third of it): a writer frozen longer "
        "(a paused VM, swap) loses the target and sends nothing more, and another cycle may take it over.",
    )


class ShardSettings(BaseModel):
    """How users are partitioned into shards."""

    shards: int = Field(default=16, ge=1, le=1024, description="Number of shard partitions users are split into.")
    shards_per_run: int | None = Field(
        default=None,
        ge=1,
        description="A backfill over many shards launches one run per this many shards (default: all the "
        "backfill's shards in one run).",
    )


class PolicySettings(BaseModel):
    """How a cycle treats people who leave, and what it refuses to do without a person's say-so."""

    deprovision: Literal["disable", "delete"] = Field(
        default="disable",
        description="Users who leave the roster: disable (active=false, Delinea's soft delete) or delete.",
    )
    max_deletes: int | None = Field(
        default=None,
        ge=0,
        description="Deletion threshold: disables + deletes allowed in one cycle. Default: 20 % of the active "
        "users we manage, never less than 10.",
    )
    allow_mass_changes: bool = Field(
        default=False,
        description="Let one run pass the deletion, empty-roster, shrunken-roster, mass-update and removal guards "
        "(use once, then unset).",
    )
    max_operations_per_cycle: int | None = Field(
        default=None,
        ge=1,
        description="Operation budget: at most this many write requests per cycle, in a fixed priority (group "
        "creates, user creates, updates, memberships, Delinea containers and permissions, deprovisions last); the "
        "rest is shown as deferred and the next cycle continues (onboarding over successive cycles). Unset = no limit.",
    )


class HealthSettings(BaseModel):
    """When a target's health checks fail (docs: README, "Health and alerts")."""

    overdue_periods: float = Field(
        default=2.0,
        ge=1,
        le=1000,
        description="A sync is overdue — the provisioning assets' freshness checks fail — once they were last "
        "materialized this many periods of the sync schedule ago.",
    )
    escrow_max_age: float = Field(
        default=24.0,
        gt=0,
        le=8760,
        description="Hours a change may keep failing (held in escrow or waiting for its retry) before the "
        "escrow_age check fails.",
    )
    max_failure_share: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of a cycle's SCIM calls that may fail before its failure_share check fails (0.05 = 5 %).",
    )
    health_schedule: str = Field(
        default="*/15 * * * *",
        min_length=9,
        description="Cron of the health job (freshness and escrow checks; no SCIM call). Running by default with a "
        "target; stopped in demo mode.",
    )


class AlertSettings(BaseModel):
    """Where alerts go on a failed run, a failed check or an overdue sync. Secrets only ever come from the
    environment variables named here."""

    alert_webhook_url: str | None = Field(
        default=None,
        description="Generic webhook: a JSON POST per failed run, failed check or overdue sync. Unset = no webhook.",
    )
    alert_webhook_secret_env: str | None = Field(
        default=None,
        description="Name of the environment variable whose value the webhook receives in the "
        "SCIM_ALERT_WEBHOOK_HEADER header (never the value itself).",
    )
    alert_webhook_header: str = Field(
        default="Authorization",
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header carrying the webhook secret (Authorization: sent as Bearer <secret>).",
    )
    alert_slack_channel: str | None = Field(
        default=None, description="Slack channel for alerts (dagster-slack, the [slack] extra). Unset = no Slack."
    )
    alert_slack_token_env: str = Field(
        default="SCIM_ALERT_SLACK_TOKEN",
        description="Name of the environment variable holding the Slack bot token.",
    )
    alert_teams_webhook_env: str | None = Field(
        default=None,
        description="Name of the environment variable holding the Microsoft Teams incoming-webhook URL "
        "(dagster-msteams, the [msteams] extra). Unset = no Teams.",
    )


class LeaverSettings(BaseModel):
    """The leaver sensor: a cheap poll of the source's change signal that starts the user sync when it moves."""

    leaver_sensor: bool = Field(
        default=False,
        description="Start the leaver sensor with the code location: it polls the source's change signal (file "
        "times and sizes, LDAP contextCSN / highestCommittedUSN, a SQL query; never the SCIM target) and launches "
        "the user sync when it changes. Off: the sensor is defined but stopped (start it in the UI).",
    )
    leaver_poll_seconds: int = Field(
        default=15,
        ge=5,
        le=3600,
        description="Seconds between two polls of the leaver sensor (15 s keeps a leaver's disable within a "
        "minute: the wait for the next poll, the run's start and a user sync).",
    )


SETTING_GROUPS: tuple[type[BaseModel], ...] = (
    ClientSettings,
    SourceSettings,
    StoreSettings,
    ShardSettings,
    PolicySettings,
    HealthSettings,
    AlertSettings,
    LeaverSettings,
)
"""The groups every setting is declared in; the Component, the resources and the environment take them from here."""


class PipelineSettings(
    ClientSettings,
    SourceSettings,
    StoreSettings,
    ShardSettings,
    PolicySettings,
    HealthSettings,
    AlertSettings,
    LeaverSettings,
    BaseSettings,
):
    """Every setting of a scim-pipeline target, with the ``SCIM_*`` variable that sets it (see the README)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        case_sensitive=False,
    )

    base_url: str | None = Field(
        default=None,
        description="SCIM base URL, e.g. https://<tenant>.delinea.app/scim/v2 (no user:password@). Unset means demo "
        "mode: the embedded emulator and the bundled sample roster.",
    )
    client_secret: SecretStr | None = Field(
        default=None,
        description="OAuth client secret of the SCIM service user (never logged; a Component names the variable "
        "that holds it instead: client_secret_env).",
    )

    @field_validator("base_url", "roster", "mapping", "access", "state_url")
    @classmethod
    def _strip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        stripped = value.strip()
        return stripped or None

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_urls(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is not None and (urlsplit(value).username is not None or urlsplit(value).password is not None):
            # The message must not repeat the URL: its password would travel on with it.
            raise ValueError("must not carry credentials (user:password@); use SCIM_CLIENT_ID / SCIM_CLIENT_SECRET")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit values (the Component's YAML, CLI flags) win over the environment; no .env file is read.
        return (init_settings, _MappingEnvSource(settings_cls))

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as error:
            raise ConfigurationError(_describe(error)) from None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> PipelineSettings:
        """Read the ``SCIM_*`` variables of ``env`` (default ``os.environ``); ``overrides`` win, ``None`` ignored."""
        with _reading(env):
            return cls(**{name: value for name, value in overrides.items() if value is not None})

    @property
    def demo_mode(self) -> bool:
        """True when no target is configured: the embedded emulator and the sample roster stand in."""
        return self.base_url is None

    def describe_target(self) -> str:
        """Where this pipeline provisions to, without any credential."""
        if self.demo_mode:
            return "DEMO MODE — embedded Delinea emulator on loopback (set SCIM_BASE_URL to provision a real target)"
        from urllib.parse import urlsplit

        parts = urlsplit(self.base_url or "")
        # Never the userinfo part: a password in the URL is refused by the client, and must not reach metadata.
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path} (profile {self.profile})"


@contextmanager
def _reading(env: Mapping[str, str] | None) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


def _describe(error: ValidationError) -> str:
    """Name each failing setting and its variable; never echo the input (it may be the secret)."""
    problems = []
    for item in error.errors(include_input=False, include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "settings"
        label = variable_of(field) if field in PipelineSettings.model_fields else field
        problems.append(f"{label}: {item['msg']}")
    return "invalid settings: " + "; ".join(problems)


def field_descriptions() -> dict[str, tuple[str, FieldInfo]]:
    """Each setting's variable and field, the target first, then each group in order (for the README's table)."""
    fields = PipelineSettings.model_fields
    order = ["base_url", "client_secret", *(name for group in SETTING_GROUPS for name in group.model_fields)]
    return {name: (variable_of(name), fields[name]) for name in order}


def _default_text(info: FieldInfo) -> str:
    default = info.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, int | float) and not isinstance(default, bool):
        return f"{default:,}" if isinstance(default, int) else f"{default:g}"
    return str(default) or "empty"


def settings_table() -> str:
    """The README's table of every setting, generated from the model (a test keeps the README equal to it)."""
    lines = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for variable, info in field_descriptions().values():
        description = (info.description or "").replace("|", "\\|").replace("<", "&lt;")
        lines.append(f"| `{variable}` | {description} | {_default_text(info)} |")
    return "\n".join(lines)
