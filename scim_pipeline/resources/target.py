"""The SCIM target as a Dagster resource: connection settings, and the embedded emulator in demo mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.scim import ConnectionSettings, ScimClient

if TYPE_CHECKING:
    from scim_pipeline.emulator import EmulatorServer
    from scim_pipeline.scim.target_quirks import TargetQuirks
    from scim_pipeline.settings import PipelineSettings

DEMO_CLIENT_ID = "scim-demo"
# The emulator's built-in demo credential: it only ever unlocks the local, loopback-only emulator.
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105


class ScimTargetResource(ConfigurableResource):  # type: ignore[type-arg]
    """The SCIM service provider the pipeline provisions into.

    With no `base_url` the resource runs in demo mode: it starts the bundled Delinea emulator on loopback, backed by
    a SQLite file under the Dagster home, so the demo's target survives across runs and processes.
    """

    base_url: str | None = Field(
        default=None,
        description="SCIM base URL (SCIM_BASE_URL), e.g. https://<tenant>.delinea.app/scim/v2. "
        "Unset means demo mode on the embedded emulator.",
    )
    token_url: str | None = Field(
        default=None,
        description="OAuth token URL (SCIM_TOKEN_URL); defaults to the base URL's origin + "
        "/identity/api/oauth2/token/xpmplatform.",
    )
    client_id: str | None = Field(default=None, description="OAuth client id (SCIM_CLIENT_ID).")
    client_secret: str | None = Field(
        default=None,
        description="OAuth client secret (SCIM_CLIENT_SECRET). Give it as EnvVar, never as a literal.",
        repr=False,
    )
    scope: str = Field(default="xpm.platform", description="OAuth scope (SCIM_SCOPE).")
    profile: str = Field(default="delinea", description="Service-provider profile (SCIM_PROFILE): delinea | rfc7644.")
    ca_bundle: str | None = Field(default=None, description="CA bundle for TLS verification (SCIM_CA_BUNDLE).")
    max_concurrency: int = Field(default=16, description="Concurrent SCIM requests (SCIM_CONCURRENCY).")
    rate_limit_per_s: float | None = Field(
        default=None, description="Client-side cap on requests per second (SCIM_RATE_LIMIT)."
    )
    timeout_s: float = Field(default=30.0, description="Deadline of one request in seconds (SCIM_TIMEOUT).")
    adaptive_pacing: bool = Field(default=True, description="Pace on the target's answers (SCIM_ADAPTIVE_PACING).")
    retry_budget_s: float = Field(default=300.0, description="Retry time for 429s (SCIM_RETRY_BUDGET_S).")
    max_attempts: int = Field(default=6, description="Attempts on 5xx and transport errors (SCIM_MAX_ATTEMPTS).")
    max_retry_wait_s: float = Field(default=60.0, description="Longest wait before a retry (SCIM_MAX_RETRY_WAIT_S).")
    max_response_bytes: int = Field(default=32 * 1024 * 1024, description="Answer size cap (SCIM_MAX_RESPONSE_BYTES).")
    max_pages: int = Field(default=50_000, description="Page cap of one listing (SCIM_MAX_PAGES).")
    member_chunk: int = Field(default=100, description="Member operations per group PATCH (SCIM_MEMBER_CHUNK).")
    demo_db_path: str | None = Field(
        default=None,
        description="Demo mode only: SQLite file of the embedded emulator (default under DAGSTER_HOME).",
    )
    demo_name: str | None = Field(
        default=None, description="Demo mode only: the Component instance, so each has its own emulator file."
    )

    _emulator: EmulatorServer | None = PrivateAttr(default=None)

    @property
    def demo_mode(self) -> bool:
        """True when no target is configured and the embedded emulator stands in for Delinea."""
        return not self.base_url

    def setup_for_execution(self, context: InitResourceContext) -> None:
        if self.demo_mode:
            from scim_pipeline.emulator import EmulatorConfig, EmulatorServer

            db_path = (
                Path(self.demo_db_path)
                if self.demo_db_path
                else pipeline_home(context.instance)
                / (f"demo_target_{self.demo_name}.sqlite" if self.demo_name else "demo_target.sqlite")
            )
            db_path.parent.mkdir(parents=True, exist_ok=True)
            config = EmulatorConfig(db_path=str(db_path), clients={DEMO_CLIENT_ID: DEMO_CLIENT_SECRET})
            self._emulator = EmulatorServer(config)
            self._emulator.start()

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        if self._emulator is not None:
            self._emulator.stop()
            self._emulator = None

    def connection_settings(self) -> ConnectionSettings:
        """The client settings this resource stands for (demo mode: the running embedded emulator)."""
        common: dict[str, Any] = {
            "scope": self.scope,
            "profile": self.profile,
            "concurrency": self.max_concurrency,
            "rate_limit": self.rate_limit_per_s,
            "timeout": self.timeout_s,
            "member_chunk": self.member_chunk,
            "adaptive_pacing": self.adaptive_pacing,
            "retry_budget_s": self.retry_budget_s,
            "max_attempts": self.max_attempts,
            "max_retry_wait_s": self.max_retry_wait_s,
            "max_response_bytes": self.max_response_bytes,
            "max_pages": self.max_pages,
        }
        if self.demo_mode:
            if self._emulator is None:
                raise RuntimeError("demo mode: the embedded emulator is not running (resource not set up)")
            return ConnectionSettings(
                base_url=self._emulator.base_url,
                token_url=self._emulator.token_url,
                client_id=DEMO_CLIENT_ID,
                client_secret=DEMO_CLIENT_SECRET,
                profile="delinea",
                **{k: v for k, v in common.items() if k != "profile"},
            )
        return ConnectionSettings(
            base_url=self.base_url,
            token_url=self.token_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            ca_bundle=self.ca_bundle,
            **common,
        )

    def get_client(
        self, *, quirks: TargetQuirks | None = None, write_guard: Callable[[], None] | None = None
    ) -> ScimClient:
        """A new SCIM client (an async context manager) for this target, with what is known of its quirks;
        ``write_guard`` runs before every write request (the engine's lease fence)."""
        return ScimClient(self.connection_settings(), quirks=quirks, write_guard=write_guard)

    def identity(self) -> str:
        """The target as the state store names it (its lease, its quirks): the base URL, or the demo emulator."""
        if self.demo_mode:
            return f"demo:{self.demo_name}" if self.demo_name else "demo"
        return str(self.base_url).rstrip("/")

    def describe(self) -> str:
        """Where the pipeline provisions to, without any credential."""
        from scim_pipeline.settings import PipelineSettings

        return PipelineSettings.from_env({}, base_url=self.base_url, profile=self.profile).describe_target()


def target_resource(
    settings: PipelineSettings,
    *,
    client_secret_env: str = "SCIM_CLIENT_SECRET",  # noqa: S107 - a variable name
    demo_name: str | None = None,
) -> ScimTargetResource:
    """The target resource of ``settings``; the secret stays an ``EnvVar`` (Dagster shows only its name)."""
    from dagster import EnvVar

    values: dict[str, Any] = {
        "base_url": settings.base_url,
        "token_url": settings.token_url,
        "client_id": settings.client_id,
        "ca_bundle": settings.ca_bundle,
        "scope": settings.scope,
        "profile": settings.profile,
        "max_concurrency": settings.concurrency,
        "rate_limit_per_s": settings.rate_limit,
        "timeout_s": settings.timeout,
        "member_chunk": settings.member_chunk,
        "adaptive_pacing": settings.adaptive_pacing,
        "retry_budget_s": settings.retry_budget_s,
        "max_attempts": settings.max_attempts,
        "max_retry_wait_s": settings.max_retry_wait_s,
        "max_response_bytes": settings.max_response_bytes,
        "max_pages": settings.max_pages,
        "demo_name": demo_name if settings.demo_mode else None,
    }
    if settings.base_url is not None and settings.client_id is not None:
        values["client_secret"] = EnvVar(client_secret_env)
    return ScimTargetResource(**{name: value for name, value in values.items() if value is not None})
