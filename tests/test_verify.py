"""`scim-pipeline verify-workflows` as a person runs it: against the bundled emulator (Delinea's rules) and against an
independent SCIM server (scim2-server, RFC 7644), over loopback HTTP, through the command line."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scim_pipeline.cli import main
from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.scim import ScimClient
from scim_pipeline.scim.verify import PREFIX

from .scim.loopback import CLIENT_ID, CLIENT_SECRET, LoopbackScimServer
from .scim.mock_service import loopback_settings

ROW = re.compile(r"^(?P<step>\S.*?)\s{2,}(?P<result>PASS|FAIL|skip|info)\s{2,}(?P<detail>.*)$", re.MULTILINE)
WORKFLOW = (
    "token",
    "remove leftovers",
    "create user",
    "update user",
    "create group",
    "assign user to group",
    "remove member",
    "add member again",
    "disable user",
    "delete user",
)
LEFTOVER_USER = f"{PREFIX}dead0001@example.com"
LEFTOVER_GROUP = f"{PREFIX}dead0001"


def results(output: str) -> dict[str, str]:
    """step → PASS / FAIL / skip / info, from the printed table."""
    return {match["step"]: match["result"] for match in ROW.finditer(output)}


@pytest.fixture
def run_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., tuple[int, str]]:
    """`scim-pipeline verify-workflows ARGS` in-process with exactly the given SCIM_* variables; (exit code, output)."""
    for name in list(os.environ):
        if name.startswith("SCIM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))

    def run(*args: str, env: dict[str, str]) -> tuple[int, str]:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        code = main(["verify-workflows", *args])
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


# -- the emulator (Delinea profile) ----------------------------------------------------------------------------------

EMULATOR_CLIENT = "verify-tests"
EMULATOR_SECRET = "verify-secret-61c0e2d8"  # asserted absent from every output


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(clients={EMULATOR_CLIENT: EMULATOR_SECRET})) as server:
        yield server


def emulator_env(server: EmulatorServer) -> dict[str, str]:
    return {
        "SCIM_BASE_URL": server.base_url,
        "SCIM_TOKEN_URL": server.token_url,
        "SCIM_CLIENT_ID": EMULATOR_CLIENT,
        "SCIM_CLIENT_SECRET": EMULATOR_SECRET,
        "SCIM_MAX_RETRY_WAIT_S": "0.05",
    }


def stored(server: EmulatorServer, resource_type: str) -> dict[str, dict[str, Any]]:
    """The emulator's resources of a type by name (userName, displayName or name), read from its store."""
    resources = server.emulator.store.dump()[resource_type]
    return {str(r.get("userName") or r.get("displayName") or r.get("name")): r for r in resources}


def test_every_workflow_passes_against_the_emulator(
    emulator: EmulatorServer, run_cli: Callable[..., tuple[int, str]]
) -> None:
    code, output = run_cli(env=emulator_env(emulator))

    assert code == 0, output
    steps = results(output)
    assert all(steps[step] == "PASS" for step in WORKFLOW), output
    assert steps["PAM: read containers"] == steps["PAM: read container permissions"] == "PASS"
    # Delinea has no group DELETE: the group is left, empty, and named.
    assert steps["empty group"] == "PASS"
    assert "delete group" not in steps
    assert steps["clean up"] == "PASS"
    assert "PASSED" in output
    assert EMULATOR_SECRET not in output
    assert not [name for name in stored(emulator, "Users") if name.startswith(PREFIX)]
    (group,) = [g for name, g in stored(emulator, "Groups").items() if name.startswith(PREFIX)]
    assert emulator.emulator.store.member_ids(group["id"]) == []
    assert f"Groups {group['displayName']} — emptied" in output
    # No container is created on a tenant unless asked.
    assert stored(emulator, "Containers") == {}
    assert "not run: --with-containers" in output


def test_leftovers_of_an_interrupted_run_are_removed_first_and_nothing_else_is_touched(
    emulator: EmulatorServer, run_cli: Callable[..., tuple[int, str]]
) -> None:
    store = emulator.emulator.store
    leftover = store.create("Users", {"userName": LEFTOVER_USER, "active": True})
    store.create("Groups", {"displayName": LEFTOVER_GROUP, "members": [{"value": leftover["id"]}]})
    alice = store.create("Users", {"userName": "alice@corp.example", "displayName": "Alice"})
    lookalike = store.create("Users", {"userName": f"x-{PREFIX}bob@corp.example", "displayName": "Bob"})
    store.create(
        "Groups",
        {"displayName": f"team-{PREFIX}ops", "members": [{"value": alice["id"]}, {"value": lookalike["id"]}]},
    )
    bystanders = {
        name: resource
        for kind in ("Users", "Groups")
        for name, resource in stored(emulator, kind).items()
        if not name.startswith(PREFIX)
    }

    code, output = run_cli(env=emulator_env(emulator))

    assert code == 0, output
    assert results(output)["remove leftovers"] == "PASS"
    assert f"Users {LEFTOVER_USER}" in output.split("Removed before starting")[1]
    assert LEFTOVER_USER not in stored(emulator, "Users")
    leftover_group = stored(emulator, "Groups")[LEFTOVER_GROUP]
    assert store.member_ids(leftover_group["id"]) == []
    assert LEFTOVER_GROUP in output.split("Left on the target")[1]
    after = {
        name: resource
        for kind in ("Users", "Groups")
        for name, resource in stored(emulator, kind).items()
        if not name.startswith(PREFIX)
    }
    assert after == bystanders


