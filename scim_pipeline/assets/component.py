"""`ScimProvisioningComponent`: one SCIM target as a Dagster Component, configured in `defs.yaml`.

```yaml
type: scim_pipeline.ScimProvisioningComponent
attributes:
  name: staging                      # asset-key prefix, job/pool suffix; omit for a single target
  base_url: https://staging.delinea.app/scim/v2
  client_id: scim-sync
  client_secret_env: SCIM_STAGING_SECRET   # the secret itself only ever comes from the environment
  roster: hr_export                  # relative paths resolve against this defs.yaml's folder
  shards: 16
  translation:                       # optional: keys, groups, owners, tags (see ScimTranslator)
    owners: ["team:identity"]
```

Every setting of the pipeline is an attribute, declared once in :mod:`scim_pipeline.settings` with its bounds and
description (the same model reads the `SCIM_*` variables). Several instances in one project (a staging and a
production tenant) get distinct asset keys, jobs, pools, state stores and resources. The `workspace.yaml` code
location (`scim_pipeline.definitions:defs`) is this Component built from the `SCIM_*` environment variables.
"""

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import dagster as dg
from dagster import AssetKey, AssetSpec, Definitions, in_process_executor, multiprocess_executor
from dagster.components.scaffold.scaffold import ScaffoldRequest, scaffold_with
from dagster.components.utils.translation import TranslationFnResolver
from pydantic import Field

from scim_pipeline.assets.alerts import AlertTarget, build_alert_sensors
from scim_pipeline.assets.cycle import ResourceKeys, build_cycle_assets
from scim_pipeline.assets.health import Freshness, build_health
from scim_pipeline.assets.jobs import JobNames, build_jobs, build_schedules
from scim_pipeline.assets.sensors import build_leaver_sensor
from scim_pipeline.assets.translator import ScimAssetProps, ScimTranslator
from scim_pipeline.resources.pipeline import (
    RosterSourceResource,
    policy_resource,
    roster_resource,
    state_resource,
)
from scim_pipeline.resources.pools import target_pool
from scim_pipeline.resources.target import target_resource
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.scim.settings import ClientSettings
from scim_pipeline.settings import (
    AlertSettings,
    HealthSettings,
    LeaverSettings,
    PipelineSettings,
    PolicySettings,
    ShardSettings,
    SourceSettings,
    StoreSettings,
)

__all__ = ["DEMO_BANNER", "ScimProvisioningComponent"]

