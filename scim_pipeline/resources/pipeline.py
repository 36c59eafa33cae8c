"""The roster source, the provisioning state store and the sync policy as Dagster resources."""

from __future__ import annotations

import os
from importlib import resources as package_files
from pathlib import Path
from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field

from scim_pipeline.resources.home import pipeline_home
from scim_pipeline.scim import ConfigurationError


def bundled_sample_roster() -> Path:
    """The sample roster shipped inside the package (the demo's IdP)."""
    return Path(str(package_files.files("scim_pipeline") / "sample_roster"))


class RosterSourceResource(ConfigurableResource):  # type: ignore[type-arg]
    """The IdP roster: a folder of users / groups / memberships files, and an optional mapping file."""

    roster: str | None = Field(default=None, description="Roster folder (SCIM_ROSTER); unset = the bundled sample.")
    mapping: str | None = Field(default=None, description="Mapping file, YAML (SCIM_MAPPING); unset = defaults.")

    @property
    def uses_sample(self) -> bool:
        return not self.roster

    def folder(self) -> Path:
        folder = Path(self.roster) if self.roster else bundled_sample_roster()
        if not folder.is_dir():
            raise ConfigurationError(f"SCIM_ROSTER={folder} is not a folder")
        return folder

    def mapping_model(self) -> Any:
        """The mapping in effect (the default one when no file is configured)."""
        from scim_pipeline.sync.mapping import Mapping, load_mapping

        return load_mapping(Path(self.mapping)) if self.mapping else Mapping()

    def match_attributes(self) -> tuple[str, str]:
        """The SCIM attributes users and groups are matched on (`userName`/`externalId`, `displayName`/…)."""
        mapping = self.mapping_model()
        return str(mapping.users.match), str(mapping.groups.match)

    def load(self, shards: int) -> Any:
        """Read, validate, map and scope the roster into the normalized `Roster`."""
        from scim_pipeline.sources import FolderRosterSource
        from scim_pipeline.sync.mapping import build_roster

        raw = FolderRosterSource(self.folder()).read()
        return build_roster(raw, self.mapping_model(), shards=shards)


class ProvisioningStateResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the pipeline remembers what it manages and every call it made."""

    state_url: str | None = Field(
        default=None,
        description="State store (SCIM_STATE_URL); default <DAGSTER_HOME>/scim_pipeline/state.sqlite.",
    )

    def url(self, instance: Any = None) -> str:
        if self.state_url:
            return self.state_url
        return f"sqlite:///{pipeline_home(instance) / 'state.sqlite'}"

    def open(self, instance: Any = None) -> Any:
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

    def guard_settings(self) -> Any:
        """The guard thresholds of the sync engine."""
        from scim_pipeline.sync.guards import GuardSettings

        return GuardSettings(
            max_deletes=self.max_deletes,
            max_delete_share=self.max_delete_share,
            allow_mass_changes=self.allow_mass_changes,
        )


def _env(name: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def shards_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> int:
    raw = _env("SCIM_SHARDS", env)
    if raw is None:
        return 16
    try:
        shards = int(raw)
    except ValueError:
        raise ConfigurationError(f"SCIM_SHARDS={raw!r} is not a whole number") from None
    if not 1 <= shards <= 1024:
        raise ConfigurationError(f"SCIM_SHARDS={shards} is out of range (1 to 1024)")
    return shards


def roster_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> RosterSourceResource:
    return RosterSourceResource(roster=_env("SCIM_ROSTER", env), mapping=_env("SCIM_MAPPING", env))


def state_from_env(
    env: dict[str, str] | os._Environ[str] = os.environ,
) -> ProvisioningStateResource:
    return ProvisioningStateResource(state_url=_env("SCIM_STATE_URL", env))


def policy_from_env(env: dict[str, str] | os._Environ[str] = os.environ) -> SyncPolicyResource:
    deprovision = _env("SCIM_DEPROVISION", env) or "disable"
    if deprovision not in ("disable", "delete"):
        raise ConfigurationError(f"SCIM_DEPROVISION={deprovision!r}: use 'disable' or 'delete'")
    max_deletes_raw = _env("SCIM_MAX_DELETES", env)
    max_deletes: int | None = None
    if max_deletes_raw is not None:
        try:
            max_deletes = int(max_deletes_raw)
        except ValueError:
            raise ConfigurationError(f"SCIM_MAX_DELETES={max_deletes_raw!r} is not a whole number") from None
        if max_deletes < 0:
            raise ConfigurationError(f"SCIM_MAX_DELETES={max_deletes} must be 0 or more")
    allow = (_env("SCIM_ALLOW_MASS_CHANGES", env) or "").lower() in ("1", "true", "yes")
    return SyncPolicyResource(
        deprovision=deprovision,  # type: ignore[arg-type]
        max_deletes=max_deletes,
        allow_mass_changes=allow,
    )
