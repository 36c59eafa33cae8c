"""The workflow check itself (``run_verify``) against the bundled emulator over loopback HTTP: the PAM rights Delinea's
service account needs, the throwaway container of ``--with-containers``, leftovers of PAM steps, interruptions."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from scim_pipeline.emulator import DEMO_CLIENT_SECRET, EmulatorServer
from scim_pipeline.scim import ConfigurationError
from scim_pipeline.scim.verify import CONTAINER_NAME, PREFIX, StepResult, VerifyReport, run_verify

from .emulated_target import emulated, emulator_settings, scim_requests


@pytest.fixture
def server() -> Iterator[EmulatorServer]:
    with emulated() as running:
        yield running


def results(report: VerifyReport) -> dict[str, StepResult]:
    return {step.name: step.result for step in report.steps}


def detail(report: VerifyReport, name: str) -> str:
    return next(step.detail for step in report.steps if step.name == name)


def stored(server: EmulatorServer, resource_type: str) -> list[dict[str, Any]]:
    return server.emulator.store.dump()[resource_type]


def throwaway_users(server: EmulatorServer) -> list[str]:
    return [u["userName"] for u in stored(server, "Users") if u["userName"].startswith(PREFIX)]


async def test_missing_owner_rights_fail_the_pam_steps_naming_the_rights_and_the_rest_still_runs() -> None:
    with emulated(owner_rights=False) as server:
        report = await run_verify(emulator_settings(server), with_containers=True)
        containers = stored(server, "Containers")

    steps = results(report)
    assert not report.passed
    for name in ("PAM: read containers", "PAM: read container permissions"):
        assert steps[name] is StepResult.FAIL
        assert "403" in detail(report, name)
        assert "Owner-level rights (Owner, Edit, Add Secret, View)" in detail(report, name)
    assert steps["PAM: container permission"] is StepResult.SKIP
    assert steps["delete user"] is StepResult.PASS
    assert steps["clean up"] is StepResult.PASS
    assert containers == []


async def test_with_containers_a_permission_is_added_and_deleted_on_one_reused_container(
    server: EmulatorServer,
) -> None:
    first = await run_verify(emulator_settings(server), with_containers=True)
    second = await run_verify(emulator_settings(server), with_containers=True)

    for report in (first, second):
        assert report.passed, report.render()
        steps = results(report)
        assert steps["PAM: add permission"] is steps["PAM: delete permission"] is StepResult.PASS
        assert any(f"Containers {CONTAINER_NAME}" in line for line in report.left_behind)
    assert "POST /Containers" in detail(first, "PAM: throwaway container")
    assert "reused" in detail(second, "PAM: throwaway container")
    assert [c["name"] for c in stored(server, "Containers")] == [CONTAINER_NAME]
    assert stored(server, "ContainerPermissions") == []


async def test_a_permission_left_on_the_throwaway_container_is_removed_and_others_are_kept(
    server: EmulatorServer,
) -> None:
    store = server.emulator.store
    container = store.create("Containers", {"name": CONTAINER_NAME})
    ours = store.create("Groups", {"displayName": f"{PREFIX}dead0002"})
    theirs = store.create("Groups", {"displayName": "Engineering"})
    for group in (ours, theirs):
        store.create(
            "ContainerPermissions",
            {
                "container": {"value": container["id"]},
                "group": {"value": group["id"], "display": group["displayName"]},
                "rights": ["View"],
            },
        )

    report = await run_verify(emulator_settings(server))

    assert report.passed, report.render()
    assert report.removed_leftovers == [f"ContainerPermissions group {PREFIX}dead0002 on {CONTAINER_NAME}"]
    (kept,) = stored(server, "ContainerPermissions")
    assert kept["group"]["value"] == theirs["id"]


async def test_an_interrupted_run_still_removes_what_it_made(server: EmulatorServer) -> None:
    class InterruptOnMembership(httpx.AsyncBaseTransport):
        """Loopback HTTP; the first member removal is cut short as Ctrl-C cancels asyncio.run's task (the user is a
        member of the group by then)."""

        def __init__(self) -> None:
            self.http = httpx.AsyncHTTPTransport()
            self.interrupted = False

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            removal = request.method == "PATCH" and b'"remove"' in request.content
            if removal and "/Groups/" in request.url.path and not self.interrupted:
                self.interrupted = True
                raise asyncio.CancelledError
            return await self.http.handle_async_request(request)

        async def aclose(self) -> None:
            await self.http.aclose()

    with pytest.raises(asyncio.CancelledError):
        await run_verify(emulator_settings(server), transport=InterruptOnMembership())

    assert throwaway_users(server) == []
    (group,) = stored(server, "Groups")
    assert server.emulator.store.member_ids(group["id"]) == []


async def test_refused_credentials_are_one_failing_row_and_no_scim_request(server: EmulatorServer) -> None:
    report = await run_verify(emulator_settings(server, client_secret="not-the-secret-4e1a"))

    assert [(step.name, step.result) for step in report.steps] == [("token", StepResult.FAIL)]
    assert "401" in report.render()
    assert "not-the-secret-4e1a" not in report.render()
    assert DEMO_CLIENT_SECRET not in report.render()
    assert scim_requests(server) == []


async def test_a_user_domain_that_cannot_make_an_address_is_refused_before_any_request(
    server: EmulatorServer,
) -> None:
    with pytest.raises(ConfigurationError, match="--user-domain"):
        await run_verify(emulator_settings(server), user_domain="not a domain")

    assert server.emulator.requests == []


async def test_the_throwaway_user_carries_the_prefix_and_the_domain_asked_for(server: EmulatorServer) -> None:
    report = await run_verify(emulator_settings(server), user_domain="corp.example.org")

    assert report.passed, report.render()
    created = [r for r in server.emulator.requests if r.method == "POST" and r.path.endswith("/Users")]
    assert len(created) == 1
    assert f"{report.run_name}@corp.example.org" in detail(report, "create user")
    assert report.run_name.startswith(PREFIX)
