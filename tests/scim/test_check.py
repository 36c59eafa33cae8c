"""The connection check: token, discovery, one allowed request per resource type, a table."""

from __future__ import annotations

from typing import Any

import httpx

from scim_pipeline.emulator import DEMO_CLIENT_SECRET, EmulatorConfig, create_app
from scim_pipeline.scim import ConnectionSettings, run_check
from scim_pipeline.scim.target_quirks import PatchForm, PatchKind, TargetQuirks

from .emulated_target import emulated, emulator_settings, scim_requests
from .loopback import CLIENT_SECRET, LoopbackScimServer
from .mock_service import (
    MOCK_SECRET,
    TOKEN_URL,
    MockScim,
    list_response,
    loopback_settings,
    mock_settings,
)


async def test_the_check_passes_against_an_rfc7644_server(loopback: LoopbackScimServer) -> None:
    report = await run_check(loopback_settings(loopback))
    assert report.passed, report.render()
    names = [row.name for row in report.rows]
    assert names[0] == "token"
    assert {"Users", "Groups"} <= set(names)
    text = report.render()
    assert "PASSED" in text
    assert "filter: yes (maxResults 50)" in text
    assert "bulk: yes" in text
    assert CLIENT_SECRET not in text
    users_probe = [q for m, p, q in loopback.scim_requests if p == "/v2/Users"]
    assert users_probe == ["startIndex=1&count=2"]


async def test_a_refused_token_is_one_failing_row_naming_the_url_and_status(
    loopback: LoopbackScimServer,
) -> None:
    loopback.refuse_tokens_with = 401
    report = await run_check(loopback_settings(loopback))
    assert not report.passed
    assert len(report.rows) == 1
    row = report.rows[0]
    assert (row.name, row.ok) == ("token", False)
    assert loopback.token_url in row.detail
    assert "HTTP 401" in row.detail
    assert "Traceback" not in report.render()
    assert "FAILED" in report.render()
    assert loopback.scim_requests == []


async def test_the_delinea_check_probes_each_resource_type_within_the_rules() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(("/ServiceProviderConfig", "/ResourceTypes", "/Schemas")):
            return httpx.Response(404)
        return list_response([], 0)

    service = MockScim(answer)
    report = await run_check(mock_settings(), transport=service.transport)
    assert report.passed, report.render()
    probes = {r.url.path.rsplit("/", 1)[-1]: r.url.params for r in service.scim_requests}
    assert set(probes) >= {"Users", "Groups", "Containers", "ContainerPermissions", "PrivilegedData"}
    assert probes["Users"]["startIndex"] == "1"
    assert probes["Users"]["count"] == "2"
    assert "filter" not in probes["Users"]
    assert probes["ContainerPermissions"]["filter"].startswith('user.value eq "')
    assert "not served (tolerated)" in report.render()


async def test_a_failing_resource_type_fails_the_check_with_its_reason() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/Containers"):
            return httpx.Response(403, json={"status": "403", "detail": "Owner right missing"})
        if request.url.path.endswith(("/ServiceProviderConfig", "/ResourceTypes", "/Schemas")):
            return httpx.Response(404)
        return list_response([], 0)

    service = MockScim(answer)
    report = await run_check(mock_settings(), transport=service.transport)
    assert not report.passed
    failing = [row for row in report.rows if not row.ok]
    assert [row.name for row in failing] == ["Containers"]
    assert "HTTP 403" in failing[0].detail
    assert "Owner right missing" in failing[0].detail


async def test_an_unreachable_token_endpoint_is_a_failing_row() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    report = await run_check(mock_settings(max_attempts=1), transport=httpx.MockTransport(refuse))
    assert not report.passed
    assert TOKEN_URL in report.rows[0].detail
    assert MOCK_SECRET not in report.render()


async def test_a_server_announcing_absolute_endpoints_is_probed_and_passes() -> None:
    with emulated(absolute_endpoints=True) as server:
        report = await run_check(emulator_settings(server, profile="rfc7644"))
        probed = {r.path for r in scim_requests(server) if r.method == "GET"}
    assert report.passed, report.render()
    assert {"/scim/v2/Users", "/scim/v2/Groups"} <= probed
    assert "skipped" not in report.render()
    assert DEMO_CLIENT_SECRET not in report.render()


