"""`ScimProvisioningComponent`: one SCIM target as a Dagster Component, configured in `defs.yaml`.

```yaml
type: scim_pipeline.ScimProvisioningComponent
attributes:
  name: staging                      # asset-key prefix, job/pool suffix; omit for a single target
  base_url: https://staging.delinea.app/scim/v2
  client_id: scim-sync
  client_secret_env: SCIM_STAGING_SECRET   # the secret itself only ever comes from the environment
  roster: /data/hr_export
  shards: 16
```

Several instances in one project (a staging and a production tenant) get distinct asset keys, jobs, pools, state
stores and resources. The `workspace.yaml` code location (`scim_pipeline.definitions:defs`) is this Component built
from the `SCIM_*` environment variables.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import dagster as dg
from dagster import AssetKey, Definitions, in_process_executor, multiprocess_executor
from dagster.components.scaffold.scaffold import ScaffoldRequest, scaffold_with
from pydantic import Field

from scim_pipeline.assets.cycle import ResourceKeys, build_cycle_assets
from scim_pipeline.assets.jobs import JobNames, build_jobs, build_schedules
from scim_pipeline.assets.translator import ScimTranslator
from scim_pipeline.resources.pipeline import policy_resource, roster_resource, state_resource
from scim_pipeline.resources.target import target_resource
from scim_pipeline.settings import PipelineSettings

__all__ = ["DEMO_BANNER", "ScimProvisioningComponent"]

DEMO_BANNER = (
    "DEMO MODE: SCIM_BASE_URL is not set, so this code location provisions the bundled sample roster into the "
    "embedded Delinea emulator. Set SCIM_BASE_URL, SCIM_CLIENT_ID, SCIM_CLIENT_SECRET and SCIM_ROSTER to "
    "provision a real target."
)
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


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
class ScimProvisioningComponent(dg.Component, dg.Model, dg.Resolvable):
    """Provision an IdP roster into one SCIM target (Delinea or any RFC 7644 service provider): the roster, change
    set, provisioning and audit assets, the guards as asset checks, the sync / plan / reconcile jobs and their
    schedules. Leave `base_url` empty for demo mode (the embedded emulator and the sample roster)."""

    name: str | None = Field(
        default=None,
        description="Instance name: prefixes asset keys and suffixes jobs, pools and resources, so several targets "
        "share one project. Lowercase letters, digits and underscores.",
    )
    base_url: str | None = Field(default=None, description="SCIM base URL; empty = demo mode.")
    token_url: str | None = Field(default=None, description="OAuth token URL (default from base_url).")
    client_id: str | None = Field(default=None, description="OAuth client id.")
    client_secret_env: str = Field(
        default="SCIM_CLIENT_SECRET",
        description="Name of the environment variable holding the client secret (never the secret itself).",
    )
    scope: str = Field(default="xpm.platform", description="OAuth scope.")
    profile: Literal["delinea", "rfc7644"] = Field(default="delinea", description="Target profile.")
    ca_bundle: str | None = Field(default=None, description="CA bundle for TLS verification.")
    concurrency: int = Field(default=16, description="Concurrent requests towards the target.")
    rate_limit: float | None = Field(default=None, description="Ceiling on requests per second.")
    timeout: float = Field(default=30.0, description="Deadline of one request, seconds.")
    member_chunk: int = Field(default=100, description="Member operations per group PATCH.")
    adaptive_pacing: bool = Field(default=True, description="Pace on the target's 429s and rate-limit headers.")
    retry_budget_s: float = Field(default=300.0, description="Seconds one request keeps retrying 429s.")
    max_attempts: int = Field(default=6, description="Attempts per request on 5xx and transport errors.")
    max_retry_wait_s: float = Field(default=60.0, description="Longest wait before one retry, seconds.")
    max_response_bytes: int = Field(default=32 * 1024 * 1024, description="Largest answer accepted, bytes.")
    max_pages: int = Field(default=50_000, description="Most pages one listing may take.")
    source: Literal["file", "ldap", "entra", "okta", "scim", "sql"] = Field(
        default="file",
        description="Roster source: file (the roster folder) or a connector, configured by its SCIM_<SOURCE>_* "
        "environment variables in the run's process (docs/sources.md).",
    )
    roster: str | None = Field(default=None, description="Roster folder; empty = the bundled sample.")
    mapping: str | None = Field(default=None, description="Mapping file (YAML).")
    access: str | None = Field(
        default=None,
        description="Access file (YAML or CSV): containers, rights of groups and users, privileged-data placement "
        "(docs/access.md); empty = no container sync (demo mode: the bundled sample).",
    )
    upstream_users: str | None = Field(
        default=None,
        description="Asset key (a/b) of your own users DataFrame asset: the roster comes from it instead of the "
        "source, so lineage runs from your HR model to the target.",
    )
    upstream_groups: str | None = Field(default=None, description="Asset key of your groups DataFrame asset.")
    upstream_memberships: str | None = Field(default=None, description="Asset key of your memberships asset.")
    state_url: str | None = Field(default=None, description="State store URL; default under DAGSTER_HOME.")
    shards: int = Field(default=16, description="Shard partitions of the users.")
    shards_per_run: int | None = Field(default=None, description="Shards per run of a backfill (default: all).")
    lease_wait: float = Field(
        default=300.0, description="Seconds a cycle waits for another writer to this target before it stops."
    )
    deprovision: Literal["disable", "delete"] = Field(default="disable", description="disable or delete.")
    max_deletes: int | None = Field(default=None, description="Deletion threshold per cycle.")
    allow_mass_changes: bool = Field(default=False, description="Let runs pass the guards (use once, then unset).")
    sync_schedule: str = Field(default="0 * * * *", description="Cron of the sync schedule (stopped by default).")
    reconcile_schedule: str = Field(default="30 3 * * *", description="Cron of the reconciliation schedule.")
    executor: Literal["in_process", "multiprocess"] = Field(
        default="in_process",
        description="in_process: the sync runs in the run's own process (seconds for a small sync); multiprocess: "
        "one process per step.",
    )

    @classmethod
    def from_settings(cls, settings: PipelineSettings, **extra: Any) -> ScimProvisioningComponent:
        """The Component for settings read from the environment (the `workspace.yaml` code location)."""
        fields = {name: getattr(settings, name) for name in cls.model_fields if hasattr(settings, name)}
        fields.pop("name", None)
        return cls(**fields, **extra)

    def settings(self) -> PipelineSettings:
        """This instance's settings, validated by the one settings model (the environment is not consulted)."""
        values = {
            name: getattr(self, name) for name in PipelineSettings.model_fields if name in type(self).model_fields
        }
        return PipelineSettings.from_env({}, **values)

    def build_defs(self, context: dg.ComponentLoadContext) -> Definitions:
        return self.definitions()

    def definitions(self) -> Definitions:
        """The assets, checks, jobs, schedules and resources of this target."""
        if self.name is not None and not _NAME.match(self.name):
            from scim_pipeline.scim.errors import ConfigurationError

            raise ConfigurationError(
                f"ScimProvisioningComponent name {self.name!r}: use lowercase letters, digits and underscores"
            )
        settings = self.settings()
        keys = ResourceKeys.for_instance(self.name)
        suffix = f"_{self.name}" if self.name else ""
        demo = settings.demo_mode
        label = "[DEMO MODE: embedded emulator + sample roster] " if demo else ""
        cycle = build_cycle_assets(
            shards=settings.shards,
            shards_per_run=settings.shards_per_run,
            translator=ScimTranslator(prefix=[self.name] if self.name else [], label=label),
            target_name=self.name or "",
            resource_keys=keys,
            pool=f"scim_target{suffix}",
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
        target = target_resource(settings, client_secret_env=self.client_secret_env, demo_name=self.name)
        return Definitions(
            assets=cycle.assets,
            jobs=build_jobs(cycle, names, label=label),
            schedules=build_schedules(names, sync_cron=self.sync_schedule, reconcile_cron=self.reconcile_schedule),
            resources={
                keys.target: target,
                keys.roster: roster_resource(settings, name=self.name),
                keys.state: state_resource(settings, name=self.name),
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
