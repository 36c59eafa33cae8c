"""A new user's first contact with a real target, through the command line and `dagster job execute`: nothing the
demo bundles ever reaches a target, an unreachable target fails `plan` as it fails `sync`, and the jobs run without
a partition as the Launchpad launches them."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from tests.test_cli import CLIENT, SECRET, run_cli

pytest_plugins = ["tests.test_cli"]  # clean_env, emulator_process


def _emulator_writes(emulator_db: Path) -> int:
    """How many resources the emulator holds, read from its own database."""
    import sqlite3

    with sqlite3.connect(emulator_db) as connection:
        return int(connection.execute("SELECT count(*) FROM resources").fetchone()[0])


def test_a_forgotten_scim_roster_names_the_variable_and_writes_nothing(
    emulator_process: dict[str, str], clean_env: dict[str, str], tmp_path: Path
) -> None:
    env = {**clean_env, **emulator_process, "SCIM_CLIENT_ID": CLIENT, "SCIM_CLIENT_SECRET": SECRET}

    result = run_cli("sync", env=env)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "SCIM_ROSTER" in output
    assert "Traceback" not in output
    assert "result: OK" not in output
    assert _emulator_writes(tmp_path / "emu.sqlite") == 0, "the sample roster reached the target"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_plan_against_an_unreachable_target_exits_non_zero(clean_env: dict[str, str], tmp_path: Path) -> None:
    port = _closed_port()  # nothing listens there once the probe is closed
    roster = tmp_path / "roster"
    roster.mkdir()
    (roster / "users.csv").write_text("user_name,given_name,family_name,email\nada@example.com,Ada,L,ada@example.com\n")
    env = {
        **clean_env,
        "SCIM_BASE_URL": f"http://127.0.0.1:{port}/scim/v2",
        "SCIM_TOKEN_URL": f"http://127.0.0.1:{port}/oauth2/token",
        "SCIM_CLIENT_ID": CLIENT,
        "SCIM_CLIENT_SECRET": SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_MAX_ATTEMPTS": "1",
    }

    result = run_cli("plan", env=env)

    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "result: OK" not in output
    assert f"127.0.0.1:{port}" in output
    assert "Traceback" not in output


def test_the_plan_job_runs_without_a_partition_through_dagster_job_execute(clean_env: dict[str, str]) -> None:
    """What the Launchpad does after its "this job is partitioned" confirm: a run with no partition = every shard."""
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "execute", "-m", "scim_pipeline.definitions", "-j", "scim_plan"],
        env=clean_env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "RUN_SUCCESS" in output
    assert "partition_key" not in output
