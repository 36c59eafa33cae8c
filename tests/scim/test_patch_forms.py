"""PATCH forms a target refuses fall back to another form that says the same, remembered per target:
the second call goes straight to the working form (counted in the emulator's request log)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from scim_pipeline.scim import FallbackRefused, ScimClient, ScimPreconditionFailed, ScimServerError
from scim_pipeline.scim.patch_forms import apply_operations, classify, to_form
from scim_pipeline.scim.target_quirks import PatchForm, PatchKind, TargetQuirks

from .emulated_target import ENTERPRISE, GROUP_SCHEMA, USER_SCHEMA, calls, emulated, emulator_settings
from .loopback import LoopbackScimServer
from .mock_service import MockScim, loopback_settings, mock_settings, scim_error, scim_json, user_payload

DEPARTMENT = f"{ENTERPRISE}:department"


def _remove(*ids: str) -> list[dict[str, object]]:
    return [{"op": "remove", "path": f'members[value eq "{i}"]'} for i in ids]


def test_member_removals_are_rewritten_between_the_two_forms() -> None:
    by_filter = _remove("u1", "u2")
    by_list = to_form(by_filter, PatchForm.MEMBER_VALUE_LIST)
    assert by_list == [{"op": "remove", "path": "members", "value": [{"value": "u1"}, {"value": "u2"}]}]
    assert classify(by_list) == (PatchKind.MEMBER_REMOVAL, PatchForm.MEMBER_VALUE_LIST)
    assert to_form(by_list, PatchForm.MEMBER_FILTER) == by_filter


def test_only_attribute_changes_and_member_removals_have_other_forms() -> None:
    assert classify([{"op": "replace", "path": "title", "value": "x"}]) == (
        PatchKind.ATTRIBUTES,
        PatchForm.ATTRIBUTE_PATH,
    )
    assert classify([{"op": "add", "path": "members", "value": [{"value": "u1"}]}]) is None
    assert classify([{"op": "replace", "value": {"title": "x"}}]) is None


async def test_a_refused_attribute_path_patch_becomes_a_put_and_the_next_goes_straight_to_put() -> None:
    with emulated(refuse_attribute_path_patch=True) as server:
        store = server.emulator.store
        first = store.create("Users", {"userName": "zoe", "title": "Intern", "active": True})
        second = store.create("Users", {"userName": "max", "title": "Intern", "active": True})
        operations = [
            {"op": "replace", "path": "title", "value": "Engineer"},
            {"op": "add", "path": DEPARTMENT, "value": "R&D"},
        ]
        async with ScimClient(emulator_settings(server)) as client:
            result = await client.patch("Users", first["id"], operations)
            assert calls(server) == [("PATCH", 501), ("GET", 200), ("PUT", 200)]
            await client.patch("Users", second["id"], operations)
            assert calls(server) == [("GET", 200), ("PUT", 200)]
            assert client.quirks.working_form("Users", PatchKind.ATTRIBUTES) is PatchForm.REPLACE
        assert result.resource is not None
        assert result.resource["title"] == "Engineer"
        for user in (first, second):
            stored = store.get("Users", user["id"])
            assert (stored["title"], stored[ENTERPRISE]["department"], stored["active"]) == ("Engineer", "R&D", True)


async def test_a_refused_member_filter_removal_becomes_a_value_list_and_is_remembered() -> None:
    with emulated(refuse_member_filter_removal=True) as server:
        store = server.emulator.store
        users = [store.create("Users", {"userName": f"u{i}"})["id"] for i in range(4)]
        group = store.create("Groups", {"displayName": "Team", "members": [{"value": u} for u in users]})
        async with ScimClient(emulator_settings(server)) as client:
            await client.patch("Groups", group["id"], _remove(users[0], users[1]))
            assert calls(server) == [("PATCH", 501), ("PATCH", 204)]
            await client.patch("Groups", group["id"], _remove(users[2]))
            assert calls(server) == [("PATCH", 204)]
            saved = client.quirks.to_dict()
        assert store.member_ids(group["id"]) == [users[3]]
        # The next run, given the saved quirks, goes straight to the working form too.
        async with ScimClient(emulator_settings(server), quirks=TargetQuirks.from_dict(saved)) as client:
            await client.patch("Groups", group["id"], _remove(users[3]))
        assert calls(server) == [("PATCH", 204)]
        assert store.member_ids(group["id"]) == []


async def test_removing_an_absent_member_is_already_done_in_the_form_known_to_work() -> None:
    with emulated(refuse_member_filter_removal=True) as server:
        store = server.emulator.store
        user = store.create("Users", {"userName": "u"})["id"]
        other = store.create("Users", {"userName": "v"})["id"]
        group = store.create("Groups", {"displayName": "Team", "members": [{"value": user}]})
        async with ScimClient(emulator_settings(server)) as client:
            await client.patch("Groups", group["id"], _remove(user))
            calls(server)
            result = await client.patch("Groups", group["id"], _remove(other))
        assert result.already_done
        assert calls(server) == [("PATCH", 400)]


async def test_an_absent_member_by_filter_is_already_done_and_never_retried_as_a_value_list() -> None:
    # A server that ignores the value of a value-list removal would remove every member of the group.
    with emulated() as server:
        store = server.emulator.store
        user, other = (store.create("Users", {"userName": name})["id"] for name in ("u", "v"))
        group = store.create("Groups", {"displayName": "Team", "members": [{"value": other}]})
        async with ScimClient(emulator_settings(server)) as client:
            result = await client.patch("Groups", group["id"], _remove(user))
            assert client.quirks.refused_forms("Groups", PatchKind.MEMBER_REMOVAL) == frozenset()
        assert result.already_done
        assert calls(server) == [("PATCH", 400)]
        assert store.member_ids(group["id"]) == [other]


async def test_scim2_server_refusing_value_list_removal_gets_the_filter_form(loopback: LoopbackScimServer) -> None:
    async with ScimClient(loopback_settings(loopback)) as client:
        users = [(await client.create("Users", user_payload(name))).scim_id for name in ("a", "b", "c")]
        assert all(users)
        body = {"schemas": [GROUP_SCHEMA], "displayName": "G", "members": [{"value": u} for u in users]}
        group = (await client.create("Groups", body)).scim_id
        assert group is not None
        by_list = [{"op": "remove", "path": "members", "value": [{"value": users[0]}]}]
        await client.patch("Groups", group, by_list)
        before = loopback.scim_request_count("PATCH")
        await client.patch("Groups", group, [{"op": "remove", "path": "members", "value": [{"value": users[1]}]}])
        members = (await client.get("Groups", group)).resource
        refused = client.quirks.refused_forms("Groups", PatchKind.MEMBER_REMOVAL)
    assert before == 2  # value list refused (400 invalidValue), then the filter form
    assert loopback.scim_request_count("PATCH") == 3  # the next call goes straight to the filter form
    assert members is not None
    assert [m["value"] for m in members["members"]] == [users[2]]
    assert refused == {PatchForm.MEMBER_VALUE_LIST}


async def test_a_refused_value_list_removal_falls_back_to_the_filter_form() -> None:
    bodies: list[object] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = httpx.Response(200, content=request.content).json()
        bodies.append(body["Operations"])
        if body["Operations"][0]["path"] == "members":
            return scim_error(400, "invalidPath", "a remove needs a value filter")
        return httpx.Response(204)

    service = MockScim(answer)
    by_list = [{"op": "remove", "path": "members", "value": [{"value": "u1"}]}]
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        await client.patch("Groups", "g1", by_list)
        await client.patch("Groups", "g1", by_list)
        quirks = client.quirks
    assert bodies == [by_list, _remove("u1"), _remove("u1")]
    assert quirks.refused_forms("Groups", PatchKind.MEMBER_REMOVAL) == {PatchForm.MEMBER_VALUE_LIST}


async def test_a_patch_no_form_can_say_raises_the_first_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return scim_json(
                200, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "1", "userName": "a"}
            )
        return scim_error(501, None, "not implemented")

    service = MockScim(answer)
    async with ScimClient(mock_settings(), transport=service.transport) as client:
        with pytest.raises(ScimServerError) as raised:
            await client.patch("Users", "1", [{"op": "replace", "path": "title", "value": "x"}])
    assert raised.value.status == 501
    assert [r.method for r in service.scim_requests] == ["PATCH", "GET", "PUT"]


# -- PUT when every PATCH is refused ---------------------------------------------------------------------------------


def test_operations_apply_locally_keeping_what_they_do_not_name() -> None:
    user = {
        "schemas": [USER_SCHEMA],
        "id": "1",
        "meta": {"version": 'W/"1"'},
        "userName": "zoe",
        "vendorFlag": {"keep": True},
        "emails": [{"type": "work", "value": "old@x.test", "primary": True}, {"type": "home", "value": "h@x.test"}],
    }
    body = apply_operations(
        user,
        [
            {"op": "replace", "path": 'emails[type eq "work"].value', "value": "new@x.test"},
            {"op": "add", "path": DEPARTMENT, "value": "R&D"},
            {"op": "replace", "path": "name.givenName", "value": "Zoë"},
            {"op": "remove", "path": "title"},
        ],
    )
    assert body is not None
    assert body["emails"] == [
        {"type": "work", "value": "new@x.test", "primary": True},
        {"type": "home", "value": "h@x.test"},
    ]
    assert body[ENTERPRISE] == {"department": "R&D"}
    assert ENTERPRISE in body["schemas"]
    assert (body["name"], body["vendorFlag"]) == ({"givenName": "Zoë"}, {"keep": True})
    assert "id" not in body
    assert "meta" not in body
    assert apply_operations(user, [{"op": "replace", "path": 'emails[value co "x"]', "value": "y"}]) is None


def _group_target(*, refuse: int, etag_races: int = 0) -> tuple[MockScim, dict[str, Any], list[str | None]]:
    """A target answering ``refuse`` to every PATCH, versioning the group, changed by someone else ``etag_races``
    times between our GET and our PUT."""
    group: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": "g1",
        "displayName": "Team",
        "members": [{"value": "theirs"}, {"value": "u1"}],
        "meta": {"version": 'W/"1"'},
    }
    if_matches: list[str | None] = []
    races = [etag_races]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            return scim_error(refuse, None, "PATCH is not supported")
        if request.method == "GET":
            return scim_json(200, group, {"ETag": group["meta"]["version"]})
        if request.method == "PUT":
            if_matches.append(request.headers.get("if-match"))
            if races[0] > 0:
                races[0] -= 1
                group["meta"]["version"] = f'W/"{int(group["meta"]["version"][3:-1]) + 1}"'
            if request.headers.get("if-match") != group["meta"]["version"]:
                return scim_error(412, "invalidVers", "stale")
            body = httpx.Response(200, content=request.content).json()
            group.update(body)
            group["meta"] = {"version": f'W/"{int(group["meta"]["version"][3:-1]) + 1}"'}
            return scim_json(200, group)
        return scim_error(404)

    return MockScim(answer), group, if_matches


@pytest.mark.parametrize("refuse", [501, 405])
async def test_a_group_whose_every_patch_is_refused_is_put_back_with_if_match(refuse: int) -> None:
    service, group, if_matches = _group_target(refuse=refuse)
    add = [{"op": "add", "path": "members", "value": [{"value": "u2"}, {"value": "u3"}]}]
    async with ScimClient(mock_settings(profile="rfc7644"), transport=service.transport) as client:
        await client.patch("Groups", "g1", add)
        methods = [r.method for r in service.scim_requests if "/Groups" in r.url.path]
        await client.patch("Groups", "g1", _remove("u1"))
        saved = client.quirks.to_dict()
    assert methods == ["PATCH", "GET", "PUT"]
    assert [r.method for r in service.scim_requests if "/Groups" in r.url.path][3:] == ["GET", "PUT"]
    assert [m["value"] for m in group["members"]] == ["theirs", "u2", "u3"]  # a member we do not manage kept
    assert if_matches == ['W/"1"', 'W/"2"']
    assert {"resource_type": "Groups", "kind": "membership", "working": "replace", "refused": ["patch"]} in saved[
        "patch_forms"
    ]


async def test_a_group_put_refused_412_is_read_again_a_bounded_number_of_times() -> None:
    service, group, if_matches = _group_target(refuse=501, etag_races=1)
    async with ScimClient(mock_settings(profile="rfc7644"), transport=service.transport) as client:
        await client.patch("Groups", "g1", _remove("u1"))
    assert len(if_matches) == 2
    assert [m["value"] for m in group["members"]] == ["theirs"]
    service, group, if_matches = _group_target(refuse=501, etag_races=10)
    async with ScimClient(mock_settings(profile="rfc7644", precondition_retries=2), transport=service.transport) as c:
        with pytest.raises(ScimPreconditionFailed):
            await c.patch("Groups", "g1", _remove("u1"))
    assert len(if_matches) == 3


async def test_a_group_above_the_put_cap_is_refused_naming_the_setting() -> None:
    service, _, if_matches = _group_target(refuse=501)
    settings = mock_settings(profile="rfc7644", group_put_max_members=2)
    async with ScimClient(settings, transport=service.transport) as client:
        with pytest.raises(FallbackRefused, match="SCIM_GROUP_PUT_MAX_MEMBERS=2"):
            await client.patch("Groups", "g1", [{"op": "add", "path": "members", "value": [{"value": "u9"}]}])
    assert if_matches == []
