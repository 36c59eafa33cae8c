"""Several processes at once, as in production: two `scim-pipeline sync` started together for one target, on a target
that does not enforce unique names — one writer per target, never a duplicate, and the second run says why it waited
or stopped. On the SQLite default and on a real PostgreSQL state store.

Each process has its own Dagster home, as two machines (or a CLI beside a deployment) would: within one Dagster
instance the target's pool already runs one sync step at a time, so only the state store's lease stands between
two instances."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer
from scim_pipeline.sync.state import LeaseHolder, ProvisioningState

from .conftest import CLI, ROOT, person, write_roster

CLIENT_ID = "concurrent-tests"
CLIENT_SECRET = "concurrent-secret-51aa"
USERS = 50
GROUPS = 5


@pytest.fixture
def lax_target() -> Iterator[EmulatorServer]:
    # 150 ms a request, one at a time: a cycle takes about 10 s, long enough for the two to overlap.
    config = EmulatorConfig(clients={CLIENT_ID: CLIENT_SECRET}, allow_duplicate_names=True, latency_ms=150)
    with EmulatorServer(config) as server:
        yield server


def start_sync(env: dict[str, str], home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, "sync"],
        env={**env, "DAGSTER_HOME": str(home)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def two_syncs_at_once(
    lax_target: EmulatorServer, clean_env: dict[str, str], tmp_path: Path, state_url: str
) -> list[str]:
    users = [person(i) for i in range(USERS)]
    groups = [f"Team {g}" for g in range(GROUPS)]
    memberships = [(groups[i % GROUPS], users[i]["user_name"]) for i in range(USERS)]
    roster = write_roster(tmp_path / "roster", users, groups, memberships)
    env = {
        **clean_env,
        "SCIM_BASE_URL": lax_target.base_url,
        "SCIM_TOKEN_URL": lax_target.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_STATE_URL": state_url,
        "SCIM_CONCURRENCY": "1",
    }
    processes = [start_sync(env, tmp_path / "machine-a"), start_sync(env, tmp_path / "machine-b")]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs

    dump = lax_target.emulator.store.dump()
    names = Counter(user["userName"] for user in dump["Users"])
    assert names == Counter({user["user_name"]: 1 for user in users}), "a user was created twice"
    group_names = Counter(group["displayName"] for group in dump["Groups"])
    assert group_names == Counter(dict.fromkeys(groups, 1)), "a group was created twice"
    return outputs


def assert_one_waited_for_the_other(outputs: list[str]) -> None:
    waited = [output for output in outputs if "note: waited" in output]
    assert len(waited) == 1, outputs
    assert "for run " in waited[0]
    assert "which was writing to this target" in waited[0]


def test_two_syncs_at_once_on_sqlite_make_one_of_each_identity(
    lax_target: EmulatorServer, clean_env: dict[str, str], tmp_path: Path
) -> None:
    outputs = two_syncs_at_once(lax_target, clean_env, tmp_path, f"sqlite:///{tmp_path / 'state.sqlite'}")

    assert_one_waited_for_the_other(outputs)


def test_two_syncs_at_once_on_postgresql_make_one_of_each_identity(
    lax_target: EmulatorServer, clean_env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    outputs = two_syncs_at_once(lax_target, clean_env, tmp_path, postgres_url)

    assert_one_waited_for_the_other(outputs)


def test_a_sync_that_cannot_wait_stops_naming_the_run_that_holds_the_target(
    lax_target: EmulatorServer, clean_env: dict[str, str], tmp_path: Path
) -> None:
    roster = write_roster(tmp_path / "roster", [person(i) for i in range(5)])
    state_url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    env = {
        **clean_env,
        "SCIM_BASE_URL": lax_target.base_url,
        "SCIM_TOKEN_URL": lax_target.token_url,
        "SCIM_CLIENT_ID": CLIENT_ID,
        "SCIM_CLIENT_SECRET": CLIENT_SECRET,
        "SCIM_ROSTER": str(roster),
        "SCIM_STATE_URL": state_url,
        "SCIM_LEASE_WAIT": "1",
    }
    lax_target.emulator.requests.clear()
    with (
        ProvisioningState.open(state_url) as state,
        state.writer_lease(lax_target.base_url, LeaseHolder("other-run-7", 1, "elsewhere"), ttl_s=60),
    ):
        stopped = start_sync(env, tmp_path / "machine-b")
        output = stopped.communicate(timeout=300)[0]

    assert stopped.returncode == 1, output
    assert "run other-run-7 (pid 1 on host elsewhere)" in output
    assert "Traceback" not in output
    assert not [r for r in lax_target.emulator.requests if r.method in ("POST", "PUT", "PATCH", "DELETE")]
    restarted = start_sync(env, tmp_path / "machine-b")
    assert restarted.wait(timeout=300) == 0  # the lease is free again
