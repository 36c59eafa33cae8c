"""Choosing the roster source from configuration: `SCIM_SOURCE=file|ldap|entra|okta|scim|sql` (default `file`).

Each kind has its own settings model read from its `SCIM_<SOURCE>_*` variables:

| kind    | settings            | variables                                                           |
|---------|---------------------|---------------------------------------------------------------------|
| `file`  | —                   | `SCIM_ROSTER` (a folder; unset = the bundled sample roster)         |
| `ldap`  | `LdapSettings`      | `SCIM_LDAP_URL`, `SCIM_LDAP_BIND_DN`, `SCIM_LDAP_BIND_PASSWORD`, …  |
| `entra` | `EntraSettings`     | `SCIM_ENTRA_TENANT_ID`, `SCIM_ENTRA_CLIENT_ID`, `…_CLIENT_SECRET`, …|
| `okta`  | `OktaSettings`      | `SCIM_OKTA_URL`, `SCIM_OKTA_TOKEN`, `SCIM_OKTA_AUTH`, …             |
| `scim`  | `ScimSourceSettings`| `SCIM_SOURCE_SCIM_URL`, `…_TOKEN_URL`, `…_CLIENT_ID`, `…_CLIENT_SECRET`|
| `sql`   | `SqlSettings`       | `SCIM_SQL_URL`, `SCIM_SQL_USERS_QUERY` / `_TABLE`, groups, memberships|

A Dagster Component instance carries its connector's settings itself (:func:`connector_values` splits them into
plain values and the names of the variables that hold the secrets; :func:`connector_source` builds the source back
in the run), so two instances can read two directories. The connectors are imported only when one is used: the
command line and the code location start without LDAP or HTTP client libraries. docs/sources.md lists every
variable.
"""

from __future__ import annotations

import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Union, get_args

from pydantic import BaseModel, SecretStr

from scim_pipeline.sample_roster import SAMPLE_ROSTER
from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources._incremental import ReportingSource, WatermarkStore
from scim_pipeline.sources.folder import FolderRosterSource

if TYPE_CHECKING:
    from scim_pipeline.sources.entra import EntraSettings
    from scim_pipeline.sources.ldap import LdapSettings
    from scim_pipeline.sources.okta import OktaSettings
    from scim_pipeline.sources.scim_source import ScimSourceSettings
    from scim_pipeline.sources.sql import SqlSettings

    SourceSettings = LdapSettings | EntraSettings | OktaSettings | ScimSourceSettings | SqlSettings

__all__ = [
    "CONNECTOR_PREFIXES",
    "SourceKind",
    "build_source",
    "connector_source",
    "connector_values",
    "settings_model",
    "source_from_env",
]

SourceKind = Literal["file", "ldap", "entra", "okta", "scim", "sql"]

CONNECTOR_PREFIXES: Final[dict[str, str]] = {
    "ldap": "SCIM_LDAP_",
    "entra": "SCIM_ENTRA_",
    "okta": "SCIM_OKTA_",
    "scim": "SCIM_SOURCE_SCIM_",
    "sql": "SCIM_SQL_",
}
"""Each connector's variable prefix."""


def settings_model(kind: str) -> type[BaseModel]:
    """The settings model of a connector kind (imported on first use)."""
    if kind == "ldap":
        from scim_pipeline.sources.ldap import LdapSettings

        return LdapSettings
    if kind == "entra":
        from scim_pipeline.sources.entra import EntraSettings

        return EntraSettings
    if kind == "okta":
        from scim_pipeline.sources.okta import OktaSettings

        return OktaSettings
    if kind == "scim":
        from scim_pipeline.sources.scim_source import ScimSourceSettings

        return ScimSourceSettings
    if kind == "sql":
        from scim_pipeline.sources.sql import SqlSettings

        return SqlSettings
    raise ConfigurationError(f"SCIM_SOURCE={kind!r} is not a connector; use one of {', '.join(CONNECTOR_PREFIXES)}")


def build_source(
    settings: SourceSettings | Path | None,
    *,
    cache_dir: Path | None = None,
    watermarks: WatermarkStore | None = None,
) -> ReportingSource:
    """The source for a settings model (a `Path` or `None` is the file source: that folder, or the sample)."""
    if settings is None or isinstance(settings, Path):
        return FolderRosterSource(settings or SAMPLE_ROSTER)
    from scim_pipeline.sources.entra import EntraRosterSource, EntraSettings
    from scim_pipeline.sources.ldap import LdapRosterSource, LdapSettings
    from scim_pipeline.sources.okta import OktaRosterSource, OktaSettings
    from scim_pipeline.sources.scim_source import ScimRosterSource, ScimSourceSettings
    from scim_pipeline.sources.sql import SqlRosterSource, SqlSettings

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
    settings = settings_model(kind).from_env(env)  # type: ignore[attr-defined]
    return build_source(settings, cache_dir=cache_dir, watermarks=watermarks)


def _secret_fields(model: type[BaseModel]) -> set[str]:
    """The fields of a settings model that hold a secret (typed ``SecretStr``)."""
    secret: set[str] = set()
    for name, info in model.model_fields.items():
        annotation = info.annotation
        options = get_args(annotation) if typing.get_origin(annotation) in (Union, types.UnionType) else (annotation,)
        if SecretStr in options:
            secret.add(name)
    return secret


def connector_values(kind: str, env: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """A connector's settings found in ``env``: its plain values by name (``url``, ``user_base``,
    ``full_read_every``, …) and, for each secret, the name of the variable that holds it — never the secret."""
    if kind not in CONNECTOR_PREFIXES:
        return {}, {}
    prefix = CONNECTOR_PREFIXES[kind]
    secrets = _secret_fields(settings_model(kind))
    values: dict[str, str] = {}
    secret_variables: dict[str, str] = {}
    for variable, value in env.items():
        if not variable.startswith(prefix) or not value.strip():
            continue
        name = variable[len(prefix) :].lower()
        if name in secrets:
            secret_variables[name] = variable
        else:
            values[name] = value
    return values, secret_variables


def connector_source(
    kind: str,
    values: Mapping[str, str],
    secret_variables: Mapping[str, str],
    *,
    cache_dir: Path,
    watermarks: WatermarkStore | None,
) -> ReportingSource:
    """The connector ``kind`` configured from its values and the variables holding its secrets (read here, in the
    process that runs the sync). A missing secret variable is named in the error, never its value."""
    prefix = CONNECTOR_PREFIXES.get(kind)
    if prefix is None:
        return source_from_env({"SCIM_SOURCE": kind}, cache_dir=cache_dir, watermarks=watermarks)
    env = {f"{prefix}{name.upper()}": value for name, value in values.items()}
    for name, variable in secret_variables.items():
        secret = os.environ.get(variable, "")
        if not secret.strip():
            raise ConfigurationError(f"{variable} is not set: it holds the {kind} source's {name}")
        env[f"{prefix}{name.upper()}"] = secret
    return source_from_env({**env, "SCIM_SOURCE": kind}, cache_dir=cache_dir, watermarks=watermarks)
