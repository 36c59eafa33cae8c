"""The circuit breaker through the command line and Dagster: a target failing most calls stops a sync early, with the
reason and a non-zero exit; the next cycle, against a healthy target, converges."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.sync.state import ProvisioningState
from tests.test_cli import summary_value

from .conftest import person, run_cli, write_roster

CLIENT_ID = "breaker-e2e"
CLIENT_SECRET = "breaker-e2e-secret-9a70"
FIRST_USERS = 20
LATER_USERS = 300


def cli_env(clean_env: dict[str, str], server: EmulatorServer, roster: Path, state: Path) -> dict[str, str]:
    return {
        **clean_env,
        "SCIM_BASE_URL": server.base_url,
        "SCIM_TOKEN_URL": server.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_STATE_URL": f"sqlite:///{state}",
        "SCIM_SHARDS": "2",
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_failing_target_opens_the_circuit_and_the_next_cycle_converges(
    tmp_path: Path, clean_env: dict[str, str]
) -> None:
    roster, state_path, target_db = tmp_path / "roster", tmp_path / "state.sqlite", tmp_path / "target.sqlite"
    healthy = EmulatorConfig(db_path=target_db, clients={CLIENT_ID: CLIENT_SECRET})
    write_roster(roster, [person(i) for i in range(FIRST_USERS)])
    with EmulatorServer(healthy) as server:
        first = run_cli("sync", env=cli_env(clean_env, server, roster, state_path))
    assert first.returncode == 0, first.stdout + first.stderr

    write_roster(roster, [person(i) for i in range(FIRST_USERS + LATER_USERS)])
    # The same tenant, now answering 503 to nine calls in ten.
    failing = EmulatorConfig(
        db_path=target_db, clients={CLIENT_ID: CLIENT_SECRET}, unavailable_rate=0.9, retry_after_s=1, seed=3
    )
    with EmulatorServer(failing) as server:
        stopped = run_cli("sync", env=cli_env(clean_env, server, roster, state_path))
        user_posts = sum(1 for r in server.emulator.requests if r.method == "POST" and r.path.endswith("/Users"))
        on_target = len(server.emulator.store.dump()["Users"])
    output = stopped.stdout + stopped.stderr

    assert stopped.returncode == 1, output
    assert "circuit open" in output, "the run must say why it stopped"
    assert "the next cycle retries" in output
    # The summary counts the creates that took effect, not the 300 planned.
    assert summary_value(stopped.stdout, "users created") == on_target - FIRST_USERS < LATER_USERS
    run_id = re.search(r"runs:\s+(\S+)", stopped.stdout)
    assert run_id is not None
    with ProvisioningState.open(state_path) as state:
        audit = state.audit(run_id.group(1))
        pending = state.managed_users()
    # Stopped early: far fewer calls than the 300 planned, each retried a few times at most.
    assert 20 <= len(audit) < LATER_USERS // 3, len(audit)
    assert user_posts < LATER_USERS, user_posts
    # Creates never sent leave no pending marker behind; the next cycle plans them again.
    assert (pending["status"] == "pending_create").sum() <= len(audit)

    with EmulatorServer(healthy) as server:
        recovered = run_cli("sync", env=cli_env(clean_env, server, roster, state_path))
        settled = run_cli("sync", env=cli_env(clean_env, server, roster, state_path))
        names = [user["userName"] for user in server.emulator.store.dump()["Users"]]
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert summary_value(settled.stdout, "SCIM calls") == 0
    assert sorted(names) == sorted(person(i)["user_name"] for i in range(FIRST_USERS + LATER_USERS))
