"""The connection check: token, discovery, one allowed request per resource type, a table."""

from __future__ import annotations

import httpx

from scim_pipeline.scim import run_check

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
