"""The command line as a new user drives it: demo twice, emulator + check, a guard that stops a sync."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scim_pipeline.cli import main

# Every test here runs the CLI in subprocesses, 3 to 20 s each: the file is the suite's longest.
pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "scim_pipeline.cli"]
CLIENT = "cli-tests"
SECRET = "cli-secret-3b1f9c"


def summary_value(output: str, label: str) -> int:
    match = re.search(rf"^\s+{re.escape(label)}\s+([\d,]+)$", output, re.MULTILINE)
    assert match, f"{label!r} not in:\n{output}"
    return int(match.group(1).replace(",", ""))


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("SCIM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}


def test_demo_twice_the_second_cycle_changes_nothing(
    clean_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo"]) == 0
    first = capsys.readouterr()
    assert "DEMO MODE" in first.err
    assert summary_value(first.out, "users created") > 50
    assert summary_value(first.out, "SCIM calls") > 50

    assert main(["demo"]) == 0
    second = capsys.readouterr().out
    assert summary_value(second, "SCIM calls") == 0
    assert summary_value(second, "users created") == 0
    assert summary_value(second, "users updated") == 0


@pytest.fixture
def emulator_process(tmp_path: Path) -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0", "--client", f"{CLIENT}:{SECRET}", "--db", str(tmp_path / "emu.sqlite")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not {"SCIM_BASE_URL", "SCIM_TOKEN_URL"} <= printed.keys():
            line = process.stdout.readline()
            if not line:
                break
            found = re.search(r"(SCIM_BASE_URL|SCIM_TOKEN_URL)=(\S+)", line)
            if found:
                printed[found.group(1)] = found.group(2).strip("'\"")
        assert {"SCIM_BASE_URL", "SCIM_TOKEN_URL"} <= printed.keys(), "the emulator did not print its URLs"
        yield printed
    finally:
        process.terminate()
        process.wait(timeout=10)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_check_passes_against_the_emulator(emulator_process: dict[str, str], clean_env: dict[str, str]) -> None:
    env = {**clean_env, **emulator_process, "SCIM_CLIENT_ID": CLIENT, "SCIM_CLIENT_SECRET": SECRET}

    result = run_cli("check", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "token" in result.stdout.lower()
    assert "Traceback" not in result.stderr


def test_check_with_wrong_credentials_fails_clearly(
    emulator_process: dict[str, str], clean_env: dict[str, str]
) -> None:
    env = {**clean_env, **emulator_process, "SCIM_CLIENT_ID": CLIENT, "SCIM_CLIENT_SECRET": "wrong-secret-xyz"}

    result = run_cli("check", env=env)

    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert emulator_process["SCIM_TOKEN_URL"] in output
    assert "401" in output
    assert "Traceback" not in output
    assert "wrong-secret-xyz" not in output


def test_check_without_a_target_names_the_missing_setting(clean_env: dict[str, str]) -> None:
    result = run_cli("check", env=clean_env)

    assert result.returncode == 1
    assert "SCIM_BASE_URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_sync_stops_on_a_guard_and_exits_non_zero(
    emulator_process: dict[str, str], clean_env: dict[str, str], tmp_path: Path
) -> None:
    roster = tmp_path / "roster"
    roster.mkdir()
    users = ["user_name,given_name,family_name"] + [f"u{i}@example.com,G{i},F{i}" for i in range(30)]
    (roster / "users.csv").write_text("\n".join(users) + "\n", encoding="utf-8")
    env = {
        **clean_env,
        **emulator_process,
        "SCIM_CLIENT_ID": CLIENT,
        "SCIM_CLIENT_SECRET": SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_SHARDS": "2",
    }
    first = run_cli("sync", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    (roster / "users.csv").write_text("\n".join(users[:3]) + "\n", encoding="utf-8")  # lost 28 of 30

    plan = run_cli("plan", env=env)
    stopped = run_cli("sync", env=env)

    assert plan.returncode == 1
    assert stopped.returncode == 1
    assert "SCIM_ALLOW_MASS_CHANGES" in stopped.stdout or "SCIM_MAX_DELETES" in stopped.stdout
    assert summary_value(stopped.stdout, "SCIM calls") == 0
    allowed = run_cli("sync", "--allow-mass-changes", env=env)
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert summary_value(allowed.stdout, "users disabled") == 28


def test_a_refused_token_fails_the_sync_in_one_line_without_a_traceback(
    emulator_process: dict[str, str], clean_env: dict[str, str], tmp_path: Path
) -> None:
    roster = tmp_path / "roster"
    roster.mkdir()
    (roster / "users.csv").write_text("user_name\nann@example.com\n", encoding="utf-8")
    env = {
        **clean_env,
        **emulator_process,
        "SCIM_CLIENT_ID": CLIENT,
        "SCIM_CLIENT_SECRET": "not-the-secret-5d1e",
        "SCIM_ROSTER": str(roster),
    }

    result = run_cli("sync", env=env)

    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert emulator_process["SCIM_TOKEN_URL"] in result.stdout
    assert "401" in result.stdout
    assert "not-the-secret-5d1e" not in output


def write_users(folder: Path, rows: list[str]) -> None:
    (folder / "users.csv").write_text("\n".join(["user_name,given_name,family_name,active", *rows]) + "\n")


@pytest.fixture
def cli_roster(
    tmp_path: Path, emulator_process: dict[str, str], clean_env: dict[str, str]
) -> tuple[Path, dict[str, str]]:
    roster = tmp_path / "roster"
    roster.mkdir()
    write_users(roster, [f"u{i}@example.com,G{i},F{i},true" for i in range(6)])
    (roster / "groups.csv").write_text("group_name\nVault Admins\nAuditors\n")
    (roster / "memberships.csv").write_text(
        "group_name,user_name\nVault Admins,u0@example.com\nVault Admins,u1@example.com\nAuditors,u2@example.com\n"
    )
    env = {
        **clean_env,
        **emulator_process,
        "SCIM_CLIENT_ID": CLIENT,
        "SCIM_CLIENT_SECRET": SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_SHARDS": "2",
    }
    return roster, env


def test_plan_names_the_people_and_the_rejected_rows_and_sync_then_does_exactly_that(
    cli_roster: tuple[Path, dict[str, str]],
) -> None:
    roster, env = cli_roster
    write_users(roster, [*[f"u{i}@example.com,G{i},F{i},true" for i in range(6)], "bad@example.com,B,D,maybe"])

    plan = run_cli("plan", "--all", env=env)

    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "users created (6):" in plan.stdout
    assert "  u5@example.com" in plan.stdout
    assert "u0@example.com — to Vault Admins" in plan.stdout
    assert re.search(r"users\.csv row 8, active: .*maybe", plan.stdout), plan.stdout
    assert summary_value(plan.stdout, "members added") == 3
    sync = run_cli("sync", "--json", env=env)
    document = json.loads(sync.stdout)
    assert document["result"] == "ok"
    assert document["counts"]["user_creates"] == 6
    assert document["counts"]["member_adds"] == 3
    assert document["calls"] == 6 + 2 + 2  # 6 users, 2 groups, one member PATCH per group
    assert {row["key"] for row in document["changes"] if row["kind"] == "user"} == {
        f"u{i}@example.com" for i in range(6)
    }


def test_a_group_leaving_the_roster_through_the_cli_removes_our_members(
    cli_roster: tuple[Path, dict[str, str]],
) -> None:
    roster, env = cli_roster
    assert run_cli("sync", env=env).returncode == 0
    (roster / "groups.csv").write_text("group_name\nVault Admins\n")
    (roster / "memberships.csv").write_text(
        "group_name,user_name\nVault Admins,u0@example.com\nVault Admins,u1@example.com\n"
    )

    result = run_cli("sync", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "groups released (our members removed) (1):\n  Auditors" in result.stdout
    assert "u2@example.com — from Auditors" in result.stdout
    again = run_cli("sync", env=env)
    assert summary_value(again.stdout, "SCIM calls") == 0


def test_a_guard_stop_through_the_cli_says_nothing_changed_and_nothing_did(
    cli_roster: tuple[Path, dict[str, str]],
) -> None:
    roster, env = cli_roster
    many = [f"u{i}@example.com,G{i},F{i},true" for i in range(30)]
    write_users(roster, many)
    assert run_cli("sync", env=env).returncode == 0
    write_users(roster, many[:2])
    (roster / "groups.csv").write_text("group_name\n")
    (roster / "memberships.csv").write_text("group_name,user_name\n")

    stopped = run_cli("sync", env=env)

    assert stopped.returncode == 1
    assert "result: STOPPED by a guard (the target and the state store are unchanged)" in stopped.stdout
    assert "result: OK" not in stopped.stdout
    assert summary_value(stopped.stdout, "SCIM calls") == 0
    write_users(roster, many)
    (roster / "groups.csv").write_text("group_name\nVault Admins\nAuditors\n")
    (roster / "memberships.csv").write_text(
        "group_name,user_name\nVault Admins,u0@example.com\nVault Admins,u1@example.com\nAuditors,u2@example.com\n"
    )
    restored = run_cli("sync", env=env)
    assert restored.returncode == 0
    assert summary_value(restored.stdout, "SCIM calls") == 0


def test_a_rejected_row_is_held_through_the_cli(cli_roster: tuple[Path, dict[str, str]]) -> None:
    roster, env = cli_roster
    assert run_cli("sync", env=env).returncode == 0
    write_users(roster, [*[f"u{i}@example.com,G{i},F{i},true" for i in range(5)], "u5@example.com,G5,F5,perhaps"])

    result = run_cli("sync", env=env)

    assert result.returncode == 0
    assert summary_value(result.stdout, "users disabled") == 0
    assert summary_value(result.stdout, "SCIM calls") == 0
    assert "rejected roster rows (1)" in result.stdout


def test_a_configuration_error_is_one_line_that_does_not_promise_a_retry(clean_env: dict[str, str]) -> None:
    result = run_cli("sync", env={**clean_env, "SCIM_SHARDS": "lots"})

    assert result.returncode == 1
    assert "SCIM_SHARDS" in result.stderr
    assert "retries" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_retry_lines_show_only_with_verbose(clean_env: dict[str, str], tmp_path: Path) -> None:
    from scim_pipeline.emulator import EmulatorConfig, EmulatorServer

    roster = tmp_path / "roster"
    roster.mkdir()
    write_users(roster, [f"u{i}@example.com,G{i},F{i},true" for i in range(20)])
    config = EmulatorConfig(clients={CLIENT: SECRET}, unavailable_rate=0.3, retry_after_s=0, seed=4)
    with EmulatorServer(config) as server:
        env = {
            **clean_env,
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT,
            "SCIM_CLIENT_SECRET": SECRET,
            "SCIM_ROSTER": str(roster),
        }
        quiet = run_cli("sync", env=env)
        write_users(roster, [f"u{i}@example.com,G{i},F{i} Renamed,true" for i in range(20)])
        verbose = run_cli("sync", "--verbose", env=env)

    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    assert summary_value(quiet.stdout, "retries") > 0  # the summary counts them...
    assert "retry" not in quiet.stderr.lower()  # ...without a line per retry
    assert verbose.returncode == 0, verbose.stdout + verbose.stderr
    assert "retry" in verbose.stderr.lower()


def test_an_access_file_through_the_cli_provisions_containers_and_a_second_sync_changes_nothing(
    cli_roster: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    _roster, env = cli_roster
    access = tmp_path / "access.csv"
    access.write_text(
        "container,type,name,rights\n"
        "Vault,group,Vault Admins,Owner;Edit;Add Secret;View\n"
        "Vault,group,Auditors,View\n"
        "Vault,user,u3@example.com,Edit\n"
        "Audit,group,Auditors,View;Read\n",
        encoding="utf-8",
    )
    env = {**env, "SCIM_ACCESS": str(access)}

    plan = run_cli("plan", "--all", env=env)

    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert summary_value(plan.stdout, "containers created") == 2
    assert summary_value(plan.stdout, "container permissions added") == 3
    assert "group Vault Admins — Add Secret, Edit, Owner, View on Vault" in plan.stdout
    assert re.search(r"access\.csv row 5, rights: unknown right 'Read'", plan.stdout), plan.stdout
    sync = run_cli("sync", "--json", env=env)
    document = json.loads(sync.stdout)
    assert document["result"] == "ok", sync.stdout + sync.stderr
    assert document["counts"]["permission_adds"] == 3
    assert document["calls"] == 6 + 2 + 2 + 2 + 3  # users, groups, member PATCHes, containers, permissions

    again = run_cli("sync", env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert summary_value(again.stdout, "SCIM calls") == 0
    assert summary_value(again.stdout, "container permissions added") == 0


def test_a_missing_owner_right_through_the_cli_is_one_line_with_the_fix(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    process = subprocess.Popen(
        [*CLI, "emulator", "--port", "0", "--client", f"{CLIENT}:{SECRET}", "--no-owner-rights"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed: dict[str, str] = {}
        while not {"SCIM_BASE_URL", "SCIM_TOKEN_URL"} <= printed.keys():
            line = process.stdout.readline()
            assert line, "the emulator did not print its URLs"
            found = re.search(r"(SCIM_BASE_URL|SCIM_TOKEN_URL)=(\S+)", line)
            if found:
                printed[found.group(1)] = found.group(2).strip("'\"")
        roster = tmp_path / "roster"
        roster.mkdir()
        write_users(roster, ["u0@example.com,G0,F0,true"])
        (roster / "groups.csv").write_text("group_name\nAuditors\n")
        (roster / "memberships.csv").write_text("group_name,user_name\nAuditors,u0@example.com\n")
        access = tmp_path / "access.yaml"
        access.write_text(
            "containers:\n  - name: Vault\n    permissions:\n      - group: Auditors\n        rights: View\n"
        )
        env = {
            **clean_env,
            **printed,
            "SCIM_CLIENT_ID": CLIENT,
            "SCIM_CLIENT_SECRET": SECRET,
            "SCIM_ROSTER": str(roster),
            "SCIM_ACCESS": str(access),
        }

        result = run_cli("sync", env=env)
    finally:
        process.terminate()
        process.wait(timeout=10)

    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if "lacks Owner-level rights" in line]
    assert len(lines) == 1, result.stdout
    assert "grant it Owner, Edit, Add Secret and View" in lines[0]


class EmulatorReader:
    """The emulator process's target as an outside observer reads it (its own SCIM API)."""

    def __init__(self, env: dict[str, str]) -> None:
        import httpx

        token = httpx.post(
            env["SCIM_TOKEN_URL"],
            data={"grant_type": "client_credentials", "client_id": CLIENT, "client_secret": SECRET},
        ).json()["access_token"]
        self.http = httpx.Client(base_url=env["SCIM_BASE_URL"], headers={"Authorization": f"Bearer {token}"})

    def users(self) -> dict[str, dict[str, object]]:
        page = self.http.get("/Users", params={"count": 1000}).json()
        return {user["userName"]: user for user in page.get("Resources", [])}

    def members(self, group: str) -> set[str]:
        names = {user["id"]: name for name, user in self.users().items()}
        page = self.http.get("/Groups", params={"filter": f'displayName eq "{group}"'}).json()
        return {names[member["value"]] for member in page["Resources"][0].get("members", [])}


