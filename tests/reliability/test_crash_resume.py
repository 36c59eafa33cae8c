"""`scim-pipeline sync` killed with SIGKILL at several points (mid-users, mid-memberships, right after a create was
answered) resumes on the next run through the real CLI and Dagster: it converges with no duplicate, and the state
store stays consistent with the target.

tests/sync/test_crash_resume.py proves the same for the engine alone; this goes through the command line, the Dagster
instance (a run left STARTED forever) and the state of the killed run.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from scim_pipeline.emulator import EmulatorConfig, EmulatorServer, RequestRecord
from scim_pipeline.sync.state import ProvisioningState
from tests.test_cli import summary_value

from .conftest import CLI, ROOT, person, run_cli, write_roster

CLIENT_ID = "crash-e2e"
CLIENT_SECRET = "crash-e2e-secret-77c3"
USERS = 150
GROUPS = ["Vault Admins", "Auditors", "Engineering", "Everyone", "On Call"]


def memberships() -> list[tuple[str, str]]:
    pairs = [("Everyone", person(i)["user_name"]) for i in range(USERS)]
    pairs += [(GROUPS[i % 3], person(i)["user_name"]) for i in range(USERS)]
    pairs += [("On Call", person(i)["user_name"]) for i in range(0, USERS, 5)]
    return pairs


Trigger = Callable[[list[RequestRecord]], bool]


def posts_of_users(at_least: int) -> Trigger:
    return lambda log: sum(r.method == "POST" and r.path.endswith("/Users") for r in log) >= at_least


def group_patches(at_least: int) -> Trigger:
    return lambda log: sum(r.method == "PATCH" and "/Groups/" in r.path for r in log) >= at_least


def assert_state_matches_target(state_path: Path, server: EmulatorServer) -> None:
    dump = server.emulator.store.dump()
    users = dump["Users"]
    folded = Counter(user["userName"].casefold() for user in users)
    assert max(folded.values()) == 1, "a user exists twice on the target"
    expected = {person(i)["user_name"] for i in range(USERS)}
    assert {user["userName"] for user in users} == expected
    by_id = {user["id"]: user["userName"] for user in users}
    with ProvisioningState.open(state_path) as state:
        managed = state.managed_users()
        groups = state.managed_groups()
        pairs = state.managed_memberships()
    # Every managed user's SCIM id exists on the target under its key; every roster user on the target is managed.
    assert managed["scim_id"].notna().all()
    assert (managed["status"] == "ok").all()
    assert all(by_id.get(scim_id) == key for scim_id, key in zip(managed["scim_id"], managed["key"], strict=True))
    assert set(managed["key"]) == expected
    target_groups = {group["displayName"]: group for group in dump["Groups"]}
    assert sorted(target_groups) == sorted(GROUPS)
    assert dict(zip(groups["key"], groups["scim_id"], strict=True)) == {
        name: group["id"] for name, group in target_groups.items()
    }
    wanted: dict[str, set[str]] = {}
    for group_name, user_name in memberships():
        wanted.setdefault(group_name, set()).add(user_name)
    for name, group in target_groups.items():
        assert {by_id[m["value"]] for m in group.get("members", [])} == wanted[name], name
    assert len(pairs) == len(memberships())


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("when", "trigger"),
    [
        ("right after the first user create was answered", posts_of_users(1)),
        ("mid-users", posts_of_users(USERS // 2)),
        ("mid-memberships", group_patches(3)),
    ],
)
def test_sync_killed_by_sigkill_resumes_without_duplicates(
    tmp_path: Path, clean_env: dict[str, str], when: str, trigger: Trigger
) -> None:
    roster = write_roster(tmp_path / "roster", [person(i) for i in range(USERS)], GROUPS, memberships())
    state_path = tmp_path / "state.sqlite"
    config = EmulatorConfig(db_path=tmp_path / "target.sqlite", clients={CLIENT_ID: CLIENT_SECRET}, latency_ms=5)
    with EmulatorServer(config) as server:
        env = {
            **clean_env,
            "SCIM_BASE_URL": server.base_url,
            "SCIM_TOKEN_URL": server.token_url,
            "SCIM_CLIENT_ID": CLIENT_ID,
            "SCIM_CLIENT_SECRET": CLIENT_SECRET,
            "SCIM_ROSTER": str(roster),
            "SCIM_STATE_URL": f"sqlite:///{state_path}",
            "SCIM_SHARDS": "2",
            "SCIM_CONCURRENCY": "4",
            "SCIM_MEMBER_CHUNK": "10",
        }
        log = tmp_path / "killed_sync.log"
        with log.open("w") as output:
            sync = subprocess.Popen([*CLI, "sync"], env=env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
            try:
                deadline = time.monotonic() + 240
                while not trigger(server.emulator.requests):
                    assert sync.poll() is None, f"the sync ended before the kill point ({when}):\n{log.read_text()}"
                    assert time.monotonic() < deadline, f"never reached the kill point ({when})"
                    time.sleep(0.003)
                sync.send_signal(signal.SIGKILL)
            finally:
                sync.wait(timeout=30)
        assert sync.returncode == -signal.SIGKILL
        writes_before_rerun = sum(r.method in ("POST", "PATCH") for r in server.emulator.requests)
        assert writes_before_rerun > 0

        rerun = run_cli("sync", env=env)
        assert rerun.returncode == 0, f"{when}: {rerun.stdout}{rerun.stderr}"
        # The killed run held the provisioning pool's only slot: the rerun says it released it (else it would hang).
        assert "pool slot released" in rerun.stderr
        settled = run_cli("sync", env=env)
        assert settled.returncode == 0, settled.stdout + settled.stderr
        assert summary_value(settled.stdout, "SCIM calls") == 0, "the rerun did not converge"
        assert_state_matches_target(state_path, server)
