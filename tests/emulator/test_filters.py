"""Delinea's filter matrix: what the emulator accepts, and the 400 invalidFilter for the rest."""

from __future__ import annotations

import httpx
import pytest

from scim_pipeline.emulator import ScimError
from scim_pipeline.emulator._filters import Condition, parse_filter
from scim_pipeline.emulator._profile import RULES

from .conftest import create_group, create_user


@pytest.mark.parametrize(
    "refused",
    [
        'userName eq "a" or userName eq "b"',
        'not (userName eq "a")',
        "userName pr",
        'userName sw "a"',
        'userName ew "a"',
        'userName ne "a"',
        'userName gt "a"',
        'userName le "a"',
        'id eq "2819c223"',
        'externalId eq "x"',
        'meta.lastModified gt "2011-05-13T04:42:34Z"',
        'createdDate gt "2011-05-13"',
        'emails[type eq "work"].value eq "a@example.org"',
        'emails[type eq "work" and value co "@example.org"]',
        'title eq "Boss"',
        'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "IT"',
        "userName eq 42",
        'userName eq "unterminated',
        "userName eq",
    ],
)
async def test_filters_outside_the_matrix_answer_400_invalid_filter(scim: httpx.AsyncClient, refused: str) -> None:
    response = await scim.get("Users", params={"filter": refused})
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidFilter"


async def test_unfiltered_container_permissions_list_is_refused(scim: httpx.AsyncClient) -> None:
    for params in ({}, {"filter": ""}, {"filter": "  "}):
        response = await scim.get("ContainerPermissions", params=params)
        assert response.status_code == 400
        assert response.json()["scimType"] == "invalidFilter"


async def test_user_name_eq_is_case_insensitive(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "Ada.Lovelace@example.org")
    response = await scim.get("Users", params={"filter": 'USERNAME EQ "ada.lovelace@EXAMPLE.ORG"'})
    assert [user["id"] for user in response.json()["Resources"]] == [ada["id"]]


async def test_co_and_and_combine(scim: httpx.AsyncClient) -> None:
    await create_user(scim, "ada@example.org", displayName="Ada Lovelace")
    await create_user(scim, "alan@example.org", displayName="Alan Turing")
    await create_user(scim, "grace@navy.mil", displayName="Grace Hopper")
    by_domain = (await scim.get("Users", params={"filter": 'userName co "EXAMPLE"'})).json()
    assert by_domain["totalResults"] == 2
    both = (await scim.get("Users", params={"filter": 'userName co "example" and displayName co "turing"'})).json()
    assert [user["userName"] for user in both["Resources"]] == ["alan@example.org"]
    none = (await scim.get("Users", params={"filter": 'displayName eq "ada"'})).json()
    assert none["totalResults"] == 0


async def test_filter_value_is_a_json_string_literal(scim: httpx.AsyncClient) -> None:
    tricky = 'o"brien\\x'
    await create_user(scim, tricky)
    await create_user(scim, "obrien")
    response = await scim.get("Users", params={"filter": 'userName eq "o\\"brien\\\\x"'})
    assert [user["userName"] for user in response.json()["Resources"]] == [tricky]


async def test_groups_filter_on_display_name(scim: httpx.AsyncClient) -> None:
    await create_group(scim, "Vault Admins")
    await create_group(scim, "Auditors")
    response = await scim.get("Groups", params={"filter": 'displayName eq "vault admins"'})
    assert [group["displayName"] for group in response.json()["Resources"]] == ["Vault Admins"]
    contains = await scim.get("Groups", params={"filter": 'displayName co "it"'})
    assert contains.json()["totalResults"] == 1


async def test_containers_filter_on_name(scim: httpx.AsyncClient) -> None:
    await scim.post("Containers", json={"name": "Payroll", "displayName": "Payroll secrets"})
    await scim.post("Containers", json={"name": "Infra"})
    assert (await scim.get("Containers", params={"filter": 'name eq "payroll"'})).json()["totalResults"] == 1
    assert (await scim.get("Containers", params={"filter": 'displayName co "SECRETS"'})).json()["totalResults"] == 1
    response = await scim.get("Containers", params={"filter": 'userName eq "x"'})
    assert response.json()["scimType"] == "invalidFilter"


async def test_container_permissions_filters(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada", displayName="Ada Lovelace")
    admins = await create_group(scim, "Admins")
    payroll = (await scim.post("Containers", json={"name": "Payroll"})).json()
    infra = (await scim.post("Containers", json={"name": "Infra"})).json()
    for container in (payroll, infra):
        for principal in ({"user": {"value": ada["id"]}}, {"group": {"value": admins["id"]}}):
            body = {"container": {"value": container["id"]}, **principal, "rights": ["View"]}
            assert (await scim.post("ContainerPermissions", json=body)).status_code == 201

    async def total(filter_: str) -> int:
        response = await scim.get("ContainerPermissions", params={"filter": filter_})
        assert response.status_code == 200, response.text
        return int(response.json()["totalResults"])

    assert await total(f'container.value eq "{payroll["id"]}"') == 2
    assert await total(f'user.value eq "{ada["id"]}"') == 2
    assert await total(f'container.value eq "{payroll["id"]}" and user.value eq "{ada["id"]}"') == 1
    assert await total('user.display co "lovelace"') == 2
    assert await total('group.display eq "admins"') == 2
    assert await total(f'group.value eq "{admins["id"]}"') == 2
    refused = await scim.get("ContainerPermissions", params={"filter": 'user.display sw "Ada"'})
    assert refused.json()["scimType"] == "invalidFilter"
    refused = await scim.get("ContainerPermissions", params={"filter": f'container.value co "{payroll["id"]}"'})
    assert refused.json()["scimType"] == "invalidFilter"


def test_parse_filter_flattens_and_chains() -> None:
    conditions = parse_filter(
        RULES["ContainerPermissions"], 'container.value eq "c" and (user.value eq "u" and group.display co "g")'
    )
    assert conditions == [
        Condition("container.value", "eq", "c"),
        Condition("user.value", "eq", "u"),
        Condition("group.display", "co", "g"),
    ]


def test_parse_filter_accepts_the_core_schema_urn_prefix() -> None:
    conditions = parse_filter(RULES["Users"], 'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "a"')
    assert conditions == [Condition("username", "eq", "a")]


def test_privileged_data_matrix() -> None:
    rules = RULES["PrivilegedData"]
    assert parse_filter(rules, 'privilegedData.value eq "1"') == [Condition("privilegeddata.value", "eq", "1")]
    with pytest.raises(ScimError) as refused:
        parse_filter(rules, 'privilegedData.value co "1"')
    assert refused.value.scim_type == "invalidFilter"
