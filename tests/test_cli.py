"""The command line as a new user drives it: demo twice, emulator + check, a guard that stops a sync."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scim_pipeline.cli import main

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
