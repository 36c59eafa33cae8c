"""The emulator's interoperability knobs: behaving like other SCIM servers so the client's handling
of them can be tested (absolute endpoints, refused PATCH forms, dropped attributes, strict-literal filters)."""

from __future__ import annotations

import httpx
import pytest

from scim_pipeline.emulator import EmulatorApp, EmulatorConfig, ResourceStore, ScimError
from scim_pipeline.emulator._filters import Condition, parse_filter
from scim_pipeline.emulator._profile import RULES

from .conftest import ENTERPRISE, create_group, create_user, patch_body

DEPARTMENT = f"{ENTERPRISE}:department"


def test_strict_literal_filters_decode_no_escape() -> None:
    rules = RULES["Users"]
    assert parse_filter(rules, 'userName eq "Zo\\u00eb"', strict_literal=True) == [
        Condition("username", "eq", "Zo\\u00eb")
    ]
    assert parse_filter(rules, 'userName eq "Zo\\u00eb"') == [Condition("username", "eq", "Zoë")]
    assert parse_filter(rules, 'userName eq "Zoë" and displayName co "Ø"', strict_literal=True) == [
        Condition("username", "eq", "Zoë"),
        Condition("displayname", "co", "Ø"),
    ]


@pytest.mark.parametrize("text", ['userName eq "a\\"b"', 'userName eq "a" and', 'userName sw "a"', "userName pr"])
def test_strict_literal_filters_cannot_carry_a_quote_and_keep_the_matrix(text: str) -> None:
    with pytest.raises(ScimError) as refused:
        parse_filter(RULES["Users"], text, strict_literal=True)
    assert (refused.value.status, refused.value.scim_type) == (400, "invalidFilter")


@pytest.mark.parametrize("config", [EmulatorConfig(strict_literal_filters=True)])
async def test_a_strict_literal_search_matches_raw_utf8_only(scim: httpx.AsyncClient) -> None:
    await create_user(scim, "Zoë")
    raw = await scim.get("Users", params={"filter": 'userName eq "zoë"'})
    escaped = await scim.get("Users", params={"filter": 'userName eq "zo\\u00eb"'})
    assert raw.json()["totalResults"] == 1
    assert escaped.json()["totalResults"] == 0


def test_dropped_attributes_are_never_stored() -> None:
    store = ResourceStore(drop_attributes=("title", DEPARTMENT, "name.middleName"))
    user = store.create(
        "Users",
        {
            "userName": "zoe",
            "title": "CTO",
            "name": {"givenName": "Zoë", "middleName": "Q"},
            ENTERPRISE: {"department": "R&D", "employeeNumber": "7"},
        },
    )
    patched = store.patch("Users", user["id"], [{"op": "replace", "path": "title", "value": "CEO"}])
    assert "title" not in user
    assert "title" not in patched
    assert user["name"] == {"givenName": "Zoë"}
    assert user[ENTERPRISE] == {"employeeNumber": "7"}


def test_a_dropped_extension_goes_as_a_whole() -> None:
    store = ResourceStore(drop_attributes=(ENTERPRISE,))
    user = store.create("Users", {"userName": "zoe", ENTERPRISE: {"department": "R&D"}})
    assert ENTERPRISE not in user
    assert user["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User"]


@pytest.mark.parametrize("config", [EmulatorConfig(drop_attributes=("title", ENTERPRISE))])
async def test_dropped_attributes_are_left_out_of_the_schemas(scim: httpx.AsyncClient) -> None:
    schemas = {s["id"]: s for s in (await scim.get("Schemas")).json()["Resources"]}
    user_types = [t for t in (await scim.get("ResourceTypes")).json()["Resources"] if t["name"] == "User"]
    core = {a["name"] for a in schemas["urn:ietf:params:scim:schemas:core:2.0:User"]["attributes"]}
    assert "title" not in core
    assert "userName" in core
    assert ENTERPRISE not in schemas
    assert user_types[0]["schemaExtensions"] == []


@pytest.mark.parametrize("config", [EmulatorConfig(absolute_endpoints=True)])
async def test_absolute_endpoints_are_announced_under_the_scim_root(scim: httpx.AsyncClient) -> None:
    endpoints = {t["name"]: t["endpoint"] for t in (await scim.get("ResourceTypes")).json()["Resources"]}
    assert endpoints["User"] == "/scim/v2/Users"
    assert endpoints["Group"] == "/scim/v2/Groups"


@pytest.mark.parametrize("config", [EmulatorConfig(refuse_attribute_path_patch=True)])
async def test_attribute_path_patch_answers_501_and_put_still_works(scim: httpx.AsyncClient, app: EmulatorApp) -> None:
    user = await create_user(scim, "zoe", title="Intern")
    refused = await scim.patch(f"Users/{user['id']}", json=patch_body({"op": "replace", "path": "title", "value": "x"}))
    replaced = await scim.put(f"Users/{user['id']}", json={**user, "title": "CTO", "active": True})
    assert refused.status_code == 501
    assert replaced.status_code == 200
    assert app.emulator.store.get("Users", user["id"])["title"] == "CTO"


@pytest.mark.parametrize("config", [EmulatorConfig(refuse_member_filter_removal=True)])
async def test_member_filter_removal_answers_501_and_a_value_list_still_works(
    scim: httpx.AsyncClient, app: EmulatorApp
) -> None:
    user = await create_user(scim, "zoe")
    group = await create_group(scim, "Team", [user["id"]])
    by_filter = patch_body({"op": "remove", "path": f'members[value eq "{user["id"]}"]'})
    by_list = patch_body({"op": "remove", "path": "members", "value": [{"value": user["id"]}]})
    assert (await scim.patch(f"Groups/{group['id']}", json=by_filter)).status_code == 501
    assert (await scim.patch(f"Groups/{group['id']}", json=by_list)).status_code == 204
    assert app.emulator.store.member_ids(group["id"]) == []


def test_a_single_string_of_dropped_attributes_is_refused() -> None:
    with pytest.raises(ValueError, match="drop_attributes"):
        EmulatorConfig(drop_attributes="title")  # type: ignore[arg-type]
