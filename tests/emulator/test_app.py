"""The HTTP surface of the emulator: OAuth, Delinea's capability matrix, discovery, knobs, request log."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from scim_pipeline.emulator import ConnectionDropped, EmulatorApp, EmulatorConfig, create_app

from .conftest import TOKEN_PATH, connect, create_group, create_user, fetch_token, patch_body

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


def plain_client(app: EmulatorApp) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


# -- OAuth ------------------------------------------------------------------------------------


async def test_token_endpoint_issues_a_bearer_token(app: EmulatorApp) -> None:
    async with plain_client(app) as http:
        response = await fetch_token(http)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("client_id", "secret"), [("scim-demo", "wrong-secret"), ("nobody", "demo-secret"), ("scim-demo", "")]
)
async def test_token_with_wrong_credentials_answers_401_invalid_client(
    app: EmulatorApp, client_id: str, secret: str
) -> None:
    async with plain_client(app) as http:
        response = await fetch_token(http, client_id, secret)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert secret == "" or secret not in response.text


async def test_token_accepts_client_credentials_in_basic_auth(app: EmulatorApp) -> None:
    async with plain_client(app) as http:
        response = await http.post(
            TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=("scim-demo", "demo-secret")
        )
    assert response.status_code == 200


async def test_token_refuses_other_grant_types(app: EmulatorApp) -> None:
    async with plain_client(app) as http:
        response = await http.post(
            TOKEN_PATH,
            data={"grant_type": "password", "client_id": "scim-demo", "client_secret": "demo-secret"},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "unsupported_grant_type"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic c2NpbS1kZW1vOmRlbW8tc2VjcmV0"])
async def test_scim_request_without_a_valid_token_answers_401(app: EmulatorApp, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with plain_client(app) as http:
        response = await http.get("/scim/v2/Users", headers=headers)
    assert response.status_code == 401
    assert response.json()["schemas"] == [ERROR_SCHEMA]
    assert "Bearer" in response.headers["www-authenticate"]


@pytest.mark.parametrize("config", [EmulatorConfig(token_lifetime_s=0.2)])
async def test_token_expires_after_its_lifetime(scim: httpx.AsyncClient) -> None:
    assert (await scim.get("Users")).status_code == 200
    await asyncio.sleep(0.3)
    response = await scim.get("Users")
    assert response.status_code == 401
    assert response.json()["detail"] == "the access token has expired"


async def test_token_of_another_emulator_is_refused(scim: httpx.AsyncClient) -> None:
    other = create_app(EmulatorConfig())
    try:
        async with plain_client(other) as http:
            response = await http.get("/scim/v2/Users", headers={"Authorization": scim.headers["Authorization"]})
        assert response.status_code == 401
    finally:
        other.emulator.close()


# -- capability matrix ------------------------------------------------------------------------


async def test_group_delete_answers_405_with_a_scim_error(scim: httpx.AsyncClient) -> None:
    group = await create_group(scim, "Admins")
    response = await scim.delete(f"Groups/{group['id']}")
    assert response.status_code == 405
    assert response.json()["schemas"] == [ERROR_SCHEMA]
    assert response.json()["status"] == "405"
    assert "DELETE" not in response.headers["allow"]
    assert (await scim.get(f"Groups/{group['id']}")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "PrivilegedData"),
        ("PUT", "PrivilegedData/x"),
        ("DELETE", "PrivilegedData/x"),
        ("PUT", "Containers/x"),
        ("PATCH", "Containers/x"),
        ("DELETE", "Containers/x"),
        ("GET", "ContainerPermissions/x"),
        ("PUT", "ContainerPermissions/x"),
        ("PATCH", "ContainerPermissions/x"),
        ("PUT", "Users"),
        ("DELETE", "Users"),
    ],
)
async def test_operations_delinea_does_not_offer_answer_405(scim: httpx.AsyncClient, method: str, path: str) -> None:
    response = await scim.request(method, path, json={})
    assert response.status_code == 405
    assert response.json()["schemas"] == [ERROR_SCHEMA]


async def test_there_is_no_bulk_endpoint(scim: httpx.AsyncClient) -> None:
    response = await scim.post("Bulk", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"]})
    assert response.status_code == 404
    assert response.json()["schemas"] == [ERROR_SCHEMA]


async def test_unknown_resource_is_404(scim: httpx.AsyncClient) -> None:
    response = await scim.get("Users/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 404
    assert response.json()["status"] == "404"


# -- discovery ---------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [EmulatorConfig(page_size_cap=50)])
async def test_service_provider_config_announces_delinea_capabilities(scim: httpx.AsyncClient) -> None:
    config = (await scim.get("ServiceProviderConfig")).json()
    assert config["bulk"] == {"supported": False}
    assert config["patch"] == {"supported": True}
    assert config["filter"] == {"supported": True, "maxResults": 50}
    assert config["authenticationSchemes"][0]["type"] == "oauthbearertoken"


async def test_resource_types_list_the_five_delinea_endpoints(scim: httpx.AsyncClient) -> None:
    listing = (await scim.get("ResourceTypes")).json()
    endpoints = {resource_type["endpoint"] for resource_type in listing["Resources"]}
    assert endpoints == {"/Users", "/Groups", "/Containers", "/ContainerPermissions", "/PrivilegedData"}
    assert (
        (await scim.get("ResourceTypes/User")).json()["schemaExtensions"][0]["schema"].endswith("enterprise:2.0:User")
    )


async def test_schemas_describe_every_resource_type(scim: httpx.AsyncClient) -> None:
    ids = {schema["id"] for schema in (await scim.get("Schemas")).json()["Resources"]}
    assert "urn:ietf:params:scim:schemas:core:2.0:User" in ids
    assert "urn:ietf:params:scim:schemas:pam:1.0:ContainerPermission" in ids
    one = await scim.get("Schemas/urn:ietf:params:scim:schemas:core:2.0:Group")
    assert one.json()["name"] == "Group"


# -- resources -------------------------------------------------------------------------------------


async def test_created_user_carries_id_and_meta(scim: httpx.AsyncClient) -> None:
    response = await scim.post(
        "Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "ada@example.org",
            "password": "x",
        },
    )
    user = response.json()
    assert response.status_code == 201
    assert len(user["id"]) == 36
    assert user["active"] is True
    assert "password" not in user
    meta = user["meta"]
    assert meta["resourceType"] == "User"
    assert meta["version"] == 'W/"1"'
    assert meta["created"] == meta["lastModified"]
    assert meta["location"] == f"http://testserver/scim/v2/Users/{user['id']}"
    assert response.headers["location"] == meta["location"]
    assert response.headers["etag"] == 'W/"1"'


async def test_user_without_user_name_is_refused(scim: httpx.AsyncClient) -> None:
    response = await scim.post("Users", json={"displayName": "Nobody"})
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"


async def test_malformed_json_is_invalid_syntax(scim: httpx.AsyncClient) -> None:
    response = await scim.post("Users", content=b"{not json", headers={"Content-Type": "application/scim+json"})
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidSyntax"


async def test_duplicate_user_name_differing_only_in_case_answers_409(scim: httpx.AsyncClient) -> None:
    await create_user(scim, "Ada.Lovelace@example.org")
    response = await scim.post("Users", json={"userName": "ada.lovelace@EXAMPLE.org"})
    assert response.status_code == 409
    assert response.json()["scimType"] == "uniqueness"
    assert (await scim.get("Users")).json()["totalResults"] == 1


async def test_duplicate_group_display_name_answers_409(scim: httpx.AsyncClient) -> None:
    await create_group(scim, "Vault Admins")
    response = await scim.post("Groups", json={"displayName": "vault admins"})
    assert response.status_code == 409
    assert response.json()["scimType"] == "uniqueness"


async def test_renaming_a_user_onto_another_user_name_answers_409(scim: httpx.AsyncClient) -> None:
    await create_user(scim, "ada")
    grace = await create_user(scim, "grace")
    response = await scim.patch(
        f"Users/{grace['id']}", json=patch_body({"op": "replace", "path": "userName", "value": "ADA"})
    )
    assert response.status_code == 409


async def test_group_members_must_be_existing_users(scim: httpx.AsyncClient) -> None:
    response = await scim.post("Groups", json={"displayName": "Ghosts", "members": [{"value": "no-such-user"}]})
    assert response.status_code == 400
    assert response.json()["scimType"] == "invalidValue"


async def test_get_group_can_exclude_members(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins", [ada["id"]])
    assert [member["value"] for member in group["members"]] == [ada["id"]]
    response = await scim.get(f"Groups/{group['id']}", params={"excludedAttributes": "members"})
    assert "members" not in response.json()
    assert response.json()["displayName"] == "Admins"


async def test_attributes_parameter_projects_get_and_list(scim: httpx.AsyncClient) -> None:
    ada = await create_user(
        scim,
        "ada",
        name={"givenName": "Ada", "familyName": "Lovelace"},
        **{"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D", "costCenter": "1"}},
    )
    one = (
        await scim.get(
            f"Users/{ada['id']}",
            params={
                "attributes": "name.givenName,urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"
            },
        )
    ).json()
    assert one == {
        "schemas": ada["schemas"],
        "id": ada["id"],
        "name": {"givenName": "Ada"},
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {"department": "R&D"},
    }
    listing = (await scim.get("Users", params={"attributes": "userName"})).json()
    assert listing["Resources"] == [{"schemas": ada["schemas"], "id": ada["id"], "userName": "ada"}]


async def test_user_lists_its_groups(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins", [ada["id"]])
    user = (await scim.get(f"Users/{ada['id']}")).json()
    assert [(g["value"], g["display"]) for g in user["groups"]] == [(group["id"], "Admins")]
    without = (await scim.get(f"Users/{ada['id']}", params={"excludedAttributes": "groups"})).json()
    assert "groups" not in without


async def test_active_false_is_a_soft_delete(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    response = await scim.patch(
        f"Users/{ada['id']}", json=patch_body({"op": "replace", "path": "active", "value": False})
    )
    assert response.status_code == 200
    assert response.json()["active"] is False
    listing = (await scim.get("Users", params={"filter": 'userName eq "ada"'})).json()
    assert listing["Resources"][0]["active"] is False


async def test_put_replaces_the_user_and_without_active_suspends_it(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada", title="Countess", displayName="Ada")
    response = await scim.put(f"Users/{ada['id']}", json={"userName": "ada", "displayName": "Ada L."})
    user = response.json()
    assert response.status_code == 200
    assert "title" not in user
    assert user["displayName"] == "Ada L."
    assert user["active"] is False
    assert user["meta"]["version"] == 'W/"2"'


async def test_put_of_a_group_replaces_its_members(scim: httpx.AsyncClient) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins", [ada["id"]])
    response = await scim.put(
        f"Groups/{group['id']}", json={"displayName": "Admins", "members": [{"value": grace["id"]}]}
    )
    assert [member["value"] for member in response.json()["members"]] == [grace["id"]]


async def test_if_match_with_a_stale_version_answers_412(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    body = patch_body({"op": "replace", "path": "title", "value": "x"})
    assert (await scim.patch(f"Users/{ada['id']}", json=body, headers={"If-Match": 'W/"1"'})).status_code == 200
    assert (await scim.patch(f"Users/{ada['id']}", json=body, headers={"If-Match": 'W/"1"'})).status_code == 412


# -- delete cascade ---------------------------------------------------------------------------------


async def test_user_delete_removes_it_from_groups_permissions_and_privileged_data(
    app: EmulatorApp, scim: httpx.AsyncClient
) -> None:
    ada, grace = await create_user(scim, "ada"), await create_user(scim, "grace")
    group = await create_group(scim, "Admins", [ada["id"], grace["id"]])
    container = (await scim.post("Containers", json={"name": "Payroll"})).json()
    permission = await scim.post(
        "ContainerPermissions",
        json={"container": {"value": container["id"]}, "user": {"value": ada["id"]}, "rights": ["Owner"]},
    )
    assert permission.status_code == 201
    secret = app.emulator.store.insert(
        "PrivilegedData", {"name": "db-root", "container": {"value": container["id"]}, "user": {"value": ada["id"]}}
    )

    assert (await scim.delete(f"Users/{ada['id']}")).status_code == 204

    assert (await scim.get(f"Users/{ada['id']}")).status_code == 404
    assert (await scim.delete(f"Users/{ada['id']}")).status_code == 404
    members = (await scim.get(f"Groups/{group['id']}")).json()["members"]
    assert [member["value"] for member in members] == [grace["id"]]
    permissions = (
        await scim.get("ContainerPermissions", params={"filter": f'container.value eq "{container["id"]}"'})
    ).json()
    assert permissions["totalResults"] == 0
    assert "user" not in (await scim.get(f"PrivilegedData/{secret['id']}")).json()


# -- containers, permissions, privileged data -------------------------------------------------------


async def test_container_permission_names_exactly_one_existing_principal(scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    group = await create_group(scim, "Admins")
    container = (await scim.post("Containers", json={"name": "Payroll"})).json()
    both = {"container": {"value": container["id"]}, "user": {"value": ada["id"]}, "group": {"value": group["id"]}}
    assert (await scim.post("ContainerPermissions", json=both)).status_code == 400
    ghost = {"container": {"value": container["id"]}, "user": {"value": "nobody"}}
    assert (await scim.post("ContainerPermissions", json=ghost)).status_code == 400
    good = {"container": {"value": container["id"]}, "group": {"value": group["id"]}, "rights": ["View"]}
    created = await scim.post("ContainerPermissions", json=good)
    assert created.status_code == 201
    assert created.json()["group"]["display"] == "Admins"
    assert (await scim.post("ContainerPermissions", json=good)).status_code == 409
    assert (await scim.delete(f"ContainerPermissions/{created.json()['id']}")).status_code == 204


async def test_privileged_data_is_moved_between_containers_not_created(
    app: EmulatorApp, scim: httpx.AsyncClient
) -> None:
    payroll = (await scim.post("Containers", json={"name": "Payroll"})).json()
    secret = app.emulator.store.insert("PrivilegedData", {"name": "db-root", "privilegedData": {"value": "42"}})
    response = await scim.patch(
        f"PrivilegedData/{secret['id']}",
        json=patch_body({"op": "add", "path": "container", "value": {"value": payroll["id"]}}),
    )
    assert response.json()["container"]["display"] == "Payroll"
    found = (await scim.get("PrivilegedData", params={"filter": 'privilegedData.value eq "42"'})).json()
    assert found["totalResults"] == 1
    response = await scim.patch(
        f"PrivilegedData/{secret['id']}", json=patch_body({"op": "remove", "path": "container"})
    )
    assert "container" not in response.json()


# -- pagination --------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [EmulatorConfig(page_size_cap=5)])
async def test_page_size_cap_truncates_count(scim: httpx.AsyncClient) -> None:
    for index in range(12):
        await create_user(scim, f"user{index:02d}")
    page = (await scim.get("Users", params={"startIndex": 1, "count": 50})).json()
    assert page["totalResults"] == 12
    assert page["itemsPerPage"] == 5
    assert len(page["Resources"]) == 5
    last = (await scim.get("Users", params={"startIndex": 11, "count": 5})).json()
    assert [user["userName"] for user in last["Resources"]] == ["user10", "user11"]
    assert last["startIndex"] == 11
    default = (await scim.get("Users")).json()
    assert default["itemsPerPage"] == 5
    empty = (await scim.get("Users", params={"count": 0})).json()
    assert (empty["totalResults"], empty["Resources"]) == (12, [])


async def test_pages_follow_creation_order_without_overlap(scim: httpx.AsyncClient) -> None:
    names = [f"u{index}" for index in range(7)]
    for name in names:
        await create_user(scim, name)
    seen = []
    for start in (1, 4, 7):
        page = (await scim.get("Users", params={"startIndex": start, "count": 3})).json()
        seen += [user["userName"] for user in page["Resources"]]
    assert seen == names


# -- knobs ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", [EmulatorConfig(rate_limit_per_s=3, retry_after_s=2)])
async def test_rate_limit_answers_429_with_retry_after(scim: httpx.AsyncClient) -> None:
    statuses = [(await scim.get("Users")) for _ in range(10)]
    limited = [response for response in statuses if response.status_code == 429]
    assert limited
    assert limited[0].headers["retry-after"] == "2"
    assert limited[0].json()["status"] == "429"
    assert sum(response.status_code == 200 for response in statuses) <= 4


@pytest.mark.parametrize("config", [EmulatorConfig(fault_rate=1.0, seed=7)])
async def test_faults_answer_500_or_503_before_writing(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    responses = [await scim.post("Users", json={"userName": f"u{index}"}) for index in range(20)]
    assert {response.status_code for response in responses} == {500, 503}
    assert all(response.headers["retry-after"] == "1" for response in responses if response.status_code == 503)
    assert app.emulator.store.count("Users") == 0


@pytest.mark.parametrize("config", [EmulatorConfig(unavailable_rate=1.0, fault_scope=("POST Groups", "Users"))])
async def test_a_fault_scope_limits_the_storm_to_the_calls_it_names(scim: httpx.AsyncClient) -> None:
    assert (await scim.post("Groups", json={"displayName": "Admins"})).status_code == 503
    assert (await scim.get("Users")).status_code == 503
    assert (await scim.get("Groups")).status_code == 200
    assert (await scim.post("Containers", json={"name": "Vault"})).status_code == 201


def test_a_fault_scope_entry_that_names_no_call_is_refused() -> None:
    with pytest.raises(ValueError, match="fault_scope entry 'FETCH Users'"):
        EmulatorConfig(fault_scope=("FETCH Users",))


@pytest.mark.parametrize("config", [EmulatorConfig(drop_rate=1.0, seed=3)])
async def test_dropped_requests_raise_and_half_are_written(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    for index in range(20):
        with pytest.raises(ConnectionDropped):
            await scim.post("Users", json={"userName": f"u{index}"})
    notes = [record.note for record in app.emulator.requests if record.path.endswith("/Users")]
    written = sum(note.startswith("dropped after write") for note in notes)
    assert 0 < written < 20
    assert app.emulator.store.count("Users") == written
    assert all(record.status == 0 for record in app.emulator.requests if record.path.endswith("/Users"))


@pytest.mark.parametrize("config", [EmulatorConfig(latency_ms=30)])
async def test_latency_is_added_to_each_request(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    await scim.get("Users")
    assert app.emulator.requests[-1].latency_ms >= 30


@pytest.mark.parametrize("config", [EmulatorConfig(latency_jitter_ms=20, seed=1)])
async def test_jitter_is_repeatable_for_a_seed(config: EmulatorConfig) -> None:
    first, second = create_app(config), create_app(config)
    try:
        delays = [[app.emulator.latency_s() for _ in range(5)] for app in (first, second)]
    finally:
        first.emulator.close()
        second.emulator.close()
    assert delays[0] == delays[1]
    assert all(0 <= delay <= 0.02 for delay in delays[0])


# -- observability ------------------------------------------------------------------------------------


async def test_every_request_is_recorded_without_credentials(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    await scim.get("Users", params={"filter": 'userName eq "ada"'})
    await scim.delete("Groups/x")
    records = app.emulator.requests
    assert [(r.method, r.path, r.status) for r in records] == [
        ("POST", "/identity/api/oauth2/token/xpmplatform", 200),
        ("GET", "/scim/v2/Users", 200),
        ("DELETE", "/scim/v2/Groups/x", 405),
    ]
    assert "userName" in httpx.QueryParams(records[1].query)["filter"]
    async with plain_client(app) as http:
        listed = (await http.get("/emulator/requests")).json()
        assert [record["status"] for record in listed] == [200, 200, 405]
        counters = (await http.get("/emulator/counters")).json()
        assert counters == {"token": {"200": 1}, "Users": {"200": 1}, "Groups": {"405": 1}}
        assert (await http.delete("/emulator/requests")).status_code == 204
        assert (await http.get("/emulator/requests")).json() == []
    assert app.emulator.counters == {}


async def test_request_log_file_gets_one_json_line_per_request(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    app = create_app(EmulatorConfig(request_log_path=log))
    try:
        async with connect(app) as scim:
            await create_user(scim, "ada")
            token = scim.headers["Authorization"].split()[1]
    finally:
        app.emulator.close()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("POST", "/identity/api/oauth2/token/xpmplatform", 200),
        ("POST", "/scim/v2/Users", 201),
    ]
    assert token not in log.read_text()
    assert "demo-secret" not in log.read_text()


async def test_state_endpoint_dumps_every_resource(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    ada = await create_user(scim, "ada")
    await create_group(scim, "Admins", [ada["id"]])
    async with plain_client(app) as http:
        state = (await http.get("/emulator/state")).json()
    assert [user["userName"] for user in state["Users"]] == ["ada"]
    assert [member["value"] for member in state["Groups"][0]["members"]] == [ada["id"]]
    assert state["Containers"] == []


async def test_concurrent_creates_of_the_same_name_make_one_user(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    responses = await asyncio.gather(
        *(scim.post("Users", json={"userName": f"same{index % 5}"}) for index in range(40))
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses.count(201) == 5
    assert statuses.count(409) == 35
    assert app.emulator.store.count("Users") == 5


async def test_forced_misbehaviours_hit_the_next_requests_in_order(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    app.emulator.force("none", "503", "429")
    statuses = [(await scim.get("Users")).status_code for _ in range(4)]
    assert statuses == [200, 503, 429, 200]
    with pytest.raises(ValueError, match="unknown"):
        app.emulator.force("teapot")


async def test_a_trailing_slash_names_the_same_endpoint(scim: httpx.AsyncClient) -> None:
    await create_user(scim, "ada")
    assert (await scim.get("Users/")).json()["totalResults"] == 1
    assert (await scim.get("Users//x")).status_code == 404


@pytest.mark.parametrize("config", [EmulatorConfig(request_log_size=3)])
async def test_the_request_log_keeps_only_the_latest_requests(app: EmulatorApp, scim: httpx.AsyncClient) -> None:
    for index in range(5):
        await scim.get("Users", params={"startIndex": index + 1})
    assert [record.query for record in app.emulator.requests] == ["startIndex=3", "startIndex=4", "startIndex=5"]
    assert app.emulator.counters["Users"][200] == 5


async def test_a_json_token_request_is_an_invalid_request(app: EmulatorApp) -> None:
    async with plain_client(app) as http:
        response = await http.post(
            TOKEN_PATH,
            json={"grant_type": "client_credentials", "client_id": "scim-demo", "client_secret": "demo-secret"},
        )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_container_permissions_are_listed_only_with_a_filter(scim: httpx.AsyncClient) -> None:
    container = (await scim.post("Containers", json={"name": "Payroll"})).json()
    unfiltered = await scim.get("ContainerPermissions")
    assert unfiltered.status_code == 400
    assert unfiltered.json()["scimType"] == "invalidFilter"
    by_container = await scim.get("ContainerPermissions", params={"filter": f'container.value eq "{container["id"]}"'})
    assert by_container.status_code == 200
    refused = await scim.get("ContainerPermissions", params={"filter": f'container.value co "{container["id"]}"'})
    assert refused.status_code == 400


@pytest.mark.parametrize("config", [EmulatorConfig(owner_rights=False)])
async def test_without_owner_rights_pam_requests_answer_403_but_a_container_can_be_created(
    scim: httpx.AsyncClient,
) -> None:
    created = await scim.post("Containers", json={"name": "Payroll"})
    assert created.status_code == 201
    container_id = created.json()["id"]
    for method, path, params in (
        ("GET", "Containers", {"filter": 'name eq "Payroll"'}),
        ("GET", f"Containers/{container_id}", None),
        ("GET", "ContainerPermissions", {"filter": f'container.value eq "{container_id}"'}),
        ("POST", "ContainerPermissions", None),
        ("GET", "PrivilegedData", None),
    ):
        answer = await scim.request(method, path, params=params, json={} if method == "POST" else None)
        assert answer.status_code == 403, (method, path)
        assert "Owner-level rights" in answer.json()["detail"]
    assert (await scim.get("Users")).status_code == 200
