"""The roster source, the provisioning state store and the sync policy as Dagster resources."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources as package_files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource
from pydantic import BaseModel, Field

from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.scim import ConfigurationError
from scim_pipeline.settings import PolicySettings, SourceSettings, StoreSettings

if TYPE_CHECKING:
    from dagster import DagsterInstance

    from scim_pipeline.scim.settings import EmailForm
    from scim_pipeline.settings import PipelineSettings
    from scim_pipeline.sources import RosterSource
    from scim_pipeline.sources._incremental import ReportingSource, WatermarkStore
    from scim_pipeline.sync.engine import LoadedRoster
    from scim_pipeline.sync.pam.access import AccessFile
    from scim_pipeline.sync.plan.guards import GuardSettings
    from scim_pipeline.sync.plan.mapping import Mapping as MappingModel
    from scim_pipeline.sync.plan.roster import Roster
    from scim_pipeline.sync.state import ProvisioningState


def bundled_sample_roster() -> Path:
    """The sample roster shipped inside the package (the demo's IdP)."""
    return Path(str(package_files.files("scim_pipeline") / "sample_roster"))


class RosterSourceResource(ConfigurableResource, SourceSettings):  # type: ignore[type-arg]
    """The IdP roster: a folder of files or an IdP connector (``source``), an optional mapping file and the access
    file; settings from :class:`~scim_pipeline.settings.SourceSettings`.

    A connector's settings travel with the resource (``connector``: its non-secret ``SCIM_<SOURCE>_*`` values by
    name), so two Component instances read two different directories; its secrets never do — ``connector_secrets``
    names the environment variable of each, read in the process that runs the sync (as Dagster's ``EnvVar`` is)."""

    name: str | None = Field(default=None, description="The Component instance (keeps connector caches apart).")
    shards: int = Field(default=16, ge=1, le=1024, description="Shard partitions users are split into.")
    demo: bool = Field(
        default=False,
        description="Demo mode (no SCIM_BASE_URL): the bundled sample roster and access file stand in. Outside demo "
        "mode they are never used.",
    )
    connector: dict[str, str] = Field(
        default_factory=dict,
        description="The connector's settings by name (e.g. url, user_base for ldap), never a secret.",
    )
    connector_secrets: dict[str, str] = Field(
        default_factory=dict,
        description="The connector's secrets: setting name → the environment variable that holds it.",
    )

    @property
    def uses_sample(self) -> bool:
        return self.source == "file" and not self.roster

    def access_path(self) -> Path | None:
        """The access file in effect: SCIM_ACCESS, the bundled sample in demo mode, else none (no PAM kinds)."""
        if self.access:
            return Path(self.access)
        if self.demo and self.uses_sample:
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
        if not self.roster and not self.demo:
            # A configured target never gets the demo's people: a forgotten SCIM_ROSTER stops the cycle here.
            raise ConfigurationError(
                "SCIM_ROSTER is not set: with a target configured (SCIM_BASE_URL) the bundled sample roster is never "
                "used — set SCIM_ROSTER to your roster folder, or SCIM_SOURCE to an IdP connector"
            )
        folder = Path(self.roster) if self.roster else bundled_sample_roster()
        if not folder.is_dir():
            raise ConfigurationError(f"SCIM_ROSTER={folder} is not a folder")
        return folder

    def mapping_model(self, email_form: EmailForm | None = None) -> MappingModel:
        """The mapping in effect (the default one when no file is configured), with the target's e-mail form
        (``SCIM_EMAIL_FORM``) where the file chose none."""
        from scim_pipeline.sync.plan.mapping import Mapping, load_mapping

        mapping = load_mapping(Path(self.mapping)) if self.mapping else Mapping()
        return mapping.with_email_form(email_form) if email_form is not None else mapping

    def match_attributes(self) -> tuple[str, str]:
        """The SCIM attributes users and groups are matched on (`userName`/`externalId`, `displayName`/…)."""
        mapping = self.mapping_model()
        return str(mapping.users.match), str(mapping.groups.match)

    def reader(
        self, instance: DagsterInstance | None = None, *, email_form: EmailForm | None = None
    ) -> _BoundRosterReader:
        """This source as the sync engine reads it, with its connector cache under ``instance``'s home and the
        target's e-mail form."""
        return _BoundRosterReader(self, instance, email_form)

    def roster_source(
        self, *, instance: DagsterInstance | None = None, watermarks: WatermarkStore | None = None
    ) -> ReportingSource:
        """The configured source (the folder, or the connector with its cache under ``instance``'s home)."""
        from scim_pipeline.sources import FolderRosterSource
        from scim_pipeline.sources.selection import connector_source

        if self.source == "file":
            return FolderRosterSource(self.folder())
        cache = pipeline_home(instance) / "source_cache" / (self.name or "default")
        cache.mkdir(parents=True, exist_ok=True)
        return connector_source(
            self.source, self.connector, self.connector_secrets, cache_dir=cache, watermarks=watermarks
        )

    def load(
        self,
        *,
        instance: DagsterInstance | None = None,
        watermarks: WatermarkStore | None = None,
        upstream: RosterSource | None = None,
        email_form: EmailForm | None = None,
    ) -> LoadedRoster:
        """Read (from ``upstream`` when the roster is an upstream asset), validate, map and scope the roster."""
        from scim_pipeline.sync.plan.mapping import build_roster

        source: Any
        if upstream is not None:
            source = upstream
            description = repr(upstream)
        else:
            source = self.roster_source(instance=instance, watermarks=watermarks)
            if self.source == "file":
                description = "bundled sample roster (demo)" if self.uses_sample else str(self.folder())
            else:
                description = f"{self.source} source"
        raw, report = source.read_with_report()
        sources = {table.name: table.source for table in (raw.users, raw.groups, raw.memberships) if table is not None}
        roster = build_roster(raw, self.mapping_model(email_form), shards=self.shards)
        from scim_pipeline.sync.engine import LoadedRoster

        return LoadedRoster(roster, sources, description, dict(report.as_metadata()))


@dataclass(frozen=True)
class _BoundRosterReader:
    """A roster resource bound to the Dagster instance whose home keeps its connector cache."""

    resource: RosterSourceResource
    instance: DagsterInstance | None
    email_form: EmailForm | None = None

    def load(self, *, watermarks: WatermarkStore, upstream: RosterSource | None = None) -> LoadedRoster:
        return self.resource.load(
            instance=self.instance, watermarks=watermarks, upstream=upstream, email_form=self.email_form
        )

    def load_access(self, roster: Roster) -> AccessFile | None:
        return self.resource.load_access(roster)


class ProvisioningStateResource(ConfigurableResource, StoreSettings):  # type: ignore[type-arg]
    """Where the pipeline remembers what it manages and every call it made; settings from
    :class:`~scim_pipeline.settings.StoreSettings`."""

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


class SyncPolicyResource(ConfigurableResource, PolicySettings):  # type: ignore[type-arg]
    """How a cycle behaves (deprovisioning, guards); settings from :class:`~scim_pipeline.settings.PolicySettings`."""

    def guard_settings(self, *, allow_mass_changes: bool = False) -> GuardSettings:
        """The guard thresholds of the sync engine; ``allow_mass_changes`` lets one run pass them."""
        from scim_pipeline.sync.plan.guards import GuardSettings

        return GuardSettings(
            max_deletes=self.max_deletes, allow_mass_changes=self.allow_mass_changes or allow_mass_changes
        )


def roster_resource(
    settings: PipelineSettings,
    *,
    name: str | None = None,
    connector: Mapping[str, str] | None = None,
    connector_secrets: Mapping[str, str] | None = None,
) -> RosterSourceResource:
    return RosterSourceResource(
        **_fields(settings, SourceSettings),
        name=name,
        shards=settings.shards,
        demo=settings.demo_mode,
        connector=dict(connector or {}),
        connector_secrets=dict(connector_secrets or {}),
    )


def state_resource(settings: PipelineSettings, *, name: str | None = None) -> ProvisioningStateResource:
    return ProvisioningStateResource(**_fields(settings, StoreSettings), name=name, demo=settings.demo_mode)


def policy_resource(settings: PipelineSettings) -> SyncPolicyResource:
    return SyncPolicyResource(**_fields(settings, PolicySettings))


def _fields(settings: PipelineSettings, group: type[BaseModel]) -> dict[str, Any]:
    return {name: getattr(settings, name) for name in group.model_fields}
