"""The Okta source against a local Okta Management API over loopback: Link paging, rate limits, lastUpdated."""

from __future__ import annotations

import datetime
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scim_pipeline.sources import RosterError
from scim_pipeline.sources._incremental import MemoryWatermarkStore
from scim_pipeline.sources.okta import OktaRosterSource, OktaSettings, okta_active
from scim_pipeline.sync.plan.mapping import build_roster
from tests.sources.loopback import serve

API_TOKEN = "okta-api-token-value"
OLD = "2024-01-01T00:00:00.000Z"
_FILTER = re.compile(r'lastUpdated gt "([^"]+)"(?: or lastMembershipUpdated gt "([^"]+)")?')


def now_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class OktaOrg:
    """A local Okta org.

    The shapes follow the Okta Management API reference (developer.okta.com/docs/api): "List all users" / "List all
    groups" / "List all member users" (JSON arrays; `id`, `status`, `lastUpdated`, `profile.login` …; groups with
    `profile.name` and `lastMembershipUpdated`), pagination by the `Link: <…?after=…>; rel="next"` header, the
    `filter=lastUpdated gt "…"` expression, `Authorization: SSWS <token>`, and "Rate limits" (`X-Rate-Limit-Limit`,
    `-Remaining`, `-Reset` as epoch seconds; 429 once the window is used up). Deprovisioned users are left out of
    an unfiltered user list, as Okta does.
    """

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    limit_per_window: int = 1000
    served_429: int = 0
    requests: int = 0
    origin: str = ""
    _window: tuple[int, int] = (0, 0)  # (window end epoch second, requests in it)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/users", self.list_users),
                Route("/api/v1/groups", self.list_groups),
                Route("/api/v1/groups/{gid}/users", self.list_members),
            ]
        )

    def touch_user(self, uid: str, **changes: Any) -> None:
        user = self.users[uid]
        user.update({k: v for k, v in changes.items() if k == "status"})
        user["profile"].update({k: v for k, v in changes.items() if k != "status"})
        user["lastUpdated"] = now_stamp()

    def set_members(self, gid: str, members: list[str]) -> None:
        self.members[gid] = members
        self.groups[gid]["lastMembershipUpdated"] = now_stamp()

    def _rate_headers(self) -> tuple[dict[str, str], bool]:
        with self._lock:
            second = math.floor(time.time()) + 1
            end, used = self._window
            if second > end:
                end, used = second, 0
            used += 1
            self._window = (end, used)
            remaining = max(0, self.limit_per_window - used)
            headers = {
                "X-Rate-Limit-Limit": str(self.limit_per_window),
                "X-Rate-Limit-Remaining": str(remaining),
                "X-Rate-Limit-Reset": str(end),
            }
            return headers, used > self.limit_per_window

    def _answer(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        self.requests += 1
        headers, exceeded = self._rate_headers()
        if exceeded:
            self.served_429 += 1
            return JSONResponse({"errorCode": "E0000047", "errorSummary": "API call exceeded rate limit"}, 429, headers)
        if request.headers.get("authorization") != f"SSWS {API_TOKEN}":
            return JSONResponse({"errorCode": "E0000011", "errorSummary": "Invalid token provided"}, 401, headers)
        limit = int(request.query_params.get("limit", "200"))
        after = request.query_params.get("after")
        start = next((i + 1 for i, item in enumerate(items) if item["id"] == after), 0) if after else 0
        page = items[start : start + limit]
        if start + limit < len(items):
            query = {k: v for k, v in request.query_params.items() if k != "after"}
            query["after"] = page[-1]["id"]
            headers["Link"] = f'<{self.origin}{request.url.path}?{urlencode(query)}>; rel="next"'
        return JSONResponse(page, headers=headers)

    def _since(self, request: Request) -> str | None:
        expression = request.query_params.get("filter")
        if expression is None:
            return None
        match = _FILTER.search(expression)
        assert match is not None, expression
        return match.group(1)

    async def list_users(self, request: Request) -> JSONResponse:
        since = self._since(request)
        users = [
            user
            for user in self.users.values()
            if (user["lastUpdated"] > since if since else user["status"] != "DEPROVISIONED")
        ]
        return self._answer(request, users)

    async def list_groups(self, request: Request) -> JSONResponse:
        since = self._since(request)
        groups = [
            group
            for group in self.groups.values()
            if since is None or group["lastUpdated"] > since or group["lastMembershipUpdated"] > since
        ]
        return self._answer(request, groups)

    async def list_members(self, request: Request) -> JSONResponse:
        return self._answer(request, [self.users[uid] for uid in self.members[request.path_params["gid"]]])


def seeded_org(users: int = 120, groups: int = 4) -> OktaOrg:
    org = OktaOrg()
    for i in range(users):
        uid = f"00u{i:06d}"
        org.users[uid] = {
            "id": uid,
            "status": "SUSPENDED" if i == 5 else "ACTIVE",
            "lastUpdated": OLD,
            "profile": {
                "login": f"person{i}@example.com",
                "email": f"person{i}@example.com",
                "firstName": f"First{i}",
                "lastName": f"Last{i}",
                "displayName": f"Person {i}",
                "department": "Sales",
                "title": "Rep",
                "employeeNumber": str(1000 + i),
                "managerId": "00u000000" if i else None,
            },
        }
    for g in range(groups):
        gid = f"00g{g:06d}"
        org.groups[gid] = {
            "id": gid,
            "lastUpdated": OLD,
            "lastMembershipUpdated": OLD,
            "profile": {"name": f"team-{g}"},
        }
        org.members[gid] = [f"00u{g * 10 + k:06d}" for k in range(10)]
    return org


@pytest.fixture
def okta() -> Iterator[OktaOrg]:
    org = seeded_org()
    with serve(org.app()) as origin:
        org.origin = origin
        yield org


def source_for(okta: OktaOrg, tmp_path: Path | None = None, **overrides: Any) -> OktaRosterSource:
    settings = OktaSettings.model_validate(
        {"url": okta.origin, "token": SecretStr(API_TOKEN), "page_size": 50, **overrides}
    )
    if tmp_path is None:
        return OktaRosterSource(settings=settings)
    return OktaRosterSource(settings=settings, cache_dir=tmp_path, watermarks=MemoryWatermarkStore())


def test_full_read_follows_the_link_header(okta: OktaOrg) -> None:
    roster, report = source_for(okta).read_with_report()

    users = roster.users.frame.set_index("user_name")
    assert len(users) == 120
    assert users.loc["person7@example.com", "manager"] == "person0@example.com"
    assert users.loc["person7@example.com", "employee_number"] == "1007"
    assert users.loc["person5@example.com", "active"] == "false"  # SUSPENDED
    assert roster.memberships is not None
    assert len(roster.memberships.frame) == 40
    assert report.pages == 3 + 1 + 4  # users in pages of 50, groups, members
    assert build_roster(roster, shards=1).rejected.empty


def test_an_exhausted_rate_limit_waits_for_the_reset_instead_of_hitting_429(okta: OktaOrg) -> None:
    okta.limit_per_window = 3

    roster, report = source_for(okta).read_with_report()

    assert len(roster.users.frame) == 120
    assert okta.served_429 == 0
    assert report.throttled >= 2
    assert report.requests == okta.requests == 8


def test_a_429_waits_until_the_reset(okta: OktaOrg) -> None:
    okta.limit_per_window = 100
    okta._window = (math.floor(time.time()) + 1, 100)  # another client used this window up

    roster, report = source_for(okta).read_with_report()

    assert len(roster.users.frame) == 120
    assert okta.served_429 == 1
    assert report.throttled == 1
    assert report.requests == okta.requests == 9  # the refused one, then the eight pages


def test_an_incremental_read_asks_for_what_changed_since_the_watermark(okta: OktaOrg, tmp_path: Path) -> None:
    source = source_for(okta, tmp_path)
    source.read()
    okta.touch_user("00u000003", title="Manager")
    okta.touch_user("00u000004", status="DEPROVISIONED")
    okta.set_members("00g000001", ["00u000011", "00u000099"])

    roster, report = source.read_with_report()

    assert report.mode == "incremental"
    assert report.entries_fetched == 2 + 1 + 2  # two users, one group, its two members
    users = roster.users.frame.set_index("user_name")
    assert len(users) == 120
    assert users.loc["person3@example.com", "title"] == "Manager"
    assert users.loc["person4@example.com", "active"] == "false"
    assert roster.memberships is not None
    team1 = set(roster.memberships.frame.query("group_name == 'team-1'")["user_name"])
    assert team1 == {"person11@example.com", "person99@example.com"}
    assert len(roster.memberships.frame) == 32


def test_a_refused_token_names_the_setting_and_not_the_token(okta: OktaOrg) -> None:
    source = source_for(okta, token=SecretStr("not-the-token-0815"))

    with pytest.raises(RosterError, match="SCIM_OKTA_TOKEN") as caught:
        source.read()

    assert "not-the-token-0815" not in str(caught.value)
    assert "Invalid token" not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "active"),
    [
        ("ACTIVE", "true"),
        ("PASSWORD_EXPIRED", "true"),
        ("SUSPENDED", "false"),
        ("DEPROVISIONED", "false"),
        ("STAGED", "false"),
    ],
)
def test_okta_statuses_map_to_active(status: str, active: str) -> None:
    assert okta_active(status) == active


def test_settings_from_the_environment() -> None:
    settings = OktaSettings.from_env(
        {"SCIM_OKTA_URL": "https://example.okta.com/", "SCIM_OKTA_TOKEN": API_TOKEN, "SCIM_OKTA_AUTH": "bearer"}
    )

    assert settings.url == "https://example.okta.com"
    assert settings.auth == "bearer"
    assert API_TOKEN not in repr(settings)
