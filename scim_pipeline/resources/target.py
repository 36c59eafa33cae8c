"""The SCIM target as a Dagster resource: connection settings, and the embedded emulator in demo mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field, PrivateAttr

from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.scim import ConnectionSettings, ScimClient
from scim_pipeline.scim.settings import ClientSettings

if TYPE_CHECKING:
    from scim_pipeline.emulator import EmulatorServer
    from scim_pipeline.scim.target_quirks import TargetQuirks
    from scim_pipeline.settings import PipelineSettings

DEMO_CLIENT_ID = "scim-demo"
# The emulator's built-in demo credential: it only ever unlocks the local, loopback-only emulator.
DEMO_CLIENT_SECRET = "demo-secret"  # noqa: S105


class ScimTargetResource(ConfigurableResource, ClientSettings):  # type: ignore[type-arg]
    """The SCIM service provider the pipeline provisions into; every client setting comes from
    :class:`~scim_pipeline.scim.settings.ClientSettings` (declared once, with its bounds and variable).

    With no `base_url` the resource runs in demo mode: it starts the bundled Delinea emulator on loopback, backed by
    a SQLite file under the Dagster home, so the demo's target survives across runs and processes.
    """

    base_url: str | None = Field(
        default=None,
        description="SCIM base URL (SCIM_BASE_URL), e.g. https://<tenant>.delinea.app/scim/v2. "
        "Unset means demo mode on the embedded emulator.",
    )
    client_secret: str | None = Field(
        default=None,
        description="OAuth client secret (SCIM_CLIENT_SECRET). Give it as EnvVar, never as a literal.",
        repr=False,
    )
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
        common: dict[str, Any] = {name: getattr(self, name) for name in ClientSettings.model_fields}
        if self.demo_mode:
            if self._emulator is None:
                raise RuntimeError("demo mode: the embedded emulator is not running (resource not set up)")
            demo = {
                "token_url": self._emulator.token_url,
                "client_id": DEMO_CLIENT_ID,
                "profile": "delinea",
                "token_auth": "auto",
                "ca_bundle": None,
            }
            return ConnectionSettings(
                base_url=self._emulator.base_url, client_secret=DEMO_CLIENT_SECRET, **{**common, **demo}
            )
        return ConnectionSettings(base_url=self.base_url, client_secret=self.client_secret, **common)

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

    values: dict[str, Any] = {name: getattr(settings, name) for name in ClientSettings.model_fields}
    values["base_url"] = settings.base_url
    values["demo_name"] = demo_name if settings.demo_mode else None
    if settings.base_url is not None and settings.client_id is not None:
        values["client_secret"] = EnvVar(client_secret_env)
    return ScimTargetResource(**{name: value for name, value in values.items() if value is not None})
