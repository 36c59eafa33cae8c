"""The roster source, the provisioning state store and the sync policy as Dagster resources."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from dagster import ConfigurableResource
from pydantic import Field

from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.scim import ConfigurationError

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from scim_pipeline.settings import PipelineSettings
    from scim_pipeline.sources import RosterSource
    from scim_pipeline.sources._incremental import WatermarkStore
    from scim_pipeline.sync.pam.access import AccessFile
    from scim_pipeline.sync.plan.guards import GuardSettings
    from scim_pipeline.sync.plan.mapping import Mapping as MappingModel
    from scim_pipeline.sync.plan.roster import Roster
    from scim_pipeline.sync.state import ProvisioningState


def bundled_sample_roster() -> Path:
    """The sample roster shipped inside the package (the demo's IdP)."""
    return Path(str(package_files.files("scim_pipeline") / "sample_roster"))


@dataclass(frozen=True)
class LoadedRoster:
    """A roster as one run read it: the normalized frames, where each table came from, a label for the UI, and
    what the source read (counts, pages, watermark, wall time)."""

    roster: Roster
    sources: dict[str, str]
    description: str
    read: dict[str, Any]


class RosterSourceResource(ConfigurableResource):  # type: ignore[type-arg]
    """The IdP roster: a folder of files or an IdP connector (SCIM_SOURCE), and an optional mapping file.

    A connector's own settings — secrets among them — are read from its SCIM_<SOURCE>_* variables in the process
    that runs the sync, so they never enter run config or the UI."""

    source: str = Field(default="file", description="SCIM_SOURCE: file, ldap, entra, okta, scim or sql.")
    name: str | None = Field(default=None, description="The Component instance (keeps connector caches apart).")
    roster: str | None = Field(default=None, description="Roster folder (SCIM_ROSTER); unset = the bundled sample.")
    mapping: str | None = Field(default=None, description="Mapping file, YAML (SCIM_MAPPING); unset = defaults.")
    shards: int = Field(default=16, description="Shard partitions users are split into (SCIM_SHARDS).")
    access: str | None = Field(
        default=None, description="Access file, YAML or CSV (SCIM_ACCESS); unset = no container sync."
    )
    sample_access: bool = Field(
        default=False, description="Demo mode: with the bundled sample roster, use the bundled sample access file."
    )

    @property
    def uses_sample(self) -> bool:
        return self.source == "file" and not self.roster

    def access_path(self) -> Path | None:
        """The access file in effect: SCIM_ACCESS, the bundled sample in demo mode, else none (no PAM kinds)."""
        if self.access:
            return Path(self.access)
        if self.sample_access and self.uses_sample:
            return bundled_sample_roster() / "access.yaml"
        return None

    def load_access(self, roster: Roster) -> AccessFile | None:
        """The validated access file for this roster (its users and groups are the principals it may name)."""
        from scim_pipeline.sync.pam.access import load_access

        path = self.access_path()
        if path is None:
            return None
        return load_access(path, users=roster.users["key"].astype(str), groups=roster.groups["key"].astype(str))

    def folder(self) -> Path:
        folder = Path(self.roster) if self.roster else bundled_sample_roster()
        if not folder.is_dir():
            raise ConfigurationError(f"SCIM_ROSTER={folder} is not a folder")
        return folder

    def mapping_model(self) -> MappingModel:
        """The mapping in effect (the default one when no file is configured)."""
        from scim_pipeline.sync.plan.mapping import Mapping, load_mapping

        return load_mapping(Path(self.mapping)) if self.mapping else Mapping()

    def match_attributes(self) -> tuple[str, str]:
        """The SCIM attributes users and groups are matched on (`userName`/`externalId`, `displayName`/…)."""
        mapping = self.mapping_model()
        return str(mapping.users.match), str(mapping.groups.match)

    def load(
        self,
        *,
        instance: DagsterInstance | None = None,
        watermarks: WatermarkStore | None = None,
        upstream: RosterSource | None = None,
    ) -> LoadedRoster:
        """Read (from ``upstream`` when the roster is an upstream asset), validate, map and scope the roster."""
        from scim_pipeline.sources import FolderRosterSource
        from scim_pipeline.sources.selection import source_from_env
        from scim_pipeline.sync.plan.mapping import build_roster

        source: Any
        if upstream is not None:
            source = upstream
            description = repr(upstream)
        elif self.source == "file":
            source = FolderRosterSource(self.folder())
            description = "bundled sample roster (demo)" if self.uses_sample else str(self.folder())
        else:
            cache = pipeline_home(instance) / "source_cache" / (self.name or "default")
            cache.mkdir(parents=True, exist_ok=True)
            source = source_from_env({**os.environ, "SCIM_SOURCE": self.source}, cache_dir=cache, watermarks=watermarks)
            description = f"{self.source} source"
        raw, report = source.read_with_report()
        sources = {table.name: table.source for table in (raw.users, raw.groups, raw.memberships) if table is not None}
        roster = build_roster(raw, self.mapping_model(), shards=self.shards)
        return LoadedRoster(roster, sources, description, dict(report.as_metadata()))


class ProvisioningStateResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the pipeline remembers what it manages and every call it made."""

    state_url: str | None = Field(
        default=None,
        description="State store (SCIM_STATE_URL); default <DAGSTER_HOME>/scim_pipeline/state.sqlite "
        "(state_<name>.sqlite for a named Component instance).",
    )
    name: str | None = Field(default=None, description="The Component instance this state store belongs to.")
    demo: bool = Field(
        default=False, description="Demo mode: the embedded emulator's own state file, never a real target's."
    )

    def url(self, instance: DagsterInstance | None = None) -> str:
        if self.state_url:
            return self.state_url
        stem = "demo_state" if self.demo else "state"
        file_name = f"{stem}_{self.name}.sqlite" if self.name else f"{stem}.sqlite"
        return f"sqlite:///{pipeline_home(instance) / file_name}"

    def open(self, instance: DagsterInstance | None = None) -> ProvisioningState:
        from scim_pipeline.sync.state import ProvisioningState

        return ProvisioningState.open(self.url(instance))


class SyncPolicyResource(ConfigurableResource):  # type: ignore[type-arg]
    """How a cycle behaves: deprovisioning, guards, chunking."""

    deprovision: Literal["disable", "delete"] = Field(
        default="disable", description="SCIM_DEPROVISION: disable (active=false) or delete."
    )
    max_deletes: int | None = Field(
        default=None,
        description="SCIM_MAX_DELETES: disables + deletes allowed per cycle (default: 20 % of managed).",
    )
    max_delete_share: float = Field(default=0.2, description="Share of managed users one cycle may disable/delete.")
    allow_mass_changes: bool = Field(
        default=False,
        description="SCIM_ALLOW_MASS_CHANGES=1 lets the next run pass the guards (use once, then unset).",
    )

    def guard_settings(self, *, allow_mass_changes: bool = False) -> GuardSettings:
        """The guard thresholds of the sync engine; ``allow_mass_changes`` lets one run pass them."""
        from scim_pipeline.sync.plan.guards import GuardSettings

        return GuardSettings(
            max_deletes=self.max_deletes,
            max_delete_share=self.max_delete_share,
            allow_mass_changes=self.allow_mass_changes or allow_mass_changes,
        )


def roster_resource(settings: PipelineSettings, *, name: str | None = None) -> RosterSourceResource:
    return RosterSourceResource(
        source=settings.source,
        name=name,
        roster=settings.roster,
        mapping=settings.mapping,
        shards=settings.shards,
        access=settings.access,
        sample_access=settings.demo_mode,
    )


def state_resource(settings: PipelineSettings, *, name: str | None = None) -> ProvisioningStateResource:
    return ProvisioningStateResource(state_url=settings.state_url, name=name, demo=settings.demo_mode)


def policy_resource(settings: PipelineSettings) -> SyncPolicyResource:
    return SyncPolicyResource(
        deprovision=settings.deprovision,
        max_deletes=settings.max_deletes,
        allow_mass_changes=settings.allow_mass_changes,
    )
