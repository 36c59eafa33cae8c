"""Through ``scim-pipeline sync`` (the real engine cycle, a CLI subprocess) against scim2-server on loopback HTTP
whose every PATCH of a user is refused with 501: the second sync's attribute changes land by PUT, and the server's
stored users show them."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from .loopback import CLIENT_ID, CLIENT_SECRET, LoopbackScimServer

ROOT = Path(__file__).resolve().parents[2]


def _write_roster(folder: Path, given: str) -> None:
    folder.mkdir(exist_ok=True)
    with (folder / "users.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_name", "given_name", "family_name", "email"])
        for index in range(3):
            writer.writerow(
                [f"user{index}@example.com", f"{given}{index}", f"Family{index}", f"user{index}@example.com"]
            )


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


def test_a_sync_against_a_target_refusing_every_user_patch_updates_by_put(tmp_path: Path) -> None:
    roster = tmp_path / "roster"
    _write_roster(roster, "Given")
    with LoopbackScimServer() as server:
        env = {name: value for name, value in os.environ.items() if not name.startswith("SCIM_")}
        env.update(
            DAGSTER_HOME=str(tmp_path / "home"),
            SCIM_BASE_URL=server.base_url,
            SCIM_TOKEN_URL=server.token_url,
            SCIM_CLIENT_ID=CLIENT_ID,
            SCIM_CLIENT_SECRET=CLIENT_SECRET,
            SCIM_PROFILE="rfc7644",
            SCIM_ROSTER=str(roster),
            SCIM_SHARDS="1",
        )
        (tmp_path / "home").mkdir()
        first = _sync(env)
        assert first.returncode == 0, first.stdout + first.stderr
        server.faults.refuse_user_patch = 501
        _write_roster(roster, "Renamed")
        second = _sync(env)
        stored = {u["userName"]: u["name"]["givenName"] for u in server.users()}
        patches, puts = server.scim_request_count("PATCH"), server.scim_request_count("PUT")
    assert second.returncode == 0, second.stdout + second.stderr
    assert stored == {f"user{i}@example.com": f"Renamed{i}" for i in range(3)}
    assert puts == 3
    assert 1 <= patches <= 3  # refused at least once; once learned, the others go straight to GET and PUT
    assert CLIENT_SECRET not in second.stdout + second.stderr