def test_a_run_after_a_passing_run_passes_again(
    emulator: EmulatorServer, run_cli: Callable[..., tuple[int, str]]
) -> None:
    assert run_cli(env=emulator_env(emulator))[0] == 0

    code, output = run_cli(env=emulator_env(emulator))

    assert code == 0, output
    assert "none found; empty groups of earlier runs kept (1)" in output


def test_a_step_the_target_gets_wrong_fails_the_table_and_the_run_still_cleans_up(
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    # A target that accepts a surname and silently drops it.
    config = EmulatorConfig(clients={EMULATOR_CLIENT: EMULATOR_SECRET}, drop_attributes=("name.familyName",))
    with EmulatorServer(config) as server:
        code, output = run_cli(env=emulator_env(server))

        assert code == 1
        steps = results(output)
        assert steps["update user"] == "FAIL"
        assert "read back: name.familyName is None, expected" in output
        # One wrong step does not hide the others.
        assert all(steps[step] == "PASS" for step in WORKFLOW if step != "update user"), output
        assert steps["clean up"] == "PASS"
        assert output.rstrip().endswith("FAILED")
        assert not [name for name in stored(server, "Users") if name.startswith(PREFIX)]


def test_the_report_as_json(emulator: EmulatorServer, run_cli: Callable[..., tuple[int, str]]) -> None:
    code, output = run_cli("--json", env=emulator_env(emulator))

    assert code == 0
    report = json.loads(output)
    assert report["passed"] is True
    assert report["prefix"] == PREFIX
    assert report["run_name"].startswith(PREFIX)
    assert [step["step"] for step in report["steps"]][:3] == ["token", "remove leftovers", "create user"]
    assert {step["result"] for step in report["steps"]} <= {"PASS", "info"}
    assert report["removed_leftovers"] == []
    assert any("emptied" in line for line in report["left_behind"])


def test_without_a_target_it_runs_on_a_throwaway_emulator_and_says_so(
    run_cli: Callable[..., tuple[int, str]],
) -> None:
    code, output = run_cli(env={})

    assert code == 0, output
    assert "DEMO MODE" in output
    assert "verifies nothing about your tenant" in output
    assert results(output)["delete user"] == "PASS"


def test_a_remote_plain_http_target_is_refused_naming_the_variable(run_cli: Callable[..., tuple[int, str]]) -> None:
    code, output = run_cli(
        env={"SCIM_BASE_URL": "http://scim.example.com/v2", "SCIM_CLIENT_ID": "x", "SCIM_CLIENT_SECRET": "y-7c1d"}
    )

    assert code == 1
    assert "SCIM_BASE_URL" in output
    assert "https is required" in output
    assert "Traceback" not in output
    assert "y-7c1d" not in output


# -- an independent server: scim2-server (RFC 7644 profile) ----------------------------------------------------------


@pytest.fixture
def scim2_server() -> Iterator[LoopbackScimServer]:
    with LoopbackScimServer() as server:
        yield server


def scim2_env(server: LoopbackScimServer) -> dict[str, str]:
    return {
        "SCIM_BASE_URL": server.base_url,
        "SCIM_TOKEN_URL": server.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_PROFILE": "rfc7644",
        "SCIM_MAX_RETRY_WAIT_S": "0.05",
    }


def names_on(server: LoopbackScimServer) -> set[str]:
    """userName or displayName of every resource scim2-server holds."""
    return {
        str(getattr(resource, "user_name", None) or getattr(resource, "display_name", None))
        for resource in server.storage.resources
    }


def test_every_workflow_passes_against_scim2_server_and_nothing_is_left(
    scim2_server: LoopbackScimServer, run_cli: Callable[..., tuple[int, str]]
) -> None:
    code, output = run_cli(env=scim2_env(scim2_server))

    assert code == 0, output
    steps = results(output)
    assert all(steps[step] == "PASS" for step in (*WORKFLOW, "delete group", "clean up")), output
    assert not any(step.startswith("PAM") for step in steps)
    assert "Left on the target" not in output
    assert CLIENT_SECRET not in output
    assert names_on(scim2_server) == set()


def test_leftovers_on_scim2_server_are_deleted_and_a_bystander_is_kept(
    scim2_server: LoopbackScimServer, run_cli: Callable[..., tuple[int, str]]
) -> None:
    async def seed() -> None:
        async with ScimClient(loopback_settings(scim2_server)) as client:
            user = await client.create("Users", {"userName": LEFTOVER_USER})
            bystander = await client.create("Users", {"userName": "alice@corp.example"})
            await client.create(
                "Groups",
                {"displayName": LEFTOVER_GROUP, "members": [{"value": user.scim_id}, {"value": bystander.scim_id}]},
            )

    asyncio.run(seed())
    alice_before = [user for user in scim2_server.users() if user["userName"] == "alice@corp.example"]

    code, output = run_cli(env=scim2_env(scim2_server))

    assert code == 0, output
    removed = output.split("Removed before starting")[1]
    assert f"Users {LEFTOVER_USER}" in removed
    assert f"Groups {LEFTOVER_GROUP}" in removed
    assert names_on(scim2_server) == {"alice@corp.example"}
    assert scim2_server.users() == alice_before
