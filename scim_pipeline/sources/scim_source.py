"""Any SCIM 2.0 service provider as a roster source, read through the project's own `ScimClient`.

`/Users` and `/Groups` are read with index paging (`search`), groups with their `members`; members of type `Group`
are nested groups, flattened like LDAP's. Every read is full: SCIM has no standard change feed (a `meta.lastModified`
filter is optional and often refused). The IdP's `id` becomes the roster's `external_id`. With the emulator on both
sides, one emulator plays the IdP and another the target.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from scim_pipeline.scim import ClientStats, ConnectionSettings, ScimClient
from scim_pipeline.scim.errors import ScimPipelineError
from scim_pipeline.sources._incremental import Counters, FullReadPolicy, Snapshot, SnapshotSource
from scim_pipeline.sources._raw import RosterError
from scim_pipeline.sources._settings import env_settings

__all__ = ["ScimRosterSource", "ScimSourceSettings"]

_T = TypeVar("_T")
_ENTERPRISE: Final = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"


class ScimSourceSettings(BaseModel):
    """A SCIM service provider read as the IdP (`SCIM_SOURCE_SCIM_*`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="The SCIM base URL, e.g. https://idp.example/scim/v2.")
    token_url: str | None = Field(None, description="OAuth client-credentials token endpoint.")
    client_id: str | None = Field(None, description="OAuth client id.")
    client_secret: SecretStr | None = Field(None, description="OAuth client secret (never logged).")
    scope: str = Field("xpm.platform", description="OAuth scope asked for.")
    profile: str = Field("rfc7644", description="Service-provider profile: rfc7644 or delinea.")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs to trust instead of the system's.")
    page_size: int = Field(100, ge=1, description="`count` asked for per page.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout per request.")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """From `SCIM_SOURCE_SCIM_*`. Raises `ConfigurationError` naming the variable."""
        return env_settings(cls, env, prefix="SCIM_SOURCE_SCIM_")

    def connection(self) -> ConnectionSettings:
        """The client settings (validated there: https except on loopback, id and secret together)."""
        return ConnectionSettings(
            base_url=self.url,
            token_url=self.token_url,
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope=self.scope,
            profile=self.profile,
            ca_bundle=self.ca_bundle,
            page_size=self.page_size,
            timeout=self.timeout_s,
        )


def _primary_email(user: Mapping[str, Any]) -> str | None:
    emails = [e for e in user.get("emails") or () if isinstance(e, dict) and e.get("value")]
    chosen = next((e for e in emails if e.get("primary")), None) or next(
        (e for e in emails if e.get("type") == "work"), None
    )
    chosen = chosen or (emails[0] if emails else None)
    return str(chosen["value"]) if chosen else None


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def user_row(user: Mapping[str, Any]) -> dict[str, str | None]:
    """A SCIM User resource as a snapshot row."""
    name = user.get("name") if isinstance(user.get("name"), dict) else {}
    enterprise = user.get(_ENTERPRISE) if isinstance(user.get(_ENTERPRISE), dict) else {}
    assert isinstance(name, dict)
    assert isinstance(enterprise, dict)
    manager = enterprise.get("manager")
    return {
        "source_ref": str(user["id"]),
        "user_name": _text(user.get("userName")),
        "external_id": str(user["id"]),
        "given_name": _text(name.get("givenName")),
        "family_name": _text(name.get("familyName")),
        "display_name": _text(user.get("displayName")),
        "email": _primary_email(user),
        "active": "false" if user.get("active") is False else "true",
        "department": _text(enterprise.get("department")),
        "title": _text(user.get("title")),
        "employee_number": _text(enterprise.get("employeeNumber")),
        "manager_ref": _text(manager.get("value")) if isinstance(manager, dict) else None,
    }


@dataclass(kw_only=True)
class ScimRosterSource(SnapshotSource):
    """Reads users, groups and memberships from a SCIM service provider (see the module docstring)."""

    kind: ClassVar[str] = "scim"
    settings: ScimSourceSettings

    def __repr__(self) -> str:
        return f"ScimRosterSource({self.settings.url!r})"

    @property
    def server(self) -> str:
        return self.settings.url

    @property
    def full_read(self) -> FullReadPolicy:
        return FullReadPolicy(every_cycles=1)

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        connection = self.settings.connection()
        try:
            users, groups, stats = _run(self._fetch(connection))
        except RosterError:
            raise
        except ScimPipelineError as error:  # client errors never carry a secret or a server's text
            raise RosterError(f"reading the SCIM source {self.settings.url} failed: {error}") from None
        counters.entries += len(users) + len(groups)
        counters.requests += stats.requests + stats.token_requests
        counters.pages += stats.pages
        counters.throttled += stats.retries
        counters.waited_s += stats.retry_wait_s
        edges = [
            (str(group["id"]), str(member["value"]))
            for group in groups
            for member in group.get("members") or ()
            if isinstance(member, dict) and member.get("value")
        ]
        group_rows = [
            {
                "source_ref": str(group["id"]),
                "group_name": _text(group.get("displayName")),
                "external_id": str(group["id"]),
            }
            for group in groups
        ]
        return Snapshot.build([user_row(user) for user in users if user.get("id")], group_rows, edges), None

    async def _fetch(
        self, connection: ConnectionSettings
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], ClientStats]:
        async with ScimClient(connection) as client:
            users = await client.search("Users")
            groups = [group for group in await client.search("Groups") if group.get("id")]
            return users, groups, client.stats


def _run(work: Coroutine[Any, Any, _T]) -> _T:
    """Run the client's coroutine to completion, also when called from code that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, work).result()