def test_sync_user_provisions_one_identity_with_a_step_by_step_report(
    cli_roster: tuple[Path, dict[str, str]],
) -> None:
    roster, env = cli_roster
    assert run_cli("sync", env=env).returncode == 0
    # u0 changes name and groups; u3 changes too, u5 leaves, u9 joins: only u0's run happens below.
    write_users(
        roster,
        [
            "u0@example.com,G0,Renamed,true",
            *[f"u{i}@example.com,G{i},F{i},true" for i in (1, 2, 4)],
            "u3@example.com,G3,Other,true",
            "u9@example.com,G9,F9,true",
        ],
    )
    (roster / "memberships.csv").write_text(
        "group_name,user_name\nAuditors,u0@example.com\nVault Admins,u1@example.com\nAuditors,u2@example.com\n"
        "Vault Admins,u9@example.com\n"
    )
    target = EmulatorReader(env)

    result = run_cli("sync", "--user", "U0@example.com", env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "provision on demand: u0@example.com" in out
    assert "1. matched: already managed by this pipeline" in out
    assert "by userName" in out
    assert "2. user: updated" in out
    assert "name.familyName: 'F0' → 'Renamed'" in out
    assert "4. groups: joined Auditors; left Vault Admins" in out
    assert "result: OK" in out
    users = target.users()
    assert users["u0@example.com"]["name"] == {"givenName": "G0", "familyName": "Renamed"}
    assert users["u3@example.com"]["name"]["familyName"] == "F3", "another user's change is not applied"  # type: ignore[index]
    assert users["u5@example.com"]["active"] is True, "a leaver is not deprovisioned by an on-demand run"
    assert "u9@example.com" not in users
    assert target.members("Auditors") == {"u0@example.com", "u2@example.com"}
    # The rest is still there for the next whole cycle.
    plan = json.loads(run_cli("plan", "--json", env=env).stdout)
    assert (plan["counts"]["user_updates"], plan["counts"]["user_disables"], plan["counts"]["user_creates"]) == (
        1,
        1,
        1,
    )

    created = run_cli("sync", "--user", "u9@example.com", env=env)

    assert created.returncode == 0, created.stdout + created.stderr
    assert "1. matched: not on the target by userName" in created.stdout
    assert re.search(r"2\. user: created \(SCIM id \S+\)", created.stdout), created.stdout
    assert "name.familyName: (none) → 'F9'" in created.stdout
    assert "4. groups: joined Vault Admins" in created.stdout
    assert "u9@example.com" in target.members("Vault Admins")
    assert sum(name == "u9@example.com" for name in target.users()) == 1

    # Someone already on the target but not managed is matched by userName and adopted, never created twice.
    target.http.post(
        "/Users",
        json={
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": "u7@example.com",
            "name": {"givenName": "G7", "familyName": "Old"},
        },
    ).raise_for_status()
    write_users(roster, [*(roster / "users.csv").read_text().splitlines()[1:], "u7@example.com,G7,F7,true"])

    adopted = run_cli("sync", "--user", "u7@example.com", env=env)

    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert re.search(r"1\. matched: found on the target by userName \(SCIM id \S+\): adopted", adopted.stdout)
    assert "name.familyName: 'Old' → 'F7'" in adopted.stdout
    assert target.users()["u7@example.com"]["name"]["familyName"] == "F7"  # type: ignore[index]


def test_sync_user_names_an_unknown_user_and_close_matches(cli_roster: tuple[Path, dict[str, str]]) -> None:
    _, env = cli_roster

    result = run_cli("sync", "--user", "u1@example.co", env=env)

    assert result.returncode == 1
    assert "'u1@example.co' is not in the roster (6 users" in result.stdout
    assert "close matches: u1@example.com" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert EmulatorReader(env).users() == {}, "nothing was written"


def test_the_operation_budget_through_the_cli_shows_what_waits(cli_roster: tuple[Path, dict[str, str]]) -> None:
    _, env = cli_roster
    env = {**env, "SCIM_MAX_OPERATIONS_PER_CYCLE": "4"}

    first = run_cli("sync", env=env)

    assert first.returncode == 0, first.stdout + first.stderr
    assert summary_value(first.stdout, "SCIM calls") == 4
    assert summary_value(first.stdout, "groups created") == 2
    assert summary_value(first.stdout, "users created") == 2
    assert summary_value(first.stdout, "deferred by the operation budget") == 4 + 3
    assert "deferred by the operation budget (4) — the next cycle continues:\n  user create u2@example.com" in (
        first.stdout
    )
    assert "SCIM_MAX_OPERATIONS_PER_CYCLE=4" in first.stdout
    calls = [summary_value(run_cli("sync", env=env).stdout, "SCIM calls") for _ in range(3)]
    assert calls == [4, 2, 0]  # 4 creates; the 2 membership PATCHes; converged


def test_a_reader_that_goes_away_ends_the_command_with_sigpipes_code_and_no_traceback(
    clean_env: dict[str, str],
) -> None:
    # `scim-pipeline plan | head -1`: the reader closes before the summary is printed.
    process = subprocess.Popen([*CLI, "plan"], env=clean_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=120)

    assert process.returncode == 128 + 13, stderr
    assert "Traceback" not in stderr


def test_the_summary_reaches_a_pipe_whole_before_the_quick_exit(clean_env: dict[str, str]) -> None:
    # The command leaves with os._exit after flushing: nothing printed may be lost on the way.
    result = run_cli("plan", "--json", env=clean_env)

    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["result"] == "ok"
