"""Two independent SCIM server implementations from the registries — scim2-server and django-scim2 — over real
loopback HTTP, each made to misbehave by a small ASGI middleware in front of it (tests/scim/loopback.py):

(a) every PATCH of a user refused (501): updates land by PUT, and the server's stored user shows them;
(b) filter operators refused (400 invalidFilter to ``eq`` and ``ew``): a create whose answer is lost after the server
    stored it is still adopted, with no duplicate;
(c) a listing that floods (totalResults 1,000,000,000, fresh users on every page): it stops within a minute, with
    bounded memory and an error naming the paging and the setting.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from scim_pipeline.scim import PaginationError, ScimClient
from scim_pipeline.scim.target_quirks import PatchForm, PatchKind

from . import django_target
from .loopback import LoopbackScimServer
from .mock_service import loopback_settings, user_payload


@dataclass
class Target:
    name: str
    server: LoopbackScimServer
    stored: Callable[[], list[dict[str, Any]]]
    """The users as the server stores them, read from its storage (not over HTTP), as userName/givenName/…"""


def _scim2_server_users(server: LoopbackScimServer) -> list[dict[str, Any]]:
    return [
        {
            "userName": user.get("userName"),
            "givenName": (user.get("name") or {}).get("givenName"),
            "familyName": (user.get("name") or {}).get("familyName"),
        }
        for user in server.users()
    ]


def _django_users() -> list[dict[str, Any]]:
    return [
        {"userName": u["username"], "givenName": u["first_name"], "familyName": u["last_name"]}
        for u in django_target.stored_users()
    ]


@pytest.fixture(params=["scim2-server", "django-scim2"])
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "scim2-server":
        with LoopbackScimServer(page_cap=50) as server:
            yield Target(request.param, server, lambda: _scim2_server_users(server))
    else:
        with LoopbackScimServer(app=django_target.app()) as server:
            yield Target(request.param, server, _django_users)


def _person(user_name: str, given: str, family: str) -> dict[str, Any]:
    body = user_payload(user_name)
    email = f"{uuid.uuid4().hex[:12]}@example.test"
    body.update(name={"givenName": given, "familyName": family}, emails=[{"value": email, "primary": True}])
    return body


def test_every_user_patch_refused_updates_land_by_put(target: Target) -> None:
    target.server.faults.refuse_user_patch = 501
    names = [f"put-{uuid.uuid4().hex[:8]}-{i}@example.test" for i in range(2)]

    async def run() -> tuple[list[str | None], frozenset[PatchForm], int]:
        async with ScimClient(loopback_settings(target.server)) as client:
            ids = [(await client.create("Users", _person(name, "Old", "Name"))).scim_id for name in names]
            for scim_id in ids:
                assert scim_id is not None
                await client.patch(
                    "Users",
                    scim_id,
                    [
                        {"op": "replace", "path": "name.givenName", "value": "New"},
                        {"op": "replace", "path": "name.familyName", "value": "Surname"},
                    ],
                )
            return ids, client.quirks.refused_forms("Users", PatchKind.ATTRIBUTES), client.stats.replaced_by_put

    _, refused, replaced = asyncio.run(run())
    stored = {user["userName"]: user for user in target.stored() if user["userName"] in names}
    assert {name: (u["givenName"], u["familyName"]) for name, u in stored.items()} == dict.fromkeys(
        names, ("New", "Surname")
    )
    assert refused == {PatchForm.ATTRIBUTE_PATH}
    assert replaced == 2
    # The first update found PATCH refused; the second went straight to GET and PUT.
    assert target.server.scim_request_count("PATCH") == 1
    assert target.server.scim_request_count("PUT") == 2


def test_refused_operators_a_lost_create_is_still_adopted_without_a_duplicate(target: Target) -> None:
    target.server.faults.refused_filter_operators = frozenset({"eq", "ew"})
    target.server.faults.drop_after_apply = 1
    name = f'o"neil.{uuid.uuid4().hex[:8]}@example.test'

    async def run() -> tuple[bool, str | None, frozenset[str]]:
        async with ScimClient(loopback_settings(target.server)) as client:
            result = await client.create("Users", _person(name, "Owen", "Neil"))
            return result.adopted, result.scim_id, client.quirks.refused_operators("Users", "userName")

    adopted, scim_id, refused = asyncio.run(run())
    assert adopted
    assert scim_id is not None
    assert [user["userName"] for user in target.stored()].count(name) == 1
    assert target.server.scim_request_count("POST") == 1
    assert refused == {"ew"}  # the quoted name was looked up by its safe ending first, then by co
    assert 400 in target.server.injected


def test_a_flooding_listing_stops_within_a_minute_with_bounded_memory(target: Target) -> None:
    target.server.faults.flood_users = True

    async def run() -> str:
        async with ScimClient(loopback_settings(target.server)) as client:
            with pytest.raises(PaginationError) as raised:
                await client.search("Users")
            return str(raised.value)

    tracemalloc.start()
    started = time.monotonic()
    try:
        message = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 60
    assert peak < 50 * 1024 * 1024
    assert "totalResults=1000000000" in message
    assert "SCIM_MAX_PAGES" in message
    assert target.server.scim_request_count("GET") == 1
