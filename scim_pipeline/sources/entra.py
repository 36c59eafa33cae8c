"""Microsoft Entra ID as a roster source, over Microsoft Graph (httpx).

A full read takes a client-credentials token (`POST {authority}/{tenant}/oauth2/v2.0/token`, scope
`{graph}/.default`), then pages `/v1.0/users` (with `$select` and the manager's id through `$expand`),
`/v1.0/groups` and every group's `/v1.0/groups/{id}/members` through `@odata.nextLink`; members that are groups
are nested groups, flattened like LDAP's. Before it starts it asks `/users/delta` and `/groups/delta` for a
`$deltatoken=latest` link: the two `@odata.deltaLink`s are the watermark, so a change made during the full read is
read again by the next incremental read, which follows them and merges what changed (`@removed` entries leave the
roster; `members@delta` adds and removes memberships; properties a delta leaves out keep their cached value).
A 429 is retried after its `Retry-After`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final, Self
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from scim_pipeline.sources._http import HttpReader, check_base_url
from scim_pipeline.sources._incremental import (
    Counters,
    Delta,
    FullReadPolicy,
    Snapshot,
    SnapshotSource,
    StaleWatermarkError,
)
from scim_pipeline.sources._raw import RosterError
from scim_pipeline.sources._settings import env_settings

__all__ = ["EntraRosterSource", "EntraSettings"]

#: Graph user property -> roster column (manager comes separately).
_USER_PROPERTIES: Final = {
    "id": "external_id",
    "givenName": "given_name",
    "surname": "family_name",
    "displayName": "display_name",
    "mail": "email",
    "department": "department",
    "jobTitle": "title",
    "employeeId": "employee_number",
}
_USER_TYPE: Final = "#microsoft.graph.user"
_GROUP_TYPE: Final = "#microsoft.graph.group"


class EntraSettings(BaseModel):
    """An Entra ID tenant read through Microsoft Graph with an app registration (`SCIM_ENTRA_*`).

    The app needs the application permissions User.Read.All and GroupMember.Read.All (admin consent).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str = Field(min_length=1, description="The directory (tenant) id or a verified domain.")
    client_id: str = Field(min_length=1, description="The app registration's application (client) id.")
    client_secret: SecretStr = Field(description="The app registration's client secret (never logged).")
    authority_url: str = Field("https://login.microsoftonline.com", description="The token endpoint's origin.")
    graph_url: str = Field("https://graph.microsoft.com", description="The Microsoft Graph origin.")
    user_name_property: str = Field(
        "userPrincipalName", description="The Graph user property used as user_name (e.g. mail)."
    )
    group_filter: str | None = Field(
        None, description="An OData $filter for the groups read (e.g. securityEnabled eq true)."
    )
    page_size: int = Field(999, ge=1, le=999, description="$top: objects per page (Graph's maximum is 999).")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs to trust instead of the system's.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout per request.")
    max_wait_s: float = Field(300.0, gt=0, description="The longest single Retry-After honoured.")
    full_read: FullReadPolicy = Field(default_factory=FullReadPolicy)

    @field_validator("authority_url", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        return check_base_url(value)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """From `SCIM_ENTRA_*`. Raises `ConfigurationError` naming the variable."""
        return env_settings(cls, env, prefix="SCIM_ENTRA_")


@dataclass(kw_only=True)
class EntraRosterSource(SnapshotSource):
    """Reads users, groups and memberships from Entra ID (see the module docstring)."""

    kind: ClassVar[str] = "entra"
    settings: EntraSettings
    transport: httpx.BaseTransport | None = None

    def __repr__(self) -> str:
        return f"EntraRosterSource(tenant={self.settings.tenant_id!r})"

    @property
    def server(self) -> str:
        return f"{self.settings.graph_url} tenant {self.settings.tenant_id}"

    @property
    def full_read(self) -> FullReadPolicy:
        return self.settings.full_read

    # -- HTTP ------------------------------------------------------------------------------------------------------

    def _reader(self, counters: Counters) -> HttpReader:
        return HttpReader(
            "Microsoft Graph",
            counters,
            ca_bundle=self.settings.ca_bundle,
            timeout_s=self.settings.timeout_s,
            max_wait_s=self.settings.max_wait_s,
            transport=self.transport,
        )

    def _token(self, http: HttpReader) -> dict[str, str]:
        settings = self.settings
        url = f"{settings.authority_url}/{quote(settings.tenant_id, safe='')}/oauth2/v2.0/token"
        response = http.request(
            "POST",
            url,
            data={
                "grant_type": "client_credentials",
                "client_id": settings.client_id,
                "client_secret": settings.client_secret.get_secret_value(),
                "scope": f"{settings.graph_url}/.default",
            },
            ok=(400, 401),
        )
        body = http.json(response) if response.content else {}
        if response.status_code >= 400 or not isinstance(body, dict) or not body.get("access_token"):
            code = body.get("error") if isinstance(body, dict) else None
            safe_code = code if isinstance(code, str) and code.replace("_", "").isalpha() else "no token"
            raise RosterError(
                f"Entra ID refused the client-credentials token for SCIM_ENTRA_CLIENT_ID {settings.client_id!r} "
                f"in tenant {settings.tenant_id!r} (HTTP {response.status_code}, {safe_code}); check "
                "SCIM_ENTRA_TENANT_ID, SCIM_ENTRA_CLIENT_ID and SCIM_ENTRA_CLIENT_SECRET"
            )
        return {"Authorization": f"Bearer {body['access_token']}", "Accept": "application/json"}

    def _pages(
        self, http: HttpReader, headers: dict[str, str], url: str, params: Mapping[str, str] | None = None
    ) -> Iterator[tuple[list[dict[str, Any]], str | None]]:
        """Every page (its `value`) following `@odata.nextLink`; the last page also yields its `@odata.deltaLink`."""
        next_url: str | None = url
        first = True
        renewed = False
        while next_url is not None:
            response = http.request("GET", next_url, params=params if first else None, headers=headers, ok=(401, 410))
            if response.status_code == 410:  # a delta token past its lifetime: Graph asks for a new full round
                raise StaleWatermarkError(f"Microsoft Graph answered 410 Gone to {response.request.url.path}")
            if response.status_code == 401:
                if renewed:
                    raise RosterError(f"Microsoft Graph refused a fresh token for {response.request.url.path}")
                headers.update(self._token(http))  # the token expired during a long read: one new token
                renewed = True
                continue
            first = renewed = False
            http.counters.pages += 1
            body = http.json(response)
            if not isinstance(body, dict) or not isinstance(body.get("value"), list):
                raise RosterError(f"Microsoft Graph answered {response.request.url.path} without a value list")
            values = [item for item in body["value"] if isinstance(item, dict)]
            http.counters.entries += len(values)
            link = body.get("@odata.nextLink")
            next_url = http.follow(link, self.settings.graph_url) if isinstance(link, str) else None
            delta = body.get("@odata.deltaLink")
            yield values, (http.follow(delta, self.settings.graph_url) if isinstance(delta, str) else None)

    def _select(self) -> str:
        names = ["id", self.settings.user_name_property, "accountEnabled", *_USER_PROPERTIES]
        return ",".join(dict.fromkeys(names))

    # -- reading ---------------------------------------------------------------------------------------------------

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        graph = self.settings.graph_url
        top = str(self.settings.page_size)
        with self._reader(counters) as http:
            headers = self._token(http)
            # The delta links first: what changes while this read runs is read again by the next incremental read.
            watermark = json.dumps(
                {
                    "users": self._latest(http, headers, f"{graph}/v1.0/users/delta", f"{self._select()},manager"),
                    "groups": self._latest(http, headers, f"{graph}/v1.0/groups/delta", "displayName,members"),
                }
            )
            users = [
                self._user_row(item, full=True)
                for page, _ in self._pages(
                    http,
                    headers,
                    f"{graph}/v1.0/users",
                    {"$select": self._select(), "$expand": "manager($select=id)", "$top": top},
                )
                for item in page
            ]
            group_params = {"$select": "id,displayName", "$top": top}
            if self.settings.group_filter:
                group_params["$filter"] = self.settings.group_filter
            groups = [
                {"source_ref": str(item["id"]), "group_name": item.get("displayName"), "external_id": str(item["id"])}
                for page, _ in self._pages(http, headers, f"{graph}/v1.0/groups", group_params)
                for item in page
                if item.get("id")
            ]
            edges: list[tuple[str, str]] = []
            for group in groups:
                ref = str(group["source_ref"])
                url = f"{graph}/v1.0/groups/{quote(ref, safe='')}/members"
                for page, _ in self._pages(http, headers, url, {"$select": "id", "$top": top}):
                    edges.extend(
                        (ref, str(member["id"]))
                        for member in page
                        if member.get("id") and member.get("@odata.type", _USER_TYPE) in (_USER_TYPE, _GROUP_TYPE)
                    )
        return Snapshot.build(users, groups, edges), watermark

    def _latest(self, http: HttpReader, headers: dict[str, str], url: str, select: str) -> str:
        for _, delta_link in self._pages(http, headers, url, {"$select": select, "$deltatoken": "latest"}):
            if delta_link is not None:
                return delta_link
        raise RosterError(f"Microsoft Graph gave no @odata.deltaLink for {url.removeprefix(self.settings.graph_url)}")

    def _read_changes(self, watermark: str, counters: Counters) -> tuple[Delta, str]:
        try:
            links = json.loads(watermark)
            users_link, groups_link = str(links["users"]), str(links["groups"])
        except (ValueError, KeyError, TypeError):
            raise StaleWatermarkError("not a pair of delta links") from None
        users: list[dict[str, str | None]] = []
        groups: list[dict[str, str | None]] = []
        removed: list[str] = []
        added_edges: list[tuple[str, str]] = []
        removed_edges: list[tuple[str, str]] = []
        with self._reader(counters) as http:
            headers = self._token(http)
            http.follow(users_link, self.settings.graph_url)
            http.follow(groups_link, self.settings.graph_url)
            new_users_link = users_link
            for page, delta_link in self._pages(http, headers, users_link):
                for item in page:
                    if "@removed" in item:
                        removed.append(str(item.get("id")))
                    elif item.get("id"):
                        users.append(self._user_row(item, full=False))
                new_users_link = delta_link or new_users_link
            new_groups_link = groups_link
            for page, delta_link in self._pages(http, headers, groups_link):
                for item in page:
                    ref = str(item.get("id"))
                    if "@removed" in item:
                        removed.append(ref)
                        continue
                    group: dict[str, str | None] = {"source_ref": ref, "external_id": ref}
                    if "displayName" in item:
                        group["group_name"] = item["displayName"] or ""
                    groups.append(group)
                    for member in item.get("members@delta") or ():
                        if not isinstance(member, dict) or not member.get("id"):
                            continue
                        pair = (ref, str(member["id"]))
                        (removed_edges if "@removed" in member else added_edges).append(pair)
                new_groups_link = delta_link or new_groups_link
        delta = Delta(
            users=users,
            groups=groups,
            edges_added=added_edges,
            edges_removed=removed_edges,
            removed_refs=removed,
            partial=True,
        )
        return delta, json.dumps({"users": new_users_link, "groups": new_groups_link})

    def _user_row(self, item: Mapping[str, Any], *, full: bool) -> dict[str, str | None]:
        """A user as a snapshot row. In a delta a property left out is absent (`<NA>`, keep the cached value) while
        one cleared is `""` (no value)."""
        row: dict[str, str | None] = {"source_ref": str(item["id"])}

        def put(column: str, key: str) -> None:
            if key in item:
                value = item[key]
                row[column] = "" if value is None else str(value)
            elif full:
                row[column] = ""

        put("user_name", self.settings.user_name_property)
        for key, column in _USER_PROPERTIES.items():
            put(column, key)
        if "accountEnabled" in item:
            row["active"] = "false" if item["accountEnabled"] is False else "true"
        elif full:
            row["active"] = "true"
        manager = item.get("manager")
        if isinstance(manager, dict):
            row["manager_ref"] = str(manager.get("id") or "")
        for change in item.get("manager@delta") or ():
            if isinstance(change, dict):
                row["manager_ref"] = "" if "@removed" in change else str(change.get("id") or "")
        if full and "manager_ref" not in row:
            row["manager_ref"] = ""
        return row
