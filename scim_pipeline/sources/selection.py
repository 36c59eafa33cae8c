"""Choosing the roster source from configuration: `SCIM_SOURCE=file|ldap|entra|okta|scim|sql` (default `file`).

Each kind has its own settings model (`SOURCE_SETTINGS`) read from its `SCIM_<SOURCE>_*` variables; the same models
can be embedded in a larger settings model or a Dagster Component and handed to `build_source`.

| kind    | settings            | variables                                                           |
|---------|---------------------|---------------------------------------------------------------------|
| `file`  | —                   | `SCIM_ROSTER` (a folder; unset = the bundled sample roster)         |
| `ldap`  | `LdapSettings`      | `SCIM_LDAP_URL`, `SCIM_LDAP_BIND_DN`, `SCIM_LDAP_BIND_PASSWORD`, …  |
| `entra` | `EntraSettings`     | `SCIM_ENTRA_TENANT_ID`, `SCIM_ENTRA_CLIENT_ID`, `…_CLIENT_SECRET`, …|
| `okta`  | `OktaSettings`      | `SCIM_OKTA_URL`, `SCIM_OKTA_TOKEN`, `SCIM_OKTA_AUTH`, …             |
| `scim`  | `ScimSourceSettings`| `SCIM_SOURCE_SCIM_URL`, `…_TOKEN_URL`, `…_CLIENT_ID`, `…_CLIENT_SECRET`|
| `sql`   | `SqlSettings`       | `SCIM_SQL_URL`, `SCIM_SQL_USERS_QUERY` / `_TABLE`, groups, memberships|

docs/sources.md lists every variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final, Literal, get_args

from scim_pipeline.sample_roster import SAMPLE_ROSTER
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources._incremental import ReportingSource, WatermarkStore
from scim_pipeline.sources.entra import EntraRosterSource, EntraSettings
from scim_pipeline.sources.folder import FolderRosterSource
from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings
from scim_pipeline.sources.okta import OktaRosterSource, OktaSettings
from scim_pipeline.sources.scim_source import ScimRosterSource, ScimSourceSettings
from scim_pipeline.sources.sql import SqlRosterSource, SqlSettings

__all__ = ["SOURCE_SETTINGS", "SourceKind", "SourceSettings", "build_source", "source_from_env"]

SourceKind = Literal["file", "ldap", "entra", "okta", "scim", "sql"]

#: The settings model of each connector kind (`file` has none: its one setting is the folder).
SourceSettings = LdapSettings | EntraSettings | OktaSettings | ScimSourceSettings | SqlSettings
SOURCE_SETTINGS: Final[dict[str, type[SourceSettings]]] = {
    "ldap": LdapSettings,
    "entra": EntraSettings,
    "okta": OktaSettings,
    "scim": ScimSourceSettings,
    "sql": SqlSettings,
}


def build_source(
    settings: SourceSettings | Path | None,
    *,
    cache_dir: Path | None = None,
    watermarks: WatermarkStore | None = None,
) -> ReportingSource:
    """The source for a settings model (a `Path` or `None` is the file source: that folder, or the sample)."""
    if settings is None or isinstance(settings, Path):
        return FolderRosterSource(settings or SAMPLE_ROSTER)
    if isinstance(settings, SqlSettings):
        return SqlRosterSource(settings)
    if isinstance(settings, LdapSettings):
        return LdapRosterSource(settings=settings, cache_dir=cache_dir, watermarks=watermarks)
    if isinstance(settings, EntraSettings):
        return EntraRosterSource(settings=settings, cache_dir=cache_dir, watermarks=watermarks)
    if isinstance(settings, OktaSettings):
        return OktaRosterSource(settings=settings, cache_dir=cache_dir, watermarks=watermarks)
    if isinstance(settings, ScimSourceSettings):
        return ScimRosterSource(settings=settings)
    raise TypeError(f"no roster source for {type(settings).__name__}")  # pragma: no cover - the union is complete


def source_from_env(env: Mapping[str, str], *, cache_dir: Path, watermarks: WatermarkStore | None) -> ReportingSource:
    """The source `SCIM_SOURCE` names, configured from its variables. Raises `ConfigurationError`.

    `cache_dir` holds the last complete roster of incremental sources; `watermarks` (the state store) their
    cursors. Without a watermark store every read is full.
    """
    kind = (env.get("SCIM_SOURCE") or "file").strip().lower()
    if kind not in get_args(SourceKind):
        raise ConfigurationError(
            f"SCIM_SOURCE={kind!r} is not a roster source; use one of {', '.join(get_args(SourceKind))}"
        )
    if kind == "file":
        folder = (env.get("SCIM_ROSTER") or "").strip()
        if folder and not Path(folder).is_dir():
            raise ConfigurationError(f"SCIM_ROSTER={folder} is not a folder")
        return build_source(Path(folder) if folder else None)
    model = SOURCE_SETTINGS[kind]
    settings = model.from_env(env)
    return build_source(settings, cache_dir=cache_dir, watermarks=watermarks)
