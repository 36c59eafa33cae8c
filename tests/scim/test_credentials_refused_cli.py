"""A revoked secret stops the next scheduled run, even one with nothing to change: through ``scim-pipeline sync``,
exactly one token request, no SCIM request, one line naming the setting to fix."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from scim_pipeline.emulator import DEMO_CLIENT_ID

from .emulated_target import TOKEN_PATH, emulated

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Rotate-Me-4c1d9e-never-printed"


def _roster(folder: Path) -> Path:
    folder.mkdir()
    with (folder / "users.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_name", "given_name", "family_name", "email"])
        for index in range(3):
            writer.writerow([f"user{index}@example.com", f"Given{index}", f"Family{index}", f"user{index}@example.com"])
    return folder


def _sync(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scim_pipeline.cli", "sync"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )


def test_a_revoked_secret_fails_a_no_change_sync_with_one_token_request_and_one_line(tmp_path: Path) -> None:
    with emulated(clients={DEMO_CLIENT_ID: SECRET}) as server:
        env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
        env.update(
            DAGSTER_HOME=str(tmp_path / "home"),
            SCIM_BASE_URL=server.base_url,
            SCIM_TOKEN_URL=server.token_url,
            SCIM_CLIENT_ID=DEMO_CLIENT_ID,
            SCIM_CLIENT_SECRET=SECRET,
            SCIM_ROSTER=str(_roster(tmp_path / "roster")),
            SCIM_SHARDS="1",
        )
        (tmp_path / "home").mkdir()
        first = _sync(env)
        assert first.returncode == 0, first.stdout + first.stderr

        server.emulator.config.clients[DEMO_CLIENT_ID] = "rotated-by-the-admin"  # the secret is revoked
        server.emulator.clear_requests()
        second = _sync(env)
        seen = server.emulator.requests

    assert second.returncode != 0
    assert sum(1 for record in seen if record.path.endswith(TOKEN_PATH)) == 1, "exactly one token request"
    assert [record for record in seen if not record.path.endswith(TOKEN_PATH)] == [], "no SCIM request"
    output = second.stdout + second.stderr
    lines = [line for line in output.splitlines() if "SCIM_CLIENT_SECRET" in line]
    assert lines, output
    assert "invalid_client" in lines[0] or "401" in lines[0]
    assert SECRET not in output
    # The message itself is one line (how the CLI prefixes it is the CLI's business).
    assert "refused the client credentials" in lines[0]
    assert "check SCIM_CLIENT_ID and SCIM_CLIENT_SECRET" in lines[0]