DEMO_BANNER = (
    "DEMO MODE: SCIM_BASE_URL is not set, so this code location provisions the bundled sample roster into the "
    "embedded Delinea emulator. Set SCIM_BASE_URL, SCIM_CLIENT_ID, SCIM_CLIENT_SECRET and SCIM_ROSTER to "
    "provision a real target."
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_PATHS = ("roster", "mapping", "access", "ca_bundle", "client_key_file")
"""Attributes holding a file or folder: relative ones resolve against the defs.yaml's folder."""
_SIGNALING_SOURCES = frozenset({"file", "ldap", "sql"})
"""Sources with a cheap change signal (scim_pipeline.sources._signal): the leaver sensor can poll them."""

TranslationFn = Annotated[
    Callable[[AssetSpec, ScimAssetProps], AssetSpec],
    TranslationFnResolver[ScimAssetProps](lambda props: {"props": props}),
]
"""The `translation:` block: asset attributes (templated with ``props`` and ``spec``) applied over the defaults."""


class ScimProvisioningScaffolder(dg.Scaffolder):
    """`dg scaffold defs scim_pipeline.ScimProvisioningComponent <path>` writes a working instance: demo mode until
    `base_url` is filled in."""

    def scaffold(self, request: ScaffoldRequest[Any]) -> None:
        name = re.sub(r"[^a-z0-9_]", "_", request.target_path.name.lower()).strip("_") or "scim"
        if not name[0].isalpha():
            name = f"scim_{name}"
        dg.scaffold_component(
            request,
            {
                "name": name,
                "base_url": None,
                "client_id": None,
                "client_secret_env": "SCIM_CLIENT_SECRET",
                "roster": None,
                "shards": 16,
            },
        )


@scaffold_with(ScimProvisioningScaffolder)
class ScimProvisioningComponent(
    dg.Component,
    dg.Model,
    dg.Resolvable,
    ClientSettings,
    SourceSettings,
    StoreSettings,
    ShardSettings,
    PolicySettings,
    HealthSettings,
    AlertSettings,
    LeaverSettings,
):
    """Provision an IdP roster into one SCIM target (Delinea or any RFC 7644 service provider): the roster, change
    set, provisioning and audit assets, the guards as asset checks, the sync / plan / reconcile jobs and their
    schedules. Leave `base_url` empty for demo mode (the embedded emulator and the sample roster)."""

    name: str | None = Field(
        default=None,
        description="Instance name: prefixes asset keys and suffixes jobs, pools and resources, so several targets "
        "share one project. Lowercase letters, digits and underscores.",
    )
    base_url: str | None = Field(default=None, description="SCIM base URL; empty = demo mode.")
    client_secret_env: str = Field(
        default="SCIM_CLIENT_SECRET",
        description="Name of the environment variable holding the client secret (never the secret itself).",
    )
    source_settings: dict[str, str] = Field(
        default_factory=dict,
        description="The connector's settings by name, without the SCIM_<SOURCE>_ prefix (e.g. url, user_base, "
        "bind_dn for ldap; docs/sources.md). Unset: the process environment's SCIM_<SOURCE>_* variables when the "
        "location loads.",
    )
    source_secrets_env: dict[str, str] = Field(
        default_factory=dict,
        description="The connector's secrets: setting name → name of the environment variable that holds it "
        "(e.g. bind_password: HR_LDAP_PASSWORD); read in the run's process, never stored.",
    )
    upstream_users: str | None = Field(
        default=None,
        description="Asset key (a/b) of your own users DataFrame asset: the roster comes from it instead of the "
        "source, so lineage runs from your HR model to the target.",
    )
    upstream_groups: str | None = Field(default=None, description="Asset key of your groups DataFrame asset.")
    upstream_memberships: str | None = Field(default=None, description="Asset key of your memberships asset.")
    sync_schedule: str = Field(default="0 * * * *", description="Cron of the sync schedule (stopped by default).")
    reconcile_schedule: str = Field(default="30 3 * * *", description="Cron of the reconciliation schedule.")
    executor: Literal["in_process", "multiprocess"] = Field(
        default="in_process",
        description="in_process: the sync runs in the run's own process (seconds for a small sync); multiprocess: "
        "one process per step.",
    )
    translation: TranslationFn | None = Field(
        default=None,
        description="Asset attributes applied over the defaults (keys, group_name, owners, tags, description, …); "
        "template variables: props (name, stage, kind, per_identity, target) and spec.",
    )

    @classmethod
    def from_settings(cls, settings: PipelineSettings, **extra: Any) -> "ScimProvisioningComponent":
        """The Component for settings read from the environment (the `workspace.yaml` code location)."""
        fields = {name: getattr(settings, name) for name in cls.model_fields if hasattr(settings, name)}
        fields.pop("name", None)
        return cls(**fields, **extra)

    def settings(self, base: Path | None = None) -> PipelineSettings:
        """This instance's settings, validated by the one settings model (the environment is not consulted);
        relative paths resolve against ``base`` (the defs.yaml's folder)."""
        values = {
            name: getattr(self, name) for name in PipelineSettings.model_fields if name in type(self).model_fields
        }
        if base is not None:
            for name in _PATHS:
                if isinstance(values.get(name), str) and not Path(values[name]).expanduser().is_absolute():
                    values[name] = str(base / values[name])
        return PipelineSettings.from_env({}, **values)

    def build_defs(self, context: dg.ComponentLoadContext) -> Definitions:
        return self.definitions(base=context.path)

    def definitions(self, *, base: Path | None = None, env: Mapping[str, str] | None = None) -> Definitions:
        """The assets, checks, jobs, schedules and resources of this target. ``env``: where a connector's settings
        are taken from when ``source_settings`` is empty (the process environment by default)."""
        if self.name is not None and not _NAME.match(self.name):
            raise ConfigurationError(
                f"ScimProvisioningComponent name {self.name!r}: use lowercase letters, digits and underscores"
            )
        settings = self.settings(base)
        keys = ResourceKeys.for_instance(self.name)
        suffix = f"_{self.name}" if self.name else ""
        demo = settings.demo_mode
        label = "[DEMO MODE: embedded emulator + sample roster] " if demo else ""
        freshness = Freshness.of(settings, sync_cron=self.sync_schedule, with_pam=demo or settings.access is not None)
        cycle = build_cycle_assets(
            shards=settings.shards,
            shards_per_run=settings.shards_per_run,
            translator=ScimTranslator(prefix=[self.name] if self.name else [], label=label),
            translation=freshness.translation(self.translation),
            target_name=self.name or "",
            resource_keys=keys,
            pool=target_pool(self.name),
            max_failure_share=settings.max_failure_share,
            upstream={
                table: AssetKey.from_user_string(key)
                for table, key in (
                    ("users", self.upstream_users),
                    ("groups", self.upstream_groups),
                    ("memberships", self.upstream_memberships),
                )
                if key
            },
        )
        names = JobNames.for_instance(self.name)
        connector, connector_secrets = self._connector(settings, env)
        state = state_resource(settings, name=self.name)
        roster = roster_resource(settings, name=self.name, connector=connector, connector_secrets=connector_secrets)
        health = build_health(cycle, settings=settings, freshness=freshness, state=state, suffix=suffix, demo=demo)
        jobs = build_jobs(cycle, names, label=label, without_checks=health.checks)
        return Definitions(
            assets=cycle.assets,
            asset_checks=health.checks,
            jobs=[*jobs, health.job],
            schedules=[
                *build_schedules(names, sync_cron=self.sync_schedule, reconcile_cron=self.reconcile_schedule),
                health.schedule,
            ],
            sensors=[
                *build_alert_sensors(
                    settings,
                    where=AlertTarget(settings.describe_target(), self.name or "", state, suffix),
                    jobs=[*jobs, health.job],
                    check_keys=health.check_keys(cycle),
                    env=env,
                ),
                *self._leaver_sensors(settings, names, roster, suffix),
            ],
            resources={
                keys.target: target_resource(settings, client_secret_env=self.client_secret_env, demo_name=self.name),
                keys.roster: roster,
                keys.state: state,
                keys.policy: policy_resource(settings),
            },
            executor=in_process_executor if self.executor == "in_process" else multiprocess_executor,
            metadata={
                f"target{suffix}": settings.describe_target(),
                f"mode{suffix}": "demo (embedded emulator + sample roster)" if demo else "live",
                f"shards{suffix}": settings.shards,
                **({"demo_mode": DEMO_BANNER} if demo else {}),
            },
        )

    def _leaver_sensors(
        self, settings: PipelineSettings, names: JobNames, roster: RosterSourceResource, suffix: str
    ) -> list[dg.SensorDefinition]:
        """The leaver sensor, for a source with a cheap change signal (file, ldap, sql) read by this location."""
        unsupported = (
            "the roster comes from an upstream asset (upstream_users)"
            if self.upstream_users
            else f"the {settings.source} source has no cheap change signal (file, ldap and sql have one)"
            if settings.source not in _SIGNALING_SOURCES
            else None
        )
        if unsupported is None:
            return [
                build_leaver_sensor(
                    names,
                    roster,
                    poll_seconds=settings.leaver_poll_seconds,
                    running=settings.leaver_sensor,
                    suffix=suffix,
                )
            ]
        if settings.leaver_sensor:
            raise ConfigurationError(f"SCIM_LEAVER_SENSOR (leaver_sensor) is on but cannot be honoured: {unsupported}")
        return []

    def _connector(
        self, settings: PipelineSettings, env: Mapping[str, str] | None
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The connector's settings this instance carries: its own, or those of the environment it loads in."""
        if settings.source == "file":
            return {}, {}
        if self.source_settings or self.source_secrets_env:
            return dict(self.source_settings), dict(self.source_secrets_env)
        import os

        from scim_pipeline.sources.selection import connector_values

        return connector_values(settings.source, os.environ if env is None else env)
