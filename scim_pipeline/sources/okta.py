"""Okta as a roster source, over the Okta Management API (httpx).

Users come from `/api/v1/users`, groups from `/api/v1/groups` and memberships from `/api/v1/groups/{id}/users`, each
paged through the `Link: <…>; rel="next"` header. Authentication is an API token (`Authorization: SSWS …`) or an
OAuth 2.0 access token with the `okta.users.read okta.groups.read` scopes (`Bearer …`). The rate-limit headers are
honoured: when `X-Rate-Limit-Remaining` reaches 0 the next request waits until `X-Rate-Limit-Reset`, and a 429
waits the same way.

Incremental reads ask for `filter=lastUpdated gt "<watermark>"` (groups: `or lastMembershipUpdated gt`) and read the
members of every changed group again; the watermark is the server's `Date` at the start of a read, less a second,
so what changes during a read is read again. Okta leaves deprovisioned users out of the default user list: a full
read drops them from the roster, an incremental read sees them with status DEPROVISIONED (`active=false`).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, ClassVar, Final, Literal, Self
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

__all__ = ["OktaRosterSource", "OktaSettings", "okta_active"]

#: Okta profile attribute -> roster column.
_PROFILE: Final = {
    "firstName": "given_name",
    "lastName": "family_name",
    "displayName": "display_name",
    "email": "email",
    "department": "department",
    "title": "title",
    "employeeNumber": "employee_number",
}
#: Statuses of a user who may sign in (or is being helped to); STAGED, SUSPENDED and DEPROVISIONED may not.
_ACTIVE_STATUSES: Final = frozenset({"ACTIVE", "PROVISIONED", "RECOVERY", "LOCKED_OUT", "PASSWORD_EXPIRED"})
_NEXT_LINK: Final = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')
_WATERMARK: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def okta_active(status: str | None) -> str:
    """`true` / `false` for an Okta user status."""
    return "true" if (status or "").upper() in _ACTIVE_STATUSES else "false"


class OktaSettings(BaseModel):
    """An Okta org read with an API token or an OAuth access token (`SCIM_OKTA_*`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(description="The org URL, e.g. https://example.okta.com.")
    token: SecretStr = Field(description="An API token (SSWS) or an OAuth 2.0 access token (never logged).")
    auth: Literal["ssws", "bearer"] = Field("ssws", description="How the token is sent: SSWS or Bearer.")
    user_name_attribute: str = Field("login", description="The profile attribute used as user_name.")
    manager_attribute: str = Field("managerId", description="The profile attribute holding the manager's user id.")
    group_filter: str | None = Field(
        None, description='An Okta filter expression for the groups read (e.g. type eq "OKTA_GROUP").'
    )
    page_size: int = Field(200, ge=1, le=1000, description="`limit`: objects per page.")
    ca_bundle: Path | None = Field(None, description="PEM file of CAs to trust instead of the system's.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout per request.")
    max_wait_s: float = Field(120.0, gt=0, description="The longest single rate-limit wait honoured.")
    full_read: FullReadPolicy = Field(default_factory=FullReadPolicy)

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        return check_base_url(value)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        """From `SCIM_OKTA_*`. Raises `ConfigurationError` naming the variable."""
        return env_settings(cls, env, prefix="SCIM_OKTA_")


def _rate_limit_pause(response: httpx.Response) -> float | None:
    """Seconds until the rate-limit window resets when this answer used the last request of it (or was a 429)."""
    remaining = response.headers.get("X-Rate-Limit-Remaining")
    reset = response.headers.get("X-Rate-Limit-Reset")
    if reset is None or not reset.isdigit() or (remaining != "0" and response.status_code != 429):
        return None
    now = _server_time(response) or datetime.datetime.now(datetime.UTC)
    return max(0.0, int(reset) - now.timestamp())


def _server_time(response: httpx.Response) -> datetime.datetime | None:
    try:
        return parsedate_to_datetime(response.headers["Date"])
    except (KeyError, TypeError, ValueError, IndexError):
        return None


@dataclass(kw_only=True)
class OktaRosterSource(SnapshotSource):
    """Reads users, groups and memberships from Okta (see the module docstring)."""

    kind: ClassVar[str] = "okta"
    settings: OktaSettings
    transport: httpx.BaseTransport | None = None

    def __repr__(self) -> str:
        return f"OktaRosterSource({self.settings.url!r})"

    @property
    def server(self) -> str:
        return self.settings.url

    @property
    def full_read(self) -> FullReadPolicy:
        return self.settings.full_read

    def _reader(self, counters: Counters) -> HttpReader:
        return HttpReader(
            "Okta",
            counters,
            ca_bundle=self.settings.ca_bundle,
            timeout_s=self.settings.timeout_s,
            max_wait_s=self.settings.max_wait_s,
            after_response=_rate_limit_pause,
            transport=self.transport,
        )

    def _headers(self) -> dict[str, str]:
        scheme = "SSWS" if self.settings.auth == "ssws" else "Bearer"
        return {"Authorization": f"{scheme} {self.settings.token.get_secret_value()}", "Accept": "application/json"}

    def _pages(
        self, http: HttpReader, path: str, params: dict[str, str], started: list[datetime.datetime]
    ) -> Iterator[list[dict[str, Any]]]:
        url: str | None = f"{self.settings.url}{path}"
        first = True
        while url is not None:
            response = http.request(
                "GET", url, params=params if first else None, headers=self._headers(), ok=(401, 403)
            )
            first = False
            if response.status_code in (401, 403):
                raise RosterError(
                    f"Okta {self.settings.url} refused SCIM_OKTA_TOKEN (HTTP {response.status_code} to {path}); "
                    "check the token, SCIM_OKTA_AUTH and the token's permissions"
                )
            if not started and (when := _server_time(response)) is not None:
                started.append(when)
            http.counters.pages += 1
            body = http.json(response)
            if not isinstance(body, list):
                raise RosterError(f"Okta answered {path} with something that is not a list")
            items = [item for item in body if isinstance(item, dict)]
            http.counters.entries += len(items)
            yield items
            match = _NEXT_LINK.search(", ".join(response.headers.get_list("Link")))
            url = http.follow(match.group(1), self.settings.url) if match else None

    def _user_row(self, user: Mapping[str, Any]) -> dict[str, str | None]:
        profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
        assert isinstance(profile, dict)

        def text(key: str) -> str | None:
            value = profile.get(key)
            return None if value is None else str(value)

        row: dict[str, str | None] = {
            "source_ref": str(user["id"]),
            "user_name": text(self.settings.user_name_attribute),
            "external_id": str(user["id"]),
            "active": okta_active(user.get("status")),
            "manager_ref": text(self.settings.manager_attribute),
        }
        row.update({column: text(key) for key, column in _PROFILE.items()})
        return row

    def _read(
        self, since: str | None, counters: Counters
    ) -> tuple[list[dict[str, str | None]], list[dict[str, str | None]], list[tuple[str, str]], str]:
        limit = str(self.settings.page_size)
        started: list[datetime.datetime] = []
        user_params = {"limit": limit}
        group_params = {"limit": limit}
        group_filter = self.settings.group_filter
        if since is not None:
            user_params["filter"] = f'lastUpdated gt "{since}"'
            changed = f'(lastUpdated gt "{since}" or lastMembershipUpdated gt "{since}")'
            group_filter = f"({group_filter}) and {changed}" if group_filter else changed
        if group_filter:
            group_params["filter"] = group_filter
        with self._reader(counters) as http:
            users = [
                self._user_row(user)
                for page in self._pages(http, "/api/v1/users", user_params, started)
                for user in page
                if user.get("id")
            ]
            groups: list[dict[str, str | None]] = [
                {
                    "source_ref": str(group["id"]),
                    "group_name": str((group.get("profile") or {}).get("name") or ""),
                    "external_id": str(group["id"]),
                }
                for page in self._pages(http, "/api/v1/groups", group_params, started)
                for group in page
                if group.get("id")
            ]
            edges = [
                (str(group["source_ref"]), str(member["id"]))
                for group in groups
                for page in self._pages(
                    http, f"/api/v1/groups/{quote(str(group['source_ref']), safe='')}/users", {"limit": limit}, started
                )
                for member in page
                if member.get("id")
            ]
        start = started[0] if started else datetime.datetime.now(datetime.UTC)
        watermark = (start - datetime.timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return users, groups, edges, watermark

    def _read_full(self, counters: Counters) -> tuple[Snapshot, str | None]:
        users, groups, edges, watermark = self._read(None, counters)
        return Snapshot.build(users, groups, edges), watermark

    def _read_changes(self, watermark: str, counters: Counters) -> tuple[Delta, str]:
        if not _WATERMARK.fullmatch(watermark):
            raise StaleWatermarkError("not a timestamp")
        users, groups, edges, after = self._read(watermark, counters)
        replaced = {str(group["source_ref"]) for group in groups}
        return Delta(users=users, groups=groups, edges=edges, edges_replaced_for=replaced), after
