"""PATCH (RFC 7644 §3.5.2) as the emulator applies it, members included."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from scim_pipeline.emulator import EmulatorApp, ScimError
from scim_pipeline.emulator._patch import apply_patch
from scim_pipeline.emulator._profile import RULES

from .conftest import ENTERPRISE, create_group, create_user, member_values, patch_body


async def patch(scim: httpx.AsyncClient, path: str, *operations: dict[str, Any]) -> httpx.Response:
    return await scim.patch(path, json=patch_body(*operations))


# -- group members ----------------------------------------------------------------------------------


async def test_add_members_then_remove_one_by_value_filter(scim: httpx.AsyncClient) -> None:
    ada, grace, alan = [await create_user(scim, name) for name in ("ada", "grace", "alan")]
    group = await create_group(scim, "Admins")
    added = await patch(
        scim,
        f"Groups/{group['id']}",
        {"op": "add", "path": "members", "value": [{"value": ada["id"]}, {"value": grace["id"]}]},
        {"op": "add", "path": "members", "value": [{"value": alan["id"]}, {"value": ada["id"]}]},
    )
    assert added.status_code == 204
    assert added.headers["etag"] == 'W/"2"'
    after_add = (await scim.get(f"Groups/{group['id']}")).json()
    assert sorted(member_values(after_add)) == sorted([ada["id"], grace["id"], alan["id"]])
    removed = await patch(scim, f"Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{grace["id"]}"]'})
    assert removed.status_code == 204
    assert sorted(member_values((await scim.get(f"Groups/{group['id']}")).json())) == sorted([ada["id"], alan["id"]])


async def test_removing_a_member_that_is_not_there_answers_no_target(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins")
    response = await patch(scim, f"Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{ada["id"]}"]'})
    assert response.status_code == 400
    assert response.json()["scimType"] == "noTarget"


async def test_remove_members_with_a_value_list_as_entra_sends_it(scim: httpx.AsyncClient) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins", [ada["id"], grace["id"]])
    response = await patch(
        scim, f"Groups/{group['id']}", {"op": "Remove", "path": "members", "value": [{"value": ada["id"]}]}
    )
    assert response.status_code == 204
    assert member_values((await scim.get(f"Groups/{group['id']}")).json()) == [grace["id"]]


async def test_remove_members_without_filter_removes_all(scim: httpx.AsyncClient) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins", [ada["id"], grace["id"]])
    assert (await patch(scim, f"Groups/{group['id']}", {"op": "remove", "path": "members"})).status_code == 204
    assert member_values((await scim.get(f"Groups/{group['id']}")).json()) == []


async def test_replace_members(scim: httpx.AsyncClient) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins", [ada["id"]])
    response = await patch(
        scim, f"Groups/{group['id']}", {"op": "replace", "path": "members", "value": [{"value": grace["id"]}]}
    )
    assert response.status_code == 204
    assert member_values((await scim.get(f"Groups/{group['id']}")).json()) == [grace["id"]]


async def test_adding_an_unknown_user_changes_nothing(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins")
    response = await patch(
        scim,
        f"Groups/{group['id']}",
        {"op": "replace", "path": "displayName", "value": "Renamed"},
        {"op": "add", "path": "members", "value": [{"value": ada["id"]}, {"value": "not-a-user"}]},
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"
    unchanged = (await scim.get(f"Groups/{group['id']}")).json()
    assert (unchanged["displayName"], unchanged["members"], unchanged["meta"]["version"]) == ("Admins", [], 'W/"1"')


async def test_group_patch_returns_the_group_when_attributes_are_asked(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins")
    response = await scim.patch(
        f"Groups/{group['id']}",
        params={"excludedAttributes": "members"},
        json=patch_body({"op": "add", "path": "members", "value": [{"value": ada["id"]}]}),
    )
    assert response.status_code == 200
    assert response.json()["displayName"] == "Admins"
    assert "members" not in response.json()


async def test_a_large_group_is_edited_without_rewriting_it(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    store = app.emulator.store
    user_ids = [store.create("Users", {"userName": f"user{index}"})["id"] for index in range(2000)]
    group = store.create("Groups", {"displayName": "Everyone", "members": [{"value": i} for i in user_ids]})
    response = await patch(
        scim, f"Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{user_ids[0]}"]'}
    )
    assert response.status_code == 204
    assert len(store.member_ids(group["id"])) == 1999


# -- user attributes --------------------------------------------------------------------------------


async def test_patch_paths_into_complex_multi_valued_and_extension_attributes(scim: httpx.AsyncClient) -> None:
    ada = await create_user(
        scim,
        "ada",
        name={"givenName": "Ada", "familyName": "Byron"},
        emails=[{"type": "work", "value": "ada@old.example"}, {"type": "home", "value": "ada@home.example"}],
    )
    response = await patch(
        scim,
        f"Users/{ada['id']}",
        {"op": "replace", "path": "name.familyName", "value": "Lovelace"},
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "ada@new.example"},
        {"op": "add", "path": f"{ENTERPRISE}:department", "value": "Analytical Engines"},
        {"op": "add", "path": "title", "value": "Countess"},
    )
    assert response.status_code == 200
    user = response.json()
    assert user["name"] == {"givenName": "Ada", "familyName": "Lovelace"}
    assert user["emails"] == [
        {"type": "work", "value": "ada@new.example"},
        {"type": "home", "value": "ada@home.example"},
    ]
    assert user[ENTERPRISE] == {"department": "Analytical Engines"}
    assert ENTERPRISE in user["schemas"]
    assert user["title"] == "Countess"
    assert user["meta"]["version"] == 'W/"2"'
    assert user["meta"]["lastModified"] >= user["meta"]["created"]


async def test_patch_without_path_merges_the_value_object(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada", name={"givenName": "Ada"})
    response = await patch(
        scim,
        f"Users/{ada['id']}",
        {
            "op": "replace",
            "value": {
                "displayName": "Ada Lovelace",
                "name.familyName": "Lovelace",
                "active": "False",
                ENTERPRISE: {"employeeNumber": "1815"},
            },
        },
    )
    user = response.json()
    assert (user["displayName"], user["name"], user["active"]) == (
        "Ada Lovelace",
        {"givenName": "Ada", "familyName": "Lovelace"},
        False,
    )
    assert user[ENTERPRISE] == {"employeeNumber": "1815"}


async def test_remove_attributes_and_extension_values(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada", title="Countess", **{ENTERPRISE: {"department": "R&D"}})
    response = await patch(
        scim,
        f"Users/{ada['id']}",
        {"op": "remove", "path": "title"},
        {"op": "remove", "path": f"{ENTERPRISE}:department"},
    )
    user = response.json()
    assert "title" not in user
    assert ENTERPRISE not in user
    assert user["schemas"] == ["urn:ietf:params:scim:schemas:core:2.0:User"]


async def test_add_through_a_value_filter_creates_the_missing_value(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    response = await patch(
        scim, f"Users/{ada['id']}", {"op": "add", "path": 'emails[type eq "work"].value', "value": "a@x.org"}
    )
    assert response.json()["emails"] == [{"type": "work", "value": "a@x.org"}]


async def test_replace_through_a_value_filter_that_matches_nothing_is_no_target(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    response = await patch(
        scim, f"Users/{ada['id']}", {"op": "replace", "path": 'emails[type eq "work"].value', "value": "a@x.org"}
    )
    assert response.status_code == 400
    assert response.json()["scimType"] == "noTarget"


@pytest.mark.parametrize(
    ("operation", "scim_type"),
    [
        ({"op": "remove", "path": "userName"}, "invalidValue"),
        ({"op": "replace", "path": "id", "value": "x"}, "mutability"),
        ({"op": "replace", "path": "meta.created", "value": "x"}, "mutability"),
        ({"op": "remove"}, "noTarget"),
        ({"op": "move", "path": "title"}, "invalidSyntax"),
        ({"op": "replace", "path": "emails[type eq", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "urn:example:unknown:1.0:User:x", "value": "x"}, "invalidPath"),
        ({"op": "add", "path": "members", "value": [{"value": "x"}]}, "invalidPath"),
        ({"op": "replace", "path": "active", "value": "maybe"}, "invalidValue"),
    ],
)
async def test_bad_operations_are_refused(scim: httpx.AsyncClient, operation: dict[str, Any], scim_type: str) -> None:
    ada = await create_user(scim, "ada")
    response = await patch(scim, f"Users/{ada['id']}", operation)
    assert response.status_code == 400
    assert response.json()["scimType"] == scim_type


@pytest.mark.parametrize(
    "body",
    [
        {"Operations": [{"op": "add", "path": "title", "value": "x"}]},
        {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": []},
        ["not", "an", "object"],
    ],
)
async def test_malformed_patch_bodies_are_invalid_syntax(scim: httpx.AsyncClient, body: Any) -> None:
    ada = await create_user(scim, "ada")
    response = await scim.patch(f"Users/{ada['id']}", json=body)
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"


def test_apply_patch_removes_the_values_a_filter_selects() -> None:
    body = {"userName": "ada", "emails": [{"type": "work", "value": "a@x.org"}, {"type": "home", "value": "h"}]}
    patched = apply_patch(
        RULES["Users"],
        body,
        [{"op": "remove", "path": 'emails[type eq "work"]'}, {"op": "add", "path": "nickName", "value": "A"}],
        None,
    )
    assert patched == {"userName": "ada", "emails": [{"type": "home", "value": "h"}], "nickName": "A"}


def test_apply_patch_remove_with_unmatched_value_filter_is_no_target() -> None:
    with pytest.raises(ScimError) as refused:
        apply_patch(RULES["Users"], {"userName": "ada"}, [{"op": "remove", "path": 'emails[type eq "home"]'}], None)
    assert refused.value.scim_type == "noTarget"


def test_apply_patch_add_appends_to_multi_valued_attributes() -> None:
    patched = apply_patch(
        RULES["Users"],
        {"userName": "ada", "emails": [{"value": "a@x.org"}]},
        [{"op": "add", "path": "emails", "value": [{"value": "a@x.org"}, {"value": "b@x.org"}]}],
        None,
    )
    assert patched["emails"] == [{"value": "a@x.org"}, {"value": "b@x.org"}]


async def test_member_display_is_kept_as_the_client_gave_it(scim: httpx.AsyncClient) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins")
    await patch(
        scim,
        f"Groups/{group['id']}",
        {"op": "add", "path": "members", "value": [{"value": ada["id"], "display": "Ada L."}, {"value": grace["id"]}]},
    )
    members = {member["value"]: member for member in (await scim.get(f"Groups/{group['id']}")).json()["members"]}
    assert members[ada["id"]]["display"] == "Ada L."
    assert "display" not in members[grace["id"]]
    assert members[grace["id"]]["$ref"].endswith(f"/Users/{grace['id']}")


async def test_patch_can_remove_active(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    removed = await patch(scim, f"Users/{ada['id']}", {"op": "remove", "path": "active"})
    assert "active" not in removed.json()
