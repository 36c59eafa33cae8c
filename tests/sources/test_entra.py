"""The Entra ID source against a local Microsoft Graph over loopback: paging, throttling, delta."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sources import RosterError
from scim_pipeline.sources._incremental import MemoryWatermarkStore
from scim_pipeline.sources.entra import EntraRosterSource, EntraSettings
from scim_pipeline.sync.plan.mapping import build_roster
from tests.sources.loopback import serve

TENANT = "contoso.example"
CLIENT_ID = "app-1"
CLIENT_SECRET = "graph-client-secret-value"
TOKEN = "graph-access-token-value"


def user_id(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def group_id(g: int) -> str:
    return f"10000000-0000-0000-0000-{g:012d}"


@dataclass
class GraphTenant:
    """A local Microsoft Graph for one tenant.

    The shapes follow the Microsoft Graph v1.0 reference (learn.microsoft.com/graph): the token endpoint of
    "Get access without a user" (client credentials, `access_token` / `expires_in`), "List users" / "List groups" /
    "List group members" (`value`, `@odata.nextLink` carrying a `$skiptoken`, members typed by `@odata.type`),
    "Throttling" (429 with `Retry-After` seconds), and "Get incremental changes for users / groups" (delta query:
    `$deltatoken=latest`, `@odata.deltaLink`, `@removed` with a `reason`, `members@delta`, only the changed
    properties of an updated object).
    """

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    members: dict[str, list[str]] = field(default_factory=dict)
    log: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (kind, id, change)
    throttle_once: set[str] = field(default_factory=set)
    requests: list[str] = field(default_factory=list)
    origin: str = ""
    token_generation: int = 0
    tokens_issued: int = 0
    expire_tokens_after: int | None = None  # API requests until the current token expires
    delta_tokens_expired: bool = False

    # -- changes the tests make -----------------------------------------------------------------------------------

    def update_user(self, uid: str, **properties: Any) -> None:
        self.users[uid].update(properties)
        self.log.append(("user", uid, properties))

    def delete_user(self, uid: str) -> None:
        del self.users[uid]
        for members in self.members.values():
            if uid in members:
                members.remove(uid)
        self.log.append(("user", uid, {"@removed": {"reason": "changed"}}))

    def add_member(self, gid: str, uid: str) -> None:
        self.members[gid].append(uid)
        self.log.append(("group", gid, {"members@delta": [{"@odata.type": "#microsoft.graph.user", "id": uid}]}))

    def remove_member(self, gid: str, uid: str) -> None:
        self.members[gid].remove(uid)
        removed = {"@odata.type": "#microsoft.graph.user", "id": uid, "@removed": {"reason": "deleted"}}
        self.log.append(("group", gid, {"members@delta": [removed]}))

    # -- the API --------------------------------------------------------------------------------------------------

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/{tenant}/oauth2/v2.0/token", self.token, methods=["POST"]),
                Route("/v1.0/users/delta", self.delta),
                Route("/v1.0/groups/delta", self.delta),
                Route("/v1.0/users", self.list_users),
                Route("/v1.0/groups", self.list_groups),
                Route("/v1.0/groups/{gid}/members", self.list_members),
            ]
        )

    async def token(self, request: Request) -> JSONResponse:
        form = {key: values[0] for key, values in parse_qs((await request.body()).decode()).items()}
        if request.path_params["tenant"] != TENANT or form.get("client_secret") != CLIENT_SECRET:
            return JSONResponse(
                {
                    "error": "invalid_client",
                    "error_description": f"AADSTS7000215: Invalid client secret provided: {form.get('client_secret')}",
                },
                status_code=401,
            )
        assert form.get("grant_type") == "client_credentials"
        assert form.get("scope") == f"{self.origin}/.default"
        self.tokens_issued += 1
        return JSONResponse(
            {"token_type": "Bearer", "expires_in": 3599, "access_token": f"{TOKEN}-{self.token_generation}"}
        )

    def _guard(self, request: Request) -> JSONResponse | None:
        self.requests.append(request.url.path)
        if self.expire_tokens_after is not None and len(self.requests) % self.expire_tokens_after == 0:
            self.token_generation += 1
        if request.headers.get("authorization") != f"Bearer {TOKEN}-{self.token_generation}":
            return JSONResponse({"error": {"code": "InvalidAuthenticationToken"}}, status_code=401)
        key = f"{request.url.path}?{request.query_params.get('$skiptoken', '')}"
        if key in self.throttle_once:
            self.throttle_once.discard(key)
            return JSONResponse({"error": {"code": "TooManyRequests"}}, status_code=429, headers={"Retry-After": "1"})
        return None

    def _page(self, request: Request, items: list[dict[str, Any]]) -> JSONResponse:
        top = int(request.query_params.get("$top", "100"))
        start = int(request.query_params.get("$skiptoken", "0"))
        body: dict[str, Any] = {"value": items[start : start + top]}
        if start + top < len(items):
            query = {k: v for k, v in request.query_params.items() if k != "$skiptoken"}
            body["@odata.nextLink"] = (
                f"{self.origin}{request.url.path}?{urlencode({**query, '$skiptoken': start + top})}"
            )
        return JSONResponse(body)

    async def list_users(self, request: Request) -> JSONResponse:
        if (refused := self._guard(request)) is not None:
            return refused
        selected = request.query_params["$select"].split(",")
        assert request.query_params["$expand"] == "manager($select=id)"
        items = []
        for uid, user in self.users.items():
            item = {key: user.get(key) for key in selected}
            item["id"] = uid
            if user.get("manager"):
                item["manager"] = {"@odata.type": "#microsoft.graph.user", "id": user["manager"]}
            items.append(item)
        return self._page(request, items)

    async def list_groups(self, request: Request) -> JSONResponse:
        if (refused := self._guard(request)) is not None:
            return refused
        items = [{"id": gid, "displayName": group["displayName"]} for gid, group in self.groups.items()]
        return self._page(request, items)

    async def list_members(self, request: Request) -> JSONResponse:
        if (refused := self._guard(request)) is not None:
            return refused
        items = [
            {"@odata.type": "#microsoft.graph.group" if mid in self.groups else "#microsoft.graph.user", "id": mid}
            for mid in self.members[request.path_params["gid"]]
        ]
        return self._page(request, items)

    async def delta(self, request: Request) -> JSONResponse:
        if (refused := self._guard(request)) is not None:
            return refused
        kind = "user" if request.url.path.startswith("/v1.0/users") else "group"
        path = request.url.path
        token = request.query_params.get("$deltatoken")
        if token == "latest":
            return JSONResponse({"value": [], "@odata.deltaLink": f"{self.origin}{path}?$deltatoken={len(self.log)}"})
        assert token is not None, "initial delta rounds are not used by the source"
        if self.delta_tokens_expired:
            return JSONResponse({"error": {"code": "resyncRequired"}}, status_code=410)
        assert token.isdigit()
        changes: dict[str, dict[str, Any]] = {}
        for change_kind, oid, change in self.log[int(token) :]:
            if change_kind != kind:
                continue
            merged = changes.setdefault(oid, {"id": oid})
            for key, value in change.items():
                if key == "members@delta":
                    merged.setdefault(key, []).extend(value)
                else:
                    merged[key] = value
        items = list(changes.values())
        top, start = 2, int(request.query_params.get("$skiptoken", "0"))  # small pages: the paging is exercised
        body: dict[str, Any] = {"value": items[start : start + top]}
        if start + top < len(items):
            body["@odata.nextLink"] = f"{self.origin}{path}?$deltatoken={token}&$skiptoken={start + top}"
        else:
            body["@odata.deltaLink"] = f"{self.origin}{path}?$deltatoken={len(self.log)}"
        return JSONResponse(body)


def seeded_tenant(users: int = 250, groups: int = 6) -> GraphTenant:
    tenant = GraphTenant()
    for i in range(users):
        tenant.users[user_id(i)] = {
            "userPrincipalName": f"user{i}@contoso.example",
            "givenName": f"Given{i}",
            "surname": f"Family{i}",
            "displayName": f"User {i}",
            "mail": f"user{i}@contoso.example",
            "accountEnabled": i % 50 != 49,
            "department": f"D{i % 5}",
            "jobTitle": "Analyst",
            "employeeId": f"E{i:05d}",
            "manager": user_id(0) if i else None,
        }
    for g in range(groups):
        tenant.groups[group_id(g)] = {"displayName": f"Group {g}"}
        tenant.members[group_id(g)] = [user_id(g * 10 + k) for k in range(10)]
    tenant.members[group_id(0)].append(group_id(1))  # a nested group
    return tenant


@pytest.fixture
def graph() -> Iterator[GraphTenant]:
    tenant = seeded_tenant()
    with serve(tenant.app()) as origin:
        tenant.origin = origin
        yield tenant


def source_for(graph: GraphTenant, tmp_path: Path | None = None, **overrides: Any) -> EntraRosterSource:
    settings = EntraSettings.model_validate(
        {
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": SecretStr(CLIENT_SECRET),
            "authority_url": graph.origin,
            "graph_url": graph.origin,
            "page_size": 100,
            **overrides,
        }
    )
    if tmp_path is None:
        return EntraRosterSource(settings=settings)
    return EntraRosterSource(settings=settings, cache_dir=tmp_path, watermarks=MemoryWatermarkStore())


def test_full_read_pages_users_groups_and_members(graph: GraphTenant) -> None:
    roster, report = source_for(graph).read_with_report()

    users = roster.users.frame.set_index("user_name")
    assert len(users) == 250
    user7 = users.loc["user7@contoso.example"]
    assert user7["external_id"] == user_id(7)
    assert user7["family_name"] == "Family7"
    assert user7["title"] == "Analyst"
    assert user7["employee_number"] == "E00007"
    assert user7["manager"] == "user0@contoso.example"
    assert users.loc["user49@contoso.example", "active"] == "false"
    assert roster.memberships is not None
    group0 = roster.memberships.frame.query("group_name == 'Group 0'")["user_name"]
    assert len(group0) == 20  # its 10 users and the 10 of the nested Group 1
    assert report.pages == 2 + 3 + 1 + 6  # two delta links, users in pages of 100, groups, members
    assert build_roster(roster, shards=1).rejected.empty


def test_a_429_is_retried_after_its_retry_after(graph: GraphTenant) -> None:
    graph.throttle_once.add("/v1.0/users?100")

    roster, report = source_for(graph).read_with_report()

    assert len(roster.users.frame) == 250
    assert report.throttled == 1
    assert report.waited_s == 1.0
    assert graph.requests.count("/v1.0/users") == 4


def test_a_token_expiring_during_a_read_is_renewed_once(graph: GraphTenant) -> None:
    graph.expire_tokens_after = 5

    roster, report = source_for(graph).read_with_report()

    assert len(roster.users.frame) == 250
    assert graph.tokens_issued == 1 + len(graph.requests) // 5
    assert report.pages == 12


def test_an_incremental_read_follows_the_delta_links(graph: GraphTenant, tmp_path: Path) -> None:
    source = source_for(graph, tmp_path)
    _, full = source.read_with_report()
    graph.update_user(user_id(3), jobTitle="Lead")
    graph.update_user(user_id(4), accountEnabled=False)
    graph.update_user(user_id(5), department=None)
    graph.delete_user(user_id(6))
    graph.add_member(group_id(2), user_id(200))
    graph.remove_member(group_id(2), user_id(20))

    roster, report = source.read_with_report()

    assert report.mode == "incremental"
    assert report.entries_fetched == 5  # four users, one group
    users = roster.users.frame.set_index("user_name")
    assert len(users) == 249
    assert users.loc["user3@contoso.example", "title"] == "Lead"
    assert users.loc["user3@contoso.example", "family_name"] == "Family3"  # not in the delta: kept from the cache
    assert users.loc["user4@contoso.example", "active"] == "false"
    assert users.loc["user5@contoso.example", "department"] == ""  # cleared
    assert "user6@contoso.example" not in users.index
    assert roster.memberships is not None
    group2 = set(roster.memberships.frame.query("group_name == 'Group 2'")["user_name"])
    assert "user200@contoso.example" in group2
    assert "user20@contoso.example" not in group2
    assert report.watermark_before == full.watermark_after != report.watermark_after

    _, quiet = source.read_with_report()
    assert quiet.entries_fetched == 0


def test_an_expired_delta_token_makes_the_read_full(graph: GraphTenant, tmp_path: Path) -> None:
    source = source_for(graph, tmp_path)
    source.read()
    graph.delta_tokens_expired = True

    roster, report = source.read_with_report()

    assert report.mode == "full"
    assert "410 Gone" in report.reason
    assert len(roster.users.frame) == 250


def test_a_refused_secret_names_the_settings_but_quotes_nothing_the_server_said(graph: GraphTenant) -> None:
    source = source_for(graph, client_secret=SecretStr("wrong-secret-4711"))

    with pytest.raises(RosterError, match="SCIM_ENTRA_CLIENT_SECRET") as caught:
        source.read()

    assert "wrong-secret-4711" not in str(caught.value)
    assert "AADSTS" not in str(caught.value)
    assert "invalid_client" in str(caught.value)


def test_a_paging_link_to_another_origin_is_refused() -> None:
    def graph_api(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return httpx.Response(200, json={"access_token": "t", "expires_in": 60})
        if "delta" in request.url.path:
            return httpx.Response(200, json={"value": [], "@odata.deltaLink": f"{request.url}"})
        return httpx.Response(200, json={"value": [], "@odata.nextLink": "https://attacker.example/v1.0/users"})

    settings = EntraSettings(
        tenant_id=TENANT,
        client_id=CLIENT_ID,
        client_secret=SecretStr(CLIENT_SECRET),
        authority_url="https://login.example",
    )
    source = EntraRosterSource(settings=settings, transport=httpx.MockTransport(graph_api))

    with pytest.raises(RosterError, match="another origin"):
        source.read()


def test_settings_come_from_the_environment_and_keep_the_secret_out_of_reprs() -> None:
    settings = EntraSettings.from_env(
        {
            "SCIM_ENTRA_TENANT_ID": TENANT,
            "SCIM_ENTRA_CLIENT_ID": CLIENT_ID,
            "SCIM_ENTRA_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ENTRA_FULL_READ_MAX_AGE_HOURS": "6",
        }
    )

    assert settings.graph_url == "https://graph.microsoft.com"
    assert settings.full_read.max_age_hours == 6
    assert CLIENT_SECRET not in repr(settings) + repr(EntraRosterSource(settings=settings))


def test_plain_http_is_refused_off_loopback() -> None:
    with pytest.raises(ConfigurationError, match="SCIM_ENTRA_GRAPH_URL"):
        EntraSettings.from_env(
            {
                "SCIM_ENTRA_TENANT_ID": TENANT,
                "SCIM_ENTRA_CLIENT_ID": CLIENT_ID,
                "SCIM_ENTRA_CLIENT_SECRET": CLIENT_SECRET,
                "SCIM_ENTRA_GRAPH_URL": "http://graph.example",
            }
        )