async def test_the_check_fails_when_groups_cannot_be_probed() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ResourceTypes"):
            return list_response([{"name": "User", "endpoint": "/Users"}], 1)
        if request.url.path.endswith("/Users"):
            return list_response([], 0)
        return httpx.Response(404)

    service = MockScim(answer)
    report = await run_check(mock_settings(profile="rfc7644"), transport=service.transport)
    assert not report.passed
    failing = [row for row in report.rows if not row.ok]
    assert [row.name for row in failing] == ["Groups"]
    assert "not listed by /ResourceTypes" in failing[0].detail
    assert "FAILED" in report.render()
    assert MOCK_SECRET not in report.render()


async def test_patch_forms_are_not_probed_unless_asked() -> None:
    with emulated() as server:
        report = await run_check(emulator_settings(server))
        writes = [r for r in scim_requests(server) if r.method != "GET"]
    assert report.passed, report.render()
    rows = {row.name: row for row in report.rows}
    assert rows["PATCH Users attributes"].informational
    assert rows["PATCH Users attributes"].detail.startswith("not probed")
    assert writes == []


async def test_write_probes_show_the_patch_forms_the_target_accepts_and_leave_nothing_behind() -> None:
    with emulated(refuse_attribute_path_patch=True) as server:
        report = await run_check(emulator_settings(server), write_probes=True)
        remaining = server.emulator.store.count("Users")
    assert report.passed, report.render()
    rows = {row.name: row.detail for row in report.rows}
    assert rows["PATCH Users attributes"] == "accepts replace; refuses attribute-path"
    # Delinea offers no DELETE on Groups: the check creates no group it could not remove.
    assert rows["PATCH Groups member-removal"].startswith("not probed (the profile")
    assert remaining == 0
    assert report.quirks is not None
    assert report.quirks.to_dict()["patch_forms"][0]["working"] == "replace"


async def test_forms_kept_from_earlier_runs_are_shown_without_probing() -> None:
    quirks = TargetQuirks()
    quirks.record_refused("Groups", PatchKind.MEMBER_REMOVAL, PatchForm.MEMBER_FILTER)
    quirks.record_working("Groups", PatchKind.MEMBER_REMOVAL, PatchForm.MEMBER_VALUE_LIST)
    with emulated() as server:
        report = await run_check(emulator_settings(server), quirks=quirks)
    rows = {row.name: row.detail for row in report.rows}
    assert rows["PATCH Groups member-removal"] == "accepts member-value-list; refuses member-filter"


USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
PAM = "urn:ietf:params:scim:schemas:pam:1.0"


def _emulated(config: EmulatorConfig) -> tuple[ConnectionSettings, httpx.AsyncBaseTransport, Any]:
    app = create_app(config)
    settings = ConnectionSettings(
        base_url="http://127.0.0.1:8999/scim/v2", client_id="scim-demo", client_secret="demo-secret"
    )
    return settings, httpx.ASGITransport(app=app), app.emulator


async def test_missing_owner_rights_fail_the_container_rows_with_what_to_grant() -> None:
    settings, transport, emulator = _emulated(EmulatorConfig(owner_rights=False))
    try:
        report = await run_check(settings, transport=transport, containers=["Vault"])
    finally:
        emulator.close()
    assert not report.passed
    rows = {row.name: row for row in report.rows}
    for name in ("ContainerPermissions", "rights on container 'Vault'"):
        assert not rows[name].ok
        assert "grant the service account Owner, Edit, Add Secret and View" in rows[name].detail


async def test_the_service_accounts_missing_container_rights_are_named() -> None:
    settings, transport, emulator = _emulated(EmulatorConfig())
    store = emulator.store
    account = store.create("Users", {"schemas": [USER_SCHEMA], "userName": "scim-demo"})
    vault = store.create("Containers", {"schemas": [f"{PAM}:Container"], "name": "Vault"})
    store.create(
        "ContainerPermissions",
        {
            "schemas": [f"{PAM}:ContainerPermission"],
            "container": {"value": vault["id"]},
            "user": {"value": account["id"]},
            "rights": ["View"],
        },
    )
    try:
        report = await run_check(settings, transport=transport, containers=["Vault", "Not Yet"])
    finally:
        emulator.close()
    rows = {row.name: row for row in report.rows}
    assert not rows["rights on container 'Vault'"].ok
    assert rows["rights on container 'Vault'"].detail.startswith("missing Owner, Edit, Add Secret:")
    assert rows["rights on container 'Not Yet'"].informational
    assert not report.passed
